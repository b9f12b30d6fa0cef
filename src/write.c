/*
 * write.c -- the writer: builds one image in a growable memory buffer, ival
 * after ival, driven by a caller that walks its own object graph (the
 * CPython binding). It emits the canonical encodings of docs/FORMAT.md
 * (narrowest strings R15, fewest-byte ints R16, decimal floats R25, short
 * tuples R26), stores equal strings and bytes once (REF, R17; SREF through
 * the VALUES table when shorter, R28; again when frequent and far, R27),
 * builds each container's table at pf_write_end
 * (list offsets R19, slot table R22) and finally the section table and
 * header. Positions are final image offsets: the first 128 bytes of the
 * buffer are reserved for the header, DATA starts right after.
 *
 * Key hashes are computed from the bytes just written, by the same code
 * readers use (pf_hash_range in read.c), so writer and reader cannot drift.
 */
#include <stdlib.h>

#include "internal.h"

#define INITIAL_CAP (64u * 1024u)
#define FRAME_TUPLE 0x18

typedef struct pf_frame {
    int kind;          /* FRAME_TUPLE or a container type byte (0x20..0x23) */
    uint64_t start;    /* container: offset of its header */
    uint64_t body;     /* container: offset of its body */
    uint64_t count;    /* container: items announced; tuple: ivals still due */
    uint64_t items;    /* pf_write_item calls so far */
    uint64_t ivals;    /* ivals completed directly inside this container */
    uint64_t keys;     /* pf_write_key_done calls so far */
    uint64_t *recs;    /* per item: offset in the body (kept for reuse) */
    uint64_t *hashes;  /* per item: key hash (dict/set/frozenset) */
    size_t cap;        /* entries in recs and hashes */
} pf_frame;

/* Dedup table entry: (top 24 bits of the value's hash << 40) | offset of
 * its anchor, the stored copy that REFs point to; 0 is empty (DATA starts
 * at 128). Values stored beyond 2^40 bytes are not entered. The slot index
 * is the top bits of the hash, so while the table has at most 2^24 slots a
 * rehash needs only the entry.
 *
 * Beside each entry, dd_last keeps where the value was last written or
 * referenced, as (offset >> 9) + 1 (0: at the anchor). A REF costs 1 +
 * varint(distance) bytes, so as the image grows the REFs to an early
 * anchor grow to 4 and 5 bytes. A value seen again soon after its last
 * occurrence is frequent: storing it once more, as the new anchor, costs
 * the copy's extra bytes now and makes its next REFs shorter, by a byte or
 * more for every occurrence within 2^(7 (dl-1)) bytes of the new anchor
 * (dl: the varint length the REF would need now). With `gap` the distance
 * to the last occurrence, about 2^(7 (dl-1)) / gap of them are expected;
 * the writer re-anchors when that is more than 4 times the copy's extra
 * bytes (the factor covers the noise of judging a rate by one gap). Rare
 * values keep their long REF. The 512-byte granularity of dd_last only
 * makes gaps look up to 511 bytes longer, which errs towards a REF. */
#define DD_OFF_BITS 40
#define DD_OFF_MASK ((UINT64_C(1) << DD_OFF_BITS) - 1)
#define DD_LAST_SHIFT 9 /* offsets < 2^40: (off >> 9) + 1 < 2^32 */
#define DD_ANCHOR_FACTOR 4

struct pf_writer {
    uint8_t *buf;
    size_t len;        /* bytes written = offset of the next ival */
    size_t cap;
    uint64_t seed;
    int finished;
    pf_frame *frames;  /* open tuples and containers, innermost last */
    size_t nframes;
    size_t frames_cap;
    uint64_t *dd;      /* strings and bytes already stored (R17) */
    uint32_t *dd_last; /* per entry: last occurrence (see DD_LAST_SHIFT) */
    uint32_t *dd_sref; /* per entry: its VALUES index + 1, or 0 (R28) */
    size_t dd_cap;     /* power of two, or 0 */
    unsigned dd_bits;  /* log2(dd_cap) */
    size_t dd_used;
    uint64_t last_pos; /* the last deduplicated value written, and its hash */
    uint64_t last_hash;
    uint8_t *vtab;     /* the VALUES table (R28): vcount u64 LE offsets */
    size_t vcount;
    size_t vcap;       /* entries allocated */
    /* Record mode (the streaming builder, build.c): the buffer holds one
     * record at a time, so REFs stay inside it, the VALUES table is not
     * used, and strings met in earlier records are offered to pool_fn. */
    pf_pool_fn pool_fn;
    void *pool_ctx;
    int pool_off;      /* the builder is writing a key: no pool */
    int pool_keys_off; /* no pool for keys: an ordered build (R36) */
    unsigned in_key;   /* dict/set items whose key is not done yet */
    size_t *dd_fill;   /* record mode: the dd slots in use, to clear them */
    uint64_t incompat; /* incompat_flags the image needs (R6) */
};

/* ------------------------------------------------------------------ buffer */

static int grow(pf_writer *w, size_t extra, pf_error *err)
{
    if (PF_UNLIKELY(w->finished || !w->buf))
        return pf_fail(err, PF_EINVAL, "writer already finished", 0);
    if (extra > SIZE_MAX - w->len)
        return pf_fail(err, PF_ELIMIT, "image too large", w->len);
    size_t need = w->len + extra, cap = w->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *b = (uint8_t *)realloc(w->buf, cap);
    if (!b)
        return pf_fail(err, PF_ENOMEM, "out of memory for the image", 0);
    w->buf = b;
    w->cap = cap;
    return PF_OK;
}

PF_INLINE int ensure(pf_writer *w, size_t extra, pf_error *err)
{
    if (PF_LIKELY(!w->finished && w->cap - w->len >= extra))
        return PF_OK;
    return grow(w, extra, err);
}

/* One ival was completed at the current level: count it for the innermost
 * open container, or close finished tuples (which completes them as ivals
 * one level up). */
PF_INLINE void ival_done(pf_writer *w)
{
    while (w->nframes > 0) {
        pf_frame *f = &w->frames[w->nframes - 1];
        if (f->kind != FRAME_TUPLE) {
            f->ivals++;
            return;
        }
        if (--f->count > 0)
            return;
        w->nframes--;
    }
}

