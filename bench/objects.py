#!/usr/bin/env python3
"""Objects and arrays in images (issue 6): a pure-Python trie of user class
instances, and a numpy array, frozen and read back, against the same data as
Python objects / pickled copies, in one run.

    python bench/objects.py [--words 1000000] [--array-mb 1024] [--repeat 3]
                            [--workers 2] [--fresh 5] [--quick]
                            [--out bench/results] [--seed 0] [--tmpdir DIR]

Prints a Markdown table (figure, permafrost, reference, ratio, target,
PASS/FAIL) and writes it, with the machine description and notes, to
OUT/objects-<date>-<time>.md. Every ratio is against a reference measured in
the same run; timings are medians of --repeat runs (or of --fresh workers).
The exit status is 0 whatever the targets say; it is 1 only if an answer was
wrong (a lookup, a prefix test, an array element or sum that differs).

Sections:
1. A trie of plain classes (bench/trie_classes.py: Node with `children`
   dict and `terminal` bool; Trie with insert/lookup/startswith) over WORDS
   generated words: building it (once), freeze(trie) against
   pickle.dumps(trie), image size against pickle size, and per-word lookup
   and startswith times over every word (shuffled) on the Python trie and
   on the frozen trie (permafrost.open(path, classes=[Trie, Node])), in this
   process, the same code on both.
2. WORKERS spawn workers each look up every word: (a) in a Python trie
   each unpickles from a file itself, (b) in the frozen image each opens;
   summed PSS and USS of the workers while they are all alive.
3. A float64 array of ARRAY_MB MiB frozen in {"emb": arr, "name": "x"}:
   in --fresh spawn workers (one at a time), the time of open + d["emb"] +
   one element, and the worker's PSS growth; against pickle.load of the
   same dict. Then WORKERS workers each sum the whole array: their summed
   PSS against the same with pickled copies. flags.writeable and the
   address alignment of the array read back.
"""

import argparse
import datetime
import gc
import math
import multiprocessing
import os
import pickle
import random
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import memory  # noqa: E402
import trie_classes  # noqa: E402
from run import _loadavg, log, verdict  # noqa: E402
from trie_classes import Node, Trie, build_trie  # noqa: E402

MIB = 1024 * 1024
LOOKUP_RATIO_TARGET = 3.0       # frozen trie time / Python trie time, at most
PSS_RATIO_TARGET = 0.25         # frozen workers' summed PSS / pickled copies', at most
OPEN_TARGET_NS = 1_000_000      # open + d["emb"] + one element, fresh worker
# PSS growth of that worker after the access: "a few MiB, not the array". A
# touch of one byte of a mapped file brings its whole page-cache folio into
# the process, up to 2 MiB on this kernel (ext4 large folios), and the access
# touches two or three places (header, the dict, the element).
ACCESS_PSS_TARGET = 8 * MIB
ARRAY_ONCE_TARGET = 1.10        # summed PSS growth of the workers / array size
MISSES = 20_000                 # non-words looked up in both tries (untimed check)


# ------------------------------------------------------------- timed loops
# The same loop for both tries, with the cyclic GC off (as timeit): the
# frozen trie makes a Node per step it takes, and a collection triggered by
# those allocations would also walk the Python trie this process holds.
# No gc.collect() before a timing (run.py's timed_ns does one): with the
# Python trie alive, one takes seconds (millions of tracked objects).

def timed_off(fn, *args):
    """(ns, result) of one call with the cyclic GC off."""
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        result = fn(*args)
        ns = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return ns, result


def run_loop(fn, items):
    """(ns, number of true answers) of fn(x) for x in items."""
    gc.disable()
    try:
        hits = 0
        t0 = time.perf_counter_ns()
        for x in items:
            if fn(x):
                hits += 1
        ns = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return ns, hits


def ratio_text(r):
    """'1.23x', or '1/38,600' for a ratio below 0.01."""
    if 0 < r < 0.01:
        return "1/%s" % format(round(1 / r), ",")
    return "%.2fx" % r


def count_nodes(trie):
    n, stack = 0, [trie.root]
    while stack:
        node = stack.pop()
        n += 1
        stack.extend(node.children.values())
    return n


