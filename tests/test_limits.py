"""The work budget: an image that shares one structure exponentially many
times over cannot make ==, != or repr() of its views run for ever; thaw()
copies each shared container once; structures without sharing never meet
the budget, even at its tightest."""

from __future__ import annotations

import time

import pytest

import permafrost as pf


@pytest.fixture(autouse=True)
def default_limits():
    before = pf.set_limits()
    yield
    pf.set_limits(**before)


def _exponential(depth):
    """A list whose items are the previous level twice (2^depth paths)."""
    x = []
    for _ in range(depth):
        x = [x, (x,), {"k": x}]
    return x


@pytest.mark.parametrize("op", ["==", "!=", "repr", "== plain", "dict =="])
def test_amplification_is_stopped(op):
    data = pf.dumps(_exponential(80))
    assert len(data) < 10_000
    a, b = pf.loads(data), pf.loads(data)
    start = time.monotonic()
    with pytest.raises(pf.LimitError, match="work budget"):
        if op == "==":
            a == b  # noqa: B015
        elif op == "!=":
            a != b  # noqa: B015
        elif op == "repr":
            repr(a)
        elif op == "== plain":
            _exponential(80) == a  # noqa: B015 - reflected to the view
        else:
            d = pf.loads(pf.dumps({"a": 1, "b": _exponential(80)}))
            d == {"a": 1, "b": b}  # noqa: B015
    assert time.monotonic() - start < 30
    # Nothing is left half-done: the same views still answer.
    assert len(a) == 3 and a[0] == a[1][0]


def test_thaw_copies_each_shared_container_once():
    root = pf.loads(pf.dumps(_exponential(80)))
    copy = pf.thaw(root)
    assert copy[0] is copy[1][0] is copy[2]["k"]
    assert len(copy) == 3


def test_structures_without_sharing_never_meet_the_budget():
    pf.set_limits(work_factor=1, work_base=0)  # the tightest budget
    flat = list(range(100_000))
    nested = {f"k{i}": [i, (i, str(i)), {"x": [i] * 3}] for i in range(20_000)}
    for x in (flat, nested, [[[[[]]]]], {1, 2, 3}):
        a, b = pf.loads(pf.dumps(x)), pf.loads(pf.dumps(x))
        assert a == b and not (a != b) and a == x
        assert repr(a).startswith(type(a).__name__)


def test_set_limits_checks_and_reports():
    cache = 2 << 20
    assert pf.set_limits() == {"work_factor": 16, "work_base": 1_000_000, "value_cache": cache}
    assert pf.set_limits(work_base=5) == {"work_factor": 16, "work_base": 5, "value_cache": cache}
    assert pf.set_limits(work_factor=3) == {"work_factor": 3, "work_base": 5, "value_cache": cache}
    with pytest.raises(ValueError):
        pf.set_limits(work_factor=0)
    with pytest.raises(OverflowError):
        pf.set_limits(work_base=-1)
    assert pf.set_limits() == {"work_factor": 3, "work_base": 5, "value_cache": cache}
