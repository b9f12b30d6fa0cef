"""permafrost: one shared, read-only copy of a huge Python structure for every
process of a pool.

``freeze(obj, path)`` writes a compact, position-independent image of a
Python object graph; ``open(path)`` maps it read-only and returns views that
behave like the original dicts, lists and sets, decoding only what is
touched. Every process that opens (or unpickles a view of) the same image
shares one copy of it in memory. See docs/FORMAT.md and docs/DESIGN.md.
"""

import collections.abc as _abc
import os as _os

from . import _binding, _objects, _shm
from ._binding import (
    Builder,
    ClosedImageError,
    CorruptImageError,
    DictView,
    Error,
    FrozenSetView,
    Image,
    ImageGoneError,
    LimitError,
    ListView,
    NoOrderedIndexError,
    SetView,
    SharedMemoryError,
    StaleImageError,
    VersionError,
    image_of,
    thaw,
)
from ._objects import (
    ClassNotAllowedError,
    ClassNotFoundError,
    ObjectStateError,
    PickleNotAllowedError,
)

__all__ = [
    "freeze", "open", "dumps", "loads", "thaw", "image_of", "Image", "Builder",
    "share", "share_attributes", "buffer_of", "cleanup", "verify", "set_limits", "memory_report", "MemoryReport", "ProcessMemory",
    "ImageMapping", "ImageMemory",
    "DictView", "ListView", "SetView", "FrozenSetView",
    "Error", "CorruptImageError", "VersionError", "ClosedImageError",
    "StaleImageError", "LimitError", "SharedMemoryError", "ImageGoneError",
    "NoOrderedIndexError",
    "ClassNotAllowedError", "ClassNotFoundError", "ObjectStateError", "PickleNotAllowedError",
]

__version__ = "0.1.0"

_KEYS, _VALUES, _ITEMS, _REVERSED = 0, 1, 2, 5


def _options(allow_pickle, ordered):
    return (1 if allow_pickle else 0) | (2 if ordered else 0)


def freeze(obj, path, *, allow_pickle=False, ordered=False):
    """Write the image of ``obj`` to ``path`` atomically.

    The image goes to a temporary file in the same folder, is flushed to
    disk and renamed over ``path``: a reader never sees a half-written file,
    and a failed freeze leaves no file behind (an existing image at ``path``
    is untouched). Readers that hold the old image keep reading it.

    Instances of user classes (plain, ``__slots__``, dataclasses,
    NamedTuples, enums), classes and functions are stored by import name and
    state (see docs/OBJECTS.md); numpy arrays of numeric dtypes are stored
    aligned and read back without a copy. Objects no such rule covers raise
    ``TypeError``, or are stored as pickles with ``allow_pickle=True``.

    With ``ordered=True`` every dict, set and frozenset whose keys are all
    ``str`` (or all ``bytes``) gets an order index: its view answers sorted
    and prefix queries (``keys(prefix=)``, ``longest_prefix``, ``irange``;
    see docs/ORDERED.md), while lookups and insertion-order iteration work
    as before.
    """
    _binding.freeze(obj, _os.fspath(path), None, _options(allow_pickle, ordered))


def dumps(obj, *, allow_pickle=False, ordered=False):
    """The image of ``obj`` as bytes (``loads`` reads it back); the options
    are ``freeze``'s."""
    return _binding.dumps(obj, _options(allow_pickle, ordered))


def _with_trust(image, classes, trust, allow_pickle):
    if classes or trust or allow_pickle:
        _binding._set_trust(image, _objects.make_trust(classes, trust, allow_pickle))
    return image


def open(path, *, copy=False, verify=False, classes=None, trust=False,  # noqa: A001
         allow_pickle=False):
    """Map the image at ``path`` and return its root (a view for a container).

    O(1) in the image size. The image stays mapped while any view of it is
    alive. Equivalent to ``Image(path, copy=copy).root``.

    With ``copy=True`` the file is read into this process's private memory
    instead (O(image size), not shared between processes): for a file that
    another program may truncate or rewrite in place, which no mapping can
    survive on POSIX (the kernel sends SIGBUS). Views of it pickle by
    reference and are read into memory the same way where they are
    unpickled.

    With ``verify=True`` the whole image is checked first (see ``verify``),
    O(image size); without it opening checks only the header.

    An image that holds objects names their classes; importing a class runs
    code, so only these are imported: the classes, functions, modules
    (``"pkg.mod"`` names a module and its submodules) or ``"pkg.mod:Class"``
    names given in ``classes``; everything with ``trust=True``. Pickled
    objects are loaded only with ``allow_pickle=True``. Otherwise reading
    such an object raises ``ClassNotAllowedError`` or
    ``PickleNotAllowedError``. Views pickle with these settings, so pool
    workers read the objects as this process does.
    """
    image = _with_trust(Image(path, copy=copy), classes, trust, allow_pickle)
    if verify:
        try:
            image.verify()
        except BaseException:
            image.close()
            raise
    return image.root


