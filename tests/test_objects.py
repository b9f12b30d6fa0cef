"""Objects in images (format 1.1, R32-R34): instances of user classes,
classes and functions by import name, builtin subclasses, enum members,
numpy arrays and pickles. Round trips under every allow-list form, the
trie and pipeline examples in spawn pools, identity and cycles, the
refusals (ClassNotAllowedError, ClassNotFoundError, PickleNotAllowedError,
TypeError, ValueError), damaged images, and a hypothesis differential.

The classes live in objects_helpers.py, so that images can name them and
spawned workers can import them."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import gc
import importlib
import json
import multiprocessing
import os
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import threading
import types
import uuid
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers_format as fmt
import objects_helpers as oh
import permafrost as pf
from helpers import deadline, run_isolated, scaled

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="needs numpy")
posix_shm = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shared memory")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SHM = "/dev/shm"


# ----------------------------------------------------------------- comparing


def _made_by_a_call(x) -> bool:
    """Whether x is rebuilt by calling its class (kind 3)."""
    try:
        rv = x.__reduce_ex__(4)
    except Exception:  # noqa: BLE001
        return False
    return isinstance(rv, tuple) and rv[0] is type(x)


def assert_equivalent(got, want, _objs=None, _seen=None) -> None:
    """`got` (read from an image, views allowed) stands for `want`: same
    class for every object (compared by == where the class defines it, by
    its attributes otherwise), the same instance wherever `want` has the
    same instance (identity and cycles), views in place of containers."""
    objs = {} if _objs is None else _objs    # id(want object) -> (want, got)
    seen = set() if _seen is None else _seen  # containers on the way (cycles)
    tw = type(want)
    if np is not None and tw is np.ndarray:
        assert type(got) is np.ndarray, type(got)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
        return
    if tw in (dict, collections.Counter, collections.OrderedDict, collections.defaultdict):
        # the mappings read back as dict views (kind 6), thawed as themselves
        assert isinstance(got, (tw, pf.DictView)), type(got)
        if id(want) in seen:
            return
        seen.add(id(want))
        assert list(got.keys()) == list(want.keys())
        for k, v in want.items():
            assert_equivalent(got[k], v, objs, seen)
        return
    if tw is list:
        assert isinstance(got, (list, pf.ListView)), type(got)
        if id(want) in seen:
            return
        seen.add(id(want))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_equivalent(g, w, objs, seen)
        return
    if tw is tuple:
        assert type(got) is tuple, type(got)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_equivalent(g, w, objs, seen)
        return
    if tw in (set, frozenset):
        assert isinstance(got, (set, frozenset, pf.SetView, pf.FrozenSetView)), type(got)
        assert got == want
        return
    if tw in (type(None), bool, int, float, complex, str, bytes):
        assert type(got) is tw and (got == want or (got != got and want != want)), (got, want)
        return
    if isinstance(want, functools.partial):
        assert type(got) is type(want) and got.func is want.func
        assert_equivalent(got.args, want.args, objs, seen)
        assert_equivalent(got.keywords, want.keywords, objs, seen)
        return
    if isinstance(want, (type, enum.Enum)) or callable(want) and not hasattr(want, "__dict__") \
            or type(want).__name__ == "function":
        assert got is want, (got, want)
        return
    # An instance of some class.
    assert type(got) is tw, (type(got), tw)
    if id(want) in objs:
        # One instance per stored object: kept by the weak table, so only
        # for classes whose instances can be weakly referenced (and made
        # from their state, not by a call: set subclasses, Counter). The others have
        # tests of their own (test_identity_of_slotted_objects,
        # test_identity_of_objects_made_by_a_call).
        if tw.__weakrefoffset__ and not _made_by_a_call(want):
            assert objs[id(want)][1] is got, f"two instances for one {tw.__name__}"
        return
    objs[id(want)] = (want, got)
    state = dict(getattr(want, "__dict__", {}))
    for klass in tw.__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name != "__weakref__" and hasattr(want, name):
                state[name] = getattr(want, name)
    if isinstance(want, (tuple, str, int, float, set, frozenset, bytes, bytearray)) or \
            tw.__module__ != "objects_helpers":
        assert got == want, (got, want)   # a value (builtin subclass, datetime...)
    if tw.__module__ != "objects_helpers":
        return
    if "__setstate__" in vars(tw):  # its own rule: compared by its own __eq__
        assert got == want, (got, want)
        return
    assert set(getattr(got, "__dict__", {})) == set(getattr(want, "__dict__", {}))
    for name, value in state.items():
        assert_equivalent(getattr(got, name), value, objs, seen)
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            assert_equivalent(g, w, objs, seen)


def assert_same_types(got, want, _seen=None) -> None:
    """`got` (a thawed copy) has exactly the types of `want`, everywhere."""
    seen = set() if _seen is None else _seen
    assert type(got) is type(want), (type(got), type(want))
    if id(want) in seen:
        return
    seen.add(id(want))
    if isinstance(want, dict):
        for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
            assert_same_types(gk, wk, seen)
            assert_same_types(gv, wv, seen)
    elif isinstance(want, (list, tuple)):
        for g, w in zip(got, want):
            assert_same_types(g, w, seen)
    elif hasattr(want, "__dict__") and not isinstance(want, (type, enum.Enum)) \
            and type(want).__name__ != "function":
        for name, value in vars(want).items():
            assert_same_types(getattr(got, name), value, seen)
    elif hasattr(type(want), "__slots__") and not isinstance(want, tuple):
        for name in type(want).__slots__:
            if name == "__weakref__":
                continue
            assert_same_types(getattr(got, name), getattr(want, name), seen)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def spawn_pool():
    """Two workers started with `spawn`: nothing of this process is in them;
    they import objects_helpers by name."""
    pool = multiprocessing.get_context("spawn").Pool(2)
    try:
        assert os.getpid() not in pool.map(oh.pid_of, range(4))
        yield pool
    finally:
        pool.terminate()
        pool.join()


def _segments():
    if not os.path.isdir(SHM):
        return []
    return [n for n in os.listdir(SHM) if n.startswith("pf-")]


@pytest.fixture
def private_registry(tmp_path, monkeypatch):
    """share() tests: a registry of their own, and no segment left behind
    once the test dropped its views."""
    monkeypatch.setenv("PERMAFROST_RUNTIME_DIR", str(tmp_path / "runtime"))
    before = set(_segments())
    yield
    gc.collect()
    left = set(_segments()) - before
    for name in left:
        pf._binding._shm_unlink("/" + name)
    assert not left, f"segments left behind: {sorted(left)}"


# ----------------------------------------------------------------- 1. round trips


def _kinds():
    """name -> (factory, the classes a reader must allow)."""
    tz = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
    return {
        "plain": (lambda: oh.Plain([1, 2], {"k": {3, 4}}, ("t", 1.5, None, True, 2**100, -0.0, b"b")),
                  [oh.Plain]),
        "plain-empty": (lambda: _empty_plain(), [oh.Plain]),
        "slots": (lambda: oh.Slotted([1], {"a": (1, 2)}), [oh.Slotted]),
        "slots-and-dict": (lambda: oh.SlottedChild(1, [2], {"z": 3}), [oh.SlottedChild]),
        "dataclass": (lambda: oh.Point([1, 2], {"y": None}), [oh.Point]),
        "frozen-dataclass": (lambda: oh.Frozen("label", (1, [2], frozenset({3}))), [oh.Frozen]),
        "dataclass-slots": (lambda: oh.SlotsPoint([1], {"y": 2}), [oh.SlotsPoint]),
        "dataclass-weakref-slot": (lambda: oh.WeakSlotsPoint((1, [2])), [oh.WeakSlotsPoint]),
        "NamedTuple": (lambda: oh.Pair([1], {"b": 2}), [oh.Pair]),
        "namedtuple": (lambda: oh.Coord(1.5, -2), [oh.Coord]),
        "Enum": (lambda: oh.Color.BLUE, [oh.Color]),
        "Enum-str": (lambda: oh.Color.GREEN, [oh.Color]),
        "IntEnum": (lambda: oh.Level.HIGH, [oh.Level]),
        "IntFlag": (lambda: oh.Perm.R | oh.Perm.W, [oh.Perm]),
        "IntFlag-zero": (lambda: oh.Perm(0), [oh.Perm]),
        "class": (lambda: oh.Plain, [oh.Plain]),
        "function": (lambda: oh.helper_function, [oh.helper_function]),
        "builtin-function": (lambda: len, [len]),
        "str-subclass": (lambda: oh.MyStr("text \u20ac"), [oh.MyStr]),
        "int-subclass": (lambda: oh.MyInt(-(2**70)), [oh.MyInt]),
        "tuple-subclass": (lambda: oh.MyTuple((1, [2], "x")), [oh.MyTuple]),
        "set-subclass": (lambda: oh.MySet({1, "a", (2, 3)}), [oh.MySet]),
        "frozenset-subclass": (lambda: oh.MyFrozenset({(1, 2), "b"}), [oh.MyFrozenset]),
        "SimpleNamespace": (lambda: types.SimpleNamespace(a=[1], b="x"), [types.SimpleNamespace]),
        "partial": (lambda: functools.partial(oh.helper_function, 41),
                    [functools.partial, oh.helper_function]),
        "bytearray": (lambda: bytearray(b"\x00abc\xff"), []),
        "range": (lambda: range(-3, 100, 7), []),
        "datetime": (lambda: datetime.datetime(2024, 2, 29, 23, 59, 1, 5, tzinfo=tz), []),
        "date": (lambda: datetime.date(1999, 12, 31), []),
        "time": (lambda: datetime.time(12, 30, 15, 999), []),
        "timedelta": (lambda: datetime.timedelta(days=-2, seconds=5), []),
        "Decimal": (lambda: decimal.Decimal("-1.50E+300"), []),
        "Fraction": (lambda: fractions.Fraction(-22, 7), []),
        "UUID": (lambda: uuid.UUID("12345678-1234-5678-1234-567812345678"), []),
    }


def _empty_plain():
    p = oh.Plain(0, 0)
    p.__dict__.clear()
    return p


KINDS = _kinds()
MODES = ["trust", "classes", "module", "names"]


def _read_kwargs(mode, allow):
    if mode == "trust":
        return {"trust": True}
    if mode == "classes":
        return {"classes": list(allow)}
    if mode == "module":
        return {"classes": sorted({c.__module__ for c in allow})}
    return {"classes": ["%s:%s" % (c.__module__, c.__qualname__) for c in allow]}


def _nest(x):
    return {"d": {"v": x}, "l": [0, x, [x]], "t": (x, "end")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip(kind, mode, image_path):
    factory, allow = KINDS[kind]
    x = factory()
    kw = _read_kwargs(mode, allow)
    assert_equivalent(pf.loads(pf.dumps(x), **kw), x)
    nested = _nest(x)
    root = pf.loads(pf.dumps(nested), **kw)
    assert_equivalent(root, nested)
    if type(x).__weakrefoffset__ and not _made_by_a_call(x):
        # a stored object comes back as one instance (made by a call:
        # test_identity_of_objects_made_by_a_call)
        assert root["d"]["v"] is root["l"][1] is root["l"][2][0] is root["t"][0]
    pf.freeze(nested, image_path)
    assert_equivalent(pf.open(image_path, **kw), nested)
    assert_equivalent(pf.thaw(pf.open(image_path, **kw)), nested)


@pytest.mark.parametrize("kind", list(KINDS))
def test_reading_needs_the_class_allowed(kind):
    """Without an allow-list, only the standard value classes are read."""
    factory, allow = KINDS[kind]
    x = factory()
    data = pf.dumps([x])
    root = pf.loads(data)        # the list itself needs nothing
    assert len(root) == 1
    if allow:
        with pytest.raises(pf.ClassNotAllowedError):
            root[0]
        with pytest.raises(pf.ClassNotAllowedError):
            pf.loads(pf.dumps(x))  # an object root is read at once
        with pytest.raises(pf.ClassNotAllowedError):
            pf.thaw(root)
    else:
        assert_equivalent(root[0], x)


def test_values_come_back_as_values():
    x = {"t": (1, "a"), "p": oh.Plain((1, 2), "s", 3.5)}
    root = pf.loads(pf.dumps(x), classes=[oh])
    p = root["p"]
    assert isinstance(p, oh.Plain)
    assert type(p.a) is tuple and p.a == (1, 2)
    assert type(p.b) is str and type(p.c) is float
    assert type(vars(p)) is dict and list(vars(p)) == ["a", "b", "c"]


def test_container_attributes_are_views():
    p = oh.Plain({"k": [1]}, [1, {2}], {3})
    p.fs = frozenset({"x"})
    r = pf.loads(pf.dumps(p), classes=[oh.Plain])
    assert type(r.a) is pf.DictView and type(r.a["k"]) is pf.ListView
    assert type(r.b) is pf.ListView and type(r.b[1]) is pf.SetView
    assert type(r.c) is pf.SetView and type(r.fs) is pf.FrozenSetView
    s = pf.loads(pf.dumps(oh.Slotted([1], {"a": 1})), classes=[oh.Slotted])
    assert type(s.x) is pf.ListView and type(s.y) is pf.DictView
    assert not hasattr(s, "__dict__")
    d = pf.loads(pf.dumps(oh.Point([1], (2, [3]))), classes=[oh.Point])
    assert type(d.x) is pf.ListView and type(d.y) is tuple and type(d.y[1]) is pf.ListView


def test_methods_run_on_views():
    trie = oh.Trie(["ab", "abc", "b"])
    r = pf.loads(pf.dumps(trie), classes=[oh.Trie, oh.Node])
    assert type(r) is oh.Trie and isinstance(r.root, oh.Node)
    assert r.lookup("abc") and not r.lookup("a") and r.startswith("a") == ["ab", "abc"]
    assert len(r) == 3


def test_mixed_structure_with_every_kind(image_path):
    x = {name: factory() for name, (factory, _) in KINDS.items()}
    x["list"] = list(x.values())
    x["tuple"] = tuple(x["list"])
    pf.freeze(x, image_path)
    extra = [types.SimpleNamespace, functools.partial, collections.Counter]
    for kw in ({"trust": True}, {"classes": [oh, len] + extra},
               {"classes": ["objects_helpers", "builtins:len", "types", "functools:partial",
                            "collections"]}):
        assert_equivalent(pf.open(image_path, **kw), x)
        assert_equivalent(pf.loads(pf.dumps(x), **kw), x)


def test_enum_members_and_globals_are_the_same_objects():
    x = [oh.Color.RED, oh.Level.LOW, oh.Perm.X, oh.Plain, oh.helper_function, len, oh.Trie.lookup]
    r = pf.loads(pf.dumps(x), classes=[oh, len])
    for got, want in zip(r, x):
        assert got is want
    assert pf.thaw(r) == x and all(a is b for a, b in zip(pf.thaw(r), x))


@pytest.fixture
def tmp_package(tmp_path, monkeypatch):
    """A package `<name>` with a module `<name>.sub` holding a class Thing,
    importable from tmp_path."""
    name = "pfpkg_" + uuid.uuid4().hex[:8]
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text(textwrap.dedent("""
        class Thing:
            def __init__(self, v):
                self.v = v
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield name, importlib.import_module(name + ".sub")
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_allow_list_forms(tmp_package):
    name, sub = tmp_package
    data = pf.dumps([sub.Thing([1, 2])])
    allowed = [[name], [name + ".sub"], [name + ".sub:Thing"], [sub.Thing], [sub],
               [importlib.import_module(name)], ["objects_helpers", name]]
    for classes in allowed:
        got = pf.loads(data, classes=classes)[0]
        assert type(got) is sub.Thing and got.v == [1, 2], classes
    refused = [None, [], [name[:-1]], [name + ".other"], [name + ".sub:Other"],
               [name + ":Thing"], [name + ".sub.Thing"], ["objects_helpers"], [oh.Plain]]
    for classes in refused:
        with pytest.raises(pf.ClassNotAllowedError):
            pf.loads(data, classes=classes)[0]


