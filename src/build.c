/*
 * build.c -- the streaming builder: writes an image whose root is a dict or
 * a list one entry at a time, in memory bounded by a budget whatever the
 * number of entries (docs/DECISIONS.md, "The streaming builder").
 *
 * The image file is written front to back: header (filled at the end), the
 * root container's header (patched at the end), then each record as it
 * comes. A record is encoded by a pf_writer in record mode (write.c), so
 * its REFs stay inside it and its bytes can be moved as they are; strings
 * repeated across records become SREFs into a pool that is appended after
 * the root (R28: an SREF target may lie anywhere in DATA).
 *
 * A dict's slot table (R22) is not built in memory: each record leaves a
 * (key hash, record offset) pair in a spool, kept in memory up to a share
 * of the budget and spilled as hash-sorted runs to a nameless scratch file.
 * At the dict's end the runs are merged in hash order; the home slot
 * mulhi64(h, nslots) grows with h, so slots are then filled front to back
 * (linear probing in sorted order: a record goes to its home slot or just
 * after the previous record), and the few records pushed past the last
 * slot wrap to the first empty slots. Equal keys meet in the merge (equal
 * hashes are neighbours): the last value wins, at the first key's place,
 * as in a dict; the body is then compacted and the table filled again.
 *
 * Nested dicts and lists (pf_builder_open) are levels of a stack: a level
 * is the value of its parent's pending record, written inline, and ends
 * (pf_builder_close) before its parent goes on.
 */
#include <stdlib.h>

#include "internal.h"

#define OUT_CAP (1u << 20)      /* output buffer */
#define POOL_CAP (1u << 20)     /* pool buffer */
#define RUN_BUF 4096u           /* items per run reader */
#define POOL_MAX_ENC 4096u      /* longer strings are not pooled */
#define MIN_BUDGET (UINT64_C(1) << 20)

enum { ST_IDLE, ST_ITEM, ST_KEY };

/* ------------------------------------------------------------------ spools */

/* An append-only sequence of items of `wpi` u64 words (dict: hash and
 * record offset; list: record offset): in memory, then spilled in chunks
 * to the scratch file (dict chunks sorted by hash). */
typedef struct chunk {
    uint64_t off, n;
} chunk;

typedef struct spool {
    uint64_t *mem;
    size_t n, cap;          /* items */
    unsigned wpi;
    chunk *chunks;
    size_t nchunks, chunks_cap;
    uint64_t total;         /* items appended */
} spool;

/* A key entry of an ordered level: KE_HDR bytes of u64 fields, then the
 * key's code units (str as stored, R15; bytes), zero-padded to 8. */
enum {
    KE_PRE = 0,             /* its 8-byte order prefix (R36), big-endian */
    KE_HASH = 8,            /* its stable hash */
    KE_INS = 16,            /* its record's insertion index in the level */
    KE_OFF = 24,            /* its record's offset in the body */
    KE_LEN = 32,            /* its record's length */
    KE_UNITS = 40,          /* code units << 3 | width */
    KE_HDR = 48
};

typedef struct ent {
    uint8_t *p;             /* an entry, or NULL */
    size_t cap;
    int kind;               /* PF_ORDER_STR, PF_ORDER_BYTES, or 0: other */
} ent;

typedef struct krun {
    uint64_t off, bytes;    /* a sorted run in the scratch file */
} krun;

/* The key entries of a level: in memory (mem, with idx their offsets),
 * spilled as key-sorted runs to the scratch file. */
typedef struct kspool {
    uint8_t *mem;
    size_t len, cap;
    uint64_t *idx;
    size_t n, icap;
    krun *runs;
    size_t nruns, runs_cap;
    uint64_t charged;       /* bytes counted in spool_used */
} kspool;

typedef struct level {
    int type;               /* PF_T_DICT or PF_T_LIST */
    uint64_t hdr, body;     /* file offsets of its header and body */
    uint64_t count;         /* records */
    spool items;
    uint64_t rec_start;     /* the parent's record holding it */
    uint64_t key_hash;      /* that record's key hash (parent dict) */
    /* An ordered build's dict level (R36): the key entries of its records;
     * okind PF_ORDER_STR or PF_ORDER_BYTES once a record is ended, 0
     * before, -1 once a key of another kind came (then no order). */
    kspool keys;
    int okind;
    ent saved;              /* the parent's pending key entry */
} level;

/* The pool cache: strings met in earlier records (content in `arena`), to
 * find repeats; a string met a third time is copied to the pool and given
 * a VALUES index. When the cache is full it starts over (a later repeat
 * gets a new pool copy: correct, only less compact). */
typedef struct pent {
    uint64_t hash;
    uint64_t idx1;          /* VALUES index + 1, or 0 */
    uint32_t aoff, len;
    uint32_t seen;
} pent;

struct pf_builder {
    char *path, *tmp;
    pf_file out;
    uint8_t *obuf;          /* output bytes [obase, obase + olen) */
    size_t olen;
    uint64_t obase;
    pf_file scratch;
    uint64_t scratch_end;
    pf_file poolf;
    uint8_t *pbuf;
    size_t plen;
    uint64_t pbase;         /* pool bytes before pbuf */
    spool values;           /* pool offsets, relative to the pool start */
    pent *ents;
    size_t nents, ents_cap;
    uint32_t *tab;
    size_t tab_mask;
    unsigned tab_bits;
    uint8_t *arena;
    size_t alen, acap;
    pf_writer *w;
    uint64_t incompat;  /* incompat_flags of the records ended (R6) */
    uint64_t seed;
    uint8_t id[16];
    level *levels;
    size_t depth, levels_cap;
    int state;
    uint64_t pending_hash;
    int ordered;            /* PF_BUILD_ORDERED: dict levels get an order */
    ent pk;                 /* ordered: the pending record's key entry */
    size_t key_len;
    uint64_t spool_limit, spool_used;
    uint64_t entries;
    uint64_t image_size;    /* once finished */
    int failed, finished;
};

static int scratch_open(pf_builder *b, pf_error *err)
{
    if (b->scratch.open)
        return PF_OK;
    return pf_file_temp(b->path, 1, &b->scratch, NULL, err);
}

/* Stable sort of n (hash, off) pairs by hash: LSD radix, 11 bits a pass,
 * passes where every key has the same digit skipped. */
