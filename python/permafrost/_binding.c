/*
 * _binding.c -- the CPython extension module `permafrost._binding`.
 *
 * Owns: the Image type (a mapped image), the view types (DictView, ListView,
 * SetView, FrozenSetView) and their iterator, the encoder that walks Python
 * objects and drives the core writer, key hashing/comparison for lookups,
 * thaw, and pickling by reference. It uses only include/permafrost.h; the
 * byte format is the core's business (docs/FORMAT.md).
 *
 * Module shape: multi-phase init, module state, heap types, no static
 * PyObject globals, no private _Py* API. Every view holds a strong reference
 * to its Image, and an Image's mapping is released only when it is closed
 * and no view of it is alive (or when it is deallocated).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <string.h>
#include "structmember.h"

#include "permafrost.h"

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#define Py_NewRef(o) Py_NewRef((PyObject *)(o))
static inline PyObject *
Py_XNewRef(PyObject *o)
{
    Py_XINCREF(o);
    return o;
}
#endif

#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0 /* tp_new is cleared at init too */
#endif

#if PY_VERSION_HEX < 0x030A0000
static int
PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *o)
{
    Py_INCREF(o);
    if (PyModule_AddObject(m, name, o) < 0) {
        Py_DECREF(o);
        return -1;
    }
    return 0;
}
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PF_LIKELY(x) __builtin_expect(!!(x), 1)
#define PF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PF_ALWAYS_INLINE static inline __attribute__((always_inline))
#define PF_NOINLINE __attribute__((noinline))
#else
#define PF_LIKELY(x) (x)
#define PF_UNLIKELY(x) (x)
#define PF_ALWAYS_INLINE static __forceinline
#define PF_NOINLINE __declspec(noinline)
#endif

#define PF_PYERR (-1000) /* returned through the core: a Python error is set */
#define PF_MAX_TUPLE_DEPTH 1000
#define PF_MAX_OBJECT_DEPTH 2000

/* ------------------------------------------------------------ module state */

typedef struct {
    PyTypeObject *Image_Type;
    PyTypeObject *DictView_Type;
    PyTypeObject *ListView_Type;
    PyTypeObject *SetView_Type;
    PyTypeObject *FrozenSetView_Type;
    PyTypeObject *Iter_Type;
    PyTypeObject *Builder_Type;
    PyObject *Error;
    PyObject *CorruptImageError;
    PyObject *VersionError;
    PyObject *ClosedImageError;
    PyObject *StaleImageError;
    PyObject *LimitError;
    PyObject *NoOrderedIndexError;
    PyObject *SharedMemoryError;
    PyObject *ImageGoneError;
    PyObject *attach_shm;    /* this module's _attach_shm */
    PyObject *shm_hook;      /* called with a segment's name once its owner
                                removed it (the Python registry), or NULL */
    PyObject *keys_cls, *values_cls, *items_cls; /* set by the Python layer */
    PyObject *registry;      /* (path, id) -> Image attached by unpickling */
    PyObject *abspath;       /* os.path.abspath */
    PyObject *int_from_bytes;/* int.from_bytes */
    PyObject *str_little;    /* "little" */
    PyObject *signed_kw;     /* {"signed": True} */
    PyObject *view_at;       /* this module's _view_at */
    PyObject *attach;        /* this module's _attach */
    PyObject *from_buffer;   /* Image.from_buffer */
    /* objects (python/permafrost/_objects.py, _set_object_hooks): */
    PyObject *obj_describe;  /* describe(obj, allow_pickle) */
    PyObject *obj_resolve;   /* resolve(trust, shape) */
    PyObject *obj_setstate;  /* setstate(obj, state) */
    PyObject *obj_unpickle;  /* unpickle(trust, bytes) */
    PyObject *obj_array;     /* make_array(image, header, offset, nbytes) */
    PyObject *obj_key_proxy; /* key_proxy(key) -> (flags, proxy) or None */
    PyObject *no_trust;      /* the trust of an image opened without one */
    PyObject *ObjectStateError; /* _objects.ObjectStateError */
    PyObject *plain_types;   /* class -> (module, qualname): instances are
                                their __dict__ (encode_plain) */
    PyObject *plain_shapes;  /* (class, *names) -> shape tuple */
    PyObject *empty_tuple;
    uint64_t work_factor;    /* work budget: items per image byte ... */
    uint64_t work_base;      /* ... plus this many (set_limits) */
    struct val_slot *vcache; /* the value cache (value_cached), or NULL */
    size_t vcache_bytes;     /* what its objects take, about ... */
    size_t vcache_budget;    /* ... at most this (set_limits; 0: no cache) */
} pf_state;

/* ------------------------------------------------------------ objects */

/* One slot of an image's SREF string cache: the str decoded from VALUES
 * index `idx`, or s == NULL. */
struct sref_slot {
    uint64_t idx;
    PyObject *s;
};

typedef struct {
    PyObject_HEAD
    pf_state *st;
    PyObject *module;     /* keeps st alive */
    pf_image *img;        /* NULL once released */
    const uint8_t *base;  /* the image bytes, and its DATA section */
    uint64_t dstart, dend;
    const uint8_t *vtab;  /* the VALUES table (R28), vcount entries */
    uint64_t vcount;
    struct sref_slot *scache; /* decoded SREF strings, or NULL (sref_cached) */
    uint64_t smask;           /* its slot count - 1 */
    uint64_t seed;
    PyObject *path;       /* str or None */
    PyObject *shm_name;   /* the shared-memory segment's name, or NULL */
    uint64_t owner_pid;   /* the process that made the segment (0: none) */
    int unlinked;         /* the owner removed the segment's name */
    int copied;           /* read into private memory (open(copy=True)) */
    PyObject *root_tuple; /* the root, decoded once, when it is a tuple */
    PyObject *bufobj;     /* exporter of a caller's buffer, or NULL */
    Py_buffer buf;
    int has_buf;
    int closed;
    Py_ssize_t nviews;    /* live views and iterators */
    PyObject *weakreflist;
    /* objects (FORMAT R32): */
    PyObject *trust;      /* what resolve() may import (_objects.py) */
    PyObject *shapes;     /* shape offset -> resolve()'s answer, or NULL */
    struct obj_slot *ocache; /* offset -> weakref to the live instance */
    size_t ocap, oused;
    int in_shape;         /* a shape is being decoded (shape_get) */
    uint64_t shape_pos[16];  /* the last resolved shapes, direct-mapped: */
    PyObject *shape_res[16]; /* borrowed from `shapes` (never shrinks) */
    uint64_t args_of[64]; /* objects whose arguments are being read */
    unsigned nargs_of;
    /* the value cache's use by this image (value_cached): */
    uint32_t vc_looks, vc_hits; /* in the current window */
    uint32_t vc_skip;           /* windows left to go without the cache */
} ImageObject;

/* One slot of an image's instance table: the instance decoded from the
 * object at `pos` while it lives (a weak reference), or ref == NULL. */
struct obj_slot {
    uint64_t pos;
    PyObject *ref;
};

typedef struct {
    PyObject_HEAD
    ImageObject *image;
    pf_val v;             /* container header */
    Py_hash_t hash;       /* FrozenSetView: cached, -1 until computed */
    PyObject *missing;    /* DictView of a defaultdict or a Counter (R32
                             kind 6): called for a missing key, or NULL */
} ViewObject;

enum { IT_KEYS, IT_VALUES, IT_ITEMS, IT_LIST, IT_LIST_REV, IT_REC_REV, IT_ORD,
       IT_ORD_REV };

typedef struct {
    PyObject_HEAD
    ViewObject *view;
    int mode;
    uint64_t cursor;      /* record cursor, or list index; IT_ORD: the next
                             record's offset; IT_ORD_REV: its rank + 1 */
    uint64_t left;        /* items left */
    uint64_t *offs;       /* IT_REC_REV: record key offsets */
    /* IT_ORD, IT_ORD_REV (R36): records in sorted order */
    uint64_t rank, stop;  /* the next rank and the rank to stop at (IT_ORD);
                             the lowest rank (IT_ORD_REV: stop) */
    PyObject *prefix;     /* IT_ORD: stop at a key without it, or NULL */
    int what;             /* IT_KEYS, IT_VALUES or IT_ITEMS */
} IterObject;

static void image_release(ImageObject *im);
static void shm_remove_name(ImageObject *im);

/* ------------------------------------------------------------ errors */

/* An OSError subclass `exc` from a PF_EIO error: (errno, message) when
 * the OS gave an error number, else the message alone. */
static PyObject *
raise_os(PyObject *exc, const pf_error *err, const char *msg)
{
    errno = err ? err->sys_errno : 0;
    if (errno) {
        PyObject *e = Py_BuildValue("(is)", errno, msg);
        if (e) {
            PyErr_SetObject(exc, e);
            Py_DECREF(e);
        }
        return NULL;
    }
    return PyErr_Format(exc, "%s", msg);
}

/* The OSError of a failed file operation on `path`: the subclass that the
 * OS error number picks (FileNotFoundError...), with the core's message,
 * which says what was being done, and the OS's. */
static PyObject *
raise_os_path(const pf_error *err, PyObject *path)
{
    int e = err->sys_errno;
    PyObject *msg = PyUnicode_FromFormat("%s (%s)", err->msg ? err->msg : "I/O error",
                                         e ? strerror(e) : "no OS error number");
    if (!msg)
        return NULL;
    PyObject *args = Py_BuildValue("(iOO)", e, msg, path);
    Py_DECREF(msg);
    if (args) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static PyObject *
raise_pf(pf_state *st, const pf_error *err, int code)
{
    const char *msg = (err && err->msg) ? err->msg : pf_strerror(code);
    switch (code) {
    case PF_ENOMEM:
        return PyErr_NoMemory();
    case PF_ECORRUPT:
        return PyErr_Format(st->CorruptImageError, "corrupt image: %s (at offset %llu)",
                            msg, (unsigned long long)(err ? err->offset : 0));
    case PF_EVERSION:
        return PyErr_Format(st->VersionError, "%s", msg);
    case PF_EIO:
        return raise_os(PyExc_OSError, err, msg);
    case PF_ELIMIT:
        return PyErr_Format(st->LimitError, "%s", msg);
    case PF_ETYPE:
        return PyErr_Format(PyExc_TypeError, "%s", msg);
    case PF_ERANGE:
        return PyErr_Format(PyExc_IndexError, "%s", msg);
    case PF_ENOTFOUND:
        return PyErr_Format(PyExc_KeyError, "%s", msg);
    default:
        return PyErr_Format(PyExc_ValueError, "%s", msg);
    }
}

/* Raise for a failed core call unless a Python error is already set. */
static PyObject *
fail(pf_state *st, const pf_error *err, int code)
{
    if (code == PF_PYERR || PyErr_Occurred())
        return NULL;
    return raise_pf(st, err, code);
}

/* ------------------------------------------------------------ decoding */

static PyObject *make_view(ImageObject *im, const pf_val *v);

typedef struct {
    ImageObject *im;
    int depth;
    PyObject *memo;       /* offset -> tuple, for tuples reached by REF */
    uint64_t tuple_end;   /* set by decode_val: where the last tuple ended */
    uint64_t stack[64];   /* tuples being decoded (R18), first 64 levels */
    /* Objects being built by this decode (their fields are being read):
     * found here by a cycle, and entered in the image's shared table only
     * once complete, so another thread never sees one half built. */
    uint64_t opos[32];
    PyObject *oobj[32];   /* borrowed: build_object holds them */
    unsigned on;
    unsigned odepth;      /* objects and arrays being built, nested */
    int want_end;         /* decode_at's caller wants where the value ends */
} dec_ctx;

static PyObject *
long_from_le(pf_state *st, const uint8_t *data, uint64_t n)
{
#if PY_VERSION_HEX >= 0x030D0000
    (void)st;
    return PyLong_FromNativeBytes(data, (size_t)n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)n);
    if (!b)
        return NULL;
    PyObject *args = PyTuple_Pack(2, b, st->str_little);
    Py_DECREF(b);
    if (!args)
        return NULL;
    PyObject *r = PyObject_Call(st->int_from_bytes, args, st->signed_kw);
    Py_DECREF(args);
    return r;
#endif
}

/* Code unit i of UCS-2 (w == 2) or UCS-4 data, which may be unaligned. */
static inline Py_UCS4
load_unit(const uint8_t *d, uint64_t i, int w)
{
    if (w == 2) {
        uint16_t t;
        memcpy(&t, d + 2 * i, 2);
        return t;
    }
    uint32_t t;
    memcpy(&t, d + 4 * i, 4);
    return t;
}

static PyObject *
str_from_val(const pf_val *v)
{
    uint64_t n = v->u.s.len;
    const uint8_t *d = v->u.s.data;
    if (n > (uint64_t)PY_SSIZE_T_MAX / 4)
        return PyErr_NoMemory();
    if (v->u.s.width == 1) {
        if (v->u.s.ascii) {
            PyObject *u = PyUnicode_New((Py_ssize_t)n, 127);
            if (u)
                memcpy(PyUnicode_DATA(u), d, (size_t)n);
            return u;
        }
        return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, d, (Py_ssize_t)n);
    }
    /* UCS-2/UCS-4: the data may be unaligned; load each unit with memcpy.
     * The core checked every unit is <= 0x10FFFF (R15). */
    Py_UCS4 maxc = 0;
    int w = v->u.s.width;
    for (uint64_t i = 0; i < n; i++) {
        Py_UCS4 c = load_unit(d, i, w);
        if (c > maxc)
            maxc = c;
    }
    if (maxc > 0x10FFFF) {
        PyErr_SetString(PyExc_ValueError, "code point out of range");
        return NULL;
    }
    PyObject *u = PyUnicode_New((Py_ssize_t)n, maxc);
    if (!u)
        return NULL;
    int kind = PyUnicode_KIND(u);
    void *out = PyUnicode_DATA(u);
    if (kind == w) {
        memcpy(out, d, (size_t)(n * (uint64_t)w));
        return u;
    }
    for (uint64_t i = 0; i < n; i++)
        PyUnicode_WRITE(kind, out, (Py_ssize_t)i, load_unit(d, i, w));
    return u;
}

static PyObject *decode_at(dec_ctx *cx, uint64_t pos, uint64_t *next);
static PyObject *decode(ImageObject *im, uint64_t pos);
#define IS_VIEW(o) (Py_TYPE(o)->tp_dealloc == (destructor)View_dealloc)
static void View_dealloc(PyObject *vw);

static PyObject *decode_ext(dec_ctx *cx, const pf_val *v, int via_ref);

/* Builds the Python value of a decoded ival. */
/* R35: the proxy only places the key; the value is the key. Apart from
 * decode_val, whose frame every level of nested objects pays for. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
static PyObject *
decode_keyed(dec_ctx *cx, const pf_val *v)
{
    pf_val pv;
    pf_error err;
    uint64_t end = 0;
    int rc = pf_read(cx->im->img, v->u.key.first, &pv, &err);
    if (rc < 0)
        return fail(cx->im->st, &err, rc);
    PyObject *o = decode_at(cx, pv.next, &end);
    cx->tuple_end = end;
    return o;
}

static PyObject *
decode_val(dec_ctx *cx, const pf_val *v, int via_ref)
{
    pf_state *st = cx->im->st;
    switch (v->type) {
    case PF_NONE:
        Py_RETURN_NONE;
    case PF_FALSE:
        Py_RETURN_FALSE;
    case PF_TRUE:
        Py_RETURN_TRUE;
    case PF_INT:
        return PyLong_FromLongLong(v->u.i);
    case PF_BIGINT:
        return long_from_le(st, v->u.big.data, v->u.big.n);
    case PF_FLOAT:
        return PyFloat_FromDouble(v->u.f);
    case PF_COMPLEX:
        return PyComplex_FromDoubles(v->u.cx.re, v->u.cx.im);
    case PF_STR: {
        PyObject *u = str_from_val(v);
        if (!u && PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(st->CorruptImageError,
                         "corrupt image: invalid string (at offset %llu)",
                         (unsigned long long)v->pos);
        }
        return u;
    }
    case PF_BYTES:
        if (v->u.s.len > (uint64_t)PY_SSIZE_T_MAX)
            return PyErr_NoMemory();
        return PyBytes_FromStringAndSize((const char *)v->u.s.data,
                                         (Py_ssize_t)v->u.s.len);
    case PF_TUPLE: {
        uint64_t n = v->u.tup.count;
        PyObject *mkey = NULL;
        if (via_ref || cx->depth > 0) {
            /* A shared tuple is built once per decode: 2^k paths through k
             * shared tuples must not mean 2^k work. */
            if (!cx->memo && !(cx->memo = PyDict_New()))
                return NULL;
            if (!(mkey = PyLong_FromUnsignedLongLong(v->pos)))
                return NULL;
            PyObject *seen = PyDict_GetItemWithError(cx->memo, mkey);
            if (seen || PyErr_Occurred()) {
                Py_DECREF(mkey);
                if (seen && !via_ref) {
                    /* Items not walked this time: find the end (rare). */
                    pf_val full;
                    pf_error err;
                    int rc = pf_read(cx->im->img, v->pos, &full, &err);
                    if (rc < 0)
                        return fail(st, &err, rc);
                    cx->tuple_end = full.end;
                }
                return seen ? Py_NewRef(seen) : NULL;
            }
        }
        if (via_ref) {
            int lim = cx->depth < 64 ? cx->depth : 64;
            for (int i = 0; i < lim; i++) {
                if (cx->stack[i] == v->pos) {
                    Py_DECREF(mkey);
                    return PyErr_Format(st->CorruptImageError,
                        "corrupt image: tuple contains itself (at offset %llu)",
                        (unsigned long long)v->pos);
                }
            }
        }
        if (cx->depth >= PF_MAX_TUPLE_DEPTH) {
            Py_XDECREF(mkey);
            return PyErr_Format(st->LimitError,
                                "tuples nested deeper than %d levels",
                                PF_MAX_TUPLE_DEPTH);
        }
        /* Each item takes at least one byte (R12). */
        if (n > cx->im->dend - v->u.tup.first) {
            Py_XDECREF(mkey);
            return PyErr_Format(st->CorruptImageError,
                                "corrupt image: tuple longer than its bytes (at offset %llu)",
                                (unsigned long long)v->pos);
        }
        PyObject *t = PyTuple_New((Py_ssize_t)n);
        if (!t) {
            Py_XDECREF(mkey);
            return NULL;
        }
        if (cx->depth < 64)
            cx->stack[cx->depth] = v->pos;
        cx->depth++;
        uint64_t p = v->u.tup.first;
        for (uint64_t i = 0; i < n; i++) {
            PyObject *item = decode_at(cx, p, &p);
            if (!item) {
                cx->depth--;
                Py_DECREF(t);
                Py_XDECREF(mkey);
                return NULL;
            }
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
        }
        cx->depth--;
        cx->tuple_end = p;
        if (mkey) {
            int r = PyDict_SetItem(cx->memo, mkey, t);
            Py_DECREF(mkey);
            if (r < 0) {
                Py_DECREF(t);
                return NULL;
            }
        }
        return t;
    }
    case PF_LIST:
    case PF_DICT:
    case PF_SET:
    case PF_FROZENSET:
        return make_view(cx->im, v);
    case PF_OBJECT:
    case PF_PICKLE:
    case PF_ARRAY:
        return decode_ext(cx, v, via_ref);
    case PF_KEYED:
        return decode_keyed(cx, v);
    default:
        return PyErr_Format(st->CorruptImageError,
                            "corrupt image: unknown value type (at offset %llu)",
                            (unsigned long long)v->pos);
    }
}

/* An unsigned LEB128 varint of at most 10 bytes inside avail bytes
 * (R13): its length, or 0 if bad (the core then reports it). */
static inline unsigned
varint_at(const uint8_t *p, uint64_t avail, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10 && i < avail; i++) {
        const uint64_t b = p[i];
        if (i == 9 && b > 1)
            return 0;
        v |= (b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

/* A short ASCII str (R15) at pos, checked; NULL without an exception if
 * it is not one (or fails a check: the core then reports it). */
static inline int
short_ascii_at(ImageObject *im, uint64_t pos, PyObject **out)
{
    const uint8_t *b = im->base + pos;
    const unsigned t = b[0];
    if (t < 0x80 || t - 0x80u > im->dend - pos - 1)
        return 0;
    const unsigned n = t - 0x80u;
    unsigned acc = 0;
    for (unsigned i = 0; i < n; i++)
        acc |= b[1 + i];
    if (acc & 0x80)
        return 0;
    PyObject *u = PyUnicode_New((Py_ssize_t)n, 127);
    if (u)
        memcpy(PyUnicode_DATA(u), b + 1, n);
    *out = u;
    return 1;
}

/* At most this many slots in an image's SREF string cache (a power of 2):
 * 128 KiB of slots, and the strings themselves, of at most 127 characters. */
#define SREF_CACHE_MAX 8192u

/* The str that VALUES index z (checked: z < vcount) points at, when it is a
 * short ASCII str: from the image's cache, else decoded and cached. A
 * string met three times or more is stored once with an index (R28), so
 * each process makes one str object for it, as unpickling the original
 * shares one object, instead of one per lookup; the cache is direct-mapped
 * on the index and bounded, so memory stays small whatever the image.
 * Returns as short_ascii_at does. */
static inline int
sref_str(ImageObject *im, uint64_t z, PyObject **out)
{
    struct sref_slot *slot = NULL;
    if (PF_LIKELY(im->scache != NULL)) {
        slot = &im->scache[z & im->smask];
        if (slot->s && slot->idx == z) {
            *out = Py_NewRef(slot->s);
            return 1;
        }
    } else {
        uint64_t n = 1;
        while (n < im->vcount && n < SREF_CACHE_MAX)
            n <<= 1;
        im->scache = PyMem_Calloc((size_t)n, sizeof(struct sref_slot));
        if (im->scache) {
            im->smask = n - 1;
            slot = &im->scache[z & im->smask];
        }
    }
    uint64_t target;
    memcpy(&target, im->vtab + 8 * z, 8);
    if (target < im->dstart || target >= im->dend)
        return 0;
    if (!short_ascii_at(im, target, out))
        return 0;
    if (slot && *out) {
        PyObject *old = slot->s;
        slot->idx = z;
        slot->s = Py_NewRef(*out);
        Py_XDECREF(old);
    }
    return 1;
}

static const double pow10_table[10] = {1e0, 1e1, 1e2, 1e3, 1e4,
                                       1e5, 1e6, 1e7, 1e8, 1e9};

/* The commonest values, decoded in place with the core's checks: an int of
 * 1..8 bytes (R16), a short ASCII str (R15), a decimal or binary float
 * (R25), None and the bools, and a REF or SREF to a short ASCII str (R17,
 * R28). Returns 1 with the value in *out and *pp moved past it; -1 with
 * an exception (no memory); 0 for anything else, or anything that fails a
 * check, which then goes through pf_read_ex (which reports it). Inlined:
 * the dict lookup's value path (dict_value) must stay short. */
PF_ALWAYS_INLINE int
scalar_quick(ImageObject *im, uint64_t *pp, PyObject **out)
{
    const uint64_t pos = *pp;
    if (PF_UNLIKELY(pos < im->dstart || pos >= im->dend))
        return 0;
    const uint8_t *b = im->base + pos;
    const unsigned t = b[0];
    const uint64_t avail = im->dend - pos - 1;
    PyObject *r;
    if (t >= 0x80) {
        if (!short_ascii_at(im, pos, &r))
            return 0;
        *pp = pos + 1 + (t - 0x80u);
        return (*out = r) ? 1 : -1;
    }
    if (t - 0x08u <= 7u && t - 0x07u <= avail) {
        const unsigned n = t - 0x07u;
        uint64_t u = 0;
        if (PF_LIKELY(avail >= 8)) {
            /* One load, then drop the bytes past the int: no bytes
             * stored and reloaded (that would stall the load). */
            memcpy(&u, b + 1, 8);
            u = (u << (64 - 8 * n)) >> (64 - 8 * n);
        } else {
            for (unsigned i = 0; i < n; i++)
                u |= (uint64_t)b[1 + i] << (8 * i);
        }
        /* two's complement of n bytes (R16), sign-extended */
        const uint64_t sign = (uint64_t)1 << (8 * n - 1);
        u = (u ^ sign) - sign;
        int64_t x;
        memcpy(&x, &u, 8);
        *pp = pos + 1 + n;
        return (*out = PyLong_FromLongLong(x)) ? 1 : -1;
    }
    uint64_t z;
    unsigned vl;
    if (t - 0x30u <= 9u) {
        if (!(vl = varint_at(b + 1, avail, &z)))
            return 0;
        const int64_t m = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
        if (m <= -((int64_t)1 << 53) || m >= ((int64_t)1 << 53))
            return 0;
        *pp = pos + 1 + vl;
        return (*out = PyFloat_FromDouble((double)m / pow10_table[t - 0x30])) ? 1 : -1;
    }
    if (t == 0x03 || t == 0x07) {
        if (!(vl = varint_at(b + 1, avail, &z)))
            return 0;
        if (t == 0x03) {
            if (z == 0 || z > pos - im->dstart)
                return 0;
            if (!short_ascii_at(im, pos - z, &r))
                return 0;
        } else {
            if (z >= im->vcount || !sref_str(im, z, &r))
                return 0;
        }
        *pp = pos + 1 + vl;
        return (*out = r) ? 1 : -1;
    }
    if (t <= 0x02) {
        *pp = pos + 1;
        *out = Py_NewRef(t == 0x00 ? Py_None : t == 0x01 ? Py_False : Py_True);
        return 1;
    }
    if (t == 0x04 && avail >= 8) {
        double d;
        memcpy(&d, b + 1, 8);
        *pp = pos + 9;
        return (*out = PyFloat_FromDouble(d)) ? 1 : -1;
    }
    return 0;
}

/* scalar_quick for the general decoders: the value (or NULL with an
 * exception) with *done set, or *done 0 (and NULL) for anything else. */
static PyObject *
decode_fast(ImageObject *im, uint64_t pos, uint64_t *next, int *done)
{
    PyObject *r = NULL;
    const int k = scalar_quick(im, &pos, &r);
    *done = k != 0;
    if (k > 0 && next)
        *next = pos;
    return r;
}

/* A short tuple (R26) of scalar_quick's values at pos (its type byte
 * checked by the caller): 1 with the tuple in *out, -1 with an exception,
 * 0 if an item needs the general path. */
PF_ALWAYS_INLINE int
tuple_quick(ImageObject *im, uint64_t pos, Py_ssize_t n, PyObject **out)
{
    PyObject *tup = PyTuple_New(n);
    if (!tup)
        return -1;
    uint64_t p = pos + 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item;
        const int k = scalar_quick(im, &p, &item);
        if (k <= 0) {
            Py_DECREF(tup);
            return k;
        }
        PyTuple_SET_ITEM(tup, i, item);
    }
    *out = tup;
    return 1;
}

/* A value looked up in a dict: scalar_quick's values, and a short tuple
 * of them (R26, tuple_quick); anything else through decode(). *fast says
 * which: 1 for the first two (immutable values of known sizes). */
PF_ALWAYS_INLINE PyObject *
decode_value(ImageObject *im, uint64_t pos, int *fast)
{
    PyObject *r;
    int k = scalar_quick(im, &pos, &r);
    if (k == 0 && pos >= im->dstart && pos < im->dend &&
        im->base[pos] - 0x19u <= 6u)
        k = tuple_quick(im, pos, (Py_ssize_t)(im->base[pos] - 0x18u), &r);
    *fast = k != 0;
    if (k)
        return k > 0 ? r : NULL;
    return decode(im, pos);
}

/* ---- the value cache
 *
 * The values that dict lookups decode on their fast paths (int, float,
 * short ASCII str, a short tuple of those) are kept in one cache per
 * process, of sets of two slots, on (image, offset): a key looked up again
 * gets the same object back, as from a dict, without decoding it. Bounded
 * whatever the lookups: VCACHE_SETS x 2 slots (768 KiB, allocated on the
 * first lookup) and objects of at most st->vcache_budget bytes
 * (set_limits(value_cache=); 2 MiB by default, 0 turns it off); an
 * image's entries go when its mapping does. docs/DECISIONS.md, "The value
 * cache". */

#define VCACHE_BITS 14
#define VCACHE_SETS (1u << VCACHE_BITS)
#define VCACHE_BUDGET ((size_t)2 << 20) /* the default */

struct val_slot {
    const ImageObject *im; /* NULL: empty */
    uint64_t pos;
    PyObject *obj;
};

/* About what `o` (a result of decode_value's fast paths) takes: the
 * object and, for a tuple, its items; 0 for None, True and False. */
static size_t
value_cost(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type)
        return 32;
    if (t == &PyFloat_Type)
        return sizeof(PyFloatObject);
    if (t == &PyUnicode_Type)
        return sizeof(PyASCIIObject) + (size_t)PyUnicode_GET_LENGTH(o) + 1;
    if (t == &PyTuple_Type) {
        size_t c = 16 + sizeof(PyTupleObject) +
                   sizeof(PyObject *) * (size_t)PyTuple_GET_SIZE(o);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); i++)
            c += value_cost(PyTuple_GET_ITEM(o, i));
        return c;
    }
    return 0;
}

static inline struct val_slot *
vcache_set(pf_state *st, const ImageObject *im, uint64_t pos)
{
    const uint64_t h = (pos ^ ((uint64_t)(uintptr_t)im >> 4)) *
                       0x9E3779B97F4A7C15ull;
    return &st->vcache[2 * (h >> (64 - VCACHE_BITS))];
}

/* Drops every entry (im NULL) or those of one image. */
static void
vcache_drop(pf_state *st, const ImageObject *im)
{
    struct val_slot *c = st->vcache;
    if (!c)
        return;
    for (size_t i = 0; i < 2 * (size_t)VCACHE_SETS; i++) {
        if (c[i].im && (!im || c[i].im == im)) {
            PyObject *o = c[i].obj;
            st->vcache_bytes -= value_cost(o);
            c[i].im = NULL;
            c[i].obj = NULL;
            Py_DECREF(o);
        }
    }
    if (!im) {
        st->vcache = NULL;
        st->vcache_bytes = 0;
        PyMem_Free(c);
    }
}

