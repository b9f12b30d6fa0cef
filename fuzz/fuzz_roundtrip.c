/*
 * fuzz_roundtrip.c -- libFuzzer target for the writer and the reader
 * together: the input is a little stack program that builds a value graph
 * (a model held here), the graph is written with pf_writer, the image is
 * opened, and everything read back is compared with the model. Any
 * difference aborts.
 *
 * Program: the first 8 bytes are the hash seed; then each byte is an
 * opcode (byte % OP_COUNT) followed by its operands. Scalars are pushed;
 * OP_TUPLE..OP_FROZENSET pop n values (n from the next byte) into a new
 * container; OP_DUP pushes an earlier value again (a shared reference);
 * OP_LINK appends an earlier value to a list on the stack (cycles). Dict
 * and set keys that are not hashable, or that hash like an earlier key of
 * the same container (so may be equal to it, like 1, 1.0 and True), are
 * dropped, which keeps the keys distinct (R21). At the end the root is the
 * one value on the stack, or a list of all of them. The program ends at
 * the end of the input; make_corpus.py writes a few seeds.
 *
 * Checked: every scalar bit for bit (ints in the narrowest form, R16;
 * floats by their bits, whichever form R25 picks), string width and ASCII
 * flag (R15), container types and counts, records in insertion order,
 * list items laid out one after the other, every key's stable hash against
 * the hash computed here from the model with the public pf_hash_* API,
 * every key found again by pf_find at its own record, sharing: a second
 * occurrence of a tuple or container reads as a REF to the first one
 * (R17); then walk.h's strict walk must pass.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "permafrost.h"
#include "walk.h"
#include "fuzz_common.h"

enum {
    OP_NONE, OP_FALSE, OP_TRUE, OP_INT8, OP_INT64, OP_BIGINT, OP_FLOAT_BITS,
    OP_FLOAT_DEC, OP_COMPLEX, OP_STR1, OP_STR2, OP_STR4, OP_STR_LONG,
    OP_BYTES, OP_TUPLE, OP_LIST, OP_DICT, OP_SET, OP_FROZENSET, OP_DUP,
    OP_LINK, OP_COUNT
};

#define MAX_NODES 2048
#define MAX_STACK 256
#define MAX_DEPTH 48          /* nesting of values built bottom-up */

typedef struct node node;
struct node {
    int type;                  /* enum pf_type */
    int64_t i;
    double f, im;
    uint8_t *data;             /* str code units, bytes, big int LE bytes */
    size_t len;                /* chars (str), bytes (bytes, big int) */
    int width, ascii;
    node **kids;               /* tuple/list/set items; dict: k0 v0 k1 v1 */
    size_t nkids, cap;
    int hashable, depth;
    uint64_t hash;
    int state;                 /* 0 not written, 1 being written, 2 done */
    uint64_t pos;              /* where the one full copy was written */
};

typedef struct prog {
    const uint8_t *p, *end;
    uint64_t seed;
    node *nodes;
    size_t nnodes;
    node *stack[MAX_STACK];
    size_t sp;
    int ok;                    /* 0: out of input or of room */
} prog;

static unsigned get8(prog *g)
{
    if (g->p >= g->end) {
        g->ok = 0;
        return 0;
    }
    return *g->p++;
}

static uint64_t getn(prog *g, unsigned n)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < n; k++)
        v |= (uint64_t)get8(g) << (8 * k);
    return v;
}

/* The last slot is kept for the root list. */
static node *new_node(prog *g, int type)
{
    if (g->nnodes >= MAX_NODES - 1) {
        g->ok = 0;
        return NULL;
    }
    node *n = &g->nodes[g->nnodes++];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->hashable = 1;
    return n;
}

static void push(prog *g, node *n)
{
    if (!n)
        return;
    if (g->sp == MAX_STACK) {
        g->ok = 0;
        return;
    }
    g->stack[g->sp++] = n;
}

