"""permafrost against the alternatives a user would pick, in one run
(bench/contenders.py lists them, bench/peerjobs.py runs their workers):

- the flat table: build time and size, lookup latency for existing and
  missing keys against the plain in-process dict, attach time (a fresh
  worker's first answer), a full iteration over the items;
- memory against the number of workers: the summed PSS of N = 1, 2, 4 ...
  --workers processes that each touch every entry, and the growth per
  added worker;
- throughput: lookups per second summed over N processes looking up
  random keys for --seconds, for the same N;
- prefix queries, where the contender has them;
- a nested "hash tree" (dict of dicts, bench/build.py's): 2-level lookup
  latency and the PSS of N workers;
- charts (PNG, matplotlib) next to the table.

    .venv/bin/python bench/peers.py [--size N] [--workers N] [--repeat N]
                                    [--seconds S] [--tree-size N] [--quick]
                                    [--only NAME,...] [--seed N] [--out DIR]

The table goes to bench/results/peers-<date>.md, the charts to
peers-<date>-*.png. Medians of --repeat runs; ratios are against the plain
dict measured in the same run.
"""

import argparse
import bisect
import datetime
import functools
import gc
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
import traceback
import types

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import contenders  # noqa: E402
import datasets  # noqa: E402
import memory  # noqa: E402
import peerjobs  # noqa: E402

LOOKUPS = 100_000          # keys per timed pass (fewer for the slow ones)
SLOW_LOOKUPS = 2_000
THROUGHPUT_KEYS = LOOKUPS  # distinct keys each throughput worker cycles through
PREFIX_QUERIES = 1_000     # prefixes per timed pass
SCAN_QUERIES = 5           # prefixes for the dict's full scan (the reference)
PREFIX_HEX = (2, 4)        # prefixes: the key's type ("user:") and 2 or 4 hex digits
TREE_LOOKUPS = 50_000      # 2-level lookups per timed pass
CHECKS = 1_000             # lookups and misses compared with the dict's
_MASK64 = (1 << 64) - 1


def log(msg):
    print("[peers] %s" % msg, file=sys.stderr, flush=True)


def time_lookups(get, keys, repeat):
    """Median ns per `get(k)` over `repeat` passes of `keys`, each pass over
    new copies of the keys (made untimed), so that no str hash is cached."""
    times = []
    for _ in range(repeat):
        keys = datasets.fresh_keys(keys)
        gc.disable()
        t0 = time.perf_counter_ns()
        for k in keys:
            get(k)
        t1 = time.perf_counter_ns()
        gc.enable()
        times.append((t1 - t0) / len(keys))
    return benchutil.median(times)


def time_tree_lookups(get, pairs, repeat):
    """Median ns per 2-level access `get(outer)[inner]`, new key copies
    per pass."""
    times = []
    for _ in range(repeat):
        pairs = list(zip(datasets.fresh_keys([p[0] for p in pairs]),
                         datasets.fresh_keys([p[1] for p in pairs])))
        gc.disable()
        t0 = time.perf_counter_ns()
        for ok, ik in pairs:
            get(ok)[ik]
        t1 = time.perf_counter_ns()
        gc.enable()
        times.append((t1 - t0) / len(pairs))
    return benchutil.median(times)


def time_queries(query, prefixes, repeat):
    """Median ns per `query(p)` (a list of the matching keys)."""
    times = []
    for _ in range(repeat):
        gc.disable()
        t0 = time.perf_counter_ns()
        for p in prefixes:
            query(p)
        t1 = time.perf_counter_ns()
        gc.enable()
        times.append((t1 - t0) / len(prefixes))
    return benchutil.median(times)


def missing_keys(keys):
    """Keys shaped like the table's, none of them in it."""
    return ["%s#missing" % k for k in keys]


def worker_counts(top):
    """1, 2, 4, ... below `top`, then `top`."""
    counts, n = [], 1
    while n < top:
        counts.append(n)
        n *= 2
    return counts + [top]


