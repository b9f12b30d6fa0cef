/*
 * test_objects.c -- the extension values of format 1.1 (FORMAT section
 * 4.3): OBJECT (R32), PICKLE (R33), ARRAY (R34) and KEYED (R35), written
 * with the writer and read back. An image that holds one has
 * incompat_flags bit 0 and version_minor 1, one without stays 1.0;
 * objects share a shape tuple by REF and nest in tuples, lists, dicts and
 * each other; array data starts on an image offset that is a multiple of
 * 64 whatever precedes it; shallow reads leave an object's, array's or
 * keyed value's end open; objects, pickles and arrays are never keys
 * (R21), a keyed value is one: it hashes as its proxy, equals a keyed
 * value of equal flags and proxy, and a plain key equal to its proxy when
 * its flag EQ is set (verify finds two such keys in one container
 * corrupt, the streaming builder merges them); verify refuses a shape or
 * header that is not a tuple, a keyed value's unknown flags, a proxy not
 * of a key type, a value that is not an object or a pickle, an extension
 * value in an image without the flag, counts that run past DATA, and a
 * tuple cycle through an object or a keyed value (R18), and accepts an
 * object that refers to itself; every truncation and every changed byte
 * of small images ends cleanly; the streaming builder sets the flag too.
 */
#include "check.h"
#include "permafrost.h"
#include "tmpdir.h"
#include "walk.h"
#include "damage.h"

typedef struct image {
    uint8_t *buf;
    uint64_t len;
} image;

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }


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
        const uint64_t others[3] = {4, 5, UINT64_C(1) << 63}; /* bits 0, 1: R32, R36 */
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

/* The sweep of damage.h, with the extension types' tags (and pads of 63
 * and 64) among the byte values. */
static void damage(const image *im, const char *name)
{
    static const uint8_t vals[] = {0x00, 0x03, 0x7F, 0x80, 0xFF, 0x18, 0x21, 0x24,
                                   0x25, 0x26, 0x27, 0x3F, 0x40};
    CHECK_RC(verify_im(im, NULL, NULL), PF_OK);
    dmg_sweep(im->buf, im->len, name, vals, sizeof vals, NULL);
}

/* ------------------------------------------------------------------ keyed values */

/* A key described in C (R35): written with the writer, hashed with the
 * pf_hash_* functions alone (not through the image), and matched against
 * a stored key. */
typedef struct kdesc {
    int type;                   /* PF_TRUE, PF_INT, PF_FLOAT, PF_STR,
                                   PF_TUPLE, PF_FROZENSET or PF_KEYED */
    int64_t i;                  /* PF_INT */
    double f;                   /* PF_FLOAT */
    const char *s;              /* PF_STR (ASCII) */
    unsigned flags;             /* PF_KEYED */
    int val;                    /* PF_KEYED's value: 0 a call object, 1 a
                                   pickle, 2 a REF to the first object */
    uint64_t n;                 /* PF_TUPLE, PF_FROZENSET: items */
    const struct kdesc *items;  /* ... or PF_KEYED: items[0], the proxy */
} kdesc;

#define KD_TRUE {.type = PF_TRUE}
#define KD_INT(v) {.type = PF_INT, .i = (v)}
#define KD_FLOAT(v) {.type = PF_FLOAT, .f = (v)}
#define KD_STR(v) {.type = PF_STR, .s = (v)}
#define KD_TUPLE(a) {.type = PF_TUPLE, .n = sizeof(a) / sizeof((a)[0]), .items = (a)}
#define KD_FSET(a) {.type = PF_FROZENSET, .n = sizeof(a) / sizeof((a)[0]), .items = (a)}
#define KD_KEYED(fl, v, proxy) {.type = PF_KEYED, .flags = (fl), .val = (v), \
                                .n = 1, .items = &(proxy)}
#define KEQ PF_KEYED_EQ

/* The writer, and the first keyed value's object (what val 2 refers to). */
typedef struct kw {
    pf_writer *w;
    uint64_t obj;
    int64_t serial;
} kw;

/* A call object (kind 3) with args (serial,): what a Decimal looks like. */
static void put_key_obj(kw *c)
{
    const uint64_t at = pf_writer_pos(c->w);
    REQUIRE(pf_write_object_begin(c->w, 1, NULL) == PF_OK);
    put_shape(c->w, 3, "Key");
    REQUIRE(pf_write_tuple_begin(c->w, 1, NULL) == PF_OK);
    REQUIRE(pf_write_int(c->w, c->serial++, NULL) == PF_OK);
    if (!c->obj)
        c->obj = at;
}

static void put_kd(kw *c, const kdesc *d)
{
    pf_writer *w = c->w;
    switch (d->type) {
    case PF_TRUE:
        REQUIRE(pf_write_bool(w, 1, NULL) == PF_OK);
        break;
    case PF_INT:
        REQUIRE(pf_write_int(w, d->i, NULL) == PF_OK);
        break;
    case PF_FLOAT:
        REQUIRE(pf_write_float(w, d->f, NULL) == PF_OK);
        break;
    case PF_STR:
        REQUIRE(STR(w, d->s) == PF_OK);
        break;
    case PF_TUPLE:
        REQUIRE(pf_write_tuple_begin(w, d->n, NULL) == PF_OK);
        for (uint64_t k = 0; k < d->n; k++)
            put_kd(c, &d->items[k]);
        break;
    case PF_FROZENSET:
        REQUIRE(pf_write_container_begin(w, PF_FROZENSET, d->n, NULL) == PF_OK);
        for (uint64_t k = 0; k < d->n; k++) {
            REQUIRE(pf_write_item(w, NULL) == PF_OK);
            put_kd(c, &d->items[k]);
            REQUIRE(pf_write_key_done(w, NULL) == PF_OK);
        }
        REQUIRE(pf_write_end(w, NULL) == PF_OK);
        break;
    default: /* PF_KEYED */
        REQUIRE(d->type == PF_KEYED);
        REQUIRE(pf_write_keyed_begin(w, d->flags, NULL) == PF_OK);
        put_kd(c, &d->items[0]);
        if (d->val == 1)
            REQUIRE(pf_write_pickle(w, "\x80\x05K\x07.", 5, NULL) == PF_OK);
        else if (d->val == 2 && c->obj)
            REQUIRE(pf_write_ref(w, c->obj, NULL) == PF_OK);
        else
            put_key_obj(c);
        break;
    }
}

/* The stable hash of the key d describes, from the pf_hash_* functions
 * (FORMAT section 5): a keyed value hashes as its proxy (R35). */
static uint64_t kd_hash(uint64_t seed, const kdesc *d)
{
    uint64_t hs[8];
    switch (d->type) {
    case PF_TRUE:
        return pf_hash_i64(seed, 1);
    case PF_INT:
        return pf_hash_i64(seed, d->i);
    case PF_FLOAT:
        return pf_hash_double(seed, d->f);
    case PF_STR:
        return pf_hash_str(seed, d->s, strlen(d->s), 1);
    case PF_KEYED:
        return kd_hash(seed, &d->items[0]);
    default:
        REQUIRE(d->n <= 8);
        for (uint64_t k = 0; k < d->n; k++)
            hs[k] = kd_hash(seed, &d->items[k]);
        return d->type == PF_TUPLE ? pf_hash_tuple_of(seed, hs, (size_t)d->n)
                                   : pf_hash_frozenset_of(seed, hs, (size_t)d->n);
    }
}

