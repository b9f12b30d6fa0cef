/*
 * test_build.c -- the streaming builder (pf_builder): a dict of 200,000
 * int keys built in 1 MiB (its key hashes spill to sorted runs), keys
 * written again (the first place, the last value), nested dict and list
 * levels, repeated strings pooled (SREF), a list root; every image passes
 * pf_image_verify and answers each lookup; misuse is refused; an
 * abandoned build leaves no file.
 */
#include "check.h"
#include "permafrost.h"
#include "ordered.h"
#include "tmpdir.h"

#define MIB (UINT64_C(1) << 20)

static void put_str(pf_builder *b, const char *s)
{
    REQUIRE(pf_write_str(pf_builder_writer(b), s, strlen(s), 1, 1, NULL) == PF_OK);
}

/* b[k] = v, int -> str */
static void put_int_str(pf_builder *b, int64_t k, const char *v)
{
    pf_writer *w = pf_builder_writer(b);
    REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
    REQUIRE(pf_write_int(w, k, NULL) == PF_OK);
    REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
    put_str(b, v);
    REQUIRE(pf_builder_end(b, NULL) == PF_OK);
}

/* b[k] = v, str -> int */
static void put_str_int(pf_builder *b, const char *k, int64_t v)
{
    REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
    put_str(b, k);
    REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
    REQUIRE(pf_write_int(pf_builder_writer(b), v, NULL) == PF_OK);
    REQUIRE(pf_builder_end(b, NULL) == PF_OK);
}

/* b[k] = a nested dict level, str key */
static void open_str_dict(pf_builder *b, const char *k)
{
    REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
    put_str(b, k);
    REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
    REQUIRE(pf_builder_open(b, PF_DICT, NULL) == PF_OK);
}

typedef struct want_int {
    int64_t k;
} want_int;

static int match_int(void *ctx, const pf_image *img, uint64_t key_pos, uint64_t *key_end)
{
    pf_val v;
    (void)key_end;
    if (pf_read(img, key_pos, &v, NULL) != PF_OK)
        return -1;
    return v.type == PF_INT && v.u.i == ((want_int *)ctx)->k;
}

/* The value of int key k in dict c, as a C string in out (empty if none). */
static int lookup(const pf_image *img, const pf_val *c, int64_t k, char *out, size_t cap)
{
    want_int want = {k};
    uint64_t kp, vp;
    pf_val v;
    out[0] = '\0';
    uint64_t h = pf_hash_i64(pf_image_hash_seed(img), k);
    int rc = pf_find(img, c, h, match_int, &want, &kp, &vp, NULL);
    if (rc != 1)
        return rc;
    if (pf_read(img, vp, &v, NULL) != PF_OK || v.type != PF_STR || v.u.s.len >= cap)
        return -1;
    memcpy(out, v.u.s.data, (size_t)v.u.s.len);
    out[v.u.s.len] = '\0';
    return 1;
}

static pf_image *open_verified(const char *path, pf_val *root)
{
    pf_image *img = NULL;
    pf_error e;
    pf_verify_stats st;
    REQUIRE(pf_image_open_file(path, &img, &e) == PF_OK);
    int rc = pf_image_verify(img, &st, &e);
    if (rc != PF_OK)
        fprintf(stderr, "verify: %s at %llu\n", e.msg, (unsigned long long)e.offset);
    CHECK_RC(rc, PF_OK);
    CHECK(st.checksums >= 1);
    REQUIRE(pf_read(img, pf_image_root(img), root, NULL) == PF_OK);
    return img;
}

/* Removes the image published at p: the file, and when it is a pointer
 * file (PF_PUBLISH_POINTER, the default on Win32) the version it names
 * (R29, R30). */
static void remove_published(const char *p)
{
    char v[700], hex[33];
    uint8_t head[41];
    FILE *f = fopen(p, "rb");
    REQUIRE(f != NULL);
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n == sizeof head && memcmp(head, "\x89PFPTR1\n", 8) == 0) {
        memcpy(hex, head + 8, 32);
        hex[32] = '\0';
        snprintf(v, sizeof v, "%s.v-%s", p, hex);
        CHECK(remove(v) == 0);
    }
    CHECK(remove(p) == 0);
}

