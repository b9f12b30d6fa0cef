/*
 * verify.c -- the full check of an image, pf_image_verify: O(image size)
 * in time, and in memory two bitmaps of one bit per DATA byte, a stack as
 * deep as the image nests, and 32 bytes a key of a slot table's batch (at
 * most 2^20 keys a batch; see flush_keys). Opening an image checks only
 * its header; each access checks what it touches. This checks everything
 * once, ahead:
 *
 *  - the section checksums (FORMAT section 3, pf_checksum) where present;
 *  - every value reachable from the root decodes (R12-R28), with the
 *    canonical forms of R15 (narrowest string form, short ASCII form) and
 *    R16 (fewest-byte ints); every VALUES entry lies inside DATA;
 *  - a list's table holds exactly the offsets of its items, one after
 *    another, and its body is exactly its items (R19, R24); a dict's or
 *    set's body is exactly its records (R20);
 *  - every key is hashable (R21) and found again from its own hash slot
 *    (R22), the table holds exactly `count` records, no two keys are equal
 *    (R21), and containers without a table have at most 8 records;
 *  - no REF inside a tuple leads back to a tuple being walked (R18).
 *
 * The walk is iterative: a frame per tuple or container being walked. Each
 * REF target and each container or tuple is walked once (a bit in `seen`),
 * so shared subtrees cost once, however often they are referenced.
 */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

#define MAX_FRAMES (UINT64_C(1) << 24)
/* A container's keys wait, (hash, offset) each, for their slot checks:
 * at most this many, then they are checked together, in the order of
 * their home slots (see flush_keys). */
#define BATCH_MAX (UINT32_C(1) << 20)
/* ... in groups whose home slots span at most this many table bytes */
#define WINDOW_BYTES 16384
/* Keys met on the way that wait to be read (check_other): at most this
 * many, then they are read */
#define SUS_MAX (UINT32_C(1) << 18)

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

/* Values walked item by item, in order, with no body or table: tuples,
 * and the extension values whose parts are ivals (R32, R34, R35). */
#define IS_SEQ(t) ((t) == PF_TUPLE || (t) == PF_OBJECT || (t) == PF_ARRAY || \
                   (t) == PF_KEYED)
#define IS_CONTAINER(t) ((t) >= PF_LIST && (t) <= PF_FROZENSET)

typedef struct skey {
    uint64_t h, kp;     /* a key's hash, its offset */
} skey;

typedef struct suspect {
    uint64_t other, kp, h;
} suspect;

typedef struct vframe {
    uint64_t pos;       /* the tuple or container */
    uint64_t next;      /* offset of the next item; 0 while a child tuple
                           written inline is walked (it sets next at its end) */
    uint64_t i;         /* items (records) done */
    uint64_t count;
    uint64_t body, body_len, table, nslots;
    uint8_t kind;       /* PF_TUPLE, PF_LIST, PF_DICT, PF_SET, PF_FROZENSET */
    uint8_t width;
    uint8_t at_value;   /* dict: record i's key is done, its value is next */
    uint8_t inline_in;  /* written inline in the parent: gives its end */
    uint8_t objkind;    /* an object: its shape's kind (R32), else 0 */
    uint8_t okind;      /* an ordered container: its order kind (R36) */
    uint8_t sshift;     /* ... its sample shift */
    uint64_t samples;   /* ... its samples' offset */
    uint64_t oprev;     /* ... the key before, or 0 */
    uint64_t stop;      /* a range of the root's records (a thread's share):
                           where the next range starts; else 0 */
    uint64_t expect;    /* about how many records it holds */
    struct skey *batch; /* slot table: keys waiting for their check */
    uint32_t nbatch, batch_cap;
    uint64_t small_hash[8]; /* containers without a slot table: key hashes */
    uint64_t small_pos[8];
} vframe;

typedef struct vctx {
    const pf_image *img;
    const pf_range *r;
    uint8_t *seen;      /* one bit per DATA offset */
    uint8_t *strs;      /* one bit per DATA offset: a short string checked
                           there (a REF to it needs no second look) */
    uint8_t *vstr;      /* one byte per VALUES entry: 1 if it leads to a
                           short string checked (the SREFs' own map, small
                           enough to stay in the cache) */
    /* Threads share strs and vstr (a REF in one range mostly leads to a
     * string of an earlier range): a bit is set only after its string is
     * checked, by a plain load and store, so a race loses at most a bit,
     * and a lost bit costs a second check, never a wrong answer. */
    vframe *stack;
    uint64_t depth, cap;
    skey *sorted;       /* flush_keys' work: a batch in home-slot order */
    uint32_t sorted_cap;
    skey *spare;        /* the biggest batch given back, for the next */
    uint32_t spare_cap;
    struct suspect *sus; /* keys met in slots, to compare (check_other) */
    uint32_t nsus, sus_cap;
    uint32_t batch_max; /* a batch's most keys, BATCH_MAX but in tests */
    uint64_t par_min;   /* PAR_MIN_RECORDS but in tests */
    pf_verify_stats *st;
    pf_error *err;
    int shared;         /* seen is shared with other threads */
    uint64_t range_records; /* records of its range, once walked */
} vctx;

#if defined(_MSC_VER)
#include <intrin.h>
#define OR8(p, b) ((uint8_t)_InterlockedOr8((volatile char *)(p), (char)(b)))
#define LD8(p) (*(volatile uint8_t *)(p))
#define ST8(p, x) (*(volatile uint8_t *)(p) = (uint8_t)(x))
#else
#define OR8(p, b) __atomic_fetch_or((p), (uint8_t)(b), __ATOMIC_RELAXED)
#define LD8(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST8(p, x) __atomic_store_n((p), (uint8_t)(x), __ATOMIC_RELAXED)
#endif

static int seen_test_set(vctx *v, uint64_t pos)
{
    const uint64_t k = pos - v->r->start;
    const uint8_t bit = (uint8_t)(1u << (k & 7));
    if (v->shared) /* one thread walks what several reach */
        return (OR8(&v->seen[k >> 3], bit) & bit) != 0;
    if (v->seen[k >> 3] & bit)
        return 1;
    v->seen[k >> 3] |= bit;
    return 0;
}

/* ------------------------------------------------------- key equality */

/* Python equality of two stored keys (R21), used only when two keys of
 * one container hash alike. Exact for every key type. */
static int keys_equal(const pf_range *r, pf_error *err, uint64_t a,
                      uint64_t b, int depth, int *eq);

/* A real number as Python compares it: an exact integer (small, or the
 * minimal two's complement bytes of a big one) or a float. */
typedef struct num {
    int kind;            /* 0 int64, 1 big, 2 float */
    int64_t i;
    const uint8_t *big;
    uint64_t nbig;
    double f;
} num;

static int as_num(const pf_val *x, num *n, double *imag)
{
    *imag = 0.0;
    switch (x->type) {
    case PF_FALSE: n->kind = 0; n->i = 0; return 1;
    case PF_TRUE: n->kind = 0; n->i = 1; return 1;
    case PF_INT: n->kind = 0; n->i = x->u.i; return 1;
    case PF_BIGINT: n->kind = 1; n->big = x->u.big.data; n->nbig = x->u.big.n; return 1;
    case PF_FLOAT: n->kind = 2; n->f = x->u.f; return 1;
    case PF_COMPLEX: n->kind = 2; n->f = x->u.cx.re; *imag = x->u.cx.im; return 1;
    default: return 0;
    }
}

/* An integral double of magnitude >= 2^63 equals the big int? */
static int big_equals_double(const uint8_t *le, uint64_t n, double f)
{
    if (!(fabs(f) >= 9223372036854775808.0) || isinf(f) || f != floor(f))
        return 0;
    int e;
    double m = frexp(fabs(f), &e);           /* |f| = m 2^e, 0.5 <= m < 1 */
    uint64_t mant = (uint64_t)ldexp(m, 53);  /* |f| = mant 2^(e-53) */
    int shift = e - 53;                      /* >= 11 here */
    /* |f| as little-endian bytes, a spare one for the sign, in two's
     * complement when f < 0, then trimmed to the minimal form (R16). */
    uint8_t buf[160];
    uint64_t nbytes = (uint64_t)(shift + 53) / 8 + 2;
    if (nbytes > sizeof buf)
        return 0;
    memset(buf, 0, (size_t)nbytes);
    for (int bit = 0; bit < 53; bit++)
        if (mant >> bit & 1) {
            int at = bit + shift;
            buf[at / 8] |= (uint8_t)(1u << (at % 8));
        }
    if (f < 0) {
        unsigned carry = 1;
        for (uint64_t k = 0; k < nbytes; k++) {
            unsigned x = (uint8_t)~buf[k] + carry;
            buf[k] = (uint8_t)x;
            carry = x >> 8;
        }
    }
    while (nbytes > 1 &&
           ((buf[nbytes - 1] == 0x00 && !(buf[nbytes - 2] & 0x80)) ||
            (buf[nbytes - 1] == 0xFF && (buf[nbytes - 2] & 0x80))))
        nbytes--;
    if (nbytes != n)
        return 0;
    return memcmp(buf, le, (size_t)n) == 0;
}

