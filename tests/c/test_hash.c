/*
 * test_hash.c -- the stable hash of docs/FORMAT.md section 5: frozen test
 * vectors, a cross-check against a second, deliberately plain implementation
 * of the spec written here, and the equalities Python's key equality needs
 * (1 == 1.0 == True, 2**70 == 2.0**70, -0.0 == 0, complex(3, 0) == 3), both
 * for the hash functions and for hashes of stored values (pf_hash_at).
 */
#include <math.h>

#include "check.h"
#include "permafrost.h"

/* ------------------------------------------------------------------ reference */

static uint64_t ref_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t ref_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return x;
}

/* Straight from the spec's pseudo-code, assembling words byte by byte. */
static uint64_t ref_hash_bytes(const uint8_t *p, size_t n, uint64_t seed)
{
    const uint64_t K1 = 0x9E3779B97F4A7C15ull, K2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t h = seed ^ ((uint64_t)n * K1);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = 0;
        for (size_t j = 0; j < 8 && i + j < n; j++)
            w |= (uint64_t)p[i + j] << (8 * j);
        h = ref_rotl(h ^ (w * K2), 29) * K1;
    }
    return ref_mix(h);
}

static uint64_t ref_T(uint64_t s, uint64_t x) { return s ^ (x * 0x165667B19E3779F9ull); }

static uint64_t ref_hash_le64(uint64_t s, uint64_t type, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return ref_hash_bytes(b, 8, ref_T(s, type));
}

/* 16-bit limb schoolbook multiplication: the high half of a * b. */
static uint64_t ref_mulhi(uint64_t a, uint64_t b)
{
    uint32_t r[8] = {0};
    for (int i = 0; i < 4; i++) {
        uint32_t carry = 0;
        uint32_t ai = (uint32_t)((a >> (16 * i)) & 0xFFFF);
        for (int j = 0; j < 4; j++) {
            uint32_t bj = (uint32_t)((b >> (16 * j)) & 0xFFFF);
            uint64_t t = (uint64_t)ai * bj + r[i + j] + carry;
            r[i + j] = (uint32_t)(t & 0xFFFF);
            carry = (uint32_t)(t >> 16);
        }
        r[i + 4] += carry;
    }
    return (uint64_t)r[4] | (uint64_t)r[5] << 16 | (uint64_t)r[6] << 32 |
           (uint64_t)r[7] << 48;
}

/* The integer value of an integral double with |v| >= 2^63 as minimal two's
 * complement bytes, built from the IEEE bits by shifting one bit at a time. */
static size_t ref_double_int_bytes(double v, uint8_t *out, size_t cap)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    int neg = (int)(bits >> 63);
    int exp = (int)((bits >> 52) & 0x7FF) - 1075; /* value = mant * 2^exp */
    uint64_t mant = (bits & ((1ull << 52) - 1)) | (1ull << 52);
    memset(out, 0, cap);
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(mant >> (8 * i));
    for (int s = 0; s < exp; s++) {
        int carry = 0;
        for (size_t i = 0; i < cap; i++) {
            int nc = out[i] >> 7;
            out[i] = (uint8_t)((out[i] << 1) | carry);
            carry = nc;
        }
    }
    if (neg) { /* 0 - x */
        int borrow = 0;
        for (size_t i = 0; i < cap; i++) {
            int d = 0 - out[i] - borrow;
            borrow = d < 0;
            out[i] = (uint8_t)d;
        }
    }
    size_t n = cap;
    while (n > 1 && ((out[n - 1] == 0 && out[n - 2] < 0x80) ||
                     (out[n - 1] == 0xFF && out[n - 2] >= 0x80)))
        n--;
    return n;
}

/* ------------------------------------------------------------------ tests */

