/*
 * read.c -- decoding ivals (docs/FORMAT.md section 4, with the compact forms
 * of section 4.2: decimal floats R25, short tuples R26), list indexing,
 * record iteration, key hashing of stored values (section 5) and hash
 * lookups in the slot table (R22, R23).
 *
 * Nothing read from an image is trusted. Every offset and length is checked
 * against the DATA section [start, end) before use, in the overflow-proof
 * form `len > end - pos`, so no out-of-range pointer is ever formed. No read
 * path allocates. Nested tuples are skipped iteratively (a count of pending
 * ivals, no recursion) and hashed with a depth bound, so a hostile image
 * cannot overflow the C stack. The types a lookup or a scan meets most are
 * tested first in decode_at, each with one bounds check; the rest go
 * through a switch.
 *
 * Slot table (dict/set/frozenset with nslots > 0), after the body:
 *
 *     body:  [key0 val0][key1 val1][key2 val2] ...      records, R20
 *     table: [ slot 0 ][ slot 1 ] ... [ slot nslots-1 ]  `width` bytes each
 *     slot = 0 (empty) | (tag << ibits) | (rec_off + 1)
 *
 * A lookup starts at the home slot mulhi64(hash, nslots) and probes linearly.
 * Writers keep nslots > count, so at least one slot is empty and every probe
 * sequence of a well-formed table ends at an empty slot; a hostile table may
 * have none, so the loop also stops after nslots probes (R23). With the
 * writer's load of 0.85 the expected probe count stays small (about 3.8 for
 * a hit and 23 slots, two or three cache lines, for a miss) and the tag (the
 * hash bits that do not fit beside rec_off) filters out almost every
 * non-matching slot without touching the key: a hit touches the slot's
 * cache line, then the key, and the value right after it, whose offset the
 * caller's match function may hand back (key_end) so that the key is not
 * decoded twice.
 */
#include "internal.h"

/* ------------------------------------------------------------------ checks */

/* 1 if all n UCS-4 units are <= 0x10FFFF (R15). */
static int ucs4_ok(const uint8_t *p, uint64_t n)
{
    uint32_t bad = 0;
    for (uint64_t i = 0; i < n; i++)
        bad |= pf_ld32(p + 4 * i) > 0x10FFFFu;
    return !bad;
}

/* ------------------------------------------------------------------ decode */

/* 10^e for the decimal floats of R25; every one is exact in binary64. */
const double pf_pow10[PF_DEC_MAX_E + 1] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5,
                                           1e6, 1e7, 1e8, 1e9};

static int skip_items(const pf_range *r, uint64_t first, uint64_t n,
                      uint64_t *end_out, pf_error *err);

/* Sign-extends the low n bytes (1..8) of u (two's complement, R16). Written
 * with unsigned arithmetic only, so nothing is implementation-defined. */
PF_INLINE int64_t sign_extend(uint64_t u, unsigned n)
{
    const unsigned shift = 64u - 8u * n;
    const uint64_t sign = UINT64_C(1) << (8u * n - 1u);
    uint64_t x = ((u << shift) >> shift);
    x = (x ^ sign) - sign;
    int64_t v;
    memcpy(&v, &x, 8);
    return v;
}

/* The rarer types: none of these is on a lookup's or a scan's hot path. */
static int decode_rare(const pf_range *r, uint64_t pos, unsigned t,
                       pf_val *out, int shallow, pf_error *err)
{
    const uint8_t *base = r->base;
    const uint64_t p = pos + 1;
    const uint64_t avail = r->end - p;
    uint64_t n;
    unsigned vl;

    switch (t) {
    case PF_T_NONE:
        out->type = PF_NONE;
        out->end = p;
        return PF_OK;
    case PF_T_FALSE:
        out->type = PF_FALSE;
        out->end = p;
        return PF_OK;
    case PF_T_TRUE:
        out->type = PF_TRUE;
        out->end = p;
        return PF_OK;
    case PF_T_COMPLEX:
        if (avail < 16)
            return PF_CORRUPT(err, "complex runs past the DATA section", pos);
        out->type = PF_COMPLEX;
        memcpy(&out->u.cx.re, base + p, 8);
        memcpy(&out->u.cx.im, base + p + 8, 8);
        out->end = p + 16;
        return PF_OK;
    case PF_T_BIGINT:
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        if (n < 9)
            return PF_CORRUPT(err, "big int shorter than 9 bytes", pos);
        if (n > avail - vl)
            return PF_CORRUPT(err, "big int runs past the DATA section", pos);
        out->type = PF_BIGINT;
        out->u.big.data = base + p + vl;
        out->u.big.n = n;
        out->end = p + vl + n;
        return PF_OK;
    case PF_T_STR_ASCII:
    case PF_T_STR_LATIN1:
    case PF_T_STR_UCS2:
    case PF_T_STR_UCS4:
    case PF_T_BYTES: {
        int width = t == PF_T_STR_UCS2 ? 2 : t == PF_T_STR_UCS4 ? 4 : 1;
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        if (n > (avail - vl) / (uint64_t)width)
            return PF_CORRUPT(err, "string runs past the DATA section", pos);
        const uint8_t *d = base + p + vl;
        if (t == PF_T_STR_ASCII && !pf_all_ascii(d, n))
            return PF_CORRUPT(err, "ASCII string with a byte >= 0x80", pos);
        if (t == PF_T_STR_UCS4 && !ucs4_ok(d, n))
            return PF_CORRUPT(err, "UCS-4 code point above 0x10FFFF", pos);
        out->type = t == PF_T_BYTES ? PF_BYTES : PF_STR;
        out->u.s.data = d;
        out->u.s.len = n;
        out->u.s.width = width;
        out->u.s.ascii = t == PF_T_STR_ASCII;
        out->end = p + vl + n * (uint64_t)width;
        return PF_OK;
    }
    case PF_T_TUPLE:
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        if (n > avail - vl) /* every item takes at least one byte */
            return PF_CORRUPT(err, "tuple runs past the DATA section", pos);
        out->type = PF_TUPLE;
        out->u.tup.count = n;
        out->u.tup.first = p + vl;
        if (shallow) {
            out->end = 0;
            return PF_OK;
        }
        return skip_items(r, p + vl, n, &out->end, err);
    case PF_T_OBJECT:                                              /* R32 */
        if (!r->ext)
            goto no_ext;
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        if (n >= avail - vl) /* the shape and each field take a byte */
            return PF_CORRUPT(err, "object runs past the DATA section", pos);
        out->type = PF_OBJECT;
        out->u.tup.count = n + 1;
        out->u.tup.first = p + vl;
        if (shallow) {
            out->end = 0;
            return PF_OK;
        }
        return skip_items(r, p + vl, n + 1, &out->end, err);
    case PF_T_PICKLE:                                              /* R33 */
        if (!r->ext)
            goto no_ext;
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        if (n > avail - vl)
            return PF_CORRUPT(err, "pickle runs past the DATA section", pos);
        out->type = PF_PICKLE;
        out->u.s.data = base + p + vl;
        out->u.s.len = n;
        out->u.s.width = 1;
        out->u.s.ascii = 0;
        out->end = p + vl + n;
        return PF_OK;
    case PF_T_ARRAY: {                                             /* R34 */
        if (!r->ext)
            goto no_ext;
        vl = pf_varint_get(base + p, avail, &n);
        if (!vl)
            return PF_CORRUPT(err, "bad varint (R13)", p);
        /* then a pad count < 64, the pad, n data bytes, the header ival */
        if (avail - vl < 1)
            return PF_CORRUPT(err, "array runs past the DATA section", pos);
        const uint64_t pad = base[p + vl];
        if (pad >= 64 || pad >= avail - vl - 1 ||
            n >= avail - vl - 1 - pad)
            return PF_CORRUPT(err, "array runs past the DATA section", pos);
        const uint64_t data = p + vl + 1 + pad;
        out->type = PF_ARRAY;
        out->u.arr.count = 1;
        out->u.arr.first = data + n;
        out->u.arr.data = base + data;
        out->u.arr.nbytes = n;
        if (shallow) {
            out->end = 0;
            return PF_OK;
        }
        return skip_items(r, data + n, 1, &out->end, err);
    }
    case PF_T_KEYED:                                               /* R35 */
        if (!r->ext)
            goto no_ext;
        /* the flags byte, then the proxy and the value, a byte each at least */
        if (avail < 3)
            return PF_CORRUPT(err, "keyed value runs past the DATA section", pos);
        if (base[p] & ~PF_KEYED_EQ)
            return PF_CORRUPT(err, "keyed value with unknown flags (R35)", pos);
        out->type = PF_KEYED;
        out->u.key.count = 2;
        out->u.key.first = p + 1;
        out->u.key.flags = base[p];
        if (shallow) {
            out->end = 0;
            return PF_OK;
        }
        return skip_items(r, p + 1, 2, &out->end, err);
    default:
        return PF_CORRUPT(err, "reserved type byte (R14)", pos);
    }
no_ext: /* a 1.1 type in an image that did not announce it (R6, R14) */
    return PF_CORRUPT(err, "extension value in an image without the "
                      "incompat flag (R6, R14)", pos);
}

