"""Ordered containers (issue 5; docs/FORMAT.md R36, docs/ORDERED.md): sorted
and prefix queries on dict and set views frozen with ordered=True, checked
against a reference in Python (a sorted list and bisect) over str keys of
every width (surrogates and astral code points included) and bytes keys."""

from __future__ import annotations

import bisect
import multiprocessing
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import permafrost as pf

# Every code point, lone surrogates included; a small alphabet too, so that
# keys share prefixes and are prefixes of each other.
_ANY = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
_FEW = st.sampled_from(["a", "b", "\x00", "\xe9", "\u0101", "\ud800", "\U0001f600", "\uffff"])
STR_KEYS = st.lists(st.text(_FEW, max_size=6) | st.text(_ANY, max_size=4), max_size=60)
BYTES_KEYS = st.lists(st.binary(max_size=5) | st.sampled_from([b"", b"\x00", b"\xff", b"a"]),
                      max_size=60)


# ----------------------------------------------------------------- the reference


class Reference:
    """The answers of an ordered view, from a sorted list of the keys."""

    def __init__(self, d):
        self.d = d
        self.keys = sorted(d)

    def prefix(self, p):
        i = bisect.bisect_left(self.keys, p)
        out = []
        while i < len(self.keys) and self.keys[i].startswith(p):
            out.append(self.keys[i])
            i += 1
        return out

    def prefixes(self, s, start=0):
        s = s[start:]
        return [s[:n] for n in range(len(s) + 1) if s[:n] in self.d]

    def irange(self, lo=None, hi=None, inclusive=(True, True), reverse=False):
        out = [k for k in self.keys
               if (lo is None or (k >= lo if inclusive[0] else k > lo))
               and (hi is None or (k <= hi if inclusive[1] else k < hi))]
        return out[::-1] if reverse else out


def probes_for(keys, extra):
    """Query strings: the keys, their prefixes, and some that are not."""
    out = set(extra)
    for k in keys[:20]:
        out.update(k[:n] for n in range(len(k) + 1))
        out.add(k + k[:1])
    return sorted(out, key=lambda x: (len(x), x))[:80]


def check_view(view, d, probes):
    ref = Reference(d)
    is_dict = isinstance(d, dict)
    assert list(view) == list(d)                       # insertion order kept
    assert view == d
    assert list(view.sorted_keys()) == ref.keys
    for p in probes:
        want = ref.prefix(p)
        assert list(view.sorted_keys(prefix=p)) == want, p
        if is_dict:
            assert list(view.keys(prefix=p)) == want, p
            assert list(view.values(prefix=p)) == [d[k] for k in want], p
            assert list(view.items(prefix=p)) == [(k, d[k]) for k in want], p
        assert view.bisect_left(p) == bisect.bisect_left(ref.keys, p), p
        assert view.bisect_right(p) == bisect.bisect_right(ref.keys, p), p
        pre = ref.prefixes(p)
        got = view.prefixes(p)
        assert got == ([(k, d[k]) for k in pre] if is_dict else pre), p
        if pre:
            want_lp = (pre[-1], d[pre[-1]]) if is_dict else pre[-1]
            assert view.longest_prefix(p) == want_lp, p
        else:
            with pytest.raises(KeyError):
                view.longest_prefix(p)
        for q in probes[:8]:
            for inc in ((True, True), (False, True), (True, False), (False, False)):
                for rev in (False, True):
                    assert list(view.irange(p, q, inclusive=inc, reverse=rev)) == \
                        ref.irange(p, q, inc, rev), (p, q, inc, rev)
        assert list(view.irange(minimum=p)) == ref.irange(p)
        assert list(view.irange(maximum=p, reverse=True)) == ref.irange(None, p, reverse=True)


# ----------------------------------------------------------------- differential


@given(STR_KEYS, st.lists(st.text(_FEW, max_size=7), max_size=6), st.randoms())
def test_str_keys_differential(keys, extra, rnd):
    keys = list(dict.fromkeys(keys))
    rnd.shuffle(keys)
    d = {k: i for i, k in enumerate(keys)}
    data = pf.dumps(d, ordered=True)
    pf.verify(pf.Image.from_buffer(data))
    probes = probes_for(keys, extra + [""])
    check_view(pf.loads(data), d, probes)
    s = set(keys)
    check_view(pf.loads(pf.dumps(s, ordered=True)), s, probes)
    fs = frozenset(keys)
    check_view(pf.loads(pf.dumps([fs], ordered=True))[0], fs, probes)


@given(BYTES_KEYS, st.lists(st.binary(max_size=6), max_size=6), st.randoms())
def test_bytes_keys_differential(keys, extra, rnd):
    keys = list(dict.fromkeys(keys))
    rnd.shuffle(keys)
    d = {k: [i] for i, k in enumerate(keys)}
    data = pf.dumps(d, ordered=True)
    pf.verify(pf.Image.from_buffer(data))
    view = pf.loads(data)
    check_view(view, d, probes_for(keys, extra + [b""]))