static int nums_equal(const num *a, double ia, const num *b, double ib)
{
    if (ia != ib)
        return 0;
    if (a->kind > b->kind) { const num *t = a; a = b; b = t; }
    if (a->kind == 0 && b->kind == 0) return a->i == b->i;
    if (a->kind == 1 && b->kind == 1)
        return a->nbig == b->nbig && memcmp(a->big, b->big, (size_t)a->nbig) == 0;
    if (a->kind == 0 && b->kind == 1) return 0; /* a big int is >= 2^63 */
    if (a->kind == 2) return a->f == b->f;      /* both floats */
    if (a->kind == 1) return big_equals_double(a->big, a->nbig, b->f);
    /* int64 and float */
    const double f = b->f;
    if (f != floor(f) || !(fabs(f) < 9223372036854775808.0))
        return 0;
    return (int64_t)f == a->i;
}

static uint32_t code_unit(const pf_val *x, uint64_t k)
{
    return pf_unit_at(x->u.s.data, k, x->u.s.width);
}

/* The offsets of a tuple's items, or a frozenset's keys, one by one. */
static int next_member(const pf_range *r, const pf_val *c, uint64_t *cursor,
                       uint64_t *pos, pf_error *err)
{
    if (c->type == PF_TUPLE) {
        pf_val it;
        *pos = *cursor;
        int rc = pf_decode(r, *cursor, &it, 0, err);
        if (rc != PF_OK)
            return rc;
        *cursor = it.next;
        return 1;
    }
    uint64_t val;
    return pf_range_record_next(r, c, cursor, pos, &val, err);
}

static int keys_equal(const pf_range *r, pf_error *err, uint64_t a,
                      uint64_t b, int depth, int *eq)
{
    pf_val x, y;
    int rc;
    *eq = 0;
    if (depth > PF_MAX_KEY_DEPTH)
        return pf_fail(err, PF_ELIMIT, "keys nested too deep to compare", a);
    if ((rc = pf_decode(r, a, &x, 1, err)) != PF_OK ||
        (rc = pf_decode(r, b, &y, 1, err)) != PF_OK)
        return rc;
    /* R35: keyed values are equal when their flags and proxies are; one
     * equals a plain key when its proxy does and its flags say so. */
    if (x.type == PF_KEYED || y.type == PF_KEYED) {
        if (x.type == PF_KEYED && y.type == PF_KEYED) {
            if (x.u.key.flags != y.u.key.flags)
                return PF_OK;
            return keys_equal(r, err, x.u.key.first, y.u.key.first, depth + 1, eq);
        }
        const pf_val *k = x.type == PF_KEYED ? &x : &y;
        if (!(k->u.key.flags & PF_KEYED_EQ))
            return PF_OK;
        return x.type == PF_KEYED
                   ? keys_equal(r, err, x.u.key.first, b, depth + 1, eq)
                   : keys_equal(r, err, a, y.u.key.first, depth + 1, eq);
    }
    num na, nb;
    double ia, ib;
    if (as_num(&x, &na, &ia) && as_num(&y, &nb, &ib)) {
        *eq = nums_equal(&na, ia, &nb, ib);
        return PF_OK;
    }
    if (x.type != y.type)
        return PF_OK;
    switch (x.type) {
    case PF_NONE:
        *eq = 1;
        return PF_OK;
    case PF_STR: {
        size_t common;
        *eq = x.u.s.len == y.u.s.len &&
              pf_units_cmp(x.u.s.data, (size_t)x.u.s.len, x.u.s.width, y.u.s.data,
                           (size_t)y.u.s.len, y.u.s.width, &common) == 0;
        return PF_OK;
    }
    case PF_BYTES:
        *eq = x.u.s.len == y.u.s.len &&
              memcmp(x.u.s.data, y.u.s.data, (size_t)x.u.s.len) == 0;
        return PF_OK;
    case PF_TUPLE:
    case PF_FROZENSET: {
        uint64_t n = x.type == PF_TUPLE ? x.u.tup.count : x.u.c.count;
        if (n != (x.type == PF_TUPLE ? y.u.tup.count : y.u.c.count))
            return PF_OK;
        uint64_t ca = x.type == PF_TUPLE ? x.u.tup.first : 0, pa;
        for (uint64_t k = 0; k < n; k++) {
            if ((rc = next_member(r, &x, &ca, &pa, err)) < 0)
                return rc;
            uint64_t cb = y.type == PF_TUPLE ? y.u.tup.first : 0, pb;
            int found = 0;
            /* a tuple: item k against item k; a frozenset: against any */
            for (uint64_t j = 0; j < n && !found; j++) {
                if ((rc = next_member(r, &y, &cb, &pb, err)) < 0)
                    return rc;
                if (x.type == PF_TUPLE && j != k)
                    continue;
                if ((rc = keys_equal(r, err, pa, pb, depth + 1, &found)) != PF_OK)
                    return rc;
            }
            if (!found)
                return PF_OK;
        }
        *eq = 1;
        return PF_OK;
    }
    default:
        return PF_OK;
    }
}

int pf_keys_equal(const pf_range *r, uint64_t a, uint64_t b, int *eq,
                  pf_error *err)
{
    return keys_equal(r, err, a, b, 0, eq);
}

/* ------------------------------------------------------- canonical forms */

static int check_scalar(vctx *v, uint64_t pos, const pf_val *x)
{
    const unsigned t = v->r->base[pos];
    if (x->type == PF_STR) {
        uint32_t top = 0;
        for (uint64_t k = 0; k < x->u.s.len; k++) {
            uint32_t c = code_unit(x, k);
            top = c > top ? c : top;
        }
        const unsigned need = top < 0x80 ? 1 : top < 0x100 ? 2 : top < 0x10000 ? 3 : 4;
        const unsigned have = t >= PF_T_SHORT_STR ? 1 : t - PF_T_STR_ASCII + 1;
        if (need != have)
            return PF_CORRUPT(v->err, "string not in its narrowest form (R15)", pos);
        if (t == PF_T_STR_ASCII && x->u.s.len < 128)
            return PF_CORRUPT(v->err, "short ASCII string not in the short "
                              "form (R15)", pos);
    } else if (x->type == PF_INT && t >= PF_T_INT1 && t <= PF_T_INT8) {
        const unsigned n = t - PF_T_INT1 + 1;
        if (n > 1) {
            const int64_t lim = (int64_t)1 << (8 * (n - 1) - 1);
            if (x->u.i >= -lim && x->u.i < lim)
                return PF_CORRUPT(v->err, "int not in its fewest bytes (R16)", pos);
        }
    } else if (x->type == PF_BIGINT) {
        const uint8_t *b = x->u.big.data;
        const uint64_t n = x->u.big.n;
        /* the top byte is only sign extension of the one below it */
        if ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
            (b[n - 1] == 0xFF && (b[n - 2] & 0x80)))
            return PF_CORRUPT(v->err, "big int not in its fewest bytes (R16)", pos);
    }
    v->st->values++;
    return PF_OK;
}

/* ------------------------------------------------------- slots */

static int short_str_ok(vctx *v, uint64_t q, uint64_t *end);

/* The hash of the key at pos; a value that cannot be a key is corrupt.
 * The commonest key, a short ASCII str, is hashed here: then *short_end
 * (if asked for) is its end, with the string checked; else 0. */
static int key_hash(vctx *v, uint64_t pos, uint64_t *h, uint64_t *short_end)
{
    uint64_t e = 0;
    if (pos >= v->r->start && pos < v->r->end && short_str_ok(v, pos, &e)) {
        *h = pf_hash_str(v->r->seed, v->r->base + pos + 1, (size_t)(e - pos - 1), 1);
        if (short_end)
            *short_end = e;
        return PF_OK;
    }
    if (short_end)
        *short_end = 0;
    int rc = pf_hash_range(v->r, pos, h, v->err);
    if (rc == PF_ETYPE)
        return PF_CORRUPT(v->err, "a key of a type that cannot be a key (R21)", pos);
    return rc;
}

/* Record `kp` of frame f, a container without a slot table, whose key
 * hashes to h: no equal key before it (R21), at most 8 records (R22). */
static int check_small(vctx *v, vframe *f, uint64_t kp, uint64_t h)
{
    int rc, eq;
    if (f->i >= 8)
        return PF_CORRUPT(v->err, "more than 8 records without a slot "
                          "table (R22)", f->pos);
    for (uint64_t j = 0; j < f->i; j++) {
        if (f->small_hash[j] != h)
            continue;
        if ((rc = keys_equal(v->r, v->err, f->small_pos[j], kp, 0, &eq)) != PF_OK)
            return rc;
        if (eq)
            return PF_CORRUPT(v->err, "two equal keys in one container (R21)", kp);
    }
    f->small_hash[f->i] = h;
    f->small_pos[f->i] = kp;
    return PF_OK;
}