/* The order block of an ordered container (R36), after its slot table. */
static int decode_order(const pf_range *r, pf_val *out, pf_error *err)
{
    const uint8_t *base = r->base;
    const uint64_t ob = out->end, count = out->u.c.count;
    const uint64_t width = (uint64_t)out->u.c.width;
    if (PF_UNLIKELY(r->end - ob < 8))
        return PF_CORRUPT(err, "order block runs past the DATA section", ob);
    const unsigned kind = base[ob], pbits = base[ob + 1], sshift = base[ob + 2];
    if (PF_UNLIKELY(kind != PF_ORDER_STR && kind != PF_ORDER_BYTES))
        return PF_CORRUPT(err, "order kind not 1 or 2 (R36)", ob);
    if (PF_UNLIKELY(pbits != 0 && (count < 2 || pbits != pf_bitlen64(count - 1))))
        return PF_CORRUPT(err, "order perm width not bitlen(count - 1) (R36)", ob + 1);
    if (PF_UNLIKELY(sshift > PF_ORDER_MAX_SSHIFT))
        return PF_CORRUPT(err, "order sample shift above 6 (R36)", ob + 2);
    for (int k = 3; k < 8; k++)
        if (PF_UNLIKELY(base[ob + k] != 0))
            return PF_CORRUPT(err, "order block reserved byte not zero (R36)", ob + k);
    /* count <= body_len < 2^64 / 8 here, and pbits <= 64: no overflow */
    const uint64_t pbytes = (count / 8) * pbits + ((count % 8) * pbits + 7) / 8;
    const uint64_t nsamples = (count >> sshift) + ((count & ((UINT64_C(1) << sshift) - 1)) != 0);
    const uint64_t avail = r->end - ob - 8;
    if (PF_UNLIKELY(pbytes > avail ||
                    nsamples > (avail - pbytes) / (8 + width)))
        return PF_CORRUPT(err, "order block runs past the DATA section", ob);
    out->u.c.okind = (int)kind;
    out->u.c.pbits = (int)pbits;
    out->u.c.sshift = (int)sshift;
    out->u.c.perm = ob + 8;
    out->u.c.samples = ob + 8 + pbytes;
    out->end = ob + 8 + pbytes + nsamples * (8 + width);
    return PF_OK;
}

/* A list, dict, set or frozenset header (R19-R22); t is its type byte. */
static int decode_container(const pf_range *r, uint64_t pos, unsigned t,
                            pf_val *out, pf_error *err)
{
    const uint8_t *base = r->base;
    const uint64_t end = r->end;
    const int is_list = t == PF_T_LIST;
    const uint64_t hlen = is_list ? PF_LIST_HDR_LEN : PF_MAP_HDR_LEN;
    if (PF_UNLIKELY(end - pos < hlen))
        return PF_CORRUPT(err, "container header runs past the DATA section",
                          pos);
    const int ordered = base[pos + 1] >> 7;                      /* R36 */
    const int width = base[pos + 1] & 0x7F;
    if (PF_UNLIKELY(width != 2 && width != 4 && width != 8))
        return PF_CORRUPT(err, "container table width not 2, 4 or 8", pos + 1);
    if (PF_UNLIKELY(ordered && (is_list || !r->ordered)))
        return PF_CORRUPT(err, is_list ? "ordered list (R36)"
                          : "ordered container in an image without the "
                            "incompat flag (R6, R36)", pos + 1);
    const uint64_t count = pf_ld64(base + pos + 2);
    const uint64_t body_len = pf_ld64(base + pos + 10);
    const uint64_t nslots = is_list ? 0 : pf_ld64(base + pos + 18);
    const uint64_t body = pos + hlen;
    if (PF_UNLIKELY(body_len > end - body))
        return PF_CORRUPT(err, "container body runs past the DATA section",
                          pos);
    const uint64_t table = body + body_len;
    const uint64_t nent = is_list ? count : nslots;
    if (PF_UNLIKELY(nent > (end - table) / (uint64_t)width))
        return PF_CORRUPT(err, "container table runs past the DATA section",
                          pos);
    /* Each list item and set key takes >= 1 byte, each dict record >= 2. */
    if (PF_UNLIKELY(count > (t == PF_T_DICT ? body_len / 2 : body_len)))
        return PF_CORRUPT(err, "container count larger than its body can "
                          "hold", pos);
    if (!is_list && nslots != 0) {
        if (PF_UNLIKELY(nslots <= count))                            /* R22 */
            return PF_CORRUPT(err, "slot table with nslots <= count", pos);
        if (PF_UNLIKELY(pf_bitlen64(body_len) >= 8u * (unsigned)width))
            return PF_CORRUPT(err, "slot width leaves no tag bits", pos);
    }
    /* 0x20..0x23 -> PF_LIST..PF_FROZENSET, in the same order. */
    out->type = PF_LIST + (int)(t - PF_T_LIST);
    out->u.c.count = count;
    out->u.c.body = body;
    out->u.c.body_len = body_len;
    out->u.c.table = table;
    out->u.c.nslots = nslots;
    out->u.c.width = width;
    out->u.c.okind = 0;
    out->end = table + nent * (uint64_t)width;
    if (ordered)
        return decode_order(r, out, err);
    return PF_OK;
}

