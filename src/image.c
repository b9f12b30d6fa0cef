/*
 * image.c -- opening an image (a mapped file or a borrowed buffer), checking
 * its header and section table (docs/FORMAT.md sections 2 and 3, R3-R11),
 * closing it, and the accessors. Once open, every value access is checked
 * again on its own (read.c): the checks here only make the header fields
 * safe to use.
 */
#include <stdlib.h>

#include "internal.h"

static int is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* Checks the header and section table of the `avail` bytes at base and
 * fills img. exact: a file must be exactly image_size bytes (R1). */
static int check_image(const uint8_t *base, uint64_t avail, int exact,
                       pf_image *img, pf_error *err)
{
    if (avail < 8 || memcmp(base + PF_H_MAGIC, PF_MAGIC, 8) != 0)
        return PF_CORRUPT(err, "not a permafrost image (bad magic)", 0); /* R3 */
    if (avail < PF_HEADER_LEN)
        return PF_CORRUPT(err, "image truncated inside its header", avail);
    if (pf_ld16(base + PF_H_VMAJOR) != PF_VERSION_MAJOR)               /* R4 */
        return pf_fail(err, PF_EVERSION, "unsupported image major version",
                       PF_H_VMAJOR);
    if (pf_ld64(base + PF_H_CHECK) != pf_hash_bytes(base, PF_H_CHECK, 0))
        return PF_CORRUPT(err, "header check value mismatch", PF_H_CHECK); /* R5 */
    uint32_t header_len = pf_ld32(base + PF_H_HEADER_LEN);
    if (header_len < PF_HEADER_LEN)
        return PF_CORRUPT(err, "header_len below 128", PF_H_HEADER_LEN);
    if (!is_zero(base + PF_H_RESERVED1, 4) || !is_zero(base + PF_H_RESERVED2, 32))
        return PF_CORRUPT(err, "reserved header field not zero", PF_H_RESERVED1);
    if (pf_ld64(base + PF_H_INCOMPAT) & ~(PF_INCOMPAT_EXT | PF_INCOMPAT_ORDERED)) /* R6 */
        return pf_fail(err, PF_EVERSION, "image needs an unknown feature "
                       "(incompat_flags)", PF_H_INCOMPAT);
    uint64_t size = pf_ld64(base + PF_H_IMAGE_SIZE);
    if (size < header_len)                                             /* R7 */
        return PF_CORRUPT(err, "image_size smaller than header_len",
                          PF_H_IMAGE_SIZE);
    if (exact ? size != avail : size > avail)                      /* R1, R7 */
        return PF_CORRUPT(err, exact ? "file size differs from image_size"
                                     : "buffer shorter than image_size",
                          PF_H_IMAGE_SIZE);

    uint64_t stab = pf_ld64(base + PF_H_STAB_OFF);                     /* R9 */
    uint32_t nsec = pf_ld32(base + PF_H_STAB_COUNT);
    if (nsec < 1 || nsec > PF_MAX_SECTIONS)
        return PF_CORRUPT(err, "section_count outside 1..64", PF_H_STAB_COUNT);
    if (stab < header_len || stab > size ||
        size - stab < (uint64_t)nsec * PF_SECTION_ENTRY_LEN)
        return PF_CORRUPT(err, "section table outside the image", PF_H_STAB_OFF);

    int have_data = 0, have_values = 0;
    uint64_t data_start = 0, data_end = 0, values_off = 0, values_count = 0;
    for (uint32_t i = 0; i < nsec; i++) {
        uint64_t e = stab + (uint64_t)i * PF_SECTION_ENTRY_LEN;
        const uint8_t *s = base + e;
        uint32_t kind = pf_ld32(s), flags = pf_ld32(s + 4);
        uint64_t off = pf_ld64(s + 8), len = pf_ld64(s + 16);
        if (off < header_len || off > size || size - off < len)    /* R10 */
            return PF_CORRUPT(err, "section outside the image", e + 8);
        if (kind == PF_SECTION_DATA) {                                /* R11 */
            if (have_data)
                return PF_CORRUPT(err, "more than one DATA section", e);
            have_data = 1;
            data_start = off;
            data_end = off + len;
        } else if (kind == PF_SECTION_VALUES) {                       /* R28 */
            if (have_values)
                return PF_CORRUPT(err, "more than one VALUES section", e);
            if (len % 8 != 0)
                return PF_CORRUPT(err, "VALUES section length not a multiple "
                                  "of 8", e + 16);
            have_values = 1;
            values_off = off;
            values_count = len / 8;
        } else if (flags & PF_SECTION_REQUIRED) {
            return pf_fail(err, PF_EVERSION, "image needs an unknown required "
                           "section", e);
        }
    }
    if (!have_data)
        return PF_CORRUPT(err, "no DATA section", stab);
    uint64_t root = pf_ld64(base + PF_H_ROOT);
    if (root < data_start || root >= data_end)                         /* R8 */
        return PF_CORRUPT(err, "root_off outside the DATA section", PF_H_ROOT);

    img->r.base = base;
    img->r.start = data_start;
    img->r.end = data_end;
    img->r.seed = pf_ld64(base + PF_H_SEED);
    img->r.vtab = base + values_off;
    img->r.vcount = values_count;
    img->r.ext = (pf_ld64(base + PF_H_INCOMPAT) & PF_INCOMPAT_EXT) != 0;
    img->r.ordered = (pf_ld64(base + PF_H_INCOMPAT) & PF_INCOMPAT_ORDERED) != 0;
    img->size = size;
    img->root = root;
    memcpy(img->id, base + PF_H_ID, 16);
    img->version_minor = pf_ld16(base + PF_H_VMINOR);
    return PF_OK;
}