/* A group of a batch of keys (flush_keys): keys [lo, hi] of the body,
 * every record whose key lies there is in the batch, and those whose
 * hashes share their top bits with the group's are g[0..n), in the
 * order of their offsets. */
typedef struct sgroup {
    const skey *g;
    uint32_t n;
    uint64_t lo, hi;
} sgroup;

/* The suspects in the order of their `other` offsets: an LSD radix sort,
 * 11 bits a pass, through tmp (n entries). */
static void sort_suspects(vctx *v, suspect *tmp, uint32_t n)
{
    const uint64_t start = v->r->start;
    const unsigned bits = pf_bitlen64(v->r->end - start);
    suspect *a = v->sus, *b = tmp;
    for (unsigned sh = 0; sh < bits; sh += 11) {
        uint32_t at[2049];
        memset(at, 0, sizeof at);
        for (uint32_t k = 0; k < n; k++)
            at[((a[k].other - start) >> sh & 2047) + 1]++;
        for (unsigned d = 0; d < 2048; d++)
            at[d + 1] += at[d];
        for (uint32_t k = 0; k < n; k++)
            b[at[(a[k].other - start) >> sh & 2047]++] = a[k];
        suspect *t = a;
        a = b;
        b = t;
    }
    if (a != v->sus)
        memcpy(v->sus, a, (size_t)n * sizeof *a);
}

/* Each suspect's key `other`: of a key type, and if its hash is h, not
 * equal to key kp (check_other). */
static int resolve_suspects(vctx *v)
{
    const uint32_t n = v->nsus;
    if (n == 0)
        return PF_OK;
    v->nsus = 0;
    suspect *tmp = (suspect *)malloc((size_t)n * sizeof *tmp);
    if (!tmp)
        return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify slot check", 0);
    sort_suspects(v, tmp, n);
    free(tmp);
    for (uint32_t k = 0; k < n; k++) {
        if (k + 8 < n)
            PREFETCH(v->r->base + v->sus[k + 8].other);
        uint64_t h2;
        int rc, eq;
        if ((rc = key_hash(v, v->sus[k].other, &h2, NULL)) != PF_OK)
            return rc;
        if (h2 != v->sus[k].h)
            continue;
        if ((rc = keys_equal(v->r, v->err, v->sus[k].other, v->sus[k].kp, 0, &eq)) != PF_OK)
            return rc;
        if (eq)
            return PF_CORRUPT(v->err, "two equal keys in one container (R21)",
                              v->sus[k].kp);
    }
    return PF_OK;
}

/* The key at `other` was met on the way to key kp of hash h, in a slot of
 * h's tag: is it an equal key (R21)? It may be only if its hash is h. A
 * record of the batch has its hash in the group, or is of another group
 * (not h); a slot that leads to no record's key at all is one more than
 * the records that have their own, which count_slots reports. Any other
 * record waits in the suspects, read later in the order of their offsets
 * (resolve_suspects): a record read here would be a read at random. */
static int check_other(vctx *v, const sgroup *gr, uint64_t other, uint64_t kp,
                       uint64_t h)
{
    if (other < gr->lo || other > gr->hi) {
        if (v->nsus == v->sus_cap && v->sus_cap < SUS_MAX) {
            const uint32_t cap = v->sus_cap ? 2 * v->sus_cap : 1024;
            suspect *p = (suspect *)realloc(v->sus, (size_t)cap * sizeof *p);
            if (!p)
                return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify "
                               "slot check", 0);
            v->sus = p;
            v->sus_cap = cap;
        } else if (v->nsus == v->sus_cap) {
            int rc = resolve_suspects(v);
            if (rc != PF_OK)
                return rc;
        }
        v->sus[v->nsus].other = other;
        v->sus[v->nsus].kp = kp;
        v->sus[v->nsus].h = h;
        v->nsus++;
        return PF_OK;
    }
    uint32_t a = 0, z = gr->n;
    while (a < z) {
        const uint32_t mid = a + (z - a) / 2;
        if (gr->g[mid].kp < other)
            a = mid + 1;
        else
            z = mid;
    }
    int eq = 0, rc = PF_OK;
    if (a < gr->n && gr->g[a].kp == other && gr->g[a].h == h &&
        (rc = keys_equal(v->r, v->err, other, kp, 0, &eq)) == PF_OK && eq)
        rc = PF_CORRUPT(v->err, "two equal keys in one container (R21)", kp);
    return rc;
}

/* Record `kp` of frame f, whose key hashes to h: found again from its home
 * slot (R22), and no equal key on its way. The slot it must have is
 * known, (tag << ibits) | its offset + 1: the scan looks for it or an
 * empty slot, and looks closer only at slots of its tag. */
static int check_slot(vctx *v, vframe *f, const sgroup *gr, uint64_t kp,
                      uint64_t h)
{
    int rc;
    const unsigned ibits = pf_bitlen64(f->body_len); /* >= 1: a record */
    const unsigned tagbits = 8u * f->width - ibits;
    const uint64_t tag = h & ((UINT64_C(1) << tagbits) - 1);
    const uint64_t imask = (UINT64_C(1) << ibits) - 1;
    const uint64_t want = kp - f->body + 1;
    const uint64_t expect = tag << ibits | want;
    const uint8_t *table = v->r->base + f->table;
    const uint64_t n = f->nslots;
    uint64_t s = pf_mulhi(h, n);
    for (uint64_t probes = 0; probes < n; probes++) {
        uint64_t slot;
        /* the scan to the first slot of the tag, or empty, or the last */
#define SCAN(LOAD, W)                                                       \
        for (;;) {                                                          \
            slot = LOAD(table + s * W);                                     \
            if (slot == expect)                                             \
                return PF_OK;                                               \
            if (slot == 0 || (slot >> ibits) == tag || ++probes == n)       \
                break;                                                      \
            s = s + 1 == n ? 0 : s + 1;                                     \
        }
        if (f->width == 4) {
            SCAN(pf_ld32, 4)
        } else if (f->width == 2) {
            SCAN(pf_ld16, 2)
        } else {
            SCAN(pf_ld64, 8)
        }
#undef SCAN
        if (slot == 0 || probes == n)
            break;
        /* a slot of its tag that is not its own */
        const uint64_t ro = slot & imask;
        if (ro == 0 || ro - 1 >= f->body_len)
            return PF_CORRUPT(v->err, "slot record offset outside the "
                              "body (R24)", f->table + s * f->width);
        if ((rc = check_other(v, gr, f->body + ro - 1, kp, h)) != PF_OK)
            return rc;
        s = s + 1 == n ? 0 : s + 1;
    }
    return PF_CORRUPT(v->err, "a key is not found from its hash slot (R22)", kp);
}

/* The table holds exactly `count` records: with each record found at its
 * own slot (check_slot), slots and records then match one to one. */
static int count_slots(vctx *v, const vframe *f)
{
    const uint8_t *table = v->r->base + f->table;
    uint64_t used = 0;
    for (uint64_t s = 0; s < f->nslots; s++) {
        const uint8_t *sp = table + s * f->width;
        used += pf_ldw(sp, f->width) != 0;
    }
    if (used != f->count)
        return PF_CORRUPT(v->err, "slot table does not hold exactly count "
                          "records (R22)", f->pos);
    return PF_OK;
}

/* ------------------------------------------------------- the walk */

/* An ordered container's perm is a permutation of 0..count-1 (R36). */
static int check_perm(vctx *v, const pf_val *x)
{
    const uint64_t count = x->u.c.count;
    const unsigned pbits = (unsigned)x->u.c.pbits;
    const uint8_t *perm = v->r->base + x->u.c.perm;
    uint8_t *seen = (uint8_t *)calloc((size_t)(count / 8 + 1), 1);
    if (!seen)
        return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify bitmap", 0);
    int rc = PF_OK;
    for (uint64_t i = 0; i < count && rc == PF_OK; i++) {
        const uint64_t e = pf_perm_get(perm, i, pbits);
        if (e >= count || (seen[e / 8] >> (e % 8) & 1))
            rc = PF_CORRUPT(v->err, "order perm is not a permutation of "
                            "0..count-1 (R36)", x->u.c.perm);
        else
            seen[e / 8] |= (uint8_t)(1u << (e % 8));
    }
    free(seen);
    return rc;
}

/* Record i of ordered container f has its key at q: of the order's kind,
 * after the key before it, and described by its sample (R36). */
