/*
 * ordered.h -- the ordered-container queries (FORMAT R36) run against one
 * container, for test_ordered.c (its damage sweep) and fuzz_read.c: every
 * record walked in sorted order (pf_ordered_next), every rank looked up
 * (pf_ordered_at), each key sought back (pf_ordered_seek, before and
 * after), compared with itself (pf_ordered_compare) and found as its own
 * longest prefix (pf_ordered_longest_prefix), the insertion order walked
 * (pf_record_next), and probe keys made from given bytes (as code units
 * of width 1, 2 and 4, and their prefixes) sought and prefix-matched.
 *
 * Two levels. Any image: every call ends with a clean code (PF_OK, 0, 1,
 * PF_ECORRUPT, PF_ELIMIT; pf_ordered_compare also PF_ETYPE for a stored
 * key that is no str or bytes), a seek's rank is at most count and its
 * position inside the body. An image that pf_image_verify passed
 * (strict): every answer is the right one, computed here from the keys
 * themselves with a comparator of our own (code point or byte order).
 *
 * ord_check returns PF_OK, the first clean error a call gave (non-strict),
 * ORD_BROKEN (a wrong answer, or an error, on a verified image) or
 * ORD_UNCLEAN (a code no call may give), with *why saying which.
 */
#ifndef PF_ORDERED_H
#define PF_ORDERED_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "permafrost.h"

#define ORD_UNCLEAN (-201)
#define ORD_BROKEN (-202)
#define ORD_MAX_RECORDS 4096  /* records walked (a strict check needs all) */
#define ORD_MAX_UNITS 64      /* units of a probe */
#define ORD_BRUTE 512         /* longest prefixes checked by brute force up
                                 to this many records */
#define ORD_FULL 64           /* containers up to this size: every record's
                                 key sought; larger ones: 64 spread out */

static long ord_calls, ord_strict_calls; /* ord_check runs, strict ones */

typedef struct ord_state {
    const pf_image *img;
    const pf_val *c;
    int strict;
    uint64_t n;          /* records walked in sorted order */
    uint64_t *pos;       /* their offsets; pos[n] the body end */
    uint64_t *vpos;      /* their value offsets (0 in a set) */
    int result;
    const char *why;
} ord_state;

static int ord_rank_of(int code)
{
    return code == ORD_UNCLEAN ? 3 : code == ORD_BROKEN ? 2 : code < 0 ? 1 : 0;
}

static void ord_set(ord_state *st, int code, const char *why)
{
    if (ord_rank_of(code) > ord_rank_of(st->result)) {
        st->result = code;
        st->why = why;
    }
}

/* A call's code: clean or not; on a verified image, any error breaks it.
 * Returns 1 when the call succeeded (rc >= 0). */
static int ord_rc(ord_state *st, int rc, int also_ok, const char *what)
{
    if (rc >= 0)
        return 1;
    if (rc != PF_ECORRUPT && rc != PF_ELIMIT && rc != also_ok)
        ord_set(st, ORD_UNCLEAN, what);
    else if (st->strict)
        ord_set(st, ORD_BROKEN, what);
    else
        ord_set(st, rc, what);
    return 0;
}

#define ORD_EXPECT(st, cond, what)                                          \
    do {                                                                    \
        if ((st)->strict && !(cond)) ord_set((st), ORD_BROKEN, (what));     \
    } while (0)

static uint32_t ord_unit(const uint8_t *p, size_t k, int width)
{
    if (width == 1)
        return p[k];
    if (width == 2) {
        uint16_t v;
        memcpy(&v, p + 2 * k, 2);
        return v;
    }
    uint32_t v;
    memcpy(&v, p + 4 * k, 4);
    return v;
}

/* Our comparator: a against b, unit by unit, then by length; *common: the
 * length of their common prefix. */
static int ord_cmp(const uint8_t *a, size_t na, int wa, const uint8_t *b,
                   size_t nb, int wb, size_t *common)
{
    const size_t m = na < nb ? na : nb;
    size_t i = 0;
    while (i < m && ord_unit(a, i, wa) == ord_unit(b, i, wb))
        i++;
    *common = i;
    if (i < m)
        return ord_unit(a, i, wa) < ord_unit(b, i, wb) ? -1 : 1;
    return na < nb ? -1 : na > nb;
}

