/*
 * test_encoding.c -- the compact encodings of docs/FORMAT.md and the reader
 * entry points that go with them: decimal floats (R25: exact bytes, the
 * writer's canonical choice against a brute-force reference written here,
 * bit-exact round trips of every kind of double, non-canonical and hostile
 * forms), short tuples (R26), pf_read_ex with PF_READ_SHALLOW, pf_find's
 * key_end protocol, and the writer's re-anchoring of frequent strings
 * (R27).
 */
#include <float.h>
#include <math.h>

#include "check.h"
#include "permafrost.h"
#include "walk.h"

/* ------------------------------------------------------------------ helpers */

static pf_image *finish_open(pf_writer *w, uint64_t root, uint8_t **buf_out)
{
    uint8_t id[16] = {0};
    uint8_t *buf;
    uint64_t len;
    REQUIRE(pf_writer_finish(w, root, id, &buf, &len, NULL) == PF_OK);
    pf_writer_free(w);
    pf_image *img;
    REQUIRE(pf_image_open_buffer(buf, len, &img, NULL) == PF_OK);
    *buf_out = buf;
    return img;
}

/* An image whose DATA section is exactly the `n` bytes given (root at its
 * first byte): for hand-made encodings. */
static pf_image *raw_image(const uint8_t *data, size_t n, uint8_t **buf_out)
{
    const size_t len = 128 + n + 32;
    uint8_t *b = (uint8_t *)calloc(1, len);
    REQUIRE(b != NULL);
    memcpy(b, "\x89PFROST\n", 8);
    b[8] = 1;
    uint32_t hl = 128, one = 1;
    uint64_t v;
    memcpy(b + 12, &hl, 4);
    v = len; memcpy(b + 48, &v, 8);
    v = 128; memcpy(b + 56, &v, 8);
    v = 128 + n; memcpy(b + 64, &v, 8);
    memcpy(b + 72, &one, 4);
    memcpy(b + 128, data, n);
    uint8_t *s = b + 128 + n;
    memcpy(s, &one, 4);
    memcpy(s + 4, &one, 4);
    v = 128; memcpy(s + 8, &v, 8);
    v = n; memcpy(s + 16, &v, 8);
    v = pf_hash_bytes(b, 120, 0);
    memcpy(b + 120, &v, 8);
    pf_image *img;
    REQUIRE(pf_image_open_buffer(b, len, &img, NULL) == PF_OK);
    *buf_out = b;
    return img;
}

static void check_walk_strict(const pf_image *img)
{
    walk_state ws = {1, 10000000, 100, 0, 0};
    CHECK_RC(walk(img, pf_image_root(img), 0, &ws), PF_OK);
}

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static unsigned varint_put(uint8_t *p, uint64_t v)
{
    unsigned n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t x = rng_state;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 32);
}

/* ------------------------------------------------------------------ floats */

static const double p10[10] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};

/* The canonical encoding of R25 by brute force, from the rule's text: the
 * decimal form when some e in 0..9 and m give (double)m / 10^e == v and an
 * encoding shorter than 9 bytes, with the smallest such e; else 0x04 and
 * the 8 bytes. Candidates m are every integer within 2 of v * 10^e as
 * computed in double (the exact m is always among them for |m| <= 2^48). */
static size_t reference_float(double v, uint8_t out[10])
{
    if (v == v && bits_of(v) != bits_of(-0.0) && fabs(v) <= 4e14) {
        for (int e = 0; e <= 9; e++) {
            double x = v * p10[e];
            if (fabs(x) > 281474976710660.0)
                break;
            for (int64_t m = (int64_t)x - 2; m <= (int64_t)x + 2; m++) {
                if ((double)m / p10[e] != v)
                    continue;
                uint64_t z = m < 0 ? 2 * (uint64_t)(-m) - 1 : 2 * (uint64_t)m;
                uint8_t tmp[10];
                unsigned vl = varint_put(tmp, z);
                if (1 + vl >= 9)
                    continue;
                out[0] = (uint8_t)(0x30 + e);
                memcpy(out + 1, tmp, vl);
                return 1 + vl;
            }
        }
    }
    out[0] = 0x04;
    memcpy(out + 1, &v, 8);
    return 9;
}

static long float_mismatches;

/* Writes v alone, compares the bytes with the reference and reads it back
 * bit for bit (NaN payloads included: they take the plain form). */
static void check_float(double v)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 3, NULL) == PF_OK);
    REQUIRE(pf_write_float(w, v, NULL) == PF_OK);
    const uint64_t end = pf_writer_pos(w);
    uint8_t *buf;
    pf_image *img = finish_open(w, 128, &buf);
    uint8_t want[10];
    size_t wn = reference_float(v, want);
    pf_val r;
    int ok = end - 128 == wn && memcmp(buf + 128, want, wn) == 0 &&
             pf_read(img, 128, &r, NULL) == PF_OK && r.type == PF_FLOAT &&
             bits_of(r.u.f) == bits_of(v) && r.end == end && r.next == end;
    uint64_t h;
    ok = ok && pf_hash_at(img, 128, &h, NULL) == PF_OK &&
         h == pf_hash_double(3, v);
    if (!ok && ++float_mismatches <= 10)
        fprintf(stderr, "float %.17g (bits %016llx): written %llu bytes, "
                "type 0x%02x\n", v, (unsigned long long)bits_of(v),
                (unsigned long long)(end - 128), buf[128]);
    CHECK(ok);
    pf_image_close(img);
    pf_free(buf);
}