def test_bad_allow_lists_are_refused(image_path):
    pf.freeze([1], image_path)
    for bad in ([42], [None], [b"objects_helpers"]):
        with pytest.raises(TypeError):
            pf.open(image_path, classes=bad)
    with pytest.raises(TypeError):
        pf.open(image_path, trust=1)
    with pytest.raises(TypeError):
        pf.loads(pf.dumps([1]), allow_pickle="yes")


def test_exception_hierarchy():
    for cls in (pf.ClassNotAllowedError, pf.ClassNotFoundError, pf.PickleNotAllowedError,
                pf.ObjectStateError):
        assert issubclass(cls, pf.Error)
        assert cls.__name__ in pf.__all__


# ----------------------------------------------------------------- instances, mutation, thaw


def test_mutating_an_instance_never_changes_the_image(image_path):
    orig = {"p": oh.Plain([1, 2], "x"), "d": oh.Point(1, 2)}
    pf.freeze(orig, image_path)
    before = image_path.read_bytes()
    root = pf.open(image_path, classes=[oh])
    p = root["p"]
    p.b = "changed"
    p.new = 5
    del p.c
    root["d"].x = 99  # dropped at once: nothing holds that instance
    assert root["p"] is p and root["p"].b == "changed" and root["p"].new == 5
    with pytest.raises((TypeError, AttributeError)):
        p.a.append(3)       # container attributes stay read-only views
    # Another reader of the same image sees the stored values.
    other = pf.open(image_path, classes=[oh])
    assert other["p"].b == "x" and other["p"] is not p and not hasattr(other["p"], "new")
    assert pf.loads(before, classes=[oh])["p"].b == "x"
    code = textwrap.dedent(f"""
        import permafrost as pf
        root = pf.open({str(image_path)!r}, classes=["objects_helpers"])
        print(root["p"].b, root["p"].c, root["d"].x, hasattr(root["p"], "new"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=TESTS_DIR)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["x", "None", "1", "False"]
    # Once the changed instance is gone, the stored object reads afresh.
    del p, other
    gc.collect()
    again = root["p"]
    assert again.b == "x" and again.c is None and not hasattr(again, "new")
    assert root["d"].x == 1
    assert image_path.read_bytes() == before
    pf.verify(image_path)


def test_thaw_copies_objects_out():
    p = oh.Plain({"k": [1, 2]}, [oh.Point([3], {4})], (5, [6]))
    p.c = (p, [7])
    root = pf.loads(pf.dumps({"p": p, "again": p}), classes=[oh])
    t = pf.thaw(root)
    assert type(t) is dict
    tp = t["p"]
    assert type(tp) is oh.Plain and tp is not root["p"] and tp is t["again"]
    assert type(tp.a) is dict and type(tp.a["k"]) is list and tp.a == {"k": [1, 2]}
    assert type(tp.b) is list and type(tp.b[0]) is oh.Point and type(tp.b[0].x) is list
    assert type(tp.b[0].y) is set
    assert tp.c[0] is tp and type(tp.c[1]) is list
    assert_equivalent(t, {"p": p, "again": p})
    tp.a["k"].append(3)  # a plain, writable copy
    assert root["p"].a["k"] == [1, 2]


def test_thaw_of_an_instance_read_from_an_image(image_path):
    """docs/OBJECTS.md: thaw(instance) of an instance read from an image
    returns it as it is; thaw() of a view holding it copies it out."""
    p = oh.Plain({"k": [1, 2]}, [3], None)
    p.c = p
    pf.freeze({"p": p}, image_path)
    view = pf.open(image_path, classes=[oh])
    root = view["p"]
    assert pf.thaw(root) is root and type(root.a) is pf.DictView
    t = pf.thaw(view)["p"]
    assert type(t) is oh.Plain and t is not root
    assert type(t.a) is dict and type(t.a["k"]) is list and type(t.b) is list
    assert t.c is t


def test_classes_with_their_own_state_rules():
    """__setstate__ runs on read; a data descriptor named as an attribute is
    bypassed as pickle bypasses it; __getnewargs__ gives __new__ its
    arguments."""
    x = [oh.WithState([1, 2]), oh.Doubled({"k": 3}), oh.NewArgs((3, [4]))]
    for root in (pf.loads(pf.dumps(x), classes=[oh]),
                 pf.thaw(pf.loads(pf.dumps(x), classes=[oh]))):
        w, d, n = root
        assert type(w) is oh.WithState and w.v == [1, 2]
        assert w.cache == {"derived": [1, 2], "restored": True}
        assert type(d) is oh.Doubled and d.a == ("doubled", {"k": 3})
        assert vars(d) == {"a": {"k": 3}}
        assert type(n) is oh.NewArgs and n.n == (3, [4]) and type(n.n) is tuple


def test_deep_chains_of_objects():
    """Objects are built eagerly: a chain deeper than the recursion limit
    allows raises RecursionError, never crashes."""
    head = None
    for i in range(600):
        head = oh.Plain(i, head)
    root = pf.loads(pf.dumps(head), classes=[oh])
    n = 0
    while root is not None:
        assert type(root) is oh.Plain and root.a == 599 - n
        root, n = root.b, n + 1
    assert n == 600
    for i in range(600, 5000):
        head = oh.Plain(i, head)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30000)
    try:
        data = pf.dumps([head])
    except RecursionError:
        # Python 3.12+ bounds C recursion apart from sys.setrecursionlimit:
        # freezing such a chain is refused cleanly, as pickle refuses it.
        assert sys.version_info >= (3, 12)
        return
    finally:
        sys.setrecursionlimit(limit)
    view = pf.loads(data, classes=[oh])
    # Reading builds the chain eagerly: past the recursion limit, or the
    # reader's own bound on nested objects (2000: the same on every Python,
    # whose C recursion checks differ by version), that is a RecursionError;
    # a shorter chain is read whole, correctly.
    for read in (lambda: view[0], lambda: pf.thaw(view)[0]):
        try:
            node = read()
        except RecursionError:
            continue
        n = 0
        while node is not None:
            assert type(node) is oh.Plain and node.a == 4999 - n
            node, n = node.b, n + 1
        assert n == 5000
    pf.verify(pf.Image.from_buffer(data))


def test_frozen_dataclass_and_namedtuple_stay_immutable():
    f = pf.loads(pf.dumps(oh.Frozen("a", (1, 2))), classes=[oh.Frozen])
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.label = "b"
    assert hash(f) == hash(oh.Frozen("a", (1, 2)))
    nt = pf.loads(pf.dumps(oh.Pair(1, "x")), classes=[oh.Pair])
    assert nt == (1, "x") and nt.first == 1 and nt._fields == ("first", "second")
    with pytest.raises(AttributeError):
        nt.first = 2


def test_builtin_subclass_keeps_its_attributes():
    """A subclass instance with attributes of its own keeps them, as pickle
    keeps them."""
    for value in (oh.MyStr("s"), oh.MyInt(7), oh.MyTuple((1, 2)),
                  oh.MySet({1, 2}), oh.MyFrozenset({3})):
        value.tag = ["t", type(value).__name__]
        try:
            got = pf.loads(pf.dumps(value), classes=[oh])
        except TypeError as e:
            pytest.fail(f"{type(value).__name__} with an attribute: {e}")
        assert type(got) is type(value) and got == value
        assert got.tag == ["t", type(value).__name__]


# ----------------------------------------------------------------- 2. the trie


def _words():
    rng = random.Random(2026)
    words = {"".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8)))
             for _ in range(3000)}
    absent = {"", "z", "abz", "a" * 20, "ab\u20ac", "ABC"}
    while len(absent) < 600:
        w = "".join(rng.choice("abcdefghijk") for _ in range(rng.randint(1, 9)))
        if w not in words:
            absent.add(w)
    absent -= words
    prefixes = sorted({w[:k] for w in sorted(words)[::41] for k in (1, 2, 3, 5)} | {"", "k", "jj"})
    return sorted(words), sorted(absent), prefixes


WORDS, ABSENT, PREFIXES = _words()


@pytest.fixture(scope="module")
def trie_image(tmp_path_factory):
    trie = oh.Trie(WORDS)
    path = tmp_path_factory.mktemp("trie") / "trie.pf"
    pf.freeze(trie, path)
    return trie, path


def test_trie_answers_like_the_original(trie_image):
    trie, path = trie_image
    assert 2000 < len(trie) == len(WORDS)
    frozen = pf.open(path, classes=[oh.Trie, oh.Node])
    assert type(frozen) is oh.Trie and type(frozen.root) is oh.Node
    assert type(frozen.root.children) is pf.DictView
    assert len(frozen) == len(trie)
    wrong = [w for w in WORDS + ABSENT if frozen.lookup(w) != trie.lookup(w)]
    assert wrong == []
    assert all(frozen.lookup(w) for w in WORDS)
    assert not any(frozen.lookup(w) for w in ABSENT)
    for p in PREFIXES:
        assert frozen.startswith(p) == trie.startswith(p), p
    assert frozen.startswith("") == WORDS
    for w in WORDS[::7]:  # the words found again through the parent links
        assert frozen._find(w).word() == w


def test_trie_read_by_threads(trie_image):
    """Threads reading one frozen trie (and building its nodes through one
    weak table) all get the original's answers."""
    trie, path = trie_image
    frozen = pf.open(path, classes=[oh.Trie, oh.Node])
    sample = WORDS[::3] + ABSENT
    expected = [oh.trie_answers(trie, w) for w in sample]
    results = {}

    def work(k):
        results[k] = [oh.trie_answers(frozen, w) for w in sample[k::4]]

    # Switch threads as often as possible, and collect garbage often (a
    # collection runs Python code, where the GIL may pass to another thread
    # while a node is being built): no thread may see a half-built node.
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(10)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
    for k in range(4):
        assert results[k] == expected[k::4]


def test_in_memory_image_pickles_with_its_trust():
    """A view of a loads() image pickles the bytes, and the allow-list with
    them: unpickled, it reads its objects as the original view does."""
    data = pf.dumps({"p": oh.Plain([1, 2], "b"), "n": 1})
    trusted = pf.loads(data, classes=[oh.Plain])
    again = pickle.loads(pickle.dumps(trusted))
    assert again["p"].a == [1, 2] and type(again["p"]) is oh.Plain
    untrusted = pickle.loads(pickle.dumps(pf.loads(data)))
    assert untrusted["n"] == 1
    with pytest.raises(pf.ClassNotAllowedError):
        untrusted["p"]
    p = trusted["p"]  # an instance pickles its views
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is oh.Plain and q.a == [1, 2] and type(q.a) is pf.ListView


def test_trie_view_pickles_by_reference(trie_image):
    trie, path = trie_image
    frozen = pf.open(path, classes=[oh.Trie, oh.Node])
    blob = pickle.dumps(frozen, protocol=pickle.HIGHEST_PROTOCOL)
    original = pickle.dumps(trie, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(blob) < 2000 and len(blob) * 50 < len(original), (len(blob), len(original))
    again = pickle.loads(blob)
    assert type(again) is oh.Trie
    assert [again.lookup(w) for w in WORDS[::5] + ABSENT] == [trie.lookup(w) for w in WORDS[::5] + ABSENT]


def test_trie_in_a_spawn_pool(trie_image, spawn_pool):
    trie, path = trie_image
    sample = WORDS[::23] + ABSENT[::11]
    expected = [oh.trie_answers(trie, w) for w in sample]
    frozen = pf.open(path, classes=[oh.Trie, oh.Node])
    got = spawn_pool.map(functools.partial(oh.trie_answers, frozen), sample, chunksize=8)
    assert got == expected
    # A module-prefix allow-list travels the same way (a bound method pickles its instance).
    frozen = pf.open(path, classes=["objects_helpers"])
    assert spawn_pool.map(frozen.lookup, sample, chunksize=8) == [trie.lookup(w) for w in sample]


def test_an_untrusted_view_stays_untrusted_in_workers(tmp_path, spawn_pool):
    path = tmp_path / "plain.pf"
    pf.freeze({"plain": oh.Plain([1, 2], "b"), "n": 5}, path)
    view = pf.open(path)
    assert view["n"] == 5
    with pytest.raises(pf.ClassNotAllowedError):
        spawn_pool.map(oh.item_attr, [(view, "plain", "a")])
    trusted = pf.open(path, classes=[oh.Plain])
    assert spawn_pool.map(oh.item_attr, [(trusted, "plain", "a"), (trusted, "plain", "b")]) == [[1, 2], "b"]
    # Each view carries its own settings, also after the trusted one went through.
    with pytest.raises(pf.ClassNotAllowedError):
        spawn_pool.map(oh.item_attr, [(view, "plain", "a")] * 4)


# ----------------------------------------------------------------- 3. the pipeline and share()


def make_pipeline():
    synonyms = {w.upper(): w for w in WORDS[:1500]}
    synonyms.update({"colour": "color", "grey": "gray"})
    weights = [round(1 + (i % 17) / 7, 3) for i in range(1200)]
    return oh.Pipeline(oh.Normalize(synonyms), oh.Known(oh.Trie(WORDS)), oh.Weigh(weights))


def _items():
    rng = random.Random(7)
    items = []
    for _ in range(48):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        words += [rng.choice(WORDS[:1500]).upper(), rng.choice(ABSENT) or "zz", "colour"]
        rng.shuffle(words)
        items.append(" ".join(words))
    return items


ITEMS = _items()


@posix_shm
def test_shared_pipeline_in_a_spawn_pool(private_registry, spawn_pool):
    pipeline = make_pipeline()
    expected = [pipeline(i) for i in ITEMS]
    assert any(total > 0 for total, _ in expected)
    shared = pf.share(pipeline)
    assert type(shared) is oh.Pipeline and type(shared.stages) is pf.ListView
    assert [type(s) for s in shared.stages] == [oh.Normalize, oh.Known, oh.Weigh]
    assert type(shared.stages[0].synonyms) is pf.DictView
    assert type(shared.stages[1].trie) is oh.Trie
    assert type(shared.stages[2].weights) is pf.ListView
    assert [shared(i) for i in ITEMS] == expected
    assert len(pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)) < 2000
    assert spawn_pool.map(shared, ITEMS, chunksize=6) == expected


@posix_shm
def test_share_attributes_of_a_stage(private_registry, spawn_pool):
    synonyms = {w.upper(): w for w in WORDS[:1500]}
    stage = oh.Normalize(dict(synonyms))
    stage.small = [1, 2, 3]
    stage.big_list = list(range(1500))
    stage.big_set = set(range(1000))
    stage.tag = "x"
    small = stage.small
    expected = [stage(i) for i in ITEMS]
    before = len(pickle.dumps(stage, protocol=pickle.HIGHEST_PROTOCOL))
    assert pf.share_attributes(stage) is stage
    assert type(stage) is oh.Normalize
    assert type(stage.synonyms) is pf.DictView and stage.synonyms == synonyms
    assert type(stage.big_list) is pf.ListView and stage.big_list == list(range(1500))
    assert type(stage.big_set) is pf.SetView and stage.big_set == set(range(1000))
    assert stage.small is small and stage.tag == "x"
    image = pf.image_of(stage.synonyms)
    assert pf.image_of(stage.big_list) is image and pf.image_of(stage.big_set) is image
    assert image.shared_name and image.owner
    after = len(pickle.dumps(stage, protocol=pickle.HIGHEST_PROTOCOL))
    assert after < 2000 < before
    assert [stage(i) for i in ITEMS] == expected
    assert spawn_pool.map(stage, ITEMS, chunksize=6) == expected
    # Nothing large enough: nothing changes.
    other = oh.Normalize({"a": "b"})
    assert pf.share_attributes(other, min_size=2) is other and type(other.synonyms) is dict
    with pytest.raises(TypeError):
        pf.share_attributes(oh.Slotted(1, 2))


@posix_shm
def test_share_of_an_object_root_and_pickles(private_registry, spawn_pool):
    root = pf.share({"r": oh.Reduced([1, 2]), "p": oh.Point(1, [2])}, allow_pickle=True)
    assert root["r"] == oh.Reduced([1, 2]) and root["p"] == oh.Point(1, [2])
    got = spawn_pool.map(oh.item_of, [(root, "r"), (root, "p")])
    assert got == [oh.Reduced([1, 2]), oh.Point(1, [2])]
    p = pf.share(oh.Plain({"k": 1}, [2]))
    assert type(p) is oh.Plain and type(p.a) is pf.DictView and p.a == {"k": 1}
    with pytest.raises(TypeError):
        pf.share({"r": oh.Reduced(1)})


# ----------------------------------------------------------------- 4. identity and cycles


def test_one_instance_per_stored_object(trie_image):
    _, path = trie_image
    frozen = pf.open(path, classes=[oh.Trie, oh.Node])
    assert frozen.root is frozen.root
    for node in frozen.root.children.values():
        assert node.parent is frozen.root
        for child in node.children.values():
            assert child.parent is node
            assert node.children[child.char] is child


def test_shared_object_and_cycles():
    a = oh.Plain(None, None)
    b = oh.Plain(a, None)
    a.a = b                      # mutual
    me = oh.Plain(None, None)
    me.a = me                    # self-cycle
    me.b = [me, [me], {"me": me}]  # cycles through containers
    pt = oh.Point(None, None)
    pt.x = [pt, a]
    x = {"a": a, "b": b, "me": me, "pt": pt, "twice": [a, a, (a, b)]}
    root = pf.loads(pf.dumps(x), classes=[oh])
    ra, rb, rme = root["a"], root["b"], root["me"]
    assert ra.a is rb and rb.a is ra and ra.a.a is ra
    assert rme.a is rme and rme.b[0] is rme and rme.b[1][0] is rme and rme.b[2]["me"] is rme
    assert root["pt"].x[0] is root["pt"] and root["pt"].x[1] is ra
    assert root["twice"][0] is ra and root["twice"][1] is ra and root["twice"][2] == (ra, rb)
    assert_equivalent(root, x)
    t = pf.thaw(root)
    assert t["a"].a is t["b"] and t["b"].a is t["a"] and t["me"].a is t["me"]
    assert t["me"].b[0] is t["me"] and t["pt"].x[0] is t["pt"] and t["twice"][2][0] is t["a"]


def test_identity_of_slotted_objects():
    """docs/OBJECTS.md: an instance of a class without weak reference
    support (__slots__ without __weakref__) is built anew at each read; a
    cycle through its own attributes still closes (one decode). With a
    __weakref__ slot, it is one instance per stored object, as any object."""
    assert not oh.Slotted.__weakrefoffset__
    s = oh.Slotted(None, None)
    s.x = s                      # a direct cycle
    s.y = [s, {"s": s}]          # cycles through containers
    root = pf.loads(pf.dumps({"s": s, "again": [s]}), classes=[oh])
    r = root["s"]
    assert r.x is r
    again = r.y[0]
    assert type(again) is oh.Slotted and again.x is again and again is not r
    assert type(root["again"][0]) is oh.Slotted
    # __weakref__ in the slots: identity through containers too.
    w = oh.WeakSlotsPoint(None)
    w.x = [w, {"w": w}]
    root = pf.loads(pf.dumps({"w": w, "again": [w]}), classes=[oh])
    rw = root["w"]
    assert rw.x[0] is rw and rw.x[1]["w"] is rw and root["again"][0] is rw
    # thaw() keeps the shape of the graph in both cases.
    t = pf.thaw(pf.loads(pf.dumps([s, w]), classes=[oh]))
    assert t[0].x is t[0] and t[0].y[0] is t[0] and t[0].y[1]["s"] is t[0]
    assert t[1].x[0] is t[1]


def test_instances_are_not_kept_alive():
    """The weak table never keeps an instance alive: once the program drops
    it, it is gone, and a later read builds it again from the image."""
    x = [oh.Plain(i, None) for i in range(50)]
    root = pf.loads(pf.dumps(x), classes=[oh])
    refs = [weakref.ref(p) for p in root]
    gc.collect()
    assert all(r() is None for r in refs)
    p = root[3]
    p.marker = True
    assert root[3] is p
    del p
    gc.collect()
    assert not hasattr(root[3], "marker") and root[3].a == 3


def test_tuple_containing_itself_through_objects_is_refused(clean_dir):
    """A tuple met before the object that closes its cycle could not be
    rebuilt (objects are built eagerly): ValueError. Met after the object,
    or with a container in the cycle, it reads back."""
    p = oh.Plain(None, None)
    t = (1, p)
    p.a = t
    for value in (t, [t], {"k": t}, [t, p], (t,)):
        with pytest.raises(ValueError, match="contains itself"):
            pf.dumps(value)
    with pytest.raises(ValueError):
        pf.freeze({"k": t}, clean_dir.path / "cycle.pf")
    r = pf.loads(pf.dumps(p), classes=[oh])
    assert r.a[0] == 1 and r.a[1] is r
    r = pf.loads(pf.dumps([p, t]), classes=[oh])
    assert r[0].a[1] is r[0] and r[1][1] is r[0]
    # Through a list, the cycle can be rebuilt.
    q = oh.Plain(None, None)
    u = (1, q)
    q.a = [u]
    root = pf.loads(pf.dumps(u), classes=[oh])
    assert root[0] == 1 and root[1].a[0][1] is root[1]


def test_identity_of_objects_made_by_a_call():
    """Objects rebuilt by calling their class (set subclasses, Counter,
    functools.partial) whose instances can be weakly referenced: stored
    once and held twice, they come back as one instance, as any object."""
    values = {"set": oh.MySet({1, 2}), "frozenset": oh.MyFrozenset({3}),
              "partial": functools.partial(oh.helper_function, 1)}
    for name, x in values.items():
        assert type(x).__weakrefoffset__, name
        root = pf.loads(pf.dumps({"a": x, "b": [x], "t": (x,)}), trust=True)
        assert type(root["a"]) is type(x), name
        assert root["a"] is root["b"][0] is root["t"][0], name


# ----------------------------------------------------------------- 5. refusals


def test_class_not_allowed_names_the_class_and_the_fix(image_path):
    data = pf.dumps([oh.Point(1, 2)])
    with pytest.raises(pf.ClassNotAllowedError) as info:
        pf.loads(data)[0]
    msg = str(info.value)
    assert "objects_helpers.Point" in msg
    assert "classes=[Point]" in msg and "'objects_helpers'" in msg and "trust=True" in msg
    pf.freeze(oh.Point(1, 2), image_path)
    with pytest.raises(pf.ClassNotAllowedError, match="objects_helpers.Point"):
        pf.open(image_path)
    with pytest.raises(pf.ClassNotAllowedError, match="objects_helpers.Point"):
        pf.open(image_path, classes=[oh.Plain])
    assert pf.open(image_path, classes=[oh.Point]) == oh.Point(1, 2)


def test_class_moved_since_the_freeze(tmp_path, monkeypatch):
    name = "pfmod_" + uuid.uuid4().hex[:8]
    source = tmp_path / f"{name}.py"
    source.write_text("class Thing:\n    def __init__(self, v):\n        self.v = v\n\n"
                      "def fn():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    mod = importlib.import_module(name)
    data = pf.dumps({"thing": mod.Thing([1]), "fn": mod.fn})
    assert pf.loads(data, classes=[name])["thing"].v == [1]
    # The class is renamed and the function removed.
    source.write_text("class Renamed:\n    pass\n")
    monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    for kw in ({"classes": [name]}, {"trust": True}):
        root = pf.loads(data, **kw)
        with pytest.raises(pf.ClassNotFoundError) as info:
            root["thing"]
        assert f"{name}.Thing" in str(info.value)
        with pytest.raises(pf.ClassNotFoundError, match=f"{name}.fn"):
            root["fn"]
    # The whole module is gone.
    source.unlink()
    monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    with pytest.raises(pf.ClassNotFoundError):
        pf.loads(data, trust=True)["thing"]
    # Not allowed comes first: nothing is imported for a refused name.
    with pytest.raises(pf.ClassNotAllowedError):
        pf.loads(data)["thing"]


OLD_MODULE = """
import enum, typing

class Mood(enum.Enum):
    HAPPY = 1
    SAD = 2

class Versioned:
    def __init__(self, v):
        self.v = v
    def __setstate__(self, state):
        self.__dict__.update(state)

class Row(typing.NamedTuple):
    a: int
    b: int

class Slots:
    __slots__ = ("old",)
    def __init__(self, v):
        self.old = v
"""

NEW_MODULE = """
import enum, typing

class Mood(enum.Enum):
    HAPPY = 1

class Versioned:
    def __setstate__(self, state):
        self.version = state["version"]      # the old state has none

class Row(typing.NamedTuple):
    a: int
    b: int
    c: int

class Slots:
    __slots__ = ("new",)
"""


def test_class_changed_since_the_freeze(tmp_path, monkeypatch):
    """The class's own code refuses the stored state: ObjectStateError, with
    the class's exception as its cause."""
    name = "pfchanged_" + uuid.uuid4().hex[:8]
    source = tmp_path / f"{name}.py"
    source.write_text(OLD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    mod = importlib.import_module(name)
    data = pf.dumps({"mood": mod.Mood.SAD, "versioned": mod.Versioned([1]),
                     "row": mod.Row(1, 2), "slots": mod.Slots("v")})
    root = pf.loads(data, classes=[name])
    assert root["mood"] is mod.Mood.SAD and root["versioned"].v == [1]
    assert root["row"] == (1, 2) and root["slots"].old == "v"
    source.write_text(NEW_MODULE)
    monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    root = pf.loads(data, classes=[name])
    causes = {"mood": ValueError, "versioned": KeyError, "row": TypeError, "slots": AttributeError}
    for key, cause in causes.items():
        with pytest.raises(pf.ObjectStateError) as info:
            root[key]
        assert isinstance(info.value, pf.Error)
        assert isinstance(info.value.__cause__, cause), (key, info.value.__cause__)
        assert name in str(info.value), str(info.value)
    with pytest.raises(pf.ObjectStateError):
        pf.thaw(root)


def test_class_deleted_from_its_module(monkeypatch):
    data = pf.dumps([oh.Point(1, 2), oh.helper_function])
    monkeypatch.delattr(oh, "Point")
    monkeypatch.delattr(oh, "helper_function")
    root = pf.loads(data, trust=True)
    with pytest.raises(pf.ClassNotFoundError, match="objects_helpers.Point"):
        root[0]
    with pytest.raises(pf.ClassNotFoundError, match="objects_helpers.helper_function"):
        root[1]


def test_pickles_need_allow_pickle(image_path):
    value = {"r": oh.Reduced([1, "a"]), "n": 1}
    with pytest.raises(TypeError, match="allow_pickle=True"):
        pf.dumps(value)
    with pytest.raises(TypeError, match="allow_pickle=True"):
        pf.freeze(value, image_path)
    assert not image_path.exists()
    data = pf.dumps(value, allow_pickle=True)
    pf.freeze(value, image_path, allow_pickle=True)
    assert image_path.read_bytes()[:8] == data[:8]
    for kw in ({}, {"trust": True}, {"classes": [oh]}):
        root = pf.loads(data, **kw)
        assert root["n"] == 1
        with pytest.raises(pf.PickleNotAllowedError, match="allow_pickle=True"):
            root["r"]
        with pytest.raises(pf.PickleNotAllowedError):
            pf.open(image_path, **kw)["r"]
    assert pf.loads(data, allow_pickle=True)["r"] == oh.Reduced([1, "a"])
    assert pf.open(image_path, allow_pickle=True)["r"] == oh.Reduced([1, "a"])
    assert pf.thaw(pf.loads(data, allow_pickle=True)) == value


def _local():
    class Local:
        pass

    def local_function():
        pass

    return Local, local_function


Local, local_function = _local()


@pytest.mark.parametrize("value", [
    pytest.param(lambda: 0, id="lambda"),
    pytest.param(local_function, id="local-function"),
    pytest.param(Local, id="local-class"),
    pytest.param(Local(), id="local-instance"),
    pytest.param((i for i in range(3)), id="generator"),
    pytest.param(memoryview(b"x"), id="memoryview"),
    pytest.param(sys, id="module"),
])
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_unstorable_values_raise_type_error(value, allow_pickle, clean_dir):
    with pytest.raises(TypeError):
        pf.dumps(value, allow_pickle=allow_pickle)
    with pytest.raises(TypeError) as info:
        pf.dumps({"a": [1, value]}, allow_pickle=allow_pickle)
    assert "$['a'][1]" in str(info.value)
    with pytest.raises(TypeError):
        pf.freeze([value], clean_dir.path / "x.pf", allow_pickle=allow_pickle)


def test_local_definitions_say_why():
    for value in (lambda: 0, local_function, Local, Local()):
        with pytest.raises(TypeError, match="inside a function"):
            pf.dumps(value)


# ----------------------------------------------------------------- 5b. keys of new types
#
# A key of a type the core does not know is stored as a keyed value (R35):
# the object with a proxy of a core key type that carries Python's equality
# (docs/OBJECTS.md, "Keys"). Oracle: a plain dict of the same keys.

UTC = datetime.timezone.utc
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))
MINUS5 = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))
D, Q = decimal.Decimal, fractions.Fraction

