#!/usr/bin/env python3
"""The ordered key index (issue 5): permafrost's sorted index against
marisa-trie and a pure-Python dict-of-dicts trie, on a gazetteer-like set of
words and phrases, in one run.

    python bench/ordered.py [--size 2000000] [--repeat 5] [--build-repeat 3]
                            [--workers 2] [--quick] [--out bench/results]
                            [--seed 0] [--tmpdir DIR]

Prints a Markdown table (figure; permafrost, marisa-trie, Python trie; the
ratios between them; target; PASS/FAIL) and writes it, with the machine
description and notes, to OUT/ordered-<date>-<time>.md. Timings are medians
of repeats, and every figure is compared with the others measured in the
same run (shared, noisy machines: no timing is asserted). The exit status is
1 only if an answer was wrong: every answer of every contender is checked
against a plain-Python reference (the dict, and its keys sorted) before the
timings.

The three contenders:
- permafrost: freeze(d, path, ordered=True), then open(path); the view's
  keys(prefix=), items(prefix=), longest_prefix(s, start=), prefixes(s,
  start=) and view[k].
- marisa-trie: RecordTrie("<I") mapping each key to its int value, saved to a
  file and mmap()ed (keys(p), items(p), prefixes(s), trie[k]).
- a Python trie (DictTrie below): nested dicts, one per character, the value
  under the end marker "" in the node where a key ends; built from the keys
  in sorted order, so that walking a node's dict in insertion order gives
  the keys sorted (as permafrost gives them).

Sections:
1. build: freeze(ordered=True) (and freeze without the index, for the
   index's cost) vs RecordTrie build + save vs the Python trie (sort + insert).
2. size: the image vs marisa's file (and the Python trie's pickle and RSS);
   the index overhead = (image with the index - image without) / the keys'
   UTF-8 bytes (target: at most 30%).
3. exact lookup of a random sample of keys (fresh str objects), against the
   plain dict.
4. prefix enumeration for prefixes that have 50..200 keys under them: per
   query and per result (keys; and items).
5. longest-prefix scan of a ~100k-character text at every word start, and
   one 20-character query (target: under 1 us); also every prefix of the
   text at each word start.
6. summed PSS of WORKERS spawn processes that each look up every key:
   permafrost workers open the image, marisa workers mmap its file, Python
   trie workers each pickle.load their own copy.

Until this permafrost accepts ordered=True, the permafrost rows that need
the index say so and are skipped (lookups and PSS then use an image without
it); the rest of the run goes on.
"""

import argparse
import bisect
import datetime
import gc
import itertools
import multiprocessing
import os
import pickle
import random
import sys
import tempfile
import textwrap
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import datasets  # noqa: E402
import memory  # noqa: E402
from run import _loadavg, log, verdict  # noqa: E402

try:
    import marisa_trie
except ImportError:  # pragma: no cover - the bench extra installs it
    marisa_trie = None

QUICK_SIZE = 50_000
LOOKUPS = 100_000               # keys per lookup pass (a random sample)
PREFIX_QUERIES = 1_000          # prefixes per enumeration pass
PREFIX_MIN, PREFIX_MAX = 50, 200  # keys under each of those prefixes
TEXT_CHARS = 100_000            # the text of the longest-prefix scan
QUERY_CHARS = 20                # the single longest-prefix query
QUERY_CALLS = 20_000            # calls per pass of that query
QUERY_WINDOWS = 300             # different 20-character queries, each timed alone
QUERY_WINDOW_CALLS = 300        # calls per pass of each of them
OVERHEAD_TARGET = 0.30          # (ordered image - plain image) / key bytes, at most
QUERY_TARGET_NS = 1_000         # one 20-character longest_prefix, under
RECORD_FORMAT = "<I"            # marisa RecordTrie: one unsigned 32-bit int per key
MARISA_NAME = 'marisa-trie RecordTrie("%s")' % RECORD_FORMAT

# ------------------------------------------------------------------ dataset
# Words come from datasets._vocabulary (pronounceable words and codes like
# "EU-42"), some with an accented letter (so that UTF-8 bytes and code
# points differ); keys are those words plus phrases of 1..3 of them (Zipf-
# drawn, so that common words head many phrases), a third led by a place
# word ("lake", "saint"...), some ending in a number: a gazetteer-like mix.

PLACE_WORDS = ("lake", "mount", "saint", "port", "new", "north", "south", "east",
               "west", "san", "santa", "fort", "river", "upper", "lower", "great",
               "little", "cape", "isla", "bad", "sankt", "villa", "monte", "glen", "bay")
ACCENTED = {"a": "áàâäå", "e": "éèêë", "i": "íî", "o": "óôöø", "u": "úüû",
            "n": "ñ", "c": "ç", "s": "ş"}
NOISE_LETTERS = "abcdefghijklmnopqrstuvwxyz"
PUNCTUATION = ",.;:!?)"


