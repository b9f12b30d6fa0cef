"""Shared helpers of the pytest suite: exact structural comparison, value
strategies, image round trips, and differential checks that run one read
operation on a view and on the original and require the same answer."""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import math
import os
import resource
import signal
import struct
import subprocess
import sys
import textwrap
from collections import Counter

from hypothesis import strategies as st

import permafrost as pf

VIEW_OF = {dict: pf.DictView, list: pf.ListView, set: pf.SetView, frozenset: pf.FrozenSetView}
VIEW_TYPES = tuple(VIEW_OF.values())

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
# How much the loops that are not hypothesis-driven (corruption) do.
SCALE = {"default": 1.0, "ci": 3.0, "sanitize": 0.1}.get(PROFILE, 1.0)


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


# ----------------------------------------------------------------- comparing


def canon(x, _active=None):
    """A hashable description of x that is equal for two values exactly when
    they have the same types everywhere, the same float bits (NaN equals
    NaN, -0.0 differs from 0.0), the same dict order, and equal elements.
    Views are described like the plain type they stand for, so a view and
    its original compare equal here."""
    active = set() if _active is None else _active
    t = type(x)
    for plain_type, view_type in VIEW_OF.items():
        if t is view_type:
            t = plain_type
    if t is float:
        return ("float", struct.pack("<d", x))
    if t is complex:
        return ("complex", struct.pack("<dd", x.real, x.imag))
    if t in (None.__class__, bool, int, str, bytes):
        return (t.__name__, x)
    if t not in (list, tuple, dict, set, frozenset):
        raise TypeError(f"canon: unexpected type {type(x).__name__}")
    if id(x) in active:
        raise ValueError("canon: cyclic value")
    active.add(id(x))
    try:
        if t in (list, tuple):
            return (t.__name__, tuple(canon(e, active) for e in x))
        if t is dict:
            return ("dict", tuple((canon(k, active), canon(v, active)) for k, v in x.items()))
        return (t.__name__, frozenset(Counter(canon(e, active) for e in x).items()))
    finally:
        active.discard(id(x))


def assert_same(a, b) -> None:
    """a and b are the same value, types and float bits included."""
    assert canon(a) == canon(b), f"{a!r} != {b!r}"


def plain(x, _memo=None):
    """x with every view replaced by the plain container it stands for,
    built with nothing but the views' read API (independent of thaw())."""
    memo = {} if _memo is None else _memo  # id -> (source kept alive, copy)
    if id(x) in memo:
        return memo[id(x)][1]
    if isinstance(x, (pf.DictView, dict)):
        out = {}
        memo[id(x)] = (x, out)
        for k, v in x.items():
            out[plain(k, memo)] = plain(v, memo)
        return out
    if isinstance(x, (pf.ListView, list)):
        out = []
        memo[id(x)] = (x, out)
        out.extend(plain(e, memo) for e in x)
        return out
    if isinstance(x, (pf.SetView, set)):
        return set(plain(e, memo) for e in x)
    if isinstance(x, (pf.FrozenSetView, frozenset)):
        return frozenset(plain(e, memo) for e in x)
    if isinstance(x, tuple):
        return tuple(plain(e, memo) for e in x)
    return x


def has_nan(x) -> bool:
    """Whether a NaN sits anywhere in x (then Python's answers depend on
    object identity, which an image cannot keep)."""
    t = type(x)
    if t is float:
        return math.isnan(x)
    if t is complex:
        return math.isnan(x.real) or math.isnan(x.imag)
    if t in (list, tuple, set, frozenset):
        return any(has_nan(e) for e in x)
    if t is dict:
        return any(has_nan(k) or has_nan(v) for k, v in x.items())
    return False


def assert_view_of(view, orig) -> None:
    """view is what an image gives back for orig: a view of the matching
    type for containers, the exact scalar type otherwise, recursively, in
    the original order."""
    t = type(orig)
    if t in VIEW_OF:
        assert type(view) is VIEW_OF[t], f"{type(view).__name__} for a {t.__name__}"
        assert len(view) == len(orig)
        if t is dict:
            pairs = zip(view.items(), orig.items())
            for (vk, vv), (ok, ov) in pairs:
                assert_view_of(vk, ok)
                assert_view_of(vv, ov)
        else:
            for ve, oe in zip(view, orig):
                assert_view_of(ve, oe)
    elif t is tuple:
        assert type(view) is tuple
        assert len(view) == len(orig)
        for ve, oe in zip(view, orig):
            assert_view_of(ve, oe)
    else:
        assert_same(view, orig)