def non_words(words, count, seed):
    """`count` strings shaped like words (3..14 letters) that are not words."""
    rng = random.Random(seed)
    have = set(words)
    out = []
    while len(out) < count:
        w = "".join(rng.choices(trie_classes.ALPHABET, k=rng.randint(3, 14)))
        if w not in have:
            out.append(w)
    return out


def prefixes_of(words, seed):
    """One prefix of each word, 1..len(word) letters (all present)."""
    rng = random.Random(seed)
    return [w[:rng.randint(1, len(w))] for w in words]


# ------------------------------------------------------------------ workers
# Spawn workers import this script as __mp_main__; each reports, then stays
# alive until the parent has read its memory (benchutil.measure_live_workers).

def trie_worker(kind, trie_path, words_path, conn):
    """Loads the word list, then the trie ("pickle": pickle.load of a file;
    "frozen": permafrost.open), looks up every word; reports (pid, hits,
    load ns, lookup ns, words, PSS/USS/RSS before the trie)."""
    import permafrost
    with open(words_path, "rb") as f:
        words = pickle.load(f)
    gc.collect()
    u0 = memory.usage()
    t0 = time.perf_counter_ns()
    if kind == "pickle":
        with open(trie_path, "rb") as f:
            trie = pickle.load(f)
    else:
        trie = permafrost.open(trie_path, classes=[Trie, Node])
    load_ns = time.perf_counter_ns() - t0
    lookup = trie.lookup
    hits = 0
    t0 = time.perf_counter_ns()
    for w in words:
        if lookup(w):
            hits += 1
    look_ns = time.perf_counter_ns() - t0
    conn.send((os.getpid(), hits, load_ns, look_ns, len(words),
               {k: u0[k] for k in ("PSS", "USS", "RSS")}))
    conn.recv()  # the parent's go: it has measured us
    conn.close()


def _array_state(a):
    return {"writeable": bool(a.flags.writeable), "align64": a.ctypes.data % 64,
            "owndata": bool(a.flags.owndata), "dtype": str(a.dtype), "shape": a.shape}


def array_open_worker(kind, path, index, conn):
    """A fresh process: numpy and permafrost imported (not timed), then the
    time of open + d["emb"] + a[index] ("pickle": pickle.load of the dict
    file instead of open); reports (pid, ns, element, name, PSS/USS/RSS
    before and after, array state, image mapping RSS)."""
    import numpy  # noqa: F401  (imported before the timing, as a user's code does)
    import permafrost
    gc.collect()
    u0 = memory.usage()
    t0 = time.perf_counter_ns()
    if kind == "pickle":
        with open(path, "rb") as f:
            d = pickle.load(f)
    else:
        d = permafrost.open(path)
    a = d["emb"]
    x = a[index]
    ns = time.perf_counter_ns() - t0
    u1 = memory.usage()
    mapped = memory.mapping_usage(os.getpid(), path)["Rss"] if kind != "pickle" else 0
    conn.send((os.getpid(), ns, float(x), d["name"],
               {k: u0[k] for k in ("PSS", "USS", "RSS")},
               {k: u1[k] for k in ("PSS", "USS", "RSS")}, _array_state(a), mapped))
    conn.recv()
    conn.close()


def array_sum_worker(kind, path, conn):
    """Opens (or unpickles) the dict, sums the whole array; reports (pid,
    sum, sum ns, PSS before, after the first access, after the sum); stays
    alive holding the array."""
    import numpy  # noqa: F401
    import permafrost
    gc.collect()
    u0 = memory.usage()
    if kind == "pickle":
        with open(path, "rb") as f:
            d = pickle.load(f)
    else:
        d = permafrost.open(path)
    a = d["emb"]
    float(a[0])
    u1 = memory.usage()
    t0 = time.perf_counter_ns()
    s = float(a.sum())
    sum_ns = time.perf_counter_ns() - t0
    u2 = memory.usage()
    conn.send((os.getpid(), s, sum_ns, u0["PSS"], u1["PSS"], u2["PSS"]))
    conn.recv()
    conn.close()