def growth(pss):
    """PSS added per worker, from the fewest to the most workers measured."""
    lo, hi = min(pss), max(pss)
    return (pss[hi] - pss[lo]) / (hi - lo) if hi > lo else None


# ----------------------------------------------------------------- workers


def run_attach(runner, c, spec, key, runs, kind):
    """Median ns over `runs` fresh workers of open + first answer; the set
    of the answers' checksums."""
    reports = [peerjobs.drive(runner, "attach", (type(c).__name__, spec, key, kind), 1)[0][0]
               for _ in range(runs)]
    return benchutil.median([r[1] for r in reports]), {r[2] for r in reports}


def run_memory_series(runner, c, spec, counts, kind):
    """For each N in `counts`: N workers that each touch every entry, their
    PSS summed while they are all alive. The iteration time is the median
    over the workers of the largest N."""
    out = {"pss": {}, "checksums": set(), "entries": set(), "iterate": None}
    for n in counts:
        measured = {}

        def measure(_phase, reports):
            measured["pss"] = memory.total_usage([r[0] for r in reports])["PSS"]

        reports = peerjobs.drive(runner, "memory", (type(c).__name__, spec, kind), n,
                                 measure)[0]
        out["pss"][n] = measured["pss"]
        out["checksums"] |= {r[1] for r in reports}
        out["entries"] |= {r[2] for r in reports}
        out["iterate"] = benchutil.median([r[3] for r in reports])
    return out


def run_idle(runner, c):
    """PSS of one worker with the reader's imports and nothing opened."""
    measured = {}

    def measure(_phase, reports):
        measured["pss"] = memory.total_usage([r[0] for r in reports])["PSS"]

    peerjobs.drive(runner, "idle", (type(c).__name__,), 1, measure)
    return measured["pss"]


def run_throughput_series(runner, c, spec, keys_path, seconds, counts):
    """For each N in `counts`: N workers looking up random keys for
    `seconds`, started together; lookups per second summed."""
    out = {"rate": {}, "checksums": set()}
    for n in counts:
        ready, done = peerjobs.drive(runner, "throughput",
                                     (type(c).__name__, spec, keys_path, seconds), n)
        out["checksums"] |= {r[1] for r in ready}
        out["rate"][n] = sum(r[1] * 1e9 / r[2] for r in done)
    return out


# ----------------------------------------------------------------- data


def prefix_sets(sorted_keys, rng):
    """For each length in PREFIX_HEX: PREFIX_QUERIES prefixes cut from
    random keys (so each has at least one match) and their answers."""
    out = []
    for hex_digits in PREFIX_HEX:
        prefixes = []
        for _ in range(PREFIX_QUERIES):
            k = sorted_keys[rng.randrange(len(sorted_keys))]
            prefixes.append(k[:k.index(":") + 1 + hex_digits])
        answers = []
        for p in prefixes:
            i = bisect.bisect_left(sorted_keys, p)
            j = i
            while j < len(sorted_keys) and sorted_keys[j].startswith(p):
                j += 1
            answers.append(sorted_keys[i:j])
        mean = sum(map(len, answers)) / len(answers)
        out.append(("type + %d hex digits (%.1f keys)" % (hex_digits, mean),
                    prefixes, answers))
    return out


def tree_data(n_outer, seed):
    """build.py's hash tree, random 2-level key pairs (fresh objects) with
    their expected values, and the checksum of the whole tree."""
    import build
    tree = build.build_tree(n_outer)
    rng = random.Random(seed)
    ids = []
    for _ in range(min(TREE_LOOKUPS, 30 * n_outer)):
        o = rng.randrange(n_outer)
        ids.append((o, rng.randrange(build.inner_count(o))))
    pairs = [(build.outer_key(o), build.inner_key(o, j)) for o, j in ids]
    expected = [build.inner_value(o, j) for o, j in ids]
    checksum = sum(datasets.mapping_checksum(inner) for inner in tree.values()) & _MASK64
    inner = build.inner_total(n_outer)
    return types.SimpleNamespace(tree=tree, pairs=pairs, expected=expected,
                                 checksum=checksum, inner=inner, n=n_outer)