static int check_order(vctx *v, vframe *f, uint64_t q)
{
    pf_val kv;
    int rc = pf_decode_ex(v->r, q, &kv, 1, 0, v->err);
    if (rc != PF_OK)
        return rc;
    if (kv.type != (f->okind == PF_ORDER_STR ? PF_STR : PF_BYTES))
        return PF_CORRUPT(v->err, "ordered container key not of its order's "
                          "kind (R36)", q);
    if (f->oprev) {
        int cmp;
        size_t common;
        if ((rc = pf_ordered_compare(v->img, f->oprev, kv.u.s.data, (size_t)kv.u.s.len,
                                     kv.u.s.width, &cmp, &common, v->err)) != PF_OK)
            return rc;
        if (cmp >= 0)
            return PF_CORRUPT(v->err, "ordered container keys not in strictly "
                              "ascending order (R36)", q);
    }
    f->oprev = q;
    if (f->i & ((UINT64_C(1) << f->sshift) - 1))
        return PF_OK;
    const uint8_t *sm = v->r->base + f->samples +
                        (f->i >> f->sshift) * (8 + (uint64_t)f->width);
    uint8_t want[8];
    pf_order_prefix(kv.u.s.data, (size_t)kv.u.s.len, kv.u.s.width, f->okind, want);
    if (memcmp(sm, want, 8) != 0 || pf_ldw(sm + 8, f->width) != q - f->body)
        return PF_CORRUPT(v->err, "order sample does not describe its record "
                          "(R36)", (uint64_t)(sm - v->r->base));
    return PF_OK;
}

static int push(vctx *v, const pf_val *x, int inline_in)
{
    if (v->depth == v->cap) {
        if (v->cap >= MAX_FRAMES)
            return pf_fail(v->err, PF_ELIMIT, "image nested too deep to verify",
                           x->pos);
        uint64_t cap = v->cap ? v->cap * 2 : 64;
        vframe *s = (vframe *)realloc(v->stack, (size_t)cap * sizeof *s);
        if (!s)
            return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify stack", 0);
        v->stack = s;
        v->cap = cap;
    }
    vframe *f = &v->stack[v->depth++];
    memset(f, 0, offsetof(vframe, small_hash));
    f->pos = x->pos;
    f->kind = (uint8_t)x->type;
    f->inline_in = (uint8_t)inline_in;
    if (IS_SEQ(x->type)) {
        f->count = x->u.tup.count;
        f->next = x->u.tup.first;
        v->st->values++;
        return PF_OK;
    }
    f->count = x->u.c.count;
    f->body = f->next = x->u.c.body;
    f->body_len = x->u.c.body_len;
    f->table = x->u.c.table;
    f->nslots = x->u.c.nslots;
    f->width = (uint8_t)x->u.c.width;
    f->okind = (uint8_t)x->u.c.okind;
    f->sshift = (uint8_t)x->u.c.sshift;
    f->samples = x->u.c.samples;
    v->st->values++;
    v->st->containers++;
    if (f->okind && x->u.c.pbits) {
        int rc = check_perm(v, x);
        if (rc != PF_OK)
            return rc;
    }
    if (!f->nslots)
        return PF_OK;
    return count_slots(v, f);
}

/* Checks the keys waiting in f's batch (check_slot), all of them now, in
 * the order of their home slots rather than of their records: one at a
 * time, each would read the table at random, mostly outside the cache.
 * They are sorted by the top bits of their hashes, which give their home
 * slots (pf_mulhi64 keeps the order), into groups whose home slots lie in
 * a window of the table that the L1 cache holds; the next group's window
 * is fetched while a group is checked. The batch's keys are records one
 * after another: a slot met on the way that leads to one of them finds
 * its hash in its group, or knows it is of another group, with no read of
 * that record. */
static int flush_keys(vctx *v, vframe *f)
{
    const uint32_t n = f->nbatch;
    if (n == 0)
        return PF_OK;
    f->nbatch = 0;
    const uint64_t tbytes = f->nslots * f->width;
    unsigned bits = 0;
    while (bits < 16 && (tbytes >> bits) > WINDOW_BYTES && (n >> bits) >= 64)
        bits++;
    const uint32_t ng = UINT32_C(1) << bits;
    uint32_t *start = (uint32_t *)calloc((size_t)ng + 1, sizeof *start);
    if (!start)
        return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify slot check", 0);
    const skey *in = f->batch, *keys = in;
    if (bits > 0) {                     /* a counting sort, stable */
        const unsigned shift = 64 - bits;
        if (v->sorted_cap < n) {
            pf_os_zfree(v->sorted, (size_t)v->sorted_cap * sizeof(skey));
            v->sorted = (skey *)pf_os_zalloc((size_t)n * sizeof(skey));
            v->sorted_cap = v->sorted ? n : 0;
            if (!v->sorted) {
                free(start);
                return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify "
                               "slot check", 0);
            }
        }
        for (uint32_t k = 0; k < n; k++)
            start[(in[k].h >> shift) + 1]++;
        for (uint32_t g = 0; g < ng; g++)
            start[g + 1] += start[g];
        for (uint32_t k = 0; k < n; k++) /* start[g]: group g's next place */
            v->sorted[start[in[k].h >> shift]++] = in[k];
        for (uint32_t g = ng; g > 0; g--) /* back to group g's first */
            start[g] = start[g - 1];
        start[0] = 0;
        keys = v->sorted;
    } else {
        start[1] = n;
    }
    int rc = PF_OK;
    sgroup gr;
    gr.lo = in[0].kp;
    gr.hi = in[n - 1].kp;
    const uint8_t *table = v->r->base + f->table;
    const int fetch = bits > 0 && (tbytes >> bits) <= WINDOW_BYTES;
    for (uint32_t g = 0; g < ng && rc == PF_OK; g++) {
        if (fetch && g + 1 < ng) { /* the next group's window */
            const uint64_t a = pf_mulhi((uint64_t)(g + 1) << (64 - bits), f->nslots);
            const uint64_t z = g + 2 < ng
                ? pf_mulhi((uint64_t)(g + 2) << (64 - bits), f->nslots) : f->nslots;
            for (uint64_t o = a * f->width; o < z * f->width; o += 64)
                PREFETCH(table + o);
        }
        gr.g = keys + start[g];
        gr.n = start[g + 1] - start[g];
        for (uint32_t k = 0; k < gr.n && rc == PF_OK; k++)
            rc = check_slot(v, f, &gr, gr.g[k].kp, gr.g[k].h);
    }
    free(start);
    return rc;
}

/* Key kp of f hashes to h: checked now without a slot table, else it
 * waits in f's batch (flush_keys). */
static int add_key(vctx *v, vframe *f, uint64_t kp, uint64_t h)
{
    if (!f->nslots)
        return check_small(v, f, kp, h);
    if (f->nbatch == f->batch_cap && f->batch) {
        int rc = flush_keys(v, f);
        if (rc != PF_OK)
            return rc;
    } else if (!f->batch) {
        const uint64_t want = f->stop ? f->expect : f->count;
        const uint32_t cap = want == 0 ? 1
                             : want < v->batch_max ? (uint32_t)want : v->batch_max;
        if (v->spare && v->spare_cap >= cap) { /* fresh pages cost */
            f->batch = v->spare;
            f->batch_cap = v->spare_cap;
            v->spare = NULL;
            v->spare_cap = 0;
        } else {
            f->batch = (skey *)pf_os_zalloc((size_t)cap * sizeof(skey));
            if (!f->batch)
                return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify "
                               "slot check", 0);
            f->batch_cap = cap;
        }
    }
    f->batch[f->nbatch].h = h;
    f->batch[f->nbatch].kp = kp;
    f->nbatch++;
    return PF_OK;
}

/* f's batch, gone */
static void free_batch(vctx *v, vframe *f)
{
    if (f->batch_cap > v->spare_cap) { /* kept for the next big frame */
        pf_os_zfree(v->spare, (size_t)v->spare_cap * sizeof(skey));
        v->spare = f->batch;
        v->spare_cap = f->batch_cap;
    } else {
        pf_os_zfree(f->batch, (size_t)f->batch_cap * sizeof(skey));
    }
    f->batch = NULL;
    f->batch_cap = f->nbatch = 0;
}

/* Is the object at t an object of kind 2 or 3 whose arguments (its first
 * field, read before the object exists) are being walked, by a chain of
 * eagerly built frames ending at the top (R32)? */
static int args_cycle(const vctx *v, uint64_t t)
{
    for (uint64_t d = v->depth; d-- > 0;) {
        const vframe *f = &v->stack[d];
        if (!IS_SEQ(f->kind))
            return 0;
        if (f->pos == t && f->kind == PF_OBJECT)
            return (f->objkind == 2 || f->objkind == 3) && f->i == 2;
    }
    return 0;
}

/* A reader reads the keyed value at t as its value (R35): is that value
 * an object whose arguments are being walked (args_cycle)? */
