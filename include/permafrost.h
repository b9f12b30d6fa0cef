/*
 * permafrost.h -- the public C API of the permafrost core.
 *
 * The core writes and reads permafrost images: one contiguous, position-
 * independent, read-only byte range holding a frozen graph of values (see
 * docs/FORMAT.md for the byte layout, whose numbered rules the code cites).
 * It never includes Python.h; the CPython binding is one user of this header.
 *
 * Conventions
 *  - Every function that can fail returns an int: PF_OK (0) or a negative
 *    PF_E* code, and fills the optional pf_error it is given (NULL is allowed
 *    everywhere a pf_error* is taken).
 *  - Every offset is a byte offset from the start of the image (uint64_t).
 *  - Reading never writes to the image. Pointers returned into an image stay
 *    valid until that image is closed.
 *  - Nothing read from an image is trusted: every offset and length is
 *    checked before use, and a check that fails returns PF_ECORRUPT with the
 *    offset where it was found.
 *  - Only little-endian hosts are supported (checked at compile time).
 */
#ifndef PERMAFROST_H
#define PERMAFROST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PF_VERSION_MAJOR 1
#define PF_VERSION_MINOR 1
#define PF_HEADER_LEN 128u
#define PF_MAGIC "\x89PFROST\n"

/* ------------------------------------------------------------------ errors */

enum {
    PF_OK = 0,
    PF_ENOMEM = -1,   /* allocation failed */
    PF_EIO = -2,      /* the OS refused: sys_errno holds errno / GetLastError */
    PF_ECORRUPT = -3, /* the image breaks a FORMAT rule; offset says where */
    PF_EVERSION = -4, /* unknown major version or required feature */
    PF_EINVAL = -5,   /* the caller passed something invalid */
    PF_ENOTFOUND = -6,/* no such key */
    PF_ETYPE = -7,    /* the value is not of the type the call needs */
    PF_ERANGE = -8,   /* index out of range */
    PF_ELIMIT = -9    /* a size or depth limit was reached */
};

typedef struct pf_error {
    int code;          /* one of PF_E*, or PF_OK */
    const char *msg;   /* static string, never NULL after a failure */
    uint64_t offset;   /* where in the image (PF_ECORRUPT), else 0 */
    int sys_errno;     /* errno / GetLastError() for PF_EIO, else 0 */
} pf_error;

/* A short static name for an error code ("corrupt image", ...). */
const char *pf_strerror(int code);

/* ------------------------------------------------------------------ hashing */

/* The stable hash of docs/FORMAT.md section 5. */
uint64_t pf_hash_bytes(const void *p, size_t n, uint64_t seed);
/* The checksum of a section (FORMAT section 3): four lanes of the hash's
 * step over 32-byte blocks, so it runs at memory speed; never 0. */
uint64_t pf_checksum(const void *p, size_t n);
uint64_t pf_hash_mix(uint64_t x);              /* mix() of the spec */
uint64_t pf_type_seed(uint64_t hash_seed, unsigned type_no); /* T(x) */

enum { /* type numbers for pf_type_seed (FORMAT section 5) */
    PF_HT_NONE = 1, PF_HT_INT = 2, PF_HT_FLOAT = 3, PF_HT_COMPLEX = 4,
    PF_HT_STR = 5, PF_HT_BYTES = 6, PF_HT_TUPLE = 7, PF_HT_FROZENSET = 8
};

uint64_t pf_hash_none(uint64_t seed);
uint64_t pf_hash_i64(uint64_t seed, int64_t v);
/* Minimal two's complement little-endian bytes (n >= 1). Values that fit in
 * int64 are hashed as pf_hash_i64 whatever n is. */
uint64_t pf_hash_bigint(uint64_t seed, const uint8_t *le, size_t n);
uint64_t pf_hash_double(uint64_t seed, double v);   /* float rules */
uint64_t pf_hash_complex(uint64_t seed, double re, double im);
/* str: code units as CPython stores them (width 1, 2 or 4 bytes each). */
uint64_t pf_hash_str(uint64_t seed, const void *data, size_t nchars, int width);
uint64_t pf_hash_bytesval(uint64_t seed, const void *data, size_t n);