static void test_vectors(void)
{
    /* Frozen: pf_hash_bytes(bytes 00 01 02 ..., n, seed 0), n = 0..17. Also
     * checked against an independent Python implementation of section 5. */
    static const uint64_t v0[18] = {
        0x0000000000000000ull, 0xDBD01B4D30983464ull, 0x1ED8BE8057BD2EB9ull,
        0xDDD42453C19E364Bull, 0x695F1C9A2CEBE04Aull, 0xB0AEB2DCA7612914ull,
        0xE850E90F4466812Full, 0x92A84FFFAF004E5Bull, 0x5B2846D6462717AFull,
        0x45FC5698223BB22Eull, 0x5B7E03ED0E3984D5ull, 0x44A92E28950537D5ull,
        0x61E050C8B16710FEull, 0xD527FB2CFC83F16Bull, 0x568042753057DF0Dull,
        0x544D64C72B724F8Bull, 0x0B7D5E0F0656F2F8ull, 0x72E538FA1F93CD0Aull,
    };
    static const struct { uint64_t seed; size_t n; uint64_t h; } vs[] = {
        {0x0000000000000001ull, 0, 0x4179B061E0C0E0D0ull},
        {0x0000000000000001ull, 8, 0xF51DA07AB9C2E6D4ull},
        {0x0000000000000001ull, 16, 0xABE09B3D25BDCA16ull},
        {0x9E3779B97F4A7C15ull, 0, 0x4E17CF67001B3979ull},
        {0x9E3779B97F4A7C15ull, 8, 0xA7AC877ED24C6A82ull},
        {0x9E3779B97F4A7C15ull, 16, 0x932158823CB80D66ull},
        {0xFFFFFFFFFFFFFFFFull, 0, 0x448E29CED4103459ull},
        {0xFFFFFFFFFFFFFFFFull, 8, 0x18EDD458ABAB4756ull},
        {0xFFFFFFFFFFFFFFFFull, 16, 0x8E6172946D4B5E13ull},
    };
    uint8_t p[64];
    for (int i = 0; i < 64; i++) p[i] = (uint8_t)i;
    for (size_t n = 0; n <= 17; n++) {
        CHECK_EQ_U64(pf_hash_bytes(p, n, 0), v0[n]);
        CHECK_EQ_U64(ref_hash_bytes(p, n, 0), v0[n]);
    }
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        CHECK_EQ_U64(pf_hash_bytes(p, vs[i].n, vs[i].seed), vs[i].h);
        CHECK_EQ_U64(ref_hash_bytes(p, vs[i].n, vs[i].seed), vs[i].h);
    }
    /* Typed hashes, frozen (seed 0). */
    CHECK_EQ_U64(pf_hash_none(0), 0x60BD295FC8C3C550ull);
    CHECK_EQ_U64(pf_hash_i64(0, 1), 0x8F76E80DCB516D5Full);
    CHECK_EQ_U64(pf_hash_str(0, "abc", 3, 1), 0xB88D7A59424CB814ull);
}

static void test_against_reference(void)
{
    uint8_t buf[300];
    uint64_t x = 0x0123456789ABCDEFull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(x >> 56);
    }
    const uint64_t seeds[] = {0, 1, 42, 0xDEADBEEFCAFEF00Dull, ~0ull};
    for (size_t s = 0; s < 5; s++)
        for (size_t off = 0; off < 8; off++) /* unaligned starts too */
            for (size_t n = 0; n + off <= 200; n += 1 + n / 16)
                CHECK_EQ_U64(pf_hash_bytes(buf + off, n, seeds[s]),
                             ref_hash_bytes(buf + off, n, seeds[s]));
    for (int i = 0; i < 1000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t y = ref_mix(x ^ 0x5555);
        CHECK_EQ_U64(pf_hash_mix(x), ref_mix(x));
        CHECK_EQ_U64(pf_mulhi64(x, y), ref_mulhi(x, y));
        CHECK(pf_mulhi64(x, 1000) < 1000);
    }
    CHECK_EQ_U64(pf_mulhi64(~0ull, ~0ull), 0xFFFFFFFFFFFFFFFEull);
    CHECK_EQ_U64(pf_mulhi64(1ull << 63, 2), 1);
    CHECK_EQ_U64(pf_mulhi64(0, ~0ull), 0);
    CHECK_EQ_U64(pf_type_seed(7, 3), 7 ^ (3 * 0x165667B19E3779F9ull));
    /* Typed hashes against the reference. */
    const uint64_t S = 0xABCDEF;
    CHECK_EQ_U64(pf_hash_none(S), ref_hash_bytes(NULL, 0, ref_T(S, 1)));
    CHECK_EQ_U64(pf_hash_i64(S, -5), ref_hash_le64(S, 2, (uint64_t)-5));
    double d = 0.5;
    uint64_t db;
    memcpy(&db, &d, 8);
    CHECK_EQ_U64(pf_hash_double(S, 0.5), ref_hash_le64(S, 3, db));
    CHECK_EQ_U64(pf_hash_bytesval(S, "xyz", 3),
                 ref_hash_bytes((const uint8_t *)"xyz", 3, ref_T(S, 6)));
    const uint16_t u2[2] = {0x3B1, 0x41};
    CHECK_EQ_U64(pf_hash_str(S, u2, 2, 2),
                 ref_hash_bytes((const uint8_t *)u2, 4, ref_T(S, 5)));
}