static int keyed_args_cycle(const vctx *v, uint64_t t)
{
    for (uint64_t d = v->depth; d-- > 0;) {
        const vframe *f = &v->stack[d];
        if (!IS_SEQ(f->kind))
            return 0;
        if (f->pos == t && f->kind == PF_KEYED)
            return d + 1 < v->depth && v->stack[d + 1].kind == PF_OBJECT &&
                   args_cycle(v, v->stack[d + 1].pos);
    }
    return 0;
}

/* Is the tuple at t being walked by a chain of tuple frames ending at the
 * top (R18)? */
static int tuple_cycle(const vctx *v, uint64_t t)
{
    for (uint64_t d = v->depth; d-- > 0;) {
        /* objects and arrays are decoded eagerly, like tuples */
        if (!IS_SEQ(v->stack[d].kind))
            return 0;
        if (v->stack[d].kind == PF_TUPLE && v->stack[d].pos == t)
            return 1;
    }
    return 0;
}

/* A short ASCII string (R15) at q, the commonest value: checked here
 * without a decode, and marked in strs; 0 if it is not one (the caller
 * decodes it). */
static int short_str_ok(vctx *v, uint64_t q, uint64_t *end)
{
    const pf_range *r = v->r;
    const unsigned t = r->base[q];
    if (t < PF_T_SHORT_STR)
        return 0;
    const uint64_t n = t - PF_T_SHORT_STR, room = r->end - q - 1;
    if (n > room)
        return 0;
    const uint8_t *p = r->base + q + 1;
    uint64_t acc;
    if (n >= 8) {          /* whole words, the last one overlapping */
        acc = pf_ld64(p + n - 8);
        for (uint64_t i = 0; i + 8 < n; i += 8)
            acc |= pf_ld64(p + i);
    } else if (room >= 8) { /* one word, its first n bytes */
        acc = n ? pf_ld64(p) & (~UINT64_C(0) >> (64 - 8 * n)) : 0;
    } else {
        acc = 0;
        for (uint64_t i = 0; i < n; i++)
            acc |= p[i];
    }
    if (acc & UINT64_C(0x8080808080808080))
        return 0;
    *end = q + 1 + n;
    const uint64_t k = q - r->start;
    uint8_t *b = &v->strs[k >> 3];
    ST8(b, LD8(b) | (1u << (k & 7)));
    return 1;
}

/* Is q a REF or SREF to a short string already checked (by short_str_ok)?
 * Then *end is past it, with no access to the target's bytes: a REF to
 * a shared string is the commonest one, and its target lies anywhere
 * before it, mostly outside the cache. */
static int ref_to_str(vctx *v, uint64_t q, uint64_t *end)
{
    const pf_range *r = v->r;
    const unsigned t = r->base[q];
    if (t != PF_T_REF && t != PF_T_SREF)
        return 0;
    uint64_t d, target;
    const unsigned vl = pf_varint_get(r->base + q + 1, r->end - q - 1, &d);
    if (!vl)
        return 0;
    if (t == PF_T_REF) {
        if (d == 0 || d > q - r->start)
            return 0;
        target = q - d;
    } else {
        if (d >= r->vcount)
            return 0;
        if (LD8(&v->vstr[d])) {
            *end = q + 1 + vl;
            return 1;
        }
        target = pf_ld64(r->vtab + 8 * d);
        if (target < r->start || target >= r->end)
            return 0;
    }
    const uint64_t k = target - r->start;
    if (!(LD8(&v->strs[k >> 3]) & (1u << (k & 7))))
        return 0;
    if (t == PF_T_SREF)
        ST8(&v->vstr[d], 1);
    *end = q + 1 + vl;
    return 1;
}

/* The commonest values, checked here with no decode: a short ASCII
 * string, a REF to one already checked (ref_to_str), None, a bool, an int
 * in its fewest bytes (R16), a float, a decimal float (R25). 1 and *end
 * past it, counted; 0 if q holds anything else, or holds one of these in
 * a form that the full decode (visit) will report, counting nothing. */
static int fast_scalar(vctx *v, uint64_t q, uint64_t *end)
{
    const pf_range *r = v->r;
    if (q < r->start || q >= r->end)
        return 0;
    const unsigned t = r->base[q];
    const uint64_t avail = r->end - q - 1;
    if (t >= PF_T_SHORT_STR) {
        if (!short_str_ok(v, q, end))
            return 0;
    } else if (t - PF_T_INT1 <= (unsigned)(PF_T_INT8 - PF_T_INT1)) {
        const unsigned n = t - (PF_T_INT1 - 1);
        if (n > avail || avail < 8)
            return 0;
        if (n > 1) {             /* fewest bytes: not within n - 1 bytes */
            const unsigned sh = 64 - 8 * n;
            const int64_t x = (int64_t)(pf_ld64(r->base + q + 1) << sh) >> sh;
            const int64_t lim = (int64_t)1 << (8 * (n - 1) - 1);
            if (x >= -lim && x < lim)
                return 0;
        }
        *end = q + 1 + n;
    } else if (t == PF_T_REF || t == PF_T_SREF) {
        if (!ref_to_str(v, q, end))
            return 0;
    } else if (t <= PF_T_TRUE) {
        *end = q + 1;
    } else if (t == PF_T_FLOAT) {
        if (avail < 8)
            return 0;
        *end = q + 9;
    } else if (t - PF_T_DEC0 <= (unsigned)(PF_T_DEC9 - PF_T_DEC0)) {
        uint64_t z;
        const unsigned vl = pf_varint_get(r->base + q + 1, avail, &z);
        if (!vl || (z >> 1) + (z & 1) >= PF_DEC_M_LIMIT)
            return 0;
        *end = q + 1 + vl;
    } else {
        return 0;
    }
    v->st->values++;
    return 1;
}

/* A short tuple (R26) at q whose items are all fast_scalar ones: 1 and
 * *end past it, counted unless it was walked before; else 0, counting
 * nothing. */
static int fast_tuple(vctx *v, uint64_t q, uint64_t *end)
{
    const pf_range *r = v->r;
    if (q < r->start || q >= r->end)
        return 0;
    const unsigned t = r->base[q];
    if (t - PF_T_TUPLE1 > (unsigned)(PF_T_TUPLE7 - PF_T_TUPLE1))
        return 0;
    const uint64_t values = v->st->values;
    uint64_t cur = q + 1;
    for (unsigned k = t - PF_T_TUPLE; k > 0; k--)
        if (!fast_scalar(v, cur, &cur)) {
            v->st->values = values;
            return 0;
        }
    /* walked once, like any tuple: a REF or SREF to it may come */
    if (seen_test_set(v, q))
        v->st->values = values;
    else
        v->st->values++;
    *end = cur;
    return 1;
}

/* Walks tuple x if its items are all scalars (or REFs to short
 * strings): 1 and *end past it; 0 if an item is anything else, having
 * counted nothing (the caller walks it by frames); < 0 on an error, which
 * the frames would report at the same item. */
static int scalar_tuple(vctx *v, const pf_val *x, uint64_t *end)
{
    const pf_range *r = v->r;
    const uint64_t values = v->st->values;
    uint64_t cur = x->u.tup.first, ignored;
    for (uint64_t i = 0; i < x->u.tup.count; i++) {
        if (fast_scalar(v, cur, &cur))
            continue;
        pf_val it;
        int rc = pf_decode_ex(r, cur, &it, 0, 1, v->err);
        if (rc != PF_OK)
            return rc;
        if (it.type == PF_REF_RAW && short_str_ok(v, it.pos, &ignored)) {
            v->st->values++;
        } else if (it.type == PF_REF_RAW || !(it.type >= PF_NONE && it.type <= PF_BYTES)) {
            v->st->values = values;
            return 0;
        } else if ((rc = check_scalar(v, cur, &it)) != PF_OK) {
            return rc;
        }
        cur = it.next;
    }
    v->st->values++; /* the tuple */
    *end = cur;
    return 1;
}

/* Visits the ival at q, an item of the top frame (or the root): checks a
 * scalar, or pushes a frame for a tuple or container. *end: where the
 * parent's next item starts, or 0 if a tuple written inline was pushed
 * (its frame sets the parent's next when it ends). */
