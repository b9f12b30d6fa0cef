/*
 * test_objects.c -- the extension values of format 1.1 (FORMAT section
 * 4.3): OBJECT (R32), PICKLE (R33) and ARRAY (R34), written with the
 * writer and read back. An image that holds one has incompat_flags bit 0
 * and version_minor 1, one without stays 1.0; objects share a shape
 * tuple by REF and nest in tuples, lists, dicts and each other; array data
 * starts on an image offset that is a multiple of 64 whatever precedes
 * it; shallow reads leave an object's or array's end open; none of the
 * three is ever a key (R21); verify refuses a shape or header that is not
 * a tuple, an extension value in an image without the flag, counts that
 * run past DATA, and a tuple cycle through an object (R18), and accepts an
 * object that refers to itself; every truncation and every changed byte
 * of small images ends cleanly; the streaming builder sets the flag too.
 */
#include "check.h"
#include "permafrost.h"
#include "tmpdir.h"
#include "walk.h"

typedef struct image {
    uint8_t *buf;
    uint64_t len;
} image;

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* header_check = pf_hash_bytes(header[0..120), 0) at offset 120 (R5). */
static void fix_header(uint8_t *b)
{
    uint64_t h = pf_hash_bytes(b, 120, 0);
    memcpy(b + 120, &h, 8);
}

static pf_writer *writer(void)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 11, NULL) == PF_OK);
    return w;
}

