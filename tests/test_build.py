"""permafrost.Builder, the streaming builder: whatever it writes must read
back as the dict (or list) the same operations give in Python, keys
written twice included, in any memory budget; a failed or abandoned build
leaves nothing behind."""

from __future__ import annotations

import gc
import os
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import permafrost as pf
from helpers import assert_same, hashables, plain, values

MIB = 1 << 20


def read_back(path):
    """The image's root as plain objects, after the full check."""
    image = pf.Image(path)
    stats = image.verify()
    assert stats["checksums"] >= 1, stats
    return plain(image.root)


def build(path, entries, memory=MIB, kind="dict"):
    with pf.Builder(path, kind, memory=memory) as b:
        for e in entries:
            if kind == "dict":
                b[e[0]] = e[1]
            else:
                b.append(e)
    return read_back(path)


# ----------------------------------------------------------------- differential


@settings(max_examples=60)
@given(entries=st.lists(st.tuples(hashables(allow_nan=False), values(max_leaves=8)), max_size=40))
def test_entries_read_back_as_the_dict_they_make(module_dir, entries):
    """Keys drawn from a small pool (1, 1.0, True, "a", b"a"... repeat), so
    that equal keys meet: the first key stays, in its place, with the last
    value, as `d[k] = v` does."""
    ref = {}
    for k, v in entries:
        ref[k] = v
    path = module_dir / "diff.pf"
    got = build(path, entries)
    assert_same(got, ref)
    view = pf.open(path)
    for k in ref:
        assert_same(plain(view[k]), ref[k])
    assert len(view) == len(ref)


@settings(max_examples=30)
@given(items=st.lists(values(max_leaves=10), max_size=30))
def test_a_list_root_reads_back_as_the_list(module_dir, items):
    path = module_dir / "list.pf"
    assert_same(build(path, items, kind="list"), items)