/* Decodes the non-REF ival at pos (pos < r->end checked by the caller).
 * shallow: for a tuple, do not walk its items (out->end is then 0).
 * The types a lookup or a scan meets most (short ASCII strings, small
 * ints, floats, short tuples, containers) are decoded first, each with a
 * single bounds check. */
static int decode_at(const pf_range *r, uint64_t pos, pf_val *out,
                     int shallow, pf_error *err)
{
    const uint8_t *base = r->base;
    const unsigned t = base[pos];
    const uint64_t p = pos + 1;          /* payload */
    const uint64_t avail = r->end - p;   /* bytes after the type byte */
    uint64_t n;

    out->pos = pos;
    if (PF_LIKELY(t >= PF_T_SHORT_STR)) {                          /* R15 */
        n = t - PF_T_SHORT_STR;
        if (PF_UNLIKELY(n > avail))
            return PF_CORRUPT(err, "string runs past the DATA section", pos);
        if (PF_UNLIKELY(!pf_all_ascii(base + p, n)))
            return PF_CORRUPT(err, "ASCII string with a byte >= 0x80", pos);
        out->type = PF_STR;
        out->u.s.data = base + p;
        out->u.s.len = n;
        out->u.s.width = 1;
        out->u.s.ascii = 1;
        out->end = p + n;
        return PF_OK;
    }
    if (t - PF_T_INT1 <= (unsigned)(PF_T_INT8 - PF_T_INT1)) {      /* R16 */
        n = t - (PF_T_INT1 - 1);
        if (PF_UNLIKELY(n > avail))
            return PF_CORRUPT(err, "int runs past the DATA section", pos);
        uint64_t u;
        if (PF_LIKELY(avail >= 8)) {
            u = pf_ld64(base + p);
        } else {
            uint8_t b[8] = {0};
            memcpy(b, base + p, (size_t)n);
            u = pf_ld64(b);
        }
        out->type = PF_INT;
        out->u.i = sign_extend(u, (unsigned)n);
        out->end = p + n;
        return PF_OK;
    }
    if (t - PF_T_DEC0 <= (unsigned)(PF_T_DEC9 - PF_T_DEC0)) {      /* R25 */
        uint64_t z;
        unsigned vl = pf_varint_get(base + p, avail, &z);
        if (PF_UNLIKELY(!vl))
            return PF_CORRUPT(err, "bad varint (R13)", p);
        /* zigzag: m = (z >> 1) ^ -(z & 1), so |m| = (z >> 1) + (z & 1) */
        const uint64_t mag = (z >> 1) + (z & 1);
        if (PF_UNLIKELY(mag >= PF_DEC_M_LIMIT))
            return PF_CORRUPT(err, "decimal float mantissa of 2^53 or more "
                              "(R25)", pos);
        double m = (double)mag; /* exact: mag < 2^53 */
        if (z & 1)
            m = -m;
        out->type = PF_FLOAT;
        out->u.f = m / pf_pow10[t - PF_T_DEC0];
        out->end = p + vl;
        return PF_OK;
    }
    if (t == PF_T_FLOAT) {
        if (PF_UNLIKELY(avail < 8))
            return PF_CORRUPT(err, "float runs past the DATA section", pos);
        out->type = PF_FLOAT;
        memcpy(&out->u.f, base + p, 8);
        out->end = p + 8;
        return PF_OK;
    }
    if (t - PF_T_TUPLE1 <= (unsigned)(PF_T_TUPLE7 - PF_T_TUPLE1)) { /* R26 */
        n = t - PF_T_TUPLE;
        if (PF_UNLIKELY(n > avail)) /* every item takes at least one byte */
            return PF_CORRUPT(err, "tuple runs past the DATA section", pos);
        out->type = PF_TUPLE;
        out->u.tup.count = n;
        out->u.tup.first = p;
        if (shallow) {
            out->end = 0;
            return PF_OK;
        }
        return skip_items(r, p, n, &out->end, err);
    }
    if (t - PF_T_LIST <= (unsigned)(PF_T_FROZENSET - PF_T_LIST))
        return decode_container(r, pos, t, out, err);
    return decode_rare(r, pos, t, out, shallow, err);
}

/* Decodes the ival at pos, following one REF if `follow` (R17). For a
 * shallow tuple not reached through a REF, out->next is 0 like out->end. */
static int decode(const pf_range *r, uint64_t pos, pf_val *out, int follow,
                  int shallow, pf_error *err)
{
    if (PF_UNLIKELY(pos < r->start || pos >= r->end))
        return PF_CORRUPT(err, "ival outside the DATA section (R12)", pos);
    const uint8_t *base = r->base;
    const unsigned t = base[pos];
    if (t == PF_T_REF || t == PF_T_SREF) {                    /* R17, R28 */
        uint64_t d, target;
        unsigned vl = pf_varint_get(base + pos + 1, r->end - pos - 1, &d);
        if (PF_UNLIKELY(!vl))
            return PF_CORRUPT(err, "bad varint (R13)", pos + 1);
        if (t == PF_T_REF) {
            if (PF_UNLIKELY(d == 0 || d > pos - r->start))
                return PF_CORRUPT(err, "REF target outside the DATA section",
                                  pos);
            target = pos - d;
        } else {
            if (PF_UNLIKELY(d >= r->vcount))
                return PF_CORRUPT(err, "SREF index outside the VALUES table",
                                  pos);
            target = pf_ld64(r->vtab + 8 * d);
            if (PF_UNLIKELY(target < r->start || target >= r->end))
                return PF_CORRUPT(err, "SREF target outside the DATA section",
                                  pos);
        }
        if (PF_UNLIKELY(base[target] == PF_T_REF || base[target] == PF_T_SREF))
            return PF_CORRUPT(err, "REF or SREF to a REF or SREF", pos);
        const uint64_t next = pos + 1 + vl;
        if (!follow) {
            out->type = PF_REF_RAW;
            out->pos = target;
            out->next = next;
            out->end = next;
            return PF_OK;
        }
        int rc = decode_at(r, target, out, shallow, err);
        out->next = next;
        return rc;
    }
    int rc = decode_at(r, pos, out, shallow, err);
    out->next = out->end;
    return rc;
}

/* Finds the end of n consecutive ivals starting at first, without
 * recursion: a nested tuple adds its items to the pending count. REFs are
 * checked but not followed. */
static int skip_items(const pf_range *r, uint64_t first, uint64_t n,
                      uint64_t *end_out, pf_error *err)
{
    uint64_t cur = first, pending = n;
    while (pending > 0) {
        pf_val v;
        int rc = decode(r, cur, &v, 0, 1, err);
        if (rc != PF_OK)
            return rc;
        pending--;
        if (v.type == PF_TUPLE || v.type == PF_OBJECT || v.type == PF_ARRAY ||
            v.type == PF_KEYED) {
            cur = v.u.tup.first;
            pending += v.u.tup.count; /* count <= end - cur: no overflow */
            if (pending > r->end - cur)
                return PF_CORRUPT(err, "tuple runs past the DATA section", cur);
        } else {
            cur = v.next;
        }
    }
    *end_out = cur;
    return PF_OK;
}

