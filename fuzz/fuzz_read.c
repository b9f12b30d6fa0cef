/*
 * fuzz_read.c -- libFuzzer target for the reader: any bytes are opened with
 * pf_image_open_buffer and, when that succeeds, everything reachable from
 * the root is read. Errors are fine; a crash, a sanitizer report or a broken
 * invariant (FZ_FAIL) is a bug.
 *
 * Two walks over the image:
 *  1. walk() of tests/c/walk.h, the walker of the C corruption tests
 *     (full pf_read of every ival, position-matched lookups);
 *  2. the walk here, which reads the other way: tuples shallowly
 *     (pf_read_ex with PF_READ_SHALLOW) item by item, each item's end found
 *     by walking it, and compared with the end pf_read finds by skipping;
 *     REF targets followed once; every dict/set key hashed (pf_hash_at) and
 *     looked up again by value with pf_find (fuzz_common.h).
 * Both stop after a work budget, so sharing cannot blow a walk up.
 * The second walk also runs the ordered queries (R36) of tests/c/ordered.h
 * on every ordered container it meets: the sorted walk, every rank, each
 * key (and its neighbours) sought back and prefix-matched, the insertion
 * order, and probes made of the input's last bytes. Every call must end
 * cleanly; on an image that pf_image_verify passes, every answer must be
 * the right one (a seek's rank in [0, count] with the keys around it in
 * order, at(rank) and next on the record seek found, longest prefixes as
 * a brute force finds them, insertion order a permutation).
 * The full check, pf_image_verify, runs first (its verdict says how strict
 * the ordered checks are); it must end cleanly and may pass only an image
 * that the first walk reads without a fault.
 *
 * An input that starts with the magic but whose header check does not match
 * is read a second time with the check recomputed, so that mutations of the
 * header fields reach the checks behind the check value (R5-R11). An image
 * shorter than its buffer is also read from an exact-size copy, so that ASan
 * catches any read past image_size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "permafrost.h"
#include "internal.h" /* pf_verify_tuned */
#include "walk.h"
#include "ordered.h"
#include "fuzz_common.h"

#define FZ_BUDGET 20000       /* ivals visited per walk */
#define FZ_MAX_DEPTH 200
#define FZ_SEEN_CAP 4096      /* REF targets remembered (power of two) */

typedef struct fz_walker {
    const pf_image *img;
    long budget;
    uint64_t seen[FZ_SEEN_CAP];   /* REF targets already walked, +1 (0 empty) */
    size_t nseen;
    uint64_t sink;                /* keeps the touched bytes alive */
    int verified;                 /* pf_image_verify passed the image */
    const uint8_t *probe;         /* bytes for ordered probe keys */
    size_t nprobe;
} fz_walker;

/* 1 if target was walked before (or the table is full); else records it. */
static int seen_before(fz_walker *fw, uint64_t target)
{
    if (fw->nseen >= FZ_SEEN_CAP / 2)
        return 1;
    uint64_t key = target + 1;
    size_t i = (size_t)(pf_hash_mix(key) & (FZ_SEEN_CAP - 1));
    while (fw->seen[i] != 0) {
        if (fw->seen[i] == key)
            return 1;
        i = (i + 1) & (FZ_SEEN_CAP - 1);
    }
    fw->seen[i] = key;
    fw->nseen++;
    return 0;
}

static void touch(fz_walker *fw, const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        fw->sink += p[i];
}

static int visit(fz_walker *fw, uint64_t pos, int depth, uint64_t *next);

/* The items of a tuple, item by item; *end is just past the last one. */
static int visit_tuple(fz_walker *fw, const pf_val *v, int depth,
                       uint64_t *end)
{
    uint64_t cur = v->u.tup.first;
    for (uint64_t i = 0; i < v->u.tup.count; i++) {
        int rc = visit(fw, cur, depth + 1, &cur);
        if (rc != PF_OK)
            return rc;
    }
    *end = cur;
    return PF_OK;
}

