"""Objects in an image: instances of user classes, classes and functions by
name, numpy arrays, and pickles (docs/FORMAT.md section 4.3, R32-R34;
docs/DECISIONS.md, "Objects").

The C encoder calls ``describe(obj, allow_pickle)`` for every value it has
no built-in encoding for; the C decoder calls ``resolve(trust, shape)``
once per object shape and image (it caches the answer), then builds each
instance itself. What happens once per class lives here; what happens once
per instance is C.

An object's *shape* is a tuple stored once in the image and shared by all
its instances of one class and one set of attribute names:

- ``(1, module, qualname, ndict, *names)``: ``cls.__new__(cls)``, then each
  name set to its field (the first ``ndict`` into ``__dict__``, the rest
  slots), as ``object.__setattr__`` would;
- ``(2, module, qualname)``: fields ``args, state``: ``cls.__new__(cls,
  *args)``, then the state applied as pickle applies it;
- ``(3, module, qualname)``: field ``args`` (and ``state``): ``cls(*args)``
  (enum members, ``range``...), then the state applied if there is one;
- ``(4, module, qualname)``: no field: the class or function itself.

Importing a class named in an image runs code, so a reader resolves a name
only if its ``trust`` allows it: ``(trust_all, allow_pickle, names,
prefixes)``, a plain tuple so that it hashes and pickles as it is.
"""

import importlib as _importlib
import sys as _sys

from . import _binding
from ._binding import Error

K_ATTRS, K_REDUCE, K_CALL, K_GLOBAL, K_SETSTATE, K_MAPPING = 1, 2, 3, 4, 5, 6
D_OBJECT, D_REDUCE, D_CALL, D_GLOBAL, D_PICKLE, D_ARRAY, D_MAPPING = 1, 2, 3, 4, 5, 6, 7

NO_TRUST = (False, False, frozenset(), ())

# Standard library classes whose constructors only build values; images may
# name them without an allow-list entry.
_SAFE = frozenset({
    "builtins:range", "builtins:slice", "builtins:complex", "builtins:bytearray",
    "datetime:date", "datetime:time", "datetime:datetime",
    "datetime:timedelta", "datetime:timezone",
    "decimal:Decimal", "fractions:Fraction", "uuid:UUID",
    "uuid:SafeUUID",
    "collections:OrderedDict", "collections:defaultdict", "collections:Counter",
    # default factories of defaultdicts, called on a missing key
    "builtins:list", "builtins:dict", "builtins:set", "builtins:int",
    "builtins:float", "builtins:str", "builtins:tuple", "builtins:frozenset",
    "builtins:bool", "builtins:bytes",
})

# Mappings read back as dict views that answer a missing key as the class
# does: (class, how) with how 0 (KeyError), 1 (the stored default factory),
# 2 (int: 0, Counter's).
_MAPPINGS = {
    ("collections", "OrderedDict"): 0,
    ("collections", "defaultdict"): 1,
    ("collections", "Counter"): 2,
}


class ClassNotAllowedError(Error):
    """An image names a class (or function) that the reader did not allow.
    Allow it with ``open(path, classes=[TheClass])`` (or a module prefix,
    ``classes=["mypkg"]``), or ``trust=True`` for an image you made."""


class ClassNotFoundError(Error):
    """An image names a class (or function) that cannot be imported any
    more: it was moved or renamed since the image was frozen."""


class ObjectStateError(Error):
    """The class of an object in an image refused the state stored for it
    (its ``__new__``, ``__setstate__`` or constructor raised): the class
    changed since the image was frozen, or the image is damaged. The
    class's own exception is the ``__cause__``."""


class PickleNotAllowedError(Error):
    """An image holds a pickled object and the reader did not pass
    ``allow_pickle=True`` (unpickling runs arbitrary code)."""


# ------------------------------------------------------------------ names