typedef struct ord_key {
    const uint8_t *data;
    size_t n;
    int width;
} ord_key;

/* The stored key at kp, if it is of the container's kind. */
static int ord_key_at(ord_state *st, uint64_t kp, ord_key *k)
{
    pf_val v;
    pf_error e;
    int rc = pf_read(st->img, kp, &v, &e);
    if (!ord_rc(st, rc, 0, "pf_read of a key"))
        return 0;
    if (v.type != (st->c->u.c.okind == PF_ORDER_STR ? PF_STR : PF_BYTES)) {
        ORD_EXPECT(st, 0, "a key not of its order's kind");
        return 0;
    }
    k->data = v.u.s.data;
    k->n = (size_t)v.u.s.len;
    k->width = v.u.s.width;
    return 1;
}

/* Seeks probe p (n units of width w) both ways and asks for its longest
 * prefix; checks the answers against the keys (strict) or their
 * cleanliness. */
static void ord_probe(ord_state *st, const uint8_t *p, size_t n, int w)
{
    const pf_val *c = st->c;
    const uint64_t count = c->u.c.count;
    const uint64_t body = c->u.c.body, body_end = body + c->u.c.body_len;
    const int full = st->strict && st->n == count;
    pf_error e;
    uint64_t r[2] = {0, 0};
    int ok[2] = {0, 0};
    for (int after = 0; after < 2; after++) {
        uint64_t rank = 0, pos = 0;
        int rc = pf_ordered_seek(st->img, c, p, n, w, after, &rank, &pos, &e);
        if (!ord_rc(st, rc, 0, "pf_ordered_seek"))
            continue;
        if (rank > count || pos < body || pos > body_end)
            ord_set(st, ORD_BROKEN, "pf_ordered_seek: rank past count or "
                    "position outside the body");
        ok[after] = 1;
        r[after] = rank;
        if (!full || rank > count)
            continue;
        ORD_EXPECT(st, pos == st->pos[rank], "pf_ordered_seek: position "
                   "not the record of its rank");
        ord_key k;
        size_t common;
        if (rank < count && ord_key_at(st, st->pos[rank], &k)) {
            const int cm = ord_cmp(k.data, k.n, k.width, p, n, w, &common);
            ORD_EXPECT(st, after ? cm > 0 : cm >= 0, "pf_ordered_seek: the "
                       "key found sorts before the probe");
        }
        if (rank > 0 && ord_key_at(st, st->pos[rank - 1], &k)) {
            const int cm = ord_cmp(k.data, k.n, k.width, p, n, w, &common);
            ORD_EXPECT(st, after ? cm <= 0 : cm < 0, "pf_ordered_seek: the "
                       "key before the one found does not sort before the probe");
        }
    }
    if (ok[0] && ok[1])
        ORD_EXPECT(st, r[1] == r[0] || r[1] == r[0] + 1,
                   "pf_ordered_seek: after and before differ by more than one");

    uint64_t rank = 0, kp = 0, vp = 0;
    size_t len = 0;
    int rc = pf_ordered_longest_prefix(st->img, c, p, n, w, &rank, &kp, &vp,
                                       &len, &e);
    if (!ord_rc(st, rc, 0, "pf_ordered_longest_prefix") || !full)
        return;
    if (rc == 1) { /* a stored key, a prefix of the probe, not after it */
        ord_key k;
        size_t common;
        ORD_EXPECT(st, rank < count && kp == st->pos[rank < count ? rank : 0],
                   "pf_ordered_longest_prefix: not a record");
        if (rank < count && ord_key_at(st, st->pos[rank], &k)) {
            ord_cmp(k.data, k.n, k.width, p, n, w, &common);
            ORD_EXPECT(st, k.n == len && common == len && len <= n &&
                       vp == st->vpos[rank] && (!ok[1] || rank < r[1]),
                       "pf_ordered_longest_prefix: not a prefix");
        }
    }
    if (st->n > ORD_BRUTE)
        return;
    /* brute force: the longest key that is a prefix of the probe */
    int found = 0;
    uint64_t best = 0;
    size_t best_len = 0;
    for (uint64_t i = 0; i < st->n; i++) {
        ord_key k;
        size_t common;
        if (!ord_key_at(st, st->pos[i], &k))
            return;
        if (k.n <= n && (ord_cmp(k.data, k.n, k.width, p, n, w, &common),
                         common == k.n) && (!found || k.n > best_len)) {
            found = 1;
            best = i;
            best_len = k.n;
        }
    }
    ORD_EXPECT(st, rc == found, "pf_ordered_longest_prefix: found / not found");
    if (rc == 1 && found) {
        ORD_EXPECT(st, rank == best && len == best_len &&
                   kp == st->pos[best] && vp == st->vpos[best],
                   "pf_ordered_longest_prefix: not the longest prefix");
    }
}