def verify(target):
    """Check a whole image, O(image size), and raise ``CorruptImageError``
    at the first fault; returns counts of what was checked.

    ``target`` is a path, an ``Image`` or a view. The check covers the
    section checksums written at freeze time (a changed byte anywhere), every
    value reachable from the root in its canonical encoding, every list
    table, every dict and set key found again from its own hash slot, no two
    equal keys in one container, and no tuple that contains itself. The GIL
    is released while it runs.
    """
    if isinstance(target, Image):
        return target.verify()
    if isinstance(target, (str, bytes, _os.PathLike)):
        with Image(target) as image:
            return image.verify()
    return image_of(target).verify()


def share(obj, *, allow_pickle=False, ordered=False):
    """Freeze ``obj`` into a new named shared-memory segment and return its
    root (a view for a container; for an object, an instance of its class
    whose container attributes are views), without any file.

    The classes and functions ``obj`` holds are allowed for every process
    that reads the segment through a pickled view, and pickled objects
    (``allow_pickle=True``) are loaded there: the sharer vouches for what it
    froze. So ``pool.map(share(pipeline), items)`` runs each stage's own
    code in the workers, on the one shared copy.

    This process owns the segment: it is removed when the owner calls
    ``close()`` on the returned view (or on ``image_of(view)``), leaves a
    ``with share(obj) as view:`` block, drops its last view, or exits
    normally; a segment of an owner killed without cleanup is removed by the
    next ``share()`` or by ``cleanup()``. Views pickle by reference (a few
    hundred bytes) and attach in any process, whatever the start method;
    once the owner removed the segment, a new attach raises
    ``ImageGoneError`` (processes that attached keep reading). The segment
    is reserved whole before it is written: where ``/dev/shm`` is too small
    this raises ``SharedMemoryError`` (use ``freeze()`` to a file instead).
    """
    return _shm.share_image(obj, _options(allow_pickle, ordered)).root


def buffer_of(view, key):
    """A read-only ``memoryview`` over the bytes of ``view[key]`` inside the
    image, with no copy: a ``bytes`` value, or a numpy array's data.
    ``view`` is a dict view (``key`` a key) or a list view (``key`` an
    index). The memoryview keeps the image mapped while it lives."""
    image, offset, length = _binding._value_span(view, key)
    return memoryview(image)[offset:offset + length]


def share_attributes(obj, *, min_size=1000, allow_pickle=False):
    """Replace each large container attribute of ``obj`` by a view of one
    shared image, in place, and return ``obj``.

    The attributes in ``obj.__dict__`` that are dicts, lists, sets,
    frozensets or tuples of at least ``min_size`` items go into one image
    (``share()``); ``obj`` itself stays an ordinary object, so its class,
    identity and other attributes are untouched, and it pickles as before,
    but its big attributes now pickle by reference.
    """
    state = getattr(obj, "__dict__", None)
    if state is None:
        raise TypeError("share_attributes() needs an object with a __dict__, not %s"
                        % type(obj).__name__)
    big = {k: v for k, v in state.items()
           if type(v) in (dict, list, set, frozenset, tuple) and len(v) >= min_size}
    if big:
        shared = share(big, allow_pickle=allow_pickle)
        for k in big:
            setattr(obj, k, shared[k])
    return obj


def cleanup():
    """Remove the shared-memory segments of owners that are gone (killed,
    crashed); returns their names. ``share()`` does this first."""
    return _shm.cleanup()


