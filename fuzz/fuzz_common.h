/*
 * fuzz_common.h -- what the fuzz targets share: a failure macro that aborts
 * (so that libFuzzer and the replay driver report it), and the key lookup
 * check of a dict/set record: the stored key is hashed with pf_hash_at and
 * looked up again with pf_find, through a match function that accepts a
 * candidate whose resolved ival has the same bytes and the same stable hash
 * as the key, and hands pf_find the end of the candidate's encoding
 * (key_end), so that pf_find's key_end path is exercised too (walk.h's match
 * leaves it 0); a str key is also looked up by its code units with
 * pf_find_str. See fuzz/README.md.
 */
#ifndef PF_FUZZ_COMMON_H
#define PF_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "permafrost.h"

/* A broken invariant: report where, then abort() so the fuzzer saves the
 * input as a crash. */
#define FZ_FAIL(...)                                                        \
    do {                                                                    \
        fprintf(stderr, "%s:%d: fuzz invariant broken: ", __FILE__,         \
                __LINE__);                                                  \
        fprintf(stderr, __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                \
        abort();                                                            \
    } while (0)

#define FZ_ASSERT(cond)                                                     \
    do {                                                                    \
        if (!(cond)) FZ_FAIL("%s", #cond);                                  \
    } while (0)

/* The key being looked up: its resolved ival [start, end) and its hash. */
typedef struct fz_key {
    uint64_t start, end;
    uint64_t hash;
    long candidates;   /* how many times match was called */
} fz_key;

/* pf_find match: same resolved bytes and same stable hash. The hash test
 * keeps apart two keys whose bytes are equal but whose REFs (relative
 * distances) lead to different targets. */
static int fz_match_bytes(void *ctx, const pf_image *img, uint64_t key_pos,
                          uint64_t *key_end)
{
    fz_key *k = (fz_key *)ctx;
    const uint8_t *base = pf_image_base(img);
    pf_val v;
    pf_error e;
    uint64_t h;
    k->candidates++;
    int rc = pf_read(img, key_pos, &v, &e);
    if (rc != PF_OK)
        return rc;
    if (v.end < v.pos)
        FZ_FAIL("pf_read gave end %llu before pos %llu",
                (unsigned long long)v.end, (unsigned long long)v.pos);
    if (v.end - v.pos != k->end - k->start ||
        memcmp(base + v.pos, base + k->start, (size_t)(k->end - k->start)) != 0)
        return 0;
    if ((rc = pf_hash_at(img, key_pos, &h, &e)) != PF_OK)
        return rc;
    if (h != k->hash)
        return 0;
    *key_end = v.next;
    return 1;
}

/* pf_find match that accepts nothing: a lookup with it must end (R23) and
 * report "not found". */
static int fz_match_none(void *ctx, const pf_image *img, uint64_t key_pos,
                         uint64_t *key_end)
{
    (void)img;
    (void)key_pos;
    (void)key_end;
    ++*(long *)ctx;
    return 0;
}

/* A str key (kv, the record at kp with value vp) looked up again by its
 * code units with pf_find_str, after pf_find gave rc and *fk. Even in a
 * hostile image: the call ends cleanly; a key it finds is a str equal to
 * the one sought; and it finds one whenever pf_find found the record itself
 * (both probe the same slots, and the record's key equals itself). With
 * `exact` (an image whose keys are distinct), it finds the record itself. */
static void fz_lookup_str(const pf_image *img, const pf_val *c, uint64_t kp,
                          uint64_t vp, const pf_val *kv, int rc, uint64_t fk,
                          int exact)
{
    pf_error e;
    uint64_t sk = 0, sv = 0;
    const int src = pf_find_str(img, c, kv->u.s.data, (size_t)kv->u.s.len,
                                kv->u.s.width, NULL, NULL, &sk, &sv, &e);
    if (src < 0 && src != PF_ECORRUPT && src != PF_ELIMIT)
        FZ_FAIL("pf_find_str failed with %d (%s)", src, pf_strerror(src));
    if (src == 1) {
        pf_val fkv;
        if (pf_read(img, sk, &fkv, &e) != PF_OK || fkv.type != PF_STR ||
            fkv.u.s.len != kv->u.s.len || fkv.u.s.width != kv->u.s.width ||
            memcmp(fkv.u.s.data, kv->u.s.data,
                   (size_t)kv->u.s.len * (size_t)kv->u.s.width) != 0)
            FZ_FAIL("pf_find_str found at %llu a key that is not the str "
                    "sought", (unsigned long long)sk);
        if (sk == kp && sv != vp)
            FZ_FAIL("pf_find_str found the record at %llu with value %llu, "
                    "pf_record_next said %llu", (unsigned long long)kp,
                    (unsigned long long)sv, (unsigned long long)vp);
    }
    if (rc == 1 && fk == kp && src == 0)
        FZ_FAIL("pf_find_str missed the str key at %llu that pf_find found",
                (unsigned long long)kp);
    if (exact && (src != 1 || sk != kp))
        FZ_FAIL("pf_find_str: rc %d at %llu for the key at %llu", src,
                (unsigned long long)sk, (unsigned long long)kp);
}

/* Looks the record key at kp (value at vp, 0 for sets) up again in its
 * container c. Returns the pf_find result (1 found, 0 not found, < 0 error)
 * with the record found in *fk / *fv, or a pf_hash_at / pf_read error.
 * Checks what must hold even in a hostile image: a hit on the record itself
 * gives its own value, and a miss-everything lookup ends. A str key is also
 * looked up by its code units (fz_lookup_str; `exact` as there). */
static int fz_lookup(const pf_image *img, const pf_val *c, uint64_t kp,
                     uint64_t vp, int exact, uint64_t *hash, uint64_t *fk,
                     uint64_t *fv)
{
    pf_error e;
    pf_val kv;
    fz_key k;
    int rc = pf_hash_at(img, kp, &k.hash, &e);
    if (rc != PF_OK)
        return rc;
    *hash = k.hash;
    if ((rc = pf_read(img, kp, &kv, &e)) != PF_OK)
        return rc;
    k.start = kv.pos;
    k.end = kv.end;
    k.candidates = 0;
    *fk = *fv = 0;
    rc = pf_find(img, c, k.hash, fz_match_bytes, &k, fk, fv, &e);
    if (rc == 1) {
        if (*fk == kp && *fv != vp)
            FZ_FAIL("pf_find found the record at %llu with value %llu, "
                    "pf_record_next said %llu", (unsigned long long)kp,
                    (unsigned long long)*fv, (unsigned long long)vp);
        if (k.candidates == 0)
            FZ_FAIL("pf_find found a key without asking the match");
    } else if (rc == 0 && c->u.c.nslots == 0) {
        /* a scan meets every record, this one included */
        FZ_FAIL("scan of %llu records missed the record at %llu",
                (unsigned long long)c->u.c.count, (unsigned long long)kp);
    }
    if (kv.type == PF_STR)
        fz_lookup_str(img, c, kp, vp, &kv, rc, *fk, exact);
    long calls = 0;
    uint64_t dk = 0, dv = 0;
    int miss = pf_find(img, c, ~k.hash, fz_match_none, &calls, &dk, &dv, &e);
    if (miss == 1)
        FZ_FAIL("pf_find reported a hit that match refused");
    if (c->u.c.nslots && (uint64_t)calls > c->u.c.nslots)
        FZ_FAIL("pf_find probed %ld candidates in %llu slots (R23)", calls,
                (unsigned long long)c->u.c.nslots);
    return rc;
}

#endif /* PF_FUZZ_COMMON_H */