static void test_float_exact_bytes(void)
{
    static const struct { double v; const char *enc; size_t n; } cases[] = {
        {0.0, "\x30\x00", 2},
        {1.0, "\x30\x02", 2},
        {-1.0, "\x30\x01", 2},
        {1.5, "\x31\x1E", 2},             /* m = 15, e = 1 */
        {-2.5, "\x31\x31", 2},            /* m = -25: zigzag 49 */
        {100.0, "\x30\xC8\x01", 3},       /* m = 100: not 1e2 with e < 0 */
        {0.25, "\x32\x32", 2},            /* m = 25, e = 2 */
        {1e-9, "\x39\x02", 2},
        {-1e-9, "\x39\x01", 2},
        {1234.56, "\x32\x80\x89\x0F", 4}, /* m = 123456: zigzag 246912 */
        {0.1, "\x31\x02", 2},
        {1e9, "\x30\x80\xA8\xD6\xB9\x07", 6},
        {281474976710655.0, "\x30\xFE\xFF\xFF\xFF\xFF\xFF\x7F", 8}, /* 2^48-1 */
        {-281474976710656.0, "\x30\xFF\xFF\xFF\xFF\xFF\xFF\x7F", 8}, /* -2^48 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pf_writer *w;
        REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
        CHECK_RC(pf_write_float(w, cases[i].v, NULL), PF_OK);
        CHECK_EQ_U64(pf_writer_pos(w) - 128, cases[i].n);
        uint8_t *buf;
        pf_image *img = finish_open(w, 128, &buf);
        CHECK(memcmp(buf + 128, cases[i].enc, cases[i].n) == 0);
        pf_val v;
        CHECK(pf_read(img, 128, &v, NULL) == PF_OK && v.type == PF_FLOAT &&
              bits_of(v.u.f) == bits_of(cases[i].v));
        pf_image_close(img);
        pf_free(buf);
    }
    /* The plain form: -0.0 (m = 0 is +0.0), 2^48 (zigzag needs 8 varint
     * bytes: 9 in all, not shorter), 0.1 + 0.2, 1e-10 (e would be 10),
     * infinities, NaN. */
    const double plain[] = {-0.0, 281474976710656.0, 0.1 + 0.2, 1e-10,
                            1.0 / 3.0, HUGE_VAL, -HUGE_VAL, NAN, DBL_MAX,
                            DBL_MIN, 4.9406564584124654e-324};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        pf_writer *w;
        REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
        CHECK_RC(pf_write_float(w, plain[i], NULL), PF_OK);
        CHECK_EQ_U64(pf_writer_pos(w) - 128, 9);
        uint8_t *buf;
        pf_image *img = finish_open(w, 128, &buf);
        CHECK(buf[128] == 0x04 && memcmp(buf + 129, &plain[i], 8) == 0);
        pf_image_close(img);
        pf_free(buf);
    }
}

static void test_float_canonical(void)
{
    const double fixed[] = {
        0.0, -0.0, 1.0, 0.5, 0.1, 0.2, 0.3, 0.7, 2.675, 1e-9, 1e-8, 9e-10,
        1e-10, 123.456, -123.456, 3.14159, 2.718281828, 1e15, 1e16, 1e300,
        -1e-300, 5e-324, 9007199254740992.0, 9007199254740993.0,
        281474976710655.0, 281474976710656.0, -281474976710656.0,
        -281474976710657.0, 28147497671065.5, 28147497671065.6,
        2814749767106.55, 0.000123, 1.0000000001, 0.999999999, 99.99,
        4503599627370495.5, 1e5 + 0.1, 1.25e-7, 6.02214076e2, 1.7976931348623157e308,
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        check_float(fixed[i]);
        check_float(-fixed[i]);
    }
    for (int i = 0; i < 20000; i++) {
        /* random bit patterns: nearly all take the plain form */
        check_float(double_of(rnd()));
        /* short decimals m / 10^e, the kind data files hold */
        const int e = (int)(rnd() % 10);
        const int digits = 1 + (int)(rnd() % 15);
        int64_t m = (int64_t)(rnd() % 1000000000000000ull);
        for (int k = digits; k < 15; k++)
            m /= 10;
        if (rnd() & 1)
            m = -m;
        check_float((double)m / p10[e]);
        /* prices and measurements: round(x, 2) of uniform x */
        check_float((double)(int64_t)(rnd() % 1000000) / 100.0);
        /* neighbours of decimals: one ulp away */
        check_float(nextafter((double)m / p10[e], HUGE_VAL));
        /* integers of every size, and halves */
        check_float((double)(int64_t)(rnd() >> (rnd() % 64)));
        check_float((double)(int64_t)(rnd() >> (10 + rnd() % 54)) + 0.5);
    }
    CHECK_EQ_U64(float_mismatches, 0);
}

