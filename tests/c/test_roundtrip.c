/*
 * test_roundtrip.c -- write images with the writer and read everything back:
 * every scalar type and its canonical encoding (R15, R16), nested
 * containers, deduplicated strings and bytes (R17), shared references and
 * cycles, list indexing, record order, lookups through the slot table and
 * through the small-container scan (R22), a 100k-key dict and set, images
 * opened from a buffer and from a file written by pf_file_write_atomic, and
 * the writer's refusal of misuse.
 */
#include "check.h"
#include "permafrost.h"
#include "walk.h"

#if defined(_WIN32)
#include <process.h>
#define test_getpid() ((long)_getpid())
#else
#include <unistd.h>
#define test_getpid() ((long)getpid())
#endif

/* ------------------------------------------------------------------ helpers */

static pf_image *finish_open(pf_writer *w, uint64_t root, uint8_t **buf_out)
{
    uint8_t id[16];
    for (int i = 0; i < 16; i++) id[i] = (uint8_t)(0xA0 + i);
    uint8_t *buf;
    uint64_t len;
    pf_error e;
    REQUIRE(pf_writer_finish(w, root, id, &buf, &len, &e) == PF_OK);
    pf_writer_free(w);
    pf_image *img;
    REQUIRE(pf_image_open_buffer(buf, len, &img, &e) == PF_OK);
    uint8_t got[16];
    pf_image_id(img, got);
    CHECK(memcmp(got, id, 16) == 0);
    CHECK_EQ_U64(pf_image_size(img), len);
    /* Every image the writer makes passes the full check. */
    pf_verify_stats vs;
    CHECK_RC(pf_image_verify(img, &vs, &e), PF_OK);
    CHECK(vs.values >= 1 && vs.checksums >= 1);
    *buf_out = buf;
    return img;
}

static void check_walk(const pf_image *img)
{
    walk_state ws = {1, 10000000, 100, 0, 0};
    CHECK_RC(walk(img, pf_image_root(img), 0, &ws), PF_OK);
}

/* A key to look up, with Python's equality against stored keys. */
typedef struct probe {
    char kind; /* 'n' None, 'i' int, 'f' float, 's' str (width 1), 'b' bytes */
    int64_t i;
    double f;
    const char *s;
    size_t n;
} probe;

static int match_probe(void *ctx, const pf_image *img, uint64_t kp,
                       uint64_t *key_end)
{
    const probe *p = (const probe *)ctx;
    pf_val v;
    if (*key_end != 0)
        return PF_EINVAL; /* pf_find presets it to 0 */
    if (pf_read(img, kp, &v, NULL) != PF_OK)
        return PF_ECORRUPT;
    *key_end = v.next; /* pf_find takes the value from here */
    double num;
    int is_num = 1;
    switch (v.type) {
    case PF_FALSE: num = 0; break;
    case PF_TRUE: num = 1; break;
    case PF_INT: num = (double)v.u.i; break;
    case PF_FLOAT: num = v.u.f; break;
    default: is_num = 0; num = 0; break;
    }
    switch (p->kind) {
    case 'n': return v.type == PF_NONE;
    case 'i':
        if (v.type == PF_INT) return v.u.i == p->i;
        return is_num && num == (double)p->i;
    case 'f': return is_num && num == p->f;
    case 's':
        return v.type == PF_STR && v.u.s.width == 1 && v.u.s.len == p->n &&
               memcmp(v.u.s.data, p->s, p->n) == 0;
    case 'b':
        return v.type == PF_BYTES && v.u.s.len == p->n &&
               memcmp(v.u.s.data, p->s, p->n) == 0;
    }
    return 0;
}

static uint64_t probe_hash(const pf_image *img, const probe *p)
{
    uint64_t S = pf_image_hash_seed(img);
    switch (p->kind) {
    case 'n': return pf_hash_none(S);
    case 'i': return pf_hash_i64(S, p->i);
    case 'f': return pf_hash_double(S, p->f);
    case 's': return pf_hash_str(S, p->s, p->n, 1);
    default: return pf_hash_bytesval(S, p->s, p->n);
    }
}

/* 1 found (value position in *vp), 0 not found. */
static int lookup(const pf_image *img, const pf_val *c, const probe *p,
                  uint64_t *vp)
{
    uint64_t kp;
    pf_error e;
    int rc = pf_find(img, c, probe_hash(img, p), match_probe, (void *)p, &kp,
                     vp, &e);
    CHECK(rc >= 0);
    return rc;
}

static int64_t read_int(const pf_image *img, uint64_t pos)
{
    pf_val v;
    if (pf_read(img, pos, &v, NULL) != PF_OK || v.type != PF_INT)
        return INT64_MIN;
    return v.u.i;
}