static int visit(vctx *v, uint64_t q, uint64_t *end)
{
    if (fast_scalar(v, q, end) || fast_tuple(v, q, end))
        return PF_OK;
    pf_val x;
    int rc = pf_decode_ex(v->r, q, &x, 0, 1, v->err);
    if (rc != PF_OK)
        return rc;
    int inline_in = 1;
    if (x.type == PF_REF_RAW) {
        *end = x.next;
        const uint64_t t = x.pos;
        uint64_t ignored;
        /* A short string is checked again at every REF to it (at most 127
         * bytes per REF of 2 or more): cheaper than a bitmap miss. */
        if (short_str_ok(v, t, &ignored)) {
            v->st->values++;
            return PF_OK;
        }
        if (seen_test_set(v, t)) {
            if (v->depth && v->r->base[t] >= PF_T_TUPLE &&
                v->r->base[t] <= PF_T_TUPLE7 && tuple_cycle(v, t))
                return PF_CORRUPT(v->err, "REF inside a tuple back to that "
                                  "tuple (R18)", q);
            if (v->depth && v->r->base[t] == PF_T_OBJECT && args_cycle(v, t))
                return PF_CORRUPT(v->err, "REF inside an object's arguments "
                                  "back to that object (R32)", q);
            if (v->depth && v->r->base[t] == PF_T_KEYED && keyed_args_cycle(v, t))
                return PF_CORRUPT(v->err, "REF inside an object's arguments "
                                  "back to its keyed value (R32, R35)", q);
            return PF_OK;
        }
        if ((rc = pf_decode_ex(v->r, t, &x, 0, 1, v->err)) != PF_OK)
            return rc;
        q = t;
        inline_in = 0;
    } else if ((IS_SEQ(x.type) || IS_CONTAINER(x.type)) && seen_test_set(v, q)) {
        /* Written here and already walked through an SREF that points
         * forward (R28 allows it): only its end is needed. A tuple's end
         * is found by skipping it; the tuples skipped so are disjoint, so
         * that costs at most the image once. */
        if (IS_SEQ(x.type) &&
            (rc = pf_decode_ex(v->r, q, &x, 0, 0, v->err)) != PF_OK)
            return rc;
        *end = x.end;
        return PF_OK;
    }
    if (x.type == PF_ARRAY) {                    /* R34: the pad is zeros */
        const uint8_t *base = v->r->base;
        uint64_t n;
        const unsigned vl = pf_varint_get(base + q + 1, v->r->end - q - 1, &n);
        const uint64_t data = (uint64_t)(x.u.arr.data - base);
        for (uint64_t k = q + 1 + vl + 1; k < data; k++)
            if (base[k] != 0)
                return PF_CORRUPT(v->err, "array pad byte not zero (R34)", k);
    }
    if (x.type == PF_TUPLE) {
        /* The common tuple, of scalars only, is walked here, with no
         * frame; any other is walked by frames from its start. */
        uint64_t tend = 0;
        if ((rc = scalar_tuple(v, &x, &tend)) < 0)
            return rc;
        if (rc == 1) {
            if (inline_in)
                *end = tend;
            return PF_OK;
        }
    }
    if (IS_SEQ(x.type)) {
        if (inline_in)
            *end = 0;
        return push(v, &x, inline_in);
    }
    if (IS_CONTAINER(x.type)) {
        if (inline_in)
            *end = x.end;
        return push(v, &x, 0);
    }
    if (inline_in)
        *end = x.next;
    return check_scalar(v, q, &x);
}

/* Records of dict, set or frozenset f, one after another, while each is
 * a short ASCII key and (a dict's) a fast_scalar or fast_tuple value: the
 * checks of step and visit, with no decode. The first other record is
 * left to step. *walked: how many were walked. */
static int fast_records(vctx *v, vframe *f, uint64_t *walked)
{
    const pf_range *r = v->r;
    const uint64_t bend = f->body + f->body_len;
    const uint64_t stop = f->stop ? f->stop : UINT64_MAX;
    const int dict = f->kind == PF_DICT;
    uint64_t q = f->next, n = 0;
    int rc = PF_OK;
    while (f->i < f->count && q < stop && q >= f->body && q < bend && q < r->end) {
        uint64_t kend, vend;
        if (q + 1024 < r->end)
            PREFETCH(r->base + q + 1024);
        if (!short_str_ok(v, q, &kend))
            break;
        if (!dict)
            vend = kend;
        else if (kend >= bend || !(fast_scalar(v, kend, &vend) || fast_tuple(v, kend, &vend)))
            break;
        const uint64_t h = pf_hash_str(r->seed, r->base + q + 1, (size_t)(kend - q - 1), 1);
        if ((rc = add_key(v, f, q, h)) != PF_OK)
            break;
        v->st->keys++;
        v->st->values++; /* the key */
        f->i++;
        q = vend;
        n++;
    }
    f->next = q;
    *walked = n;
    return rc;
}

/* One step of the top frame: its next item, or its end. */
static int step(vctx *v)
{
    vframe *f = &v->stack[v->depth - 1];
    int rc;
    if (f->stop && !f->at_value && f->next >= f->stop) {
        /* The end of a thread's range of the root's records: the next
         * range starts here, at a record whose offset a slot gave. */
        if (f->next != f->stop)
            return PF_CORRUPT(v->err, "a slot's record offset is not where "
                              "a record starts (R22, R24)", f->stop);
        if (f->batch) {
            if ((rc = flush_keys(v, f)) != PF_OK)
                return rc;
            free_batch(v, f);
        }
        v->range_records = f->i;
        v->depth--;
        return PF_OK;
    }
    if (f->i == f->count && !f->at_value) {
        /* The end: the keys still queued, a body exactly its items (R19,
         * R20). */
        if (f->batch) {
            if ((rc = flush_keys(v, f)) != PF_OK)
                return rc;
            free_batch(v, f);
        }
        const uint64_t end = f->next;
        if (!IS_SEQ(f->kind) && end != f->body + f->body_len)
            return PF_CORRUPT(v->err, "container body is not exactly its "
                              "items (R19, R20)", f->pos);
        const int report = f->inline_in;
        v->depth--;
        if (report && v->depth > 0) /* the root has no parent */
            v->stack[v->depth - 1].next = end;
        return PF_OK;
    }
    if (!f->at_value && !f->okind &&
        (f->kind == PF_DICT || f->kind == PF_SET || f->kind == PF_FROZENSET)) {
        uint64_t walked;
        if ((rc = fast_records(v, f, &walked)) != PF_OK || walked)
            return rc;
    }
    const uint64_t q = f->next;
    /* The walk reads DATA in order, among random reads (slots, REF
     * targets) that keep the hardware from streaming it: ask ahead. */
    if (q + 1024 < v->r->end)
        PREFETCH(v->r->base + q + 1024);
    if (!IS_SEQ(f->kind) && (q < f->body || q >= f->body + f->body_len))
        return PF_CORRUPT(v->err, "container item outside its body", f->pos);
    if (f->kind == PF_LIST) {
        const uint8_t *tp = v->r->base + f->table + f->i * f->width;
        const uint64_t off = pf_ldw(tp, f->width);
        if (off != q - f->body)
            return PF_CORRUPT(v->err, "list table offset is not its item's "
                              "(R19, R24)", f->table + f->i * f->width);
    } else if ((f->kind == PF_OBJECT || f->kind == PF_ARRAY) && f->i == 0) {
        pf_val sh;                      /* an object's shape, an array's */
        if ((rc = pf_decode_ex(v->r, q, &sh, 1, 1, v->err)) != PF_OK)
            return rc;                  /* header: a tuple (R32, R34) */
        if (sh.type != PF_TUPLE)
            return PF_CORRUPT(v->err, f->kind == PF_OBJECT
                              ? "object shape is not a tuple (R32)"
                              : "array header is not a tuple (R34)", q);
        /* a shape holds ints and strs only (R32): nothing in it can lead
         * back to an object */
        uint64_t cur = sh.u.tup.first;
        for (uint64_t k = 0; f->kind == PF_OBJECT && k < sh.u.tup.count; k++) {
            pf_val it;
            if ((rc = pf_decode_ex(v->r, cur, &it, 1, 1, v->err)) != PF_OK)
                return rc;
            if (it.type != PF_INT && it.type != PF_STR)
                return PF_CORRUPT(v->err, "object shape holds a value other than "
                                  "an int or a str (R32)", cur);
            if (k == 0)
                f->objkind = it.type == PF_INT && it.u.i > 0 && it.u.i < 256
                                 ? (uint8_t)it.u.i : 0;
            cur = it.next;
        }
    } else if (f->kind == PF_KEYED) {
        pf_val x;                         /* R35: a proxy of a key type ... */
        uint64_t h;
        if (f->i == 0 && (rc = pf_hash_range(v->r, q, &h, v->err)) != PF_OK)
            return rc == PF_ETYPE ? PF_CORRUPT(v->err, "keyed value's proxy "
                                               "is not of a key type (R35)", q)
                                  : rc;
        if (f->i == 1) {                  /* ... and an object */
            if ((rc = pf_decode_ex(v->r, q, &x, 1, 1, v->err)) != PF_OK)
                return rc;
            if (x.type != PF_OBJECT && x.type != PF_PICKLE)
                return PF_CORRUPT(v->err, "keyed value's value is not an "
                                  "object or a pickle (R35)", q);
        }
    } else if (!IS_SEQ(f->kind) && !f->at_value) {
        uint64_t h, kend;                                 /* a key: R21, R22 */
        if ((rc = key_hash(v, q, &h, &kend)) != PF_OK)
            return rc;
        const int short_key = kend != 0;
        if ((rc = add_key(v, f, q, h)) != PF_OK)
            return rc;
        v->st->keys++;
        f = &v->stack[v->depth - 1];
        if (f->okind && (rc = check_order(v, f, q)) != PF_OK)
            return rc;
        if (short_key) {                /* and checked: no visit */
            if (f->kind == PF_DICT) {
                f->at_value = 1;
            } else {
                f->i++;
            }
            f->next = kend;
            v->st->values++;
            return PF_OK;
        }
    }
    if (f->kind == PF_DICT && !f->at_value) {
        f->at_value = 1;
    } else {
        f->at_value = 0;
        f->i++;
    }
    /* visit may move the stack (realloc): the frame is kept by index */
    const uint64_t fi = v->depth - 1;
    uint64_t end;
    if ((rc = visit(v, q, &end)) != PF_OK)
        return rc;
    if (end)
        v->stack[fi].next = end;
    return PF_OK;
}

