/*
 * test_ordered.c -- ordered containers (FORMAT section 4.4, R36), written
 * with pf_write_end_ordered and read back. Random sets of str keys (code
 * units of 1, 2 and 4 bytes mixed in one container: ASCII, Latin-1, the
 * BMP with lone surrogates, astral code points; the empty key, keys that
 * are prefixes of each other, clusters that share their first 8 UTF-8
 * bytes so that the samples tie) and of bytes keys (0x00 and 0xFF among
 * them), 0 to 3000 of them, with a random insertion order or none, are
 * checked against a reference sorted here with our own comparator:
 * insertion-order iteration, exact lookups, seek before and after every
 * key and many probes, every rank, the sorted walk, longest prefixes
 * (brute force) and compare. Verify passes them; the image is 1.1 with
 * incompat bit 1 exactly when it holds one. The writer refuses keys out
 * of order, equal, mixed, of another type, ranks that are no permutation
 * and an ordered list, and can go on after each refusal. An ordered
 * frozenset key hashes and equals as the plain one. Empty ordered
 * containers are written and answer every query, and an order block
 * written across the writer's buffer growth is right (test_growth). The
 * API refuses bad widths and unordered
 * containers; code units past 0x10FFFF in a probe still seek right.
 * Damaged order blocks, records, perms, samples and flags are found
 * corrupt by verify (and by pf_read where it checks them), and every
 * query on them ends cleanly; so does every truncation and every changed
 * byte of small ordered images, and whatever of those verify passes
 * answers right (tests/c/ordered.h, shared with fuzz/fuzz_read.c).
 */
#include "check.h"
#include "permafrost.h"
#include "walk.h"
#include "ordered.h"
#include "damage.h"

typedef struct image {
    uint8_t *buf;
    uint64_t len;
} image;

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static uint64_t ldw(const uint8_t *p, int w)
{
    uint64_t v = 0;
    memcpy(&v, p, (size_t)w);
    return v;
}

static void stw(uint8_t *p, int w, uint64_t v) { memcpy(p, &v, (size_t)w); }

static pf_writer *writer(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 0x5EED, NULL) == PF_OK);
    return w;
}

static image finish(pf_writer *w, uint64_t root)
{
    image im;
    uint8_t id[16] = {1, 2, 3, 4, 5, 6, 7, 8};
    pf_error e;
    int rc = pf_writer_finish(w, root, id, &im.buf, &im.len, &e);
    if (rc != PF_OK)
        fprintf(stderr, "finish: %s\n", e.msg);
    REQUIRE(rc == PF_OK);
    pf_writer_free(w);
    return im;
}

static image copy_of(const image *im)
{
    image c;
    c.len = im->len;
    c.buf = (uint8_t *)malloc((size_t)im->len);
    REQUIRE(c.buf != NULL);
    memcpy(c.buf, im->buf, (size_t)im->len);
    return c;
}

static pf_image *open_im(const image *im)
{
    pf_image *img;
    pf_error e;
    int rc = pf_image_open_buffer(im->buf, im->len, &img, &e);
    if (rc != PF_OK)
        fprintf(stderr, "open: %s\n", e.msg);
    REQUIRE(rc == PF_OK);
    return img;
}

static int verify_im(const image *im, const char **msg)
{
    pf_image *img = open_im(im);
    pf_error e;
    memset(&e, 0, sizeof e);
    int rc = pf_image_verify(img, NULL, &e);
    if (msg)
        *msg = e.msg ? e.msg : "";
    pf_image_close(img);
    return rc;
}

/* verify reports corruption, with `part` in its message. */
static int verify_corrupt(const image *im, const char *part)
{
    const char *msg;
    int rc = verify_im(im, &msg);
    if (rc != PF_ECORRUPT || !strstr(msg, part)) {
        fprintf(stderr, "    verify: %d \"%s\", wanted corrupt \"%s\"\n", rc,
                msg, part);
        return 0;
    }
    return 1;
}

/* Clears the section checksums, so that damage is judged by structure. */
static void no_checksums(image *im)
{
    uint64_t stab = get64(im->buf + 64);
    uint32_t n;
    memcpy(&n, im->buf + 72, 4);
    for (uint32_t k = 0; k < n; k++)
        put64(im->buf + stab + 32 * k + 24, 0);
}

static pf_val rd(const pf_image *img, uint64_t pos)
{
    pf_val v;
    pf_error e;
    memset(&v, 0, sizeof v);
    int rc = pf_read(img, pos, &v, &e);
    if (rc != PF_OK)
        fprintf(stderr, "    pf_read at %" PRIu64 ": %s\n", pos, e.msg);
    CHECK_RC(rc, PF_OK);
    return v;
}

static uint64_t list_item(const pf_image *img, const pf_val *l, uint64_t i)
{
    uint64_t p = 0;
    CHECK_RC(pf_list_item(img, l, i, &p, NULL), PF_OK);
    return p;
}