/* The value at pos of a dict record, from the cache or decoded (and kept
 * there when it is of a kind the cache holds and the budget allows).
 *
 * Replacement is a clock of two hands: a hit marks its slot used; a miss
 * takes an empty or unused slot of its set, and when both were used since,
 * clears their marks and keeps them. A value met once does not push out
 * one met often, and a cycle over more keys than the cache holds keeps
 * hitting on those it holds, where least-recently-used would miss them
 * all.
 *
 * An image whose lookups rarely hit (random keys over a table much bigger
 * than the cache) goes without it: a miss costs the set's cache line and,
 * when it replaces a value, freeing an object long out of the CPU caches.
 * Lookups are counted in windows of VC_WINDOW; after a window with fewer
 * than 1 hit in VC_MIN_RATE, the next VC_SKIP windows decode directly,
 * then the cache is tried again. */
#define VC_USED ((uint64_t)1 << 63) /* in val_slot.pos: offsets are < 2^63 */
#define VC_WINDOW 4096u
#define VC_MIN_RATE 16u
#define VC_SKIP 127u

/* The cache's side of dict_value (below), once the window allows it: the
 * value from the cache, or decoded and kept there. */
static PF_NOINLINE PyObject *
value_cached(ImageObject *im, uint64_t pos)
{
    pf_state *st = im->st;
    struct val_slot *set;
    int fast;
    if (PF_LIKELY(st->vcache != NULL)) {
        set = vcache_set(st, im, pos);
        for (int w = 0; w < 2; w++) {
            if (set[w].im == im && (set[w].pos & ~VC_USED) == pos) {
                set[w].pos |= VC_USED;
                im->vc_hits++;
                return Py_NewRef(set[w].obj);
            }
        }
    } else if (st->vcache_budget) {
        st->vcache = PyMem_Calloc(2 * (size_t)VCACHE_SETS, sizeof(struct val_slot));
    }
    PyObject *r = decode_value(im, pos, &fast);
    /* the set found again: making a tuple may run the cyclic GC, and a
     * finalizer may have emptied or freed the cache */
    if (!r || !fast || !st->vcache)
        return r;
    set = vcache_set(st, im, pos);
    struct val_slot *v = !set[0].im ? &set[0] : !set[1].im ? &set[1]
                       : !(set[1].pos & VC_USED) ? &set[1]
                       : !(set[0].pos & VC_USED) ? &set[0] : NULL;
    if (!v) {
        set[0].pos &= ~VC_USED;
        set[1].pos &= ~VC_USED;
        return r;
    }
    const size_t add = value_cost(r);
    const size_t out = v->im ? value_cost(v->obj) : 0;
    if (add == 0 || pos >= VC_USED || st->vcache_bytes - out + add > st->vcache_budget)
        return r;
    PyObject *old = v->obj;
    v->im = im;
    v->pos = pos | VC_USED;
    v->obj = Py_NewRef(r);
    st->vcache_bytes = st->vcache_bytes - out + add;
    Py_XDECREF(old);
    return r;
}

/* The end of a window of VC_WINDOW lookups: whether the next ones use
 * the cache. */
static PF_NOINLINE void
vc_window(ImageObject *im)
{
    if (im->vc_skip)
        im->vc_skip--;
    else if (im->vc_hits < VC_WINDOW / VC_MIN_RATE)
        im->vc_skip = VC_SKIP;
    im->vc_looks = im->vc_hits = 0;
}

/* The value of a dict record at pos, for a lookup (subscript, get): from
 * the value cache while it pays, else decoded here.
 *
 * Lean on purpose. In a big table each lookup waits on a cache miss for
 * its record, and the CPU overlaps that wait with the caller's next
 * lookup (whose key object and slot miss too) only while the work after
 * the record's load fits in its out-of-order window: a few dozen
 * instructions more cost a whole miss. Measured on the 2M-entry
 * benchmark with int values, the value decoded through calls (value_cached
 * over decode_value over decode_fast): 510-550 ns a lookup; inlined here:
 * 330-365 ns, the dict 310-340 ns. A short tuple of an int, a float and a
 * str does not fit either way (three allocations, and the frees of the
 * last result): 520-600 ns against the dict's 300-330. */
PF_ALWAYS_INLINE PyObject *
dict_value(ImageObject *im, uint64_t pos)
{
    if (PF_UNLIKELY(++im->vc_looks == VC_WINDOW))
        vc_window(im);
    if (!im->vc_skip)
        return value_cached(im, pos);
    int fast;
    return decode_value(im, pos, &fast);
}

static PyObject *
decode_at(dec_ctx *cx, uint64_t pos, uint64_t *next)
{
    int done;
    PyObject *fast = decode_fast(cx->im, pos, next, &done);
    if (done)
        return fast;
    pf_val v;
    pf_error err;
    int rc = pf_read_ex(cx->im->img, pos, PF_READ_SHALLOW, &v, &err);
    if (rc < 0)
        return fail(cx->im->st, &err, rc);
    int via_ref = v.pos != pos;
    cx->want_end = next != NULL;
    PyObject *r = decode_val(cx, &v, via_ref);
    if (next)
        *next = ((v.type == PF_TUPLE || v.type == PF_OBJECT || v.type == PF_ARRAY ||
                  v.type == PF_KEYED) && !via_ref) ? cx->tuple_end : v.next;
    return r;
}

/* ------------------------------------------------------------ objects */

/* The instance decoded from the object at pos while it lives, or NULL
 * (a new reference). */
static PyObject *
ocache_get(ImageObject *im, uint64_t pos)
{
    if (!im->ocache)
        return NULL;
    const size_t mask = im->ocap - 1;
    for (size_t i = (size_t)(pos * 0x9E3779B97F4A7C15ull >> 20) & mask;;
         i = (i + 1) & mask) {
        struct obj_slot *sl = &im->ocache[i];
        if (!sl->ref)
            return NULL;
        if (sl->pos == pos) {
#if PY_VERSION_HEX >= 0x030D0000
            PyObject *o = NULL;
            if (PyWeakref_GetRef(sl->ref, &o) < 0)
                PyErr_Clear();
            return o;
#else
            PyObject *o = PyWeakref_GetObject(sl->ref);
            return o == Py_None ? NULL : Py_NewRef(o);
#endif
        }
    }
}

static int
ocache_alive(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *o = NULL;
    int r = PyWeakref_GetRef(ref, &o);
    Py_XDECREF(o);
    return r > 0;
#else
    return PyWeakref_GetObject(ref) != Py_None;
#endif
}

/* Rebuilds the table with its live entries, in `cap` slots. */
static int
ocache_rebuild(ImageObject *im, size_t cap)
{
    struct obj_slot *n = PyMem_Calloc(cap, sizeof *n);
    if (!n) {
        PyErr_NoMemory();
        return -1;
    }
    size_t used = 0;
    for (size_t j = 0; j < im->ocap; j++) {
        struct obj_slot *sl = &im->ocache[j];
        if (!sl->ref)
            continue;
        if (!ocache_alive(sl->ref)) {
            Py_DECREF(sl->ref);
            continue;
        }
        size_t i = (size_t)(sl->pos * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
        while (n[i].ref)
            i = (i + 1) & (cap - 1);
        n[i] = *sl;
        used++;
    }
    PyMem_Free(im->ocache);
    im->ocache = n;
    im->ocap = cap;
    im->oused = used;
    return 0;
}

/* Remembers o (decoded from pos) while it lives, if it can be weakly
 * referenced: every later decode of pos gives the same instance, so
 * identity, cycles and a visited set of nodes work as on the original.
 * The table holds weak references only: it never keeps an instance alive,
 * and dead entries go when it fills. */
static int
ocache_put(ImageObject *im, uint64_t pos, PyObject *o)
{
    if (!PyType_SUPPORTS_WEAKREFS(Py_TYPE(o)))
        return 0;
    if ((im->oused + 1) * 2 > im->ocap) {
        size_t cap = im->ocap ? im->ocap : 64;
        if (im->ocache) {
            /* count the live ones first: grow only if they need it */
            size_t live = 0;
            for (size_t j = 0; j < im->ocap; j++)
                live += im->ocache[j].ref && ocache_alive(im->ocache[j].ref);
            while ((live + 1) * 4 > cap)
                cap *= 2;
        }
        if (ocache_rebuild(im, cap) < 0)
            return -1;
    }
    PyObject *ref = PyWeakref_NewRef(o, NULL);
    if (!ref)
        return -1;
    const size_t mask = im->ocap - 1;
    size_t i = (size_t)(pos * 0x9E3779B97F4A7C15ull >> 20) & mask;
    for (;; i = (i + 1) & mask) {
        struct obj_slot *sl = &im->ocache[i];
        if (!sl->ref) {
            sl->pos = pos;
            sl->ref = ref;
            im->oused++;
            return 0;
        }
        if (sl->pos == pos) { /* a dead instance of the same object */
            Py_SETREF(sl->ref, ref);
            return 0;
        }
    }
}

/* What resolve() said of the shape tuple at spos (borrowed; cached per
 * image): (kind, target, names, ndict, direct). */
static PyObject *
shape_get(ImageObject *im, uint64_t spos)
{
    pf_state *st = im->st;
    const unsigned slot = (unsigned)((spos * 0x9E3779B97F4A7C15ull) >> 60);
    if (im->shape_res[slot] && im->shape_pos[slot] == spos && im->shapes)
        return im->shape_res[slot];
    if (!st->obj_resolve)
        return PyErr_Format(PyExc_RuntimeError, "permafrost._objects is not loaded");
    if (!im->shapes && !(im->shapes = PyDict_New()))
        return NULL;
    PyObject *key = PyLong_FromUnsignedLongLong(spos);
    if (!key)
        return NULL;
    PyObject *r = PyDict_GetItemWithError(im->shapes, key);
    if (r || PyErr_Occurred()) {
        Py_DECREF(key);
        if (r) {
            im->shape_pos[slot] = spos;
            im->shape_res[slot] = r;
        }
        return r;
    }
    /* A shape holds ints and strs (R32): an object inside one, which a
     * hostile image may make lead back to the object, is corrupt. */
    if (im->in_shape) {
        Py_DECREF(key);
        return PyErr_Format(st->CorruptImageError,
                            "corrupt image: an object inside an object's shape (R32, "
                            "at offset %llu)", (unsigned long long)spos);
    }
    im->in_shape = 1;
    PyObject *shape = decode(im, spos);
    im->in_shape = 0;
    if (!shape) {
        Py_DECREF(key);
        return NULL;
    }
    r = PyObject_CallFunctionObjArgs(st->obj_resolve, im->trust, shape, NULL);
    Py_DECREF(shape);
    if (r && (!PyTuple_CheckExact(r) || PyTuple_GET_SIZE(r) != 5 ||
              !PyLong_Check(PyTuple_GET_ITEM(r, 0)) ||
              !PyTuple_CheckExact(PyTuple_GET_ITEM(r, 2)) ||
              !PyLong_Check(PyTuple_GET_ITEM(r, 3)) ||
              !PyBytes_Check(PyTuple_GET_ITEM(r, 4)))) {
        Py_DECREF(r);
        r = NULL;
        PyErr_SetString(PyExc_RuntimeError, "resolve() gave a bad answer");
    }
    if (!r || PyDict_SetItem(im->shapes, key, r) < 0) {
        Py_DECREF(key);
        Py_XDECREF(r);
        return NULL;
    }
    Py_DECREF(key);
    Py_DECREF(r);
    im->shape_pos[slot] = spos;
    im->shape_res[slot] = r;
    return r; /* the dict holds it */
}

enum { K_ATTRS = 1, K_REDUCE = 2, K_CALL = 3, K_GLOBAL = 4, K_SETSTATE = 5, K_MAPPING = 6 };

typedef struct obj_reader obj_reader;
static PyObject *read_args(ImageObject *im, const obj_reader *rd, uint64_t obj,
                           uint64_t pos, uint64_t *next);

/* How the fields of an object are read: views (decode) or copies (thaw). */
struct obj_reader {
    PyObject *(*field)(void *ctx, uint64_t pos, uint64_t *next);
    int (*keep)(void *ctx, uint64_t pos, PyObject *o); /* before its fields */
    void *ctx;
};

/* The arguments of object `obj` (kinds 2 and 3): a tuple, read before the
 * object exists, so nothing in them may lead back to it (as R18 for
 * tuples): such an image is corrupt, not an endless recursion. */
static PyObject *
read_args(ImageObject *im, const obj_reader *rd, uint64_t obj, uint64_t pos, uint64_t *next)
{
    for (unsigned i = 0; i < im->nargs_of && i < 64; i++)
        if (im->args_of[i] == obj)
            return PyErr_Format(im->st->CorruptImageError,
                                "corrupt image: an object inside its own constructor "
                                "arguments (R32, at offset %llu)", (unsigned long long)obj);
    if (im->nargs_of < 64)
        im->args_of[im->nargs_of] = obj;
    im->nargs_of++;
    PyObject *a = rd->field(rd->ctx, pos, next);
    im->nargs_of--;
    if (a && !PyTuple_CheckExact(a)) {
        Py_DECREF(a);
        return PyErr_Format(im->st->CorruptImageError,
                            "corrupt image: object arguments are not a tuple (R32, at "
                            "offset %llu)", (unsigned long long)obj);
    }
    return a;
}

static PyObject *
obj_corrupt(ImageObject *im, const char *what, uint64_t pos)
{
    return PyErr_Format(im->st->CorruptImageError, "corrupt image: %s (at offset %llu)",
                        what, (unsigned long long)pos);
}

/* A part of an object's state: a dict is read into a real dict now, in
 * this decode (a class's __setstate__ expects one, and an instance without
 * weak reference support that its own state refers to is found again only
 * within one decode); anything else as a field. */
static PyObject *
state_part(ImageObject *im, const obj_reader *rd, uint64_t pos, uint64_t *next)
{
    pf_val sv;
    pf_error err;
    int rc = pf_read(im->img, pos, &sv, &err);
    if (rc < 0)
        return fail(im->st, &err, rc);
    if (sv.type != PF_DICT)
        return rd->field(rd->ctx, pos, next);
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    uint64_t cursor = 0, kp, vp;
    while ((rc = pf_record_next(im->img, &sv, &cursor, &kp, &vp, &err)) == 1) {
        PyObject *k = rd->field(rd->ctx, kp, NULL);
        PyObject *v = k ? rd->field(rd->ctx, vp, NULL) : NULL;
        int r = v ? PyDict_SetItem(d, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (r < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    if (rc < 0) {
        Py_DECREF(d);
        return fail(im->st, &err, rc);
    }
    *next = sv.next;
    return d;
}

/* An object's state (pickle's BUILD argument): a dict, or a short tuple
 * of parts ((dict or None, slots dict), partial's (func, args, kwds,
 * dict)...), each read with state_part; else a field. */
static PyObject *
read_state(ImageObject *im, const obj_reader *rd, uint64_t pos, uint64_t *next)
{
    pf_val sv;
    pf_error err;
    int rc = pf_read_ex(im->img, pos, PF_READ_SHALLOW, &sv, &err);
    if (rc < 0)
        return fail(im->st, &err, rc);
    if (sv.type != PF_TUPLE || sv.u.tup.count > 16 || sv.pos != pos)
        return state_part(im, rd, pos, next);
    const Py_ssize_t n = (Py_ssize_t)sv.u.tup.count;
    PyObject *t = PyTuple_New(n);
    if (!t)
        return NULL;
    uint64_t q = sv.u.tup.first;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = state_part(im, rd, q, &q);
        if (!x) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, x);
    }
    *next = q;
    return t;
}

/* Builds the object `v` (PF_OBJECT, R32): its shape is resolved (trust is
 * checked there), the instance made, kept (so that a cycle through its
 * fields comes back to it), then its fields read and set. *end: where the
 * object's encoding ends. */
static PyObject *
build_object(ImageObject *im, const pf_val *v, const obj_reader *rd, uint64_t *end)
{
    pf_state *st = im->st;
    pf_val sv;
    pf_error err;
    /* The shape: after the first object of a class, a REF (one step, its
     * end known); written here, walked to find where the fields start. */
    int rc = pf_read_ex(im->img, v->u.tup.first, PF_READ_SHALLOW, &sv, &err);
    if (rc == PF_OK && sv.type == PF_TUPLE && sv.next == 0)
        rc = pf_read(im->img, v->u.tup.first, &sv, &err);
    if (rc < 0)
        return fail(st, &err, rc);
    if (sv.type != PF_TUPLE)
        return obj_corrupt(im, "object shape is not a tuple (R32)", v->pos);
    PyObject *res = shape_get(im, sv.pos);
    if (!res)
        return NULL;
    const long kind = PyLong_AsLong(PyTuple_GET_ITEM(res, 0));
    PyObject *target = PyTuple_GET_ITEM(res, 1);
    PyObject *names = PyTuple_GET_ITEM(res, 2);
    const uint64_t nfields = v->u.tup.count - 1;
    uint64_t p = sv.next;
    PyObject *obj = NULL, *f = NULL, *g = NULL;
    if (Py_EnterRecursiveCall(" while reading an object"))
        return NULL;
    switch (kind) {
    case K_GLOBAL:
        if (nfields != 0)
            goto bad_fields;
        obj = Py_NewRef(target);
        break;
    case K_CALL:
        if (nfields != 1 && nfields != 2)
            goto bad_fields;
        if (!(f = read_args(im, rd, v->pos, p, &p)))
            goto error;
        /* bytearray is allowed without a list: only as the writer stores
         * it, from bytes or from nothing (an empty one); bytearray(n)
         * would allocate what an image asks */
        if (target == (PyObject *)&PyByteArray_Type && PyTuple_GET_SIZE(f) != 0 &&
            (PyTuple_GET_SIZE(f) != 1 || !PyBytes_CheckExact(PyTuple_GET_ITEM(f, 0)))) {
            obj_corrupt(im, "bytearray arguments are not one bytes value or none (R32)",
                        v->pos);
            goto error;
        }
        obj = PyObject_Call(target, f, NULL);
        if (!obj || rd->keep(rd->ctx, v->pos, obj) < 0)
            goto error;
        if (nfields == 2) { /* cls(*args), then its state */
            if (!(g = read_state(im, rd, p, &p)))
                goto error;
            if (g != Py_None) {
                PyObject *r = PyObject_CallFunctionObjArgs(st->obj_setstate, obj, g, NULL);
                if (!r)
                    goto error;
                Py_DECREF(r);
            }
        }
        break;
    case K_REDUCE: {
        if (nfields != 2)
            goto bad_fields;
        if (!(f = read_args(im, rd, v->pos, p, &p)))
            goto error;
        PyTypeObject *tp = (PyTypeObject *)target;
        if (!tp->tp_new) {
            PyErr_Format(PyExc_TypeError, "cannot create '%.100s' instances", tp->tp_name);
            goto error;
        }
        obj = tp->tp_new(tp, f, NULL); /* cls.__new__(cls, *args) */
        if (!obj || rd->keep(rd->ctx, v->pos, obj) < 0)
            goto error;
        if (!(g = read_state(im, rd, p, &p)))
            goto error;
        if (g != Py_None) {
            PyObject *r = PyObject_CallFunctionObjArgs(st->obj_setstate, obj, g, NULL);
            if (!r)
                goto error;
            Py_DECREF(r);
        }
        break;
    }
    case K_ATTRS:
    case K_SETSTATE: {
        const Py_ssize_t n = PyTuple_GET_SIZE(names);
        if (nfields != (uint64_t)n)
            goto bad_fields;
        const Py_ssize_t ndict = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 3));
        const char *direct = PyBytes_AS_STRING(PyTuple_GET_ITEM(res, 4));
        PyTypeObject *tp = (PyTypeObject *)target;
        if (!tp->tp_new) {
            PyErr_Format(PyExc_TypeError, "cannot create '%.100s' instances", tp->tp_name);
            goto error;
        }
        obj = tp->tp_new(tp, st->empty_tuple, NULL); /* cls.__new__(cls) */
        if (!obj || rd->keep(rd->ctx, v->pos, obj) < 0)
            goto error;
        PyObject *dict = NULL;
        if (kind == K_SETSTATE && (!(f = PyDict_New()) || !(g = PyDict_New())))
            goto error;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *name = PyTuple_GET_ITEM(names, i);
            PyObject *val = rd->field(rd->ctx, p, &p);
            if (!val)
                goto error;
            int r;
            if (kind == K_SETSTATE) {
                r = PyDict_SetItem(i < ndict ? f : g, name, val);
            } else if (i < ndict && direct[i]) {
                if (!dict && !(dict = PyObject_GenericGetDict(obj, NULL))) {
                    Py_DECREF(val);
                    goto error;
                }
                r = PyDict_SetItem(dict, name, val);
            } else {
                r = PyObject_GenericSetAttr(obj, name, val);
            }
            Py_DECREF(val);
            if (r < 0) {
                Py_XDECREF(dict);
                goto error;
            }
        }
        Py_XDECREF(dict);
        if (kind == K_SETSTATE) {
            PyObject *state = PyDict_GET_SIZE(g) ? PyTuple_Pack(2, PyDict_GET_SIZE(f) ? f : Py_None, g)
                                                 : Py_NewRef(f);
            PyObject *r = state ? PyObject_CallFunctionObjArgs(st->obj_setstate, obj, state, NULL)
                                : NULL;
            Py_XDECREF(state);
            if (!r)
                goto error;
            Py_DECREF(r);
        }
        break;
    }
    case K_MAPPING: {
        /* OrderedDict, defaultdict, Counter: fields (the dict, the default
         * factory). Read: a dict view that answers a missing key as
         * __missing__ would (without storing it); thawed: the class. */
        if (nfields != 2)
            goto bad_fields;
        const long mode = PyLong_AsLong(PyTuple_GET_ITEM(res, 3)); /* 0, 1 factory, 2 int */
        if (!(f = rd->field(rd->ctx, p, &p)) || !(g = rd->field(rd->ctx, p, &p)))
            goto error;
        PyObject *missing = mode == 1 && g != Py_None ? g
                          : mode == 2 ? (PyObject *)&PyLong_Type : NULL;
        if (IS_VIEW(f) && ((ViewObject *)f)->v.type == PF_DICT) {
            if (missing && !PyCallable_Check(missing)) {
                obj_corrupt(im, "default factory is not callable (R32)", v->pos);
                goto error;
            }
            Py_XSETREF(((ViewObject *)f)->missing, Py_XNewRef(missing));
            obj = Py_NewRef(f);
        } else if (PyDict_Check(f)) {
            obj = mode == 1 ? PyObject_CallFunctionObjArgs(target, g, f, NULL)
                            : PyObject_CallOneArg(target, f);
        } else {
            obj_corrupt(im, "mapping object without a dict (R32)", v->pos);
            goto error;
        }
        break;
    }
    default:
        obj_corrupt(im, "unknown object kind (R32)", v->pos);
        goto error;
    }
    Py_LeaveRecursiveCall();
    Py_XDECREF(f);
    Py_XDECREF(g);
    *end = p;
    return obj;
bad_fields:
    obj_corrupt(im, "object field count does not match its shape (R32)", v->pos);
error:
    Py_LeaveRecursiveCall();
    Py_XDECREF(obj);
    Py_XDECREF(f);
    Py_XDECREF(g);
    /* The class's own code refused what the image holds (its __new__,
     * __setstate__, constructor, an attribute): the class changed since
     * freezing, or the image is damaged. Said so, with the cause. */
    if (st->ObjectStateError && PyErr_Occurred() &&
        !PyErr_ExceptionMatches(st->Error) && !PyErr_ExceptionMatches(PyExc_MemoryError) &&
        !PyErr_ExceptionMatches(PyExc_RecursionError) &&
        !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        if (tb && ev)
            PyException_SetTraceback(ev, tb);
        PyObject *mod = PyObject_GetAttrString(target, "__module__");
        PyObject *qual = mod ? PyObject_GetAttrString(target, "__qualname__") : NULL;
        PyErr_Clear();
        PyErr_Format(st->ObjectStateError,
                     "cannot rebuild a %S.%S from the image (at offset %llu): %R; "
                     "did the class change since the image was frozen?",
                     mod ? mod : Py_None, qual ? qual : Py_None,
                     (unsigned long long)v->pos, ev ? ev : Py_None);
        Py_XDECREF(mod);
        Py_XDECREF(qual);
        PyObject *et2, *ev2, *tb2;
        PyErr_Fetch(&et2, &ev2, &tb2);
        PyErr_NormalizeException(&et2, &ev2, &tb2);
        if (ev2 && ev)
            PyException_SetCause(ev2, Py_NewRef(ev));
        PyErr_Restore(et2, ev2, tb2);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
    }
    return NULL;
}

static PyObject *
decode_pickle(ImageObject *im, const pf_val *v)
{
    if (v->u.s.len > (uint64_t)PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    PyObject *b = PyBytes_FromStringAndSize((const char *)v->u.s.data,
                                            (Py_ssize_t)v->u.s.len);
    if (!b)
        return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(im->st->obj_unpickle, im->trust, b, NULL);
    Py_DECREF(b);
    return r;
}

/* A numpy array over the image's bytes (R34): no copy. */
static PyObject *
build_array(ImageObject *im, const pf_val *v, const obj_reader *rd, uint64_t *end)
{
    uint64_t p = v->u.arr.first;
    pf_val hv;
    pf_error err;
    int rc = pf_read_ex(im->img, p, PF_READ_SHALLOW, &hv, &err);
    if (rc < 0)
        return fail(im->st, &err, rc);
    if (hv.type != PF_TUPLE) /* also: no REF back to the array itself */
        return obj_corrupt(im, "array header is not a tuple (R34)", v->pos);
    if (Py_EnterRecursiveCall(" while reading an array"))
        return NULL;
    PyObject *hdr = rd->field(rd->ctx, p, &p);
    Py_LeaveRecursiveCall();
    if (!hdr)
        return NULL;
    PyObject *r = PyObject_CallFunction(im->st->obj_array, "OOKK", (PyObject *)im, hdr,
                                        (unsigned long long)(v->u.arr.data - im->base),
                                        (unsigned long long)v->u.arr.nbytes);
    Py_DECREF(hdr);
    *end = p;
    return r;
}

static PyObject *
dec_field(void *ctx, uint64_t pos, uint64_t *next)
{
    return decode_at((dec_ctx *)ctx, pos, next);
}

static int
dec_keep(void *ctx, uint64_t pos, PyObject *o)
{
    dec_ctx *cx = (dec_ctx *)ctx;
    if (PyType_SUPPORTS_WEAKREFS(Py_TYPE(o)) && cx->on < 32) {
        cx->opos[cx->on] = pos;
        cx->oobj[cx->on] = o;
        cx->on++;
        return 0;
    }
    /* no weak reference (or built 32 deep): remembered for this decode
     * only (cycles) */
    if (!cx->memo && !(cx->memo = PyDict_New()))
        return -1;
    PyObject *k = PyLong_FromUnsignedLongLong(pos);
    if (!k)
        return -1;
    int r = PyDict_SetItem(cx->memo, k, o);
    Py_DECREF(k);
    return r;
}

/* decode_val of an object, a pickle or an array; sets cx->tuple_end. */
static PyObject *
decode_ext(dec_ctx *cx, const pf_val *v, int via_ref)
{
    const int want_end = cx->want_end && !via_ref;
    ImageObject *im = cx->im;
    obj_reader rd = {dec_field, dec_keep, cx};
    uint64_t end = v->end;
    if (v->type == PF_PICKLE) {
        cx->tuple_end = v->end;
        return decode_pickle(im, v);
    }
    /* Objects are built eagerly, each inside the one that holds it: the
     * nesting is bounded here, the same on every Python (whose own count
     * of C recursion differs by version, and whose stack it must not
     * overflow). */
    if (cx->odepth >= PF_MAX_OBJECT_DEPTH) {
        PyErr_Format(PyExc_RecursionError, "objects in an image nested deeper than %d "
                     "while reading them (each is built inside the one that holds it)",
                     PF_MAX_OBJECT_DEPTH);
        return NULL;
    }
    if (v->type == PF_ARRAY) {
        cx->odepth++;
        PyObject *r = build_array(im, v, &rd, &end);
        cx->odepth--;
        cx->tuple_end = end;
        return r;
    }
    PyObject *o = NULL;
    for (unsigned i = cx->on; i-- > 0;)
        if (cx->opos[i] == v->pos) {
            o = Py_NewRef(cx->oobj[i]);
            break;
        }
    if (!o)
        o = ocache_get(im, v->pos);
    if (!o && cx->memo) {
        PyObject *k = PyLong_FromUnsignedLongLong(v->pos);
        if (!k)
            return NULL;
        o = PyDict_GetItemWithError(cx->memo, k);
        Py_DECREF(k);
        if (!o && PyErr_Occurred())
            return NULL;
        Py_XINCREF(o);
    }
    if (o) {
        /* Fields not walked this time: find the end, for a caller that
         * needs it (an object written inside a tuple or an object). */
        cx->tuple_end = 0;
        if (!want_end)
            return o;
        pf_val full;
        pf_error err;
        int rc = pf_read(im->img, v->pos, &full, &err);
        if (rc < 0) {
            Py_DECREF(o);
            return fail(im->st, &err, rc);
        }
        cx->tuple_end = full.end;
        return o;
    }
    const unsigned on = cx->on;
    cx->odepth++;
    o = build_object(im, v, &rd, &end);
    cx->odepth--;
    cx->on = on; /* built (or failed): out of the stack ... */
    /* ... and, complete, into the image's table (weak) */
    if (o && PyType_SUPPORTS_WEAKREFS(Py_TYPE(o)) && ocache_put(im, v->pos, o) < 0)
        Py_CLEAR(o);
    cx->tuple_end = end;
    return o;
}

/* A stored dict key or set item must be hashable (R21): a damaged image
 * may hold a list there, which is corruption, not the reader's TypeError. */
static int
check_key(ImageObject *im, PyObject *k)
{
    if (IS_VIEW(k)) {
        if (((ViewObject *)k)->v.type == PF_FROZENSET)
            return 0;
        PyErr_Format(im->st->CorruptImageError,
                     "corrupt image: a dict key or set item is a %s (R21)",
                     Py_TYPE(k)->tp_name);
        return -1;
    }
    if (PyTuple_CheckExact(k)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(k); i++)
            if (check_key(im, PyTuple_GET_ITEM(k, i)) < 0)
                return -1;
    }
    return 0;
}

/* decode() of a dict key or set item. */
static PyObject *
decode_key(ImageObject *im, uint64_t pos)
{
    PyObject *k = decode(im, pos);
    if (k && check_key(im, k) < 0)
        Py_CLEAR(k);
    return k;
}

static PyObject *
decode(ImageObject *im, uint64_t pos)
{
    dec_ctx cx;
    cx.im = im;
    cx.depth = 0;
    cx.memo = NULL;
    cx.on = 0;
    cx.odepth = 0;
    cx.want_end = 1;
    PyObject *r = decode_at(&cx, pos, NULL);
    Py_XDECREF(cx.memo);
    return r;
}

