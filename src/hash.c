/*
 * hash.c -- the stable hash of docs/FORMAT.md section 5: pf_hash_bytes, mix,
 * the type seeds T(x), and the per-type key hashes that make keys equal
 * under Python's equality hash equally (1 == 1.0 == True, 2**70 ==
 * 2.0**70, complex(3, 0) == 3, -0.0 == 0). The same value hashes the same in
 * every process and run; the binding uses these to hash a lookup key, the
 * writer and reader (pf_hash_range in read.c) to hash stored keys.
 */
#if defined(_MSC_VER)
#include <intrin.h>
#endif

#include "internal.h"

#define K1 0x9E3779B97F4A7C15ull
#define K2 0xC2B2AE3D27D4EB4Full
#define K3 0x165667B19E3779F9ull
#define KM 0xD6E8FEB86659FD93ull

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t step(uint64_t h, uint64_t w)
{
    return rotl64(h ^ (w * K2), 29) * K1;
}

uint64_t pf_hash_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= KM;
    x ^= x >> 32;
    x *= KM;
    x ^= x >> 32;
    return x;
}

uint64_t pf_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = (const uint8_t *)p;
    uint64_t h = seed ^ ((uint64_t)n * K1);
    size_t i = 0;
    for (; n - i >= 8; i += 8)
        h = step(h, pf_ld64(b + i));
    if (i < n) {
        /* The tail, zero-padded (FORMAT section 5). With 8 bytes or more
         * in all, one load of the last 8 bytes shifted right gives it;
         * shorter inputs are read in 4/2/1-byte pieces. */
        const size_t rem = n - i;
        uint64_t w;
        if (n >= 8) {
            w = pf_ld64(b + n - 8) >> (8 * (8 - rem));
        } else {
            w = 0;
            size_t k = 0;
            if (rem & 4) {
                uint32_t x;
                memcpy(&x, b + i, 4);
                w = x;
                k = 4;
            }
            if (rem & 2) {
                uint16_t x;
                memcpy(&x, b + i + k, 2);
                w |= (uint64_t)x << (8 * k);
                k += 2;
            }
            if (rem & 1)
                w |= (uint64_t)b[i + k] << (8 * k);
        }
        h = step(h, w);
    }
    return pf_hash_mix(h);
}

uint64_t pf_checksum(const void *p, size_t n)
{
    pf_checksum_state st;
    pf_checksum_begin(&st, n);
    return pf_checksum_end(&st, p, n);
}

void pf_checksum_begin(pf_checksum_state *st, uint64_t n)
{
    st->h[0] = K1 ^ n;
    st->h[1] = K2 ^ n;
    st->h[2] = K3 ^ n;
    st->h[3] = KM ^ n;
    st->n = n;
}

void pf_checksum_blocks(pf_checksum_state *st, const void *p, size_t len)
{
    const uint8_t *b = (const uint8_t *)p;
    uint64_t h0 = st->h[0], h1 = st->h[1], h2 = st->h[2], h3 = st->h[3];
    for (size_t i = 0; len - i >= 32; i += 32) {
        h0 = step(h0, pf_ld64(b + i));
        h1 = step(h1, pf_ld64(b + i + 8));
        h2 = step(h2, pf_ld64(b + i + 16));
        h3 = step(h3, pf_ld64(b + i + 24));
    }
    st->h[0] = h0;
    st->h[1] = h1;
    st->h[2] = h2;
    st->h[3] = h3;
}

uint64_t pf_checksum_end(pf_checksum_state *st, const void *tail, size_t len)
{
    size_t whole = len & ~(size_t)31;
    pf_checksum_blocks(st, tail, whole);
    const uint64_t seed = st->h[0] ^ rotl64(st->h[1], 16) ^
                          rotl64(st->h[2], 32) ^ rotl64(st->h[3], 48);
    const uint64_t c = pf_hash_bytes((const uint8_t *)tail + whole,
                                     len - whole, seed);
    return c ? c : 1;
}

uint64_t pf_type_seed(uint64_t hash_seed, unsigned type_no)
{
    return hash_seed ^ ((uint64_t)type_no * K3);
}

uint64_t pf_hash_none(uint64_t seed)
{
    return pf_hash_bytes("", 0, pf_type_seed(seed, PF_HT_NONE));
}

uint64_t pf_hash_i64(uint64_t seed, int64_t v)
{
    uint8_t b[8];
    pf_st64(b, (uint64_t)v);
    return pf_hash_bytes(b, 8, pf_type_seed(seed, PF_HT_INT));
}

uint64_t pf_hash_bigint(uint64_t seed, const uint8_t *le, size_t n)
{
    if (n == 0)
        return pf_hash_i64(seed, 0);
    /* Minimal form: drop a top byte that only repeats the sign (R16). */
    while (n > 1 && ((le[n - 1] == 0x00 && le[n - 2] < 0x80) ||
                     (le[n - 1] == 0xFF && le[n - 2] >= 0x80)))
        n--;
    if (n <= 8) {
        uint64_t u = (le[n - 1] & 0x80) ? ~0ull : 0;
        for (size_t i = 0; i < n; i++) {
            u &= ~(0xFFull << (8 * i));
            u |= (uint64_t)le[i] << (8 * i);
        }
        return pf_hash_i64(seed, (int64_t)u);
    }
    return pf_hash_bytes(le, n, pf_type_seed(seed, PF_HT_INT));
}

