#!/usr/bin/env python3
"""The core benchmark of permafrost: every figure against its plain-Python
reference measured in the same run, medians of repeats, with the targets.

    python bench/run.py [--size 2000000] [--repeat 5] [--quick] [--out bench/results]

Prints a Markdown table (figure, permafrost, reference, ratio, target,
PASS/FAIL) and writes it, with the machine description and notes, to
OUT/core-<date>-<time>.md. docs/BENCHMARKS.md says what each row means.
Benchmarks never gate CI: the exit status is 0 whatever the targets say
(it is 1 only if a result was wrong, e.g. checksums differ).
"""

import argparse
import datetime
import gc
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import datasets  # noqa: E402
import memory  # noqa: E402
import workers  # noqa: E402

MIB = 1024 * 1024
SMALL_SIZE = 10_000
LOOKUP_SAMPLE = 1_000_000       # keys per lookup pass (a random sample)
MEMORY_WORKERS = 2
PER_WORKER_BUDGET = 15 * MIB    # PSS target: image + this per worker

# The timed loop. Each measured series gets its own compiled copy of this
# source, so that the interpreter's per-code-object specialization for one
# mapping type never slows down (or speeds up) the other: the same loop code
# for both, and nothing subtracted.
_LOOP_SRC = """
def lookup_loop(mapping, keys):
    t0 = perf_counter_ns()
    for k in keys:
        mapping[k]
    return perf_counter_ns() - t0
"""


def make_lookup_loop():
    namespace = {"perf_counter_ns": time.perf_counter_ns}
    exec(compile(_LOOP_SRC, "<lookup_loop>", "exec"), namespace)
    return namespace["lookup_loop"]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def timed_ns(fn, *args):
    """(ns, result) of one call with the cyclic GC off, as timeit does."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        result = fn(*args)
        t1 = time.perf_counter_ns()
    finally:
        gc.enable()
    return t1 - t0, result


def timed_loop_ns(loop, mapping, keys):
    gc.collect()
    gc.disable()
    try:
        return loop(mapping, keys)
    finally:
        gc.enable()


def pickle_to_file(obj, path):
    """The reference for freeze(): pickle.dump to a file, flushed and fsynced."""
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------- sections

def bench_build(pf, table, tmp, repeat):
    """dumps vs pickle.dumps, freeze vs pickle.dump+fsync; sizes."""
    image_path = os.path.join(tmp, "big.pf")
    pickle_path = os.path.join(tmp, "big.pickle")
    t = {"dumps": [], "pickle.dumps": [], "freeze": [], "pickle.dump": []}
    sizes = {}
    for r in range(repeat):
        # alternate which side goes first, so drift favours neither
        pairs = [("dumps", lambda: pf.dumps(table)),
                 ("pickle.dumps", lambda: pickle.dumps(table, protocol=5))]
        for name, fn in (pairs if r % 2 == 0 else pairs[::-1]):
            ns, blob = timed_ns(fn)
            t[name].append(ns)
            sizes[name] = len(blob)
            del blob
        pairs = [("freeze", lambda: pf.freeze(table, image_path)),
                 ("pickle.dump", lambda: pickle_to_file(table, pickle_path))]
        for name, fn in (pairs if r % 2 == 0 else pairs[::-1]):
            ns, _ = timed_ns(fn)
            t[name].append(ns)
        log("  build repeat %d/%d: dumps %.2f s, pickle.dumps %.2f s, freeze %.2f s, "
            "pickle.dump %.2f s" % (r + 1, repeat, t["dumps"][-1] / 1e9,
                                    t["pickle.dumps"][-1] / 1e9, t["freeze"][-1] / 1e9,
                                    t["pickle.dump"][-1] / 1e9))
    sizes["image"] = os.path.getsize(image_path)
    sizes["pickle file"] = os.path.getsize(pickle_path)
    os.unlink(pickle_path)
    return image_path, {k: benchutil.median(v) for k, v in t.items()}, sizes


def bench_lookups(pf, table, image_path, sample_len, repeat, reuse_keys=1, seed=1):
    """Per-lookup ns, medians over `repeat` passes, for dict/view with fresh
    and own keys. `reuse_keys` > 1 repeats the sample that many times in one
    pass (for small tables, to time enough lookups)."""
    root = pf.open(image_path)
    sample = datasets.sample_keys(list(table), sample_len, seed) * reuse_keys
    n = len(sample)
    loops = {name: make_lookup_loop() for name in
             ("dict fresh", "view fresh", "dict own", "view own")}
    # Warm-up pass (untimed): page in the image and specialise each loop.
    loops["dict own"](table, sample)
    loops["view own"](root, sample)
    loops["dict fresh"](table, sample)
    loops["view fresh"](root, sample)
    results = {name: [] for name in loops}
    for r in range(repeat):
        order = ["dict", "view"] if r % 2 == 0 else ["view", "dict"]
        for side in order:
            # Brand-new key objects for every pass: no cached hash, not the
            # dict's own objects (keys as they arrive from input).
            fresh = datasets.fresh_keys(sample)
            target = table if side == "dict" else root
            results[side + " fresh"].append(
                timed_loop_ns(loops[side + " fresh"], target, fresh) / n)
            del fresh
        for side in order:
            target = table if side == "dict" else root
            results[side + " own"].append(
                timed_loop_ns(loops[side + " own"], target, sample) / n)
    # The results must be right, not only fast.
    check = datasets.sample_keys(list(table), min(len(table), 20_000), seed + 1)
    if datasets.table_checksum(root, datasets.fresh_keys(check)) != \
            datasets.table_checksum(table, check):
        raise RuntimeError("view lookups differ from the dict's")
    pf.image_of(root).close()
    del root
    return {name: benchutil.median(v) for name, v in results.items()}, n


def read_whole(path):
    with open(path, "rb") as f:
        return f.read()


def bench_verify(pf, image_path, repeat):
    """Median ns of verify(path) and of reading the file into memory (the
    reference of the target), alternated so that both see the same cache."""
    verify_times, read_times = [], []
    stats = None
    for _ in range(repeat):
        ns, _ = timed_ns(read_whole, image_path)
        read_times.append(ns)
        ns, stats = timed_ns(pf.verify, image_path)
        verify_times.append(ns)
    return benchutil.median(verify_times), benchutil.median(read_times), stats


def bench_open(pf, image_path, count):
    """Median ns of permafrost.open() of the image (page cache warm)."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        root = pf.open(image_path)
        t1 = time.perf_counter_ns()
        times.append(t1 - t0)
        pf.image_of(root).close()
        del root
    return benchutil.median(times)