/* ------------------------------------------------------------ key hashing */

/* Trims a two's complement LE byte string to its minimal length. */
static size_t
trim_le(const uint8_t *b, size_t n)
{
    while (n > 1) {
        uint8_t top = b[n - 1], below = b[n - 2];
        if ((top == 0x00 && !(below & 0x80)) || (top == 0xFF && (below & 0x80)))
            n--;
        else
            break;
    }
    return n;
}

/* Returns a new bytes object: the two's complement LE bytes of an int
 * (possibly one byte longer than minimal). */
static PyObject *
long_to_le(PyObject *v)
{
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t n = PyLong_AsNativeBytes(v, NULL, 0, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
    if (n < 0)
        return NULL;
    if (n == 0)
        n = 1;
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (!b)
        return NULL;
    if (PyLong_AsNativeBytes(v, PyBytes_AS_STRING(b), n,
                             Py_ASNATIVEBYTES_LITTLE_ENDIAN) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
#else
    /* int.to_bytes(bit_length // 8 + 1, "little", signed=True) */
    PyObject *bl = PyObject_CallMethod(v, "bit_length", NULL);
    if (!bl)
        return NULL;
    Py_ssize_t bits = PyLong_AsSsize_t(bl);
    Py_DECREF(bl);
    if (bits < 0)
        return NULL;
    PyObject *meth = PyObject_GetAttrString(v, "to_bytes");
    if (!meth)
        return NULL;
    PyObject *args = Py_BuildValue("(ns)", (Py_ssize_t)(bits / 8 + 1), "little");
    PyObject *kw = args ? Py_BuildValue("{s:O}", "signed", Py_True) : NULL;
    PyObject *r = kw ? PyObject_Call(meth, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_DECREF(meth);
    return r;
#endif
}

static int
key_hash(ImageObject *im, PyObject *key, uint64_t *h);

/* Hash of an int key (any size). */
static int
long_hash(uint64_t seed, PyObject *key, uint64_t *h)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        *h = pf_hash_i64(seed, (int64_t)x);
        return 0;
    }
    PyObject *b = long_to_le(key);
    if (!b)
        return -1;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(b);
    size_t n = trim_le(p, (size_t)PyBytes_GET_SIZE(b));
    *h = pf_hash_bigint(seed, p, n);
    Py_DECREF(b);
    return 0;
}

/* Hash of the items of an iterable, combined as a tuple or a frozenset. */
static int
seq_hash(ImageObject *im, PyObject *it_src, int frozen, uint64_t *h)
{
    uint64_t small[16];
    uint64_t *hs = small;
    Py_ssize_t cap = 16, n = 0;
    PyObject *it = PyObject_GetIter(it_src);
    if (!it)
        return -1;
    PyObject *item;
    int rc = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        if (n == cap) {
            uint64_t *nh = PyMem_Malloc(sizeof(uint64_t) * (size_t)cap * 2);
            if (!nh) {
                Py_DECREF(item);
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            memcpy(nh, hs, sizeof(uint64_t) * (size_t)n);
            if (hs != small)
                PyMem_Free(hs);
            hs = nh;
            cap *= 2;
        }
        int r = key_hash(im, item, &hs[n]);
        Py_DECREF(item);
        if (r != 0) {
            rc = r;
            break;
        }
        n++;
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred())
        rc = -1;
    if (rc == 0)
        *h = frozen ? pf_hash_frozenset_of(im->seed, hs, (size_t)n)
                    : pf_hash_tuple_of(im->seed, hs, (size_t)n);
    if (hs != small)
        PyMem_Free(hs);
    return rc;
}

/* The stable hash of a Python key (FORMAT section 5). Returns 0 and sets *h,
 * 1 when no stored key can equal it (a hashable type never stored), -1 with
 * an exception (TypeError for an unhashable key, as dict raises). */
static int
key_hash(ImageObject *im, PyObject *key, uint64_t *h)
{
    uint64_t seed = im->seed;
    PyTypeObject *tp = Py_TYPE(key);
    if (PyUnicode_Check(key)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(key) < 0)
            return -1;
#endif
        *h = pf_hash_str(seed, PyUnicode_DATA(key), (size_t)PyUnicode_GET_LENGTH(key),
                         PyUnicode_KIND(key));
        return 0;
    }
    if (PyLong_Check(key))
        return long_hash(seed, key, h);
    if (PyFloat_Check(key)) {
        *h = pf_hash_double(seed, PyFloat_AS_DOUBLE(key));
        return 0;
    }
    if (PyBytes_Check(key)) {
        *h = pf_hash_bytesval(seed, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key));
        return 0;
    }
    if (key == Py_None) {
        *h = pf_hash_none(seed);
        return 0;
    }
    if (PyTuple_Check(key))
        return seq_hash(im, key, 0, h);
    if (PyFrozenSet_Check(key) || tp == im->st->FrozenSetView_Type)
        return seq_hash(im, key, 1, h);
    if (PyComplex_Check(key)) {
        Py_complex c = PyComplex_AsCComplex(key);
        *h = pf_hash_complex(seed, c.real, c.imag);
        return 0;
    }
    /* Any other type: unhashable raises as dict does; a type with a key
     * rule (Decimal, datetime, enum members...: _objects.key_proxy) is
     * looked up by the hash of its proxy (R35); other numbers that equal an
     * int or a float (numpy scalars) by that value. The match then
     * compares with Python's ==. */
    if (PyObject_Hash(key) == -1)
        return -1;
    if (im->st->obj_key_proxy) {
        PyObject *kp = PyObject_CallOneArg(im->st->obj_key_proxy, key);
        if (!kp)
            return -1;
        int r = 1;
        if (PyTuple_CheckExact(kp) && PyTuple_GET_SIZE(kp) == 2) {
            if (Py_EnterRecursiveCall(" while hashing a key"))
                r = -1;
            else {
                r = key_hash(im, PyTuple_GET_ITEM(kp, 1), h);
                Py_LeaveRecursiveCall();
            }
        }
        Py_DECREF(kp);
        if (r <= 0)
            return r;
    }
    if (PyIndex_Check(key)) {
        PyObject *i = PyNumber_Index(key);
        if (!i)
            return -1;
        int r = long_hash(seed, i, h);
        Py_DECREF(i);
        return r;
    }
    if (tp->tp_as_number && tp->tp_as_number->nb_float) {
        PyObject *f = PyNumber_Float(key);
        if (!f) {
            PyErr_Clear();
            return 1;
        }
        int eq = PyObject_RichCompareBool(f, key, Py_EQ);
        double d = PyFloat_AS_DOUBLE(f);
        Py_DECREF(f);
        if (eq < 0) {
            PyErr_Clear();
            return 1;
        }
        if (!eq)
            return 1;
        *h = pf_hash_double(seed, d);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ key matching */

typedef struct {
    ImageObject *im;
    PyObject *key;
    uint64_t h;     /* its stable hash, if hknown */
    int hknown;     /* 0 for a str key looked up by pf_find_str */
} match_ctx;

static int key_equal(match_ctx *mc, const pf_val *vp, uint64_t key_pos);

/* The match of view_lookup: pf_find's for a key that is not an exact str,
 * pf_find_str's for a keyed candidate (R35; a str key's other candidates
 * are compared in the core). The stored key is decoded and compared by
 * key_equal. */
static int
key_match(void *ctxp, const pf_image *img, uint64_t key_pos, uint64_t *key_end)
{
    match_ctx *mc = (match_ctx *)ctxp;
    pf_val v;
    pf_error err;
    int rc = pf_read(img, key_pos, &v, &err);
    if (rc < 0) {
        raise_pf(mc->im->st, &err, rc);
        return PF_PYERR;
    }
    int eq = key_equal(mc, &v, key_pos);
    if (eq == 1)
        *key_end = v.next;
    return eq;
}

static int
key_equal(match_ctx *mc, const pf_val *vp, uint64_t key_pos)
{
    PyObject *key = mc->key;
    pf_val v = *vp;
    if (v.type == PF_KEYED && (PyUnicode_CheckExact(key) || PyBytes_CheckExact(key) ||
                               PyLong_CheckExact(key))) {
        /* R35: a plain str, bytes or int equals a keyed value only if the
         * value equals its proxy and the proxy equals it. */
        if (!(v.u.key.flags & PF_KEYED_EQ))
            return 0;
        pf_error err;
        int rc = pf_read(mc->im->img, v.u.key.first, &v, &err);
        if (rc < 0) {
            raise_pf(mc->im->st, &err, rc);
            return PF_PYERR;
        }
        key_pos = v.pos;
    }
    if (PyUnicode_CheckExact(key)) {
        if (v.type != PF_STR)
            return 0;
        Py_ssize_t n = PyUnicode_GET_LENGTH(key);
        int kind = PyUnicode_KIND(key);
        return v.u.s.len == (uint64_t)n && v.u.s.width == kind &&
               memcmp(v.u.s.data, PyUnicode_DATA(key), (size_t)n * (size_t)kind) == 0;
    }
    if (PyBytes_CheckExact(key)) {
        Py_ssize_t n = PyBytes_GET_SIZE(key);
        return v.type == PF_BYTES && v.u.s.len == (uint64_t)n &&
               memcmp(v.u.s.data, PyBytes_AS_STRING(key), (size_t)n) == 0;
    }
    if (PyLong_CheckExact(key) && v.type == PF_INT) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(key, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred()))
            return (int64_t)x == v.u.i;
        PyErr_Clear();
        return 0;
    }
    /* Every other pair: build the stored key and use Python's ==. */
    if (v.type == PF_STR || v.type == PF_BYTES) {
        if (!(PyUnicode_Check(key) || PyBytes_Check(key)))
            return 0;
    }
    if (v.type == PF_KEYED) {
        /* Equal keys hash alike: a keyed key of another hash is not built
         * (a scan of a small container without slots meets every key, and
         * building one may need a class the reader did not allow). */
        uint64_t sh;
        pf_error err;
        if (!mc->hknown) {
            int r = key_hash(mc->im, mc->key, &mc->h);
            if (r != 0)
                return r < 0 ? PF_PYERR : 0;
            mc->hknown = 1;
        }
        int rc = pf_hash_at(mc->im->img, v.pos, &sh, &err);
        if (rc < 0) {
            raise_pf(mc->im->st, &err, rc);
            return PF_PYERR;
        }
        if (sh != mc->h)
            return 0;
    }
    dec_ctx cx;
    cx.im = mc->im;
    cx.depth = 0;
    cx.memo = NULL;
    cx.on = 0;
    cx.odepth = 0;
    cx.want_end = 1;
    PyObject *stored = decode_val(&cx, &v, v.pos != key_pos);
    Py_XDECREF(cx.memo);
    if (!stored)
        return PF_PYERR;
    int eq = PyObject_RichCompareBool(stored, key, Py_EQ);
    Py_DECREF(stored);
    if (eq < 0)
        return PF_PYERR;
    return eq;
}

/* Looks `key` up in a dict/set view. Returns 1 found, 0 absent, -1 error. */
static int
view_lookup(ViewObject *self, PyObject *key, uint64_t *key_pos, uint64_t *val_pos)
{
    ImageObject *im = self->image;
    pf_error err;
    uint64_t kp = 0, vp = 0;
    int rc;
    if (PyUnicode_CheckExact(key)) {
        /* the common key: hashed and compared in the core, in place */
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(key) < 0)
            return -1;
#endif
        match_ctx mc = {im, key, 0, 0};
        rc = pf_find_str(im->img, &self->v, PyUnicode_DATA(key),
                         (size_t)PyUnicode_GET_LENGTH(key), PyUnicode_KIND(key),
                         key_match, &mc, &kp, &vp, &err);
    } else {
        uint64_t h;
        int r = key_hash(im, key, &h);
        if (r < 0)
            return -1;
        if (r > 0)
            return 0;
        match_ctx mc = {im, key, h, 1};
        rc = pf_find(im->img, &self->v, h, key_match, &mc, &kp, &vp, &err);
    }
    if (rc < 0) {
        fail(im->st, &err, rc);
        return -1;
    }
    if (key_pos)
        *key_pos = kp;
    if (val_pos)
        *val_pos = vp;
    return rc;
}

/* ------------------------------------------------------------ Image */

static ImageObject *
image_alloc(pf_state *st, PyObject *module)
{
    ImageObject *im = PyObject_GC_New(ImageObject, st->Image_Type);
    if (!im)
        return NULL;
    im->st = st;
    im->module = Py_NewRef(module);
    im->img = NULL;
    im->seed = 0;
    im->path = Py_NewRef(Py_None);
    im->shm_name = NULL;
    im->owner_pid = 0;
    im->unlinked = 0;
    im->copied = 0;
    im->root_tuple = NULL;
    im->bufobj = NULL;
    memset(&im->buf, 0, sizeof(im->buf));
    im->has_buf = 0;
    im->scache = NULL;
    im->smask = 0;
    im->closed = 0;
    im->nviews = 0;
    im->weakreflist = NULL;
    im->trust = Py_NewRef(st->no_trust ? st->no_trust : Py_None);
    im->shapes = NULL;
    im->ocache = NULL;
    im->ocap = im->oused = 0;
    im->in_shape = 0;
    im->nargs_of = 0;
    im->vc_looks = im->vc_hits = im->vc_skip = 0;
    memset(im->shape_res, 0, sizeof im->shape_res);
    PyObject_GC_Track(im);
    return im;
}

static void
image_set(ImageObject *im, pf_image *img)
{
    im->img = img;
    im->base = pf_image_base(img);
    im->dstart = pf_image_data_start(img);
    im->dend = pf_image_data_end(img);
    im->vtab = pf_image_values(img, &im->vcount);
    im->seed = pf_image_hash_seed(img);
}

static void
sref_cache_clear(ImageObject *im)
{
    struct sref_slot *c = im->scache;
    if (!c)
        return;
    const uint64_t n = im->smask + 1;
    im->scache = NULL;
    im->smask = 0;
    for (uint64_t i = 0; i < n; i++)
        Py_XDECREF(c[i].s);
    PyMem_Free(c);
}

static void
ocache_clear(ImageObject *im)
{
    struct obj_slot *c = im->ocache;
    size_t n = im->ocap;
    im->ocache = NULL;
    im->ocap = im->oused = 0;
    for (size_t i = 0; i < n; i++)
        Py_XDECREF(c[i].ref);
    PyMem_Free(c);
}

static void
image_release(ImageObject *im)
{
    vcache_drop(im->st, im);
    sref_cache_clear(im);
    ocache_clear(im);
    Py_CLEAR(im->shapes);
    memset(im->shape_res, 0, sizeof im->shape_res); /* borrowed from it */
    if (im->img) {
        pf_image_close(im->img);
        im->img = NULL;
    }
    if (im->has_buf) {
        PyBuffer_Release(&im->buf);
        im->has_buf = 0;
    }
    Py_CLEAR(im->bufobj);
}

static int
image_check_open(ImageObject *im)
{
    if (im->closed || !im->img) {
        PyErr_SetString(im->st->ClosedImageError, "the image is closed");
        return -1;
    }
    return 0;
}

/* Opens the image file at `path` (str or PathLike): mapped, or with copy
 * read into private memory. */
static ImageObject *
image_open_path(pf_state *st, PyObject *module, PyObject *path, int copy)
{
    PyObject *fs = NULL, *abs = NULL;
    if (!PyUnicode_FSDecoder(path, &fs))
        return NULL;
    abs = PyObject_CallOneArg(st->abspath, fs);
    Py_DECREF(fs);
    if (!abs)
        return NULL;
    PyObject *enc = PyUnicode_EncodeFSDefault(abs);
    if (!enc) {
        Py_DECREF(abs);
        return NULL;
    }
    ImageObject *im = image_alloc(st, module);
    if (!im) {
        Py_DECREF(enc);
        Py_DECREF(abs);
        return NULL;
    }
    Py_SETREF(im->path, abs);
    pf_error err;
    pf_image *img = NULL;
    int rc;
    const char *cpath = PyBytes_AS_STRING(enc);
    Py_BEGIN_ALLOW_THREADS
    rc = pf_image_open_file_ex(cpath, copy ? PF_OPEN_COPY : 0, &img, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        if (rc == PF_EIO) {
            raise_os_path(&err, im->path);
        } else {
            raise_pf(st, &err, rc);
        }
        Py_DECREF(enc);
        Py_DECREF(im);
        return NULL;
    }
    Py_DECREF(enc);
    image_set(im, img);
    im->copied = copy;
    return im;
}

static ImageObject *
image_open_buffer(pf_state *st, PyObject *module, PyObject *obj)
{
    ImageObject *im = image_alloc(st, module);
    if (!im)
        return NULL;
    if (PyObject_GetBuffer(obj, &im->buf, PyBUF_SIMPLE) < 0) {
        Py_DECREF(im);
        return NULL;
    }
    im->has_buf = 1;
    im->bufobj = Py_NewRef(obj);
    pf_error err;
    pf_image *img = NULL;
    int rc = pf_image_open_buffer(im->buf.buf, (uint64_t)im->buf.len, &img, &err);
    if (rc < 0) {
        raise_pf(st, &err, rc);
        Py_DECREF(im);
        return NULL;
    }
    image_set(im, img);
    return im;
}

static PyObject *
Image_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "copy", NULL};
    PyObject *path;
    int copy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$p:Image", kwlist, &path, &copy))
        return NULL;
    pf_state *st = PyType_GetModuleState(type);
    PyObject *module = PyType_GetModule(type);
    if (!st || !module)
        return NULL;
    return (PyObject *)image_open_path(st, module, path, copy);
}

static PyObject *
Image_from_buffer(PyObject *cls, PyObject *buf)
{
    pf_state *st = PyType_GetModuleState((PyTypeObject *)cls);
    PyObject *module = PyType_GetModule((PyTypeObject *)cls);
    if (!st || !module)
        return NULL;
    return (PyObject *)image_open_buffer(st, module, buf);
}

static int
Image_traverse(ImageObject *im, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(im));
    Py_VISIT(im->module);
    Py_VISIT(im->path);
    Py_VISIT(im->shm_name);
    Py_VISIT(im->root_tuple);
    Py_VISIT(im->bufobj);
    Py_VISIT(im->trust);
    Py_VISIT(im->shapes);
    return 0;
}

static int
Image_clear(ImageObject *im)
{
    /* The buffer exporter is released with the mapping, never before. */
    Py_CLEAR(im->path);
    Py_CLEAR(im->root_tuple);
    Py_CLEAR(im->shapes);
    memset(im->shape_res, 0, sizeof im->shape_res); /* borrowed from it */
    return 0;
}

static void
Image_dealloc(ImageObject *im)
{
    PyTypeObject *tp = Py_TYPE(im);
    PyObject_GC_UnTrack(im);
    if (im->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)im);
    shm_remove_name(im);
    image_release(im);
    Py_CLEAR(im->shm_name);
    Py_CLEAR(im->path);
    Py_CLEAR(im->root_tuple);
    Py_CLEAR(im->trust);
    Py_CLEAR(im->module);
    tp->tp_free((PyObject *)im);
    Py_DECREF(tp);
}

static PyObject *
Image_get_root(ImageObject *im, void *c)
{
    (void)c;
    if (image_check_open(im) < 0)
        return NULL;
    if (im->root_tuple)
        return Py_NewRef(im->root_tuple);
    PyObject *r = decode(im, pf_image_root(im->img));
    /* A tuple root is kept: the same object every time, and thaw() of it
     * can then find where it lies (a cycle may lead back to it). */
    if (r && PyTuple_CheckExact(r))
        im->root_tuple = Py_NewRef(r);
    return r;
}

static PyObject *
Image_get_id(ImageObject *im, void *c)
{
    (void)c;
    if (!im->img)
        return PyErr_Format(im->st->ClosedImageError, "the image is closed");
    uint8_t id[16];
    pf_image_id(im->img, id);
    return PyBytes_FromStringAndSize((const char *)id, 16);
}

static PyObject *
Image_get_size(ImageObject *im, void *c)
{
    (void)c;
    if (!im->img)
        return PyErr_Format(im->st->ClosedImageError, "the image is closed");
    return PyLong_FromUnsignedLongLong(pf_image_size(im->img));
}

static PyObject *
Image_get_path(ImageObject *im, void *c)
{
    (void)c;
    return Py_NewRef(im->path ? im->path : Py_None);
}

static PyObject *
Image_get_copied(ImageObject *im, void *c)
{
    (void)c;
    return PyBool_FromLong(im->copied);
}

static PyObject *
Image_get_closed(ImageObject *im, void *c)
{
    (void)c;
    return PyBool_FromLong(im->closed || !im->img);
}

/* The owner of a shared-memory segment removes its name: on close(), on
 * leaving a `with` block, when the Image dies, and at exit (the Python
 * layer closes what it owns). Only the process that made it: a child
 * forked from the owner inherits the Image, never the ownership. Mappings
 * made before stay readable; later attaches raise ImageGoneError. Keeps
 * any exception that is set. */
static void
shm_remove_name(ImageObject *im)
{
    if (!im->shm_name || im->unlinked || im->owner_pid == 0 ||
        im->owner_pid != pf_process_id())
        return;
    im->unlinked = 1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    const char *name = PyUnicode_AsUTF8(im->shm_name);
    pf_error err;
    if (name)
        (void)pf_shm_unlink(name, &err); /* gone already: nothing to do */
    else
        PyErr_Clear();
    if (im->st && im->st->shm_hook) {
        PyObject *r = PyObject_CallOneArg(im->st->shm_hook, im->shm_name);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable(im->st->shm_hook);
    }
    PyErr_Restore(et, ev, tb);
}

static PyObject *
Image_close(ImageObject *im, PyObject *unused)
{
    (void)unused;
    shm_remove_name(im);
    im->closed = 1;
    /* Live views keep reading; the mapping goes with the last of them. */
    if (im->nviews == 0)
        image_release(im);
    Py_RETURN_NONE;
}

static PyObject *
Image_enter(ImageObject *im, PyObject *unused)
{
    (void)unused;
    if (image_check_open(im) < 0)
        return NULL;
    return Py_NewRef(im);
}

static PyObject *
Image_exit(ImageObject *im, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return Image_close(im, NULL);
}

static PyObject *
Image_reduce_ex(ImageObject *im, PyObject *proto_obj)
{
    pf_state *st = im->st;
    long proto = PyLong_AsLong(proto_obj);
    if (proto == -1 && PyErr_Occurred())
        return NULL;
    if (!im->img)
        return PyErr_Format(st->ClosedImageError, "the image is closed");
    /* A segment or a file: by reference, (name or path, image id). */
    if (im->shm_name || im->path != Py_None) {
        PyObject *id = Image_get_id(im, NULL);
        if (!id)
            return NULL;
        /* The trust it was opened with travels too (only when it allows
         * something, so that plain images pickle as before). */
        const int trusted = im->trust && im->trust != st->no_trust &&
                            PyTuple_CheckExact(im->trust);
        PyObject *r = im->shm_name
            ? (trusted ? Py_BuildValue("O(OOO)", st->attach_shm, im->shm_name, id, im->trust)
                       : Py_BuildValue("O(OO)", st->attach_shm, im->shm_name, id))
            : trusted ? Py_BuildValue("O(OOOO)", st->attach, im->path, id,
                                      im->copied ? Py_True : Py_False, im->trust)
            : im->copied ? Py_BuildValue("O(OOO)", st->attach, im->path, id, Py_True)
            : Py_BuildValue("O(OO)", st->attach, im->path, id);
        Py_DECREF(id);
        return r;
    }
    if (im->trust && im->trust != st->no_trust && PyTuple_CheckExact(im->trust)) {
        PyObject *mv = PyMemoryView_FromObject((PyObject *)im);
        PyObject *b = !mv ? NULL : proto < 5 ? PyBytes_FromObject(mv) : PyPickleBuffer_FromObject(mv);
        Py_XDECREF(mv);
        if (!b)
            return NULL;
        PyObject *fb = PyObject_GetAttrString(im->module, "_from_buffer");
        if (!fb) {
            Py_DECREF(b);
            return NULL;
        }
        return Py_BuildValue("N(NO)", fb, b, im->trust);
    }
    /* An image in a caller's buffer: its bytes travel (out of band with
     * protocol 5, as a PickleBuffer over them; a bytes copy before). */
    if (proto < 5) {
        uint64_t n = pf_image_size(im->img);
        if (n > (uint64_t)PY_SSIZE_T_MAX)
            return PyErr_NoMemory();
        return Py_BuildValue("O(N)", st->from_buffer,
                             PyBytes_FromStringAndSize((const char *)pf_image_base(im->img),
                                                       (Py_ssize_t)n));
    }
    PyObject *mv = PyMemoryView_FromObject((PyObject *)im);
    if (!mv)
        return NULL;
    PyObject *pb = PyPickleBuffer_FromObject(mv);
    Py_DECREF(mv);
    if (!pb)
        return NULL;
    PyObject *r = Py_BuildValue("O(N)", st->from_buffer, pb);
    return r;
}

/* Image exports its bytes (read-only) for pickling by value. */
static int
Image_getbuffer(ImageObject *im, Py_buffer *view, int flags)
{
    if (!im->img) {
        PyErr_SetString(im->st->ClosedImageError, "the image is closed");
        view->obj = NULL;
        return -1;
    }
    if (pf_image_size(im->img) > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        view->obj = NULL;
        return -1;
    }
    int r = PyBuffer_FillInfo(view, (PyObject *)im, (void *)pf_image_base(im->img),
                              (Py_ssize_t)pf_image_size(im->img), 1, flags);
    if (r == 0)
        im->nviews++;
    return r;
}

static void
Image_releasebuffer(ImageObject *im, Py_buffer *view)
{
    (void)view;
    if (--im->nviews == 0 && im->closed)
        image_release(im);
}

/* Image.verify(): the full check (pf_image_verify) with the GIL released;
 * the image counts as in use meanwhile, so a close() from another thread
 * defers the unmap. Returns the counts as a dict. */
static PyObject *
Image_verify(ImageObject *im, PyObject *unused)
{
    (void)unused;
    if (image_check_open(im) < 0)
        return NULL;
    pf_verify_stats vs;
    pf_error err;
    int rc;
    im->nviews++;
    Py_BEGIN_ALLOW_THREADS
    rc = pf_image_verify(im->img, &vs, &err);
    Py_END_ALLOW_THREADS
    if (--im->nviews == 0 && im->closed)
        image_release(im);
    if (rc < 0)
        return raise_pf(im->st, &err, rc);
    return Py_BuildValue("{sKsKsKsK}", "values", (unsigned long long)vs.values,
                         "containers", (unsigned long long)vs.containers,
                         "keys", (unsigned long long)vs.keys,
                         "checksums", (unsigned long long)vs.checksums);
}

static PyObject *
Image_repr(ImageObject *im)
{
    if (!im->img)
        return PyUnicode_FromFormat("<permafrost.Image closed>");
    if (im->path != Py_None)
        return PyUnicode_FromFormat("<permafrost.Image %R, %llu bytes>", im->path,
                                    (unsigned long long)pf_image_size(im->img));
    return PyUnicode_FromFormat("<permafrost.Image in memory, %llu bytes>",
                                (unsigned long long)pf_image_size(im->img));
}

static PyObject *
Image_get_shared_name(ImageObject *im, void *c)
{
    (void)c;
    return Py_NewRef(im->shm_name ? im->shm_name : Py_None);
}

static PyObject *
Image_get_owner(ImageObject *im, void *c)
{
    (void)c;
    return PyBool_FromLong(im->shm_name && im->owner_pid != 0 &&
                           im->owner_pid == pf_process_id());
}