/* ------------------------------------------------------------------ scalars */

static void test_scalars(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 7, NULL) == PF_OK);
    CHECK_EQ_U64(pf_writer_pos(w), PF_HEADER_LEN);
    CHECK_EQ_U64(pf_writer_hash_seed(w), 7);
    static const int64_t ints[] = {0, 1, -1, 127, 128, -128, -129, 32767, 32768,
                                   -32768, -32769, 8388607, 8388608,
                                   2147483647LL, 2147483648LL, -2147483649LL,
                                   140737488355327LL, 140737488355328LL,
                                   INT64_MAX, INT64_MIN};
    static const unsigned ilen[] = {1, 1, 1, 1, 2, 1, 2, 2, 3, 2, 3, 3, 4, 4, 5, 5,
                                    6, 7, 8, 8};
    const size_t nints = sizeof ints / sizeof ints[0];
    char long_ascii[200], latin[5] = {'c', 'a', 'f', (char)0xE9, 0};
    memset(long_ascii, 'q', sizeof long_ascii);
    uint16_t ucs2[3] = {0x41, 0x3A9, 0xD800}; /* includes a lone surrogate */
    uint32_t ucs4[2] = {0x1F600, 0x10FFFF};
    uint8_t big[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 0x80}; /* negative, 10 B */
    uint8_t big_nm[12] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
                          0, 0, 0};                     /* 2^65-1, padded */
    uint8_t small_big[9] = {0x2A, 0, 0, 0, 0, 0, 0, 0, 0}; /* 42, non-minimal */
    const uint64_t n = nints + 17;
    uint64_t pos[64];
    int k = 0;
    REQUIRE(pf_write_container_begin(w, PF_LIST, n, NULL) == PF_OK);
#define ITEM(call) do { CHECK_RC(pf_write_item(w, NULL), PF_OK); pos[k++] = pf_writer_pos(w); CHECK_RC(call, PF_OK); } while (0)
    for (size_t i = 0; i < nints; i++)
        ITEM(pf_write_int(w, ints[i], NULL));
    ITEM(pf_write_none(w, NULL));                              /* +0 */
    ITEM(pf_write_bool(w, 1, NULL));                           /* +1 */
    ITEM(pf_write_bool(w, 0, NULL));                           /* +2 */
    ITEM(pf_write_float(w, -2.5, NULL));                       /* +3 */
    ITEM(pf_write_complex(w, 1.5, -3.0, NULL));                /* +4 */
    ITEM(pf_write_str(w, "", 0, 1, 1, NULL));                  /* +5 */
    ITEM(pf_write_str(w, "hi", 2, 1, 1, NULL));                /* +6 */
    ITEM(pf_write_str(w, long_ascii, 200, 1, 1, NULL));        /* +7 */
    ITEM(pf_write_str(w, latin, 4, 1, 0, NULL));               /* +8 */
    ITEM(pf_write_str(w, ucs2, 3, 2, 0, NULL));                /* +9 */
    ITEM(pf_write_str(w, ucs4, 2, 4, 0, NULL));                /* +10 */
    ITEM(pf_write_bytes(w, "", 0, NULL));                      /* +11 */
    ITEM(pf_write_bytes(w, "\x00\xff\x80", 3, NULL));          /* +12 */
    ITEM(pf_write_bigint(w, big, 10, NULL));                   /* +13 */
    ITEM(pf_write_bigint(w, big_nm, 12, NULL));                /* +14 */
    ITEM(pf_write_bigint(w, small_big, 9, NULL));              /* +15 */
    ITEM(pf_write_str(w, "abc", 3, 1, 0, NULL)); /* +16: ASCII said non-ASCII */