static image finish(pf_writer *w, uint64_t root)
{
    image im;
    uint8_t id[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
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

/* verify's result, its message in *msg (NULL allowed). */
static int verify_im(const image *im, const char **msg, pf_verify_stats *st)
{
    pf_image *img = open_im(im);
    pf_error e;
    memset(&e, 0, sizeof e);
    int rc = pf_image_verify(img, st, &e);
    if (msg)
        *msg = e.msg ? e.msg : "";
    pf_image_close(img);
    return rc;
}

/* verify reports corruption, with `part` in its message. */
static int verify_corrupt(const image *im, const char *part)
{
    const char *msg;
    int rc = verify_im(im, &msg, NULL);
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

static unsigned varint_len(uint64_t v)
{
    unsigned n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

#define STR(w, s) pf_write_str((w), (s), strlen(s), 1, 1, NULL)
#define MODULE "app.models"

/* The binding's shapes (R32): (1, module, qualname, ndict, *names) ... */
static void put_shape_attrs(pf_writer *w, const char *qualname, uint64_t n,
                            const char *const *names)
{
    REQUIRE(pf_write_tuple_begin(w, 4 + n, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(STR(w, MODULE) == PF_OK);
    REQUIRE(STR(w, qualname) == PF_OK);
    REQUIRE(pf_write_int(w, (int64_t)n, NULL) == PF_OK);
    for (uint64_t i = 0; i < n; i++)
        REQUIRE(STR(w, names[i]) == PF_OK);
}

/* ... and (kind, module, qualname) for kinds 2 (reduce), 3 (call) and 4
 * (global). */
static void put_shape(pf_writer *w, int kind, const char *qualname)
{
    REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, kind, NULL) == PF_OK);
    REQUIRE(STR(w, MODULE) == PF_OK);
    REQUIRE(STR(w, qualname) == PF_OK);
}

/* The binding's array header (R34): (dtype.str, shape, fortran). */
static void put_array_header(pf_writer *w, const char *dtype, int ndim,
                             const int64_t *dims, int fortran)
{
    REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
    REQUIRE(STR(w, dtype) == PF_OK);
    REQUIRE(pf_write_tuple_begin(w, (uint64_t)ndim, NULL) == PF_OK);
    for (int i = 0; i < ndim; i++)
        REQUIRE(pf_write_int(w, dims[i], NULL) == PF_OK);
    REQUIRE(pf_write_bool(w, fortran, NULL) == PF_OK);
}

static void put_array(pf_writer *w, const void *data, size_t n,
                      const char *dtype, int ndim, const int64_t *dims,
                      int fortran)
{
    REQUIRE(pf_write_array_begin(w, data, n, NULL) == PF_OK);
    put_array_header(w, dtype, ndim, dims, fortran);
}

static const char *const point_names[2] = {"x", "y"};

/* ------------------------------------------------------------------ reading */

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

/* Offset of item k of a tuple or object (an object's item 0 is its shape),
 * found by reading the items before it. */
static uint64_t item_at(const pf_image *img, const pf_val *t, uint64_t k)
{
    uint64_t cur = t->u.tup.first;
    for (uint64_t i = 0; i < k; i++)
        cur = rd(img, cur).next;
    return cur;
}

static int is_str(const pf_val *v, const char *s)
{
    return v->type == PF_STR && v->u.s.width == 1 &&
           v->u.s.len == strlen(s) && memcmp(v->u.s.data, s, strlen(s)) == 0;
}

static int is_int(const pf_val *v, int64_t i)
{
    return v->type == PF_INT && v->u.i == i;
}

/* The object at pos: its field count, its shape's kind and qualname. */
static pf_val check_object(const pf_image *img, uint64_t pos, uint64_t nfields,
                           int kind, const char *qualname)
{
    pf_val o = rd(img, pos);
    CHECK(o.type == PF_OBJECT);
    CHECK_EQ_U64(o.u.tup.count, nfields + 1);
    pf_val sh = rd(img, o.u.tup.first);
    CHECK(sh.type == PF_TUPLE);
    CHECK(sh.u.tup.count >= 3);
    pf_val k = rd(img, item_at(img, &sh, 0));
    pf_val m = rd(img, item_at(img, &sh, 1));
    pf_val q = rd(img, item_at(img, &sh, 2));
    CHECK(is_int(&k, kind));
    CHECK(is_str(&m, MODULE));
    CHECK(is_str(&q, qualname));
    if (kind == 1) {
        CHECK(sh.u.tup.count >= 4);
        pf_val nd = rd(img, item_at(img, &sh, 3));
        CHECK(nd.type == PF_INT);
        CHECK_EQ_U64(sh.u.tup.count - 4, nfields); /* one name per field */
    }
    /* the end is past the last field */
    CHECK_EQ_U64(o.end, rd(img, item_at(img, &o, nfields)).next);
    return o;
}

/* The array at pos holds data[0..n) aligned on 64 (R34), after a pad
 * count < 64 and that many zero bytes, and a header (dtype, shape,
 * fortran) follows it. */
static pf_val check_array(const pf_image *img, const image *im, uint64_t pos,
                          const void *data, uint64_t n, const char *dtype,
                          int ndim, const int64_t *dims, int fortran)
{
    pf_val a = rd(img, pos);
    CHECK(a.type == PF_ARRAY);
    CHECK_EQ_U64(a.u.arr.count, 1);
    CHECK_EQ_U64(a.u.arr.nbytes, n);
    const uint8_t *base = pf_image_base(img);
    CHECK(base == im->buf); /* a buffer image is read in place */
    const uint64_t data_off = (uint64_t)(a.u.arr.data - base);
    CHECK_EQ_U64(data_off % 64, 0);
    CHECK(n == 0 || memcmp(im->buf + data_off, data, (size_t)n) == 0);
    /* the layout: type byte, varint n, pad count, pad bytes, data */
    const uint64_t at = a.pos;
    CHECK_EQ_U64(base[at], 0x26);
    const uint64_t pc = at + 1 + varint_len(n);
    const unsigned pad = base[pc];
    CHECK(pad < 64);
    CHECK_EQ_U64(pc + 1 + pad, data_off);
    for (unsigned i = 0; i < pad; i++)
        CHECK(base[pc + 1 + i] == 0);
    CHECK_EQ_U64(a.u.arr.first, data_off + n);
    /* the header */
    pf_val h = rd(img, a.u.arr.first);
    CHECK(h.type == PF_TUPLE);
    CHECK_EQ_U64(h.u.tup.count, 3);
    CHECK_EQ_U64(a.end, h.end);
    pf_val dt = rd(img, item_at(img, &h, 0));
    pf_val sh = rd(img, item_at(img, &h, 1));
    pf_val fo = rd(img, item_at(img, &h, 2));
    CHECK(is_str(&dt, dtype));
    CHECK(sh.type == PF_TUPLE);
    CHECK_EQ_U64(sh.u.tup.count, (uint64_t)ndim);
    for (int i = 0; i < ndim && sh.type == PF_TUPLE; i++) {
        pf_val d = rd(img, item_at(img, &sh, (uint64_t)i));
        CHECK(is_int(&d, dims[i]));
    }
    CHECK(fo.type == (fortran ? PF_TRUE : PF_FALSE));
    return a;
}

static uint64_t list_item(const pf_image *img, const pf_val *l, uint64_t i)
{
    uint64_t p = 0;
    CHECK_RC(pf_list_item(img, l, i, &p, NULL), PF_OK);
    return p;
}

/* pf_find match: the stored key is the ASCII string *ctx. */
static int match_str(void *ctx, const pf_image *img, uint64_t key_pos,
                     uint64_t *key_end)
{
    pf_val v;
    (void)key_end;
    if (pf_read(img, key_pos, &v, NULL) != PF_OK)
        return -1;
    return is_str(&v, (const char *)ctx);
}

/* The value offset of key s in dict d, or 0. */
static uint64_t lookup(const pf_image *img, const pf_val *d, const char *s)
{
    uint64_t kp = 0, vp = 0;
    uint64_t h = pf_hash_str(pf_image_hash_seed(img), s, strlen(s), 1);
    int rc = pf_find(img, d, h, match_str, (void *)s, &kp, &vp, NULL);
    CHECK(rc == 1);
    return rc == 1 ? vp : 0;
}

/* ------------------------------------------------------------------ versions */

static image plain_image(void)
{
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(STR(w, "x") == PF_OK);
    REQUIRE(pf_write_bytes(w, "y", 1, NULL) == PF_OK);
    return finish(w, root);
}

/* An image whose root is one extension value: 0 object, 1 pickle, 2 array,
 * 3 a pickle deep inside a list, dict and tuple. */
static image ext_image(int which)
{
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    switch (which) {
    case 0:
        REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
        put_shape(w, 4, "func");
        break;
    case 1:
        REQUIRE(pf_write_pickle(w, "\x80\x05K\x01.", 5, NULL) == PF_OK);
        break;
    case 2: {
        const int64_t dims[1] = {4};
        put_array(w, "abcd", 4, "|u1", 1, dims, 0);
        break;
    }
    default:
        REQUIRE(pf_write_container_begin(w, PF_LIST, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_container_begin(w, PF_DICT, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(STR(w, "k") == PF_OK);
        REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
        REQUIRE(pf_write_none(w, NULL) == PF_OK);
        REQUIRE(pf_write_pickle(w, "\x80\x05N.", 4, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    }
    return finish(w, root);
}

static void test_versions(void)
{
    /* No extension value: version 1.0 and no flag, as before 1.1. */
    image im = plain_image();
    CHECK_EQ_U64(get16(im.buf + 8), 1);
    CHECK_EQ_U64(get16(im.buf + 10), 0);
    CHECK_EQ_U64(get64(im.buf + 16), 0);
    CHECK_EQ_U64(get64(im.buf + 24), 0);
    pf_image *img = open_im(&im);
    CHECK_EQ_U64(pf_image_version_minor(img), 0);
    pf_image_close(img);
    CHECK_RC(verify_im(&im, NULL, NULL), PF_OK);

    /* Each extension value, alone or deep inside: bit 0 and minor 1. */
    for (int which = 0; which < 4; which++) {
        image x = ext_image(which);
        CHECK_EQ_U64(get16(x.buf + 8), 1);
        CHECK_EQ_U64(get16(x.buf + 10), 1);
        CHECK_EQ_U64(get64(x.buf + 16), PF_INCOMPAT_EXT);
        CHECK_EQ_U64(get64(x.buf + 24), 0);
        img = open_im(&x);
        CHECK_EQ_U64(pf_image_version_minor(img), 1);
        pf_image_close(img);
        CHECK_RC(verify_im(&x, NULL, NULL), PF_OK);

        /* Any other incompat bit is a feature this reader does not know. */
        image y = copy_of(&x);
        pf_image *bad;
        const uint64_t others[3] = {2, 3, UINT64_C(1) << 63};
        for (int k = 0; k < 3; k++) {
            put64(y.buf + 16, others[k]);
            fix_header(y.buf);
            CHECK_RC(pf_image_open_buffer(y.buf, y.len, &bad, NULL), PF_EVERSION);
        }
        /* version_minor is not checked (R4): 0 or 7 open alike. */
        put64(y.buf + 16, PF_INCOMPAT_EXT);
        put16(y.buf + 10, 7);
        fix_header(y.buf);
        CHECK_RC(pf_image_open_buffer(y.buf, y.len, &bad, NULL), PF_OK);
        pf_image_close(bad);
        free(y.buf);
        free(x.buf);
    }

    /* The flag says an image may hold extension values: one that holds
     * none is still sound. */
    image z = copy_of(&im);
    put64(z.buf + 16, PF_INCOMPAT_EXT);
    put16(z.buf + 10, 1);
    fix_header(z.buf);
    CHECK_RC(verify_im(&z, NULL, NULL), PF_OK);
    free(z.buf);
    free(im.buf);
}

/* ------------------------------------------------------------------ round trip */

static void test_roundtrip(void)
{
    enum { N = 11 };
    static uint8_t big[(1u << 20) + 3];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    const double f3[3] = {1.5, 2.5, -3.25};
    const int16_t f23[6] = {1, 2, 3, 4, 5, 6}; /* a 2x3 Fortran array */
    const char pick[] = "\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94.";
    const size_t npick = sizeof pick - 1;

    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    uint64_t o0, shape0, o1, o2, inner, inner2, t3, g3, c3, p4, a4, o8, a8;
    REQUIRE(pf_write_container_begin(w, PF_LIST, N, NULL) == PF_OK);

    /* 0: Point(x=1, y="hello"), its shape written inline */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    o0 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    shape0 = pf_writer_pos(w);
    put_shape_attrs(w, "Point", 2, point_names);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(STR(w, "hello") == PF_OK);

    /* 1: Point(x=3, y=None), the same shape by REF */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    o1 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, shape0, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 3, NULL) == PF_OK);
    REQUIRE(pf_write_none(w, NULL) == PF_OK);

    /* 2: a reduce object: args (Point(5, 6),), state {"k": Point(7, 8)} */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    o2 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    put_shape(w, 2, "Reduced");
    REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
    inner = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, shape0, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 5, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 6, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 1, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "k") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    inner2 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, shape0, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 7, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, 8, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);

    /* 3: a tuple of a global (no field) and a call object (args ("RED",)) */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    t3 = pf_writer_pos(w);
    REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
    g3 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
    put_shape(w, 4, "helper");
    c3 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
    put_shape(w, 3, "Color");
    REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
    REQUIRE(STR(w, "RED") == PF_OK);

    /* 4: {"obj": REF item 0, "pickle": a pickle, "arr": an array} */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 3, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "obj") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, o0, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "pickle") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    p4 = pf_writer_pos(w);
    REQUIRE(pf_write_pickle(w, pick, npick, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "arr") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    a4 = pf_writer_pos(w);
    const int64_t d3[1] = {3};
    put_array(w, f3, sizeof f3, "<f8", 1, d3, 0);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);

    /* 5: an empty pickle (the core does not look inside) */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_pickle(w, NULL, 0, NULL) == PF_OK);

    /* 6: an array of no bytes */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    const int64_t d0[1] = {0};
    put_array(w, NULL, 0, "<i4", 1, d0, 0);

    /* 7: a large array */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    const int64_t dbig[1] = {(int64_t)sizeof big};
    put_array(w, big, sizeof big, "|u1", 1, dbig, 0);

    /* 8: an object holding a Fortran-order array */
    static const char *const data_name[1] = {"data"};
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    o8 = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
    put_shape_attrs(w, "Holder", 1, data_name);
    a8 = pf_writer_pos(w);
    const int64_t d23[2] = {2, 3};
    put_array(w, f23, sizeof f23, "<i2", 2, d23, 1);

    /* 9, 10: REFs to the array and the pickle of item 4 */
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, a4, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, p4, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    image im = finish(w, root);

    CHECK_EQ_U64(get16(im.buf + 10), 1);
    CHECK_EQ_U64(get64(im.buf + 16), PF_INCOMPAT_EXT);
    pf_verify_stats vs;
    const char *msg;
    int rc = verify_im(&im, &msg, &vs);
    if (rc != PF_OK)
        fprintf(stderr, "    verify: %s\n", msg);
    CHECK_RC(rc, PF_OK);
    CHECK_EQ_U64(vs.containers, 3); /* the list and two dicts */
    CHECK_EQ_U64(vs.keys, 4);

    pf_image *img = open_im(&im);
    pf_val l = rd(img, root);
    REQUIRE(l.type == PF_LIST && l.u.c.count == N);
    uint64_t it[N];
    for (uint64_t i = 0; i < N; i++)
        it[i] = list_item(img, &l, i);
    CHECK_EQ_U64(it[0], o0);
    CHECK_EQ_U64(it[1], o1);

    /* 0 */
    pf_val v = check_object(img, it[0], 2, 1, "Point");
    CHECK_EQ_U64(v.pos, o0);
    CHECK_EQ_U64(v.u.tup.first, shape0);
    CHECK_EQ_U64(v.end, it[1]);
    CHECK_EQ_U64(v.next, it[1]);
    pf_val f = rd(img, item_at(img, &v, 1));
    CHECK(is_int(&f, 1));
    f = rd(img, item_at(img, &v, 2));
    CHECK(is_str(&f, "hello"));
    pf_val sh = rd(img, shape0);
    CHECK_EQ_U64(sh.u.tup.count, 6);
    f = rd(img, item_at(img, &sh, 4));
    CHECK(is_str(&f, "x"));
    f = rd(img, item_at(img, &sh, 5));
    CHECK(is_str(&f, "y"));

    /* 1: the shape is a REF to item 0's */
    v = check_object(img, it[1], 2, 1, "Point");
    CHECK_EQ_U64(v.end, it[2]);
    pf_val raw;
    CHECK_RC(pf_read_raw(img, v.u.tup.first, &raw, NULL), PF_OK);
    CHECK(raw.type == PF_REF_RAW);
    CHECK_EQ_U64(raw.pos, shape0);
    CHECK_EQ_U64(rd(img, v.u.tup.first).pos, shape0);
    f = rd(img, item_at(img, &v, 1));
    CHECK(is_int(&f, 3));
    f = rd(img, item_at(img, &v, 2));
    CHECK(f.type == PF_NONE);

    /* 2: nested objects, in a tuple and as a dict value */
    v = check_object(img, it[2], 2, 2, "Reduced");
    CHECK_EQ_U64(v.pos, o2);
    CHECK_EQ_U64(v.end, it[3]);
    pf_val args = rd(img, item_at(img, &v, 1));
    CHECK(args.type == PF_TUPLE && args.u.tup.count == 1);
    CHECK_EQ_U64(args.u.tup.first, inner);
    pf_val in = check_object(img, inner, 2, 1, "Point");
    f = rd(img, item_at(img, &in, 2));
    CHECK(is_int(&f, 6));
    CHECK_EQ_U64(args.end, in.end);
    pf_val st = rd(img, item_at(img, &v, 2));
    CHECK(st.type == PF_DICT && st.u.c.count == 1);
    CHECK_EQ_U64(lookup(img, &st, "k"), inner2);
    in = check_object(img, inner2, 2, 1, "Point");
    f = rd(img, item_at(img, &in, 1));
    CHECK(is_int(&f, 7));

    /* 3 */
    v = rd(img, it[3]);
    CHECK(v.type == PF_TUPLE && v.u.tup.count == 2);
    CHECK_EQ_U64(v.pos, t3);
    CHECK_EQ_U64(item_at(img, &v, 0), g3);
    CHECK_EQ_U64(item_at(img, &v, 1), c3);
    in = check_object(img, g3, 0, 4, "helper");
    CHECK_EQ_U64(in.end, c3);
    in = check_object(img, c3, 1, 3, "Color");
    CHECK_EQ_U64(in.end, v.end);
    pf_val cargs = rd(img, item_at(img, &in, 1));
    CHECK(cargs.type == PF_TUPLE && cargs.u.tup.count == 1);
    f = rd(img, cargs.u.tup.first);
    CHECK(is_str(&f, "RED"));

    /* 4 */
    pf_val d = rd(img, it[4]);
    CHECK(d.type == PF_DICT && d.u.c.count == 3);
    uint64_t vp = lookup(img, &d, "obj");
    CHECK_RC(pf_read_raw(img, vp, &raw, NULL), PF_OK);
    CHECK(raw.type == PF_REF_RAW && raw.pos == o0);
    v = rd(img, vp);
    CHECK(v.type == PF_OBJECT && v.pos == o0);
    CHECK_EQ_U64(v.next, raw.next);
    vp = lookup(img, &d, "pickle");
    CHECK_EQ_U64(vp, p4);
    v = rd(img, vp);
    CHECK(v.type == PF_PICKLE);
    CHECK_EQ_U64(v.u.s.len, npick);
    CHECK(memcmp(v.u.s.data, pick, npick) == 0);
    CHECK_EQ_U64(v.end, p4 + 1 + varint_len(npick) + npick);
    vp = lookup(img, &d, "arr");
    CHECK_EQ_U64(vp, a4);
    check_array(img, &im, vp, f3, sizeof f3, "<f8", 1, d3, 0);

    /* 5 */
    v = rd(img, it[5]);
    CHECK(v.type == PF_PICKLE && v.u.s.len == 0);
    CHECK_EQ_U64(v.end, it[5] + 2);
    CHECK_EQ_U64(v.end, it[6]);

    /* 6, 7 */
    v = check_array(img, &im, it[6], NULL, 0, "<i4", 1, d0, 0);
    CHECK_EQ_U64(v.end, it[7]);
    v = check_array(img, &im, it[7], big, sizeof big, "|u1", 1, dbig, 0);
    CHECK_EQ_U64(v.end, it[8]);

    /* 8 */
    v = check_object(img, it[8], 1, 1, "Holder");
    CHECK_EQ_U64(v.pos, o8);
    CHECK_EQ_U64(item_at(img, &v, 1), a8);
    pf_val a = check_array(img, &im, a8, f23, sizeof f23, "<i2", 2, d23, 1);
    CHECK_EQ_U64(a.end, v.end);
    CHECK_EQ_U64(v.end, it[9]);

    /* 9, 10: through a REF */
    v = rd(img, it[9]);
    CHECK(v.type == PF_ARRAY && v.pos == a4);
    CHECK_EQ_U64(v.next, it[10]);
    CHECK_EQ_U64(v.u.arr.nbytes, sizeof f3);
    v = rd(img, it[10]);
    CHECK(v.type == PF_PICKLE && v.pos == p4);
    CHECK_EQ_U64(v.u.s.len, npick);

    /* Shallow reads: an object's or array's end is left open, as a
     * tuple's; a pickle reads in full. */
    pf_val s;
    const uint64_t shallow_at[4] = {it[0], it[2], it[7], it[8]};
    for (int k = 0; k < 4; k++) {
        v = rd(img, shallow_at[k]);
        CHECK_RC(pf_read_ex(img, shallow_at[k], PF_READ_SHALLOW, &s, NULL), PF_OK);
        CHECK(s.type == v.type);
        CHECK_EQ_U64(s.end, 0);
        CHECK_EQ_U64(s.next, 0);
        CHECK_EQ_U64(s.u.tup.count, v.u.tup.count);
        CHECK_EQ_U64(s.u.tup.first, v.u.tup.first);
        if (s.type == PF_ARRAY) {
            CHECK(s.u.arr.data == v.u.arr.data);
            CHECK_EQ_U64(s.u.arr.nbytes, v.u.arr.nbytes);
        }
    }
    CHECK_RC(pf_read_ex(img, it[9], PF_READ_SHALLOW, &s, NULL), PF_OK);
    CHECK(s.type == PF_ARRAY && s.end == 0 && s.next == it[10]);
    CHECK_RC(pf_read_ex(img, it[5], PF_READ_SHALLOW, &s, NULL), PF_OK);
    CHECK(s.type == PF_PICKLE && s.end == it[6] && s.next == it[6]);
    /* pf_read_raw of an object written in place reads it whole */
    CHECK_RC(pf_read_raw(img, it[0], &raw, NULL), PF_OK);
    CHECK(raw.type == PF_OBJECT && raw.end == it[1]);

    /* None of them hashes (R21). */
    uint64_t h;
    const uint64_t nokey[5] = {it[0], it[3], it[5], it[7], it[9]};
    for (int k = 0; k < 5; k++)
        CHECK_RC(pf_hash_at(img, nokey[k], &h, NULL), PF_ETYPE);
    pf_image_close(img);
    free(im.buf);
}

/* Array data lands on a multiple of 64 whatever precedes it: every pad
 * from 0 to 63 is met. */
static void test_alignment(void)
{
    int seen[64] = {0};
    uint8_t fill[140];
    memset(fill, 0x5A, sizeof fill);
    for (size_t k = 0; k < 140; k++) {
        pf_writer *w = writer();
        uint64_t root = pf_writer_pos(w);
        REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
        REQUIRE(pf_write_bytes(w, fill, k, NULL) == PF_OK);
        const int64_t dims[1] = {5};
        put_array(w, "12345", 5, "|S1", 1, dims, 0);
        image im = finish(w, root);
        pf_image *img = open_im(&im);
        pf_val t = rd(img, root);
        uint64_t ap = item_at(img, &t, 1);
        pf_val a = check_array(img, &im, ap, "12345", 5, "|S1", 1, dims, 0);
        CHECK_EQ_U64(a.end, t.end);
        seen[im.buf[ap + 2]] = 1; /* the pad count after 26 05 */
        pf_image_close(img);
        CHECK_RC(verify_im(&im, NULL, NULL), PF_OK);
        free(im.buf);
    }
    int all = 1;
    for (int i = 0; i < 64; i++)
        all &= seen[i];
    CHECK(all);
}

/* ------------------------------------------------------------------ keys */

/* The writer refuses an extension value as a key (R21): 0 object, 1
 * pickle, 2 array, 3 a tuple holding an object, 4 a REF to an object. */
static void test_not_keys(void)
{
    const int types[3] = {PF_DICT, PF_SET, PF_FROZENSET};
    for (int which = 0; which < 5; which++) {
        for (int t = 0; t < 3; t++) {
            pf_writer *w = writer();
            pf_error e;
            uint64_t obj = 0;
            if (which == 4) {
                REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
                obj = pf_writer_pos(w);
                REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
                put_shape(w, 4, "f");
            }
            REQUIRE(pf_write_container_begin(w, types[t], 1, NULL) == PF_OK);
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
            switch (which) {
            case 0:
                REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
                put_shape(w, 3, "E");
                REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
                break;
            case 1:
                REQUIRE(pf_write_pickle(w, "\x80\x05N.", 4, NULL) == PF_OK);
                break;
            case 2: {
                const int64_t dims[1] = {2};
                put_array(w, "ab", 2, "|u1", 1, dims, 0);
                break;
            }
            case 3:
                REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
                REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
                REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
                put_shape(w, 4, "f");
                break;
            default:
                REQUIRE(pf_write_ref(w, obj, NULL) == PF_OK);
                break;
            }
            memset(&e, 0, sizeof e);
            CHECK_RC(pf_write_key_done(w, &e), PF_ETYPE);
            CHECK(e.code == PF_ETYPE && e.msg != NULL);
            pf_writer_free(w);
        }
    }
}

/* ------------------------------------------------------------------ verify */

/* An object of one field whose shape is, by `kind`: -1 an int, -2 a REF
 * to a long string, -3 a list, -4 a REF to an object (-2 and -4: the
 * object is the second item of a root tuple); else a proper shape. */
static image object_with_shape(int kind)
{
    pf_writer *w = writer();
    uint64_t target = 0, root, tup = pf_writer_pos(w);
    if (kind == -2 || kind == -4) {
        REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
        target = pf_writer_pos(w);
        if (kind == -2) {
            REQUIRE(STR(w, "a string long enough to be referenced") == PF_OK);
        } else {
            REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
            put_shape(w, 4, "f");
        }
    }
    root = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
    switch (kind) {
    case -1:
        REQUIRE(pf_write_int(w, 4, NULL) == PF_OK);
        break;
    case -2:
    case -4:
        REQUIRE(pf_write_ref(w, target, NULL) == PF_OK);
        break;
    case -3:
        REQUIRE(pf_write_container_begin(w, PF_LIST, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_int(w, 4, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    default:
        put_shape(w, 3, "E");
        break;
    }
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    if (kind == -2 || kind == -4)
        return finish(w, tup); /* the enclosing tuple */
    return finish(w, root);
}

static void test_shape_not_tuple(void)
{
    image ok = object_with_shape(3);
    CHECK_RC(verify_im(&ok, NULL, NULL), PF_OK);
    free(ok.buf);
    for (int kind = -1; kind >= -4; kind--) {
        image im = object_with_shape(kind);
        /* readers decode it: the shape is the binding's business ... */
        pf_image *img = open_im(&im);
        pf_val r = rd(img, pf_image_root(img));
        CHECK(r.type == PF_OBJECT || r.type == PF_TUPLE);
        pf_image_close(img);
        /* ... but the full check knows it must be a tuple (R32) */
        CHECK(verify_corrupt(&im, "shape is not a tuple (R32)"));
        free(im.buf);
    }
    /* An array header that is not a tuple (R34). */
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_array_begin(w, "xy", 2, NULL) == PF_OK);
    REQUIRE(STR(w, "<u1") == PF_OK);
    image im = finish(w, root);
    CHECK(verify_corrupt(&im, "array header is not a tuple (R34)"));
    free(im.buf);
}

/* Bit 0 of incompat_flags cleared (with the header check fixed): the
 * image opens, and the full check finds the extension value (R6, R14). */
static void test_flag_cleared(void)
{
    for (int which = 0; which < 4; which++) {
        image x = ext_image(which);
        for (int minor = 1; minor >= 0; minor--) {
            image y = copy_of(&x);
            put64(y.buf + 16, 0);
            put16(y.buf + 10, (uint16_t)minor);
            fix_header(y.buf);
            pf_image *img;
            CHECK_RC(pf_image_open_buffer(y.buf, y.len, &img, NULL), PF_OK);
            pf_image_close(img);
            CHECK(verify_corrupt(&y, "without the incompat flag"));
            free(y.buf);
        }
        free(x.buf);
    }
}

/* Counts and lengths that run past DATA. */
static void test_past_data(void)
{
    /* Root: an object of one field, alone in DATA. */
    pf_writer *w = writer();
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
    put_shape(w, 4, "f");
    REQUIRE(pf_write_int(w, 9, NULL) == PF_OK);
    image im = finish(w, root);
    CHECK_EQ_U64(im.buf[root], 0x24);
    CHECK_EQ_U64(im.buf[root + 1], 1);
    const uint8_t counts[5] = {2, 3, 0x7F, 100, 0xFF};
    for (int k = 0; k < 5; k++) {
        image y = copy_of(&im);
        y.buf[root + 1] = counts[k];
        pf_image *img = open_im(&y);
        pf_val v;
        pf_error e;
        CHECK_RC(pf_read(img, root, &v, &e), PF_ECORRUPT);
        pf_image_close(img);
        CHECK(verify_corrupt(&y, "checksum")); /* the damage, first */
        no_checksums(&y);
        CHECK(verify_corrupt(&y, "DATA section"));
        free(y.buf);
    }
    free(im.buf);

    /* A pickle one byte longer than DATA holds. */
    im = ext_image(1);
    root = get64(im.buf + 56);
    CHECK_EQ_U64(im.buf[root + 1], 5);
    image y = copy_of(&im);
    y.buf[root + 1] = 6;
    no_checksums(&y);
    pf_image *img = open_im(&y);
    pf_val v;
    CHECK_RC(pf_read(img, root, &v, NULL), PF_ECORRUPT);
    pf_image_close(img);
    CHECK(verify_corrupt(&y, "pickle runs past the DATA section"));
    free(y.buf);
    free(im.buf);

    /* An array: nbytes past DATA, a pad of 64 or past DATA. */
    im = ext_image(2);
    root = get64(im.buf + 56);
    CHECK_EQ_U64(im.buf[root + 1], 4);
    const uint64_t pc = root + 2;
    const uint8_t pad = im.buf[pc];
    CHECK(pad < 64);
    const uint64_t data_end = get64(im.buf + 64);
    const uint8_t bad_pads[2] = {64, 0xFF};
    for (int k = 0; k < 4; k++) {
        y = copy_of(&im);
        if (k < 2)
            y.buf[pc] = bad_pads[k];
        else if (k == 2)
            y.buf[root + 1] = (uint8_t)(data_end - (pc + 1 + pad)); /* no header */
        else
            y.buf[root + 1] = 0x7F;
        no_checksums(&y);
        img = open_im(&y);
        CHECK_RC(pf_read(img, root, &v, NULL), PF_ECORRUPT);
        CHECK_RC(pf_read_ex(img, root, PF_READ_SHALLOW, &v, NULL), PF_ECORRUPT);
        pf_image_close(img);
        CHECK(verify_corrupt(&y, "array runs past the DATA section"));
        free(y.buf);
    }
    free(im.buf);
}

/* R18 through objects and arrays: a REF back to a tuple that encloses
 * the object with no container in between is corrupt; cycles through a
 * list, and an object that refers to itself, are sound. */
enum {
    CY_TUPLE_OBJ_REF,      /* T = (O,), O.f = T */
    CY_TUPLE_OBJ_TUPLE,    /* T = (O,), O.f = (T, 1) */
    CY_TUPLE_OBJ_SHAPE,    /* T = (O,), O's shape is T */
    CY_TUPLE_OBJ_OBJ,      /* T = (O1,), O1.f = O2, O2.f = T */
    CY_TUPLE_ARRAY_HEADER, /* T = (A,), A's header = (T, ...) */
    CY_OK,                 /* the sound ones from here on */
    CY_LIST_OBJ = CY_OK,   /* L = [O], O.f = L */
    CY_TUPLE_LIST_OBJ,     /* T = ([O],), O.f = T */
    CY_OBJ_SELF,           /* O.f = O */
    CY_OBJ_TUPLE_SELF,     /* O.f = (O,) */
    CY_OBJ_OBJ_SELF,       /* O1.f = O2, O2.f = O1 */
    CY_OBJ_LIST_SELF,      /* O.f = [O] */
    CY_END
};

static const char *const f_name[1] = {"f"};

static image cycle_image(int which)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    switch (which) {
    case CY_TUPLE_OBJ_REF:
    case CY_TUPLE_OBJ_TUPLE:
    case CY_TUPLE_OBJ_SHAPE:
    case CY_TUPLE_OBJ_OBJ:
        REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        if (which == CY_TUPLE_OBJ_SHAPE) {
            REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, 0, NULL) == PF_OK);
            break;
        }
        put_shape_attrs(w, "C", 1, f_name);
        if (which == CY_TUPLE_OBJ_REF) {
            REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        } else if (which == CY_TUPLE_OBJ_TUPLE) {
            REQUIRE(pf_write_tuple_begin(w, 2, NULL) == PF_OK);
            REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
            REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
        } else {
            REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
            put_shape_attrs(w, "C", 1, f_name);
            REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        }
        break;
    case CY_TUPLE_ARRAY_HEADER:
        REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_array_begin(w, "ab", 2, NULL) == PF_OK);
        REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
        REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_int(w, 2, NULL) == PF_OK);
        REQUIRE(pf_write_bool(w, 0, NULL) == PF_OK);
        break;
    case CY_LIST_OBJ:
        REQUIRE(pf_write_container_begin(w, PF_LIST, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        put_shape_attrs(w, "C", 1, f_name);
        REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    case CY_TUPLE_LIST_OBJ:
        REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_container_begin(w, PF_LIST, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(w, NULL) == PF_OK);
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        put_shape_attrs(w, "C", 1, f_name);
        REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    case CY_OBJ_SELF:
    case CY_OBJ_TUPLE_SELF:
    case CY_OBJ_LIST_SELF:
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        put_shape_attrs(w, "C", 1, f_name);
        if (which == CY_OBJ_TUPLE_SELF) {
            REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
        } else if (which == CY_OBJ_LIST_SELF) {
            REQUIRE(pf_write_container_begin(w, PF_LIST, 1, NULL) == PF_OK);
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
        }
        REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        if (which == CY_OBJ_LIST_SELF)
            REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    default: /* CY_OBJ_OBJ_SELF */
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        put_shape_attrs(w, "C", 1, f_name);
        REQUIRE(pf_write_object_begin(w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_ref(w, root + 2, NULL) == PF_OK); /* O1's shape */
        REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
        break;
    }
    return finish(w, root);
}

static void test_cycles(void)
{
    for (int which = 0; which < CY_END; which++) {
        image im = cycle_image(which);
        pf_image *img = open_im(&im);
        pf_val r = rd(img, pf_image_root(img)); /* readers decode it */
        CHECK(r.end > pf_image_root(img));
        pf_image_close(img);
        if (which < CY_OK) {
            /* a shape that holds the object breaks R32 first */
            if (!verify_corrupt(&im, which == CY_TUPLE_OBJ_SHAPE ? "(R32)" : "(R18)")) {
                fprintf(stderr, "    cycle %d\n", which);
                CHECK(0);
            }
        } else {
            const char *msg;
            int rc = verify_im(&im, &msg, NULL);
            if (rc != PF_OK)
                fprintf(stderr, "    cycle %d: %s\n", which, msg);
            CHECK_RC(rc, PF_OK);
        }
        free(im.buf);
    }
    /* The self-reference reads back as the object itself. */
    image im = cycle_image(CY_OBJ_SELF);
    pf_image *img = open_im(&im);
    const uint64_t root = pf_image_root(img);
    pf_val o = check_object(img, root, 1, 1, "C");
    const uint64_t fp = item_at(img, &o, 1);
    pf_val f = rd(img, fp);
    CHECK(f.type == PF_OBJECT && f.pos == root);
    CHECK_EQ_U64(f.next, o.end);
    pf_image_close(img);
    free(im.buf);
}

/* ------------------------------------------------------------------ damage */

static long variants, verified, outcome[16];

static int clean_rc(int rc)
{
    return rc == PF_OK || rc == PF_ECORRUPT || rc == PF_EVERSION ||
           rc == PF_ELIMIT;
}

/* Opens b[0..len), walks it, verifies it (with the checksums, then with
 * them cleared): every result clean, and an image that verifies walks
 * without a fault. 1 if all was well. */
static int open_walk(const uint8_t *b, uint64_t len)
{
    pf_image *img;
    pf_error e;
    int ok = 1;
    variants++;
    memset(&e, 0, sizeof e);
    int rc = pf_image_open_buffer(b, len, &img, &e);
    if (rc != PF_OK)
        return clean_rc(rc) && rc < 0 && e.msg && e.code == rc;
    walk_state ws = {0, 20000, 60, 0, 0};
    int wrc = walk(img, pf_image_root(img), 0, &ws);
    pf_image_close(img);
    if (!clean_rc(wrc)) {
        fprintf(stderr, "    unclean walk result %d\n", wrc);
        ok = 0;
    }
    outcome[-wrc < 16 && wrc <= 0 ? -wrc : 15]++;
    uint8_t *scratch = (uint8_t *)malloc((size_t)len);
    REQUIRE(scratch != NULL);
    for (int pass = 0; pass < 2; pass++) {
        memcpy(scratch, b, (size_t)len);
        if (pass == 1) {
            uint64_t stab = get64(b + 64);
            uint32_t nsec;
            memcpy(&nsec, b + 72, 4);
            for (uint32_t k = 0; k < nsec && stab + 32 * (k + 1) <= len; k++)
                put64(scratch + stab + 32 * k + 24, 0);
        }
        if (pf_image_open_buffer(scratch, len, &img, NULL) != PF_OK)
            continue;
        memset(&e, 0, sizeof e);
        int vrc = pf_image_verify(img, NULL, &e);
        pf_image_close(img);
        if (!clean_rc(vrc) || (vrc != PF_OK && (!e.msg || e.code != vrc))) {
            fprintf(stderr, "    unclean verify result %d\n", vrc);
            ok = 0;
        }
        if (vrc == PF_OK) {
            verified++;
            if (pass == 1) {
                /* what verifies must walk: walk the very bytes again */
                pf_image *again;
                REQUIRE(pf_image_open_buffer(scratch, len, &again, NULL) == PF_OK);
                walk_state w2 = {0, 20000, 60, 0, 0};
                int rc2 = walk(again, pf_image_root(again), 0, &w2);
                pf_image_close(again);
                if (rc2 != PF_OK && rc2 != PF_ELIMIT) {
                    fprintf(stderr, "    verified, but the walk found %d\n", rc2);
                    ok = 0;
                }
            }
        }
    }
    free(scratch);
    return ok;
}

static void damage(const image *im, const char *name)
{
    uint8_t *b = (uint8_t *)malloc((size_t)im->len + 64);
    REQUIRE(b != NULL);
    long bad = 0;
    CHECK(open_walk(im->buf, im->len));
    CHECK_RC(verify_im(im, NULL, NULL), PF_OK);
    /* Every truncation of the buffer: shorter than image_size. */
    for (uint64_t cut = 0; cut < im->len; cut++) {
        pf_image *img;
        memcpy(b, im->buf, (size_t)cut);
        int rc = pf_image_open_buffer(b, cut, &img, NULL);
        bad += rc != PF_ECORRUPT;
    }
    /* Every truncation of DATA behind a consistent header and table. */
    const uint64_t data_end = get64(im->buf + 64);
    for (uint64_t cut = 129; cut < data_end; cut++) {
        memcpy(b, im->buf, (size_t)cut);
        memset(b + cut, 0, 32);
        put32(b + cut, 1);
        put32(b + cut + 4, 1);
        put64(b + cut + 8, 128);
        put64(b + cut + 16, cut - 128);
        put64(b + 48, cut + 32);
        put64(b + 64, cut);
        put32(b + 72, 1);
        fix_header(b);
        bad += !open_walk(b, cut + 32);
    }
    /* Every byte, several new values (the extension types, pads of 63 and
     * 64 among them); header bytes also with the check fixed. */
    for (uint64_t i = 0; i < im->len; i++) {
        const uint8_t o = im->buf[i];
        const uint8_t vals[] = {(uint8_t)(o ^ 0x01), (uint8_t)(o ^ 0x80),
                                (uint8_t)(o ^ 0xFF), 0x00, 0x03, 0x7F, 0x80,
                                0xFF, (uint8_t)(o + 1), (uint8_t)(o - 1),
                                0x18, 0x21, 0x24, 0x25, 0x26, 0x3F, 0x40};
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
    if (bad)
        fprintf(stderr, "    %s: %ld unclean variants\n", name, bad);
    CHECK(bad == 0);
    free(b);
}

static image small_objects(void)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_LIST, 4, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    const uint64_t shape = pf_writer_pos(w);
    put_shape_attrs(w, "P", 2, point_names);
    REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
    REQUIRE(STR(w, "hi") == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    const uint64_t o = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, shape, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, o, NULL) == PF_OK);   /* itself */
    REQUIRE(pf_write_tuple_begin(w, 1, NULL) == PF_OK);
    REQUIRE(pf_write_object_begin(w, 0, NULL) == PF_OK);
    put_shape(w, 4, "g");
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 1, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "k") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, o, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, root, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

static image small_arrays(void)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_tuple_begin(w, 3, NULL) == PF_OK);
    const int64_t d3[1] = {3}, d0[1] = {0};
    put_array(w, "\x01\x00\x02\x00\x03\x00", 6, "<i2", 1, d3, 0);
    put_array(w, NULL, 0, "<f4", 1, d0, 0);
    REQUIRE(pf_write_none(w, NULL) == PF_OK);
    return finish(w, root);
}