def _name_of(obj):
    """``"module:qualname"`` by which ``obj`` (a class or function) can be
    imported again, or a TypeError saying why not."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError("cannot freeze %r: it has no importable name" % (obj,))
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            "cannot freeze %r: it is defined inside a function, so no other "
            "process can import it (define it at module level)" % (obj,))
    try:
        found = _lookup(module, qualname)
    except Exception:
        found = None
    if found is not obj:
        raise TypeError("cannot freeze %r: it is not importable as %s.%s"
                        % (obj, module, qualname))
    return module, qualname


def _lookup(module, qualname):
    # Pool workers started by spawn import the main script as __mp_main__:
    # a class of "__main__" is found there, as pickle's workers find it.
    if module == "__main__" and "__main__" not in _sys.modules and \
            "__mp_main__" in _sys.modules:
        module = "__mp_main__"
    mod = _sys.modules.get(module)
    if mod is None:
        mod = _importlib.import_module(module)
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def make_trust(classes=None, trust=False, allow_pickle=False):
    """The trust tuple of ``open(..., classes=, trust=, allow_pickle=)``."""
    names, prefixes = set(), []
    for c in classes or ():
        if isinstance(c, str):
            if ":" in c:
                names.add(c)
            else:
                prefixes.append(c)
        elif isinstance(c, type(_sys)):
            prefixes.append(c.__name__)
        elif callable(c):
            module, qualname = _name_of(c)
            names.add("%s:%s" % (module, qualname))
        else:
            raise TypeError("classes= takes classes, functions, modules or "
                            "names ('pkg.mod' or 'pkg.mod:Class'), not %r" % (c,))
    if not isinstance(trust, bool) or not isinstance(allow_pickle, bool):
        raise TypeError("trust and allow_pickle must be True or False")
    return (trust, allow_pickle, frozenset(names), tuple(sorted(set(prefixes))))


def merge_trust(a, b):
    """Both allow-lists (for an image that gathers what two trusts allow)."""
    return (a[0] or b[0], a[1] or b[1], a[2] | b[2],
            tuple(sorted(set(a[3]) | set(b[3]))))


def _allowed(trust, module, qualname):
    name = "%s:%s" % (module, qualname)
    if trust[0] or name in _SAFE or name in trust[2]:
        return True
    return any(module == p or module.startswith(p + ".") for p in trust[3])


def resolve(trust, shape):
    """What the decoder needs to build the instances of ``shape``:
    ``(kind, target, names, ndict, direct)``, ``direct`` a bytes of one flag
    per name, 1 where the name is written straight into ``__dict__`` (a
    data descriptor of the class has the same name)."""
    if (not isinstance(shape, tuple) or len(shape) < 3 or
            not isinstance(shape[0], int) or not isinstance(shape[1], str) or
            not isinstance(shape[2], str)):
        raise _binding.CorruptImageError("corrupt image: bad object shape %r (R32)"
                                         % (shape,))
    kind, module, qualname = shape[0], shape[1], shape[2]
    if kind not in (K_ATTRS, K_REDUCE, K_CALL, K_GLOBAL, K_MAPPING):
        raise _binding.CorruptImageError("corrupt image: unknown object kind %r (R32)"
                                         % (kind,))
    if not _allowed(trust, module, qualname):
        raise ClassNotAllowedError(
            "the image names %s.%s, which this reader did not allow: pass "
            "classes=[%s] (or the module, classes=[%r]) to permafrost.open(), "
            "or trust=True for an image you trust"
            % (module, qualname, qualname.split(".")[-1], module))
    try:
        target = _lookup(module, qualname)
    except (ImportError, AttributeError) as e:
        raise ClassNotFoundError(
            "the image names %s.%s, which cannot be imported (%s): was it "
            "moved or renamed since the image was frozen?" % (module, qualname, e)
        ) from None
    if kind == K_GLOBAL:
        return (kind, target, (), 0, b"")
    if kind == K_MAPPING:
        how = _MAPPINGS.get((module, qualname))
        if how is None:
            raise _binding.CorruptImageError(
                "corrupt image: %s.%s is not a mapping class (R32)" % (module, qualname))
        return (kind, target, (), how, b"")
    if not isinstance(target, type):
        raise _binding.CorruptImageError(
            "corrupt image: %s.%s is not a class (R32)" % (module, qualname))
    if kind != K_ATTRS:
        return (kind, target, (), 0, b"")
    if len(shape) < 4 or not isinstance(shape[3], int) or \
            not 0 <= shape[3] <= len(shape) - 4:
        raise _binding.CorruptImageError("corrupt image: bad object shape %r (R32)"
                                         % (shape,))
    names = tuple(_sys.intern(n) if type(n) is str else n for n in shape[4:])
    if not all(type(n) is str for n in names):
        raise _binding.CorruptImageError("corrupt image: bad object shape %r (R32)"
                                         % (shape,))
    ndict = shape[3]
    if _custom_setstate(target):
        return (K_SETSTATE, target, names, ndict, b"")
    direct = bytes(1 if i < ndict and _data_descriptor(target, n) else 0
                   for i, n in enumerate(names))
    return (K_ATTRS, target, names, ndict, direct)


def _data_descriptor(cls, name):
    for base in cls.__mro__:
        d = base.__dict__.get(name)
        if d is not None:
            return hasattr(type(d), "__set__")
    return False


def _custom_setstate(cls):
    return getattr(cls, "__setstate__", None) is not None


def setstate(obj, state):
    """Applies a pickled state as pickle's BUILD does."""
    fn = getattr(obj, "__setstate__", None)
    if fn is not None:
        fn(state)
        # Some __setstate__ take any object for the instance dict
        # (functools.partial's): a damaged image must not leave one that
        # fails later, at an attribute access.
        d = getattr(obj, "__dict__", None)
        if d is not None and not isinstance(d, dict):
            raise TypeError("__setstate__ left a %s as the instance __dict__"
                            % type(d).__name__)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        d = obj.__dict__
        for k, v in state.items():
            d[_sys.intern(k) if type(k) is str else k] = v
    if slots:
        for k, v in slots.items():
            object.__setattr__(obj, k, v)