/* Incremental hash of a sequence of 64-bit words (tuples: item hashes). */
typedef struct pf_hasher { uint64_t h; uint64_t nwords; } pf_hasher;
void pf_hasher_init(pf_hasher *st, uint64_t seed, uint64_t nbytes);
void pf_hasher_word(pf_hasher *st, uint64_t w);
uint64_t pf_hasher_end(const pf_hasher *st);
uint64_t pf_hash_tuple_of(uint64_t seed, const uint64_t *item_hashes, size_t n);
uint64_t pf_hash_frozenset_of(uint64_t seed, const uint64_t *item_hashes, size_t n);

/* The high 64 bits of a * b. */
uint64_t pf_mulhi64(uint64_t a, uint64_t b);

/* ------------------------------------------------------------------ images */

typedef struct pf_image pf_image;

/* Maps the file at `path` (UTF-8) read-only and checks its header (R3-R11).
 * On success *out owns the mapping; release it with pf_image_close().
 * A pointer file at `path` (FORMAT section 7) is followed to the image
 * version it names, whose id must match; a version removed by a
 * concurrent publish sends it back to the pointer. */
int pf_image_open_file(const char *path, pf_image **out, pf_error *err);

/* pf_image_open_file with flags. PF_OPEN_COPY: the file is read into
 * private memory instead of mapped, for a file that another program may
 * truncate or rewrite in place (a mapping of such a file can fault with
 * SIGBUS on POSIX; a copy cannot). The memory is freed by pf_image_close. */
#define PF_OPEN_COPY 1
int pf_image_open_file_ex(const char *path, int flags, pf_image **out,
                          pf_error *err);

/* Publishes the `len`-byte image in buf at `path` (UTF-8), checked first:
 * readers that hold an older image keep reading it, pf_image_open_file(path)
 * afterwards opens the new one, and a failure leaves the old one in place.
 * PF_PUBLISH_RENAME: the image is written to a temporary file, flushed and
 * renamed over `path` (POSIX can replace a file that readers map).
 * PF_PUBLISH_POINTER: the image goes to "<path>.v-<32 hex digits of its
 * id>", then `path` becomes a pointer file naming it, replaced atomically
 * (Win32 cannot replace or remove a mapped file, but the pointer is never
 * mapped). Either way, versions "<path>.v-*" of earlier pointer publishes
 * are then removed where no reader maps them (on Win32 a mapped one stays
 * until a later publish). PF_PUBLISH_DEFAULT: POINTER on Win32, RENAME
 * elsewhere. Concurrent publishers to one path: the last one wins. */
enum { PF_PUBLISH_DEFAULT = 0, PF_PUBLISH_RENAME = 1, PF_PUBLISH_POINTER = 2 };
int pf_image_publish(const char *path, const void *buf, uint64_t len, int mode,
                     pf_error *err);

/* Reads an image from a caller-owned buffer of `len` bytes. The buffer is
 * borrowed: it must stay valid and unchanged until pf_image_close(). */
int pf_image_open_buffer(const void *buf, uint64_t len, pf_image **out,
                         pf_error *err);

/* Shared-memory images (docs/DESIGN.md, "Sharing and lifetimes"). A
 * segment name is "/" then 1 to 30 characters of [A-Za-z0-9._-] (it fits
 * macOS's 31; Win32 uses "Local\<name>").
 *
 * pf_image_share: creates the segment `name` (an existing one is an error:
 * PF_EIO with EEXIST / ERROR_ALREADY_EXISTS), sized and reserved before
 * anything is written (a full /dev/shm fails here: PF_EIO with ENOSPC,
 * never a SIGBUS later), copies the `len` bytes of the image in `buf`,
 * makes the mapping read-only and checks the header. *out owns the mapping
 * (on Win32 also the handle that keeps the segment alive). The caller is
 * the segment's owner and removes it with pf_shm_unlink; on a failure the
 * segment is already removed.
 * pf_image_open_shm: maps an existing segment read-only; PF_ENOTFOUND if
 * there is none (its owner removed it or, on Win32, exited).
 * pf_shm_unlink: removes the name; mappings keep their pages until they are
 * unmapped. PF_ENOTFOUND if there was none. A no-op on Win32. */