/* 1 if the stored key at pos is exactly the one d describes (a frozenset's
 * members in the order written), 0 if not, -1 if it cannot be read. */
static int kd_match(const pf_image *img, uint64_t pos, const kdesc *d)
{
    pf_val v, it;
    int m;
    if (pf_read(img, pos, &v, NULL) != PF_OK)
        return -1;
    if (v.type != d->type)
        return 0;
    switch (d->type) {
    case PF_TRUE:
        return 1;
    case PF_INT:
        return v.u.i == d->i;
    case PF_FLOAT:
        return v.u.f == d->f;
    case PF_STR:
        return is_str(&v, d->s);
    case PF_KEYED:
        if (v.u.key.count != 2 || v.u.key.flags != d->flags)
            return 0;
        return kd_match(img, v.u.key.first, &d->items[0]);
    case PF_TUPLE: {
        if (v.u.tup.count != d->n)
            return 0;
        uint64_t cur = v.u.tup.first;
        for (uint64_t k = 0; k < d->n; k++) {
            if ((m = kd_match(img, cur, &d->items[k])) != 1)
                return m;
            if (pf_read(img, cur, &it, NULL) != PF_OK)
                return -1;
            cur = it.next;
        }
        return 1;
    }
    default: { /* PF_FROZENSET */
        if (v.u.c.count != d->n)
            return 0;
        uint64_t cursor = 0, kp, vp;
        for (uint64_t k = 0; k < d->n; k++) {
            if (pf_record_next(img, &v, &cursor, &kp, &vp, NULL) != 1)
                return -1;
            if ((m = kd_match(img, kp, &d->items[k])) != 1)
                return m;
        }
        return 1;
    }
    }
}

/* pf_find match: the stored key is the one *ctx (a kdesc) describes. */
static int match_kd(void *ctx, const pf_image *img, uint64_t key_pos,
                    uint64_t *key_end)
{
    (void)key_end;
    return kd_match(img, key_pos, (const kdesc *)ctx);
}

/* The value offset of key d in container c (found at key offset *kp). */
static int find_kd(const pf_image *img, const pf_val *c, const kdesc *d,
                   uint64_t *kp, uint64_t *vp)
{
    uint64_t h = kd_hash(pf_image_hash_seed(img), d);
    return pf_find(img, c, h, match_kd, (void *)d, kp, vp, NULL);
}

static const kdesc kd_1 = KD_INT(1), kd_2 = KD_INT(2), kd_5 = KD_INT(5),
                   kd_7 = KD_INT(7), kd_f1 = KD_FLOAT(1.0),
                   kd_f25 = KD_FLOAT(2.5), kd_true = KD_TRUE,
                   kd_s = KD_STR("s");
static const kdesc frac_items[3] = {KD_STR("fraction"), KD_INT(1), KD_INT(10)};
static const kdesc kd_frac = KD_TUPLE(frac_items);             /* Decimal("0.1") */
static const kdesc third_items[3] = {KD_STR("fraction"), KD_INT(1), KD_INT(3)};
static const kdesc kd_third = KD_TUPLE(third_items);           /* Fraction(1, 3) */
static const kdesc date_items[2] = {KD_STR("date"), KD_INT(737425)};
static const kdesc kd_date = KD_TUPLE(date_items);             /* date(2020, 1, 1) */

/* The keys of the main keyed image, in the order written. */
static const kdesc k_tuple_items[2] = {KD_INT(2), KD_KEYED(0, 2, kd_date)};
static const kdesc k_outer_items[2] = {KD_STR("outer"), KD_KEYED(KEQ, 0, kd_7)};
static const kdesc k_outer = KD_TUPLE(k_outer_items);
static const kdesc k_fs_items[1] = {KD_KEYED(KEQ, 0, kd_5)};
static const kdesc keyed_keys[7] = {
    KD_KEYED(KEQ, 0, kd_1),     /* 0: an IntEnum member: EQ, 1, an object */
    KD_KEYED(0, 0, kd_frac),    /* 1: a Decimal: ("fraction", 1, 10) */
    KD_STR("plain"),            /* 2: a plain str */
    KD_TUPLE(k_tuple_items),    /* 3: (2, a date), the date's value by REF */
    KD_KEYED(KEQ, 1, kd_f25),   /* 4: EQ, 2.5, a pickle */
    KD_KEYED(0, 2, k_outer),    /* 5: a keyed proxy holding a keyed value */
    KD_FSET(k_fs_items),        /* 6: frozenset({EQ 5}) */
};
#define NKEYED 7

/* Root: [D, S, C, R, None]: D the dict of keyed_keys -> "v0".."v6" (and
 * `extra` int keys 100.. -> 0..), S the set {REF to key 0, "plain"}, C a
 * plain copy of key 1's proxy, R a REF to key 1. kp: the keys' offsets. */