static void test_numeric_equalities(void)
{
    const uint64_t seeds[] = {0, 99, 0x8000000000000000ull};
    for (int s = 0; s < 3; s++) {
        uint64_t S = seeds[s];
        uint64_t one = pf_hash_i64(S, 1);
        CHECK_EQ_U64(pf_hash_double(S, 1.0), one);
        CHECK_EQ_U64(pf_hash_complex(S, 1.0, 0.0), one);
        CHECK_EQ_U64(pf_hash_complex(S, 1.0, -0.0), one);
        uint8_t b1[3] = {1, 0, 0}; /* non-minimal 1 */
        CHECK_EQ_U64(pf_hash_bigint(S, b1, 3), one);
        CHECK_EQ_U64(pf_hash_double(S, -0.0), pf_hash_i64(S, 0));
        CHECK_EQ_U64(pf_hash_double(S, 0.0), pf_hash_i64(S, 0));
        CHECK_EQ_U64(pf_hash_complex(S, 3.0, 0.0), pf_hash_i64(S, 3));
        CHECK_EQ_U64(pf_hash_complex(S, -0.0, 2.0), pf_hash_complex(S, 0.0, 2.0));
        CHECK_EQ_U64(pf_hash_complex(S, 1.5, -0.0), pf_hash_double(S, 1.5));
        CHECK(pf_hash_complex(S, 1.0, 2.0) != pf_hash_complex(S, 2.0, 1.0));
        CHECK(pf_hash_double(S, 1.5) != pf_hash_i64(S, 1));
        CHECK(pf_hash_i64(S, 0) != pf_hash_none(S));
        CHECK_EQ_U64(pf_hash_double(S, -7.0), pf_hash_i64(S, -7));
        CHECK_EQ_U64(pf_hash_double(S, 9007199254740992.0),
                     pf_hash_i64(S, 9007199254740992LL));
        CHECK_EQ_U64(pf_hash_double(S, -9223372036854775808.0),
                     pf_hash_i64(S, INT64_MIN));
        /* 2^63 does not fit int64: a 9-byte big int 00..00 80 00. */
        uint8_t b63[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
        CHECK_EQ_U64(pf_hash_double(S, 9223372036854775808.0),
                     pf_hash_bigint(S, b63, 9));
        CHECK_EQ_U64(pf_hash_bigint(S, b63, 9),
                     ref_hash_bytes(b63, 9, ref_T(S, 2)));
        /* 2**70 and -2**70. */
        uint8_t b70[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40};
        uint8_t m70[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0xC0};
        CHECK_EQ_U64(pf_hash_double(S, 1180591620717411303424.0), pf_hash_bigint(S, b70, 9));
        CHECK_EQ_U64(pf_hash_double(S, -1180591620717411303424.0), pf_hash_bigint(S, m70, 9));
        /* -2**63 - 1 in non-minimal form hashes as the minimal one. */
        uint8_t bm[11] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF,
                          0xFF, 0xFF};
        CHECK_EQ_U64(pf_hash_bigint(S, bm, 11), pf_hash_bigint(S, bm, 9));
        CHECK_EQ_U64(pf_hash_bigint(S, bm, 11), ref_hash_bytes(bm, 9, ref_T(S, 2)));
        /* Large and odd doubles against the bit-by-bit reference. */
        const double big[] = {1e19, -1e19, 1.2345e30, -3.5e200, 1.7976931348623157e308,
                              -1.7976931348623157e308, 18446744073709551616.0,
                              -9223372036854777856.0, 1e23};
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
            uint8_t rb[140];
            size_t n = ref_double_int_bytes(big[i], rb, sizeof rb);
            CHECK(n >= 9);
            CHECK_EQ_U64(pf_hash_double(S, big[i]), ref_hash_bytes(rb, n, ref_T(S, 2)));
        }
        /* NaN and infinities hash their bits as floats. */
        double inf = INFINITY;
        uint64_t ib;
        memcpy(&ib, &inf, 8);
        CHECK_EQ_U64(pf_hash_double(S, inf), ref_hash_le64(S, 3, ib));
        CHECK(pf_hash_double(S, inf) != pf_hash_double(S, -inf));
    }
}