def set_limits(*, work_factor=None, work_base=None, value_cache=None):
    """Set the work budget of comparisons and reprs of views, and the size of
    the value cache; returns the limits now in force (call with no argument
    to read them).

    An image may share a structure any number of times (a list holding the
    same list twice, nested 1000 deep, is a few hundred bytes), so ``==``,
    ``!=`` or ``repr()`` of a view could visit more items than exist. One
    such operation may visit at most ``work_factor`` x the image size in
    bytes + ``work_base`` items (defaults 16 and 1,000,000: far more than any
    structure without sharing needs) and raises ``LimitError`` beyond.
    ``thaw()`` needs no budget: it copies each shared container once.
    Nesting is bounded by Python's recursion limit (``RecursionError``).

    ``value_cache``: at most this many bytes (about) of the ints, floats,
    short strs and small tuples that dict lookups return are kept per
    process, so that a key looked up again returns the same object without
    decoding it (default 2 MiB, plus a table of 768 KiB made on the first
    lookup; 0 turns the cache off and frees it). Images whose lookups rarely
    repeat go without it. See docs/DECISIONS.md, "The value cache".
    """
    return _binding._limits(work_factor, work_base, value_cache)


def loads(buffer, *, classes=None, trust=False, allow_pickle=False):
    """The root of the image held in ``buffer`` (bytes, bytearray, memoryview,
    mmap...). No copy is made: the buffer is kept alive by the views and must
    not change while they live. ``classes``, ``trust`` and ``allow_pickle``
    are as for ``open()``."""
    return _with_trust(Image.from_buffer(buffer), classes, trust, allow_pickle).root


class _SetOps:
    """Reflected set operations as dict views do them: ``other | d.keys()``
    starts from ``other``'s elements (the mixins of collections.abc start
    from the view's, which keeps a different one of two equal elements)."""

    __slots__ = ()

    def __ror__(self, other):
        if not isinstance(other, _abc.Iterable):
            return NotImplemented
        result = set(other)
        result.update(self)
        return result

    def __and__(self, other):
        # As dict views: iterate the other operand, unless it is a set or a
        # dict view larger than this one (then iterate this one).
        if not isinstance(other, _abc.Iterable):
            return NotImplemented
        a, b = self, other
        if (type(b) is set or isinstance(b, _DICT_VIEWS)) and len(b) > len(a):
            a, b = b, a
        return {x for x in b if x in a}

    __rand__ = __and__

    def __rsub__(self, other):
        if not isinstance(other, _abc.Iterable):
            return NotImplemented
        return {x for x in other if x not in self}

    def __rxor__(self, other):
        if not isinstance(other, _abc.Iterable):
            return NotImplemented
        result = set(other)
        result.symmetric_difference_update(self)
        return result


_DICT_VIEWS = (type({}.keys()), type({}.items()))


class KeysView(_SetOps, _abc.KeysView):
    """The keys of a frozen dict: a set-like view, as ``dict.keys()``."""

    __slots__ = ()

    def __iter__(self):
        return self._mapping._iter(_KEYS)

    def __reversed__(self):
        return self._mapping._iter(_REVERSED)

    def __repr__(self):
        return f"frozen_keys({list(self)!r})"


class ValuesView(_abc.ValuesView):
    """The values of a frozen dict, as ``dict.values()``."""

    __slots__ = ()

    def __iter__(self):
        return self._mapping._iter(_VALUES)

    def __reversed__(self):
        m = self._mapping
        return (m[k] for k in m._iter(_REVERSED))

    def __repr__(self):
        return f"frozen_values({list(self)!r})"


class ItemsView(_SetOps, _abc.ItemsView):
    """The (key, value) pairs of a frozen dict: a set-like view, as
    ``dict.items()``."""

    __slots__ = ()

    def __iter__(self):
        return self._mapping._iter(_ITEMS)

    def __reversed__(self):
        m = self._mapping
        return ((k, m[k]) for k in m._iter(_REVERSED))

    def __repr__(self):
        return f"frozen_items({list(self)!r})"


_DICT_VIEWS += (KeysView, ItemsView)
_binding._set_view_classes(KeysView, ValuesView, ItemsView)
_abc.Mapping.register(DictView)
_abc.Sequence.register(ListView)
_abc.Set.register(SetView)
_abc.Set.register(FrozenSetView)
_abc.Hashable.register(FrozenSetView)

# memory_report and its classes live in _memory, imported on first use (PEP
# 562): it brings dataclasses and typing, which a worker that only reads
# views does not need (docs/DECISIONS.md, "A light import").
_MEMORY_NAMES = frozenset({"memory_report", "MemoryReport", "ProcessMemory",
                           "ImageMapping", "ImageMemory"})


def __getattr__(name):
    if name in _MEMORY_NAMES:
        from . import _memory
        value = getattr(_memory, name)
        globals()[name] = value
        return value
    raise AttributeError("module 'permafrost' has no attribute %r" % (name,))


def __dir__():
    return sorted(set(globals()) | _MEMORY_NAMES)