static image small_pickles(void)
{
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_container_begin(w, PF_DICT, 3, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "p") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    const uint64_t p = pf_writer_pos(w);
    REQUIRE(pf_write_pickle(w, "\x80\x05\x95K\x01.", 6, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "q") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(w, p, NULL) == PF_OK);
    REQUIRE(pf_write_item(w, NULL) == PF_OK);
    REQUIRE(STR(w, "e") == PF_OK);
    REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
    REQUIRE(pf_write_pickle(w, NULL, 0, NULL) == PF_OK);
    REQUIRE(pf_write_end(w, NULL) == PF_OK);
    return finish(w, root);
}

/* All three at once: an object whose fields are an array and a pickle. */
static image small_mixed(void)
{
    static const char *const names[2] = {"a", "p"};
    pf_writer *w = writer();
    const uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
    put_shape_attrs(w, "M", 2, names);
    const int64_t d2[2] = {1, 2};
    put_array(w, "\x07\x08", 2, "|b1", 2, d2, 1);
    REQUIRE(pf_write_pickle(w, "\x80\x05N.", 4, NULL) == PF_OK);
    return finish(w, root);
}

static void test_damage(void)
{
    image ims[4] = {small_objects(), small_arrays(), small_pickles(),
                    small_mixed()};
    const char *names[4] = {"objects", "arrays", "pickles", "mixed"};
    for (int k = 0; k < 4; k++) {
        damage(&ims[k], names[k]);
        free(ims[k].buf);
    }
    printf("damage: %ld variants; %ld verified; outcomes: ok %ld, corrupt %ld, "
           "version %ld, limit %ld\n", variants, verified, outcome[0],
           outcome[-PF_ECORRUPT], outcome[-PF_EVERSION], outcome[-PF_ELIMIT]);
}