static image keyed_image(int extra, uint64_t kp[NKEYED], uint64_t *s_ref)
{
    kw c = {writer(), 0, 0};
    const uint64_t root = pf_writer_pos(c.w);
    REQUIRE(pf_write_container_begin(c.w, PF_LIST, 5, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(c.w, PF_DICT, NKEYED + (uint64_t)extra,
                                     NULL) == PF_OK);
    for (int k = 0; k < NKEYED; k++) {
        char val[16];
        snprintf(val, sizeof val, "v%d", k);
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        kp[k] = pf_writer_pos(c.w);
        put_kd(&c, &keyed_keys[k]);
        REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
        REQUIRE(STR(c.w, val) == PF_OK);
    }
    for (int k = 0; k < extra; k++) {
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, 100 + k, NULL) == PF_OK);
        REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, k, NULL) == PF_OK);
    }
    REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_container_begin(c.w, PF_SET, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    *s_ref = pf_writer_pos(c.w);
    REQUIRE(pf_write_ref(c.w, kp[0], NULL) == PF_OK);
    REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    REQUIRE(STR(c.w, "plain") == PF_OK);
    REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    put_kd(&c, &kd_frac);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(c.w, kp[1], NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_none(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
    return finish(c.w, root);
}

/* A keyed value at kp: its flags, its proxy (d's), and its value: an
 * object (kind 3, "Key"), a pickle, or a REF to the object at obj. */
static void check_keyed(const pf_image *img, uint64_t kp, const kdesc *d,
                        uint64_t obj)
{
    pf_val k = rd(img, kp);
    CHECK(k.type == PF_KEYED);
    if (k.type != PF_KEYED)
        return;
    CHECK_EQ_U64(k.pos, kp);
    CHECK_EQ_U64(k.u.key.count, 2);
    CHECK_EQ_U64(k.u.key.first, kp + 2); /* the type byte, the flags byte */
    CHECK_EQ_U64(k.u.key.flags, d->flags);
    CHECK_EQ_U64(pf_image_base(img)[kp + 1], d->flags);
    CHECK(kd_match(img, k.u.key.first, &d->items[0]) == 1);
    pf_val p = rd(img, k.u.key.first);
    const uint64_t vp = p.next;
    pf_val v = rd(img, vp);
    CHECK_EQ_U64(k.end, v.next);  /* past the value's encoding */
    CHECK_EQ_U64(k.next, k.end);
    if (d->val == 1) {
        CHECK(v.type == PF_PICKLE && v.u.s.len == 5);
    } else {
        check_object(img, vp, 1, 3, "Key");
        pf_val raw;
        CHECK_RC(pf_read_raw(img, vp, &raw, NULL), PF_OK);
        CHECK(raw.type == (d->val == 2 ? PF_REF_RAW : PF_OBJECT));
        if (d->val == 2)
            CHECK_EQ_U64(raw.pos, obj);
    }
    /* The value is no key (R21): only the keyed value is. */
    uint64_t h;
    CHECK_RC(pf_hash_at(img, vp, &h, NULL), PF_ETYPE);
    /* pf_read_raw of a keyed value written in place reads it whole ... */
    pf_val raw;
    CHECK_RC(pf_read_raw(img, kp, &raw, NULL), PF_OK);
    CHECK(raw.type == PF_KEYED && raw.end == k.end);
    /* ... and a shallow read leaves its end open, as a tuple's. */
    pf_val s;
    CHECK_RC(pf_read_ex(img, kp, PF_READ_SHALLOW, &s, NULL), PF_OK);
    CHECK(s.type == PF_KEYED);
    CHECK_EQ_U64(s.end, 0);
    CHECK_EQ_U64(s.next, 0);
    CHECK_EQ_U64(s.u.key.count, 2);
    CHECK_EQ_U64(s.u.key.first, k.u.key.first);
    CHECK_EQ_U64(s.u.key.flags, k.u.key.flags);
}

static void test_keyed_image(void)
{
    for (int extra = 0; extra <= 10; extra += 10) { /* scanned; slots */
        uint64_t kp[NKEYED], s_ref;
        image im = keyed_image(extra, kp, &s_ref);
        CHECK_EQ_U64(get16(im.buf + 8), 1);
        CHECK_EQ_U64(get16(im.buf + 10), 1);
        CHECK_EQ_U64(get64(im.buf + 16), PF_INCOMPAT_EXT);
        CHECK_EQ_U64(im.buf[kp[0]], 0x27);
        pf_verify_stats vs;
        const char *msg;
        int rc = verify_im(&im, &msg, &vs);
        if (rc != PF_OK)
            fprintf(stderr, "    keyed verify (extra %d): %s\n", extra, msg);
        CHECK_RC(rc, PF_OK);
        /* the list, the dict, the frozenset key, the set; keys: 7 + extra
         * in the dict, 1 in the frozenset, 2 in the set */
        CHECK_EQ_U64(vs.containers, 4);
        CHECK_EQ_U64(vs.keys, 10 + (uint64_t)extra);

        pf_image *img = open_im(&im);
        CHECK_EQ_U64(pf_image_version_minor(img), 1);
        const uint64_t seed = pf_image_hash_seed(img);
        const uint64_t root = pf_image_root(img);
        /* every key found again at its own record, strictly */
        walk_state ws = {1, 100000, 60, 0, 0};
        CHECK_RC(walk(img, root, 0, &ws), PF_OK);
        pf_val l = rd(img, root);
        REQUIRE(l.type == PF_LIST && l.u.c.count == 5);
        uint64_t it[5];
        for (uint64_t i = 0; i < 5; i++)
            it[i] = list_item(img, &l, i);
        pf_val d = rd(img, it[0]);
        REQUIRE(d.type == PF_DICT);
        CHECK_EQ_U64(d.u.c.count, NKEYED + (uint64_t)extra);
        CHECK_EQ_U64(d.u.c.nslots != 0, extra != 0);

        /* The hash of a keyed value is its proxy's (R35) ... */
        uint64_t h, h2;
        CHECK_RC(pf_hash_at(img, kp[0], &h, NULL), PF_OK);
        CHECK_EQ_U64(h, pf_hash_i64(seed, 1));
        CHECK_RC(pf_hash_at(img, kp[1], &h, NULL), PF_OK);
        CHECK_RC(pf_hash_at(img, it[2], &h2, NULL), PF_OK); /* the plain copy */
        CHECK_EQ_U64(h, h2);
        CHECK_RC(pf_hash_at(img, kp[4], &h, NULL), PF_OK);
        CHECK_EQ_U64(h, pf_hash_double(seed, 2.5));
        /* ... in a tuple, in its place */
        uint64_t parts[2] = {pf_hash_i64(seed, 2), kd_hash(seed, &kd_date)};
        CHECK_RC(pf_hash_at(img, kp[3], &h, NULL), PF_OK);
        CHECK_EQ_U64(h, pf_hash_tuple_of(seed, parts, 2));
        /* Each key: its hash computed apart, and found by pf_find. */
        for (int k = 0; k < NKEYED; k++) {
            char val[16];
            snprintf(val, sizeof val, "v%d", k);
            CHECK_RC(pf_hash_at(img, kp[k], &h, NULL), PF_OK);
            CHECK_EQ_U64(h, kd_hash(seed, &keyed_keys[k]));
            uint64_t fk = 0, fv = 0;
            CHECK_RC(find_kd(img, &d, &keyed_keys[k], &fk, &fv), 1);
            CHECK_EQ_U64(fk, kp[k]);
            pf_val v = rd(img, fv);
            CHECK(is_str(&v, val));
        }
        /* Keys of equal hash that are not there: KEYED(0, 1), plain 1,
         * plain 2.5, KEYED(0, 2.5). */
        static const kdesc absent[4] = {KD_KEYED(0, 0, kd_1), KD_INT(1),
                                        KD_FLOAT(2.5), KD_KEYED(0, 1, kd_f25)};
        for (int k = 0; k < 4; k++) {
            uint64_t fk = 0, fv = 0;
            CHECK_RC(find_kd(img, &d, &absent[k], &fk, &fv), 0);
        }

        /* The keyed values read back. */
        const pf_val v0 = rd(img, kp[0]);
        const uint64_t obj0 = rd(img, v0.u.key.first).next; /* key 0's object */
        check_keyed(img, kp[0], &keyed_keys[0], obj0);
        check_keyed(img, kp[1], &keyed_keys[1], obj0);
        check_keyed(img, kp[4], &keyed_keys[4], obj0);
        check_keyed(img, kp[5], &keyed_keys[5], obj0);
        pf_val t = rd(img, kp[3]);
        CHECK(t.type == PF_TUPLE && t.u.tup.count == 2);
        check_keyed(img, item_at(img, &t, 1), &k_tuple_items[1], obj0);
        pf_val p5 = rd(img, rd(img, kp[5]).u.key.first);  /* ("outer", KEYED) */
        CHECK(p5.type == PF_TUPLE && p5.u.tup.count == 2);
        check_keyed(img, item_at(img, &p5, 1), &k_outer_items[1], obj0);
        pf_val fs = rd(img, kp[6]);
        CHECK(fs.type == PF_FROZENSET && fs.u.c.count == 1);
        uint64_t cursor = 0, fk, fv;
        CHECK_RC(pf_record_next(img, &fs, &cursor, &fk, &fv, NULL), 1);
        check_keyed(img, fk, &k_fs_items[0], obj0);

        /* A REF to a keyed value: a set's key, and a list item. */
        pf_val s = rd(img, it[1]);
        REQUIRE(s.type == PF_SET);
        CHECK_RC(find_kd(img, &s, &keyed_keys[0], &fk, &fv), 1);
        CHECK_EQ_U64(fk, s_ref);
        CHECK_EQ_U64(fv, 0);
        CHECK_EQ_U64(rd(img, fk).pos, kp[0]);
        CHECK_RC(pf_hash_at(img, s_ref, &h, NULL), PF_OK);
        CHECK_EQ_U64(h, pf_hash_i64(seed, 1));
        pf_val r = rd(img, it[3]);
        CHECK(r.type == PF_KEYED && r.pos == kp[1]);
        CHECK_EQ_U64(r.next, it[4]);
        CHECK_EQ_U64(r.end, rd(img, kp[1]).end);
        pf_val sh;
        CHECK_RC(pf_read_ex(img, it[3], PF_READ_SHALLOW, &sh, NULL), PF_OK);
        CHECK(sh.type == PF_KEYED && sh.pos == kp[1]);
        CHECK_EQ_U64(sh.end, 0);
        CHECK_EQ_U64(sh.next, it[4]);
        CHECK_EQ_U64(sh.u.key.first, kp[1] + 2);
        pf_image_close(img);
        free(im.buf);
    }

    /* The writer: flags other than EQ are refused; a proxy that is no key
     * makes the keyed value no key (R21, R35). */
    pf_writer *w = writer();
    pf_error e;
    CHECK_RC(pf_write_keyed_begin(w, 2, &e), PF_EINVAL);
    CHECK_RC(pf_write_keyed_begin(w, 0x100, &e), PF_EINVAL);
    CHECK_RC(pf_write_keyed_begin(w, KEQ | 0x80, &e), PF_EINVAL);
    pf_writer_free(w);
    for (int which = 0; which < 3; which++) {
        kw c = {writer(), 0, 0};
        REQUIRE(pf_write_container_begin(c.w, PF_DICT, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        REQUIRE(pf_write_keyed_begin(c.w, 0, NULL) == PF_OK);
        if (which == 0) {          /* a list */
            REQUIRE(pf_write_container_begin(c.w, PF_LIST, 1, NULL) == PF_OK);
            REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
            REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
        } else if (which == 1) {   /* an object */
            put_key_obj(&c);
        } else {                   /* a tuple holding a pickle */
            REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_pickle(c.w, "\x80\x05N.", 4, NULL) == PF_OK);
        }
        put_key_obj(&c);
        memset(&e, 0, sizeof e);
        CHECK_RC(pf_write_key_done(c.w, &e), PF_ETYPE);
        CHECK(e.code == PF_ETYPE && e.msg != NULL);
        pf_writer_free(c.w);
    }
}

/* ------------------------------------------------------------------ keyed: equality */

/* Two keys a, b in one dict, set or frozenset, with `pad` other keys
 * between them; the writer does not look for equal keys (pf_write_end
 * builds the table as given), the full check does (R21, R35). */
static image two_keys(int type, const kdesc *a, const kdesc *b, int pad)
{
    kw c = {writer(), 0, 0};
    const uint64_t root = pf_writer_pos(c.w);
    REQUIRE(pf_write_container_begin(c.w, type, 2 + (uint64_t)pad, NULL) == PF_OK);
    for (int k = 0; k < 2 + pad; k++) {
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        if (k == 0) {
            put_kd(&c, a);
        } else if (k == 1 + pad) {
            put_kd(&c, b);
        } else {
            char s[16];
            snprintf(s, sizeof s, "pad%d", k);
            REQUIRE(STR(c.w, s) == PF_OK);
        }
        REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
        if (type == PF_DICT)
            REQUIRE(pf_write_int(c.w, k, NULL) == PF_OK);
    }
    CHECK_RC(pf_write_end(c.w, NULL), PF_OK);
    return finish(c.w, root);
}

static const kdesc kq_eq1 = KD_KEYED(KEQ, 0, kd_1), kq_eq1_pickle = KD_KEYED(KEQ, 1, kd_1),
                   kq_0_1 = KD_KEYED(0, 0, kd_1), kq_eq_f1 = KD_KEYED(KEQ, 0, kd_f1),
                   kq_0_2 = KD_KEYED(0, 0, kd_2), kq_0_third = KD_KEYED(0, 0, kd_third),
                   kq_eq_third = KD_KEYED(KEQ, 0, kd_third), kq_0_s = KD_KEYED(0, 0, kd_s),
                   kq_eq_s = KD_KEYED(KEQ, 0, kd_s), kq_0_eq1 = KD_KEYED(0, 0, kq_eq1);
static const kdesc t1_eq2_items[2] = {KD_INT(1), KD_KEYED(KEQ, 0, kd_2)},
                   t1_02_items[2] = {KD_INT(1), KD_KEYED(0, 0, kd_2)},
                   t1_2_items[2] = {KD_INT(1), KD_INT(2)};
static const kdesc kt_1_eq2 = KD_TUPLE(t1_eq2_items), kt_1_02 = KD_TUPLE(t1_02_items),
                   kt_1_2 = KD_TUPLE(t1_2_items);
static const kdesc fs_eq5_items[1] = {KD_KEYED(KEQ, 0, kd_5)}, fs_5_items[1] = {KD_INT(5)},
                   fs_05_items[1] = {KD_KEYED(0, 0, kd_5)};
static const kdesc kf_eq5 = KD_FSET(fs_eq5_items), kf_5 = KD_FSET(fs_5_items),
                   kf_05 = KD_FSET(fs_05_items);

static void test_keyed_equal(void)
{
    static const struct {
        const kdesc *a, *b;
        int equal;
    } cases[] = {
        {&kq_eq1, &kd_1, 1},            /* EQ and its proxy */
        {&kd_1, &kq_eq1, 1},            /* ... the plain key first */
        {&kq_eq1, &kd_f1, 1},           /* ... a float equal to the proxy */
        {&kq_eq1, &kd_true, 1},         /* ... True */
        {&kq_eq_s, &kd_s, 1},
        {&kq_0_1, &kd_1, 0},            /* no EQ: only keyed values meet it */
        {&kd_f1, &kq_0_1, 0},
        {&kq_0_s, &kd_s, 0},
        {&kq_0_third, &kq_0_third, 1},  /* equal flags and proxies */
        {&kq_eq1, &kq_eq_f1, 1},        /* ... proxies equal under == */
        {&kq_eq1, &kq_eq1_pickle, 1},   /* ... whatever the values */
        {&kq_eq_third, &kq_0_third, 0}, /* flags differ */
        {&kq_0_1, &kq_eq1, 0},
        {&kq_0_1, &kq_0_2, 0},          /* proxies differ */
        {&kt_1_eq2, &kt_1_2, 1},        /* inside tuples */
        {&kt_1_02, &kt_1_2, 0},
        {&kt_1_eq2, &kt_1_02, 0},
        {&kf_eq5, &kf_5, 1},            /* inside frozensets */
        {&kf_05, &kf_5, 0},
        {&kq_0_eq1, &kq_0_1, 1},        /* proxies KEYED(EQ, 1) and 1 */
    };
    const int types[3] = {PF_DICT, PF_SET, PF_FROZENSET};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int t = 0; t < 3; t++) {
            for (int pad = 0; pad <= 10; pad += 10) { /* scanned; slots */
                image im = two_keys(types[t], cases[k].a, cases[k].b, pad);
                pf_image *img = open_im(&im);
                uint64_t ha, hb;
                pf_val c = rd(img, pf_image_root(img));
                uint64_t cursor = 0, kp[2], vp;
                CHECK_RC(pf_record_next(img, &c, &cursor, &kp[0], &vp, NULL), 1);
                for (int j = 0; j < pad; j++)
                    CHECK_RC(pf_record_next(img, &c, &cursor, &kp[1], &vp, NULL), 1);
                CHECK_RC(pf_record_next(img, &c, &cursor, &kp[1], &vp, NULL), 1);
                CHECK_RC(pf_hash_at(img, kp[0], &ha, NULL), PF_OK);
                CHECK_RC(pf_hash_at(img, kp[1], &hb, NULL), PF_OK);
                const uint64_t seed = pf_image_hash_seed(img);
                CHECK_EQ_U64(ha, kd_hash(seed, cases[k].a));
                CHECK_EQ_U64(hb, kd_hash(seed, cases[k].b));
                if (cases[k].equal)
                    CHECK_EQ_U64(ha, hb); /* equal keys hash alike */
                pf_image_close(img);
                int ok;
                if (cases[k].equal) {
                    ok = verify_corrupt(&im, "two equal keys in one container (R21)");
                } else {
                    const char *msg;
                    int rc = verify_im(&im, &msg, NULL);
                    if (rc != PF_OK)
                        fprintf(stderr, "    verify: %d \"%s\"\n", rc, msg);
                    ok = rc == PF_OK;
                }
                if (!ok)
                    fprintf(stderr, "    equality case %d, type %d, pad %d\n",
                            (int)k, types[t], pad);
                CHECK(ok);
                free(im.buf);
            }
        }
    }
}

/* pf_find_str meets a keyed key (R35) equal to the str "s": only the match
 * function can say so; it is asked about the keyed candidate and never
 * about a plain str key, which is compared in place. */
typedef struct kd_count {
    const char *key;  /* the str sought, NUL-terminated */
    long calls;
} kd_count;

/* pf_find match: a keyed value with PF_KEYED_EQ whose proxy is the str
 * ctx->key (what the binding's match decides with Python's ==). */
static int match_keyed_str(void *ctx, const pf_image *img, uint64_t key_pos,
                           uint64_t *key_end)
{
    kd_count *c = (kd_count *)ctx;
    c->calls++;
    (void)key_end;
    pf_val v = rd(img, key_pos), p;
    if (v.type != PF_KEYED || !(v.u.key.flags & PF_KEYED_EQ))
        return 0;
    p = rd(img, v.u.key.first);
    return is_str(&p, c->key);
}

static int match_refuse(void *ctx, const pf_image *img, uint64_t key_pos,
                        uint64_t *key_end)
{
    (void)ctx;
    (void)img;
    (void)key_pos;
    (void)key_end;
    return PF_EINVAL;
}

static void test_keyed_find_str(void)
{
    static const kdesc kd_t = KD_STR("t");
    for (int pad = 0; pad <= 30; pad += 30) { /* scanned (2 keys), slotted */
        image im = two_keys(PF_DICT, &kq_eq_s, &kd_t, pad);
        pf_image *img = open_im(&im);
        pf_val d = rd(img, pf_image_root(img));
        CHECK(pad ? d.u.c.nslots > 0 : d.u.c.nslots == 0);
        uint64_t cursor = 0, kp0, vp0, fk = 0, fv = 0;
        CHECK_RC(pf_record_next(img, &d, &cursor, &kp0, &vp0, NULL), 1);
        /* no match function: the keyed key matches nothing */
        CHECK_RC(pf_find_str(img, &d, "s", 1, 1, NULL, NULL, &fk, &fv, NULL), 0);
        kd_count c = {"s", 0};
        CHECK_RC(pf_find_str(img, &d, "s", 1, 1, match_keyed_str, &c, &fk, &fv,
                             NULL), 1);
        CHECK(c.calls == 1);
        CHECK_EQ_U64(fk, kp0);
        CHECK_EQ_U64(fv, vp0);
        /* the plain keys, found in place */
        for (int k = 1; k < 2 + pad; k++) {
            char t[16];
            const int n = k == 1 + pad ? snprintf(t, sizeof t, "t")
                                       : snprintf(t, sizeof t, "pad%d", k);
            c.key = t;
            c.calls = 0;
            CHECK_RC(pf_find_str(img, &d, t, (size_t)n, 1, match_keyed_str, &c,
                                 &fk, &fv, NULL), 1);
            pf_val v = rd(img, fv);
            CHECK(v.type == PF_INT && v.u.i == k);
            /* a scan meets the keyed key first; probes pass it by its tag */
            CHECK(c.calls == (pad ? 0 : 1));
        }
        c.key = "u";
        CHECK_RC(pf_find_str(img, &d, "u", 1, 1, match_keyed_str, &c, &fk, &fv,
                             NULL), 0);
        /* a match function's error ends the search with it */
        CHECK_RC(pf_find_str(img, &d, "s", 1, 1, match_refuse, NULL, &fk, &fv,
                             NULL), PF_EINVAL);
        pf_image_close(img);
        free(im.buf);
    }
}

/* ------------------------------------------------------------------ keyed: damage */

/* {KEYED(EQ, 1, O): "v"}, the keyed value at *kp. */
static image keyed_dict(uint64_t *kp)
{
    kw c = {writer(), 0, 0};
    const uint64_t root = pf_writer_pos(c.w);
    REQUIRE(pf_write_container_begin(c.w, PF_DICT, 1, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    *kp = pf_writer_pos(c.w);
    put_kd(&c, &kq_eq1);
    REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
    REQUIRE(STR(c.w, "v") == PF_OK);
    REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
    return finish(c.w, root);
}

/* Reads of a damaged image end cleanly: the walk, a lookup of key 1 in
 * the root (if a dict), and verify (its result). */
static int keyed_damaged(const image *im, const char **msg)
{
    pf_image *img = open_im(im);
    walk_state ws = {0, 20000, 60, 0, 0};
    int wrc = walk(img, pf_image_root(img), 0, &ws);
    CHECK(clean_rc(wrc));
    pf_val r;
    if (pf_read(img, pf_image_root(img), &r, NULL) == PF_OK && r.type == PF_DICT) {
        uint64_t kp, vp;
        int rc = find_kd(img, &r, &kq_eq1, &kp, &vp);
        CHECK(rc <= 1);
    }
    pf_image_close(img);
    return verify_im(im, msg, NULL);
}

static void test_keyed_corrupt(void)
{
    uint64_t kp;
    image im = keyed_dict(&kp);
    CHECK_RC(verify_im(&im, NULL, NULL), PF_OK);
    CHECK_EQ_U64(im.buf[kp], 0x27);
    CHECK_EQ_U64(im.buf[kp + 1], KEQ);

    /* The flags byte: bits 1..7 are reserved (R35). */
    const uint8_t bad_flags[5] = {2, 3, 0x80, 0x81, 0xFF};
    for (int k = 0; k < 5; k++) {
        image y = copy_of(&im);
        y.buf[kp + 1] = bad_flags[k];
        pf_image *img = open_im(&y);
        pf_val v;
        pf_error e;
        uint64_t h;
        memset(&e, 0, sizeof e);
        CHECK_RC(pf_read(img, kp, &v, &e), PF_ECORRUPT);
        CHECK(e.msg != NULL && strstr(e.msg, "flags (R35)") != NULL);
        CHECK_RC(pf_read_ex(img, kp, PF_READ_SHALLOW, &v, NULL), PF_ECORRUPT);
        CHECK_RC(pf_read_raw(img, kp, &v, NULL), PF_ECORRUPT);
        CHECK_RC(pf_hash_at(img, kp, &h, NULL), PF_ECORRUPT);
        pf_image_close(img);
        CHECK(verify_corrupt(&y, "checksum")); /* the damage, first */
        no_checksums(&y);
        const char *msg;
        CHECK_RC(keyed_damaged(&y, &msg), PF_ECORRUPT);
        CHECK(verify_corrupt(&y, "keyed value with unknown flags (R35)"));
        free(y.buf);
    }
    /* EQ cleared: still sound (the hash is the proxy's either way). */
    image y = copy_of(&im);
    y.buf[kp + 1] = 0;
    no_checksums(&y);
    CHECK_RC(verify_im(&y, NULL, NULL), PF_OK);
    pf_image *img = open_im(&y);
    CHECK_EQ_U64(rd(img, kp).u.key.flags, 0);
    pf_image_close(img);
    free(y.buf);

    /* Bit 0 of incompat_flags cleared: the image opens, the keyed value
     * is corrupt there (R6, R14). */
    for (int minor = 1; minor >= 0; minor--) {
        y = copy_of(&im);
        put64(y.buf + 16, 0);
        put16(y.buf + 10, (uint16_t)minor);
        fix_header(y.buf);
        img = open_im(&y);
        pf_val v;
        uint64_t h;
        CHECK_RC(pf_read(img, kp, &v, NULL), PF_ECORRUPT);
        CHECK_RC(pf_hash_at(img, kp, &h, NULL), PF_ECORRUPT);
        pf_image_close(img);
        CHECK(verify_corrupt(&y, "without the incompat flag"));
        CHECK_RC(keyed_damaged(&y, NULL), PF_ECORRUPT);
        free(y.buf);
    }
    free(im.buf);

    /* A proxy that is not of a key type, or a value that is not an object
     * or a pickle: a list item (the writer does not look), and a dict key
     * when the writer's hash lets it through (the value is not hashed). */
    for (int which = 0; which < 9; which++) {
        for (int in_key = 0; in_key < 2; in_key++) {
            const int bad_proxy = which < 4;
            if (in_key && bad_proxy)
                continue; /* pf_write_key_done refuses those (above) */
            kw c = {writer(), 0, 0};
            const uint64_t root = pf_writer_pos(c.w);
            uint64_t str_at = 0;
            REQUIRE(pf_write_tuple_begin(c.w, 2, NULL) == PF_OK);
            str_at = pf_writer_pos(c.w);
            REQUIRE(STR(c.w, "a string long enough to be referenced") == PF_OK);
            REQUIRE(pf_write_container_begin(c.w, in_key ? PF_DICT : PF_LIST, 1,
                                             NULL) == PF_OK);
            REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
            REQUIRE(pf_write_keyed_begin(c.w, KEQ, NULL) == PF_OK);
            if (!bad_proxy)
                REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
            switch (which) {
            case 0: /* proxy: a list */
                REQUIRE(pf_write_container_begin(c.w, PF_LIST, 1, NULL) == PF_OK);
                REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
                REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
                REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
                break;
            case 1: /* proxy: an object */
                put_key_obj(&c);
                break;
            case 2: /* proxy: a pickle */
                REQUIRE(pf_write_pickle(c.w, "\x80\x05N.", 4, NULL) == PF_OK);
                break;
            case 3: /* proxy: a tuple holding a dict */
                REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
                REQUIRE(pf_write_container_begin(c.w, PF_DICT, 0, NULL) == PF_OK);
                REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
                break;
            case 4: /* value: an int */
                REQUIRE(pf_write_int(c.w, 5, NULL) == PF_OK);
                break;
            case 5: /* value: a REF to a str */
                REQUIRE(pf_write_ref(c.w, str_at, NULL) == PF_OK);
                break;
            case 6: /* value: a tuple holding an object */
                REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
                put_key_obj(&c);
                break;
            case 7: /* value: a keyed value */
                REQUIRE(pf_write_keyed_begin(c.w, 0, NULL) == PF_OK);
                REQUIRE(pf_write_int(c.w, 2, NULL) == PF_OK);
                put_key_obj(&c);
                break;
            default: { /* value: an array */
                const int64_t dims[1] = {2};
                put_array(c.w, "ab", 2, "|u1", 1, dims, 0);
                break;
            }
            }
            if (bad_proxy)
                put_key_obj(&c);
            if (in_key) {
                CHECK_RC(pf_write_key_done(c.w, NULL), PF_OK);
                REQUIRE(pf_write_int(c.w, 0, NULL) == PF_OK);
            }
            REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
            image x = finish(c.w, root);
            const char *want = bad_proxy
                ? "keyed value's proxy is not of a key type (R35)"
                : "keyed value's value is not an object or a pickle (R35)";
            if (!verify_corrupt(&x, want)) {
                fprintf(stderr, "    bad keyed %d, in a key %d\n", which, in_key);
                CHECK(0);
            }
            /* readers still decode it */
            img = open_im(&x);
            walk_state ws = {0, 20000, 60, 0, 0};
            CHECK(clean_rc(walk(img, pf_image_root(img), 0, &ws)));
            pf_image_close(img);
            free(x.buf);
        }
    }

    /* REF cycles through a keyed value (R18): its proxy, directly or in a
     * tuple, refers back to it; or to a tuple that holds it. A list item,
     * then a dict key (patched in: the writer's hash refuses it). Each
     * read ends cleanly: corrupt, or a limit. */
    for (int which = 0; which < 4; which++) {
        kw c = {writer(), 0, 0};
        const uint64_t root = pf_writer_pos(c.w);
        uint64_t t = 0, k;
        if (which == 3) {             /* T = (KEYED(0, REF T, O),) */
            REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
            t = root;
        } else {
            REQUIRE(pf_write_container_begin(c.w, PF_LIST, 1, NULL) == PF_OK);
            REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        }
        k = pf_writer_pos(c.w);
        REQUIRE(pf_write_keyed_begin(c.w, 0, NULL) == PF_OK);
        if (which == 0) {             /* KEYED(0, REF itself, O) */
            REQUIRE(pf_write_ref(c.w, k, NULL) == PF_OK);
        } else if (which == 1) {      /* KEYED(0, (REF itself,), O) */
            REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_ref(c.w, k, NULL) == PF_OK);
        } else if (which == 2) {      /* KEYED(0, (1, (REF itself,)), O) */
            REQUIRE(pf_write_tuple_begin(c.w, 2, NULL) == PF_OK);
            REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
            REQUIRE(pf_write_ref(c.w, k, NULL) == PF_OK);
        } else {
            REQUIRE(pf_write_ref(c.w, t, NULL) == PF_OK);
        }
        put_key_obj(&c);
        if (which != 3)
            REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
        image x = finish(c.w, root);
        img = open_im(&x);
        uint64_t h;
        int rc = pf_hash_at(img, k, &h, NULL);
        CHECK(rc == PF_ECORRUPT || rc == PF_ELIMIT);
        pf_image_close(img);
        const char *msg;
        rc = keyed_damaged(&x, &msg);
        if (rc != PF_ELIMIT && !(rc == PF_ECORRUPT && strstr(msg, "(R18)"))) {
            fprintf(stderr, "    keyed cycle %d: %d \"%s\"\n", which, rc, msg);
            CHECK(0);
        }
        free(x.buf);
    }
    /* The writer refuses a key whose proxy refers back to it. */
    {
        kw c = {writer(), 0, 0};
        REQUIRE(pf_write_container_begin(c.w, PF_SET, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        const uint64_t k = pf_writer_pos(c.w);
        REQUIRE(pf_write_keyed_begin(c.w, 0, NULL) == PF_OK);
        REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_ref(c.w, k, NULL) == PF_OK);
        put_key_obj(&c);
        CHECK(pf_write_key_done(c.w, NULL) != PF_OK);
        pf_writer_free(c.w);
    }
    /* In a key: {KEYED(0, 9, O): 0} and {KEYED(0, (9,), O): 0}, the 9
     * made a REF to the keyed value. */
    for (int tup = 0; tup < 2; tup++) {
        kw c = {writer(), 0, 0};
        const uint64_t root = pf_writer_pos(c.w);
        REQUIRE(pf_write_container_begin(c.w, PF_DICT, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        const uint64_t k = pf_writer_pos(c.w);
        REQUIRE(pf_write_keyed_begin(c.w, 0, NULL) == PF_OK);
        if (tup)
            REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, 9, NULL) == PF_OK);
        put_key_obj(&c);
        REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, 0, NULL) == PF_OK);
        REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
        image x = finish(c.w, root);
        const uint64_t at = k + 2 + (uint64_t)tup; /* the int 9: 08 09 */
        CHECK_EQ_U64(x.buf[at], 0x08);
        CHECK_EQ_U64(x.buf[at + 1], 9);
        x.buf[at] = 0x03;                           /* REF, back at-k bytes */
        x.buf[at + 1] = (uint8_t)(at - k);
        no_checksums(&x);
        img = open_im(&x);
        uint64_t h;
        int rc = pf_hash_at(img, k, &h, NULL);
        CHECK(rc == PF_ECORRUPT || rc == PF_ELIMIT);
        pf_image_close(img);
        const char *msg;
        rc = keyed_damaged(&x, &msg);
        if (rc != PF_ELIMIT && !(rc == PF_ECORRUPT && strstr(msg, "(R18)"))) {
            fprintf(stderr, "    keyed key cycle %d: %d \"%s\"\n", tup, rc, msg);
            CHECK(0);
        }
        free(x.buf);
    }
    /* Through the value: T = (KEYED(EQ, 1, O),), O.f = T is R18's tuple
     * cycle; O.f = the keyed value, or a list holding T, is sound. */
    for (int which = 0; which < 3; which++) {
        kw c = {writer(), 0, 0};
        const uint64_t root = pf_writer_pos(c.w);
        REQUIRE(pf_write_tuple_begin(c.w, 1, NULL) == PF_OK);
        const uint64_t k = pf_writer_pos(c.w);
        REQUIRE(pf_write_keyed_begin(c.w, KEQ, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
        REQUIRE(pf_write_object_begin(c.w, 1, NULL) == PF_OK);
        put_shape_attrs(c.w, "C", 1, f_name);
        if (which == 2) {
            REQUIRE(pf_write_container_begin(c.w, PF_LIST, 1, NULL) == PF_OK);
            REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        }
        REQUIRE(pf_write_ref(c.w, which == 1 ? k : root, NULL) == PF_OK);
        if (which == 2)
            REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
        image x = finish(c.w, root);
        if (which == 0) {
            CHECK(verify_corrupt(&x, "(R18)"));
        } else {
            const char *msg;
            int rc = verify_im(&x, &msg, NULL);
            if (rc != PF_OK)
                fprintf(stderr, "    keyed value cycle %d: %s\n", which, msg);
            CHECK_RC(rc, PF_OK);
        }
        img = open_im(&x);
        uint64_t h;
        CHECK_RC(pf_hash_at(img, k, &h, NULL), PF_OK); /* the value is not hashed */
        CHECK_EQ_U64(h, pf_hash_i64(pf_image_hash_seed(img), 1));
        pf_image_close(img);
        free(x.buf);
    }
    /* Keyed values nested deeper than a key may be (PF_ELIMIT), never a
     * crash: KEYED(EQ, KEYED(EQ, ... 1 ...)) in a list. */
    {
        kw c = {writer(), 0, 0};
        const uint64_t root = pf_writer_pos(c.w);
        REQUIRE(pf_write_container_begin(c.w, PF_LIST, 1, NULL) == PF_OK);
        REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
        const uint64_t k = pf_writer_pos(c.w);
        enum { DEEP = 400 };
        for (int i = 0; i < DEEP; i++)
            REQUIRE(pf_write_keyed_begin(c.w, KEQ, NULL) == PF_OK);
        REQUIRE(pf_write_int(c.w, 1, NULL) == PF_OK);
        for (int i = 0; i < DEEP; i++)
            REQUIRE(pf_write_pickle(c.w, "\x80\x05N.", 4, NULL) == PF_OK);
        REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
        image x = finish(c.w, root);
        img = open_im(&x);
        uint64_t h;
        CHECK_RC(pf_hash_at(img, k, &h, NULL), PF_ELIMIT);
        CHECK_RC(pf_hash_at(img, k + 2 * (DEEP - 10), &h, NULL), PF_OK);
        CHECK_EQ_U64(h, pf_hash_i64(pf_image_hash_seed(img), 1));
        pf_image_close(img);
        CHECK(clean_rc(keyed_damaged(&x, NULL)));
        free(x.buf);
    }
}

/* ------------------------------------------------------------------ keyed: builder */

/* The streaming builder merges equal keys as a dict does (the first key,
 * the last value), with keyed values' equality (R35). */
static void test_keyed_builder(void)
{
    static const struct {
        const kdesc *key;
        const char *val;
    } entries[] = {
        {&kq_eq1, "first"},      /* KEYED(EQ, 1, O) */
        {&kd_s, "s"},
        {&kd_1, "second"},       /* plain 1: equal to the first */
        {&kq_0_1, "zero"},       /* KEYED(0, 1, O): a key of its own */
        {&kq_0_third, "third"},
        {&kd_f1, "last"},        /* 1.0: equal to the first */
        {&kq_0_third, "third again"}, /* equal to KEYED(0, ("fraction", 1, 3)) */
        {&kq_eq_s, "eq s"},      /* KEYED(EQ, "s"): equal to "s" */
    };
    static const struct {
        const kdesc *key;
        const char *val;
    } want[] = {
        {&kq_eq1, "last"}, {&kd_s, "eq s"}, {&kq_0_1, "zero"},
        {&kq_0_third, "third again"},
    };
    const size_t nent = sizeof entries / sizeof entries[0];
    const size_t nwant = sizeof want / sizeof want[0];
    char p[600];
    pf_error e;
    path_in(p, sizeof p, "keyed.pfi");
    pf_builder *b;
    CHECK_RC(pf_builder_new(p, PF_DICT, 0, &b, &e), PF_OK);
    REQUIRE(b != NULL);
    for (size_t i = 0; i < nent; i++) {
        kw c = {pf_builder_writer(b), 0, (int64_t)i};
        REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
        put_kd(&c, entries[i].key);
        REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
        REQUIRE(STR(c.w, entries[i].val) == PF_OK);
        REQUIRE(pf_builder_end(b, NULL) == PF_OK);
    }
    int rc = pf_builder_finish(b, PF_PUBLISH_RENAME, &e);
    if (rc != PF_OK)
        fprintf(stderr, "    keyed builder: %s\n", e.msg);
    CHECK_RC(rc, PF_OK);
    pf_builder_free(b);

    pf_image *img;
    REQUIRE(pf_image_open_file(p, &img, &e) == PF_OK);
    const uint8_t *base = pf_image_base(img);
    CHECK_EQ_U64(get16(base + 10), 1);
    CHECK_EQ_U64(get64(base + 16), PF_INCOMPAT_EXT);
    rc = pf_image_verify(img, NULL, &e);
    if (rc != PF_OK)
        fprintf(stderr, "    keyed builder verify: %s\n", e.msg);
    CHECK_RC(rc, PF_OK);
    pf_val d = rd(img, pf_image_root(img));
    REQUIRE(d.type == PF_DICT);
    CHECK_EQ_U64(d.u.c.count, nwant);
    uint64_t cursor = 0, kp, vp;
    for (size_t i = 0; i < nwant; i++) {
        if (pf_record_next(img, &d, &cursor, &kp, &vp, NULL) != 1) {
            CHECK(0);
            break;
        }
        CHECK(kd_match(img, kp, want[i].key) == 1);
        pf_val v = rd(img, vp);
        if (!is_str(&v, want[i].val)) {
            fprintf(stderr, "    keyed builder: record %d is not \"%s\"\n",
                    (int)i, want[i].val);
            CHECK(0);
        }
        uint64_t fk = 0, fv = 0;
        CHECK_RC(find_kd(img, &d, want[i].key, &fk, &fv), 1);
        CHECK_EQ_U64(fk, kp);
        CHECK_EQ_U64(fv, vp);
    }
    /* the keys dropped are not there */
    CHECK_RC(find_kd(img, &d, &kd_1, &kp, &vp), 0);
    CHECK_RC(find_kd(img, &d, &kd_f1, &kp, &vp), 0);
    CHECK_RC(find_kd(img, &d, &kq_eq_s, &kp, &vp), 0);
    walk_state ws = {1, 100000, 60, 0, 0};
    CHECK_RC(walk(img, pf_image_root(img), 0, &ws), PF_OK);
    pf_image_close(img);
    CHECK(remove(p) == 0);
}

static void test_keyed(void)
{
    test_keyed_image();
    test_keyed_equal();
    test_keyed_find_str();
    test_keyed_corrupt();
    test_keyed_builder();
}

/* Keyed values (R35) for test_damage: {KEYED(EQ, 1, O): REF O,
 * (KEYED(0, ("t", 2), a pickle),): "x"}. */
static const kdesc t2_items[2] = {KD_STR("t"), KD_INT(2)};
static const kdesc kd_t2 = KD_TUPLE(t2_items);
static const kdesc small_tuple_items[1] = {KD_KEYED(0, 1, kd_t2)};
static const kdesc small_tuple_key = KD_TUPLE(small_tuple_items);

static image small_keyed(void)
{
    kw c = {writer(), 0, 0};
    const uint64_t root = pf_writer_pos(c.w);
    REQUIRE(pf_write_container_begin(c.w, PF_DICT, 2, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    put_kd(&c, &kq_eq1);
    REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
    REQUIRE(pf_write_ref(c.w, c.obj, NULL) == PF_OK);
    REQUIRE(pf_write_item(c.w, NULL) == PF_OK);
    put_kd(&c, &small_tuple_key);
    REQUIRE(pf_write_key_done(c.w, NULL) == PF_OK);
    REQUIRE(STR(c.w, "x") == PF_OK);
    REQUIRE(pf_write_end(c.w, NULL) == PF_OK);
    return finish(c.w, root);
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
    image ims[5] = {small_objects(), small_arrays(), small_pickles(),
                    small_mixed(), small_keyed()};
    const char *names[5] = {"objects", "arrays", "pickles", "mixed", "keyed"};
    for (int k = 0; k < 5; k++) {
        damage(&ims[k], names[k]);
        free(ims[k].buf);
    }
    printf("damage: %ld variants; %ld verified; outcomes: ok %ld, corrupt %ld, "
           "version %ld, limit %ld\n", dmg_variants, dmg_verified, dmg_outcome[0],
           dmg_outcome[-PF_ECORRUPT], dmg_outcome[-PF_EVERSION], dmg_outcome[-PF_ELIMIT]);
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
    test_keyed();
    CHECK(count_entries() == 0 || count_entries() == -1);
    CHECK(test_rmdir(dir) == 0);
    return check_report();
}