@pytest.mark.parametrize("memory", [MIB, 64 * MIB])
def test_many_entries_with_overwrites_through_spilled_runs(tmp_path, memory):
    """200,000 entries in 1 MiB: the key hashes go to disk in sorted runs
    that are merged at close(); a third of the keys are written again."""
    rng = random.Random(7)
    n = 200_000
    ref = {}
    path = tmp_path / "big.pf"
    with pf.Builder(path, memory=memory) as b:
        for i in range(n):
            k = "key-%d" % rng.randrange(n * 2 // 3)
            v = (i, "cat-%d" % (i % 97), i / 4)
            b[k] = v
            ref[k] = v
        assert b.entries == n
    view = pf.open(path)
    assert len(view) == len(ref)
    assert list(view) == list(ref)
    for k, v in ref.items():
        assert view[k] == v
    for k in ("missing", "key-", "key-%d" % n):
        assert k not in view
    pf.verify(path)


def test_equal_keys_of_different_types_are_one_key(tmp_path):
    path = tmp_path / "eq.pf"
    with pf.Builder(path) as b:
        b[1] = "int"
        b["x"] = "x"
        b[1.0] = "float"
        b[True] = "bool"
        b[(1, "a")] = "t1"
        b[(1.0, "a")] = "t2"
        b[frozenset([1, 2])] = "f1"
        b[frozenset([2.0, True])] = "f2"
        b[0.0] = "zero"
        b[-0.0] = "negzero"
        b[2**70] = "big"
        b[float(2**70)] = "bigfloat"
    ref = {1: "bool", "x": "x", (1, "a"): "t2", frozenset([1, 2]): "f2", 0.0: "negzero",
           2**70: "bigfloat"}
    got = read_back(path)
    assert_same(got, ref)


def test_a_replacing_value_longer_than_the_first(tmp_path):
    path = tmp_path / "longer.pf"
    ref = {}
    with pf.Builder(path) as b:
        for i in range(50):
            b[i] = i
            ref[i] = i
        for i in range(0, 50, 3):
            v = ["long value %d" % i] * 20
            b[i] = v
            ref[i] = v
        b[7] = None
        ref[7] = None
    assert_same(read_back(path), ref)


def test_repeated_strings_are_stored_once_in_the_pool(tmp_path):
    """A string met again in later records becomes an SREF to one pooled
    copy: the image is far smaller than the strings written."""
    word = "a fairly long category name that repeats, %d"
    path = tmp_path / "pool.pf"
    n = 20_000
    with pf.Builder(path) as b:
        for i in range(n):
            b[i] = (word % (i % 10), i)
    size = os.path.getsize(path)
    assert size < n * 20, size  # not the 45-byte string again in each entry
    view = pf.open(path)
    assert all(view[i] == (word % (i % 10), i) for i in range(n))
    assert pf.Image(path).verify()["values"] > 0


def test_strings_inside_keys_are_not_pooled_but_read_back(tmp_path):
    path = tmp_path / "keys.pf"
    ref = {}
    with pf.Builder(path) as b:
        for i in range(300):
            inner = {("shared key string", i % 3): i, frozenset(["shared member string", i % 2]): -i}
            k = ("outer key string", i)
            b[k] = inner
            ref[k] = inner
    assert_same(read_back(path), ref)


# ----------------------------------------------------------------- nesting


def test_nested_builders_make_a_dict_of_dicts_and_lists(tmp_path):
    path = tmp_path / "nested.pf"
    ref = {}
    with pf.Builder(path, memory=MIB) as b:
        for g in range(30):
            with b.dict("group-%d" % g) as sub:
                ref["group-%d" % g] = inner = {}
                for i in range(g * 7):
                    sub["item-%d" % i] = (g, i)
                    inner["item-%d" % i] = (g, i)
                sub["item-0"] = "again"  # equal keys inside a nested level
                inner["item-0"] = "again"
            b["plain-%d" % g] = g
            ref["plain-%d" % g] = g
        lst = b.list("a list")
        ref["a list"] = rl = []
        for i in range(100):
            if i % 10 == 0:
                d = lst.dict()
                d["i"] = i
                rl.append({"i": i})
            else:
                lst.append([i] * (i % 4))
                rl.append([i] * (i % 4))
        b["group-3"] = "replaced a nested level"
        ref["group-3"] = "replaced a nested level"
    assert_same(read_back(path), ref)


def test_writing_to_a_level_closes_the_levels_below(tmp_path):
    path = tmp_path / "auto.pf"
    with pf.Builder(path) as b:
        sub = b.dict("a")
        sub["x"] = 1
        deeper = sub.list("l")
        deeper.append(1)
        b["b"] = 2  # closes deeper, then sub
        assert sub.closed and deeper.closed and not b.closed
        with pytest.raises(ValueError, match="closed"):
            sub["y"] = 2
        with pytest.raises(ValueError, match="closed"):
            deeper.append(2)
        sub.close()  # closing again is harmless
    assert_same(read_back(path), {"a": {"x": 1, "l": [1]}, "b": 2})


def test_a_huge_nested_level_spills_too(tmp_path):
    path = tmp_path / "deep.pf"
    n = 120_000
    with pf.Builder(path, memory=MIB) as b:
        b["before"] = 0
        with b.dict("big") as sub:
            for i in range(n):
                sub[i] = -i
        b["after"] = 1
    view = pf.open(path)
    assert list(view) == ["before", "big", "after"]
    big = view["big"]
    assert len(big) == n and all(big[i] == -i for i in range(0, n, 7))
    assert 5 not in view and n not in big
    pf.verify(path)


# A program for nested builders: ("set", key, value), ("dict", key) and
# ("list", key) open a level (at a list level the key is ignored), ("up",)
# closes the innermost one. Run against the Builder and against plain
# Python containers, the results must match.
_small_keys = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "", 1.0, True, (1, "a")]))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _small_keys, values(max_leaves=4)),
        st.tuples(st.just("dict"), _small_keys),
        st.tuples(st.just("list"), _small_keys),
        st.tuples(st.just("up")),
    ),
    max_size=40,
)