static void test_sequences(void)
{
    const uint64_t S = 12345;
    uint64_t items[5] = {pf_hash_i64(S, 1), pf_hash_str(S, "a", 1, 1),
                         pf_hash_none(S), pf_hash_double(S, 2.5), 77};
    uint8_t cat[40];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 8; j++)
            cat[8 * i + j] = (uint8_t)(items[i] >> (8 * j));
    for (size_t n = 0; n <= 5; n++) {
        uint64_t bulk = pf_hash_bytes(cat, 8 * n, pf_type_seed(S, PF_HT_TUPLE));
        CHECK_EQ_U64(pf_hash_tuple_of(S, items, n), bulk);
        pf_hasher st;
        pf_hasher_init(&st, pf_type_seed(S, PF_HT_TUPLE), 8 * n);
        for (size_t i = 0; i < n; i++)
            pf_hasher_word(&st, items[i]);
        CHECK_EQ_U64(pf_hasher_end(&st), bulk);
        CHECK_EQ_U64(st.nwords, n);
    }
    /* Frozensets: order does not matter, count does. */
    uint64_t rev[5] = {items[4], items[3], items[2], items[1], items[0]};
    CHECK_EQ_U64(pf_hash_frozenset_of(S, items, 5), pf_hash_frozenset_of(S, rev, 5));
    uint64_t sum = 0;
    for (int i = 0; i < 5; i++) sum += ref_mix(items[i]);
    uint8_t fb[16];
    for (int j = 0; j < 8; j++) {
        fb[j] = (uint8_t)(sum >> (8 * j));
        fb[8 + j] = (uint8_t)((uint64_t)5 >> (8 * j));
    }
    CHECK_EQ_U64(pf_hash_frozenset_of(S, items, 5), ref_hash_bytes(fb, 16, ref_T(S, 8)));
    CHECK(pf_hash_frozenset_of(S, items, 4) != pf_hash_frozenset_of(S, items, 5));
    CHECK(pf_hash_frozenset_of(S, NULL, 0) != pf_hash_tuple_of(S, NULL, 0));
}

