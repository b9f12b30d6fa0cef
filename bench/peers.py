"""permafrost against the alternatives a user would pick, in one run
(bench/contenders.py lists them): build time and size, lookup latency for
existing and missing keys against the plain in-process dict, attach time
(a fresh worker's first answer), a full iteration over the items, and the
summed PSS of worker processes that each touch every entry.

    .venv/bin/python bench/peers.py [--size N] [--workers N] [--repeat N] [--quick]

The table goes to bench/results/peers-<date>.md. Medians of --repeat runs;
ratios are against the plain dict measured in the same run.
"""

import argparse
import datetime
import gc
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import contenders  # noqa: E402
import datasets  # noqa: E402
import memory  # noqa: E402

LOOKUPS = 100_000          # keys per timed pass (fewer for the slow ones)
SLOW_LOOKUPS = 2_000
_MASK64 = (1 << 64) - 1


def log(msg):
    print("[peers] %s" % msg, file=sys.stderr, flush=True)


def time_lookups(get, keys, repeat):
    """Median ns per `get(k)` over `repeat` passes of `keys`."""
    times = []
    for _ in range(repeat):
        gc.disable()
        t0 = time.perf_counter_ns()
        for k in keys:
            get(k)
        t1 = time.perf_counter_ns()
        gc.enable()
        times.append((t1 - t0) / len(keys))
    return benchutil.median(times)


def missing_keys(keys):
    """Keys shaped like the table's, none of them in it."""
    return ["%s#missing" % k for k in keys]


# ----------------------------------------------------------------- workers


def attach_worker(cls_name, spec, key, conn):
    """In a fresh spawn process: the time from opening the store to the
    first answer (imports done first, not timed)."""
    contender = getattr(contenders, cls_name)()
    contender.available()
    import permafrost  # noqa: F401 - imported before timing, as a worker would
    gc.disable()
    t0 = time.perf_counter_ns()
    reader = contender.open_reader(spec)
    value = reader.get(key)
    t1 = time.perf_counter_ns()
    conn.send((t1 - t0, datasets.value_checksum(value)))
    conn.close()


def memory_worker(cls_name, spec, conn):
    """Open the store, touch every entry (iterate the items, decode every
    value), report, then wait while the parent reads this process's
    memory."""
    contender = getattr(contenders, cls_name)()
    reader = contender.open_reader(spec)
    t0 = time.perf_counter()
    acc = n = 0
    for _, value in reader.items():
        acc += datasets.value_checksum(value)
        n += 1
    seconds = time.perf_counter() - t0
    gc.collect()
    conn.send((os.getpid(), acc & _MASK64, n, seconds))
    conn.recv()
    conn.close()


def run_attach(ctx, contender, spec, key, runs):
    times = []
    for _ in range(runs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=attach_worker, args=(type(contender).__name__, spec, key, child))
        p.start()
        child.close()
        ns, _ = parent.recv()
        p.join(60)
        times.append(ns)
    return benchutil.median(times)


def run_memory(ctx, contender, spec, workers):
    reports, total = benchutil.measure_live_workers(
        ctx, memory_worker, (type(contender).__name__, spec), workers, memory.total_usage)
    return {"pss": total["PSS"], "checksums": {r[1] for r in reports},
            "entries": {r[2] for r in reports},
            "iterate": benchutil.median([r[3] for r in reports])}


