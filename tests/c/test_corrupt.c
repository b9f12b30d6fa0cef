/*
 * test_corrupt.c -- damaged and hostile images never crash the reader. Each
 * of a few small images is cut at every point and has every byte changed
 * (several values per byte, with the header check recomputed for header
 * bytes so that the field checks behind it are reached), plus random
 * multi-byte damage; each variant is opened and walked completely (lists,
 * dicts, sets, tuples, hashes, lookups), which must end in PF_OK or a clean
 * PF_ECORRUPT / PF_EVERSION / PF_ELIMIT. Run under ASan + UBSan. Also named
 * header and value corruptions with the exact error expected.
 */
#include "check.h"
#include "permafrost.h"
#include "walk.h"
#include "fields.h"

typedef struct image {
    uint8_t *buf;
    uint64_t len;
} image;

static image finish(pf_writer *w, uint64_t root)
{
    image im;
    uint8_t id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    REQUIRE(pf_writer_finish(w, root, id, &im.buf, &im.len, NULL) == PF_OK);
    pf_writer_free(w);
    return im;
}

#define STR(w, s) pf_write_str((w), (s), strlen(s), 1, 1, NULL)
#define KEYSTR(w, s) (pf_write_item((w), NULL), STR((w), (s)), pf_write_key_done((w), NULL))

/* A dict with a slot table and every kind of key and value. */
static image build_a(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 0xAB, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 13, NULL) == PF_OK);
    KEYSTR(w, "name");
    STR(w, "a value that repeats");
    KEYSTR(w, "again");
    STR(w, "a value that repeats");
    pf_write_item(w, NULL);
    uint8_t latin[3] = {'x', 0xE9, 'y'};
    pf_write_str(w, latin, 3, 1, 0, NULL);
    pf_write_key_done(w, NULL);
    uint64_t list_pos = pf_writer_pos(w);
    pf_write_container_begin(w, PF_LIST, 4, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 1, NULL);
    pf_write_item(w, NULL); STR(w, "x");
    pf_write_item(w, NULL); pf_write_tuple_begin(w, 2, NULL);
    pf_write_int(w, 2, NULL); pf_write_float(w, 3.5, NULL);
    pf_write_item(w, NULL); pf_write_ref(w, root, NULL);
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    uint16_t u2[2] = {0x3A9, 0xD800};
    pf_write_str(w, u2, 2, 2, 0, NULL);
    pf_write_key_done(w, NULL);
    pf_write_container_begin(w, PF_SET, 3, NULL);
    for (int i = 0; i < 3; i++) {
        pf_write_item(w, NULL); pf_write_int(w, i * 1000, NULL); pf_write_key_done(w, NULL);
    }
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    uint32_t u4[2] = {0x1F600, 0x41};
    pf_write_str(w, u4, 2, 4, 0, NULL);
    pf_write_key_done(w, NULL);
    pf_write_complex(w, 1.0, -1.0, NULL);
    pf_write_item(w, NULL);
    pf_write_bytes(w, "key bytes", 9, NULL);
    pf_write_key_done(w, NULL);
    pf_write_bytes(w, "key bytes", 9, NULL);
    pf_write_item(w, NULL);
    pf_write_int(w, -70000, NULL);
    pf_write_key_done(w, NULL);
    pf_write_none(w, NULL);
    pf_write_item(w, NULL);
    uint8_t big[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    pf_write_bigint(w, big, 10, NULL);
    pf_write_key_done(w, NULL);
    pf_write_bool(w, 1, NULL);
    pf_write_item(w, NULL);
    pf_write_float(w, 0.25, NULL);
    pf_write_key_done(w, NULL);
    pf_write_ref(w, list_pos, NULL);
    pf_write_item(w, NULL);
    pf_write_none(w, NULL);
    pf_write_key_done(w, NULL);
    pf_write_bool(w, 0, NULL);
    pf_write_item(w, NULL);
    pf_write_tuple_begin(w, 2, NULL);
    pf_write_int(w, 1, NULL);
    pf_write_tuple_begin(w, 1, NULL);
    STR(w, "name");
    pf_write_key_done(w, NULL);
    pf_write_container_begin(w, PF_DICT, 1, NULL);
    KEYSTR(w, "k");
    pf_write_container_begin(w, PF_LIST, 0, NULL);
    pf_write_end(w, NULL);
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_FROZENSET, 2, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 1, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); STR(w, "in a frozenset"); pf_write_key_done(w, NULL);
    pf_write_end(w, NULL);
    pf_write_key_done(w, NULL);
    pf_write_int(w, 9, NULL);
    KEYSTR(w, "long");
    pf_write_str(w, "0123456789012345678901234567890123456789012345678901234567890"
                 "1234567890123456789012345678901234567890123456789012345678901"
                 "23456789", 130, 1, 1, NULL);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