int pf_decode(const pf_range *r, uint64_t pos, pf_val *out, int follow,
              pf_error *err)
{
    return decode(r, pos, out, follow, 0, err);
}

int pf_decode_ex(const pf_range *r, uint64_t pos, pf_val *out, int follow,
                 int shallow, pf_error *err)
{
    return decode(r, pos, out, follow, shallow, err);
}

int pf_read(const pf_image *img, uint64_t pos, pf_val *out, pf_error *err)
{
    return decode(&img->r, pos, out, 1, 0, err);
}

int pf_read_ex(const pf_image *img, uint64_t pos, int flags, pf_val *out,
               pf_error *err)
{
    return decode(&img->r, pos, out, 1, (flags & PF_READ_SHALLOW) != 0, err);
}

int pf_read_raw(const pf_image *img, uint64_t pos, pf_val *out, pf_error *err)
{
    return decode(&img->r, pos, out, 0, 0, err);
}

/* ------------------------------------------------------------------ lists */

int pf_list_item(const pf_image *img, const pf_val *list, uint64_t idx,
                 uint64_t *item_pos, pf_error *err)
{
    if (!list || list->type != PF_LIST)
        return pf_fail(err, PF_ETYPE, "not a list", 0);
    if (idx >= list->u.c.count)
        return pf_fail(err, PF_ERANGE, "list index out of range", 0);
    const int width = list->u.c.width;
    const uint64_t e = list->u.c.table + idx * (uint64_t)width;
    const uint64_t off = pf_ldw(img->r.base + e, width);
    if (off >= list->u.c.body_len)                                  /* R24 */
        return PF_CORRUPT(err, "list offset outside the body", e);
    *item_pos = list->u.c.body + off;
    return PF_OK;
}

/* ------------------------------------------------------------------ records */

static int is_map(int type)
{
    return type == PF_DICT || type == PF_SET || type == PF_FROZENSET;
}

/* The cursor is the next record's offset in the body; when the body is
 * shorter than 2^32 bytes (so count < 2^32 too) the record index rides in
 * the high 32 bits, which lets us stop after exactly `count` records and
 * report a body holding more or fewer (R20). */
static int read_record(const pf_range *r, const pf_val *c, uint64_t pos,
                          uint64_t *key_pos, uint64_t *val_pos, uint64_t *next,
                          pf_error *err);
static int ordered_at(const pf_range *r, const pf_val *c, uint64_t rank,
                      uint64_t *pos, pf_error *err);

uint64_t pf_perm_get(const uint8_t *perm, uint64_t i, unsigned pbits)
{
    const uint64_t bit = i * pbits;
    const uint8_t *p = perm + bit / 8;
    const unsigned sh = (unsigned)(bit % 8);
    const unsigned nbytes = (sh + pbits + 7) / 8;      /* <= 9 */
    uint64_t v = 0;
    for (unsigned k = 0; k < nbytes && k < 8; k++)
        v |= (uint64_t)p[k] << (8 * k);
    v >>= sh;
    if (nbytes == 9)
        v |= (uint64_t)p[8] << (64 - sh);
    return pbits == 64 ? v : v & ((UINT64_C(1) << pbits) - 1);
}

static int record_next(const pf_range *r, const pf_val *c, uint64_t *cursor,
                       uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    if (c->u.c.okind && c->u.c.pbits) {
        /* An ordered container iterated in insertion order: the cursor is
         * the index of the next record, its rank from perm (R36). */
        const uint64_t i = *cursor;
        if (i >= c->u.c.count)
            return 0;
        const uint64_t rank = pf_perm_get(r->base + c->u.c.perm, i, (unsigned)c->u.c.pbits);
        if (rank >= c->u.c.count)
            return PF_CORRUPT(err, "order perm entry not below count (R36)",
                              c->u.c.perm);
        uint64_t pos, next;
        int rc = ordered_at(r, c, rank, &pos, err);
        if (rc != PF_OK)
            return rc;
        if ((rc = read_record(r, c, pos, key_pos, val_pos, &next, err)) != 1)
            return rc == 0 ? PF_CORRUPT(err, "body holds fewer records than "
                                        "count (R20)", c->pos) : rc;
        *cursor = i + 1;
        return 1;
    }
    const uint64_t bl = c->u.c.body_len, body = c->u.c.body;
    const int packed = bl <= 0xFFFFFFFFu;
    uint64_t off = packed ? (*cursor & 0xFFFFFFFFu) : *cursor;
    uint64_t idx = packed ? (*cursor >> 32) : 0;
    if (off > bl)
        return pf_fail(err, PF_EINVAL, "record cursor past the body", 0);
    if (packed && idx >= c->u.c.count) {
        if (off != bl)
            return PF_CORRUPT(err, "bytes after the last record (R20)",
                              body + off);
        return 0;
    }
    if (off == bl) {
        if (packed)
            return PF_CORRUPT(err, "body holds fewer records than count (R20)",
                              c->pos);
        return 0;
    }
    uint64_t next;
    int rc = read_record(r, c, body + off, key_pos, val_pos, &next, err);
    if (rc != 1)
        return rc == 0 ? PF_CORRUPT(err, "body holds fewer records than count "
                                    "(R20)", c->pos) : rc;
    off = next - body;
    *cursor = packed ? ((idx + 1) << 32) | off : off;
    return 1;
}

int pf_record_next(const pf_image *img, const pf_val *c, uint64_t *cursor,
                   uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    if (!c || !is_map(c->type))
        return pf_fail(err, PF_ETYPE, "not a dict, set or frozenset", 0);
    return record_next(&img->r, c, cursor, key_pos, val_pos, err);
}

/* ------------------------------------------------------------------ hashing */

typedef struct hash_ctx {
    const pf_range *r;
    uint64_t budget;               /* ivals left to visit */
    int depth;                     /* tuples/frozensets being hashed */
    uint64_t open[PF_MAX_KEY_DEPTH];   /* their positions (R18) */
} hash_ctx;

/* A tuple, frozenset or keyed value of a key, entered: its depth bounded,
 * and, reached through a REF, not one being hashed (R18). */
static int open_key(hash_ctx *hc, const pf_val *v, uint64_t pos, pf_error *err)
{
    if (hc->depth >= PF_MAX_KEY_DEPTH)
        return pf_fail(err, PF_ELIMIT, "key nested too deeply", pos);
    if (v->pos != pos)
        for (int i = 0; i < hc->depth; i++)
            if (hc->open[i] == v->pos)
                return PF_CORRUPT(err, "REF cycle inside a key (R18)", pos);
    hc->open[hc->depth++] = v->pos;
    return PF_OK;
}