# ----------------------------------------------------------------- main


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="--size 200000 --repeat 3")
    ap.add_argument("--out", default=os.path.join(_HERE, "results"))
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args(argv)
    size, repeat = (200_000, 3) if args.quick else (args.size, args.repeat)
    pf = benchutil.import_permafrost()
    ctx = multiprocessing.get_context("spawn")
    when = datetime.datetime.now()
    started = time.perf_counter()
    mem_skip = memory.unsupported_reason()

    log("building the %s-entry dict" % format(size, ","))
    table = datasets.lookup_dict(size, 0)
    expected = datasets.table_checksum(table, table.keys()) & _MASK64
    sample = datasets.sample_keys(list(table), min(size, LOOKUPS), seed=1)
    fresh = datasets.fresh_keys(sample)
    missing = missing_keys(fresh)
    dict_hit = time_lookups(table.get, fresh, repeat)
    dict_miss = time_lookups(table.get, missing, repeat)
    t0 = time.perf_counter()
    for _k, v in table.items():
        datasets.value_checksum(v)
    dict_iter = time.perf_counter() - t0

    rows, notes, skipped = [], [], []
    tmp = tempfile.mkdtemp(prefix="permafrost-peers-", dir=args.tmpdir)
    try:
        for c in contenders.all_contenders():
            why = c.available()
            if why:
                skipped.append("%s: %s" % (c.name, why))
                continue
            log(c.name)
            folder = os.path.join(tmp, type(c).__name__)
            os.makedirs(folder)
            t0 = time.perf_counter()
            spec = c.build(table, folder)
            build_s = time.perf_counter() - t0
            try:
                reader = c.open_reader(spec)
                slow = isinstance(c, contenders.ManagerDict)
                keys = fresh[:SLOW_LOOKUPS] if slow else fresh
                hit = time_lookups(reader.get, keys, repeat)
                miss = time_lookups(reader.get, missing[:len(keys)], repeat)
                right = all(reader.get(k) == table[k] for k in sample[:1000])
                right = right and all(reader.get(k) is None for k in missing[:1000])
                del reader
                attach = run_attach(ctx, c, spec, fresh[0], max(3, repeat))
                if slow:
                    mem = None
                    notes.append("%s: memory and iteration not run: touching every entry "
                                 "through the proxy is %s round trips of about %s each."
                                 % (c.name, format(size, ","), benchutil.fmt_time_ns(hit)))
                elif mem_skip:
                    mem = None
                else:
                    mem = run_memory(ctx, c, spec, args.workers)
                    right = right and mem["checksums"] == {expected} and mem["entries"] == {size}
                rows.append([c.name, "%.2f s" % build_s, _bytes(c.size(spec)),
                             benchutil.fmt_time_ns(hit), "%.2fx" % (hit / dict_hit),
                             benchutil.fmt_time_ns(miss), benchutil.fmt_time_ns(attach),
                             "%.2f s" % mem["iterate"] if mem else "-",
                             benchutil.fmt_bytes(mem["pss"]) if mem else "-",
                             "yes" if right else "NO"])
                notes.append("%s: %s." % (c.name, c.note))
            finally:
                c.close(spec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = ["contender", "build", "size", "lookup (existing)", "vs dict",
              "lookup (missing)", "attach: first answer in a fresh worker",
              "iterate all items", "PSS of %d workers" % args.workers, "answers right"]
    rows.insert(0, ["plain dict, in-process (the reference)", "-", "-",
                    benchutil.fmt_time_ns(dict_hit), "1.00x", benchutil.fmt_time_ns(dict_miss),
                    "-", "%.2f s" % dict_iter, "-", "yes"])
    lines = ["# permafrost and its peers, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
    lines += ["- %s" % x for x in benchutil.machine_description(["bench/peers.py"] + argv)]
    lines += ["- data: lookup_dict(%s): str keys of 13..16 chars; values one third each "
              "short str / int / (int, float, str)" % format(size, ","), ""]
    lines += [benchutil.markdown_table(header, rows), "", "Notes:", ""]
    lines += ["- Lookups: `get(k)` per key, the value decoded, median of %d passes over %s "
              "fresh key objects (%s for the slow ones) in random order; missing keys are "
              "the same keys with a suffix." % (repeat, format(len(fresh), ","),
                                               format(SLOW_LOOKUPS, ","))]
    lines += ["- Attach: median over %d fresh spawn processes of open + first lookup "
              "(imports not timed)." % max(3, repeat)]
    lines += ["- Iterate and PSS: %d spawn workers each open the store and decode every "
              "entry; PSS summed while they are alive (an owner or server process is not "
              "counted)." % args.workers if not mem_skip else "- Memory: %s" % mem_skip]
    lines += ["- %s" % n for n in notes]
    lines += ["- Skipped: %s" % s for s in skipped]
    lines += ["- Whole run: %.0f s." % (time.perf_counter() - started)]
    text = "\n".join(lines) + "\n"
    print(text)
    benchutil.write_results(args.out, "peers", when, text)
    return 0


def _bytes(n):
    return "-" if n is None else benchutil.fmt_bytes(n)


if __name__ == "__main__":
    sys.exit(main())