static unsigned bitlen(uint64_t v)
{
    unsigned n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* ------------------------------------------------------------------ random */

static uint64_t rng = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

/* ------------------------------------------------------------------ keys */

#define MAXU 40

/* A key: n code points (str) or bytes (bytes), kept as 32-bit units. */
typedef struct tkey {
    uint32_t u[MAXU];
    int n;
} tkey;

/* Code point (or byte) order, then length; *common as the API gives it. */
static int tk_cmp(const tkey *a, const tkey *b, size_t *common)
{
    const int m = a->n < b->n ? a->n : b->n;
    int i = 0;
    while (i < m && a->u[i] == b->u[i])
        i++;
    if (common)
        *common = (size_t)i;
    if (i < m)
        return a->u[i] < b->u[i] ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
}

static int tk_qcmp(const void *a, const void *b)
{
    return tk_cmp((const tkey *)a, (const tkey *)b, NULL);
}

/* The narrowest width (R15) and whether all are ASCII. */
static int tk_width(const tkey *k, int *ascii)
{
    uint32_t mx = 0;
    for (int i = 0; i < k->n; i++)
        if (k->u[i] > mx)
            mx = k->u[i];
    if (ascii)
        *ascii = mx < 0x80;
    return mx < 0x100 ? 1 : mx < 0x10000 ? 2 : 4;
}

/* The key's units packed `width` bytes each into buf. */
static void tk_pack(const tkey *k, int width, uint8_t *buf)
{
    for (int i = 0; i < k->n; i++) {
        if (width == 1) {
            buf[i] = (uint8_t)k->u[i];
        } else if (width == 2) {
            const uint16_t v = (uint16_t)k->u[i];
            memcpy(buf + 2 * i, &v, 2);
        } else {
            memcpy(buf + 4 * i, &k->u[i], 4);
        }
    }
}

/* A stored key at pos equals k (same kind: str for a str order). */
static int tk_is(const pf_image *img, uint64_t pos, const tkey *k, int str)
{
    pf_val v;
    if (pf_read(img, pos, &v, NULL) != PF_OK)
        return 0;
    if (v.type != (str ? PF_STR : PF_BYTES) || v.u.s.len != (uint64_t)k->n)
        return 0;
    for (int i = 0; i < k->n; i++)
        if (ord_unit(v.u.s.data, (size_t)i, v.u.s.width) != k->u[i])
            return 0;
    if (str) {
        int ascii, w = tk_width(k, &ascii);
        if (v.u.s.width != w || v.u.s.ascii != ascii) /* stored narrowest */
            return 0;
    }
    return 1;
}

static const tkey stems[5] = {
    {{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}, 8},             /* 8 bytes */
    {{0xE9, 0xE9, 0xE9, 0xE9}, 4},                            /* 8 bytes */
    {{0x4E00, 0x4E00, 0x4E00}, 3},                            /* 9 bytes */
    {{0x1F600, 0x1F600}, 2},                                  /* 8 bytes */
    {{0xD800, 0xDC00, 'a', 'b'}, 4},                          /* 8 bytes */
};

static uint32_t str_unit(int cls)
{
    const uint64_t r = rnd();
    switch (cls) {
    case 0: /* ASCII: mostly a..d, so that keys share prefixes */
        return r % 4 ? (uint32_t)('a' + (r >> 8) % 4)
                     : (uint32_t)((r >> 8) % 0x80);
    case 1:
        return (uint32_t)(0x80 + (r >> 8) % 0x80);
    case 2: /* the BMP: a third lone surrogates */
        switch (r % 3) {
        case 0: return (uint32_t)(0xD800 + (r >> 8) % 0x800);
        case 1: return (uint32_t)(0x100 + (r >> 8) % 0x700);
        default: return (uint32_t)(0x800 + (r >> 8) % 0xF800);
        }
    default:
        return r % 8 == 0 ? 0x10FFFFu : (uint32_t)(0x10000 + (r >> 8) % 0x100000);
    }
}

static uint32_t bytes_unit(void)
{
    const uint64_t r = rnd();
    switch (r % 10) {
    case 0: case 1: return 0x00;
    case 2: case 3: return 0xFF;
    case 4: case 5: case 6: return (uint32_t)('a' + (r >> 8) % 3);
    default: return (uint32_t)((r >> 8) & 0xFF);
    }
}

static uint32_t any_unit(int str)
{
    if (!str)
        return bytes_unit();
    const uint64_t r = rnd() % 16;
    return str_unit(r < 9 ? 0 : r < 11 ? 1 : r < 14 ? 2 : 3);
}

/* A new key: random, or made from the keys so far (a prefix, an
 * extension, a stem with a tail). */
static void gen_key(tkey *k, int str, const tkey *pool, size_t npool)
{
    const uint64_t how = rnd() % 10;
    if (how < 2 && npool) {                          /* a prefix of one */
        const tkey *p = &pool[below(npool)];
        *k = *p;
        k->n = (int)below((uint64_t)p->n + 1);
        return;
    }
    if (how < 4 && npool) {                          /* an extension */
        const tkey *p = &pool[below(npool)];
        *k = *p;
        for (int add = 1 + (int)below(3); add > 0 && k->n < MAXU; add--)
            k->u[k->n++] = any_unit(str);
        return;
    }
    if (how < 6) {                                   /* a stem's cluster */
        if (str) {
            *k = stems[below(5)];
        } else {
            static const tkey bstems[2] = {
                {{0, 0, 0, 0, 0, 0, 0, 0}, 8},
                {{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, 9}};
            *k = bstems[below(2)];
        }
        for (int add = (int)below(5); add > 0; add--)
            k->u[k->n++] = any_unit(str);
        return;
    }
    k->n = (int)below(11);
    for (int i = 0; i < k->n; i++)
        k->u[i] = any_unit(str);
}

/* n distinct keys, sorted. */
static tkey *gen_keys(size_t n, int str)
{
    size_t cap = n + 64, have = 0;
    tkey *ks = (tkey *)malloc(cap * sizeof(tkey));
    REQUIRE(ks != NULL);
    if (n && rnd() % 2) {            /* the empty key, often */
        ks[0].n = 0;
        have = 1;
    }
    while (have < n) {
        size_t want = n - have + 8;
        for (size_t i = 0; i < want && have < cap; i++) {
            gen_key(&ks[have], str, ks, have);
            have++;
        }
        qsort(ks, have, sizeof(tkey), tk_qcmp);
        size_t u = 0;
        for (size_t i = 0; i < have; i++)
            if (u == 0 || tk_cmp(&ks[u - 1], &ks[i], NULL) != 0)
                ks[u++] = ks[i];
        have = u;
    }
    while (have > n) {                 /* drop extras at random */
        size_t i = below(have);
        memmove(&ks[i], &ks[i + 1], (have - i - 1) * sizeof(tkey));
        have--;
    }
    return ks;
}

static void write_key(pf_writer *w, const tkey *k, int str)
{
    uint8_t buf[4 * MAXU + 4];
    if (str) {
        int ascii, width = tk_width(k, &ascii);
        tk_pack(k, width, buf);
        REQUIRE(pf_write_str(w, buf, (size_t)k->n, width, ascii, NULL) == PF_OK);
    } else {
        tk_pack(k, 1, buf);
        REQUIRE(pf_write_bytes(w, buf, (size_t)k->n, NULL) == PF_OK);
    }
}

/* pf_find match: the stored key is the tkey in *ctx (str or bytes). */
typedef struct tmatch {
    const tkey *k;
    int str;
} tmatch;

static int match_tkey(void *ctx, const pf_image *img, uint64_t key_pos,
                      uint64_t *key_end)
{
    const tmatch *m = (const tmatch *)ctx;
    (void)key_end;
    return tk_is(img, key_pos, m->k, m->str);
}

static uint64_t tk_hash(const pf_image *img, const tkey *k, int str)
{
    uint8_t buf[4 * MAXU + 4];
    const uint64_t seed = pf_image_hash_seed(img);
    if (!str) {
        tk_pack(k, 1, buf);
        return pf_hash_bytesval(seed, buf, (size_t)k->n);
    }
    int width = tk_width(k, NULL);
    tk_pack(k, width, buf);
    return pf_hash_str(seed, buf, (size_t)k->n, width);
}

/* ------------------------------------------------------------------ reference */

/* The first i with ks[i] >= p (after: > p). */
static uint64_t bisect(const tkey *ks, size_t n, const tkey *p, int after)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = tk_cmp(&ks[mid], p, NULL);
        if (after ? c <= 0 : c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The longest key that is a prefix of p: its index, or -1. */
static long long longest_prefix(const tkey *ks, size_t n, const tkey *p)
{
    long long best = -1;
    for (size_t i = 0; i < n; i++) {
        size_t common;
        if (ks[i].n <= p->n && (tk_cmp(&ks[i], p, &common), common == (size_t)ks[i].n) &&
            (best < 0 || ks[i].n > ks[best].n))
            best = (long long)i;
    }
    return best;
}

/* A probe: a new key, or a stored key changed a little. */
static void gen_probe(tkey *p, int str, const tkey *ks, size_t n)
{
    const uint64_t how = rnd() % 9;
    if (n == 0 || how == 0) {
        gen_key(p, str, ks, n);
        return;
    }
    *p = ks[below(n)];
    const uint32_t top = str ? 0x10FFFFu : 0xFFu;
    switch (how) {
    case 1:                                          /* + a unit */
        if (p->n < MAXU) p->u[p->n++] = any_unit(str);
        break;
    case 2:                                          /* + unit 0 */
        if (p->n < MAXU) p->u[p->n++] = 0;
        break;
    case 3:                                          /* - the last */
        if (p->n) p->n--;
        break;
    case 4:                                          /* last + 1 */
        if (p->n && p->u[p->n - 1] < top) p->u[p->n - 1]++;
        break;
    case 5:                                          /* last - 1 */
        if (p->n && p->u[p->n - 1] > 0) p->u[p->n - 1]--;
        break;
    case 6:                                          /* one unit changed */
        if (p->n) p->u[below((uint64_t)p->n)] = any_unit(str);
        break;
    case 7:                                          /* cut short */
        p->n = (int)below((uint64_t)p->n + 1);
        break;
    default: {                                       /* + another's tail */
        const tkey *q = &ks[below(n)];
        for (int i = 0; i < q->n && p->n < MAXU; i++)
            p->u[p->n++] = q->u[i];
        break;
    }
    }
}

/* ------------------------------------------------------------------ building */

typedef struct built {
    image im;
    uint64_t root;
} built;

/* Root: [C, T]: C a dict / set / frozenset of ks[0..n) written in sorted
 * order with insertion ranks `ranks` (NULL: sorted), a dict's value the
 * insertion index; T an ordered set of the same keys (REFs where
 * shorter), in sorted order. */
static built build(const tkey *ks, size_t n, int str, int type,
                   const uint64_t *ranks)
{
    uint64_t *inv = (uint64_t *)malloc((n + 1) * sizeof(uint64_t));
    REQUIRE(inv != NULL);
    for (uint64_t i = 0; i < n; i++)
        inv[ranks ? ranks[i] : i] = i;
    pf_writer *w = writer();
    built b;
    b.root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, type, n, NULL) == PF_OK);
    for (size_t r = 0; r < n; r++) {
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        write_key(w, &ks[r], str);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        if (type == PF_DICT)
            REQUIRE(pf_write_int(w, (int64_t)inv[r], NULL) == PF_OK);
    }
    pf_error e;
    int rc = pf_write_end_ordered(w, ranks, &e);
    if (rc != PF_OK)
        fprintf(stderr, "pf_write_end_ordered: %s\n", e.msg);
    REQUIRE(rc == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_SET, n, NULL) == PF_OK);
    for (size_t r = 0; r < n; r++) {
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        write_key(w, &ks[r], str);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end_ordered(w, NULL, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    free(inv);
    b.im = finish(w, b.root);
    return b;
}

/* ------------------------------------------------------------------ differential */

static long n_probes, n_seeks, n_prefix;

/* seek p (given as units of `width`) both ways: the reference's bisects,
 * and the position of that rank. */
static void check_seek(const pf_image *img, const pf_val *c, const tkey *ks,
                       size_t n, const tkey *p, int width,
                       const uint64_t *posl)
{
    uint8_t buf[4 * MAXU + 4];
    tk_pack(p, width, buf);
    for (int after = 0; after < 2; after++) {
        uint64_t rank = ~0ull, pos = 0;
        pf_error e;
        CHECK_RC(pf_ordered_seek(img, c, buf, (size_t)p->n, width, after,
                                 &rank, &pos, &e), PF_OK);
        const uint64_t want = bisect(ks, n, p, after);
        CHECK_EQ_U64(rank, want);
        if (rank <= n)
            CHECK_EQ_U64(pos, posl[rank]);
        n_seeks++;
    }
}

/* longest_prefix of p against the brute-force reference. */
static void check_prefix(const pf_image *img, const pf_val *c, const tkey *ks,
                         size_t n, const tkey *p, int width,
                         const uint64_t *posl, const uint64_t *vposl)
{
    uint8_t buf[4 * MAXU + 4];
    tk_pack(p, width, buf);
    uint64_t rank = ~0ull, kp = 0, vp = 0;
    size_t len = ~(size_t)0;
    int rc = pf_ordered_longest_prefix(img, c, buf, (size_t)p->n, width, &rank,
                                       &kp, &vp, &len, NULL);
    const long long want = longest_prefix(ks, n, p);
    CHECK_RC(rc, want >= 0 ? 1 : 0);
    if (rc == 1 && want >= 0) {
        CHECK_EQ_U64(rank, (uint64_t)want);
        CHECK_EQ_U64(kp, posl[want]);
        CHECK_EQ_U64(vp, vposl[want]);
        CHECK_EQ_U64(len, (uint64_t)ks[want].n);
    }
    n_prefix++;
}

/* compare the stored key of rank r with p. */
static void check_compare(const pf_image *img, const tkey *ks, uint64_t r,
                          const tkey *p, int width, const uint64_t *posl)
{
    uint8_t buf[4 * MAXU + 4];
    tk_pack(p, width, buf);
    int cmp = 7;
    size_t common = ~(size_t)0, want_common;
    CHECK_RC(pf_ordered_compare(img, posl[r], buf, (size_t)p->n, width, &cmp,
                                &common, NULL), PF_OK);
    const int want = tk_cmp(&ks[r], p, &want_common);
    CHECK(cmp == want);
    CHECK_EQ_U64(common, want_common);
}

/* The widths a str probe can be given in: its narrowest, and wider. */
static int probe_widths(const tkey *p, int str, int out[3])
{
    if (!str) {
        out[0] = 1;
        return 1;
    }
    const int w = tk_width(p, NULL);
    int k = 0;
    for (int x = w; x <= 4; x *= 2)
        out[k++] = x;
    return k;
}

/* Everything of one container C (and its twin T) against the reference. */
static void check_container(const built *b, const tkey *ks, size_t n, int str,
                            int type, const uint64_t *ranks, int nprobes)
{
    pf_image *img = open_im(&b->im);
    pf_val root = rd(img, b->root);
    REQUIRE(root.type == PF_LIST && root.u.c.count == 2);
    pf_val c = rd(img, list_item(img, &root, 0));
    REQUIRE(c.type == type);
    REQUIRE(c.u.c.count == n);
    CHECK_EQ_U64(b->im.buf[c.pos + 1] & 0x80, 0x80);          /* R36 */
    CHECK_EQ_U64(b->im.buf[c.pos + 1] & 0x7F, (uint64_t)c.u.c.width);
    CHECK(c.u.c.okind == (str ? PF_ORDER_STR : PF_ORDER_BYTES));
    CHECK(c.u.c.sshift == 4);
    int identity = 1;
    for (size_t i = 0; ranks && i < n; i++)
        identity &= ranks[i] == i;
    CHECK_EQ_U64((uint64_t)c.u.c.pbits, identity ? 0 : bitlen(n - 1));
    CHECK_EQ_U64(c.u.c.nslots == 0, n <= 8);
    CHECK_EQ_U64(c.u.c.perm, c.u.c.table + c.u.c.nslots * (uint64_t)c.u.c.width + 8);
    CHECK_EQ_U64(c.end, c.u.c.samples + ((n + 15) / 16) * (8 + (uint64_t)c.u.c.width));

    /* the sorted walk: every record in order */
    uint64_t *posl = (uint64_t *)malloc((n + 1) * sizeof(uint64_t));
    uint64_t *vposl = (uint64_t *)malloc((n + 1) * sizeof(uint64_t));
    REQUIRE(posl && vposl);
    uint64_t pos = c.u.c.body, kp, vp;
    for (size_t r = 0; r < n; r++) {
        posl[r] = pos;
        REQUIRE(pf_ordered_next(img, &c, &pos, &kp, &vp, NULL) == 1);
        CHECK_EQ_U64(kp, posl[r]);
        CHECK(tk_is(img, kp, &ks[r], str));
        vposl[r] = vp;
        if (type == PF_DICT) {
            pf_val v = rd(img, vp);
            CHECK(v.type == PF_INT && v.u.i >= 0 && (uint64_t)v.u.i < n);
            if (v.type == PF_INT && v.u.i >= 0 && (uint64_t)v.u.i < n)
                CHECK(ranks == NULL ? v.u.i == (int64_t)r : ranks[v.u.i] == r);
        } else {
            CHECK_EQ_U64(vp, 0);
        }
    }
    posl[n] = pos;
    vposl[n] = 0;
    CHECK_EQ_U64(pos, c.u.c.body + c.u.c.body_len);
    CHECK_RC(pf_ordered_next(img, &c, &pos, &kp, &vp, NULL), 0);

    /* every rank, and one past */
    for (size_t r = 0; r <= n; r++) {
        uint64_t p = 0;
        CHECK_RC(pf_ordered_at(img, &c, r, &p, NULL), PF_OK);
        CHECK_EQ_U64(p, posl[r]);
    }
    CHECK_RC(pf_ordered_at(img, &c, n + 1, &pos, NULL), PF_ERANGE);

    /* insertion order */
    uint64_t cursor = 0;
    for (size_t i = 0; i < n; i++) {
        REQUIRE(pf_record_next(img, &c, &cursor, &kp, &vp, NULL) == 1);
        const uint64_t r = ranks ? ranks[i] : i;
        CHECK_EQ_U64(kp, posl[r]);
        CHECK_EQ_U64(vp, vposl[r]);
    }
    CHECK_RC(pf_record_next(img, &c, &cursor, &kp, &vp, NULL), 0);

    /* every stored key: found by hash, sought, compared, its own longest
     * prefix, in every width it can be given in */
    for (size_t r = 0; r < n; r++) {
        tmatch m = {&ks[r], str};
        uint64_t fk = 0, fv = 0;
        CHECK_RC(pf_find(img, &c, tk_hash(img, &ks[r], str), match_tkey, &m,
                         &fk, &fv, NULL), 1);
        CHECK_EQ_U64(fk, posl[r]);
        CHECK_EQ_U64(fv, vposl[r]);
        int ws[3];
        const int nw = probe_widths(&ks[r], str, ws);
        for (int k = 0; k < nw; k++) {
            check_seek(img, &c, ks, n, &ks[r], ws[k], posl);
            if (k == 0 || r % 7 == 0)
                check_prefix(img, &c, ks, n, &ks[r], ws[k], posl, vposl);
        }
        check_compare(img, ks, r, &ks[r], ws[nw - 1], posl);
    }

    /* probes: seek, their longest prefixes and all of their prefixes',
     * compare against a random key; a probe not stored is not found */
    for (int t = 0; t < nprobes; t++) {
        tkey p;
        gen_probe(&p, str, ks, n);
        int ws[3];
        const int nw = probe_widths(&p, str, ws);
        for (int k = 0; k < nw; k++)
            check_seek(img, &c, ks, n, &p, ws[k], posl);
        const int w = ws[below((uint64_t)nw)];
        tkey q = p;
        for (int cut = p.n; cut >= 0; cut--) {
            q.n = cut;
            check_prefix(img, &c, ks, n, &q, w, posl, vposl);
        }
        if (n)
            check_compare(img, ks, below(n), &p, w, posl);
        const uint64_t at = bisect(ks, n, &p, 0);
        if (at == n || tk_cmp(&ks[at], &p, NULL) != 0) {
            tmatch m = {&p, str};
            uint64_t fk, fv;
            CHECK_RC(pf_find(img, &c, tk_hash(img, &p, str), match_tkey, &m,
                             &fk, &fv, NULL), 0);
        }
        n_probes++;
    }

    /* before all and after all */
    {
        tkey lo = {{0}, 0}, hi;
        hi.n = 3;
        hi.u[0] = hi.u[1] = hi.u[2] = str ? 0x10FFFF : 0xFF;
        check_seek(img, &c, ks, n, &lo, 1, posl);
        check_seek(img, &c, ks, n, &hi, str ? 4 : 1, posl);
        check_prefix(img, &c, ks, n, &hi, str ? 4 : 1, posl, vposl);
    }

    /* the shared checker, strict, with a few probes of its own */
    {
        uint8_t pb[48];
        for (size_t i = 0; i < sizeof pb; i++)
            pb[i] = (uint8_t)rnd();
        const char *why = "";
        int rc = ord_check(img, &c, 1, pb, sizeof pb, &why);
        if (rc != PF_OK)
            fprintf(stderr, "    ord_check: %d %s\n", rc, why);
        CHECK_RC(rc, PF_OK);
    }

    /* T: the same keys, some by REF, in sorted order */
    pf_val t = rd(img, list_item(img, &root, 1));
    REQUIRE(t.type == PF_SET && t.u.c.count == n && t.u.c.okind);
    CHECK_EQ_U64(t.u.c.pbits, 0);
    long refs = 0;
    uint64_t tp = t.u.c.body;
    for (size_t r = 0; r < n; r++) {
        uint64_t p2 = tp, rank = 0, sp = 0;
        pf_val raw;
        REQUIRE(pf_ordered_next(img, &t, &tp, &kp, &vp, NULL) == 1);
        CHECK(tk_is(img, kp, &ks[r], str));
        CHECK_RC(pf_read_raw(img, kp, &raw, NULL), PF_OK);
        refs += raw.type == PF_REF_RAW;
        uint8_t buf[4 * MAXU + 4];
        const int w = str ? tk_width(&ks[r], NULL) : 1;
        tk_pack(&ks[r], w, buf);
        CHECK_RC(pf_ordered_seek(img, &t, buf, (size_t)ks[r].n, w, 0, &rank,
                                 &sp, NULL), PF_OK);
        CHECK_EQ_U64(rank, r);
        CHECK_EQ_U64(sp, p2);
    }
    if (n >= 100)
        CHECK(refs > 0);
    free(posl);
    free(vposl);
    pf_image_close(img);
}

static void test_differential(void)
{
    static const size_t sizes[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32,
                                   33, 64, 100, 255, 256, 257, 1000, 3000};
    const int nsizes = (int)(sizeof sizes / sizeof sizes[0]);
    static const int types[3] = {PF_DICT, PF_SET, PF_FROZENSET};
    int t = 0;
    for (int si = 0; si < nsizes; si++) {
        const size_t n = sizes[si];
        for (int str = 1; str >= 0; str--) {
            for (int with_ranks = 1; with_ranks >= 0; with_ranks--) {
                const int type = types[t++ % 3];
                tkey *ks = gen_keys(n, str);
                uint64_t *ranks = NULL;
                if (with_ranks) {
                    ranks = (uint64_t *)malloc((n + 1) * sizeof(uint64_t));
                    REQUIRE(ranks != NULL);
                    for (size_t i = 0; i < n; i++)
                        ranks[i] = i;
                    for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
                        size_t j = below(i);
                        uint64_t x = ranks[i - 1];
                        ranks[i - 1] = ranks[j];
                        ranks[j] = x;
                    }
                }
                built b = build(ks, n, str, type, ranks);
                /* 1.1 with incompat bit 1 */
                CHECK_EQ_U64(get16(b.im.buf + 8), 1);
                CHECK_EQ_U64(get16(b.im.buf + 10), 1);
                CHECK_EQ_U64(get64(b.im.buf + 16), PF_INCOMPAT_ORDERED);
                const char *msg = "";
                int rc = verify_im(&b.im, &msg);
                if (rc != PF_OK)
                    fprintf(stderr, "    verify n=%" PRIu64 " str=%d: %s\n",
                            (uint64_t)n, str, msg);
                CHECK_RC(rc, PF_OK);
                const int nprobes = n < 100 ? 200 : n < 1000 ? 120 : 60;
                check_container(&b, ks, n, str, type, ranks, nprobes);
                free(b.im.buf);
                free(ranks);
                free(ks);
            }
        }
    }
    printf("differential: %ld probes, %ld seeks, %ld longest prefixes\n",
           n_probes, n_seeks, n_prefix);
}

/* ------------------------------------------------------------------ versions */

/* The same dict {"a": 1, "b": 2} with pf_write_end (1.0, no bit) and
 * pf_write_end_ordered (1.1, bit 1); with an extension value, bits 0, 1. */
static image small_dict(int ordered, int with_pickle)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, "a", 1, 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, "b", 1, 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    if (with_pickle)
        REQUIRE(pf_write_pickle(w, "\x80\x05N.", 4, NULL) == PF_OK);
    else
        REQUIRE(pf_write_int(w, 2, NULL) == PF_OK);
    if (ordered)
        REQUIRE(pf_write_end_ordered(w, NULL, NULL) == PF_OK);
    else
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

static void test_versions(void)
{
    for (int ordered = 0; ordered < 2; ordered++)
        for (int pk = 0; pk < 2; pk++) {
            image im = small_dict(ordered, pk);
            const uint64_t want = (ordered ? PF_INCOMPAT_ORDERED : 0) |
                                  (pk ? PF_INCOMPAT_EXT : 0);
            CHECK_EQ_U64(get16(im.buf + 8), 1);
            CHECK_EQ_U64(get16(im.buf + 10), want ? 1 : 0);
            CHECK_EQ_U64(get64(im.buf + 16), want);
            CHECK_EQ_U64(get64(im.buf + 24), 0);
            pf_image *img = open_im(&im);
            CHECK_EQ_U64(pf_image_version_minor(img), want ? 1 : 0);
            pf_val d = rd(img, pf_image_root(img));
            CHECK(d.u.c.okind == (ordered ? PF_ORDER_STR : 0));
            CHECK_EQ_U64(im.buf[d.pos + 1] >> 7, (uint64_t)ordered);
            if (!ordered) { /* the queries need an order */
                uint64_t rank, pos;
                CHECK_RC(pf_ordered_seek(img, &d, "a", 1, 1, 0, &rank, &pos,
                                         NULL), PF_ETYPE);
                CHECK_RC(pf_ordered_at(img, &d, 0, &pos, NULL), PF_ETYPE);
            }
            pf_image_close(img);
            CHECK_RC(verify_im(&im, NULL), PF_OK);
            /* the bit without an ordered container is sound (R6) */
            if (!ordered) {
                image y = copy_of(&im);
                put64(y.buf + 16, want | PF_INCOMPAT_ORDERED);
                fix_header(y.buf);
                CHECK_RC(verify_im(&y, NULL), PF_OK);
                free(y.buf);
            }
            free(im.buf);
        }
}

/* ------------------------------------------------------------------ the API */

/* Calls the API refuses: a list or an unordered dict; a bytes order asked
 * with wider units; a width of 3; a NULL key. */
static void test_api_args(void)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_SET, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_bytes(w, "a", 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_bytes(w, "b", 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_end_ordered(w, NULL, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 5, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    pf_image *img = open_im(&im);
    pf_val l = rd(img, root);
    pf_val s = rd(img, list_item(img, &l, 0));
    CHECK(s.u.c.okind == PF_ORDER_BYTES);
    uint64_t rank, pos, kp, vp;
    size_t len;
    const uint32_t a4 = 'a';
    const uint16_t a2 = 'a';
    CHECK_RC(pf_ordered_seek(img, &l, "a", 1, 1, 0, &rank, &pos, NULL), PF_ETYPE);
    CHECK_RC(pf_ordered_seek(img, &s, &a4, 1, 4, 0, &rank, &pos, NULL), PF_EINVAL);
    CHECK_RC(pf_ordered_seek(img, &s, &a2, 1, 2, 0, &rank, &pos, NULL), PF_EINVAL);
    CHECK_RC(pf_ordered_seek(img, &s, "a", 1, 3, 0, &rank, &pos, NULL), PF_EINVAL);
    CHECK_RC(pf_ordered_seek(img, &s, NULL, 0, 1, 0, &rank, &pos, NULL), PF_EINVAL);
    CHECK_RC(pf_ordered_seek(img, NULL, "a", 1, 1, 0, &rank, &pos, NULL), PF_ETYPE);
    CHECK_RC(pf_ordered_longest_prefix(img, &s, &a4, 1, 4, &rank, &kp, &vp,
                                       &len, NULL), PF_EINVAL);
    CHECK_RC(pf_ordered_seek(img, &s, "b", 1, 1, 0, &rank, &pos, NULL), PF_OK);
    CHECK_EQ_U64(rank, 1);
    CHECK_RC(pf_ordered_at(img, &s, 3, &pos, NULL), PF_ERANGE);
    /* a position that is no record boundary inside the body, or outside */
    pos = s.u.c.body + s.u.c.body_len + 1;
    CHECK_RC(pf_ordered_next(img, &s, &pos, &kp, &vp, NULL), PF_EINVAL);
    pos = s.u.c.body - 1;
    CHECK_RC(pf_ordered_next(img, &s, &pos, &kp, &vp, NULL), PF_EINVAL);
    /* compare: a key that is no str or bytes; bytes against bytes */
    int cmp;
    size_t common;
    const uint64_t five = list_item(img, &l, 1);
    CHECK_RC(pf_ordered_compare(img, five, "a", 1, 1, &cmp, &common, NULL), PF_ETYPE);
    CHECK_RC(pf_ordered_compare(img, s.u.c.body, "ab", 2, 1, &cmp, &common, NULL), PF_OK);
    CHECK(cmp < 0);
    CHECK_EQ_U64(common, 1);
    pf_image_close(img);
    free(im.buf);
}

/* Code units above 0x10FFFF (no str holds one) in a probe: a seek must
 * still agree with code point order, or refuse the probe. */
static void test_big_units(void)
{
    tkey ks[3] = {{{0x10000}, 1}, {{0x10FFFF}, 1}, {{0x10FFFF, 'a'}, 2}};
    built b = build(ks, 3, 1, PF_SET, NULL);
    pf_image *img = open_im(&b.im);
    pf_val root = rd(img, b.root);
    pf_val c = rd(img, list_item(img, &root, 0));
    const uint32_t probes[4] = {0x110000, 0x3FFFFF, 0x400000, 0xFFFFFFFFu};
    for (int k = 0; k < 4; k++) {
        uint64_t rank = 0, pos;
        pf_error e;
        int rc = pf_ordered_seek(img, &c, &probes[k], 1, 4, 0, &rank, &pos, &e);
        CHECK(rc == PF_OK || rc == PF_EINVAL);
        if (rc == PF_OK && rank != 3)
            fprintf(stderr, "    seek of code unit 0x%X: rank %" PRIu64
                    ", wanted 3 (past every key)\n", (unsigned)probes[k], rank);
        CHECK(rc != PF_OK || rank == 3);
    }
    pf_image_close(img);
    free(b.im.buf);
}

/* ------------------------------------------------------------------ as keys */

/* An ordered frozenset as a key (R21, R35's neighbours): it hashes and
 * equals as the plain frozenset of the same members, whatever its
 * insertion order, so a set holding both is corrupt (two equal keys),
 * and one holding it and another frozenset is sound. */
static void put_fs(pf_writer *w, const char *a, const char *b, int ordered)
{
    REQUIRE(pf_write_container_begin(w, PF_FROZENSET, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, a, strlen(a), 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, b, strlen(b), 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    static const uint64_t swapped[2] = {1, 0};
    if (ordered)
        REQUIRE(pf_write_end_ordered(w, swapped, NULL) == PF_OK);
    else
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
}

static void test_keys(void)
{
    for (int other = 0; other < 2; other++) {
        pf_writer *w = writer();
        const uint64_t root = pf_writer_pos(w);
        REQUIRE(pf_write_container_begin(w, PF_SET, 2, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        const uint64_t k0 = pf_writer_pos(w);
        put_fs(w, "a", "b", 1);            /* inserted b, a */
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        const uint64_t k1 = pf_writer_pos(w);
        put_fs(w, other ? "a" : "b", other ? "c" : "a", 0);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        image im = finish(w, root);
        pf_image *img = open_im(&im);
        uint64_t h0, h1;
        CHECK_RC(pf_hash_at(img, k0, &h0, NULL), PF_OK);
        CHECK_RC(pf_hash_at(img, k1, &h1, NULL), PF_OK);
        CHECK(other ? h0 != h1 : h0 == h1);
        pf_val fs = rd(img, k0);
        CHECK(fs.u.c.okind == PF_ORDER_STR && fs.u.c.pbits == 1);
        uint64_t cursor = 0, kp, vp;  /* insertion order: b, a */
        REQUIRE(pf_record_next(img, &fs, &cursor, &kp, &vp, NULL) == 1);
        pf_val kv = rd(img, kp);
        CHECK(kv.type == PF_STR && kv.u.s.len == 1 && kv.u.s.data[0] == 'b');
        pf_image_close(img);
        if (other)
            CHECK_RC(verify_im(&im, NULL), PF_OK);
        else
            CHECK(verify_corrupt(&im, "two equal keys"));
        free(im.buf);
    }
}

/* ------------------------------------------------------------------ refusals */

/* An ordered container of the given keys: key k is "s:<text>" str,
 * "b:<text>" bytes, "i:" an int, "t:" a tuple; pf_write_end_ordered's
 * answer; then, refused or not, the writer goes on: pf_write_end (or
 * the ordered end again with `retry` ranks) closes it, a last item is
 * written and the image verifies. */
static void refusal(int type, const char *const *keys, int n,
                    const uint64_t *ranks, int want, const uint64_t *retry,
                    int fallback_ok)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, type, (uint64_t)n, NULL) == PF_OK);
    for (int k = 0; k < n; k++) {
        const char *s = keys[k];
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        if (s[0] == 's')
            REQUIRE(pf_write_str(w, s + 2, strlen(s + 2), 1, 1, NULL) == PF_OK);
        else if (s[0] == 'b')
            REQUIRE(pf_write_bytes(w, s + 2, strlen(s + 2), NULL) == PF_OK);
        else if (s[0] == 'i')
            REQUIRE(pf_write_int(w, k, NULL) == PF_OK);
        else {
            REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, k, NULL) == PF_OK);
        }
        if (type != PF_LIST)
            REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        if (type == PF_DICT)
            REQUIRE(pf_write_none(w, NULL) == PF_OK);
    }
    const uint64_t before = pf_writer_pos(w);
    pf_error e;
    memset(&e, 0, sizeof e);
    CHECK_RC(pf_write_end_ordered(w, ranks, &e), want);
    if (want != PF_OK) {
        CHECK(e.code == want && e.msg != NULL);
        CHECK_EQ_U64(pf_writer_pos(w), before); /* nothing appended */
        if (retry)
            CHECK_RC(pf_write_end_ordered(w, retry, NULL), PF_OK);
        else
            CHECK_RC(pf_write_end(w, NULL), PF_OK);
    }
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, "after", 5, 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    const int ordered = want == PF_OK || retry;
    CHECK_EQ_U64(get64(im.buf + 16), ordered ? PF_INCOMPAT_ORDERED : 0);
    CHECK_EQ_U64(get16(im.buf + 10), ordered ? 1 : 0);
    const char *msg = "";
    int rc = verify_im(&im, &msg);
    if (fallback_ok) {
        if (rc != PF_OK)
            fprintf(stderr, "    after the refusal: %s\n", msg);
        CHECK_RC(rc, PF_OK);
    } else {
        CHECK_RC(rc, PF_ECORRUPT); /* equal keys: the writer trusts them */
    }
    pf_image *img = open_im(&im);
    pf_val l = rd(img, root);
    pf_val last = rd(img, list_item(img, &l, 1));
    CHECK(last.type == PF_STR && last.u.s.len == 5);
    pf_val c = rd(img, list_item(img, &l, 0));
    CHECK(c.type == type);
    CHECK(c.u.c.okind == (ordered ? (keys[0][0] == 'b' ? PF_ORDER_BYTES
                                                     : PF_ORDER_STR) : 0));
    pf_image_close(img);
    free(im.buf);
}

static void test_refusals(void)
{
    static const char *const desc[] = {"s:a", "s:c", "s:b"};
    static const char *const equal[] = {"s:a", "s:b", "s:b"};
    static const char *const mixed[] = {"s:a", "b:b"};
    static const char *const mixed2[] = {"b:a", "s:b"};
    static const char *const ints[] = {"i:", "i:"};
    static const char *const tuple[] = {"s:a", "t:"};
    static const char *const ok3[] = {"s:a", "s:b", "s:c"};
    static const char *const bok[] = {"b:", "b:a", "b:b"};
    static const char *const prefix[] = {"s:ab", "s:a"};
    static const uint64_t out_of_range[3] = {0, 1, 3};
    static const uint64_t dup[3] = {1, 1, 0};
    static const uint64_t good[3] = {2, 0, 1};
    static const uint64_t big[3] = {0, ~0ull, 1};
    refusal(PF_DICT, desc, 3, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_SET, equal, 3, NULL, PF_EINVAL, NULL, 0);
    refusal(PF_SET, prefix, 2, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_FROZENSET, mixed, 2, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_DICT, mixed2, 2, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_SET, ints, 2, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_DICT, tuple, 2, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_SET, ok3, 3, out_of_range, PF_EINVAL, good, 1);
    refusal(PF_DICT, ok3, 3, dup, PF_EINVAL, good, 1);
    refusal(PF_FROZENSET, bok, 3, big, PF_EINVAL, NULL, 1);
    refusal(PF_LIST, ok3, 3, NULL, PF_EINVAL, NULL, 1);
    refusal(PF_DICT, ok3, 3, good, PF_OK, NULL, 1);
    refusal(PF_SET, bok, 3, NULL, PF_OK, NULL, 1);

    /* outside a container, and one ended early */
    pf_writer *w = writer();
    CHECK_RC(pf_write_end_ordered(w, NULL, NULL), PF_EINVAL);
    REQUIRE(pf_write_container_begin(w, PF_SET, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, "a", 1, 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    CHECK_RC(pf_write_end_ordered(w, NULL, NULL), PF_EINVAL);
    pf_writer_free(w);
}

/* ------------------------------------------------------------------ corruption */

/* The patch base: [D, S, L]: D an ordered dict of "k00".."k19" (4 bytes
 * each) -> their index (2 bytes), inserted in reverse (pbits 5), with a
 * slot table; S an ordered set of b"a".."e" (no slot table, no perm);
 * L a list [1, 2]. */
typedef struct patch_base {
    image im;
    uint64_t root;
    pf_val d, s, l;
} patch_base;

static patch_base make_base(void)
{
    patch_base pb;
    pf_writer *w = writer();
    pb.root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 3, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 20, NULL) == PF_OK);
    uint64_t ranks[20];
    for (int k = 0; k < 20; k++) {
        const char key[3] = {'k', (char)('0' + k / 10), (char)('0' + k % 10)};
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_str(w, key, 3, 1, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        REQUIRE(pf_write_int(w, k, NULL) == PF_OK);
        ranks[k] = (uint64_t)(19 - k);
    }
    REQUIRE(pf_write_end_ordered(w, ranks, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_SET, 5, NULL) == PF_OK);
    for (int k = 0; k < 5; k++) {
        const char key = (char)('a' + k);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_bytes(w, &key, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end_ordered(w, NULL, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 2, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    pb.im = finish(w, pb.root);
    pf_image *img = open_im(&pb.im);
    pf_val l = rd(img, pb.root);
    pb.d = rd(img, list_item(img, &l, 0));
    pb.s = rd(img, list_item(img, &l, 1));
    pb.l = rd(img, list_item(img, &l, 2));
    pf_image_close(img);
    REQUIRE(pb.d.u.c.pbits == 5 && pb.d.u.c.nslots > 0 && pb.d.u.c.body_len == 120);
    REQUIRE(pb.s.u.c.pbits == 0 && pb.s.u.c.nslots == 0 && pb.s.u.c.body_len == 15);
    CHECK_RC(verify_im(&pb.im, NULL), PF_OK);
    return pb;
}

/* Every reader call on a damaged image ends cleanly: open, the walk of
 * walk.h, the queries on every ordered container, verify. */
static int queries_clean(const image *im)
{
    pf_image *img;
    pf_error e;
    if (pf_image_open_buffer(im->buf, im->len, &img, &e) != PF_OK)
        return e.code == PF_ECORRUPT || e.code == PF_EVERSION;
    int ok = 1;
    walk_state ws = {0, 20000, 60, 0, 0};
    int wrc = walk(img, pf_image_root(img), 0, &ws);
    if (wrc != PF_OK && wrc != PF_ECORRUPT && wrc != PF_ELIMIT) {
        fprintf(stderr, "    walk: %d\n", wrc);
        ok = 0;
    }
    const uint8_t probe[] = "k05\x00k1\xff\xfe";
    long budget = 200;
    const char *why = "";
    memset(&e, 0, sizeof e);
    const int vr = pf_image_verify(img, NULL, &e);
    if (vr != PF_OK && (vr != PF_ECORRUPT || !e.msg)) {
        fprintf(stderr, "    verify: %d\n", vr);
        ok = 0;
    }
    int orc = ord_check_all(img, pf_image_root(img), 0, vr == PF_OK, probe,
                            sizeof probe - 1, &budget, &why);
    if (orc == ORD_UNCLEAN || orc == ORD_BROKEN) {
        fprintf(stderr, "    ordered queries: %d %s\n", orc, why);
        ok = 0;
    }
    pf_image_close(img);
    return ok;
}

/* The damage of im is found: verify (checksums cleared) says `part`, and
 * pf_read of the container at cpos says `read_part` (NULL: not checked);
 * all queries end cleanly. Frees im. */
static void expect_corrupt(image *im, uint64_t cpos, const char *part,
                           const char *read_part, int fix)
{
    if (fix)
        fix_header(im->buf);
    CHECK_RC(verify_im(im, NULL), PF_ECORRUPT);
    no_checksums(im);
    CHECK(verify_corrupt(im, part));
    pf_image *img = open_im(im);
    pf_val v;
    pf_error e;
    memset(&e, 0, sizeof e);
    int rc = pf_read(img, cpos, &v, &e);
    if (read_part) {
        CHECK_RC(rc, PF_ECORRUPT);
        if (rc == PF_ECORRUPT && !strstr(e.msg, read_part))
            fprintf(stderr, "    pf_read: \"%s\", wanted \"%s\"\n", e.msg, read_part);
        CHECK(rc == PF_ECORRUPT && strstr(e.msg, read_part) != NULL);
    }
    (void)rc;
    pf_image_close(img);
    CHECK(queries_clean(im));
    free(im->buf);
}

static uint64_t perm_get(const uint8_t *perm, uint64_t i, unsigned pbits)
{
    uint64_t v = 0;
    for (unsigned b = 0; b < pbits; b++) {
        const uint64_t bit = i * pbits + b;
        v |= (uint64_t)(perm[bit / 8] >> (bit % 8) & 1) << b;
    }
    return v;
}

static void perm_set(uint8_t *perm, uint64_t i, unsigned pbits, uint64_t v)
{
    for (unsigned b = 0; b < pbits; b++) {
        const uint64_t bit = i * pbits + b;
        perm[bit / 8] = (uint8_t)((perm[bit / 8] & ~(1u << (bit % 8))) |
                                  ((v >> b & 1) << (bit % 8)));
    }
}

/* Swaps records a and b (of equal length len) of container c, and their
 * slots' offsets, so that only their order is wrong. */
static void swap_records(image *im, const pf_val *c, uint64_t a, uint64_t b,
                         uint64_t len)
{
    uint8_t tmp[64];
    const uint64_t pa = c->u.c.body + a * len, pb = c->u.c.body + b * len;
    memcpy(tmp, im->buf + pa, (size_t)len);
    memcpy(im->buf + pa, im->buf + pb, (size_t)len);
    memcpy(im->buf + pb, tmp, (size_t)len);
    const unsigned ibits = bitlen(c->u.c.body_len);
    const uint64_t mask = (1ull << ibits) - 1;
    for (uint64_t i = 0; i < c->u.c.nslots; i++) {
        uint8_t *sp = im->buf + c->u.c.table + i * (uint64_t)c->u.c.width;
        const uint64_t slot = ldw(sp, c->u.c.width);
        const uint64_t ro = slot & mask;
        if (ro == a * len + 1)
            stw(sp, c->u.c.width, (slot & ~mask) | (b * len + 1));
        else if (ro == b * len + 1)
            stw(sp, c->u.c.width, (slot & ~mask) | (a * len + 1));
    }
}

static void test_corrupt(void)
{
    patch_base pb = make_base();
    const pf_val *d = &pb.d, *s = &pb.s;
    const uint64_t dob = d->u.c.perm - 8, sob = s->u.c.perm - 8;
    CHECK_EQ_U64(pb.im.buf[dob], PF_ORDER_STR);
    CHECK_EQ_U64(pb.im.buf[dob + 1], 5);
    CHECK_EQ_U64(pb.im.buf[dob + 2], 4);
    CHECK_EQ_U64(pb.im.buf[sob], PF_ORDER_BYTES);
    CHECK(queries_clean(&pb.im));
    image y;

    /* records out of order: two swapped (slots kept right), in D and S */
    y = copy_of(&pb.im);
    swap_records(&y, d, 3, 4, 6);
    CHECK(verify_corrupt(&y, "checksum"));
    no_checksums(&y);
    {   /* the slots still find both keys: only the order is wrong */
        pf_image *img = open_im(&y);
        walk_state ws = {1, 20000, 60, 0, 0};
        CHECK_RC(walk(img, pf_image_root(img), 0, &ws), PF_OK);
        pf_image_close(img);
    }
    expect_corrupt(&y, d->pos, "strictly ascending", NULL, 0);
    y = copy_of(&pb.im);
    swap_records(&y, s, 1, 2, 3);
    expect_corrupt(&y, s->pos, "strictly ascending", NULL, 0);
    y = copy_of(&pb.im);   /* the last two of a sample block */
    swap_records(&y, d, 14, 15, 6);
    expect_corrupt(&y, d->pos, "strictly ascending", NULL, 0);

    /* an equal key: k04 made k03 (slots, hashes: found by the slot check
     * or the order check, whichever comes first) */
    y = copy_of(&pb.im);
    y.buf[d->u.c.body + 4 * 6 + 3] = '3';
    expect_corrupt(&y, d->pos, "", NULL, 0);
    y = copy_of(&pb.im);
    y.buf[s->u.c.body + 2 * 3 + 2] = 'b'; /* S: b"a", b"b", b"b", ... */
    expect_corrupt(&y, s->pos, "two equal keys", NULL, 0);

    /* a key of another kind: b"b" in S made the int 256, or "bb" */
    y = copy_of(&pb.im);
    y.buf[s->u.c.body + 3] = 0x09;
    y.buf[s->u.c.body + 4] = 0x00;
    y.buf[s->u.c.body + 5] = 0x01;
    expect_corrupt(&y, s->pos, "order's kind", NULL, 0);
    y = copy_of(&pb.im);
    y.buf[s->u.c.body + 3] = 0x82;
    y.buf[s->u.c.body + 4] = 'b';
    y.buf[s->u.c.body + 5] = 'b';
    expect_corrupt(&y, s->pos, "order's kind", NULL, 0);

    /* perm: not a permutation (a repeat; an entry >= count) */
    y = copy_of(&pb.im);
    perm_set(y.buf + d->u.c.perm, 1, 5, perm_get(y.buf + d->u.c.perm, 0, 5));
    expect_corrupt(&y, d->pos, "not a permutation", NULL, 0);
    y = copy_of(&pb.im);
    perm_set(y.buf + d->u.c.perm, 7, 5, 31);
    expect_corrupt(&y, d->pos, "not a permutation", NULL, 0);
    {   /* insertion order then stops with the damage */
        y = copy_of(&pb.im);
        perm_set(y.buf + d->u.c.perm, 7, 5, 20);
        pf_image *img = open_im(&y);
        uint64_t cursor = 0, kp, vp;
        int rc, n = 0;
        while ((rc = pf_record_next(img, d, &cursor, &kp, &vp, NULL)) == 1)
            n++;
        CHECK_RC(rc, PF_ECORRUPT);
        CHECK(n == 7);
        pf_image_close(img);
        free(y.buf);
    }
    y = copy_of(&pb.im);  /* swapped entries: a permutation still */
    {
        const uint64_t a = perm_get(y.buf + d->u.c.perm, 2, 5);
        const uint64_t b = perm_get(y.buf + d->u.c.perm, 9, 5);
        perm_set(y.buf + d->u.c.perm, 2, 5, b);
        perm_set(y.buf + d->u.c.perm, 9, 5, a);
        no_checksums(&y);
        CHECK_RC(verify_im(&y, NULL), PF_OK);
        free(y.buf);
    }

    /* samples: an offset to another record, past the body, inside a
     * record; a prefix byte, a padding byte */
    const uint64_t s1 = d->u.c.samples + (8 + (uint64_t)d->u.c.width);
    CHECK_EQ_U64(ldw(pb.im.buf + s1 + 8, d->u.c.width), 16 * 6);
    CHECK(memcmp(pb.im.buf + s1, "k16\0\0\0\0\0", 8) == 0);
    const uint64_t offs[4] = {15 * 6, 17 * 6, 120, 16 * 6 + 1};
    for (int k = 0; k < 4; k++) {
        y = copy_of(&pb.im);
        stw(y.buf + s1 + 8, d->u.c.width, offs[k]);
        expect_corrupt(&y, d->pos, "", NULL, 0);
    }
    y = copy_of(&pb.im);
    stw(y.buf + s1 + 8, d->u.c.width, 15 * 6);
    no_checksums(&y);
    CHECK(verify_corrupt(&y, "does not describe"));
    free(y.buf);
    const uint64_t bytes[3] = {s1, s1 + 2, s1 + 7};
    for (int k = 0; k < 3; k++) {
        for (int dir = 0; dir < 2; dir++) {
            y = copy_of(&pb.im);
            y.buf[bytes[k]] = (uint8_t)(y.buf[bytes[k]] + (dir ? 1 : -1));
            expect_corrupt(&y, d->pos, "does not describe", NULL, 0);
        }
    }
    y = copy_of(&pb.im); /* S's only sample */
    y.buf[s->u.c.samples] = 'b';
    expect_corrupt(&y, s->pos, "does not describe", NULL, 0);

    /* the order block's header */
    for (int k = 3; k < 8; k++) {
        y = copy_of(&pb.im);
        y.buf[dob + k] = 1;
        expect_corrupt(&y, d->pos, "reserved byte", "reserved byte", 0);
    }
    const uint8_t kinds[3] = {0, 3, 0xFF};
    for (int k = 0; k < 3; k++) {
        y = copy_of(&pb.im);
        y.buf[dob] = kinds[k];
        expect_corrupt(&y, d->pos, "order kind", "order kind", 0);
    }
    y = copy_of(&pb.im);  /* str keys in a bytes order, and back */
    y.buf[dob] = PF_ORDER_BYTES;
    expect_corrupt(&y, d->pos, "order's kind", NULL, 0);
    y = copy_of(&pb.im);
    y.buf[sob] = PF_ORDER_STR;
    expect_corrupt(&y, s->pos, "order's kind", NULL, 0);
    const uint8_t pbits[4] = {4, 6, 64, 0xFF};
    for (int k = 0; k < 4; k++) {
        y = copy_of(&pb.im);
        y.buf[dob + 1] = pbits[k];
        expect_corrupt(&y, d->pos, "perm width", "perm width", 0);
    }
    y = copy_of(&pb.im);  /* S: count 5 takes pbits 3 or 0 */
    y.buf[sob + 1] = 2;
    expect_corrupt(&y, s->pos, "perm width", "perm width", 0);
    y = copy_of(&pb.im);  /* pbits 0: the perm read as samples */
    y.buf[dob + 1] = 0;
    expect_corrupt(&y, d->pos, "", NULL, 0);
    y = copy_of(&pb.im);  /* S: pbits 3, a perm where the samples are */
    y.buf[sob + 1] = 3;
    expect_corrupt(&y, s->pos, "", NULL, 0);
    const uint8_t shifts[4] = {7, 16, 64, 0xFF};
    for (int k = 0; k < 4; k++) {
        y = copy_of(&pb.im);
        y.buf[dob + 2] = shifts[k];
        expect_corrupt(&y, d->pos, "shift above 6", "shift above 6", 0);
    }
    const uint8_t fewer[3] = {0, 3, 5}; /* more samples: past DATA, or misread */
    for (int k = 0; k < 3; k++) {
        y = copy_of(&pb.im);
        y.buf[dob + 2] = fewer[k];
        expect_corrupt(&y, d->pos, "", NULL, 0);
    }
    y = copy_of(&pb.im); /* sshift 6: fewer samples, and bytes left over */
    y.buf[dob + 2] = 6;
    expect_corrupt(&y, d->pos, "", NULL, 0);

    /* bit 7 on a list; bit 7 in an image without incompat bit 1 */
    y = copy_of(&pb.im);
    y.buf[pb.l.pos + 1] |= 0x80;
    expect_corrupt(&y, pb.l.pos, "ordered list", "ordered list", 0);
    y = copy_of(&pb.im);
    y.buf[pb.root + 1] |= 0x80;
    expect_corrupt(&y, pb.root, "ordered list", "ordered list", 0);
    for (int minor = 1; minor >= 0; minor--) {
        y = copy_of(&pb.im);
        put64(y.buf + 16, 0);
        put16(y.buf + 10, (uint16_t)minor);
        expect_corrupt(&y, d->pos, "without the incompat flag",
                       "without the incompat flag", 1);
    }
    /* and bit 7 cleared: the order block is bytes after the ival */
    y = copy_of(&pb.im);
    y.buf[d->pos + 1] &= 0x7F;
    expect_corrupt(&y, d->pos, "", NULL, 0);
    /* D's count one less than its records: the order block misplaced */
    y = copy_of(&pb.im);
    put64(y.buf + d->pos + 2, 19);
    expect_corrupt(&y, d->pos, "", NULL, 0);
    free(pb.im.buf);
}

/* ------------------------------------------------------------------ empty */

/* An empty ordered container: the writer writes it (kind 1), it verifies,
 * and the reader answers every query (rank 0, the body end, nothing
 * found), with either kind (R36). */

static void empty_queries(const image *im, int type)
{
    pf_image *img = open_im(im);
    pf_val c = rd(img, pf_image_root(img));
    REQUIRE(c.type == type && c.u.c.count == 0 && c.u.c.okind);
    const uint64_t end = c.u.c.body + c.u.c.body_len;
    uint64_t rank = 9, pos = 0, kp, vp, cursor = 0;
    size_t len;
    for (int after = 0; after < 2; after++) {
        CHECK_RC(pf_ordered_seek(img, &c, "a", 1, 1, after, &rank, &pos, NULL), PF_OK);
        CHECK_EQ_U64(rank, 0);
        CHECK_EQ_U64(pos, end);
        CHECK_RC(pf_ordered_seek(img, &c, "", 0, 1, after, &rank, &pos, NULL), PF_OK);
        CHECK_EQ_U64(rank, 0);
    }
    CHECK_RC(pf_ordered_at(img, &c, 0, &pos, NULL), PF_OK);
    CHECK_EQ_U64(pos, end);
    CHECK_RC(pf_ordered_at(img, &c, 1, &pos, NULL), PF_ERANGE);
    CHECK_RC(pf_ordered_next(img, &c, &pos, &kp, &vp, NULL), 0);
    CHECK_RC(pf_ordered_longest_prefix(img, &c, "abc", 3, 1, &rank, &kp, &vp,
                                       &len, NULL), 0);
    CHECK_RC(pf_record_next(img, &c, &cursor, &kp, &vp, NULL), 0);
    const char *why = "";
    CHECK_RC(ord_check(img, &c, 1, (const uint8_t *)"probe", 5, &why), PF_OK);
    pf_image_close(img);
}

static void test_empty(void)
{
    static const int types[3] = {PF_DICT, PF_SET, PF_FROZENSET};
    for (int k = 0; k < 3; k++) {
        pf_writer *w = writer();
        const uint64_t root = pf_writer_pos(w);
        REQUIRE(pf_write_container_begin(w, types[k], 0, NULL) == PF_OK);
        CHECK_RC(pf_write_end_ordered(w, NULL, NULL), PF_OK);
        image im = finish(w, root);
        CHECK_EQ_U64(im.buf[root + 26], PF_ORDER_STR);
        CHECK_RC(verify_im(&im, NULL), PF_OK);
        {
            CHECK_EQ_U64(get64(im.buf + 16), PF_INCOMPAT_ORDERED);
            CHECK_RC(verify_im(&im, NULL), PF_OK);
            empty_queries(&im, types[k]);
            for (int kind = PF_ORDER_STR; kind <= PF_ORDER_BYTES; kind++) {
                im.buf[root + 26] = (uint8_t)kind;
                no_checksums(&im);
                CHECK_RC(verify_im(&im, NULL), PF_OK);
                empty_queries(&im, types[k]);
            }
        }
        free(im.buf);
    }
}

/* ------------------------------------------------------------------ growth */

/* The order block appended where the writer's buffer must grow: root
 * [bytes of `pad`, an ordered set of "k00".."k39" inserted in reverse],
 * the pad chosen so that the order block starts just before the initial
 * capacity (64 KiB) and straddles it: write_order decodes the sample keys
 * after ensure() may have moved the buffer (it read freed memory once:
 * ASan's heap-use-after-free, valgrind's invalid read). */
static image growth_image(uint64_t pad, uint64_t *ob)
{
    static uint8_t zeros[70000];
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_bytes(w, zeros, (size_t)pad, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_SET, 40, NULL) == PF_OK);
    uint64_t ranks[40];
    for (int k = 0; k < 40; k++) {
        const char key[3] = {'k', (char)('0' + k / 10), (char)('0' + k % 10)};
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_str(w, key, 3, 1, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        ranks[k] = (uint64_t)(39 - k);
    }
    REQUIRE(pf_write_end_ordered(w, ranks, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    pf_image *img = open_im(&im);
    pf_val l = rd(img, root);
    pf_val c = rd(img, list_item(img, &l, 1));
    *ob = c.u.c.perm - 8;
    pf_image_close(img);
    return im;
}

static void test_growth(void)
{
    uint64_t ob;
    image im = growth_image(60000, &ob);
    free(im.buf);
    /* ob moves with pad (same varint length): start it 40 bytes before
     * 64 KiB, then sweep it across */
    const uint64_t base = 60000 + 65536 - 40 - ob;
    for (uint64_t pad = base - 20; pad < base + 40; pad++) {
        im = growth_image(pad, &ob);
        const char *msg = "";
        const int rc = verify_im(&im, &msg);
        if (rc != PF_OK)
            fprintf(stderr, "    growth pad %" PRIu64 ": %s\n", pad, msg);
        CHECK_RC(rc, PF_OK);
        free(im.buf);
    }
}

/* ------------------------------------------------------------------ damage */

/* Every damaged variant also answers the ordered queries cleanly (strictly
 * where verify passed it). */
static int ord_damage_check(pf_image *img, int verified, const char **why)
{
    const uint8_t probe[] = "a\xe9\x00\xff" "ab";
    long budget = 100;
    int orc = ord_check_all(img, pf_image_root(img), 0, verified, probe,
                            sizeof probe - 1, &budget, why);
    return orc == ORD_UNCLEAN || orc == ORD_BROKEN;
}

/* The sweep of damage.h, with order kinds, pbits, sshifts and the width
 * byte's bit 7 among the byte values. */
static void damage(const image *im, const char *name)
{
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x11,
                                   0x7F, 0x80, 0x82, 0xFF, 0x14, 0x21};
    CHECK_RC(verify_im(im, NULL), PF_OK);
    dmg_sweep(im->buf, im->len, name, vals, sizeof vals, ord_damage_check);
}

/* A dict of 5 str keys of every width, inserted out of order. */
static image small_widths(void)
{
    tkey ks[5] = {{{0}, 0}, {{'a'}, 1}, {{0xE9}, 1}, {{0xD800, 'x'}, 2},
                  {{0x1F600}, 1}};
    const uint64_t ranks[5] = {3, 0, 4, 1, 2};
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 5, NULL) == PF_OK);
    for (int r = 0; r < 5; r++) {
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        write_key(w, &ks[r], 1);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        REQUIRE(pf_write_int(w, r, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end_ordered(w, ranks, NULL) == PF_OK);
    return finish(w, root);
}

/* A set of 10 bytes keys (0x00, 0xFF, prefixes), inserted out of order:
 * a slot table, a perm. */
static image small_bytes(void)
{
    tkey ks[10] = {{{0}, 0}, {{0}, 1}, {{0, 0}, 2}, {{0, 0xFF}, 2},
                   {{'a'}, 1}, {{'a', 'b'}, 2}, {{'b'}, 1}, {{0xFF}, 1},
                   {{0xFF, 0}, 2}, {{0xFF, 0xFF}, 2}};
    const uint64_t ranks[10] = {9, 2, 5, 0, 7, 1, 8, 3, 6, 4};
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_SET, 10, NULL) == PF_OK);
    for (int r = 0; r < 10; r++) {
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        write_key(w, &ks[r], 0);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end_ordered(w, ranks, NULL) == PF_OK);
    return finish(w, root);
}

/* Nested: [frozenset{"a", "b", "c"} ordered, {"x": {b"a", b"b"} ordered,
 * "y": REF "a"} ordered]: REF keys and ordered values. */
static image small_nested(void)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_FROZENSET, 3, NULL) == PF_OK);
    uint64_t at_a = 0;
    for (int k = 0; k < 3; k++) {
        const char key[2] = {(char)('a' + k), 0};
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        if (k == 0)
            at_a = pf_writer_pos(w);
        REQUIRE(pf_write_str(w, key, 1, 1, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    const uint64_t fr[3] = {2, 0, 1};
    REQUIRE(pf_write_end_ordered(w, fr, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, at_a, NULL) == PF_OK);  /* "a", by REF */
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_SET, 2, NULL) == PF_OK);
    for (int k = 0; k < 2; k++) {
        const char key = (char)('a' + k);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_bytes(w, &key, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end_ordered(w, NULL, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_str(w, "y", 1, 1, 1, NULL) == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_none(w, NULL) == PF_OK);
    const uint64_t dr[2] = {1, 0};
    REQUIRE(pf_write_end_ordered(w, dr, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

static void test_damage(void)
{
    image ims[3] = {small_widths(), small_bytes(), small_nested()};
    const char *names[3] = {"widths", "bytes", "nested"};
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_U64(get64(ims[k].buf + 16), PF_INCOMPAT_ORDERED);
        damage(&ims[k], names[k]);
        free(ims[k].buf);
    }
    printf("damage: %ld variants; %ld verified; outcomes: ok %ld, corrupt %ld, "
           "version %ld, limit %ld; ordered checks %ld (%ld strict)\n",
           dmg_variants, dmg_verified, dmg_outcome[0], dmg_outcome[-PF_ECORRUPT],
           dmg_outcome[-PF_EVERSION], dmg_outcome[-PF_ELIMIT], ord_calls,
           ord_strict_calls);
}

int main(void)
{
    test_versions();
    test_api_args();
    test_big_units();
    test_empty();
    test_growth();
    test_refusals();
    test_keys();
    test_corrupt();
    test_damage();
    test_differential();
    return check_report();
}
