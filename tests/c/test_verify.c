/*
 * test_verify.c -- pf_image_verify and pf_checksum: images the writer makes
 * pass; damage that every reader path tolerates but that breaks a FORMAT
 * rule is found (equal keys under Python equality, non-canonical strings
 * and ints, a list table or slot table that lies, a changed byte under a
 * checksum); shared subtrees are checked once, however often referenced.
 * A big root dict, set or list is checked by threads, each a range of its
 * records: the same answer and counts as one walk, on sound images and on
 * damaged ones.
 */
#include "check.h"
#include "permafrost.h"
#include "internal.h" /* pf_verify_ex */

static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

typedef struct image {
    uint8_t *buf;
    uint64_t len;
} image;

static pf_writer *writer(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 7, NULL) == PF_OK);
    return w;
}

static image finish(pf_writer *w, uint64_t root)
{
    image im;
    uint8_t id[16] = {1, 2, 3};
    REQUIRE(pf_writer_finish(w, root, id, &im.buf, &im.len, NULL) == PF_OK);
    pf_writer_free(w);
    return im;
}

/* Clears the section checksums, so that a patch is judged by structure. */
static void no_checksums(image *im)
{
    uint64_t stab = get64(im->buf + 64);
    uint32_t n;
    memcpy(&n, im->buf + 72, 4);
    for (uint32_t k = 0; k < n; k++)
        put64(im->buf + stab + 32 * k + 24, 0);
}

/* verify's result for the image, and its message in *msg. */
static int verify(const image *im, const char **msg, pf_verify_stats *st)
{
    pf_image *img;
    pf_error e;
    REQUIRE(pf_image_open_buffer(im->buf, im->len, &img, &e) == PF_OK);
    memset(&e, 0, sizeof e);
    int rc = pf_image_verify(img, st, &e);
    if (msg)
        *msg = e.msg ? e.msg : "";
    pf_image_close(img);
    return rc;
}

/* Offset of the first occurrence of needle in the image's DATA. */
static uint64_t find(const image *im, const void *needle, size_t n)
{
    for (uint64_t i = 128; i + n <= im->len; i++)
        if (memcmp(im->buf + i, needle, n) == 0)
            return i;
    REQUIRE(!"pattern not found");
    return 0;
}

static void key(pf_writer *w, int (*put)(pf_writer *))
{
    CHECK_RC(pf_write_item(w, NULL), PF_OK);
    CHECK_RC(put(w), PF_OK);
    CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
}

static int put_one(pf_writer *w) { return pf_write_int(w, 1, NULL); }
static int put_one_f(pf_writer *w) { return pf_write_float(w, 1.0, NULL); }
static int put_true(pf_writer *w) { return pf_write_bool(w, 1, NULL); }
static int put_big(pf_writer *w)
{
    const uint8_t le[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1};  /* 2^64 */
    return pf_write_bigint(w, le, 9, NULL);
}
static int put_big_f(pf_writer *w) { return pf_write_float(w, 18446744073709551616.0, NULL); }
static int put_negbig(pf_writer *w)
{
    const uint8_t le[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0xFF};     /* -2^64 */
    return pf_write_bigint(w, le, 9, NULL);
}
static int put_negbig71(pf_writer *w)
{
    const uint8_t le[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0x80};     /* -2^71 */
    return pf_write_bigint(w, le, 9, NULL);
}
static int put_negbig71_f(pf_writer *w) { return pf_write_float(w, -2361183241434822606848.0, NULL); }
static int put_cx(pf_writer *w) { return pf_write_complex(w, 1.0, 0.0, NULL); }
static int put_a(pf_writer *w) { return pf_write_str(w, "a", 1, 1, 1, NULL); }
static int put_ab(pf_writer *w) { return pf_write_str(w, "ab", 2, 1, 1, NULL); }
static int put_ba(pf_writer *w) { return pf_write_bytes(w, "a", 1, NULL); }
static int put_tup(pf_writer *w)
{
    int rc = pf_write_tuple_begin(w, 2, NULL);
    if (rc == PF_OK) rc = pf_write_int(w, 1, NULL);
    if (rc == PF_OK) rc = pf_write_str(w, "x", 1, 1, 1, NULL);
    return rc;
}
static int put_tup_f(pf_writer *w)
{
    int rc = pf_write_tuple_begin(w, 2, NULL);
    if (rc == PF_OK) rc = pf_write_float(w, 1.0, NULL);
    if (rc == PF_OK) rc = pf_write_str(w, "x", 1, 1, 1, NULL);
    return rc;
}