NEW_KEYS = {
    "Enum": oh.Color.RED,
    "Enum-tuple-value": oh.Color.BLUE,
    "IntEnum": oh.Level.LOW,
    "IntFlag": oh.Perm.R | oh.Perm.X,
    "NamedTuple": oh.Pair(1, "a"),
    "namedtuple": oh.Coord(1.5, 2),
    "str-subclass": oh.MyStr("k"),
    "int-subclass": oh.MyInt(7),
    "tuple-subclass": oh.MyTuple((1, 2)),
    "frozenset-subclass": oh.MyFrozenset({1, 2}),
    "Decimal-float": D("0.5"),
    "Decimal-int": D("3.000"),
    "Decimal-other": D("0.1"),
    "Decimal-huge": D("1e400"),
    "Decimal-tiny": D("-1e-400"),
    "Decimal-inf": D("-Infinity"),
    "Fraction": Q(1, 3),
    "Fraction-float": Q(3, 4),
    "datetime-naive": datetime.datetime(2020, 2, 29, 23, 59, 59, 999999),
    "datetime-aware": datetime.datetime(2020, 1, 1, 12, tzinfo=PLUS2),
    "date": datetime.date(1, 1, 1),
    "time-naive": datetime.time(12, 30),
    "time-aware": datetime.time(12, 30, tzinfo=MINUS5),
    "timedelta": datetime.timedelta(days=-1, microseconds=5),
    "UUID": uuid.UUID(int=2**100 + 5),
    "range": range(0, 10, 3),
    "range-empty": range(5, 5),
    "class": oh.Plain,
    "function": oh.helper_function,
    "builtin-class": int,
}