# ----------------------------------------------------------------- outcomes


def outcome(fn):
    """('ok', plain result) or ('err', exception type)."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - the type is the answer
        return ("err", type(e))
    return ("ok", result)


def assert_same_answer(op, view_args, orig_args, what: str, exact_type: bool = True) -> None:
    """op(*view_args) answers what op(*orig_args) answers: an equal result
    of the same type (views counting as the plain type they stand for), or
    an exception of the same type."""
    got = outcome(lambda: op(*view_args))
    want = outcome(lambda: op(*orig_args))
    if want[0] == "err":
        assert got[0] == "err" and issubclass(got[1], want[1]), f"{what}: got {got}, want {want}"
        return
    assert got[0] == "ok", f"{what}: raised {got[1].__name__}, want {want[1]!r}"
    g, w = got[1], want[1]
    if exact_type:
        assert canon(plain(g)) == canon(w), f"{what}: got {g!r}, want {w!r}"
    else:
        assert plain(g) == w, f"{what}: got {g!r}, want {w!r}"


def assert_same_outcome(op, view, orig, what: str, exact_type: bool = True) -> None:
    assert_same_answer(op, (view,), (orig,), what, exact_type)


# ----------------------------------------------------------------- probes

# Keys that trip up an implementation of Python's key equality: the
# int/float/complex/bool families, str vs bytes, containers, huge values.
TRICKY_KEYS = [
    0, 1, -1, True, False, 0.0, -0.0, 1.0, 1 + 0j, 0j, 1.5, 1.5 + 0j, 2 + 3j,
    "a", b"a", "", b"", "1", None, (), (1,), (1.0,), (True,), ("a", b"a"),
    frozenset(), frozenset({1}), frozenset({1.0, "a"}),
    2**63 - 1, -(2**63), 2**63, float(2**63), -(2**63) - 1, 2**64, float(2**64),
    2**200, float(2**200), -(2**200), int(1e300), 1e300, math.inf, -math.inf,
    "é", "\u20ac", "\U0001f600", "\ud800",
]
UNHASHABLE_PROBES = [[], [1], {}, {1: 2}, set(), {1}]


class Unrelated:
    """A hashable type no image stores: never equal to a stored key."""

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return self is other


# ----------------------------------------------------------------- differential checks


def check_view(view, orig, probes=(), other=None) -> None:
    """Every read operation of the spec gives the same answer on the view
    as on the original, recursively into nested containers; `probes` are
    extra hashable keys to look up, `other` another value to compare with.
    orig holds no NaN (with one, Python's answers depend on identity)."""
    assert_view_of(view, orig)
    _check(view, orig, list(probes), other, set())


def _check(view, orig, probes, other, seen):
    if id(orig) in seen:
        return
    seen.add(id(orig))
    t = type(orig)
    if t is dict:
        check_dict(view, orig, probes, other)
        for k in orig:
            _check(view[k], orig[k], probes, None, seen)
    elif t is list:
        check_list(view, orig, probes, other)
        for ve, oe in zip(view, orig):
            _check(ve, oe, probes, None, seen)
    elif t in (set, frozenset):
        check_set(view, orig, probes, other)
    elif t is tuple:
        for ve, oe in zip(view, orig):
            _check(ve, oe, probes, None, seen)


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def check_common(view, orig, other) -> None:
    same = lambda op, what: assert_same_outcome(op, view, orig, what)  # noqa: E731
    same(len, "len")
    same(list, "iteration")
    same(lambda c: list(reversed(c)), "reversed")
    same(lambda c: c.copy(), "copy")
    same(hash, "hash")
    same(bool, "bool")
    assert view == orig and orig == view and not (view != orig) and not (orig != view)
    pairs = [(orig, orig), (view, orig), (list(orig), list(orig)), (tuple(orig), tuple(orig)), (None, None), (0, 0)]
    if other is not None:
        pairs.append((other, other))
    for ov, oo in pairs:
        for name, op in COMPARISONS.items():
            assert_same_answer(op, (view, ov), (orig, oo), f"view {name} {oo!r}")
            assert_same_answer(op, (ov, view), (oo, orig), f"{oo!r} {name} view")
    assert type(view).__name__ in repr(view)


COMPARISONS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def check_dict(view, orig, probes, other=None) -> None:
    check_common(view, orig, other)
    same = lambda op, what: assert_same_outcome(op, view, orig, what)  # noqa: E731
    same(lambda d: list(d.keys()), "keys()")
    same(lambda d: list(d.values()), "values()")
    same(lambda d: list(d.items()), "items()")
    same(lambda d: len(d.keys()), "len(keys())")
    same(lambda d: len(d.items()), "len(items())")
    same(lambda d: list(reversed(d.keys())), "reversed(keys())")
    same(lambda d: list(reversed(d.values())), "reversed(values())")
    same(lambda d: list(reversed(d.items())), "reversed(items())")
    sentinel = object()
    for k in list(orig) + probes + UNHASHABLE_PROBES + [Unrelated()]:
        same(lambda d: k in d, f"{k!r} in")
        same(lambda d: k not in d, f"{k!r} not in")
        same(lambda d: d[k], f"[{k!r}]")
        same(lambda d: d.get(k), f"get({k!r})")
        same(lambda d: d.get(k, sentinel) is sentinel, f"get({k!r}, default)")
        same(lambda d: k in d.keys(), f"{k!r} in keys()")
    for k, v in orig.items():
        same(lambda d: (k, v) in d.items(), f"({k!r}, value) in items()")
        same(lambda d: (k, sentinel) in d.items(), f"({k!r}, other) in items()")
    hashable_probes = [p for p in probes if _hashable(p)]
    some = set(hashable_probes) | set(list(orig)[:2])
    key_pairs = [(orig.keys(), orig.keys()), (view.keys(), orig.keys()), (hashable_probes, hashable_probes),
                 (some, some), (frozenset(some), frozenset(some))]
    for ov, oo in key_pairs:
        for name, op in SET_OPERATORS.items():
            # Which of two equal elements (0 or False) a union keeps is not
            # compared: results are compared with ==.
            assert_same_answer(op, (view.keys(), ov), (orig.keys(), oo), f"keys() {name} {oo!r}", exact_type=False)
            assert_same_answer(op, (ov, view.keys()), (oo, orig.keys()), f"{oo!r} {name} keys()", exact_type=False)
        assert_same_answer(lambda a, b: a.isdisjoint(b), (view.keys(), ov), (orig.keys(), oo),
                           f"keys().isdisjoint({oo!r})")
        for name, op in COMPARISONS.items():
            assert_same_answer(op, (view.keys(), ov), (orig.keys(), oo), f"keys() {name} {oo!r}")
    for name, op in COMPARISONS.items():
        assert_same_answer(op, (view.items(), view.items()), (orig.items(), orig.items()), f"items() {name} items()")
        assert_same_answer(op, (view.items(), orig.items()), (orig.items(), orig.items()), f"items() {name} items()")
    if _hashable(tuple(orig.values())):
        first = set(list(orig.items())[:1])
        for ov, oo in [(orig.items(), orig.items()), (view.items(), orig.items()), (first, first)]:
            for name, op in SET_OPERATORS.items():
                assert_same_answer(op, (view.items(), ov), (orig.items(), oo), f"items() {name} {oo!r}",
                                   exact_type=False)
                assert_same_answer(op, (ov, view.items()), (oo, orig.items()), f"{oo!r} {name} items()",
                                   exact_type=False)
    assert type(view.copy()) is dict
    for name, op in SET_OPERATORS.items():
        assert type(op(view.keys(), orig.keys())) is set, f"keys() {name} keys()"
    if not any(_holds_container(v) for v in orig.values()) and all(
        not isinstance(k, (frozenset, tuple)) for k in orig
    ):
        assert repr(orig) in repr(view)


def _holds_container(v) -> bool:
    """v is, or a tuple holds, a container (which reads back as a view)."""
    if isinstance(v, tuple):
        return any(_holds_container(x) for x in v)
    return isinstance(v, (dict, list, set, frozenset))


SET_OPERATORS = {
    "|": lambda a, b: a | b,
    "&": lambda a, b: a & b,
    "-": lambda a, b: a - b,
    "^": lambda a, b: a ^ b,
}

SLICE_BOUNDS = [None, 0, 1, 2, -1, -2, 3, 100, -100]
SLICE_STEPS = [None, 1, 2, 3, -1, -2, -3, 0, 100]


def check_list(view, orig, probes, other=None) -> None:
    check_common(view, orig, other)
    same = lambda op, what: assert_same_outcome(op, view, orig, what)  # noqa: E731
    n = len(orig)
    for i in range(-n - 2, n + 2):
        same(lambda s: s[i], f"[{i}]")
    for i in [2**70, -(2**70), True, False, 1.0, "0", None]:
        same(lambda s: s[i], f"[{i!r}]")
    for start, stop, step in itertools.product(SLICE_BOUNDS, SLICE_BOUNDS, SLICE_STEPS):
        same(lambda s: s[start:stop:step], f"[{start}:{stop}:{step}]")
    same(lambda s: s[slice(2**70)], "[:2**70]")
    assert type(view[:]) is list
    for e in list(orig) + probes + UNHASHABLE_PROBES:
        same(lambda s: e in s, f"{e!r} in")
        same(lambda s: s.count(e), f"count({e!r})")
        same(lambda s: s.index(e), f"index({e!r})")
        same(lambda s: s.index(e, 1), f"index({e!r}, 1)")
        same(lambda s: s.index(e, -2, -1), f"index({e!r}, -2, -1)")
    add = lambda a, b: a + b  # noqa: E731
    for ov, oo in [([], []), ([0], [0]), (orig, orig), (view, orig), ((), ()), (None, None)]:
        assert_same_answer(add, (view, ov), (orig, oo), f"+ {oo!r}")
    for ov, oo in [([], []), ([0], [0]), (orig, orig)]:
        assert_same_answer(add, (ov, view), (oo, orig), f"{oo!r} +")
    for k in [0, 1, 2, -1, True]:
        same(lambda s: s * k, f"* {k}")
        same(lambda s: k * s, f"{k} *")
    same(lambda s: s * 1.5, "* 1.5")
    assert type(view * 1) is list and type(view + []) is list
    if all(not isinstance(e, (dict, list, set, frozenset, tuple)) for e in orig):
        assert repr(orig) in repr(view)


SET_METHODS = ["issubset", "issuperset", "isdisjoint", "union", "intersection", "difference", "symmetric_difference"]


def check_set(view, orig, probes, other=None) -> None:
    check_common(view, orig, other)
    same = lambda op, what: assert_same_outcome(op, view, orig, what)  # noqa: E731
    # (A set argument, looked up as a frozenset, has its own test in test_api.)
    for e in list(orig) + probes + [p for p in UNHASHABLE_PROBES if type(p) is not set] + [Unrelated()]:
        same(lambda s: e in s, f"{e!r} in")
        same(lambda s: e not in s, f"{e!r} not in")
    hashable_probes = [p for p in probes if _hashable(p)]
    half = set(list(orig)[: len(orig) // 2])
    pairs = [(set(), set()), (half, half), (frozenset(half | set(hashable_probes)),) * 2, (orig, orig),
             (set(orig), set(orig)), (frozenset(orig), frozenset(orig)), (view, orig),
             (hashable_probes, hashable_probes), ([[]], [[]])]
    if other is not None:
        pairs.append((other, other))
    for ov, oo in pairs:
        for name in SET_METHODS:
            assert_same_answer(lambda a, b: getattr(a, name)(b), (view, ov), (orig, oo), f"{name}({oo!r})",
                               exact_type=False)
        for name, op in {**SET_OPERATORS, **COMPARISONS}.items():
            assert_same_answer(op, (view, ov), (orig, oo), f"set {name} {oo!r}", exact_type=False)
            # Reflected: the left operand decides the result type.
            assert_same_answer(op, (ov, view), (oo, orig), f"{oo!r} {name} set", exact_type=False)
    for name in ("union", "intersection", "difference", "symmetric_difference"):
        result = getattr(view, name)(half) if name == "symmetric_difference" else getattr(view, name)()
        assert type(result) is type(orig), f"{name}() gives {type(result).__name__}"
    for name, args in [("union", (half, hashable_probes)), ("intersection", (half, orig)),
                       ("difference", (half, hashable_probes))]:
        assert_same_outcome(lambda s: getattr(s, name)(*args), view, orig, f"{name}(a, b)", exact_type=False)
    for name, op in SET_OPERATORS.items():
        assert type(op(view, half)) is type(orig), f"view {name} set gives {type(op(view, half)).__name__}"
    if isinstance(orig, frozenset):
        assert hash(view) == hash(orig)
        assert {view: 1}[orig] == 1 and {orig: 1}[view] == 1
    if all(not isinstance(e, (frozenset, tuple)) for e in orig):
        assert repr(orig) in repr(view)


# ----------------------------------------------------------------- strategies


def texts(**kw):
    return st.one_of(
        st.text(st.characters(max_codepoint=0x7F), **kw),
        st.text(st.characters(max_codepoint=0xFF), **kw),
        st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=()), **kw),
        st.text(st.characters(exclude_categories=()), **kw),  # lone surrogates included
        st.text(st.characters(max_codepoint=0x7F), min_size=120, max_size=300),
    )


def ints():
    return st.one_of(
        st.integers(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.sampled_from([0, 1, -1, 127, 128, -128, -129, 255, 256, 2**31, 2**63 - 1, -(2**63), 2**63,
                         -(2**63) - 1, 2**64, 2**200, -(2**200)]),
    )


def floats(allow_nan: bool):
    special = [0.0, -0.0, math.inf, -math.inf, 5e-324, 1.5, float(2**63), float(2**64)]
    if allow_nan:
        special.append(math.nan)
    # Short decimals (0.1, 12.75, -3e-7...), which a writer may store in a
    # decimal form, must come back with their exact bits too.
    decimals = st.builds(lambda m, e: m / 10**e, st.integers(-(10**15), 10**15), st.integers(0, 20))
    return st.one_of(st.floats(allow_nan=allow_nan), st.sampled_from(special), decimals)


def scalars(allow_nan: bool = True):
    return st.one_of(
        st.none(),
        st.booleans(),
        ints(),
        floats(allow_nan),
        st.complex_numbers(allow_nan=allow_nan),
        texts(),
        st.binary(),
        st.binary(min_size=100, max_size=300),
    )


def hashables(allow_nan: bool = True):
    # deferred: keeps the strategy's repr (printed on failures) short.
    return st.deferred(lambda: _hashables(allow_nan))


def values(allow_nan: bool = True, max_leaves: int = 40):
    """Nested values of every supported type."""
    return st.deferred(lambda: _values(allow_nan, max_leaves))


def _hashables(allow_nan: bool = True):
    """Keys: scalars, tuples of keys and frozensets of keys, with the
    1 / 1.0 / True / 1+0j family and str / bytes look-alikes often drawn."""
    base = st.one_of(
        scalars(allow_nan),
        st.sampled_from([0, 1, True, False, 1.0, 0.0, -0.0, 1 + 0j, "a", b"a", "", b"", 2**64, float(2**64)]),
    )
    return st.recursive(
        base,
        lambda inner: st.one_of(st.lists(inner, max_size=4).map(tuple), st.frozensets(inner, max_size=4)),
        max_leaves=6,
    )


def _values(allow_nan: bool, max_leaves: int):
    keys = hashables(allow_nan)

    def containers(inner):
        return st.one_of(
            st.lists(inner, max_size=12),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(keys, inner, max_size=6),
            st.dictionaries(keys, inner, min_size=9, max_size=20),  # with a slot table
            st.sets(keys, max_size=12),
            st.frozensets(keys, max_size=12),
        )

    return st.recursive(scalars(allow_nan), containers, max_leaves=max_leaves)


# ----------------------------------------------------------------- images


class Roundtrip:
    """Produces the root an image gives for a value, through a file
    (freeze + open) or a buffer (dumps + loads). Every image made passes
    the full check (Image.verify) first."""

    def __init__(self, folder):
        self.folder = folder
        self.counter = itertools.count()

    def __call__(self, x, backend: str):
        if backend == "buffer":
            image = pf.Image.from_buffer(pf.dumps(x))
        else:
            path = os.path.join(self.folder, f"rt{next(self.counter)}.pf")
            pf.freeze(x, path)
            try:
                image = pf.Image(path)
            finally:
                os.unlink(path)  # the mapping outlives the name
        stats = image.verify()
        assert stats["values"] >= 1 and stats["checksums"] >= 1, stats
        return image.root


MEMORY_LIMIT = 4 << 30


def run_isolated(code: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter that imports what this one does,
    so that a crash, a hang or a runaway allocation fails one test instead
    of the whole run. Memory is capped at MEMORY_LIMIT (through ASan's own
    limit when the sanitizer runtime is preloaded: it needs the address
    space)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    if "asan" in env.get("LD_PRELOAD", ""):
        opts = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = f"{opts}:hard_rss_limit_mb={MEMORY_LIMIT >> 20}".lstrip(":")
        preexec = None
    else:
        def preexec():
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, preexec_fn=preexec, **kw)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fails the block if it runs longer than `seconds`: a SIGALRM raises
    TimeoutError in Python code; if native code never returns, faulthandler
    dumps the stacks and ends the process after 3x the time (a hang must
    not pass silently)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds * 3 + 5, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        faulthandler.cancel_dump_traceback_later()