#define PF_SHM_NAME_MAX 31
int pf_image_share(const char *name, const void *buf, uint64_t len,
                   pf_image **out, pf_error *err);
int pf_image_open_shm(const char *name, pf_image **out, pf_error *err);
int pf_shm_unlink(const char *name, pf_error *err);

/* This process's id, and whether process `pid` is alive: PF_OK with its
 * start time in *start (an opaque count that differs for a reused pid;
 * 0 where the OS does not tell), or PF_ENOTFOUND if it has exited (a
 * zombie counts as exited). The registry of segment owners uses them. */
uint64_t pf_process_id(void);
int pf_process_start(uint64_t pid, uint64_t *start, pf_error *err);

/* The full check of an image, O(image size): section checksums, every
 * value reachable from the root, canonical encodings, list tables, every
 * key found again from its hash slot, no equal keys, no tuple cycles
 * (src/verify.c has the list). PF_OK, or the first fault found (mostly
 * PF_ECORRUPT with its offset). stats (NULL allowed) gets counts. */
typedef struct pf_verify_stats {
    uint64_t values;      /* values checked (each REF target once) */
    uint64_t containers;  /* lists, dicts, sets, frozensets */
    uint64_t keys;        /* dict and set keys found from their slots */
    uint64_t checksums;   /* section checksums that matched */
} pf_verify_stats;
int pf_image_verify(const pf_image *img, pf_verify_stats *stats, pf_error *err);

/* Releases the image (unmaps a file). NULL is allowed. */
void pf_image_close(pf_image *img);

const uint8_t *pf_image_base(const pf_image *img);
uint64_t pf_image_size(const pf_image *img);
uint64_t pf_image_root(const pf_image *img);       /* root_off */
uint64_t pf_image_hash_seed(const pf_image *img);
void pf_image_id(const pf_image *img, uint8_t out[16]);
uint64_t pf_image_data_start(const pf_image *img); /* DATA section bounds */
uint64_t pf_image_data_end(const pf_image *img);
uint16_t pf_image_version_minor(const pf_image *img);
/* The VALUES table (FORMAT R28): *count u64 little-endian offsets, which
 * the reader has not checked (pf_read checks each one it follows). */
const uint8_t *pf_image_values(const pf_image *img, uint64_t *count);

/* ------------------------------------------------------------------ values */

enum pf_type {
    PF_NONE = 1, PF_FALSE, PF_TRUE, PF_INT, PF_BIGINT, PF_FLOAT, PF_COMPLEX,
    PF_STR, PF_BYTES, PF_TUPLE, PF_LIST, PF_DICT, PF_SET, PF_FROZENSET,
    /* Extension values (FORMAT section 4.3, version 1.1, announced by the
     * incompat flag PF_INCOMPAT_EXT): */
    PF_OBJECT,   /* u.tup: count = 1 + fields; item 0 is the shape tuple */
    PF_PICKLE,   /* u.s: the pickle's bytes */
    PF_ARRAY,    /* u.arr: the aligned data, then one header ival */
    PF_KEYED     /* u.key: a key's proxy, then its value (R35) */
};

/* PF_KEYED flags (R35): the value equals its proxy under Python's ==, so a
 * key equal to the proxy is equal to the keyed value. */
#define PF_KEYED_EQ 1u

/* incompat_flags bit 0 (R6): the image may hold the extension values of
 * FORMAT section 4.3. A writer sets it only when it wrote one. */
#define PF_INCOMPAT_EXT UINT64_C(1)
/* incompat_flags bit 1 (R6, R36): the image may hold ordered containers. */
#define PF_INCOMPAT_ORDERED UINT64_C(2)

/* The order kinds of an ordered container (R36). */
#define PF_ORDER_STR 1    /* str keys, by code point */
#define PF_ORDER_BYTES 2  /* bytes keys, by byte */