/* Hashes the key ival at pos; *next is just past its encoding at pos. */
static int hash_val(hash_ctx *hc, uint64_t pos, uint64_t *hash, uint64_t *next,
                    pf_error *err)
{
    const pf_range *r = hc->r;
    const uint64_t seed = r->seed;
    pf_val v;
    if (hc->budget == 0)
        return pf_fail(err, PF_ELIMIT, "key too large to hash (shared "
                       "sub-values expand beyond the limit)", pos);
    hc->budget--;
    int rc = decode(r, pos, &v, 1, 1, err);
    if (rc != PF_OK)
        return rc;
    switch (v.type) {
    case PF_NONE: *hash = pf_hash_none(seed); break;
    case PF_FALSE: *hash = pf_hash_i64(seed, 0); break;
    case PF_TRUE: *hash = pf_hash_i64(seed, 1); break;
    case PF_INT: *hash = pf_hash_i64(seed, v.u.i); break;
    case PF_BIGINT:
        *hash = pf_hash_bigint(seed, v.u.big.data, (size_t)v.u.big.n);
        break;
    case PF_FLOAT: *hash = pf_hash_double(seed, v.u.f); break;
    case PF_COMPLEX: *hash = pf_hash_complex(seed, v.u.cx.re, v.u.cx.im); break;
    case PF_STR:
        *hash = pf_hash_str(seed, v.u.s.data, (size_t)v.u.s.len, v.u.s.width);
        break;
    case PF_BYTES:
        *hash = pf_hash_bytesval(seed, v.u.s.data, (size_t)v.u.s.len);
        break;
    case PF_TUPLE:
    case PF_FROZENSET: {
        if ((rc = open_key(hc, &v, pos, err)) != PF_OK)
            return rc;
        if (v.type == PF_TUPLE) {
            pf_hasher st;
            uint64_t cur = v.u.tup.first, h;
            pf_hasher_init(&st, pf_type_seed(seed, PF_HT_TUPLE),
                           v.u.tup.count * 8);
            for (uint64_t i = 0; i < v.u.tup.count; i++) {
                rc = hash_val(hc, cur, &h, &cur, err);
                if (rc != PF_OK)
                    return rc;
                pf_hasher_word(&st, h);
            }
            *hash = pf_hasher_end(&st);
            if (v.pos == pos)
                v.next = cur; /* shallow decode left the end open */
        } else {
            uint64_t cursor = 0, kp = 0, vp = 0, h, skip, sum = 0;
            while ((rc = record_next(r, &v, &cursor, &kp, &vp, err)) == 1) {
                rc = hash_val(hc, kp, &h, &skip, err);
                if (rc != PF_OK)
                    return rc;
                sum += pf_hash_mix(h);
            }
            if (rc < 0)
                return rc;
            uint8_t b[16];
            pf_st64(b, sum);
            pf_st64(b + 8, v.u.c.count);
            *hash = pf_hash_bytes(b, 16, pf_type_seed(seed, PF_HT_FROZENSET));
        }
        hc->depth--;
        break;
    }
    case PF_KEYED: {                       /* R35: the hash of its proxy */
        uint64_t cur;
        if ((rc = open_key(hc, &v, pos, err)) != PF_OK)
            return rc;
        rc = hash_val(hc, v.u.key.first, hash, &cur, err);
        hc->depth--;
        if (rc != PF_OK)
            return rc;
        if (v.pos == pos) { /* the value follows: skip it */
            pf_val val;
            if ((rc = decode(r, cur, &val, 0, 0, err)) != PF_OK)
                return rc;
            v.next = val.next;
        }
        break;
    }
    default:
        return pf_fail(err, PF_ETYPE, "value of this type cannot be a key "
                       "(R21)", v.pos);
    }
    *next = v.next;
    return PF_OK;
}

int pf_hash_range(const pf_range *r, uint64_t pos, uint64_t *hash,
                  pf_error *err)
{
    hash_ctx hc;
    uint64_t next, span = r->end - r->start;
    hc.r = r;
    /* Without shared tuples a key visits each of its ivals (and each REF
     * target) once; the budget only stops hostile sharing from expanding
     * exponentially. */
    hc.budget = span > (UINT64_MAX - (1u << 20)) / 4 ? UINT64_MAX
                                                     : 4 * span + (1u << 20);
    hc.depth = 0;
    return hash_val(&hc, pos, hash, &next, err);
}

int pf_key_extent(const pf_range *r, uint64_t pos, uint64_t *hash,
                  uint64_t *next, pf_error *err)
{
    hash_ctx hc;
    uint64_t span = r->end - r->start;
    hc.r = r;
    hc.budget = span > (UINT64_MAX - (1u << 20)) / 4 ? UINT64_MAX
                                                     : 4 * span + (1u << 20);
    hc.depth = 0;
    return hash_val(&hc, pos, hash, next, err);
}

int pf_range_record_next(const pf_range *r, const pf_val *c, uint64_t *cursor,
                         uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    return record_next(r, c, cursor, key_pos, val_pos, err);
}

int pf_hash_at(const pf_image *img, uint64_t pos, uint64_t *hash, pf_error *err)
{
    return pf_hash_range(&img->r, pos, hash, err);
}

/* ------------------------------------------------------------------ lookup */

/* A candidate was accepted by the match function: the value of a dict
 * record follows its key, at key_end when the match knew it, else past the
 * key decoded here; either way inside the body (R20). */
PF_INLINE int found_at(const pf_range *r, const pf_val *c, uint64_t kp,
                       uint64_t key_end, uint64_t *key_pos, uint64_t *val_pos,
                       pf_error *err)
{
    uint64_t vp = 0;
    if (c->type == PF_DICT) {
        const uint64_t body_end = c->u.c.body + c->u.c.body_len;
        if (key_end == 0) {
            pf_val kv;
            int rc = decode(r, kp, &kv, 0, 0, err);
            if (rc != PF_OK)
                return rc;
            key_end = kv.next;
        } else if (PF_UNLIKELY(key_end <= kp)) {
            return pf_fail(err, PF_EINVAL, "match function stored a key end "
                           "before the key", kp);
        }
        if (PF_UNLIKELY(key_end >= body_end))
            return PF_CORRUPT(err, "dict record without a value (R20)", kp);
        vp = key_end;
    }
    *key_pos = kp;
    *val_pos = vp;
    return 1;
}

/* The stored key at kp against a str key of n code units of `width` bytes:
 * 1 equal (*key_end set), 0 not, 2 a keyed value (R35) that only the
 * caller can compare, < 0 on error. kp lies inside the body. */
PF_INLINE int str_key_eq(const pf_range *r, uint64_t kp, const uint8_t *key,
                         size_t n, int width, uint64_t *key_end,
                         pf_error *err)
{
    const unsigned t = kp < r->end ? r->base[kp] : 0;
    if (t >= PF_T_SHORT_STR) {
        /* the common key, a short ASCII str in place (R15): compared where
         * it lies. Equal bytes that are not ASCII make no valid key: not
         * this one (decoding the key reports it). */
        const uint64_t len = t - PF_T_SHORT_STR;
        if (width != 1 || len != n || len > r->end - kp - 1)
            return 0;
        const uint8_t *d = r->base + kp + 1;
        if (n >= 8 && n <= 16) {
            const uint64_t a0 = pf_ld64(d), a1 = pf_ld64(d + n - 8);
            if ((a0 ^ pf_ld64(key)) | (a1 ^ pf_ld64(key + n - 8)))
                return 0;
            if ((a0 | a1) & 0x8080808080808080ull)
                return 0;
        } else if ((n && memcmp(d, key, n) != 0) || !pf_all_ascii(d, n)) {
            return 0;
        }
        *key_end = kp + 1 + n;
        return 1;
    }
    pf_val kv;
    int rc = decode(r, kp, &kv, 1, 0, err);
    if (rc != PF_OK)
        return rc;
    if (kv.type == PF_KEYED)
        return 2;
    if (kv.type != PF_STR || kv.u.s.len != n || kv.u.s.width != width ||
        (n && memcmp(kv.u.s.data, key, n * (size_t)width) != 0))
        return 0;
    *key_end = kv.next;
    return 1;
}