def unpickle(trust, data):
    if not trust[1]:
        raise PickleNotAllowedError(
            "the image holds a pickled object: pass allow_pickle=True to "
            "permafrost.open() to unpickle it (only for an image you trust: "
            "unpickling runs code)")
    import pickle
    return pickle.loads(data)


# ------------------------------------------------------------------ describe

_shapes = {}   # (kind, module, qualname, ndict, names) -> the shape tuple
_kinds = {}    # class -> (module, qualname) once checked importable


def _shape(kind, module, qualname, ndict=None, names=()):
    key = (kind, module, qualname, ndict, names)
    s = _shapes.get(key)
    if s is None:
        s = (kind, module, qualname) if ndict is None else \
            (kind, module, qualname, ndict) + names
        _shapes[key] = s
    return s


def _class_name(cls):
    n = _kinds.get(cls)
    if n is None:
        n = _kinds[cls] = _name_of(cls)
    return n


def _is_global(obj):
    return isinstance(obj, type) or type(obj).__name__ in (
        "function", "builtin_function_or_method")


def describe(obj, allow_pickle):
    """How the encoder stores ``obj``; TypeError if it cannot."""
    tp = type(obj)
    if tp.__module__ == "numpy" and tp.__name__ == "ndarray":
        return _describe_array(obj, allow_pickle)
    if _is_global(obj):
        try:
            module, qualname = _name_of(obj)
        except TypeError:
            if not allow_pickle:
                raise
        else:
            return (D_GLOBAL, _shape(K_GLOBAL, module, qualname))
    if (tp.__module__, tp.__qualname__) in _MAPPINGS and \
            _lookup(tp.__module__, tp.__qualname__) is tp:
        factory = getattr(obj, "default_factory", None)
        return (D_MAPPING, _shape(K_MAPPING, tp.__module__, tp.__qualname__),
                dict(obj), factory)
    try:
        return _describe_reduce(obj, tp)
    except TypeError:
        if not allow_pickle:
            raise
    import pickle
    try:
        return (D_PICKLE, pickle.dumps(obj, protocol=5))
    except Exception as e:
        raise TypeError("cannot freeze object of type %s: no built-in rule "
                        "covers it and pickle failed (%s)" % (tp.__qualname__, e)) from None


# ------------------------------------------------------------------ keys