/* A decoded ival header. Nothing is copied: pointers point into the image. */
typedef struct pf_val {
    int type;        /* enum pf_type */
    uint64_t pos;    /* offset of the ival (the target, if a REF was followed) */
    uint64_t next;   /* offset just past the encoding that was read at the
                        position asked for (past the REF itself, if any) */
    uint64_t end;    /* offset just past the value at `pos` */
    union {
        int64_t i;                          /* PF_INT */
        double f;                           /* PF_FLOAT */
        struct { double re, im; } cx;       /* PF_COMPLEX */
        struct {
            const uint8_t *data;            /* code units / bytes */
            uint64_t len;                   /* chars (str) or bytes */
            int width;                      /* 1, 2 or 4 (bytes: 1) */
            int ascii;                      /* str stored as ASCII */
        } s;                                /* PF_STR, PF_BYTES */
        struct { const uint8_t *data; uint64_t n; } big; /* PF_BIGINT */
        struct { uint64_t count; uint64_t first; } tup;  /* PF_TUPLE, PF_OBJECT: pos of item 0 */
        struct {
            uint64_t count;                 /* 1: the header ival ... */
            uint64_t first;                 /* ... at this offset */
            const uint8_t *data;            /* the array's bytes */
            uint64_t nbytes;
        } arr;                              /* PF_ARRAY */
        struct {
            uint64_t count;                 /* 2: the proxy ... */
            uint64_t first;                 /* ... at this offset, then the value */
            unsigned flags;                 /* PF_KEYED_EQ or 0 */
        } key;                              /* PF_KEYED */
        struct {
            uint64_t count;
            uint64_t body;      /* offset of the body */
            uint64_t body_len;
            uint64_t table;     /* offset of the table (after the body) */
            uint64_t nslots;    /* dict/set/frozenset; 0 for list */
            int width;          /* table entry width: 2, 4 or 8 */
            int okind;          /* ordered (R36): PF_ORDER_STR or
                                   PF_ORDER_BYTES; 0: not ordered */
            int pbits;          /* ordered: bits per perm entry, or 0 */
            int sshift;         /* ordered: a sample every 2^sshift */
            uint64_t perm;      /* ordered: offset of perm */
            uint64_t samples;   /* ordered: offset of the samples */
        } c;                                /* PF_LIST .. PF_FROZENSET */
    } u;
} pf_val;

/* Decodes the ival at `pos`. A REF is followed (one step; R17), so `out`
 * describes the target, while out->next is just past the REF. For a
 * container only the header is checked (R12, R19-R22 on each access). */
int pf_read(const pf_image *img, uint64_t pos, pf_val *out, pf_error *err);

/* As pf_read with flags. PF_READ_SHALLOW: a tuple's items are not walked,
 * so reading one costs O(1): out->end is then 0 for a tuple, and out->next
 * is 0 too unless a REF was followed (the caller that walks the items
 * knows where the tuple ends). Every other type reads as with pf_read. */
#define PF_READ_SHALLOW 1
int pf_read_ex(const pf_image *img, uint64_t pos, int flags, pf_val *out,
               pf_error *err);

/* As pf_read, but a REF is not followed: out->type is then PF_REF_RAW and
 * out->pos is the target offset. Used by readers that must see sharing. */
#define PF_REF_RAW 100
int pf_read_raw(const pf_image *img, uint64_t pos, pf_val *out, pf_error *err);

/* Offset of element `idx` (0-based, < count) of a list (R19, R24). */
int pf_list_item(const pf_image *img, const pf_val *list, uint64_t idx,
                 uint64_t *item_pos, pf_error *err);

/* Iterating a dict/set/frozenset body in insertion order. Start with
 * *cursor = 0; each call gives the next record's key offset and, for a
 * dict, the value offset (else val_pos is set to 0). Returns 1 when a record
 * was produced, 0 at the end, < 0 on error. */
int pf_record_next(const pf_image *img, const pf_val *c, uint64_t *cursor,
                   uint64_t *key_pos, uint64_t *val_pos, pf_error *err);