def test_large_dict_every_query(tmp_path):
    """Thousands of keys: several sample blocks and a slot table; keys that
    share their first 8 bytes (the samples' prefixes tie) and keys that are
    prefixes of each other."""
    import random
    rnd = random.Random(5)
    words = set()
    while len(words) < 5000:
        base = rnd.choice(["internationalization", "internal", "inter", "a", "\u00e9t\u00e9",
                           "\U0001f600x", "zzzzzzzz"])
        words.add(base[:rnd.randint(0, len(base))] + "".join(
            rnd.choice("abc\u00e9") for _ in range(rnd.randint(0, 4))))
    keys = list(words)
    rnd.shuffle(keys)
    d = {k: i for i, k in enumerate(keys)}
    path = tmp_path / "words.pf"
    pf.freeze(d, path, ordered=True)
    pf.verify(path)
    view = pf.open(path)
    probes = probes_for(keys, ["internationalizations", "inter", "zzzzzzzzz", "\U0001f600",
                               "b", "internat"])
    check_view(view, d, probes)
    text = "internationalization of the internal interface"
    for start in range(len(text)):
        want = Reference(d).prefixes(text, start)
        assert [k for k, _ in view.prefixes(text, start=start)] == want
        if want:
            assert view.longest_prefix(text, start=start) == (want[-1], d[want[-1]])


# ----------------------------------------------------------------- which containers


def test_only_str_or_bytes_keyed_containers_are_indexed():
    value = {"words": {"b": 1, "a": 2}, "mixed": {"a": 1, 2: 3}, "ints": {3: 1, 1: 2},
             "tags": {b"y", b"x"}, "list": ["b", "a"], "empty": {}, "nested": {"z": {"q": 1, "p": 2}}}
    view = pf.loads(pf.dumps(value, ordered=True))
    assert list(view.sorted_keys()) == sorted(value)
    assert list(view["words"].sorted_keys()) == ["a", "b"]
    assert list(view["tags"].sorted_keys()) == [b"x", b"y"]
    assert list(view["nested"]["z"].keys(prefix="")) == ["p", "q"]
    assert list(view["empty"].sorted_keys()) == []          # empty: in order
    for unindexed in (view["mixed"], view["ints"]):
        with pytest.raises(pf.NoOrderedIndexError, match="ordered=True"):
            unindexed.longest_prefix("a")
        with pytest.raises(pf.NoOrderedIndexError):
            list(unindexed.keys(prefix="a"))
    assert isinstance(pf.NoOrderedIndexError("x"), pf.Error)
    plain = pf.loads(pf.dumps(value))
    for method, args in [("sorted_keys", ()), ("irange", ()), ("bisect_left", ("a",)),
                         ("bisect_right", ("a",)), ("longest_prefix", ("a",)),
                         ("prefixes", ("a",))]:
        with pytest.raises(pf.NoOrderedIndexError):
            r = getattr(plain["words"], method)(*args)
            list(r)
    assert not hasattr(plain["words"], "iter_prefix")


def test_ordered_image_is_version_1_1_and_plain_one_is_1_0():
    import struct
    plain = pf.dumps({"b": 1, "a": 2})
    ordered = pf.dumps({"b": 1, "a": 2}, ordered=True)
    assert struct.unpack_from("<H", plain, 10)[0] == 0
    assert struct.unpack_from("<H", ordered, 10)[0] == 1
    assert struct.unpack_from("<Q", ordered, 16)[0] == 2      # incompat bit 1
    # nothing eligible: nothing ordered, a 1.0 image
    none = pf.dumps([1, {3: 4}, {"a", 1}], ordered=True)
    assert struct.unpack_from("<H", none, 10)[0] == 0 and struct.unpack_from("<Q", none, 16)[0] == 0


def test_dict_signatures_are_kept():
    view = pf.loads(pf.dumps({"b": 1, "a": 2}, ordered=True))
    assert view.keys() == {"a", "b"} and sorted(view.values()) == [1, 2]
    assert view.items() == {("a", 2), ("b", 1)}
    with pytest.raises(TypeError):
        view.keys("a")            # prefix is keyword-only
    with pytest.raises(TypeError):
        view.longest_prefix(b"a")  # a str index
    with pytest.raises(TypeError):
        view.bisect_left(1)
    it = view.keys(prefix="")
    assert iter(it) is it and list(it) == ["a", "b"] and list(it) == []


def test_iterators_are_lazy_and_survive_as_long_as_the_view():
    d = {"k%05d" % i: i for i in range(3000)}
    view = pf.loads(pf.dumps(d, ordered=True))
    it = view.items(prefix="k01")
    assert next(it) == ("k01000", 1000)
    del view
    assert len(list(it)) == 999