/* Forms a canonical writer never makes, and hostile ones. */
static void test_float_reader(void)
{
    uint8_t d[16], *buf;
    pf_image *img;
    pf_val v;
    pf_error e;
    /* 1.5 with e = 9 (m = 1500000000): not canonical, still 1.5 */
    d[0] = 0x39;
    unsigned n = 1 + varint_put(d + 1, 3000000000ull);
    img = raw_image(d, n, &buf);
    CHECK(pf_read(img, 128, &v, &e) == PF_OK && v.type == PF_FLOAT &&
          v.u.f == 1.5 && v.end == 128 + n);
    pf_image_close(img);
    free(buf);
    /* |m| = 2^53 - 1 both ways: the largest allowed */
    d[0] = 0x30;
    n = 1 + varint_put(d + 1, (1ull << 54) - 2);
    img = raw_image(d, n, &buf);
    CHECK(pf_read(img, 128, &v, &e) == PF_OK && v.u.f == 9007199254740991.0);
    pf_image_close(img);
    free(buf);
    d[0] = 0x33;
    n = 1 + varint_put(d + 1, (1ull << 54) - 3);
    img = raw_image(d, n, &buf);
    CHECK(pf_read(img, 128, &v, &e) == PF_OK &&
          v.u.f == -9007199254740991.0 / 1000.0);
    pf_image_close(img);
    free(buf);
    /* |m| = 2^53: m = -2^53 (zigzag 2^54 - 1) and m = 2^53, and beyond */
    const uint64_t bad[] = {(1ull << 54) - 1, 1ull << 54, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        d[0] = 0x35;
        n = 1 + varint_put(d + 1, bad[i]);
        img = raw_image(d, n, &buf);
        CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
        CHECK_EQ_U64(e.offset, 128);
        pf_image_close(img);
        free(buf);
    }
    /* the varint runs past DATA */
    d[0] = 0x32; d[1] = 0x80; d[2] = 0x80;
    img = raw_image(d, 3, &buf);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    pf_image_close(img);
    free(buf);
    d[0] = 0x32;
    img = raw_image(d, 1, &buf);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    pf_image_close(img);
    free(buf);
    /* inside a short tuple: (0.25, 7) = 1A 32 32 08 07 */
    memcpy(d, "\x1A\x32\x32\x08\x07", 5);
    img = raw_image(d, 5, &buf);
    CHECK(pf_read(img, 128, &v, &e) == PF_OK && v.type == PF_TUPLE &&
          v.u.tup.count == 2 && v.u.tup.first == 129 && v.end == 133);
    uint64_t h, ih[2] = {pf_hash_double(0, 0.25), pf_hash_i64(0, 7)};
    CHECK(pf_hash_at(img, 128, &h, &e) == PF_OK &&
          h == pf_hash_tuple_of(0, ih, 2));
    pf_image_close(img);
    free(buf);
}

/* A lookup probe: a number (double, or int when is_int), compared with
 * stored keys by value like Python does. */
typedef struct num_probe {
    int is_int;
    int64_t i;
    double f;
} num_probe;

static int match_num(void *ctx, const pf_image *img, uint64_t kp,
                     uint64_t *key_end)
{
    const num_probe *p = (const num_probe *)ctx;
    pf_val v;
    if (*key_end != 0)
        return PF_EINVAL; /* pf_find presets it to 0 */
    if (pf_read(img, kp, &v, NULL) != PF_OK)
        return PF_ECORRUPT;
    double x;
    if (v.type == PF_FLOAT) x = v.u.f;
    else if (v.type == PF_INT) x = (double)v.u.i;
    else return 0;
    *key_end = v.next;
    return p->is_int ? x == (double)p->i : x == p->f;
}

/* Float keys in the decimal form are found by value (section 5). */
static void test_float_keys(void)
{
    enum { N = 300 };
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 99, NULL) == PF_OK);
    double keys[N];
    REQUIRE(pf_write_container_begin(w, PF_DICT, N, NULL) == PF_OK);
    for (int i = 0; i < N; i++) {
        keys[i] = i % 3 == 0 ? i * 0.01 : i % 3 == 1 ? i + 1000.5 : i / 7.0;
        pf_write_item(w, NULL);
        CHECK_RC(pf_write_float(w, keys[i], NULL), PF_OK);
        CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
        pf_write_int(w, i, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, 128, &buf);
    const uint64_t S = pf_image_hash_seed(img);
    pf_val d, v;
    REQUIRE(pf_read(img, 128, &d, NULL) == PF_OK && d.type == PF_DICT);
    CHECK(d.u.c.nslots > N);
    long found = 0, right = 0, decimal = 0, ints = 0;
    uint64_t cursor = 0, kp, vp;
    while (pf_record_next(img, &d, &cursor, &kp, &vp, NULL) == 1)
        decimal += buf[kp] >= 0x30 && buf[kp] <= 0x39;
    for (int i = 0; i < N; i++) {
        num_probe p = {0, 0, keys[i]};
        if (pf_find(img, &d, pf_hash_double(S, keys[i]), match_num, &p, &kp,
                    &vp, NULL) == 1) {
            found++;
            right += pf_read(img, vp, &v, NULL) == PF_OK && v.type == PF_INT &&
                     v.u.i == i;
        }
        if (keys[i] == (double)(int64_t)keys[i]) { /* 0.0, 2.0, 5.0, ... */
            num_probe q = {1, (int64_t)keys[i], 0};
            ints += pf_find(img, &d, pf_hash_i64(S, q.i), match_num, &q, &kp,
                            &vp, NULL) == 1;
            ints--;
        }
        num_probe m = {0, 0, keys[i] + 0.001};
        found -= pf_find(img, &d, pf_hash_double(S, m.f), match_num, &m, &kp,
                         &vp, NULL) != 0;
    }
    CHECK_EQ_U64(found, N);
    CHECK_EQ_U64(right, N);
    CHECK_EQ_U64(ints, 0);
    CHECK(decimal >= 2 * N / 3); /* i * 0.01 and i + 0.5 at least */
    pf_image_close(img);
    pf_free(buf);
}

