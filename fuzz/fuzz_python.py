#!/usr/bin/env python3
"""The Python layer under fuzzed images: ``loads(bytes)``, then ``thaw()``
and the operations a user's code does on views (len, iteration, lookups by
the keys found, ``in``, indexing and slicing, ``==``, ``repr``, ``hash``,
pickling), each allowed to fail only with permafrost's own errors (and the
KeyError / IndexError a lookup may give). An image that passes
``permafrost.verify`` must also read back whole: ``thaw()`` succeeds and
every view answers what its thawed copy answers.

    python fuzz/fuzz_python.py [atheris options] [CORPUS_DIR ...]
        with atheris installed (pip install atheris): coverage-guided
        fuzzing of the Python code (the C extension is not instrumented
        for it; the libFuzzer targets cover the C core)
    python fuzz/fuzz_python.py --mutate N [--seed S] [CORPUS_DIR ...]
        no atheris needed: every corpus file, then N seeded mutations of
        each (truncations, byte flips, spliced runs, the header check
        recomputed so that mutations reach past it); prints the count

A crash ends the process (a signal, non-zero status); a broken invariant
raises AssertionError with the input saved to fuzz-python-failure.bin.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import struct
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))

import permafrost as pf  # noqa: E402
from helpers_format import header_check  # noqa: E402

MAGIC = b"\x89PFROST\n"
DEFAULT_CORPUS = os.path.join(_HERE, "corpus", "read")
WORK = 400            # view operations per input
LOOKUP = (KeyError, IndexError)

VIEWS = (pf.DictView, pf.ListView, pf.SetView, pf.FrozenSetView)
STATS = {"opened": 0, "verified": 0}


def recheck(data: bytes) -> bytes:
    """data with its header check recomputed (when it has a header)."""
    if len(data) < 128 or data[:8] != MAGIC:
        return data
    return data[:120] + struct.pack("<Q", header_check(data)) + data[128:]


class Budget:
    def __init__(self, n):
        self.n = n

    def spend(self):
        self.n -= 1
        return self.n >= 0


def same(a, b) -> bool:
    """a == b, with NaN equal to itself (at the top level)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        if a == b:
            return True
    except (pf.Error, RecursionError):
        return True  # a comparison that ran out of budget or depth says nothing
    # Objects whose class compares by identity: two reads are two instances.
    return type(a) is type(b) and type(a).__eq__ is object.__eq__ and repr(a) == repr(b)


