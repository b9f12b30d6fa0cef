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
    if (pf_ld64(base + PF_H_INCOMPAT) != 0)                            /* R6 */
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
    img->size = size;
    img->root = root;
    memcpy(img->id, base + PF_H_ID, 16);
    img->version_minor = pf_ld16(base + PF_H_VMINOR);
    return PF_OK;
}

/* An image in an OS mapping made by `map` (a file, or a shared-memory
 * segment): exact says whether the mapping must be exactly image_size
 * bytes (a file, R1) or may be longer (a segment, rounded up to pages). */
static int open_mapped(int (*map)(const char *, pf_os_map *, pf_error *),
                       const char *name, int exact, pf_image **out,
                       pf_error *err)
{
    *out = NULL;
    pf_image *img = (pf_image *)calloc(1, sizeof *img);
    if (!img)
        return pf_fail(err, PF_ENOMEM, "out of memory for an image", 0);
    int rc = map(name, &img->map, err);
    if (rc != PF_OK) {
        free(img);
        return rc;
    }
    img->mapped = 1;
    rc = check_image((const uint8_t *)img->map.base, img->map.len, exact, img,
                     err);
    if (rc != PF_OK) {
        pf_image_close(img);
        return rc;
    }
    *out = img;
    return PF_OK;
}

int pf_image_open_file(const char *path, pf_image **out, pf_error *err)
{
    if (!out || !path)
        return pf_fail(err, PF_EINVAL, "no path or no output", 0);
    return open_mapped(pf_os_map_file, path, 1, out, err);
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
    memset(&probe, 0, sizeof probe);
    int rc = check_image((const uint8_t *)buf, len, 1, &probe, err);
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
    return open_mapped(pf_os_shm_open, name, 0, out, err);
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
