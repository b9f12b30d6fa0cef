/*
 * walk.h -- a bounded walk over everything reachable from an ival, used by
 * test_roundtrip.c (strict: every key must be found again through the slot
 * table at its own record), test_corrupt.c and test_objects.c (any image:
 * the walk must end with PF_OK or a clean error, never a crash). Touches
 * every byte a decoded value points at, so that ASan sees any out-of-range
 * pointer. Walks the extension values of format 1.1 too (R32-R34).
 */
#ifndef PF_WALK_H
#define PF_WALK_H

#include "check.h"
#include "permafrost.h"

typedef struct walk_state {
    int strict;          /* 1: count inconsistencies as CHECK failures */
    long budget;         /* ivals left to visit */
    int max_depth;
    uint64_t touched;    /* sum of touched bytes (keeps the reads alive) */
    long visited;
} walk_state;

/* pf_find match: the candidate record is the one at *(uint64_t *)ctx.
 * Leaves *key_end alone, so pf_find finds the value by itself. */
static int walk_match_pos(void *ctx, const pf_image *img, uint64_t key_pos,
                          uint64_t *key_end)
{
    (void)img;
    (void)key_end;
    return key_pos == *(const uint64_t *)ctx;
}

static void walk_touch(walk_state *ws, const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        ws->touched += p[i];
}

static int walk(const pf_image *img, uint64_t pos, int depth, walk_state *ws)
{
    pf_val v, raw, s;
    pf_error e;
    int rc;
    if (ws->budget <= 0)
        return PF_OK;
    ws->budget--;
    ws->visited++;
    if (depth > ws->max_depth)
        return PF_ELIMIT;
    if ((rc = pf_read_raw(img, pos, &raw, &e)) != PF_OK)
        return rc;
    if ((rc = pf_read(img, pos, &v, &e)) != PF_OK)
        return rc;
    /* a shallow read reads the same value */
    if ((rc = pf_read_ex(img, pos, PF_READ_SHALLOW, &s, &e)) != PF_OK)
        return rc;
    if (s.type != v.type || s.pos != v.pos)
        return -100;
    /* A REF'd tuple, container, object or array is walked where it is
     * written: following it again could loop (a tuple holding a list that
     * refers back to the tuple is a valid cycle, R18; objects may be in
     * cycles, R32). pf_read above has decoded it. */
    if (raw.type == PF_REF_RAW && v.type >= PF_TUPLE && v.type != PF_PICKLE)
        return PF_OK;
    switch (v.type) {
    case PF_STR:
        walk_touch(ws, v.u.s.data, v.u.s.len * (uint64_t)v.u.s.width);
        if (v.u.s.width == 4)
            for (uint64_t i = 0; i < v.u.s.len; i++) {
                uint32_t u;
                memcpy(&u, v.u.s.data + 4 * i, 4);
                if (u > 0x10FFFF) return -100; /* R15 must be enforced */
            }
        if (v.u.s.ascii)
            for (uint64_t i = 0; i < v.u.s.len; i++)
                if (v.u.s.data[i] >= 0x80) return -100;
        break;
    case PF_BYTES:
    case PF_PICKLE:
        walk_touch(ws, v.u.s.data, v.u.s.len);
        break;
    case PF_BIGINT:
        walk_touch(ws, v.u.big.data, v.u.big.n);
        break;
    case PF_ARRAY: /* its data, then its header */
    case PF_TUPLE:
    case PF_KEYED:  /* its proxy, then its value */
    case PF_OBJECT: { /* its shape, then its fields */
        if (v.type == PF_ARRAY)
            walk_touch(ws, v.u.arr.data, v.u.arr.nbytes);
        uint64_t cur = v.u.tup.first;
        for (uint64_t i = 0; i < v.u.tup.count && ws->budget > 0; i++) {
            pf_val iv;
            if ((rc = pf_read(img, cur, &iv, &e)) != PF_OK)
                return rc;
            if ((rc = walk(img, cur, depth + 1, ws)) != PF_OK)
                return rc;
            cur = iv.next;
        }
        break;
    }
    case PF_LIST:
        for (uint64_t i = 0; i < v.u.c.count && ws->budget > 0; i++) {
            uint64_t ip;
            if ((rc = pf_list_item(img, &v, i, &ip, &e)) != PF_OK)
                return rc;
            if ((rc = walk(img, ip, depth + 1, ws)) != PF_OK)
                return rc;
        }
        break;
    case PF_DICT:
    case PF_SET:
    case PF_FROZENSET: {
        uint64_t cursor = 0, kp, vp, n = 0;
        while (ws->budget > 0 &&
               (rc = pf_record_next(img, &v, &cursor, &kp, &vp, &e)) == 1) {
            n++;
            if ((rc = walk(img, kp, depth + 1, ws)) != PF_OK)
                return rc;
            if (v.type == PF_DICT && (rc = walk(img, vp, depth + 1, ws)) != PF_OK)
                return rc;
            uint64_t h, fk = 0, fv = 0;
            rc = pf_hash_at(img, kp, &h, &e);
            if (rc == PF_ETYPE && !ws->strict)
                continue;
            if (rc != PF_OK)
                return rc;
            rc = pf_find(img, &v, h, walk_match_pos, &kp, &fk, &fv, &e);
            if (rc < 0)
                return rc;
            if (ws->strict) {
                CHECK(rc == 1);
                CHECK_EQ_U64(fk, kp);
                CHECK_EQ_U64(fv, vp);
            }
        }
        if (rc < 0)
            return rc;
        if (ws->strict && ws->budget > 0)
            CHECK_EQ_U64(n, v.u.c.count);
        break;
    }
    default:
        break;
    }
    return PF_OK;
}

#endif /* PF_WALK_H */