static void test_big_dict(void)
{
    char p[600], got[64], want[64];
    path_in(p, sizeof p, "big.pfi");
    pf_builder *b;
    pf_error e;
    const int64_t n = 200000;
    CHECK_RC(pf_builder_new(p, PF_DICT, MIB, &b, &e), PF_OK);
    REQUIRE(b != NULL);
    CHECK(pf_builder_level_type(b) == PF_DICT && pf_builder_depth(b) == 1);
    /* Keys in a scrambled order; every 5th written twice (later). */
    for (int64_t i = 0; i < n; i++) {
        int64_t k = (i * 7919) % n;
        snprintf(want, sizeof want, "a value of category %lld", (long long)(k % 13));
        put_int_str(b, k, want);
    }
    for (int64_t k = 0; k < n; k += 5) {
        snprintf(want, sizeof want, "again %lld", (long long)k);
        put_int_str(b, k, want);
    }
    uint64_t entries, bytes;
    pf_builder_stats(b, &entries, &bytes);
    CHECK_EQ_U64(entries, n + n / 5);
    CHECK(bytes > 128);
    CHECK_RC(pf_builder_finish(b, PF_PUBLISH_DEFAULT, &e), PF_OK);
    CHECK(pf_builder_depth(b) == 0);
    CHECK_RC(pf_builder_begin(b, &e), PF_EINVAL); /* finished */
    pf_builder_free(b);

    pf_val root;
    pf_image *img = open_verified(p, &root);
    CHECK(root.type == PF_DICT);
    CHECK_EQ_U64(root.u.c.count, n);
    CHECK(root.u.c.nslots > (uint64_t)n);
    int bad = 0;
    for (int64_t k = 0; k < n; k++) {
        if (k % 5 == 0)
            snprintf(want, sizeof want, "again %lld", (long long)k);
        else
            snprintf(want, sizeof want, "a value of category %lld", (long long)(k % 13));
        if (lookup(img, &root, k, got, sizeof got) != 1 || strcmp(got, want) != 0)
            bad++;
    }
    CHECK(bad == 0);
    CHECK(lookup(img, &root, n, got, sizeof got) == 0);
    CHECK(lookup(img, &root, -1, got, sizeof got) == 0);
    /* Insertion order: the first writes' order, overwrites in place. */
    uint64_t cursor = 0, kp, vp;
    pf_val kv;
    int64_t i = 0;
    int order_ok = 1;
    while (pf_record_next(img, &root, &cursor, &kp, &vp, NULL) == 1) {
        if (pf_read(img, kp, &kv, NULL) != PF_OK || kv.u.i != (i * 7919) % n)
            order_ok = 0;
        i++;
    }
    CHECK(order_ok && i == n);
    /* The category strings repeat: pooled, so the image has a VALUES table. */
    uint64_t nvalues = 0;
    CHECK(pf_image_values(img, &nvalues) != NULL && nvalues > 0);
    pf_image_close(img);
    remove_published(p);
}