def run_workers(target, args, count, image_path=None):
    """`count` live spawn workers of target(*args, conn): (reports, summed
    usage, summed usage of the image mapping or None)."""
    def measure(pids):
        total = memory.total_usage(pids)
        image = memory.total_mapping_usage(pids, image_path) if image_path else None
        return total, image

    ctx = multiprocessing.get_context("spawn")
    reports, (total, image) = benchutil.measure_live_workers(ctx, target, args, count, measure)
    return reports, total, image


# ----------------------------------------------------------------- sections

def bench_trie(pf, args, tmp, wrong):
    f = {}
    t0 = time.perf_counter()
    words = trie_classes.make_words(args.words, args.seed)
    f["gen_s"] = time.perf_counter() - t0
    f["mean_len"] = sum(map(len, words)) / len(words)
    log("trie: %s words generated in %.1f s (mean length %.1f)"
        % (format(len(words), ","), f["gen_s"], f["mean_len"]))

    gc.collect()
    rss0 = memory.usage()["RSS"]
    gc.disable()
    t0 = time.perf_counter_ns()
    trie = build_trie(words)
    f["build_ns"] = time.perf_counter_ns() - t0
    gc.enable()
    f["build_rss"] = memory.usage()["RSS"] - rss0
    f["nodes"] = count_nodes(trie)
    if len(trie) != len(words):
        wrong.append("trie size %d != %d words" % (len(trie), len(words)))
    log("trie: built in %.1f s, %s nodes, RSS +%s"
        % (f["build_ns"] / 1e9, format(f["nodes"], ","), benchutil.fmt_bytes(f["build_rss"])))

    image = os.path.join(tmp, "trie.pf")
    pickle_path = os.path.join(tmp, "trie.pickle")
    times = {"freeze": [], "pickle": []}
    blob = None
    for r in range(args.repeat):
        order = ["freeze", "pickle"] if r % 2 == 0 else ["pickle", "freeze"]
        for name in order:
            if name == "freeze":
                ns, _ = timed_off(pf.freeze, trie, image)
            else:
                blob = None
                ns, blob = timed_off(pickle.dumps, trie, 5)
            times[name].append(ns)
        log("trie: repeat %d/%d: freeze %.2f s, pickle.dumps %.2f s"
            % (r + 1, args.repeat, times["freeze"][-1] / 1e9, times["pickle"][-1] / 1e9))
    f["freeze_ns"] = benchutil.median(times["freeze"])
    f["pickle_ns"] = benchutil.median(times["pickle"])
    f["image_size"] = os.path.getsize(image)
    f["pickle_size"] = len(blob)
    with open(pickle_path, "wb") as fh:
        fh.write(blob)
    del blob

    frozen = pf.open(image, classes=[Trie, Node])
    f["frozen_types"] = "%s, root %s, root.children %s" % (
        type(frozen).__name__, type(frozen.root).__name__, type(frozen.root.children).__name__)
    if type(frozen) is not Trie or type(frozen.root) is not Node:
        wrong.append("frozen trie reads back as %s" % f["frozen_types"])
    if len(frozen) != len(words):
        wrong.append("frozen trie size %d != %d words" % (len(frozen), len(words)))

    ws = trie_classes.shuffled(words, args.seed + 1)
    prefixes = prefixes_of(ws, args.seed + 2)
    del words
    series = {}
    for op, items in (("lookup", ws), ("startswith", prefixes)):
        fns = {"python": getattr(trie, op), "frozen": getattr(frozen, op)}
        for name in fns:  # warm-up (untimed): page in, specialise
            run_loop(fns[name], items)
        res = {name: [] for name in fns}
        for r in range(args.repeat):
            order = ["python", "frozen"] if r % 2 == 0 else ["frozen", "python"]
            for name in order:
                ns, hits = run_loop(fns[name], items)
                res[name].append(ns / len(items))
                if hits != len(items):
                    wrong.append("%s %s: %d of %d true" % (name, op, hits, len(items)))
        log("trie: %s: python %s, frozen %s per call (medians of %d)"
            % (op, benchutil.fmt_time_ns(benchutil.median(res["python"])),
               benchutil.fmt_time_ns(benchutil.median(res["frozen"])), args.repeat))
        series[op] = {name: benchutil.median(v) for name, v in res.items()}
        del fns  # the bound methods hold the tries
    f["series"] = series

    # Untimed check: non-words are absent from both, and every prefix test of
    # them agrees.
    misses = non_words(ws, min(MISSES, len(ws)), args.seed + 3)
    bad = sum(1 for w in misses if trie.lookup(w) or frozen.lookup(w))
    bad += sum(1 for w in misses if trie.startswith(w) != frozen.startswith(w))
    f["misses_checked"] = len(misses)
    if bad:
        wrong.append("%d of %d non-word checks disagree" % (bad, len(misses)))
    del trie, frozen
    gc.collect()
    # The workers' PSS must not be shared with this process: it maps the
    # image no more.
    f["parent_mappings"] = memory.mapping_usage(os.getpid(), image)["mappings"]
    if f["parent_mappings"]:
        log("trie: WARNING: this process still maps the image (%d mappings)"
            % f["parent_mappings"])

    words_path = os.path.join(tmp, "words.pickle")
    with open(words_path, "wb") as fh:
        pickle.dump(ws, fh, protocol=5)
    n_words = len(ws)
    del ws, prefixes, misses
    gc.collect()

    avail = benchutil.mem_available()
    need = f["build_rss"] * args.workers * 1.5
    f["workers"] = {}
    for kind in ("pickle", "frozen"):
        if kind == "pickle" and avail is not None and need > 0.8 * avail:
            log("trie: %d pickled copies not measured (%s needed, %s available)"
                % (args.workers, benchutil.fmt_bytes(need), benchutil.fmt_bytes(avail)))
            continue
        log("trie: %d workers (%s), each looks up every word" % (args.workers, kind))
        path = pickle_path if kind == "pickle" else image
        reports, total, mapped = run_workers(
            trie_worker, (kind, path, words_path), args.workers,
            image if kind == "frozen" else None)
        for rep in reports:
            if rep[1] != n_words:
                wrong.append("%s worker: %d of %d lookups true" % (kind, rep[1], n_words))
        f["workers"][kind] = {
            "pss": total["PSS"], "uss": total["USS"], "rss": total["RSS"],
            "base_pss": sum(r[5]["PSS"] for r in reports),
            "image_pss": mapped["PSS"] if mapped else None,
            "image_rss": mapped["RSS"] if mapped else None,
            "load_ns": benchutil.median([r[2] for r in reports]),
            "look_ns": benchutil.median([r[3] / r[4] for r in reports])}
        log("trie: %s workers: summed PSS %s" % (kind, benchutil.fmt_bytes(total["PSS"])))
    f["n_words"] = n_words
    return f