/* ------------------------------------------------------------------ tuples */

static void test_short_tuples(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 5, NULL) == PF_OK);
    uint64_t pos[10];
    REQUIRE(pf_write_container_begin(w, PF_LIST, 10, NULL) == PF_OK);
    for (uint64_t n = 0; n <= 9; n++) { /* tuples of 0..9 small ints */
        pf_write_item(w, NULL);
        pos[n] = pf_writer_pos(w);
        CHECK_RC(pf_write_tuple_begin(w, n, NULL), PF_OK);
        for (uint64_t k = 0; k < n; k++)
            pf_write_int(w, (int64_t)k, NULL);
    }
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, 128, &buf);
    const uint64_t S = pf_image_hash_seed(img);
    for (uint64_t n = 0; n <= 9; n++) {
        const uint64_t p = pos[n];
        /* R26: 0x18 + n for 1..7 items, else 0x18 and a count varint */
        const int short_form = n >= 1 && n <= 7;
        CHECK_EQ_U64(buf[p], short_form ? 0x18 + n : 0x18);
        if (!short_form)
            CHECK_EQ_U64(buf[p + 1], n);
        const uint64_t first = p + (short_form ? 1 : 2);
        pf_val v;
        CHECK(pf_read(img, p, &v, NULL) == PF_OK && v.type == PF_TUPLE &&
              v.u.tup.count == n && v.u.tup.first == first &&
              v.end == first + 2 * n && v.next == v.end);
        uint64_t cur = first, ih[9], h;
        for (uint64_t k = 0; k < n; k++) {
            pf_val it;
            CHECK(pf_read(img, cur, &it, NULL) == PF_OK && it.type == PF_INT &&
                  it.u.i == (int64_t)k);
            ih[k] = pf_hash_i64(S, (int64_t)k);
            cur = it.next;
        }
        CHECK(pf_hash_at(img, p, &h, NULL) == PF_OK &&
              h == pf_hash_tuple_of(S, ih, (size_t)n));
        /* Shallow: the items are not walked, so the end is not known. */
        pf_val sv;
        CHECK(pf_read_ex(img, p, PF_READ_SHALLOW, &sv, NULL) == PF_OK &&
              sv.type == PF_TUPLE && sv.u.tup.count == n &&
              sv.u.tup.first == first && sv.end == 0 && sv.next == 0);
        CHECK(pf_read_ex(img, p, 0, &sv, NULL) == PF_OK && sv.end == v.end &&
              sv.next == v.next);
    }
    check_walk_strict(img);
    pf_image_close(img);
    pf_free(buf);

    /* A reader takes the long form for any count, and nested short forms:
     * ((1,), 18 03 <2, 3, 4>) written by hand, then a REF to the outer one. */
    static const uint8_t d[] = {0x1A, 0x19, 0x08, 0x01, 0x18, 0x03, 0x08, 0x02,
                                0x08, 0x03, 0x08, 0x04, 0x03, 0x0C};
    pf_image *im2 = raw_image(d, sizeof d, &buf);
    pf_val v, sv;
    CHECK(pf_read(im2, 128, &v, NULL) == PF_OK && v.type == PF_TUPLE &&
          v.u.tup.count == 2 && v.end == 140);
    CHECK(pf_read(im2, 129, &v, NULL) == PF_OK && v.u.tup.count == 1 &&
          v.end == 132);
    CHECK(pf_read(im2, 132, &v, NULL) == PF_OK && v.u.tup.count == 3 &&
          v.u.tup.first == 134 && v.end == 140);
    /* Shallow through a REF: next is past the REF, end stays unknown. */
    CHECK(pf_read_ex(im2, 140, PF_READ_SHALLOW, &sv, NULL) == PF_OK &&
          sv.type == PF_TUPLE && sv.pos == 128 && sv.next == 142 &&
          sv.end == 0);
    CHECK(pf_read(im2, 140, &v, NULL) == PF_OK && v.pos == 128 &&
          v.next == 142 && v.end == 140);
    /* Shallow changes nothing for other types. */
    pf_val a, b;
    CHECK(pf_read_ex(im2, 130, PF_READ_SHALLOW, &a, NULL) == PF_OK &&
          pf_read(im2, 130, &b, NULL) == PF_OK && a.type == PF_INT &&
          a.u.i == 1 && a.end == b.end && a.next == b.next);
    pf_image_close(im2);
    free(buf);

    /* Hostile: a short tuple whose items run past DATA, and one holding a
     * REF back to itself (R18). */
    static const uint8_t t7[] = {0x1F, 0x00, 0x00};
    pf_image *im3 = raw_image(t7, sizeof t7, &buf);
    pf_error e;
    CHECK_RC(pf_read(im3, 128, &v, &e), PF_ECORRUPT);
    CHECK_RC(pf_read_ex(im3, 128, PF_READ_SHALLOW, &v, &e), PF_ECORRUPT);
    pf_image_close(im3);
    free(buf);
    static const uint8_t t2[] = {0x1A, 0x08, 0x01, 0x03, 0x03};
    pf_image *im4 = raw_image(t2, sizeof t2, &buf);
    uint64_t h;
    CHECK(pf_read(im4, 128, &v, &e) == PF_OK && v.end == 133);
    CHECK_RC(pf_hash_at(im4, 128, &h, &e), PF_ECORRUPT);
    pf_image_close(im4);
    free(buf);
}