/* Checks the image in a caller's buffer of exactly `len` bytes before it
 * is published or shared; fills *probe (its id...). */
static int probe_image(const void *buf, uint64_t len, pf_image *probe,
                       pf_error *err)
{
    memset(probe, 0, sizeof *probe);
    return check_image((const uint8_t *)buf, len, 1, probe, err);
}

/* An image in the OS mapping *m (a file, or a shared-memory segment),
 * which it takes over, also on failure: exact says whether the mapping
 * must be exactly image_size bytes (a file, R1) or may be longer (a
 * segment, rounded up to pages). */
static int adopt_map(pf_os_map *m, int exact, pf_image **out, pf_error *err)
{
    *out = NULL;
    if (!m->base) { /* a file too small to be mapped (pf_os_map_file) */
        return PF_CORRUPT(err, m->small_len == 0
                          ? "file is empty: too small for an image header"
                          : "file too small for an image header", 0);
    }
    pf_image *img = (pf_image *)calloc(1, sizeof *img);
    if (!img) {
        pf_os_unmap(m);
        return pf_fail(err, PF_ENOMEM, "out of memory for an image", 0);
    }
    img->map = *m;
    img->mapped = 1;
    int rc = check_image((const uint8_t *)img->map.base, img->map.len, exact,
                         img, err);
    if (rc != PF_OK) {
        pf_image_close(img);
        return rc;
    }
    *out = img;
    return PF_OK;
}

/* ------------------------------------------------------- pointer files */

/* FORMAT section 7 (R29-R31): a pointer file is PF_POINTER_MAGIC, the 32
 * lowercase hex digits of the image id, "\n"; the image it names is
 * "<path>.v-<digits>". */
#define PF_POINTER_MAGIC "\x89PFPTR1\n"
#define PF_POINTER_LEN 41

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The id and its digits from the `n` bytes of a small file, or
 * PF_ECORRUPT if they are not a pointer file. */