/* The stable hash of the stored value at `pos` (FORMAT section 5), with the
 * image's hash seed. Only key types (R21) hash; others give PF_ETYPE. */
int pf_hash_at(const pf_image *img, uint64_t pos, uint64_t *hash, pf_error *err);

/* The 8-byte key prefix of the order samples (R36): key's first code
 * units (n of `width` bytes) as UTF-8 (okind PF_ORDER_STR) or bytes,
 * zero-padded. Compared as bytes, two prefixes order their keys as R36
 * does, except that equal prefixes decide nothing. */
void pf_order_prefix(const void *key, size_t n, int width, int okind,
                     uint8_t out[8]);

/* Ordered containers (R36): c->u.c.okind != 0. A key to search for is
 * given as code units: `n` units of `width` bytes (1, 2 or 4) for a str
 * container, bytes (width 1) for a bytes one. Records are met in sorted
 * order by `pos`, their offset in the body (the body end: past the last).
 *
 * pf_ordered_seek: the first record whose key is >= key (after = 0) or
 *   > key (after = 1): its rank (count if none) and *pos.
 * pf_ordered_at: the record of rank `rank` (<= count; count: the end).
 * pf_ordered_next: the record at *pos: 1 and its key and value offsets
 *   (value 0 for a set), *pos moved past it; 0 at the end.
 * pf_ordered_compare: the stored str or bytes key at key_pos against key:
 *   *cmp < 0, 0, > 0 as the stored key sorts before, equal, after; and
 *   *common, the length of their common prefix in units.
 * pf_ordered_longest_prefix: the longest stored key that is a prefix of
 *   key: 1 with its rank, offsets and length in units; 0 if none. */
int pf_ordered_seek(const pf_image *img, const pf_val *c, const void *key,
                    size_t n, int width, int after, uint64_t *rank,
                    uint64_t *pos, pf_error *err);
int pf_ordered_at(const pf_image *img, const pf_val *c, uint64_t rank,
                  uint64_t *pos, pf_error *err);
int pf_ordered_next(const pf_image *img, const pf_val *c, uint64_t *pos,
                    uint64_t *key_pos, uint64_t *val_pos, pf_error *err);
int pf_ordered_compare(const pf_image *img, uint64_t key_pos, const void *key,
                       size_t n, int width, int *cmp, size_t *common,
                       pf_error *err);
int pf_ordered_longest_prefix(const pf_image *img, const pf_val *c,
                              const void *key, size_t n, int width,
                              uint64_t *rank, uint64_t *key_pos,
                              uint64_t *val_pos, size_t *len, pf_error *err);

/* Candidate test for pf_find: returns 1 if the stored key at key_pos equals
 * the caller's key, 0 if not, < 0 to abort the search (that code is
 * returned by pf_find). *key_end is 0 on entry; a match that knows where
 * the key's encoding ends (REF included) may store it there, and pf_find
 * then takes the value from that offset instead of decoding the key again
 * (it still checks the offset lies inside the record's body). */
typedef int (*pf_match_fn)(void *ctx, const pf_image *img, uint64_t key_pos,
                           uint64_t *key_end);

/* Looks a key up in a dict/set/frozenset by its stable hash: probes the slot
 * table (R22, bounded by R23), or scans the records when nslots == 0, and
 * calls `match` on each candidate. Returns 1 found (key_pos, val_pos set;
 * val_pos 0 for sets), 0 not found, < 0 on error. */
int pf_find(const pf_image *img, const pf_val *c, uint64_t hash,
            pf_match_fn match, void *ctx, uint64_t *key_pos,
            uint64_t *val_pos, pf_error *err);

/* pf_find for a str key given as code units: n units of `width` bytes (1, 2
 * or 4), in the narrowest width that holds them, as CPython keeps a str.
 * Hashes the key and compares each candidate in place; a candidate that is
 * a keyed value (R35), whose equality only the caller knows, goes to
 * `match` (NULL: it does not match). Returns as pf_find. */