/* ------------------------------------------------------------------ key_end */

typedef struct end_probe {
    const char *s;
    size_t n;
    int mode;       /* 0: leave key_end; 1: set it right; 2, 3: set it wrong */
    long calls;
} end_probe;

static int match_end(void *ctx, const pf_image *img, uint64_t kp,
                     uint64_t *key_end)
{
    end_probe *p = (end_probe *)ctx;
    pf_val v;
    p->calls++;
    if (*key_end != 0)
        return PF_EINVAL;
    if (pf_read(img, kp, &v, NULL) != PF_OK)
        return PF_ECORRUPT;
    if (v.type != PF_STR || v.u.s.len != p->n ||
        memcmp(v.u.s.data, p->s, p->n) != 0)
        return 0;
    if (p->mode == 1)
        *key_end = v.next;
    else if (p->mode == 2)
        *key_end = pf_image_data_end(img); /* past the body */
    else if (p->mode == 3)
        *key_end = kp;                     /* not after the key */
    return 1;
}

static void test_key_end(void)
{
    for (int slotted = 0; slotted < 2; slotted++) {
        const int n = slotted ? 50 : 5;
        pf_writer *w;
        REQUIRE(pf_writer_new(&w, 11, NULL) == PF_OK);
        char k[32];
        REQUIRE(pf_write_container_begin(w, PF_DICT, (uint64_t)n, NULL) == PF_OK);
        for (int i = 0; i < n; i++) {
            int kl = snprintf(k, sizeof k, "a key long enough %d", i % 7);
            pf_write_item(w, NULL);
            if (i >= 7) /* later keys differ, their text repeats: REFs */
                kl = snprintf(k, sizeof k, "key %d", i);
            pf_write_str(w, k, (size_t)kl, 1, 1, NULL);
            pf_write_key_done(w, NULL);
            pf_write_int(w, 1000 + i, NULL);
        }
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        uint8_t *buf;
        pf_image *img = finish_open(w, 128, &buf);
        pf_val d, v;
        REQUIRE(pf_read(img, 128, &d, NULL) == PF_OK);
        CHECK(slotted ? d.u.c.nslots > 0 : d.u.c.nslots == 0);
        const uint64_t S = pf_image_hash_seed(img);
        for (int i = 0; i < n; i++) {
            int kl = i >= 7 ? snprintf(k, sizeof k, "key %d", i)
                            : snprintf(k, sizeof k, "a key long enough %d", i);
            const uint64_t h = pf_hash_str(S, k, (size_t)kl, 1);
            uint64_t kp0, vp0, kp, vp;
            end_probe p = {k, (size_t)kl, 0, 0};
            CHECK_RC(pf_find(img, &d, h, match_end, &p, &kp0, &vp0, NULL), 1);
            CHECK(pf_read(img, vp0, &v, NULL) == PF_OK && v.type == PF_INT &&
                  v.u.i == 1000 + i);
            p.mode = 1;
            CHECK_RC(pf_find(img, &d, h, match_end, &p, &kp, &vp, NULL), 1);
            CHECK(kp == kp0 && vp == vp0);
            pf_error e;
            p.mode = 2; /* the slot path checks it; the scan ignores it */
            CHECK_RC(pf_find(img, &d, h, match_end, &p, &kp, &vp, &e),
                     slotted ? PF_ECORRUPT : 1);
            p.mode = 3;
            CHECK_RC(pf_find(img, &d, h, match_end, &p, &kp, &vp, &e),
                     slotted ? PF_EINVAL : 1);
            if (!slotted)
                CHECK(vp == vp0);
        }
        pf_image_close(img);
        pf_free(buf);
    }
}

/* ------------------------------------------------------------------ str keys */

/* A str key as code units. */
typedef struct units_key {
    uint8_t u[4 * 140];
    size_t n;
    int width;
} units_key;

static void put_unit(units_key *k, uint32_t c)
{
    if (k->width == 1)
        k->u[k->n] = (uint8_t)c;
    else if (k->width == 2) {
        const uint16_t x = (uint16_t)c;
        memcpy(k->u + 2 * k->n, &x, 2);
    } else
        memcpy(k->u + 4 * k->n, &c, 4);
    k->n++;
}

/* Key i of test_find_str, in one of its stored forms by i % 7. */
static units_key key_of(int i)
{
    units_key k = {{0}, 0, 1};
    char t[160];
    int n = 0;
    switch (i % 7) {
    case 0: /* a short ASCII str in place (R15); key 0 is "" */
        n = i ? snprintf(t, sizeof t, "k%d", i) : 0;
        break;
    case 1: /* ASCII too long for R15 */
        n = snprintf(t, sizeof t, "%0135d", i);
        break;
    case 2: /* latin-1 */
        n = snprintf(t, sizeof t, "\xe9t\xe9 %d", i);
        break;
    case 5: /* met before as a value: stored as a REF or SREF (R17, R28) */
    case 6:
        n = snprintf(t, sizeof t, "shared key %d", i);
        break;
    default: /* UCS-2, UCS-4 */
        k.width = i % 7 == 3 ? 2 : 4;
        put_unit(&k, k.width == 2 ? 0x101 : 0x1F600);
        n = snprintf(t, sizeof t, "%d", i);
        for (int j = 0; j < n; j++)
            put_unit(&k, (uint8_t)t[j]);
        return k;
    }
    for (int j = 0; j < n; j++)
        put_unit(&k, (uint8_t)t[j]);
    return k;
}