/* A set of the keys `a` and `b`, plus `pad` distinct int keys (so that
 * it has a slot table when pad > 8). */
static image set_of(int (*a)(pf_writer *), int (*b)(pf_writer *), int pad)
{
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_SET, (uint64_t)(2 + pad), NULL) == PF_OK);
    key(w, a);
    for (int i = 0; i < pad; i++) {
        CHECK_RC(pf_write_item(w, NULL), PF_OK);
        CHECK_RC(pf_write_int(w, 1000 + i, NULL), PF_OK);
        CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
    }
    key(w, b);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

static void test_equal_keys(void)
{
    struct { int (*a)(pf_writer *), (*b)(pf_writer *); int equal; } cases[] = {
        {put_one, put_one_f, 1}, {put_one, put_true, 1}, {put_one_f, put_cx, 1},
        {put_big, put_big_f, 1}, {put_a, put_a, 1}, {put_tup, put_tup_f, 1},
        {put_negbig71, put_negbig71_f, 1}, {put_negbig, put_negbig71, 0},
        {put_a, put_ab, 0}, {put_a, put_ba, 0}, {put_one, put_big, 0},
        {put_tup, put_a, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int pad = 0; pad <= 20; pad += 20) { /* scanned, then slotted */
            image im = set_of(cases[c].a, cases[c].b, pad);
            const char *msg;
            int rc = verify(&im, &msg, NULL);
            if (cases[c].equal) {
                CHECK_RC(rc, PF_ECORRUPT);
                CHECK(strstr(msg, "equal keys") != NULL);
            } else {
                CHECK_RC(rc, PF_OK);
            }
            pf_free(im.buf);
        }
    }
}

static void test_canonical_forms(void)
{
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 3, NULL) == PF_OK);
    pf_write_item(w, NULL);
    pf_write_str(w, "\xe9t\xe9", 3, 1, 0, NULL);        /* Latin-1 */
    pf_write_item(w, NULL);
    pf_write_int(w, 300, NULL);                          /* 2 bytes */
    pf_write_item(w, NULL);
    const uint16_t ucs2[2] = {0x20AC, 0x41};
    pf_write_str(w, ucs2, 2, 2, 0, NULL);                /* UCS-2 */
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    CHECK_RC(verify(&im, NULL, NULL), PF_OK);
    no_checksums(&im);
    CHECK_RC(verify(&im, NULL, NULL), PF_OK);
    const char *msg;
    /* Latin-1 with no byte >= 0x80: should have been ASCII. */
    uint64_t at = find(&im, "\x11\x03\xe9t\xe9", 5);
    im.buf[at + 2] = 'e';
    im.buf[at + 4] = 'e';
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    CHECK(strstr(msg, "narrowest") != NULL);
    im.buf[at + 2] = 0xe9;
    im.buf[at + 4] = 0xe9;
    /* 5 in two bytes. */
    at = find(&im, "\x09\x2c\x01", 3);
    im.buf[at + 1] = 5;
    im.buf[at + 2] = 0;
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    CHECK(strstr(msg, "fewest") != NULL);
    im.buf[at + 1] = 0x2c;
    im.buf[at + 2] = 0x01;
    /* UCS-2 whose units are all < 0x100. */
    at = find(&im, "\x12\x02\xac\x20", 4);
    im.buf[at + 3] = 0;
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    im.buf[at + 3] = 0x20;
    CHECK_RC(verify(&im, NULL, NULL), PF_OK);
    pf_free(im.buf);
}