# A key of a type the core does not know is stored as a keyed value (R35):
# a *proxy* of a core key type, whose hash and equality are the key's, then
# the object itself. Proxies that equal their object under Python's ==
# (IntEnum -> int, namedtuple -> tuple, Decimal("0.5") -> 0.5) carry the
# flag KEYED_EQ, so that the plain key matches; the others are tagged tuples
# that only the same proxy matches (docs/OBJECTS.md, "Keys").
KEYED_EQ = 1

_KEY_BASES = (int, float, complex, str, bytes, tuple, frozenset)

# A Decimal key is stored by its exact value, as an int or a fraction; one
# whose exponent is past this many digits is refused rather than expanded.
_DECIMAL_KEY_DIGITS = 100000


def _same_equality(tp, base):
    return tp.__eq__ is base.__eq__ and tp.__hash__ is base.__hash__


def _rational(n, d):
    """The proxy of the rational n/d (d > 0, in lowest terms)."""
    if d == 1:
        return KEYED_EQ, n
    if d & (d - 1) == 0:           # a power of two: maybe exactly a float
        try:
            f = n / d
        except OverflowError:
            f = None
        if f is not None and f.as_integer_ratio() == (n, d):
            return KEYED_EQ, f
    return 0, ("fraction", n, d)


def _loaded(*names):
    """The first of these modules already imported, else None. An instance of
    a class exists only once its module is imported, so the key rules of the
    standard library's value classes look for those modules in sys.modules
    rather than importing them (importing permafrost stays light)."""
    for name in names:
        mod = _sys.modules.get(name)
        if mod is not None:
            return mod
    return None


def _micros(d):
    """A timedelta as an int of microseconds."""
    return (d.days * 86400 + d.seconds) * 1000000 + d.microseconds


def _datetime_proxy(k, tp, _dt):
    """key_proxy of a datetime, date, time or timedelta, else None."""
    if isinstance(k, _dt.datetime) and _same_equality(tp, _dt.datetime):
        # by instant when aware (the offset of fold 0, as hash() takes it)
        off = (k.replace(fold=0) if k.fold else k).utcoffset()
        days = k.toordinal()
        us = ((days * 86400 + k.hour * 3600 + k.minute * 60 + k.second) * 1000000
              + k.microsecond)
        if off is None:
            return 0, ("datetime", us)
        return 0, ("datetime@utc", us - _micros(off))
    if isinstance(k, _dt.date) and _same_equality(tp, _dt.date):
        return 0, ("date", k.toordinal())
    if isinstance(k, _dt.time) and _same_equality(tp, _dt.time):
        off = k.utcoffset()
        us = (k.hour * 3600 + k.minute * 60 + k.second) * 1000000 + k.microsecond
        if off is None:
            return 0, ("time", us)
        return 0, ("time@utc", us - _micros(off))
    if isinstance(k, _dt.timedelta) and _same_equality(tp, _dt.timedelta):
        return 0, ("timedelta", _micros(k))
    return None