static PyMethodDef Image_methods[] = {
    {"from_buffer", (PyCFunction)Image_from_buffer, METH_O | METH_CLASS,
     "Image.from_buffer(buf): the image held in any buffer (no copy; the\n"
     "buffer is kept alive and must not change)."},
    {"close", (PyCFunction)Image_close, METH_NOARGS,
     "Close the image. Views alive keep it mapped until the last one dies;\n"
     "no new view can be made from a closed image."},
    {"verify", (PyCFunction)Image_verify, METH_NOARGS,
     "Check the whole image, O(image size): section checksums, every value,\n"
     "every key found again from its hash slot, no equal keys. Raises\n"
     "CorruptImageError at the first fault; returns counts of what it checked."},
    {"__enter__", (PyCFunction)Image_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Image_exit, METH_FASTCALL, NULL},
    {"__reduce_ex__", (PyCFunction)Image_reduce_ex, METH_O, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Image_getset[] = {
    {"root", (getter)Image_get_root, NULL, "The root value: a view for a container.", NULL},
    {"id", (getter)Image_get_id, NULL, "The image's random 128-bit id (16 bytes).", NULL},
    {"size", (getter)Image_get_size, NULL, "The image's size in bytes.", NULL},
    {"path", (getter)Image_get_path, NULL, "Absolute path of the file, or None.", NULL},
    {"copied", (getter)Image_get_copied, NULL,
     "True if the file was read into private memory (open(path, copy=True)).", NULL},
    {"closed", (getter)Image_get_closed, NULL, "True once close() was called.", NULL},
    {"shared_name", (getter)Image_get_shared_name, NULL,
     "The shared-memory segment's name (share()), or None.", NULL},
    {"owner", (getter)Image_get_owner, NULL,
     "True in the process that made the shared-memory segment (share()).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef Image_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ImageObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}};

static PyType_Slot Image_slots[] = {
    {Py_tp_doc, "Image(path): a permafrost image mapped read-only."},
    {Py_tp_new, Image_new},
    {Py_tp_dealloc, Image_dealloc},
    {Py_tp_traverse, Image_traverse},
    {Py_tp_clear, Image_clear},
    {Py_tp_methods, Image_methods},
    {Py_tp_getset, Image_getset},
    {Py_tp_members, Image_members},
    {Py_tp_repr, Image_repr},
    {Py_bf_getbuffer, Image_getbuffer},
    {Py_bf_releasebuffer, Image_releasebuffer},
    {0, NULL}};

static PyType_Spec Image_spec = {
    "permafrost.Image", sizeof(ImageObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, Image_slots};

/* ------------------------------------------------------------ views */

static PyObject *
make_view(ImageObject *im, const pf_val *v)
{
    pf_state *st = im->st;
    PyTypeObject *tp;
    switch (v->type) {
    case PF_DICT: tp = st->DictView_Type; break;
    case PF_LIST: tp = st->ListView_Type; break;
    case PF_SET: tp = st->SetView_Type; break;
    case PF_FROZENSET: tp = st->FrozenSetView_Type; break;
    default:
        return PyErr_Format(st->CorruptImageError, "corrupt image: not a container");
    }
    ViewObject *vw = PyObject_GC_New(ViewObject, tp);
    if (!vw)
        return NULL;
    vw->image = (ImageObject *)Py_NewRef(im);
    vw->v = *v;
    vw->hash = -1;
    vw->missing = NULL;
    im->nviews++;
    PyObject_GC_Track(vw);
    return (PyObject *)vw;
}

static int
View_traverse(ViewObject *vw, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(vw));
    Py_VISIT(vw->image);
    Py_VISIT(vw->missing);
    return 0;
}

static void
View_dealloc(PyObject *self)
{
    ViewObject *vw = (ViewObject *)self;
    PyTypeObject *tp = Py_TYPE(vw);
    PyObject_GC_UnTrack(vw);
    Py_CLEAR(vw->missing);
    ImageObject *im = vw->image;
    if (im) {
        if (--im->nviews == 0 && im->closed)
            image_release(im);
        Py_DECREF(im);
    }
    tp->tp_free((PyObject *)vw);
    Py_DECREF(tp);
}

static Py_ssize_t
View_len(ViewObject *vw)
{
    if (vw->v.u.c.count > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "container too large");
        return -1;
    }
    return (Py_ssize_t)vw->v.u.c.count;
}

/* Every view type shares View_dealloc: IS_VIEW() tells a view by it. */

/* The next record of container c, which holds c->u.c.count of them: the
 * callers ask exactly that many times, so running out is corruption.
 * Returns 0, or -1 with an exception set. */
static int
next_record(ImageObject *im, const pf_val *c, uint64_t *cursor, uint64_t *kp,
            uint64_t *vp)
{
    pf_error err;
    int rc = pf_record_next(im->img, c, cursor, kp, vp, &err);
    if (rc > 0)
        return 0;
    if (rc == 0)
        PyErr_Format(im->st->CorruptImageError,
                     "corrupt image: fewer records than the count (at offset %llu)",
                     (unsigned long long)c->pos);
    else
        fail(im->st, &err, rc);
    return -1;
}

static const char *
type_short_name(PyTypeObject *tp)
{
    const char *dot = strrchr(tp->tp_name, '.');
    return dot ? dot + 1 : tp->tp_name;
}

static PyObject *
make_iter(ViewObject *vw, int mode)
{
    pf_state *st = vw->image->st;
    IterObject *it = PyObject_GC_New(IterObject, st->Iter_Type);
    if (!it)
        return NULL;
    it->view = (ViewObject *)Py_NewRef(vw);
    it->mode = mode;
    it->cursor = 0;
    it->left = vw->v.u.c.count;
    it->offs = NULL;
    it->prefix = NULL;
    it->what = IT_KEYS;
    it->rank = it->stop = 0;
    if (mode == IT_LIST_REV)
        it->cursor = vw->v.u.c.count;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

/* Fills it->offs with the key offsets of every record (reversed dicts). */
static int
iter_collect(IterObject *it)
{
    ViewObject *vw = it->view;
    uint64_t n = vw->v.u.c.count;
    if (n > (uint64_t)PY_SSIZE_T_MAX / sizeof(uint64_t)) {
        PyErr_NoMemory();
        return -1;
    }
    it->offs = PyMem_Malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    if (!it->offs) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t cur = 0, kp, vp;
    for (uint64_t i = 0; i < n; i++) {
        if (next_record(vw->image, &vw->v, &cur, &kp, &vp) < 0)
            return -1;
        it->offs[i] = kp;
    }
    it->cursor = n;
    return 0;
}

static PyObject *ord_iter_next(IterObject *it);

/* A record as an iteration gives it: the key (IT_KEYS, and always for a
 * set), the value (IT_VALUES), or (key, value). */
static PyObject *
record_output(ViewObject *vw, int what, uint64_t kp, uint64_t vp)
{
    ImageObject *im = vw->image;
    if (what == IT_KEYS || vw->v.type != PF_DICT)
        return decode_key(im, kp);
    if (what == IT_VALUES)
        return decode(im, vp);
    PyObject *k = decode_key(im, kp);
    if (!k)
        return NULL;
    PyObject *v = decode(im, vp);
    if (!v) {
        Py_DECREF(k);
        return NULL;
    }
    return Py_BuildValue("(NN)", k, v);
}

static PyObject *
Iter_next(IterObject *it)
{
    ViewObject *vw = it->view;
    ImageObject *im = vw->image;
    pf_error err;
    int rc;
    if (it->left == 0)
        return NULL;
    switch (it->mode) {
    case IT_ORD:
    case IT_ORD_REV:
        return ord_iter_next(it);
    case IT_LIST:
    case IT_LIST_REV: {
        uint64_t idx = it->mode == IT_LIST ? it->cursor++ : --it->cursor;
        uint64_t p;
        rc = pf_list_item(im->img, &vw->v, idx, &p, &err);
        if (rc < 0)
            return fail(im->st, &err, rc);
        it->left--;
        return decode(im, p);
    }
    case IT_REC_REV: {
        if (!it->offs && iter_collect(it) < 0)
            return NULL;
        uint64_t kp = it->offs[--it->cursor];
        it->left--;
        return decode_key(im, kp);
    }
    default: {
        uint64_t kp, vp;
        if (next_record(im, &vw->v, &it->cursor, &kp, &vp) < 0)
            return NULL;
        it->left--;
        return record_output(vw, it->mode, kp, vp);
    }
    }
}

static PyObject *
Iter_length_hint(IterObject *it, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(it->left);
}

static int
Iter_traverse(IterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->view);
    Py_VISIT(it->prefix);
    return 0;
}

static void
Iter_dealloc(IterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    PyMem_Free(it->offs);
    Py_CLEAR(it->view);
    Py_CLEAR(it->prefix);
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyMethodDef Iter_methods[] = {
    {"__length_hint__", (PyCFunction)Iter_length_hint, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyType_Slot Iter_slots[] = {
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, Iter_next},
    {Py_tp_dealloc, Iter_dealloc},
    {Py_tp_traverse, Iter_traverse},
    {Py_tp_methods, Iter_methods},
    {0, NULL}};

static PyType_Spec Iter_spec = {
    "permafrost._Iterator", sizeof(IterObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, Iter_slots};

/* Mutation of any view. */
static PyObject *
View_readonly(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    (void)args;
    (void)nargs;
    (void)kw;
    return PyErr_Format(PyExc_TypeError, "'%s' is read-only: a permafrost image never changes "
                        "(use permafrost.thaw() for a mutable copy)",
                        Py_TYPE(self)->tp_name);
}

#define READONLY_METHOD(name)                                                    \
    {name, (PyCFunction)(void (*)(void))View_readonly, METH_FASTCALL | METH_KEYWORDS, \
     "Not supported: views are read-only."}

static PyObject *
View_reduce(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    ImageObject *im = vw->image;
    if (!im->img)
        return PyErr_Format(im->st->ClosedImageError, "the image is closed");
    if (vw->missing)
        return Py_BuildValue("O(OKiO)", im->st->view_at, (PyObject *)im,
                             (unsigned long long)vw->v.pos, vw->v.type, vw->missing);
    return Py_BuildValue("O(OKi)", im->st->view_at, (PyObject *)im,
                         (unsigned long long)vw->v.pos, vw->v.type);
}

/* close() and `with` on a view close its image (Image.close()): what
 * share() returns is the root view, and this is how its owner removes the
 * segment. */
static PyObject *
View_close(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return Image_close(vw->image, NULL);
}

static PyObject *
View_enter(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    if (image_check_open(vw->image) < 0)
        return NULL;
    return Py_NewRef(vw);
}

static PyObject *
View_exit(ViewObject *vw, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return Image_close(vw->image, NULL);
}

#define VIEW_LIFETIME_METHODS                                                 \
    {"close", (PyCFunction)View_close, METH_NOARGS,                          \
     "Close the view's image (Image.close()); for share(), remove the\n"     \
     "segment. Views alive keep reading until the last one dies."},          \
    {"__enter__", (PyCFunction)View_enter, METH_NOARGS, NULL},               \
    {"__exit__", (PyCFunction)(void (*)(void))View_exit, METH_FASTCALL, NULL}

/* A plain container of the view's items, one level deep. */
static PyObject *
View_materialize(ViewObject *vw)
{
    PyObject *it = make_iter(vw, IT_KEYS);
    if (!it)
        return NULL;
    PyObject *r;
    switch (vw->v.type) {
    case PF_LIST:
        ((IterObject *)it)->mode = IT_LIST;
        r = PySequence_List(it);
        break;
    case PF_SET:
        r = PySet_New(it);
        break;
    case PF_FROZENSET:
        r = PyFrozenSet_New(it);
        break;
    default: {
        ((IterObject *)it)->mode = IT_ITEMS;
        r = PyDict_New();
        if (r && PyDict_MergeFromSeq2(r, it, 1) < 0)
            Py_CLEAR(r);
    }
    }
    Py_DECREF(it);
    return r;
}

static PyObject *
View_copy(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return View_materialize(vw);
}

/* ---- the work budget of a comparison or repr
 *
 * Sharing has no bound in the format: a crafted image of a few hundred
 * bytes can hold a list whose items are the same list twice, 1000 deep, so
 * that ==, != or repr() of its view would visit 2^1000 items. One such
 * operation that starts at a view (nested ones count against it) may visit
 * at most work_factor * image size + work_base items, which a structure
 * without sharing never needs (every item takes a byte at least); beyond
 * that it raises LimitError. permafrost.set_limits() changes both. */
#if defined(_MSC_VER)
#define PF_TLS __declspec(thread)
#else
#define PF_TLS _Thread_local
#endif
static PF_TLS int64_t work_left;
static PF_TLS int work_depth;

static void
work_enter(ViewObject *vw)
{
    if (work_depth++ > 0)
        return;
    const pf_state *st = vw->image->st;
    const uint64_t size = vw->image->img ? pf_image_size(vw->image->img) : 0;
    const uint64_t cap = (uint64_t)INT64_MAX;
    uint64_t budget = cap;
    if (st->work_factor == 0 || size <= (cap - st->work_base) / st->work_factor)
        budget = st->work_factor * size + st->work_base;
    work_left = (int64_t)(budget > cap ? cap : budget);
}

static void
work_leave(void)
{
    work_depth--;
}

static int
work_spend(ViewObject *vw, int64_t n)
{
    work_left -= n;
    if (work_left >= 0)
        return 0;
    PyErr_SetString(vw->image->st->LimitError,
                    "this comparison or repr visits far more items than the image "
                    "holds (a structure shared or referenced many times over): it "
                    "was stopped at the work budget, which "
                    "permafrost.set_limits(work_factor=..., work_base=...) sets");
    return -1;
}

/* A set view's repr lists its elements in the image's order, the order
 * its iteration gives: a set built from them could order them otherwise. */
static PyObject *
set_repr(ViewObject *vw)
{
    const char *outer = type_short_name(Py_TYPE(vw));
    PyObject *items = PySequence_List((PyObject *)vw);
    if (!items)
        return NULL;
    PyObject *res = NULL;
    if (PyList_GET_SIZE(items) == 0)
        res = PyUnicode_FromFormat("%s(%s())", outer, vw->v.type == PF_SET ? "set" : "frozenset");
    else {
        PyObject *lr = PyObject_Repr(items); /* "[a, b]" */
        if (lr) {
            PyObject *body = PyUnicode_Substring(lr, 1, PyUnicode_GET_LENGTH(lr) - 1);
            if (body)
                res = vw->v.type == PF_SET ? PyUnicode_FromFormat("%s({%U})", outer, body)
                                           : PyUnicode_FromFormat("%s(frozenset({%U}))", outer, body);
            Py_XDECREF(body);
            Py_DECREF(lr);
        }
    }
    Py_DECREF(items);
    return res;
}

/* repr of a cyclic image: a view made anew for a node already being
 * printed shows "...". The nodes being printed are kept per thread. */
static PyObject *
View_repr(ViewObject *vw)
{
    PyObject *tsd = PyThreadState_GetDict();
    if (!tsd)
        return PyUnicode_FromFormat("%s(...)", type_short_name(Py_TYPE(vw)));
    PyObject *active = PyDict_GetItemString(tsd, "permafrost.repr");
    if (!active) {
        active = PySet_New(NULL);
        if (!active || PyDict_SetItemString(tsd, "permafrost.repr", active) < 0) {
            Py_XDECREF(active);
            return NULL;
        }
        Py_DECREF(active); /* the thread dict holds it */
    }
    PyObject *node = Py_BuildValue("(NK)", PyLong_FromVoidPtr(vw->image),
                                   (unsigned long long)vw->v.pos);
    if (!node)
        return NULL;
    int in = PySet_Contains(active, node);
    if (in != 0) {
        Py_DECREF(node);
        return in > 0 ? PyUnicode_FromFormat("%s(...)", type_short_name(Py_TYPE(vw))) : NULL;
    }
    if (PySet_Add(active, node) < 0) {
        Py_DECREF(node);
        return NULL;
    }
    PyObject *res = NULL;
    work_enter(vw);
    if (work_spend(vw, 1 + (int64_t)vw->v.u.c.count) == 0) {
        if (vw->v.type == PF_SET || vw->v.type == PF_FROZENSET)
            res = set_repr(vw);
        else {
            PyObject *m = View_materialize(vw);
            if (m) {
                res = PyUnicode_FromFormat("%s(%R)", type_short_name(Py_TYPE(vw)), m);
                Py_DECREF(m);
            }
        }
    }
    work_leave();
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PySet_Discard(active, node);
    PyErr_Restore(exc_type, exc_value, exc_tb);
    Py_DECREF(node);
    return res;
}


static int
same_node(ViewObject *a, PyObject *bo)
{
    ViewObject *b = (ViewObject *)bo;
    return a->image == b->image && a->v.pos == b->v.pos;
}

/* ---- dict view */

static PyObject *
Dict_subscript(ViewObject *vw, PyObject *key)
{
    uint64_t vp;
    int r = view_lookup(vw, key, NULL, &vp);
    if (r < 0)
        return NULL;
    if (r == 0) {
        if (vw->missing) /* as defaultdict's __missing__, without storing */
            return PyObject_CallNoArgs(vw->missing);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return dict_value(vw->image, vp);
}

static int
Dict_contains(ViewObject *vw, PyObject *key)
{
    return view_lookup(vw, key, NULL, NULL);
}

static PyObject *
Dict_get(ViewObject *vw, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
    uint64_t vp;
    int r = view_lookup(vw, args[0], NULL, &vp);
    if (r < 0)
        return NULL;
    if (r == 0)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return dict_value(vw->image, vp);
}

static PyObject *
Dict_iter(ViewObject *vw)
{
    return make_iter(vw, IT_KEYS);
}

static PyObject *
Dict_iter_mode(ViewObject *vw, PyObject *arg)
{
    long mode = PyLong_AsLong(arg);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    if (mode < IT_KEYS || mode > IT_REC_REV || mode == IT_LIST || mode == IT_LIST_REV)
        return PyErr_Format(PyExc_ValueError, "bad iteration mode");
    if (mode == IT_VALUES || mode == IT_ITEMS) {
        if (vw->v.type != PF_DICT)
            return PyErr_Format(PyExc_ValueError, "bad iteration mode");
    }
    return make_iter(vw, (int)mode);
}

static PyObject *
Dict_reversed(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return make_iter(vw, IT_REC_REV);
}


/* ------------------------------------------------------------ ordered views */

/* Sorted and prefix queries on a dict or set with an order index (R36). */

static int
need_order(ViewObject *vw)
{
    /* an empty dict or set is in order: its queries find nothing */
    if (vw->v.type >= PF_DICT && vw->v.type <= PF_FROZENSET &&
        (vw->v.u.c.okind || vw->v.u.c.count == 0))
        return 0;
    PyErr_Format(vw->image->st->NoOrderedIndexError,
                 "this %s has no order index: freeze it with ordered=True "
                 "(permafrost.freeze(obj, path, ordered=True), or dumps, share or "
                 "Builder(path, ordered=True)), "
                 "which indexes every dict and set whose keys are all str or all bytes",
                 type_short_name(Py_TYPE(vw)));
    return -1;
}

/* The code units of a query key for the view's order. */
static int
order_key(ViewObject *vw, PyObject *key, const void **data, size_t *n, int *width)
{
    const int okind = vw->v.u.c.okind;
    if ((okind == PF_ORDER_STR || okind == 0) && PyUnicode_Check(key)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(key) < 0)
            return -1;
#endif
        *data = PyUnicode_DATA(key);
        *n = (size_t)PyUnicode_GET_LENGTH(key);
        *width = PyUnicode_KIND(key);
        return 0;
    }
    if ((okind == PF_ORDER_BYTES || okind == 0) && PyBytes_Check(key)) {
        *data = PyBytes_AS_STRING(key);
        *n = (size_t)PyBytes_GET_SIZE(key);
        *width = 1;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "this index orders %s keys, not %.100s",
                 okind == PF_ORDER_STR ? "str" : okind == PF_ORDER_BYTES ? "bytes"
                                                                          : "str or bytes",
                 Py_TYPE(key)->tp_name);
    return -1;
}


static PyObject *
ord_iter_next(IterObject *it)
{
    ViewObject *vw = it->view;
    ImageObject *im = vw->image;
    pf_error err;
    uint64_t kp = 0, vp = 0, pos;
    int rc;
    if (it->mode == IT_ORD) {
        if (it->rank >= it->stop) {
            it->left = 0;
            return NULL;
        }
        pos = it->cursor;
        rc = pf_ordered_next(im->img, &vw->v, &pos, &kp, &vp, &err);
        if (rc == 0)
            return PyErr_Format(im->st->CorruptImageError, "corrupt image: fewer "
                                "records than the count (at offset %llu)",
                                (unsigned long long)vw->v.pos);
        if (rc < 0)
            return fail(im->st, &err, rc);
        if (it->prefix) {
            const void *d;
            size_t n, common;
            int w, cmp;
            if (order_key(vw, it->prefix, &d, &n, &w) < 0)
                return NULL;
            rc = pf_ordered_compare(im->img, kp, d, n, w, &cmp, &common, &err);
            if (rc < 0)
                return fail(im->st, &err, rc);
            if (common < n) {
                it->left = 0;
                return NULL;
            }
        }
        it->cursor = pos;
        it->rank++;
    } else {
        if (it->cursor <= it->stop) {
            it->left = 0;
            return NULL;
        }
        rc = pf_ordered_at(im->img, &vw->v, it->cursor - 1, &pos, &err);
        if (rc == PF_OK)
            rc = pf_ordered_next(im->img, &vw->v, &pos, &kp, &vp, &err);
        if (rc == 0)
            return PyErr_Format(im->st->CorruptImageError, "corrupt image: fewer "
                                "records than the count (at offset %llu)",
                                (unsigned long long)vw->v.pos);
        if (rc < 0)
            return fail(im->st, &err, rc);
        it->cursor--;
    }
    if (it->left)
        it->left--;
    return record_output(vw, it->what, kp, vp);
}

/* An iterator over the records of ranks [lo, hi) in sorted order (reverse:
 * from hi - 1 down), the first at pos; with a prefix, until a key lacks it. */
static PyObject *
ord_iter(ViewObject *vw, int what, uint64_t lo, uint64_t hi, uint64_t pos,
         PyObject *prefix, int reverse)
{
    IterObject *it = (IterObject *)make_iter(vw, reverse ? IT_ORD_REV : IT_ORD);
    if (!it)
        return NULL;
    it->what = what;
    if (hi < lo)
        hi = lo;
    it->left = hi - lo;
    if (reverse) {
        it->cursor = hi;
        it->stop = lo;
    } else {
        it->cursor = pos;
        it->rank = lo;
        it->stop = hi;
        it->prefix = Py_XNewRef(prefix);
    }
    return (PyObject *)it;
}

/* Seeks key in the view's order: its rank and record offset. */
static int
ord_seek(ViewObject *vw, PyObject *key, int after, uint64_t *rank, uint64_t *pos)
{
    const void *d;
    size_t n;
    int w;
    if (order_key(vw, key, &d, &n, &w) < 0)
        return -1;
    if (vw->v.u.c.count == 0) {
        *rank = 0;
        *pos = vw->v.u.c.body;
        return 0;
    }
    pf_error err;
    int rc = pf_ordered_seek(vw->image->img, &vw->v, d, n, w, after, rank, pos, &err);
    if (rc < 0) {
        fail(vw->image->st, &err, rc);
        return -1;
    }
    return 0;
}

/* The records whose key starts with prefix, in sorted order. */
static PyObject *
ord_prefix_iter(ViewObject *vw, PyObject *prefix, int what)
{
    uint64_t rank, pos;
    if (need_order(vw) < 0 || ord_seek(vw, prefix, 0, &rank, &pos) < 0)
        return NULL;
    return ord_iter(vw, what, rank, vw->v.u.c.count, pos, prefix, 0);
}

static PyObject *
ord_keys_kw(ViewObject *vw, PyObject *args, PyObject *kw, int what, const char *fmt,
            PyObject *(*plain)(ViewObject *, PyObject *))
{
    static char *kwlist[] = {"prefix", NULL};
    PyObject *prefix = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &prefix))
        return NULL;
    if (prefix == Py_None)
        return plain ? plain(vw, NULL) : (need_order(vw) < 0 ? NULL
               : ord_iter(vw, what, 0, vw->v.u.c.count, vw->v.u.c.body, NULL, 0));
    return ord_prefix_iter(vw, prefix, what);
}

static PyObject *
Ord_sorted_keys(ViewObject *vw, PyObject *args, PyObject *kw)
{
    return ord_keys_kw(vw, args, kw, IT_KEYS, "|$O:sorted_keys", NULL);
}

static PyObject *
Ord_irange(ViewObject *vw, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"minimum", "maximum", "inclusive", "reverse", NULL};
    PyObject *lo_key = Py_None, *hi_key = Py_None, *inclusive = NULL;
    int reverse = 0, lo_in = 1, hi_in = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOp:irange", kwlist, &lo_key, &hi_key,
                                     &inclusive, &reverse))
        return NULL;
    if (need_order(vw) < 0)
        return NULL;
    if (inclusive) {
        PyObject *t = PySequence_Tuple(inclusive);
        if (!t)
            return NULL;
        if (PyTuple_GET_SIZE(t) != 2) {
            Py_DECREF(t);
            PyErr_SetString(PyExc_TypeError, "inclusive must be a pair of bools");
            return NULL;
        }
        lo_in = PyObject_IsTrue(PyTuple_GET_ITEM(t, 0));
        hi_in = PyObject_IsTrue(PyTuple_GET_ITEM(t, 1));
        Py_DECREF(t);
        if (lo_in < 0 || hi_in < 0)
            return NULL;
    }
    uint64_t lo = 0, hi = vw->v.u.c.count, pos = vw->v.u.c.body, ignored;
    if (lo_key != Py_None && ord_seek(vw, lo_key, !lo_in, &lo, &pos) < 0)
        return NULL;
    if (hi_key != Py_None && ord_seek(vw, hi_key, hi_in, &hi, &ignored) < 0)
        return NULL;
    return ord_iter(vw, IT_KEYS, lo, hi, pos, NULL, reverse);
}

static PyObject *
ord_bisect(ViewObject *vw, PyObject *key, int after)
{
    uint64_t rank, pos;
    if (need_order(vw) < 0 || ord_seek(vw, key, after, &rank, &pos) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(rank);
}

static PyObject *
Ord_bisect_left(ViewObject *vw, PyObject *key)
{
    return ord_bisect(vw, key, 0);
}

static PyObject *
Ord_bisect_right(ViewObject *vw, PyObject *key)
{
    return ord_bisect(vw, key, 1);
}

/* (s, start) of longest_prefix and prefixes: the code units of s[start:]. */
static int
ord_text(ViewObject *vw, PyObject *args, PyObject *kw, PyObject **s, const uint8_t **d,
         size_t *n, int *w, Py_ssize_t *start, PyObject **dflt)
{
    static char *kwlist[] = {"s", "start", "default", NULL};
    static char *kwlist2[] = {"s", "start", NULL};
    *start = 0;
    if (dflt ? !PyArg_ParseTupleAndKeywords(args, kw, "O|n$O:longest_prefix", kwlist, s,
                                            start, dflt)
             : !PyArg_ParseTupleAndKeywords(args, kw, "O|n:prefixes", kwlist2, s, start))
        return -1;
    const void *dv;
    if (need_order(vw) < 0 || order_key(vw, *s, &dv, n, w) < 0)
        return -1;
    Py_ssize_t len = (Py_ssize_t)*n;
    if (*start < 0)
        *start = *start + len < 0 ? 0 : *start + len;
    if (*start > len)
        *start = len;
    *d = (const uint8_t *)dv + (size_t)*start * (size_t)*w;
    *n -= (size_t)*start;
    return 0;
}

/* The longest key that is a prefix of the n units at d: 1 with its record
 * and length, 0 if none, -1 with an exception. */
static int
ord_longest(ViewObject *vw, const uint8_t *d, size_t n, int w, uint64_t *kp,
            uint64_t *vp, size_t *len)
{
    uint64_t rank;
    pf_error err;
    if (vw->v.u.c.count == 0)
        return 0;
    int rc = pf_ordered_longest_prefix(vw->image->img, &vw->v, d, n, w, &rank, kp, vp,
                                       len, &err);
    if (rc < 0) {
        fail(vw->image->st, &err, rc);
        return -1;
    }
    return rc;
}

static PyObject *
Ord_longest_prefix(ViewObject *vw, PyObject *args, PyObject *kw)
{
    PyObject *s;
    const uint8_t *d;
    size_t n, len;
    int w;
    Py_ssize_t start;
    uint64_t kp, vp;
    PyObject *dflt = NULL;
    if (ord_text(vw, args, kw, &s, &d, &n, &w, &start, &dflt) < 0)
        return NULL;
    int rc = ord_longest(vw, d, n, w, &kp, &vp, &len);
    if (rc < 0)
        return NULL;
    if (rc == 0 && dflt)
        return Py_NewRef(dflt);
    if (rc == 0) {
        PyObject *rest = PySequence_GetSlice(s, start, PY_SSIZE_T_MAX);
        if (rest) {
            PyErr_SetObject(PyExc_KeyError, rest);
            Py_DECREF(rest);
        }
        return NULL;
    }
    return record_output(vw, IT_ITEMS, kp, vp);
}

static PyObject *
Ord_prefixes(ViewObject *vw, PyObject *args, PyObject *kw)
{
    PyObject *s;
    const uint8_t *d;
    size_t n, len;
    int w;
    Py_ssize_t start;
    if (ord_text(vw, args, kw, &s, &d, &n, &w, &start, NULL) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    /* longest first, each search within the one before: then reversed */
    for (;;) {
        uint64_t kp, vp;
        int rc = ord_longest(vw, d, n, w, &kp, &vp, &len);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (rc == 0)
            break;
        PyObject *r = record_output(vw, IT_ITEMS, kp, vp);
        if (!r || PyList_Append(out, r) < 0) {
            Py_XDECREF(r);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(r);
        if (len == 0)
            break;
        n = len - 1;
    }
    if (PyList_Reverse(out) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

#define ORDERED_METHODS \
    {"sorted_keys", (PyCFunction)(void (*)(void))Ord_sorted_keys, METH_VARARGS | METH_KEYWORDS, \
     "sorted_keys(*, prefix=None): the keys in sorted order (those that start with " \
     "prefix), lazily. Needs an order index (freeze(..., ordered=True))."}, \
    {"irange", (PyCFunction)(void (*)(void))Ord_irange, METH_VARARGS | METH_KEYWORDS, \
     "irange(minimum=None, maximum=None, inclusive=(True, True), reverse=False): " \
     "the keys between minimum and maximum in sorted order, lazily (as " \
     "sortedcontainers.SortedDict.irange)."}, \
    {"bisect_left", (PyCFunction)Ord_bisect_left, METH_O, \
     "bisect_left(key): the number of keys < key."}, \
    {"bisect_right", (PyCFunction)Ord_bisect_right, METH_O, \
     "bisect_right(key): the number of keys <= key."}, \
    {"longest_prefix", (PyCFunction)(void (*)(void))Ord_longest_prefix, \
     METH_VARARGS | METH_KEYWORDS, \
     "longest_prefix(s, start=0, *, default): the longest key that is a prefix of " \
     "s[start:], as (key, value) (a set: the key); if none, default, or KeyError " \
     "without one."}, \
    {"prefixes", (PyCFunction)(void (*)(void))Ord_prefixes, METH_VARARGS | METH_KEYWORDS, \
     "prefixes(s, start=0): the keys that are prefixes of s[start:], shortest " \
     "first, as (key, value) pairs (a set: the keys)."}

static PyObject *
Dict_keys_plain(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return PyObject_CallOneArg(vw->image->st->keys_cls, (PyObject *)vw);
}

static PyObject *
Dict_values_plain(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return PyObject_CallOneArg(vw->image->st->values_cls, (PyObject *)vw);
}

static PyObject *
Dict_items_plain(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return PyObject_CallOneArg(vw->image->st->items_cls, (PyObject *)vw);
}

/* keys(), values(), items(): dict's, and with prefix= (keyword only) the
 * records whose key starts with it, in sorted order (R36). */
static PyObject *
Dict_keys(ViewObject *vw, PyObject *args, PyObject *kw)
{
    return ord_keys_kw(vw, args, kw, IT_KEYS, "|$O:keys", Dict_keys_plain);
}

static PyObject *
Dict_values(ViewObject *vw, PyObject *args, PyObject *kw)
{
    return ord_keys_kw(vw, args, kw, IT_VALUES, "|$O:values", Dict_values_plain);
}

static PyObject *
Dict_items(ViewObject *vw, PyObject *args, PyObject *kw)
{
    return ord_keys_kw(vw, args, kw, IT_ITEMS, "|$O:items", Dict_items_plain);
}

/* self == other for a dict view and a dict or dict view. */
static int
dict_equal(ViewObject *vw, PyObject *other)
{
    Py_ssize_t n = PyObject_Size(other);
    if (n < 0)
        return -1;
    if ((uint64_t)n != vw->v.u.c.count)
        return 0;
    int other_is_dict = PyDict_Check(other);
    uint64_t cur = 0, kp, vp;
    for (uint64_t i = 0; i < vw->v.u.c.count; i++) {
        if (work_spend(vw, 1) < 0 || next_record(vw->image, &vw->v, &cur, &kp, &vp) < 0)
            return -1;
        PyObject *k = decode_key(vw->image, kp);
        if (!k)
            return -1;
        PyObject *ov;
        if (other_is_dict) {
            ov = PyDict_GetItemWithError(other, k);
            Py_XINCREF(ov);
        } else {
            ov = PyObject_GetItem(other, k);
            if (!ov && PyErr_ExceptionMatches(PyExc_KeyError))
                PyErr_Clear();
        }
        Py_DECREF(k);
        if (!ov)
            return PyErr_Occurred() ? -1 : 0;
        PyObject *mv = decode(vw->image, vp);
        if (!mv) {
            Py_DECREF(ov);
            return -1;
        }
        int eq = PyObject_RichCompareBool(mv, ov, Py_EQ);
        Py_DECREF(mv);
        Py_DECREF(ov);
        if (eq <= 0)
            return eq;
    }
    return 1;
}

static PyObject *
Dict_richcompare(ViewObject *vw, PyObject *other, int op)
{
    pf_state *st = vw->image->st;
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    if (!(PyDict_Check(other) || Py_TYPE(other) == st->DictView_Type))
        Py_RETURN_NOTIMPLEMENTED;
    int eq;
    if (Py_TYPE(other) == st->DictView_Type && same_node(vw, other))
        eq = 1;
    else {
        work_enter(vw);
        eq = dict_equal(vw, other);
        work_leave();
    }
    if (eq < 0)
        return NULL;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

/* d | other and other | d (Python 3.9 dict union): a new plain dict. */
static PyObject *
Dict_or(PyObject *a, PyObject *b)
{
    int av = IS_VIEW(a) && ((ViewObject *)a)->v.type == PF_DICT;
    int bv = IS_VIEW(b) && ((ViewObject *)b)->v.type == PF_DICT;
    if (!((av || PyDict_Check(a)) && (bv || PyDict_Check(b))))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *left = av ? View_materialize((ViewObject *)a) : PyDict_Copy(a);
    if (!left)
        return NULL;
    PyObject *right = bv ? View_materialize((ViewObject *)b) : Py_NewRef(b);
    if (!right) {
        Py_DECREF(left);
        return NULL;
    }
    PyObject *res = PyDict_Update(left, right) < 0 ? NULL : Py_NewRef(left);
    Py_DECREF(left);
    Py_DECREF(right);
    return res;
}

static PyMethodDef Dict_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Dict_get, METH_FASTCALL,
     "D.get(k[, d]) -> D[k] if k in D, else d (default None)."},
    {"keys", (PyCFunction)(void (*)(void))Dict_keys, METH_VARARGS | METH_KEYWORDS,
     "A set-like view of the keys; keys(prefix=p): the keys that start with p, "
     "in sorted order, lazily (needs an order index)."},
    {"values", (PyCFunction)(void (*)(void))Dict_values, METH_VARARGS | METH_KEYWORDS,
     "A view of the values; values(prefix=p): the values of the keys that start "
     "with p, in sorted key order, lazily (needs an order index)."},
    {"items", (PyCFunction)(void (*)(void))Dict_items, METH_VARARGS | METH_KEYWORDS,
     "A set-like view of the (key, value) pairs; items(prefix=p): the pairs whose "
     "key starts with p, in sorted order, lazily (needs an order index)."},
    ORDERED_METHODS,
    {"copy", (PyCFunction)View_copy, METH_NOARGS, "A shallow copy as a plain dict."},
    {"__reversed__", (PyCFunction)Dict_reversed, METH_NOARGS, NULL},
    {"__reduce__", (PyCFunction)View_reduce, METH_NOARGS, NULL},
    VIEW_LIFETIME_METHODS,
    {"_iter", (PyCFunction)Dict_iter_mode, METH_O, NULL},
    READONLY_METHOD("__setitem__"), READONLY_METHOD("__delitem__"),
    READONLY_METHOD("update"), READONLY_METHOD("pop"), READONLY_METHOD("popitem"),
    READONLY_METHOD("clear"), READONLY_METHOD("setdefault"), READONLY_METHOD("__ior__"),
    {NULL, NULL, 0, NULL}};

static int
View_ass_subscript(PyObject *self, PyObject *key, PyObject *value)
{
    (void)key;
    (void)value;
    PyErr_Format(PyExc_TypeError, "'%s' is read-only: a permafrost image never changes "
                 "(use permafrost.thaw() for a mutable copy)", Py_TYPE(self)->tp_name);
    return -1;
}

static PyType_Slot Dict_slots[] = {
    {Py_tp_doc, "A read-only view of a frozen dict (a collections.abc.Mapping)."},
    {Py_tp_dealloc, View_dealloc},
    {Py_tp_traverse, View_traverse},
    {Py_tp_repr, View_repr},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_iter, Dict_iter},
    {Py_tp_richcompare, Dict_richcompare},
    {Py_tp_methods, Dict_methods},
    {Py_mp_length, View_len},
    {Py_mp_subscript, Dict_subscript},
    {Py_mp_ass_subscript, View_ass_subscript},
    {Py_sq_contains, Dict_contains},
    {Py_nb_or, Dict_or},
    {0, NULL}};

static PyType_Spec Dict_spec = {
    "permafrost.DictView", sizeof(ViewObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION
#ifdef Py_TPFLAGS_MAPPING
        | Py_TPFLAGS_MAPPING
#endif
    , Dict_slots};

/* ---- list view */

static int
list_index(ViewObject *vw, Py_ssize_t i, uint64_t *pos)
{
    Py_ssize_t n = (Py_ssize_t)vw->v.u.c.count;
    if (i < 0)
        i += n;
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return -1;
    }
    pf_error err;
    int rc = pf_list_item(vw->image->img, &vw->v, (uint64_t)i, pos, &err);
    if (rc < 0) {
        fail(vw->image->st, &err, rc);
        return -1;
    }
    return 0;
}

static PyObject *
List_item(ViewObject *vw, Py_ssize_t i)
{
    uint64_t p;
    /* sq_item gets i already adjusted by len for negatives */
    if (i < 0 || (uint64_t)i >= vw->v.u.c.count) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return NULL;
    }
    if (list_index(vw, i, &p) < 0)
        return NULL;
    return decode(vw->image, p);
}

static PyObject *
List_subscript(ViewObject *vw, PyObject *key)
{
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        uint64_t p;
        if (list_index(vw, i, &p) < 0)
            return NULL;
        return decode(vw->image, p);
    }
    if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0)
            return NULL;
        Py_ssize_t n = PySlice_AdjustIndices((Py_ssize_t)vw->v.u.c.count, &start, &stop, step);
        PyObject *res = PyList_New(n);
        if (!res)
            return NULL;
        Py_ssize_t cur = start;
        for (Py_ssize_t k = 0; k < n; k++, cur += step) {
            uint64_t p;
            PyObject *item = NULL;
            if (list_index(vw, cur, &p) == 0)
                item = decode(vw->image, p);
            if (!item) {
                Py_DECREF(res);
                return NULL;
            }
            PyList_SET_ITEM(res, k, item);
        }
        return res;
    }
    return PyErr_Format(PyExc_TypeError, "list indices must be integers or slices, not %.200s",
                        Py_TYPE(key)->tp_name);
}