static int visit_container(fz_walker *fw, const pf_val *v, int depth)
{
    const pf_image *img = fw->img;
    pf_error e;
    uint64_t dummy;
    int rc;
    if (v->type == PF_LIST) {
        for (uint64_t i = 0; i < v->u.c.count; i++) {
            uint64_t ip;
            if ((rc = pf_list_item(img, v, i, &ip, &e)) != PF_OK)
                return rc;
            if (ip < v->u.c.body || ip >= v->u.c.body + v->u.c.body_len)
                FZ_FAIL("list item %llu at %llu outside the body (R24)",
                        (unsigned long long)i, (unsigned long long)ip);
            if ((rc = visit(fw, ip, depth + 1, &dummy)) != PF_OK)
                return rc;
        }
        if (pf_list_item(img, v, v->u.c.count, &dummy, &e) != PF_ERANGE)
            FZ_FAIL("pf_list_item past the count did not give PF_ERANGE");
        return PF_OK;
    }
    uint64_t cursor = 0, kp, vp, n = 0;
    while ((rc = pf_record_next(img, v, &cursor, &kp, &vp, &e)) == 1) {
        if (++n > v->u.c.count && v->u.c.body_len <= 0xFFFFFFFFu)
            FZ_FAIL("pf_record_next gave more records than count");
        uint64_t kend;
        if ((rc = visit(fw, kp, depth + 1, &kend)) != PF_OK)
            return rc;
        if (v->type == PF_DICT) {
            if (kend != vp)
                FZ_FAIL("dict value at %llu, key ends at %llu",
                        (unsigned long long)vp, (unsigned long long)kend);
            if ((rc = visit(fw, vp, depth + 1, &dummy)) != PF_OK)
                return rc;
        } else if (vp != 0) {
            FZ_FAIL("set record with a value offset");
        }
        uint64_t h, fk, fv;
        rc = fz_lookup(img, v, kp, vp, fw->verified, &h, &fk, &fv);
        if (rc < 0 && rc != PF_ETYPE && rc != PF_ECORRUPT && rc != PF_ELIMIT)
            FZ_FAIL("lookup failed with %d (%s)", rc, pf_strerror(rc));
        if (fw->budget <= 0)
            return PF_ELIMIT;
    }
    if (v->u.c.okind) {
        const char *why = "";
        const int orc = ord_check(img, v, fw->verified, fw->probe, fw->nprobe,
                                  &why);
        if (orc == ORD_UNCLEAN || orc == ORD_BROKEN)
            FZ_FAIL("ordered container at %llu%s: %s",
                    (unsigned long long)v->pos,
                    fw->verified ? " (verified)" : "", why);
    }
    return rc;
}

/* Visits the ival at pos; *next is just past its encoding at pos. */
static int visit(fz_walker *fw, uint64_t pos, int depth, uint64_t *next)
{
    const pf_image *img = fw->img;
    pf_val v;
    pf_error e;
    int rc;
    if (fw->budget-- <= 0 || depth > FZ_MAX_DEPTH)
        return PF_ELIMIT;
    if ((rc = pf_read_ex(img, pos, PF_READ_SHALLOW, &v, &e)) != PF_OK)
        return rc;
    const int via_ref = v.pos != pos;
    if (via_ref) {
        *next = v.next;
        /* A REF points back (R17); an SREF anywhere in DATA (R28). */
        const int is_ref = pf_image_base(img)[pos] == 0x03;
        if ((is_ref && v.pos >= pos) || v.next <= pos)
            FZ_FAIL("REF at %llu to %llu, next %llu", (unsigned long long)pos,
                    (unsigned long long)v.pos, (unsigned long long)v.next);
        if (seen_before(fw, v.pos))
            return PF_OK;
    } else if (v.type != PF_TUPLE && v.type != PF_OBJECT && v.type != PF_ARRAY &&
               v.type != PF_KEYED) {
        *next = v.next;
        if (v.next <= pos || v.next != v.end)
            FZ_FAIL("ival at %llu: next %llu end %llu", (unsigned long long)pos,
                    (unsigned long long)v.next, (unsigned long long)v.end);
    }
    switch (v.type) {
    case PF_STR:
        if (v.u.s.width != 1 && v.u.s.width != 2 && v.u.s.width != 4)
            FZ_FAIL("string width %d", v.u.s.width);
        touch(fw, v.u.s.data, v.u.s.len * (uint64_t)v.u.s.width);
        break;
    case PF_BYTES:
    case PF_PICKLE:
        touch(fw, v.u.s.data, v.u.s.len);
        break;
    case PF_BIGINT:
        touch(fw, v.u.big.data, v.u.big.n);
        break;
    case PF_ARRAY:                     /* the data, then the header (R34) */
    case PF_OBJECT:                    /* the shape and the fields (R32) */
    case PF_KEYED:                     /* the proxy and the value (R35) */
    case PF_TUPLE: {
        uint64_t end;
        if (v.type == PF_ARRAY)
            touch(fw, v.u.arr.data, v.u.arr.nbytes);
        if ((rc = visit_tuple(fw, &v, depth, &end)) != PF_OK)
            return rc;
        if (!via_ref)
            *next = end;
        /* The full decode skips the items without following REFs: it must
         * end where the item-by-item walk ended. */
        pf_val full;
        if (pf_read(img, v.pos, &full, &e) == PF_OK && full.end != end)
            FZ_FAIL("tuple, object or array at %llu: pf_read end %llu, items end %llu",
                    (unsigned long long)v.pos, (unsigned long long)full.end,
                    (unsigned long long)end);
        break;
    }
    case PF_LIST:
    case PF_DICT:
    case PF_SET:
    case PF_FROZENSET:
        return visit_container(fw, &v, depth);
    default:
        break;
    }
    return PF_OK;
}