static int add_kid(node *n, node *k)
{
    if (n->nkids == n->cap) {
        size_t nc = n->cap ? 2 * n->cap : 8;
        node **nk = (node **)realloc(n->kids, nc * sizeof(node *));
        if (!nk)
            abort();
        n->kids = nk;
        n->cap = nc;
    }
    n->kids[n->nkids++] = k;
    return 0;
}

static uint8_t *alloc_data(size_t n)
{
    uint8_t *d = (uint8_t *)malloc(n ? n : 1);
    if (!d)
        abort();
    return d;
}

/* Minimal two's complement length of n LE bytes (>= 1), as R16 stores it. */
static size_t minimal_len(const uint8_t *le, size_t n)
{
    while (n > 1) {
        uint8_t top = le[n - 1], below = le[n - 2];
        if ((top == 0x00 && !(below & 0x80)) || (top == 0xFF && (below & 0x80)))
            n--;
        else
            break;
    }
    return n;
}

static uint64_t scalar_hash(uint64_t seed, const node *n)
{
    switch (n->type) {
    case PF_NONE: return pf_hash_none(seed);
    case PF_FALSE: return pf_hash_i64(seed, 0);
    case PF_TRUE: return pf_hash_i64(seed, 1);
    case PF_INT: return pf_hash_i64(seed, n->i);
    case PF_BIGINT: return pf_hash_bigint(seed, n->data, n->len);
    case PF_FLOAT: return pf_hash_double(seed, n->f);
    case PF_COMPLEX: return pf_hash_complex(seed, n->f, n->im);
    case PF_STR: return pf_hash_str(seed, n->data, n->len, n->width);
    case PF_BYTES: return pf_hash_bytesval(seed, n->data, n->len);
    default: abort();
    }
}

static node *make_str(prog *g, unsigned width, size_t nchars)
{
    node *n = new_node(g, PF_STR);
    if (!n)
        return NULL;
    n->width = (int)width;
    n->len = nchars;
    n->data = alloc_data(nchars * width);
    int big = 0;
    for (size_t k = 0; k < nchars; k++) {
        uint32_t u = (uint32_t)getn(g, width);
        if (width == 4)
            u %= 0x110000u;
        if ((width == 2 && u >= 0x100) || (width == 4 && u >= 0x10000))
            big = 1;
        memcpy(n->data + k * width, &u, width);
    }
    if (!big && width > 1 && nchars > 0) {
        /* the narrowest form (R15): one unit must need this width */
        uint32_t u = 0;
        memcpy(&u, n->data, width);
        u = width == 2 ? (u | 0x100u) : 0x10000u + u % 0x100000u;
        memcpy(n->data, &u, width);
    }
    if (width > 1 && nchars == 0)
        n->width = 1;
    n->ascii = 1;
    if (n->width == 1)
        for (size_t k = 0; k < nchars; k++)
            if (n->data[k] >= 0x80)
                n->ascii = 0;
    if (n->width > 1)
        n->ascii = 0;
    n->hash = scalar_hash(g->seed, n);
    return n;
}

/* Pops up to want values, in the order they were pushed. */
static size_t pop_n(prog *g, size_t want, node **out)
{
    size_t n = want < g->sp ? want : g->sp;
    g->sp -= n;
    memcpy(out, g->stack + g->sp, n * sizeof(node *));
    return n;
}