static int
List_contains(ViewObject *vw, PyObject *x)
{
    for (uint64_t i = 0; i < vw->v.u.c.count; i++) {
        PyObject *item = List_item(vw, (Py_ssize_t)i);
        if (!item)
            return -1;
        int eq = PyObject_RichCompareBool(item, x, Py_EQ);
        Py_DECREF(item);
        if (eq != 0)
            return eq;
    }
    return 0;
}

static PyObject *
List_iter(ViewObject *vw)
{
    return make_iter(vw, IT_LIST);
}

static PyObject *
List_reversed(ViewObject *vw, PyObject *unused)
{
    (void)unused;
    return make_iter(vw, IT_LIST_REV);
}

static int
slice_index(PyObject *o, Py_ssize_t *out)
{
    if (!PyIndex_Check(o)) {
        PyErr_SetString(PyExc_TypeError,
                        "slice indices must be integers or have an __index__ method");
        return -1;
    }
    Py_ssize_t x = PyNumber_AsSsize_t(o, NULL); /* clamps on overflow */
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

static PyObject *
List_index(ViewObject *vw, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n = (Py_ssize_t)vw->v.u.c.count, start = 0, stop = PY_SSIZE_T_MAX;
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "index expected 1 to 3 arguments, got %zd", nargs);
    if (nargs >= 2 && slice_index(args[1], &start) < 0)
        return NULL;
    if (nargs >= 3 && slice_index(args[2], &stop) < 0)
        return NULL;
    if (start < 0) {
        start += n;
        if (start < 0)
            start = 0;
    }
    if (stop < 0) {
        stop += n;
        if (stop < 0)
            stop = 0;
    }
    for (Py_ssize_t i = start; i < stop && i < n; i++) {
        PyObject *item = List_item(vw, i);
        if (!item)
            return NULL;
        int eq = PyObject_RichCompareBool(item, args[0], Py_EQ);
        Py_DECREF(item);
        if (eq < 0)
            return NULL;
        if (eq)
            return PyLong_FromSsize_t(i);
    }
    PyErr_SetString(PyExc_ValueError, "value is not in list");
    return NULL;
}

static PyObject *
List_count(ViewObject *vw, PyObject *x)
{
    Py_ssize_t c = 0;
    for (uint64_t i = 0; i < vw->v.u.c.count; i++) {
        PyObject *item = List_item(vw, (Py_ssize_t)i);
        if (!item)
            return NULL;
        int eq = PyObject_RichCompareBool(item, x, Py_EQ);
        Py_DECREF(item);
        if (eq < 0)
            return NULL;
        c += eq;
    }
    return PyLong_FromSsize_t(c);
}

/* A plain list for a list view, or a new reference to a list. */
static PyObject *
as_list(PyObject *o)
{
    if (IS_VIEW(o) && ((ViewObject *)o)->v.type == PF_LIST)
        return View_materialize((ViewObject *)o);
    if (PyList_Check(o))
        return Py_NewRef(o);
    return NULL;
}

static PyObject *
List_richcompare_impl(ViewObject *vw, PyObject *other, int op)
{
    if (!(PyList_Check(other) || (IS_VIEW(other) && ((ViewObject *)other)->v.type == PF_LIST)))
        Py_RETURN_NOTIMPLEMENTED;
    if (IS_VIEW(other) && same_node(vw, other) && (op == Py_EQ || op == Py_NE))
        return PyBool_FromLong(op == Py_EQ);
    Py_ssize_t n1 = (Py_ssize_t)vw->v.u.c.count;
    Py_ssize_t n2 = PyObject_Size(other);
    if (n2 < 0)
        return NULL;
    if (n1 != n2 && (op == Py_EQ || op == Py_NE))
        return PyBool_FromLong(op == Py_NE);
    /* First differing item decides, as list comparison does. */
    Py_ssize_t i;
    for (i = 0; i < n1 && i < n2; i++) {
        if (work_spend(vw, 1) < 0)
            return NULL;
        PyObject *a = List_item(vw, i);
        if (!a)
            return NULL;
        PyObject *b = PySequence_GetItem(other, i);
        if (!b) {
            Py_DECREF(a);
            return NULL;
        }
        int eq = PyObject_RichCompareBool(a, b, Py_EQ);
        if (eq < 0) {
            Py_DECREF(a);
            Py_DECREF(b);
            return NULL;
        }
        if (!eq) {
            PyObject *r;
            if (op == Py_EQ)
                r = Py_NewRef(Py_False);
            else if (op == Py_NE)
                r = Py_NewRef(Py_True);
            else
                r = PyObject_RichCompare(a, b, op);
            Py_DECREF(a);
            Py_DECREF(b);
            return r;
        }
        Py_DECREF(a);
        Py_DECREF(b);
    }
    int res;
    switch (op) {
    case Py_LT: res = n1 < n2; break;
    case Py_LE: res = n1 <= n2; break;
    case Py_EQ: res = n1 == n2; break;
    case Py_NE: res = n1 != n2; break;
    case Py_GT: res = n1 > n2; break;
    default: res = n1 >= n2; break;
    }
    return PyBool_FromLong(res);
}

static PyObject *
List_richcompare(ViewObject *vw, PyObject *other, int op)
{
    work_enter(vw);
    PyObject *r = List_richcompare_impl(vw, other, op);
    work_leave();
    return r;
}

static PyObject *
List_add(PyObject *a, PyObject *b)
{
    PyObject *la = as_list(a), *lb = la ? as_list(b) : NULL;
    if (!la || !lb) {
        Py_XDECREF(la);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r = PySequence_Concat(la, lb);
    Py_DECREF(la);
    Py_DECREF(lb);
    return r;
}

static PyObject *
List_mul(PyObject *a, PyObject *b)
{
    int av = IS_VIEW(a);
    PyObject *l = as_list(av ? a : b);
    if (!l)
        return NULL;
    PyObject *r = av ? PyNumber_Multiply(l, b) : PyNumber_Multiply(a, l);
    Py_DECREF(l);
    return r;
}

static PyMethodDef List_methods[] = {
    {"index", (PyCFunction)(void (*)(void))List_index, METH_FASTCALL,
     "L.index(value, [start, [stop]]) -> first index of value; ValueError if absent."},
    {"count", (PyCFunction)List_count, METH_O, "L.count(value) -> number of occurrences."},
    {"copy", (PyCFunction)View_copy, METH_NOARGS, "A shallow copy as a plain list."},
    {"__reversed__", (PyCFunction)List_reversed, METH_NOARGS, NULL},
    {"__reduce__", (PyCFunction)View_reduce, METH_NOARGS, NULL},
    VIEW_LIFETIME_METHODS,
    READONLY_METHOD("append"), READONLY_METHOD("extend"), READONLY_METHOD("insert"),
    READONLY_METHOD("pop"), READONLY_METHOD("remove"), READONLY_METHOD("sort"),
    READONLY_METHOD("reverse"), READONLY_METHOD("clear"), READONLY_METHOD("__iadd__"),
    READONLY_METHOD("__imul__"),
    {NULL, NULL, 0, NULL}};

static PyType_Slot List_slots[] = {
    {Py_tp_doc, "A read-only view of a frozen list (a collections.abc.Sequence)."},
    {Py_tp_dealloc, View_dealloc},
    {Py_tp_traverse, View_traverse},
    {Py_tp_repr, View_repr},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_iter, List_iter},
    {Py_tp_richcompare, List_richcompare},
    {Py_tp_methods, List_methods},
    {Py_mp_length, View_len},
    {Py_mp_subscript, List_subscript},
    {Py_mp_ass_subscript, View_ass_subscript},
    {Py_sq_length, View_len},
    {Py_sq_item, List_item},
    {Py_sq_contains, List_contains},
    {Py_nb_add, List_add},
    {Py_nb_multiply, List_mul},
    {0, NULL}};