def test_start_of_longest_prefix_is_like_a_slice():
    view = pf.loads(pf.dumps({"ab": 1, "b": 2}, ordered=True))
    assert view.longest_prefix("xab", start=1) == ("ab", 1)
    assert view.longest_prefix("xab", start=-2) == ("ab", 1)
    assert view.longest_prefix("xab", start=2) == ("b", 2)
    with pytest.raises(KeyError):
        view.longest_prefix("xab", start=3)
    with pytest.raises(KeyError):
        view.longest_prefix("xab", start=-99)
    assert view.prefixes("ab", start=5) == []
    assert view.longest_prefix("zz", default=None) is None
    assert view.longest_prefix("abc", default=None) == ("ab", 1)
    with pytest.raises(TypeError):
        view.longest_prefix("zz", 0, None)     # default is keyword-only


def test_pickled_and_shared_views_keep_the_order(tmp_path):
    d = {w: i for i, w in enumerate(["pear", "peach", "pea", "apple"])}
    path = tmp_path / "fruit.pf"
    pf.freeze(d, path, ordered=True)
    view = pickle.loads(pickle.dumps(pf.open(path)))
    assert list(view.keys(prefix="pea")) == ["pea", "peach", "pear"]
    shared = pf.share(d, ordered=True)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.map(shared.longest_prefix, ["peaches", "pears", "apples"])
    assert got == [("peach", 1), ("pear", 0), ("apple", 3)]
    assert pf.thaw(shared) == d and list(pf.thaw(shared)) == list(d)


# ----------------------------------------------------------------- the Builder


def _build(path, entries, memory=None, **kw):
    """Writes entries (pairs, in order, equal keys allowed) with
    Builder(ordered=True); returns the dict they make."""
    d = {}
    opts = {"memory": memory} if memory else {}
    with pf.Builder(path, ordered=True, **opts, **kw) as b:
        for k, v in entries:
            b[k] = v
            d[k] = v
    pf.verify(path)
    return d