static node *make_container(prog *g, int type, size_t want)
{
    node *items[2 * MAX_STACK];
    size_t n = pop_n(g, type == PF_DICT ? 2 * want : want, items);
    node *c = new_node(g, type);
    if (!c)
        return NULL;
    int depth = 0;
    for (size_t k = 0; k < n; k++)
        if (items[k]->depth > depth)
            depth = items[k]->depth;
    c->depth = depth + 1;
    if (c->depth > MAX_DEPTH) {
        c->type = PF_NONE;       /* too deep: a None instead */
        c->depth = 0;
        c->hash = pf_hash_none(g->seed);
        return c;
    }
    uint64_t hs[2 * MAX_STACK];
    size_t nh = 0;
    if (type == PF_TUPLE || type == PF_LIST) {
        for (size_t k = 0; k < n; k++) {
            add_kid(c, items[k]);
            c->hashable &= items[k]->hashable;
            hs[nh++] = items[k]->hash;
        }
        c->hashable &= type == PF_TUPLE;
        if (c->hashable)
            c->hash = pf_hash_tuple_of(g->seed, hs, nh);
        return c;
    }
    const size_t step = type == PF_DICT ? 2 : 1;
    for (size_t k = 0; k + step <= n; k += step) {
        node *key = items[k];
        if (!key->hashable)
            continue;
        int dup = 0;
        for (size_t j = 0; j < nh; j++)
            if (hs[j] == key->hash)
                dup = 1;
        if (dup)
            continue;
        hs[nh++] = key->hash;
        add_kid(c, key);
        if (type == PF_DICT)
            add_kid(c, items[k + 1]);
    }
    c->hashable = type == PF_FROZENSET;
    if (c->hashable)
        c->hash = pf_hash_frozenset_of(g->seed, hs, nh);
    return c;
}

static const double pow10_tab[12] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5,
                                     1e6, 1e7, 1e8, 1e9, 1e10, 1e11};