static PyType_Spec List_spec = {
    "permafrost.ListView", sizeof(ViewObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION
#ifdef Py_TPFLAGS_SEQUENCE
        | Py_TPFLAGS_SEQUENCE
#endif
    , List_slots};

/* ---- set and frozenset views */

static PyObject *
Set_richcompare_impl(ViewObject *vw, PyObject *other, int op)
{
    int ov = IS_VIEW(other) && (((ViewObject *)other)->v.type == PF_SET ||
                                ((ViewObject *)other)->v.type == PF_FROZENSET);
    if (!(PyAnySet_Check(other) || ov))
        Py_RETURN_NOTIMPLEMENTED;
    if (ov && same_node(vw, other) && (op == Py_EQ || op == Py_NE))
        return PyBool_FromLong(op == Py_EQ);
    if ((op == Py_EQ || op == Py_NE)) {
        Py_ssize_t n2 = PyObject_Size(other);
        if (n2 < 0)
            return NULL;
        if ((uint64_t)n2 != vw->v.u.c.count)
            return PyBool_FromLong(op == Py_NE);
        /* Same size: equal iff every item of other is in self. */
        PyObject *it = PyObject_GetIter(other);
        if (!it)
            return NULL;
        PyObject *x;
        int all = 1;
        while ((x = PyIter_Next(it)) != NULL) {
            int r = work_spend(vw, 1) < 0 ? -1 : view_lookup(vw, x, NULL, NULL);
            Py_DECREF(x);
            if (r < 0) {
                Py_DECREF(it);
                return NULL;
            }
            if (!r) {
                all = 0;
                break;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return NULL;
        return PyBool_FromLong(op == Py_EQ ? all : !all);
    }
    PyObject *a = View_materialize(vw);
    if (!a)
        return NULL;
    PyObject *b = ov ? View_materialize((ViewObject *)other) : Py_NewRef(other);
    if (!b) {
        Py_DECREF(a);
        return NULL;
    }
    PyObject *r = PyObject_RichCompare(a, b, op);
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
}

static PyObject *
Set_richcompare(ViewObject *vw, PyObject *other, int op)
{
    work_enter(vw);
    PyObject *r = work_spend(vw, (int64_t)vw->v.u.c.count) < 0 ? NULL
                : Set_richcompare_impl(vw, other, op);
    work_leave();
    return r;
}

static Py_hash_t
FrozenSet_hash(ViewObject *vw)
{
    if (vw->hash != -1)
        return vw->hash;
    PyObject *fs = View_materialize(vw);
    if (!fs)
        return -1;
    Py_hash_t h = PyObject_Hash(fs);
    Py_DECREF(fs);
    vw->hash = h;
    return h;
}

/* set/frozenset of a set view, or a new reference to anything else. */
static PyObject *
as_set(PyObject *o)
{
    if (IS_VIEW(o)) {
        ViewObject *v = (ViewObject *)o;
        if (v->v.type == PF_SET || v->v.type == PF_FROZENSET)
            return View_materialize(v);
    }
    return Py_NewRef(o);
}

static PyObject *
set_binop(PyObject *a, PyObject *b, binaryfunc op)
{
    PyObject *sa = as_set(a);
    if (!sa)
        return NULL;
    PyObject *sb = as_set(b);
    if (!sb) {
        Py_DECREF(sa);
        return NULL;
    }
    PyObject *r = NULL;
    if (PyAnySet_Check(sa) && PyAnySet_Check(sb))
        r = op(sa, sb);
    else
        r = Py_NewRef(Py_NotImplemented);
    Py_DECREF(sa);
    Py_DECREF(sb);
    return r;
}

static PyObject *Set_and(PyObject *a, PyObject *b) { return set_binop(a, b, PyNumber_And); }
static PyObject *Set_or(PyObject *a, PyObject *b) { return set_binop(a, b, PyNumber_Or); }
static PyObject *Set_sub(PyObject *a, PyObject *b) { return set_binop(a, b, PyNumber_Subtract); }
static PyObject *Set_xor(PyObject *a, PyObject *b) { return set_binop(a, b, PyNumber_Xor); }

/* Methods that a plain set answers: delegate to a materialized copy. */
static PyObject *
set_delegate(ViewObject *vw, const char *name, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *s = View_materialize(vw);
    if (!s)
        return NULL;
    PyObject *meth = PyObject_GetAttrString(s, name);
    Py_DECREF(s);
    if (!meth)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
    Py_DECREF(meth);
    return r;
}

#define SET_DELEGATE(fn, name)                                                 \
    static PyObject *fn(ViewObject *vw, PyObject *const *args, Py_ssize_t nargs) \
    {                                                                          \
        return set_delegate(vw, name, args, nargs);                            \
    }
SET_DELEGATE(Set_union, "union")
SET_DELEGATE(Set_intersection, "intersection")
SET_DELEGATE(Set_difference, "difference")
SET_DELEGATE(Set_symmetric_difference, "symmetric_difference")
SET_DELEGATE(Set_issuperset, "issuperset")

static PyObject *
Set_issubset(ViewObject *vw, PyObject *other)
{
    PyObject *o = as_set(other);
    if (!o)
        return NULL;
    if (!PyAnySet_Check(o)) {
        PyObject *s = PySet_New(o);
        Py_DECREF(o);
        if (!s)
            return NULL;
        o = s;
    }
    PyObject *it = make_iter(vw, IT_KEYS);
    if (!it) {
        Py_DECREF(o);
        return NULL;
    }
    PyObject *x;
    int all = 1;
    while ((x = PyIter_Next(it)) != NULL) {
        int r = PySet_Contains(o, x);
        Py_DECREF(x);
        if (r <= 0) {
            all = r;
            break;
        }
    }
    Py_DECREF(it);
    Py_DECREF(o);
    if (all < 0 || PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(all);
}

static PyObject *
Set_isdisjoint(ViewObject *vw, PyObject *other)
{
    PyObject *it = PyObject_GetIter(other);
    if (!it)
        return NULL;
    PyObject *x;
    int disjoint = 1;
    while ((x = PyIter_Next(it)) != NULL) {
        int r = view_lookup(vw, x, NULL, NULL);
        Py_DECREF(x);
        if (r != 0) {
            disjoint = r < 0 ? -1 : 0;
            break;
        }
    }
    Py_DECREF(it);
    if (disjoint < 0 || PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(disjoint);
}

static int
Set_contains(ViewObject *vw, PyObject *key)
{
    int r = view_lookup(vw, key, NULL, NULL);
    if (r < 0 && PySet_Check(key) && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* set.__contains__ looks a set up as the equal frozenset. */
        PyErr_Clear();
        PyObject *fs = PyFrozenSet_New(key);
        if (!fs)
            return -1;
        r = view_lookup(vw, fs, NULL, NULL);
        Py_DECREF(fs);
    }
    return r;
}

static PyMethodDef Set_methods[] = {
    {"copy", (PyCFunction)View_copy, METH_NOARGS, "A shallow copy as a plain set/frozenset."},
    {"union", (PyCFunction)(void (*)(void))Set_union, METH_FASTCALL, NULL},
    {"intersection", (PyCFunction)(void (*)(void))Set_intersection, METH_FASTCALL, NULL},
    {"difference", (PyCFunction)(void (*)(void))Set_difference, METH_FASTCALL, NULL},
    {"symmetric_difference", (PyCFunction)(void (*)(void))Set_symmetric_difference, METH_FASTCALL, NULL},
    {"issuperset", (PyCFunction)(void (*)(void))Set_issuperset, METH_FASTCALL, NULL},
    {"issubset", (PyCFunction)Set_issubset, METH_O, NULL},
    {"isdisjoint", (PyCFunction)Set_isdisjoint, METH_O, NULL},
    ORDERED_METHODS,
    {"__reduce__", (PyCFunction)View_reduce, METH_NOARGS, NULL},
    VIEW_LIFETIME_METHODS,
    READONLY_METHOD("add"), READONLY_METHOD("discard"), READONLY_METHOD("remove"),
    READONLY_METHOD("pop"), READONLY_METHOD("clear"), READONLY_METHOD("update"),
    READONLY_METHOD("intersection_update"), READONLY_METHOD("difference_update"),
    READONLY_METHOD("symmetric_difference_update"), READONLY_METHOD("__ior__"),
    READONLY_METHOD("__iand__"), READONLY_METHOD("__isub__"), READONLY_METHOD("__ixor__"),
    {NULL, NULL, 0, NULL}};

/* The slots a set view and a frozenset view share; they differ in hash. */
#define SET_VIEW_SLOTS                                                         \
    {Py_tp_dealloc, View_dealloc}, {Py_tp_traverse, View_traverse},           \
    {Py_tp_repr, View_repr}, {Py_tp_iter, Dict_iter},                          \
    {Py_tp_richcompare, Set_richcompare}, {Py_tp_methods, Set_methods},        \
    {Py_sq_length, View_len}, {Py_sq_contains, Set_contains},                  \
    {Py_nb_and, Set_and}, {Py_nb_or, Set_or}, {Py_nb_subtract, Set_sub},       \
    {Py_nb_xor, Set_xor}

static PyType_Slot Set_slots[] = {
    {Py_tp_doc, "A read-only view of a frozen set (a collections.abc.Set)."},
    {Py_tp_hash, PyObject_HashNotImplemented},
    SET_VIEW_SLOTS,
    {0, NULL}};

static PyType_Spec Set_spec = {
    "permafrost.SetView", sizeof(ViewObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION, Set_slots};

static PyType_Slot FrozenSet_slots[] = {
    {Py_tp_doc, "A read-only view of a frozen frozenset (a hashable collections.abc.Set)."},
    {Py_tp_hash, FrozenSet_hash},
    SET_VIEW_SLOTS,
    {0, NULL}};

static PyType_Spec FrozenSet_spec = {
    "permafrost.FrozenSetView", sizeof(ViewObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    FrozenSet_slots};

/* ------------------------------------------------------------ encoder */

/* Identity memo: object -> offset of its ival, for shared references and
 * cycles. Open addressing over pointers; holds a strong reference to each
 * key so that no address is reused while freezing. */
typedef struct {
    PyObject **keys;
    uint64_t *vals;
    size_t cap, len;
    size_t first_cap;  /* capacity of the first table: small for the
                          builder, which empties the memo after each record */
} ptrmap;

static size_t
ptr_slot(const ptrmap *m, PyObject *k)
{
    uint64_t h = pf_hash_mix((uint64_t)(uintptr_t)k);
    size_t i = (size_t)(h & (m->cap - 1));
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int
ptrmap_grow(ptrmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : m->first_cap ? m->first_cap : 1024;
    ptrmap n = {PyMem_Calloc(ncap, sizeof(PyObject *)), PyMem_Calloc(ncap, sizeof(uint64_t)),
                ncap, 0, m->first_cap};
    if (!n.keys || !n.vals) {
        PyMem_Free(n.keys);
        PyMem_Free(n.vals);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            size_t j = ptr_slot(&n, m->keys[i]);
            n.keys[j] = m->keys[i];
            n.vals[j] = m->vals[i];
            n.len++;
        }
    }
    PyMem_Free(m->keys);
    PyMem_Free(m->vals);
    *m = n;
    return 0;
}

static int
ptrmap_get(const ptrmap *m, PyObject *k, uint64_t *v)
{
    if (!m->cap)
        return 0;
    size_t i = ptr_slot(m, k);
    if (!m->keys[i])
        return 0;
    *v = m->vals[i];
    return 1;
}

static int
ptrmap_put(ptrmap *m, PyObject *k, uint64_t v)
{
    if ((m->len + 1) * 2 > m->cap && ptrmap_grow(m) < 0)
        return -1;
    size_t i = ptr_slot(m, k);
    if (!m->keys[i]) {
        m->keys[i] = Py_NewRef(k);
        m->len++;
    }
    m->vals[i] = v;
    return 0;
}

static void
ptrmap_free(ptrmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        Py_XDECREF(m->keys[i]);
    PyMem_Free(m->keys);
    PyMem_Free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->len = 0;
}

/* Empties the memo, keeping a small table for the next record. */
static void
ptrmap_clear(ptrmap *m)
{
    if (m->len == 0)
        return;
    if (m->cap > 64) {
        ptrmap_free(m);
        return;
    }
    for (size_t i = 0; i < m->cap; i++)
        Py_CLEAR(m->keys[i]);
    m->len = 0;
}

typedef struct {
    pf_state *st;
    pf_writer *w;
    ptrmap memo;
    PyObject *path;   /* list of path segments, innermost first, on TypeError */
    int type_error;   /* the pending TypeError is ours: add path segments */
    int allow_pickle; /* objects no rule covers may be pickled (R33) */
    int ordered;      /* dicts and sets of str or bytes keys get an order
                         index (R36) */
    int used_pickle;  /* one was */
    PyObject *names;  /* set of "module:qualname" the image names, or NULL */
    uint64_t *tup;    /* open tuples: (offset, container depth) pairs */
    size_t ntup, captup;
    uint64_t cdepth;  /* containers open */
} enc_ctx;

static int encode(enc_ctx *cx, PyObject *o, int key);
static int encode_keyed(enc_ctx *cx, PyObject *o);

static int
enc_fail(enc_ctx *cx, const pf_error *err, int rc)
{
    fail(cx->st, err, rc);
    return -1;
}

/* On our TypeError, remember where we were (innermost first). */
static void
enc_path(enc_ctx *cx, const char *fmt, PyObject *arg)
{
    if (!cx->type_error || !cx->path)
        return;
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *seg = arg ? PyUnicode_FromFormat(fmt, arg) : PyUnicode_FromString(fmt);
    if (seg) {
        PyList_Append(cx->path, seg);
        Py_DECREF(seg);
    }
    PyErr_Clear();
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

static int
encode_long(enc_ctx *cx, PyObject *o)
{
    pf_error err;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    int rc;
    if (!overflow) {
        rc = pf_write_int(cx->w, (int64_t)x, &err);
    } else {
        PyObject *b = long_to_le(o);
        if (!b)
            return -1;
        rc = pf_write_bigint(cx->w, (const uint8_t *)PyBytes_AS_STRING(b),
                             (size_t)PyBytes_GET_SIZE(b), &err);
        Py_DECREF(b);
    }
    return rc < 0 ? enc_fail(cx, &err, rc) : 0;
}

static int
unsupported(enc_ctx *cx, PyObject *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    const char *base = NULL;
    if (PyDict_Check(o))
        base = "dict";
    else if (PyList_Check(o))
        base = "list";
    else if (PyTuple_Check(o))
        base = "tuple";
    else if (PyUnicode_Check(o))
        base = "str";
    else if (PyLong_Check(o))
        base = "int";
    else if (PyFloat_Check(o))
        base = "float";
    else if (PyBytes_Check(o))
        base = "bytes";
    else if (PyAnySet_Check(o))
        base = "set";
    else if (PyComplex_Check(o))
        base = "complex";
    if (IS_VIEW(o))
        PyErr_Format(PyExc_TypeError,
                     "cannot freeze a view of another image (%.100s); use permafrost.thaw() first",
                     tp->tp_name);
    else if (base)
        PyErr_Format(PyExc_TypeError,
                     "cannot freeze %.100s: subclasses of %s are not supported "
                     "(it would lose its type)", tp->tp_name, base);
    else
        PyErr_Format(PyExc_TypeError, "cannot freeze object of type %.100s", tp->tp_name);
    cx->type_error = 1;
    return -1;
}

/* An open tuple (for the rule of R18 through objects): its offset and the
 * container depth it was opened at. */
static int
tstack_push(enc_ctx *cx, uint64_t pos)
{
    if (cx->ntup == cx->captup) {
        size_t ncap = cx->captup ? cx->captup * 2 : 32;
        uint64_t *n = PyMem_Realloc(cx->tup, ncap * 2 * sizeof(uint64_t));
        if (!n) {
            PyErr_NoMemory();
            return -1;
        }
        cx->tup = n;
        cx->captup = ncap;
    }
    cx->tup[2 * cx->ntup] = pos;
    cx->tup[2 * cx->ntup + 1] = cx->cdepth;
    cx->ntup++;
    return 0;
}

/* A REF to the tuple at pos, written at this point: refused if the tuple
 * is still open with no container in between (only objects): a reader
 * builds objects eagerly and could not make that tuple (R18). */
static int
tuple_ref_ok(enc_ctx *cx, uint64_t pos)
{
    for (size_t i = cx->ntup; i-- > 0;) {
        if (cx->tup[2 * i + 1] != cx->cdepth)
            return 1;
        if (cx->tup[2 * i] == pos) {
            PyErr_SetString(PyExc_ValueError,
                            "cannot freeze a tuple that contains itself through "
                            "the attributes of objects (no container in the cycle)");
            return 0;
        }
    }
    return 1;
}

/* An instance of a class that describe() found plain (its state is its
 * __dict__ of str keys, nothing else): encoded here without calling
 * describe, as describe would. info: (module, qualname, "module:qualname").
 * 1 done, 0 not plain after all (the caller asks describe), -1 error. */
static int
encode_plain(enc_ctx *cx, PyObject *o, PyObject *info)
{
    pf_state *st = cx->st;
    pf_error err;
    int rc, r = -1;
    PyObject *dict = PyObject_GenericGetDict(o, NULL);
    if (!dict)
        return -1;
    if (!PyDict_CheckExact(dict)) {
        Py_DECREF(dict);
        return 0;
    }
    const Py_ssize_t n = PyDict_GET_SIZE(dict);
    PyObject *key = PyTuple_New(n + 1), *k, *val, *shape = NULL;
    if (!key) {
        Py_DECREF(dict);
        return -1;
    }
    PyTuple_SET_ITEM(key, 0, Py_NewRef(Py_TYPE(o)));
    Py_ssize_t i = 0, ppos = 0;
    while (PyDict_Next(dict, &ppos, &k, &val)) {
        if (!PyUnicode_CheckExact(k) || i >= n) {
            Py_DECREF(key);
            Py_DECREF(dict);
            return 0;
        }
        PyTuple_SET_ITEM(key, ++i, Py_NewRef(k));
    }
    shape = PyDict_GetItemWithError(st->plain_shapes, key);
    if (shape) {
        Py_INCREF(shape);
    } else if (!PyErr_Occurred()) {
        shape = PyTuple_New(n + 4);
        if (shape) {
            PyTuple_SET_ITEM(shape, 0, PyLong_FromLong(1));
            PyTuple_SET_ITEM(shape, 1, Py_NewRef(PyTuple_GET_ITEM(info, 0)));
            PyTuple_SET_ITEM(shape, 2, Py_NewRef(PyTuple_GET_ITEM(info, 1)));
            PyTuple_SET_ITEM(shape, 3, PyLong_FromSsize_t(n));
            for (Py_ssize_t j = 0; j < n; j++)
                PyTuple_SET_ITEM(shape, 4 + j, Py_NewRef(PyTuple_GET_ITEM(key, 1 + j)));
            if (!PyTuple_GET_ITEM(shape, 0) || !PyTuple_GET_ITEM(shape, 3) ||
                PyDict_SetItem(st->plain_shapes, key, shape) < 0)
                Py_CLEAR(shape);
        }
    }
    Py_DECREF(key);
    if (!shape)
        goto done;
    if (cx->names && PySet_Add(cx->names, PyTuple_GET_ITEM(info, 2)) < 0)
        goto done; /* share() allows what it froze */
    if (ptrmap_put(&cx->memo, o, pf_writer_pos(cx->w)) < 0)
        goto done;
    if ((rc = pf_write_object_begin(cx->w, (uint64_t)n, &err)) < 0) {
        enc_fail(cx, &err, rc);
        goto done;
    }
    uint64_t prev; /* the shape: stored once, then REFs */
    if (ptrmap_get(&cx->memo, shape, &prev)) {
        rc = pf_write_ref(cx->w, prev, &err);
        if (rc < 0) {
            enc_fail(cx, &err, rc);
            goto done;
        }
    } else {
        const uint64_t spos = pf_writer_pos(cx->w);
        if (encode(cx, shape, 0) < 0)
            goto done;
        if (!ptrmap_get(&cx->memo, shape, &prev) && ptrmap_put(&cx->memo, shape, spos) < 0)
            goto done;
    }
    if (Py_EnterRecursiveCall(" while freezing an object"))
        goto done;
    i = 0;
    ppos = 0;
    r = 1;
    while (PyDict_Next(dict, &ppos, &k, &val)) {
        if (i++ >= n || PyDict_GET_SIZE(dict) != n) {
            PyErr_SetString(PyExc_RuntimeError, "an object's __dict__ changed size during freeze");
            r = -1;
            break;
        }
        Py_INCREF(k);
        Py_INCREF(val);
        int e = encode(cx, val, 0);
        if (e < 0)
            enc_path(cx, ".%S", k);
        Py_DECREF(k);
        Py_DECREF(val);
        if (e < 0) {
            r = -1;
            break;
        }
    }
    if (r == 1 && i != n) {
        PyErr_SetString(PyExc_RuntimeError, "an object's __dict__ changed size during freeze");
        r = -1;
    }
    Py_LeaveRecursiveCall();
done:
    Py_XDECREF(shape);
    Py_DECREF(dict);
    return r;
}

/* A value with no built-in encoding: _objects.describe() says how it is
 * stored (R32-R34), or raises TypeError. */
static int
encode_object(enc_ctx *cx, PyObject *o)
{
    pf_state *st = cx->st;
    pf_error err;
    int rc;
    uint64_t prev;
    if (ptrmap_get(&cx->memo, o, &prev)) {
        rc = pf_write_ref(cx->w, prev, &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (!st->obj_describe) {
        PyErr_SetString(PyExc_RuntimeError, "permafrost._objects is not loaded");
        return -1;
    }
    PyObject *info = PyDict_GetItemWithError(st->plain_types, (PyObject *)Py_TYPE(o));
    if (info) {
        Py_INCREF(info);
        int pr = encode_plain(cx, o, info);
        Py_DECREF(info);
        if (pr != 0)
            return pr < 0 ? -1 : 0;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *d = PyObject_CallFunctionObjArgs(st->obj_describe, o,
                                               cx->allow_pickle ? Py_True : Py_False, NULL);
    if (!d) {
        if (PyErr_ExceptionMatches(PyExc_TypeError))
            cx->type_error = 1;
        return -1;
    }
    if (!PyTuple_CheckExact(d) || PyTuple_GET_SIZE(d) < 2) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_RuntimeError, "describe() gave a bad answer");
        return -1;
    }
    const long kind = PyLong_AsLong(PyTuple_GET_ITEM(d, 0));
    const Py_ssize_t dn = PyTuple_GET_SIZE(d);
    int r = -1;
    if (ptrmap_put(&cx->memo, o, pf_writer_pos(cx->w)) < 0)
        goto done;
    if (Py_EnterRecursiveCall(" while freezing an object")) {
        Py_DECREF(d);
        return -1;
    }
    if (kind == 5) { /* a pickle */
        PyObject *b = PyTuple_GET_ITEM(d, 1);
        if (!PyBytes_Check(b))
            goto bad;
        cx->used_pickle = 1;
        rc = pf_write_pickle(cx->w, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b), &err);
        r = rc < 0 ? enc_fail(cx, &err, rc) : 0;
    } else if (kind == 6 && dn == 3) { /* an array: data, header */
        Py_buffer view;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(d, 1), &view, PyBUF_SIMPLE) < 0)
            goto leave;
        rc = pf_write_array_begin(cx->w, view.buf, (size_t)view.len, &err);
        PyBuffer_Release(&view);
        if (rc < 0) {
            r = enc_fail(cx, &err, rc);
            goto leave;
        }
        r = encode(cx, PyTuple_GET_ITEM(d, 2), 0);
    } else if ((kind >= 1 && kind <= 4) || kind == 7) {
        /* (kind, shape, fields...): 1 object: (values); 2 reduce: args,
         * state; 3 call: args; 4 global: none */
        PyObject *shape = PyTuple_GET_ITEM(d, 1);
        if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) < 3)
            goto bad;
        PyObject *fields;
        if (kind == 1) {
            if ((dn != 3 && dn != 4) || !PyTuple_CheckExact(PyTuple_GET_ITEM(d, 2)))
                goto bad;
            /* (1, shape, values, (module, qualname)): every instance of
             * this class is its __dict__: the next ones go by encode_plain */
            PyObject *pinfo = dn == 4 ? PyTuple_GET_ITEM(d, 3) : NULL;
            if (pinfo && PyTuple_CheckExact(pinfo) && PyTuple_GET_SIZE(pinfo) == 3 &&
                PyDict_SetItem(st->plain_types, (PyObject *)Py_TYPE(o), pinfo) < 0)
                goto leave;
            fields = Py_NewRef(PyTuple_GET_ITEM(d, 2));
        } else {
            fields = PyTuple_GetSlice(d, 2, dn);
            if (!fields)
                goto leave;
        }
        if (cx->names) {
            PyObject *nm = PyUnicode_FromFormat("%S:%S", PyTuple_GET_ITEM(shape, 1),
                                                PyTuple_GET_ITEM(shape, 2));
            if (!nm || PySet_Add(cx->names, nm) < 0) {
                Py_XDECREF(nm);
                Py_DECREF(fields);
                goto leave;
            }
            Py_DECREF(nm);
        }
        const Py_ssize_t n = PyTuple_GET_SIZE(fields);
        rc = pf_write_object_begin(cx->w, (uint64_t)n, &err);
        if (rc < 0) {
            Py_DECREF(fields);
            r = enc_fail(cx, &err, rc);
            goto leave;
        }
        r = encode(cx, shape, 0);
        for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
            PyObject *item = Py_NewRef(PyTuple_GET_ITEM(fields, i));
            r = encode(cx, item, 0);
            Py_DECREF(item);
            if (r < 0) {
                if (kind == 1 && i + 4 < PyTuple_GET_SIZE(shape))
                    enc_path(cx, ".%S", PyTuple_GET_ITEM(shape, 4 + i));
                else
                    enc_path(cx, kind == 2 && i == 1 ? ".__getstate__()" : ".__reduce__()",
                             NULL);
            }
        }
        Py_DECREF(fields);
    } else {
        goto bad;
    }
    goto leave;
bad:
    PyErr_SetString(PyExc_RuntimeError, "describe() gave a bad answer");
leave:
    Py_LeaveRecursiveCall();
done:
    Py_DECREF(d);
    return r;
}

/* Ordered containers (R36): entries sorted by key. */
typedef struct {
    uint64_t pre;   /* the key's order prefix (R36), as a big-endian number */
    PyObject *key;
    Py_ssize_t i;   /* insertion index */
} okey;

/* The order of two keys of one type, str (by code point) or bytes. */
static int
okey_cmp(const void *pa, const void *pb)
{
    const okey *a = (const okey *)pa, *b = (const okey *)pb;
    if (a->pre != b->pre)
        return a->pre < b->pre ? -1 : 1;
    if (PyUnicode_CheckExact(a->key))
        return PyUnicode_Compare(a->key, b->key); /* exact str: no error */
    const Py_ssize_t na = PyBytes_GET_SIZE(a->key), nb = PyBytes_GET_SIZE(b->key);
    int c = memcmp(PyBytes_AS_STRING(a->key), PyBytes_AS_STRING(b->key),
                   (size_t)(na < nb ? na : nb));
    return c ? c : (na > nb) - (na < nb);
}

static uint64_t
okey_prefix(PyObject *k)
{
    uint8_t p[8];
    if (PyUnicode_CheckExact(k))
        pf_order_prefix(PyUnicode_DATA(k), (size_t)PyUnicode_GET_LENGTH(k),
                        (int)PyUnicode_KIND(k), PF_ORDER_STR, p);
    else
        pf_order_prefix(PyBytes_AS_STRING(k), (size_t)PyBytes_GET_SIZE(k), 1, PF_ORDER_BYTES, p);
    uint64_t v = 0;
    for (int j = 0; j < 8; j++)
        v = v << 8 | p[j];
    return v;
}

#if defined(__GNUC__) || defined(__clang__)
#define OBJ_PREFETCH(p) __builtin_prefetch(p)
#else
#define OBJ_PREFETCH(p) ((void)(p))
#endif

/* A dict, set or frozenset whose keys are all exact str or all exact
 * bytes, with an order index (R36): the records in sorted order, the
 * insertion order as ranks. 1 done, 0 not eligible (nothing written), -1
 * error. */
static int
encode_ordered(enc_ctx *cx, PyObject *o, int type, Py_ssize_t n)
{
    pf_error err;
    int rc, r = -1;
    /* The entries, as owned references (a value's encoding may run Python
     * code): kv[per * i] the key of entry i, kv[per * i + 1] its value. */
    const Py_ssize_t per = type == PF_DICT ? 2 : 1;
    PyObject **kv = PyMem_Calloc((size_t)(n * per), sizeof(PyObject *));
    okey *ks = NULL;
    uint64_t *ranks = NULL;
    if (!kv) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t got = 0;
    if (type == PF_DICT) {
        Py_ssize_t at = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &at, &k, &v) && got <= n) {
            if (got < n) {
                kv[2 * got] = Py_NewRef(k);
                kv[2 * got + 1] = Py_NewRef(v);
            }
            got++;
        }
    } else {
        PyObject *lst = PySequence_List(o);
        if (!lst)
            goto done;
        got = PyList_GET_SIZE(lst);
        for (Py_ssize_t i = 0; i < got && i < n; i++)
            kv[i] = Py_NewRef(PyList_GET_ITEM(lst, i));
        Py_DECREF(lst);
    }
    if (got != n) {
        PyErr_Format(PyExc_RuntimeError, "%s changed size during freeze", Py_TYPE(o)->tp_name);
        goto done;
    }
    PyTypeObject *kt = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *t = Py_TYPE(kv[per * i]);
        if ((t != &PyUnicode_Type && t != &PyBytes_Type) || (kt && t != kt)) {
            r = 0;
            goto done;
        }
        kt = t;
    }
    ks = PyMem_Malloc(sizeof(okey) * (size_t)n);
    ranks = PyMem_Malloc(sizeof(uint64_t) * (size_t)n);
    if (!ks || !ranks) {
        PyErr_NoMemory();
        goto done;
    }
    /* The order of the keys: by their 8-byte order prefixes, then (equal
     * prefixes) by comparing them. No Python code runs: the keys are exact
     * str or bytes. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = kv[per * i];
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_CheckExact(k) && PyUnicode_READY(k) < 0)
            goto done;
#endif
        ks[i].key = k;
        ks[i].i = i;
        ks[i].pre = okey_prefix(k);
    }
    qsort(ks, (size_t)n, sizeof(okey), okey_cmp);
    for (Py_ssize_t j = 0; j < n; j++)
        ranks[ks[j].i] = (uint64_t)j;
    uint64_t pos = pf_writer_pos(cx->w);
    if (ptrmap_put(&cx->memo, o, pos) < 0)
        goto done;
    if ((rc = pf_write_container_begin(cx->w, type, (uint64_t)n, &err)) < 0) {
        enc_fail(cx, &err, rc);
        goto done;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        /* The keys are read in sorted order, not where they lie in memory:
         * ask for them ahead, their objects first and then their bytes
         * (a Python str keeps them in the object for these sizes). */
        if (j + 16 < n)
            OBJ_PREFETCH(ks[j + 16].key);
        if (j + 8 < n) {
            if (type == PF_DICT)
                OBJ_PREFETCH(kv[2 * ks[j + 8].i + 1]);
            OBJ_PREFETCH((const char *)ks[j + 8].key + 64);
        }
        PyObject *k = ks[j].key;
        if ((rc = pf_write_item(cx->w, &err)) < 0) {
            enc_fail(cx, &err, rc);
            goto done;
        }
        if (encode(cx, k, 1) < 0)
            goto done;
        if ((rc = pf_write_key_done(cx->w, &err)) < 0) {
            enc_fail(cx, &err, rc);
            goto done;
        }
        if (type == PF_DICT && encode(cx, kv[2 * ks[j].i + 1], 0) < 0) {
            enc_path(cx, "[%R]", k);
            goto done;
        }
    }
    if ((rc = pf_write_end_ordered(cx->w, ranks, &err)) < 0) {
        enc_fail(cx, &err, rc);
        goto done;
    }
    r = 1;
done:
    PyMem_Free(ks);
    PyMem_Free(ranks);
    for (Py_ssize_t i = 0; i < n * per; i++)
        Py_XDECREF(kv[i]);
    PyMem_Free(kv);
    return r;
}

static int
encode_container(enc_ctx *cx, PyObject *o, int type)
{
    pf_error err;
    int rc;
    Py_ssize_t n = PyObject_Size(o);
    if (n < 0)
        return -1;
    if (cx->ordered && type != PF_LIST && n > 0) {
        int r = encode_ordered(cx, o, type, n);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    uint64_t pos = pf_writer_pos(cx->w);
    if (ptrmap_put(&cx->memo, o, pos) < 0)
        return -1;
    if ((rc = pf_write_container_begin(cx->w, type, (uint64_t)n, &err)) < 0)
        return enc_fail(cx, &err, rc);
    if (type == PF_LIST) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i >= PyList_GET_SIZE(o)) {
                PyErr_SetString(PyExc_RuntimeError, "list changed size during freeze");
                return -1;
            }
            PyObject *item = Py_NewRef(PyList_GET_ITEM(o, i));
            rc = pf_write_item(cx->w, &err);
            int r = rc < 0 ? enc_fail(cx, &err, rc) : encode(cx, item, 0);
            if (r < 0) {
                PyObject *idx = PyLong_FromSsize_t(i);
                if (idx) {
                    enc_path(cx, "[%S]", idx);
                    Py_DECREF(idx);
                }
                Py_DECREF(item);
                return -1;
            }
            Py_DECREF(item);
        }
    } else if (type == PF_DICT) {
        Py_ssize_t ppos = 0, seen = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &ppos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            int r = 0;
            if (++seen > n) {
                PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during freeze");
                r = -1;
            }
            if (r == 0 && (rc = pf_write_item(cx->w, &err)) < 0)
                r = enc_fail(cx, &err, rc);
            if (r == 0 && encode(cx, k, 1) < 0) {
                enc_path(cx, "[<key %R>]", k);
                r = -1;
            }
            if (r == 0 && (rc = pf_write_key_done(cx->w, &err)) < 0)
                r = enc_fail(cx, &err, rc);
            if (r == 0 && encode(cx, v, 0) < 0) {
                enc_path(cx, "[%R]", k);
                r = -1;
            }
            Py_DECREF(k);
            Py_DECREF(v);
            if (r < 0)
                return -1;
        }
    } else {
        PyObject *it = PyObject_GetIter(o);
        if (!it)
            return -1;
        PyObject *k;
        while ((k = PyIter_Next(it)) != NULL) {
            int r = 0;
            if ((rc = pf_write_item(cx->w, &err)) < 0)
                r = enc_fail(cx, &err, rc);
            if (r == 0 && encode(cx, k, 1) < 0) {
                enc_path(cx, "{%R}", k);
                r = -1;
            }
            if (r == 0 && (rc = pf_write_key_done(cx->w, &err)) < 0)
                r = enc_fail(cx, &err, rc);
            Py_DECREF(k);
            if (r < 0) {
                Py_DECREF(it);
                return -1;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
    }
    if ((rc = pf_write_end(cx->w, &err)) < 0) {
        if (rc == PF_EINVAL) {
            PyErr_Format(PyExc_RuntimeError, "%s changed size during freeze",
                         Py_TYPE(o)->tp_name);
            return -1;
        }
        return enc_fail(cx, &err, rc);
    }
    return 0;
}

/* Appends the ival of `o`. `key`: o is a dict key or set item. */
static int
encode(enc_ctx *cx, PyObject *o, int key)
{
    pf_error err;
    int rc;
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyUnicode_Type) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0)
            return -1;