static void test_nested(void)
{
    char p[600], got[64];
    path_in(p, sizeof p, "nested.pfi");
    pf_builder *b;
    pf_error e;
    pf_writer *w;
    CHECK_RC(pf_builder_new(p, PF_LIST, MIB, &b, &e), PF_OK);
    w = pf_builder_writer(b);
    /* [ {0: "zero", ..., 29: ...}, [1, 2, 3], "last" ] */
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    CHECK_RC(pf_builder_open(b, PF_DICT, &e), PF_OK);
    CHECK(pf_builder_depth(b) == 2 && pf_builder_level_type(b) == PF_DICT);
    for (int i = 0; i < 30; i++)
        put_int_str(b, i, i % 2 ? "odd" : "even");
    put_int_str(b, 4, "four");
    CHECK_RC(pf_builder_close(b, &e), PF_OK);
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    CHECK_RC(pf_builder_open(b, PF_LIST, &e), PF_OK);
    for (int i = 1; i <= 3; i++) {
        CHECK_RC(pf_builder_begin(b, &e), PF_OK);
        CHECK_RC(pf_write_int(w, i, &e), PF_OK);
        CHECK_RC(pf_builder_end(b, &e), PF_OK);
    }
    /* misuse at a list level */
    CHECK_RC(pf_builder_key_done(b, &e), PF_EINVAL);
    CHECK_RC(pf_builder_end(b, &e), PF_EINVAL);
    CHECK_RC(pf_builder_close(b, &e), PF_OK);
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    put_str(b, "last");
    CHECK_RC(pf_builder_end(b, &e), PF_OK);
    CHECK_RC(pf_builder_close(b, &e), PF_EINVAL); /* only the root is open */
    CHECK_RC(pf_builder_finish(b, PF_PUBLISH_POINTER, &e), PF_OK);
    pf_builder_free(b);

    pf_val root, d, l, s;
    uint64_t pos;
    pf_image *img = open_verified(p, &root);
    CHECK(root.type == PF_LIST && root.u.c.count == 3);
    REQUIRE(pf_list_item(img, &root, 0, &pos, NULL) == PF_OK);
    REQUIRE(pf_read(img, pos, &d, NULL) == PF_OK);
    CHECK(d.type == PF_DICT && d.u.c.count == 30);
    CHECK(lookup(img, &d, 4, got, sizeof got) == 1 && strcmp(got, "four") == 0);
    CHECK(lookup(img, &d, 29, got, sizeof got) == 1 && strcmp(got, "odd") == 0);
    CHECK(lookup(img, &d, 30, got, sizeof got) == 0);
    REQUIRE(pf_list_item(img, &root, 1, &pos, NULL) == PF_OK);
    REQUIRE(pf_read(img, pos, &l, NULL) == PF_OK);
    CHECK(l.type == PF_LIST && l.u.c.count == 3);
    REQUIRE(pf_list_item(img, &l, 2, &pos, NULL) == PF_OK);
    REQUIRE(pf_read(img, pos, &s, NULL) == PF_OK);
    CHECK(s.type == PF_INT && s.u.i == 3);
    REQUIRE(pf_list_item(img, &root, 2, &pos, NULL) == PF_OK);
    REQUIRE(pf_read(img, pos, &s, NULL) == PF_OK);
    CHECK(s.type == PF_STR && s.u.s.len == 4 && memcmp(s.u.s.data, "last", 4) == 0);
    pf_image_close(img);
}

static void test_misuse_and_abandon(void)
{
    char p[600];
    path_in(p, sizeof p, "abandoned.pfi");
    pf_builder *b;
    pf_error e;
    int before = count_entries();
    CHECK_RC(pf_builder_new(p, PF_SET, MIB, &b, &e), PF_EINVAL);
    CHECK_RC(pf_builder_new(NULL, PF_DICT, MIB, &b, &e), PF_EINVAL);
    CHECK_RC(pf_builder_new(p, PF_DICT, 0, &b, &e), PF_OK); /* 1 MiB at least */
    pf_writer *w = pf_builder_writer(b);
    CHECK_RC(pf_builder_key_done(b, &e), PF_EINVAL); /* no item begun */
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    CHECK_RC(pf_builder_key_done(b, &e), PF_EINVAL); /* no key written */
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 0, &e), PF_OK);
    CHECK_RC(pf_builder_key_done(b, &e), PF_EINVAL); /* key not complete */
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);        /* starts over */
    CHECK_RC(pf_write_int(w, 1, &e), PF_OK);
    CHECK_RC(pf_write_int(w, 2, &e), PF_OK);
    CHECK_RC(pf_builder_key_done(b, &e), PF_EINVAL); /* two ivals */
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    CHECK_RC(pf_write_container_begin(w, PF_LIST, 0, &e), PF_OK);
    CHECK_RC(pf_write_end(w, &e), PF_OK);
    CHECK_RC(pf_builder_key_done(b, &e), PF_ETYPE);  /* a list is no key */
    CHECK_RC(pf_builder_begin(b, &e), PF_OK);
    CHECK_RC(pf_write_int(w, 1, &e), PF_OK);
    CHECK_RC(pf_builder_key_done(b, &e), PF_OK);
    CHECK_RC(pf_builder_end(b, &e), PF_EINVAL);      /* no value */
    CHECK_RC(pf_builder_open(b, PF_SET, &e), PF_EINVAL);
    CHECK_RC(pf_builder_open(b, PF_DICT, &e), PF_OK);
    put_int_str(b, 1, "x");
    CHECK(count_entries() == before + 1 || before < 0); /* the temporary file */
    pf_builder_free(b); /* abandoned: no image, no temporary file */
    CHECK(count_entries() == before);
    FILE *f = fopen(p, "rb");
    CHECK(f == NULL);
    if (f)
        fclose(f);
}