# ----------------------------------------------------------------- contenders


def measure_flat(c, run):
    """Every figure of one contender on the flat table."""
    folder = os.path.join(run.tmp, type(c).__name__)
    os.makedirs(folder)
    t0 = time.perf_counter()
    spec = c.build(run.table, folder)
    res = {"name": c.name, "build": time.perf_counter() - t0, "size": c.size(spec)}
    runner = None
    try:
        reader = c.open_reader(spec)
        slow = getattr(c, "slow", False)
        keys = run.fresh[:SLOW_LOOKUPS] if slow else run.fresh
        res["hit"] = time_lookups(reader.get, keys, run.repeat)
        res["miss"] = time_lookups(reader.get, run.missing[:len(keys)], run.repeat)
        right = all(reader.get(k) == run.table[k] for k in run.sample[:CHECKS])
        right = right and all(reader.get(k) is None for k in run.missing[:CHECKS])
        if c.prefix:
            res["prefix"], res["prefix_right"] = measure_prefix(c, reader, run)
            right = right and res["prefix_right"]
        del reader
        runner = peerjobs.make_runner(c, run.table, folder, spec)
        log("%s: attach" % c.name)
        res["attach"], sums = run_attach(runner, c, spec, run.fresh[0], max(3, run.repeat), "flat")
        right = right and sums == {datasets.value_checksum(run.table[run.fresh[0]])}
        if c.skip_memory:
            run.notes.append("%s: memory and iteration not run: %s (%s entries, about %s "
                             "each)." % (c.name, c.skip_memory, format(len(run.table), ","),
                                          benchutil.fmt_time_ns(res["hit"])))
        elif not run.mem_skip:
            log("%s: memory of %s workers" % (c.name, run.counts))
            mem = run_memory_series(runner, c, spec, run.counts, "flat")
            res["mem"] = mem
            res["idle"] = run_idle(runner, c)
            right = (right and mem["checksums"] == {run.expected}
                     and mem["entries"] == {len(run.table)})
        log("%s: throughput of %s workers" % (c.name, run.counts))
        thr = run_throughput_series(runner, c, spec, run.keys_path, run.seconds, run.counts)
        res["rate"] = thr["rate"]
        right = right and thr["checksums"] == {run.keys_checksum}
        res["right"] = right
    finally:
        if runner is not None:
            runner.close()
        c.close(spec)
    return res


def measure_prefix(c, reader, run):
    """ns per prefix query for each prefix set; whether every answer (as a
    set of keys, in any order) is right."""
    query = functools.partial(c.prefix_query, reader)
    out, right = {}, True
    for label, prefixes, answers in run.prefixes:
        right = right and all(sorted(query(p)) == a for p, a in zip(prefixes, answers))
        out[label] = time_queries(query, prefixes, run.repeat)
    return out, right


def measure_tree(c, run):
    """Build, size, 2-level lookups and the PSS of N workers on the tree."""
    t = run.tree
    folder = os.path.join(run.tmp, "tree-" + type(c).__name__)
    os.makedirs(folder)
    t0 = time.perf_counter()
    spec = c.build(t.tree, folder)
    res = {"name": c.name, "build": time.perf_counter() - t0, "size": c.size(spec)}
    runner = None
    try:
        reader = c.open_reader(spec)
        res["lookup"] = time_tree_lookups(reader.get, t.pairs, run.repeat)
        right = all(reader.get(ok)[ik] == v for (ok, ik), v in zip(t.pairs[:CHECKS], t.expected))
        right = right and reader.get("node-missing") is None
        del reader
        if not run.mem_skip:
            runner = peerjobs.make_runner(c, t.tree, folder, spec)
            log("%s: tree, memory of %s workers" % (c.name, run.counts))
            mem = run_memory_series(runner, c, spec, run.counts, "tree")
            res["mem"] = mem
            right = right and mem["checksums"] == {t.checksum} and mem["entries"] == {t.n}
        res["right"] = right
    finally:
        if runner is not None:
            runner.close()
        c.close(spec)
    return res