static int is_ascii_key(const units_key *k)
{
    for (size_t j = 0; j < k->n; j++)
        if (k->width != 1 || (k->u[j] & 0x80))
            return 0;
    return 1;
}

/* pf_find match: the stored key is the str *ctx. */
static int match_units(void *ctx, const pf_image *img, uint64_t kp,
                       uint64_t *key_end)
{
    const units_key *k = (const units_key *)ctx;
    pf_val v;
    (void)key_end;
    if (pf_read(img, kp, &v, NULL) != PF_OK)
        return PF_ECORRUPT;
    return v.type == PF_STR && v.u.s.len == k->n && v.u.s.width == k->width &&
           (k->n == 0 || memcmp(v.u.s.data, k->u, k->n * (size_t)k->width) == 0);
}

/* pf_find_str finds what pf_find finds, over str keys of every stored form
 * (key_of), in a scanned dict and in slotted ones of each slot width; a key
 * that differs in its last unit, in its length, or only in its width is
 * not found. */
static void test_find_str(void)
{
    static const int sizes[] = {7, 70, 3000, 30000};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        const int n = sizes[z];
        pf_writer *w;
        REQUIRE(pf_writer_new(&w, 5, NULL) == PF_OK);
        const uint64_t root = pf_writer_pos(w);
        REQUIRE(pf_write_container_begin(w, PF_LIST, 4, NULL) == PF_OK);
        for (int rep = 0; rep < 3; rep++) { /* the shared keys, 3 times */
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
            REQUIRE(pf_write_container_begin(w, PF_LIST, (uint64_t)n, NULL) == PF_OK);
            for (int i = 0; i < n; i++) {
                units_key k = key_of(i % 7 >= 5 ? i : 0);
                REQUIRE(pf_write_item(w, NULL) == PF_OK);
                REQUIRE(pf_write_str(w, k.u, k.n, k.width, is_ascii_key(&k),
                                     NULL) == PF_OK);
            }
            REQUIRE(pf_write_end(w, NULL) == PF_OK);
        }
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_container_begin(w, PF_DICT, (uint64_t)n, NULL) == PF_OK);
        for (int i = 0; i < n; i++) {
            units_key k = key_of(i);
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
            REQUIRE(pf_write_str(w, k.u, k.n, k.width, is_ascii_key(&k),
                                 NULL) == PF_OK);
            REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, i, NULL) == PF_OK);
        }
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        uint8_t *buf;
        pf_image *img = finish_open(w, root, &buf);
        pf_val l, d, v;
        REQUIRE(pf_read(img, root, &l, NULL) == PF_OK);
        uint64_t dp = 0;
        REQUIRE(pf_list_item(img, &l, 3, &dp, NULL) == PF_OK);
        REQUIRE(pf_read(img, dp, &d, NULL) == PF_OK && d.type == PF_DICT);
        CHECK(z ? d.u.c.nslots > 0 : d.u.c.nslots == 0);
        const uint64_t S = pf_image_hash_seed(img);
        long refs = 0, wrong = 0;
        for (int i = 0; i < n; i++) {
            units_key k = key_of(i);
            uint64_t kp0 = 0, vp0 = 0, kp = 1, vp = 1;
            const uint64_t h = pf_hash_str(S, k.u, k.n, k.width);
            CHECK_RC(pf_find(img, &d, h, match_units, &k, &kp0, &vp0, NULL), 1);
            const int rc = pf_find_str(img, &d, k.u, k.n, k.width, NULL, NULL,
                                       &kp, &vp, NULL);
            if (rc != 1 || kp != kp0 || vp != vp0 ||
                pf_read(img, vp, &v, NULL) != PF_OK || v.type != PF_INT ||
                v.u.i != i)
                wrong++;
            const unsigned t = pf_image_base(img)[kp0];
            refs += t == 0x03 || t == 0x07;
            /* the last unit made 'x', the first one dropped, an 'x' added:
             * no key ends in 'x' or starts as another key's second unit */
            units_key m = k;
            if (m.n) {
                m.n--;
                put_unit(&m, 'x');
                wrong += pf_find_str(img, &d, m.u, m.n, m.width, NULL, NULL,
                                     &kp, &vp, NULL) != 0;
                wrong += pf_find_str(img, &d, k.u + k.width, k.n - 1, k.width,
                                     NULL, NULL, &kp, &vp, NULL) != 0;
            }
            m = k;
            put_unit(&m, 'x');
            wrong += pf_find_str(img, &d, m.u, m.n, m.width, NULL, NULL, &kp,
                                 &vp, NULL) != 0;
            if (is_ascii_key(&k) && k.n) { /* the same str, units of 2 bytes */
                units_key wide = {{0}, 0, 2};
                for (size_t j = 0; j < k.n; j++)
                    put_unit(&wide, k.u[j]);
                wrong += pf_find_str(img, &d, wide.u, wide.n, 2, NULL, NULL,
                                     &kp, &vp, NULL) != 0;
            }
        }
        if (wrong)
            fprintf(stderr, "    find_str: %ld wrong answers in %d keys\n",
                    wrong, n);
        CHECK(wrong == 0);
        CHECK(refs > 0); /* some keys were stored as REF or SREF */
        check_walk_strict(img);
        CHECK_RC(pf_image_verify(img, NULL, NULL), PF_OK);
        pf_image_close(img);
        pf_free(buf);
    }
}

