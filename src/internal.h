/*
 * internal.h -- what the core's files share and the public header does not
 * show: the image and range structs, unaligned little-endian loads/stores,
 * LEB128 varints, the error helper, limits, and the internal entry points
 * between files (decoder over a byte range, hash at a position, OS mapping).
 * The byte layout itself is docs/FORMAT.md; rules are cited as `R12`.
 */
#ifndef PF_INTERNAL_H
#define PF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <float.h>
#include <string.h>
#if defined(_MSC_VER)
#include <intrin.h> /* __umulh */
#endif

#include "permafrost.h"

/* Only little-endian hosts are supported: every multi-byte field of an image
 * is little-endian and is loaded with a plain memcpy. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "permafrost supports little-endian hosts only"
#endif
#elif defined(_WIN32) || defined(__x86_64__) || defined(_M_X64) || \
    defined(__i386__) || defined(_M_IX86) || defined(__aarch64__) || \
    defined(_M_ARM64)
/* little-endian by definition of the platform */
#else
#error "cannot tell the byte order of this host; permafrost needs little-endian"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PF_LIKELY(x) __builtin_expect(!!(x), 1)
#define PF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PF_INLINE static inline __attribute__((always_inline))
#else
#define PF_LIKELY(x) (x)
#define PF_UNLIKELY(x) (x)
#define PF_INLINE static inline
#endif

/* ------------------------------------------------------------------ limits */

#define PF_MAX_SECTIONS 64u
#define PF_SECTION_ENTRY_LEN 32u
#define PF_SECTION_DATA 1u
#define PF_SECTION_VALUES 2u
#define PF_SECTION_REQUIRED 1u
/* Nesting bound when hashing a stored key (FORMAT section 6): tuples and
 * frozensets inside a key are hashed recursively, ~300 bytes of C stack per
 * level, so 256 levels stay under 100 KB on any thread. Skipping over
 * tuples is iterative and has no depth bound. */
#define PF_MAX_KEY_DEPTH 256
#define PF_LIST_HDR_LEN 18u
#define PF_MAP_HDR_LEN 26u

/* Header field offsets (FORMAT section 2). */
#define PF_H_MAGIC 0
#define PF_H_VMAJOR 8
#define PF_H_VMINOR 10
#define PF_H_HEADER_LEN 12
#define PF_H_INCOMPAT 16
#define PF_H_COMPAT 24
#define PF_H_ID 32
#define PF_H_IMAGE_SIZE 48
#define PF_H_ROOT 56
#define PF_H_STAB_OFF 64
#define PF_H_STAB_COUNT 72
#define PF_H_RESERVED1 76
#define PF_H_SEED 80
#define PF_H_RESERVED2 88
#define PF_H_CHECK 120

/* Type bytes (FORMAT section 4). */
enum {
    PF_T_NONE = 0x00, PF_T_FALSE = 0x01, PF_T_TRUE = 0x02, PF_T_REF = 0x03,
    PF_T_FLOAT = 0x04, PF_T_COMPLEX = 0x05, PF_T_BIGINT = 0x06, PF_T_SREF = 0x07,
    PF_T_INT1 = 0x08, PF_T_INT8 = 0x0F,
    PF_T_STR_ASCII = 0x10, PF_T_STR_LATIN1 = 0x11, PF_T_STR_UCS2 = 0x12,
    PF_T_STR_UCS4 = 0x13, PF_T_BYTES = 0x14, PF_T_TUPLE = 0x18,
    PF_T_TUPLE1 = 0x19, PF_T_TUPLE7 = 0x1F,          /* short tuples, R26 */
    PF_T_LIST = 0x20, PF_T_DICT = 0x21, PF_T_SET = 0x22, PF_T_FROZENSET = 0x23,
    PF_T_OBJECT = 0x24, PF_T_PICKLE = 0x25, PF_T_ARRAY = 0x26, /* 4.3 */
    PF_T_KEYED = 0x27,
    PF_T_DEC0 = 0x30, PF_T_DEC9 = 0x39,              /* decimal floats, R25 */
    PF_T_SHORT_STR = 0x80
};

/* Decimal floats (R25): the value is (double)m / 10^e, |m| < 2^53. */
#define PF_DEC_MAX_E 9
#define PF_DEC_M_LIMIT (UINT64_C(1) << 53)
extern const double pf_pow10[PF_DEC_MAX_E + 1];