def run_all(run, only):
    """Every contender that is available, on both data sets."""
    flat, tree = [], []
    for c in contenders.all_contenders():
        if only and not any(o.lower() in c.name.lower() for o in only):
            continue
        why = c.available()
        if not why:
            try:
                c.start(run.tmp)
            except Exception as e:  # a package that installs but does not start
                why = "did not start here: %s" % _first_line(e)
        if why:
            run.skipped.append("%s: %s" % (c.name, why))
            continue
        log(c.name)
        run.notes.append("%s: %s." % (c.name, c.note))
        for data, measure, out in (("flat", measure_flat, flat), ("tree", measure_tree, tree)):
            if data == "tree" and not c.tree:
                run.tree_notes.append("%s: %s." % (c.name, c.tree_note))
                continue
            try:
                out.append(measure(c, run))
            except Exception as e:
                log(traceback.format_exc())
                run.failed.append("%s (%s data): %s" % (c.name, data, _first_line(e)))
    return flat, tree


def _first_line(e):
    text = str(e).strip().splitlines()
    return "%s: %s" % (type(e).__name__, text[-1] if text else "")


# ----------------------------------------------------------------- report


def _bytes(n):
    return "-" if n is None else benchutil.fmt_bytes(n)


def _rate(r):
    if r is None:
        return "-"
    if r >= 1e6:
        return "%.2f M/s" % (r / 1e6)
    if r >= 1e3:
        return "%.0f k/s" % (r / 1e3)
    return "%.0f /s" % r


def _mem(res, n):
    mem = res.get("mem")
    return _bytes(mem["pss"][n]) if mem else "-"


def _growth(res):
    mem = res.get("mem")
    g = growth(mem["pss"]) if mem else None
    return _bytes(g) if g is not None else "-"


def main_table(flat, run):
    top = run.counts[-1]
    header = ["contender", "build", "size", "lookup (existing)", "vs dict", "lookup (missing)",
              "attach: first answer in a fresh worker", "iterate all items",
              "PSS of %d workers" % top, "PSS per added worker",
              "lookups/s, %d workers" % top, "answers right"]
    rows = [["plain dict, in-process (the reference)", "-", "-",
             benchutil.fmt_time_ns(run.dict_hit), "1.00x", benchutil.fmt_time_ns(run.dict_miss),
             "-", "%.2f s" % run.dict_iter, "-", "-", "-", "yes"]]
    for r in flat:
        mem = r.get("mem")
        rows.append([r["name"], "%.2f s" % r["build"], _bytes(r["size"]),
                     benchutil.fmt_time_ns(r["hit"]), "%.2fx" % (r["hit"] / run.dict_hit),
                     benchutil.fmt_time_ns(r["miss"]), benchutil.fmt_time_ns(r["attach"]),
                     "%.2f s" % mem["iterate"] if mem else "-", _mem(r, top), _growth(r),
                     _rate(r["rate"].get(top)), "yes" if r["right"] else "NO"])
    return benchutil.markdown_table(header, rows)


def memory_table(results, run, idle=True):
    header = ["contender"] + (["idle worker"] if idle else [])
    header += ["PSS, %d worker%s" % (n, "" if n == 1 else "s") for n in run.counts]
    header += ["per added worker"]
    rows = []
    for r in results:
        if not r.get("mem"):
            continue
        row = [r["name"]] + ([_bytes(r.get("idle"))] if idle else [])
        rows.append(row + [_mem(r, n) for n in run.counts] + [_growth(r)])
    return benchutil.markdown_table(header, rows)