/* A short ASCII key (R15) of 4 or 12 bytes whose 4th byte was changed to
 * 0xE9: no valid key holds it; pf_find_str finds neither the key it was
 * nor the latin-1 str of its bytes, in the slots (its slot moved where that
 * str's hash leads) or in the scan. */
static void test_find_str_not_ascii(void)
{
    static const char *const keys[2] = {"cafe", "cafe au lait"}; /* 4, 12 */
    for (int c = 0; c < 4; c++) {
        const int n = c & 1 ? 30 : 3;
        const char *key = keys[c >> 1];
        const size_t kn = strlen(key);
        char bad_key[16];
        memcpy(bad_key, key, kn);
        bad_key[3] = (char)0xE9;
        pf_writer *w;
        REQUIRE(pf_writer_new(&w, 5, NULL) == PF_OK);
        REQUIRE(pf_write_container_begin(w, PF_DICT, (uint64_t)n, NULL) == PF_OK);
        char k[16];
        for (int i = 0; i < n; i++) {
            int kl = i ? snprintf(k, sizeof k, "other%d", i)
                       : snprintf(k, sizeof k, "%s", key);
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
            REQUIRE(pf_write_str(w, k, (size_t)kl, 1, 1, NULL) == PF_OK);
            REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, i, NULL) == PF_OK);
        }
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        uint8_t *buf;
        pf_image *img = finish_open(w, 128, &buf);
        pf_val d;
        REQUIRE(pf_read(img, 128, &d, NULL) == PF_OK);
        uint64_t kp = 0, vp = 0;
        REQUIRE(pf_find_str(img, &d, key, kn, 1, NULL, NULL, &kp, &vp, NULL) == 1);
        const uint64_t len = pf_image_size(img);
        pf_image_close(img);
        REQUIRE(buf[kp] == 0x80 + kn && buf[kp + 4] == 'e');
        buf[kp + 4] = 0xE9;
        REQUIRE(pf_image_open_buffer(buf, len, &img, NULL) == PF_OK);
        REQUIRE(pf_read(img, 128, &d, NULL) == PF_OK);
        if (n > 8) {
            /* The slot of the key moved to where the hash of "caf\xe9"
             * leads, with its tag: a hostile image that makes the damaged
             * key a candidate for that str (other lookups may now miss). */
            const int W = d.u.c.width;
            uint8_t *table = buf + d.u.c.table;
            const unsigned ibits = 64u - (unsigned)__builtin_clzll(d.u.c.body_len);
            const uint64_t ro = kp - d.u.c.body + 1;
            uint64_t j = 0, slot = 0;
            for (j = 0; j < d.u.c.nslots; j++) {
                slot = 0;
                memcpy(&slot, table + j * (uint64_t)W, (size_t)W);
                if ((slot & ((1ull << ibits) - 1)) == ro)
                    break;
            }
            REQUIRE(j < d.u.c.nslots);
            memset(table + j * (uint64_t)W, 0, (size_t)W);
            const uint64_t h = pf_hash_str(pf_image_hash_seed(img), bad_key, kn, 1);
            const uint64_t tag = h & ((1ull << (8u * (unsigned)W - ibits)) - 1);
            slot = tag << ibits | ro;
            j = pf_mulhi64(h, d.u.c.nslots);
            for (uint64_t probes = 0; probes < d.u.c.nslots; probes++) {
                uint64_t cur = 0;
                memcpy(&cur, table + j * (uint64_t)W, (size_t)W);
                if (cur == 0)
                    break;
                j = j + 1 == d.u.c.nslots ? 0 : j + 1;
            }
            memcpy(table + j * (uint64_t)W, &slot, (size_t)W);
        }
        /* the slots compare the key in place and pass it by; the scan
         * decodes each record, and reports the damaged one */
        const int bad = n > 8 ? 0 : PF_ECORRUPT;
        pf_error e;
        CHECK_RC(pf_find_str(img, &d, bad_key, kn, 1, NULL, NULL, &kp, &vp, &e),
                 bad);
        CHECK_RC(pf_find_str(img, &d, key, kn, 1, NULL, NULL, &kp, &vp, &e), bad);
        if (bad)
            CHECK_RC(pf_find_str(img, &d, "other2", 6, 1, NULL, NULL, &kp, &vp,
                                 &e), bad);
        pf_image_close(img);
        pf_free(buf);
    }
}

/* ------------------------------------------------------------------ anchors */

/* Length of the REF or SREF varint at pos (0 if neither). */
static unsigned ref_len(const uint8_t *b, uint64_t pos, unsigned type)
{
    if (b[pos] != type)
        return 0;
    unsigned n = 1;
    while (b[pos + n] & 0x80)
        n++;
    return n;
}