/* The division of R25 must be one IEEE-754 binary64 operation, rounded
 * once: a host evaluating doubles in wider registers (x87 without SSE2)
 * could round twice and read some images differently from every other
 * host. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 2
#error "permafrost needs binary64 arithmetic without excess precision (use SSE2: -msse2 -mfpmath=sse)"
#endif

/* ------------------------------------------------------------------ loads */

PF_INLINE uint16_t pf_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
PF_INLINE uint32_t pf_ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
PF_INLINE uint64_t pf_ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
PF_INLINE void pf_st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
PF_INLINE void pf_st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
PF_INLINE void pf_st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* A table entry of width 2, 4 or 8 bytes. */
PF_INLINE uint64_t pf_ldw(const uint8_t *p, int width)
{
    if (width == 4) return pf_ld32(p);
    if (width == 2) return pf_ld16(p);
    return pf_ld64(p);
}

/* 1 if all n bytes are < 0x80 (R15). */
PF_INLINE int pf_all_ascii(const uint8_t *p, uint64_t n)
{
    uint64_t i = 0, acc = 0;
    for (; n - i >= 8; i += 8)
        acc |= pf_ld64(p + i);
    for (; i < n; i++)
        acc |= p[i];
    return (acc & 0x8080808080808080ull) == 0;
}

/* The 2n lowercase hex digits of n bytes, then a NUL, into out. */
PF_INLINE void pf_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

PF_INLINE void pf_stw(uint8_t *p, int width, uint64_t v)
{
    if (width == 4) pf_st32(p, (uint32_t)v);
    else if (width == 2) pf_st16(p, (uint16_t)v);
    else pf_st64(p, v);
}

/* Number of bits needed to write v (0 for 0). */
PF_INLINE unsigned pf_bitlen64(uint64_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return v ? 64u - (unsigned)__builtin_clzll(v) : 0u;
#else
    unsigned n = 0;
    while (v) { n++; v >>= 1; }
    return n;
#endif
}

/* The high 64 bits of a * b: pf_mulhi64, inline for the probe loops. */
PF_INLINE uint64_t pf_mulhi(uint64_t a, uint64_t b)
{
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 pf_u128;
    return (uint64_t)(((pf_u128)a * b) >> 64);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_ARM64))
    return __umulh(a, b);
#else
    uint64_t a_lo = (uint32_t)a, a_hi = a >> 32;
    uint64_t b_lo = (uint32_t)b, b_hi = b >> 32;
    uint64_t ll = a_lo * b_lo, lh = a_lo * b_hi;
    uint64_t hl = a_hi * b_lo, hh = a_hi * b_hi;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
    return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
#endif
}

/* ------------------------------------------------------------------ tables */

/* The smallest table entry width (2, 4 or 8 bytes) holding `bits` bits; 0
 * if none does. */
PF_INLINE int pf_table_width(unsigned bits)
{
    if (bits <= 16) return 2;
    if (bits <= 32) return 4;
    if (bits <= 64) return 8;
    return 0;
}

/* R19: a list table's entry width for a body of body_len bytes. */
PF_INLINE int pf_list_width(uint64_t body_len)
{
    return pf_table_width(body_len ? pf_bitlen64(body_len - 1) : 0);
}

/* R22: a slot's width for a body of body_len bytes: the narrowest with at
 * least 4 tag bits beside the record offset. */
PF_INLINE int pf_slot_width(uint64_t body_len)
{
    return pf_table_width(pf_bitlen64(body_len) + 4);
}

/* R22: the slots the version 1.0 writers give `count` keys (a load of
 * 0.85); 0 for count <= 8, whose records a reader scans. */
PF_INLINE uint64_t pf_slot_count(uint64_t count)
{
    return count > 8 ? count + count * 3 / 17 + 1 : 0;
}

/* R22: how a writer packs a slot of `width` bytes for a body of body_len
 * bytes: (hash & tmask) << ibits | (rec_off + 1). */
typedef struct pf_slot_packing {
    unsigned ibits;
    uint64_t tmask;
} pf_slot_packing;

PF_INLINE pf_slot_packing pf_slot_packing_of(uint64_t body_len, int width)
{
    pf_slot_packing p;
    p.ibits = pf_bitlen64(body_len);
    const unsigned tagbits = 8u * (unsigned)width - p.ibits;
    p.tmask = tagbits >= 64 ? ~0ull : (1ull << tagbits) - 1;
    return p;
}

PF_INLINE uint64_t pf_slot_pack(pf_slot_packing p, uint64_t hash,
                                uint64_t rec_off)
{
    return ((hash & p.tmask) << p.ibits) | (rec_off + 1);
}