def throughput_table(flat, run):
    top = run.counts[-1]
    header = ["contender"] + ["%d worker%s" % (n, "" if n == 1 else "s") for n in run.counts]
    header += ["%d workers / 1" % top]
    rows = []
    for r in flat:
        rate = r["rate"]
        rows.append([r["name"]] + [_rate(rate.get(n)) for n in run.counts]
                    + ["%.2fx" % (rate[top] / rate[1]) if rate.get(1) else "-"])
    return benchutil.markdown_table(header, rows)


def prefix_table(flat, run):
    labels = [label for label, _, _ in run.prefixes]
    header = ["contender"] + ["prefix: %s" % label for label in labels] + ["answers right"]
    rows = [["plain dict: scan every key (the reference)"]
            + [benchutil.fmt_time_ns(run.scan[label]) for label in labels] + ["yes"]]
    for r in flat:
        if "prefix" in r:
            rows.append([r["name"]] + [benchutil.fmt_time_ns(r["prefix"][label])
                                       for label in labels]
                        + ["yes" if r["prefix_right"] else "NO"])
    return benchutil.markdown_table(header, rows)


def tree_table(tree, run):
    header = ["contender", "build", "size", "2-level lookup", "vs dict"]
    header += ["PSS, %d worker%s" % (n, "" if n == 1 else "s") for n in run.counts]
    header += ["per added worker", "answers right"]
    rows = [["plain dict of dicts, in-process (the reference)", "-", "-",
             benchutil.fmt_time_ns(run.tree_dict), "1.00x"]
            + ["-"] * len(run.counts) + ["-", "yes"]]
    for r in tree:
        rows.append([r["name"], "%.2f s" % r["build"], _bytes(r["size"]),
                     benchutil.fmt_time_ns(r["lookup"]), "%.2fx" % (r["lookup"] / run.tree_dict)]
                    + [_mem(r, n) for n in run.counts] + [_growth(r),
                                                          "yes" if r["right"] else "NO"])
    return benchutil.markdown_table(header, rows)


# ----------------------------------------------------------------- charts