@pytest.mark.parametrize("key", list(NEW_KEYS.values()), ids=list(NEW_KEYS))
def test_new_key_types_round_trip(key):
    """As a dict key, a set item, inside a tuple key and inside a frozenset
    key: found by itself, read back as the same type, and the image
    verifies."""
    value = {key: "k", "plain": 1, (0, key): "t", frozenset({key, 0}): "f"}
    data = pf.dumps(value)
    pf.verify(pf.Image.from_buffer(data))
    view = pf.loads(data, trust=True)
    assert view[key] == "k" and view[(0, key)] == "t" and view[frozenset({0, key})] == "f"
    assert key in view and view.get(key) == "k"
    assert view == value and pf.thaw(view) == value
    got = next(iter(view))
    assert got == key and type(got) is type(key)
    assert_same_types(pf.thaw(view), value)
    s = pf.loads(pf.dumps({key, "x"}), trust=True)
    assert key in s and s == {key, "x"}
    assert type(next(k for k in s if k != "x")) is type(key)


# Each stored key, the keys Python finds equal to it (all must find it), and
# keys it finds unequal (none may).
EQUAL_FORMS = [
    (D("0.5"), [0.5, Q(1, 2), D("0.500"), complex(0.5, 0), D("5e-1")], [0.25, "0.5", D("0.50001")]),
    (D("0.1"), [Q(1, 10), D("0.10")], [0.1, Q(1, 11)]),
    (Q(1, 3), [Q(2, 6)], [1 / 3, D(1) / D(3)]),
    (oh.Level.LOW, [1, 1.0, True, D(1), Q(1), oh.MyInt(1)], [2, oh.Color.RED, "LOW"]),
    (1, [oh.Level.LOW, D("1.0"), Q(2, 2), oh.Perm.X], [oh.Color.RED]),
    (0.5, [D("0.5"), Q(1, 2)], [D("0.1")]),
    (D(10) ** 400, [10 ** 400, float("inf") if False else 10 ** 400], [10 ** 400 + 1]),
    (datetime.datetime(2020, 1, 1, 12, tzinfo=PLUS2),
     [datetime.datetime(2020, 1, 1, 10, tzinfo=UTC),
      datetime.datetime(2020, 1, 1, 4, 30, tzinfo=MINUS5)],
     [datetime.datetime(2020, 1, 1, 10), datetime.datetime(2020, 1, 1, 12),
      datetime.date(2020, 1, 1)]),
    (datetime.datetime(2020, 1, 1, 10), [datetime.datetime(2020, 1, 1, 10, 0, 0, 0)],
     [datetime.datetime(2020, 1, 1, 10, tzinfo=UTC), datetime.date(2020, 1, 1)]),
    (datetime.date(2020, 1, 1), [datetime.date(2020, 1, 1)], [datetime.datetime(2020, 1, 1)]),
    (datetime.time(12, 30, tzinfo=PLUS2), [datetime.time(10, 30, tzinfo=UTC)],
     [datetime.time(12, 30), datetime.time(10, 30)]),
    (datetime.timedelta(days=1), [datetime.timedelta(hours=24)], [86400, datetime.timedelta(1, 1)]),
    (uuid.UUID(int=5), [uuid.UUID("00000000-0000-0000-0000-000000000005")], [5]),
    (range(0, 10, 3), [range(0, 12, 3), range(0, 11, 3)], [range(0, 13, 3), (0, 3, 6, 9)]),
    (range(0), [range(5, 5), range(3, 1, 2)], [range(1)]),
    (range(1, 2), [range(1, 2, 7), range(1, 0, -1)], [range(0, 1)]),
    (oh.Pair(1, 2), [(1, 2), oh.Coord(1, 2), oh.MyTuple((1, 2))], [(2, 1), (1, 2, 3)]),
    ((1, D("0.1")), [(1, Q(1, 10)), oh.Pair(1, D("0.10"))], [(1, 0.1)]),
    (oh.MyStr("k"), ["k"], ["K", b"k"]),
    (frozenset({oh.Level.HIGH}), [frozenset({10}), oh.MyFrozenset({10.0})], [frozenset({1})]),
    (oh.Color.RED, [oh.Color.RED], [1, "RED", oh.Level.LOW]),
    (oh.Plain, [oh.Plain], [oh.Slotted, "Plain"]),
]