static int check_sections(vctx *v)
{
    const uint8_t *base = pf_image_base(v->img);
    const uint64_t stab = pf_ld64(base + PF_H_STAB_OFF);
    const uint32_t nsec = pf_ld32(base + PF_H_STAB_COUNT);
    for (uint32_t k = 0; k < nsec; k++) {   /* in bounds: checked at open */
        const uint8_t *e = base + stab + (uint64_t)k * PF_SECTION_ENTRY_LEN;
        const uint64_t off = pf_ld64(e + 8), len = pf_ld64(e + 16);
        const uint64_t sum = pf_ld64(e + 24);
        if (sum == 0)
            continue;
        if (pf_checksum(base + off, (size_t)len) != sum)
            return PF_CORRUPT(v->err, "section checksum mismatch: the image "
                              "was damaged", off);
        v->st->checksums++;
    }
    /* Every VALUES entry lies inside DATA (R28); what an SREF reaches is
     * walked with the value that holds it. */
    uint64_t n;
    const uint8_t *vt = pf_image_values(v->img, &n);
    for (uint64_t i = 0; i < n; i++) {
        const uint64_t t = pf_ld64(vt + 8 * i);
        if (t < v->r->start || t >= v->r->end)
            return PF_CORRUPT(v->err, "VALUES entry outside the DATA section "
                              "(R28)", t);
    }
    return PF_OK;
}

/* ------------------------------------------------------- threads */

/* A big root dict, set or list is split into ranges of records, several
 * a thread, which threads take in order as they finish the ones before
 * (later records cost more: a slot table's later keys probe further).
 * Each thread walks with its own context; they share the `seen` bitmap
 * (atomically: what several ranges reach is walked once) and the string
 * maps, and nothing else. Every check of a record is the same as in one
 * walk; the ranges' ends must meet the next ranges' starts, and their
 * record counts add up to the count. */
#define PAR_MIN_RECORDS 65536   /* and a range holds a quarter of that */
#define PAR_MAX_THREADS 8
#define PAR_RANGES_PER_THREAD 4
#define PAR_MAX_RANGES (PAR_MAX_THREADS * PAR_RANGES_PER_THREAD)

#if defined(_MSC_VER)
#define FETCH_ADD32(p, x) ((uint32_t)_InterlockedExchangeAdd((volatile long *)(p), (long)(x)))
#define LOAD32(p) (*(volatile uint32_t *)(p))
#define CAS32(p, old, x) ((uint32_t)_InterlockedCompareExchange((volatile long *)(p), \
                          (long)(x), (long)(old)) == (old))
#else
#define FETCH_ADD32(p, x) __atomic_fetch_add((p), (x), __ATOMIC_RELAXED)
#define LOAD32(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define CAS32(p, old, x) __atomic_compare_exchange_n((p), &(uint32_t){(old)}, (x), 0, \
                         __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#endif

typedef struct vrange {
    uint64_t start, stop; /* body offsets */
    uint64_t i0;          /* its first record's index (a list's), else 0 */
    uint64_t expect;      /* about how many records it holds */
    uint64_t records;     /* the index after its last record, once walked */
    int rc;
    pf_error err;
} vrange;

typedef struct vpar {
    const pf_val *x;      /* the root container */
    vrange *rg;
    uint32_t n;
    uint32_t next;        /* the next range to take */
    uint32_t first_bad;   /* the first range found damaged, else n */
} vpar;

typedef struct vjob {
    vctx v;
    pf_verify_stats st;
    pf_error err;
    int rc;               /* of its suspects (the ranges have their own) */
    vpar *par;
} vjob;

static void free_ctx(vctx *v)
{
    for (uint64_t d = 0; d < v->depth; d++) /* frames left by an error */
        free_batch(v, &v->stack[d]);
    free(v->stack);
    pf_os_zfree(v->sorted, (size_t)v->sorted_cap * sizeof(skey));
    pf_os_zfree(v->spare, (size_t)v->spare_cap * sizeof(skey));
    v->spare = NULL;
    v->spare_cap = 0;
    free(v->sus);
    v->sus = NULL;
    v->nsus = v->sus_cap = 0;
    v->stack = NULL;
    v->sorted = NULL;
    v->sorted_cap = 0;
    v->depth = 0;
}

/* The maps every context shares: seen, strs and vstr, in one zeroed
 * block of *len bytes. */
static uint8_t *alloc_maps(vctx *v, size_t *len, pf_error *err)
{
    const uint64_t bits = (v->r->end - v->r->start) / 8 + 1;
    const uint64_t n = 2 * bits + v->r->vcount + 1;
    uint8_t *m = n <= SIZE_MAX ? (uint8_t *)pf_os_zalloc((size_t)n) : NULL;
    if (!m) {
        pf_fail(err, PF_ENOMEM, "out of memory for the verify bitmap", 0);
        return NULL;
    }
    v->seen = m;
    v->strs = m + bits;
    v->vstr = m + 2 * bits;
    *len = (size_t)n;
    return m;
}

/* The frame of range g of root container x. */
static int push_range(vctx *v, const pf_val *x, const vrange *g)
{
    if (!v->stack) {
        v->stack = (vframe *)malloc(64 * sizeof(vframe));
        if (!v->stack)
            return pf_fail(v->err, PF_ENOMEM, "out of memory for the verify stack", 0);
        v->cap = 64;
    }
    vframe *f = &v->stack[v->depth++];
    memset(f, 0, offsetof(vframe, small_hash));
    f->pos = x->pos;
    f->kind = (uint8_t)x->type;
    f->count = UINT64_MAX; /* ends at stop */
    f->expect = g->expect;
    f->body = x->u.c.body;
    f->body_len = x->u.c.body_len;
    f->table = x->u.c.table;
    f->nslots = x->u.c.nslots;
    f->width = (uint8_t)x->u.c.width;
    f->next = g->start;
    f->i = g->i0;
    f->stop = g->stop;
    return PF_OK;
}

/* Task 0: the section checksums and the root's slot count, which one
 * walk checks first. */
static int first_task(vctx *v, const pf_val *x)
{
    int rc = check_sections(v);
    if (rc != PF_OK || x->type == PF_LIST)
        return rc;
    vframe f;
    memset(&f, 0, sizeof f);
    f.pos = x->pos;
    f.count = x->u.c.count;
    f.table = x->u.c.table;
    f.nslots = x->u.c.nslots;
    f.width = (uint8_t)x->u.c.width;
    return count_slots(v, &f);
}

/* A thread: takes tasks in order (task 0, first_task, then the ranges)
 * until none is left, or until every task left comes after one that
 * found damage (whose fault is the answer). */