def bench_array(pf, args, tmp, wrong):
    import numpy as np

    f = {}
    n = args.array_mb * MIB // 8
    t0 = time.perf_counter()
    arr = np.random.default_rng(args.seed).random(n)
    f["gen_s"] = time.perf_counter() - t0
    index = n // 2 + 12345 if n > 30000 else n // 2
    expected_x = float(arr[index])
    expected_sum = float(arr.sum())
    d = {"emb": arr, "name": "x"}
    image = os.path.join(tmp, "array.pf")
    pickle_path = os.path.join(tmp, "array.pickle")
    f["freeze_ns"], _ = timed_off(pf.freeze, d, image)

    def dump():
        with open(pickle_path, "wb") as fh:
            pickle.dump(d, fh, protocol=5)
    f["dump_ns"], _ = timed_off(dump)
    f["image_size"] = os.path.getsize(image)
    f["pickle_size"] = os.path.getsize(pickle_path)
    f["array_bytes"] = arr.nbytes
    log("array: %s float64 (%s) made in %.1f s; freeze %.2f s, pickle.dump %.2f s"
        % (format(n, ","), benchutil.fmt_bytes(arr.nbytes), f["gen_s"], f["freeze_ns"] / 1e9,
           f["dump_ns"] / 1e9))
    d = arr = None  # drop both (dump() above closed over d)
    gc.collect()

    # Fresh workers, one at a time: the first access.
    f["open"] = {}
    for kind in ("frozen", "pickle"):
        path = image if kind == "frozen" else pickle_path
        reps = []
        for _ in range(args.fresh):
            (rep,), _, _ = run_workers(array_open_worker, (kind, path, index), 1)
            reps.append(rep)
            if rep[2] != expected_x or rep[3] != "x":
                wrong.append("%s worker: a[%d] = %r, name %r (expected %r, 'x')"
                             % (kind, index, rep[2], rep[3], expected_x))
        f["open"][kind] = {
            "ns": benchutil.median([r[1] for r in reps]),
            "all_ns": [r[1] for r in reps],
            "pss_growth": benchutil.median([r[5]["PSS"] - r[4]["PSS"] for r in reps]),
            "rss_growth": benchutil.median([r[5]["RSS"] - r[4]["RSS"] for r in reps]),
            "mapped_rss": benchutil.median([r[7] for r in reps]),
            "state": reps[0][6],
            "states_agree": all(r[6] == reps[0][6] for r in reps)}
        log("array: %d fresh %s workers: first access %s (median), PSS +%s"
            % (args.fresh, kind, benchutil.fmt_time_ns(f["open"][kind]["ns"]),
               benchutil.fmt_bytes(f["open"][kind]["pss_growth"])))

    # Workers that each sum the whole array, alive together.
    avail = benchutil.mem_available()
    need = f["array_bytes"] * args.workers * 1.5
    f["sum"] = {}
    for kind in ("frozen", "pickle"):
        if kind == "pickle" and avail is not None and need > 0.8 * avail:
            log("array: %d pickled copies not measured (%s needed, %s available)"
                % (args.workers, benchutil.fmt_bytes(need), benchutil.fmt_bytes(avail)))
            continue
        path = image if kind == "frozen" else pickle_path
        reports, total, mapped = run_workers(
            array_sum_worker, (kind, path), args.workers, image if kind == "frozen" else None)
        for rep in reports:
            if not math.isclose(rep[1], expected_sum, rel_tol=1e-12):
                wrong.append("%s worker: sum %r != %r" % (kind, rep[1], expected_sum))
        f["sum"][kind] = {
            "pss": total["PSS"], "uss": total["USS"], "rss": total["RSS"],
            "base_pss": sum(r[3] for r in reports),
            "access_pss": sum(r[4] for r in reports),
            "image_pss": mapped["PSS"] if mapped else None,
            "image_rss": mapped["RSS"] if mapped else None,
            "sum_ns": benchutil.median([r[2] for r in reports]),
            "exact": all(r[1] == expected_sum for r in reports)}
        log("array: %d %s workers summed the array: summed PSS %s"
            % (args.workers, kind, benchutil.fmt_bytes(total["PSS"])))
    f["n"] = n
    f["index"] = index
    return f


