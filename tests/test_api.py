"""The public API: freeze/open/Image/from_buffer/image_of/dumps/loads/thaw,
image lifetimes, mutation refusal, unsupported values, atomic writes,
sharing, cycles, deduplication and the key rules."""

from __future__ import annotations

import collections
import dataclasses
import enum
import gc
import math
import mmap
import os
import pathlib

import pytest

import helpers_format as fmt
import permafrost as pf
from helpers import assert_same, assert_view_of, deadline, run_isolated

SAMPLE = {
    "name": "permafrost",
    "ints": [0, 1, -1, 2**100],
    "nested": {"t": (1, "two", 3.0, None), "s": {1, 2, 3}, "f": frozenset({"a"})},
    (1, 2): b"bytes",
    3.5: [[], {}, set(), frozenset(), ()],
}


# ----------------------------------------------------------------- basics


def test_public_names():
    for name in ["freeze", "open", "Image", "image_of", "dumps", "loads", "thaw", "DictView", "ListView",
                 "SetView", "FrozenSetView", "Error", "CorruptImageError", "VersionError", "ClosedImageError",
                 "StaleImageError"]:
        assert hasattr(pf, name), name


def test_import_is_light():
    """Importing permafrost loads none of the modules that only some
    features need (memory reports, exotic keys, shared memory names): a
    spawn worker that only reads views pays neither their memory nor their
    import time. The features still work once asked for."""
    heavy = ["dataclasses", "typing", "inspect", "decimal", "fractions", "datetime",
             "uuid", "enum", "secrets", "hashlib", "tempfile", "shutil", "pickle", "re"]
    r = run_isolated(f"""
        import sys
        before = set(sys.modules)
        import permafrost
        print(sorted(m for m in {heavy!r} if m in sys.modules and m not in before))
        assert callable(permafrost.memory_report)
        assert "dataclasses" in sys.modules and "memory_report" in dir(permafrost)
        import decimal, datetime
        v = permafrost.loads(permafrost.dumps({{decimal.Decimal("0.5"): 1,
                                               datetime.date(2020, 1, 2): 2}}))
        assert v[0.5] == 1 and v[datetime.date(2020, 1, 2)] == 2
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    with pytest.raises(AttributeError, match="no_such_name"):
        pf.no_such_name


def test_exception_hierarchy():
    assert issubclass(pf.Error, Exception)
    assert issubclass(pf.CorruptImageError, pf.Error) and issubclass(pf.CorruptImageError, ValueError)
    for cls in (pf.VersionError, pf.ClosedImageError, pf.StaleImageError):
        assert issubclass(cls, pf.Error)


def test_views_are_registered_abcs():
    import collections.abc as abc

    view = pf.loads(pf.dumps({"d": {}, "l": [], "s": set(), "f": frozenset()}))
    assert isinstance(view, abc.Mapping) and not isinstance(view, abc.MutableMapping)
    assert isinstance(view["l"], abc.Sequence) and not isinstance(view["l"], abc.MutableSequence)
    assert isinstance(view["s"], abc.Set) and not isinstance(view["s"], abc.MutableSet)
    assert isinstance(view["f"], abc.Set) and isinstance(view["f"], abc.Hashable)


def test_freeze_open(image_path):
    assert pf.freeze(SAMPLE, image_path) is None
    root = pf.open(image_path)
    assert_view_of(root, SAMPLE)
    assert root == SAMPLE
    assert_same(pf.thaw(root), SAMPLE)


@pytest.mark.parametrize("make_path", [str, pathlib.Path], ids=["str", "Path"])
def test_paths_str_and_pathlike(tmp_path, make_path):
    path = make_path(tmp_path / "p.pf")
    pf.freeze([1, 2], path)
    assert pf.open(path) == [1, 2]
    with pf.Image(path) as img:
        assert img.root == [1, 2]


@pytest.mark.parametrize("x", [None, True, False, 0, -5, 2**300, 1.5, -0.0, math.inf, 1 - 2j, "", "s", b"b",
                               (), (1, (2, "x")), "\ud800"])
def test_scalar_and_tuple_roots_are_real_values(image_path, x):
    pf.freeze(x, image_path)
    assert_same(pf.open(image_path), x)
    assert_same(pf.loads(pf.dumps(x)), x)


def test_tuple_root_holds_views():
    root = pf.loads(pf.dumps(({"a": 1}, [2], {3}, frozenset({4}), 5)))
    assert type(root) is tuple
    assert [type(e) for e in root] == [pf.DictView, pf.ListView, pf.SetView, pf.FrozenSetView, int]
    assert_same(pf.thaw(root), ({"a": 1}, [2], {3}, frozenset({4}), 5))


def test_dumps_loads():
    data = pf.dumps(SAMPLE)
    assert type(data) is bytes
    assert data[:8] == b"\x89PFROST\n"
    root = pf.loads(data)
    assert root == SAMPLE
    assert_same(pf.thaw(root), SAMPLE)


def test_freeze_writes_what_dumps_returns(image_path):
    pf.freeze(SAMPLE, image_path)
    data = image_path.read_bytes()
    assert pf.loads(data) == SAMPLE
    assert pf.Image(image_path).size == len(data)


def test_thaw_gives_plain_containers():
    view = pf.loads(pf.dumps(SAMPLE))
    thawed = pf.thaw(view)
    assert_same(thawed, SAMPLE)
    assert type(thawed["nested"]["s"]) is set and type(thawed["nested"]["f"]) is frozenset
    # thawing twice gives independent copies
    again = pf.thaw(view)
    assert again is not thawed and again["ints"] is not thawed["ints"]
    thawed["ints"].append(99)
    assert view["ints"] == [0, 1, -1, 2**100]


def test_thaw_of_plain_values_is_a_deep_copy():
    x = {"a": [1, {"b": {2}}], "t": ([3],)}
    y = pf.thaw(x)
    assert_same(y, x)
    assert y["a"] is not x["a"] and y["a"][1] is not x["a"][1] and y["t"][0] is not x["t"][0]


# ----------------------------------------------------------------- Image


def test_image_attributes(image_path):
    pf.freeze(SAMPLE, image_path)
    with pf.Image(image_path) as img:
        assert isinstance(img.id, bytes) and len(img.id) == 16
        assert isinstance(img.path, str) and os.path.isabs(img.path)
        assert img.path in (os.path.abspath(image_path), os.path.realpath(image_path))
        assert img.size == os.path.getsize(image_path)
        assert img.closed is False
        assert img.root == SAMPLE
        assert pf.image_of(img.root) is img
        assert pf.image_of(img.root["nested"]["s"]) is img


def test_image_path_is_absolute_from_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pf.freeze([1], "rel.pf")
    with pf.Image("rel.pf") as img:
        assert img.path in (str(tmp_path / "rel.pf"), os.path.realpath(tmp_path / "rel.pf"))


def test_image_ids_differ(image_path, tmp_path):
    pf.freeze(SAMPLE, image_path)
    pf.freeze(SAMPLE, tmp_path / "second.pf")
    a, b = pf.Image(image_path), pf.Image(tmp_path / "second.pf")
    assert a.id != b.id
    assert pf.Image.from_buffer(pf.dumps(SAMPLE)).id != pf.Image.from_buffer(pf.dumps(SAMPLE)).id


def test_image_from_buffer():
    data = pf.dumps(SAMPLE)
    img = pf.Image.from_buffer(data)
    assert img.path is None
    assert img.size == len(data)
    assert img.id == data[32:48]
    assert img.root == SAMPLE
    assert pf.image_of(img.root) is img
    img.close()
    assert img.closed


def test_buffer_tail_is_ignored():
    """FORMAT R1: a buffer may be longer than the image."""
    data = pf.dumps(SAMPLE)
    img = pf.Image.from_buffer(data + b"\0" * 100)
    assert img.size == len(data)
    assert img.root == SAMPLE
    assert pf.loads(data + b"tail") == SAMPLE


def test_image_of_refuses_non_views():
    for x in [{}, [], 1, "s", None, (1,)]:
        with pytest.raises(TypeError):
            pf.image_of(x)


def test_context_manager_closes(image_path):
    pf.freeze({"a": 1}, image_path)
    with pf.Image(image_path) as img:
        assert img.root["a"] == 1
    assert img.closed
    with pytest.raises(pf.ClosedImageError):
        img.root
    img.close()  # closing again is harmless
    assert img.closed


def test_close_with_live_views(image_path):
    """Closing defers the unmap while views are alive: an existing view
    either still reads correctly or raises ClosedImageError, never
    crashes; a new access through Image.root raises ClosedImageError."""
    pf.freeze({"a": [1, 2, 3], "b": "text"}, image_path)
    img = pf.Image(image_path)
    view = img.root
    inner = view["a"]
    img.close()
    with pytest.raises(pf.ClosedImageError):
        img.root
    reads = [
        (lambda: view["b"], "text"),
        (lambda: list(inner), [1, 2, 3]),
        (lambda: len(view), 2),
        (lambda: pf.thaw(view), {"a": [1, 2, 3], "b": "text"}),
    ]
    for read, expected in reads:
        try:
            result = read()
        except pf.ClosedImageError:
            continue
        assert result == expected
    view = inner = None  # the deferred unmap happens now
    gc.collect()


def test_views_keep_their_image_alive(image_path):
    pf.freeze({"a": [1, 2, 3]}, image_path)
    inner = pf.open(image_path)["a"]
    gc.collect()
    assert list(inner) == [1, 2, 3]
    assert pf.image_of(inner).size == os.path.getsize(image_path)


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        pf.open(tmp_path / "missing.pf")
    with pytest.raises(OSError):
        pf.open(tmp_path)  # a folder
    empty = tmp_path / "empty.pf"
    empty.write_bytes(b"")
    with pytest.raises(pf.CorruptImageError):
        pf.open(empty)
    text = tmp_path / "text.pf"
    text.write_text("not an image at all, just some text that is long enough " * 4)
    with pytest.raises(pf.CorruptImageError):
        pf.open(text)


def test_truncated_file_is_corrupt(image_path):
    pf.freeze(SAMPLE, image_path)
    data = image_path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 130, 127, 8, 1):
        image_path.write_bytes(data[:cut])
        with pytest.raises(pf.CorruptImageError):
            pf.Image(image_path)


# ----------------------------------------------------------------- buffers


def test_loads_bytes_without_copy():
    data = pf.dumps(list(range(1000)))
    root = pf.loads(data)
    del data
    gc.collect()
    assert list(root) == list(range(1000))


def test_loads_memoryview_keeps_buffer_alive():
    data = pf.dumps({"k": "v" * 1000})
    mv = memoryview(data)
    root = pf.loads(mv)
    del data, mv
    gc.collect()
    assert root["k"] == "v" * 1000


def test_loads_memoryview_slice():
    data = pf.dumps([1, 2, 3])
    padded = b"xyz" + data + b"tail"
    root = pf.loads(memoryview(padded)[3:])
    assert root == [1, 2, 3]


def test_loads_bytearray_holds_an_export():
    """No copy: the image keeps the bytearray's buffer exported, so the
    bytearray cannot be resized under it."""
    buf = bytearray(pf.dumps({"k": [1, 2]}))
    root = pf.loads(buf)
    with pytest.raises(BufferError):
        buf.extend(b"more")
    assert root["k"] == [1, 2]
    pf.image_of(root).close()
    del root
    gc.collect()
    buf.extend(b"more")  # released once nothing uses the image


def test_loads_mmap(image_path):
    pf.freeze({"big": list(range(10000))}, image_path)
    with open(image_path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    root = pf.loads(mm)
    assert root["big"][9999] == 9999
    with pytest.raises(BufferError):
        mm.close()  # the image holds an export: no copy was made
    del mm
    gc.collect()
    assert sum(root["big"]) == sum(range(10000))


def test_loads_refuses_non_buffers():
    for x in ["a string", 12, None, [1, 2]]:
        with pytest.raises(TypeError):
            pf.loads(x)


# ----------------------------------------------------------------- read-only


def _mutations():
    d = {
        "d[k] = v": lambda d: d.__setitem__("x", 1),
        "del d[k]": lambda d: d.__delitem__("a"),
        "update": lambda d: d.update({"x": 1}),
        "pop": lambda d: d.pop("a"),
        "popitem": lambda d: d.popitem(),
        "clear": lambda d: d.clear(),
        "setdefault": lambda d: d.setdefault("x", 1),
        "|=": lambda d: d.__ior__({"x": 1}),
    }
    lst = {
        "append": lambda l: l.append(1),
        "extend": lambda l: l.extend([1]),
        "insert": lambda l: l.insert(0, 1),
        "l[0] = v": lambda l: l.__setitem__(0, 1),
        "l[0:1] = v": lambda l: l.__setitem__(slice(0, 1), [1]),
        "del l[0]": lambda l: l.__delitem__(0),
        "pop": lambda l: l.pop(),
        "remove": lambda l: l.remove(1),
        "clear": lambda l: l.clear(),
        "sort": lambda l: l.sort(),
        "reverse": lambda l: l.reverse(),
        "+=": lambda l: l.__iadd__([1]),
        "*=": lambda l: l.__imul__(2),
    }
    s = {
        "add": lambda s: s.add(9),
        "discard": lambda s: s.discard(1),
        "remove": lambda s: s.remove(1),
        "pop": lambda s: s.pop(),
        "clear": lambda s: s.clear(),
        "update": lambda s: s.update({9}),
        "difference_update": lambda s: s.difference_update({1}),
        "intersection_update": lambda s: s.intersection_update({1}),
        "symmetric_difference_update": lambda s: s.symmetric_difference_update({1}),
    }
    for name, fn in d.items():
        yield pytest.param("d", fn, id=f"dict-{name}")
    for name, fn in lst.items():
        yield pytest.param("l", fn, id=f"list-{name}")
    for name, fn in s.items():
        yield pytest.param("s", fn, id=f"set-{name}")


@pytest.mark.parametrize("which, mutate", list(_mutations()))
def test_mutation_raises_type_error(which, mutate):
    root = pf.loads(pf.dumps({"d": {"a": 1, "b": 2}, "l": [1, 2, 3], "s": {1, 2, 3}}))
    before = pf.thaw(root)
    with pytest.raises(TypeError):
        mutate(root[which])
    assert_same(pf.thaw(root), before)


def test_attributes_cannot_be_set():
    view = pf.loads(pf.dumps({"a": [1]}))
    with pytest.raises((AttributeError, TypeError)):
        view.foo = 1
    with pytest.raises((AttributeError, TypeError)):
        view["a"].foo = 1


def test_frozenset_view_has_no_mutators():
    view = pf.loads(pf.dumps(frozenset({1, 2})))
    for name in ("add", "discard", "remove", "pop", "clear", "update"):
        with pytest.raises((AttributeError, TypeError)):
            getattr(view, name)(1)


# ----------------------------------------------------------------- refused values


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyBytes(bytes):
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyTuple(tuple):
    pass


class MySet(set):
    pass


class MyFrozenset(frozenset):
    pass


class Color(enum.IntEnum):
    RED = 1


Point = collections.namedtuple("Point", "x y")

# No rule stores these (objects, issue 6, store the rest: test_objects.py).
UNSUPPORTED = {
    "memoryview": memoryview(b"x"),
    "generator": (i for i in range(1)),
    "Ellipsis": Ellipsis,
    "lambda": lambda: 0,
}
SUBCLASSES = {
    "MyList": MyList([1]),
    "MyDict": MyDict(a=1),
}
class OwnEqualityStr(str):
    """A str subclass that changes equality: no key rule can keep it."""

    def __eq__(self, other):
        return str.__eq__(self.lower(), str(other).lower())

    __hash__ = str.__hash__


@dataclasses.dataclass(frozen=True)
class FrozenPoint:
    x: int


# ... and these are stored faithfully now, but cannot be keys: their equality
# is their own (test_objects.py covers the key types that can).
NOT_KEYS = {
    "object": object(),
    "own-equality-str": OwnEqualityStr("s"),
    "frozen-dataclass": FrozenPoint(1),
}


@pytest.mark.parametrize("value", list(UNSUPPORTED.values()) + list(SUBCLASSES.values()),
                         ids=list(UNSUPPORTED) + list(SUBCLASSES))
def test_refused_values(value, clean_dir):
    with pytest.raises(TypeError):
        pf.dumps(value)
    with pytest.raises(TypeError):
        pf.dumps({"a": [0, 1, 2, value]})
    with pytest.raises(TypeError):
        pf.freeze([value], clean_dir.path / "refused.pf")
    # clean_dir: no file and no temporary file left


@pytest.mark.parametrize("value", list(NOT_KEYS.values()), ids=list(NOT_KEYS))
def test_objects_are_not_keys(value):
    with pytest.raises(TypeError, match="cannot be a dict key"):
        pf.dumps({value: 1})
    with pytest.raises(TypeError, match="cannot be a dict key"):
        pf.dumps({(1, value)})


@pytest.mark.parametrize(
    "value, path",
    [
        ({"a": [0, 1, 2, memoryview(b"")]}, "$['a'][3]"),
        ([[1], [2, (i for i in ())]], "$[1][1]"),
        ({1: {"x": memoryview(b"")}}, "$[1]['x']"),
        (({"k": (1, memoryview(b""))},), "$[0]['k'][1]"),
        (memoryview(b""), "$"),
    ],
)
def test_refusal_names_the_path(value, path):
    with pytest.raises(TypeError) as info:
        pf.dumps(value)
    assert path in str(info.value)


def test_subclass_keys_keep_their_base_equality():
    root = pf.loads(pf.dumps({MyStr("k"): 1, frozenset({Color.RED}): 2, Point(1, 2): 3}),
                    trust=True)
    assert root["k"] == 1 and root[frozenset({1})] == 2 and root[(1, 2)] == 3
    assert type(next(iter(root))) is MyStr


def test_bool_is_kept():
    root = pf.loads(pf.dumps([True, False, {True: False}]))
    assert type(root[0]) is bool and root[0] is True and root[1] is False
    assert type(next(iter(root[2]))) is bool


# ----------------------------------------------------------------- atomic writes


def test_failed_freeze_leaves_the_old_file(clean_dir):
    path = clean_dir.file("image.pf")
    pf.freeze({"version": 1}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        pf.freeze({"version": 2, "deep": [[[{"x": memoryview(b"")}]]]}, path)
    assert path.read_bytes() == before
    assert pf.open(path) == {"version": 1}


def test_failed_freeze_leaves_no_file(clean_dir):
    with pytest.raises(TypeError):
        pf.freeze([1, 2, memoryview(b"")], clean_dir.path / "never.pf")


def test_freeze_over_a_folder(clean_dir):
    folder = clean_dir.file("taken")
    folder.mkdir()
    with pytest.raises(OSError):
        pf.freeze([1], folder)
    assert folder.is_dir()  # clean_dir: no temporary file left next to it


def test_freeze_into_missing_folder(tmp_path):
    with pytest.raises(OSError):
        pf.freeze([1], tmp_path / "no" / "such" / "folder.pf")


def test_freeze_replaces(clean_dir):
    path = clean_dir.file("image.pf")
    pf.freeze({"v": 1}, path)
    old = pf.Image(path)
    old_root = old.root
    pf.freeze({"v": 2, "more": list(range(100))}, path)
    assert pf.open(path)["v"] == 2
    assert pf.Image(path).id != old.id
    # FORMAT R2: readers holding the old image keep reading it.
    assert old_root == {"v": 1}
    assert old.root["v"] == 1


# ----------------------------------------------------------------- sharing, cycles, dedup


def test_self_containing_list():
    a = []
    a.append(a)
    root = pf.loads(pf.dumps(a))
    assert len(root) == 1 and len(root[0]) == 1 and len(root[0][0][0]) == 1
    t = pf.thaw(root)
    assert type(t) is list and t[0] is t


def test_self_containing_dict(image_path):
    d = {"x": 1}
    d["self"] = d
    pf.freeze(d, image_path)
    root = pf.open(image_path)
    assert root["self"]["self"]["x"] == 1
    t = pf.thaw(root)
    assert type(t) is dict and t["self"] is t and t["x"] == 1


def test_cycle_through_a_tuple():
    a = [1]
    t = (a, "x")
    a.append(t)
    root = pf.loads(pf.dumps(a))
    assert root[1][1] == "x" and root[1][0][0] == 1
    thawed = pf.thaw(root)
    assert thawed[1][0] is thawed and type(thawed[1]) is tuple


def test_mutual_cycle():
    a, b = {}, []
    a["b"] = b
    b.append(a)
    t = pf.thaw(pf.loads(pf.dumps([a, b])))
    assert t[0]["b"] is t[1] and t[1][0] is t[0]


def test_set_view_repr_keeps_the_iteration_order():
    # A set whose table outgrew its elements iterates 1 before 32; a set
    # built anew from them (as a repr through a copy would) gives 32 first.
    x = set(range(40))
    for i in range(40):
        if i not in (1, 32):
            x.discard(i)
    assert list(x) == [1, 32] and list(set(x)) == [32, 1]
    assert repr(pf.loads(pf.dumps(x))) == "SetView({1, 32})"
    fs = frozenset(x)
    assert repr(pf.loads(pf.dumps(fs))) == f"FrozenSetView({fs!r})"
    assert repr(pf.loads(pf.dumps([set(), frozenset()]))) == "ListView([SetView(set()), FrozenSetView(frozenset())])"


def test_cyclic_view_repr_terminates():
    a = []
    a.append(a)
    d = {}
    d["d"] = d
    with deadline(10):
        ra = repr(pf.loads(pf.dumps(a)))
        rd = repr(pf.loads(pf.dumps(d)))
    assert "..." in ra and "..." in rd


def test_shared_references_keep_identity():
    x = [1]
    s = {"k": "v"}
    y = [x, x, s, {"again": s}]
    t = pf.thaw(pf.loads(pf.dumps(y)))
    assert t[0] is t[1]
    assert t[2] is t[3]["again"]
    assert t[0] is not x


def test_shared_object_stored_once():
    big = list(range(10000))
    one = len(pf.dumps([big]))
    two = len(pf.dumps([big, big]))
    assert two < one + 64


def test_equal_strings_stored_once():
    strings = ["".join(["x"] * 999 + [str(i % 1)]) for i in range(1000)]
    assert strings[0] is not strings[1]
    data = pf.dumps(strings)
    assert len(data) < 20000
    assert pf.loads(data) == strings
    blobs = [bytes(bytearray(b"y" * 1000)) for _ in range(1000)]
    assert len(pf.dumps(blobs)) < 20000


def test_shared_tuples_do_not_blow_up():
    """2**40 paths through 41 tuples: neither writing nor reading nor
    thawing may walk each path (run apart: a native loop cannot be
    interrupted)."""
    proc = run_isolated(
        """
        import permafrost as pf
        x = (1,)
        for _ in range(40):
            x = (x, x)
        data = pf.dumps(x)
        assert len(data) < 5000, len(data)
        root = pf.loads(data)
        node = root
        for _ in range(40):
            assert type(node) is tuple and len(node) == 2
            node = node[0]
        assert node == (1,)
        t = pf.thaw(root)
        assert t[0] is t[1]
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_shared_tuples_are_read_once():
    """The reader side alone, on an image from the independent writer of
    helpers_format (which stores each shared tuple once): loading and
    thawing must keep the sharing instead of decoding 2**40 paths."""
    proc = run_isolated(
        """
        import helpers_format as fmt
        import permafrost as pf
        x = (1,)
        for _ in range(40):
            x = (x, x)
        data = fmt.build(x)
        assert len(data) < 5000, len(data)
        root = pf.loads(data)
        assert root[0] is root[1]
        t = pf.thaw(root)
        assert t[0] is t[1]
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


DEEP_NESTING = """
import permafrost as pf

def build(kind, depth):
    x = "leaf"
    for i in range(depth):
        if kind == "list" or (kind == "mixed" and i % 3 == 0):
            x = [x]
        elif kind == "dict" or (kind == "mixed" and i % 3 == 1):
            x = {"k": x}
        else:
            x = (x,)
    return x

def descend(node, depth):
    for _ in range(depth):
        node = node["k"] if isinstance(node, (dict, pf.DictView)) else node[0]
    assert node == "leaf", node

def attempt(what, fn):
    try:
        return fn()
    except (RecursionError, pf.Error) as e:
        print(what, "refused:", type(e).__name__)
        raise SystemExit(0)

x = build(KIND, 10000)
data = attempt("dumps", lambda: pf.dumps(x))
root = attempt("loads", lambda: pf.loads(data))
attempt("descend", lambda: descend(root, 10000))
thawed = attempt("thaw", lambda: pf.thaw(root))
descend(thawed, 10000)
print("OK")
"""


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "mixed"])
def test_deep_nesting_is_clean(kind):
    """Depth 10000: freeze, read and thaw work, or raise RecursionError or
    a permafrost.Error; the interpreter never crashes."""
    proc = run_isolated(f"KIND = {kind!r}\n" + DEEP_NESTING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout or "refused" in proc.stdout, proc.stdout


def test_dict_equality_ignores_order():
    view = pf.loads(pf.dumps({"a": 1, "b": [2], 3: {"c"}}))
    assert view == {3: {"c"}, "b": [2], "a": 1}
    assert view != {"a": 1, "b": [2], 3: {"c"}, "d": 4}
    assert view != {"a": 1, "b": [2], 3: {"d"}}
    assert list(view) == ["a", "b", 3]


# ----------------------------------------------------------------- resources


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_descriptor_or_mapping_leak(image_path):
    """Opening an image many times more than the descriptor limit allows
    leaves nothing open once the views are gone."""
    pf.freeze({"k": list(range(100))}, image_path)
    gc.collect()
    before = _open_fds()
    for _ in range(3000):
        assert pf.open(image_path)["k"][99] == 99
        with pf.Image(image_path) as img:
            assert img.root["k"][0] == 0
    gc.collect()
    assert _open_fds() <= before
    with open("/proc/self/maps") as f:
        assert sum(str(image_path) in line for line in f) <= 1


def test_concurrent_readers():
    """Threads reading one image at once see what one thread sees."""
    import concurrent.futures

    table = {f"k{i}": [i, {"v": str(i)}] for i in range(2000)}
    view = pf.loads(pf.dumps(table))

    def work(start):
        total = 0
        for i in range(start, 2000, 7):
            entry = view[f"k{i}"]
            total += entry[0] + int(entry[1]["v"])
            assert f"k{i}" in view and f"x{i}" not in view
        assert len(pf.thaw(view)) == 2000
        return total

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(work, range(7)))
    assert results == [work(s) for s in range(7)]


@pytest.mark.slow
def test_wide_slot_table(tmp_path):
    """A dict whose body passes 2**28 bytes: 8-byte slots (FORMAT R22)."""
    big = b"x" * (2**28 + 1000)
    d = {f"k{i}": i for i in range(20)}
    d["big"] = big
    path = tmp_path / "wide.pf"
    pf.freeze(d, path)
    data = path.read_bytes()
    img = fmt.Image(data)
    table = img.ival(img.root_off)
    assert table.nslots > 0 and table.width == 8
    del data, img
    root = pf.open(path)
    for k, v in d.items():
        assert root[k] == v
    assert "missing" not in root
    del big, d


# ----------------------------------------------------------------- keys


def test_one_int_float_bool_key():
    root = pf.loads(pf.dumps({1: "one", "a": "str", b"a": "bytes", 0: "zero"}))
    for k in (1, 1.0, True, 1 + 0j):
        assert root[k] == "one"
    for k in (0, 0.0, -0.0, False, 0j):
        assert root[k] == "zero"
    assert root["a"] == "str" and root[b"a"] == "bytes"
    assert type(list(root)[0]) is int
    root = pf.loads(pf.dumps({True: "t", 1.5: "f"}))
    assert type(list(root)[0]) is bool and root[1] == "t" and root[1.5 + 0j] == "f"
    s = pf.loads(pf.dumps({1, "1", b"1", (1,), frozenset({1})}))
    assert 1.0 in s and True in s and (1.0,) in s and frozenset({True}) in s and (True,) in s
    assert 2 not in s and "2" not in s


def test_tuple_and_frozenset_keys():
    d = {(1, "a"): 1, frozenset({1, 2}): 2, (): 3, frozenset(): 4, ((1, 2), frozenset({3})): 5}
    root = pf.loads(pf.dumps(d))
    for k, v in d.items():
        assert root[k] == v
    assert root[(1.0, "a")] == 1 and root[frozenset({2.0, True})] == 2
    assert root[((True, 2.0), frozenset({3 + 0j}))] == 5
    fkey = [k for k in root if isinstance(k, pf.FrozenSetView)]
    assert len(fkey) == 2 and hash(fkey[0]) == hash(frozenset({1, 2}))
    assert root[fkey[0]] == 2  # a frozenset view is a key too


def test_missing_and_unhashable_keys():
    root = pf.loads(pf.dumps({"a": 1}))
    with pytest.raises(KeyError) as info:
        root["b"]
    assert info.value.args == ("b",)
    for k in ([], {}, {1}, ["a"]):
        with pytest.raises(TypeError):
            root[k]
        with pytest.raises(TypeError):
            k in root  # noqa: B015
        with pytest.raises(TypeError):
            root.get(k)


def test_unrelated_hashable_probe():
    root = pf.loads(pf.dumps({1: "a", "x": "b"}))
    from fractions import Fraction

    class Key:
        def __hash__(self):
            return hash(1)

    for k in (object(), Key(), Fraction(1, 3)):
        assert k not in root
        assert root.get(k) is None
        with pytest.raises(KeyError):
            root[k]


def test_nan_keys():
    n1, n2 = float("nan"), float("nan")
    d = {n1: 1, n2: 2, "x": 3}
    root = pf.loads(pf.dumps(d))
    assert len(root) == 3
    keys = list(root)
    assert math.isnan(keys[0]) and math.isnan(keys[1]) and keys[2] == "x"
    assert list(root.values()) == [1, 2, 3]
    assert root["x"] == 3
    # A NaN equals nothing, and no object of the image is the caller's.
    assert float("nan") not in root
    thawed = pf.thaw(root)
    assert len(thawed) == 3
    s = pf.loads(pf.dumps({n1, n2, 1.0}))
    assert len(s) == 3 and 1 in s


@pytest.mark.parametrize("container", [set, frozenset])
def test_set_argument_is_looked_up_as_frozenset(container):
    """As set.__contains__ does: `{1} in {frozenset({1})}` is True."""
    orig = container({frozenset({1, 2}), frozenset(), 3})
    view = pf.loads(pf.dumps(orig))
    for probe in [{1, 2}, set(), {3}, {1}]:
        assert (probe in view) == (probe in orig), probe
        assert (probe not in view) == (probe not in orig), probe


def test_signed_zero_keys():
    root = pf.loads(pf.dumps({-0.0: "z"}))
    assert root[0] == "z" and root[0.0] == "z" and root[False] == "z"
    assert math.copysign(1, list(root)[0]) == -1.0


@pytest.mark.parametrize("n", [9, 200])  # scanned and slotted lookups
def test_large_int_keys(n):
    keys = [2**100, -(2**100), 2**63, -(2**63) - 1, 2**63 - 1, -(2**63), 2**64, 10**30]
    keys += [2**70 + i for i in range(n)]
    d = {k: i for i, k in enumerate(keys)}
    root = pf.loads(pf.dumps(d))
    for k, v in d.items():
        assert root[k] == v
    assert root[float(2**100)] == 0 and root[float(2**64)] == d[2**64] and root[float(2**63)] == d[2**63]
    assert 2**100 + 1 not in root and float(2**101) not in root
    assert list(root) == keys


def test_empty_containers():
    for x in ({}, [], set(), frozenset(), (), "", b""):
        root = pf.loads(pf.dumps(x))
        assert_same(pf.thaw(root), x)
        assert len(root) == 0 and not root
        assert list(root) == []
    root = pf.loads(pf.dumps({}))
    with pytest.raises(KeyError):
        root["a"]
    assert pf.loads(pf.dumps([]))[:] == []
    with pytest.raises(IndexError):
        pf.loads(pf.dumps([]))[0]


FLOATS = [0.0, -0.0, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 1.5, -2.25, 123.456, 1e-5, 1e-9, 9.999999999, 1e22, 1e23, 1e300,
          5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, float(2**53), float(2**53) + 2, 2.0**63, 2.0**64,
          -(2.0**63), 4503599627370496.5, 0.30000000000000004, 1234567.1234567, 3.14159, math.inf, -math.inf]


def test_float_values_and_keys_are_exact():
    """Every float comes back with its exact bits, whatever form the writer
    picks for it; as keys (scanned and slotted), each is found by an equal
    float, int or complex."""
    root = pf.loads(pf.dumps(FLOATS))
    for got, want in zip(root, FLOATS):
        assert_same(got, want)
    nan = pf.loads(pf.dumps([math.nan, -math.nan]))
    assert all(math.isnan(x) for x in nan)
    for keys in (FLOATS[:8], FLOATS):
        d = {k: i for i, k in enumerate(keys)}
        view = pf.loads(pf.dumps(d))
        for k, i in d.items():
            assert view[k] == i
            if math.isfinite(k) and k == int(k):
                assert view[int(k)] == i and view[complex(k, 0)] == i
        for near in (math.nextafter(k, math.inf) for k in keys if math.isfinite(k)):
            assert (near in view) == (near in d), near


def test_strings_of_every_width():
    strings = ["", "ascii", "x" * 127, "x" * 128, "x" * 100000, "caf\xe9", "\u20ac" * 300, "\U0001f600",
               "a\ud800b", "\udfff", "\ud800\udc00", "\U0010ffff", "\x00\x7f\x80\xff"]
    root = pf.loads(pf.dumps(strings))
    for got, want in zip(root, strings):
        assert type(got) is str and got == want
    d = pf.loads(pf.dumps({s: i for i, s in enumerate(strings)}))
    for i, s in enumerate(strings):
        assert d[s] == i


def test_thaw_keeps_a_root_tuple_inside_its_cycle():
    """A tuple root comes back decoded; thaw() of it (or of the Image) still
    rebuilds the cycle through it, as Python can (list first, then tuple)."""
    inner = []
    t = (inner, "tail")
    inner.append(t)
    root = pf.loads(pf.dumps(t))
    assert pf.image_of(root[0]).root is root  # decoded once, the same object
    for copy in (pf.thaw(root), pf.thaw(pf.image_of(root[0]))):
        assert type(copy) is tuple and type(copy[0]) is list
        assert copy[0][0] is copy and copy[1] == "tail"


def test_thaw_of_an_image_is_its_root():
    data = pf.dumps({"a": [1, (2, 3)], "b": {4}})
    image = pf.Image.from_buffer(data)
    assert pf.thaw(image) == {"a": [1, (2, 3)], "b": {4}}
    image.close()
    with pytest.raises(pf.ClosedImageError):
        pf.thaw(image)


def test_looked_up_values_of_every_fast_form():
    """Dict lookups decode the common forms in place (ints, short ASCII
    str, decimal floats, REF/SREF to a str, short tuples of those) and
    everything else through the core: both must give the original."""
    filler = [bytes([i]) * 150 for i in range(6)]
    word = "a frequent word"
    d = {}
    for i in range(6):
        d[f"w{i}"] = word                      # copy, REF, then SREFs
        d[f"f{i}"] = filler[i]
        d[f"t{i}"] = (i, i / 10, word)         # SREF inside a short tuple
    d.update({
        "dec": 123.25, "neg": -0.5, "big_m": (2**53 - 1) / 10**9, "raw": 1e300, "negzero": -0.0,
        "nan_free_tuple": (1, 2.5, "x" * 130, b"b", None, True, (1, 2)),
        "long_tuple": tuple(range(9)), "empty": (), "mixed": (1, [2, 3], {"k": "v"}),
        "ucs": ("caf\xe9", "\u20ac", "\U0001f600"), "int8": -(2**63), "bigint": 2**64,
        "none": None, "false": False, "true": True,
    })
    for nbytes in range(1, 9):                 # every inline int width, both signs
        top = 2 ** (8 * nbytes - 1)
        for x in (top - 1, -top, top // 3, -(top // 3) - 1):
            d[f"i{x}"] = x
    view = pf.loads(pf.dumps(d))
    for k, v in d.items():
        got = view[k]
        assert got == v and type(got) is type(v), k
        assert view.get(k) == v
    assert repr(view["negzero"]) == "-0.0"
    assert view["t5"][2] == word and view["w5"] == word


def test_repeated_strings_come_back_as_one_object_per_process():
    """A str value met three times or more is stored once with an index
    (FORMAT R28); lookups return one str object for it, from a bounded
    cache. More indexed strings than cache slots: slots are shared, and
    every lookup must still give its own string, before and after."""
    words = ["word-%05d" % i for i in range(6000)]
    d = {}
    for j in range(5):     # copies, then far enough apart for SREFs to win
        for i, w in enumerate(words):
            d["k%d-%d" % (i, j)] = w if j != 2 else (j, 0.5, w)
    img = pf.Image.from_buffer(pf.dumps(d))
    view = img.root
    for _ in range(2):                          # cold, then with a full cache
        for k, v in d.items():
            got = view[k]
            assert got == v and type(got) is type(v), k
    a, b = view["k7-3"], view["k7-4"]
    assert a == "word-00007" and a is b        # the same object, as unpickled
    assert view["k7-2"][2] is a
    img.close()                                 # deferred: a view is alive
    assert view["k7-3"] is a
    del view, img                               # unmapped, the cache freed
    gc.collect()
    assert a == "word-00007" and b is a         # handed-out objects stay valid