uint64_t pf_hash_double(uint64_t seed, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    const int bexp = (int)((bits >> 52) & 0x7FF);
    const uint64_t frac = bits & ((1ull << 52) - 1);
    /* |v| = mant * 2^e2 for normal numbers. */
    const uint64_t mant = frac | (1ull << 52);
    const int e2 = bexp - 1075;
    if ((bits << 1) == 0) /* 0.0 and -0.0 are the int 0 */
        return pf_hash_i64(seed, 0);
    if (bexp != 0x7FF && bexp != 0 &&
        (e2 >= 0 || (e2 > -53 && (mant & ((1ull << -e2) - 1)) == 0))) {
        /* Integral: hash as the int of that value. */
        if (e2 < 11) { /* |v| < 2^63, or v == -2^63 below */
            uint64_t mag = e2 >= 0 ? mant << e2 : mant >> -e2;
            return pf_hash_i64(seed, (bits >> 63) ? (int64_t)(0 - mag)
                                                   : (int64_t)mag);
        }
        if (e2 == 11 && (bits >> 63) && frac == 0) /* -2^63 fits int64 */
            return pf_hash_i64(seed, INT64_MIN);
        /* |v| >= 2^63: lay mant << e2 out as little-endian bytes (with room
         * for a sign byte), negate if needed; e2 <= 971 gives <= 131 bytes. */
        unsigned off = (unsigned)e2 / 8, bit = (unsigned)e2 % 8;
        uint8_t buf[8 * 17 + 2] = {0};
        size_t n = (size_t)off + 9;
        pf_st64(buf + off, mant << bit); /* mant < 2^53: no bit lost */
        if (bits >> 63) {
            unsigned carry = 1;
            for (size_t i = 0; i < n; i++) {
                unsigned x = (unsigned)(uint8_t)~buf[i] + carry;
                buf[i] = (uint8_t)x;
                carry = x >> 8;
            }
        }
        return pf_hash_bigint(seed, buf, n);
    }
    uint8_t b[8];
    pf_st64(b, bits);
    return pf_hash_bytes(b, 8, pf_type_seed(seed, PF_HT_FLOAT));
}

uint64_t pf_hash_complex(uint64_t seed, double re, double im)
{
    if (im == 0.0)
        return pf_hash_double(seed, re);
    if (re == 0.0) re = 0.0; /* -0.0 is read as 0.0 */
    uint64_t br, bi;
    memcpy(&br, &re, 8);
    memcpy(&bi, &im, 8);
    uint8_t b[16];
    pf_st64(b, br);
    pf_st64(b + 8, bi);
    return pf_hash_bytes(b, 16, pf_type_seed(seed, PF_HT_COMPLEX));
}

uint64_t pf_hash_str(uint64_t seed, const void *data, size_t nchars, int width)
{
    return pf_hash_bytes(data, nchars * (size_t)width,
                         pf_type_seed(seed, PF_HT_STR));
}

uint64_t pf_hash_bytesval(uint64_t seed, const void *data, size_t n)
{
    return pf_hash_bytes(data, n, pf_type_seed(seed, PF_HT_BYTES));
}

/* The hasher runs pf_hash_bytes over a whole number of 8-byte words; given
 * the total byte count up front it yields exactly pf_hash_bytes of their
 * concatenation. */
void pf_hasher_init(pf_hasher *st, uint64_t seed, uint64_t nbytes)
{
    st->h = seed ^ (nbytes * K1);
    st->nwords = 0;
}

void pf_hasher_word(pf_hasher *st, uint64_t w)
{
    st->h = step(st->h, w);
    st->nwords++;
}

uint64_t pf_hasher_end(const pf_hasher *st)
{
    return pf_hash_mix(st->h);
}

uint64_t pf_hash_tuple_of(uint64_t seed, const uint64_t *item_hashes, size_t n)
{
    pf_hasher st;
    pf_hasher_init(&st, pf_type_seed(seed, PF_HT_TUPLE), (uint64_t)n * 8);
    for (size_t i = 0; i < n; i++)
        pf_hasher_word(&st, item_hashes[i]);
    return pf_hasher_end(&st);
}

uint64_t pf_hash_frozenset_of(uint64_t seed, const uint64_t *item_hashes,
                              size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += pf_hash_mix(item_hashes[i]);
    uint8_t b[16];
    pf_st64(b, sum);
    pf_st64(b + 8, (uint64_t)n);
    return pf_hash_bytes(b, 16, pf_type_seed(seed, PF_HT_FROZENSET));
}

uint64_t pf_mulhi64(uint64_t a, uint64_t b)
{
    return pf_mulhi(a, b);
}
