"""The value cache (docs/DECISIONS.md, "The value cache"): values that dict
lookups return are kept per process, on (image, offset), so that a key
looked up again gives the same object back; bounded by set_limits(
value_cache=), emptied of an image's entries when its mapping goes, and
never confusing two images."""

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import permafrost as pf
from permafrost import _binding

DEFAULT = pf.set_limits()["value_cache"]


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts from an empty cache with the default budget."""
    pf.set_limits(value_cache=0)
    pf.set_limits(value_cache=DEFAULT)
    yield
    pf.set_limits(value_cache=0)
    pf.set_limits(value_cache=DEFAULT)


def entries():
    return _binding._value_cache_info()[1]


VALUES = {"int": 10**12, "neg": -77, "float": 1.25, "str": "word", "tuple": (1, 2.5, "x"),
          "none": None, "list": [1, 2], "dict": {"a": 1}, "long str": "y" * 300,
          "unicode": "\u20ac uro", "big int": 2**100, "nested": (1, (2, 3))}


def test_a_key_looked_up_again_gives_the_same_object():
    view = pf.loads(pf.dumps(VALUES))
    for k, want in VALUES.items():
        assert view[k] == want and view.get(k) == want and view.get(k, 5) == want
    for k in ("int", "neg", "float", "str", "tuple"):
        assert view[k] is view[k] and view.get(k) is view[k], k
    # views are made anew on every access, as before
    assert view["list"] is not view["list"] and view["list"] == [1, 2]
    assert entries() == 5


def test_images_never_share_entries():
    """Equal layouts, other values, the same offsets: each image answers
    with its own; and an image made where a released one was (its address
    reused) finds none of the old entries."""
    def table(i):
        return {"a": 1000 + i, "b": "v%d" % i, "c": (i, 0.5, "w%d" % i)}

    # 400 live images: their entries meet in the cache's sets
    views = [pf.loads(pf.dumps(table(i))) for i in range(400)]
    for _ in range(3):
        for i, v in enumerate(views):
            for k in "abc":
                assert v[k] == table(i)[k], (i, k)
    del views
    gc.collect()
    for i in range(3, 60):
        v = pf.loads(pf.dumps(table(i)))
        for _ in range(2):
            assert [v[k] for k in "abc"] == [table(i)[k] for k in "abc"], i
        del v
        gc.collect()


def test_entries_go_with_the_mapping(tmp_path):
    path = tmp_path / "t.pf"
    pf.freeze({"k%d" % i: (i, "s") for i in range(100)}, path)
    image = pf.Image(path)
    view = image.root
    for k in view:
        view[k]
    assert entries() == 100
    image.close()  # the view still reads, and its entries stay
    assert view["k5"] == (5, "s") and entries() == 100
    del view, image
    gc.collect()
    assert entries() == 0


def test_the_budget_bounds_the_cache():
    table = {"k%d" % i: (i, float(i), "s%d" % i) for i in range(3000)}
    view = pf.loads(pf.dumps(table))
    assert pf.set_limits(value_cache=20_000)["value_cache"] == 20_000
    for rep in range(3):
        for i, k in enumerate(table):
            assert view[k] == table[k]
            if i % 100 == 0:
                assert _binding._value_cache_info()[0] <= 20_000
    used, n = _binding._value_cache_info()
    assert 0 < used <= 20_000 and 0 < n < 300
    pf.set_limits(value_cache=0)
    assert _binding._value_cache_info() == (0, 0)
    assert all(view[k] == v for k, v in table.items())
    assert _binding._value_cache_info() == (0, 0)
    assert view["k1"] is not view["k1"]  # a new tuple each time
    with pytest.raises(ValueError):
        pf.set_limits(value_cache=2**41)
    with pytest.raises(OverflowError):
        pf.set_limits(value_cache=-1)


def test_a_scan_of_a_big_table_does_not_fill_the_cache():
    """Lookups that never repeat stop using the cache after a window of
    4096 (and try it again after 127 more): a pass over 200,000 keys
    leaves a few windows' worth of entries, not a full cache."""
    table = dict.fromkeys(("k%d" % i for i in range(200_000)), 10**9)
    table.update((k, i + 10**9) for i, k in enumerate(table))
    view = pf.loads(pf.dumps(table))
    for k in table:
        view[k]
    assert entries() <= 3 * 4096


@settings(max_examples=60, deadline=None)
@given(tables=st.lists(st.dictionaries(st.sampled_from("abcdefgh"),
                                       st.one_of(st.integers(), st.floats(allow_nan=False),
                                                 st.text(max_size=5),
                                                 st.tuples(st.integers(), st.text(max_size=3))),
                                       min_size=1), min_size=2, max_size=4),
       picks=st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abcdefgh")), max_size=80))
def test_lookups_across_images_answer_as_the_dicts(tables, picks):
    views = [pf.loads(pf.dumps(t)) for t in tables]
    for i, k in picks:
        i %= len(tables)
        assert views[i].get(k, "absent") == tables[i].get(k, "absent")
        if k in tables[i]:
            assert views[i][k] == tables[i][k]


def test_lookups_answer_as_the_dict_once_the_cache_gave_up():
    """After a window without hits, lookups decode on dict_value's own
    inlined path: every kind of value (the quick ones and those that fall
    back to the general decode) must still answer as the dict does."""
    kinds = [0, 1, -1, 127, -129, 2**31, -(2**40), 2**63 - 1, -(2**63), 2**64, -(2**100),
             1.5, 0.1, -2.75, 1e300, float("inf"), 123456.789,
             "", "w", "word", "word", "word", "x" * 40, "x" * 300, "\u20ac", "a\udc80",
             None, True, False, b"bytes",
             (1, 2.5, "word"), (1, 2.5, "word"), (None, True), ("x" * 300,), (1, [2]),
             ((1, 2), 3), (), (1, 2, 3, 4, 5, 6, 7), tuple(range(8)),
             [1, 2], {"a": 1}, {1, 2}, frozenset({3})]
    table = {"key%06d" % i: kinds[i % len(kinds)] for i in range(20_000)}
    table["last"] = 5  # an int at the very end of the data, in its last bytes
    view = pf.loads(pf.dumps(table))
    for k in table:      # no key repeats: the cache gives up after a window
        view[k]
    assert entries() <= 2 * 4096
    for k, want in table.items():
        got = view[k]
        assert type(got) is type(want) or not isinstance(want, (int, float, str, tuple)), k
        if isinstance(want, float) and want != want:
            assert got != got
        else:
            assert got == want, k
        assert view.get(k) == want