@pytest.mark.parametrize("stored, equal, unequal", EQUAL_FORMS,
                         ids=[repr(e[0])[:40] for e in EQUAL_FORMS])
def test_keys_keep_python_equality(stored, equal, unequal):
    """Lookups answer as the dict of the same keys does: the issue's
    Decimal("0.5") / Fraction(1, 2) / 0.5, IntEnum members and their ints,
    aware datetimes by instant."""
    want = {stored: "v", "other": 0}
    view = pf.loads(pf.dumps(want), trust=True)
    sview = pf.loads(pf.dumps(set(want)), trust=True)
    for probe in [stored, *equal]:
        assert probe in want, probe  # the oracle agrees with the table
        assert probe in view and view[probe] == "v" and probe in sview, probe
    for probe in unequal:
        assert probe not in want, probe
        assert probe not in view and view.get(probe) is None and probe not in sview, probe


def test_equal_keys_are_one_key():
    """Keys that Python finds equal are one entry, whichever type each was
    given as: in a dict (the first key, the last value), a Builder, a set."""
    want = {}
    for k, v in [(oh.Level.LOW, "a"), (1, "b"), (D("0.5"), "c"), (Q(1, 2), "d"),
                 (datetime.datetime(2020, 1, 1, 12, tzinfo=PLUS2), "e"),
                 (datetime.datetime(2020, 1, 1, 10, tzinfo=UTC), "f")]:
        want[k] = v
    assert len(want) == 3
    view = pf.loads(pf.dumps(want), trust=True)
    assert dict(view) == want and list(view) == list(want)
    assert [type(k) for k in view] == [type(k) for k in want]


def test_builder_merges_equal_keys_of_new_types(tmp_path):
    path = tmp_path / "keys.pf"
    with pf.Builder(path) as b:
        b[oh.Level.LOW] = 1
        b[1] = 2
        b[D("0.1")] = 3
        b[Q(1, 10)] = 4
        b[oh.Color.RED] = 5
    want = {oh.Level.LOW: 2, D("0.1"): 4, oh.Color.RED: 5}
    view = pf.open(path, classes=[oh])
    assert dict(view) == want and list(view) == list(want)
    assert type(next(iter(view))) is oh.Level
    pf.verify(path)


@pytest.mark.parametrize("key", [
    pytest.param(oh.Frozen("a"), id="frozen-dataclass"),
    pytest.param(oh.Plain(1, 2), id="plain"),
    pytest.param(D("1e999999999"), id="Decimal-too-large"),
])
def test_keys_without_a_rule_are_refused(key):
    """Objects whose equality is their own class's (or would be too costly
    to store exactly) cannot be keys: a TypeError that says where."""
    for value in ({key: 1}, {(1, key)}, [frozenset({key})]):
        with pytest.raises(TypeError, match="cannot be a dict key") as info:
            pf.dumps(value)
        assert "Keys" in str(info.value)
    if not isinstance(key, D):
        assert_equivalent(pf.loads(pf.dumps({"k": key}), trust=True)["k"], key)  # a value is fine


def test_lookup_by_a_type_no_key_can_equal():
    view = pf.loads(pf.dumps({1: "a", oh.Level.HIGH: "b", D("0.1"): "c"}), trust=True)
    for probe in (oh.Frozen("a"), object(), D("1e999999999"), D("NaN")):
        assert probe not in view and view.get(probe) is None
    with pytest.raises(TypeError, match="unhashable"):
        view[oh.Point(1, 2)]  # a dataclass with eq and no hash: as dict says


def test_keyed_keys_need_the_trust_of_their_class():
    """A reader that did not allow a key's class can still use the other
    keys (the proxy places every key without importing anything); reaching
    the refused key raises ClassNotAllowedError."""
    data = pf.dumps({oh.Color.RED: 1, "plain": 2, D("0.1"): 3})
    view = pf.loads(data)
    assert len(view) == 3 and view["plain"] == 2 and view[D("0.1")] == 3
    with pytest.raises(pf.ClassNotAllowedError, match="Color"):
        view[oh.Color.RED]
    with pytest.raises(pf.ClassNotAllowedError):
        list(view)
    assert pf.loads(data, classes=[oh.Color])[oh.Color.RED] == 1