#undef ITEM
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, PF_HEADER_LEN, &buf);
    const uint8_t *base = pf_image_base(img);
    CHECK_EQ_U64(pf_image_hash_seed(img), 7);
    CHECK_EQ_U64(pf_image_root(img), PF_HEADER_LEN);
    CHECK_EQ_U64(pf_image_data_start(img), PF_HEADER_LEN);
    CHECK(pf_image_data_end(img) + 32 == pf_image_size(img));
    CHECK_EQ_U64(pf_image_version_minor(img), 0);
    pf_val root, v;
    REQUIRE(pf_read(img, pf_image_root(img), &root, NULL) == PF_OK);
    REQUIRE(root.type == PF_LIST);
    CHECK_EQ_U64(root.u.c.count, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t ip;
        CHECK_RC(pf_list_item(img, &root, i, &ip, NULL), PF_OK);
        CHECK_EQ_U64(ip, pos[i]);
    }
    uint64_t ip;
    CHECK_RC(pf_list_item(img, &root, n, &ip, NULL), PF_ERANGE);
    for (size_t i = 0; i < nints; i++) {
        CHECK_RC(pf_read(img, pos[i], &v, NULL), PF_OK);
        CHECK(v.type == PF_INT && v.u.i == ints[i]);
        CHECK_EQ_U64(v.end - v.pos, 1 + ilen[i]);          /* R16 */
        CHECK_EQ_U64(base[pos[i]], 0x07 + ilen[i]);
    }
    const uint64_t *p = pos + nints;
    CHECK(pf_read(img, p[0], &v, NULL) == PF_OK && v.type == PF_NONE);
    CHECK(pf_read(img, p[1], &v, NULL) == PF_OK && v.type == PF_TRUE);
    CHECK(pf_read(img, p[2], &v, NULL) == PF_OK && v.type == PF_FALSE);
    CHECK(pf_read(img, p[3], &v, NULL) == PF_OK && v.type == PF_FLOAT &&
          v.u.f == -2.5);
    CHECK(pf_read(img, p[4], &v, NULL) == PF_OK && v.type == PF_COMPLEX &&
          v.u.cx.re == 1.5 && v.u.cx.im == -3.0);
    CHECK(pf_read(img, p[5], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 0 && v.u.s.ascii && base[p[5]] == 0x80);
    CHECK(pf_read(img, p[6], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 2 && memcmp(v.u.s.data, "hi", 2) == 0 &&
          base[p[6]] == 0x82 && v.end == p[6] + 3);
    CHECK(pf_read(img, p[7], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 200 && v.u.s.ascii && base[p[7]] == 0x10 &&
          memcmp(v.u.s.data, long_ascii, 200) == 0);
    CHECK(pf_read(img, p[8], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 4 && !v.u.s.ascii && v.u.s.width == 1 &&
          base[p[8]] == 0x11 && memcmp(v.u.s.data, latin, 4) == 0);
    CHECK(pf_read(img, p[9], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 3 && v.u.s.width == 2 && base[p[9]] == 0x12 &&
          memcmp(v.u.s.data, ucs2, 6) == 0);
    CHECK(pf_read(img, p[10], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 2 && v.u.s.width == 4 && base[p[10]] == 0x13 &&
          memcmp(v.u.s.data, ucs4, 8) == 0);
    CHECK(pf_read(img, p[11], &v, NULL) == PF_OK && v.type == PF_BYTES &&
          v.u.s.len == 0);
    CHECK(pf_read(img, p[12], &v, NULL) == PF_OK && v.type == PF_BYTES &&
          v.u.s.len == 3 && memcmp(v.u.s.data, "\x00\xff\x80", 3) == 0);
    CHECK(pf_read(img, p[13], &v, NULL) == PF_OK && v.type == PF_BIGINT &&
          v.u.big.n == 10 && memcmp(v.u.big.data, big, 10) == 0);
    CHECK(pf_read(img, p[14], &v, NULL) == PF_OK && v.type == PF_BIGINT &&
          v.u.big.n == 9 && memcmp(v.u.big.data, big_nm, 9) == 0);
    CHECK(pf_read(img, p[15], &v, NULL) == PF_OK && v.type == PF_INT &&
          v.u.i == 42 && base[p[15]] == 0x08);
    CHECK(pf_read(img, p[16], &v, NULL) == PF_OK && v.type == PF_STR &&
          v.u.s.ascii && base[p[16]] == 0x83);
    check_walk(img);
    pf_image_close(img);
    pf_free(buf);
}

/* ------------------------------------------------------------------ nesting */

static void test_nested_dedup_refs(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 0x1234, NULL) == PF_OK);
    const char *long_s = "a string long enough to dedup";
    size_t ls = strlen(long_s);
    /* root = {"alpha": [long_s, (1, long_s, [2]), {"k": frozenset({1, 2})}],
     *         (1, "t"): {3, 4}, "self": <REF to root>, "again": long_s,
     *         b"raw": b"raw bytes value", "b2": b"raw bytes value",
     *         "short": "ab", "short2": "ab", "lst": <REF to the list> } */
    uint64_t root = pf_writer_pos(w), list_pos, s1, s_again, b1, b2, sh1, sh2;
    REQUIRE(pf_write_container_begin(w, PF_DICT, 9, NULL) == PF_OK);
    pf_write_item(w, NULL);
    pf_write_str(w, "alpha", 5, 1, 1, NULL);
    CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
    list_pos = pf_writer_pos(w);
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 3, NULL), PF_OK);
    pf_write_item(w, NULL);
    s1 = pf_writer_pos(w);
    pf_write_str(w, long_s, ls, 1, 1, NULL);
    pf_write_item(w, NULL);
    CHECK_RC(pf_write_tuple_begin(w, 3, NULL), PF_OK);
    pf_write_int(w, 1, NULL);
    pf_write_str(w, long_s, ls, 1, 1, NULL);
    CHECK_RC(pf_write_item(w, NULL), PF_EINVAL); /* inside a tuple */
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 1, NULL), PF_OK);
    pf_write_item(w, NULL);
    pf_write_int(w, 2, NULL);
    CHECK_RC(pf_write_end(w, NULL), PF_OK); /* closes the tuple too */
    pf_write_item(w, NULL);
    CHECK_RC(pf_write_container_begin(w, PF_DICT, 1, NULL), PF_OK);
    pf_write_item(w, NULL);
    pf_write_str(w, "k", 1, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    CHECK_RC(pf_write_container_begin(w, PF_FROZENSET, 2, NULL), PF_OK);
    pf_write_item(w, NULL); pf_write_int(w, 1, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 2, NULL); pf_write_key_done(w, NULL);
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    CHECK_RC(pf_write_end(w, NULL), PF_OK); /* the list */
    pf_write_item(w, NULL);
    pf_write_tuple_begin(w, 2, NULL);
    pf_write_int(w, 1, NULL);
    pf_write_str(w, "t", 1, 1, 1, NULL);
    CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
    pf_write_container_begin(w, PF_SET, 2, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 3, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 4, NULL); pf_write_key_done(w, NULL);
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    pf_write_item(w, NULL);
    pf_write_str(w, "self", 4, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    CHECK_RC(pf_write_ref(w, root, NULL), PF_OK); /* a cycle */
    pf_write_item(w, NULL);
    pf_write_str(w, "again", 5, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    s_again = pf_writer_pos(w);
    pf_write_str(w, long_s, ls, 1, 1, NULL);
    pf_write_item(w, NULL);
    pf_write_bytes(w, "raw", 3, NULL);
    pf_write_key_done(w, NULL);
    b1 = pf_writer_pos(w);
    pf_write_bytes(w, "raw bytes value", 15, NULL);
    pf_write_item(w, NULL);
    pf_write_str(w, "b2", 2, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    b2 = pf_writer_pos(w);
    pf_write_bytes(w, "raw bytes value", 15, NULL);
    pf_write_item(w, NULL);
    pf_write_str(w, "short", 5, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    sh1 = pf_writer_pos(w);
    pf_write_str(w, "ab", 2, 1, 1, NULL);
    pf_write_item(w, NULL);
    pf_write_str(w, "short2", 6, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    sh2 = pf_writer_pos(w);
    pf_write_str(w, "ab", 2, 1, 1, NULL);
    pf_write_item(w, NULL);
    pf_write_str(w, "lst", 3, 1, 1, NULL);
    pf_write_key_done(w, NULL);
    CHECK_RC(pf_write_ref(w, list_pos, NULL), PF_OK);
    CHECK_RC(pf_write_item(w, NULL), PF_EINVAL); /* a tenth item */
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, root, &buf);

    pf_val d, v, raw;
    REQUIRE(pf_read(img, root, &d, NULL) == PF_OK && d.type == PF_DICT);
    CHECK_EQ_U64(d.u.c.count, 9);
    CHECK_EQ_U64(d.u.c.nslots, 9 + 9 * 3 / 17 + 1);
    /* Dedup: the second long string and the second bytes are REFs to the
     * first copies; "ab" is too short to be worth a REF. */
    CHECK(pf_read_raw(img, s_again, &raw, NULL) == PF_OK &&
          raw.type == PF_REF_RAW && raw.pos == s1);
    CHECK(pf_read(img, s_again, &v, NULL) == PF_OK && v.type == PF_STR &&
          v.pos == s1 && v.u.s.len == ls && v.next == raw.next);
    CHECK(pf_read_raw(img, b2, &raw, NULL) == PF_OK && raw.type == PF_REF_RAW &&
          raw.pos == b1);
    CHECK(pf_read_raw(img, sh2, &raw, NULL) == PF_OK && raw.type == PF_STR &&
          raw.pos == sh2);
    (void)sh1;
    /* Lookups (slot table: 9 > 8 entries). */
    uint64_t vp;
    probe self = {'s', 0, 0, "self", 4};
    REQUIRE(lookup(img, &d, &self, &vp) == 1);
    CHECK(pf_read_raw(img, vp, &raw, NULL) == PF_OK && raw.type == PF_REF_RAW &&
          raw.pos == root);
    probe lst = {'s', 0, 0, "lst", 3};
    REQUIRE(lookup(img, &d, &lst, &vp) == 1);
    CHECK(pf_read(img, vp, &v, NULL) == PF_OK && v.type == PF_LIST &&
          v.pos == list_pos && v.u.c.count == 3);
    probe rawk = {'b', 0, 0, "raw", 3}, rawks = {'s', 0, 0, "raw", 3};
    CHECK(lookup(img, &d, &rawk, &vp) == 1);
    CHECK(lookup(img, &d, &rawks, &vp) == 0); /* "raw" != b"raw" */
    probe missing = {'s', 0, 0, "nope", 4}, none = {'n', 0, 0, NULL, 0};
    CHECK(lookup(img, &d, &missing, &vp) == 0);
    CHECK(lookup(img, &d, &none, &vp) == 0);
    /* The tuple key (1, "t"), hashed from live values. */
    uint64_t S = pf_image_hash_seed(img);
    uint64_t th[2] = {pf_hash_i64(S, 1), pf_hash_str(S, "t", 1, 1)};
    uint64_t cursor = 0, kp, vpos, order = 0, tkey = 0;
    const char *expect[9] = {"alpha", NULL, "self", "again", NULL, "b2",
                             "short", "short2", "lst"};
    int rc;
    while ((rc = pf_record_next(img, &d, &cursor, &kp, &vpos, NULL)) == 1) {
        REQUIRE(order < 9);
        CHECK(pf_read(img, kp, &v, NULL) == PF_OK);
        if (expect[order]) {
            CHECK(v.type == PF_STR && v.u.s.len == strlen(expect[order]) &&
                  memcmp(v.u.s.data, expect[order], v.u.s.len) == 0);
        } else if (order == 1) {
            CHECK(v.type == PF_TUPLE && v.u.tup.count == 2);
            tkey = kp;
        } else {
            CHECK(v.type == PF_BYTES);
        }
        CHECK(vpos != 0);
        order++;
    }
    CHECK_RC(rc, 0);
    CHECK_EQ_U64(order, 9);
    uint64_t h;
    CHECK_RC(pf_hash_at(img, tkey, &h, NULL), PF_OK);
    CHECK_EQ_U64(h, pf_hash_tuple_of(S, th, 2));
    CHECK_RC(pf_find(img, &d, h, walk_match_pos, &tkey, &kp, &vpos, NULL), 1);
    CHECK(pf_read(img, vpos, &v, NULL) == PF_OK && v.type == PF_SET &&
          v.u.c.count == 2 && v.u.c.nslots == 0);
    /* Small set: scan (nslots 0); 3 and 4.0 are members, 5 is not. */
    pf_val set = v;
    probe p3 = {'i', 3, 0, NULL, 0}, p4 = {'f', 0, 4.0, NULL, 0}, p5 = {'i', 5, 0, NULL, 0};
    CHECK(lookup(img, &set, &p3, &vp) == 1 && vp == 0);
    CHECK(lookup(img, &set, &p4, &vp) == 1);
    CHECK(lookup(img, &set, &p5, &vp) == 0);
    /* The list: [long_s, (1, long_s, [2]), {"k": frozenset({1, 2})}] */
    pf_val l;
    REQUIRE(pf_read(img, list_pos, &l, NULL) == PF_OK && l.type == PF_LIST);
    uint64_t ip;
    CHECK(pf_list_item(img, &l, 1, &ip, NULL) == PF_OK);
    pf_val t;
    CHECK(pf_read(img, ip, &t, NULL) == PF_OK && t.type == PF_TUPLE &&
          t.u.tup.count == 3);
    CHECK(pf_read(img, t.u.tup.first, &v, NULL) == PF_OK && v.type == PF_INT &&
          v.u.i == 1);
    CHECK(pf_read(img, v.next, &v, NULL) == PF_OK && v.type == PF_STR &&
          v.pos == s1);
    CHECK(pf_read(img, v.next, &v, NULL) == PF_OK && v.type == PF_LIST &&
          v.u.c.count == 1 && v.end == t.end);
    CHECK(pf_list_item(img, &l, 2, &ip, NULL) == PF_OK);
    pf_val inner;
    CHECK(pf_read(img, ip, &inner, NULL) == PF_OK && inner.type == PF_DICT);
    probe pk = {'s', 0, 0, "k", 1};
    CHECK(lookup(img, &inner, &pk, &vp) == 1);
    pf_val fs;
    CHECK(pf_read(img, vp, &fs, NULL) == PF_OK && fs.type == PF_FROZENSET &&
          fs.u.c.count == 2);
    uint64_t fh[2] = {pf_hash_i64(S, 2), pf_hash_i64(S, 1)};
    CHECK(pf_hash_at(img, vp, &h, NULL) == PF_OK &&
          h == pf_hash_frozenset_of(S, fh, 2));
    check_walk(img);
    CHECK_RC(pf_hash_at(img, root, &h, NULL), PF_ETYPE);
    CHECK_RC(pf_list_item(img, &d, 0, &ip, NULL), PF_ETYPE);
    CHECK_RC(pf_record_next(img, &l, &cursor, &kp, &vpos, NULL), PF_ETYPE);
    pf_image_close(img);
    pf_free(buf);
}

/* ------------------------------------------------------------------ big */

static void test_big_dict_and_set(void)
{
    enum { N = 100000 };
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 0xC0FFEE, NULL) == PF_OK);
    char key[32];
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 3, NULL) == PF_OK);
    pf_write_item(w, NULL);
    REQUIRE(pf_write_container_begin(w, PF_DICT, N, NULL) == PF_OK);
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key%d", i);
        pf_write_item(w, NULL);
        pf_write_str(w, key, (size_t)n, 1, 1, NULL);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        pf_write_int(w, (int64_t)i * 3, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    pf_write_item(w, NULL);
    REQUIRE(pf_write_container_begin(w, PF_SET, N, NULL) == PF_OK);
    for (int i = 0; i < N; i++) {
        pf_write_item(w, NULL);
        pf_write_int(w, (int64_t)i * 7919 - 1000000, NULL);
        pf_write_key_done(w, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    pf_write_item(w, NULL); /* a long list: table width 4 */
    REQUIRE(pf_write_container_begin(w, PF_LIST, N, NULL) == PF_OK);
    for (int i = 0; i < N; i++) {
        pf_write_item(w, NULL);
        pf_write_int(w, i, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, root, &buf);

    pf_val top, d, s, l;
    uint64_t ip, vp;
    REQUIRE(pf_read(img, root, &top, NULL) == PF_OK);
    REQUIRE(pf_list_item(img, &top, 0, &ip, NULL) == PF_OK);
    REQUIRE(pf_read(img, ip, &d, NULL) == PF_OK && d.type == PF_DICT);
    REQUIRE(pf_list_item(img, &top, 1, &ip, NULL) == PF_OK);
    REQUIRE(pf_read(img, ip, &s, NULL) == PF_OK && s.type == PF_SET);
    REQUIRE(pf_list_item(img, &top, 2, &ip, NULL) == PF_OK);
    REQUIRE(pf_read(img, ip, &l, NULL) == PF_OK && l.type == PF_LIST);
    CHECK_EQ_U64(d.u.c.count, N);
    CHECK_EQ_U64(d.u.c.nslots, N + N * 3 / 17 + 1);
    CHECK_EQ_U64(d.u.c.width, 4);
    CHECK_EQ_U64(l.u.c.width, 4);
    long found = 0, right = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key%d", i);
        probe p = {'s', 0, 0, key, (size_t)n};
        if (lookup(img, &d, &p, &vp) == 1) {
            found++;
            right += read_int(img, vp) == (int64_t)i * 3;
        }
    }
    CHECK_EQ_U64(found, N);
    CHECK_EQ_U64(right, N);
    long absent = 0;
    for (int i = N; i < N + 20000; i++) {
        int n = snprintf(key, sizeof key, "key%d", i);
        probe p = {'s', 0, 0, key, (size_t)n};
        absent += lookup(img, &d, &p, &vp) == 0;
        probe q = {'b', 0, 0, key, (size_t)n};
        absent += lookup(img, &d, &q, &vp) == 0;
    }
    CHECK_EQ_U64(absent, 40000);
    found = 0;
    for (int i = 0; i < N; i++) {
        probe p = {'i', (int64_t)i * 7919 - 1000000, 0, NULL, 0};
        found += lookup(img, &s, &p, &vp) == 1;
        probe q = {'f', 0, (double)((int64_t)i * 7919 - 1000000), NULL, 0};
        found += lookup(img, &s, &q, &vp) == 1;
        probe r = {'i', (int64_t)i * 7919 - 999999, 0, NULL, 0};
        found -= lookup(img, &s, &r, &vp) == 1;
    }
    CHECK_EQ_U64(found, 2 * N);
    /* Records in insertion order. */
    uint64_t cursor = 0, kp;
    long inorder = 0, n = 0;
    int rc;
    while ((rc = pf_record_next(img, &d, &cursor, &kp, &vp, NULL)) == 1) {
        int len = snprintf(key, sizeof key, "key%ld", n);
        pf_val k;
        if (pf_read(img, kp, &k, NULL) == PF_OK && k.u.s.len == (uint64_t)len &&
            memcmp(k.u.s.data, key, (size_t)len) == 0 &&
            read_int(img, vp) == 3 * (int64_t)n)
            inorder++;
        n++;
    }
    CHECK_RC(rc, 0);
    CHECK_EQ_U64(inorder, N);
    long ok = 0;
    for (int i = 0; i < N; i++)
        ok += pf_list_item(img, &l, (uint64_t)i, &ip, NULL) == PF_OK &&
              read_int(img, ip) == i;
    CHECK_EQ_U64(ok, N);
    check_walk(img);

    /* The same image through a file. */
    char path[256];
    const char *dir = getenv("TMPDIR");
    if (!dir) dir = getenv("TEMP");
    if (!dir) dir = ".";
    snprintf(path, sizeof path, "%s/pf_roundtrip_%ld.pfi", dir, test_getpid());
    pf_error e;
    REQUIRE(pf_file_write_atomic(path, buf, pf_image_size(img), &e) == PF_OK);
    pf_image *fimg;
    REQUIRE(pf_image_open_file(path, &fimg, &e) == PF_OK);
    CHECK_EQ_U64(pf_image_size(fimg), pf_image_size(img));
    CHECK(memcmp(pf_image_base(fimg), buf, pf_image_size(img)) == 0);
    REQUIRE(pf_read(fimg, pf_image_root(fimg), &top, NULL) == PF_OK);
    REQUIRE(pf_list_item(fimg, &top, 0, &ip, NULL) == PF_OK);
    REQUIRE(pf_read(fimg, ip, &d, NULL) == PF_OK && d.type == PF_DICT);
    probe p = {'s', 0, 0, "key99999", 8};
    CHECK(lookup(fimg, &d, &p, &vp) == 1 && read_int(fimg, vp) == 299997);
    pf_image_close(fimg);
    remove(path);
    pf_image_close(img);
    pf_free(buf);
}

/* ------------------------------------------------------------------ misc */

static void test_scalar_root_and_misuse(void)
{
    pf_writer *w;
    pf_error e;
    REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
    uint8_t *buf;
    uint64_t len;
    CHECK_RC(pf_writer_finish(w, PF_HEADER_LEN, NULL, &buf, &len, &e), PF_EINVAL);
    CHECK_RC(pf_write_ref(w, PF_HEADER_LEN, &e), PF_EINVAL); /* nothing yet */
    CHECK_RC(pf_write_item(w, &e), PF_EINVAL);
    CHECK_RC(pf_write_key_done(w, &e), PF_EINVAL);
    CHECK_RC(pf_write_end(w, &e), PF_EINVAL);
    CHECK_RC(pf_write_container_begin(w, 99, 1, &e), PF_EINVAL);
    CHECK_RC(pf_write_str(w, "x", 1, 3, 1, &e), PF_EINVAL);
    CHECK_RC(pf_write_str(w, "\xe9", 1, 1, 1, &e), PF_EINVAL); /* not ASCII */
    uint32_t bad = 0x110000;
    CHECK_RC(pf_write_str(w, &bad, 1, 4, 0, &e), PF_EINVAL);
    uint64_t spos = pf_writer_pos(w);
    CHECK_RC(pf_write_str(w, "root string value", 17, 1, 1, &e), PF_OK);
    uint64_t rpos = pf_writer_pos(w);
    CHECK_RC(pf_write_ref(w, spos, &e), PF_OK);
    CHECK_RC(pf_write_ref(w, rpos, &e), PF_EINVAL); /* REF to a REF */
    CHECK_RC(pf_write_ref(w, pf_writer_pos(w), &e), PF_EINVAL);
    /* A dict whose count is not met; a key of a non-key type. */
    CHECK_RC(pf_write_container_begin(w, PF_DICT, 2, &e), PF_OK);
    CHECK_RC(pf_write_item(w, &e), PF_OK);
    CHECK_RC(pf_write_key_done(w, &e), PF_EINVAL); /* no key ival yet */
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 0, &e), PF_OK);
    CHECK_RC(pf_write_end(w, &e), PF_OK);
    CHECK_RC(pf_write_key_done(w, &e), PF_ETYPE);   /* [] is not a key */
    CHECK_RC(pf_writer_finish(w, spos, NULL, &buf, &len, &e), PF_EINVAL);
    pf_writer_free(w); /* with a container open: no leak (ASan) */

    REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
    CHECK_RC(pf_write_container_begin(w, PF_SET, 1, &e), PF_OK);
    CHECK_RC(pf_write_item(w, &e), PF_OK);
    CHECK_RC(pf_write_int(w, 5, &e), PF_OK);
    CHECK_RC(pf_write_item(w, &e), PF_EINVAL); /* key not done */
    CHECK_RC(pf_write_end(w, &e), PF_EINVAL);
    CHECK_RC(pf_write_key_done(w, &e), PF_OK);
    CHECK_RC(pf_write_key_done(w, &e), PF_EINVAL);
    CHECK_RC(pf_write_end(w, &e), PF_OK);
    CHECK_RC(pf_write_end(w, &e), PF_EINVAL);
    pf_writer_free(w);

    REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
    spos = pf_writer_pos(w);
    CHECK_RC(pf_write_str(w, "root string value", 17, 1, 1, &e), PF_OK);
    pf_image *img = finish_open(w, spos, &buf);
    pf_val v;
    CHECK(pf_read(img, pf_image_root(img), &v, NULL) == PF_OK &&
          v.type == PF_STR && v.u.s.len == 17);
    pf_image_close(img);
    pf_free(buf);
    pf_image_close(NULL);
    pf_writer_free(NULL);
    CHECK(strcmp(pf_strerror(PF_ECORRUPT), "corrupt image") == 0);
    CHECK(pf_strerror(12345) != NULL);
}

/* Deep and exponentially shared keys: reading stays iterative; hashing is
 * bounded in depth and in work. */
static void test_limits(void)
{
    pf_writer *w;
    pf_error e;
    pf_image *img;
    uint8_t *buf;
    REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w), deep, prev;
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 62, &e), PF_OK);
    pf_write_item(w, &e);
    deep = pf_writer_pos(w);
    for (int i = 0; i < 5000; i++)
        pf_write_tuple_begin(w, 1, &e);
    pf_write_none(w, &e);
    pf_write_item(w, &e);
    prev = pf_writer_pos(w);
    pf_write_tuple_begin(w, 2, &e);
    pf_write_int(w, 1, &e);
    pf_write_int(w, 1, &e);
    for (int k = 0; k < 60; k++) {
        CHECK_RC(pf_write_item(w, &e), PF_OK);
        uint64_t cur = pf_writer_pos(w);
        pf_write_tuple_begin(w, 2, &e);
        CHECK_RC(pf_write_ref(w, prev, &e), PF_OK);
        CHECK_RC(pf_write_ref(w, prev, &e), PF_OK);
        prev = cur;
    }
    CHECK_RC(pf_write_end(w, &e), PF_OK);
    img = finish_open(w, root, &buf);
    pf_val v;
    uint64_t h;
    CHECK_RC(pf_read(img, deep, &v, &e), PF_OK); /* iterative skip */
    CHECK(v.type == PF_TUPLE);
    CHECK_RC(pf_hash_at(img, deep, &h, &e), PF_ELIMIT);
    CHECK_RC(pf_read(img, prev, &v, &e), PF_OK);
    CHECK_RC(pf_hash_at(img, prev, &h, &e), PF_ELIMIT);
    pf_image_close(img);
    pf_free(buf);
}