/* ------------------------------------------------------------------ builder */

/* The streaming builder: a list of an object, a pickle and an array sets
 * the flag; a list of plain values does not. Its records move, so its
 * arrays need not be aligned (R34): only their bytes are checked. */
static void test_builder(void)
{
    char p[600];
    pf_error e;
    for (int ext = 0; ext < 2; ext++) {
        path_in(p, sizeof p, ext ? "ext.pfi" : "plain.pfi");
        pf_builder *b;
        CHECK_RC(pf_builder_new(p, PF_LIST, 0, &b, &e), PF_OK);
        REQUIRE(b != NULL);
        pf_writer *w = pf_builder_writer(b);
        for (int i = 0; i < 3; i++) {
            REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
            if (!ext) {
                REQUIRE(pf_write_int(w, i, NULL) == PF_OK);
            } else if (i == 0) {
                REQUIRE(pf_write_object_begin(w, 2, NULL) == PF_OK);
                put_shape_attrs(w, "Point", 2, point_names);
                REQUIRE(pf_write_int(w, 1, NULL) == PF_OK);
                REQUIRE(pf_write_int(w, 2, NULL) == PF_OK);
            } else if (i == 1) {
                REQUIRE(pf_write_pickle(w, "\x80\x05N.", 4, NULL) == PF_OK);
            } else {
                const int64_t dims[1] = {3};
                put_array(w, "xyz", 3, "|u1", 1, dims, 0);
            }
            REQUIRE(pf_builder_end(b, NULL) == PF_OK);
        }
        CHECK_RC(pf_builder_finish(b, PF_PUBLISH_RENAME, &e), PF_OK);
        pf_builder_free(b);

        pf_image *img;
        REQUIRE(pf_image_open_file(p, &img, &e) == PF_OK);
        const uint8_t *base = pf_image_base(img);
        CHECK_EQ_U64(get16(base + 10), ext ? 1 : 0);
        CHECK_EQ_U64(get64(base + 16), ext ? PF_INCOMPAT_EXT : 0);
        int rc = pf_image_verify(img, NULL, &e);
        if (rc != PF_OK)
            fprintf(stderr, "    builder verify: %s\n", e.msg);
        CHECK_RC(rc, PF_OK);
        pf_val l = rd(img, pf_image_root(img));
        CHECK(l.type == PF_LIST && l.u.c.count == 3);
        if (ext && l.type == PF_LIST) {
            check_object(img, list_item(img, &l, 0), 2, 1, "Point");
            pf_val v = rd(img, list_item(img, &l, 1));
            CHECK(v.type == PF_PICKLE && v.u.s.len == 4);
            v = rd(img, list_item(img, &l, 2));
            CHECK(v.type == PF_ARRAY && v.u.arr.nbytes == 3);
            CHECK(v.type == PF_ARRAY && memcmp(v.u.arr.data, "xyz", 3) == 0);
        }
        pf_image_close(img);
        CHECK(remove(p) == 0);
    }
}

int main(void)
{
    test_versions();
    test_roundtrip();
    test_alignment();
    test_not_keys();
    test_shape_not_tuple();
    test_flag_cleared();
    test_past_data();
    test_cycles();
    test_damage();
    REQUIRE(tmpdir_make("pf_test_objects") == 0);
    test_builder();
    CHECK(count_entries() == 0 || count_entries() == -1);
    CHECK(test_rmdir(dir) == 0);
    return check_report();
}