/* Everything done with one open image; probe: bytes for ordered keys. */
static void read_image(const pf_image *img, const uint8_t *probe,
                       size_t nprobe)
{
    const uint64_t start = pf_image_data_start(img);
    const uint64_t end = pf_image_data_end(img);
    const uint64_t root = pf_image_root(img);
    uint8_t id[16];
    pf_image_id(img, id);
    FZ_ASSERT(start >= PF_HEADER_LEN && start <= end);
    FZ_ASSERT(end <= pf_image_size(img));
    FZ_ASSERT(root >= start && root < end);                            /* R8 */
    (void)pf_image_version_minor(img);

    /* The full check: a clean result, and an image that passes it walks
     * without a fault (within the walk's own budget and depth). */
    pf_error e;
    memset(&e, 0, sizeof e);
    int vr = pf_image_verify(img, NULL, &e);
    if (vr != PF_OK && (e.msg == NULL || e.code != vr))
        FZ_FAIL("verify failed without an error message or code");
    /* The same verdict with the sizes of a big image: a root of 16 records
     * or more shared out between 2 threads, and the slot checks in
     * batches of 2 keys (many flushes; the keys met on the way read later
     * as suspects). */
    pf_error e2;
    pf_verify_tuning tune = {2, 2, 16};
    const int vr2 = pf_verify_tuned(img, NULL, &tune, &e2);
    if ((vr == PF_OK) != (vr2 == PF_OK))
        FZ_FAIL("verify's verdict depends on its sizes: %d, %d", vr, vr2);

    walk_state ws = {0, FZ_BUDGET, FZ_MAX_DEPTH, 0, 0};
    int rc = walk(img, root, 0, &ws);
    if (rc == -100)
        FZ_FAIL("walk.h: the reader let an invalid string through (R15)");

    fz_walker *fw = (fz_walker *)calloc(1, sizeof(fz_walker));
    if (!fw)
        abort();
    fw->img = img;
    fw->budget = FZ_BUDGET;
    fw->verified = vr == PF_OK;
    fw->probe = probe;
    fw->nprobe = nprobe;
    uint64_t next;
    (void)visit(fw, root, 0, &next);
    free(fw);

    if (vr == PF_OK && rc != PF_OK && rc != PF_ELIMIT)
        FZ_FAIL("verify passed an image whose walk fails: %d", rc);
}

static void open_and_read(const uint8_t *data, size_t size)
{
    pf_image *img = NULL;
    pf_error e;
    /* ordered probes: the input's last 32 bytes */
    const size_t nprobe = size < 32 ? size : 32;
    const uint8_t *probe = data + size - nprobe;
    if (pf_image_open_buffer(data, size, &img, &e) != PF_OK) {
        if (img)
            FZ_FAIL("failed open left an image");
        if (e.msg == NULL || e.code >= 0)
            FZ_FAIL("failed open without an error message or code");
        return;
    }
    const uint64_t isize = pf_image_size(img);
    FZ_ASSERT(isize >= PF_HEADER_LEN && isize <= size);               /* R7 */
    if (isize < size) {
        /* The tail is ignored (R1): read from an exact-size copy, so that a
         * read past image_size is an ASan report. */
        pf_image_close(img);
        img = NULL;
        uint8_t *copy = (uint8_t *)malloc((size_t)isize);
        if (!copy)
            abort();
        memcpy(copy, data, (size_t)isize);
        if (pf_image_open_buffer(copy, isize, &img, &e) != PF_OK)
            FZ_FAIL("image opens with a tail but not without: %s", e.msg);
        read_image(img, probe, nprobe);
        pf_image_close(img);
        free(copy);
        return;
    }
    read_image(img, probe, nprobe);
    pf_image_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)check_report; /* check.h comes with walk.h; its report is unused */
    (void)ord_check_all; /* ordered.h: read_image checks each container */
    open_and_read(data, size);
    if (size >= PF_HEADER_LEN && memcmp(data, PF_MAGIC, 8) == 0) {
        uint64_t want = pf_hash_bytes(data, 120, 0), have;
        memcpy(&have, data + 120, 8);
        if (have != want) {
            uint8_t *copy = (uint8_t *)malloc(size);
            if (!copy)
                abort();
            memcpy(copy, data, size);
            memcpy(copy + 120, &want, 8);
            open_and_read(copy, size);
            free(copy);
        }
    }
    return 0;
}