def key_proxy(k):
    """``(flags, proxy)`` for a key of a type the core does not store as a
    key, or None when no rule covers its type (the encoder then refuses it,
    and a lookup by it finds nothing). Two keys that Python finds equal get
    equal proxies and flags."""
    tp = type(k)
    for base in _KEY_BASES:
        if isinstance(k, base):
            if not _same_equality(tp, base):
                return None
            if base is int:
                return KEYED_EQ, int.__int__(k)
            if base is str:
                return KEYED_EQ, str.__str__(k)
            if base is tuple:
                return KEYED_EQ, tuple(k)
            if base is frozenset:
                return KEYED_EQ, frozenset(k)
            if base is float:
                return KEYED_EQ, float.__float__(k)
            if base is bytes:
                return KEYED_EQ, k[:]
            return KEYED_EQ, complex(k.real, k.imag)
    _decimal = _loaded("decimal", "_decimal")
    if _decimal is not None and isinstance(k, _decimal.Decimal) and \
            _same_equality(tp, _decimal.Decimal):
        if k.is_nan():   # equal to nothing, not even itself, as a float NaN
            return (0, float("nan")) if not k.is_snan() else None
        if k.is_infinite():
            return KEYED_EQ, float(k)
        if abs(k.adjusted()) > _DECIMAL_KEY_DIGITS:
            return None  # its exact value would be an int of that many digits
        return _rational(*k.as_integer_ratio())
    _fractions = _loaded("fractions")
    if _fractions is not None and isinstance(k, _fractions.Fraction) and \
            _same_equality(tp, _fractions.Fraction):
        return _rational(k.numerator, k.denominator)
    _dt = _loaded("datetime", "_datetime")
    if _dt is not None:
        proxy = _datetime_proxy(k, tp, _dt)
        if proxy is not None:
            return proxy
    _uuid = _loaded("uuid")
    if _uuid is not None and isinstance(k, _uuid.UUID) and \
            _same_equality(tp, _uuid.UUID):
        return 0, ("uuid", k.int)
    if tp is range:
        # equal when they hold the same numbers (len() fails past maxsize)
        start, stop, step = k.start, k.stop, k.step
        n = max(0, (stop - start + step - 1) // step if step > 0
                else (start - stop - step - 1) // -step)
        return 0, (("range", n) if n == 0 else ("range", n, start) if n == 1
                   else ("range", n, start, step))
    try:
        _enum = _loaded("enum")
        if _enum is not None and isinstance(k, _enum.Enum) and \
                _same_equality(tp, _enum.Enum):
            # members are singletons: equal only to themselves
            module, qualname = _class_name(tp)
            return 0, ("enum", module, qualname,
                       k._value_ if isinstance(k, _enum.Flag) else k._name_)
        if _is_global(k):   # classes and functions: equal only to themselves
            module, qualname = _name_of(k)
            return 0, ("global", module, qualname)
    except TypeError:       # not importable: no image can hold it
        return None
    return None


def _no_rule(tp, why):
    return TypeError(
        "cannot freeze object of type %s.%s: %s; freeze(..., allow_pickle=True) "
        "stores it as a pickle" % (tp.__module__, tp.__qualname__, why))


def _describe_reduce(obj, tp):
    reduce_ex = getattr(obj, "__reduce_ex__", None)
    if reduce_ex is None:
        raise _no_rule(tp, "it has no __reduce_ex__")
    try:
        rv = reduce_ex(4)
    except Exception as e:
        raise _no_rule(tp, "its __reduce_ex__ failed (%s)" % (e,)) from None
    if isinstance(rv, str) or not isinstance(rv, tuple) or not 2 <= len(rv) <= 6:
        raise _no_rule(tp, "its __reduce_ex__ returns %r" % (type(rv).__name__,))
    func, args = rv[0], rv[1]
    state = rv[2] if len(rv) > 2 else None
    listitems = rv[3] if len(rv) > 3 else None
    dictitems = rv[4] if len(rv) > 4 else None
    if listitems is not None or dictitems is not None:
        raise _no_rule(tp, "its items are stored as a list or dict subclass's "
                       "are, which no built-in rule covers yet")
    if len(rv) > 5 and rv[5] is not None:
        raise _no_rule(tp, "it has a state setter")
    if not isinstance(args, tuple):
        raise _no_rule(tp, "its reduce arguments are not a tuple")
    if getattr(func, "__name__", None) == "__newobj__" and args and \
            isinstance(args[0], type):
        cls, args = args[0], args[1:]
        if cls is not tp:
            raise _no_rule(tp, "it reduces to another class")
        module, qualname = _class_name(cls)
        if not args and not _custom_setstate(cls):
            attrs = _attrs_state(state)
            if attrs is not None:
                ndict, names, values = attrs
                return (D_OBJECT, _shape(K_ATTRS, module, qualname, ndict, names),
                        values, _plain(cls) and (module, qualname,
                                                 "%s:%s" % (module, qualname)))
        return (D_REDUCE, _shape(K_REDUCE, module, qualname), args, state)
    if isinstance(func, type) and func is tp:
        module, qualname = _class_name(func)
        if state is None:
            return (D_CALL, _shape(K_CALL, module, qualname), args)
        return (D_CALL, _shape(K_CALL, module, qualname), args, state)
    raise _no_rule(tp, "it reduces through %r" % (func,))


_STATE_DEFAULT = getattr(object, "__getstate__", None)


def _plain(cls):
    """Whether every instance of cls reduces to its ``__dict__`` and
    nothing else (what the C encoder then reads itself, without calling
    describe): object's own reduce and state, no slots, no copyreg entry."""
    import copyreg
    if cls in copyreg.dispatch_table:
        return False
    if cls.__reduce_ex__ is not object.__reduce_ex__ or \
            cls.__reduce__ is not object.__reduce__:
        return False
    if getattr(cls, "__getstate__", None) is not _STATE_DEFAULT:
        return False
    for name in ("__getnewargs__", "__getnewargs_ex__", "__setstate__"):
        if getattr(cls, name, None) is not None:
            return False
    for base in cls.__mro__[:-1]:
        if "__slots__" in base.__dict__:
            return False
    return "__dict__" in dir(cls) or hasattr(cls, "__dict__")


def _attrs_state(state):
    """(ndict, names, values) of a plain state (a dict of str keys, or
    (dict or None, slots dict)), or None."""
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state is None:
        state = {}
    if type(state) is not dict or (slots is not None and type(slots) is not dict):
        return None
    names, values = [], []
    for k, v in state.items():
        if type(k) is not str:
            return None
        names.append(k)
        values.append(v)
    ndict = len(names)
    for k, v in (slots or {}).items():
        if type(k) is not str:
            return None
        names.append(k)
        values.append(v)
    return ndict, tuple(names), tuple(values)


# ------------------------------------------------------------------ arrays

def _describe_array(a, allow_pickle):
    dt = a.dtype
    if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
        if allow_pickle:
            import pickle
            return (D_PICKLE, pickle.dumps(a, protocol=5))
        raise TypeError(
            "cannot freeze a numpy array of dtype %s: only bool and numeric "
            "dtypes are stored without a copy (freeze(..., allow_pickle=True) "
            "stores it as a pickle)" % (dt,))
    import numpy as np
    fortran = a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous
    data = np.asfortranarray(a).T if fortran else np.ascontiguousarray(a)
    header = (dt.str, tuple(int(n) for n in a.shape), fortran)
    buf = memoryview(data.reshape(-1)).cast("B") if a.size else b""
    return (D_ARRAY, buf, header)


def make_array(image, header, offset, nbytes):
    """A read-only numpy array over ``nbytes`` of ``image`` at ``offset``: no
    copy; the array keeps the image mapped."""
    import re
    import numpy as np
    if (not isinstance(header, tuple) or len(header) != 3 or
            not isinstance(header[0], str) or not isinstance(header[1], tuple) or
            not isinstance(header[2], bool) or
            not all(type(n) is int and n >= 0 for n in header[1])):
        raise _binding.CorruptImageError("corrupt image: bad array header (R34)")
    # Only what _describe_array writes (numpy parses much more than that,
    # comma strings included, with its own errors).
    if not re.fullmatch(r"[<>|=][biufc][0-9]{1,2}", header[0]):
        raise _binding.CorruptImageError("corrupt image: bad array dtype %r (R34)"
                                         % (header[0],))
    try:
        dt = np.dtype(header[0])
    except TypeError:
        raise _binding.CorruptImageError("corrupt image: bad array dtype %r (R34)"
                                         % (header[0],)) from None
    if dt.kind not in "biufc" or dt.fields is not None:
        raise _binding.CorruptImageError("corrupt image: bad array dtype %r (R34)"
                                         % (header[0],))
    shape, fortran = header[1], header[2]
    count = 1
    for n in shape:
        count *= n
    if count * dt.itemsize != nbytes:
        raise _binding.CorruptImageError("corrupt image: array size does not "
                                         "match its shape (R34)")
    if nbytes == 0:
        a = np.empty(shape, dt, order="F" if fortran else "C")
    else:
        buf = memoryview(image)[offset:offset + nbytes]
        a = np.frombuffer(buf, dtype=dt, count=count)
        a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    a.flags.writeable = False
    return a


_binding._set_object_hooks(describe, resolve, setstate, unpickle, make_array,
                           NO_TRUST, ObjectStateError, key_proxy)