/* A list of small things: a scanned set, a frozenset, nested tuples,
 * floats. */
static image build_b(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 1, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    pf_write_container_begin(w, PF_LIST, 6, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_SET, 3, NULL);
    pf_write_item(w, NULL); STR(w, "a"); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_tuple_begin(w, 2, NULL);
    pf_write_int(w, 1, NULL); STR(w, "b"); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_float(w, 1.5, NULL); pf_write_key_done(w, NULL);
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    pf_write_tuple_begin(w, 2, NULL);
    pf_write_tuple_begin(w, 2, NULL);
    pf_write_tuple_begin(w, 0, NULL);
    pf_write_none(w, NULL);
    pf_write_bytes(w, "", 0, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_DICT, 2, NULL);
    KEYSTR(w, "x"); pf_write_int(w, 300, NULL);
    KEYSTR(w, "y"); pf_write_ref(w, root, NULL);
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_FROZENSET, 2, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 5, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_FROZENSET, 1, NULL);
    pf_write_item(w, NULL); pf_write_int(w, 6, NULL); pf_write_key_done(w, NULL);
    pf_write_end(w, NULL);
    pf_write_key_done(w, NULL);
    pf_write_end(w, NULL);
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_LIST, 0, NULL);
    pf_write_end(w, NULL);
    /* A set of floats in both forms (R25) and tuples of 8 and 7 items
     * (0x18 with a count, and 0x1F, R26). */
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_SET, 4, NULL);
    pf_write_item(w, NULL); pf_write_float(w, -12.75, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_float(w, 0.1 + 0.2, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL); pf_write_float(w, 1e300, NULL); pf_write_key_done(w, NULL);
    pf_write_item(w, NULL);
    pf_write_tuple_begin(w, 8, NULL);
    for (int i = 0; i < 7; i++)
        pf_write_float(w, i * 0.5, NULL);
    pf_write_tuple_begin(w, 7, NULL);
    for (int i = 0; i < 7; i++)
        pf_write_int(w, -i, NULL);
    pf_write_key_done(w, NULL);
    pf_write_end(w, NULL);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

static image build_c(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 2, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    STR(w, "just a string");
    return finish(w, root);
}

/* SREFs (R28): strings met three times, far apart, as list items, inside
 * a tuple and as a dict key; the VALUES section precedes the table. */
static image build_d(void)
{
    pf_writer *w;
    uint8_t fill[130];
    REQUIRE(pf_writer_new(&w, 3, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    pf_write_container_begin(w, PF_LIST, 10, NULL);
    for (int i = 0; i < 3; i++) {
        memset(fill, 'a' + i, sizeof fill);
        pf_write_item(w, NULL);
        STR(w, "word one");
        pf_write_item(w, NULL);
        pf_write_bytes(w, fill, sizeof fill, NULL);
        pf_write_item(w, NULL);
        pf_write_tuple_begin(w, 2, NULL);
        pf_write_int(w, i, NULL);
        STR(w, "word two");
    }
    pf_write_item(w, NULL);
    pf_write_container_begin(w, PF_DICT, 2, NULL);
    KEYSTR(w, "word two"); pf_write_int(w, 2, NULL);
    KEYSTR(w, "word one"); STR(w, "word one");
    pf_write_end(w, NULL);
    pf_write_end(w, NULL);
    image im = finish(w, root);
    REQUIRE(get64(im.buf + 64) + 32 < im.len); /* two sections */
    return im;
}

/* ------------------------------------------------------------------ checks */

static long variants, outcome[16], verified;

/* The full check of the image in b: a clean outcome, and an image that
 * passes it must walk without a fault. With checksums the check is also
 * run with them cleared, so that damage is judged by the structure alone. */
static int verify_then_walk(const uint8_t *b, uint64_t len, int walk_rc)
{
    pf_image *img;
    pf_error e;
    int ok = 1;
    uint8_t *scratch = (uint8_t *)malloc((size_t)len);
    REQUIRE(scratch != NULL);
    for (int pass = 0; pass < 2; pass++) {
        const uint8_t *src = b;
        if (pass == 1) {
            memcpy(scratch, b, (size_t)len);
            uint64_t stab = get64(b + 64);
            uint32_t nsec;
            memcpy(&nsec, b + 72, 4);
            for (uint32_t k = 0; k < nsec && stab + 32 * (k + 1) <= len; k++)
                put64(scratch + stab + 32 * k + 24, 0);
            src = scratch;
        }
        if (pf_image_open_buffer(src, len, &img, NULL) != PF_OK)
            continue;
        memset(&e, 0, sizeof e);
        int rc = pf_image_verify(img, NULL, &e);
        pf_image_close(img);
        if (!clean_rc(rc) || (rc != PF_OK && (!e.msg || e.code != rc))) {
            fprintf(stderr, "unclean verify result %d\n", rc);
            ok = 0;
        }
        if (rc == PF_OK) {
            verified++;
            if (walk_rc != PF_OK && walk_rc != PF_ELIMIT) {
                fprintf(stderr, "verified, but the walk found %d\n", walk_rc);
                ok = 0;
            }
        }
    }
    free(scratch);
    return ok;
}

/* Opens b[0..len) and walks everything; the outcome must be clean. */
static int open_walk(const uint8_t *b, uint64_t len)
{
    pf_image *img;
    pf_error e;
    memset(&e, 0, sizeof e);
    variants++;
    int rc = pf_image_open_buffer(b, len, &img, &e);
    if (rc != PF_OK && (!e.msg || e.code != rc))
        return 0;
    if (rc == PF_OK) {
        walk_state ws = {0, 20000, 60, 0, 0};
        rc = walk(img, pf_image_root(img), 0, &ws);
        pf_image_close(img);
        if (!verify_then_walk(b, len, rc))
            return 0;
    }
    int clean = clean_rc(rc);
    if (!clean)
        fprintf(stderr, "unclean result %d\n", rc);
    else
        outcome[-rc]++;
    return clean;
}

static void damage(const image *im)
{
    uint8_t *b = (uint8_t *)malloc(im->len + 64);
    REQUIRE(b != NULL);
    long bad = 0;
    /* The undamaged image, which passes the full check. */
    CHECK(open_walk(im->buf, im->len));
    pf_image *whole;
    REQUIRE(pf_image_open_buffer(im->buf, im->len, &whole, NULL) == PF_OK);
    CHECK_RC(pf_image_verify(whole, NULL, NULL), PF_OK);
    pf_image_close(whole);
    /* Every truncation of the buffer: too short for image_size. */
    for (uint64_t cut = 0; cut < im->len; cut++) {
        pf_image *img;
        memcpy(b, im->buf, (size_t)cut);
        CHECK_RC(pf_image_open_buffer(b, cut, &img, NULL), PF_ECORRUPT);
    }
    /* Every truncation of the DATA section behind a consistent header. */
    uint64_t data_end = get64(im->buf + 64);
    for (uint64_t cut = 129; cut < data_end; cut++)
        bad += !open_walk(b, dmg_cut_data(b, im->buf, cut));
    /* Every byte, several new values; header bytes also with a fixed check. */
    for (uint64_t i = 0; i < im->len; i++) {
        const uint8_t o = im->buf[i];
        const uint8_t vals[] = {(uint8_t)(o ^ 0x01), (uint8_t)(o ^ 0x80),
                                (uint8_t)(o ^ 0xFF), 0x00, 0x03, 0x7F, 0x80,
                                0xFF, (uint8_t)(o + 1), (uint8_t)(o - 1),
                                0x18, 0x21, 0x06, 0x13, 0x1C, 0x35};
        for (size_t k = 0; k < sizeof vals; k++) {
            if (vals[k] == o)
                continue;
            memcpy(b, im->buf, (size_t)im->len);
            b[i] = vals[k];
            bad += !open_walk(b, im->len);
            if (i < 120) {
                fix_header(b);
                bad += !open_walk(b, im->len);
            }
        }
    }
    /* Random damage inside DATA: 1..4 bytes at once. */
    uint64_t x = 0x9E3779B97F4A7C15ull ^ im->len;
    for (int it = 0; it < 30000; it++) {
        memcpy(b, im->buf, (size_t)im->len);
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int nb = 1 + (int)(x >> 62);
        for (int j = 0; j < nb; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t at = 128 + (x >> 33) % (data_end - 128);
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            b[at] = (uint8_t)(x >> 56);
        }
        bad += !open_walk(b, im->len);
    }
    CHECK_EQ_U64(bad, 0);
    free(b);
}

/* Named damage with the exact outcome. */
static void named(const image *im)
{
    uint8_t *b = (uint8_t *)malloc(im->len + 64);
    REQUIRE(b != NULL);
    pf_image *img;
    pf_error e;
#define RESET() memcpy(b, im->buf, (size_t)im->len)
    RESET();
    CHECK_RC(pf_image_open_buffer(b, im->len + 64, &img, &e), PF_OK); /* R1 */
    pf_image_close(img);
    b[0] = 'X';
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    CHECK_EQ_U64(e.offset, 0);
    RESET();
    b[8] = 2; /* version_major 2: refused before the header check (R4) */
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_EVERSION);
    RESET();
    b[10] = 7; /* a newer minor version is fine (R4) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_OK);
    CHECK_EQ_U64(pf_image_version_minor(img), 7);
    pf_image_close(img);
    RESET();
    b[40] ^= 1; /* image id: covered by the header check (R5) */
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    CHECK_EQ_U64(e.offset, 120);
    RESET();
    b[16] = 4; /* incompat_flags: a bit this reader does not know (R6) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_EVERSION);
    RESET();
    b[16] = 1; /* PF_INCOMPAT_EXT: known since 1.1 */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_OK);
    pf_image_close(img);
    RESET();
    b[23] = 0x80; /* the top bit */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_EVERSION);
    RESET();
    b[24] = 1; /* compat_flags: ignored (R6) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_OK);
    pf_image_close(img);
    RESET();
    b[100] = 1; /* reserved (R5) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    RESET();
    put32(b + 12, 64); /* header_len < 128 (R5) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    RESET();
    put64(b + 48, im->len + 1); /* image_size beyond the buffer (R7) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    CHECK_EQ_U64(e.offset, 48);
    RESET();
    put32(b + 72, 0); /* section_count (R9) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    RESET();
    put64(b + 56, 5); /* root inside the header (R8) */
    fix_header(b);
    CHECK_RC(pf_image_open_buffer(b, im->len, &img, &e), PF_ECORRUPT);
    /* A second section: optional unknown kind is ignored, required refused
     * (R11); a second DATA section is corrupt. */
    for (int variant = 0; variant < 3; variant++) {
        RESET();
        uint64_t stab = get64(b + 64);
        uint8_t *s2 = b + stab + 32;
        memset(s2, 0, 32);
        put32(s2, variant == 2 ? 1 : 9);
        put32(s2 + 4, variant == 1 ? 1 : 0);
        put64(s2 + 8, 128);
        put64(s2 + 16, 4);
        put64(b + 48, im->len + 32);
        put32(b + 72, 2);
        fix_header(b);
        int want = variant == 0 ? PF_OK : variant == 1 ? PF_EVERSION : PF_ECORRUPT;
        CHECK_RC(pf_image_open_buffer(b, im->len + 32, &img, &e), want);
        if (want == PF_OK)
            pf_image_close(img);
    }
    free(b);
#undef RESET
}