static int sort_pairs(uint64_t *a, size_t n, pf_error *err)
{
    if (n < 2)
        return PF_OK;
    if (n <= 32) {
        for (size_t i = 1; i < n; i++) {
            uint64_t h = a[2 * i], o = a[2 * i + 1];
            size_t j = i;
            for (; j > 0 && a[2 * (j - 1)] > h; j--) {
                a[2 * j] = a[2 * (j - 1)];
                a[2 * j + 1] = a[2 * (j - 1) + 1];
            }
            a[2 * j] = h;
            a[2 * j + 1] = o;
        }
        return PF_OK;
    }
    uint64_t *tmp = (uint64_t *)malloc(n * 2 * sizeof(uint64_t));
    size_t *cnt = (size_t *)calloc(6 * 2048, sizeof(size_t));
    if (!tmp || !cnt) {
        free(tmp);
        free(cnt);
        return pf_fail(err, PF_ENOMEM, "out of memory to sort key hashes", 0);
    }
    for (size_t i = 0; i < n; i++)
        for (unsigned d = 0; d < 6; d++)
            cnt[d * 2048 + ((a[2 * i] >> (11 * d)) & 2047)]++;
    uint64_t *src = a, *dst = tmp;
    for (unsigned d = 0; d < 6; d++) {
        size_t *c = cnt + d * 2048;
        if (c[(a[0] >> (11 * d)) & 2047] == n)
            continue; /* one digit for all: nothing moves */
        size_t sum = 0;
        for (unsigned k = 0; k < 2048; k++) {
            size_t t = c[k];
            c[k] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) {
            size_t k = c[(src[2 * i] >> (11 * d)) & 2047]++;
            dst[2 * k] = src[2 * i];
            dst[2 * k + 1] = src[2 * i + 1];
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * 2 * sizeof(uint64_t));
    free(tmp);
    free(cnt);
    return PF_OK;
}

static int spool_spill(pf_builder *b, spool *s, pf_error *err)
{
    if (s->n == 0)
        return PF_OK;
    int rc;
    if ((rc = scratch_open(b, err)) != PF_OK)
        return rc;
    if (s->wpi == 2 && (rc = sort_pairs(s->mem, s->n, err)) != PF_OK)
        return rc;
    if (s->nchunks == s->chunks_cap) {
        size_t ncap = s->chunks_cap ? 2 * s->chunks_cap : 8;
        chunk *nc = (chunk *)realloc(s->chunks, ncap * sizeof(chunk));
        if (!nc)
            return pf_fail(err, PF_ENOMEM, "out of memory for spill runs", 0);
        s->chunks = nc;
        s->chunks_cap = ncap;
    }
    const size_t bytes = s->n * s->wpi * sizeof(uint64_t);
    if ((rc = pf_file_pwrite(&b->scratch, s->mem, bytes, b->scratch_end,
                             err)) != PF_OK)
        return rc;
    s->chunks[s->nchunks].off = b->scratch_end;
    s->chunks[s->nchunks].n = s->n;
    s->nchunks++;
    b->scratch_end += bytes;
    s->n = 0;
    return PF_OK;
}

PF_INLINE int spool_push(pf_builder *b, spool *s, uint64_t x, uint64_t y,
                         pf_error *err)
{
    if (PF_UNLIKELY(s->n == s->cap)) {
        /* Grow while the spools together stay within their share of the
         * budget; else spill what is held. */
        size_t ncap = s->cap ? 2 * s->cap : 16;
        uint64_t more = (uint64_t)(ncap - s->cap) * s->wpi * 8;
        if (s->cap && b->spool_used + more > b->spool_limit) {
            int rc = spool_spill(b, s, err);
            if (rc != PF_OK)
                return rc;
        } else {
            uint64_t *nm = (uint64_t *)realloc(s->mem, ncap * s->wpi * 8);
            if (!nm)
                return pf_fail(err, PF_ENOMEM, "out of memory for key hashes",
                               0);
            s->mem = nm;
            s->cap = ncap;
            b->spool_used += more;
        }
    }
    s->mem[s->n * s->wpi] = x;
    if (s->wpi == 2)
        s->mem[s->n * 2 + 1] = y;
    s->n++;
    s->total++;
    return PF_OK;
}

static void spool_free(pf_builder *b, spool *s)
{
    b->spool_used -= (uint64_t)s->cap * s->wpi * 8;
    free(s->mem);
    free(s->chunks);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ merges */

/* The merges (a dict spool's hash-sorted runs, a level's key-sorted runs)
 * keep a heap of reader indexes, the reader whose head is least on top;
 * less(ctx, a, b): reader a's head before reader b's. Restores the heap
 * below slot i. */
PF_INLINE void heap_sift(size_t *heap, size_t nh, size_t i,
                         int (*less)(const void *, size_t, size_t),
                         const void *ctx)
{
    for (;;) {
        size_t l = 2 * i + 1, s = i;
        if (l < nh && less(ctx, heap[l], heap[s]))
            s = l;
        if (l + 1 < nh && less(ctx, heap[l + 1], heap[s]))
            s = l + 1;
        if (s == i)
            return;
        size_t t = heap[i];
        heap[i] = heap[s];
        heap[s] = t;
        i = s;
    }
}

/* ------------------------------------------------------------------ key spools */

PF_INLINE uint64_t ke_units(const uint8_t *e) { return pf_ld64(e + KE_UNITS) >> 3; }
PF_INLINE int ke_width(const uint8_t *e) { return (int)(pf_ld64(e + KE_UNITS) & 7); }
PF_INLINE uint64_t ke_size(const uint8_t *e)
{
    return KE_HDR + ((ke_units(e) * (uint64_t)ke_width(e) + 7) & ~(uint64_t)7);
}

PF_INLINE uint64_t ld64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

PF_INLINE void st64be(uint8_t *p, uint64_t v)
{
    for (unsigned i = 8; i-- > 0; v >>= 8)
        p[i] = (uint8_t)v;
}

/* The order of two key entries: by key (R36), then by insertion. */
static int ke_cmp(const uint8_t *a, const uint8_t *b)
{
    uint64_t x = pf_ld64(a + KE_PRE), y = pf_ld64(b + KE_PRE);
    if (x != y)
        return x < y ? -1 : 1;
    size_t common;
    int c = pf_units_cmp(a + KE_HDR, (size_t)ke_units(a), ke_width(a),
                         b + KE_HDR, (size_t)ke_units(b), ke_width(b), &common);
    if (c)
        return c;
    x = pf_ld64(a + KE_INS);
    y = pf_ld64(b + KE_INS);
    return x < y ? -1 : x > y;
}

/* Sorts n entry offsets into mem by ke_cmp: runs of 16 by insertion, then
 * merged bottom-up through tmp (n offsets). */
static void ke_sort(const uint8_t *mem, uint64_t *a, uint64_t *tmp, size_t n)
{
    for (size_t lo = 0; lo < n; lo += 16) {
        size_t hi = n - lo > 16 ? lo + 16 : n;
        for (size_t i = lo + 1; i < hi; i++) {
            uint64_t x = a[i];
            size_t j = i;
            for (; j > lo && ke_cmp(mem + a[j - 1], mem + x) > 0; j--)
                a[j] = a[j - 1];
            a[j] = x;
        }
    }
    uint64_t *src = a, *dst = tmp;
    for (size_t w = 16; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = n - lo > w ? lo + w : n;
            size_t hi = n - mid > w ? mid + w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = ke_cmp(mem + src[j], mem + src[i]) < 0 ? src[j++]
                                                                  : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

#define KBUF (1u << 20)         /* a run's write buffer */
#define KRDR_BUF (64u << 10)    /* a run reader's buffer */

/* Writes the entries in memory, sorted, as a run to the scratch file. */
static int kspool_spill(pf_builder *b, kspool *k, pf_error *err)
{
    if (k->n == 0)
        return PF_OK;
    int rc = scratch_open(b, err);
    if (rc != PF_OK)
        return rc;
    if (k->nruns == k->runs_cap) {
        size_t ncap = k->runs_cap ? 2 * k->runs_cap : 8;
        krun *nr = (krun *)realloc(k->runs, ncap * sizeof(krun));
        if (!nr)
            return pf_fail(err, PF_ENOMEM, "out of memory for spill runs", 0);
        k->runs = nr;
        k->runs_cap = ncap;
    }
    uint64_t *tmp = (uint64_t *)malloc(k->n * sizeof(uint64_t));
    uint8_t *buf = (uint8_t *)malloc(KBUF);
    if (!tmp || !buf) {
        free(tmp);
        free(buf);
        return pf_fail(err, PF_ENOMEM, "out of memory to sort keys", 0);
    }
    ke_sort(k->mem, k->idx, tmp, k->n);
    free(tmp);
    const uint64_t start = b->scratch_end;
    uint64_t at = start;
    size_t fill = 0;
    for (size_t i = 0; i < k->n && rc == PF_OK; i++) {
        const uint8_t *e = k->mem + k->idx[i];
        const size_t sz = (size_t)ke_size(e);
        if (KBUF - fill < sz && fill) {
            rc = pf_file_pwrite(&b->scratch, buf, fill, at, err);
            at += fill;
            fill = 0;
        }
        if (rc != PF_OK)
            break;
        if (sz > KBUF) {
            rc = pf_file_pwrite(&b->scratch, e, sz, at, err);
            at += sz;
        } else {
            memcpy(buf + fill, e, sz);
            fill += sz;
        }
    }
    if (rc == PF_OK && fill) {
        rc = pf_file_pwrite(&b->scratch, buf, fill, at, err);
        at += fill;
    }
    free(buf);
    if (rc != PF_OK)
        return rc;
    k->runs[k->nruns].off = start;
    k->runs[k->nruns].bytes = at - start;
    k->nruns++;
    b->scratch_end = at;
    k->len = 0;
    k->n = 0;
    return PF_OK;
}

/* Appends entry e, spilling what is held when the spools would pass their
 * share of the budget (one entry always fits). */
static int kspool_push(pf_builder *b, kspool *k, const uint8_t *e,
                       pf_error *err)
{
    const uint64_t sz = ke_size(e);
    if (sz > SIZE_MAX / 4)
        return pf_fail(err, PF_ELIMIT, "key too large", 0);
    while (k->n == k->icap || k->cap - k->len < sz) {
        size_t ncap = k->cap, nicap = k->icap;
        while (ncap - k->len < sz)
            ncap = ncap ? 2 * ncap : 4096;
        if (k->n == nicap)
            nicap = nicap ? 2 * nicap : 256;
        const uint64_t more = (ncap - k->cap) + 8 * (uint64_t)(nicap - k->icap);
        if (k->n && b->spool_used + more > b->spool_limit) {
            int rc = kspool_spill(b, k, err);
            if (rc != PF_OK)
                return rc;
            continue; /* empty now: grow only if one entry does not fit */
        }
        if (ncap != k->cap) {
            uint8_t *nm = (uint8_t *)realloc(k->mem, ncap);
            if (!nm)
                return pf_fail(err, PF_ENOMEM, "out of memory for keys", 0);
            b->spool_used += ncap - k->cap;
            k->charged += ncap - k->cap;
            k->mem = nm;
            k->cap = ncap;
        }
        if (nicap != k->icap) {
            uint64_t *ni = (uint64_t *)realloc(k->idx, nicap * sizeof(uint64_t));
            if (!ni)
                return pf_fail(err, PF_ENOMEM, "out of memory for keys", 0);
            b->spool_used += 8 * (uint64_t)(nicap - k->icap);
            k->charged += 8 * (uint64_t)(nicap - k->icap);
            k->idx = ni;
            k->icap = nicap;
        }
    }
    memcpy(k->mem + k->len, e, (size_t)sz);
    k->idx[k->n++] = k->len;
    k->len += (size_t)sz;
    return PF_OK;
}

static void kspool_free(pf_builder *b, kspool *k)
{
    b->spool_used -= k->charged;
    free(k->mem);
    free(k->idx);
    free(k->runs);
    memset(k, 0, sizeof *k);
}

/* Reads one run's entries (from the scratch file), or the sorted entries
 * in memory (k not NULL). cur: the head entry, valid until the next read;
 * NULL at the end. */
typedef struct krdr {
    const uint8_t *cur;
    uint8_t *buf;
    size_t cap, len, pos;   /* buffered bytes [pos, len) */
    uint64_t off, left;     /* in the scratch file: next read, bytes left */
    const kspool *k;
    size_t i;
} krdr;

static int krdr_next(pf_builder *b, krdr *r, pf_error *err)
{
    if (r->k) {
        r->cur = r->i < r->k->n ? r->k->mem + r->k->idx[r->i++] : NULL;
        return PF_OK;
    }
    for (;;) {
        const size_t have = r->len - r->pos;
        uint64_t need = KE_HDR;
        if (have >= KE_HDR) {
            need = ke_size(r->buf + r->pos);
            if (have >= need) {
                r->cur = r->buf + r->pos;
                r->pos += (size_t)need;
                return PF_OK;
            }
        }
        if (r->left == 0) {
            r->cur = NULL;
            return have ? pf_fail(err, PF_EIO, "a sorted run of keys ends "
                                  "inside an entry", 0) : PF_OK;
        }
        memmove(r->buf, r->buf + r->pos, have);
        r->len = have;
        r->pos = 0;
        if (need > r->cap) {
            uint8_t *nb = (uint8_t *)realloc(r->buf, (size_t)need);
            if (!nb)
                return pf_fail(err, PF_ENOMEM, "out of memory to merge keys", 0);
            r->buf = nb;
            r->cap = (size_t)need;
        }
        size_t k = r->cap - r->len;
        if (k > r->left)
            k = (size_t)r->left;
        int rc = pf_file_pread(&b->scratch, r->buf + r->len, k, r->off, err);
        if (rc != PF_OK)
            return rc;
        r->off += k;
        r->left -= k;
        r->len += k;
    }
}

/* A level's key entries in key order (ties in insertion order): a heap
 * merge of its runs and its memory (sorted first). */
typedef struct kmerge {
    krdr *r;
    size_t nr;
    size_t *heap;           /* readers with a head, the least first */
    size_t nh;
} kmerge;

static int kmerge_less(const void *ctx, size_t a, size_t b)
{
    const kmerge *m = (const kmerge *)ctx;
    return ke_cmp(m->r[a].cur, m->r[b].cur) < 0;
}

static void kmerge_sift(kmerge *m, size_t i)
{
    heap_sift(m->heap, m->nh, i, kmerge_less, m);
}

static void kmerge_free(kmerge *m)
{
    if (m->r)
        for (size_t i = 0; i < m->nr; i++)
            free(m->r[i].buf);
    free(m->r);
    free(m->heap);
    memset(m, 0, sizeof *m);
}

static int kmerge_init(pf_builder *b, kmerge *m, kspool *k, pf_error *err)
{
    memset(m, 0, sizeof *m);
    uint64_t *tmp = (uint64_t *)malloc((k->n ? k->n : 1) * sizeof(uint64_t));
    if (!tmp)
        return pf_fail(err, PF_ENOMEM, "out of memory to sort keys", 0);
    ke_sort(k->mem, k->idx, tmp, k->n);
    free(tmp);
    m->nr = k->nruns + 1;
    m->r = (krdr *)calloc(m->nr, sizeof(krdr));
    m->heap = (size_t *)malloc(m->nr * sizeof(size_t));
    if (!m->r || !m->heap) {
        kmerge_free(m);
        return pf_fail(err, PF_ENOMEM, "out of memory to merge keys", 0);
    }
    for (size_t i = 0; i < m->nr; i++) {
        krdr *r = &m->r[i];
        if (i < k->nruns) {
            r->buf = (uint8_t *)malloc(KRDR_BUF);
            if (!r->buf) {
                kmerge_free(m);
                return pf_fail(err, PF_ENOMEM, "out of memory to merge keys", 0);
            }
            r->cap = KRDR_BUF;
            r->off = k->runs[i].off;
            r->left = k->runs[i].bytes;
        } else {
            r->k = k;
        }
        int rc = krdr_next(b, r, err);
        if (rc != PF_OK) {
            kmerge_free(m);
            return rc;
        }
        if (r->cur)
            m->heap[m->nh++] = i;
    }
    for (size_t i = m->nh / 2; i-- > 0;)
        kmerge_sift(m, i);
    return PF_OK;
}

/* The least entry left, or NULL. */
PF_INLINE const uint8_t *kmerge_top(const kmerge *m)
{
    return m->nh ? m->r[m->heap[0]].cur : NULL;
}

static int kmerge_pop(pf_builder *b, kmerge *m, pf_error *err)
{
    krdr *r = &m->r[m->heap[0]];
    int rc = krdr_next(b, r, err);
    if (rc != PF_OK)
        return rc;
    if (!r->cur)
        m->heap[0] = m->heap[--m->nh];
    kmerge_sift(m, 0);
    return PF_OK;
}

/* Reads a spool's items in order: the chunks one after another, then the
 * items in memory (unsorted order for a dict: used where order does not
 * matter). */
typedef struct rdr {
    uint64_t *buf;          /* RUN_BUF items, or the spool's memory */
    size_t n, i, wpi;
    uint64_t off, left;     /* in the scratch file: next read, items left */
    int own;
} rdr;

static int rdr_fill(pf_builder *b, rdr *r, pf_error *err)
{
    size_t k = r->left < RUN_BUF ? (size_t)r->left : RUN_BUF;
    int rc = pf_file_pread(&b->scratch, r->buf, k * r->wpi * 8, r->off, err);
    if (rc != PF_OK)
        return rc;
    r->off += k * r->wpi * 8;
    r->left -= k;
    r->n = k;
    r->i = 0;
    return PF_OK;
}

/* 1 with the next item, 0 at the end, or an error. */
PF_INLINE int rdr_next(pf_builder *b, rdr *r, uint64_t *x, uint64_t *y,
                       pf_error *err)
{
    if (r->i == r->n) {
        if (r->left == 0)
            return 0;
        int rc = rdr_fill(b, r, err);
        if (rc != PF_OK)
            return rc;
    }
    *x = r->buf[r->i * r->wpi];
    if (r->wpi == 2)
        *y = r->buf[r->i * 2 + 1];
    r->i++;
    return 1;
}

/* All items of a spool in order (chunks, then memory). */
typedef struct seq {
    spool *s;
    size_t c;               /* next chunk */
    rdr r;
    int in_mem;
} seq;

static int seq_init(seq *q, spool *s, pf_error *err)
{
    memset(q, 0, sizeof *q);
    q->s = s;
    q->r.wpi = s->wpi;
    q->r.buf = (uint64_t *)malloc(RUN_BUF * s->wpi * 8);
    if (!q->r.buf)
        return pf_fail(err, PF_ENOMEM, "out of memory for a run reader", 0);
    q->r.own = 1;
    return PF_OK;
}

static int seq_next(pf_builder *b, seq *q, uint64_t *x, uint64_t *y,
                    pf_error *err)
{
    for (;;) {
        if (q->in_mem) {
            if (q->r.i == q->s->n)
                return 0;
            *x = q->s->mem[q->r.i * q->s->wpi];
            if (q->s->wpi == 2)
                *y = q->s->mem[q->r.i * 2 + 1];
            q->r.i++;
            return 1;
        }
        int rc = rdr_next(b, &q->r, x, y, err);
        if (rc != 0)
            return rc;
        if (q->c < q->s->nchunks) {
            q->r.off = q->s->chunks[q->c].off;
            q->r.left = q->s->chunks[q->c].n;
            q->r.n = q->r.i = 0;
            q->c++;
        } else {
            q->in_mem = 1;
            q->r.i = 0;
        }
    }
}

static void seq_free(seq *q) { free(q->r.buf); }

/* A dict spool's (hash, off) pairs in hash order, ties in offset order:
 * a heap merge of its sorted chunks and its memory (sorted first). */
typedef struct merger {
    rdr *r;
    size_t nr;
    size_t *heap;           /* reader indexes; the head of each by (h, off) */
    uint64_t *hh, *ho;      /* each reader's head */
    size_t nh;
} merger;

static int head_less(const void *ctx, size_t a, size_t b)
{
    const merger *m = (const merger *)ctx;
    return m->hh[a] < m->hh[b] || (m->hh[a] == m->hh[b] && m->ho[a] < m->ho[b]);
}

static void sift_down(merger *m, size_t i)
{
    heap_sift(m->heap, m->nh, i, head_less, m);
}

static void merger_free(merger *m)
{
    if (m->r)
        for (size_t i = 0; i < m->nr; i++)
            if (m->r[i].own)
                free(m->r[i].buf);
    free(m->r);
    free(m->heap);
    free(m->hh);
    free(m->ho);
    memset(m, 0, sizeof *m);
}

static int merger_init(pf_builder *b, merger *m, spool *s, pf_error *err)
{
    memset(m, 0, sizeof *m);
    int rc = sort_pairs(s->mem, s->n, err);
    if (rc != PF_OK)
        return rc;
    size_t nr = s->nchunks + 1;
    m->r = (rdr *)calloc(nr, sizeof(rdr));
    m->heap = (size_t *)malloc(nr * sizeof(size_t));
    m->hh = (uint64_t *)malloc(nr * sizeof(uint64_t));
    m->ho = (uint64_t *)malloc(nr * sizeof(uint64_t));
    if (!m->r || !m->heap || !m->hh || !m->ho) {
        merger_free(m);
        return pf_fail(err, PF_ENOMEM, "out of memory to merge key hashes", 0);
    }
    m->nr = nr;
    for (size_t i = 0; i < nr; i++) {
        rdr *r = &m->r[i];
        r->wpi = 2;
        if (i < s->nchunks) {
            r->buf = (uint64_t *)malloc(RUN_BUF * 16);
            if (!r->buf) {
                merger_free(m);
                return pf_fail(err, PF_ENOMEM, "out of memory to merge key "
                               "hashes", 0);
            }
            r->own = 1;
            r->off = s->chunks[i].off;
            r->left = s->chunks[i].n;
        } else {
            r->buf = s->mem;
            r->n = s->n;
        }
        uint64_t h = 0, o = 0;
        rc = rdr_next(b, r, &h, &o, err);
        if (rc < 0) {
            merger_free(m);
            return rc;
        }
        if (rc == 1) {
            m->hh[i] = h;
            m->ho[i] = o;
            m->heap[m->nh++] = i;
        }
    }
    for (size_t i = m->nh / 2; i-- > 0;)
        sift_down(m, i);
    return PF_OK;
}

static int merger_next(pf_builder *b, merger *m, uint64_t *h, uint64_t *o,
                       pf_error *err)
{
    if (m->nh == 0)
        return 0;
    size_t top = m->heap[0];
    *h = m->hh[top];
    *o = m->ho[top];
    int rc = rdr_next(b, &m->r[top], &m->hh[top], &m->ho[top], err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        m->heap[0] = m->heap[--m->nh];
    sift_down(m, 0);
    return 1;
}

/* ------------------------------------------------------------------ output */

static int out_flush(pf_builder *b, pf_error *err)
{
    if (b->olen == 0)
        return PF_OK;
    int rc = pf_file_pwrite(&b->out, b->obuf, b->olen, b->obase, err);
    if (rc != PF_OK)
        return rc;
    b->obase += b->olen;
    b->olen = 0;
    return PF_OK;
}

PF_INLINE uint64_t out_pos(const pf_builder *b) { return b->obase + b->olen; }

static int out_write(pf_builder *b, const void *p, size_t n, pf_error *err)
{
    if (PF_LIKELY(OUT_CAP - b->olen >= n)) {
        memcpy(b->obuf + b->olen, p, n);
        b->olen += n;
        return PF_OK;
    }
    int rc = out_flush(b, err);
    if (rc != PF_OK)
        return rc;
    if (n >= OUT_CAP) {
        rc = pf_file_pwrite(&b->out, p, n, b->obase, err);
        if (rc == PF_OK)
            b->obase += n;
        return rc;
    }
    memcpy(b->obuf, p, n);
    b->olen = n;
    return PF_OK;
}

static int out_zeros(pf_builder *b, uint64_t n, pf_error *err)
{
    static const uint8_t zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = out_write(b, zeros, k, err);
        if (rc != PF_OK)
            return rc;
        n -= k;
    }
    return PF_OK;
}

/* Overwrites n bytes at file offset off (written before). */
static int out_patch(pf_builder *b, uint64_t off, const void *p, size_t n,
                     pf_error *err)
{
    if (off >= b->obase && off + n <= b->obase + b->olen) {
        memcpy(b->obuf + (off - b->obase), p, n);
        return PF_OK;
    }
    int rc = out_flush(b, err);
    return rc != PF_OK ? rc : pf_file_pwrite(&b->out, p, n, off, err);
}

/* Reads n bytes at file offset off (written before). */
static int out_read(pf_builder *b, uint64_t off, void *p, size_t n,
                    pf_error *err)
{
    int rc = out_flush(b, err);
    return rc != PF_OK ? rc : pf_file_pread(&b->out, p, n, off, err);
}

static int out_truncate(pf_builder *b, uint64_t len, pf_error *err)
{
    int rc = out_flush(b, err);
    if (rc == PF_OK)
        rc = pf_file_truncate(&b->out, len, err);
    if (rc == PF_OK)
        b->obase = len;
    return rc;
}

/* Copies n bytes from file f at off to the end of the output. */
static int copy_to_out(pf_builder *b, pf_file *f, uint64_t off, uint64_t n,
                       uint8_t *buf, size_t cap, pf_error *err)
{
    while (n > 0) {
        size_t k = n < cap ? (size_t)n : cap;
        int rc = pf_file_pread(f, buf, k, off, err);
        if (rc == PF_OK)
            rc = out_write(b, buf, k, err);
        if (rc != PF_OK)
            return rc;
        off += k;
        n -= k;
    }
    return PF_OK;
}

/* ------------------------------------------------------------------ pool */

static int pool_write(pf_builder *b, const void *p, size_t n, pf_error *err)
{
    if (POOL_CAP - b->plen < n) {
        int rc;
        if (!b->poolf.open &&
            (rc = pf_file_temp(b->path, 1, &b->poolf, NULL, err)) != PF_OK)
            return rc;
        if ((rc = pf_file_pwrite(&b->poolf, b->pbuf, b->plen, b->pbase,
                                 err)) != PF_OK)
            return rc;
        b->pbase += b->plen;
        b->plen = 0;
    }
    memcpy(b->pbuf + b->plen, p, n); /* n <= POOL_MAX_ENC < POOL_CAP */
    b->plen += n;
    return PF_OK;
}

static void cache_clear(pf_builder *b)
{
    memset(b->tab, 0, (b->tab_mask + 1) * sizeof *b->tab);
    b->nents = 0;
    b->alen = 0;
}

static int pool_fn(void *ctx, const uint8_t *hdr, unsigned hlen,
                   const void *data, size_t nbytes, uint64_t hash,
                   uint64_t *index, pf_error *err)
{
    pf_builder *b = (pf_builder *)ctx;
    const size_t enc = hlen + nbytes;
    if (enc > POOL_MAX_ENC || !b->tab)
        return 0;
    size_t j = (size_t)(hash >> (64 - b->tab_bits));
    uint32_t e;
    for (; (e = b->tab[j]) != 0; j = (j + 1) & b->tab_mask) {
        pent *p = &b->ents[e - 1];
        if (p->hash != hash || p->len != enc ||
            memcmp(b->arena + p->aoff, hdr, hlen) != 0 ||
            (nbytes && memcmp(b->arena + p->aoff + hlen, data, nbytes) != 0))
            continue;
        if (p->idx1) {
            *index = p->idx1 - 1;
            return 1;
        }
        if (++p->seen < 2)
            return 0;  /* met twice: stored again; a third time: pooled */
        const uint64_t idx = b->values.total;
        if (1 + pf_varint_len(idx) >= enc)
            return 0;
        int rc = spool_push(b, &b->values, b->pbase + b->plen, 0, err);
        if (rc == PF_OK)
            rc = pool_write(b, b->arena + p->aoff, enc, err);
        if (rc != PF_OK)
            return rc;
        p->idx1 = idx + 1;
        *index = idx;
        return 1;
    }
    if (b->nents == b->ents_cap || b->acap - b->alen < enc) {
        cache_clear(b);
        j = (size_t)(hash >> (64 - b->tab_bits));
    }
    pent *p = &b->ents[b->nents++];
    p->hash = hash;
    p->idx1 = 0;
    p->aoff = (uint32_t)b->alen;
    p->len = (uint32_t)enc;
    p->seen = 0;
    memcpy(b->arena + b->alen, hdr, hlen);
    if (nbytes)
        memcpy(b->arena + b->alen + hlen, data, nbytes);
    b->alen += enc;
    b->tab[j] = (uint32_t)b->nents;
    return 0;
}

/* ------------------------------------------------------------------ life */

void pf_builder_free(pf_builder *b)
{
    if (!b)
        return;
    pf_file_close(&b->out);
    pf_file_close(&b->scratch);
    pf_file_close(&b->poolf);
    if (b->tmp && !b->finished)
        (void)pf_os_remove(b->tmp);
    for (size_t i = 0; i < b->depth; i++) {
        spool_free(b, &b->levels[i].items);
        kspool_free(b, &b->levels[i].keys);
        free(b->levels[i].saved.p);
    }
    free(b->pk.p);
    spool_free(b, &b->values);
    free(b->levels);
    pf_writer_free(b->w);
    free(b->obuf);
    free(b->pbuf);
    free(b->ents);
    free(b->tab);
    free(b->arena);
    free(b->path);
    free(b->tmp);
    free(b);
}

static int push_level(pf_builder *b, int type, pf_error *err)
{
    if (b->depth == b->levels_cap) {
        size_t ncap = b->levels_cap ? 2 * b->levels_cap : 8;
        level *nl = (level *)realloc(b->levels, ncap * sizeof(level));
        if (!nl)
            return pf_fail(err, PF_ENOMEM, "out of memory for nesting", 0);
        b->levels = nl;
        b->levels_cap = ncap;
    }
    const unsigned hlen = type == PF_T_LIST ? PF_LIST_HDR_LEN : PF_MAP_HDR_LEN;
    uint8_t hdr[PF_MAP_HDR_LEN];
    memset(hdr, 0, sizeof hdr);
    hdr[0] = (uint8_t)type;
    level *l = &b->levels[b->depth];
    memset(l, 0, sizeof *l);
    l->type = type;
    l->hdr = out_pos(b);
    l->body = l->hdr + hlen;
    l->items.wpi = type == PF_T_LIST ? 1 : 2;
    int rc = out_write(b, hdr, hlen, err);
    if (rc != PF_OK)
        return rc;
    b->depth++;
    return PF_OK;
}

static int container_type(int type)
{
    switch (type) {
    case PF_DICT: case PF_T_DICT: return PF_T_DICT;
    case PF_LIST: case PF_T_LIST: return PF_T_LIST;
    default: return 0;
    }
}

int pf_builder_new(const char *path, int root_type, uint64_t memory,
                   pf_builder **out, pf_error *err)
{
    return pf_builder_new_ex(path, root_type, memory, 0, out, err);
}

int pf_builder_new_ex(const char *path, int root_type, uint64_t memory,
                      unsigned flags, pf_builder **out, pf_error *err)
{
    if (!out || !path)
        return pf_fail(err, PF_EINVAL, "no path or no output", 0);
    *out = NULL;
    const int type = container_type(root_type);
    if (!type)
        return pf_fail(err, PF_EINVAL, "a builder's root is a dict or a list",
                       0);
    if (memory < MIN_BUDGET)
        memory = MIN_BUDGET;
    pf_builder *b = (pf_builder *)calloc(1, sizeof *b);
    if (!b)
        return pf_fail(err, PF_ENOMEM, "out of memory for a builder", 0);
    size_t plen = strlen(path);
    b->path = (char *)malloc(plen + 1);
    b->obuf = (uint8_t *)malloc(OUT_CAP);
    b->pbuf = (uint8_t *)malloc(POOL_CAP);
    /* The budget: a quarter for the key-hash spools (a sort may take as
     * much again for a moment), an eighth for the pool cache's strings and
     * as much for its entries and table. */
    b->spool_limit = memory / 4;
    b->acap = (size_t)(memory / 8 > UINT32_MAX ? UINT32_MAX : memory / 8);
    b->ents_cap = (size_t)(memory / 8 / (sizeof(pent) + 8));
    b->tab_bits = 1;
    while (((size_t)1 << b->tab_bits) < 2 * b->ents_cap)
        b->tab_bits++;
    b->tab_mask = ((size_t)1 << b->tab_bits) - 1;
    b->ents = (pent *)malloc(b->ents_cap * sizeof(pent));
    b->tab = (uint32_t *)calloc(b->tab_mask + 1, sizeof(uint32_t));
    b->arena = (uint8_t *)malloc(b->acap);
    b->values.wpi = 1;
    int rc;
    if (!b->path || !b->obuf || !b->pbuf || !b->ents || !b->tab || !b->arena) {
        rc = pf_fail(err, PF_ENOMEM, "out of memory for a builder", 0);
        goto fail;
    }
    memcpy(b->path, path, plen + 1);
    if (flags & ~PF_BUILD_ORDERED) {
        rc = pf_fail(err, PF_EINVAL, "unknown builder flags", 0);
        goto fail;
    }
    b->ordered = (flags & PF_BUILD_ORDERED) != 0;
    uint8_t rnd[24];
    if ((rc = pf_os_random(rnd, sizeof rnd, err)) != PF_OK)
        goto fail;
    memcpy(b->id, rnd, 16);
    memcpy(&b->seed, rnd + 16, 8);
    if ((rc = pf_writer_new(&b->w, b->seed, err)) != PF_OK)
        goto fail;
    pf_writer_record_mode(b->w, pool_fn, b);
    if (b->ordered)
        pf_writer_pool_keys_off(b->w);
    if ((rc = pf_file_temp(path, 0, &b->out, &b->tmp, err)) != PF_OK)
        goto fail;
    memset(b->obuf, 0, PF_HEADER_LEN); /* the header, written at the end */
    b->olen = PF_HEADER_LEN;
    if ((rc = push_level(b, type, err)) != PF_OK)
        goto fail;
    *out = b;
    return PF_OK;
fail:
    pf_builder_free(b);
    return rc;
}

pf_writer *pf_builder_writer(pf_builder *b) { return b->w; }

int pf_builder_level_type(const pf_builder *b)
{
    if (!b->depth || b->finished)
        return 0;
    return b->levels[b->depth - 1].type == PF_T_DICT ? PF_DICT : PF_LIST;
}

unsigned pf_builder_depth(const pf_builder *b)
{
    return b->finished ? 0 : (unsigned)b->depth;
}

void pf_builder_stats(const pf_builder *b, uint64_t *entries, uint64_t *bytes)
{
    if (entries)
        *entries = b->entries;
    if (bytes)
        *bytes = b->finished ? b->image_size : out_pos(b) + b->pbase + b->plen;
}

static int usable(pf_builder *b, pf_error *err)
{
    if (b->finished)
        return pf_fail(err, PF_EINVAL, "the builder is finished", 0);
    if (b->failed)
        return pf_fail(err, PF_EINVAL, "the builder failed earlier: its image "
                       "cannot be completed", 0);
    return PF_OK;
}

/* An error that leaves the file inconsistent: nothing more can be done. */
static int broken(pf_builder *b, int rc)
{
    b->failed = 1;
    return rc;
}

int pf_builder_begin(pf_builder *b, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    pf_writer_reset(b->w);
    const int dict = b->levels[b->depth - 1].type == PF_T_DICT;
    pf_writer_pool_off(b->w, dict);
    b->state = ST_ITEM;
    b->key_len = 0;
    return PF_OK;
}

/* b->pk for the key just written, in range r (an ordered build): its
 * entry if it is a str or bytes, else kind 0. */
static int key_entry(pf_builder *b, const pf_range *r, uint64_t hash,
                     pf_error *err)
{
    pf_val kv;
    b->pk.kind = 0;
    int rc = pf_decode(r, PF_HEADER_LEN, &kv, 1, err);
    if (rc != PF_OK)
        return rc;
    if (kv.type != PF_STR && kv.type != PF_BYTES)
        return PF_OK;
    const int kind = kv.type == PF_STR ? PF_ORDER_STR : PF_ORDER_BYTES;
    const uint64_t nb = kv.u.s.len * (uint64_t)kv.u.s.width;
    const uint64_t sz = KE_HDR + ((nb + 7) & ~(uint64_t)7);
    if (sz > SIZE_MAX / 4)
        return pf_fail(err, PF_ELIMIT, "key too large", 0);
    if (sz > b->pk.cap) {
        uint8_t *np = (uint8_t *)realloc(b->pk.p, (size_t)sz);
        if (!np)
            return pf_fail(err, PF_ENOMEM, "out of memory for a key", 0);
        b->pk.p = np;
        b->pk.cap = (size_t)sz;
    }
    uint8_t *e = b->pk.p, pre[8];
    memset(e, 0, KE_HDR);
    pf_order_prefix(kv.u.s.data, (size_t)kv.u.s.len, kv.u.s.width, kind, pre);
    pf_st64(e + KE_PRE, ld64be(pre));
    pf_st64(e + KE_HASH, hash);
    pf_st64(e + KE_UNITS, kv.u.s.len << 3 | (uint64_t)kv.u.s.width);
    memcpy(e + KE_HDR, kv.u.s.data, (size_t)nb);
    memset(e + KE_HDR + nb, 0, (size_t)(sz - KE_HDR - nb));
    b->pk.kind = kind;
    return PF_OK;
}

int pf_builder_key_done(pf_builder *b, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    if (b->state != ST_ITEM || b->levels[b->depth - 1].type != PF_T_DICT)
        return pf_fail(err, PF_EINVAL, "no key was begun at a dict level", 0);
    size_t len;
    const uint8_t *data = pf_writer_data(b->w, &len);
    (void)data;
    if (len == 0 || pf_writer_open(b->w))
        return pf_fail(err, PF_EINVAL, "the key is not one complete ival", 0);
    uint64_t h, next;
    pf_range r;
    memset(&r, 0, sizeof r);
    r.base = data - PF_HEADER_LEN;
    r.start = PF_HEADER_LEN;
    r.end = PF_HEADER_LEN + len;
    r.seed = b->seed;
    r.ext = 1;
    r.ordered = 1;
    if ((rc = pf_key_extent(&r, PF_HEADER_LEN, &h, &next, err)) != PF_OK)
        return rc == PF_ECORRUPT ? pf_fail(err, PF_EINVAL, "the key is not "
                                           "one complete ival", 0) : rc;
    if (next != PF_HEADER_LEN + len)
        return pf_fail(err, PF_EINVAL, "the key is not one ival", 0);
    /* The value's REFs must not reach into the key: the key of an equal
     * later record may replace this one's (a different encoding of an
     * equal key, 1 and 1.0). */
    if (b->ordered && (rc = key_entry(b, &r, h, err)) != PF_OK)
        return rc;
    pf_writer_forget(b->w);
    pf_writer_pool_off(b->w, 0);
    b->pending_hash = h;
    b->key_len = len;
    b->state = ST_KEY;
    return PF_OK;
}

/* Level l's key entries, as the (hash, offset) pairs of its hash spool
 * (in key order: the spool sorts them by hash anyway). */
static int keys_to_items(pf_builder *b, level *l, pf_error *err)
{
    kmerge m;
    int rc = kmerge_init(b, &m, &l->keys, err);
    const uint8_t *e;
    while (rc == PF_OK && (e = kmerge_top(&m)) != NULL) {
        rc = spool_push(b, &l->items, pf_ld64(e + KE_HASH), pf_ld64(e + KE_OFF), err);
        if (rc == PF_OK)
            rc = kmerge_pop(b, &m, err);
    }
    kmerge_free(&m);
    return rc;
}

/* The record [rec_start, out_pos) of the top level is complete. */
static int record_done(pf_builder *b, uint64_t rec_start, uint64_t hash,
                       pf_error *err)
{
    level *l = &b->levels[b->depth - 1];
    int rc = PF_OK;
    if (b->ordered && l->type == PF_T_DICT && l->okind >= 0) {
        /* An ordered level keeps its records' key entries only (they hold
         * the hash and offset too); a key of another kind ends its order,
         * and the entries become the hash spool of an unordered level. */
        if (b->pk.kind && (!l->okind || b->pk.kind == l->okind)) {
            uint8_t *e = b->pk.p;
            l->okind = b->pk.kind;
            pf_st64(e + KE_INS, l->count);
            pf_st64(e + KE_OFF, rec_start - l->body);
            pf_st64(e + KE_LEN, out_pos(b) - rec_start);
            if ((rc = kspool_push(b, &l->keys, e, err)) != PF_OK)
                return broken(b, rc);
            goto counted;
        }
        l->okind = -1;
        rc = keys_to_items(b, l, err);
        kspool_free(b, &l->keys);
    }
    if (rc == PF_OK)
        rc = spool_push(b, &l->items, l->type == PF_T_DICT ? hash
                                                          : rec_start - l->body,
                        rec_start - l->body, err);
    if (rc != PF_OK)
        return broken(b, rc);
counted:
    l->count++;
    b->entries++;
    b->state = ST_IDLE;
    return PF_OK;
}

int pf_builder_end(pf_builder *b, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    const int dict = b->levels[b->depth - 1].type == PF_T_DICT;
    if (b->state != (dict ? ST_KEY : ST_ITEM))
        return pf_fail(err, PF_EINVAL, dict ? "no key was written" :
                       "no item was begun", 0);
    size_t len;
    const uint8_t *data = pf_writer_data(b->w, &len);
    if (len <= b->key_len || pf_writer_open(b->w))
        return pf_fail(err, PF_EINVAL, "the value is not one complete ival", 0);
    const uint64_t start = out_pos(b);
    if ((rc = out_write(b, data, len, err)) != PF_OK)
        return broken(b, rc);
    b->incompat |= pf_writer_incompat(b->w); /* an entry begun again does not count */
    return record_done(b, start, b->pending_hash, err);
}

int pf_builder_open(pf_builder *b, int type, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    const int t = container_type(type);
    if (!t)
        return pf_fail(err, PF_EINVAL, "a nested level is a dict or a list",
                       0);
    const int dict = b->levels[b->depth - 1].type == PF_T_DICT;
    size_t len;
    const uint8_t *data = pf_writer_data(b->w, &len);
    if (b->state != (dict ? ST_KEY : ST_ITEM) || len != b->key_len ||
        pf_writer_open(b->w))
        return pf_fail(err, PF_EINVAL, dict ? "a nested level needs its key "
                       "written and no value" : "a nested level needs an item "
                       "begun and nothing written", 0);
    const uint64_t start = out_pos(b);
    if ((rc = out_write(b, data, len, err)) != PF_OK ||
        (rc = push_level(b, t, err)) != PF_OK)
        return broken(b, rc);
    level *l = &b->levels[b->depth - 1];
    l->rec_start = start;
    l->key_hash = b->pending_hash;
    l->saved = b->pk; /* the parent's key entry waits for the record's end */
    memset(&b->pk, 0, sizeof b->pk);
    b->state = ST_IDLE;
    return PF_OK;
}

/* ------------------------------------------------------------------ tables */

/* A record whose key was replaced or which was dropped (equal keys). */
typedef struct fixup {
    uint64_t off, end;      /* the record, relative to the body */
    uint64_t klen;          /* its key's length */
    int dead;               /* dropped; else its value is replaced by: */
    uint64_t vstart, vend;  /* the last equal record's value */
} fixup;

typedef struct fixes {
    fixup *f;
    size_t n, cap;
    uint64_t *shift;        /* shift[i]: bytes removed before fixup i */
    uint64_t ndead;
} fixes;

static void fixes_free(fixes *x)
{
    free(x->f);
    free(x->shift);
    memset(x, 0, sizeof *x);
}

/* Index of the first fixup with off >= x. */
static size_t fix_lower(const fixes *x, uint64_t off)
{
    size_t lo = 0, hi = x->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->f[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

typedef struct cands {
    uint64_t *p;            /* (hash, off) pairs of equal hashes */
    size_t n, cap;
} cands;

static int cand_add(cands *c, uint64_t h, uint64_t o, pf_error *err)
{
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 16;
        uint64_t *np = (uint64_t *)realloc(c->p, ncap * 16);
        if (!np)
            return pf_fail(err, PF_ENOMEM, "out of memory for equal keys", 0);
        c->p = np;
        c->cap = ncap;
    }
    c->p[2 * c->n] = h;
    c->p[2 * c->n + 1] = o;
    c->n++;
    return PF_OK;
}

/* Writes the slot table of level l (nslots slots; none if 0) after its
 * body, from its pairs in hash order. fx (NULL: none): skip dropped
 * records, move offsets. cand (not NULL): collects the pairs whose hash
 * another pair has. */
static int fill_slots(pf_builder *b, level *l, uint64_t body_len,
                      uint64_t nslots, const fixes *fx, cands *cand,
                      pf_error *err)
{
    const int width = pf_slot_width(body_len);
    if (!width)
        return pf_fail(err, PF_ELIMIT, "container body too large", l->hdr);
    const pf_slot_packing pk = pf_slot_packing_of(body_len, width);
    const uint64_t table = out_pos(b);
    merger m;
    int rc = merger_init(b, &m, &l->items, err);
    if (rc != PF_OK)
        return rc;
    uint64_t next = 0, h, off, ph = 0, po = 0;
    uint64_t *wrap = NULL;
    size_t nwrap = 0, wrap_cap = 0;
    int have = 0;
    uint8_t e[8];
    while ((rc = merger_next(b, &m, &h, &off, err)) == 1) {
        if (cand) {
            if (have && h == ph) {
                if ((cand->n == 0 || cand->p[2 * (cand->n - 1)] != h ||
                     cand->p[2 * (cand->n - 1) + 1] != po) &&
                    (rc = cand_add(cand, ph, po, err)) != PF_OK)
                    break;
                if ((rc = cand_add(cand, h, off, err)) != PF_OK)
                    break;
            }
            ph = h;
            po = off;
            have = 1;
        }
        if (nslots == 0)
            continue;
        if (fx && fx->n) {
            size_t i = fix_lower(fx, off);
            if (i < fx->n && fx->f[i].off == off && fx->f[i].dead)
                continue;
            off -= fx->shift[i];
        }
        const uint64_t slot = pf_slot_pack(pk, h, off);
        uint64_t home = pf_mulhi(h, nslots);
        uint64_t pos = home > next ? home : next;
        if (pos >= nslots) {
            if (nwrap == wrap_cap) {
                size_t ncap = wrap_cap ? 2 * wrap_cap : 16;
                uint64_t *nw = (uint64_t *)realloc(wrap, ncap * 8);
                if (!nw) {
                    rc = pf_fail(err, PF_ENOMEM, "out of memory for slots", 0);
                    break;
                }
                wrap = nw;
                wrap_cap = ncap;
            }
            wrap[nwrap++] = slot;
            continue;
        }
        if ((rc = out_zeros(b, (pos - next) * (uint64_t)width, err)) != PF_OK)
            break;
        pf_stw(e, width, slot);
        if ((rc = out_write(b, e, (size_t)width, err)) != PF_OK)
            break;
        next = pos + 1;
    }
    merger_free(&m);
    if (rc == PF_OK && nslots)
        rc = out_zeros(b, (nslots - next) * (uint64_t)width, err);
    /* Records pushed past the last slot wrap around (R22): each to the
     * first empty slot from slot 0. */
    uint64_t j = 0;
    uint8_t buf[4096];
    size_t inbuf = 0; /* slots in buf, from slot base */
    uint64_t base = 0;
    for (size_t k = 0; rc == PF_OK && k < nwrap; k++) {
        for (;;) {
            if (j >= nslots) {
                rc = pf_fail(err, PF_EINVAL, "slot table full", l->hdr);
                break;
            }
            if (j >= base + inbuf) {
                base = j;
                inbuf = sizeof buf / (size_t)width;
                if (inbuf > nslots - j)
                    inbuf = (size_t)(nslots - j);
                rc = out_read(b, table + j * (uint64_t)width, buf,
                              inbuf * (size_t)width, err);
                if (rc != PF_OK)
                    break;
            }
            if (pf_ldw(buf + (j - base) * (uint64_t)width, width) == 0)
                break;
            j++;
        }
        if (rc != PF_OK)
            break;
        pf_stw(e, width, wrap[k]);
        memcpy(buf + (j - base) * (uint64_t)width, e, (size_t)width);
        rc = out_patch(b, table + j * (uint64_t)width, e, (size_t)width, err);
    }
    free(wrap);
    return rc;
}

/* Reads the key of the record at body offset off (ending by `end`) into a
 * buffer laid out as a range: 128 bytes, then the key. */
static int read_key(pf_builder *b, const level *l, uint64_t off, uint64_t end,
                    uint8_t **kb, uint64_t *klen, uint64_t *hash, pf_error *err)
{
    uint64_t want = 256;
    for (;;) {
        if (want > end - off)
            want = end - off;
        if (want > SIZE_MAX - PF_HEADER_LEN)
            return pf_fail(err, PF_ELIMIT, "key too large", off);
        uint8_t *buf = (uint8_t *)malloc(PF_HEADER_LEN + (size_t)want);
        if (!buf)
            return pf_fail(err, PF_ENOMEM, "out of memory to compare keys", 0);
        int rc = out_read(b, l->body + off, buf + PF_HEADER_LEN, (size_t)want,
                          err);
        if (rc != PF_OK) {
            free(buf);
            return rc;
        }
        pf_range r;
        memset(&r, 0, sizeof r);
        r.base = buf;
        r.start = PF_HEADER_LEN;
        r.end = PF_HEADER_LEN + want;
        r.seed = b->seed;
        r.ext = 1;
        r.ordered = 1;
        uint64_t next;
        pf_error e2;
        rc = pf_key_extent(&r, PF_HEADER_LEN, hash, &next, &e2);
        if (rc == PF_OK) {
            *kb = buf;
            *klen = next - PF_HEADER_LEN;
            return PF_OK;
        }
        free(buf);
        if (rc != PF_ECORRUPT || want == end - off)
            return pf_fail(err, PF_EINVAL, "a stored key cannot be read back",
                           off);
        want *= 4;
    }
}

static int keys_same(pf_builder *b, const uint8_t *ka, uint64_t la,
                     const uint8_t *kb, uint64_t lb, int *eq, pf_error *err)
{
    uint8_t *buf = (uint8_t *)malloc(PF_HEADER_LEN + la + lb);
    if (!buf)
        return pf_fail(err, PF_ENOMEM, "out of memory to compare keys", 0);
    memcpy(buf + PF_HEADER_LEN, ka + PF_HEADER_LEN, la);
    memcpy(buf + PF_HEADER_LEN + la, kb + PF_HEADER_LEN, lb);
    pf_range r;
    memset(&r, 0, sizeof r);
    r.base = buf;
    r.start = PF_HEADER_LEN;
    r.end = PF_HEADER_LEN + la + lb;
    r.seed = b->seed;
    r.ext = 1;
    r.ordered = 1;
    int rc = pf_keys_equal(&r, PF_HEADER_LEN, PF_HEADER_LEN + la, eq, err);
    free(buf);
    return rc;
}

static int fix_add(fixes *x, uint64_t off, int dead, pf_error *err)
{
    if (x->n == x->cap) {
        size_t ncap = x->cap ? 2 * x->cap : 16;
        fixup *nf = (fixup *)realloc(x->f, ncap * sizeof(fixup));
        if (!nf)
            return pf_fail(err, PF_ENOMEM, "out of memory for equal keys", 0);
        x->f = nf;
        x->cap = ncap;
    }
    fixup *f = &x->f[x->n++];
    memset(f, 0, sizeof *f);
    f->off = off;
    f->dead = dead;
    return PF_OK;
}

static int cmp_fixup(const void *a, const void *b)
{
    const fixup *x = (const fixup *)a, *y = (const fixup *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The candidates (pairs of equal hash, in (hash, off) order) -> fixups
 * in offset order: among records with equal keys the first stays, with
 * the last one's value; the others are dropped. */
static int resolve_equal(pf_builder *b, level *l, const uint64_t *cand,
                         size_t ncand, uint64_t body_len, fixes *x,
                         pf_error *err)
{
    int rc = PF_OK;
    uint64_t *offs = (uint64_t *)malloc(ncand * sizeof(uint64_t));
    uint64_t *ends = (uint64_t *)malloc(ncand * sizeof(uint64_t));
    uint8_t **keys = (uint8_t **)calloc(ncand, sizeof(uint8_t *));
    uint64_t *klens = (uint64_t *)malloc(ncand * sizeof(uint64_t));
    size_t *rep = (size_t *)malloc(ncand * sizeof(size_t));
    fixes sorted = {0};
    if (!offs || !ends || !keys || !klens || !rep) {
        rc = pf_fail(err, PF_ENOMEM, "out of memory for equal keys", 0);
        goto done;
    }
    /* A record ends where the next one starts (or at the body's end): one
     * pass over every record's offset finds the next one of each
     * candidate (fixup.end 0: none found yet). */
    for (size_t i = 0; i < ncand && rc == PF_OK; i++) {
        offs[i] = cand[2 * i + 1];
        rc = fix_add(&sorted, offs[i], 0, err);
    }
    if (rc != PF_OK)
        goto done;
    qsort(sorted.f, sorted.n, sizeof(fixup), cmp_fixup);
    {
        seq q;
        if ((rc = seq_init(&q, &l->items, err)) != PF_OK)
            goto done;
        uint64_t h, o;
        while ((rc = seq_next(b, &q, &h, &o, err)) == 1) {
            size_t i = fix_lower(&sorted, o);
            if (i > 0 && (sorted.f[i - 1].end == 0 || o < sorted.f[i - 1].end))
                sorted.f[i - 1].end = o;
        }
        seq_free(&q);
        if (rc < 0)
            goto done;
        rc = PF_OK;
    }
    for (size_t i = 0; i < ncand && rc == PF_OK; i++) {
        const fixup *f = &sorted.f[fix_lower(&sorted, offs[i])];
        ends[i] = f->end ? f->end : body_len;
        uint64_t h;
        rc = read_key(b, l, offs[i], ends[i], &keys[i], &klens[i], &h, err);
    }
    /* Groups of one hash; within one, records in offset order. */
    for (size_t g = 0; rc == PF_OK && g < ncand;) {
        size_t e = g + 1;
        while (e < ncand && cand[2 * e] == cand[2 * g])
            e++;
        for (size_t i = g; i < e && rc == PF_OK; i++) {
            rep[i] = i;
            for (size_t k = g; k < i && rc == PF_OK; k++) {
                if (rep[k] != k)
                    continue;
                int eq = 0;
                rc = keys_same(b, keys[k], klens[k], keys[i], klens[i], &eq,
                               err);
                if (eq) {
                    rep[i] = k;
                    break;
                }
            }
        }
        for (size_t k = g; k < e && rc == PF_OK; k++) {
            if (rep[k] != k)
                continue;
            size_t last = k;
            for (size_t i = k + 1; i < e; i++)
                if (rep[i] == k)
                    last = i;
            if (last == k)
                continue;
            if ((rc = fix_add(x, offs[k], 0, err)) != PF_OK)
                break;
            fixup *f = &x->f[x->n - 1];
            f->end = ends[k];
            f->klen = klens[k];
            f->vstart = offs[last] + klens[last];
            f->vend = ends[last];
            for (size_t i = k + 1; i < e && rc == PF_OK; i++) {
                if (rep[i] != k)
                    continue;
                if ((rc = fix_add(x, offs[i], 1, err)) != PF_OK)
                    break;
                x->f[x->n - 1].end = ends[i];
                x->ndead++;
            }
        }
        g = e;
    }
    if (rc != PF_OK || x->n == 0)
        goto done;
    qsort(x->f, x->n, sizeof(fixup), cmp_fixup);
    /* shift[i]: bytes removed before record i's fixup (mod 2^64: a longer
     * replacement value removes a negative count). */
    x->shift = (uint64_t *)malloc((x->n + 1) * sizeof(uint64_t));
    if (!x->shift) {
        rc = pf_fail(err, PF_ENOMEM, "out of memory for equal keys", 0);
        goto done;
    }
    x->shift[0] = 0;
    for (size_t i = 0; i < x->n; i++) {
        const fixup *f = &x->f[i];
        uint64_t kept = f->dead ? 0 : f->klen + (f->vend - f->vstart);
        x->shift[i + 1] = x->shift[i] + (f->end - f->off) - kept;
    }
done:
    if (keys)
        for (size_t i = 0; i < ncand; i++)
            free(keys[i]);
    free(keys);
    free(offs);
    free(ends);
    free(klens);
    free(rep);
    free(sorted.f);
    return rc;
}

/* Rewrites the body of level l without the dropped records and with the
 * replaced values (through the scratch file); returns the new body
 * length. */
static int compact(pf_builder *b, level *l, uint64_t body_len, const fixes *x,
                   uint64_t *new_len, pf_error *err)
{
    int rc = scratch_open(b, err);
    if (rc != PF_OK)
        return rc;
    const size_t cap = 1u << 20;
    uint8_t *buf = (uint8_t *)malloc(cap);
    if (!buf)
        return pf_fail(err, PF_ENOMEM, "out of memory to rewrite a body", 0);
    if ((rc = out_flush(b, err)) != PF_OK) {
        free(buf);
        return rc;
    }
    const uint64_t first = x->f[0].off, base = b->scratch_end;
    uint64_t w = base, cur = first;
#define COPY_OUT(from, n)                                                     \
    do {                                                                      \
        uint64_t o_ = (from), n_ = (n);                                       \
        while (rc == PF_OK && n_ > 0) {                                       \
            size_t k_ = n_ < cap ? (size_t)n_ : cap;                          \
            rc = pf_file_pread(&b->out, buf, k_, l->body + o_, err);          \
            if (rc == PF_OK)                                                  \
                rc = pf_file_pwrite(&b->scratch, buf, k_, w, err);            \
            o_ += k_;                                                         \
            n_ -= k_;                                                         \
            w += k_;                                                          \
        }                                                                     \
    } while (0)
    for (size_t i = 0; i < x->n && rc == PF_OK; i++) {
        const fixup *f = &x->f[i];
        COPY_OUT(cur, f->off - cur);
        if (!f->dead) {
            COPY_OUT(f->off, f->klen);
            COPY_OUT(f->vstart, f->vend - f->vstart);
        }
        cur = f->end;
    }
    COPY_OUT(cur, body_len - cur);
#undef COPY_OUT
    if (rc == PF_OK)
        rc = out_truncate(b, l->body + first, err);
    if (rc == PF_OK)
        rc = copy_to_out(b, &b->scratch, base, w - base, buf, cap, err);
    free(buf);
    if (rc == PF_OK)
        *new_len = first + (w - base);
    return rc;
}

/* ------------------------------------------------------------------ ordered */

/* Where finish_ordered reads the old body's records: all of it in memory,
 * or through a window that grows while reads follow each other. The new
 * body goes to the output (all in memory: the old one is truncated
 * first) or to the scratch file at `at`, through obuf. */
typedef struct mover {
    const level *l;
    uint8_t *all;
    uint8_t *win;
    uint64_t woff;
    size_t wlen, last;
    uint8_t *obuf;
    size_t olen;
    uint64_t at;
} mover;

#define MOVE_BUF (1u << 20)

static int mover_flush(pf_builder *b, mover *m, pf_error *err)
{
    int rc = pf_file_pwrite(&b->scratch, m->obuf, m->olen, m->at, err);
    m->at += m->olen;
    m->olen = 0;
    return rc;
}

/* Appends the old body's bytes [off, off + len) to the new body. */
static int mover_copy(pf_builder *b, mover *m, uint64_t off, uint64_t len,
                      pf_error *err)
{
    if (m->all)
        return out_write(b, m->all + off, (size_t)len, err);
    const uint64_t body_len = out_pos(b) - m->l->body;
    while (len > 0) {
        if (off < m->woff || off >= m->woff + m->wlen) {
            /* small reads for records that come apart, doubling while
             * each starts where the last read ended */
            size_t want = off == m->woff + m->wlen && m->last ? 2 * m->last : 512;
            if (want > MOVE_BUF)
                want = MOVE_BUF;
            if (want < len)
                want = len < MOVE_BUF ? (size_t)len : MOVE_BUF;
            if (want > body_len - off)
                want = (size_t)(body_len - off);
            int rc = pf_file_pread(&b->out, m->win, want, m->l->body + off, err);
            if (rc != PF_OK)
                return rc;
            m->woff = off;
            m->wlen = m->last = want;
        }
        size_t k = (size_t)(m->woff + m->wlen - off);
        if (k > len)
            k = (size_t)len;
        if (MOVE_BUF - m->olen < k) {
            int rc = mover_flush(b, m, err);
            if (rc != PF_OK)
                return rc;
        }
        memcpy(m->obuf + m->olen, m->win + (off - m->woff), k);
        m->olen += k;
        off += k;
        len -= k;
    }
    return PF_OK;
}

/* Ends an ordered dict level l (R36): its records rewritten in key order
 * (equal keys: the first one's place in the insertion order, the last
 * one's record), then the slot table, the order block and its header. */
static int finish_ordered(pf_builder *b, level *l, pf_error *err)
{
    const uint64_t old_len = out_pos(b) - l->body, mark = b->scratch_end;
    mover mv;
    memset(&mv, 0, sizeof mv);
    mv.l = l;
    kmerge km;
    memset(&km, 0, sizeof km);
    spool slots = {0}, perm = {0}, samp = {0};
    slots.wpi = perm.wpi = samp.wpi = 2;
    uint8_t *gkey = NULL;
    size_t gcap = 0;
    int rc = out_flush(b, err);
    if (rc != PF_OK)
        goto done;
    if (old_len <= b->spool_limit && old_len <= SIZE_MAX) {
        mv.all = (uint8_t *)malloc(old_len ? (size_t)old_len : 1);
        if (!mv.all) {
            rc = pf_fail(err, PF_ENOMEM, "out of memory to sort a body", 0);
            goto done;
        }
        if ((rc = pf_file_pread(&b->out, mv.all, (size_t)old_len, l->body,
                                err)) != PF_OK ||
            (rc = out_truncate(b, l->body, err)) != PF_OK)
            goto done;
    } else {
        mv.win = (uint8_t *)malloc(MOVE_BUF);
        mv.obuf = (uint8_t *)malloc(MOVE_BUF);
        if (!mv.win || !mv.obuf) {
            rc = pf_fail(err, PF_ENOMEM, "out of memory to sort a body", 0);
            goto done;
        }
        if ((rc = scratch_open(b, err)) != PF_OK)
            goto done;
        mv.at = b->scratch_end;
        b->scratch_end += old_len; /* the new body's room: spills go after */
    }
    if ((rc = kmerge_init(b, &km, &l->keys, err)) != PF_OK)
        goto done;
    /* Groups of equal keys, each ending as one record of rank `rank`. */
    uint64_t rank = 0, new_len = 0, first_ins = 0, prev_ins = 0;
    uint64_t g_hash = 0, g_off = 0, g_len = 0, g_pre = 0;
    int have = 0, identity = 1;
    for (;;) {
        const uint8_t *e = kmerge_top(&km);
        size_t common;
        if (have && e &&
            pf_units_cmp(gkey + KE_HDR, (size_t)ke_units(gkey), ke_width(gkey),
                         e + KE_HDR, (size_t)ke_units(e), ke_width(e),
                         &common) == 0) {
            g_off = pf_ld64(e + KE_OFF); /* a later value replaces it */
            g_len = pf_ld64(e + KE_LEN);
            g_hash = pf_ld64(e + KE_HASH);
            if ((rc = kmerge_pop(b, &km, err)) != PF_OK)
                goto done;
            continue;
        }
        if (have) {
            if ((rc = mover_copy(b, &mv, g_off, g_len, err)) != PF_OK ||
                (rc = spool_push(b, &slots, g_hash, new_len, err)) != PF_OK ||
                (rc = spool_push(b, &perm, first_ins, rank, err)) != PF_OK ||
                (rank % (UINT64_C(1) << PF_ORDER_SSHIFT) == 0 &&
                 (rc = spool_push(b, &samp, new_len, g_pre, err)) != PF_OK))
                goto done;
            if (rank && first_ins < prev_ins)
                identity = 0;
            prev_ins = first_ins;
            new_len += g_len;
            rank++;
        }
        if (!e)
            break;
        const uint64_t sz = ke_size(e);
        if (sz > gcap) {
            uint8_t *ng = (uint8_t *)realloc(gkey, (size_t)sz);
            if (!ng) {
                rc = pf_fail(err, PF_ENOMEM, "out of memory to sort keys", 0);
                goto done;
            }
            gkey = ng;
            gcap = (size_t)sz;
        }
        memcpy(gkey, e, (size_t)sz);
        first_ins = pf_ld64(e + KE_INS);
        g_off = pf_ld64(e + KE_OFF);
        g_len = pf_ld64(e + KE_LEN);
        g_hash = pf_ld64(e + KE_HASH);
        g_pre = pf_ld64(e + KE_PRE);
        have = 1;
        if ((rc = kmerge_pop(b, &km, err)) != PF_OK)
            goto done;
    }
    kmerge_free(&km);
    kspool_free(b, &l->keys);
    if (!mv.all) {
        if ((rc = mover_flush(b, &mv, err)) != PF_OK ||
            (rc = out_truncate(b, l->body, err)) != PF_OK ||
            (rc = copy_to_out(b, &b->scratch, mark, new_len, mv.win,
                              MOVE_BUF, err)) != PF_OK)
            goto done;
    }
    /* The slot table from the new offsets. */
    spool_free(b, &l->items);
    l->items = slots;
    memset(&slots, 0, sizeof slots);
    const uint64_t count = rank, nslots = pf_slot_count(count);
    if ((rc = fill_slots(b, l, new_len, nslots, NULL, NULL, err)) != PF_OK)
        goto done;
    const int width = pf_slot_width(new_len);
    /* The order block: perm in insertion order, then the samples. */
    const unsigned pbits = identity ? 0 : pf_bitlen64(count - 1);
    uint8_t ob[16];
    memset(ob, 0, 8);
    ob[0] = (uint8_t)l->okind;
    ob[1] = (uint8_t)pbits;
    ob[2] = PF_ORDER_SSHIFT;
    if ((rc = out_write(b, ob, 8, err)) != PF_OK)
        goto done;
    merger m;
    uint64_t x, y;
    if (pbits) {
        if ((rc = merger_init(b, &m, &perm, err)) != PF_OK)
            goto done;
        unsigned acc = 0, nacc = 0;
        while ((rc = merger_next(b, &m, &x, &y, err)) == 1) {
            for (unsigned left = pbits; left > 0;) {
                unsigned take = 8 - nacc < left ? 8 - nacc : left;
                acc |= (unsigned)(y & ((1u << take) - 1)) << nacc;
                y >>= take;
                nacc += take;
                left -= take;
                if (nacc == 8) {
                    ob[0] = (uint8_t)acc;
                    if ((rc = out_write(b, ob, 1, err)) != PF_OK)
                        break;
                    acc = nacc = 0;
                }
            }
            if (rc < 0)
                break;
        }
        merger_free(&m);
        if (rc < 0)
            goto done;
        ob[0] = (uint8_t)acc;
        if (nacc && (rc = out_write(b, ob, 1, err)) != PF_OK)
            goto done;
    }
    if ((rc = merger_init(b, &m, &samp, err)) != PF_OK)
        goto done;
    while ((rc = merger_next(b, &m, &x, &y, err)) == 1) {
        st64be(ob, y);
        pf_stw(ob + 8, width, x);
        if ((rc = out_write(b, ob, 8 + (size_t)width, err)) != PF_OK)
            break;
    }
    merger_free(&m);
    if (rc < 0)
        goto done;
    uint8_t hdr[PF_MAP_HDR_LEN];
    memset(hdr, 0, sizeof hdr);
    hdr[0] = (uint8_t)l->type;
    hdr[1] = (uint8_t)(width | 0x80);
    pf_st64(hdr + 2, count);
    pf_st64(hdr + 10, new_len);
    pf_st64(hdr + 18, nslots);
    rc = out_patch(b, l->hdr, hdr, PF_MAP_HDR_LEN, err);
    b->incompat |= PF_INCOMPAT_ORDERED;
done:
    kmerge_free(&km);
    spool_free(b, &slots);
    spool_free(b, &perm);
    spool_free(b, &samp);
    free(gkey);
    free(mv.all);
    free(mv.win);
    free(mv.obuf);
    if (rc == PF_OK)
        b->scratch_end = mark; /* what this wrote there is read */
    return rc;
}

/* Ends level l: its table after its body, then its header. */
static int finish_level(pf_builder *b, level *l, pf_error *err)
{
    if (l->type == PF_T_DICT && l->okind > 0)
        return finish_ordered(b, l, err);
    uint64_t body_len = out_pos(b) - l->body, count = l->count, nslots = 0;
    int width, rc = PF_OK;
    uint8_t hdr[PF_MAP_HDR_LEN];
    if (l->type == PF_T_LIST) {                                   /* R19 */
        width = pf_list_width(body_len);
        if (!width)
            return pf_fail(err, PF_ELIMIT, "list body too large", l->hdr);
        seq q;
        if ((rc = seq_init(&q, &l->items, err)) != PF_OK)
            return rc;
        uint64_t o, unused = 0;
        uint8_t e[8];
        while ((rc = seq_next(b, &q, &o, &unused, err)) == 1) {
            pf_stw(e, width, o);
            if ((rc = out_write(b, e, (size_t)width, err)) != PF_OK)
                break;
        }
        seq_free(&q);
        if (rc < 0)
            return rc;
    } else {                                                      /* R22 */
        /* One merge fills the table and finds equal hashes; equal keys
         * (rare) need the body rewritten and a second fill. */
        const uint64_t table = out_pos(b);
        cands c = {0};
        fixes x = {0};
        nslots = pf_slot_count(count);
        rc = fill_slots(b, l, body_len, nslots, NULL, &c, err);
        if (rc == PF_OK && c.n)
            rc = resolve_equal(b, l, c.p, c.n, body_len, &x, err);
        free(c.p);
        if (rc == PF_OK && x.n) {
            rc = out_truncate(b, table, err);
            if (rc == PF_OK)
                rc = compact(b, l, body_len, &x, &body_len, err);
            count -= x.ndead;
            nslots = pf_slot_count(count);
            if (rc == PF_OK && nslots)
                rc = fill_slots(b, l, body_len, nslots, &x, NULL, err);
        }
        fixes_free(&x);
        if (rc < 0)
            return rc;
        width = pf_slot_width(body_len);
        if (!width)
            return pf_fail(err, PF_ELIMIT, "dict body too large", l->hdr);
    }
    memset(hdr, 0, sizeof hdr);
    hdr[0] = (uint8_t)l->type;
    hdr[1] = (uint8_t)width;
    pf_st64(hdr + 2, count);
    pf_st64(hdr + 10, body_len);
    if (l->type != PF_T_LIST)
        pf_st64(hdr + 18, nslots);
    return out_patch(b, l->hdr, hdr, l->type == PF_T_LIST ? PF_LIST_HDR_LEN
                                                         : PF_MAP_HDR_LEN, err);
}

int pf_builder_close(pf_builder *b, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    if (b->depth < 2)
        return pf_fail(err, PF_EINVAL, "no nested level is open", 0);
    level *l = &b->levels[b->depth - 1];
    if ((rc = finish_level(b, l, err)) != PF_OK)
        return broken(b, rc);
    const uint64_t start = l->rec_start, hash = l->key_hash;
    spool_free(b, &l->items);
    kspool_free(b, &l->keys);
    free(b->pk.p);
    b->pk = l->saved;
    memset(&l->saved, 0, sizeof l->saved);
    b->depth--;
    return record_done(b, start, hash, err);
}

/* ------------------------------------------------------------------ finish */

static int finish(pf_builder *b, int mode, pf_error *err)
{
    int rc;
    while (b->depth > 1)
        if ((rc = pf_builder_close(b, err)) != PF_OK)
            return rc;
    level *root = &b->levels[0];
    if ((rc = finish_level(b, root, err)) != PF_OK)
        return rc;
    /* The pool after the root, then the VALUES table (R28). */
    const uint64_t pool_start = out_pos(b);
    uint8_t *buf = (uint8_t *)malloc(1u << 20);
    if (!buf)
        return pf_fail(err, PF_ENOMEM, "out of memory to finish the image", 0);
    if (b->pbase)
        rc = copy_to_out(b, &b->poolf, 0, b->pbase, buf, 1u << 20, err);
    if (rc == PF_OK)
        rc = out_write(b, b->pbuf, b->plen, err);
    const uint64_t data_end = out_pos(b);
    const uint64_t nvalues = b->values.total;
    uint64_t vcheck = 0;
    pf_checksum_state vs;
    pf_checksum_begin(&vs, nvalues * 8);
    if (rc == PF_OK && nvalues) {
        /* in pieces of 4096 entries (a multiple of 32 bytes) */
        seq q;
        if ((rc = seq_init(&q, &b->values, err)) == PF_OK) {
            uint64_t rel, unused = 0;
            size_t k = 0;
            uint8_t *piece = buf;
            while ((rc = seq_next(b, &q, &rel, &unused, err)) == 1) {
                pf_st64(piece + 8 * k++, pool_start + rel);
                if (k == 4096) {
                    pf_checksum_blocks(&vs, piece, 8 * k);
                    if ((rc = out_write(b, piece, 8 * k, err)) != PF_OK)
                        break;
                    k = 0;
                }
            }
            seq_free(&q);
            if (rc == 0) {
                rc = out_write(b, piece, 8 * k, err);
                vcheck = pf_checksum_end(&vs, piece, 8 * k);
            }
        }
    }
    /* The section table. */
    const uint64_t stab = out_pos(b);
    const uint32_t nsec = nvalues ? 2 : 1;
    uint8_t sec[2 * PF_SECTION_ENTRY_LEN];
    if (rc == PF_OK) {
        pf_checksum_state ds;
        pf_checksum_begin(&ds, data_end - PF_HEADER_LEN);
        rc = out_flush(b, err);
        uint64_t at = PF_HEADER_LEN, dcheck = 0;
        while (rc == PF_OK) {
            uint64_t left = data_end - at;
            size_t k = left < (1u << 20) ? (size_t)left : (1u << 20);
            if ((rc = pf_file_pread(&b->out, buf, k, at, err)) != PF_OK)
                break;
            at += k;
            if (at == data_end) {
                dcheck = pf_checksum_end(&ds, buf, k);
                break;
            }
            pf_checksum_blocks(&ds, buf, k);
        }
        pf_put_section(sec, PF_SECTION_DATA, PF_HEADER_LEN,
                       data_end - PF_HEADER_LEN, dcheck);
        if (nvalues)
            pf_put_section(sec + PF_SECTION_ENTRY_LEN, PF_SECTION_VALUES,
                           data_end, nvalues * 8, vcheck);
        if (rc == PF_OK)
            rc = out_write(b, sec, nsec * PF_SECTION_ENTRY_LEN, err);
    }
    free(buf);
    if (rc != PF_OK)
        return rc;
    const uint64_t size = out_pos(b);
    uint8_t h[PF_HEADER_LEN];
    pf_put_header(h, b->id, size, root->hdr, stab, nsec, b->seed,
                  b->incompat);
    if ((rc = out_patch(b, 0, h, sizeof h, err)) != PF_OK ||
        (rc = out_flush(b, err)) != PF_OK ||
        (rc = pf_file_sync(&b->out, err)) != PF_OK)
        return rc;
    pf_file_close(&b->out);
    b->image_size = size;
    return pf_publish_file(b->tmp, b->path, b->id, mode, err);
}

int pf_builder_finish(pf_builder *b, int mode, pf_error *err)
{
    int rc = usable(b, err);
    if (rc != PF_OK)
        return rc;
    rc = finish(b, mode, err);
    if (rc != PF_OK)
        return broken(b, rc);
    b->finished = 1;
    return PF_OK;
}