static void test_tables_that_lie(void)
{
    /* A list of 3 strings: its table says item 1 is item 2. */
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 3, NULL) == PF_OK);
    const char *s[3] = {"zero", "one", "two"};
    for (int i = 0; i < 3; i++) {
        pf_write_item(w, NULL);
        pf_write_str(w, s[i], strlen(s[i]), 1, 1, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    no_checksums(&im);
    const uint64_t table = root + 18 + get64(im.buf + root + 10);
    CHECK(im.buf[root + 1] == 2);                 /* 2-byte offsets */
    uint8_t saved = im.buf[table + 2];
    im.buf[table + 2] = im.buf[table + 4];        /* item 1 -> item 2 */
    const char *msg;
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    CHECK(strstr(msg, "list table") != NULL);
    im.buf[table + 2] = saved;
    CHECK_RC(verify(&im, NULL, NULL), PF_OK);
    pf_free(im.buf);

    /* A dict of 40 int keys: two slots swapped, so that some keys are no
     * longer found from their home slot. */
    w = writer();
    root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 40, NULL) == PF_OK);
    for (int i = 0; i < 40; i++) {
        pf_write_item(w, NULL);
        pf_write_int(w, i * 7919, NULL);
        pf_write_key_done(w, NULL);
        pf_write_int(w, i, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    im = finish(w, root);
    no_checksums(&im);
    CHECK_RC(verify(&im, NULL, NULL), PF_OK);
    const uint64_t body_len = get64(im.buf + root + 10);
    const uint64_t nslots = get64(im.buf + root + 18);
    const int width = im.buf[root + 1];
    const uint64_t st = root + 26 + body_len;
    /* Move every slot one place up (the last wraps to the first). */
    uint8_t *copy = (uint8_t *)malloc((size_t)(nslots * width));
    REQUIRE(copy != NULL);
    memcpy(copy, im.buf + st, (size_t)(nslots * width));
    for (uint64_t k = 0; k < nslots; k++)
        memcpy(im.buf + st + ((k + 1) % nslots) * width, copy + k * width, (size_t)width);
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    CHECK(strstr(msg, "hash slot") != NULL);
    /* A slot emptied: the table no longer holds every record. */
    memcpy(im.buf + st, copy, (size_t)(nslots * width));
    for (uint64_t k = 0; k < nslots; k++)
        if (memcmp(copy + k * width, "\0\0\0\0\0\0\0\0", (size_t)width) != 0) {
            memset(im.buf + st + k * width, 0, (size_t)width);
            break;
        }
    CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
    free(copy);
    pf_free(im.buf);
}

static void test_checksums(void)
{
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
    pf_write_item(w, NULL);
    pf_write_str(w, "checksummed", 11, 1, 1, NULL);
    pf_write_item(w, NULL);
    pf_write_float(w, 0.1, NULL);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);
    pf_verify_stats st;
    CHECK_RC(verify(&im, NULL, &st), PF_OK);
    CHECK_EQ_U64(st.checksums, 1);
    CHECK_EQ_U64(st.containers, 1);
    CHECK_EQ_U64(st.values, 3);
    uint64_t at = find(&im, "checksummed", 11);
    im.buf[at] = 'C';                     /* still a valid image */
    const char *msg;
    CHECK_RC(verify(&im, &msg, &st), PF_ECORRUPT);
    CHECK(strstr(msg, "checksum") != NULL);
    no_checksums(&im);
    CHECK_RC(verify(&im, NULL, &st), PF_OK);
    CHECK_EQ_U64(st.checksums, 0);
    pf_free(im.buf);

    /* pf_checksum: every length up to 100, never 0, sensitive to each byte. */
    uint8_t b[100];
    for (int i = 0; i < 100; i++)
        b[i] = (uint8_t)(i * 37);
    for (size_t n = 0; n <= 100; n++) {
        uint64_t c = pf_checksum(b, n);
        CHECK(c != 0);
        if (n) {
            b[n - 1] ^= 1;
            CHECK(pf_checksum(b, n) != c);
            b[n - 1] ^= 1;
            CHECK(pf_checksum(b, n - 1) != c);
        }
    }
}

static void test_shared_subtrees_once(void)
{
    /* Each list holds the previous one twice: 2^40 paths, 41 lists. */
    pf_writer *w = writer();
    uint64_t prev = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 0, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    for (int d = 0; d < 40; d++) {
        uint64_t here = pf_writer_pos(w);
        REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
        for (int k = 0; k < 2; k++) {
            pf_write_item(w, NULL);
            REQUIRE(pf_write_ref(w, prev, NULL) == PF_OK);
        }
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        prev = here;
    }
    image im = finish(w, prev);
    pf_verify_stats st;
    CHECK_RC(verify(&im, NULL, &st), PF_OK);
    CHECK_EQ_U64(st.containers, 41);
    pf_free(im.buf);
}

/* A root of `n` records that share strings, a list and tuples across
 * records (so that ranges reach what others walk), with nested dicts. */