#endif
        rc = pf_write_str(cx->w, PyUnicode_DATA(o), (size_t)PyUnicode_GET_LENGTH(o),
                          PyUnicode_KIND(o), PyUnicode_IS_ASCII(o), &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (tp == &PyLong_Type)
        return encode_long(cx, o);
    if (tp == &PyFloat_Type) {
        rc = pf_write_float(cx->w, PyFloat_AS_DOUBLE(o), &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (tp == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        uint64_t prev;
        /* A tuple reachable twice is stored once; one that only its
         * container holds (and our caller) cannot be reached twice. */
        if (n > 0 && Py_REFCNT(o) > 2 && ptrmap_get(&cx->memo, o, &prev)) {
            if (!tuple_ref_ok(cx, prev))
                return -1;
            rc = pf_write_ref(cx->w, prev, &err);
            return rc < 0 ? enc_fail(cx, &err, rc) : 0;
        }
        if (Py_EnterRecursiveCall(" while freezing a tuple"))
            return -1;
        const uint64_t tpos = pf_writer_pos(cx->w);
        const size_t ntup = cx->ntup; /* restored on the way out */
        if (n > 0 && Py_REFCNT(o) > 2 && (ptrmap_put(&cx->memo, o, tpos) < 0 ||
                                          tstack_push(cx, tpos) < 0)) {
            Py_LeaveRecursiveCall();
            return -1;
        }
        rc = pf_write_tuple_begin(cx->w, (uint64_t)n, &err);
        if (rc < 0) {
            Py_LeaveRecursiveCall();
            cx->ntup = ntup;
            return enc_fail(cx, &err, rc);
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            /* Every caller of encode() holds one reference of its own, so
             * that Py_REFCNT > 2 means "reachable from elsewhere too". */
            PyObject *item = Py_NewRef(PyTuple_GET_ITEM(o, i));
            int r = encode(cx, item, key);
            Py_DECREF(item);
            if (r < 0) {
                PyObject *idx = PyLong_FromSsize_t(i);
                if (idx) {
                    enc_path(cx, "[%S]", idx);
                    Py_DECREF(idx);
                }
                Py_LeaveRecursiveCall();
                cx->ntup = ntup;
                return -1;
            }
        }
        Py_LeaveRecursiveCall();
        cx->ntup = ntup;
        return 0;
    }
    if (o == Py_None) {
        rc = pf_write_none(cx->w, &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (tp == &PyBool_Type) {
        rc = pf_write_bool(cx->w, o == Py_True, &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (tp == &PyBytes_Type) {
        rc = pf_write_bytes(cx->w, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o), &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (tp == &PyComplex_Type) {
        Py_complex c = PyComplex_AsCComplex(o);
        rc = pf_write_complex(cx->w, c.real, c.imag, &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    int type = 0;
    if (tp == &PyDict_Type)
        type = PF_DICT;
    else if (tp == &PyList_Type)
        type = PF_LIST;
    else if (tp == &PySet_Type)
        type = PF_SET;
    else if (tp == &PyFrozenSet_Type)
        type = PF_FROZENSET;
    if (!type) {
        if (IS_VIEW(o))
            return unsupported(cx, o);
        if (key)
            return encode_keyed(cx, o);
        int r = encode_object(cx, o);
        if (r < 0 && cx->type_error && !cx->allow_pickle &&
            (PyDict_Check(o) || PyList_Check(o) || PyAnySet_Check(o)) &&
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();   /* the message that names the base type */
            return unsupported(cx, o);
        }
        return r;
    }
    if (key && type != PF_FROZENSET) {
        PyErr_Format(PyExc_TypeError, "unhashable type: '%.100s'", tp->tp_name);
        return -1;
    }
    uint64_t prev;
    if (ptrmap_get(&cx->memo, o, &prev)) {
        rc = pf_write_ref(cx->w, prev, &err);
        return rc < 0 ? enc_fail(cx, &err, rc) : 0;
    }
    if (Py_EnterRecursiveCall(" while freezing a container"))
        return -1;
    cx->cdepth++;
    int r = encode_container(cx, o, type);
    cx->cdepth--;
    Py_LeaveRecursiveCall();
    return r;
}

/* A key of a type the core does not know: a keyed value (R35), its proxy
 * from _objects.key_proxy, then the object. */
static int
encode_keyed(enc_ctx *cx, PyObject *o)
{
    pf_state *st = cx->st;
    pf_error err;
    PyTypeObject *tp = Py_TYPE(o);
    if (PyObject_Hash(o) == -1)
        return -1;
    PyObject *kp = st->obj_key_proxy ? PyObject_CallOneArg(st->obj_key_proxy, o) : NULL;
    if (!kp && PyErr_Occurred())
        return -1;
    if (!kp || kp == Py_None) {
        Py_XDECREF(kp);
        PyErr_Format(PyExc_TypeError, "an object of type %.100s cannot be a dict key "
                     "or set item in an image (no key rule keeps its equality; see "
                     "docs/OBJECTS.md, \"Keys\")", tp->tp_name);
        cx->type_error = 1;
        return -1;
    }
    PyObject *proxy = PyTuple_CheckExact(kp) && PyTuple_GET_SIZE(kp) == 2
                          ? PyTuple_GET_ITEM(kp, 1) : NULL;
    const long flags = proxy ? PyLong_AsLong(PyTuple_GET_ITEM(kp, 0)) : -1;
    PyTypeObject *pt = proxy ? Py_TYPE(proxy) : NULL;
    /* the proxy is of a core key type, so that encoding it cannot come
     * back here for the same object */
    if (flags < 0 || flags > 1 ||
        !(pt == &PyLong_Type || pt == &PyFloat_Type || pt == &PyComplex_Type ||
          pt == &PyUnicode_Type || pt == &PyBytes_Type || pt == &PyTuple_Type ||
          pt == &PyFrozenSet_Type)) {
        Py_DECREF(kp);
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "key_proxy() gave a bad answer");
        return -1;
    }
    int rc = pf_write_keyed_begin(cx->w, (unsigned)flags, &err);
    if (rc < 0) {
        Py_DECREF(kp);
        return enc_fail(cx, &err, rc);
    }
    Py_INCREF(proxy);
    int r = encode(cx, proxy, 1);
    Py_DECREF(proxy);
    Py_DECREF(kp);
    return r < 0 ? -1 : encode_object(cx, o);
}

/* Re-raises our TypeError with the path of the offending value, from
 * `root`: $['a'][3]. */
static void
enc_add_path(enc_ctx *cx, const char *root)
{
    if (cx->type_error && cx->path && PyErr_ExceptionMatches(PyExc_TypeError)) {
        /* Re-raise with the path of the offending value: $['a'][3]. */
        PyObject *exc_type, *exc_value, *exc_tb;
        PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
        PyObject *msg = exc_value ? PyObject_Str(exc_value) : NULL;
        if (msg && PyList_Reverse(cx->path) == 0) {
            PyObject *empty = PyUnicode_FromString("");
            PyObject *joined = empty ? PyUnicode_Join(empty, cx->path) : NULL;
            if (joined) {
                PyErr_Format(PyExc_TypeError, "%U at %s%U", msg, root, joined);
                Py_XDECREF(exc_type);
                Py_XDECREF(exc_value);
                Py_XDECREF(exc_tb);
                exc_type = exc_value = exc_tb = NULL;
            }
            Py_XDECREF(joined);
            Py_XDECREF(empty);
        }
        Py_XDECREF(msg);
        if (exc_type || exc_value)
            PyErr_Restore(exc_type, exc_value, exc_tb);
    }
}

/* The options of freeze, dumps and share: a bit mask. */
#define FREEZE_ALLOW_PICKLE 1
#define FREEZE_ORDERED 2

/* Freezes `obj` into a malloc'd image buffer. */
static int
freeze_to_buffer(pf_state *st, PyObject *obj, uint8_t **out, uint64_t *len,
                 int options, PyObject *names)
{
    pf_error err;
    uint8_t rnd[24];
    int rc = pf_os_random(rnd, sizeof rnd, &err);
    if (rc < 0) {
        fail(st, &err, rc);
        return -1;
    }
    uint64_t seed;
    memcpy(&seed, rnd + 16, 8);
    enc_ctx cx;
    memset(&cx, 0, sizeof cx);
    cx.st = st;
    cx.allow_pickle = (options & FREEZE_ALLOW_PICKLE) != 0;
    cx.ordered = (options & FREEZE_ORDERED) != 0;
    cx.names = names;
    cx.path = PyList_New(0);
    if (!cx.path)
        return -1;
    rc = pf_writer_new(&cx.w, seed, &err);
    if (rc < 0) {
        Py_DECREF(cx.path);
        fail(st, &err, rc);
        return -1;
    }
    uint64_t root = pf_writer_pos(cx.w);
    int r = encode(&cx, obj, 0);
    if (r == 0) {
        rc = pf_writer_finish(cx.w, root, rnd, out, len, &err);
        if (rc < 0)
            r = enc_fail(&cx, &err, rc);
    }
    pf_writer_free(cx.w);
    ptrmap_free(&cx.memo);
    PyMem_Free(cx.tup);
    if (r < 0)
        enc_add_path(&cx, "$");
    Py_DECREF(cx.path);
    return r;
}

/* ------------------------------------------------------------ builder */

/* permafrost.Builder: the streaming builder (src/build.c). One object is
 * the root level and owns the core builder; b.dict(key) and b.list(key)
 * return level objects of the same type that refer to it. A level is open
 * while the core's level at its depth is the one it opened (serials).
 * Writing to a level closes any deeper level still open. */
typedef struct BuilderObject {
    PyObject_HEAD
    pf_state *st;
    PyObject *module;
    struct BuilderObject *root;  /* NULL for the root itself */
    unsigned depth;              /* 1 = root */
    uint64_t serial;
    int type;                    /* PF_DICT or PF_LIST */
    /* root only: */
    pf_builder *b;               /* NULL once finished or abandoned */
    PyObject *path;              /* as given (str or bytes) */
    PyObject *fspath;            /* bytes, for the core */
    int mode;
    int busy;                    /* a call released the GIL */
    int done;                    /* 1 published, 2 abandoned, 3 failed */
    uint64_t final_entries;      /* the stats when the core builder went */
    uint64_t final_bytes;
    uint64_t *serials;           /* per open depth */
    size_t serials_cap;
    uint64_t next_serial;
    enc_ctx cx;
} BuilderObject;

static BuilderObject *
broot(BuilderObject *self)
{
    return self->root ? self->root : self;
}

static int
builder_fail(BuilderObject *r, const pf_error *err, int rc)
{
    if (rc == PF_EIO)
        raise_os_path(err, r->path);
    else
        fail(r->st, err, rc);
    return -1;
}

/* Makes self the innermost open level (closing deeper ones), or raises. */
static int
builder_ready(BuilderObject *self)
{
    BuilderObject *r = broot(self);
    if (r->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the builder is busy in another thread");
        return -1;
    }
    if (!r->b) {
        PyErr_SetString(PyExc_ValueError, r->done == 1 ? "the builder is closed: its image "
                        "is published" : "the builder was abandoned: no image was published");
        return -1;
    }
    unsigned depth = pf_builder_depth(r->b);
    if (self->depth > depth || r->serials[self->depth - 1] != self->serial) {
        PyErr_SetString(PyExc_ValueError, "this nested builder is closed");
        return -1;
    }
    while (depth > self->depth) {
        pf_error err;
        int rc;
        r->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = pf_builder_close(r->b, &err);
        Py_END_ALLOW_THREADS
        r->busy = 0;
        if (rc < 0)
            return builder_fail(r, &err, rc);
        depth--;
    }
    return 0;
}

static void
builder_reset_cx(BuilderObject *r)
{
    ptrmap_clear(&r->cx.memo);
    r->cx.type_error = 0;
    if (r->cx.path && PyList_GET_SIZE(r->cx.path))
        (void)PyList_SetSlice(r->cx.path, 0, PyList_GET_SIZE(r->cx.path), NULL);
}

/* Encodes o at the core's current position; `what` names it in errors. */
static int
builder_encode(BuilderObject *r, PyObject *o, int key, const char *what)
{
    r->cx.w = pf_builder_writer(r->b);
    int rc = encode(&r->cx, o, key);
    if (rc < 0)
        enc_add_path(&r->cx, what);
    builder_reset_cx(r);
    return rc;
}

/* One entry at level self (ready): key is NULL at a list level. */
static int
builder_put(BuilderObject *self, PyObject *key, PyObject *value)
{
    BuilderObject *r = broot(self);
    pf_error err;
    int rc = pf_builder_begin(r->b, &err);
    if (rc < 0)
        return builder_fail(r, &err, rc);
    if (key) {
        if (builder_encode(r, key, 1, "key") < 0)
            return -1;
        if ((rc = pf_builder_key_done(r->b, &err)) < 0)
            return builder_fail(r, &err, rc);
    }
    if (builder_encode(r, value, 0, key ? "value" : "item") < 0)
        return -1;
    if ((rc = pf_builder_end(r->b, &err)) < 0)
        return builder_fail(r, &err, rc);
    return 0;
}

static int
builder_want(BuilderObject *self, int type, const char *what)
{
    if (self->type != type) {
        PyErr_Format(PyExc_TypeError, "%s needs a builder of a %s (this one builds a %s)",
                     what, type == PF_DICT ? "dict" : "list",
                     self->type == PF_DICT ? "dict" : "list");
        return -1;
    }
    return builder_ready(self);
}

static int
Builder_ass_subscript(BuilderObject *self, PyObject *key, PyObject *value)
{
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "a builder cannot delete entries");
        return -1;
    }
    if (builder_want(self, PF_DICT, "b[key] = value") < 0)
        return -1;
    return builder_put(self, key, value);
}

static PyObject *
Builder_append(BuilderObject *self, PyObject *value)
{
    if (builder_want(self, PF_LIST, "append()") < 0 || builder_put(self, NULL, value) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Builder_extend(BuilderObject *self, PyObject *values)
{
    if (builder_want(self, PF_LIST, "extend()") < 0)
        return NULL;
    PyObject *it = PyObject_GetIter(values);
    if (!it)
        return NULL;
    PyObject *v;
    while ((v = PyIter_Next(it)) != NULL) {
        int r = builder_ready(self) < 0 ? -1 : builder_put(self, NULL, v);
        Py_DECREF(v);
        if (r < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* Pairs from an iterable of 2-item iterables, as dict.update does. */
static int
builder_update_pairs(BuilderObject *self, PyObject *pairs)
{
    PyObject *it = PyObject_GetIter(pairs);
    if (!it)
        return -1;
    PyObject *item;
    Py_ssize_t n = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        int r = -1;
        PyObject *t = PyTuple_CheckExact(item) ? Py_NewRef(item) : PySequence_Tuple(item);
        if (!t || PyTuple_GET_SIZE(t) != 2) {
            if (t || PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "update() sequence element #%zd "
                             "is not a (key, value) pair", n);
            }
        } else {
            r = builder_ready(self) < 0 ? -1
                    : builder_put(self, PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1));
        }
        Py_XDECREF(t);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return -1;
        }
        n++;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
Builder_update(BuilderObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *other = NULL;
    if (!PyArg_UnpackTuple(args, "update", 0, 1, &other))
        return NULL;
    if (builder_want(self, PF_DICT, "update()") < 0)
        return NULL;
    if (other) {
        int r;
        if (PyDict_CheckExact(other)) {
            PyObject *items = PyDict_Items(other);
            r = items ? builder_update_pairs(self, items) : -1;
            Py_XDECREF(items);
        } else if (PyList_CheckExact(other) || PyTuple_CheckExact(other)) {
            r = builder_update_pairs(self, other); /* no keys() to look for */
        } else {
            PyObject *keys_attr = PyObject_GetAttrString(other, "keys");
            if (!keys_attr) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    return NULL;
                PyErr_Clear();
            }
            if (keys_attr) {
                /* a mapping: its keys, and other[key] for each */
                PyObject *keys = PyObject_CallNoArgs(keys_attr);
                Py_DECREF(keys_attr);
                PyObject *it = keys ? PyObject_GetIter(keys) : NULL;
                Py_XDECREF(keys);
                if (!it)
                    return NULL;
                PyObject *k;
                r = 0;
                while (r == 0 && (k = PyIter_Next(it)) != NULL) {
                    PyObject *v = PyObject_GetItem(other, k);
                    r = !v || builder_ready(self) < 0 ? -1 : builder_put(self, k, v);
                    Py_XDECREF(v);
                    Py_DECREF(k);
                }
                Py_DECREF(it);
                if (PyErr_Occurred())
                    r = -1;
            } else {
                r = builder_update_pairs(self, other);
            }
        }
        if (r < 0)
            return NULL;
    }
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyObject *items = PyDict_Items(kwds);
        int r = items ? builder_update_pairs(self, items) : -1;
        Py_XDECREF(items);
        if (r < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
builder_open_level(BuilderObject *self, PyObject *args, int type)
{
    PyObject *key = NULL;
    if (!PyArg_UnpackTuple(args, type == PF_DICT ? "dict" : "list", 0, 1, &key))
        return NULL;
    if (builder_ready(self) < 0)
        return NULL;
    if ((self->type == PF_DICT) != (key != NULL)) {
        PyErr_SetString(PyExc_TypeError, self->type == PF_DICT
                        ? "a nested builder of a dict level needs its key: b.dict(key)"
                        : "a nested builder of a list level takes no key: b.dict()");
        return NULL;
    }
    BuilderObject *r = broot(self);
    if (r->serials_cap <= self->depth) {
        size_t ncap = r->serials_cap * 2;
        uint64_t *ns = PyMem_Realloc(r->serials, ncap * sizeof(uint64_t));
        if (!ns)
            return PyErr_NoMemory();
        r->serials = ns;
        r->serials_cap = ncap;
    }
    PyTypeObject *tp = Py_TYPE(self);
    BuilderObject *lv = (BuilderObject *)tp->tp_alloc(tp, 0);
    if (!lv)
        return NULL;
    pf_error err;
    int rc = pf_builder_begin(r->b, &err);
    if (rc == 0 && key) {
        if (builder_encode(r, key, 1, "key") < 0)
            rc = PF_PYERR;
        else
            rc = pf_builder_key_done(r->b, &err);
    }
    if (rc == 0)
        rc = pf_builder_open(r->b, type, &err);
    if (rc < 0) {
        Py_DECREF(lv);
        if (rc != PF_PYERR)
            builder_fail(r, &err, rc);
        return NULL;
    }
    lv->st = r->st;
    lv->module = Py_NewRef(r->module);
    lv->root = (BuilderObject *)Py_NewRef(r);
    lv->depth = self->depth + 1;
    lv->serial = ++r->next_serial;
    lv->type = type;
    r->serials[self->depth] = lv->serial;
    return (PyObject *)lv;
}

static PyObject *
Builder_dict(BuilderObject *self, PyObject *args)
{
    return builder_open_level(self, args, PF_DICT);
}

static PyObject *
Builder_list(BuilderObject *self, PyObject *args)
{
    return builder_open_level(self, args, PF_LIST);
}

static void
builder_abandon(BuilderObject *r, int why)
{
    if (r->b) {
        pf_builder_stats(r->b, &r->final_entries, &r->final_bytes);
        pf_builder_free(r->b);
        r->b = NULL;
        r->done = why;
    }
}

static PyObject *
Builder_close(BuilderObject *self, PyObject *Py_UNUSED(ignored))
{
    BuilderObject *r = broot(self);
    if (!r->b && r->done == 1 && !self->root)
        Py_RETURN_NONE; /* closing twice is harmless */
    if (self->root && (!r->b || self->depth > pf_builder_depth(r->b) ||
                       r->serials[self->depth - 1] != self->serial))
        Py_RETURN_NONE; /* already closed (by its parent going on) */
    if (builder_ready(self) < 0)
        return NULL;
    pf_error err;
    int rc;
    r->busy = 1;
    if (self->root) {
        Py_BEGIN_ALLOW_THREADS
        rc = pf_builder_close(r->b, &err);
        Py_END_ALLOW_THREADS
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = pf_builder_finish(r->b, r->mode, &err);
        Py_END_ALLOW_THREADS
    }
    r->busy = 0;
    if (rc < 0) {
        builder_fail(r, &err, rc);
        if (!self->root)
            builder_abandon(r, 3);
        return NULL;
    }
    if (!self->root) {
        pf_builder_stats(r->b, &r->final_entries, &r->final_bytes);
        pf_builder_free(r->b);
        r->b = NULL;
        r->done = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Builder_abort(BuilderObject *self, PyObject *Py_UNUSED(ignored))
{
    BuilderObject *r = broot(self);
    if (r->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the builder is busy in another thread");
        return NULL;
    }
    builder_abandon(r, 2);
    Py_RETURN_NONE;
}

static PyObject *
Builder_enter(BuilderObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
Builder_exit(BuilderObject *self, PyObject *args)
{
    PyObject *et = Py_None;
    if (PyTuple_GET_SIZE(args) > 0)
        et = PyTuple_GET_ITEM(args, 0);
    if (et != Py_None) {
        /* An exception leaves no image: the whole build is abandoned,
         * from a nested level's with-block too. */
        BuilderObject *r = broot(self);
        if (!r->busy)
            builder_abandon(r, 2);
        Py_RETURN_FALSE;
    }
    PyObject *res = Builder_close(self, NULL);
    if (!res)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_FALSE;
}

static PyObject *
Builder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "kind", "memory", "ordered", "_mode", NULL};
    PyObject *path, *memobj = NULL;
    const char *kind = "dict";
    unsigned long long memory = 256ull << 20;
    int mode = PF_PUBLISH_DEFAULT, ordered = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|s$Opi:Builder", kwlist, &path, &kind,
                                     &memobj, &ordered, &mode))
        return NULL;
    if (memobj) {
        if (!PyLong_Check(memobj))
            return PyErr_Format(PyExc_TypeError, "memory must be an int (bytes), not %.100s",
                                Py_TYPE(memobj)->tp_name);
        int overflow = 0;
        long long m = PyLong_AsLongLongAndOverflow(memobj, &overflow);
        if (m == -1 && PyErr_Occurred())
            return NULL;
        /* up to 2^48 bytes (256 TiB): more cannot be meant */
        if (overflow || m < (1ll << 20) || m > (1ll << 48))
            return PyErr_Format(PyExc_ValueError,
                                "memory must be 1 MiB (1048576) to 2**48 bytes, not %R", memobj);
        memory = (unsigned long long)m;
    }
    int t;
    if (strcmp(kind, "dict") == 0)
        t = PF_DICT;
    else if (strcmp(kind, "list") == 0)
        t = PF_LIST;
    else
        return PyErr_Format(PyExc_ValueError, "kind must be 'dict' or 'list', not %R",
                            PyTuple_GET_SIZE(args) > 1 ? PyTuple_GET_ITEM(args, 1)
                                                       : PyDict_GetItemString(kwds, "kind"));
    PyObject *fspath = NULL;
    if (!PyUnicode_FSConverter(path, &fspath))
        return NULL;
    {
        /* A folder at the path would only fail at the final rename. */
        PyObject *os = PyImport_ImportModule("os.path");
        PyObject *isdir = os ? PyObject_CallMethod(os, "isdir", "O", fspath) : NULL;
        Py_XDECREF(os);
        int dir = isdir ? PyObject_IsTrue(isdir) : -1;
        Py_XDECREF(isdir);
        if (dir != 0) {
            PyObject *eargs = dir > 0 ? Py_BuildValue("(isO)", EISDIR,
                                                      "the image path is a folder", path) : NULL;
            if (eargs) {
                PyErr_SetObject(PyExc_IsADirectoryError, eargs);
                Py_DECREF(eargs);
            }
            Py_DECREF(fspath);
            return NULL;
        }
    }
    BuilderObject *self = (BuilderObject *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(fspath);
        return NULL;
    }
    self->st = PyType_GetModuleState(type);
    self->module = Py_NewRef(PyType_GetModule(type));
    self->path = Py_NewRef(path);
    self->fspath = fspath;
    self->mode = mode;
    self->depth = 1;
    self->type = t;
    self->serials = PyMem_Malloc(8 * sizeof(uint64_t));
    self->cx.path = PyList_New(0);
    if (!self->serials || !self->cx.path) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->serials_cap = 8;
    self->serial = ++self->next_serial;
    self->serials[0] = self->serial;
    self->cx.st = self->st;
    self->cx.memo.first_cap = 16;
    self->cx.ordered = ordered;
    pf_error err;
    int rc;
    const char *cpath = PyBytes_AS_STRING(fspath);
    pf_builder *b = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = pf_builder_new_ex(cpath, t, (uint64_t)memory, ordered ? PF_BUILD_ORDERED : 0, &b,
                           &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        builder_fail(self, &err, rc);
        Py_DECREF(self);
        return NULL;
    }
    self->b = b;
    return (PyObject *)self;
}

static int
Builder_traverse(BuilderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->root);
    Py_VISIT(self->path);
    return 0;
}

static int
Builder_clear(BuilderObject *self)
{
    Py_CLEAR(self->root);
    return 0;
}

static void
Builder_dealloc(BuilderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (!self->root) {
        builder_abandon(self, 2); /* never closed: nothing is published */
        ptrmap_free(&self->cx.memo);
        PyMem_Free(self->cx.tup);
        Py_XDECREF(self->cx.path);
        PyMem_Free(self->serials);
    }
    Py_CLEAR(self->root);
    Py_XDECREF(self->path);
    Py_XDECREF(self->fspath);
    Py_XDECREF(self->module);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
Builder_get_entries(BuilderObject *self, void *Py_UNUSED(c))
{
    BuilderObject *r = broot(self);
    uint64_t n = r->final_entries;
    if (r->b)
        pf_builder_stats(r->b, &n, NULL);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
Builder_get_bytes(BuilderObject *self, void *Py_UNUSED(c))
{
    BuilderObject *r = broot(self);
    uint64_t n = r->final_bytes;
    if (r->b)
        pf_builder_stats(r->b, NULL, &n);
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *
Builder_get_closed(BuilderObject *self, void *Py_UNUSED(c))
{
    BuilderObject *r = broot(self);
    int open = r->b && self->depth <= pf_builder_depth(r->b) &&
               r->serials[self->depth - 1] == self->serial;
    return PyBool_FromLong(!open);
}

static PyObject *
Builder_get_path(BuilderObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(broot(self)->path);
}

static PyObject *
Builder_get_kind(BuilderObject *self, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(self->type == PF_DICT ? "dict" : "list");
}

static PyObject *
Builder_repr(BuilderObject *self)
{
    BuilderObject *r = broot(self);
    uint64_t n = r->final_entries;
    if (r->b)
        pf_builder_stats(r->b, &n, NULL);
    const char *state = r->done == 1 ? "published" : !r->b ? "abandoned" : "open";
    return PyUnicode_FromFormat("<permafrost.Builder of a %s, level %u, %s, %llu entries, %R>",
                                self->type == PF_DICT ? "dict" : "list", self->depth,
                                state, (unsigned long long)n, r->path);
}

static PyMethodDef Builder_methods[] = {
    {"append", (PyCFunction)Builder_append, METH_O, "append(value): the next item of a list."},
    {"extend", (PyCFunction)Builder_extend, METH_O, "extend(values): append each value."},
    {"update", (PyCFunction)(void (*)(void))Builder_update, METH_VARARGS | METH_KEYWORDS,
     "update([other], **kw): b[k] = v for each pair, as dict.update."},
    {"dict", (PyCFunction)Builder_dict, METH_VARARGS,
     "dict(key) (list level: dict()): a nested builder whose dict is the value of key."},
    {"list", (PyCFunction)Builder_list, METH_VARARGS,
     "list(key) (list level: list()): a nested builder whose list is the value of key."},
    {"close", (PyCFunction)Builder_close, METH_NOARGS,
     "close(): end this level; at the root, finish and publish the image."},
    {"abort", (PyCFunction)Builder_abort, METH_NOARGS,
     "abort(): abandon the whole build: no image, no temporary file."},
    {"__enter__", (PyCFunction)Builder_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Builder_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Builder_getset[] = {
    {"entries", (getter)Builder_get_entries, NULL,
     "Entries written so far, at every level.", NULL},
    {"bytes_written", (getter)Builder_get_bytes, NULL, "Bytes of image written so far.", NULL},
    {"closed", (getter)Builder_get_closed, NULL, "Whether this level is closed.", NULL},
    {"path", (getter)Builder_get_path, NULL, "The image's path.", NULL},
    {"kind", (getter)Builder_get_kind, NULL, "'dict' or 'list': what this level builds.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot Builder_slots[] = {
    {Py_tp_doc,
     "Builder(path, kind='dict', *, memory=268435456, ordered=False)\n"
     "\n"
     "Write an image whose root is a dict (b[key] = value, b.update(...)) or a\n"
     "list (kind='list': b.append(value), b.extend(...)) one entry at a time,\n"
     "in about `memory` bytes whatever the number of entries: entries go to\n"
     "disk as they come and the hash index is built at close() from sorted\n"
     "runs. Values are anything freeze() accepts. b.dict(key) / b.list(key)\n"
     "(at a list level: b.dict() / b.list()) return a nested builder whose\n"
     "container is the value of key, for levels too large to hold; writing\n"
     "to a level closes the nested ones still open.\n"
     "\n"
     "A key written twice keeps its first place and takes its last value, as\n"
     "in a dict (1, 1.0 and True are one key). close() (or leaving a with\n"
     "block normally) publishes the image atomically, as freeze() does; an\n"
     "exception in the with block, abort(), or a builder dropped unclosed\n"
     "leaves no image and no temporary file.\n"
     "\n"
     "ordered=True gives every dict level, and every dict and set in the\n"
     "values, whose keys are all str or all bytes an order index (prefix and\n"
     "range queries, docs/ORDERED.md), as freeze(..., ordered=True) does: a\n"
     "level's keys are sorted when it ends, in the same memory budget."},
    {Py_tp_new, Builder_new},
    {Py_tp_dealloc, Builder_dealloc},
    {Py_tp_traverse, Builder_traverse},
    {Py_tp_clear, Builder_clear},
    {Py_tp_methods, Builder_methods},
    {Py_tp_getset, Builder_getset},
    {Py_tp_repr, Builder_repr},
    {Py_mp_ass_subscript, Builder_ass_subscript},
    {0, NULL}};

static PyType_Spec Builder_spec = {
    "permafrost.Builder", sizeof(BuilderObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, Builder_slots};

/* ------------------------------------------------------------ thaw */

typedef struct {
    ImageObject *im;
    PyObject *memo;   /* offset -> object, for shared values and cycles */
    /* Tuples being built (R18). Only a list item or a dict value may lead
     * back to one (as in Python, where only a mutable container closes a
     * cycle); anywhere else the incomplete tuple would be hashed or seen. */
    uint64_t *busy;
    size_t nbusy, capbusy, base;
    unsigned odepth;  /* objects and arrays being built, nested */
} thaw_ctx;

static int
busy_push(thaw_ctx *tx, uint64_t pos)
{
    if (tx->nbusy == tx->capbusy) {
        size_t ncap = tx->capbusy ? tx->capbusy * 2 : 16;
        uint64_t *nb = PyMem_Realloc(tx->busy, ncap * sizeof(uint64_t));
        if (!nb) {
            PyErr_NoMemory();
            return -1;
        }
        tx->busy = nb;
        tx->capbusy = ncap;
    }
    tx->busy[tx->nbusy++] = pos;
    return 0;
}

static int
busy_forbidden(const thaw_ctx *tx, uint64_t pos)
{
    for (size_t i = tx->base; i < tx->nbusy; i++)
        if (tx->busy[i] == pos)
            return 1;
    return 0;
}

static PyObject *thaw_at(thaw_ctx *tx, uint64_t pos, uint64_t *next);
static int memo_put(thaw_ctx *tx, uint64_t pos, PyObject *o);

static PyObject *
thaw_field(void *ctx, uint64_t pos, uint64_t *next)
{
    return thaw_at((thaw_ctx *)ctx, pos, next);
}

static int
thaw_keep(void *ctx, uint64_t pos, PyObject *o)
{
    return memo_put((thaw_ctx *)ctx, pos, o);
}

/* thaw_at for an item of a list or a dict value: a cycle may close here. */
static PyObject *thaw_at(thaw_ctx *tx, uint64_t pos, uint64_t *next);

static PyObject *
thaw_open(thaw_ctx *tx, uint64_t pos)
{
    size_t saved = tx->base;
    tx->base = tx->nbusy;
    PyObject *r = thaw_at(tx, pos, NULL);
    tx->base = saved;
    return r;
}

static PyObject *thaw_at(thaw_ctx *tx, uint64_t pos, uint64_t *next);

static int
memo_put(thaw_ctx *tx, uint64_t pos, PyObject *o)
{
    PyObject *k = PyLong_FromUnsignedLongLong(pos);
    if (!k)
        return -1;
    int r = PyDict_SetItem(tx->memo, k, o);
    Py_DECREF(k);
    return r;
}

static PyObject *
memo_get(thaw_ctx *tx, uint64_t pos)
{
    PyObject *k = PyLong_FromUnsignedLongLong(pos);
    if (!k)
        return NULL;
    PyObject *o = PyDict_GetItemWithError(tx->memo, k);
    Py_DECREF(k);
    return o; /* borrowed */
}

static PyObject *
thaw_container(thaw_ctx *tx, const pf_val *v)
{
    ImageObject *im = tx->im;
    pf_error err;
    int rc;
    PyObject *res;
    if (v->type == PF_LIST)
        res = PyList_New(0);
    else if (v->type == PF_DICT)
        res = PyDict_New();
    else
        res = PySet_New(NULL);
    if (!res)
        return NULL;
    /* A frozenset cannot contain itself: no cycle goes through it. */
    if (v->type != PF_FROZENSET && memo_put(tx, v->pos, res) < 0)
        goto error;
    if (v->type == PF_LIST) {
        for (uint64_t i = 0; i < v->u.c.count; i++) {
            uint64_t p;
            if ((rc = pf_list_item(im->img, v, i, &p, &err)) < 0) {
                fail(im->st, &err, rc);
                goto error;
            }
            PyObject *item = thaw_open(tx, p);
            if (!item)
                goto error;
            int r = PyList_Append(res, item);
            Py_DECREF(item);
            if (r < 0)
                goto error;
        }
    } else {
        uint64_t cur = 0, kp, vp;
        for (uint64_t i = 0; i < v->u.c.count; i++) {
            if (next_record(im, v, &cur, &kp, &vp) < 0)
                goto error;
            PyObject *k = thaw_at(tx, kp, NULL);
            if (!k)
                goto error;
            if (PyObject_Hash(k) == -1) {
                Py_DECREF(k);
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    PyErr_Format(im->st->CorruptImageError,
                                 "corrupt image: unhashable dict key or set item (R21)");
                }
                goto error;
            }
            int r;
            if (v->type == PF_DICT) {
                PyObject *val = thaw_open(tx, vp);
                if (!val) {
                    Py_DECREF(k);
                    goto error;
                }
                r = PyDict_SetItem(res, k, val);
                Py_DECREF(val);
            } else {
                r = PySet_Add(res, k);
            }
            Py_DECREF(k);
            if (r < 0)
                goto error;
        }
    }
    if (v->type == PF_FROZENSET) {
        PyObject *fs = PyFrozenSet_New(res);
        Py_DECREF(res);
        if (fs && memo_put(tx, v->pos, fs) < 0)
            Py_CLEAR(fs);
        return fs;
    }
    return res;
error:
    Py_DECREF(res);
    return NULL;
}

static PyObject *
thaw_at(thaw_ctx *tx, uint64_t pos, uint64_t *next)
{
    ImageObject *im = tx->im;
    pf_val v;
    pf_error err;
    int rc = pf_read(im->img, pos, &v, &err);
    if (rc < 0)
        return fail(im->st, &err, rc);
    if (next)
        *next = v.next;
    if (v.type == PF_TUPLE || v.type == PF_LIST || v.type == PF_DICT || v.type == PF_SET ||
        v.type == PF_FROZENSET) {
        PyObject *seen = memo_get(tx, v.pos);
        if (seen) {
            if (v.type == PF_TUPLE && busy_forbidden(tx, v.pos))
                return PyErr_Format(im->st->CorruptImageError,
                                    "corrupt image: tuple contains itself (at offset %llu)",
                                    (unsigned long long)v.pos);
            return Py_NewRef(seen);
        }
        if (PyErr_Occurred())
            return NULL;
        if (Py_EnterRecursiveCall(" while thawing"))
            return NULL;
        PyObject *r;
        if (v.type == PF_TUPLE) {
            uint64_t n = v.u.tup.count;
            if (n > v.end - v.u.tup.first) {
                Py_LeaveRecursiveCall();
                return PyErr_Format(im->st->CorruptImageError,
                                    "corrupt image: tuple longer than its bytes");
            }
            /* Registered before its items: a cycle through a list inside it
             * comes back to this very tuple. */
            r = PyTuple_New((Py_ssize_t)n);
            if (r && (memo_put(tx, v.pos, r) < 0 || busy_push(tx, v.pos) < 0))
                Py_CLEAR(r);
            uint64_t p = v.u.tup.first;
            for (uint64_t i = 0; r && i < n; i++) {
                PyObject *item = thaw_at(tx, p, &p);
                if (!item) {
                    Py_CLEAR(r);
                    break;
                }
                PyTuple_SET_ITEM(r, (Py_ssize_t)i, item);
            }
            if (r)
                tx->nbusy--;
        } else {
            r = thaw_container(tx, &v);
        }
        Py_LeaveRecursiveCall();
        return r;
    }
    if (v.type == PF_OBJECT || v.type == PF_ARRAY) {
        PyObject *seen = memo_get(tx, v.pos);
        if (seen)
            return Py_NewRef(seen);
        if (PyErr_Occurred())
            return NULL;
        obj_reader rd = {thaw_field, thaw_keep, tx};
        uint64_t end;
        if (tx->odepth >= PF_MAX_OBJECT_DEPTH) /* as decode_ext bounds it */
            return PyErr_Format(PyExc_RecursionError, "objects in an image nested "
                                "deeper than %d while thawing them", PF_MAX_OBJECT_DEPTH);
        if (v.type == PF_OBJECT) {
            tx->odepth++;
            PyObject *o = build_object(im, &v, &rd, &end);
            tx->odepth--;
            return o;
        }
        tx->odepth++;
        PyObject *a = build_array(im, &v, &rd, &end);
        tx->odepth--;
        if (!a)
            return NULL;
        /* a copy of its own, writable, as thaw gives of everything */
        PyObject *c = PyObject_CallMethod(a, "copy", NULL);
        Py_DECREF(a);
        if (c && memo_put(tx, v.pos, c) < 0)
            Py_CLEAR(c);
        return c;
    }
    if (v.type == PF_PICKLE)
        return decode_pickle(im, &v);
    dec_ctx cx;
    cx.im = im;
    cx.depth = 0;
    cx.memo = NULL;
    cx.on = 0;
    cx.odepth = 0;
    cx.want_end = 1;
    PyObject *r = decode_val(&cx, &v, 0); /* a scalar: no memo needed */
    Py_XDECREF(cx.memo);
    return r;
}

/* thaw() of a plain object: a deep copy in which every view is thawed.
 * memo: id(original) -> copy, so shared references and cycles survive. */
static PyObject *
thaw_image_at(ImageObject *im, uint64_t pos)
{
    if (!im->img)
        return PyErr_Format(im->st->ClosedImageError, "the image is closed");
    thaw_ctx tx = {im, PyDict_New(), NULL, 0, 0, 0, 0};
    if (!tx.memo)
        return NULL;
    PyObject *r = thaw_at(&tx, pos, NULL);
    Py_DECREF(tx.memo);
    PyMem_Free(tx.busy);
    return r;
}

/* The image whose decoded root tuple `t` is, or NULL. */
static ImageObject *
root_tuple_image(PyObject *t)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *x = PyTuple_GET_ITEM(t, i);
        if (IS_VIEW(x)) {
            ImageObject *im = ((ViewObject *)x)->image;
            return im->root_tuple == t ? im : NULL;
        }
    }
    return NULL;
}

static PyObject *
thaw_obj(PyObject *memo, PyObject *o)
{
    if (IS_VIEW(o)) {
        ViewObject *vw = (ViewObject *)o;
        return thaw_image_at(vw->image, vw->v.pos);
    }
    PyTypeObject *tp = Py_TYPE(o);
    if (!(tp == &PyTuple_Type || tp == &PyList_Type || tp == &PyDict_Type ||
          tp == &PySet_Type || tp == &PyFrozenSet_Type))
        return Py_NewRef(o);
    PyObject *id = PyLong_FromVoidPtr(o);
    if (!id)
        return NULL;
    PyObject *seen = PyDict_GetItemWithError(memo, id);
    if (seen || PyErr_Occurred()) {
        Py_DECREF(id);
        return seen ? Py_NewRef(seen) : NULL;
    }
    if (Py_EnterRecursiveCall(" while thawing")) {
        Py_DECREF(id);
        return NULL;
    }
    PyObject *res = NULL, *tmp = NULL, *it = NULL, *x;
    if (tp == &PyTuple_Type || tp == &PyFrozenSet_Type) {
        /* Immutable: items first (a cycle needs a mutable container, whose
         * copy is registered before its items). */
        tmp = PyList_New(0);
        it = tmp ? PyObject_GetIter(o) : NULL;
        while (it && (x = PyIter_Next(it)) != NULL) {
            PyObject *c = thaw_obj(memo, x);
            Py_DECREF(x);
            if (!c || PyList_Append(tmp, c) < 0) {
                Py_XDECREF(c);
                goto done;
            }
            Py_DECREF(c);
        }
        if (!it || PyErr_Occurred())
            goto done;
        /* A cycle may have copied this object meanwhile. */
        seen = PyDict_GetItemWithError(memo, id);
        if (seen) {
            res = Py_NewRef(seen);
            goto done;
        }
        res = tp == &PyTuple_Type ? PyList_AsTuple(tmp) : PyFrozenSet_New(tmp);
    } else {
        res = tp == &PyList_Type ? PyList_New(0) : tp == &PyDict_Type ? PyDict_New()
                                                                     : PySet_New(NULL);
        if (!res || PyDict_SetItem(memo, id, res) < 0)
            goto fail;
        if (tp == &PyDict_Type) {
            Py_ssize_t pos = 0;
            PyObject *k, *v;
            tmp = PyDict_Items(o);
            if (!tmp)
                goto fail;
            for (pos = 0; pos < PyList_GET_SIZE(tmp); pos++) {
                PyObject *kv = PyList_GET_ITEM(tmp, pos);
                k = thaw_obj(memo, PyTuple_GET_ITEM(kv, 0));
                v = k ? thaw_obj(memo, PyTuple_GET_ITEM(kv, 1)) : NULL;
                int r = v ? PyDict_SetItem(res, k, v) : -1;
                Py_XDECREF(k);
                Py_XDECREF(v);
                if (r < 0)
                    goto fail;
            }
        } else {
            it = PyObject_GetIter(o);
            while (it && (x = PyIter_Next(it)) != NULL) {
                PyObject *c = thaw_obj(memo, x);
                Py_DECREF(x);
                int r = c ? (tp == &PyList_Type ? PyList_Append(res, c) : PySet_Add(res, c)) : -1;
                Py_XDECREF(c);
                if (r < 0)
                    goto fail;
            }
            if (!it || PyErr_Occurred())
                goto fail;
        }
        goto done;
    }
    if (res && PyDict_SetItem(memo, id, res) < 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(res);
done:
    Py_XDECREF(it);
    Py_XDECREF(tmp);
    Py_DECREF(id);
    Py_LeaveRecursiveCall();
    return res;
}

/* ------------------------------------------------------------ module functions */

/* The options argument of freeze, dumps and _share (FREEZE_*), or -1. */
static int
freeze_options(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > (FREEZE_ALLOW_PICKLE | FREEZE_ORDERED)) {
        PyErr_SetString(PyExc_ValueError, "unknown freeze options");
        return -1;
    }
    return (int)v;
}

static PyObject *
mod_freeze(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    /* A third argument, for the tests, picks the publish mode (a
     * PF_PUBLISH_* number): the pointer files of Win32 on every OS. */
    if (nargs < 2 || nargs > 4)
        return PyErr_Format(PyExc_TypeError, "freeze(obj, path[, mode, options])");
    int mode = PF_PUBLISH_DEFAULT;
    int options = nargs == 4 ? freeze_options(args[3]) : 0;
    if (options < 0)
        return NULL;
    if (nargs >= 3 && args[2] != Py_None) {
        long m = PyLong_AsLong(args[2]);
        if (m == -1 && PyErr_Occurred())
            return NULL;
        mode = m < 0 || m > 255 ? 255 : (int)m; /* the core refuses 255 */
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(args[1], &path))
        return NULL;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    if (freeze_to_buffer(st, args[0], &buf, &len, options, NULL) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    pf_error err;
    int rc;
    const char *cpath = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    rc = pf_image_publish(cpath, buf, len, mode, &err);
    Py_END_ALLOW_THREADS
    pf_free(buf);
    if (rc < 0) {
        if (rc == PF_EIO) {
            raise_os_path(&err, args[1]);
        } else {
            raise_pf(st, &err, rc);
        }
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    Py_RETURN_NONE;
}

static PyObject *
mod_dumps(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "dumps(obj[, options])");
    int options = nargs == 2 ? freeze_options(args[1]) : 0;
    if (options < 0)
        return NULL;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    if (freeze_to_buffer(st, args[0], &buf, &len, options, NULL) < 0)
        return NULL;
    PyObject *b = len <= (uint64_t)PY_SSIZE_T_MAX
                      ? PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len)
                      : PyErr_NoMemory();
    pf_free(buf);
    return b;
}

static PyObject *
mod_thaw(PyObject *module, PyObject *obj)
{
    pf_state *st = PyModule_GetState(module);
    ImageObject *im = NULL;
    if (Py_TYPE(obj) == st->Image_Type)
        im = (ImageObject *)obj;                 /* thaw(image): its root */
    else if (PyTuple_CheckExact(obj))
        im = root_tuple_image(obj);              /* an image's root tuple */
    if (im) {
        if (image_check_open(im) < 0)
            return NULL;
        return thaw_image_at(im, pf_image_root(im->img));
    }
    PyObject *memo = PyDict_New();
    if (!memo)
        return NULL;
    PyObject *r = thaw_obj(memo, obj);
    Py_DECREF(memo);
    return r;
}

static PyObject *
mod_image_of(PyObject *module, PyObject *obj)
{
    (void)module;
    if (!IS_VIEW(obj))
        return PyErr_Format(PyExc_TypeError, "image_of() expects a permafrost view, not %.100s",
                            Py_TYPE(obj)->tp_name);
    return Py_NewRef(((ViewObject *)obj)->image);
}

/* An attached segment `name` (str): ImageGoneError when there is none. */
static ImageObject *
image_open_shm(pf_state *st, PyObject *module, PyObject *name)
{
    const char *cname = PyUnicode_AsUTF8(name);
    if (!cname)
        return NULL;
    ImageObject *im = image_alloc(st, module);
    if (!im)
        return NULL;
    im->shm_name = Py_NewRef(name);
    pf_image *img = NULL;
    pf_error err;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pf_image_open_shm(cname, &img, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(im);
        if (rc == PF_ENOTFOUND)
            return (ImageObject *)PyErr_Format(
                st->ImageGoneError, "the shared image %R is gone: its owner closed it "
                "or exited", name);
        return (ImageObject *)raise_pf(st, &err, rc);
    }
    image_set(im, img);
    return im;
}

/* _attach(path, id[, copy]) and _attach_shm(name, id): the Image at a
 * path (mapped, or read into private memory as the pickled view's was), or
 * in a shared-memory segment, whose id is `id`, opened once per process
 * (the registry keeps it for later unpickles; a segment's or a copy's key
 * has a third item, None or True, so that a name never meets a path and a
 * copy never meets a mapping). */
enum { ATTACH_PATH, ATTACH_COPY, ATTACH_SHM };

static PyObject *
attach(PyObject *module, PyObject *where, PyObject *want_id, int how, PyObject *trust)
{
    pf_state *st = PyModule_GetState(module);
    const int shm = how == ATTACH_SHM;
    if (trust && (!PyTuple_CheckExact(trust) || PyTuple_GET_SIZE(trust) != 4))
        return PyErr_Format(PyExc_TypeError, "_attach: bad trust");
    /* An image attached with another trust is another Image object. */
    PyObject *key = trust ? PyTuple_Pack(4, where, want_id, shm ? Py_None
                                         : how == ATTACH_COPY ? Py_True : Py_False, trust)
                  : shm ? PyTuple_Pack(3, where, want_id, Py_None)
                  : how == ATTACH_COPY ? PyTuple_Pack(3, where, want_id, Py_True)
                  : PyTuple_Pack(2, where, want_id);
    if (!key)
        return NULL;
    PyObject *found = PyDict_GetItemWithError(st->registry, key);
    if (found && !((ImageObject *)found)->closed && ((ImageObject *)found)->img) {
        Py_DECREF(key);
        return Py_NewRef(found);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    ImageObject *im = shm ? image_open_shm(st, module, where)
                          : image_open_path(st, module, where, how == ATTACH_COPY);
    if (!im) {
        Py_DECREF(key);
        return NULL;
    }
    uint8_t id[16];
    pf_image_id(im->img, id);
    if (memcmp(id, PyBytes_AS_STRING(want_id), 16) != 0) {
        if (shm)
            PyErr_Format(st->StaleImageError, "the shared segment %R holds another "
                         "image than the one this view was pickled from", where);
        else
            PyErr_Format(st->StaleImageError,
                         "the image at %R was replaced since this view was pickled "
                         "(image id %s expected)", where, "differs");
        goto fail;
    }
    if (trust)
        Py_SETREF(im->trust, Py_NewRef(trust));
    if (PyDict_SetItem(st->registry, key, (PyObject *)im) < 0)
        goto fail;
    Py_DECREF(key);
    return (PyObject *)im;
fail:
    Py_DECREF(im);
    Py_DECREF(key);
    return NULL;
}

static PyObject *
mod_attach(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 4 || !PyBytes_Check(args[1]) ||
        PyBytes_GET_SIZE(args[1]) != 16)
        return PyErr_Format(PyExc_TypeError, "_attach(path, id: 16 bytes[, copy, trust])");
    int copy = nargs >= 3 ? PyObject_IsTrue(args[2]) : 0;
    if (copy < 0)
        return NULL;
    return attach(module, args[0], args[1], copy ? ATTACH_COPY : ATTACH_PATH,
                  nargs == 4 ? args[3] : NULL);
}

static PyObject *
mod_attach_shm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || nargs > 3 || !PyUnicode_Check(args[0]) || !PyBytes_Check(args[1]) ||
        PyBytes_GET_SIZE(args[1]) != 16)
        return PyErr_Format(PyExc_TypeError, "_attach_shm(name: str, id: 16 bytes[, trust])");
    return attach(module, args[0], args[1], ATTACH_SHM, nargs == 3 ? args[2] : NULL);
}

/* _share(obj, name): freezes obj into the new shared-memory segment `name`
 * and returns its Image, owned by this process. */
static PyObject *
mod_share(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if (nargs < 2 || nargs > 3 || !PyUnicode_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "_share(obj, name: str[, options])");
    const char *name = PyUnicode_AsUTF8(args[1]);
    if (!name)
        return NULL;
    int options = nargs == 3 ? freeze_options(args[2]) : 0;
    if (options < 0)
        return NULL;
    const int allow_pickle = (options & FREEZE_ALLOW_PICKLE) != 0;
    uint8_t *buf = NULL;
    uint64_t len = 0;
    PyObject *names = PySet_New(NULL);
    if (!names)
        return NULL;
    if (freeze_to_buffer(st, args[0], &buf, &len, options, names) < 0) {
        Py_DECREF(names);
        return NULL;
    }
    /* The sharer allows what it froze itself: every process that attaches
     * through a pickled view may import those names (and unpickle, if it
     * allowed pickles). */
    PyObject *fnames = PyFrozenSet_New(names);
    Py_DECREF(names);
    PyObject *trust = fnames ? Py_BuildValue("(OONO)", Py_False, allow_pickle ? Py_True : Py_False,
                                             fnames, st->empty_tuple)
                             : NULL;
    if (!trust) {
        pf_free(buf);
        return NULL;
    }
    ImageObject *im = image_alloc(st, module);
    if (!im) {
        Py_DECREF(trust);
        pf_free(buf);
        return NULL;
    }
    Py_SETREF(im->trust, trust);
    pf_image *img = NULL;
    pf_error err;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pf_image_share(name, buf, len, &img, &err);
    Py_END_ALLOW_THREADS
    pf_free(buf);
    if (rc < 0) {
        Py_DECREF(im);
        return rc == PF_EIO ? raise_os(st->SharedMemoryError, &err, err.msg)
                            : raise_pf(st, &err, rc);
    }
    image_set(im, img);
    im->shm_name = Py_NewRef(args[1]);
    im->owner_pid = pf_process_id();
    return (PyObject *)im;
}

/* _shm_unlink(name) -> bool: removes a segment's name (True), False if
 * there was none. For the registry's sweep of dead owners' segments. */
static PyObject *
mod_shm_unlink(PyObject *module, PyObject *name)
{
    pf_state *st = PyModule_GetState(module);
    const char *cname = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (!cname)
        return PyErr_Occurred() ? NULL
                                : PyErr_Format(PyExc_TypeError, "_shm_unlink(name: str)");
    pf_error err;
    int rc = pf_shm_unlink(cname, &err);
    if (rc == PF_ENOTFOUND)
        Py_RETURN_FALSE;
    if (rc < 0)
        return raise_pf(st, &err, rc);
    Py_RETURN_TRUE;
}

/* _process_start(pid) -> int or None: None if the process is gone. */
static PyObject *
mod_process_start(PyObject *module, PyObject *pid_obj)
{
    pf_state *st = PyModule_GetState(module);
    unsigned long long pid = PyLong_AsUnsignedLongLong(pid_obj);
    if (pid == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE; /* negative or huge: no such process */
    }
    uint64_t start = 0;
    pf_error err;
    int rc = pf_process_start((uint64_t)pid, &start, &err);
    if (rc == PF_ENOTFOUND)
        Py_RETURN_NONE;
    if (rc < 0)
        return raise_pf(st, &err, rc);
    return PyLong_FromUnsignedLongLong(start);
}

static PyObject *
mod_set_shm_hook(PyObject *module, PyObject *hook)
{
    pf_state *st = PyModule_GetState(module);
    Py_XSETREF(st->shm_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

/* _view_at(image, pos, type): the view of the container at `pos`. */
static PyObject *
mod_view_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if ((nargs != 3 && nargs != 4) || Py_TYPE(args[0]) != st->Image_Type)
        return PyErr_Format(PyExc_TypeError, "_view_at(image, pos, type[, missing])");
    ImageObject *im = (ImageObject *)args[0];
    if (image_check_open(im) < 0)
        return NULL;
    unsigned long long pos = PyLong_AsUnsignedLongLong(args[1]);
    if (pos == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    long type = PyLong_AsLong(args[2]);
    if (type == -1 && PyErr_Occurred())
        return NULL;
    pf_val v;
    pf_error err;
    int rc = pf_read(im->img, (uint64_t)pos, &v, &err);
    if (rc < 0)
        return fail(st, &err, rc);
    if (v.type != type || v.pos != pos ||
        !(type == PF_DICT || type == PF_LIST || type == PF_SET || type == PF_FROZENSET))
        return PyErr_Format(st->CorruptImageError,
                            "no container of the pickled type at offset %llu", pos);
    PyObject *r = make_view(im, &v);
    if (r && nargs == 4 && args[3] != Py_None && type == PF_DICT)
        ((ViewObject *)r)->missing = Py_NewRef(args[3]);
    return r;
}

/* _set_object_hooks(describe, resolve, setstate, unpickle, make_array,
 * no_trust, ObjectStateError, key_proxy): python/permafrost/_objects.py,
 * at import. */
static PyObject *
mod_set_object_hooks(PyObject *module, PyObject *args)
{
    pf_state *st = PyModule_GetState(module);
    PyObject *a, *b, *c, *d, *e, *f, *g, *h;
    if (!PyArg_ParseTuple(args, "OOOOOO!OO", &a, &b, &c, &d, &e, &PyTuple_Type, &f, &g,
                          &h))
        return NULL;
    Py_XSETREF(st->obj_key_proxy, Py_NewRef(h));
    Py_XSETREF(st->ObjectStateError, Py_NewRef(g));
    Py_XSETREF(st->obj_describe, Py_NewRef(a));
    Py_XSETREF(st->obj_resolve, Py_NewRef(b));
    Py_XSETREF(st->obj_setstate, Py_NewRef(c));
    Py_XSETREF(st->obj_unpickle, Py_NewRef(d));
    Py_XSETREF(st->obj_array, Py_NewRef(e));
    Py_XSETREF(st->no_trust, Py_NewRef(f));
    Py_RETURN_NONE;
}

/* _value_span(view, key) -> (image, offset, length): where the bytes of
 * view[key] lie in the image, for a bytes value or an array's data
 * (permafrost.buffer_of makes the memoryview). */
static PyObject *
mod_value_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !IS_VIEW(args[0]))
        return PyErr_Format(PyExc_TypeError, "buffer_of(view, key) takes a dict or list "
                            "view and a key or index");
    ViewObject *vw = (ViewObject *)args[0];
    ImageObject *im = vw->image;
    if (image_check_open(im) < 0)
        return NULL;
    uint64_t vp = 0;
    if (vw->v.type == PF_DICT) {
        int r = view_lookup(vw, args[1], NULL, &vp);
        if (r < 0)
            return NULL;
        if (r == 0) {
            PyErr_SetObject(PyExc_KeyError, args[1]);
            return NULL;
        }
    } else if (vw->v.type == PF_LIST) {
        Py_ssize_t i = PyNumber_AsSsize_t(args[1], PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (list_index(vw, i, &vp) < 0)
            return NULL;
    } else {
        return PyErr_Format(PyExc_TypeError, "buffer_of() takes a dict or list view, not "
                            "%.100s", Py_TYPE(vw)->tp_name);
    }
    pf_val v;
    pf_error err;
    int rc = pf_read(im->img, vp, &v, &err);
    if (rc < 0)
        return fail(im->st, &err, rc);
    const uint8_t *data;
    uint64_t n;
    if (v.type == PF_BYTES) {
        data = v.u.s.data;
        n = v.u.s.len;
    } else if (v.type == PF_ARRAY) {
        data = v.u.arr.data;
        n = v.u.arr.nbytes;
    } else {
        return PyErr_Format(PyExc_TypeError, "buffer_of(): the value at %R is not bytes "
                            "or an array", args[1]);
    }
    return Py_BuildValue("(OKK)", (PyObject *)im, (unsigned long long)(data - im->base),
                         (unsigned long long)n);
}

/* _from_buffer(buf, trust): Image.from_buffer, with a trust (unpickling). */
static PyObject *
mod_from_buffer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if (nargs != 2 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != 4)
        return PyErr_Format(PyExc_TypeError, "_from_buffer(buf, trust)");
    ImageObject *im = image_open_buffer(st, module, args[0]);
    if (im)
        Py_SETREF(im->trust, Py_NewRef(args[1]));
    return (PyObject *)im;
}

/* _set_trust(image, trust): what the image's objects may import (a tuple
 * made by _objects.make_trust); resolved shapes are forgotten. */
static PyObject *
mod_set_trust(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if (nargs != 2 || Py_TYPE(args[0]) != st->Image_Type || !PyTuple_CheckExact(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != 4)
        return PyErr_Format(PyExc_TypeError, "_set_trust(image, trust: 4-tuple)");
    ImageObject *im = (ImageObject *)args[0];
    Py_SETREF(im->trust, Py_NewRef(args[1]));
    Py_CLEAR(im->shapes);
    memset(im->shape_res, 0, sizeof im->shape_res); /* borrowed from it */
    Py_RETURN_NONE;
}

static PyObject *
mod_set_view_classes(PyObject *module, PyObject *args)
{
    pf_state *st = PyModule_GetState(module);
    PyObject *k, *v, *i;
    if (!PyArg_ParseTuple(args, "OOO", &k, &v, &i))
        return NULL;
    Py_XSETREF(st->keys_cls, Py_NewRef(k));
    Py_XSETREF(st->values_cls, Py_NewRef(v));
    Py_XSETREF(st->items_cls, Py_NewRef(i));
    Py_RETURN_NONE;
}

/* _limits(work_factor, work_base, value_cache): sets the work budget and
 * the value cache's (None keeps a value); returns the values now in force.
 * A smaller value cache budget empties the cache. */
static PyObject *
mod_limits(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pf_state *st = PyModule_GetState(module);
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError,
                            "_limits(work_factor, work_base, value_cache)");
    uint64_t v[3] = {st->work_factor, st->work_base, st->vcache_budget};
    for (int i = 0; i < 3; i++) {
        if (args[i] == Py_None)
            continue;
        unsigned long long x = PyLong_AsUnsignedLongLong(args[i]);
        if (x == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        if (i == 0 && (x == 0 || x > 1000000000ull))
            return PyErr_Format(PyExc_ValueError, "work_factor must be 1 to 10**9");
        if (i == 2 && x > ((unsigned long long)1 << 40))
            return PyErr_Format(PyExc_ValueError, "value_cache must be 0 to 2**40 bytes");
        v[i] = x;
    }
    st->work_factor = v[0];
    st->work_base = v[1];
    if (v[2] < st->vcache_budget)
        vcache_drop(st, NULL);
    st->vcache_budget = (size_t)v[2];
    return Py_BuildValue("{sKsKsK}", "work_factor", (unsigned long long)v[0],
                         "work_base", (unsigned long long)v[1],
                         "value_cache", (unsigned long long)v[2]);
}

/* _value_cache_info() -> (bytes, entries): what the value cache holds. */
static PyObject *
mod_value_cache_info(PyObject *module, PyObject *unused)
{
    (void)unused;
    pf_state *st = PyModule_GetState(module);
    Py_ssize_t n = 0;
    if (st->vcache)
        for (size_t i = 0; i < 2 * (size_t)VCACHE_SETS; i++)
            n += st->vcache[i].im != NULL;
    return Py_BuildValue("(nn)", (Py_ssize_t)st->vcache_bytes, n);
}

static PyMethodDef module_methods[] = {
    {"freeze", (PyCFunction)(void (*)(void))mod_freeze, METH_FASTCALL,
     "freeze(obj, path): write the image of obj to path, atomically."},
    {"dumps", (PyCFunction)(void (*)(void))mod_dumps, METH_FASTCALL,
     "dumps(obj[, options]) -> bytes: the image of obj."},
    {"thaw", (PyCFunction)mod_thaw, METH_O,
     "thaw(x): a deep copy of a view (or a tuple holding views) into plain objects."},
    {"image_of", (PyCFunction)mod_image_of, METH_O, "image_of(view) -> the view's Image."},
    {"_attach", (PyCFunction)(void (*)(void))mod_attach, METH_FASTCALL, NULL},
    {"_share", (PyCFunction)(void (*)(void))mod_share, METH_FASTCALL, NULL},
    {"_attach_shm", (PyCFunction)(void (*)(void))mod_attach_shm, METH_FASTCALL, NULL},
    {"_shm_unlink", (PyCFunction)mod_shm_unlink, METH_O, NULL},
    {"_process_start", (PyCFunction)mod_process_start, METH_O, NULL},
    {"_set_shm_hook", (PyCFunction)mod_set_shm_hook, METH_O, NULL},
    {"_view_at", (PyCFunction)(void (*)(void))mod_view_at, METH_FASTCALL, NULL},
    {"_set_view_classes", (PyCFunction)mod_set_view_classes, METH_VARARGS, NULL},
    {"_value_cache_info", (PyCFunction)mod_value_cache_info, METH_NOARGS, NULL},
    {"_set_object_hooks", (PyCFunction)mod_set_object_hooks, METH_VARARGS, NULL},
    {"_set_trust", (PyCFunction)(void (*)(void))mod_set_trust, METH_FASTCALL, NULL},
    {"_from_buffer", (PyCFunction)(void (*)(void))mod_from_buffer, METH_FASTCALL, NULL},
    {"_value_span", (PyCFunction)(void (*)(void))mod_value_span, METH_FASTCALL, NULL},
    {"_limits", (PyCFunction)(void (*)(void))mod_limits, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL}};

/* ------------------------------------------------------------ module init */

static PyObject *
new_type(PyObject *module, PyType_Spec *spec, int disallow_new)
{
    PyObject *t = PyType_FromModuleAndSpec(module, spec, NULL);
    if (t && disallow_new)
        ((PyTypeObject *)t)->tp_new = NULL;
    return t;
}

static int
module_exec(PyObject *module)
{
    pf_state *st = PyModule_GetState(module);
#define TYPE(field, spec, nonew)                                           \
    do {                                                                  \
        st->field = (PyTypeObject *)new_type(module, &spec, nonew);       \
        if (!st->field)                                                   \
            return -1;                                                    \
    } while (0)
    TYPE(Image_Type, Image_spec, 0);
    TYPE(DictView_Type, Dict_spec, 1);
    TYPE(ListView_Type, List_spec, 1);
    TYPE(SetView_Type, Set_spec, 1);
    TYPE(FrozenSetView_Type, FrozenSet_spec, 1);
    TYPE(Iter_Type, Iter_spec, 1);
    TYPE(Builder_Type, Builder_spec, 0);
#undef TYPE
    if (PyModule_AddType(module, st->Image_Type) < 0 ||
        PyModule_AddType(module, st->DictView_Type) < 0 ||
        PyModule_AddType(module, st->ListView_Type) < 0 ||
        PyModule_AddType(module, st->SetView_Type) < 0 ||
        PyModule_AddType(module, st->FrozenSetView_Type) < 0 ||
        PyModule_AddType(module, st->Builder_Type) < 0)
        return -1;

#define EXC(field, name, base, doc)                                                  \
    do {                                                                            \
        st->field = PyErr_NewExceptionWithDoc("permafrost." name, doc, base, NULL); \
        if (!st->field || PyModule_AddObjectRef(module, name, st->field) < 0)       \
            return -1;                                                              \
    } while (0)
    EXC(Error, "Error", NULL, "Base class of every permafrost error.");
    {
        PyObject *bases = PyTuple_Pack(2, st->Error, PyExc_ValueError);
        if (!bases)
            return -1;
        st->CorruptImageError = PyErr_NewExceptionWithDoc(
            "permafrost.CorruptImageError",
            "The bytes are not a valid permafrost image (damaged, truncated, hostile, "
            "or not an image at all).", bases, NULL);
        Py_DECREF(bases);
        if (!st->CorruptImageError ||
            PyModule_AddObjectRef(module, "CorruptImageError", st->CorruptImageError) < 0)
            return -1;
    }
    EXC(VersionError, "VersionError", st->Error,
        "The image uses a format version or feature this permafrost does not know.");
    EXC(ClosedImageError, "ClosedImageError", st->Error, "The image was closed.");
    EXC(StaleImageError, "StaleImageError", st->Error,
        "A view refers to an image that was replaced at its path.");
    EXC(LimitError, "LimitError", st->Error,
        "A safety limit (nesting depth, size) was reached while reading an image.");
    EXC(ImageGoneError, "ImageGoneError", st->Error,
        "A shared image is gone: its owner closed it or exited.");
    EXC(NoOrderedIndexError, "NoOrderedIndexError", st->Error,
        "A sorted or prefix query on a dict or set without an order index: "
        "freeze it with ordered=True (str or bytes keys).");
    {
        PyObject *bases = PyTuple_Pack(2, st->Error, PyExc_OSError);
        if (!bases)
            return -1;
        st->SharedMemoryError = PyErr_NewExceptionWithDoc(
            "permafrost.SharedMemoryError",
            "The OS refused a shared-memory segment (no room in /dev/shm, a "
            "name in use, no permission).", bases, NULL);
        Py_DECREF(bases);
        if (!st->SharedMemoryError ||
            PyModule_AddObjectRef(module, "SharedMemoryError", st->SharedMemoryError) < 0)
            return -1;
    }
#undef EXC

    st->work_factor = 16;
    st->work_base = 1000000;
    st->vcache_budget = VCACHE_BUDGET;
    st->registry = PyDict_New();
    if (!st->registry)
        return -1;
    st->empty_tuple = PyTuple_New(0);
    st->plain_types = PyDict_New();
    st->plain_shapes = PyDict_New();
    if (!st->empty_tuple || !st->plain_types || !st->plain_shapes)
        return -1;
    PyObject *ospath = PyImport_ImportModule("os.path");
    if (!ospath)
        return -1;
    st->abspath = PyObject_GetAttrString(ospath, "abspath");
    Py_DECREF(ospath);
    if (!st->abspath)
        return -1;
    st->int_from_bytes = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
    st->str_little = PyUnicode_InternFromString("little");
    st->signed_kw = Py_BuildValue("{s:O}", "signed", Py_True);
    st->view_at = PyObject_GetAttrString(module, "_view_at");
    st->attach = PyObject_GetAttrString(module, "_attach");
    st->attach_shm = PyObject_GetAttrString(module, "_attach_shm");
    st->from_buffer = PyObject_GetAttrString((PyObject *)st->Image_Type, "from_buffer");
    if (!st->int_from_bytes || !st->str_little || !st->signed_kw || !st->view_at ||
        !st->attach || !st->attach_shm || !st->from_buffer)
        return -1;
    if (PyModule_AddIntConstant(module, "FORMAT_VERSION_MAJOR", PF_VERSION_MAJOR) < 0 ||
        PyModule_AddIntConstant(module, "FORMAT_VERSION_MINOR", PF_VERSION_MINOR) < 0)
        return -1;
    return 0;
}

/* Every object the module state holds, for traverse and clear. */
#define STATE_OBJECTS(X)                                                       \
    X(Image_Type) \
    X(DictView_Type) \
    X(ListView_Type) \
    X(SetView_Type) \
    X(FrozenSetView_Type) \
    X(Iter_Type) \
    X(Builder_Type) \
    X(Error) \
    X(CorruptImageError) \
    X(VersionError) \
    X(ClosedImageError) \
    X(StaleImageError) \
    X(LimitError) \
    X(NoOrderedIndexError) \
    X(SharedMemoryError) \
    X(ImageGoneError) \
    X(attach_shm) \
    X(shm_hook) \
    X(keys_cls) \
    X(values_cls) \
    X(items_cls) \
    X(registry) \
    X(abspath) \
    X(int_from_bytes) \
    X(str_little) \
    X(signed_kw) \
    X(view_at) \
    X(attach) \
    X(from_buffer) \
    X(obj_describe) \
    X(obj_resolve) \
    X(obj_setstate) \
    X(obj_unpickle) \
    X(obj_array) \
    X(obj_key_proxy) \
    X(no_trust) \
    X(ObjectStateError) \
    X(plain_types) \
    X(plain_shapes) \
    X(empty_tuple)

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    pf_state *st = PyModule_GetState(module);
    if (!st)
        return 0;
#define VISIT(f) Py_VISIT(st->f);
    STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
module_clear(PyObject *module)
{
    pf_state *st = PyModule_GetState(module);
    if (!st)
        return 0;
#define CLEAR(f) Py_CLEAR(st->f);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    vcache_drop(st, NULL);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Views keep unsynchronized counters (live views per image) and the
     * attach registry: not yet safe without the GIL. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "permafrost._binding",
    "The C binding of permafrost: images, views, the encoder.",
    sizeof(pf_state),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free};

PyMODINIT_FUNC
PyInit__binding(void)
{
    return PyModuleDef_Init(&module_def);
}