/* Probes from bytes: as units of 1, 2 and 4 bytes (a str order; 4-byte
 * units kept <= 0x10FFFF), and a few of their prefixes. */
static void ord_probes_from(ord_state *st, const uint8_t *b, size_t nb)
{
    uint8_t buf[4 * ORD_MAX_UNITS];
    const int str = st->c->u.c.okind == PF_ORDER_STR;
    for (int w = 1; w <= (str ? 4 : 1); w *= 2) {
        size_t n = nb / (size_t)w;
        if (n > ORD_MAX_UNITS)
            n = ORD_MAX_UNITS;
        memcpy(buf, b, n * (size_t)w);
        for (size_t i = 0; w == 4 && i < n; i++) {
            uint32_t u;
            memcpy(&u, buf + 4 * i, 4);
            u %= 0x110000;
            memcpy(buf + 4 * i, &u, 4);
        }
        const size_t cuts[4] = {n, n / 2, n ? 1 : 0, 0};
        for (int k = 0; k < 4; k++)
            if (k == 0 || cuts[k] != cuts[k - 1])
                ord_probe(st, buf, cuts[k], w);
    }
}

/* The key at rank i, as a probe: itself (widened too), and neighbours
 * that sort just before or after it. */
static void ord_check_key(ord_state *st, uint64_t i)
{
    const pf_val *c = st->c;
    ord_key k;
    if (!ord_key_at(st, st->pos[i], &k))
        return;
    pf_error e;
    const int full = st->strict && st->n == c->u.c.count;
    /* seek: the key itself, as stored */
    for (int after = 0; after < 2; after++) {
        uint64_t rank = 0, pos = 0;
        int rc = pf_ordered_seek(st->img, c, k.data, k.n, k.width, after,
                                 &rank, &pos, &e);
        if (ord_rc(st, rc, 0, "pf_ordered_seek of a stored key") && full)
            ORD_EXPECT(st, rank == i + (uint64_t)after && pos == st->pos[rank],
                       "pf_ordered_seek of a stored key: not its rank");
    }
    /* compare: equal to itself */
    int cmp = 2;
    size_t common = 0;
    int rc = pf_ordered_compare(st->img, st->pos[i], k.data, k.n, k.width,
                                &cmp, &common, &e);
    if (ord_rc(st, rc, PF_ETYPE, "pf_ordered_compare"))
        ORD_EXPECT(st, cmp == 0 && common == k.n,
                   "pf_ordered_compare: a key not equal to itself");
    /* its own longest prefix */
    uint64_t rank = 0, kp = 0, vp = 0;
    size_t len = 0;
    rc = pf_ordered_longest_prefix(st->img, c, k.data, k.n, k.width, &rank,
                                   &kp, &vp, &len, &e);
    if (ord_rc(st, rc, 0, "pf_ordered_longest_prefix of a stored key") && full)
        ORD_EXPECT(st, rc == 1 && rank == i && kp == st->pos[i] &&
                   vp == st->vpos[i] && len == k.n,
                   "pf_ordered_longest_prefix of a stored key: not itself");
    if (k.n > ORD_MAX_UNITS)
        return;
    /* widened to 4-byte units, and neighbours */
    uint8_t buf[4 * (ORD_MAX_UNITS + 1)];
    uint32_t u = 0;
    for (size_t j = 0; j < k.n; j++) {
        u = ord_unit(k.data, j, k.width);
        memcpy(buf + 4 * j, &u, 4);
    }
    const int w = c->u.c.okind == PF_ORDER_STR ? 4 : 1;
    if (w == 1)
        for (size_t j = 0; j < k.n; j++)
            buf[j] = (uint8_t)ord_unit(k.data, j, k.width);
    else
        ord_probe(st, buf, k.n, 4);
    const uint32_t zero = 0;
    memcpy(buf + (size_t)w * k.n, &zero, (size_t)w); /* key + unit 0 */
    ord_probe(st, buf, k.n + 1, w);
    if (k.n > 0) {
        ord_probe(st, buf, k.n - 1, w);             /* key less its last */
        const uint32_t last = ord_unit(buf, k.n - 1, w);
        if (last < (w == 1 ? 0xFFu : 0x10FFFFu)) {  /* last unit + 1 */
            const uint32_t up = last + 1;
            if (w == 1) buf[k.n - 1] = (uint8_t)up;
            else memcpy(buf + 4 * (k.n - 1), &up, 4);
            ord_probe(st, buf, k.n, w);
        }
    }
}