/* Equal strings are stored once however large the dedup table grows
 * (R17): the second copy of each of 60000 values is a REF. Bytes equal to a
 * string are not merged with it. */
static void test_dedup_growth(void)
{
    enum { N = 60000 };
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 77, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    char b[32];
    REQUIRE(pf_write_container_begin(w, PF_LIST, 3 * N, NULL) == PF_OK);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < N; i++) {
            int n = snprintf(b, sizeof b, "value-%d", i);
            pf_write_item(w, NULL);
            if (r == 2)
                CHECK_RC(pf_write_bytes(w, b, (size_t)n, NULL), PF_OK);
            else
                CHECK_RC(pf_write_str(w, b, (size_t)n, 1, 1, NULL), PF_OK);
        }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, root, &buf);
    pf_val l, v, raw;
    REQUIRE(pf_read(img, root, &l, NULL) == PF_OK);
    long refs = 0, ok = 0;
    for (int i = 0; i < 3 * N; i++) {
        uint64_t ip;
        int n = snprintf(b, sizeof b, "value-%d", i % N);
        if (pf_list_item(img, &l, (uint64_t)i, &ip, NULL) != PF_OK ||
            pf_read_raw(img, ip, &raw, NULL) != PF_OK ||
            pf_read(img, ip, &v, NULL) != PF_OK)
            continue;
        refs += raw.type == PF_REF_RAW;
        ok += v.type == (i >= 2 * N ? PF_BYTES : PF_STR) &&
              v.u.s.len == (uint64_t)n && memcmp(v.u.s.data, b, (size_t)n) == 0;
    }
    CHECK_EQ_U64(refs, N);
    CHECK_EQ_U64(ok, 3 * N);
    pf_image_close(img);
    pf_free(buf);
}

int main(void)
{
    test_scalars();
    test_nested_dedup_refs();
    test_big_dict_and_set();
    test_scalar_root_and_misuse();
    test_limits();
    test_dedup_growth();
    return check_report();
}