def poke(v, budget: Budget, depth: int = 0) -> None:
    """The operations of user code on a view, any result but a crash or
    an unexpected exception type."""
    if depth > 30 or not budget.spend() or not isinstance(v, VIEWS):
        return
    for op in (len, repr, lambda x: x == x, lambda x: list(reversed(x)) if isinstance(x, pf.ListView) else None):
        try:
            op(v)
        except (pf.Error, RecursionError):
            pass
    if isinstance(v, pf.FrozenSetView):
        try:
            hash(v)
        except (pf.Error, RecursionError, TypeError):
            pass
    try:
        pickle.loads(pickle.dumps(v))
    except (pf.Error, pickle.PicklingError, TypeError, AttributeError):
        pass  # a view of a buffer image does not pickle by reference
    try:
        if isinstance(v, pf.DictView):
            for k, val in v.items():
                if not budget.spend():
                    return
                try:
                    v[k]
                    _ = k in v
                    v.get(k, None)
                except LOOKUP:
                    pass  # a damaged table may not find its own key
                poke(val, budget, depth + 1)
                poke(k, budget, depth + 1)
            for probe in (0, 1, -1, "", "a", b"a", None, 2**70, 1.5, (1, "a")):
                _ = probe in v
                v.get(probe)
        elif isinstance(v, pf.ListView):
            n = len(v)
            for i in (0, 1, -1, n // 2, n, -n - 1, 2**63):
                try:
                    poke(v[i], budget, depth + 1)
                except IndexError:
                    pass
            v[1:5]
            v[::-3]
            for item in v:
                if not budget.spend():
                    return
                poke(item, budget, depth + 1)
        else:
            for item in v:
                if not budget.spend():
                    return
                _ = item in v
                poke(item, budget, depth + 1)
            for probe in (0, "a", (1,), frozenset()):
                _ = probe in v
    except (pf.Error, RecursionError):
        pass


# The objects of the corpus (fuzz/make_corpus.py) are of these standard
# classes; a reader allows them, never pickles (a mutated pickle may run
# any code) and never trust=True (a mutated name may name any class).
TRUST = pf._objects.make_trust(["fractions", "datetime", "uuid", "types:SimpleNamespace",
                                "functools:partial", "builtins:len", "builtins:max",
                                "posixpath:join", "ntpath:join"])
# Refusals of what a reader did not allow: not corruption, a verified
# image may hold them.
REFUSED = (pf.ClassNotAllowedError, pf.ClassNotFoundError, pf.PickleNotAllowedError,
           pf.ObjectStateError)


def check_verified(root, budget: Budget) -> None:
    """An image that passed verify reads back whole and its views agree
    with their thawed copies (unless it names a class not allowed)."""
    try:
        plain = pf.thaw(root)
    except REFUSED:
        return
    if isinstance(root, pf.DictView):
        assert len(root) == len(plain)
        for k in list(plain)[:200]:
            assert same(pf.thaw(root[k]), plain[k]), k
    elif isinstance(root, pf.ListView):
        assert len(root) == len(plain)
        for i in range(min(len(plain), 200)):
            assert same(pf.thaw(root[i]), plain[i]), i
    elif isinstance(root, (pf.SetView, pf.FrozenSetView)):
        assert len(root) == len(plain)
        for k in list(plain)[:200]:
            assert k in root


def exercise(data: bytes) -> None:
    for buf in {data, recheck(data)}:
        try:
            image = pf.Image.from_buffer(buf)
            pf._binding._set_trust(image, TRUST)
            root = image.root
        except (pf.Error, RecursionError):
            continue
        STATS["opened"] += 1
        ok = False
        try:
            image.verify()
            ok = True
        except (pf.Error, RecursionError):
            pass
        if ok:
            STATS["verified"] += 1
            check_verified(root, Budget(WORK))
        try:
            pf.thaw(root)
        except (pf.Error, RecursionError):
            pass
        poke(root, Budget(WORK))


def corpus_files(dirs):
    for d in dirs:
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    yield name, f.read()


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        if kind == 0 and b:                       # truncate
            del b[rng.randrange(len(b)):]
        elif kind == 1 and b:                     # flip a byte
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
        elif kind == 2 and b:                     # an interesting value
            i = rng.randrange(len(b))
            b[i] = rng.choice([0, 1, 0x03, 0x07, 0x18, 0x20, 0x21, 0x7F, 0x80, 0xFF])
        elif kind == 3 and len(b) > 8:            # copy a run elsewhere
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            n = rng.randint(1, 16)
            b[j:j + n] = b[i:i + n]
        elif kind == 4 and len(b) > 136:          # a 64-bit field of the header
            off = rng.choice([48, 56, 64, 72, 80])
            b[off:off + 8] = struct.pack("<Q", rng.choice([0, 1, 127, 128, len(b), len(b) + 1, 2**63]))
    return bytes(b)


def run_mutations(dirs, n: int, seed: int) -> int:
    rng = random.Random(seed)
    count = 0
    for name, data in corpus_files(dirs):
        for i in range(n + 1):
            buf = data if i == 0 else mutate(data, rng)
            try:
                exercise(buf)
            except BaseException:
                with open("fuzz-python-failure.bin", "wb") as f:
                    f.write(buf)
                print(f"failure on a mutation of {name} (saved to fuzz-python-failure.bin)",
                      file=sys.stderr)
                raise
            count += 1
    return count


def main(argv) -> int:
    if "--mutate" in argv:
        i = argv.index("--mutate")
        n = int(argv[i + 1])
        rest = argv[:i] + argv[i + 2:]
        seed = 1
        if "--seed" in rest:
            j = rest.index("--seed")
            seed = int(rest[j + 1])
            rest = rest[:j] + rest[j + 2:]
        dirs = rest or [DEFAULT_CORPUS]
        count = run_mutations(dirs, n, seed)
        print(f"fuzz_python: {count} inputs exercised ({STATS['opened']} images opened, "
              f"{STATS['verified']} passed verify), no failure")
        return 0
    import atheris  # noqa: E402 - only for coverage-guided runs

    def test_one_input(data: bytes) -> None:
        exercise(bytes(data))

    if not any(not a.startswith("-") for a in argv):
        argv = argv + [DEFAULT_CORPUS]
    # Coverage of the Python code (permafrost's layer, this harness, the
    # view classes' Python parts): the feedback that guides the mutations.
    atheris.instrument_all()
    atheris.Setup([sys.argv[0]] + argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