static void test_empty(void)
{
    char p[600];
    path_in(p, sizeof p, "empty.pfi");
    pf_builder *b;
    pf_error e;
    CHECK_RC(pf_builder_new(p, PF_DICT, MIB, &b, &e), PF_OK);
    CHECK_RC(pf_builder_finish(b, PF_PUBLISH_RENAME, &e), PF_OK);
    pf_builder_free(b);
    pf_val root;
    pf_image *img = open_verified(p, &root);
    CHECK(root.type == PF_DICT && root.u.c.count == 0 && root.u.c.nslots == 0);
    pf_image_close(img);
    remove_published(p);
}

/* An ordered build (PF_BUILD_ORDERED) in 1 MiB: 120,000 str keys in a
 * scrambled order, every 7th written again (the first place, the last
 * value): the key entries spill to sorted runs and the body is sorted
 * through the scratch file. A nested level of bytes keys is ordered too,
 * one of int and str keys is not. The image verifies (R36's full check),
 * its sorted walk ascends with the right values, its insertion order is
 * the first writes', and the ordered queries answer right (ord_check). */
static void test_ordered(void)
{
    char p[600], k[32], want[32];
    path_in(p, sizeof p, "ordered.pfi");
    pf_builder *b;
    pf_error e;
    const int64_t n = 120000;
    CHECK_RC(pf_builder_new_ex(p, PF_DICT, MIB, 2, &b, &e), PF_EINVAL);
    CHECK_RC(pf_builder_new_ex(p, PF_DICT, MIB, PF_BUILD_ORDERED, &b, &e), PF_OK);
    pf_writer *w = pf_builder_writer(b);
    for (int64_t pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < n; i += pass ? 7 : 1) {
            const int64_t x = pass ? i : (i * 7919) % n;
            snprintf(k, sizeof k, "key%06lld", (long long)x);
            put_str_int(b, k, pass ? -x : x);
        }
    open_str_dict(b, "nested");
    for (int i = 999; i >= 0; i--) {
        snprintf(k, sizeof k, "b%d", i);
        REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
        REQUIRE(pf_write_bytes(w, k, strlen(k), NULL) == PF_OK);
        REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
        REQUIRE(pf_write_int(w, i, NULL) == PF_OK);
        REQUIRE(pf_builder_end(b, NULL) == PF_OK);
    }
    REQUIRE(pf_builder_close(b, NULL) == PF_OK);
    open_str_dict(b, "mixed");
    put_int_str(b, 1, "one");
    REQUIRE(pf_builder_begin(b, NULL) == PF_OK);
    put_str(b, "two");
    REQUIRE(pf_builder_key_done(b, NULL) == PF_OK);
    put_str(b, "2");
    REQUIRE(pf_builder_end(b, NULL) == PF_OK);
    CHECK_RC(pf_builder_finish(b, PF_PUBLISH_DEFAULT, &e), PF_OK);
    pf_builder_free(b);

    pf_val root, kv, vv;
    pf_image *img = open_verified(p, &root);
    CHECK(root.type == PF_DICT && root.u.c.okind == PF_ORDER_STR && root.u.c.pbits == 17);
    CHECK_EQ_U64(root.u.c.count, n + 2);
    /* The sorted walk: "key000000".."key119999", "mixed", "nested". */
    uint64_t pos = root.u.c.body, kp, vp, seen = 0;
    int ok = 1;
    while (pf_ordered_next(img, &root, &pos, &kp, &vp, NULL) == 1) {
        if (pf_read(img, kp, &kv, NULL) != PF_OK || kv.type != PF_STR) {
            ok = 0;
            break;
        }
        if (seen < (uint64_t)n) {
            const int64_t x = (int64_t)seen;
            snprintf(want, sizeof want, "key%06lld", (long long)x);
            ok &= kv.u.s.len == strlen(want) && memcmp(kv.u.s.data, want, strlen(want)) == 0;
            ok &= pf_read(img, vp, &vv, NULL) == PF_OK && vv.type == PF_INT &&
                  vv.u.i == (x % 7 == 0 ? -x : x);
        }
        seen++;
    }
    CHECK(ok);
    CHECK_EQ_U64(seen, n + 2);
    /* The insertion order: the first pass's, then the two levels. */
    uint64_t cursor = 0;
    int64_t i = 0;
    ok = 1;
    while (pf_record_next(img, &root, &cursor, &kp, &vp, NULL) == 1) {
        if (i < n) {
            snprintf(want, sizeof want, "key%06lld", (long long)((i * 7919) % n));
            ok &= pf_read(img, kp, &kv, NULL) == PF_OK &&
                  memcmp(kv.u.s.data, want, strlen(want)) == 0;
        }
        i++;
    }
    CHECK(ok && i == n + 2);
    uint64_t rank = 0;
    CHECK_RC(pf_ordered_seek(img, &root, "key05", 5, 1, 0, &rank, &pos, &e), PF_OK);
    CHECK_EQ_U64(rank, 50000);
    const char *why = NULL;
    pf_val nested;
    CHECK_RC(pf_ordered_seek(img, &root, "nested", 6, 1, 0, &rank, &pos, &e), PF_OK);
    CHECK_RC(pf_ordered_next(img, &root, &pos, &kp, &vp, &e), 1);
    REQUIRE(pf_read(img, vp, &nested, NULL) == PF_OK);
    CHECK(nested.u.c.okind == PF_ORDER_BYTES && nested.u.c.count == 1000);
    long budget = 10;
    CHECK_RC(ord_check_all(img, vp, 0, 1, (const uint8_t *)"b99x", 4, &budget, &why), PF_OK);
    CHECK(ord_strict_calls == 1);
    CHECK_RC(pf_ordered_seek(img, &root, "mixed", 5, 1, 0, &rank, &pos, &e), PF_OK);
    CHECK_RC(pf_ordered_next(img, &root, &pos, &kp, &vp, &e), 1);
    REQUIRE(pf_read(img, vp, &nested, NULL) == PF_OK);
    CHECK(nested.u.c.okind == 0 && nested.u.c.count == 2);
    pf_image_close(img);
    remove_published(p);

    /* Abandoned with spilled key runs and a nested ordered level open:
     * nothing is left behind (and, under the sanitizers, nothing leaks). */
    const int before = count_entries();
    CHECK_RC(pf_builder_new_ex(p, PF_DICT, MIB, PF_BUILD_ORDERED, &b, &e), PF_OK);
    for (int64_t x = 0; x < 20000; x++) {
        snprintf(k, sizeof k, "k%06lld", (long long)((x * 7919) % 20000));
        put_str_int(b, k, x);
    }
    open_str_dict(b, "open");
    put_int_str(b, 1, "a key of another kind: this level is not ordered");
    put_str_int(b, "z", 0);
    pf_builder_free(b);
    CHECK(count_entries() == before);
}

int main(void)
{
    REQUIRE(tmpdir_make("pf_test_build") == 0);
    test_big_dict();
    test_nested();
    test_misuse_and_abandon();
    test_empty();
    test_ordered();
    char p[600];
    path_in(p, sizeof p, "nested.pfi"); /* test_nested's image */
    remove_published(p);
    CHECK(count_entries() == 0 || count_entries() == -1);
    CHECK(test_rmdir(dir) == 0);
    return check_report();
}