def _run_program(path, ops, kind):
    ref_root = {} if kind == "dict" else []
    with pf.Builder(path, kind, memory=MIB) as root:
        stack = [(root, ref_root)]
        for op in ops:
            level, ref = stack[-1]
            if op[0] == "up":
                if len(stack) > 1:
                    level.close()
                    stack.pop()
                continue
            if isinstance(ref, dict):
                key = op[1]
                if op[0] == "set":
                    level[key] = op[2]
                    ref[key] = op[2]
                    continue
                sub = level.dict(key) if op[0] == "dict" else level.list(key)
                new = {} if op[0] == "dict" else []
                ref[key] = new
            else:
                if op[0] == "set":
                    level.append(op[2])
                    ref.append(op[2])
                    continue
                sub = level.dict() if op[0] == "dict" else level.list()
                new = {} if op[0] == "dict" else []
                ref.append(new)
            stack.append((sub, new))
    return ref_root


@settings(max_examples=80)
@given(ops=_ops, kind=st.sampled_from(["dict", "list"]))
def test_programs_of_nested_builders(module_dir, ops, kind):
    """A key written again at a level replaces the earlier value there,
    nested levels included (a whole nested dict can be replaced)."""
    path = module_dir / "prog.pf"
    ref = _run_program(path, ops, kind)
    assert_same(read_back(path), ref)


# ----------------------------------------------------------------- the API


def test_update_and_extend_take_what_dict_and_list_take(tmp_path):
    path = tmp_path / "upd.pf"
    with pf.Builder(path) as b:
        b.update({"a": 1, "b": 2})
        b.update([("c", 3), ["d", 4]], e=5)
        b.update(pf_map := {"f": 6}.items())
        del pf_map

        class Mapping:
            def keys(self):
                return ["g"]

            def __getitem__(self, k):
                return 7

        b.update(Mapping())
        with pytest.raises(ValueError, match="#1"):
            b.update([("h", 8), ("bad",)])
    assert_same(read_back(path), {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8})
    lpath = tmp_path / "ext.pf"
    with pf.Builder(lpath, "list") as b:
        b.extend(range(5))
        b.extend(iter(["x"]))
        assert b.kind == "list" and b.entries == 6
    assert read_back(lpath) == [0, 1, 2, 3, 4, "x"]


def test_a_failed_entry_is_not_written_and_the_build_goes_on(tmp_path):
    path = tmp_path / "goes_on.pf"
    with pf.Builder(path) as b:
        b["a"] = 1
        with pytest.raises(TypeError, match=r"memoryview.* at value\[1\]"):
            b["b"] = [1, memoryview(b"")]
        with pytest.raises(TypeError, match="unhashable"):
            b[[1]] = 2
        with pytest.raises(TypeError, match="cannot be a dict key"):
            b[object()] = 2
        b["c"] = 3
        assert b.entries == 2
    assert read_back(path) == {"a": 1, "c": 3}


def test_misuse_raises_clear_errors(tmp_path):
    path = tmp_path / "misuse.pf"
    with pytest.raises(ValueError, match="kind"):
        pf.Builder(path, "set")
    for bad in (1000, -1, 2**64, 2**64 + 2 * MIB, 2**63):
        with pytest.raises(ValueError, match="1 MiB"):
            pf.Builder(path, memory=bad)
    with pytest.raises(TypeError, match="int"):
        pf.Builder(path, memory=1.5e9)
    with pytest.raises(IsADirectoryError):
        pf.Builder(tmp_path)
    b = pf.Builder(path)
    with pytest.raises(TypeError, match="list"):
        b.append(1)
    with pytest.raises(TypeError, match="delete"):
        del b["x"]
    with pytest.raises(TypeError, match="needs its key"):
        b.dict()
    lb = pf.Builder(tmp_path / "l.pf", "list")
    with pytest.raises(TypeError, match="dict"):
        lb["k"] = 1
    with pytest.raises(TypeError, match="no key"):
        lb.list("k")
    lb.abort()
    b["k"] = "v"
    b.close()
    assert b.entries == 1 and b.bytes_written == os.path.getsize(path)
    with pytest.raises(ValueError, match="published"):
        b["x"] = 1
    b.close()  # twice is harmless
    assert "published" in repr(b)
    assert read_back(path) == {"k": "v"}
    with pytest.raises(FileNotFoundError):
        pf.Builder(tmp_path / "no" / "such" / "folder.pf")