int pf_find_str(const pf_image *img, const pf_val *c, const void *units,
                size_t n, int width, pf_match_fn match, void *ctx,
                uint64_t *key_pos, uint64_t *val_pos, pf_error *err);

/* ------------------------------------------------------------------ writer */

/* A writer builds one image in memory: ivals are appended in order; the
 * caller drives it (the CPython binding walks Python objects). Positions
 * returned by pf_writer_pos() are final image offsets. */
typedef struct pf_writer pf_writer;

int pf_writer_new(pf_writer **out, uint64_t hash_seed, pf_error *err);
void pf_writer_free(pf_writer *w);            /* NULL allowed */
uint64_t pf_writer_pos(const pf_writer *w);   /* offset of the next ival */
uint64_t pf_writer_hash_seed(const pf_writer *w);

/* Scalars. Each appends one ival. */
int pf_write_none(pf_writer *w, pf_error *err);
int pf_write_bool(pf_writer *w, int v, pf_error *err);
int pf_write_int(pf_writer *w, int64_t v, pf_error *err);
/* le: two's complement little-endian, n >= 1 bytes; need not be minimal
 * (the writer trims it, R16). */
int pf_write_bigint(pf_writer *w, const uint8_t *le, size_t n, pf_error *err);
int pf_write_float(pf_writer *w, double v, pf_error *err);
int pf_write_complex(pf_writer *w, double re, double im, pf_error *err);
/* str: nchars code units of `width` bytes (1, 2 or 4), already in the
 * narrowest form (CPython's PEP 393 data). `ascii` says all are < 0x80.
 * Equal strings are stored once (R17): when this string was written before,
 * a REF is emitted instead if shorter. */
int pf_write_str(pf_writer *w, const void *data, size_t nchars, int width,
                 int ascii, pf_error *err);
int pf_write_bytes(pf_writer *w, const void *data, size_t n, pf_error *err);
/* A REF to an earlier ival at `target` (< pf_writer_pos). */
int pf_write_ref(pf_writer *w, uint64_t target, pf_error *err);

/* A tuple header; exactly n ivals must follow. */
int pf_write_tuple_begin(pf_writer *w, uint64_t n, pf_error *err);

/* Extension values (FORMAT section 4.3); each sets PF_INCOMPAT_EXT.
 * pf_write_object_begin: an object of `nfields` fields; exactly 1 + nfields
 * ivals must follow: the shape (a tuple ival, or a REF to one), then the
 * fields. pf_write_pickle: the n bytes of a pickle. pf_write_array_begin:
 * the n bytes of an array's data, placed at an image offset that is a
 * multiple of 64; exactly one ival must follow: its header. */
int pf_write_object_begin(pf_writer *w, uint64_t nfields, pf_error *err);
int pf_write_pickle(pf_writer *w, const void *data, size_t n, pf_error *err);
int pf_write_array_begin(pf_writer *w, const void *data, size_t n,
                         pf_error *err);
/* A keyed value (R35), written where a key of a type the core does not know
 * goes: exactly 2 ivals must follow: the proxy (of a key type: its hash and
 * equality are the key's) and the value (an object). flags: PF_KEYED_EQ
 * or 0. */
int pf_write_keyed_begin(pf_writer *w, unsigned flags, pf_error *err);

/* Containers. `count` is known up front (R19/R20). Between begin and end:
 *  list: for each element, pf_write_item() then the element's ival;
 *  dict: for each entry, pf_write_item(), key ival, pf_write_key_done(),
 *        value ival;
 *  set/frozenset: for each key, pf_write_item(), key ival,
 *        pf_write_key_done().
 * Containers nest. pf_write_key_done() hashes the key just written (it must
 * be of a key type, else PF_ETYPE). pf_write_end() checks that `count`
 * items were written and builds the table. */
int pf_write_container_begin(pf_writer *w, int type, uint64_t count,
                             pf_error *err);
int pf_write_item(pf_writer *w, pf_error *err);
int pf_write_key_done(pf_writer *w, pf_error *err);
int pf_write_end(pf_writer *w, pf_error *err);
/* As pf_write_end, for a dict, set or frozenset whose records were written
 * in strictly ascending key order, all str or all bytes keys: it adds the
 * order index (R36). ranks[i] is the sorted rank of the record inserted
 * i-th (a permutation of 0..count-1), or ranks is NULL when the records
 * were inserted in sorted order. PF_EINVAL if the keys are not so. */