/* Everything above on container c (decoded by pf_read, ordered). */
static int ord_check(const pf_image *img, const pf_val *c, int strict,
                     const uint8_t *probe, size_t nprobe, const char **why)
{
    ord_state st;
    memset(&st, 0, sizeof st);
    st.img = img;
    st.c = c;
    const uint64_t count = c->u.c.count;
    const uint64_t body = c->u.c.body, body_end = body + c->u.c.body_len;
    st.strict = strict && count <= ORD_MAX_RECORDS;
    st.why = "";
    ord_calls++;
    ord_strict_calls += st.strict;
    const uint64_t cap = count < ORD_MAX_RECORDS ? count : ORD_MAX_RECORDS;
    st.pos = (uint64_t *)malloc((size_t)(cap + 1) * sizeof(uint64_t));
    st.vpos = (uint64_t *)malloc((size_t)(cap + 1) * sizeof(uint64_t));
    if (!st.pos || !st.vpos)
        abort();
    pf_error e;
    int rc;
    if (!c->u.c.okind) {
        ord_set(&st, ORD_BROKEN, "not an ordered container");
        goto done;
    }
    /* A bytes order takes no wider units; nothing takes width 3. */
    {
        uint64_t rank, pos;
        const uint8_t k4[4] = {0x61, 0, 0, 0};
        if (c->u.c.okind == PF_ORDER_BYTES &&
            pf_ordered_seek(img, c, k4, 1, 4, 0, &rank, &pos, &e) != PF_EINVAL)
            ord_set(&st, ORD_UNCLEAN, "pf_ordered_seek took 4-byte units "
                    "in a bytes order");
        if (pf_ordered_seek(img, c, k4, 1, 3, 0, &rank, &pos, &e) != PF_EINVAL)
            ord_set(&st, ORD_UNCLEAN, "pf_ordered_seek took width 3");
        if (pf_ordered_at(img, c, count + 1, &pos, &e) != PF_ERANGE)
            ord_set(&st, ORD_UNCLEAN, "pf_ordered_at past the end");
    }

    /* 1. the records in sorted order */
    {
        uint64_t pos = body, kp, vp;
        while (st.n < cap) {
            const uint64_t at = pos;
            rc = pf_ordered_next(img, c, &pos, &kp, &vp, &e);
            if (rc != 1) {
                ord_rc(&st, rc, 0, "pf_ordered_next");
                break;
            }
            if (pos <= at || pos > body_end || kp != at ||
                (c->type == PF_DICT ? vp <= kp || vp >= pos : vp != 0))
                ord_set(&st, ORD_BROKEN, "pf_ordered_next: offsets out of place");
            st.pos[st.n] = at;
            st.vpos[st.n] = vp;
            st.n++;
        }
        st.pos[st.n] = pos;
        st.vpos[st.n] = 0;
        if (st.n == cap && cap < count) {
            st.strict = 0;
        } else if (st.strict) {
            ORD_EXPECT(&st, st.n == count && pos == body_end,
                       "pf_ordered_next: not count records filling the body");
            ORD_EXPECT(&st, pf_ordered_next(img, c, &pos, &kp, &vp, &e) == 0,
                       "pf_ordered_next past the end");
        }
    }
    const int full = st.strict && st.n == count;

    /* 2. every rank */
    for (uint64_t r = 0; r <= st.n; r++) {
        uint64_t pos = 0;
        rc = pf_ordered_at(img, c, r, &pos, &e);
        if (ord_rc(&st, rc, 0, "pf_ordered_at") && full)
            ORD_EXPECT(&st, pos == st.pos[r], "pf_ordered_at: not the record "
                       "of its rank");
        if (rc < 0 && !full)
            break;
    }

    /* 3. keys sought back (all of a small container, 64 of a large one) */
    {
        const uint64_t step = st.n <= ORD_FULL ? 1 : st.n / ORD_FULL;
        for (uint64_t i = 0; i < st.n; i += step)
            ord_check_key(&st, i);
        if (full && st.n > 0) { /* keys in strictly ascending order */
            ord_key a, b;
            size_t common;
            for (uint64_t i = 1; i < st.n; i++)
                if (ord_key_at(&st, st.pos[i - 1], &a) &&
                    ord_key_at(&st, st.pos[i], &b))
                    ORD_EXPECT(&st, ord_cmp(a.data, a.n, a.width, b.data, b.n,
                                            b.width, &common) < 0,
                               "verified keys not in ascending order");
        }
    }

    /* 4. the insertion order: a permutation of the sorted records */
    {
        uint8_t *seen = (uint8_t *)calloc((size_t)(st.n / 8 + 1), 1);
        if (!seen)
            abort();
        uint64_t cursor = 0, kp, vp, m = 0;
        while (m <= cap && (rc = pf_record_next(img, c, &cursor, &kp, &vp, &e)) == 1) {
            m++;
            /* the rank of kp: a binary search of the sorted offsets */
            uint64_t lo = 0, hi = st.n;
            while (lo < hi) {
                const uint64_t mid = lo + (hi - lo) / 2;
                if (st.pos[mid] < kp) lo = mid + 1;
                else hi = mid;
            }
            const int known = lo < st.n && st.pos[lo] == kp;
            ORD_EXPECT(&st, known && !(seen[lo / 8] >> (lo % 8) & 1) &&
                       vp == st.vpos[lo] &&
                       (c->u.c.pbits || m - 1 == lo),
                       "pf_record_next: not a permutation of the records");
            if (known)
                seen[lo / 8] |= (uint8_t)(1u << (lo % 8));
        }
        free(seen);
        if (rc < 0)
            ord_rc(&st, rc, 0, "pf_record_next");
        else if (full)
            ORD_EXPECT(&st, m == count, "pf_record_next: not count records");
    }

    /* 5. probes from the bytes given */
    if (probe)
        ord_probes_from(&st, probe, nprobe);

done:
    free(st.pos);
    free(st.vpos);
    if (why)
        *why = st.why;
    return st.result;
}