def test_an_exception_in_the_with_block_leaves_nothing(clean_dir):
    old = clean_dir.file("image.pf")
    pf.freeze({"old": True}, old)
    with pytest.raises(RuntimeError):
        with pf.Builder(old, memory=MIB) as b:
            for i in range(100_000):  # enough to spill runs and the pool
                b[i] = ("x" * (i % 50), i)
            sub = b.dict("nested")
            sub[1] = 1
            raise RuntimeError("stop")
    assert pf.thaw(pf.open(old)) == {"old": True}  # untouched
    with pytest.raises(RuntimeError):
        with pf.Builder(clean_dir.path / "other.pf") as b:
            with b.dict("nested") as sub:
                sub[1] = 1
                raise RuntimeError("from a nested level")
    with pytest.raises(ValueError, match="abandoned"):
        b["x"] = 1


def test_abort_and_a_dropped_builder_publish_nothing(clean_dir):
    b = pf.Builder(clean_dir.path / "a.pf")
    b["x"] = 1
    b.abort()
    b.abort()
    b = pf.Builder(clean_dir.path / "b.pf")
    b["x"] = 1
    del b
    gc.collect()


def test_the_pointer_publish_mode(clean_dir):
    path = clean_dir.file("ptr.pf")
    for gen in range(3):
        with pf.Builder(path, _mode=2) as b:
            b["gen"] = gen
        assert pf.open(path)["gen"] == gen
    versions = [n for n in os.listdir(clean_dir.path) if n.startswith("ptr.pf.v-")]
    assert len(versions) == 1
    clean_dir.file(versions[0])


def test_views_of_a_built_image_pickle_and_share(tmp_path):
    import pickle

    path = tmp_path / "pk.pf"
    with pf.Builder(path) as b:
        with b.dict("inner") as sub:
            sub["k"] = [1, 2]
    inner = pf.open(path)["inner"]
    back = pickle.loads(pickle.dumps(inner))
    assert pf.thaw(back) == {"k": [1, 2]}


# ----------------------------------------------------------------- 64-bit offsets


def _free_bytes(path):
    return shutil.disk_usage(path).free


@pytest.mark.slow
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""), reason="5 GiB under ASan")
def test_an_image_larger_than_4_gib(tmp_path):
    """Four values of 1.1 GiB, then entries, a nested dict and a list whose
    offsets lie beyond 2^32: every table needs 8-byte entries, and every
    value reads back."""
    if _free_bytes(tmp_path) < 12 << 30:
        pytest.skip("needs 12 GiB of free disk")
    path = tmp_path / "huge.pf"
    chunk = 1_100 * MIB
    with pf.Builder(path) as b:
        for i in range(4):
            blob = bytes([i]) * chunk
            b["blob-%d" % i] = blob
            del blob
        for i in range(2000):
            b["small-%d" % i] = (i, "v%d" % (i % 7))
        with b.dict("nested") as sub:
            for i in range(2000):
                sub[i] = str(i)
        with b.list("list") as lst:
            for i in range(100):
                lst.append(i * 1.5)
    size = os.path.getsize(path)
    assert size > 4 << 30
    view = pf.open(path)
    assert len(view) == 4 + 2000 + 2
    for i in range(4):
        blob = view["blob-%d" % i]
        assert len(blob) == chunk and blob[:1] == blob[-1:] == bytes([i])
        del blob
    for i in range(0, 2000, 13):
        assert view["small-%d" % i] == (i, "v%d" % (i % 7))
        assert view["nested"][i] == str(i)
    assert list(view["list"])[-1] == 99 * 1.5
    assert "small-2000" not in view
    assert pf.verify(path)["keys"] == 4 + 2000 + 2 + 2000