int pf_write_end_ordered(pf_writer *w, const uint64_t *ranks, pf_error *err);

/* Finishes the image whose root ival is at root_pos: fills the header
 * (image_id from `id`) and the section table. On success *out is a malloc'd
 * buffer of *len bytes owned by the caller (free with pf_free). The writer
 * is left empty and may only be freed. */
int pf_writer_finish(pf_writer *w, uint64_t root_pos, const uint8_t id[16],
                     uint8_t **out, uint64_t *len, pf_error *err);
void pf_free(void *p);

/* ------------------------------------------------------------------ builder */

/* The streaming builder: writes an image at `path` whose root is a dict or
 * a list (root_type PF_DICT or PF_LIST), one entry at a time, in about
 * `memory` bytes whatever the number of entries (at least 1 MiB is used).
 * Each entry is encoded with the writer pf_builder_writer() returns:
 *  dict level: pf_builder_begin, the key's ival, pf_builder_key_done, the
 *              value's ival, pf_builder_end;
 *  list level: pf_builder_begin, the value's ival, pf_builder_end.
 * Instead of the value's ival, pf_builder_open(PF_DICT or PF_LIST) makes
 * the value a nested level, filled the same way, ended by
 * pf_builder_close. A later entry with a key equal to an earlier one's
 * (Python equality) replaces its value and keeps its place, as in a dict.
 * pf_builder_begin starts over an entry that was not ended (after a
 * failed encoding, say). pf_builder_finish ends every level and publishes
 * the image as pf_image_publish does; pf_builder_free abandons an
 * unfinished build and leaves no file behind. An I/O failure leaves the
 * builder unusable (every later call fails) but freeable. */
typedef struct pf_builder pf_builder;
int pf_builder_new(const char *path, int root_type, uint64_t memory,
                   pf_builder **out, pf_error *err);
/* pf_builder_new with flags: PF_BUILD_ORDERED gives every dict level (the
 * root, nested levels) whose keys are all str or all bytes an order index
 * (R36): its records are sorted by key when it ends, in the same bounded
 * memory (an external merge sort through a scratch file). */
#define PF_BUILD_ORDERED 1u
int pf_builder_new_ex(const char *path, int root_type, uint64_t memory,
                      unsigned flags, pf_builder **out, pf_error *err);
pf_writer *pf_builder_writer(pf_builder *b);
int pf_builder_begin(pf_builder *b, pf_error *err);
int pf_builder_key_done(pf_builder *b, pf_error *err);
int pf_builder_end(pf_builder *b, pf_error *err);
int pf_builder_open(pf_builder *b, int type, pf_error *err);
int pf_builder_close(pf_builder *b, pf_error *err);
int pf_builder_finish(pf_builder *b, int mode, pf_error *err);
void pf_builder_free(pf_builder *b);           /* NULL allowed */
/* PF_DICT or PF_LIST: the innermost open level; 0 once finished. */
int pf_builder_level_type(const pf_builder *b);
unsigned pf_builder_depth(const pf_builder *b); /* open levels, root = 1 */
/* Entries ended at every level, and bytes of image written so far (once
 * finished: the image size). */
void pf_builder_stats(const pf_builder *b, uint64_t *entries,
                      uint64_t *bytes);

/* ------------------------------------------------------------------ OS layer */

/* Writes buf to `path` atomically: a temporary file in the same folder,
 * flushed to disk, renamed over `path`. On failure no file is left at path
 * (an existing one is untouched) and the temporary file is removed. */
int pf_file_write_atomic(const char *path, const void *buf, uint64_t len,
                         pf_error *err);

/* Fills buf with n bytes from the OS's random source. */
int pf_os_random(void *buf, size_t n, pf_error *err);

#ifdef __cplusplus
}
#endif
#endif /* PERMAFROST_H */