/* ------------------------------------------------------------------ writer */

int pf_writer_new(pf_writer **out, uint64_t hash_seed, pf_error *err)
{
    if (!out)
        return pf_fail(err, PF_EINVAL, "no output", 0);
    *out = NULL;
    pf_writer *w = (pf_writer *)calloc(1, sizeof *w);
    if (!w)
        return pf_fail(err, PF_ENOMEM, "out of memory for a writer", 0);
    w->buf = (uint8_t *)malloc(INITIAL_CAP);
    if (!w->buf) {
        free(w);
        return pf_fail(err, PF_ENOMEM, "out of memory for a writer", 0);
    }
    memset(w->buf, 0, PF_HEADER_LEN);
    w->len = PF_HEADER_LEN;
    w->cap = INITIAL_CAP;
    w->seed = hash_seed;
    w->last_pos = 0;
    *out = w;
    return PF_OK;
}

void pf_writer_free(pf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->frames_cap; i++) {
        free(w->frames[i].recs);
        free(w->frames[i].hashes);
    }
    free(w->frames);
    free(w->dd);
    free(w->dd_last);
    free(w->dd_sref);
    free(w->dd_fill);
    free(w->vtab);
    free(w->buf);
    free(w);
}

void pf_free(void *p) { free(p); }

uint64_t pf_writer_pos(const pf_writer *w) { return w->len; }
uint64_t pf_writer_hash_seed(const pf_writer *w) { return w->seed; }

/* ------------------------------------------------------------------ scalars */

PF_INLINE int put1(pf_writer *w, uint8_t b, pf_error *err)
{
    int rc = ensure(w, 1, err);
    if (rc != PF_OK)
        return rc;
    w->buf[w->len++] = b;
    ival_done(w);
    return PF_OK;
}

int pf_write_none(pf_writer *w, pf_error *err)
{
    return put1(w, PF_T_NONE, err);
}

int pf_write_bool(pf_writer *w, int v, pf_error *err)
{
    return put1(w, v ? PF_T_TRUE : PF_T_FALSE, err);
}