static image big_root(int type, uint32_t n)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, type, n, NULL) == PF_OK);
    uint64_t shared = 0;
    for (uint32_t i = 0; i < n; i++) {
        char k[24], sv[24];
        int kn = snprintf(k, sizeof k, "key-%07u", (unsigned)i);
        int sn = snprintf(sv, sizeof sv, "shared %u", (unsigned)(i % 97));
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        if (type != PF_LIST) {
            REQUIRE(pf_write_str(w, k, (size_t)kn, 1, 1, NULL) == PF_OK);
            REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
            if (type != PF_DICT)
                continue;
        }
        switch (i % 5) {
        case 0:
            REQUIRE(pf_write_int(w, (int64_t)i * 7919, NULL) == PF_OK);
            break;
        case 1:
            REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, i, NULL) == PF_OK);
            REQUIRE(pf_write_float(w, i / 8.0, NULL) == PF_OK);
            REQUIRE(pf_write_str(w, sv, (size_t)sn, 1, 1, NULL) == PF_OK);
            break;
        case 2:
            if (!shared) {
                shared = pf_writer_pos(w);
                REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
                REQUIRE(pf_write_item(w, NULL) == PF_OK);
                REQUIRE(pf_write_str(w, "in the shared list", 18, 1, 1, NULL) == PF_OK);
                REQUIRE(pf_write_item(w, NULL) == PF_OK);
                REQUIRE(pf_write_none(w, NULL) == PF_OK);
                REQUIRE(pf_write_end(w, NULL) == PF_OK);
            } else {
                REQUIRE(pf_write_ref(w, shared, NULL) == PF_OK);
            }
            break;
        case 3:
            REQUIRE(pf_write_container_begin(w, PF_DICT, 2, NULL) == PF_OK);
            for (int j = 0; j < 2; j++) {
                REQUIRE(pf_write_item(w, NULL) == PF_OK);
                REQUIRE(pf_write_str(w, j ? "b" : "a", 1, 1, 1, NULL) == PF_OK);
                REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
                REQUIRE(pf_write_str(w, sv, (size_t)sn, 1, 1, NULL) == PF_OK);
            }
            REQUIRE(pf_write_end(w, NULL) == PF_OK);
            break;
        default:
            REQUIRE(pf_write_str(w, sv, (size_t)sn, 1, 1, NULL) == PF_OK);
            break;
        }
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

/* The full check with at most `threads` threads and slot-check batches
 * of `batch` keys (0: the defaults). */
static int verify_batch(pf_image *img, pf_verify_stats *st, unsigned threads,
                        uint32_t batch, pf_error *err)
{
    pf_verify_tuning t;
    memset(&t, 0, sizeof t);
    t.threads = threads;
    t.batch = batch;
    return pf_verify_tuned(img, st, &t, err);
}

static int verify_threads(const image *im, unsigned threads, pf_verify_stats *st)
{
    pf_image *img;
    REQUIRE(pf_image_open_buffer(im->buf, im->len, &img, NULL) == PF_OK);
    int rc = verify_batch(img, st, threads, 0, NULL);
    pf_image_close(img);
    return rc;
}

static void test_threads(void)
{
    const int types[3] = {PF_DICT, PF_SET, PF_LIST};
    uint64_t rnd = 0x9E3779B97F4A7C15u;
    for (int k = 0; k < 3; k++) {
        image im = big_root(types[k], 100000);
        pf_verify_stats one, many;
        CHECK_RC(verify_threads(&im, 1, &one), PF_OK);
        for (unsigned t = 2; t <= 5; t++) {
            CHECK_RC(verify_threads(&im, t, &many), PF_OK);
            CHECK_EQ_U64(many.values, one.values);
            CHECK_EQ_U64(many.containers, one.containers);
            CHECK_EQ_U64(many.keys, one.keys);
        }
        /* damage, judged by structure: one walk and four threads agree */
        no_checksums(&im);
        for (int d = 0; d < 40; d++) {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            const uint64_t at = 128 + rnd % (im.len - 128 - 64);
            const uint8_t was = im.buf[at];
            im.buf[at] ^= (uint8_t)(1u << (rnd >> 40) % 8);
            const int a = verify_threads(&im, 1, NULL);
            const int b = verify_threads(&im, 4, NULL);
            CHECK((a == PF_OK) == (b == PF_OK));
            im.buf[at] = was;
        }
        pf_free(im.buf);
    }
}