static void run_op(prog *g, unsigned op)
{
    node *n;
    switch (op) {
    case OP_NONE:
    case OP_FALSE:
    case OP_TRUE:
        n = new_node(g, op == OP_NONE ? PF_NONE : op == OP_FALSE ? PF_FALSE
                                                                  : PF_TRUE);
        if (n)
            n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    case OP_INT8:
    case OP_INT64: {
        uint64_t u = op == OP_INT8 ? (uint64_t)(int64_t)(int8_t)get8(g)
                                   : getn(g, 8);
        n = new_node(g, PF_INT);
        if (!n)
            return;
        memcpy(&n->i, &u, 8);
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_BIGINT: {
        size_t len = 1 + get8(g) % 40;
        n = new_node(g, PF_BIGINT);
        if (!n)
            return;
        n->data = alloc_data(len);
        n->len = len;
        for (size_t k = 0; k < len; k++)
            n->data[k] = (uint8_t)get8(g);
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_FLOAT_BITS:
    case OP_FLOAT_DEC: {
        double f;
        if (op == OP_FLOAT_BITS) {
            uint64_t u = getn(g, 8);
            memcpy(&f, &u, 8);
        } else {
            /* m / 10^e: decimal forms (R25) and their near misses */
            unsigned e = get8(g) % 12;
            int64_t m = (int64_t)(int32_t)(uint32_t)getn(g, 4);
            if (e & 1)
                m *= 1000003; /* wider mantissas too */
            f = (double)m / pow10_tab[e];
        }
        n = new_node(g, PF_FLOAT);
        if (!n)
            return;
        n->f = f;
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_COMPLEX: {
        uint64_t a = getn(g, 8), b = get8(g) & 1 ? 0 : getn(g, 8);
        n = new_node(g, PF_COMPLEX);
        if (!n)
            return;
        memcpy(&n->f, &a, 8);
        memcpy(&n->im, &b, 8);
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_STR1:
        push(g, make_str(g, 1, get8(g) % 48));
        return;
    case OP_STR2:
        push(g, make_str(g, 2, get8(g) % 24));
        return;
    case OP_STR4:
        push(g, make_str(g, 4, get8(g) % 12));
        return;
    case OP_STR_LONG: {
        /* 100..355 chars: the long ASCII and Latin-1 forms */
        size_t len = 100 + get8(g);
        unsigned fill = get8(g), stepc = get8(g) % 7;
        n = new_node(g, PF_STR);
        if (!n)
            return;
        n->width = 1;
        n->len = len;
        n->data = alloc_data(len);
        n->ascii = 1;
        for (size_t k = 0; k < len; k++) {
            n->data[k] = (uint8_t)(fill + k * stepc);
            if (n->data[k] >= 0x80)
                n->ascii = 0;
        }
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_BYTES: {
        size_t len = get8(g) % 64;
        n = new_node(g, PF_BYTES);
        if (!n)
            return;
        n->len = len;
        n->data = alloc_data(len);
        for (size_t k = 0; k < len; k++)
            n->data[k] = (uint8_t)get8(g);
        n->hash = scalar_hash(g->seed, n);
        push(g, n);
        return;
    }
    case OP_TUPLE:
        push(g, make_container(g, PF_TUPLE, get8(g) % 12));
        return;
    case OP_LIST:
        push(g, make_container(g, PF_LIST, get8(g) % 24));
        return;
    case OP_DICT:
        push(g, make_container(g, PF_DICT, get8(g) % 24));
        return;
    case OP_SET:
        push(g, make_container(g, PF_SET, get8(g) % 24));
        return;
    case OP_FROZENSET:
        push(g, make_container(g, PF_FROZENSET, get8(g) % 24));
        return;
    case OP_DUP: {
        unsigned k = get8(g);
        if (g->sp)
            push(g, g->stack[g->sp - 1 - k % g->sp]);
        return;
    }
    case OP_LINK: {
        /* list stack[-1-a] gets stack[-1-b] appended: may close a cycle */
        unsigned a = get8(g), b = get8(g);
        if (!g->sp)
            return;
        node *l = g->stack[g->sp - 1 - a % g->sp];
        node *x = g->stack[g->sp - 1 - b % g->sp];
        if (l->type == PF_LIST && l->nkids < 64)
            add_kid(l, x);
        return;
    }
    default:
        abort();
    }
}

/* ------------------------------------------------------------------ write */

#define WRITE_OK(call)                                                      \
    do {                                                                    \
        int rc_ = (call);                                                   \
        if (rc_ == PF_ELIMIT) return rc_;                                   \
        if (rc_ != PF_OK)                                                   \
            FZ_FAIL("%s: %d (%s)", #call, rc_, e.msg ? e.msg : "");         \
    } while (0)

static int emit(pf_writer *w, node *n)
{
    pf_error e = {0, NULL, 0, 0};
    if (n->type >= PF_TUPLE && n->state != 0) {
        WRITE_OK(pf_write_ref(w, n->pos, &e));
        return PF_OK;
    }
    const uint64_t pos = pf_writer_pos(w);
    n->pos = pos;
    switch (n->type) {
    case PF_NONE: WRITE_OK(pf_write_none(w, &e)); break;
    case PF_FALSE: WRITE_OK(pf_write_bool(w, 0, &e)); break;
    case PF_TRUE: WRITE_OK(pf_write_bool(w, 1, &e)); break;
    case PF_INT: WRITE_OK(pf_write_int(w, n->i, &e)); break;
    case PF_BIGINT: WRITE_OK(pf_write_bigint(w, n->data, n->len, &e)); break;
    case PF_FLOAT: WRITE_OK(pf_write_float(w, n->f, &e)); break;
    case PF_COMPLEX: WRITE_OK(pf_write_complex(w, n->f, n->im, &e)); break;
    case PF_STR:
        WRITE_OK(pf_write_str(w, n->data, n->len, n->width, n->ascii, &e));
        break;
    case PF_BYTES: WRITE_OK(pf_write_bytes(w, n->data, n->len, &e)); break;
    case PF_TUPLE:
        n->state = 1;
        WRITE_OK(pf_write_tuple_begin(w, n->nkids, &e));
        for (size_t k = 0; k < n->nkids; k++) {
            int rc = emit(w, n->kids[k]);
            if (rc != PF_OK)
                return rc;
        }
        n->state = 2;
        break;
    default: {
        const int is_dict = n->type == PF_DICT;
        const size_t count = is_dict ? n->nkids / 2 : n->nkids;
        n->state = 1;
        WRITE_OK(pf_write_container_begin(w, n->type, count, &e));
        for (size_t k = 0; k < n->nkids; k++) {
            const int is_key = n->type != PF_LIST && (!is_dict || k % 2 == 0);
            if (!is_dict || k % 2 == 0)
                WRITE_OK(pf_write_item(w, &e));
            int rc = emit(w, n->kids[k]);
            if (rc != PF_OK)
                return rc;
            if (is_key)
                WRITE_OK(pf_write_key_done(w, &e));
        }
        WRITE_OK(pf_write_end(w, &e));
        n->state = 2;
        break;
    }
    }
    return PF_OK;
}

/* ------------------------------------------------------------------ check */

typedef struct checker {
    const pf_image *img;
    const uint8_t *base;
} checker;

static void check_scalar(const node *n, const pf_val *v, uint64_t pos)
{
    switch (n->type) {
    case PF_NONE:
    case PF_FALSE:
    case PF_TRUE:
        break;
    case PF_INT:
        if (v->u.i != n->i)
            FZ_FAIL("int at %llu: read %lld, wrote %lld",
                    (unsigned long long)pos, (long long)v->u.i, (long long)n->i);
        return;
    case PF_BIGINT:
        abort(); /* handled by the caller */
    case PF_FLOAT:
        if (memcmp(&v->u.f, &n->f, 8) != 0)
            FZ_FAIL("float at %llu: read %.17g, wrote %.17g",
                    (unsigned long long)pos, v->u.f, n->f);
        return;
    case PF_COMPLEX:
        if (memcmp(&v->u.cx.re, &n->f, 8) != 0 ||
            memcmp(&v->u.cx.im, &n->im, 8) != 0)
            FZ_FAIL("complex at %llu differs", (unsigned long long)pos);
        return;
    case PF_STR:
        if (v->u.s.width != n->width || v->u.s.len != n->len ||
            v->u.s.ascii != n->ascii ||
            memcmp(v->u.s.data, n->data, n->len * (size_t)n->width) != 0)
            FZ_FAIL("str at %llu: read width %d len %llu ascii %d, wrote "
                    "width %d len %zu ascii %d", (unsigned long long)pos,
                    v->u.s.width, (unsigned long long)v->u.s.len,
                    v->u.s.ascii, n->width, n->len, n->ascii);
        return;
    case PF_BYTES:
        if (v->u.s.len != n->len || memcmp(v->u.s.data, n->data, n->len) != 0)
            FZ_FAIL("bytes at %llu differ", (unsigned long long)pos);
        return;
    default:
        abort();
    }
}

static void check_node(checker *ck, node *n, uint64_t pos, uint64_t *next);

static void check_records(checker *ck, node *n, const pf_val *v)
{
    const pf_image *img = ck->img;
    pf_error e;
    const int is_dict = n->type == PF_DICT;
    uint64_t cursor = 0, kp, vp, k = 0;
    int rc;
    while ((rc = pf_record_next(img, v, &cursor, &kp, &vp, &e)) == 1) {
        if (k >= n->nkids)
            FZ_FAIL("more records than written at %llu",
                    (unsigned long long)v->pos);
        node *key = n->kids[k], *val = is_dict ? n->kids[k + 1] : NULL;
        uint64_t kend, vend;
        check_node(ck, key, kp, &kend);
        if (is_dict) {
            if (kend != vp)
                FZ_FAIL("value at %llu, key ended at %llu",
                        (unsigned long long)vp, (unsigned long long)kend);
            check_node(ck, val, vp, &vend);
        }
        uint64_t h, fk, fv;
        rc = fz_lookup(img, v, kp, vp, 1, &h, &fk, &fv);
        if (rc != 1 || fk != kp || fv != vp)
            FZ_FAIL("key at %llu not found again: rc %d at %llu",
                    (unsigned long long)kp, rc, (unsigned long long)fk);
        if (h != key->hash)
            FZ_FAIL("key at %llu: stored hash %016llx, model %016llx",
                    (unsigned long long)kp, (unsigned long long)h,
                    (unsigned long long)key->hash);
        k += is_dict ? 2 : 1;
    }
    if (rc != 0 || k != n->nkids)
        FZ_FAIL("records of %llu: rc %d after %llu of %zu ivals",
                (unsigned long long)v->pos, rc, (unsigned long long)k,
                n->nkids);
}

static void check_node(checker *ck, node *n, uint64_t pos, uint64_t *next)
{
    const pf_image *img = ck->img;
    pf_val v;
    pf_error e;
    int rc = pf_read_ex(img, pos, PF_READ_SHALLOW, &v, &e);
    if (rc != PF_OK)
        FZ_FAIL("pf_read_ex at %llu: %s", (unsigned long long)pos, e.msg);
    const int via_ref = v.pos != pos;
    int want = n->type;
    size_t blen = 0;
    if (n->type == PF_BIGINT) {
        blen = minimal_len(n->data, n->len);
        want = blen <= 8 ? PF_INT : PF_BIGINT;
    }
    if (v.type != want)
        FZ_FAIL("at %llu: read type %d, wrote %d", (unsigned long long)pos,
                v.type, want);
    if (n->type >= PF_TUPLE) {
        if (pos != n->pos) {
            /* a second occurrence: a REF to the one copy (R17) */
            if (!via_ref || v.pos != n->pos)
                FZ_FAIL("shared value at %llu reads at %llu, written at %llu",
                        (unsigned long long)pos, (unsigned long long)v.pos,
                        (unsigned long long)n->pos);
            *next = v.next;
            return;
        }
        if (via_ref)
            FZ_FAIL("first copy at %llu is a REF", (unsigned long long)pos);
    }
    if (n->type < PF_TUPLE)
        *next = v.next;
    switch (n->type) {
    case PF_BIGINT:
        if (blen <= 8) {
            uint8_t b[8];
            memset(b, (n->data[blen - 1] & 0x80) ? 0xFF : 0, 8);
            memcpy(b, n->data, blen);
            int64_t x;
            memcpy(&x, b, 8);
            if (v.u.i != x)
                FZ_FAIL("small big int at %llu: read %lld, wrote %lld",
                        (unsigned long long)pos, (long long)v.u.i,
                        (long long)x);
        } else if (v.u.big.n != blen ||
                   memcmp(v.u.big.data, n->data, blen) != 0) {
            FZ_FAIL("big int at %llu: read %llu bytes, wrote %zu (minimal)",
                    (unsigned long long)pos, (unsigned long long)v.u.big.n,
                    blen);
        }
        return;
    case PF_TUPLE: {
        if (v.u.tup.count != n->nkids)
            FZ_FAIL("tuple at %llu: %llu items, wrote %zu",
                    (unsigned long long)pos,
                    (unsigned long long)v.u.tup.count, n->nkids);
        uint64_t cur = v.u.tup.first;
        for (size_t k = 0; k < n->nkids; k++)
            check_node(ck, n->kids[k], cur, &cur);
        *next = cur;
        pf_val full;
        if (pf_read(img, pos, &full, &e) != PF_OK || full.end != cur)
            FZ_FAIL("tuple at %llu: pf_read end differs from its items' end",
                    (unsigned long long)pos);
        return;
    }
    case PF_LIST: {
        if (v.u.c.count != n->nkids)
            FZ_FAIL("list at %llu: count %llu, wrote %zu",
                    (unsigned long long)pos, (unsigned long long)v.u.c.count,
                    n->nkids);
        uint64_t expect = v.u.c.body;
        for (size_t k = 0; k < n->nkids; k++) {
            uint64_t ip, inext;
            if (pf_list_item(img, &v, k, &ip, &e) != PF_OK)
                FZ_FAIL("pf_list_item %zu at %llu: %s", k,
                        (unsigned long long)pos, e.msg);
            if (ip != expect)
                FZ_FAIL("list item %zu at %llu, expected %llu (R19)", k,
                        (unsigned long long)ip, (unsigned long long)expect);
            check_node(ck, n->kids[k], ip, &inext);
            expect = inext;
        }
        if (expect != v.u.c.body + v.u.c.body_len)
            FZ_FAIL("list body at %llu does not end after its items",
                    (unsigned long long)pos);
        *next = v.next;
        return;
    }
    case PF_DICT:
    case PF_SET:
    case PF_FROZENSET: {
        const size_t count = n->type == PF_DICT ? n->nkids / 2 : n->nkids;
        if (v.u.c.count != count)
            FZ_FAIL("container at %llu: count %llu, wrote %zu",
                    (unsigned long long)pos, (unsigned long long)v.u.c.count,
                    count);
        if ((count > 8) != (v.u.c.nslots != 0) ||
            (v.u.c.nslots && v.u.c.nslots <= count))
            FZ_FAIL("container at %llu: %llu slots for %zu keys (R22)",
                    (unsigned long long)pos, (unsigned long long)v.u.c.nslots,
                    count);
        check_records(ck, n, &v);
        *next = v.next;
        return;
    }
    default:
        check_scalar(n, &v, pos);
        return;
    }
}

/* ------------------------------------------------------------------ main */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prog g;
    memset(&g, 0, sizeof g);
    g.p = data;
    g.end = data + size;
    g.ok = 1;
    g.seed = getn(&g, 8);
    g.ok = 1;
    g.nodes = (node *)calloc(MAX_NODES, sizeof(node));
    if (!g.nodes)
        abort();
    while (g.ok && g.p < g.end)
        run_op(&g, get8(&g) % OP_COUNT);

    node *root;
    if (g.sp == 1) {
        root = g.stack[0];
    } else {
        root = &g.nodes[g.nnodes++]; /* the slot new_node kept */
        memset(root, 0, sizeof *root);
        root->type = PF_LIST;
        for (size_t k = 0; k < g.sp; k++)
            add_kid(root, g.stack[k]);
    }

    pf_writer *w = NULL;
    pf_error e;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    if (pf_writer_new(&w, g.seed, &e) != PF_OK)
        FZ_FAIL("pf_writer_new: %s", e.msg);
    const uint64_t root_pos = pf_writer_pos(w);
    int rc = emit(w, root);
    if (rc == PF_ELIMIT)
        goto done; /* a limit of the writer (a key too large to hash) */
    const uint8_t id[16] = {'f', 'u', 'z', 'z'};
    if (pf_writer_finish(w, root_pos, id, &buf, &len, &e) != PF_OK)
        FZ_FAIL("pf_writer_finish: %s", e.msg);

    pf_image *img = NULL;
    if (pf_image_open_buffer(buf, len, &img, &e) != PF_OK)
        FZ_FAIL("written image does not open: %s at %llu", e.msg,
                (unsigned long long)e.offset);
    FZ_ASSERT(pf_image_root(img) == root_pos);
    FZ_ASSERT(pf_image_hash_seed(img) == g.seed);
    FZ_ASSERT(pf_image_size(img) == len);

    checker ck = {img, pf_image_base(img)};
    uint64_t next;
    check_node(&ck, root, root_pos, &next);
    FZ_ASSERT(next == pf_image_data_end(img));

    walk_state ws = {1, 200000, 10000, 0, 0};
    long failed_before = check_failed;
    rc = walk(img, root_pos, 0, &ws);
    if (rc != PF_OK || check_failed != failed_before)
        FZ_FAIL("walk.h strict walk: rc %d, %ld CHECK failures", rc,
                check_failed - failed_before);
    (void)check_report;
    pf_image_close(img);
    pf_free(buf);

done:
    pf_writer_free(w);
    for (size_t k = 0; k < g.nnodes; k++) {
        free(g.nodes[k].data);
        free(g.nodes[k].kids);
    }
    free(g.nodes);
    return 0;
}
