#!/usr/bin/env python3
"""Load: P processes x T threads read one image at once, and every answer
is checked (the large-size companion of tests/test_faults.py's
processes-x-threads test).

    python bench/stress.py [--size 5000000] [--processes P] [--threads T]
                           [--seconds 20] [--quick] [--out bench/results]

The image holds a dict of `--size` str keys -> (int, str, float, tuple)
values computed from the key's number, built with permafrost.Builder; a list
of every 97th value and a nested dict are read too. Each thread draws random
numbers, looks the key up (or a missing key), and compares the answer with
the value computed again; iterating slices of the list view, `in` tests and
nested lookups are mixed in. The run reports lookups/s (summed), checked
answers, wrong answers (must be 0), errors (must be 0), and the summed PSS
of the live processes. Exit status 1 if any answer was wrong or any thread
failed; the throughput never gates anything.
"""

import argparse
import datetime
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import memory  # noqa: E402

MIB = 1 << 20


def key_of(i):
    return "key-%010d" % i


def value_of(i):
    return (i, "tag-%d" % (i % 5003), i / 8, (i % 7, "x" * (i % 5)))


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def build(path, n):
    import permafrost as pf

    with pf.Builder(path) as b:
        for i in range(n):
            b[key_of(i)] = value_of(i)
        with b.list("__every_97th__") as lst:
            for i in range(0, n, 97):
                lst.append(value_of(i))
        with b.dict("__nested__") as sub:
            for g in range(100):
                sub[g] = {key_of(j): value_of(j) for j in range(g * 10, g * 10 + 10)}


def reader(view, n, seconds, seed, out):
    """One thread, reading the process's view: (lookups, checked, wrong,
    first error)."""
    rng = random.Random(seed)
    every = view["__every_97th__"]
    nested = view["__nested__"]
    lookups = checked = wrong = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            for _ in range(256):
                r = rng.random()
                if r < 0.80:
                    i = rng.randrange(n)
                    if view[key_of(i)] != value_of(i):
                        wrong += 1
                elif r < 0.90:
                    i = n + rng.randrange(n)
                    if key_of(i) in view or view.get(key_of(i)) is not None:
                        wrong += 1
                elif r < 0.97:
                    j = rng.randrange(len(every))
                    if every[j] != value_of(97 * j):
                        wrong += 1
                    k = min(len(every), j + 5)
                    if list(every[j:k]) != [value_of(97 * x) for x in range(j, k)]:
                        wrong += 1
                else:
                    g = rng.randrange(100)
                    j = g * 10 + rng.randrange(10)
                    if nested[g][key_of(j)] != value_of(j):
                        wrong += 1
                lookups += 1
                checked += 1
        out.append((lookups, checked, wrong, None))
    except BaseException as e:  # reported, never silent
        out.append((lookups, checked, wrong, repr(e)))


def process_main(path, n, threads, seconds, seed, conn):
    """A worker process: T threads reading, then it reports and waits (so
    that its memory is measured while alive)."""
    import permafrost as pf

    view = pf.open(path)  # one view for all threads; mapped while measured
    out = []
    seed = seed * 1_000_003 + os.getpid()
    ts = [threading.Thread(target=reader, args=(view, n, seconds, seed * 1000 + t, out))
          for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    conn.send((os.getpid(), out, elapsed))
    conn.recv()
    del view


def main(argv=None):
    ap = argparse.ArgumentParser(description="permafrost load: processes x threads")
    ap.add_argument("--size", type=int, default=5_000_000)
    ap.add_argument("--processes", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--quick", action="store_true", help="--size 200000 --seconds 3")
    ap.add_argument("--out", default=os.path.join(_HERE, "results"))
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.seconds = 200_000, 3
    benchutil.import_permafrost()
    tmp = tempfile.mkdtemp(prefix="pf-stress-", dir=args.tmpdir)
    try:
        path = os.path.join(tmp, "stress.pf")
        log("building %d entries" % args.size)
        t0 = time.perf_counter()
        build(path, args.size)
        build_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        log("image %s in %.1f s; %d processes x %d threads for %.0f s"
            % (benchutil.fmt_bytes(size), build_s, args.processes, args.threads, args.seconds))
        ctx = multiprocessing.get_context("spawn")

        def measure(pids):
            return memory.total_usage(pids), memory.total_mapping_usage(pids, path)

        reports, (usage, mapped) = benchutil.measure_live_workers(
            ctx, process_main, (path, args.size, args.threads, args.seconds, 0),
            args.processes, measure)
        threads = [r for rep in reports for r in rep[1]]
        lookups = sum(t[0] for t in threads)
        checked = sum(t[1] for t in threads)
        wrong = sum(t[2] for t in threads)
        errors = [t[3] for t in threads if t[3]]
        elapsed = max(rep[2] for rep in reports)
        rows = [
            ["image", "%s, %d entries (built in %.1f s)" % (benchutil.fmt_bytes(size), args.size, build_s)],
            ["readers", "%d processes x %d threads, %.0f s" % (args.processes, args.threads, args.seconds)],
            ["operations, summed", "%d (%.2f M/s)" % (lookups, lookups / elapsed / 1e6)],
            ["answers checked", "%d" % checked],
            ["wrong answers", "%d" % wrong],
            ["thread errors", "%d%s" % (len(errors), (": " + errors[0]) if errors else "")],
            ["PSS of the processes, summed", benchutil.fmt_bytes(usage["PSS"])],
            ["of which the image mapping", "%s (file %s)" % (benchutil.fmt_bytes(mapped["PSS"]),
                                                        benchutil.fmt_bytes(size))],
        ]
        table = benchutil.markdown_table(["figure", "value"], rows)
        print(table)
        when = datetime.datetime.now()
        lines = ["# permafrost load: processes x threads, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
        lines += ["- %s" % line for line in benchutil.machine_description(sys.argv[1:])]
        lines += ["", table, "",
                  "- Each thread: 80% lookups of random existing keys, 10% of missing keys "
                  "(`in` and `get`), 7% list items and 5-item slices, 3% nested lookups; "
                  "every answer compared with the value computed again.",
                  "- Threads of one process share its GIL, so they add checking load, not "
                  "throughput; the processes share one mapped image."]
        benchutil.write_results(args.out, "stress", when, "\n".join(lines) + "\n")
        return 1 if wrong or errors else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