@given(STR_KEYS, st.lists(st.text(_FEW, max_size=7), max_size=6), st.randoms())
def test_builder_str_keys_differential(tmp_path_factory, keys, extra, rnd):
    """Keys in any order, some written twice (the first place, the last
    value, as a dict): the Builder's view answers as the dict's."""
    rnd.shuffle(keys)
    entries = [(k, i) for i, k in enumerate(keys)]
    entries += [(k, -i) for i, k in enumerate(keys[: len(keys) // 3])]
    path = tmp_path_factory.mktemp("b") / "b.pf"
    d = _build(path, entries)
    check_view(pf.open(path), d, probes_for(list(d), extra + [""]))


@given(BYTES_KEYS, st.randoms())
def test_builder_bytes_keys_differential(tmp_path_factory, keys, rnd):
    rnd.shuffle(keys)
    path = tmp_path_factory.mktemp("b") / "b.pf"
    d = _build(path, [(k, [i]) for i, k in enumerate(keys)])
    check_view(pf.open(path), d, probes_for(list(d), [b""]))


@pytest.mark.parametrize("memory", [1 << 20, 256 << 20])
def test_builder_large_dict_spills_and_answers_as_freeze(tmp_path, memory):
    """60,000 keys in 1 MiB: the keys spill to sorted runs and the body is
    sorted through the scratch file; in 256 MiB, all in memory. Either way
    the view answers as freeze(ordered=True)'s, and the image verifies."""
    import random
    rnd = random.Random(7)
    keys = ["".join(rnd.choice("abc\u00e9\U0001f600") for _ in range(rnd.randint(0, 9))) +
            str(i % 500) for i in range(60000)]
    entries = [(k, (i, "v%d" % (i % 97))) for i, k in enumerate(keys)]
    entries += [(k, "again") for k in keys[::50]]
    path = tmp_path / "big.pf"
    d = _build(path, entries, memory=memory)
    view = pf.open(path)
    ref = pf.loads(pf.dumps(d, ordered=True))
    assert list(view.items()) == list(d.items())
    assert list(view.sorted_keys()) == list(ref.sorted_keys()) == sorted(d)
    probes = probes_for(sorted(d)[::3000], ["", "a", "ab\u00e9", "\U0001f600", "zz"])
    for p in probes:
        assert list(view.items(prefix=p)) == list(ref.items(prefix=p)), p
        assert view.prefixes(p + "123") == ref.prefixes(p + "123"), p
        assert view.bisect_left(p) == ref.bisect_left(p)
    assert list(view.irange("a", "b", inclusive=(False, True), reverse=True)) == \
        list(ref.irange("a", "b", inclusive=(False, True), reverse=True))


def test_builder_keys_in_sorted_order_and_nested_levels(tmp_path):
    """Keys written in sorted order (no permutation stored), nested dict
    levels (ordered too, bytes keys in one), a list root whose items hold
    dicts: every dict of str or bytes keys is ordered, as with freeze."""
    path = tmp_path / "n.pf"
    want = {}
    with pf.Builder(path, ordered=True, memory=1 << 20) as b:
        for i in range(3000):
            b["k%05d" % i] = i
            want["k%05d" % i] = i
        with b.dict("zz nested") as n:
            for k in [b"pear", b"apple", b"peach", b"pea", b"apple"]:
                n[k] = len(k)
        with b.dict("mixed") as m:
            m["a"] = 1
            m[2] = 2
        with b.list("items") as items:
            for i in range(50):
                items.append({"name": "n%d" % i, "age": i, "city": "c"})
        b["set"] = {"y", "x"}
    want["zz nested"] = {b"pear": 4, b"apple": 5, b"peach": 5, b"pea": 3}
    want["mixed"] = {"a": 1, 2: 2}
    want["items"] = [{"name": "n%d" % i, "age": i, "city": "c"} for i in range(50)]
    want["set"] = {"y", "x"}
    pf.verify(path)
    view = pf.open(path)
    assert pf.thaw(view) == want and list(view) == list(want)
    assert list(view.keys(prefix="k0299")) == ["k0299%d" % i for i in range(10)]
    assert list(view["zz nested"].sorted_keys()) == [b"apple", b"pea", b"peach", b"pear"]
    assert list(view["zz nested"]) == [b"pear", b"apple", b"peach", b"pea"]
    assert view["zz nested"].longest_prefix(b"peaches") == (b"peach", 5)
    with pytest.raises(pf.NoOrderedIndexError):
        view["mixed"].longest_prefix("a")
    for i, rec in enumerate(view["items"]):
        assert list(rec.sorted_keys()) == ["age", "city", "name"] and rec["age"] == i
    assert list(view["set"].sorted_keys()) == ["x", "y"]


def test_builder_unordered_cases(tmp_path):
    """Without ordered=True nothing is ordered; a root of int keys, or of
    str and bytes keys, is not ordered (a 1.0 image when nothing is); an
    empty ordered root answers with nothing."""
    import struct
    for entries in ([(1, "a"), (0, "b")], [("a", 1), (b"a", 2)], [("a", 1), (2, 3)]):
        path = tmp_path / "u.pf"
        _build(path, entries)
        with pytest.raises(pf.NoOrderedIndexError):
            pf.open(path).sorted_keys()
        assert struct.unpack_from("<H", path.read_bytes(), 10)[0] == 0
    path = tmp_path / "plain.pf"
    with pf.Builder(path) as b:
        b["b"] = 1
        b["a"] = 2
    with pytest.raises(pf.NoOrderedIndexError):
        pf.open(path).sorted_keys()
    path = tmp_path / "empty.pf"
    _build(path, [])
    assert list(pf.open(path).sorted_keys()) == [] and list(pf.open(path).keys(prefix="")) == []
    with pytest.raises(TypeError):
        pf.Builder(tmp_path / "x.pf", ordered="yes please", memory=[])


def test_builder_list_root_with_ordered_dict_levels(tmp_path):
    path = tmp_path / "l.pf"
    with pf.Builder(path, "list", ordered=True, memory=1 << 20) as b:
        for i in range(3):
            with b.dict() as d:
                for w in ["pear", "apple", "peach", "pea", "apple"][i:]:
                    d[w] = i
        b.append({"y": 1, "x": 2})
    pf.verify(path)
    view = pf.open(path)
    assert [list(d.sorted_keys()) for d in view] == [
        ["apple", "pea", "peach", "pear"], ["apple", "pea", "peach"], ["apple", "pea", "peach"],
        ["x", "y"]]
    assert list(view[0]) == ["pear", "apple", "peach", "pea"]
    assert view[1].longest_prefix("peaches") == ("peach", 1)


def test_builder_level_that_loses_its_order_late(tmp_path):
    """30,000 str keys in 1 MiB (key entries spilled to runs), then an int
    key: the level ends unordered, its hash index made from the key
    entries; keys written again keep their place and take the last value."""
    path = tmp_path / "late.pf"
    entries = [("k%05d" % ((i * 7919) % 30000), i) for i in range(30000)]
    entries += [(7, "an int key"), ("k00003", "again"), ("new", None), ("k29999", "again")]
    d = _build(path, entries, memory=1 << 20)
    view = pf.open(path)
    assert list(view.items()) == list(d.items()) and len(view) == 30002
    assert all(view[k] == v for k, v in d.items())
    with pytest.raises(pf.NoOrderedIndexError):
        view.sorted_keys()