/* Stored values hash like the live values they stand for. */
static void test_stored(void)
{
    const uint64_t S = 0x5EED;
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, S, NULL) == PF_OK);
    uint64_t pos[24];
    int k = 0;
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 19, NULL), PF_OK);
#define ITEM(call) do { pf_write_item(w, NULL); pos[k++] = pf_writer_pos(w); CHECK_RC(call, PF_OK); } while (0)
    ITEM(pf_write_bool(w, 1, NULL));                       /* 0 */
    ITEM(pf_write_int(w, 1, NULL));                        /* 1 */
    ITEM(pf_write_float(w, 1.0, NULL));                    /* 2 */
    ITEM(pf_write_complex(w, 1.0, 0.0, NULL));             /* 3 */
    uint8_t b70[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40};
    ITEM(pf_write_bigint(w, b70, 9, NULL));                /* 4 */
    ITEM(pf_write_float(w, 1180591620717411303424.0, NULL));         /* 5 */
    ITEM(pf_write_float(w, -0.0, NULL));                   /* 6 */
    ITEM(pf_write_bool(w, 0, NULL));                       /* 7 */
    ITEM(pf_write_str(w, "hello world", 11, 1, 1, NULL));  /* 8 */
    ITEM(pf_write_str(w, "hello world", 11, 1, 1, NULL));  /* 9: a REF */
    ITEM(pf_write_bytes(w, "hello world", 11, NULL));      /* 10 */
    pf_write_item(w, NULL); pos[k++] = pf_writer_pos(w);   /* 11: (1, "a", None) */
    CHECK_RC(pf_write_tuple_begin(w, 3, NULL), PF_OK);
    pf_write_int(w, 1, NULL);
    pf_write_str(w, "a", 1, 1, 1, NULL);
    pf_write_none(w, NULL);
    pf_write_item(w, NULL); pos[k++] = pf_writer_pos(w);   /* 12: frozenset({2, (3,)}) */
    CHECK_RC(pf_write_container_begin(w, PF_FROZENSET, 2, NULL), PF_OK);
    pf_write_item(w, NULL); pf_write_int(w, 2, NULL); CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
    pf_write_item(w, NULL); pf_write_tuple_begin(w, 1, NULL); pf_write_int(w, 3, NULL);
    CHECK_RC(pf_write_key_done(w, NULL), PF_OK);
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    ITEM(pf_write_none(w, NULL));                          /* 13 */
    uint16_t u2[2] = {0x3A9, 0x62};
    ITEM(pf_write_str(w, u2, 2, 2, 0, NULL));              /* 14 */
    uint8_t b63[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
    ITEM(pf_write_bigint(w, b63, 9, NULL));                /* 15 */
    ITEM(pf_write_float(w, 9223372036854775808.0, NULL));  /* 16 */
    pf_write_item(w, NULL); pos[k++] = pf_writer_pos(w);   /* 17: [] cannot be a key */
    pf_write_container_begin(w, PF_LIST, 0, NULL);
    pf_write_end(w, NULL);
    ITEM(pf_write_complex(w, -0.0, 2.0, NULL));            /* 18 */
#undef ITEM
    CHECK_RC(pf_write_end(w, NULL), PF_OK);
    uint8_t id[16] = {0}, *img_buf;
    uint64_t len;
    REQUIRE(pf_writer_finish(w, PF_HEADER_LEN, id, &img_buf, &len, NULL) == PF_OK);
    pf_writer_free(w);
    pf_image *img;
    REQUIRE(pf_image_open_buffer(img_buf, len, &img, NULL) == PF_OK);
    uint64_t h[19];
    for (int i = 0; i < 19; i++) {
        if (i == 17) {
            CHECK_RC(pf_hash_at(img, pos[i], &h[i], NULL), PF_ETYPE);
            continue;
        }
        CHECK_RC(pf_hash_at(img, pos[i], &h[i], NULL), PF_OK);
    }
    CHECK_EQ_U64(h[0], pf_hash_i64(S, 1));
    CHECK_EQ_U64(h[1], h[0]);
    CHECK_EQ_U64(h[2], h[0]);
    CHECK_EQ_U64(h[3], h[0]);
    CHECK_EQ_U64(h[4], h[5]);
    CHECK_EQ_U64(h[6], pf_hash_i64(S, 0));
    CHECK_EQ_U64(h[7], h[6]);
    CHECK_EQ_U64(h[8], pf_hash_str(S, "hello world", 11, 1));
    CHECK_EQ_U64(h[9], h[8]);
    CHECK_EQ_U64(h[10], pf_hash_bytesval(S, "hello world", 11));
    CHECK(h[10] != h[8]);
    uint64_t th[3] = {pf_hash_i64(S, 1), pf_hash_str(S, "a", 1, 1), pf_hash_none(S)};
    CHECK_EQ_U64(h[11], pf_hash_tuple_of(S, th, 3));
    uint64_t t3 = pf_hash_i64(S, 3);
    uint64_t fh[2] = {pf_hash_tuple_of(S, &t3, 1), pf_hash_i64(S, 2)};
    CHECK_EQ_U64(h[12], pf_hash_frozenset_of(S, fh, 2));
    CHECK_EQ_U64(h[13], pf_hash_none(S));
    CHECK_EQ_U64(h[14], pf_hash_str(S, u2, 2, 2));
    CHECK_EQ_U64(h[15], h[16]);
    CHECK_EQ_U64(h[18], pf_hash_complex(S, 0.0, 2.0));
    pf_image_close(img);
    pf_free(img_buf);
}

int main(void)
{
    test_vectors();
    test_against_reference();
    test_numeric_equalities();
    test_sequences();
    test_stored();
    return check_report();
}