/* ------------------------------------------------------------------ varints */

/* Decodes an unsigned LEB128 varint at p[0..avail) (R13: at most 10 bytes,
 * value < 2^64). Returns its length in bytes, or 0 if it is truncated, too
 * long or overflows. */
PF_INLINE unsigned pf_varint_get(const uint8_t *p, uint64_t avail, uint64_t *out)
{
    if (PF_LIKELY(avail > 0 && p[0] < 0x80)) { *out = p[0]; return 1; }
    uint64_t v = 0;
    unsigned max = avail < 10 ? (unsigned)avail : 10u;
    for (unsigned i = 0; i < max; i++) {
        uint8_t b = p[i];
        if (i == 9 && b > 1) return 0; /* bits beyond 2^64 */
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (b < 0x80) { *out = v; return i + 1; }
    }
    return 0;
}

PF_INLINE unsigned pf_varint_len(uint64_t v)
{
    unsigned n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

/* Writes v at p (room for 10 bytes); returns the length. */
PF_INLINE unsigned pf_varint_put(uint8_t *p, uint64_t v)
{
    unsigned n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

/* ------------------------------------------------------------------ errors */

/* Fills *err (if any) and returns code. msg must be a static string. */
int pf_fail(pf_error *err, int code, const char *msg, uint64_t offset);
int pf_fail_sys(pf_error *err, const char *msg, int sys_errno);

#define PF_CORRUPT(err, msg, off) pf_fail((err), PF_ECORRUPT, (msg), (off))

/* ------------------------------------------------------------------ ranges */

/* The DATA section of an image, or of an image being written: the decoder
 * and the key hash work on this, so that the writer hashes the keys it has
 * just written with exactly the code that readers use. */
typedef struct pf_range {
    const uint8_t *base;  /* image start */
    uint64_t start;       /* DATA section start */
    uint64_t end;         /* DATA section end */
    uint64_t seed;        /* hash_seed */
    const uint8_t *vtab;  /* VALUES table (R28): vcount u64 LE offsets */
    uint64_t vcount;
    int ext;              /* extension values allowed (PF_INCOMPAT_EXT) */
    int ordered;          /* ordered containers allowed (PF_INCOMPAT_ORDERED) */
} pf_range;

struct pf_image {
    pf_range r;           /* first member: a pf_image* is usable as a range */
    uint64_t size;
    uint64_t root;
    uint8_t id[16];
    uint16_t version_minor;
    int mapped;           /* 1: owns an OS mapping in `map` */
    struct pf_os_map {
        void *base;
        uint64_t len;
        void *h_file;     /* Win32 handles; unused on POSIX */
        void *h_map;
        int copied;       /* base is malloc'd memory (pf_os_read_file) */
        /* A file shorter than an image header is read, not mapped (base
         * stays NULL): it may be a pointer file (FORMAT section 7). */
        uint32_t small_len;
        uint8_t small[PF_HEADER_LEN];
    } map;
};

typedef struct pf_os_map pf_os_map;

/* Decodes the ival at pos (read.c). follow: 1 follows one REF (pf_read),
 * 0 reports it as PF_REF_RAW (pf_read_raw). */
int pf_decode(const pf_range *r, uint64_t pos, pf_val *out, int follow,
              pf_error *err);

/* pf_decode with shallow (pf_read_ex's PF_READ_SHALLOW): a tuple's items
 * are not walked. */
int pf_decode_ex(const pf_range *r, uint64_t pos, pf_val *out, int follow,
                 int shallow, pf_error *err);

/* The stable hash (FORMAT section 5) of the key stored at pos. */
int pf_hash_range(const pf_range *r, uint64_t pos, uint64_t *hash,
                  pf_error *err);

/* The hash of the key stored at pos, and *next just past its encoding. */
int pf_key_extent(const pf_range *r, uint64_t pos, uint64_t *hash,
                  uint64_t *next, pf_error *err);

/* pf_record_next over a range. */
int pf_range_record_next(const pf_range *r, const pf_val *c, uint64_t *cursor,
                         uint64_t *key_pos, uint64_t *val_pos, pf_error *err);

/* Threads (os.c): pf_thread_start runs fn(arg) on a new thread (PF_OK, or
 * PF_ENOMEM / PF_EIO with no thread); pf_thread_join waits for it and
 * frees it. pf_cpu_count: the processors online (at least 1). */
typedef struct pf_thread pf_thread;
int pf_thread_start(pf_thread **out, void (*fn)(void *), void *arg);
void pf_thread_join(pf_thread *t);
unsigned pf_cpu_count(void);

/* Big zeroed work memory (os.c): n bytes reading as zeros, NULL when out
 * of memory; pf_os_zfree takes the same n. Its pages are made ahead, in
 * huge pages where the OS allows: for bitmaps that threads read and write
 * at random (verify.c). */
void *pf_os_zalloc(size_t n);
void pf_os_zfree(void *p, size_t n);

/* The full check with at most `threads` threads (0: as many as the
 * processors, up to 8); pf_image_verify is pf_verify_ex(img, stats, 0,
 * err). A big root container is split between them; the answer is the
 * same whatever the count. */
int pf_verify_ex(const pf_image *img, pf_verify_stats *stats, unsigned threads,
                 pf_error *err);
/* ... with its sizes set: for tests and fuzzers, which reach the paths of
 * big images with small ones. A zero field takes the default. */
typedef struct pf_verify_tuning {
    unsigned threads;   /* at most this many threads (pf_verify_ex's) */
    uint32_t batch;     /* keys a slot-check batch holds; 2^20 */
    uint64_t par_min;   /* records of a root container that threads
                           share out; 65,536 */
} pf_verify_tuning;
int pf_verify_tuned(const pf_image *img, pf_verify_stats *stats,
                    const pf_verify_tuning *tune, pf_error *err);

/* Code unit k of code units of `width` bytes (1, 2 or 4) at p: a str's
 * code points as stored (R15), or bytes. */
PF_INLINE uint32_t pf_unit_at(const uint8_t *p, uint64_t k, int width)
{
    return width == 1 ? p[k] : width == 2 ? pf_ld16(p + 2 * k) : pf_ld32(p + 4 * k);
}

/* Compares code units a[0..na) (of width wa) with b[0..nb) (width wb), the
 * order of str by code point and of bytes by byte (R36): < 0, 0, > 0; and
 * *common, the length of their common prefix. */
int pf_units_cmp(const uint8_t *a, size_t na, int wa, const uint8_t *b, size_t nb,
                 int wb, size_t *common);

/* Entry i of an ordered container's perm (R36): pbits bits from bit
 * i * pbits, least significant first. */
uint64_t pf_perm_get(const uint8_t *perm, uint64_t i, unsigned pbits);

/* The largest sample shift a reader accepts (R36): a search, and each
 * step of insertion-order iteration, reads at most 2^6 records. */
#define PF_ORDER_MAX_SSHIFT 6
/* The sample shift the writers use (R36). */
#define PF_ORDER_SSHIFT 4

/* Python equality of the keys stored at a and b (verify.c; R21). */
int pf_keys_equal(const pf_range *r, uint64_t a, uint64_t b, int *eq,
                  pf_error *err);

/* The 128-byte header (R3-R9) and one section table entry (section 3),
 * as every writer fills them (write.c). */
void pf_put_header(uint8_t h[PF_HEADER_LEN], const uint8_t id[16],
                   uint64_t image_size, uint64_t root_off, uint64_t stab_off,
                   uint32_t nsec, uint64_t seed, uint64_t incompat);
void pf_put_section(uint8_t *entry, uint32_t kind, uint64_t off, uint64_t len,
                    uint64_t checksum);

/* pf_checksum (FORMAT section 3) of n bytes given in pieces: every piece
 * but the last a multiple of 32 bytes long. */
typedef struct pf_checksum_state {
    uint64_t h[4];
    uint64_t n;
} pf_checksum_state;
void pf_checksum_begin(pf_checksum_state *st, uint64_t n);
void pf_checksum_blocks(pf_checksum_state *st, const void *p, size_t len);
uint64_t pf_checksum_end(pf_checksum_state *st, const void *tail, size_t len);

/* ------------------------------------------------------------- record mode */

/* The writer in record mode (build.c): pf_writer_reset empties the buffer
 * (the next ival is again at PF_HEADER_LEN) and forgets the strings stored,
 * pf_writer_forget only forgets them (no REF will reach what was written).
 * A string or bytes value not found in the record is offered to pool_fn:
 * it returns 1 with *index for an SREF to the builder's copy, 0 to store
 * it here, or an error. pool_off: the builder is writing a key (no SREF:
 * the builder compares keys from their own bytes). */
typedef int (*pf_pool_fn)(void *ctx, const uint8_t *hdr, unsigned hlen,
                          const void *data, size_t nbytes, uint64_t hash,
                          uint64_t *index, pf_error *err);
void pf_writer_record_mode(pf_writer *w, pf_pool_fn fn, void *ctx);
void pf_writer_reset(pf_writer *w);
void pf_writer_forget(pf_writer *w);
void pf_writer_pool_off(pf_writer *w, int off);
/* No SREF for any container's key: an ordered build, whose ordered
 * containers inside records read their keys from the record's bytes. */
void pf_writer_pool_keys_off(pf_writer *w);
const uint8_t *pf_writer_data(const pf_writer *w, size_t *len);
int pf_writer_open(const pf_writer *w); /* a tuple or container is open */
uint64_t pf_writer_incompat(const pf_writer *w); /* flags its ivals need */
int pf_writer_hash_at(const pf_writer *w, uint64_t pos, uint64_t *hash,
                      pf_error *err);

/* ------------------------------------------------------------------ OS layer */

/* A file open for reading and writing at explicit offsets. */
typedef struct pf_file {
#if defined(_WIN32)
    void *h;
#else
    int fd;
#endif
    int open;
} pf_file;
/* A new file beside `path` ("<path>.tmp.<pid>.<random>"). scratch: it has
 * no name once created (POSIX: unlinked; Win32: deleted on close) and
 * *name is not set; else *name is its malloc'd name. */
int pf_file_temp(const char *path, int scratch, pf_file *f, char **name,
                 pf_error *err);
int pf_file_pwrite(pf_file *f, const void *buf, size_t n, uint64_t off,
                   pf_error *err);
int pf_file_pread(pf_file *f, void *buf, size_t n, uint64_t off,
                  pf_error *err); /* exactly n bytes, else PF_EIO */
int pf_file_truncate(pf_file *f, uint64_t len, pf_error *err);
int pf_file_sync(pf_file *f, pf_error *err);
void pf_file_close(pf_file *f); /* NULL or closed allowed */
/* Publishes the closed, complete image file tmp (image id `id`) at path,
 * as pf_image_publish does (image.c). On failure tmp may remain. */
int pf_publish_file(const char *tmp, const char *path, const uint8_t id[16],
                    int mode, pf_error *err);
/* Renames the closed file `from` to `to` (replacing it), durably. */
int pf_file_rename(const char *from, const char *to, pf_error *err);

/* Maps the whole file read-only. A file shorter than PF_HEADER_LEN (an
 * empty one too) is not mapped: its bytes go to m->small and m->base stays
 * NULL, so that a pointer file is never mapped (a mapped file cannot be
 * replaced on Win32). An OS failure is PF_EIO; pf_os_not_found() tells
 * whether its sys_errno means that the file does not exist. */
int pf_os_map_file(const char *path, pf_os_map *m, pf_error *err);
/* The same, but the file is read into private memory (m->copied): what
 * another program does to the file later cannot reach the reader. */
int pf_os_read_file(const char *path, pf_os_map *m, pf_error *err);
int pf_os_not_found(int sys_errno);
int pf_os_remove(const char *path); /* 0 if removed */

/* Removes the versions of `path` ("<path>.v-<32 hex digits>", FORMAT
 * section 7) in its folder, except the one whose digits are `keep` (NULL:
 * none). A version that cannot be removed (Win32: a reader maps it) stays
 * and is counted in *left; a later publish removes it. */
int pf_os_remove_versions(const char *path, const char *keep, unsigned *left,
                          pf_error *err);
void pf_os_unmap(pf_os_map *m);   /* also closes the Win32 handle h_map */

/* Shared memory (names as pf_image_share). Create: a new segment of `len`
 * bytes (an existing name is an error), every page reserved where the OS
 * can (Linux), mapped read-write; the Win32 mapping keeps the owner's
 * handle in m->h_map. Seal: the mapping becomes read-only. Open: map an
 * existing segment read-only (PF_ENOTFOUND when there is none); m->len may
 * be rounded up to whole pages. Unlink: remove the name (POSIX; a no-op on
 * Win32, where the segment goes with its last handle or view). */
int pf_os_shm_create(const char *name, uint64_t len, pf_os_map *m,
                     pf_error *err);
int pf_os_seal(pf_os_map *m, pf_error *err);
int pf_os_shm_open(const char *name, pf_os_map *m, pf_error *err);
int pf_os_shm_unlink(const char *name, pf_error *err);
uint64_t pf_os_pid(void);
int pf_os_process_start(uint64_t pid, uint64_t *start, pf_error *err);

#endif /* PF_INTERNAL_H */