def test_keyed_keys_in_a_spawn_pool(tmp_path):
    """Workers attach with the image's trust and find keys by equal values
    of other types."""
    table = {oh.Level.LOW: "low", D("0.1"): "tenth", datetime.date(2020, 1, 1): "day"}
    shared = pf.share(table)
    probes = [1, Q(1, 10), datetime.date(2020, 1, 1)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.map(shared.__getitem__, probes)
    assert got == ["low", "tenth", "day"]


_KEY_ATOMS = (
    st.integers(-3, 3) | st.floats(-2, 2).map(lambda f: round(f * 4) / 4)
    | st.sampled_from([D("0.5"), D("0.1"), D("-0.25"), D(2), Q(1, 3), Q(1, 2), Q(-5, 2),
                       oh.Level.LOW, oh.Level.HIGH, oh.Perm.R, oh.Perm.R | oh.Perm.W,
                       oh.Color.RED, oh.Color.GREEN, oh.MyStr("a"), "a", b"a", None, True,
                       range(0, 4, 2), range(0, 3, 2), range(0), range(2, 2),
                       uuid.UUID(int=1), datetime.timedelta(0), datetime.timedelta(hours=24),
                       datetime.timedelta(days=1), oh.Plain, int])
    | st.builds(datetime.datetime, st.just(2020), st.just(1), st.integers(1, 2),
                st.integers(0, 23), st.sampled_from([0, 30]),
                tzinfo=st.sampled_from([None, UTC, PLUS2, MINUS5]))
    | st.builds(datetime.time, st.integers(0, 23), st.sampled_from([0, 30]),
                tzinfo=st.sampled_from([None, UTC, PLUS2]))
    | st.builds(datetime.date, st.just(2020), st.just(1), st.integers(1, 2))
)
_KEYS = st.recursive(
    _KEY_ATOMS,
    lambda c: (st.tuples(c, c) | st.builds(oh.Pair, c, c) | st.frozensets(c, max_size=3)),
    max_leaves=6)


@given(st.lists(st.tuples(_KEYS, st.integers()), max_size=12), st.lists(_KEYS, max_size=8))
def test_keys_of_new_types_differential(pairs, probes):
    """A frozen dict and set of mixed keys answer every lookup (the stored
    keys and other probes) as the dict and set they were frozen from."""
    want = dict(pairs)
    view = pf.loads(pf.dumps(want), trust=True)
    sview = pf.loads(pf.dumps(set(want)), trust=True)
    pf.verify(pf.Image.from_buffer(pf.dumps(want)))
    assert len(view) == len(want) and list(view) == list(want)
    for p in [k for k, _ in pairs] + probes:
        assert (p in view) == (p in want), p
        assert view.get(p) == want.get(p), p
        assert (p in sview) == (p in want), p
    assert view == want and sview == set(want)
    assert pf.thaw(view) == want


# ----------------------------------------------------------------- 6. numpy arrays


DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128", ">i4", ">f8", "<u2", ">c16"]


def sample_array(dtype, shape):
    dt = np.dtype(dtype)
    n = 1
    for k in shape:
        n *= k
    base = np.arange(n)
    if dt.kind == "b":
        a = base % 3 == 0
    elif dt.kind == "c":
        a = base * 1.5 + 1j * (base - 2.25)
    elif dt.kind == "f":
        a = base / 4 - 3
    elif dt.kind == "u":
        a = base * 37
    else:
        a = base * 37 - 100
    return a.astype(dt).reshape(shape)


def _layouts(dtype):
    a = sample_array(dtype, (6, 5, 4))
    return {
        "0-d": sample_array(dtype, ()),
        "1-d": sample_array(dtype, (17,)),
        "3-d": a,
        "fortran": np.asfortranarray(sample_array(dtype, (7, 3))),
        "fortran-3d": np.asfortranarray(a),
        "sliced": sample_array(dtype, (21,))[::2],
        "sliced-2d": a[:, ::2, 1],
        "transposed": a.T,
        "reversed": sample_array(dtype, (9,))[::-1],
        "empty-1d": sample_array(dtype, (0,)),
    }


def _chain_ends_in_memoryview(arr):
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview)


def check_read_array(got, want, aligned):
    assert type(got) is np.ndarray
    assert got.dtype == want.dtype and got.dtype.str == want.dtype.str
    assert got.shape == want.shape and np.array_equal(got, want)
    assert not got.flags.writeable
    if got.size:
        with pytest.raises(ValueError):
            got[(0,) * got.ndim] = got[(0,) * got.ndim]
        with pytest.raises(ValueError):
            got.flags.writeable = True
        assert not got.flags.owndata and _chain_ends_in_memoryview(got)
        if aligned:
            assert got.ctypes.data % 64 == 0, got.ctypes.data % 64
    if want.ndim > 1 and want.flags.f_contiguous and not want.flags.c_contiguous:
        assert got.flags.f_contiguous


@needs_numpy
@pytest.mark.parametrize("dtype", DTYPES)
def test_array_round_trip(dtype, tmp_path):
    arrays = _layouts(dtype)
    data = pf.dumps(arrays)
    root = pf.loads(data)
    start = np.frombuffer(data, np.uint8).ctypes.data
    for name, want in arrays.items():
        got = root[name]
        check_read_array(got, want, aligned=False)
        if got.size:  # read in place: the bytes of `data` itself
            assert start <= got.ctypes.data < start + len(data), name
            assert np.shares_memory(got, root[name])
    path = tmp_path / "arrays.pf"
    pf.freeze(arrays, path)
    root = pf.open(path)
    for name, want in arrays.items():
        got = root[name]
        check_read_array(got, want, aligned=True)
        if got.size:
            assert np.shares_memory(got, root[name]), name
    pf.verify(path)


@needs_numpy
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 4), (0, 0)], ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_empty_multidimensional_arrays(shape, order):
    for dtype in ("float64", "int8", "bool"):
        want = np.zeros(shape, dtype=dtype, order=order)
        got = pf.loads(pf.dumps({"a": want}))["a"]
        assert got.shape == shape and got.dtype == want.dtype and got.size == 0
        assert not got.flags.writeable


@needs_numpy
def test_arrays_stay_aligned_among_odd_values(tmp_path):
    x = {"s": "x", "arrays": [sample_array("int8", (k,)) for k in range(1, 9)],
         "mixed": [1, sample_array("float64", (3, 3)), "odd" * 7, sample_array("complex64", (5,)),
                   b"\x01", sample_array("uint16", (2, 1))],
         "obj": oh.Plain(sample_array("float32", (4,)), "z")}
    path = tmp_path / "odd.pf"
    pf.freeze(x, path)
    root = pf.open(path, classes=[oh])
    arrays = list(root["arrays"]) + [root["mixed"][1], root["mixed"][3], root["mixed"][5], root["obj"].a]
    for got in arrays:
        assert got.ctypes.data % 64 == 0 and not got.flags.writeable
    assert_equivalent(root, x)


@needs_numpy
def test_array_keeps_the_image_mapped(tmp_path):
    want = sample_array("float64", (300, 7))
    path = tmp_path / "keep.pf"
    pf.freeze({"a": want, "other": [1, 2]}, path)
    root = pf.open(path)
    arr = root["a"]
    del root
    gc.collect()
    assert np.array_equal(arr, want) and float(arr.sum()) == float(want.sum())
    data = pf.dumps([want])
    arr2 = pf.loads(data)[0]
    del data
    gc.collect()
    assert np.array_equal(arr2, want)


@needs_numpy
def test_array_in_an_object_and_thaw_makes_a_writable_copy():
    want = sample_array("int32", (4, 5))
    p = oh.Plain(want, np.asfortranarray(want))
    root = pf.loads(pf.dumps({"p": p, "same": want}), classes=[oh])
    assert not root["p"].a.flags.writeable and np.array_equal(root["p"].a, want)
    assert root["p"].b.flags.f_contiguous
    t = pf.thaw(root)
    assert t["p"].a.flags.writeable and np.array_equal(t["p"].a, want)
    assert not np.shares_memory(t["p"].a, root["p"].a)
    t["p"].a[0, 0] = 12345
    assert root["p"].a[0, 0] == want[0, 0]


@needs_numpy
@pytest.mark.parametrize("value", [
    pytest.param(lambda: np.array(["a", "bc"]), id="str"),
    pytest.param(lambda: np.array([b"a", b"bc"]), id="bytes"),
    pytest.param(lambda: np.array([1, "x", None], dtype=object), id="object"),
    pytest.param(lambda: np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]), id="structured"),
    pytest.param(lambda: np.array(["2020-01-01"], dtype="datetime64[D]"), id="datetime64"),
])
def test_other_dtypes_need_allow_pickle(value):
    a = value()
    with pytest.raises(TypeError, match="allow_pickle=True"):
        pf.dumps({"a": a})
    data = pf.dumps({"a": a}, allow_pickle=True)
    with pytest.raises(pf.PickleNotAllowedError):
        pf.loads(data)["a"]
    got = pf.loads(data, allow_pickle=True)["a"]
    assert got.dtype == a.dtype and got.shape == a.shape
    assert (got == a).all() if a.dtype.fields is None else got.tobytes() == a.tobytes()


# ----------------------------------------------------------------- 7. damaged images


def _damage_structure():
    trie = oh.Trie(["abc", "abd", "b", "bcd"])
    p = oh.Plain([1, 2], {"k": oh.Point(1, (2, 3))})
    p.c = p
    x = {"trie": trie, "plain": p, "slots": oh.SlottedChild(1, [oh.Color.RED], {"z": 1}),
         "nt": oh.Pair(oh.Level.HIGH, "x"), "frozen": oh.Frozen("f", (1, 2)),
         "coord": oh.Coord(1.5, -2), "flags": oh.Perm.R | oh.Perm.X,
         "subs": [oh.MyStr("s"), oh.MyInt(3), oh.MyTuple((1, 2)), oh.MyFrozenset({1})],
         "globals": [oh.helper_function, oh.Node, len],
         "misc": [range(2, 9, 3), bytearray(b"ba"), datetime.date(2020, 1, 2), decimal.Decimal("2.5")],
         "state": [oh.WithState({"v": 1}), oh.NewArgs((1, "n")), oh.SlotsPoint([1], 2),
                   types.SimpleNamespace(q=[1]), functools.partial(oh.helper_function, 2),
                   collections.Counter("aab"), oh.MySet({4})],
         "shared": [p, p]}
    if np is not None:
        x["arrays"] = [np.arange(12, dtype=np.int16).reshape(3, 4), np.array(2.5),
                       np.asfortranarray(np.ones((2, 3), ">f8")), np.zeros(0, "u1")]
    return x


DAMAGED = _damage_structure()
# A damaged image raises a permafrost.Error: CorruptImageError, VersionError,
# ClassNotAllowedError or ClassNotFoundError for a damaged name, and
# ObjectStateError where the class's own code refuses a damaged state
# (Color(9), a constructor given the wrong arguments). Anything else, and
# any crash, fails.
READ_ERRORS = (pf.Error,)


@pytest.fixture(scope="module")
def damaged_data():
    return pf.dumps(DAMAGED)