/* Hand-made values inside a valid image. */
static void crafted(void)
{
    pf_writer *w;
    pf_error e;
    REQUIRE(pf_writer_new(&w, 0, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    /* (300, None, None) : 1B 09 2C 01 00 00 (a short tuple, R26); later
     * patched to 1B 03 01 00 00 00: a REF back to the tuple itself (R18),
     * two Nones, and one None after the tuple */
    pf_write_tuple_begin(w, 3, NULL);
    pf_write_int(w, 300, NULL);
    pf_write_none(w, NULL);
    pf_write_none(w, NULL);
    image im = finish(w, root);
    pf_image *img;
    uint64_t h;
    pf_val v;
    uint8_t *b = im.buf;
    REQUIRE(b[128] == 0x1B && b[129] == 0x09 && b[131] == 0x01);
    b[129] = 0x03; b[130] = 0x01; b[131] = 0x00;
    REQUIRE(pf_image_open_buffer(b, im.len, &img, &e) == PF_OK);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK); /* reading does not follow */
    CHECK(v.type == PF_TUPLE && v.u.tup.count == 3 && v.end == 133);
    CHECK_RC(pf_hash_at(img, 128, &h, &e), PF_ECORRUPT);
    CHECK_RC(pf_read(img, 129, &v, &e), PF_OK);
    CHECK(v.type == PF_TUPLE && v.pos == 128 && v.next == 131);
    /* REF to a REF; REF with d == 0; REF before DATA. */
    b[131] = 0x03; /* ... 03 01 03 <next byte> */
    b[132] = 0x02;
    CHECK_RC(pf_read(img, 131, &v, &e), PF_ECORRUPT);
    b[132] = 0x00;
    CHECK_RC(pf_read(img, 131, &v, &e), PF_ECORRUPT);
    b[132] = 0x10;
    CHECK_RC(pf_read(img, 131, &v, &e), PF_ECORRUPT);
    /* A varint of 11 bytes, and one overflowing 2^64 (R13). */
    b[128] = 0x14;
    memset(b + 129, 0x80, 3);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    /* Reserved type bytes (R14). */
    const uint8_t reserved[] = {0x07, 0x15, 0x16, 0x17, 0x27, 0x2F, 0x3A,
                                0x3F, 0x40, 0x7F};
    for (size_t i = 0; i < sizeof reserved; i++) {
        b[128] = reserved[i];
        CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
        CHECK_EQ_U64(e.offset, 128);
    }
    /* Short ASCII string with a byte >= 0x80 (R15). */
    b[128] = 0x82; b[129] = 'a'; b[130] = 0xC3;
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    b[130] = 'b';
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    /* Reading past DATA (R12). */
    CHECK_RC(pf_read(img, 127, &v, &e), PF_ECORRUPT);
    CHECK_RC(pf_read(img, pf_image_data_end(img), &v, &e), PF_ECORRUPT);
    CHECK_RC(pf_read(img, UINT64_MAX, &v, &e), PF_ECORRUPT);
    pf_image_close(img);
    pf_free(im.buf);

    /* A big DATA section of hand-made containers. */
    uint8_t *buf = (uint8_t *)calloc(1, 4096);
    REQUIRE(buf != NULL);
    memcpy(buf, "\x89PFROST\n", 8);
    buf[8] = 1;
    put32(buf + 12, 128);
    put64(buf + 48, 4096);
    put64(buf + 56, 128);
    put64(buf + 64, 4096 - 32);
    put32(buf + 72, 1);
    put32(buf + 4064, 1);
    put32(buf + 4068, 1);
    put64(buf + 4072, 128);
    put64(buf + 4080, 4096 - 32 - 128);
    fix_header(buf);
    REQUIRE(pf_image_open_buffer(buf, 4096, &img, &e) == PF_OK);
    uint8_t *c = buf + 128;
    /* dict, width 2, count 2, body_len 4, nslots 3: body "\x80\x00\x80\x00"
     * ("" : None twice), slots all full and pointing at a duplicate: lookups
     * must stop after nslots probes (R23). */
    c[0] = 0x21; c[1] = 2;
    put64(c + 2, 2); put64(c + 10, 4); put64(c + 18, 3);
    memcpy(c + 26, "\x80\x00\x80\x00", 4);
    uint16_t full = (uint16_t)((0x1FFF << 3) | 1); /* tag all ones, rec 0 */
    for (int i = 0; i < 3; i++) memcpy(c + 30 + 2 * i, &full, 2);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    uint64_t kp, vp, nowhere = 999;
    CHECK_RC(pf_find(img, &v, ~0ull, walk_match_pos, &nowhere, &kp, &vp, &e),
             0);
    /* nslots <= count (R22) */
    put64(c + 18, 2);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    put64(c + 18, 3);
    /* a slot with rec_off + 1 == 0, and one beyond the body (R24) */
    uint16_t zero_rec = (uint16_t)(0x1FFF << 3);
    memcpy(c + 30, &zero_rec, 2);
    memcpy(c + 32, &zero_rec, 2);
    memcpy(c + 34, &zero_rec, 2);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    uint64_t target = 999;
    CHECK_RC(pf_find(img, &v, ~0ull, walk_match_pos, &target, &kp, &vp, &e),
             PF_ECORRUPT);
    uint16_t far = (uint16_t)((0x1FFF << 3) | 6);
    memcpy(c + 30, &far, 2); memcpy(c + 32, &far, 2); memcpy(c + 34, &far, 2);
    CHECK_RC(pf_find(img, &v, ~0ull, walk_match_pos, &target, &kp, &vp, &e),
             PF_ECORRUPT);
    /* count says 3 records, body holds 2 (R20) */
    put64(c + 2, 1);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    uint64_t cursor = 0;
    CHECK_RC(pf_record_next(img, &v, &cursor, &kp, &vp, &e), 1);
    CHECK_RC(pf_record_next(img, &v, &cursor, &kp, &vp, &e), PF_ECORRUPT);
    put64(c + 10, 6); /* body one record longer than it holds: odd tail */
    put64(c + 2, 2);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    cursor = 0;
    CHECK_RC(pf_record_next(img, &v, &cursor, &kp, &vp, &e), 1);
    CHECK_RC(pf_record_next(img, &v, &cursor, &kp, &vp, &e), 1);
    CHECK_RC(pf_record_next(img, &v, &cursor, &kp, &vp, &e), PF_ECORRUPT);
    /* A slot width leaving no tag bits. */
    c[1] = 2;
    put64(c + 10, 0xFFFF);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    /* Width 3; list counts that cannot fit; a table past the end. */
    c[0] = 0x20; c[1] = 3;
    put64(c + 2, 1); put64(c + 10, 1);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    c[1] = 8;
    put64(c + 2, 2); /* two items in a 1-byte body */
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    put64(c + 2, 1);
    c[18] = 0x00;
    put64(c + 19, 5); /* item 0 at offset 5 >= body_len (R24) */
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    CHECK_RC(pf_list_item(img, &v, 0, &kp, &e), PF_ECORRUPT);
    put64(c + 2, UINT64_MAX / 4);
    put64(c + 10, UINT64_MAX / 2); /* sizes that overflow when added */
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    put64(c + 10, 1);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    /* A tuple announcing 2^60 items. */
    c[0] = 0x18;
    memcpy(c + 1, "\x80\x80\x80\x80\x80\x80\x80\x80\x10", 9);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    /* Big int: n < 9, n past the end. */
    c[0] = 0x06; c[1] = 8;
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    c[1] = 0xFF; c[2] = 0x7F;
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    /* UCS-4 above 0x10FFFF (R15). */
    c[0] = 0x13; c[1] = 1;
    put32(c + 2, 0x110000);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    put32(c + 2, 0x10FFFF);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_OK);
    /* UCS-2 string whose length runs past the end. */
    c[0] = 0x12;
    memcpy(c + 1, "\xff\xff\x01", 3);
    CHECK_RC(pf_read(img, 128, &v, &e), PF_ECORRUPT);
    pf_image_close(img);
    free(buf);
}

int main(void)
{
    image a = build_a(), b = build_b(), c = build_c(), d = build_d();
    damage(&a);
    damage(&b);
    damage(&c);
    damage(&d);
    named(&a);
    named(&c);
    crafted();
    printf("%ld variants opened and walked: %ld ok, %ld corrupt, %ld version, "
           "%ld limit; %ld passed pf_image_verify\n", variants, outcome[0],
           outcome[-PF_ECORRUPT], outcome[-PF_EVERSION], outcome[-PF_ELIMIT],
           verified);
    pf_free(a.buf);
    pf_free(b.buf);
    pf_free(c.buf);
    pf_free(d.buf);
    return check_report();
}