/* R28: a string met a third time or more, far back, is referenced through
 * the VALUES table (an SREF of 2 bytes) rather than by a REF of up to 5; a
 * second occurrence keeps its REF (an index costs 8 bytes of table), and
 * so does a near one, shorter than any SREF; equal content is stored once. */
static void test_string_references(void)
{
    enum { FILL = 600, ITEMS = 12000 };
    static const char freq[] = "frequent word";
    static const char rare[] = "a rare string value";
    static const char near[] = "near twin";
    uint8_t fill[FILL];
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 1, NULL) == PF_OK);
    uint64_t *fpos = (uint64_t *)calloc(ITEMS, sizeof *fpos);
    REQUIRE(fpos != NULL);
    uint64_t rare1 = 0, rare2 = 0, rare3 = 0, near1, near2;
    REQUIRE(pf_write_container_begin(w, PF_LIST, 2 * ITEMS + 5, NULL) == PF_OK);
    pf_write_item(w, NULL);
    rare1 = pf_writer_pos(w);
    pf_write_str(w, rare, strlen(rare), 1, 1, NULL);
    for (int i = 0; i < ITEMS; i++) {
        /* ~600 bytes of unique filler between occurrences: 7 MB in all */
        for (int k = 0; k < FILL; k++)
            fill[k] = (uint8_t)rnd();
        pf_write_item(w, NULL);
        pf_write_bytes(w, fill, FILL, NULL);
        pf_write_item(w, NULL);
        fpos[i] = pf_writer_pos(w);
        pf_write_str(w, freq, strlen(freq), 1, 1, NULL);
    }
    pf_write_item(w, NULL);
    rare2 = pf_writer_pos(w);
    pf_write_str(w, rare, strlen(rare), 1, 1, NULL);
    pf_write_item(w, NULL);
    rare3 = pf_writer_pos(w);
    pf_write_str(w, rare, strlen(rare), 1, 1, NULL);
    pf_write_item(w, NULL);
    near1 = pf_writer_pos(w);
    pf_write_str(w, near, strlen(near), 1, 1, NULL);
    pf_write_item(w, NULL);
    near2 = pf_writer_pos(w);
    pf_write_str(w, near, strlen(near), 1, 1, NULL);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    uint8_t *buf;
    pf_image *img = finish_open(w, 128, &buf);
    CHECK(rare2 - rare1 > (1u << 21));
    long srefs = 0, ok = 0;
    for (int i = 0; i < ITEMS; i++) {
        srefs += ref_len(buf, fpos[i], 0x07) == 1; /* index 0: one byte */
        pf_val v;
        ok += pf_read(img, fpos[i], &v, NULL) == PF_OK && v.type == PF_STR &&
              v.pos == fpos[0] && v.u.s.len == strlen(freq) &&
              memcmp(v.u.s.data, freq, v.u.s.len) == 0;
    }
    CHECK_EQ_U64(ok, ITEMS);          /* every occurrence reads the first */
    CHECK_EQ_U64(buf[fpos[0]], 0x80 + strlen(freq));
    CHECK_EQ_U64(ref_len(buf, fpos[1], 0x03), 2); /* 600 bytes back */
    CHECK_EQ_U64(srefs, ITEMS - 2);   /* all the others are 2-byte SREFs */
    /* The rare string, seen once 2^21+ bytes back: a 4-byte REF; met a
     * third time: index 1. The near one: a 1-byte REF. */
    CHECK_EQ_U64(ref_len(buf, rare2, 0x03), 4);
    CHECK_EQ_U64(ref_len(buf, rare3, 0x07), 1);
    CHECK_EQ_U64(buf[rare3 + 1], 1);
    CHECK_EQ_U64(ref_len(buf, near2, 0x03), 1);
    pf_val v;
    CHECK(pf_read(img, rare2, &v, NULL) == PF_OK && v.pos == rare1);
    CHECK(pf_read(img, rare3, &v, NULL) == PF_OK && v.pos == rare1);
    CHECK(pf_read(img, near2, &v, NULL) == PF_OK && v.pos == near1);
    /* Two sections (FORMAT R11, R28): DATA, then VALUES with two entries,
     * the first copies of both strings. */
    uint64_t stab = 0, voff = 0, vlen = 0;
    memcpy(&stab, buf + 64, 8); /* little-endian hosts: the test targets */
    CHECK_EQ_U64(buf[72], 2);
    CHECK_EQ_U64(buf[stab + 32], 2); /* kind VALUES */
    memcpy(&voff, buf + stab + 32 + 8, 8);
    memcpy(&vlen, buf + stab + 32 + 16, 8);
    CHECK_EQ_U64(vlen, 16);
    uint64_t e0 = 0, e1 = 0;
    memcpy(&e0, buf + voff, 8);
    memcpy(&e1, buf + voff + 8, 8);
    CHECK_EQ_U64(e0, fpos[0]);
    CHECK_EQ_U64(e1, rare1);
    pf_image_close(img);
    pf_free(buf);
    free(fpos);
}

int main(void)
{
    test_float_exact_bytes();
    test_float_canonical();
    test_float_reader();
    test_float_keys();
    test_short_tuples();
    test_key_end();
    test_find_str();
    test_find_str_not_ascii();
    test_string_references();
    return check_report();
}