def bench_unpickle(pf, image_path, runs, blob=None):
    """Time of pickle.loads of a pickled view (of the file image, or `blob`)
    in fresh spawn processes."""
    if blob is None:
        root = pf.open(image_path)
        blob = pickle.dumps(root, protocol=5)
        pf.image_of(root).close()
        del root
    ctx = multiprocessing.get_context("spawn")
    first, second = [], []
    for _ in range(runs):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=workers.unpickle_worker, args=(child_end,))
        proc.start()
        child_end.close()
        parent_end.send_bytes(blob)
        t_first, t_second, entries, type_name, same = parent_end.recv()
        proc.join()
        if proc.exitcode != 0 or not same:
            raise RuntimeError("unpickle worker failed (exit %s)" % proc.exitcode)
        first.append(t_first)
        second.append(t_second)
    return {"first": benchutil.median(first), "second": benchutil.median(second),
            "blob": len(blob), "entries": entries, "type": type_name}


def run_memory_workers(blob, count, image_path=None):
    """Start `count` spawn workers that each unpickle `blob`, look up every
    key, and wait; measure them while alive. Returns their pids' figures."""
    def measure(pids):
        return (memory.total_usage(pids),
                memory.total_mapping_usage(pids, image_path) if image_path else None)

    reports, (total, image) = benchutil.measure_live_workers(
        multiprocessing.get_context("spawn"), workers.memory_worker, (), count, measure,
        payload=blob)
    return {"pss": total["PSS"], "uss": total["USS"], "rss": total["RSS"],
            "checksums": [r[1] for r in reports], "entries": [r[2] for r in reports],
            "image": image}


def bench_share(pf, table, repeat):
    """share(table) times (each segment closed before the next is made, the
    last one kept); returns (median ns, the last root view)."""
    times, root = [], None
    for r in range(repeat):
        if root is not None:
            pf.image_of(root).close()
            del root
            gc.collect()
        ns, root = timed_ns(pf.share, table)
        times.append(ns)
    return benchutil.median(times), root