def make_keys(n, seed):
    """(keys, words): `n` distinct keys in random order, and the words they
    are made of. Same n and seed -> the same keys, in every process."""
    rng = random.Random(seed)
    words, seen = [], set()
    for w in datasets._vocabulary(rng, max(1_000, n // 8)):
        if rng.random() < 0.08:
            spots = [i for i, ch in enumerate(w) if ch in ACCENTED]
            if spots:
                i = rng.choice(spots)
                w = w[:i] + rng.choice(ACCENTED[w[i]]) + w[i + 1:]
        if w not in seen:
            seen.add(w)
            words.append(w)
    cum = datasets._zipf_cum_weights(len(words), 1.0)
    keys = words[:n]
    while len(keys) < n:
        drawn = iter(rng.choices(words, cum_weights=cum, k=3 * 4096))
        for _ in range(4096):
            parts = [rng.choice(PLACE_WORDS)] if rng.random() < 0.3 else []
            parts.extend(next(drawn) for _ in range(rng.choices((1, 2, 3), (45, 40, 15))[0]))
            if rng.random() < 0.1:
                parts.append(str(rng.randint(1, 30)))
            key = " ".join(parts)
            if key not in seen:
                seen.add(key)
                keys.append(key)
                if len(keys) == n:
                    break
    rng.shuffle(keys)
    return keys, words


def make_text(keys, words, nchars, seed):
    """About `nchars` characters of space-separated tokens: whole keys
    (phrases), single words, and noise (random letters, numbers, keys with
    punctuation or one letter changed)."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < nchars:
        r = rng.random()
        if r < 0.45:
            tok = rng.choice(keys)
        elif r < 0.75:
            tok = rng.choice(words)
        elif r < 0.85:
            tok = "".join(rng.choices(NOISE_LETTERS, k=rng.randint(2, 9)))
        elif r < 0.90:
            tok = str(rng.randint(0, 99_999))
        elif r < 0.95:
            tok = rng.choice(keys) + rng.choice(PUNCTUATION)
        else:
            tok = rng.choice(keys)
            i = rng.randrange(len(tok))
            tok = tok[:i] + rng.choice(NOISE_LETTERS) + tok[i + 1:]
        parts.append(tok)
        total += len(tok) + 1
    return " ".join(parts)


def word_starts(text):
    return [i for i, ch in enumerate(text) if ch != " " and (i == 0 or text[i - 1] == " ")]


def prefix_range(sorted_keys, p):
    """(lo, hi): sorted_keys[lo:hi] are the keys that start with p."""
    lo = bisect.bisect_left(sorted_keys, p)
    hi = bisect.bisect_left(sorted_keys, p[:-1] + chr(ord(p[-1]) + 1), lo)
    return lo, hi


def pick_prefixes(sorted_keys, count, seed):
    """Up to `count` distinct prefixes with PREFIX_MIN..PREFIX_MAX keys under
    each: for random keys, the shortest prefix of the key with at most
    PREFIX_MAX keys, kept if it has at least PREFIX_MIN."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(count * 50):
        if len(out) == count:
            break
        key = sorted_keys[rng.randrange(len(sorted_keys))]
        for length in range(1, len(key) + 1):
            p = key[:length]
            lo, hi = prefix_range(sorted_keys, p)
            if hi - lo <= PREFIX_MAX:
                if hi - lo >= PREFIX_MIN and p not in seen:
                    seen.add(p)
                    out.append(p)
                break
    return out


# -------------------------------------------------------------- Python trie

END = ""  # the end marker: no character is the empty string


class DictTrie:
    """A trie of nested dicts: node[ch] is the child for character ch, and
    node[END] the value of the key that ends at the node. Built from the
    keys in sorted order, every node's dict lists END first and then its
    children in code-point order, so a walk in dict order is sorted."""

    __slots__ = ("root", "maxlen")

    def __init__(self, root, maxlen=None):
        self.root = root
        if maxlen is None:
            maxlen = self._depth(root)
        self.maxlen = maxlen

    @staticmethod
    def _depth(root):
        best, stack = 0, [(root, 0)]
        while stack:
            node, depth = stack.pop()
            best = max(best, depth)
            stack.extend((child, depth + 1) for ch, child in node.items() if ch != END)
        return best

    @classmethod
    def build(cls, mapping):
        root, maxlen = {}, 0
        for key in sorted(mapping):
            node = root
            for ch in key:
                child = node.get(ch)
                if child is None:
                    child = node[ch] = {}
                node = child
            node[END] = mapping[key]
            if len(key) > maxlen:
                maxlen = len(key)
        return cls(root, maxlen)

    def __getitem__(self, key):
        node = self.root
        for ch in key:
            node = node[ch]
        return node[END]

    def _node(self, prefix):
        node = self.root
        for ch in prefix:
            node = node.get(ch)
            if node is None:
                return None
        return node

    def keys(self, prefix=""):
        """The keys that start with `prefix`, sorted."""
        node = self._node(prefix)
        out = []
        if node is not None:
            _walk_keys(node, prefix, out.append)
        return out

    def items(self, prefix=""):
        """(key, value) of the keys that start with `prefix`, sorted."""
        node = self._node(prefix)
        out = []
        if node is not None:
            _walk_items(node, prefix, out.append)
        return out

    def longest_prefix(self, s, start=0):
        """(key, value) of the longest key that is a prefix of s[start:], or
        None."""
        node, n, best, value = self.root, 0, 0, None
        for ch in s[start:start + self.maxlen]:
            node = node.get(ch)
            if node is None:
                break
            n += 1
            if END in node:
                best, value = n, node[END]
        return (s[start:start + best], value) if best else None

    def prefixes(self, s, start=0):
        """(key, value) of every key that is a prefix of s[start:], shortest
        first."""
        node, n, out = self.root, 0, []
        for ch in s[start:start + self.maxlen]:
            node = node.get(ch)
            if node is None:
                break
            n += 1
            if END in node:
                out.append((s[start:start + n], node[END]))
        return out


def _walk_keys(node, path, emit):
    for ch, child in node.items():
        if ch == END:
            emit(path)
        else:
            _walk_keys(child, path + ch, emit)


def _walk_items(node, path, emit):
    for ch, child in node.items():
        if ch == END:
            emit((path, child))
        else:
            _walk_items(child, path + ch, emit)


def count_nodes(root):
    n, stack = 0, [root]
    while stack:
        node = stack.pop()
        n += 1
        stack.extend(child for ch, child in node.items() if ch != END)
    return n


# ------------------------------------------------------------- timed loops
# Each measured series gets its own compiled copy of its loop (as bench/
# run.py does), so that one series' specialisation never slows down (or
# speeds up) another; the operation is written inline in the loop.

_LOOP_SRC = """
def loop(obj, items):
    t0 = perf_counter_ns()
    for x in items:
%s
    return perf_counter_ns() - t0
"""

# body of each loop: `obj` the structure, `x` the item
BODIES = {
    "lookup": {
        "dict": "obj[x]",
        "permafrost": "obj[x]",
        "marisa": "obj[x]",
        "python": "obj[x]",
    },
    "prefix keys": {
        "permafrost": "list(obj.keys(prefix=x))",
        "marisa": "obj.keys(x)",
        "python": "obj.keys(x)",
    },
    "prefix items": {
        "permafrost": "list(obj.items(prefix=x))",
        "marisa": "obj.items(x)",
        "python": "obj.items(x)",
    },
    # x: a start position in `text`
    "longest prefix": {
        "permafrost": "obj.longest_prefix(text, start=x, default=None)",
        "marisa": "found = obj.prefixes(text[x:x + maxlen])\nif found:\n    obj[found[-1]]",
        "python": "obj.longest_prefix(text, x)",
    },
    "all prefixes": {
        "permafrost": "obj.prefixes(text, start=x)",
        "marisa": "obj.prefixes(text[x:x + maxlen])",
        "python": "obj.prefixes(text, x)",
    },
    # x: the same 20-character string, QUERY_CALLS times
    "query": {
        "permafrost": "obj.longest_prefix(x, default=None)",
        "marisa": "found = obj.prefixes(x)\nif found:\n    obj[found[-1]]",
        "python": "obj.longest_prefix(x)",
    },
}


def make_loop(body, **names):
    namespace = {"perf_counter_ns": time.perf_counter_ns}
    namespace.update(names)
    src = _LOOP_SRC % textwrap.indent(body, " " * 8)
    exec(compile(src, "<loop>", "exec"), namespace)
    return namespace["loop"]


def time_series(section, objs, items, repeat, fresh=False, **names):
    """Median ns per item of each series of BODIES[section] over `items`
    (objs: series name -> structure). One untimed warm-up pass each, then
    `repeat` passes, the order rotated; GC off in each pass. fresh: new
    equal str objects for every pass (keys as they arrive from input)."""
    loops = {name: make_loop(BODIES[section][name], **names) for name in objs}
    for name, obj in objs.items():
        loops[name](obj, items)
    times = {name: [] for name in objs}
    order = list(objs)
    for r in range(repeat):
        for name in order[r % len(order):] + order[:r % len(order)]:
            run_items = datasets.fresh_keys(items) if fresh else items
            gc.disable()
            try:
                ns = loops[name](objs[name], run_items)
            finally:
                gc.enable()
            times[name].append(ns / len(items))
            del run_items
    return {name: benchutil.median(v) for name, v in times.items()}


def timed_off(fn, *args, **kwargs):
    """(ns, result) of one call with the cyclic GC off."""
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        result = fn(*args, **kwargs)
        ns = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return ns, result


# ------------------------------------------------------------------ checks

class Checker:
    """Collects wrong answers (at most a few examples per kind)."""

    def __init__(self):
        self.wrong = []
        self.counts = {}
        self.checked = {}
        self.notes = []

    def expect(self, what, got, want):
        self.checked[what] = self.checked.get(what, 0) + 1
        if got != want:
            n = self.counts[what] = self.counts.get(what, 0) + 1
            if n <= 3:
                self.wrong.append("%s: got %s, want %s" % (what, _short(got), _short(want)))
            return False
        return True

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def fail(self, what, why):
        self.wrong.append("%s: %s" % (what, why))

    def summary(self):
        extra = ["%s: %d wrong in all" % (k, v) for k, v in self.counts.items() if v > 3]
        return self.wrong + extra


def _short(x):
    r = repr(x)
    return r if len(r) <= 120 else r[:117] + "..."


def _call(fn, *args, **kwargs):
    """fn's answer, or ('raised', exception type name)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - compared against the reference
        return ("raised", type(e).__name__)


def _listed(method, *args, **kwargs):
    return list(method(*args, **kwargs))


def pf_longest(view, s, start=0):
    try:
        return view.longest_prefix(s, start=start)
    except KeyError:
        return None


def marisa_longest(trie, s, start, maxlen):
    found = trie.prefixes(s[start:start + maxlen])
    return (found[-1], trie[found[-1]][0][0]) if found else None


def ref_prefixes(d, s, start, maxlen):
    """(key, value) of every key of d that is a prefix of s[start:],
    shortest first: the brute-force reference."""
    out = []
    for n in range(1, min(maxlen, len(s) - start) + 1):
        k = s[start:start + n]
        if k in d:
            out.append((k, d[k]))
    return out


def check_ordered_extras(pf, view, plain_view, d, sorted_keys, seed, chk):
    """Untimed checks of the rest of the ordered API: irange, bisect_left /
    bisect_right, sorted_keys, values(prefix=), a set view with the index,
    and NoOrderedIndexError on a view without it."""
    rng = random.Random(seed)
    n = len(sorted_keys)
    chk.expect("sorted_keys()", _call(_listed, view.sorted_keys) == sorted_keys, True)
    for _ in range(300):
        i = rng.randrange(n)
        k = sorted_keys[i]
        probe = k + "\x00" if rng.random() < 0.5 else k
        chk.expect("bisect_left", _call(view.bisect_left, probe),
                   bisect.bisect_left(sorted_keys, probe))
        chk.expect("bisect_right", _call(view.bisect_right, probe),
                   bisect.bisect_right(sorted_keys, probe))
        j = min(n - 1, i + rng.randint(0, 60))
        lo_k, hi_k = sorted_keys[i], sorted_keys[j]
        for inc in ((True, True), (True, False), (False, True), (False, False)):
            a = bisect.bisect_left(sorted_keys, lo_k) if inc[0] else \
                bisect.bisect_right(sorted_keys, lo_k)
            b = bisect.bisect_right(sorted_keys, hi_k) if inc[1] else \
                bisect.bisect_left(sorted_keys, hi_k)
            want = sorted_keys[a:b]
            rev = rng.random() < 0.5
            chk.expect("irange", _call(_listed, view.irange, lo_k, hi_k,
                                           inclusive=inc, reverse=rev),
                       want[::-1] if rev else want)
    chk.expect("irange(minimum=None, maximum=k)",
               _call(_listed, view.irange, maximum=sorted_keys[min(n - 1, 20)]),
               sorted_keys[:min(n - 1, 20) + 1])
    for p in [sorted_keys[rng.randrange(n)][:3] for _ in range(20)]:
        lo, hi = prefix_range(sorted_keys, p)
        chk.expect("values(prefix=)", _call(_listed, view.values, prefix=p),
                   [d[k] for k in sorted_keys[lo:hi]])
    # a frozenset with the index: longest_prefix and prefixes give keys
    small = frozenset(rng.sample(sorted_keys, min(n, 5_000)))
    sview = _call(lambda: pf.loads(pf.dumps(small, ordered=True)))
    if isinstance(sview, tuple):
        chk.fail("frozenset with ordered=True", "raised %s" % sview[1])
    else:
        maxlen = max(map(len, small))
        small_d = dict.fromkeys(small, 0)
        for k in itertools.islice(sorted(small), 0, None, max(1, len(small) // 300)):
            s = k + " " + rng.choice(sorted_keys)
            ref = [x for x, _ in ref_prefixes(small_d, s, 0, maxlen)]
            chk.expect("set view longest_prefix", _call(sview.longest_prefix, s), ref[-1])
            chk.expect("set view prefixes", _call(sview.prefixes, s), ref)
            chk.expect("set view sorted_keys(prefix=)",
                       _call(_listed, sview.sorted_keys, prefix=k[:2]),
                       sorted(x for x in small if x.startswith(k[:2])))
    if plain_view is not None:
        got = _call(plain_view.longest_prefix, sorted_keys[0])
        chk.expect("a view without the index raises NoOrderedIndexError",
                   got == ("raised", "NoOrderedIndexError")
                   and issubclass(getattr(pf, "NoOrderedIndexError", type(None)), pf.Error),
                   True)


# ------------------------------------------------------------------ workers
# Spawn workers import this script as __mp_main__; each reports, then stays
# alive until the parent has read its memory (benchutil.measure_live_workers).

def pss_worker(kind, path, keys_path, conn):
    """Loads the key list, then the structure ("permafrost": open the image;
    "marisa": mmap the RecordTrie file; "python": pickle.load the trie's
    root), looks up every key; reports (pid, sum of the values, keys, load
    ns, lookup ns per key, PSS before the structure)."""
    import permafrost
    gc.disable()  # the Python trie holds millions of dicts: no collections
    with open(keys_path, "rb") as f:
        keys = pickle.load(f)
    u0 = memory.usage()
    t0 = time.perf_counter_ns()
    if kind == "permafrost":
        obj = permafrost.open(path)
    elif kind == "marisa":
        obj = marisa_trie.RecordTrie(RECORD_FORMAT)
        obj.mmap(path)
    else:
        with open(path, "rb") as f:
            obj = DictTrie(pickle.load(f))
    load_ns = time.perf_counter_ns() - t0
    acc = 0
    t0 = time.perf_counter_ns()
    if kind == "marisa":
        for k in keys:
            acc += obj[k][0][0]
    else:
        for k in keys:
            acc += obj[k]
    look_ns = time.perf_counter_ns() - t0
    conn.send((os.getpid(), acc, len(keys), load_ns, look_ns / len(keys), u0["PSS"]))
    conn.recv()  # the parent's go: it has measured us
    conn.close()


def run_pss_workers(kind, path, keys_path, count):
    def measure(pids):
        total = memory.total_usage(pids)
        mapped = memory.total_mapping_usage(pids, path) if kind != "python" else None
        return total, mapped

    ctx = multiprocessing.get_context("spawn")
    reports, (total, mapped) = benchutil.measure_live_workers(
        ctx, pss_worker, (kind, path, keys_path), count, measure)
    return {"pss": total["PSS"], "uss": total["USS"], "rss": total["RSS"],
            "base_pss": sum(r[5] for r in reports),
            "map_pss": mapped["PSS"] if mapped else None,
            "map_rss": mapped["RSS"] if mapped else None,
            "sums": [r[1] for r in reports], "keys": [r[2] for r in reports],
            "load_ns": benchutil.median([r[3] for r in reports]),
            "look_ns": benchutil.median([r[4] for r in reports])}


# ------------------------------------------------------------------- probe

def ordered_support(pf):
    """None if this permafrost has the ordered index, else why not."""
    try:
        view = pf.loads(pf.dumps({"b": 1, "a": 2}, ordered=True))
    except TypeError as e:
        return "this permafrost does not accept ordered=True (%s)" % e
    missing = [m for m in ("longest_prefix", "prefixes", "irange", "bisect_left",
                           "bisect_right", "sorted_keys") if not hasattr(view, m)]
    if missing:
        return "the dict view has no %s" % ", ".join(missing)
    try:
        if list(view.keys(prefix="")) != ["a", "b"]:
            return "keys(prefix='') of {'b': 1, 'a': 2} is not ['a', 'b']"
    except TypeError as e:
        return "keys(prefix=) is not accepted (%s)" % e
    return None


# -------------------------------------------------------------------- main

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="permafrost ordered index benchmark (issue 5)")
    ap.add_argument("--size", type=int, default=2_000_000,
                    help="distinct keys (default 2,000,000)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="passes of each timed loop, median taken (default 5)")
    ap.add_argument("--build-repeat", type=int, default=3,
                    help="builds of each structure, median taken (default 3)")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes of the PSS figures (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: --size %s" % format(QUICK_SIZE, ","))
    ap.add_argument("--out", default=os.path.join(_HERE, "results"),
                    help="folder of the results file (default bench/results)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmpdir", default=None,
                    help="where the images and files are written (default: the system's)")
    args = ap.parse_args(argv)
    if args.quick:
        args.size = QUICK_SIZE
    if args.size < 1_000 or args.repeat < 1 or args.build_repeat < 1 or args.workers < 1:
        ap.error("--size must be >= 1000; --repeat, --build-repeat and --workers >= 1")
    if marisa_trie is None:
        sys.exit("bench/ordered.py: marisa-trie does not import "
                 "(pip install marisa-trie, or make bench-ordered)")
    pf = benchutil.import_permafrost()
    mem_skip = memory.unsupported_reason()
    no_index = ordered_support(pf)
    if no_index:
        log("NOTE: permafrost's ordered index is not measured: %s. Its rows say n/a; "
            "lookups and PSS use an image without the index." % no_index)

    started = time.perf_counter()
    load_start = _loadavg()
    when = datetime.datetime.now()
    chk = Checker()
    with tempfile.TemporaryDirectory(prefix="pf-ordered-", dir=args.tmpdir) as tmp:
        f = run(pf, args, tmp, no_index, mem_skip, chk)
    f["elapsed"] = time.perf_counter() - started
    report(pf, args, argv, f, no_index, mem_skip, chk, when, load_start)
    return 1 if chk.summary() else 0


def run(pf, args, tmp, no_index, mem_skip, chk):
    f = {}
    n = args.size
    # ---------------------------------------------------------- the data
    t0 = time.perf_counter()
    keys, words = make_keys(n, args.seed)
    d = {k: i for i, k in enumerate(keys)}
    f["gen_s"] = time.perf_counter() - t0
    f["key_bytes"] = sum(len(k.encode("utf-8")) for k in keys)
    f["key_chars"] = sum(map(len, keys))
    f["maxlen"] = max(map(len, keys))
    f["phrases"] = sum(1 for k in keys if " " in k)
    f["non_ascii"] = sum(1 for k in keys if not k.isascii())
    f["words"] = len(words)
    sorted_keys = sorted(keys)
    log("data: %s keys (%s phrases, %s with non-ASCII letters) in %.1f s; mean key "
        "length %.2f UTF-8 bytes (%.2f characters), longest %d characters"
        % (format(n, ","), format(f["phrases"], ","), format(f["non_ascii"], ","),
           f["gen_s"], f["key_bytes"] / n, f["key_chars"] / n, f["maxlen"]))

    # ---------------------------------------------------------- 1. build
    paths = {"ordered": os.path.join(tmp, "ordered.pf"), "plain": os.path.join(tmp, "plain.pf"),
             "marisa": os.path.join(tmp, "keys.marisa"),
             "python": os.path.join(tmp, "trie.pickle"), "keys": os.path.join(tmp, "keys.pickle")}

    def build_marisa():
        trie = marisa_trie.RecordTrie(RECORD_FORMAT, ((k, (v,)) for k, v in d.items()))
        trie.save(paths["marisa"])

    def build_streamed():
        # the Builder: entries in the dict's (unsorted) order, sorted at close()
        with pf.Builder(paths["builder"], ordered=True) as b:
            b.update(d.items())

    paths["builder"] = os.path.join(tmp, "builder.pf")
    builders = {"permafrost": lambda: pf.freeze(d, paths["ordered"], ordered=True),
                "permafrost plain": lambda: pf.freeze(d, paths["plain"]),
                "permafrost Builder": build_streamed,
                "marisa": build_marisa,
                "python": lambda: DictTrie.build(d)}
    if no_index:
        del builders["permafrost"]
        del builders["permafrost Builder"]
    times = {name: [] for name in builders}
    pytrie = None
    f["python_rss"] = None
    order = list(builders)
    for r in range(args.build_repeat):
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name == "python":
                pytrie = None  # the previous one goes first (untimed)
                rss0 = memory.usage()["RSS"] if not mem_skip else 0
            ns, result = timed_off(builders[name])
            if name == "python":
                pytrie = result
                if f["python_rss"] is None and not mem_skip:
                    f["python_rss"] = memory.usage()["RSS"] - rss0
            times[name].append(ns)
            result = None
        log("build %d/%d: %s" % (r + 1, args.build_repeat, ", ".join(
            "%s %.2f s" % (name, times[name][-1] / 1e9) for name in order)))
    f["build"] = {name: benchutil.median(v) for name, v in times.items()}
    # The Python trie's dicts stay out of the cyclic GC's way from here on.
    gc.freeze()
    f["nodes"] = count_nodes(pytrie.root)

    # ---------------------------------------------------------- 2. size
    ns, _ = timed_off(_dump, pytrie.root, paths["python"])
    f["pickle_dump_ns"] = ns
    f["size"] = {name: os.path.getsize(p) for name, p in paths.items()
                 if os.path.exists(p) and name != "keys"}
    if not no_index:
        f["overhead"] = (f["size"]["ordered"] - f["size"]["plain"]) / f["key_bytes"]
        log("size: image %s with the index, %s without: index overhead %.1f%% of the "
            "key bytes" % (benchutil.fmt_bytes(f["size"]["ordered"]),
                           benchutil.fmt_bytes(f["size"]["plain"]), 100 * f["overhead"]))
    if "builder" in f["size"]:
        log("size: the Builder's ordered image %s" % benchutil.fmt_bytes(f["size"]["builder"]))
    log("size: marisa file %s, Python trie pickle %s, %s nodes"
        % (benchutil.fmt_bytes(f["size"]["marisa"]), benchutil.fmt_bytes(f["size"]["python"]),
           format(f["nodes"], ",")))

    view = pf.open(paths["plain" if no_index else "ordered"])
    plain_view = pf.open(paths["plain"]) if not no_index else None
    if not no_index:
        streamed = pf.open(paths["builder"])
        chk.expect("Builder(ordered=True) sorted_keys()", list(streamed.sorted_keys()),
                   sorted_keys)
        chk.expect("Builder(ordered=True) insertion order", list(streamed), keys)
        for p in ("a", "new ", "z"):
            chk.expect("Builder(ordered=True) items(prefix=)",
                       list(streamed.items(prefix=p)), list(view.items(prefix=p)))
        del streamed
    mtrie = marisa_trie.RecordTrie(RECORD_FORMAT)
    mtrie.mmap(paths["marisa"])
    pf_objs = {} if no_index else {"permafrost": view}
    maxlen = f["maxlen"]

    # ---------------------------------------------------------- 3. lookup
    sample = datasets.sample_keys(keys, min(n, LOOKUPS), seed=args.seed + 1)
    for k in sample:
        want = d[k]
        chk.expect("permafrost view[k]", _call(view.__getitem__, k), want)
        chk.expect("marisa trie[k]", _call(mtrie.__getitem__, k), [(want,)])
        chk.expect("Python trie[k]", _call(pytrie.__getitem__, k), want)
    for k in sample[:2_000]:
        miss = k + "#"  # "#" is in no key
        chk.expect("permafrost view[missing]", _call(view.__getitem__, miss),
                   ("raised", "KeyError"))
        chk.expect("marisa trie[missing]", _call(mtrie.__getitem__, miss), ("raised", "KeyError"))
        chk.expect("Python trie[missing]", _call(pytrie.__getitem__, miss), ("raised", "KeyError"))
    log("lookup: %s keys per pass, %d passes" % (format(len(sample), ","), args.repeat))
    objs = {"dict": d, "permafrost": view, "marisa": mtrie, "python": pytrie}
    f["lookup"] = time_series("lookup", objs, sample, args.repeat, fresh=True)
    f["lookup_n"] = len(sample)
    log("lookup: " + _per(f["lookup"]))

    # ---------------------------------------------------------- 4. prefixes
    prefixes = pick_prefixes(sorted_keys, PREFIX_QUERIES, args.seed + 2)
    results = 0
    for p in prefixes:
        lo, hi = prefix_range(sorted_keys, p)
        want = sorted_keys[lo:hi]
        results += hi - lo
        if not no_index:
            chk.expect("permafrost keys(prefix=)", _call(_listed, view.keys, prefix=p), want)
            chk.expect("permafrost items(prefix=)", _call(_listed, view.items, prefix=p),
                       [(k, d[k]) for k in want])
        chk.expect("marisa keys(p)", sorted(mtrie.keys(p)), want)
        chk.expect("marisa items(p)", sorted(mtrie.items(p)), [(k, (d[k],)) for k in want])
        chk.expect("Python trie keys(p)", pytrie.keys(p), want)
        chk.expect("Python trie items(p)", pytrie.items(p), [(k, d[k]) for k in want])
    f["prefix_n"] = len(prefixes)
    f["prefix_results"] = results
    f["prefix_len"] = sum(map(len, prefixes)) / max(1, len(prefixes))
    if prefixes:
        log("prefix: %d prefixes, %.1f keys under each on average"
            % (len(prefixes), results / len(prefixes)))
        objs = dict(pf_objs, marisa=mtrie, python=pytrie)
        f["prefix keys"] = time_series("prefix keys", objs, prefixes, args.repeat)
        f["prefix items"] = time_series("prefix items", objs, prefixes, args.repeat)
        log("prefix keys: " + _per(f["prefix keys"]))
    else:
        log("prefix: no prefix with %d..%d keys found" % (PREFIX_MIN, PREFIX_MAX))

    # ---------------------------------------------------------- 5. longest prefix
    text = make_text(keys, words, TEXT_CHARS, args.seed + 3)
    starts = word_starts(text)
    f["text_chars"], f["starts"] = len(text), len(starts)
    hits = 0
    best_pos, best_len = None, -1
    for pos in starts:
        ref = ref_prefixes(d, text, pos, maxlen)
        want = ref[-1] if ref else None
        hits += want is not None
        if want is not None and best_len < len(want[0]) <= QUERY_CHARS \
                and len(text) - pos >= QUERY_CHARS:
            best_pos, best_len = pos, len(want[0])
        if not no_index:
            chk.expect("permafrost longest_prefix", _call(pf_longest, view, text, pos), want)
            chk.expect("permafrost prefixes", _call(view.prefixes, text, start=pos), ref)
        chk.expect("marisa prefixes (longest)", marisa_longest(mtrie, text, pos, maxlen), want)
        chk.expect("marisa prefixes", mtrie.prefixes(text[pos:pos + maxlen]), [k for k, _ in ref])
        chk.expect("Python trie longest_prefix", pytrie.longest_prefix(text, pos), want)
        chk.expect("Python trie prefixes", pytrie.prefixes(text, pos), ref)
    f["scan_hits"] = hits
    hit_starts = [pos for pos in starts if pytrie.longest_prefix(text, pos)]
    miss_starts = [pos for pos in starts if not pytrie.longest_prefix(text, pos)]
    log("scan: %s characters, %s word starts, %s with a key" % (
        format(len(text), ","), format(len(starts), ","), format(hits, ",")))
    objs = dict(pf_objs, marisa=mtrie, python=pytrie)
    f["longest prefix"] = time_series("longest prefix", objs, starts, args.repeat,
                                      text=text, maxlen=maxlen)
    f["all prefixes"] = time_series("all prefixes", objs, starts, args.repeat,
                                    text=text, maxlen=maxlen)
    log("longest prefix: " + _per(f["longest prefix"]))
    for name, subset in (("longest prefix, hits", hit_starts),
                         ("longest prefix, misses", miss_starts)):
        if subset:
            f[name] = time_series("longest prefix", objs, subset, args.repeat,
                                  text=text, maxlen=maxlen)
    if best_pos is None:  # no key in the text: any 20 characters
        best_pos = starts[0]
    query = text[best_pos:best_pos + QUERY_CHARS]
    qref = ref_prefixes(d, query, 0, maxlen)
    qwant = qref[-1] if qref else None
    f["query"] = query
    f["query_answer"] = qwant[0] if qwant else None
    if not no_index:
        chk.expect("permafrost longest_prefix(query)", _call(pf_longest, view, query), qwant)
    chk.expect("Python trie longest_prefix(query)", pytrie.longest_prefix(query), qwant)
    f["query_ns"] = time_series("query", objs, [query] * QUERY_CALLS, args.repeat)
    log("20-character query %r: %s" % (query, _per(f["query_ns"])))
    # The same for many different 20-character windows of the text: each one
    # timed alone (QUERY_WINDOW_CALLS calls), its median over the passes.
    rng = random.Random(args.seed + 5)
    windows = [text[pos:pos + QUERY_CHARS] for pos in
               rng.sample([p for p in starts if len(text) - p >= QUERY_CHARS],
                          min(QUERY_WINDOWS, len(starts) - 1))]
    loops = {name: make_loop(BODIES["query"][name]) for name in objs}
    per_window = {name: [] for name in objs}
    for w in windows:
        items = [w] * QUERY_WINDOW_CALLS
        for name in objs:
            loops[name](objs[name], items[:10])
            runs = []
            for _ in range(args.repeat):
                gc.disable()
                try:
                    runs.append(loops[name](objs[name], items) / len(items))
                finally:
                    gc.enable()
            per_window[name].append(benchutil.median(runs))
    f["windows"] = len(windows)
    f["window_hits"] = sum(1 for w in windows if pytrie.longest_prefix(w))
    f["window_median"] = {k: benchutil.median(v) for k, v in per_window.items()}
    f["window_p90"] = {k: sorted(v)[int(0.9 * (len(v) - 1))] for k, v in per_window.items()}
    log("%d different 20-character queries, median: %s"
        % (len(windows), _per(f["window_median"])))

    # ---------------------------------------------------------- extras (untimed)
    if not no_index:
        log("checks: irange, bisect, sorted_keys, values(prefix=), a set view, "
            "NoOrderedIndexError")
        check_ordered_extras(pf, view, plain_view, d, sorted_keys, args.seed + 4, chk)

    # ---------------------------------------------------------- 6. PSS
    # Nothing of the structures stays mapped or alive here: the workers'
    # PSS must not be shared with this process.
    pf_path = paths["plain" if no_index else "ordered"]
    for v in (view, plain_view):
        if v is not None:
            pf.image_of(v).close()
    del view, plain_view, objs, pf_objs, mtrie
    with open(paths["keys"], "wb") as fh:
        pickle.dump(keys, fh, protocol=5)
    expected_sum = n * (n - 1) // 2
    f["python_nodes"] = f["nodes"]
    del pytrie, sorted_keys
    gc.collect()
    f["parent_maps"] = {name: memory.mapping_usage(os.getpid(), paths[p])["mappings"]
                        for name, p in (("permafrost", "plain" if no_index else "ordered"),
                                        ("marisa", "marisa"))} if not mem_skip else {}
    f["pss"] = {}
    if mem_skip:
        log("PSS not measured: %s" % mem_skip)
        return f
    avail = benchutil.mem_available()
    for kind, path in (("permafrost", pf_path), ("marisa", paths["marisa"]),
                       ("python", paths["python"])):
        if kind == "python" and f["python_rss"] and avail is not None \
                and f["python_rss"] * args.workers * 1.3 > 0.8 * avail:
            log("PSS: %d Python tries not measured (%s needed, %s available)"
                % (args.workers, benchutil.fmt_bytes(f["python_rss"] * args.workers * 1.3),
                   benchutil.fmt_bytes(avail)))
            continue
        log("PSS: %d %s workers, each looks up every key" % (args.workers, kind))
        m = run_pss_workers(kind, path, paths["keys"], args.workers)
        for s, k in zip(m["sums"], m["keys"]):
            chk.expect("%s worker: sum of the values of every key" % kind, (s, k),
                       (expected_sum, n))
        f["pss"][kind] = m
        log("PSS: %s workers: summed PSS %s (%s before the structure)"
            % (kind, benchutil.fmt_bytes(m["pss"]), benchutil.fmt_bytes(m["base_pss"])))
    return f


def _dump(obj, path):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=5)


def _per(series):
    return ", ".join("%s %s" % (name, benchutil.fmt_time_ns(v)) for name, v in series.items())


# ------------------------------------------------------------------ report

def ratio_text(r):
    if r is None:
        return "-"
    if 0 < r < 0.01:
        return "1/%s" % format(round(1 / r), ",")
    return "%.2fx" % r


def report(pf, args, argv, f, no_index, mem_skip, chk, when, load_start):
    ns = benchutil.fmt_time_ns
    fb = benchutil.fmt_bytes
    na = "n/a"
    rows = []
    n = args.size

    def ratio(a, b):
        return None if a is None or b is None or not b else a / b

    def add(figure, p, m, y, fmt, target="(info)", passed=None):
        """p, m, y: permafrost, marisa, Python trie figures (None: n/a)."""
        rows.append([figure, na if p is None else fmt(p), na if m is None else fmt(m),
                     na if y is None else fmt(y), ratio_text(ratio(p, m)),
                     ratio_text(ratio(p, y)), ratio_text(ratio(m, y)), target,
                     "" if passed is None else (na if p is None else verdict(passed))])

    b = f["build"]
    add("build: freeze(ordered=True) / RecordTrie + save / sort + insert (GC off)",
        b.get("permafrost"), b["marisa"], b["python"], ns)
    if b.get("permafrost Builder"):
        add("build: Builder(ordered=True), entries unsorted / RecordTrie + save / "
            "sort + insert", b["permafrost Builder"], b["marisa"], b["python"], ns)
    add("size: image / saved file / the trie's pickle",
        f["size"].get("ordered"), f["size"]["marisa"], f["size"]["python"], fb)
    if f["python_rss"]:
        add("size in memory: (mapped) / (mapped) / RSS growth when built",
            None, None, f["python_rss"], fb)
    ov = f.get("overhead")
    rows.append(["index overhead: (image with - without the index) / key bytes",
                 na if ov is None else "%.1f%%" % (100 * ov), "-", "-", "-", "-", "-",
                 "<= %.0f%%" % (100 * OVERHEAD_TARGET),
                 na if ov is None else verdict(ov <= OVERHEAD_TARGET)])
    lk = f["lookup"]
    add("exact lookup, per key (fresh keys)", None if no_index else lk["permafrost"],
        lk["marisa"], lk["python"], ns)
    add("exact lookup / plain dict (%s)" % ns(lk["dict"]),
        None if no_index else lk["permafrost"] / lk["dict"], lk["marisa"] / lk["dict"],
        lk["python"] / lk["dict"], lambda x: "%.2fx" % x)
    if f.get("prefix keys"):
        per = f["prefix_results"] / f["prefix_n"]
        for name, label in (("prefix keys", "prefix enumeration, keys"),
                            ("prefix items", "prefix enumeration, items")):
            s = f[name]
            add("%s: per query (%.0f results)" % (label, per), s.get("permafrost"),
                s["marisa"], s["python"], ns)
            add("%s: per result" % label, _div(s.get("permafrost"), per),
                s["marisa"] / per, s["python"] / per, ns)
    lp = f["longest prefix"]
    add("longest prefix at each word start, per position", lp.get("permafrost"),
        lp["marisa"], lp["python"], ns)
    add("longest prefix: the whole %s-character text (%s starts)"
        % (format(f["text_chars"], ","), format(f["starts"], ",")),
        _mul(lp.get("permafrost"), f["starts"]), lp["marisa"] * f["starts"],
        lp["python"] * f["starts"], ns)
    for name, label in (("longest prefix, hits", "positions with a key (%s)"),
                        ("longest prefix, misses", "positions without (%s: default=None)")):
        if f.get(name):
            lpx = f[name]
            count = f["scan_hits"] if "hits" in name else f["starts"] - f["scan_hits"]
            add("longest prefix, per position: " + label % format(count, ","),
                lpx.get("permafrost"), lpx["marisa"], lpx["python"], ns)
    q = f["query_ns"]
    add("one %d-character longest-prefix query" % QUERY_CHARS, q.get("permafrost"),
        q["marisa"], q["python"], ns, "< %s" % ns(QUERY_TARGET_NS),
        q.get("permafrost", 0) < QUERY_TARGET_NS)
    wm, wp = f["window_median"], f["window_p90"]
    add("%d-character longest-prefix queries: median of %d different ones"
        % (QUERY_CHARS, f["windows"]), wm.get("permafrost"), wm["marisa"], wm["python"], ns,
        "< %s" % ns(QUERY_TARGET_NS), wm.get("permafrost", 0) < QUERY_TARGET_NS)
    add("the same: 90th percentile", wp.get("permafrost"), wp["marisa"], wp["python"], ns)
    ap_ = f["all prefixes"]
    add("every prefix at each word start, per position", ap_.get("permafrost"),
        ap_["marisa"], ap_["python"], ns)
    pss = f["pss"]
    w = args.workers
    if pss:
        get = lambda kind, key: pss[kind][key] if kind in pss else None  # noqa: E731
        add("summed PSS, %d workers, every key looked up" % w, get("permafrost", "pss"),
            get("marisa", "pss"), get("python", "pss"), fb)
        grow = {k: v["pss"] - v["base_pss"] for k, v in pss.items()}
        add("summed PSS growth from the structure (minus PSS before it)",
            grow.get("permafrost"), grow.get("marisa"), grow.get("python"), fb)
        add("worker: open / mmap / pickle.load", get("permafrost", "load_ns"),
            get("marisa", "load_ns"), get("python", "load_ns"), ns)
        add("worker: lookup per key (GC off)", get("permafrost", "look_ns"),
            get("marisa", "look_ns"), get("python", "look_ns"), ns)
    header = ["figure", "permafrost", MARISA_NAME, "Python dict trie", "pf / marisa",
              "pf / Python", "marisa / Python", "target", "result"]
    table = benchutil.markdown_table(header, rows)

    notes = []
    if no_index:
        notes.append("permafrost's ordered index NOT MEASURED: %s. Its rows say n/a; the "
                     "exact lookups and the PSS workers used an image frozen without the "
                     "index: the PSS rows' permafrost column is that image, and its lookup "
                     "time is in the lookup note below." % no_index)
    notes.append(
        "Data: %s distinct keys from make_keys(n, seed=%d) (this file): %s words of "
        "datasets._vocabulary (pronounceable words and codes such as \"EU-42\"; 8%% with "
        "one accented letter) and phrases of 1..3 of them drawn Zipf-like, a third led by "
        "a place word (\"lake\", \"saint\"...), some ending in a number; %s phrases, %s "
        "keys with non-ASCII letters. **Mean key length %.2f UTF-8 bytes** (%.2f "
        "characters; longest %d characters); %s key bytes in all. The dict {key: i} is "
        "built in random order (not sorted). Made in %.1f s."
        % (format(n, ","), args.seed, format(f["words"], ","), format(f["phrases"], ","),
           format(f["non_ascii"], ","), f["key_bytes"] / n, f["key_chars"] / n, f["maxlen"],
           format(f["key_bytes"], ","), f["gen_s"]))
    notes.append(
        "marisa-trie: %s, each key mapped to its int value (a RecordTrie stores the "
        "packed value after the key in one MARISA trie); built from d.items() and saved, "
        "then opened with mmap() for the lookups (in this process and in the workers). "
        "Its keys(p) and items(p) come in the trie's own order, not sorted (the check "
        "sorts them); permafrost's and the Python trie's come sorted. trie[k] answers "
        "[(value,)]." % MARISA_NAME)
    notes.append(
        "Python trie: nested dicts (one per character, %s nodes), the value under the "
        "end marker \"\"; DictTrie.build sorts the keys, then inserts them (both timed), "
        "so each node lists its end marker first, then its children in code-point order. "
        "Its pickle (protocol 5, of the root dict) took %s to write."
        % (format(f["nodes"], ","), ns(f["pickle_dump_ns"])))
    notes.append(
        "Build: median of %d builds each, order rotated, GC off: %s. The index's cost: "
        "freeze() without it took %s%s."
        % (args.build_repeat, ", ".join("%s %s" % (k, ns(v)) for k, v in b.items()),
           ns(b["permafrost plain"]),
           "" if no_index else " (with it: %.2fx)" % (b["permafrost"] / b["permafrost plain"])))
    notes.append(
        "Sizes: image without the index %s bytes%s; marisa file %s bytes; the Python "
        "trie's pickle %s bytes."
        % (format(f["size"]["plain"], ","),
           "" if no_index else ", with it %s bytes" % format(f["size"]["ordered"], ","),
           format(f["size"]["marisa"], ","), format(f["size"]["python"], ",")))
    lk_pf = "" if not no_index else " (image without the index: %s)" % ns(lk["permafrost"])
    notes.append(
        "Exact lookup: a random sample of %s keys, brand-new equal str objects for every "
        "pass; one loop per series, compiled separately, `obj[x]` inline (marisa's "
        "answers [(v,)]); median of %d passes after one warm-up, order rotated, GC off. "
        "Plain dict %s%s. Every answer was checked, and %s missing keys raise KeyError "
        "in each."
        % (format(f["lookup_n"], ","), args.repeat, ns(lk["dict"]), lk_pf,
           format(min(2_000, f["lookup_n"]), ",")))
    if f.get("prefix keys"):
        notes.append(
            "Prefix enumeration: %s prefixes (mean %.1f characters) each with %d..%d keys "
            "under it (%s results per pass, %.1f per query): list(view.keys(prefix=p)) / "
            "trie.keys(p) / the Python trie's walk; items: list(view.items(prefix=p)) / "
            "trie.items(p) / its walk. Medians of %d passes."
            % (format(f["prefix_n"], ","), f["prefix_len"], PREFIX_MIN, PREFIX_MAX,
               format(f["prefix_results"], ","), f["prefix_results"] / f["prefix_n"],
               args.repeat))
    else:
        notes.append("Prefix enumeration not measured: no prefix with %d..%d keys."
                     % (PREFIX_MIN, PREFIX_MAX))
    notes.append(
        "Longest prefix: a text of %s characters (make_text: whole keys, single words, "
        "random letters, numbers, keys with punctuation or one letter changed), %s word "
        "starts, %s of them with a key; at each: view.longest_prefix(text, start=pos) "
        "(default=None) / trie.prefixes(text[pos:pos+%d]), the last one, and its value "
        "trie[k] / the Python trie's walk. Every prefix: view.prefixes(text, start=pos) / "
        "trie.prefixes(text[pos:pos+%d]) (keys only) / the walk. Every answer checked "
        "against a brute force over the dict (each slice up to the longest key)."
        % (format(f["text_chars"], ","), format(f["starts"], ","), format(f["scan_hits"], ","),
           f["maxlen"], f["maxlen"]))
    notes.append(
        "The %d-character query: %r (the word start whose longest key, %r, is the longest "
        "that fits in %d characters), %s calls per pass, medians of %d passes; marisa: "
        "prefixes() + trie[k] of the last. The %d different queries: %d-character windows "
        "of the text at random word starts (%d of them with a key), each timed alone over "
        "%d calls per pass, its median of %d passes; then the median and the 90th "
        "percentile over the windows."
        % (QUERY_CHARS, f["query"], f["query_answer"], QUERY_CHARS, format(QUERY_CALLS, ","),
           args.repeat, f["windows"], QUERY_CHARS, f["window_hits"], QUERY_WINDOW_CALLS,
           args.repeat))
    if pss:
        parts = []
        for kind, m in pss.items():
            mp = "" if m["map_pss"] is None else ", file mapping RSS %s, PSS %s" % (
                fb(m["map_rss"]), fb(m["map_pss"]))
            parts.append("%s: PSS %s (before the structure %s), USS %s, RSS %s%s"
                         % (kind, fb(m["pss"]), fb(m["base_pss"]), fb(m["uss"]),
                            fb(m["rss"]), mp))
        notes.append(
            "PSS: %d spawn workers per kind, alive together while measured "
            "(/proc/PID/smaps via bench/memory.py); each loads the shuffled key list "
            "(a pickle), then opens the image / mmaps the marisa file / pickle.loads the "
            "Python trie, and looks up every key with the GC off; every worker's sum of "
            "the values was right%s. %s. This process mapped neither file then: %s."
            % (w, "" if not any("worker" in x for x in chk.summary()) else " EXCEPT AS LISTED",
               "; ".join(parts),
               ", ".join("%s %d mappings" % kv for kv in f["parent_maps"].items())))
        if "python" not in pss:
            notes.append("Python tries in %d workers: not measured, they would not fit in "
                         "the memory available." % w)
    elif mem_skip:
        notes.append("PSS not measured: %s." % mem_skip)
    checked = sum(chk.checked.values())
    wrong = chk.summary()
    notes.append("Answers checked: %s (%d kinds)%s." % (
        format(checked, ","), len(chk.checked),
        ": all right" if not wrong else "; WRONG ANSWERS: " + "; ".join(wrong)))
    notes += chk.notes
    notes.append("Whole run: %.0f s." % f["elapsed"])

    version = getattr(pf, "__version__", "unknown")
    text = "\n".join(
        ["# permafrost ordered index vs marisa-trie and a Python trie, %s"
         % when.strftime("%Y-%m-%d %H:%M"), ""]
        + ["- " + line for line in benchutil.machine_description(
            [os.path.relpath(os.path.abspath(__file__))] + list(argv))]
        + ["- load average (1 min) at start / end: %s / %s" % (load_start, _loadavg()),
           "- permafrost: %s (%s)" % (version, os.path.dirname(pf.__file__)),
           "- marisa-trie: %s" % _version("marisa-trie"),
           "- sizes: %s keys, mean %.2f UTF-8 bytes; %d repeats, %d builds, %d workers"
           % (format(n, ","), f["key_bytes"] / n, args.repeat, args.build_repeat, w),
           "", table, "", "## Notes", ""]
        + ["- " + x for x in notes]) + "\n"
    print()
    print(table)
    print()
    for x in notes:
        print("- " + x)
    print()
    benchutil.write_results(args.out, "ordered", when, text)


def _div(a, b):
    return None if a is None else a / b


def _mul(a, b):
    return None if a is None else a * b


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
