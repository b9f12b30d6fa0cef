/*
 * test_os.c -- the OS layer: atomic writes (create, replace, no temporary
 * file left behind, failure leaves nothing at the path), mapping image files
 * (missing, empty, not an image, wrong size, a folder), a mapped image
 * surviving the replacement of its file, versioned publishing through a
 * pointer file (the Win32 path, tested on every OS), shared-memory segments (create,
 * attach, read, remove, names, an existing name, a missing one), process
 * ids and start times, and the random source.
 */
#include "check.h"
#include "permafrost.h"
#include "tmpdir.h"

/* Reads a whole file; returns its length or -1. */
static long read_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return (long)n;
}

static int write_plain(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static uint8_t *make_image(const char *text, uint64_t *len)
{
    pf_writer *w;
    REQUIRE(pf_writer_new(&w, 3, NULL) == PF_OK);
    uint64_t root = pf_writer_pos(w);
    REQUIRE(pf_write_str(w, text, strlen(text), 1, 1, NULL) == PF_OK);
    /* The id follows from the text: different texts, different images. */
    uint8_t id[16], *buf;
    uint64_t h1 = pf_hash_bytes(text, strlen(text), 1);
    uint64_t h2 = pf_hash_bytes(text, strlen(text), 2);
    memcpy(id, &h1, 8);
    memcpy(id + 8, &h2, 8);
    REQUIRE(pf_writer_finish(w, root, id, &buf, len, NULL) == PF_OK);
    pf_writer_free(w);
    return buf;
}

/* ------------------------------------------------------- publishing */

/* The 32 hex digits of the id of the image in buf. */
static void hex_id(const uint8_t *buf, uint64_t len, char hex[33])
{
    pf_image *img;
    uint8_t id[16];
    REQUIRE(pf_image_open_buffer(buf, len, &img, NULL) == PF_OK);
    pf_image_id(img, id);
    pf_image_close(img);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
}

static void version_of(char *out, size_t cap, const char *path, const char *hex)
{
    snprintf(out, cap, "%s.v-%s", path, hex);
}

/* Opens path and checks that its root is the string `text`. */
static int opens_as(const char *path, const char *text, pf_image **keep)
{
    pf_image *img;
    pf_val v;
    if (pf_image_open_file(path, &img, NULL) != PF_OK)
        return 0;
    int ok = pf_read(img, pf_image_root(img), &v, NULL) == PF_OK &&
             v.type == PF_STR && v.u.s.len == strlen(text) &&
             memcmp(v.u.s.data, text, v.u.s.len) == 0;
    if (keep)
        *keep = img;
    else
        pf_image_close(img);
    return ok;
}

static int reads_as(pf_image *img, const char *text)
{
    pf_val v;
    return pf_read(img, pf_image_root(img), &v, NULL) == PF_OK &&
           v.type == PF_STR && v.u.s.len == strlen(text) &&
           memcmp(v.u.s.data, text, v.u.s.len) == 0;
}

static void test_atomic_write(void)
{
    char p[600], q[600];
    uint8_t got[256];
    pf_error e;
    path_in(p, sizeof p, "atomic.bin");
    CHECK_RC(pf_file_write_atomic(p, "first version", 13, &e), PF_OK);
    CHECK(read_file(p, got, sizeof got) == 13 && memcmp(got, "first version", 13) == 0);
    CHECK_RC(pf_file_write_atomic(p, "second", 6, &e), PF_OK); /* replaces */
    CHECK(read_file(p, got, sizeof got) == 6 && memcmp(got, "second", 6) == 0);
    CHECK_RC(pf_file_write_atomic(p, NULL, 0, &e), PF_OK);     /* empty */
    CHECK(read_file(p, got, sizeof got) == 0);
    int n = count_entries();
    CHECK(n == 1 || n == -1); /* no temporary file left */

    /* A folder that does not exist: PF_EIO, nothing created. */
    path_in(q, sizeof q, "no/such/folder/x.bin");
    memset(&e, 0, sizeof e);
    CHECK_RC(pf_file_write_atomic(q, "data", 4, &e), PF_EIO);
    CHECK(e.code == PF_EIO && e.sys_errno != 0 && e.msg != NULL);
    CHECK(read_file(q, got, sizeof got) == -1);

    /* The target is a folder: the rename fails, the temporary file goes. */
    path_in(q, sizeof q, "a_folder");
    REQUIRE(test_mkdir(q) == 0);
    CHECK_RC(pf_file_write_atomic(q, "data", 4, &e), PF_EIO);
    n = count_entries();
    CHECK(n == 2 || n == -1);
    test_rmdir(q);
    CHECK_RC(pf_file_write_atomic(NULL, "x", 1, &e), PF_EINVAL);
    remove(p);
}

static void test_open_file(void)
{
    char p[600];
    pf_image *img = NULL;
    pf_error e;
    path_in(p, sizeof p, "missing.pfi");
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_EIO);
    CHECK(img == NULL && e.sys_errno != 0);
    path_in(p, sizeof p, "empty.pfi");
    REQUIRE(write_plain(p, "", 0) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    CHECK(img == NULL);
    REQUIRE(write_plain(p, "hello, not an image", 19) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    remove(p);

    uint64_t len;
    uint8_t *buf = make_image("the old image", &len);
    path_in(p, sizeof p, "image.pfi");
    REQUIRE(pf_file_write_atomic(p, buf, len, &e) == PF_OK);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_OK);
    pf_val v;
    CHECK(pf_read(img, pf_image_root(img), &v, &e) == PF_OK && v.type == PF_STR &&
          v.u.s.len == 13 && memcmp(v.u.s.data, "the old image", 13) == 0);
#if !defined(_WIN32)
    /* POSIX: a new image renamed over the file; the mapping keeps the old. */
    uint64_t len2;
    uint8_t *buf2 = make_image("a new image, longer", &len2);
    CHECK_RC(pf_file_write_atomic(p, buf2, len2, &e), PF_OK);
    CHECK(pf_read(img, pf_image_root(img), &v, &e) == PF_OK &&
          memcmp(v.u.s.data, "the old image", 13) == 0);
    pf_image *img2;
    CHECK_RC(pf_image_open_file(p, &img2, &e), PF_OK);
    CHECK(pf_read(img2, pf_image_root(img2), &v, &e) == PF_OK &&
          v.u.s.len == 19);
    pf_image_close(img2);
    pf_free(buf2);
#endif
    pf_image_close(img);
    /* A private copy: the file rewritten in place (what no mapping can
     * survive) does not reach it. */
    REQUIRE(pf_file_write_atomic(p, buf, len, &e) == PF_OK);
    CHECK_RC(pf_image_open_file_ex(p, PF_OPEN_COPY, &img, &e), PF_OK);
    REQUIRE(write_plain(p, "overwritten in place", 20) == 0);
    CHECK(reads_as(img, "the old image"));
    pf_image_close(img);
    CHECK_RC(pf_image_open_file_ex(p, PF_OPEN_COPY, &img, &e), PF_ECORRUPT);
    CHECK_RC(pf_image_open_file_ex(p, 2, &img, &e), PF_EINVAL);
    REQUIRE(pf_file_write_atomic(p, buf, len, &e) == PF_OK);
    /* A file one byte longer than image_size (R1). */
    uint8_t *longer = (uint8_t *)malloc((size_t)len + 1);
    REQUIRE(longer != NULL);
    memcpy(longer, buf, (size_t)len);
    longer[len] = 0;
    REQUIRE(pf_file_write_atomic(p, longer, len + 1, &e) == PF_OK);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    CHECK_RC(pf_image_open_buffer(longer, len + 1, &img, &e), PF_OK);
    pf_image_close(img);
    free(longer);
    remove(p);
    pf_free(buf);
    /* A folder is not an image file. */
    CHECK(pf_image_open_file(dir, &img, &e) < 0);
    CHECK_RC(pf_image_open_file(NULL, &img, &e), PF_EINVAL);
}

static void test_publish(void)
{
    char p[600], v1[700], v2[700], v3[700], h1[33], h2[33], h3[33];
    uint8_t got[256];
    uint64_t l1, l2, l3, l4;
    pf_error e;
    pf_image *a = NULL, *b = NULL;
    uint8_t *b1 = make_image("version one", &l1);
    uint8_t *b2 = make_image("version two, longer", &l2);
    uint8_t *b3 = make_image("three", &l3);
    uint8_t *b4 = make_image("four, renamed over", &l4);
    hex_id(b1, l1, h1);
    hex_id(b2, l2, h2);
    hex_id(b3, l3, h3);
    path_in(p, sizeof p, "pub.pfi");
    version_of(v1, sizeof v1, p, h1);
    version_of(v2, sizeof v2, p, h2);
    version_of(v3, sizeof v3, p, h3);

    /* A pointer file naming the version, which holds the image. */
    CHECK_RC(pf_image_publish(p, b1, l1, PF_PUBLISH_POINTER, &e), PF_OK);
    CHECK(read_file(p, got, sizeof got) == 41 && memcmp(got, "\x89PFPTR1\n", 8) == 0 &&
          memcmp(got + 8, h1, 32) == 0 && got[40] == '\n');
    CHECK(read_file(v1, got, 0) == 0);
    CHECK(opens_as(p, "version one", &a));

    /* Publish over it while `a` maps version one: `a` keeps reading it,
     * a new open gets version two. */
    CHECK_RC(pf_image_publish(p, b2, l2, PF_PUBLISH_POINTER, &e), PF_OK);
    CHECK(reads_as(a, "version one"));
    CHECK(opens_as(p, "version two, longer", &b));
    CHECK(reads_as(a, "version one"));
#if !defined(_WIN32)
    CHECK(read_file(v1, got, 0) == -1); /* removed; `a` keeps its pages */
#endif
    /* Once nobody maps version one, the next publish removes it. */
    pf_image_close(a);
    CHECK_RC(pf_image_publish(p, b3, l3, PF_PUBLISH_POINTER, &e), PF_OK);
    CHECK(read_file(v1, got, 0) == -1);
    CHECK(read_file(v3, got, 0) == 0);
    CHECK(reads_as(b, "version two, longer"));
    CHECK(opens_as(p, "three", NULL));
    pf_image_close(b);

    /* Renamed over a pointer file: the image itself, versions removed. */
    CHECK_RC(pf_image_publish(p, b4, l4, PF_PUBLISH_RENAME, &e), PF_OK);
    CHECK(read_file(p, got, sizeof got) == (long)(l4 < sizeof got ? l4 : sizeof got));
    CHECK(read_file(v2, got, 0) == -1 && read_file(v3, got, 0) == -1);
    CHECK(opens_as(p, "four, renamed over", NULL));
    /* ...and back to a pointer over a plain image. */
    CHECK_RC(pf_image_publish(p, b1, l1, PF_PUBLISH_DEFAULT, &e), PF_OK);
    CHECK(opens_as(p, "version one", NULL));
    CHECK_RC(pf_image_publish(p, b1, l1, PF_PUBLISH_POINTER, &e), PF_OK); /* again */
    CHECK(opens_as(p, "version one", NULL));
    CHECK_RC(pf_image_open_file_ex(p, PF_OPEN_COPY, &a, &e), PF_OK);
    CHECK(reads_as(a, "version one"));
    pf_image_close(a);

    /* What is refused leaves the published image in place. */
    CHECK_RC(pf_image_publish(p, "not an image", 12, PF_PUBLISH_POINTER, &e), PF_ECORRUPT);
    CHECK_RC(pf_image_publish(p, b2, l2, 7, &e), PF_EINVAL);
    CHECK_RC(pf_image_publish(NULL, b2, l2, PF_PUBLISH_POINTER, &e), PF_EINVAL);
    CHECK_RC(pf_image_publish(p, NULL, 0, PF_PUBLISH_POINTER, &e), PF_EINVAL);
    CHECK(opens_as(p, "version one", NULL));
    char q[600];
    path_in(q, sizeof q, "no/such/folder/pub.pfi");
    CHECK_RC(pf_image_publish(q, b2, l2, PF_PUBLISH_POINTER, &e), PF_EIO);

    /* Damaged pointer files are corrupt images, never followed. */
    char ptr[64];
    snprintf(ptr, sizeof ptr, "\x89PFPTR1\n%s\n", h1);
    pf_image *img = NULL;
    REQUIRE(write_plain(p, ptr, 41) == 0);
    CHECK(opens_as(p, "version one", NULL)); /* the well-formed one */
    ptr[8] = 'F'; /* digits are lowercase */
    REQUIRE(write_plain(p, ptr, 41) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    snprintf(ptr, sizeof ptr, "\x89PFPTR1\n%sX", h1);
    REQUIRE(write_plain(p, ptr, 41) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    REQUIRE(write_plain(p, ptr, 40) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    snprintf(ptr, sizeof ptr, "\x89PFPTR1\n%s\n\n", h1);
    REQUIRE(write_plain(p, ptr, 42) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    /* A version that does not exist: not found, said as such. */
    snprintf(ptr, sizeof ptr, "\x89PFPTR1\n%s\n", "00000000000000000000000000000000");
    REQUIRE(write_plain(p, ptr, 41) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_EIO);
    CHECK(e.sys_errno != 0 && strstr(e.msg, "pointer file") != NULL);
    /* A version holding another image, or a pointer itself. */
    snprintf(ptr, sizeof ptr, "\x89PFPTR1\n%s\n", h2);
    REQUIRE(write_plain(p, ptr, 41) == 0);
    REQUIRE(write_plain(v2, b3, (size_t)l3) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    REQUIRE(write_plain(v2, ptr, 41) == 0);
    CHECK_RC(pf_image_open_file(p, &img, &e), PF_ECORRUPT);
    CHECK(img == NULL);

    remove(v2);
    CHECK_RC(pf_image_publish(p, b3, l3, PF_PUBLISH_RENAME, &e), PF_OK);
    CHECK(read_file(v1, got, 0) == -1); /* every version removed */
    remove(p);
    pf_free(b1);
    pf_free(b2);
    pf_free(b3);
    pf_free(b4);
}

static void test_random(void)
{
    uint8_t a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    CHECK_RC(pf_os_random(a, sizeof a, NULL), PF_OK);
    CHECK_RC(pf_os_random(b, sizeof b, NULL), PF_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);
    int zeros = 0;
    for (size_t i = 0; i < sizeof a; i++) zeros += a[i] == 0;
    CHECK(zeros < 16);
    CHECK_RC(pf_os_random(a, 0, NULL), PF_OK);
    size_t big = 1u << 20;
    uint8_t *m = (uint8_t *)calloc(1, big);
    REQUIRE(m != NULL);
    CHECK_RC(pf_os_random(m, big, NULL), PF_OK);
    long ones = 0;
    for (size_t i = 0; i < big; i++)
        for (int k = 0; k < 8; k++) ones += (m[i] >> k) & 1;
    CHECK(ones > (long)(big * 4 - big / 8) && ones < (long)(big * 4 + big / 8));
    free(m);
}


/* Reads the str root of an image into out (NUL-terminated). */
static int root_text(const pf_image *img, char *out, size_t cap)
{
    pf_val v;
    if (pf_read(img, pf_image_root(img), &v, NULL) != PF_OK || v.type != PF_STR ||
        v.u.s.len + 1 > cap)
        return -1;
    memcpy(out, v.u.s.data, (size_t)v.u.s.len);
    out[v.u.s.len] = '\0';
    return 0;
}

static void test_shared_memory(void)
{
    char name[PF_SHM_NAME_MAX + 1], text[64];
    pf_error e;
    uint64_t len;
    uint8_t *buf = make_image("shared between processes", &len);
    snprintf(name, sizeof name, "/pf-ctest-%lx", (unsigned long)test_getpid());

    pf_image *owner = NULL, *reader = NULL, *again = NULL;
    CHECK_RC(pf_image_share(name, buf, len, &owner, &e), PF_OK);
    REQUIRE(owner != NULL);
    CHECK(root_text(owner, text, sizeof text) == 0 &&
          strcmp(text, "shared between processes") == 0);
    CHECK_EQ_U64(pf_image_size(owner), len);
    /* The name is taken while the segment lives. */
    CHECK_RC(pf_image_share(name, buf, len, &again, &e), PF_EIO);
    CHECK(again == NULL && e.sys_errno != 0);
    /* A second mapping, as a worker attaches. */
    CHECK_RC(pf_image_open_shm(name, &reader, &e), PF_OK);
    REQUIRE(reader != NULL);
    CHECK(root_text(reader, text, sizeof text) == 0 &&
          strcmp(text, "shared between processes") == 0);
    CHECK(pf_image_base(reader) != pf_image_base(owner));
    uint8_t id1[16], id2[16];
    pf_image_id(owner, id1);
    pf_image_id(reader, id2);
    CHECK(memcmp(id1, id2, 16) == 0);

#if !defined(_WIN32)
    /* Removing the name: attached mappings keep reading; no new attach. */
    CHECK_RC(pf_shm_unlink(name, &e), PF_OK);
    CHECK(root_text(reader, text, sizeof text) == 0);
    CHECK_RC(pf_image_open_shm(name, &again, &e), PF_ENOTFOUND);
    CHECK(again == NULL);
    CHECK_RC(pf_shm_unlink(name, &e), PF_ENOTFOUND);
    pf_image_close(reader);
    pf_image_close(owner);
#else
    /* Win32: the segment lives while any handle or view does. */
    CHECK_RC(pf_shm_unlink(name, &e), PF_OK);
    pf_image_close(owner);
    CHECK(root_text(reader, text, sizeof text) == 0);
    pf_image_close(reader);
    CHECK_RC(pf_image_open_shm(name, &again, &e), PF_ENOTFOUND);
#endif

    /* Not an image: refused before any segment is made. */
    CHECK_RC(pf_image_share(name, "not an image at all", 19, &again, &e),
             PF_ECORRUPT);
    CHECK_RC(pf_image_open_shm(name, &again, &e), PF_ENOTFOUND);

    /* Names: "/" then 1..30 of [A-Za-z0-9._-]. */
    static const char *const bad[] = {
        "", "/", "noslash", "/a/b", "/with space",
        "/0123456789012345678901234567890", /* 32 characters */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(pf_image_share(bad[i], buf, len, &again, &e), PF_EINVAL);
        CHECK_RC(pf_image_open_shm(bad[i], &again, &e), PF_EINVAL);
        CHECK_RC(pf_shm_unlink(bad[i], &e), PF_EINVAL);
    }
    char longest[PF_SHM_NAME_MAX + 1];
    snprintf(longest, sizeof longest, "/pf-%027lx", (unsigned long)test_getpid());
    CHECK(strlen(longest) == PF_SHM_NAME_MAX);
    CHECK_RC(pf_image_share(longest, buf, len, &owner, &e), PF_OK);
    CHECK_RC(pf_shm_unlink(longest, &e), PF_OK);
    pf_image_close(owner);
    pf_free(buf);
}

static void test_processes(void)
{
    pf_error e;
    uint64_t me = pf_process_id(), t1 = 1, t2 = 2, t;
    CHECK(me == (uint64_t)test_getpid());
    CHECK_RC(pf_process_start(me, &t1, &e), PF_OK);
    CHECK_RC(pf_process_start(me, &t2, &e), PF_OK);
    CHECK(t1 == t2);
#if defined(__linux__) || defined(_WIN32)
    CHECK(t1 != 0);
#endif
    /* No process has these ids. */
    CHECK_RC(pf_process_start(0, &t, &e), PF_ENOTFOUND);
    CHECK_RC(pf_process_start(0x7FFFFFF0u, &t, &e), PF_ENOTFOUND);
    CHECK_RC(pf_process_start(UINT64_C(1) << 40, &t, &e), PF_ENOTFOUND);
    CHECK_RC(pf_process_start(me, NULL, &e), PF_EINVAL);
}

int main(void)
{
    REQUIRE(tmpdir_make("pf_test_os") == 0);
    test_atomic_write();
    test_open_file();
    test_publish();
    test_random();
    test_shared_memory();
    test_processes();
    CHECK(count_entries() == 0 || count_entries() == -1);
    test_rmdir(dir);
    return check_report();
}