def bench_memory(pf, table, image_path, expected_checksum):
    root = pf.open(image_path)
    view_blob = pickle.dumps(root, protocol=5)
    pf.image_of(root).close()
    del root
    gc.collect()
    parent_maps = memory.mapping_usage(os.getpid(), image_path)["mappings"]
    pf_mem = run_memory_workers(view_blob, MEMORY_WORKERS, image_path)
    dict_blob = pickle.dumps(table, protocol=5)
    pk_mem = run_memory_workers(dict_blob, MEMORY_WORKERS)
    del dict_blob
    ok = all(c == expected_checksum for c in pf_mem["checksums"] + pk_mem["checksums"]) \
        and all(e == len(table) for e in pf_mem["entries"] + pk_mem["entries"])
    return pf_mem, pk_mem, ok, parent_maps


# ----------------------------------------------------------------- report

def _loadavg():
    try:
        return "%.2f" % os.getloadavg()[0]
    except (AttributeError, OSError):
        return "unknown"


def verdict(passed):
    return "PASS" if passed else "FAIL"


def ratio_text(r):
    return "%.2fx" % r


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="permafrost core benchmark")
    parser.add_argument("--size", type=int, default=2_000_000,
                        help="entries of the big dict (default 2000000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="repeats of each timing; medians are reported (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="a quick run: --size 200000")
    parser.add_argument("--out", default=os.path.join(_HERE, "results"),
                        help="directory for the results file (default bench/results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None,
                        help="where the images are written (default: the system's)")
    args = parser.parse_args(argv)
    size = 200_000 if args.quick else args.size
    if size < 1 or args.repeat < 1:
        parser.error("--size and --repeat must be >= 1")

    pf = benchutil.import_permafrost()
    started = time.perf_counter()
    when = datetime.datetime.now()
    load_start = _loadavg()
    tmp = tempfile.mkdtemp(prefix="permafrost-bench-", dir=args.tmpdir)
    try:
        log("building the %s-entry dict" % format(size, ","))
        table = datasets.lookup_dict(size, args.seed)
        expected = datasets.table_checksum(table, table.keys())

        log("dumps / freeze vs pickle (%d repeats)" % args.repeat)
        image_path, build, sizes = bench_build(pf, table, tmp, args.repeat)

        sample_len = min(size, LOOKUP_SAMPLE)
        log("lookups in the big table (%s keys per pass, %d passes)"
            % (format(sample_len, ","), args.repeat))
        big, big_n = bench_lookups(pf, table, image_path, sample_len, args.repeat,
                                   seed=args.seed + 1)

        small_table = datasets.lookup_dict(SMALL_SIZE, args.seed + 7)
        small_path = os.path.join(tmp, "small.pf")
        pf.freeze(small_table, small_path)
        small_reuse = max(1, LOOKUP_SAMPLE // SMALL_SIZE)
        log("lookups in the %s-entry table (%s lookups per pass)"
            % (format(SMALL_SIZE, ","), format(SMALL_SIZE * small_reuse, ",")))
        small, small_n = bench_lookups(pf, small_table, small_path, SMALL_SIZE,
                                       args.repeat, reuse_keys=small_reuse,
                                       seed=args.seed + 2)

        log("verify(path) vs reading the file (%d repeats)" % args.repeat)
        verify_ns, read_ns, verify_stats = bench_verify(pf, image_path, args.repeat)

        open_count = max(200, 40 * args.repeat)
        log("open (%d times)" % open_count)
        open_ns = bench_open(pf, image_path, open_count)

        unpickle_runs = max(3, args.repeat)
        log("unpickle a view in %d fresh spawn workers" % unpickle_runs)
        unp = bench_unpickle(pf, image_path, unpickle_runs)

        log("share() (%d repeats), attach and memory of a shared image" % args.repeat)
        share_ns, shared = bench_share(pf, table, args.repeat)
        shared_blob = pickle.dumps(shared, protocol=5)
        shm_name = pf.image_of(shared).shared_name
        shm_path = "/dev/shm/" + shm_name.lstrip("/")
        unp_shm = bench_unpickle(pf, None, unpickle_runs, blob=shared_blob)

        mem_skip = memory.unsupported_reason()
        if mem_skip is None:
            log("memory of %d workers that look up every key" % MEMORY_WORKERS)
            pf_mem, pk_mem, mem_ok, parent_maps = bench_memory(
                pf, table, image_path, expected)
            shm_mem = run_memory_workers(shared_blob, MEMORY_WORKERS, shm_path)
            mem_ok = mem_ok and all(c == expected for c in shm_mem["checksums"])
        else:
            log("memory not measured: %s" % mem_skip)
            pf_mem = pk_mem = parent_maps = shm_mem = None
            mem_ok = True
        shm_size = pf.image_of(shared).size
        pf.image_of(shared).close()
        del shared
        elapsed = time.perf_counter() - started

        # ------------------------------------------------------------ table
        image_size = sizes["image"]
        pickle_size = sizes["pickle.dumps"]
        ns = benchutil.fmt_time_ns
        rows = []

        def add(figure, mine, ref, ratio, target, passed):
            rows.append([figure, mine, ref, ratio, target, verdict(passed)])

        def add_memory(figure, mem, image_bytes):
            """A PSS row: workers of `mem` against the pickled copies."""
            budget = image_bytes + MEMORY_WORKERS * PER_WORKER_BUDGET
            target = "<= image + %d x 15 MiB = %s" % (MEMORY_WORKERS,
                                                     benchutil.fmt_bytes(budget))
            if mem is None:
                rows.append([figure, "n/a", "n/a", "-", target, "n/a"])
                return
            add(figure, benchutil.fmt_bytes(mem["pss"]),
                "pickled copies: " + benchutil.fmt_bytes(pk_mem["pss"]),
                ratio_text(mem["pss"] / pk_mem["pss"]), target, mem["pss"] <= budget)

        r = big["view fresh"] / big["dict fresh"]
        add("lookup, %s entries, fresh keys" % format(size, ","),
            ns(big["view fresh"]), "dict: " + ns(big["dict fresh"]),
            ratio_text(r), "<= 0.75x", r <= 0.75)
        r = big["view own"] / big["dict own"]
        add("lookup, %s entries, the dict's own keys" % format(size, ","),
            ns(big["view own"]), "dict: " + ns(big["dict own"]),
            ratio_text(r), "<= 1.5x", r <= 1.5)
        r = small["view own"] / small["dict own"]
        add("lookup, %s entries, the dict's own keys" % format(SMALL_SIZE, ","),
            ns(small["view own"]), "dict: " + ns(small["dict own"]),
            ratio_text(r), "<= 2.5x", r <= 2.5)
        r = small["view fresh"] / small["dict fresh"]
        rows.append(["lookup, %s entries, fresh keys" % format(SMALL_SIZE, ","),
                     ns(small["view fresh"]), "dict: " + ns(small["dict fresh"]),
                     ratio_text(r), "(info)", "-"])
        r = build["dumps"] / build["pickle.dumps"]
        add("dumps(obj)", ns(build["dumps"]),
            "pickle.dumps(protocol=5): " + ns(build["pickle.dumps"]),
            ratio_text(r), "<= 1.0x", r <= 1.0)
        r = build["freeze"] / build["pickle.dump"]
        add("freeze(obj, path)", ns(build["freeze"]),
            "pickle.dump + fsync: " + ns(build["pickle.dump"]),
            ratio_text(r), "<= 1.0x", r <= 1.0)
        r = image_size / pickle_size
        add("size", benchutil.fmt_bytes(image_size),
            "pickle: " + benchutil.fmt_bytes(pickle_size),
            ratio_text(r), "<= 1.0x", r <= 1.0)
        r = verify_ns / read_ns
        add("verify(path), the full check", ns(verify_ns),
            "reading the file into memory: " + ns(read_ns), ratio_text(r), "<= 3x",
            r <= 3.0)
        add("open(path) of the big image", ns(open_ns), "-", "-",
            "< 1 ms", open_ns < 1e6)
        add("pickle.loads of a view in a fresh worker", ns(unp["first"]), "-", "-",
            "< 1 ms", unp["first"] < 1e6)
        add_memory("PSS of %d workers, every key looked up" % MEMORY_WORKERS,
                   pf_mem, image_size)
        r = share_ns / build["freeze"]
        add("share(obj) into shared memory", ns(share_ns),
            "freeze(obj, path): " + ns(build["freeze"]), ratio_text(r), "<= 1.5x",
            r <= 1.5)
        add("pickle.loads of a shared view in a fresh worker", ns(unp_shm["first"]),
            "-", "-", "< 1 ms", unp_shm["first"] < 1e6)
        add_memory("PSS of %d workers, shared image, every key" % MEMORY_WORKERS,
                   shm_mem, shm_size)
        table_md = benchutil.markdown_table(
            ["figure", "permafrost", "reference", "ratio", "target", "result"], rows)

        notes = [
            "Lookup times are per key: one pass times `for k in keys: m[k]` "
            "(perf_counter_ns around the whole loop, divided by the number of "
            "keys, nothing subtracted), median of %d passes. Big table: a random "
            "sample of %s keys in random order; small table: its %s keys "
            "shuffled, repeated to %s lookups per pass."
            % (args.repeat, format(big_n, ","), format(SMALL_SIZE, ","),
               format(small_n, ",")),
            "Fresh keys: newly made equal str objects for every pass (no cached "
            "hash); own keys: the dict's own key objects, passed to the view too.",
            "dumps %s (pickle.dumps %s), freeze %s (pickle.dump + fsync %s): "
            "medians of %d; dumps() length %s, image file %s."
            % (ns(build["dumps"]), ns(build["pickle.dumps"]), ns(build["freeze"]),
               ns(build["pickle.dump"]), args.repeat, format(sizes["dumps"], ","),
               format(image_size, ",")),
            "verify: median of %d verify(path) calls (open, the full check, "
            "close), each after a read of the whole file into memory (the "
            "reference); it checked %s values, %s keys, %s containers, %s "
            "section checksums." % (args.repeat, format(verify_stats["values"], ","),
                                     format(verify_stats["keys"], ","),
                                     format(verify_stats["containers"], ","),
                                     verify_stats["checksums"]),
            "open: median of %d opens of the %s image (page cache warm), "
            "close not timed." % (open_count, benchutil.fmt_bytes(image_size)),
            "Unpickle: median over %d fresh spawn processes of the first "
            "pickle.loads (attaches the image); the second loads in the same "
            "process took %s. Pickled view: %d bytes; it came back as %s "
            "of %s entries." % (unpickle_runs, ns(unp["second"]), unp["blob"],
                                unp["type"], format(unp["entries"], ",")),
        ]
        notes.append(
            "share: median of %d share() calls of the dict (encode in memory, "
            "create and reserve the segment, copy); the owner's mapping stays "
            "alive while the workers run. Shared view pickled in %d bytes; "
            "first unpickle in a fresh spawn worker: median of %d."
            % (args.repeat, len(shared_blob), unpickle_runs))
        if shm_mem is not None:
            sm = shm_mem["image"]
            notes.append(
                "Shared image in the workers: RSS %s, PSS %s of the segment; "
                "worker totals RSS %s, USS %s (the owner's pages of the segment "
                "count in its own PSS, not here)."
                % (benchutil.fmt_bytes(sm["RSS"]), benchutil.fmt_bytes(sm["PSS"]),
                   benchutil.fmt_bytes(shm_mem["rss"]), benchutil.fmt_bytes(shm_mem["uss"])))
        if pf_mem is not None:
            im = pf_mem["image"]
            fb = benchutil.fmt_bytes
            notes += [
                "Memory: PSS (from /proc/PID/smaps) summed over %d spawn "
                "workers, read while they are alive after each looked up every "
                "key. permafrost workers: RSS %s, USS %s; image mapping in them: "
                "RSS %s, PSS %s. Pickled copies: RSS %s, USS %s. The parent had "
                "%d mapping(s) of the image while measuring."
                % (MEMORY_WORKERS, fb(pf_mem["rss"]), fb(pf_mem["uss"]),
                   fb(im["RSS"]), fb(im["PSS"]), fb(pk_mem["rss"]),
                   fb(pk_mem["uss"]), parent_maps),
                "Checksums of the looked-up values: %s." % (
                    "all workers agree with the parent's" if mem_ok else
                    "MISMATCH (%r vs %r, expected %d)" % (
                        pf_mem["checksums"], pk_mem["checksums"], expected)),
            ]
        else:
            notes.append("Memory not measured: %s." % mem_skip)
        notes.append("Whole run: %.0f s." % elapsed)
        version = getattr(pf, "__version__", "unknown")
        report = "\n".join(
            ["# permafrost core benchmark, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
            + ["- " + line for line in benchutil.machine_description(
                [os.path.relpath(os.path.abspath(__file__))] + list(argv))]
            + ["- load average (1 min) at start / end: %s / %s (this run adds "
               "about 1; more means other work shared the cores)"
               % (load_start, _loadavg()),
               "- permafrost: %s (%s)" % (version, os.path.dirname(pf.__file__)),
               "- data: lookup_dict(%s, seed=%d): str keys of 13..16 chars; "
               "values one third each short str / int / (int, float, str)"
               % (format(size, ","), args.seed),
               "", table_md, "", "Notes:", ""]
            + ["- " + n for n in notes]) + "\n"

        print()
        print(table_md)
        print()
        for n in notes:
            print("- " + n)
        print()
        benchutil.write_results(args.out, "core", when, report)
        return 0 if mem_ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