def _walk(x, seen, depth=0):
    if depth > 60 or id(x) in seen:
        return
    seen.add(id(x))
    if isinstance(x, (dict, pf.DictView)):
        for k, v in x.items():
            _walk(k, seen, depth + 1)
            _walk(v, seen, depth + 1)
    elif isinstance(x, (list, tuple, set, frozenset, pf.ListView, pf.SetView, pf.FrozenSetView)):
        for e in x:
            _walk(e, seen, depth + 1)
    elif np is not None and isinstance(x, np.ndarray):
        x.tobytes()
    elif not isinstance(x, (type, enum.Enum)):
        for name in list(getattr(x, "__dict__", {})):
            _walk(getattr(x, name), seen, depth + 1)
        for klass in type(x).__mro__:
            for name in getattr(klass, "__slots__", ()):
                _walk(getattr(x, name, None), seen, depth + 1)


READ_CLASSES = [oh, len, types.SimpleNamespace, functools.partial, collections.Counter]


def read_objects(data):
    root = pf.loads(data, classes=READ_CLASSES)
    pf.thaw(root)
    _walk(root, set())
    try:
        repr(root)
    except AttributeError:
        pass  # a class's own __repr__, on an object whose attribute name was damaged
    return root


def _outcome(data, what, unexpected):
    """The name of what reading data raised ("ok" if nothing); anything
    but a permafrost.Error is also listed in `unexpected` with `what`."""
    try:
        read_objects(data)
    except READ_ERRORS as e:
        return type(e).__name__
    except Exception as e:  # noqa: BLE001 - listed with the reproducer
        unexpected.append(f"{what}: {type(e).__name__}: {e}"[:300])
        return "unexpected " + type(e).__name__
    return "ok"


def test_intact_object_image_reads_and_verifies(damaged_data, tmp_path):
    read_objects(damaged_data)
    full = pf.loads(damaged_data, classes=READ_CLASSES)
    assert_equivalent(full, DAMAGED)
    assert_equivalent(pf.thaw(full), DAMAGED)
    counts = pf.verify(pf.Image.from_buffer(damaged_data))
    assert counts["values"] > 50
    path = tmp_path / "objects.pf"
    pf.freeze(DAMAGED, path)
    assert pf.verify(path)["values"] == counts["values"]
    assert pf.verify(full) == counts
    assert_equivalent(pf.open(path, verify=True, trust=True), DAMAGED)


def test_every_truncation_is_refused(damaged_data):
    with deadline(60):
        for i in range(len(damaged_data)):
            with pytest.raises(pf.CorruptImageError):
                pf.loads(damaged_data[:i], classes=[oh])


def every_byte_changed(data):
    """Each byte of data changed in turn (three ways): verify() refuses the
    image (the header check or a section checksum covers every byte), and
    reading it all without verify raises a permafrost.Error or reads.
    Returns the count of each outcome and the unexpected exceptions. Prints
    each case before reading it (the reproducer of a crash)."""
    # The flags of a known section are read by nothing (R11) and covered by
    # no check: a change there is invisible by design.
    header = fmt.read_header(data)
    free = {header["section_table_off"] + 32 * k + i
            for k in range(header["section_count"]) for i in range(4, 8)}
    outcomes, unexpected = collections.Counter(), []
    for pos in range(len(data)):
        if pos in free:
            continue
        for flip in (0x01, 0x80, 0xFF):
            buf = bytearray(data)
            buf[pos] ^= flip
            damaged = bytes(buf)
            what = f"byte {pos} ^= {flip:#x}"
            print(what, flush=True)
            try:
                image = pf.Image.from_buffer(damaged)
            except (pf.CorruptImageError, pf.VersionError):
                pass
            else:
                try:
                    image.verify()
                except (pf.CorruptImageError, pf.VersionError):
                    pass
                else:
                    unexpected.append(f"{what}: verify() passed")
                image.close()
            outcomes[_outcome(damaged, what, unexpected)] += 1
    return outcomes, unexpected


def random_damage(data, trials, seed=6):
    """`trials` images with 1 to 8 random bytes set: each reads or raises a
    permafrost.Error. Returns the count of each outcome and the unexpected
    exceptions. Prints each case before reading it."""
    rng = random.Random(seed)
    outcomes, unexpected = collections.Counter(), []
    for trial in range(trials):
        buf = bytearray(data)
        changes = []
        for _ in range(rng.choice([1, 2, 3, 8])):
            pos = rng.randrange(64, len(buf))
            val = rng.randrange(256)
            buf[pos] = val
            changes.append((pos, val))
        what = f"trial {trial}: set {changes}"
        print(what, flush=True)
        outcomes[_outcome(bytes(buf), what, unexpected)] += 1
    return outcomes, unexpected


def _run_damage(call):
    """Runs `call` (of this module, on DAMAGED's image) in a fresh
    interpreter: a crash fails this test only, and names its case. Fails on
    any unexpected exception (the first ones listed); returns the counts."""
    proc = run_isolated(f"""
        import json, test_objects as T, permafrost as pf
        outcomes, unexpected = T.{call}
        print("OUTCOMES", json.dumps([outcomes, unexpected]))
    """, timeout=300, cwd=TESTS_DIR)
    lines = proc.stdout.splitlines()
    last = lines[-1] if lines else "(no output)"
    status, stderr = proc.returncode, proc.stderr[-3000:]
    assert status == 0, f"exit status {status} at {last}\n{stderr}"
    assert last.startswith("OUTCOMES"), last
    outcomes, unexpected = json.loads(last.split(" ", 1)[1])
    assert not unexpected, f"{len(unexpected)} unexpected outcomes, the first: " + \
        "\n".join(unexpected[:10])
    return outcomes


def test_every_changed_byte_is_found_by_verify_and_read_cleanly():
    outcomes = _run_damage("every_byte_changed(pf.dumps(T.DAMAGED))")
    assert outcomes.get("CorruptImageError", 0) > 0


def test_random_damage_reads_cleanly():
    outcomes = _run_damage(f"random_damage(pf.dumps(T.DAMAGED), {scaled(50000)})")
    assert outcomes.get("CorruptImageError", 0) > 0
    assert set(outcomes) <= {"ok", "CorruptImageError", "VersionError", "ClassNotAllowedError",
                             "ClassNotFoundError", "ObjectStateError", "PickleNotAllowedError",
                             "LimitError"}, outcomes


def _short_str(text):
    raw = text.encode()
    return [0x80 + len(raw)] + list(raw)


def _crafted(body):
    """A version 1.1 image whose DATA section is `body`, the root at 128."""
    w = fmt.Writer()
    w.buf += bytes(body)
    return fmt.with_fields(w.finish(128), version_minor=1, incompat_flags=1)


def _crafted_images():
    pair_shape = [0x1b, 0x08, 0x02] + _short_str("objects_helpers") + _short_str("Pair")
    reduce_body = [0x24, 0x02] + pair_shape      # OBJECT, 2 fields: args, state
    ref_at = 128 + len(reduce_body) + 1
    reduce_body += [0x1a, 0x03, ref_at - 128, 0x00, 0x00]  # args = (REF root, None); state None
    set_shape = [0x1b, 0x08, 0x03] + _short_str("objects_helpers") + _short_str("MySet")
    call_body = [0x24, 0x01] + set_shape         # OBJECT, 1 field: args
    ref_at = 128 + len(call_body) + 1
    call_body += [0x19, 0x03, ref_at - 128]      # args = (REF root,)
    return {
        # 128 OBJECT, no field, shape = the tuple at 130, which holds an
        # OBJECT with no field whose shape is REF -3 (the tuple at 130).
        "shape-holds-an-object-of-that-shape": [0x24, 0x00, 0x19, 0x24, 0x00, 0x03, 0x03],
        # 128 OBJECT, no field, shape = (REF -3,): the object itself.
        "shape-holds-its-own-object": [0x24, 0x00, 0x19, 0x03, 0x03],
        # 128 ARRAY of 0 bytes, pad 0, header = REF -3: the array itself.
        "array-header-is-its-array": [0x26, 0x00, 0x00, 0x03, 0x03],
        # A NamedTuple (kind 2) whose args hold the object itself.
        "reduce-args-hold-the-object": reduce_body,
        # A set subclass (kind 3) whose args hold the object itself.
        "call-args-hold-the-object": call_body,
    }


CRAFTED = _crafted_images()


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_objects_that_contain_themselves(name):
    """Hostile images whose objects (or an array) contain themselves where
    no reader can build them: a tuple that contains itself through objects
    (R18), which verify() reports, and which reading without verify refuses
    with a permafrost.Error or RecursionError, never overflowing the C
    stack."""
    data = _crafted(CRAFTED[name])
    proc = run_isolated(f"""
        import permafrost as pf
        data = {data!r}
        for kw in ({{}}, {{"classes": ["objects_helpers"]}}, {{"trust": True}}):
            try:
                pf.thaw(pf.loads(data, **kw))
            except (pf.Error, RecursionError) as e:
                print("refused:", type(e).__name__)
            else:
                print("read")
    """, timeout=120, cwd=TESTS_DIR)
    status, out, err = proc.returncode, proc.stdout, proc.stderr[-2000:]
    assert status == 0, f"exit status {status}\n{err}"
    assert out.count("refused:") == 3, out
    with pytest.raises(pf.CorruptImageError):
        pf.Image.from_buffer(data).verify()


def _keyed_args_cycle():
    body = [0x27, 0x01, 0x08, 0x01, 0x24, 0x01, 0x1b, 0x08, 0x03]
    body += _short_str("decimal") + _short_str("Decimal") + [0x19, 0x03]
    return body + [len(body) - 1]   # REF back to offset 128


# Keyed values (R35) made by hand: 128 KEYED, flags, proxy, value.
_GLOBAL_INT = [0x24, 0x00, 0x1b, 0x08, 0x04] + _short_str("builtins") + _short_str("int")
CRAFTED_KEYED = {
    # flags with a reserved bit: corrupt for every reader
    "reserved-flag": ([0x27, 0x02, 0x08, 0x01] + _GLOBAL_INT, "read"),
    # the value is an int, not an object: read as its value, verify refuses it
    "value-not-an-object": ([0x27, 0x01, 0x08, 0x01, 0x08, 0x02], "verify"),
    # the proxy is (REF to this keyed value): a cycle inside a key
    "proxy-holds-itself": ([0x27, 0x00, 0x19, 0x03, 0x03] + _GLOBAL_INT, "verify"),
    # the proxy is an object: not of a key type (R21)
    "proxy-is-an-object": ([0x27, 0x00] + _GLOBAL_INT + _GLOBAL_INT, "verify"),
    # runs past DATA
    "truncated": ([0x27, 0x01, 0x08], "read"),
    # the value is Decimal(*args) whose args hold this keyed value, which
    # reads as that same Decimal: an object inside its own arguments (R32)
    "args-hold-their-keyed-value": (_keyed_args_cycle(), "read"),
}


@pytest.mark.parametrize("name", list(CRAFTED_KEYED))
def test_crafted_keyed_values(name):
    body, who = CRAFTED_KEYED[name]
    data = _crafted(body)
    with pytest.raises(pf.CorruptImageError):
        pf.Image.from_buffer(data).verify()
    if who == "read":
        with pytest.raises(pf.CorruptImageError):
            pf.loads(data, trust=True)
    else:
        pf.loads(data, trust=True)  # read as its value: no crash, no check owed
    # without the incompat flag the type byte itself is refused
    old = fmt.with_fields(data, version_minor=0, incompat_flags=0)
    with pytest.raises(pf.CorruptImageError):
        pf.loads(old, trust=True)