/* A str key given by its code units (pf_find_str). */
typedef struct str_key {
    const uint8_t *units;
    size_t n;
    int width;
} str_key;

/* Is the stored key at kp the key sought? pf_find asks `match`;
 * pf_find_str (sk set) compares a str in place and asks `match` (if any)
 * only about a keyed value. 1 yes (*key_end may be set), 0 no, < 0 error. */
PF_INLINE int candidate(const pf_image *img, uint64_t kp, const str_key *sk,
                        pf_match_fn match, void *ctx, uint64_t *key_end,
                        pf_error *err)
{
    *key_end = 0;
    if (!sk)
        return match(ctx, img, kp, key_end);
    const int m = str_key_eq(&img->r, kp, sk->units, sk->n, sk->width,
                             key_end, err);
    if (PF_LIKELY(m != 2))
        return m;
    *key_end = 0;
    return match ? match(ctx, img, kp, key_end) : 0;
}

/* The probe loop for slots of W bytes (R22, R23). Inlined with W and sk
 * constants, so a probe is one load of the right width: a hit touches the
 * slot's cache line and then the key; the tag, the hash bits that do not
 * fit beside rec_off, rejects almost every other occupied slot without
 * touching its key. */
PF_INLINE int probe_slots(const pf_image *img, const pf_val *c, uint64_t hash,
                          const int W, const str_key *sk, pf_match_fn match,
                          void *ctx, uint64_t *key_pos, uint64_t *val_pos,
                          pf_error *err)
{
    const uint64_t body = c->u.c.body, bl = c->u.c.body_len;
    const uint64_t nslots = c->u.c.nslots;
    const unsigned ibits = pf_bitlen64(bl);
    const unsigned wbits = 8u * (unsigned)W;
    if (PF_UNLIKELY(ibits >= wbits))
        return PF_CORRUPT(err, "slot width leaves no tag bits", c->pos);
    const unsigned tagbits = wbits - ibits;
    const uint64_t tag = tagbits >= 64 ? hash : hash & ((1ull << tagbits) - 1);
    const uint64_t imask = (1ull << ibits) - 1; /* ibits <= 63 here */
    const uint8_t *table = img->r.base + c->u.c.table;
    uint64_t i = pf_mulhi(hash, nslots);
    for (uint64_t probes = 0; probes < nslots; probes++) {       /* R23 */
        const uint8_t *sp = table + i * (uint64_t)W;
        const uint64_t slot = W == 2 ? pf_ld16(sp) : W == 4 ? pf_ld32(sp)
                                                            : pf_ld64(sp);
        if (slot == 0)
            return 0;
        if ((slot >> ibits) == tag) {
            const uint64_t ro = slot & imask;
            if (PF_UNLIKELY(ro == 0 || ro - 1 >= bl))              /* R24 */
                return PF_CORRUPT(err, "slot record offset outside the body",
                                  c->u.c.table + i * (uint64_t)W);
            const uint64_t kp = body + ro - 1;
            uint64_t key_end;
            const int m = candidate(img, kp, sk, match, ctx, &key_end, err);
            if (m < 0)
                return m;
            if (m)
                return found_at(&img->r, c, kp, key_end, key_pos, val_pos,
                                err);
        }
        if (++i == nslots)
            i = 0;
    }
    return 0;
}

/* pf_find and pf_find_str: the slots of a slotted container, else a scan
 * of its records (R22: at most 8), where record_next already found where
 * each value starts. */
PF_INLINE int find_key(const pf_image *img, const pf_val *c, uint64_t hash,
                       const str_key *sk, pf_match_fn match, void *ctx,
                       uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    switch (c->u.c.nslots ? c->u.c.width : 0) {
    case 4:
        return probe_slots(img, c, hash, 4, sk, match, ctx, key_pos, val_pos,
                           err);
    case 8:
        return probe_slots(img, c, hash, 8, sk, match, ctx, key_pos, val_pos,
                           err);
    case 2:
        return probe_slots(img, c, hash, 2, sk, match, ctx, key_pos, val_pos,
                           err);
    case 0:
        break;
    default:
        return pf_fail(err, PF_EINVAL, "container not decoded by pf_read", 0);
    }
    const pf_range *r = &img->r;
    uint64_t cursor = 0, kp = 0, vp = 0, key_end;
    int rc;
    while ((rc = record_next(r, c, &cursor, &kp, &vp, err)) == 1) {
        const int m = candidate(img, kp, sk, match, ctx, &key_end, err);
        if (m < 0)
            return m;
        if (m) {
            *key_pos = kp;
            *val_pos = vp;
            return 1;
        }
    }
    return rc;
}

int pf_find(const pf_image *img, const pf_val *c, uint64_t hash,
            pf_match_fn match, void *ctx, uint64_t *key_pos,
            uint64_t *val_pos, pf_error *err)
{
    if (!c || !is_map(c->type))
        return pf_fail(err, PF_ETYPE, "not a dict, set or frozenset", 0);
    if (!match)
        return pf_fail(err, PF_EINVAL, "no match function", 0);
    return find_key(img, c, hash, NULL, match, ctx, key_pos, val_pos, err);
}

int pf_find_str(const pf_image *img, const pf_val *c, const void *units,
                size_t n, int width, pf_match_fn match, void *ctx,
                uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    if (!c || !is_map(c->type))
        return pf_fail(err, PF_ETYPE, "not a dict, set or frozenset", 0);
    if ((width != 1 && width != 2 && width != 4) || (!units && n))
        return pf_fail(err, PF_EINVAL, "bad str key", 0);
    const str_key sk = {(const uint8_t *)units, n, width};
    const uint64_t hash = pf_hash_str(img->r.seed, units, n, width);
    return find_key(img, c, hash, &sk, match, ctx, key_pos, val_pos, err);
}

/* ------------------------------------------------------------------ order */

/* Ordered containers (R36): the records lie in the body in ascending key
 * order; a search narrows to a block of 2^sshift records with the samples'
 * key prefixes (a few stored keys read where prefixes tie), then reads the
 * block in order. Positions are image offsets of records; the body end
 * stands for "past the last". */

static int check_ordered(const pf_val *c, const void *key, int width,
                         pf_error *err)
{
    if (!c || c->type < PF_DICT || c->type > PF_FROZENSET || !c->u.c.okind)
        return pf_fail(err, PF_ETYPE, "not an ordered dict, set or frozenset", 0);
    if ((width != 1 && width != 2 && width != 4) ||
        (c->u.c.okind == PF_ORDER_BYTES && width != 1) || !key)
        return pf_fail(err, PF_EINVAL, "bad key width for this order", 0);
    return PF_OK;
}

