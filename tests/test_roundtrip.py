"""Differential round trips: for generated values x, the root an image
gives back (file: freeze + open; buffer: dumps + loads) thaws to exactly x,
and every read operation on it answers what the same operation on x
answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import permafrost as pf
from helpers import (
    TRICKY_KEYS,
    Roundtrip,
    assert_same,
    assert_view_of,
    check_view,
    hashables,
    has_nan,
    scalars,
    values,
)

BACKENDS = ["file", "buffer"]


@pytest.fixture(scope="module")
def roundtrip(module_dir):
    return Roundtrip(module_dir)


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=scalars())
def test_scalar_roundtrip(roundtrip, backend, x):
    root = roundtrip(x, backend)
    assert_same(root, x)  # the real type, the same value (float bits included)


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=values())
def test_thaw_is_identity(roundtrip, backend, x):
    """NaN anywhere included: thaw gives back the same structure, types,
    order and float bits."""
    root = roundtrip(x, backend)
    assert_view_of(root, x)
    thawed = pf.thaw(root)
    assert_same(thawed, x)
    if not has_nan(x):
        assert thawed == x


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    x=values(allow_nan=False),
    probes=st.lists(hashables(allow_nan=False), max_size=4),
    other=values(allow_nan=False, max_leaves=8),
)
def test_view_answers_like_original(roundtrip, backend, x, probes, other):
    root = roundtrip(x, backend)
    check_view(root, x, probes + TRICKY_KEYS, other)


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=values(allow_nan=False), y=values(allow_nan=False))
def test_views_compare_like_originals(roundtrip, backend, x, y):
    vx, vy = roundtrip(x, backend), roundtrip(y, backend)
    vx2 = roundtrip(x, backend)  # another image of the same value
    assert (vx == vx2) and not (vx != vx2)
    assert (vx == vy) == (x == y)
    assert (vx != vy) == (x != y)
    assert (vx == y) == (x == y)
    assert (y == vx) == (y == x)


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    keys=st.lists(hashables(allow_nan=False), max_size=30, unique_by=lambda k: k),
    probes=st.lists(hashables(allow_nan=False), max_size=10),
)
def test_dict_keys_follow_python_equality(roundtrip, backend, keys, probes):
    """Every key a dict finds (or not), the view finds (or not), with the
    value of the key that Python's equality picks."""
    d = {}
    for i, k in enumerate(keys):
        d[k] = i
    view = roundtrip(d, backend)
    for k in keys + probes + TRICKY_KEYS:
        assert (k in view) == (k in d), k
        assert view.get(k, -1) == d.get(k, -1), k
    s = set(keys)
    sview = roundtrip(s, backend)
    fview = roundtrip(frozenset(s), backend)
    for k in keys + probes + TRICKY_KEYS:
        assert (k in sview) == (k in s) == (k in fview), k


@pytest.mark.parametrize("n", [0, 1, 8, 9, 17, 100, 1000, 5000])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dict_sizes(roundtrip, backend, n):
    """Scanned (<= 8 records) and slotted dicts of growing size, so the
    slot table goes through its 2- and 4-byte widths."""
    d = {f"key{i}": i for i in range(n)}
    d.update({i: str(i) for i in range(n)})
    d.update({(i, "t"): -i for i in range(0, n, 7)})
    view = roundtrip(d, backend)
    assert len(view) == len(d)
    for k, v in d.items():
        assert view[k] == v
    for k in [f"key{n}", n, (n, "t"), -1, "key", (1, "u")]:
        assert k not in view
        with pytest.raises(KeyError):
            view[k]
    assert list(view.items()) == list(d.items())
    s = set(d)
    sview = roundtrip(s, backend)
    assert all(k in sview for k in s)
    assert f"key{n}" not in sview
    assert sview == s