def _unsummed(data):
    """data with every section checksum cleared (0: none), so that a
    patched image is read rather than refused for its checksum."""
    buf = bytearray(data)
    stab, count = struct.unpack_from("<QI", buf, 64)
    for k in range(count):
        buf[stab + 32 * k + 24:stab + 32 * k + 32] = bytes(8)
    return fmt.with_fields(bytes(buf))


def test_what_a_wrong_proxy_does():
    """The core cannot check that a proxy is right for its object (R35). A
    forged proxy hides its key from lookups by equal keys. Without the EQ
    flag a candidate is compared as an object, so nothing unequal matches;
    with it (Level.LOW: 1 -> 5) a plain int is compared with the proxy, so
    5 finds the entry, as a forged plain key 5 would."""
    data = pf.dumps({oh.Level.LOW: "x", "y": 2})
    at = data.index(bytes([0x27, 0x01, 0x08, 0x01]))
    bad = _unsummed(data[:at + 3] + b"\x05" + data[at + 4:])
    view = pf.loads(bad, trust=True)
    assert list(view) == [oh.Level.LOW, "y"] and view["y"] == 2
    for probe in (oh.Level.LOW, 1, oh.Level.HIGH):
        assert probe not in view and view.get(probe) is None
    assert view[5] == "x"
    # ("fraction", 1, 10) -> ("fraction", 1, 11) under Decimal("0.1")
    data = pf.dumps({D("0.1"): "x", "y": 2})
    at = data.index(bytes([0x08, 0x0a]))
    bad = _unsummed(data[:at + 1] + b"\x0b" + data[at + 2:])
    view = pf.loads(bad, trust=True)
    assert list(view) == [D("0.1"), "y"]
    for probe in (D("0.1"), Q(1, 10), Q(1, 11)):
        assert probe not in view and view.get(probe) is None


def test_always_allowed_classes_do_not_allocate_what_an_image_asks():
    """bytearray needs no allow-list; a hostile image whose bytearray is
    rebuilt from an int argument, bytearray(2**40), must be refused as
    corrupt (the writer stores its bytes), not make any reader allocate
    what the image asks (MemoryError here, under run_isolated's 4 GiB
    address-space cap; a smaller count is allocated and zeroed)."""
    shape = [0x1b, 0x08, 0x03] + _short_str("builtins") + _short_str("bytearray")
    body = [0x24, 0x01] + shape + [0x19, 0x0d] + list((2**40).to_bytes(6, "little"))
    data = _crafted(body)
    proc = run_isolated(f"""
        import permafrost as pf
        data = {data!r}
        for kw in ({{}}, {{"trust": True}}):
            try:
                pf.loads(data, **kw)
            except pf.Error as e:
                print("refused:", type(e).__name__)
    """, timeout=120)
    status, out, err = proc.returncode, proc.stdout, proc.stderr[-2000:]
    assert status == 0, f"exit status {status}\n{err}"
    assert out.count("refused:") == 2, out


# ----------------------------------------------------------------- 8. hypothesis differential


ENUM_MEMBERS = [*oh.Color, *oh.Level, oh.Perm.R, oh.Perm.R | oh.Perm.X, oh.Perm(0)]
_TZ = st.sampled_from([None, datetime.timezone.utc,
                       datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
                       datetime.timezone(datetime.timedelta(hours=-8), "PST")])
_STDLIB = (st.decimals(allow_nan=False, places=3) | st.fractions(max_denominator=50)
           | st.datetimes(timezones=_TZ) | st.dates() | st.times(timezones=_TZ)
           | st.timedeltas() | st.uuids() | st.binary(max_size=6).map(bytearray)
           | st.builds(range, st.integers(-5, 5), st.integers(-5, 5),
                       st.integers(1, 3) | st.integers(-3, -1)))
_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=6) | st.binary(max_size=6) | st.sampled_from(ENUM_MEMBERS)
            | _STDLIB)
# hashable ones, as keys (R35)
_stdlib_keys = _STDLIB.filter(lambda x: not isinstance(x, bytearray))


def _extend(children):
    return (st.lists(children, max_size=4)
            | st.tuples(children, children)
            | st.dictionaries(st.text(max_size=4) | st.integers() | _stdlib_keys
                              | st.sampled_from(ENUM_MEMBERS), children, max_size=4)
            | st.dictionaries(st.text(max_size=3), children, max_size=3).map(
                collections.OrderedDict)
            | st.dictionaries(st.text(max_size=3), st.integers(), max_size=3).map(
                collections.Counter)
            | st.dictionaries(st.integers(0, 3), children, max_size=3).map(
                lambda d: collections.defaultdict(list, d))
            | st.frozensets(st.integers(), max_size=4)
            | st.builds(oh.Point, children, children)
            | st.builds(oh.Frozen, st.text(max_size=4), st.lists(children, max_size=3).map(tuple))
            | st.builds(oh.Pair, children, children)
            | st.builds(oh.Coord, children, children)
            | st.builds(oh.Slotted, children, children)
            | st.builds(oh.MyTuple, st.lists(children, max_size=3)))


OBJECT_VALUES = st.recursive(_scalars, _extend, max_leaves=24)


@given(OBJECT_VALUES)
def test_objects_in_structures_round_trip(x):
    data = pf.dumps(x)
    v = pf.loads(data, trust=True)
    assert v == x
    assert pf.thaw(v) == x
    t = pf.thaw(pf.loads(pf.dumps([x]), trust=True))
    assert t == [x]
    assert_same_types(t, [x])
    assert_equivalent(v, x)
    assert pf.loads(data, classes=["objects_helpers"]) == x
    assert pf.thaw(pf.loads(data, classes=[oh])) == x
    pf.verify(pf.Image.from_buffer(data))


def test_builder_flags_only_what_it_published(tmp_path):
    """An entry that wrote an object and then failed, begun again without
    one, leaves a version 1.0 image (incompat_flags 0, minor 0): readers
    of version 1.0 can read it."""
    import struct
    path = tmp_path / "flags.pf"
    with pf.Builder(path) as b:
        with pytest.raises(TypeError):
            b["a"] = [oh.Point(1, 2), memoryview(b"")]
        b["a"] = 1
    head = path.read_bytes()[:24]
    assert struct.unpack_from("<H", head, 10)[0] == 0
    assert struct.unpack_from("<Q", head, 16)[0] == 0
    with pf.Builder(path) as b:
        b["a"] = oh.Point(1, 2)
    head = path.read_bytes()[:24]
    assert struct.unpack_from("<H", head, 10)[0] == 1
    assert struct.unpack_from("<Q", head, 16)[0] == 1
    assert pf.open(path, classes=[oh.Point])["a"] == oh.Point(1, 2)


def test_buffer_of_bytes_and_arrays_is_zero_copy(tmp_path):
    """buffer_of(view, key) is a read-only memoryview over the image's own
    bytes (a bytes value, an array's data), and keeps the image mapped."""
    path = tmp_path / "buf.pf"
    blob = bytes(range(256)) * 40
    value = {"blob": blob, "list": [b"", b"xy", 7]}
    if np is not None:
        value["arr"] = np.arange(12, dtype="<i4").reshape(3, 4)
    pf.freeze(value, path)
    root = pf.open(path)
    m = pf.buffer_of(root, "blob")
    assert m.readonly and m.tobytes() == blob and len(m) == len(blob)
    with pytest.raises(TypeError):
        m[0] = 1
    assert pf.buffer_of(root["list"], 1).tobytes() == b"xy"
    assert pf.buffer_of(root["list"], -2).tobytes() == b"xy"
    assert pf.buffer_of(root["list"], 0).tobytes() == b""
    if np is not None:
        a = root["arr"]
        assert pf.buffer_of(root, "arr").tobytes() == a.tobytes()
        assert np.frombuffer(pf.buffer_of(root, "arr"), "<i4").sum() == 66
    with pytest.raises(KeyError):
        pf.buffer_of(root, "nope")
    with pytest.raises(IndexError):
        pf.buffer_of(root["list"], 3)
    with pytest.raises(TypeError, match="not bytes"):
        pf.buffer_of(root["list"], 2)
    with pytest.raises(TypeError):
        pf.buffer_of(blob, 0)
    # the memoryview alone keeps the image mapped
    image = pf.image_of(root)
    del root, image
    gc.collect()
    assert m[:3].tobytes() == blob[:3]
    m.release()


def test_mappings_read_as_views_that_answer_missing_keys(tmp_path):
    """OrderedDict, defaultdict and Counter are stored as dicts with their
    class (R32 kind 6): read back as dict views (shared, no copy) that
    answer a missing key as the class does, without storing it; thaw()
    gives the class back; a pickled view keeps the behaviour."""
    dd = collections.defaultdict(list, {"a": [1, 2], "b": []})
    cnt = collections.Counter("abracadabra")
    od = collections.OrderedDict([("z", 1), ("a", 2)])
    dd_user = collections.defaultdict(oh.default_value, {"k": 1})
    path = tmp_path / "maps.pf"
    pf.freeze({"dd": dd, "cnt": cnt, "od": od}, path)
    root = pf.open(path)                       # no allow-list: stdlib classes
    v = root["dd"]
    assert isinstance(v, pf.DictView) and v == dd and list(v) == ["a", "b"]
    assert v["a"] == [1, 2] and v["missing"] == [] and "missing" not in v
    assert v.get("missing") is None and len(v) == 2
    c = root["cnt"]
    assert c == cnt and c["a"] == 5 and c["nope"] == 0 and "nope" not in c
    o = root["od"]
    assert list(o.items()) == [("z", 1), ("a", 2)]
    with pytest.raises(KeyError):
        o["nope"]
    back = pickle.loads(pickle.dumps(v))
    assert back["other"] == [] and back == dd
    thawed = pf.thaw(root)
    assert type(thawed["dd"]) is collections.defaultdict
    assert thawed["dd"].default_factory is list and thawed["dd"] == dd
    assert type(thawed["cnt"]) is collections.Counter and thawed["cnt"] == cnt
    assert type(thawed["od"]) is collections.OrderedDict and thawed["od"] == od
    # a factory of the user's is a function by name: it must be allowed
    data = pf.dumps(dd_user)
    with pytest.raises(pf.ClassNotAllowedError):
        pf.loads(data)
    u = pf.loads(data, classes=[oh.default_value])
    assert u["k"] == 1 and u["x"] == "default"


def test_cli_info_of_an_object_root_imports_nothing(tmp_path):
    """`python -m permafrost info` describes an image whose root is an
    object without importing its class, and verifies it."""
    path = tmp_path / "obj.pf"
    pf.freeze(oh.Point(1, [2]), path)
    proc = subprocess.run([sys.executable, "-m", "permafrost", "info", "--verify", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "root              object" in proc.stdout
    assert "objects_helpers.Point" in proc.stdout and "verify            OK" in proc.stdout
    assert "format version    1.1" in proc.stdout