/* A set of n distinct str keys with key `dup` written again at place
 * `at` (no key written again if at < 0). */
static image set_with_dup(uint32_t n, uint32_t dup, int64_t at)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_SET, n, NULL) == PF_OK);
    for (uint32_t i = 0, k = 0; i < n; i++) {
        char s[24];
        const uint32_t which = (int64_t)i == at ? dup : k++;
        const int sn = snprintf(s, sizeof s, "key-%07u", (unsigned)which);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_str(w, s, (size_t)sn, 1, 1, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

/* Two equal keys far apart in a big slot table: found whether they wait
 * in one batch, in two (the later one reads the earlier one's key), or in
 * two threads' ranges; a sound table passes every way, with the same
 * counts. */
static void test_equal_keys_far(void)
{
    const uint32_t n = 100000;
    const uint32_t batches[4] = {0, 64, 1000, 70000};
    image good = set_with_dup(n, 0, -1);
    pf_image *img;
    REQUIRE(pf_image_open_buffer(good.buf, good.len, &img, NULL) == PF_OK);
    pf_verify_stats one, st;
    CHECK_RC(verify_batch(img, &one, 1, 0, NULL), PF_OK);
    CHECK_EQ_U64(one.keys, n);
    for (unsigned t = 1; t <= 4; t++)
        for (int b = 0; b < 4; b++) {
            CHECK_RC(verify_batch(img, &st, t, batches[b], NULL), PF_OK);
            CHECK_EQ_U64(st.values, one.values);
            CHECK_EQ_U64(st.keys, one.keys);
        }
    pf_image_close(img);
    pf_free(good.buf);
    const struct { uint32_t dup; int64_t at; } cases[] = {
        {3, n - 5}, {n - 9, n - 2}, {50001, 50003}, {0, 1}, {77, 49999},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        image im = set_with_dup(n, cases[c].dup, cases[c].at);
        REQUIRE(pf_image_open_buffer(im.buf, im.len, &img, NULL) == PF_OK);
        for (unsigned t = 1; t <= 4; t++)
            for (int b = 0; b < 4; b++) {
                pf_error e;
                memset(&e, 0, sizeof e);
                CHECK_RC(verify_batch(img, NULL, t, batches[b], &e), PF_ECORRUPT);
                CHECK(e.msg && strstr(e.msg, "equal keys") != NULL);
            }
        pf_image_close(img);
        pf_free(im.buf);
    }
}

/* A short str with a byte >= 0x80 (R15) is found at every length and
 * place, whether the string is followed by 8 bytes or more of DATA or
 * ends it (the check reads whole words where it can). */
static void test_short_str_bytes(void)
{
    for (int last = 0; last <= 1; last++)
        for (unsigned n = 1; n <= 20; n++)
            for (unsigned j = 0; j < n; j++) {
                char str[24];
                memset(str, 'q', n);
                str[0] = 'Z'; /* a pattern to find: no other string has it */
                pf_writer *w = writer();
                const uint64_t root = pf_writer_pos(w);
                REQUIRE(pf_write_container_begin(w, PF_LIST, 2, NULL) == PF_OK);
                for (int i = 0; i < 2; i++) {
                    REQUIRE(pf_write_item(w, NULL) == PF_OK);
                    if (i == last)
                        REQUIRE(pf_write_str(w, str, n, 1, 1, NULL) == PF_OK);
                    else
                        REQUIRE(pf_write_int(w, 7, NULL) == PF_OK);
                }
                REQUIRE(pf_write_end(w, NULL) == PF_OK);
                image im = finish(w, root);
                no_checksums(&im);
                const char *msg;
                CHECK_RC(verify(&im, &msg, NULL), PF_OK);
                const uint64_t at = find(&im, str, n);
                im.buf[at + j] |= 0x80;
                CHECK_RC(verify(&im, &msg, NULL), PF_ECORRUPT);
                CHECK(strstr(msg, "ASCII") != NULL);
                pf_free(im.buf);
            }
}

int main(void)
{
    test_short_str_bytes();
    test_equal_keys_far();
    test_threads();
    test_equal_keys();
    test_canonical_forms();
    test_tables_that_lie();
    test_checksums();
    test_shared_subtrees_once();
    CHECK_RC(pf_image_verify(NULL, NULL, NULL), PF_EINVAL);
    return check_report();
}