# ----------------------------------------------------------------- report

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="permafrost objects and arrays benchmark")
    ap.add_argument("--words", type=int, default=1_000_000,
                    help="words in the trie (default 1,000,000)")
    ap.add_argument("--array-mb", type=int, default=1024,
                    help="size of the float64 array in MiB (default 1024)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each timing, median taken (default 3)")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes of the memory figures (default 2)")
    ap.add_argument("--fresh", type=int, default=5,
                    help="fresh workers timing the array's first access (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="--words 200000 --array-mb 128")
    ap.add_argument("--out", default=os.path.join(_HERE, "results"),
                    help="folder of the results file (default bench/results)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmpdir", default=None,
                    help="where the images are written (default: the system's)")
    args = ap.parse_args(argv)
    if args.quick:
        args.words, args.array_mb = 200_000, 128
    if args.words < 1 or args.array_mb < 1 or args.repeat < 1 or args.workers < 1 \
            or args.fresh < 1:
        ap.error("--words, --array-mb, --repeat, --workers and --fresh must be >= 1")
    pf = benchutil.import_permafrost()
    reason = memory.unsupported_reason()
    if reason:
        sys.exit("bench/objects.py: %s" % reason)

    start = time.perf_counter()
    load_start = _loadavg()
    when = datetime.datetime.now()
    wrong = []
    with tempfile.TemporaryDirectory(prefix="pf-objects-", dir=args.tmpdir) as tmp:
        trie = bench_trie(pf, args, tmp, wrong)
        try:
            import numpy  # noqa: F401
            no_numpy = None
        except ImportError as e:
            no_numpy = str(e)
            log("array: not measured, numpy does not import (%s)" % e)
        arr = None if no_numpy else bench_array(pf, args, tmp, wrong)
    elapsed = time.perf_counter() - start

    fb = benchutil.fmt_bytes
    ns = benchutil.fmt_time_ns
    rows = []

    def add(figure, mine, ref, ratio, target, passed):
        rows.append([figure, mine, ref, ratio, target,
                     "" if passed is None else verdict(passed)])

    w = args.workers
    words_txt = format(trie["n_words"], ",")
    add("build the Python trie (%s words, %s nodes, GC off)"
        % (words_txt, format(trie["nodes"], ",")),
        "-", "%.2f s" % (trie["build_ns"] / 1e9), "-", "(info)", None)
    add("freeze(trie) vs pickle.dumps(trie)", ns(trie["freeze_ns"]), ns(trie["pickle_ns"]),
        ratio_text(trie["freeze_ns"] / trie["pickle_ns"]), "(info)", None)
    add("image size vs pickle size", fb(trie["image_size"]), fb(trie["pickle_size"]),
        ratio_text(trie["image_size"] / trie["pickle_size"]), "(info)", None)
    for op, label in (("lookup", "lookup, per word (all words, shuffled)"),
                      ("startswith", "startswith, per prefix (one of each word)")):
        s = trie["series"][op]
        r = s["frozen"] / s["python"]
        add(label + ": frozen vs Python trie", ns(s["frozen"]), ns(s["python"]), ratio_text(r),
            "<= %.0fx" % LOOKUP_RATIO_TARGET, r <= LOOKUP_RATIO_TARGET)
    tw = trie["workers"]
    fz, pk = tw.get("frozen"), tw.get("pickle")
    if fz and pk:
        r = fz["pss"] / pk["pss"]
        add("summed PSS, %d workers, every word looked up" % w, fb(fz["pss"]),
            "%d unpickled tries: %s" % (w, fb(pk["pss"])), ratio_text(r),
            "<= %.2fx" % PSS_RATIO_TARGET, r <= PSS_RATIO_TARGET)
        add("summed USS, %d workers" % w, fb(fz["uss"]), fb(pk["uss"]),
            ratio_text(fz["uss"] / pk["uss"]), "(info)", None)
        add("summed PSS growth from the trie (minus PSS before it)",
            fb(fz["pss"] - fz["base_pss"]), fb(pk["pss"] - pk["base_pss"]),
            ratio_text((fz["pss"] - fz["base_pss"]) / (pk["pss"] - pk["base_pss"])),
            "(info)", None)
        add("worker: permafrost.open vs pickle.load of the trie", ns(fz["load_ns"]),
            ns(pk["load_ns"]), ratio_text(fz["load_ns"] / pk["load_ns"]), "(info)", None)
        add("worker: lookup per word (GC on)", ns(fz["look_ns"]), ns(pk["look_ns"]),
            ratio_text(fz["look_ns"] / pk["look_ns"]), "(info)", None)
    elif fz:
        add("summed PSS, %d workers, every word looked up" % w, fb(fz["pss"]),
            "not measured (memory)", "-", "<= %.2fx" % PSS_RATIO_TARGET, None)

    if arr is None:
        add("array section", "not measured", "-", "-", "-", None)
    else:
        mib_txt = "%s MiB" % format(args.array_mb, ",")
        add("array %s: freeze vs pickle.dump to a file" % mib_txt, ns(arr["freeze_ns"]),
            ns(arr["dump_ns"]), ratio_text(arr["freeze_ns"] / arr["dump_ns"]), "(info)", None)
        of, op_ = arr["open"]["frozen"], arr["open"]["pickle"]
        add("fresh worker: open + d[\"emb\"] + one element (median of %d)" % args.fresh,
            ns(of["ns"]), "pickle.load + d[\"emb\"] + one element: %s" % ns(op_["ns"]),
            ratio_text(of["ns"] / op_["ns"]), "< %s" % ns(OPEN_TARGET_NS),
            of["ns"] < OPEN_TARGET_NS)
        add("fresh worker: PSS growth after that access", fb(of["pss_growth"]),
            fb(op_["pss_growth"]), ratio_text(of["pss_growth"] / op_["pss_growth"]),
            "< %s" % fb(ACCESS_PSS_TARGET), of["pss_growth"] < ACCESS_PSS_TARGET)
        sf, sp = arr["sum"]["frozen"], arr["sum"].get("pickle")
        growth = sf["pss"] - sf["base_pss"]
        add("summed PSS, %d workers after a.sum()" % w, fb(sf["pss"]),
            "%d pickled copies: %s" % (w, fb(sp["pss"])) if sp else "not measured (memory)",
            ratio_text(sf["pss"] / sp["pss"]) if sp else "-", "(info)", None)
        add("summed PSS growth (after a.sum() minus before open) / array size",
            "%s = %.2fx" % (fb(growth), growth / arr["array_bytes"]),
            "%s = %.2fx" % (fb(sp["pss"] - sp["base_pss"]),
                            (sp["pss"] - sp["base_pss"]) / arr["array_bytes"]) if sp else "-",
            "-", "<= %.2fx (once, not %dx)" % (ARRAY_ONCE_TARGET, w),
            growth / arr["array_bytes"] <= ARRAY_ONCE_TARGET)
        st = of["state"]
        add("arr.flags.writeable (frozen)", str(st["writeable"]), "pickled: %s"
            % op_["state"]["writeable"], "-", "False", st["writeable"] is False)
        add("arr.ctypes.data % 64 (frozen)", str(st["align64"]), "pickled: %s"
            % op_["state"]["align64"], "-", "0", st["align64"] == 0)
    table = benchutil.markdown_table(
        ["figure", "permafrost", "reference", "ratio", "target", "result"], rows)

    notes = [
        "Words: %s unique words of 3..14 letters (mean %.1f) from bench/trie_classes.py "
        "make_words(n, seed=%d): about 70%% a stem (one of n/8, Zipf-like) + letters, "
        "some with a common suffix, the rest random letters weighted as English; "
        "generated in %.1f s. The Python trie: %s Node objects, RSS +%s when built "
        "(insert of every word, GC off, %.2f s; with the GC on, its collections walk "
        "the growing trie and the build takes several times longer). pickle.dumps and "
        "freeze both read each Node's __dict__, which makes CPython 3.11+ turn the "
        "instance's inline attribute values into a real dict object: the Python trie "
        "in this process grows by one tracked dict per Node after the first of them."
        % (words_txt, trie["mean_len"], args.seed, trie["gen_s"], format(trie["nodes"], ","),
           fb(trie["build_rss"]), trie["build_ns"] / 1e9),
        "freeze(trie, path) and pickle.dumps(trie, protocol=5): medians of %d runs, "
        "order alternated, GC off. Image %s bytes, pickle %s bytes. Read back with "
        "permafrost.open(path, classes=[Trie, Node]): %s."
        % (args.repeat, format(trie["image_size"], ","), format(trie["pickle_size"], ","),
           trie["frozen_types"]),
        "Lookups in this process: one pass calls trie.lookup(w) for every word in a "
        "shuffled order (startswith: one prefix of 1..len letters of each word); the "
        "same loop and the same Trie methods for both tries, GC off, one untimed "
        "warm-up pass each, then medians of %d passes, order alternated. Both tries "
        "share the methods' code objects, so each pass starts from the interpreter's "
        "specialisation for the other kind of dict. Every answer was true in every "
        "pass; %s non-words checked absent in both, startswith agreeing: %s."
        % (args.repeat, format(trie["misses_checked"], ","),
           "yes" if not any("non-word" in x for x in wrong) else "NO"),
    ]
    if fz:
        notes.append(
            "Trie workers: %d spawn processes, alive together while measured; each loads "
            "the shuffled word list (pickle file) first, then (a) pickle.load of the "
            "trie's pickle file or (b) permafrost.open of its image, and looks up every "
            "word (GC on). Summed PSS before the trie (imports + word list): (a) %s, "
            "(b) %s. The image mapping in the (b) workers: RSS %s, PSS %s (file %s); "
            "the parent process %s."
            % (w, fb(pk["base_pss"]) if pk else "-", fb(fz["base_pss"]), fb(fz["image_rss"]),
               fb(fz["image_pss"]), fb(trie["image_size"]),
               "had unmapped it" if not trie["parent_mappings"]
               else "STILL MAPPED IT (%d mappings)" % trie["parent_mappings"]))
    if not pk:
        notes.append("Unpickled tries in %d workers: not measured, they would not fit "
                     "in the memory available." % w)
    if arr is None:
        notes.append("Array section not measured: numpy does not import here (%s)." % no_numpy)
    else:
        notes.append(
            "Array: %s float64 (numpy default_rng(%d).random, made in %.1f s), frozen as "
            "{\"emb\": arr, \"name\": \"x\"}: image %s bytes, pickle file %s bytes. Fresh "
            "workers: one spawn process at a time, numpy and permafrost imported before the "
            "timing; times per worker, frozen: %s; pickled: %s. The element a[%s] and "
            "d[\"name\"] were right in every worker. Frozen array read back: dtype %s, "
            "shape %s, owndata %s, in every worker alike: %s. PSS growth is measured by "
            "the worker itself right after the access (RSS growth %s; the image mapping's "
            "RSS %s: the kernel maps a touched file page's whole page-cache folio, up to "
            "2 MiB here)."
            % (format(arr["n"], ","), args.seed, arr["gen_s"], format(arr["image_size"], ","),
               format(arr["pickle_size"], ","), ", ".join(ns(x) for x in of["all_ns"]),
               ", ".join(ns(x) for x in op_["all_ns"]), format(arr["index"], ","), st["dtype"],
               st["shape"], st["owndata"], "yes" if of["states_agree"] else "NO",
               fb(of["rss_growth"]), fb(of["mapped_rss"])))
        notes.append(
            "Array sum: %d spawn workers each open the image (or pickle.load the dict), read "
            "a[0], then a.sum(), and wait until measured. Summed PSS before open %s, after "
            "the first access %s, after the sum %s; of which the image mapping: RSS %s, PSS "
            "%s. a.sum() took %s (median) in a frozen worker%s. Sums equal the parent's: "
            "%s."
            % (w, fb(sf["base_pss"]), fb(sf["access_pss"]), fb(sf["pss"]), fb(sf["image_rss"]),
               fb(sf["image_pss"]), ns(sf["sum_ns"]),
               (", %s in a pickled one" % ns(sp["sum_ns"])) if sp else "",
               "exactly" if sf["exact"] and (not sp or sp["exact"]) else "within 1e-12"))
    if wrong:
        notes.append("WRONG ANSWERS: " + "; ".join(wrong) + ".")
    notes.append("Whole run: %.0f s." % elapsed)

    version = getattr(pf, "__version__", "unknown")
    report = "\n".join(
        ["# permafrost objects and arrays benchmark, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
        + ["- " + line for line in benchutil.machine_description(
            [os.path.relpath(os.path.abspath(__file__))] + list(argv))]
        + ["- load average (1 min) at start / end: %s / %s" % (load_start, _loadavg()),
           "- permafrost: %s (%s)" % (version, os.path.dirname(pf.__file__)),
           "- sizes: --words %s, --array-mb %d, %d repeats, %d workers, %d fresh workers"
           % (words_txt, args.array_mb, args.repeat, w, args.fresh),
           "", table, "", "## Notes", ""]
        + ["- " + n for n in notes]) + "\n"
    print()
    print(table)
    print()
    for n in notes:
        print("- " + n)
    print()
    benchutil.write_results(args.out, "objects", when, report)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