/* The record at pos: 1 with its key and value offsets (value 0 in a set)
 * and where the next one starts; 0 at the body end. */
static int read_record(const pf_range *r, const pf_val *c, uint64_t pos,
                          uint64_t *key_pos, uint64_t *val_pos, uint64_t *next,
                          pf_error *err)
{
    const uint64_t body = c->u.c.body, body_end = body + c->u.c.body_len;
    if (pos == body_end)
        return 0;
    if (pos < body || pos > body_end)
        return pf_fail(err, PF_EINVAL, "record position outside the body", pos);
    pf_val v;
    int rc = decode(r, pos, &v, 0, 0, err);
    if (rc != PF_OK)
        return rc;
    uint64_t n = v.next, vp = 0;
    if (n > body_end)
        return PF_CORRUPT(err, "record runs past the body (R20)", pos);
    if (c->type == PF_DICT) {
        if (n == body_end)
            return PF_CORRUPT(err, "dict record without a value (R20)", pos);
        vp = n;
        if ((rc = decode(r, vp, &v, 0, 0, err)) != PF_OK)
            return rc;
        n = v.next;
        if (n > body_end)
            return PF_CORRUPT(err, "record runs past the body (R20)", vp);
    }
    *key_pos = pos;
    *val_pos = vp;
    *next = n;
    return 1;
}

/* 8 bytes as a big-endian number: compares as memcmp does. */
static inline uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = v << 8 | p[k];
    return v;
}

static const uint8_t *sample_at(const pf_range *r, const pf_val *c, uint64_t j)
{
    return r->base + c->u.c.samples + j * (8 + (uint64_t)c->u.c.width);
}

/* The record a sample names (R36): its offset, checked inside the body. */
static int sample_pos(const pf_range *r, const pf_val *c, uint64_t j,
                      uint64_t *pos, pf_error *err)
{
    const uint64_t off = pf_ldw(sample_at(r, c, j) + 8, c->u.c.width);
    if (off >= c->u.c.body_len)
        return PF_CORRUPT(err, "order sample outside the body (R36)",
                          c->u.c.samples + j * (8 + (uint64_t)c->u.c.width));
    *pos = c->u.c.body + off;
    return PF_OK;
}

static int ordered_at(const pf_range *r, const pf_val *c, uint64_t rank,
                      uint64_t *pos, pf_error *err)
{
    if (rank >= c->u.c.count) {
        if (rank > c->u.c.count)
            return pf_fail(err, PF_ERANGE, "rank past the end", 0);
        *pos = c->u.c.body + c->u.c.body_len;
        return PF_OK;
    }
    const uint64_t j = rank >> c->u.c.sshift;
    uint64_t p, kp, vp, next;
    int rc = sample_pos(r, c, j, &p, err);
    for (uint64_t k = j << c->u.c.sshift; rc == PF_OK && k < rank; k++) {
        rc = read_record(r, c, p, &kp, &vp, &next, err);
        if (rc == 0)
            return PF_CORRUPT(err, "order sample past its rank (R36)", c->pos);
        if (rc == 1) {
            p = next;
            rc = PF_OK;
        }
    }
    if (rc != PF_OK)
        return rc;
    *pos = p;
    return PF_OK;
}

int pf_units_cmp(const uint8_t *a, size_t na, int wa, const uint8_t *b, size_t nb,
                 int wb, size_t *common)
{
    const size_t m = na < nb ? na : nb;
    size_t i = 0;
    if (wa == 1 && wb == 1) {
        while (i + 8 <= m && memcmp(a + i, b + i, 8) == 0)
            i += 8;
    }
    while (i < m && pf_unit_at(a, i, wa) == pf_unit_at(b, i, wb))
        i++;
    *common = i;
    if (i < m)
        return pf_unit_at(a, i, wa) < pf_unit_at(b, i, wb) ? -1 : 1;
    return na < nb ? -1 : na > nb;
}

/* The stored key at kp (str or bytes, as the order's kind) against key. */
static int key_cmp(const pf_range *r, const pf_val *c, uint64_t kp,
                   const uint8_t *key, size_t n, int width, int *cmp,
                   size_t *common, uint64_t *klen, pf_error *err)
{
    const uint8_t *d;
    int kw;
    size_t len;
    const unsigned t = kp >= r->start && kp < r->end ? r->base[kp] : 0;
    if (t >= PF_T_SHORT_STR && c->u.c.okind == PF_ORDER_STR &&
        t - PF_T_SHORT_STR < r->end - kp) {
        /* the common key, a short ASCII str written in place (R15): its
         * bytes are checked ASCII when it is decoded; an order compares
         * them as they are */
        d = r->base + kp + 1;
        kw = 1;
        len = t - PF_T_SHORT_STR;
    } else {
        pf_val kv;
        int rc = decode(r, kp, &kv, 1, 0, err);
        if (rc != PF_OK)
            return rc;
        if (kv.type != (c->u.c.okind == PF_ORDER_STR ? PF_STR : PF_BYTES))
            return PF_CORRUPT(err, "ordered container key not of its order's "
                              "kind (R36)", kp);
        d = kv.u.s.data;
        kw = kv.u.s.width;
        len = (size_t)kv.u.s.len;
    }
    *klen = len;
    *cmp = pf_units_cmp(d, len, kw, key, n, width, common);
    return PF_OK;
}

/* The first 8 bytes of key's UTF-8 (str) or bytes, zero-padded: the
 * samples' prefix form (R36). */
void pf_order_prefix(const void *keyp, size_t n, int width, int okind,
                     uint8_t out[8])
{
    const uint8_t *key = (const uint8_t *)keyp;
    size_t o = 0;
    memset(out, 0, 8);
    for (size_t k = 0; k < n && o < 8; k++) {
        uint32_t cp = pf_unit_at(key, k, width);
        uint8_t b[4];
        unsigned nb;
        if (okind == PF_ORDER_BYTES || cp < 0x80) {
            b[0] = (uint8_t)cp;
            nb = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xC0 | (cp >> 6));
            b[1] = (uint8_t)(0x80 | (cp & 0x3F));
            nb = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xE0 | (cp >> 12));
            b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[2] = (uint8_t)(0x80 | (cp & 0x3F));
            nb = 3;
        } else if (cp > 0x10FFFF) {
            /* no stored key holds one (R15): after every UTF-8 byte */
            memset(out + o, 0xFF, 8 - o);
            return;
        } else {
            b[0] = (uint8_t)(0xF0 | (cp >> 18));
            b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            b[3] = (uint8_t)(0x80 | (cp & 0x3F));
            nb = 4;
        }
        for (unsigned t = 0; t < nb && o < 8; t++)
            out[o++] = b[t];
    }
}

/* seek, and the record before the one found (its offset in *prev, or 0
 * when the found one is the first). */
typedef struct {
    int found;            /* a record met whose key is a prefix of the key */
    uint64_t rank, kp, vp, len;   /* the last such: the longest */
    size_t low;           /* the shortest common prefix with the key of the
                             records met before it (SIZE_MAX: none) */
} seek_prefix;