def write_charts(stem, flat, tree, run):
    """PNG charts next to the table: memory against workers (flat and
    tree), lookup latency and attach time bars (log scale), throughput
    against workers. Returns [(title, file name)]; [] without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        run.notes.append("Charts: not drawn, matplotlib is not installed "
                         "(pip install matplotlib, or the bench extra).")
        return []
    out = []

    def save(fig, suffix, title):
        path = "%s-%s.png" % (stem, suffix)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append((title, os.path.basename(path)))

    def lines(results, key, suffix, title, ylabel, scale=1.0):
        shown = [r for r in results if r.get(key)]
        if not shown:
            return
        fig, ax = plt.subplots(figsize=(10, 5.5))
        markers = "osD^vPX*<>"
        for i, r in enumerate(shown):
            series = r[key]["pss"] if key == "mem" else r[key]
            ns = sorted(series)
            ax.plot(ns, [series[n] / scale for n in ns], marker=markers[i % len(markers)],
                    color=plt.cm.tab20(i % 20), label=r["name"],
                    linewidth=2.5 if r["name"].startswith("permafrost") else 1.2)
        ax.set_xlabel("worker processes")
        ax.set_xticks(run.counts)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, suffix, title)

    def bars(names, values, suffix, title, xlabel, fmt):
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
        colors = ["tab:orange" if n.startswith("permafrost") else
                  "tab:gray" if "reference" in n else "tab:blue" for n in names]
        ax.barh(range(len(names)), values, color=colors)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        for i, v in enumerate(values):
            ax.text(v, i, " " + fmt(v), va="center", fontsize=7)
        ax.grid(True, axis="x", alpha=0.3)
        save(fig, suffix, title)

    mib = 1024 * 1024
    lines(flat, "mem", "memory", "Summed PSS of N workers that touch every entry "
          "(%s entries)" % format(len(run.table), ","), "MiB", mib)
    lines(tree, "mem", "tree-memory", "Hash tree: summed PSS of N workers "
          "(%s outer keys)" % format(run.tree.n, ","), "MiB", mib)
    lines(flat, "rate", "throughput", "Lookups per second, summed over N workers",
          "lookups/s")
    names = ["plain dict (reference)"] + [r["name"] for r in flat]
    bars(names, [run.dict_hit] + [r["hit"] for r in flat], "lookup",
         "Lookup latency, existing keys (log scale)", "ns per lookup",
         benchutil.fmt_time_ns)
    bars([r["name"] for r in flat], [r["attach"] for r in flat], "attach",
         "Attach: a fresh worker's first answer (log scale)", "ns",
         benchutil.fmt_time_ns)
    return out


# ----------------------------------------------------------------- main


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 2
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2_000_000)
    ap.add_argument("--workers", type=int, default=max(2, cores),
                    help="the most workers (memory and throughput are measured for "
                         "1, 2, 4 ... up to this; default: the usable cores, at least 2)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="throughput: seconds each worker looks keys up")
    ap.add_argument("--tree-size", type=int, default=50_000,
                    help="outer keys of the hash tree (10..50 inner entries each)")
    ap.add_argument("--quick", action="store_true",
                    help="--size 200000 --repeat 3 --seconds 0.5 --tree-size 5000")
    ap.add_argument("--only", default=None,
                    help="comma-separated parts of contender names: run only those")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(_HERE, "results"))
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.repeat, args.seconds, args.tree_size = 200_000, 3, 0.5, 5_000
    benchutil.import_permafrost()
    when = datetime.datetime.now()
    started = time.perf_counter()
    run = types.SimpleNamespace(repeat=args.repeat, seconds=args.seconds,
                                counts=worker_counts(max(1, args.workers)),
                                mem_skip=memory.unsupported_reason(),
                                notes=[], tree_notes=[], skipped=[], failed=[])

    log("building the %s-entry dict" % format(args.size, ","))
    table = run.table = datasets.lookup_dict(args.size, args.seed)
    run.expected = datasets.table_checksum(table, table.keys()) & _MASK64
    run.sample = datasets.sample_keys(list(table), min(args.size, LOOKUPS), seed=1)
    run.fresh = datasets.fresh_keys(run.sample)
    run.missing = missing_keys(run.fresh)
    run.dict_hit = time_lookups(table.get, run.fresh, args.repeat)
    run.dict_miss = time_lookups(table.get, run.missing, args.repeat)
    t0 = time.perf_counter()
    for _k, v in table.items():
        datasets.value_checksum(v)
    run.dict_iter = time.perf_counter() - t0
    rng = random.Random(args.seed + 2)
    run.prefixes = prefix_sets(sorted(table), rng)
    run.scan = {}
    for label, prefixes, _ in run.prefixes:
        run.scan[label] = time_queries(
            lambda p: [k for k in table if k.startswith(p)], prefixes[:SCAN_QUERIES],
            min(3, args.repeat))
    log("building the hash tree: %s outer keys" % format(args.tree_size, ","))
    run.tree = tree_data(args.tree_size, args.seed + 3)
    run.tree_dict = time_tree_lookups(run.tree.tree.get, run.tree.pairs, args.repeat)

    tmp = run.tmp = tempfile.mkdtemp(prefix="pf-peers-", dir=args.tmpdir)
    try:
        throughput_keys = run.sample[:THROUGHPUT_KEYS]
        run.throughput_keys = len(throughput_keys)
        run.keys_checksum = sum(datasets.value_checksum(table[k])
                                for k in throughput_keys) & _MASK64
        run.keys_path = os.path.join(tmp, "keys.pickle")
        with open(run.keys_path, "wb") as f:
            pickle.dump(throughput_keys, f, protocol=5)
        flat, tree = run_all(run, args.only.split(",") if args.only else None)
    finally:
        contenders.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    stem = benchutil.results_stem(args.out, "peers", when)
    os.makedirs(args.out, exist_ok=True)
    charts = write_charts(stem, flat, tree, run)
    text = report(run, args, argv, when, flat, tree, charts, started)
    print(text)
    benchutil.write_results(args.out, "peers", when, text)
    return 0


def report(run, args, argv, when, flat, tree, charts, started):
    top = run.counts[-1]
    lines = ["# permafrost and its peers, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
    lines += ["- %s" % x for x in benchutil.machine_description(["bench/peers.py"] + argv)]
    lines += ["- data: lookup_dict(%s): str keys of 13..16 chars; values one third each "
              "short str / int / (int, float, str)" % format(args.size, ","),
              "- hash tree: build.build_tree(%s): str -> dict of 10..50 str -> (str, int, "
              "float), %s inner entries" % (format(run.tree.n, ","), format(run.tree.inner, ",")),
              "- workers: N = %s; throughput: %g s per worker"
              % (", ".join(map(str, run.counts)), run.seconds), ""]
    lines += [main_table(flat, run), ""]
    if run.mem_skip:
        lines += ["Memory: %s" % run.mem_skip, ""]
    else:
        lines += ["## Memory against the number of workers", "",
                  "Summed PSS of N workers that each touch every entry; the idle worker "
                  "is one worker with the reader's imports and nothing opened.", "",
                  memory_table(flat, run), ""]
    lines += ["## Throughput: lookups per second summed over N workers", "",
              throughput_table(flat, run), ""]
    lines += ["## Prefix queries: all the keys that start with a prefix", "",
              prefix_table(flat, run), ""]
    lines += ["## Hash tree: a dict of dicts", "", tree_table(tree, run), ""]
    if charts:
        lines += ["## Charts", ""]
        lines += ["![%s](%s)" % (title, name) for title, name in charts]
        lines += [""]
    lines += ["Notes:", ""]
    lines += ["- Lookups: `get(k)` per key, the value decoded, median of %d passes over %s "
              "fresh key objects (%s for the slow ones) in random order; missing keys are "
              "the same keys with a suffix." % (run.repeat, format(len(run.fresh), ","),
                                               format(SLOW_LOOKUPS, ","))]
    lines += ["- Attach: median over %d fresh workers of open + first lookup (imports not "
              "timed; for fork: from before the fork to the first answer)."
              % max(3, run.repeat)]
    if not run.mem_skip:
        lines += ["- Iterate and PSS: N workers each open the store and decode every entry; "
                  "PSS summed while they are all alive (an owner, holder or server process "
                  "is not counted); iterate is the median worker of N = %d. Per added "
                  "worker: (PSS of %d - PSS of %d) / %d." % (
                      top, top, run.counts[0], max(1, top - run.counts[0]))]
    lines += ["- Throughput: each worker cycles through the same %s keys in a random "
              "order for %g s, in chunks of %s made anew (untimed) so that no str hash is "
              "cached, GC off; the workers start together; the sum over the workers of "
              "lookups / time spent in lookups." % (
                  format(run.throughput_keys, ","), run.seconds, format(peerjobs.CHUNK, ","))]
    lines += ["- Every timed pass over keys uses new copies of them (no cached str hash), "
              "as keys read from input are."]
    lines += ["- Prefix queries: median of %d passes over %s prefixes per length (%d for "
              "the dict's scan), each query's keys as a list; answers compared with a "
              "sorted list's." % (run.repeat, format(PREFIX_QUERIES, ","), SCAN_QUERIES)]
    lines += ["- Hash tree: `get(outer)[inner]` over %s fresh random pairs; stores of "
              "bytes hold each inner dict pickled under its outer key, so a 2-level "
              "lookup unpickles one inner dict; workers touch every inner value."
              % format(len(run.tree.pairs), ",")]
    lines += ["- Workers: spawn processes, except fork (forked from a holder process that "
              "loaded the table) and Ray (Ray actors)."]
    lines += ["- %s" % n for n in run.notes]
    lines += ["- Hash tree, %s" % n for n in run.tree_notes]
    lines += ["- Skipped: %s" % s for s in run.skipped]
    lines += ["- FAILED: %s" % s for s in run.failed]
    lines += ["- Whole run: %.0f s." % (time.perf_counter() - started)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