int pf_write_int(pf_writer *w, int64_t v, pf_error *err)
{
    /* Fewest bytes holding v in two's complement (R16): the magnitude's bits
     * plus a sign bit. */
    uint64_t u = v < 0 ? ~(uint64_t)v : (uint64_t)v;
    unsigned n = pf_bitlen64(u) / 8 + 1;
    int rc = ensure(w, 9, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    uint8_t b[8];
    pf_st64(b, (uint64_t)v);
    p[0] = (uint8_t)(PF_T_INT1 - 1 + n);
    memcpy(p + 1, b, n);
    w->len += 1 + n;
    ival_done(w);
    return PF_OK;
}

int pf_write_bigint(pf_writer *w, const uint8_t *le, size_t n, pf_error *err)
{
    if (!le || n == 0)
        return pf_fail(err, PF_EINVAL, "big int with no bytes", 0);
    while (n > 1 && ((le[n - 1] == 0x00 && le[n - 2] < 0x80) ||
                     (le[n - 1] == 0xFF && le[n - 2] >= 0x80)))
        n--;
    if (n <= 8) {
        uint8_t b[8];
        memset(b, (le[n - 1] & 0x80) ? 0xFF : 0x00, 8);
        memcpy(b, le, n);
        int64_t v;
        memcpy(&v, b, 8);
        return pf_write_int(w, v, err);
    }
    if (n > SIZE_MAX - 11)
        return pf_fail(err, PF_ELIMIT, "big int too large", 0);
    int rc = ensure(w, 11 + n, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_BIGINT;
    unsigned vl = pf_varint_put(p + 1, n);
    memcpy(p + 1 + vl, le, n);
    w->len += 1 + vl + n;
    ival_done(w);
    return PF_OK;
}

/* The decimal form of R25 for v, if it is shorter than the 9 bytes of the
 * plain form: *z_out = zigzag(m) and *e_out = e, the smallest e in 0..9
 * with (double)m / 10^e == v. Returns 0 when there is none (most doubles
 * that are not short decimals: random ones, results of arithmetic).
 *
 * Shorter means 1 + varint_len(zigzag(m)) < 9, so |m| <= 2^48. For such
 * an m, v = m / 10^e rounded lies within ulp(v)/2 <= |v| 2^-53 of m / 10^e;
 * with E the largest e <= 9 that keeps |v| 10^E <= 2^48, x = v * 10^E is
 * therefore within |x| 2^-52 (error of v, then of the multiplication) of
 * the integer M = m 10^(E-e). The pre-test rejects v unless x is that close
 * to an integer, which costs a multiplication and a few comparisons. Then
 * the spacing 10^-e of candidates is >= 16 ulp(v), so for each e at most
 * one m can work, and the smallest e is M stripped of its trailing decimal
 * zeros (at most E of them). The choice is confirmed by the exact division
 * a reader does: nothing rests on the multiplication being exact. */
static int decimal_form(double v, uint64_t *z_out, unsigned *e_out)
{
    static const double limit = 281474976710656.0; /* 2^48 */
    uint64_t bits;
    memcpy(&bits, &v, 8);
    if (bits == 0) {              /* +0.0 is m = 0; -0.0 has no decimal form */
        *z_out = 0;
        *e_out = 0;
        return 1;
    }
    const double a = v < 0 ? -v : v;
    if (!(a <= limit))            /* too large, infinite or NaN */
        return 0;
    int E = PF_DEC_MAX_E;
    while (E > 0 && !(a * pf_pow10[E] <= limit))
        E--;
    const double x = a * pf_pow10[E];     /* 0 < x <= 2^48: exact in int64 */
    int64_t M = (int64_t)(x + 0.5);
    const double r = x - (double)M;
    const double tol = x * 0x1p-50;       /* 4x the bound above */
    if (M == 0 || r > tol || r < -tol)
        return 0;
    unsigned e = (unsigned)E;
    while (e > 0 && M % 10 == 0) {
        M /= 10;
        e--;
    }
    double q = (double)M / pf_pow10[e];   /* R25: what a reader computes */
    if (v < 0)
        q = -q;
    if (q != v) /* x was that close to an integer by chance (0.1 + 0.2): */
        return 0; /* then no e works, since M would be the one to try */
    /* zigzag(m) of m = +-M: 2M, or 2M - 1 for a negative m */
    const uint64_t z = v < 0 ? 2 * (uint64_t)M - 1 : 2 * (uint64_t)M;
    if (1 + pf_varint_len(z) >= 9)
        return 0;
    *z_out = z;
    *e_out = e;
    return 1;
}

int pf_write_float(pf_writer *w, double v, pf_error *err)
{
    int rc = ensure(w, 9, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    uint64_t z;
    unsigned e;
    if (decimal_form(v, &z, &e)) {                                 /* R25 */
        p[0] = (uint8_t)(PF_T_DEC0 + e);
        w->len += 1 + pf_varint_put(p + 1, z);
    } else {
        p[0] = PF_T_FLOAT;
        memcpy(p + 1, &v, 8);
        w->len += 9;
    }
    ival_done(w);
    return PF_OK;
}

int pf_write_complex(pf_writer *w, double re, double im, pf_error *err)
{
    int rc = ensure(w, 17, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_COMPLEX;
    memcpy(p + 1, &re, 8);
    memcpy(p + 9, &im, 8);
    w->len += 17;
    ival_done(w);
    return PF_OK;
}

/* ------------------------------------------------------------------ strings */

/* The hash a stored string or bytes ival at off was entered with. */
static uint64_t stored_hash(const pf_writer *w, uint64_t off)
{
    const uint8_t *p = w->buf + off;
    unsigned t = p[0];
    if (t >= PF_T_SHORT_STR)
        return pf_hash_str(w->seed, p + 1, t - PF_T_SHORT_STR, 1);
    uint64_t n = 0;
    unsigned vl = pf_varint_get(p + 1, w->len - off - 1, &n);
    if (t == PF_T_BYTES)
        return pf_hash_bytesval(w->seed, p + 1 + vl, (size_t)n);
    int width = t == PF_T_STR_UCS2 ? 2 : t == PF_T_STR_UCS4 ? 4 : 1;
    return pf_hash_str(w->seed, p + 1 + vl, (size_t)n, width);
}

static int dedup_grow(pf_writer *w, pf_error *err)
{
    unsigned nbits = w->dd_cap ? w->dd_bits + 1 : w->pool_fn ? 8 : 14;
    if (nbits >= 8 * sizeof(size_t) - 4)
        return pf_fail(err, PF_ENOMEM, "out of memory for the string table", 0);
    size_t ncap = (size_t)1 << nbits;
    uint64_t *nd = (uint64_t *)calloc(ncap, sizeof(uint64_t));
    uint32_t *nl = (uint32_t *)calloc(ncap, sizeof(uint32_t));
    uint32_t *ns = (uint32_t *)calloc(ncap, sizeof(uint32_t));
    size_t *nf = w->pool_fn ? (size_t *)malloc(ncap / 2 * sizeof(size_t))
                            : NULL;
    if (!nd || !nl || !ns || (w->pool_fn && !nf)) {
        free(nd);
        free(nl);
        free(ns);
        free(nf);
        return pf_fail(err, PF_ENOMEM, "out of memory for the string table", 0);
    }
    size_t nfill = 0;
    for (size_t i = 0; i < w->dd_cap; i++) {
        uint64_t e = w->dd[i];
        if (!e)
            continue;
        size_t j = nbits <= 24 ? (size_t)((e >> DD_OFF_BITS) >> (24 - nbits))
                               : (size_t)(stored_hash(w, e & DD_OFF_MASK) >>
                                          (64 - nbits));
        while (nd[j])
            j = (j + 1) & (ncap - 1);
        nd[j] = e;
        nl[j] = w->dd_last[i];
        ns[j] = w->dd_sref[i];
        if (nf)
            nf[nfill++] = j;
    }
    free(w->dd_fill);
    w->dd_fill = nf;
    free(w->dd);
    free(w->dd_last);
    free(w->dd_sref);
    w->dd = nd;
    w->dd_last = nl;
    w->dd_sref = ns;
    w->dd_cap = ncap;
    w->dd_bits = nbits;
    return PF_OK;
}

/* Gives the value stored at `off` the next VALUES index (R28). */
static int vtab_add(pf_writer *w, uint64_t off, pf_error *err)
{
    if (w->vcount == w->vcap) {
        size_t ncap = w->vcap ? 2 * w->vcap : 1024;
        uint8_t *nv = ncap <= SIZE_MAX / 8 ? (uint8_t *)realloc(w->vtab, ncap * 8)
                                           : NULL;
        if (!nv)
            return pf_fail(err, PF_ENOMEM, "out of memory for the VALUES "
                           "table", 0);
        w->vtab = nv;
        w->vcap = ncap;
    }
    pf_st64(w->vtab + 8 * w->vcount++, off);
    return PF_OK;
}

/* Appends a REF (arg: distance) or an SREF (arg: index) as the next ival,
 * in space the caller ensured, and records it as the last occurrence of
 * dedup entry j. */
static void put_reference(pf_writer *w, uint8_t type, uint64_t arg, size_t j,
                          int can_anchor)
{
    const uint64_t pos = w->len;
    uint8_t *p = w->buf + pos;
    p[0] = type;
    w->len += 1 + pf_varint_put(p + 1, arg);
    if (can_anchor)
        w->dd_last[j] = (uint32_t)((pos >> DD_LAST_SHIFT) + 1);
    ival_done(w);
}

/* Appends a string or bytes ival: header hdr[0..hlen) then nbytes of data.
 * Values longer than 3 bytes encoded are looked up among those already
 * stored; an equal one is referenced instead: by an SREF when that is the
 * shortest (R28), else by a REF when shorter than a copy (R17), unless it
 * is far and the value frequent (see dd_last). */
static int put_deduped(pf_writer *w, const uint8_t *hdr, unsigned hlen,
                       const void *data, size_t nbytes, uint64_t hash,
                       pf_error *err)
{
    if (nbytes > SIZE_MAX - hlen)
        return pf_fail(err, PF_ELIMIT, "string too large", 0);
    const size_t enc = hlen + nbytes;
    int rc = ensure(w, enc, err);
    if (rc != PF_OK)
        return rc;
    if (enc > 3) {
        if (w->dd_used * 2 >= w->dd_cap && (rc = dedup_grow(w, err)) != PF_OK)
            return rc;
        const size_t mask = w->dd_cap - 1;
        const uint64_t tag = hash >> DD_OFF_BITS;
        const uint64_t pos = w->len;
        const int can_anchor = pos <= DD_OFF_MASK;
        size_t j = (size_t)(hash >> (64 - w->dd_bits));
        uint64_t e;
        w->last_pos = pos;
        w->last_hash = hash;
        for (; (e = w->dd[j]) != 0; j = (j + 1) & mask) {
            uint64_t off = e & DD_OFF_MASK;
            if ((e >> DD_OFF_BITS) != tag || off + enc > pos ||
                memcmp(w->buf + off, hdr, hlen) != 0 ||
                memcmp(w->buf + off + hlen, data, nbytes) != 0)
                continue;
            const uint64_t d = pos - off;
            const unsigned dl = pf_varint_len(d);
            const uint32_t si = w->dd_sref[j];
            const uint64_t sidx = si ? si - 1 : w->vcount;
            const unsigned sl = pf_varint_len(sidx);
            /* A new index costs 8 bytes of table: it is given to a value
             * met for the third time or more (referenced before). */
            if (!w->pool_fn && sl < dl && 1 + sl < enc &&
                (si || (w->dd_last[j] != 0 && sidx < UINT32_MAX - 1))) {
                if (!si) {                                          /* R28 */
                    if ((rc = vtab_add(w, off, err)) != PF_OK)
                        return rc;
                    w->dd_sref[j] = (uint32_t)(sidx + 1);
                }
                put_reference(w, PF_T_SREF, sidx, j, can_anchor);
                return PF_OK;
            }
            int ref = 1 + dl < enc;                                 /* R17 */
            if (ref && dl >= 2 && can_anchor) {
                const uint32_t l = w->dd_last[j];
                const uint64_t last = l ? (uint64_t)(l - 1) << DD_LAST_SHIFT
                                        : off;
                const uint64_t gap = pos - last; /* >= 1: last < pos */
                const uint64_t shorter = (UINT64_C(1) << (7 * (dl - 1))) / gap;
                ref = enc - 1 - dl >= (shorter + DD_ANCHOR_FACTOR - 1) /
                                       DD_ANCHOR_FACTOR;
            }
            if (ref) {
                put_reference(w, PF_T_REF, d, j, can_anchor);
                return PF_OK;
            }
            /* A REF would be no shorter, or the value is frequent: store
             * a copy, the anchor of later REFs. */
            if (can_anchor) {
                w->dd[j] = (tag << DD_OFF_BITS) | pos;
                w->dd_last[j] = 0;
            }
            goto copy;
        }
        uint64_t sidx;
        if (w->pool_fn && !w->pool_off &&
            (w->in_key == 0 ||
             (w->in_key == 1 && !w->pool_keys_off && w->nframes > 0 &&
              w->frames[w->nframes - 1].kind != FRAME_TUPLE))) {
            /* Record mode: a string of an earlier record, in the pool. A
             * string inside a tuple or frozenset that is (part of) a key
             * is not offered: the key's hash must be computable from the
             * record's own bytes (only a key string itself is hashed as
             * it is written). */
            rc = w->pool_fn(w->pool_ctx, hdr, hlen, data, nbytes, hash,
                            &sidx, err);
            if (rc < 0)
                return rc;
            if (rc == 1 && 1 + pf_varint_len(sidx) < enc) {
                uint8_t *p = w->buf + pos;
                p[0] = PF_T_SREF;
                w->len += 1 + pf_varint_put(p + 1, sidx);
                ival_done(w);
                return PF_OK;
            }
        }
        if (can_anchor) {
            w->dd[j] = (tag << DD_OFF_BITS) | pos;
            if (w->dd_fill)
                w->dd_fill[w->dd_used] = j;
            w->dd_used++;
        }
    }
copy:
    memcpy(w->buf + w->len, hdr, hlen);
    if (nbytes)
        memcpy(w->buf + w->len + hlen, data, nbytes);
    w->len += enc;
    ival_done(w);
    return PF_OK;
}

int pf_write_str(pf_writer *w, const void *data, size_t nchars, int width,
                 int ascii, pf_error *err)
{
    if (width != 1 && width != 2 && width != 4)
        return pf_fail(err, PF_EINVAL, "string width not 1, 2 or 4", 0);
    if (!data && nchars)
        return pf_fail(err, PF_EINVAL, "string with no data", 0);
    if (nchars > SIZE_MAX / 4)
        return pf_fail(err, PF_ELIMIT, "string too large", 0);
    const uint8_t *d = (const uint8_t *)data;
    uint8_t hdr[11];
    unsigned hlen;
    if (width == 1) {
        int is_ascii = pf_all_ascii(d, nchars);
        if (ascii && !is_ascii)
            return pf_fail(err, PF_EINVAL, "string said ASCII has a byte "
                           ">= 0x80", 0);
        if (is_ascii && nchars < 128) {                             /* R15 */
            hdr[0] = (uint8_t)(PF_T_SHORT_STR + nchars);
            hlen = 1;
        } else {
            hdr[0] = is_ascii ? PF_T_STR_ASCII : PF_T_STR_LATIN1;
            hlen = 1 + pf_varint_put(hdr + 1, nchars);
        }
    } else {
        if (width == 4)
            for (size_t i = 0; i < nchars; i++)
                if (pf_ld32(d + 4 * i) > 0x10FFFFu)
                    return pf_fail(err, PF_EINVAL, "code point above 0x10FFFF",
                                   0);
        hdr[0] = width == 2 ? PF_T_STR_UCS2 : PF_T_STR_UCS4;
        hlen = 1 + pf_varint_put(hdr + 1, nchars);
    }
    size_t nbytes = nchars * (size_t)width;
    uint64_t h = hlen + nbytes > 3 ? pf_hash_str(w->seed, d, nchars, width) : 0;
    return put_deduped(w, hdr, hlen, d, nbytes, h, err);
}

int pf_write_bytes(pf_writer *w, const void *data, size_t n, pf_error *err)
{
    if (!data && n)
        return pf_fail(err, PF_EINVAL, "bytes with no data", 0);
    uint8_t hdr[11];
    hdr[0] = PF_T_BYTES;
    unsigned hlen = 1 + pf_varint_put(hdr + 1, n);
    uint64_t h = hlen + n > 3 ? pf_hash_bytesval(w->seed, data, n) : 0;
    return put_deduped(w, hdr, hlen, data, n, h, err);
}

int pf_write_ref(pf_writer *w, uint64_t target, pf_error *err)
{
    if (target < PF_HEADER_LEN || target >= w->len)
        return pf_fail(err, PF_EINVAL, "REF target is not an earlier ival",
                       target);
    if (w->buf[target] == PF_T_REF || w->buf[target] == PF_T_SREF) /* R17 */
        return pf_fail(err, PF_EINVAL, "REF target is itself a REF or SREF",
                       target);
    int rc = ensure(w, 11, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_REF;
    w->len += 1 + pf_varint_put(p + 1, w->len - target);
    ival_done(w);
    return PF_OK;
}

/* ------------------------------------------------------------------ extension values */

#define PF_ARRAY_ALIGN 64

int pf_write_pickle(pf_writer *w, const void *data, size_t n, pf_error *err)
{
    if (!data && n)
        return pf_fail(err, PF_EINVAL, "pickle with no data", 0);
    if (n > SIZE_MAX - 11)
        return pf_fail(err, PF_ELIMIT, "pickle too large", 0);
    int rc = ensure(w, 11 + n, err);
    if (rc != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_PICKLE;
    size_t hl = 1 + pf_varint_put(p + 1, n);
    if (n)
        memcpy(p + hl, data, n);
    w->len += hl + n;
    w->incompat |= PF_INCOMPAT_EXT;
    ival_done(w);
    return PF_OK;
}

uint64_t pf_writer_incompat(const pf_writer *w) { return w->incompat; }


static int push_frame(pf_writer *w, pf_frame **out, pf_error *err)
{
    if (w->nframes == w->frames_cap) {
        size_t ncap = w->frames_cap ? w->frames_cap * 2 : 16;
        if (ncap > SIZE_MAX / sizeof(pf_frame))
            return pf_fail(err, PF_ENOMEM, "out of memory for nesting", 0);
        pf_frame *nf = (pf_frame *)realloc(w->frames, ncap * sizeof(pf_frame));
        if (!nf)
            return pf_fail(err, PF_ENOMEM, "out of memory for nesting", 0);
        memset(nf + w->frames_cap, 0,
               (ncap - w->frames_cap) * sizeof(pf_frame));
        w->frames = nf;
        w->frames_cap = ncap;
    }
    pf_frame *f = &w->frames[w->nframes];
    f->kind = 0;
    f->start = f->body = f->count = f->items = f->ivals = f->keys = 0;
    *out = f; /* recs/hashes/cap are kept for reuse */
    return PF_OK;
}

int pf_write_tuple_begin(pf_writer *w, uint64_t n, pf_error *err)
{
    pf_frame *f = NULL;
    int rc = ensure(w, 11, err);
    if (rc != PF_OK)
        return rc;
    if (n > 0 && (rc = push_frame(w, &f, err)) != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    if (n >= 1 && n <= PF_T_TUPLE7 - PF_T_TUPLE) {                  /* R26 */
        p[0] = (uint8_t)(PF_T_TUPLE + n);
        w->len += 1;
    } else {
        p[0] = PF_T_TUPLE;
        w->len += 1 + pf_varint_put(p + 1, n);
    }
    if (n == 0) {
        ival_done(w);
        return PF_OK;
    }
    f->kind = FRAME_TUPLE;
    f->count = n;
    w->nframes++;
    return PF_OK;
}

int pf_write_object_begin(pf_writer *w, uint64_t nfields, pf_error *err)
{
    pf_frame *f = NULL;
    if (nfields > UINT64_MAX - 1)
        return pf_fail(err, PF_EINVAL, "too many object fields", 0);
    int rc = ensure(w, 11, err);
    if (rc != PF_OK || (rc = push_frame(w, &f, err)) != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_OBJECT;
    w->len += 1 + pf_varint_put(p + 1, nfields);
    f->kind = FRAME_TUPLE; /* the shape, then the fields */
    f->count = nfields + 1;
    w->nframes++;
    w->incompat |= PF_INCOMPAT_EXT;
    return PF_OK;
}

int pf_write_keyed_begin(pf_writer *w, unsigned flags, pf_error *err)
{
    pf_frame *f = NULL;
    if (flags & ~PF_KEYED_EQ)
        return pf_fail(err, PF_EINVAL, "unknown keyed value flags", 0);
    int rc = ensure(w, 2, err);
    if (rc != PF_OK || (rc = push_frame(w, &f, err)) != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_KEYED;
    p[1] = (uint8_t)flags;
    w->len += 2;
    f->kind = FRAME_TUPLE; /* the proxy, then the value */
    f->count = 2;
    w->nframes++;
    w->incompat |= PF_INCOMPAT_EXT;
    return PF_OK;
}

int pf_write_array_begin(pf_writer *w, const void *data, size_t n,
                         pf_error *err)
{
    pf_frame *f = NULL;
    if (!data && n)
        return pf_fail(err, PF_EINVAL, "array with no data", 0);
    if (n > SIZE_MAX - 12 - PF_ARRAY_ALIGN)
        return pf_fail(err, PF_ELIMIT, "array too large", 0);
    int rc = ensure(w, 12 + PF_ARRAY_ALIGN + n, err);
    if (rc != PF_OK || (rc = push_frame(w, &f, err)) != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    p[0] = PF_T_ARRAY;
    size_t hl = 1 + pf_varint_put(p + 1, n);
    /* then the pad count and pad bytes, so the data starts on a multiple
     * of 64 (the mapping starts on a page) */
    size_t pad = (PF_ARRAY_ALIGN - (w->len + hl + 1) % PF_ARRAY_ALIGN) %
                 PF_ARRAY_ALIGN;
    p[hl] = (uint8_t)pad;
    memset(p + hl + 1, 0, pad);
    if (n)
        memcpy(p + hl + 1 + pad, data, n);
    w->len += hl + 1 + pad + n;
    f->kind = FRAME_TUPLE; /* the header ival */
    f->count = 1;
    w->nframes++;
    w->incompat |= PF_INCOMPAT_EXT;
    return PF_OK;
}

int pf_write_container_begin(pf_writer *w, int type, uint64_t count,
                             pf_error *err)
{
    int tb;
    switch (type) {
    case PF_LIST: case PF_T_LIST: tb = PF_T_LIST; break;
    case PF_DICT: case PF_T_DICT: tb = PF_T_DICT; break;
    case PF_SET: case PF_T_SET: tb = PF_T_SET; break;
    case PF_FROZENSET: case PF_T_FROZENSET: tb = PF_T_FROZENSET; break;
    default:
        return pf_fail(err, PF_EINVAL, "not a container type", 0);
    }
    if (count > (UINT64_C(1) << 60))
        return pf_fail(err, PF_ELIMIT, "container too large", 0);
    const unsigned hlen = tb == PF_T_LIST ? PF_LIST_HDR_LEN : PF_MAP_HDR_LEN;
    pf_frame *f = NULL;
    int rc = ensure(w, hlen, err);
    if (rc != PF_OK || (rc = push_frame(w, &f, err)) != PF_OK)
        return rc;
    uint8_t *p = w->buf + w->len;
    memset(p, 0, hlen);
    p[0] = (uint8_t)tb;
    pf_st64(p + 2, count);
    f->kind = tb;
    f->start = w->len;
    f->body = w->len + hlen;
    f->count = count;
    w->len += hlen;
    w->nframes++;
    return PF_OK;
}

/* Whether the container's last item (if any) is complete. */
static int item_complete(const pf_frame *f)
{
    if (f->kind == PF_T_LIST)
        return f->ivals == f->items;
    if (f->keys != f->items)
        return 0;
    return f->ivals == (f->kind == PF_T_DICT ? 2 * f->items : f->items);
}

static pf_frame *top_container(pf_writer *w)
{
    if (w->nframes == 0)
        return NULL;
    pf_frame *f = &w->frames[w->nframes - 1];
    return f->kind == FRAME_TUPLE ? NULL : f;
}

int pf_write_item(pf_writer *w, pf_error *err)
{
    pf_frame *f = top_container(w);
    if (!f)
        return pf_fail(err, PF_EINVAL, "pf_write_item outside a container", 0);
    if (f->items >= f->count)
        return pf_fail(err, PF_EINVAL, "more items than the container's count",
                       f->start);
    if (!item_complete(f))
        return pf_fail(err, PF_EINVAL, "previous item of the container is "
                       "incomplete", f->start);
    if (f->items == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 16;
        if (ncap > f->count && f->count >= 16)
            ncap = (size_t)f->count;
        if (ncap > SIZE_MAX / sizeof(uint64_t))
            return pf_fail(err, PF_ENOMEM, "out of memory for a container", 0);
        uint64_t *nr = (uint64_t *)realloc(f->recs, ncap * sizeof(uint64_t));
        if (!nr)
            return pf_fail(err, PF_ENOMEM, "out of memory for a container", 0);
        f->recs = nr;
        uint64_t *nh = (uint64_t *)realloc(f->hashes, ncap * sizeof(uint64_t));
        if (!nh)
            return pf_fail(err, PF_ENOMEM, "out of memory for a container", 0);
        f->hashes = nh;
        f->cap = ncap;
    }
    f->recs[f->items++] = w->len - f->body;
    if (f->kind != PF_T_LIST)
        w->in_key++;
    return PF_OK;
}

int pf_write_key_done(pf_writer *w, pf_error *err)
{
    pf_frame *f = top_container(w);
    if (!f || f->kind == PF_T_LIST)
        return pf_fail(err, PF_EINVAL, "pf_write_key_done outside a dict or "
                       "set", 0);
    uint64_t want = f->kind == PF_T_DICT ? 2 * f->items - 1 : f->items;
    if (f->items == 0 || f->keys != f->items - 1 || f->ivals != want)
        return pf_fail(err, PF_EINVAL, "pf_write_key_done without exactly one "
                       "key ival", f->start);
    uint64_t kp = f->body + f->recs[f->items - 1], h;
    int rc = pf_writer_hash_at(w, kp, &h, err);
    if (rc != PF_OK)
        return rc;
    f->hashes[f->items - 1] = h;
    f->keys++;
    w->in_key--;
    return PF_OK;
}

int pf_writer_hash_at(const pf_writer *w, uint64_t kp, uint64_t *hash,
                      pf_error *err)
{
    if (kp == w->last_pos) {
        *hash = w->last_hash; /* a string or bytes hashed when written */
        return PF_OK;
    }
    pf_range r = {w->buf, PF_HEADER_LEN, w->len, w->seed,
                  w->pool_fn ? NULL : w->vtab, w->pool_fn ? 0 : w->vcount, 1, 1};
    pf_error e2;
    int rc = pf_hash_range(&r, kp, hash, &e2);
    if (rc != PF_OK) {
        if (rc == PF_ECORRUPT) /* cannot happen with the writer's output */
            rc = PF_EINVAL;
        return pf_fail(err, rc, rc == PF_ETYPE ? "key of a type that "
                       "cannot be a key (R21)" : e2.msg, kp);
    }
    return PF_OK;
}

/* ------------------------------------------------------------- record mode */

void pf_writer_record_mode(pf_writer *w, pf_pool_fn fn, void *ctx)
{
    w->pool_fn = fn;
    w->pool_ctx = ctx;
}

void pf_writer_forget(pf_writer *w)
{
    if (w->dd_used == 0)
        return;
    if (w->dd_fill && w->dd_used < w->dd_cap / 16) {
        for (size_t i = 0; i < w->dd_used; i++) {
            size_t j = w->dd_fill[i];
            w->dd[j] = 0;
            w->dd_last[j] = 0;
        }
    } else {
        memset(w->dd, 0, w->dd_cap * sizeof *w->dd);
        memset(w->dd_last, 0, w->dd_cap * sizeof *w->dd_last);
    }
    w->dd_used = 0;
    w->last_pos = 0;
}

void pf_writer_reset(pf_writer *w)
{
    pf_writer_forget(w);
    w->len = PF_HEADER_LEN;
    w->nframes = 0;
    w->in_key = 0;
    w->pool_off = 0;
    w->last_pos = 0;
    w->incompat = 0;
}

void pf_writer_pool_off(pf_writer *w, int off) { w->pool_off = off; }

void pf_writer_pool_keys_off(pf_writer *w) { w->pool_keys_off = 1; }

const uint8_t *pf_writer_data(const pf_writer *w, size_t *len)
{
    *len = w->len - PF_HEADER_LEN;
    return w->buf + PF_HEADER_LEN;
}

int pf_writer_open(const pf_writer *w) { return w->nframes != 0; }

/* The order block of an ordered container (R36), appended at w->len:
 * checks that the keys ascend, all str or all bytes. */
static int write_order(pf_writer *w, pf_frame *f, int width,
                       const uint64_t *ranks, pf_error *err)
{
    const uint64_t count = f->count;
    pf_range r = {w->buf, PF_HEADER_LEN, w->len, w->seed,
                  w->pool_fn ? NULL : w->vtab, w->pool_fn ? 0 : w->vcount, 1, 1};
    int okind = 0;
    pf_val prev, kv;
    memset(&prev, 0, sizeof prev);
    for (uint64_t i = 0; i < count; i++) {
        int rc = pf_decode(&r, f->body + f->recs[i], &kv, 1, err);
        if (rc != PF_OK)
            return rc;
        const int k = kv.type == PF_STR ? PF_ORDER_STR : kv.type == PF_BYTES
                                                        ? PF_ORDER_BYTES : 0;
        if (!k || (okind && k != okind))
            return pf_fail(err, PF_EINVAL, "an ordered container's keys must be "
                           "all str or all bytes", f->body + f->recs[i]);
        okind = k;
        size_t common;
        if (i > 0) {
            if (pf_units_cmp(prev.u.s.data, (size_t)prev.u.s.len, prev.u.s.width,
                             kv.u.s.data, (size_t)kv.u.s.len, kv.u.s.width, &common) >= 0)
                return pf_fail(err, PF_EINVAL, "an ordered container's records "
                               "must be written in strictly ascending key order",
                               f->body + f->recs[i]);
        }
        prev = kv;
    }
    unsigned pbits = 0;
    if (ranks) {
        for (uint64_t i = 0; i < count && !pbits; i++)
            if (ranks[i] != i)
                pbits = pf_bitlen64(count - 1);
    }
    const uint64_t pbytes = (count * pbits + 7) / 8;
    const uint64_t K = UINT64_C(1) << PF_ORDER_SSHIFT;
    const uint64_t nsamples = (count + K - 1) / K;
    const uint64_t olen = 8 + pbytes + nsamples * (8 + (uint64_t)width);
    if (olen > SIZE_MAX - w->len)
        return pf_fail(err, PF_ELIMIT, "order index too large", f->start);
    int rc = ensure(w, (size_t)olen, err);
    if (rc != PF_OK)
        return rc;
    r.base = w->buf; /* ensure() may have moved the buffer */
    uint8_t *o = w->buf + w->len;
    memset(o, 0, (size_t)olen);
    o[0] = (uint8_t)(okind ? okind : PF_ORDER_STR); /* empty: any kind (R36) */
    o[1] = (uint8_t)pbits;
    o[2] = PF_ORDER_SSHIFT;
    if (pbits) {
        uint8_t *seen = (uint8_t *)calloc((size_t)(count / 8 + 1), 1);
        if (!seen)
            return pf_fail(err, PF_ENOMEM, "out of memory for the order", 0);
        for (uint64_t i = 0; i < count; i++) {
            const uint64_t v = ranks[i];
            if (v >= count || (seen[v / 8] >> (v % 8) & 1)) {
                free(seen);
                return pf_fail(err, PF_EINVAL, "ranks are not a permutation of "
                               "0..count-1", 0);
            }
            seen[v / 8] |= (uint8_t)(1u << (v % 8));
            const uint64_t bit = i * pbits;
            for (unsigned b = 0; b < pbits; b++)
                if (v >> b & 1)
                    o[8 + (bit + b) / 8] |= (uint8_t)(1u << ((bit + b) % 8));
        }
        free(seen);
    }
    uint8_t *sm = o + 8 + pbytes;
    for (uint64_t j = 0; j < nsamples; j++) {
        const uint64_t off = f->recs[j * K];
        if ((rc = pf_decode(&r, f->body + off, &kv, 1, err)) != PF_OK)
            return rc;
        pf_order_prefix(kv.u.s.data, (size_t)kv.u.s.len, kv.u.s.width, okind, sm);
        pf_stw(sm + 8, width, off);
        sm += 8 + width;
    }
    w->len += (size_t)olen;
    w->incompat |= PF_INCOMPAT_ORDERED;
    return PF_OK;
}

static int end_container(pf_writer *w, int ordered, const uint64_t *ranks,
                         pf_error *err);

int pf_write_end(pf_writer *w, pf_error *err)
{
    return end_container(w, 0, NULL, err);
}

int pf_write_end_ordered(pf_writer *w, const uint64_t *ranks, pf_error *err)
{
    return end_container(w, 1, ranks, err);
}

static int end_container(pf_writer *w, int ordered, const uint64_t *ranks,
                         pf_error *err)
{
    pf_frame *f = top_container(w);
    if (!f)
        return pf_fail(err, PF_EINVAL, "pf_write_end outside a container", 0);
    if (ordered && f->kind == PF_T_LIST)
        return pf_fail(err, PF_EINVAL, "a list cannot be ordered", f->start);
    if (f->items != f->count || !item_complete(f))
        return pf_fail(err, PF_EINVAL, "container ended before its count of "
                       "items was written", f->start);
    const uint64_t body_len = w->len - f->body;
    const uint64_t count = f->count;
    uint64_t nslots = 0, nent;
    int width;
    int rc;
    if (f->kind == PF_T_LIST) {                                   /* R19 */
        width = pf_list_width(body_len);
        nent = count;
    } else {                                                      /* R22 */
        nslots = pf_slot_count(count);
        width = pf_slot_width(body_len);
        nent = nslots;
    }
    if (!width)
        return pf_fail(err, PF_ELIMIT, "container body too large", f->start);
    if (nent > (SIZE_MAX - w->len) / (uint64_t)width)
        return pf_fail(err, PF_ELIMIT, "container table too large", f->start);
    size_t tlen = (size_t)nent * (size_t)width;
    if ((rc = ensure(w, tlen, err)) != PF_OK)
        return rc;
    uint8_t *table = w->buf + w->len;
    if (f->kind == PF_T_LIST) {
        for (uint64_t i = 0; i < count; i++)
            pf_stw(table + i * (uint64_t)width, width, f->recs[i]);
    } else if (nslots) {
        memset(table, 0, tlen);
        const pf_slot_packing pk = pf_slot_packing_of(body_len, width);
        for (uint64_t i = 0; i < count; i++) {
            uint64_t h = f->hashes[i];
            uint64_t slot = pf_slot_pack(pk, h, f->recs[i]);
            uint64_t j = pf_mulhi(h, nslots);
            while (pf_ldw(table + j * (uint64_t)width, width) != 0)
                if (++j == nslots)
                    j = 0;
            pf_stw(table + j * (uint64_t)width, width, slot);
        }
    }
    uint8_t *hdr = w->buf + f->start;
    hdr[1] = (uint8_t)(width | (ordered ? 0x80 : 0));
    pf_st64(hdr + 10, body_len);
    if (f->kind != PF_T_LIST)
        pf_st64(hdr + 18, nslots);
    w->len += tlen;
    if (ordered && (rc = write_order(w, f, width, ranks, err)) != PF_OK) {
        w->len -= tlen;
        hdr = w->buf + f->start;
        hdr[1] = (uint8_t)width;
        return rc;
    }
    w->nframes--;
    ival_done(w);
    return PF_OK;
}

/* ------------------------------------------------------------------ finish */

void pf_put_header(uint8_t h[PF_HEADER_LEN], const uint8_t id[16],
                   uint64_t image_size, uint64_t root_off, uint64_t stab_off,
                   uint32_t nsec, uint64_t seed, uint64_t incompat)
{
    memset(h, 0, PF_HEADER_LEN);
    memcpy(h + PF_H_MAGIC, PF_MAGIC, 8);
    pf_st16(h + PF_H_VMAJOR, PF_VERSION_MAJOR);
    /* 1.0 unless a 1.1 feature is used: such images stay readable by
     * version 1.0 readers, byte for byte as before */
    pf_st16(h + PF_H_VMINOR, incompat ? PF_VERSION_MINOR : 0);
    pf_st64(h + PF_H_INCOMPAT, incompat);
    pf_st32(h + PF_H_HEADER_LEN, PF_HEADER_LEN);
    if (id)
        memcpy(h + PF_H_ID, id, 16);
    pf_st64(h + PF_H_IMAGE_SIZE, image_size);
    pf_st64(h + PF_H_ROOT, root_off);
    pf_st64(h + PF_H_STAB_OFF, stab_off);
    pf_st32(h + PF_H_STAB_COUNT, nsec);
    pf_st64(h + PF_H_SEED, seed);
    pf_st64(h + PF_H_CHECK, pf_hash_bytes(h, PF_H_CHECK, 0));
}

void pf_put_section(uint8_t *entry, uint32_t kind, uint64_t off, uint64_t len,
                    uint64_t checksum)
{
    memset(entry, 0, PF_SECTION_ENTRY_LEN);
    pf_st32(entry, kind);
    pf_st32(entry + 4, PF_SECTION_REQUIRED);
    pf_st64(entry + 8, off);
    pf_st64(entry + 16, len);
    pf_st64(entry + 24, checksum);
}

int pf_writer_finish(pf_writer *w, uint64_t root_pos, const uint8_t id[16],
                     uint8_t **out, uint64_t *len, pf_error *err)
{
    if (!out || !len)
        return pf_fail(err, PF_EINVAL, "no output", 0);
    if (w->finished || !w->buf)
        return pf_fail(err, PF_EINVAL, "writer already finished", 0);
    if (w->nframes)
        return pf_fail(err, PF_EINVAL, "a tuple or container is still open", 0);
    if (root_pos < PF_HEADER_LEN || root_pos >= w->len)
        return pf_fail(err, PF_EINVAL, "root is not a written ival", root_pos);
    const size_t vlen = w->vcount * 8;
    const uint32_t nsec = w->vcount ? 2 : 1;
    int rc = ensure(w, vlen + 2 * PF_SECTION_ENTRY_LEN, err);
    if (rc != PF_OK)
        return rc;
    const uint64_t data_end = w->len;
    if (vlen)                                           /* VALUES, R28 */
        memcpy(w->buf + data_end, w->vtab, vlen);
    w->len += vlen;
    const uint64_t stab = w->len;
    uint8_t *s = w->buf + stab;                        /* section table, R11 */
    pf_put_section(s, PF_SECTION_DATA, PF_HEADER_LEN, data_end - PF_HEADER_LEN,
                   pf_checksum(w->buf + PF_HEADER_LEN,
                               (size_t)(data_end - PF_HEADER_LEN)));
    if (vlen)
        pf_put_section(s + PF_SECTION_ENTRY_LEN, PF_SECTION_VALUES, data_end,
                       vlen, pf_checksum(w->buf + data_end, vlen));
    w->len += nsec * PF_SECTION_ENTRY_LEN;
    pf_put_header(w->buf, id, w->len, root_pos, stab, nsec, w->seed,
                  w->incompat);

    uint8_t *b = (uint8_t *)realloc(w->buf, w->len);
    *out = b ? b : w->buf; /* shrinking failed: hand over the larger block */
    *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    w->finished = 1;
    return PF_OK;
}