static int parse_pointer(const uint8_t *p, uint32_t n, uint8_t id[16],
                         char hex[33], pf_error *err)
{
    if (n == 0)
        return PF_CORRUPT(err, "file is empty: too small for an image header", 0);
    if (n < 8 || memcmp(p, PF_POINTER_MAGIC, 8) != 0)
        return PF_CORRUPT(err, "file too small for an image header", 0);
    if (n != PF_POINTER_LEN || p[PF_POINTER_LEN - 1] != '\n')
        return PF_CORRUPT(err, "damaged pointer file (bad length)", 0);
    for (int i = 0; i < 16; i++) {
        int hi = hex_digit(p[8 + 2 * i]), lo = hex_digit(p[9 + 2 * i]);
        if (hi < 0 || lo < 0)
            return PF_CORRUPT(err, "damaged pointer file (bad image id)",
                              (uint64_t)(8 + 2 * i));
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(hex, p + 8, 32);
    hex[32] = '\0';
    return PF_OK;
}

/* "<path>.v-<hex>", malloc'd (NULL: out of memory). */
static char *version_path(const char *path, const char *hex)
{
    size_t n = strlen(path);
    char *v = (char *)malloc(n + 3 + 32 + 1);
    if (v) {
        memcpy(v, path, n);
        memcpy(v + n, ".v-", 3);
        memcpy(v + n + 3, hex, 33);
    }
    return v;
}

/* Opens the image a pointer file names. A version removed after the
 * pointer was read (a publisher switched the pointer, then removed the
 * old version) is PF_EIO not-found: the caller reads the pointer again. */
typedef int (*load_fn)(const char *, pf_os_map *, pf_error *);

static int open_version(load_fn load, const char *path, const uint8_t id[16],
                        const char *hex, pf_image **out, pf_error *err)
{
    char *vpath = version_path(path, hex);
    if (!vpath)
        return pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
    pf_os_map m;
    int rc = load(vpath, &m, err);
    free(vpath);
    if (rc != PF_OK)
        return rc;
    if (!m.base)
        return PF_CORRUPT(err, "the file a pointer file names is not an image", 0);
    rc = adopt_map(&m, 1, out, err);
    if (rc == PF_OK && memcmp((*out)->id, id, 16) != 0) {
        pf_image_close(*out);
        *out = NULL;
        return PF_CORRUPT(err, "the file a pointer file names holds another "
                          "image id", PF_H_ID);
    }
    return rc;
}

int pf_image_open_file(const char *path, pf_image **out, pf_error *err)
{
    return pf_image_open_file_ex(path, 0, out, err);
}

int pf_image_open_file_ex(const char *path, int flags, pf_image **out,
                          pf_error *err)
{
    if (!out || !path)
        return pf_fail(err, PF_EINVAL, "no path or no output", 0);
    *out = NULL;
    if (flags & ~PF_OPEN_COPY)
        return pf_fail(err, PF_EINVAL, "unknown open flags", 0);
    load_fn load = (flags & PF_OPEN_COPY) ? pf_os_read_file : pf_os_map_file;
    pf_error local;
    pf_error *e = err ? err : &local;
    uint8_t last[16];
    int have_last = 0, rc = PF_OK;
    /* Each round reads the file at path. A version that is gone while the
     * pointer changed (a concurrent publish) sends us to read the pointer
     * again, a bounded number of times. */
    for (int round = 0; round < 64; round++) {
        pf_os_map m;
        rc = load(path, &m, e);
        if (rc != PF_OK || m.base)
            return rc != PF_OK ? rc : adopt_map(&m, 1, out, e);
        uint8_t id[16];
        char hex[33];
        rc = parse_pointer(m.small, m.small_len, id, hex, e);
        if (rc != PF_OK)
            return rc;
        rc = open_version(load, path, id, hex, out, e);
        if (rc != PF_EIO || !pf_os_not_found(e->sys_errno))
            return rc;
        if (have_last && memcmp(last, id, 16) == 0)
            break; /* the same pointer twice: the version is gone */
        memcpy(last, id, 16);
        have_last = 1;
    }
    return pf_fail_sys(e, "the image version that the pointer file names "
                       "does not exist", e->sys_errno);
}

static int publish_mode(int mode, pf_error *err)
{
    if (mode == PF_PUBLISH_DEFAULT) {
#if defined(_WIN32)
        mode = PF_PUBLISH_POINTER;
#else
        mode = PF_PUBLISH_RENAME;
#endif
    }
    if (mode != PF_PUBLISH_RENAME && mode != PF_PUBLISH_POINTER)
        return pf_fail(err, PF_EINVAL, "unknown publish mode", 0);
    return mode;
}

/* After the version vpath (hex: its id) was written: points path at it
 * (R29-R31) and removes the older versions no reader maps. */
static int switch_pointer(const char *path, const char *vpath,
                          const char *hex, pf_error *err)
{
    uint8_t ptr[PF_POINTER_LEN];
    memcpy(ptr, PF_POINTER_MAGIC, 8);
    memcpy(ptr + 8, hex, 32);
    ptr[PF_POINTER_LEN - 1] = '\n';
    int rc = pf_file_write_atomic(path, ptr, sizeof ptr, err);
    if (rc != PF_OK) {
        (void)pf_os_remove(vpath);
        return rc;
    }
    unsigned left;
    pf_error ignored;
    /* readers of an older version keep it (POSIX), or it stays until no
     * reader maps it (Win32) */
    (void)pf_os_remove_versions(path, hex, &left, &ignored);
    return PF_OK;
}

int pf_image_publish(const char *path, const void *buf, uint64_t len, int mode,
                     pf_error *err)
{
    if (!path || !buf)
        return pf_fail(err, PF_EINVAL, "no path or no buffer", 0);
    if ((mode = publish_mode(mode, err)) < 0)
        return mode;
    pf_image probe;
    int rc = probe_image(buf, len, &probe, err);
    if (rc != PF_OK)
        return rc;
    char hex[33];
    pf_hex(probe.id, 16, hex);
    unsigned left;
    pf_error ignored;
    if (mode == PF_PUBLISH_RENAME) {
        rc = pf_file_write_atomic(path, buf, len, err);
        if (rc == PF_OK) /* versions of an earlier pointer publish */
            (void)pf_os_remove_versions(path, NULL, &left, &ignored);
        return rc;
    }
    char *vpath = version_path(path, hex);
    if (!vpath)
        return pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
    rc = pf_file_write_atomic(vpath, buf, len, err);
    if (rc == PF_OK)
        rc = switch_pointer(path, vpath, hex, err);
    free(vpath);
    return rc;
}

int pf_publish_file(const char *tmp, const char *path, const uint8_t id[16],
                    int mode, pf_error *err)
{
    if ((mode = publish_mode(mode, err)) < 0)
        return mode;
    char hex[33];
    pf_hex(id, 16, hex);
    unsigned left;
    pf_error ignored;
    int rc;
    if (mode == PF_PUBLISH_RENAME) {
        rc = pf_file_rename(tmp, path, err);
        if (rc == PF_OK)
            (void)pf_os_remove_versions(path, NULL, &left, &ignored);
        return rc;
    }
    char *vpath = version_path(path, hex);
    if (!vpath)
        return pf_fail(err, PF_ENOMEM, "out of memory for a file name", 0);
    rc = pf_file_rename(tmp, vpath, err);
    if (rc == PF_OK)
        rc = switch_pointer(path, vpath, hex, err);
    free(vpath);
    return rc;
}

int pf_image_open_buffer(const void *buf, uint64_t len, pf_image **out,
                         pf_error *err)
{
    if (!out || (!buf && len))
        return pf_fail(err, PF_EINVAL, "no buffer or no output", 0);
    *out = NULL;
    pf_image *img = (pf_image *)calloc(1, sizeof *img);
    if (!img)
        return pf_fail(err, PF_ENOMEM, "out of memory for an image", 0);
    int rc = check_image((const uint8_t *)buf, buf ? len : 0, 0, img, err);
    if (rc != PF_OK) {
        free(img);
        return rc;
    }
    *out = img;
    return PF_OK;
}

int pf_image_share(const char *name, const void *buf, uint64_t len,
                   pf_image **out, pf_error *err)
{
    if (!out || !name || !buf || len == 0)
        return pf_fail(err, PF_EINVAL, "no name, no buffer or no output", 0);
    *out = NULL;
    /* Refuse a bad image before making a segment of it. */
    pf_image probe;
    int rc = probe_image(buf, len, &probe, err);
    if (rc != PF_OK)
        return rc;
    pf_image *img = (pf_image *)calloc(1, sizeof *img);
    if (!img)
        return pf_fail(err, PF_ENOMEM, "out of memory for an image", 0);
    rc = pf_os_shm_create(name, len, &img->map, err);
    if (rc != PF_OK) {
        free(img);
        return rc;
    }
    img->mapped = 1;
    memcpy(img->map.base, buf, (size_t)len);
    rc = pf_os_seal(&img->map, err);
    if (rc == PF_OK)
        rc = check_image((const uint8_t *)img->map.base, len, 1, img, err);
    if (rc != PF_OK) {
        pf_image_close(img);
        pf_error ignored;
        (void)pf_os_shm_unlink(name, &ignored);
        return rc;
    }
    *out = img;
    return PF_OK;
}

int pf_image_open_shm(const char *name, pf_image **out, pf_error *err)
{
    if (!out || !name)
        return pf_fail(err, PF_EINVAL, "no name or no output", 0);
    *out = NULL;
    pf_os_map m;
    int rc = pf_os_shm_open(name, &m, err);
    return rc != PF_OK ? rc : adopt_map(&m, 0, out, err);
}

int pf_shm_unlink(const char *name, pf_error *err)
{
    return pf_os_shm_unlink(name, err);
}

uint64_t pf_process_id(void)
{
    return pf_os_pid();
}

int pf_process_start(uint64_t pid, uint64_t *start, pf_error *err)
{
    if (!start)
        return pf_fail(err, PF_EINVAL, "no output", 0);
    return pf_os_process_start(pid, start, err);
}

void pf_image_close(pf_image *img)
{
    if (!img)
        return;
    if (img->mapped)
        pf_os_unmap(&img->map);
    free(img);
}

const uint8_t *pf_image_base(const pf_image *img) { return img->r.base; }
uint64_t pf_image_size(const pf_image *img) { return img->size; }
uint64_t pf_image_root(const pf_image *img) { return img->root; }
uint64_t pf_image_hash_seed(const pf_image *img) { return img->r.seed; }
void pf_image_id(const pf_image *img, uint8_t out[16]) { memcpy(out, img->id, 16); }
uint64_t pf_image_data_start(const pf_image *img) { return img->r.start; }
uint64_t pf_image_data_end(const pf_image *img) { return img->r.end; }
uint16_t pf_image_version_minor(const pf_image *img) { return img->version_minor; }
const uint8_t *pf_image_values(const pf_image *img, uint64_t *count)
{
    *count = img->r.vcount;
    return img->r.vtab;
}