/* Calls ord_check on every ordered container reachable from pos through
 * lists, dict keys and values, and set members (depth and count bounded):
 * the worst result. */
static int ord_check_all(const pf_image *img, uint64_t pos, int depth,
                         int strict, const uint8_t *probe, size_t nprobe,
                         long *budget, const char **why)
{
    pf_val v;
    if (depth > 8 || (*budget)-- <= 0 || pf_read(img, pos, &v, NULL) != PF_OK)
        return PF_OK;
    int worst = PF_OK, rc;
    const char *w = "";
    if (v.type < PF_LIST || v.type > PF_FROZENSET)
        return PF_OK;
    if (v.u.c.okind) {
        worst = ord_check(img, &v, strict, probe, nprobe, why);
        w = why ? *why : "";
    }
    uint64_t cursor = 0, kp, vp, ip;
    for (uint64_t i = 0; i < v.u.c.count && i < 64 && *budget > 0; i++) {
        if (v.type == PF_LIST) {
            if (pf_list_item(img, &v, i, &ip, NULL) != PF_OK)
                break;
            rc = ord_check_all(img, ip, depth + 1, strict, probe, nprobe, budget, why);
        } else {
            if (pf_record_next(img, &v, &cursor, &kp, &vp, NULL) != 1)
                break;
            rc = ord_check_all(img, kp, depth + 1, strict, probe, nprobe, budget, why);
            if (ord_rank_of(rc) > ord_rank_of(worst)) {
                worst = rc;
                w = why ? *why : "";
            }
            if (!vp)
                continue;
            rc = ord_check_all(img, vp, depth + 1, strict, probe, nprobe, budget, why);
        }
        if (ord_rank_of(rc) > ord_rank_of(worst)) {
            worst = rc;
            w = why ? *why : "";
        }
    }
    if (why)
        *why = w;
    return worst;
}

#endif /* PF_ORDERED_H */