static int seek_impl(const pf_range *r, const pf_val *c, const uint8_t *key,
                     size_t n, int width, int after, uint64_t *rank_out,
                     uint64_t *pos_out, uint64_t *prev_out, seek_prefix *best,
                     pf_error *err)
{
    const uint64_t count = c->u.c.count;
    const unsigned sshift = (unsigned)c->u.c.sshift;
    const uint64_t nsamples = (count >> sshift) +
                              ((count & ((UINT64_C(1) << sshift) - 1)) != 0);
    uint8_t probe[8];
    pf_order_prefix(key, n, width, c->u.c.okind, probe);
    const uint64_t pk = load_be64(probe);
    /* the last sample whose key is < key (after: <= key) */
    uint64_t lo = 0, hi = nsamples;
    int rc, cmp;
    size_t common;
    uint64_t klen, kp, vp, next;
    while (lo < hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        const uint64_t sk = load_be64(sample_at(r, c, mid));
        const int c8 = sk < pk ? -1 : sk > pk;
        int below;
        if (c8 != 0) {
            below = c8 < 0;
        } else {
            uint64_t sp;
            if ((rc = sample_pos(r, c, mid, &sp, err)) != PF_OK ||
                (rc = key_cmp(r, c, sp, key, n, width, &cmp, &common, &klen,
                              err)) != PF_OK)
                return rc;
            below = after ? cmp <= 0 : cmp < 0;
        }
        if (below)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t rank = 0, pos = c->u.c.body, prev = 0;
    if (lo > 0) {
        rank = (lo - 1) << sshift;
        if ((rc = sample_pos(r, c, lo - 1, &pos, err)) != PF_OK)
            return rc;
    }
    while (rank < count) {
        rc = read_record(r, c, pos, &kp, &vp, &next, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return PF_CORRUPT(err, "body holds fewer records than count (R20)",
                              c->pos);
        if ((rc = key_cmp(r, c, kp, key, n, width, &cmp, &common, &klen,
                          err)) != PF_OK)
            return rc;
        if (best && cmp <= 0) {
            if (common == klen) {
                best->found = 1;
                best->rank = rank;
                best->kp = kp;
                best->vp = vp;
                best->len = klen;
            }
            if (common < best->low)
                best->low = common;
        }
        if (after ? cmp > 0 : cmp >= 0)
            break;
        prev = pos;
        pos = next;
        rank++;
    }
    if (rank == count)
        pos = c->u.c.body + c->u.c.body_len;
    if (rank > 0 && prev == 0 && (rc = ordered_at(r, c, rank - 1, &prev, err)) != PF_OK)
        return rc; /* a sample that sorts after its search (damaged) */
    *rank_out = rank;
    *pos_out = pos;
    *prev_out = prev;
    return PF_OK;
}

int pf_ordered_seek(const pf_image *img, const pf_val *c, const void *key,
                    size_t n, int width, int after, uint64_t *rank,
                    uint64_t *pos, pf_error *err)
{
    uint64_t prev;
    int rc = check_ordered(c, key, width, err);
    if (rc != PF_OK)
        return rc;
    return seek_impl(&img->r, c, (const uint8_t *)key, n, width, after, rank,
                     pos, &prev, NULL, err);
}

int pf_ordered_at(const pf_image *img, const pf_val *c, uint64_t rank,
                  uint64_t *pos, pf_error *err)
{
    uint8_t k = 0;
    int rc = check_ordered(c, &k, 1, err);
    if (rc != PF_OK)
        return rc;
    return ordered_at(&img->r, c, rank, pos, err);
}

int pf_ordered_next(const pf_image *img, const pf_val *c, uint64_t *pos,
                    uint64_t *key_pos, uint64_t *val_pos, pf_error *err)
{
    uint8_t k = 0;
    uint64_t next;
    int rc = check_ordered(c, &k, 1, err);
    if (rc != PF_OK)
        return rc;
    rc = read_record(&img->r, c, *pos, key_pos, val_pos, &next, err);
    if (rc == 1)
        *pos = next;
    return rc;
}

int pf_ordered_compare(const pf_image *img, uint64_t key_pos, const void *key,
                       size_t n, int width, int *cmp, size_t *common,
                       pf_error *err)
{
    pf_val kv;
    int rc = decode(&img->r, key_pos, &kv, 1, 0, err);
    if (rc != PF_OK)
        return rc;
    if ((kv.type != PF_STR && kv.type != PF_BYTES) || !key ||
        (width != 1 && width != 2 && width != 4))
        return pf_fail(err, PF_ETYPE, "not a str or bytes key", key_pos);
    pf_val c;
    memset(&c, 0, sizeof c);
    c.u.c.okind = kv.type == PF_STR ? PF_ORDER_STR : PF_ORDER_BYTES;
    uint64_t klen;
    return key_cmp(&img->r, &c, key_pos, (const uint8_t *)key, n, width, cmp,
                   common, &klen, err);
}

int pf_ordered_longest_prefix(const pf_image *img, const pf_val *c,
                              const void *keyp, size_t n, int width,
                              uint64_t *rank_out, uint64_t *key_pos,
                              uint64_t *val_pos, size_t *len, pf_error *err)
{
    const pf_range *r = &img->r;
    const uint8_t *key = (const uint8_t *)keyp;
    int rc = check_ordered(c, key, width, err);
    if (rc != PF_OK)
        return rc;
    /* The longest stored key <= key[0..m) is its answer if it is a prefix
     * of it; otherwise the answer is a prefix of their common part, which
     * is shorter: each round shortens m. Better still: a prefix of
     * key[0..m) that the scan did not meet sorts before every key it met
     * (all <= key[0..m), none a prefix), so it is no longer than the
     * shortest common part of those. */
    size_t m = n;
    for (;;) {
        uint64_t rank, pos, prev, kp, vp, next, klen;
        int cmp;
        size_t common;
        seek_prefix best = {0, 0, 0, 0, 0, SIZE_MAX};
        if ((rc = seek_impl(r, c, key, m, width, 1, &rank, &pos, &prev, &best,
                            err)) != PF_OK)
            return rc;
        if (best.found) {
            /* Prefixes of one text sort by length: the last one the scan
             * met (all before key[0..m)) is the longest there is. */
            *rank_out = best.rank;
            *key_pos = best.kp;
            *val_pos = best.vp;
            *len = (size_t)best.len;
            return 1;
        }
        if (rank == 0)
            return 0;
        if ((rc = read_record(r, c, prev, &kp, &vp, &next, err)) != 1)
            return rc == 0 ? PF_CORRUPT(err, "order sample past the body (R36)",
                                        c->pos) : rc;
        if ((rc = key_cmp(r, c, kp, key, m, width, &cmp, &common, &klen, err)) != PF_OK)
            return rc;
        if (common == klen) {
            *rank_out = rank - 1;
            *key_pos = kp;
            *val_pos = vp;
            *len = (size_t)klen;
            return 1;
        }
        if (common >= m) /* a damaged order: the key sorts after key[0..m) */
            return PF_CORRUPT(err, "ordered container keys out of order (R36)", kp);
        m = common < best.low ? common : best.low;
    }
}