static void run_job(void *p)
{
    vjob *j = (vjob *)p;
    vpar *par = j->par;
    for (;;) {
        const uint32_t k = FETCH_ADD32(&par->next, 1);
        if (k >= par->n)
            break;
        if (k > LOAD32(&par->first_bad))
            continue;
        vrange *g = &par->rg[k];
        int rc = k == 0 ? first_task(&j->v, par->x) : push_range(&j->v, par->x, g);
        while (rc == PF_OK && j->v.depth > 0)
            rc = step(&j->v);
        g->rc = rc;
        if (rc == PF_OK) {
            g->records = k == 0 ? 0 : j->v.range_records;
            continue;
        }
        g->err = j->err;
        for (uint64_t d = 0; d < j->v.depth; d++) /* frames left by it */
            free_batch(&j->v, &j->v.stack[d]);
        j->v.depth = 0;
        uint32_t was = LOAD32(&par->first_bad);
        while (k < was && !CAS32(&par->first_bad, was, k))
            was = LOAD32(&par->first_bad);
    }
    j->rc = resolve_suspects(&j->v);
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Where the ranges start: (offset in the body, record index) for each of
 * n ranges, the first at 0; fewer when the records cannot be split so.
 * A list's table gives its items' offsets; a dict's or set's slots give
 * the offsets of some records (not their indexes: 0, unused). */
static unsigned split_points(vctx *v, const pf_val *x, unsigned n,
                             uint64_t *offs, uint64_t *idx)
{
    const uint8_t *base = v->r->base;
    const int w = x->u.c.width;
    const uint64_t count = x->u.c.count, bl = x->u.c.body_len;
    offs[0] = idx[0] = 0;
    if (x->type == PF_LIST) {
        unsigned m = 1;
        for (unsigned t = 1; t < n; t++) {
            const uint64_t i = count / n * t;
            const uint64_t off = pf_ldw(base + x->u.c.table + i * (uint64_t)w, w);
            if (off <= offs[m - 1] || off >= bl)
                return 1; /* a damaged table: one walk reports it */
            offs[m] = off;
            idx[m++] = i;
        }
        return m;
    }
    /* record offsets from slots spread over the table, sorted */
    enum { NS = 4096 };
    uint64_t *cand = (uint64_t *)malloc(NS * sizeof(uint64_t));
    if (!cand)
        return 1;
    const unsigned ibits = pf_bitlen64(bl);
    const uint64_t imask = (UINT64_C(1) << ibits) - 1;
    size_t nc = 0;
    for (uint64_t k = 0; k < NS; k++) {
        const uint64_t s = x->u.c.nslots / NS * k;
        const uint64_t slot = pf_ldw(base + x->u.c.table + s * (uint64_t)w, w);
        const uint64_t ro = slot & imask;
        if (ro != 0 && ro - 1 < bl)
            cand[nc++] = ro - 1;
    }
    qsort(cand, nc, sizeof *cand, cmp_u64);
    unsigned m = 1;
    size_t c = 0;
    for (unsigned t = 1; t < n; t++) {
        const uint64_t want = bl / n * t;
        while (c < nc && (cand[c] < want || cand[c] <= offs[m - 1]))
            c++;
        if (c == nc)
            break;
        offs[m] = cand[c];
        idx[m++] = 0;
    }
    free(cand);
    return m;
}

/* The walk of a big root container by threads: 1 done (rc in *out), 0
 * not suited (the caller walks it alone). */
static int verify_parallel(vctx *v, unsigned threads, int *out)
{
    pf_val x;
    const uint64_t root = pf_image_root(v->img);
    if (threads < 2 || pf_decode_ex(v->r, root, &x, 1, 1, v->err) != PF_OK ||
        x.pos != root || !IS_CONTAINER(x.type) || x.u.c.okind ||
        x.u.c.count < v->par_min || (x.type != PF_LIST && !x.u.c.nslots))
        return 0;
    if (threads > PAR_MAX_THREADS)
        threads = PAR_MAX_THREADS;
    unsigned n = threads * PAR_RANGES_PER_THREAD;
    const uint64_t share = v->par_min / 4 ? v->par_min / 4 : 1;
    if (x.u.c.count / share < n)
        n = (unsigned)(x.u.c.count / share);
    uint64_t offs[PAR_MAX_RANGES], idx[PAR_MAX_RANGES];
    n = split_points(v, &x, n, offs, idx);
    if (n < 2)
        return 0;
    if (threads > n)
        threads = n;
    /* the root container itself, as push() would take it */
    (void)seen_test_set(v, root);
    v->st->values++;
    v->st->containers++;
    vjob *jobs = (vjob *)calloc(threads, sizeof(vjob));
    vrange *rg = (vrange *)calloc((size_t)n + 1, sizeof(vrange));
    pf_thread *th[PAR_MAX_THREADS] = {NULL};
    if (!jobs || !rg) {
        free(jobs);
        free(rg);
        *out = pf_fail(v->err, PF_ENOMEM, "out of memory for the verify threads", 0);
        return 1;
    }
    vpar par; /* task 0 (rg[0]): first_task; task k: range k - 1 */
    par.x = &x;
    par.rg = rg;
    par.n = n + 1;
    par.next = 0;
    par.first_bad = n + 1;
    for (unsigned k = 0; k < n; k++) {
        vrange *g = &rg[k + 1];
        g->start = x.u.c.body + offs[k];
        g->stop = x.u.c.body + (k + 1 < n ? offs[k + 1] : x.u.c.body_len);
        g->i0 = idx[k];
        /* its share of the records by its share of the body, and some */
        const double share = (double)(g->stop - g->start) / (double)x.u.c.body_len;
        g->expect = (uint64_t)(share * (double)x.u.c.count * 1.25) + 64;
    }
    for (unsigned t = 0; t < threads; t++) {
        vjob *j = &jobs[t];
        j->v.img = v->img;
        j->v.r = v->r;
        j->v.seen = v->seen;
        j->v.shared = 1;
        j->v.st = &j->st;
        j->v.err = &j->err;
        j->v.batch_max = v->batch_max;
        j->v.strs = v->strs;
        j->v.vstr = v->vstr;
        j->par = &par;
    }
    for (unsigned t = 1; t < threads; t++)
        if (pf_thread_start(&th[t], run_job, &jobs[t]) != PF_OK)
            th[t] = NULL; /* the other threads take its ranges */
    run_job(&jobs[0]);
    for (unsigned t = 1; t < threads; t++)
        if (th[t])
            pf_thread_join(th[t]);
    /* the first range's fault, as one walk would find first */
    int rc = PF_OK;
    if (par.first_bad < par.n) {
        rc = rg[par.first_bad].rc;
        if (v->err)
            *v->err = rg[par.first_bad].err;
    }
    for (unsigned t = 0; t < threads && rc == PF_OK; t++)
        if ((rc = jobs[t].rc) != PF_OK && v->err)
            *v->err = jobs[t].err;
    uint64_t records = 0;
    for (unsigned k = 1; k <= n && rc == PF_OK; k++)
        records += rg[k].records - rg[k].i0;
    if (rc == PF_OK && x.type == PF_LIST) {
        /* a list's ranges start at known indexes: each must hold exactly
         * the items up to the next */
        for (unsigned k = 1; k < n && rc == PF_OK; k++)
            if (rg[k].records != rg[k + 1].i0)
                rc = PF_CORRUPT(v->err, "list table offset is not its item's "
                                "(R19, R24)", x.u.c.table);
        records = rg[n].records;
    }
    if (rc == PF_OK && records != x.u.c.count)
        rc = PF_CORRUPT(v->err, "container count is not its records "
                        "(R19, R20)", x.pos);
    for (unsigned t = 0; t < threads; t++) {
        v->st->values += jobs[t].st.values;
        v->st->containers += jobs[t].st.containers;
        v->st->keys += jobs[t].st.keys;
        v->st->checksums += jobs[t].st.checksums;
        free_ctx(&jobs[t].v);
    }
    free(jobs);
    free(rg);
    *out = rc;
    return 1;
}

int pf_image_verify(const pf_image *img, pf_verify_stats *stats, pf_error *err)
{
    return pf_verify_ex(img, stats, 0, err);
}

int pf_verify_ex(const pf_image *img, pf_verify_stats *stats, unsigned threads,
                 pf_error *err)
{
    pf_verify_tuning t;
    memset(&t, 0, sizeof t);
    t.threads = threads;
    return pf_verify_tuned(img, stats, &t, err);
}

int pf_verify_tuned(const pf_image *img, pf_verify_stats *stats,
                    const pf_verify_tuning *tune, pf_error *err)
{
    unsigned threads = tune->threads;
    pf_verify_stats local;
    if (!img)
        return pf_fail(err, PF_EINVAL, "no image", 0);
    vctx v;
    memset(&v, 0, sizeof v);
    v.img = img;
    v.r = &img->r;
    v.st = stats ? stats : &local;
    memset(v.st, 0, sizeof *v.st);
    v.err = err;
    v.batch_max = tune->batch ? tune->batch : BATCH_MAX;
    v.par_min = tune->par_min ? tune->par_min : PAR_MIN_RECORDS;
    int rc;
    if (threads == 0) {
        threads = pf_cpu_count();
        if (threads > PAR_MAX_THREADS)
            threads = PAR_MAX_THREADS;
    }
    size_t maps_len;
    uint8_t *maps = alloc_maps(&v, &maps_len, err);
    if (!maps)
        return PF_ENOMEM;
    if (!verify_parallel(&v, threads, &rc)) {
        uint64_t end;
        rc = check_sections(&v);
        if (rc == PF_OK)
            rc = visit(&v, pf_image_root(img), &end);
        while (rc == PF_OK && v.depth > 0)
            rc = step(&v);
        if (rc == PF_OK)
            rc = resolve_suspects(&v);
        free_ctx(&v);
    }
    pf_os_zfree(maps, maps_len);
    return rc;
}
