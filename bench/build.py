#!/usr/bin/env python3
"""The streaming Builder against freeze() and pickle, in one run: build
speed, image size, lookups in its image, peak memory of big builds made on
the fly, and a "hash tree" (dict of dicts) shared by worker processes.

    python bench/build.py [--size 2000000] [--big 20000000] [--tree-gb 0.5]
                          [--repeat 3] [--quick] [--out bench/results] [--workers W]

Prints a Markdown table (figure, permafrost, reference, ratio, target,
PASS/FAIL) and a projection for the user's case, and writes both, with the
machine description and notes, to OUT/build-<date>-<time>.md. Every ratio
is against a reference measured in the same run; timings are medians of
--repeat runs where a run is cheap. The exit status is 0 whatever the
targets say; it is 1 only if an answer was wrong (a looked-up value that
differs from the one that was written).

Sections:
1. Builder vs freeze on the same SIZE str -> (int, str, float) entries:
   freeze(d, path) of the dict (the dict itself is built beforehand, not
   timed) against Builder.update(pairs) and a `for k, v in pairs: b[k] = v`
   loop over the same pre-built list of pairs (close() included).
2. Bytes per entry of the Builder's image vs pickle.dumps(d, protocol=5).
3. Lookups of the same 1M random existing keys in the Builder's image and in
   freeze's image of the same data.
4. Peak RSS of a child process that builds BIG entries made on the fly
   (never held in a list), against its RSS right after import permafrost.
5. A "hash tree", str -> dict(str -> (str, int, float)), sized to about
   TREE_GB GiB of Python objects (sys.getsizeof accounting), built with the
   Builder in a child from indexes, then looked up at random by W workers
   that stay alive while their PSS is read; pickled copies per worker as
   the reference (measured at a small size, projected linearly), and a
   projection for the user's case (20 GiB of objects, 32 cores, 128 GiB).
"""

import argparse
import datetime
import gc
import json
import multiprocessing
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import benchutil  # noqa: E402
import datasets  # noqa: E402
import memory  # noqa: E402
from run import (_loadavg, log, make_lookup_loop, ratio_text, timed_loop_ns,  # noqa: E402
                 timed_ns, verdict)

MIB = 1024 * 1024
GIB = 1024 ** 3
LOOKUP_SAMPLE = 1_000_000       # keys per lookup pass (section 3)
CHECK_SAMPLE = 100_000          # values compared with the expected ones
BUILD_SPEED_TARGET = 1.5        # builder time / freeze time
ENTRIES_PER_S_TARGET = 1.5e6
LOOKUP_RATIO_TARGET = 1.10
PEAK_RSS_TARGET = GIB           # the issue: 100M entries in < 1 GB
PER_WORKER_BUDGET = 15 * MIB    # PSS target: image + this per worker (as run.py)
TREE_SAMPLE_OUTER = 2_000       # outer entries measured with sys.getsizeof
PICKLE_SMALL_GIB = 0.05         # size of the tree whose pickled copy is measured
WORKER_CHUNK = 5_000            # lookups generated (not timed) per timed loop
WORKER_CHECKS = 200             # of each chunk, compared with the expected value
USER_CASE = {"gib": 20.0, "workers": 32, "ram_gib": 128.0, "free_gib": 6.0}


# ------------------------------------------------------------------ data
# Everything is a function of an index, so that the parent, the building
# child and the workers agree without passing the data around.

def categories():
    """The 1000 category strings; the values share these objects, as values
    coming from one parser or one interned column often do."""
    return ["category-%d" % c for c in range(1000)]


def flat_key(i):
    """16 chars, unique: 'k000000042-3a0d1'."""
    return "k%09d-%05x" % (i, (i * 2654435761) & 0xFFFFF)


def flat_value(i, cats):
    """(int, 'category-<i % 1000>', float with 2 decimals)."""
    return (i, cats[i % 1000], ((i * 7919) % 1_000_000) / 100)


def flat_pairs(n):
    cats = categories()
    return [(flat_key(i), flat_value(i, cats)) for i in range(n)]


def outer_key(o):
    """18 chars, unique: 'node-00000042-1c2f'."""
    return "node-%08d-%04x" % (o, ((o * 2654435761) >> 7) & 0xFFFF)


def inner_count(o):
    """10..50 entries per inner dict (30 on average)."""
    return 10 + (o * 7919) % 41


def inner_key(o, j):
    """14 chars, unique within one inner dict: 'attr-07-5b2e1'."""
    return "attr-%02d-%05x" % (j, (o * 40503 + j * 9973) & 0xFFFFF)


def inner_value(o, j):
    """(str, int, float): a fresh str per entry, as a parser makes them."""
    return ("tag-%d" % ((o * 31 + j) % 5000), o * 64 + j,
            ((o * 131 + j * 7919) % 100_000) / 100)


def inner_dict(o):
    return {inner_key(o, j): inner_value(o, j) for j in range(inner_count(o))}


def build_tree(n_outer):
    return {outer_key(o): inner_dict(o) for o in range(n_outer)}


def inner_total(n_outer):
    return sum(inner_count(o) for o in range(n_outer))


def accounted_bytes(obj, seen=None):
    """sys.getsizeof of obj and of everything it holds (dict, tuple, list
    members), each object counted once."""
    if seen is None:
        seen = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if type(o) is dict:
            stack.extend(o.keys())
            stack.extend(o.values())
        elif type(o) in (tuple, list):
            stack.extend(o)
    return total


# ------------------------------------------------------------- processes

def status_bytes(field):
    """A field of /proc/self/status (VmRSS, VmHWM) in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_self():
    hwm = status_bytes("VmHWM")
    if hwm is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm *= 1 if sys.platform == "darwin" else 1024
    return hwm


def child_build(n, path, builder_memory):
    """--child-build: N flat entries made on the fly into a Builder; prints
    one JSON line of figures."""
    import permafrost
    baseline = status_bytes("VmRSS")
    cats = categories()
    kw = {} if builder_memory is None else {"memory": builder_memory}
    # What making the entries alone costs (no builder), on up to 1M of them.
    gen_n = min(n, 1_000_000)
    t0 = time.perf_counter_ns()
    for i in range(gen_n):
        k = "k%09d-%05x" % (i, (i * 2654435761) & 0xFFFFF)
        v = (i, cats[i % 1000], ((i * 7919) % 1_000_000) / 100)
    gen_ns = (time.perf_counter_ns() - t0) / gen_n * n
    del k, v
    t0 = time.perf_counter_ns()
    b = permafrost.Builder(path, **kw)
    for i in range(n):
        # the same entries as flat_key(i): flat_value(i, cats), written inline
        b["k%09d-%05x" % (i, (i * 2654435761) & 0xFFFFF)] = (
            i, cats[i % 1000], ((i * 7919) % 1_000_000) / 100)
    t1 = time.perf_counter_ns()
    rss_before_close = status_bytes("VmRSS")
    b.close()
    t2 = time.perf_counter_ns()
    print(json.dumps({"entries": n, "baseline": baseline, "peak": peak_rss_self(),
                      "rss_before_close": rss_before_close, "loop_ns": t1 - t0,
                      "close_ns": t2 - t1, "gen_ns": gen_ns,
                      "size": os.path.getsize(path)}), flush=True)


def child_tree(n_outer, path, builder_memory):
    """--child-tree: the tree of n_outer outer entries, each inner dict made
    on the fly and written with b[outer] = inner; prints one JSON line."""
    import permafrost
    baseline = status_bytes("VmRSS")
    kw = {} if builder_memory is None else {"memory": builder_memory}
    gen_n = min(n_outer, 20_000)
    t0 = time.perf_counter_ns()
    for o in range(gen_n):
        k = outer_key(o)
        v = inner_dict(o)
    gen_ns = (time.perf_counter_ns() - t0) / gen_n * n_outer
    del k, v
    inner = 0
    t0 = time.perf_counter_ns()
    b = permafrost.Builder(path, **kw)
    for o in range(n_outer):
        d = inner_dict(o)
        inner += len(d)
        b[outer_key(o)] = d
    del d
    t1 = time.perf_counter_ns()
    b.close()
    t2 = time.perf_counter_ns()
    print(json.dumps({"entries": n_outer, "inner": inner, "baseline": baseline,
                      "peak": peak_rss_self(), "loop_ns": t1 - t0, "close_ns": t2 - t1,
                      "gen_ns": gen_ns, "size": os.path.getsize(path)}), flush=True)


def run_child(mode, n, path, builder_memory):
    """Runs this script in `mode` in a child process; returns its figures
    plus `ru_maxrss` (RUSAGE_CHILDREN, bytes: the largest child so far)."""
    cmd = [sys.executable, os.path.abspath(__file__), mode, str(n), path]
    if builder_memory is not None:
        cmd += ["--builder-memory", str(builder_memory)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("%s child failed (exit %d):\n%s"
                           % (mode, proc.returncode, proc.stderr[-4000:]))
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    fig["wall_s"] = wall
    fig["ru_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return fig


_NESTED_SRC = """
def nested_loop(mapping, pairs):
    t0 = perf_counter_ns()
    for ok, ik in pairs:
        mapping[ok][ik]
    return perf_counter_ns() - t0
"""


def make_nested_loop():
    namespace = {"perf_counter_ns": time.perf_counter_ns}
    exec(compile(_NESTED_SRC, "<nested_loop>", "exec"), namespace)
    return namespace["nested_loop"]


def random_lookups(table, n_outer, count, seed):
    """Times `count` random nested lookups table[outer][inner] (keys made
    in chunks, not timed) and checks a part of each chunk. Returns
    (ns, checked, errors)."""
    rng = random.Random(seed)
    loop = make_nested_loop()
    ns = checked = errors = done = 0
    while done < count:
        chunk = min(WORKER_CHUNK, count - done)
        ids = []
        for _ in range(chunk):
            o = rng.randrange(n_outer)
            ids.append((o, rng.randrange(inner_count(o))))
        keys = [(outer_key(o), inner_key(o, j)) for o, j in ids]
        ns += timed_loop_ns(loop, table, keys)
        for (o, j), (ok, ik) in zip(ids[:WORKER_CHECKS], keys[:WORKER_CHECKS]):
            checked += 1
            if table[ok][ik] != inner_value(o, j):
                errors += 1
        done += chunk
    return ns, checked, errors


def tree_worker(path, n_outer, count, seed, conn):
    """Opens the tree image, does `count` random nested lookups, reports
    (pid, lookups, ns, checked, errors, rss after import, entries), then
    stays alive until the parent has read its memory."""
    import permafrost
    rss0 = status_bytes("VmRSS")
    root = permafrost.open(path)
    ns, checked, errors = random_lookups(root, n_outer, count, seed)
    entries = len(root)
    gc.collect()
    conn.send((os.getpid(), count, ns, checked, errors, rss0, entries))
    conn.recv()  # the parent's go: it has measured us
    conn.close()


def pickle_tree_worker(path, n_outer, count, seed, conn):
    """pickle.load of the tree, `count` random nested lookups in the dict
    (timed as in tree_worker), report (pid, rss after import, rss after
    load, load ns, lookups, ns, checked, errors, entries), stay alive."""
    import permafrost  # noqa: F401  (the same imports as tree_worker)
    rss0 = status_bytes("VmRSS")
    gc.collect()
    t0 = time.perf_counter_ns()
    with open(path, "rb") as f:
        tree = pickle.load(f)
    load_ns = time.perf_counter_ns() - t0
    ns, checked, errors = random_lookups(tree, n_outer, count, seed)
    entries = len(tree)
    gc.collect()
    rss1 = status_bytes("VmRSS")
    conn.send((os.getpid(), rss0, rss1, load_ns, count, ns, checked, errors, entries))
    conn.recv()
    conn.close()


# ----------------------------------------------------------------- sections

def builder_update(pf, pairs, path, kw, out):
    b = pf.Builder(path, **kw)
    b.update(pairs)
    t0 = time.perf_counter_ns()
    b.close()
    out.append(time.perf_counter_ns() - t0)


def builder_loop(pf, pairs, path, kw, out):
    b = pf.Builder(path, **kw)
    for k, v in pairs:
        b[k] = v
    t0 = time.perf_counter_ns()
    b.close()
    out.append(time.perf_counter_ns() - t0)


def builder_loop_item(pf, pairs, path, kw, out):
    """As builder_loop, but the value is never bound to a local name."""
    b = pf.Builder(path, **kw)
    for kv in pairs:
        b[kv[0]] = kv[1]
    t0 = time.perf_counter_ns()
    b.close()
    out.append(time.perf_counter_ns() - t0)


def builder_loop_int(pf, pairs, path, kw, out):
    """As builder_loop, with the value 0 for every key."""
    b = pf.Builder(path, **kw)
    for k, v in pairs:
        b[k] = 0
    t0 = time.perf_counter_ns()
    b.close()
    out.append(time.perf_counter_ns() - t0)


SPEED_SERIES = ("freeze", "update", "loop")
DIAG_SERIES = ("loop, value not in a local", "loop, int values")


def bench_speed(pf, pairs, table, tmp, repeat, kw):
    """Medians of whole-build times (ns) and of close() alone, per series;
    returns (times, closes, paths of the freeze / update / loop images)."""
    paths = {"freeze": os.path.join(tmp, "flat-freeze.pf"),
             "update": os.path.join(tmp, "flat-update.pf"),
             "loop": os.path.join(tmp, "flat-loop.pf"),
             "loop, value not in a local": os.path.join(tmp, "flat-diag-item.pf"),
             "loop, int values": os.path.join(tmp, "flat-diag-int.pf")}
    fns = {
        "freeze": lambda out: pf.freeze(table, paths["freeze"]),
        "update": lambda out: builder_update(pf, pairs, paths["update"], kw, out),
        "loop": lambda out: builder_loop(pf, pairs, paths["loop"], kw, out),
        "loop, value not in a local":
            lambda out: builder_loop_item(pf, pairs, paths["loop, value not in a local"],
                                          kw, out),
        "loop, int values":
            lambda out: builder_loop_int(pf, pairs, paths["loop, int values"], kw, out),
    }
    times = {name: [] for name in fns}
    closes = {name: [] for name in fns}
    order = list(fns)
    for r in range(repeat):
        # rotate the order, so that drift favours none of them
        for name in order[r % len(order):] + order[:r % len(order)]:
            ns, _ = timed_ns(fns[name], closes[name])
            times[name].append(ns)
        log("  speed repeat %d/%d: %s" % (r + 1, repeat, ", ".join(
            "%s %.2f s" % (name, times[name][-1] / 1e9) for name in order)))
    med = {name: benchutil.median(v) for name, v in times.items()}
    cmed = {name: benchutil.median(v) for name, v in closes.items() if v}
    return med, cmed, paths


def check_flat(m, pairs, indexes):
    """Number of wrong answers of m on pairs[i] for i in indexes."""
    wrong = 0
    for i in indexes:
        k, v = pairs[i]
        if m[k] != v:
            wrong += 1
    return wrong


def bench_flat_lookups(pf, pairs, paths, repeat, seed):
    """Per-lookup ns (medians) of the same sample in the Builder's and in
    freeze's image; and the number of wrong answers on a check sample."""
    views = {"builder": pf.open(paths["update"]), "freeze": pf.open(paths["freeze"])}
    keys = [k for k, _ in pairs]
    sample = datasets.sample_keys(keys, min(len(keys), LOOKUP_SAMPLE), seed)
    loops = {name: make_lookup_loop() for name in views}
    for name in views:  # warm-up (untimed): page in, specialise the loop
        loops[name](views[name], sample)
    results = {name: [] for name in views}
    for r in range(repeat):
        order = ["builder", "freeze"] if r % 2 == 0 else ["freeze", "builder"]
        for name in order:
            fresh = datasets.fresh_keys(sample)
            results[name].append(timed_loop_ns(loops[name], views[name], fresh) / len(fresh))
            del fresh
    rng = random.Random(seed + 1)
    check = rng.sample(range(len(pairs)), min(len(pairs), CHECK_SAMPLE))
    wrong = {}
    for name, m in views.items():
        wrong[name] = check_flat(m, pairs, check)
        if len(m) != len(pairs):
            wrong[name] += 1
        try:
            m["not-a-key"]
            wrong[name] += 1
        except KeyError:
            pass
    for m in views.values():
        pf.image_of(m).close()
    return ({name: benchutil.median(v) for name, v in results.items()}, len(sample),
            wrong, len(check))


def check_big(pf, path, n, seed):
    """Wrong answers of the big flat image on a sample of its entries."""
    cats = categories()
    m = pf.open(path)
    rng = random.Random(seed)
    idx = [rng.randrange(n) for _ in range(min(n, 20_000))] + [0, n - 1]
    wrong = sum(1 for i in idx if m[flat_key(i)] != flat_value(i, cats))
    wrong += len(m) != n
    pf.image_of(m).close()
    return wrong, len(idx)


def check_tree(pf, path, n_outer, seed):
    """Wrong answers of the tree image on a sample of whole inner dicts."""
    m = pf.open(path)
    rng = random.Random(seed)
    idx = [rng.randrange(n_outer) for _ in range(min(n_outer, 500))] + [0, n_outer - 1]
    wrong = 0
    for o in idx:
        inner = m[outer_key(o)]
        expected = inner_dict(o)
        if len(inner) != len(expected) or any(inner[k] != v for k, v in expected.items()):
            wrong += 1
    wrong += len(m) != n_outer
    pf.image_of(m).close()
    return wrong, len(idx)


def measure_workers(target, args, count):
    """Starts `count` spawn workers of target(*args, conn) (each gets its
    own seed: args[-1] + index), reads their memory while all are alive.
    Returns (reports, total usage, image mapping usage or None)."""
    image_path = args[0] if target is tree_worker else None

    def measure(pids):
        total = memory.total_usage(pids)
        image = memory.total_mapping_usage(pids, image_path) if image_path else None
        return total, image

    ctx = multiprocessing.get_context("spawn")
    if count == 1:
        reports, (total, image) = benchutil.measure_live_workers(
            ctx, target, args, 1, measure)
        return reports, total, image
    # measure_live_workers gives every worker the same args; vary the seed by
    # starting them through a small trampoline that adds the worker's index.
    reports, (total, image) = benchutil.measure_live_workers(
        ctx, _seeded_worker, (target.__name__,) + tuple(args), count, measure)
    return reports, total, image


def _seeded_worker(target_name, *args):
    """Calls target with the seed (last arg before conn) made per process."""
    *rest, seed, conn = args
    globals()[target_name](*rest, seed * 1_000_003 + os.getpid(), conn)


def bench_tree(pf, tmp, tree_gib, workers, lookups, seed, builder_memory, mem_ok):
    """Section 5. Returns a dict of figures."""
    f = {}
    sample = build_tree(TREE_SAMPLE_OUTER)
    accounted = accounted_bytes(sample)
    f["bytes_per_outer"] = accounted / TREE_SAMPLE_OUTER
    f["bytes_per_inner"] = accounted / inner_total(TREE_SAMPLE_OUTER)
    del sample
    n_outer = max(1, round(tree_gib * GIB / f["bytes_per_outer"]))
    f["n_outer"] = n_outer
    f["accounted"] = n_outer * f["bytes_per_outer"]
    log("tree: %.1f accounted bytes per inner entry, %.0f per outer entry -> %s outer "
        "entries for %.2f GiB" % (f["bytes_per_inner"], f["bytes_per_outer"],
                                  format(n_outer, ","), tree_gib))

    path = os.path.join(tmp, "tree.pf")
    log("tree: building the image in a child (b[outer] = inner dict, made on the fly)")
    f["build"] = run_child("--child-tree", n_outer, path, builder_memory)
    f["n_inner"] = f["build"]["inner"]
    wrong, checked = check_tree(pf, path, n_outer, seed + 11)
    f["build_wrong"], f["build_checked"] = wrong, checked
    log("tree: built in %.1f s (loop %.1f s, close %.1f s), image %s, peak RSS %s"
        % (f["build"]["wall_s"], f["build"]["loop_ns"] / 1e9, f["build"]["close_ns"] / 1e9,
           benchutil.fmt_bytes(f["build"]["size"]), benchutil.fmt_bytes(f["build"]["peak"])))

    if mem_ok:
        log("tree: %d workers, %s random nested lookups each" % (workers, format(lookups, ",")))
        reports, total, image = measure_workers(
            tree_worker, (path, n_outer, lookups, seed + 20), workers)
        f["workers"] = {
            "pss": total["PSS"], "rss": total["RSS"], "uss": total["USS"],
            "image_pss": image["PSS"], "image_rss": image["RSS"],
            "rates": [r[1] / (r[2] / 1e9) for r in reports],
            "checked": sum(r[3] for r in reports), "errors": sum(r[4] for r in reports),
            "rss0": benchutil.median([r[5] for r in reports]),
            "entries_ok": all(r[6] == n_outer for r in reports)}

        # Reference: a pickled copy of the tree per worker, measured at a
        # small size and projected linearly (and measured at full size when
        # the copies fit comfortably in memory).
        n_small = max(1, min(n_outer, round(PICKLE_SMALL_GIB * GIB / f["bytes_per_outer"])))
        f["pickle_small"] = pickle_reference(tmp, n_small, lookups, seed)
        f["pickle_small"]["accounted"] = n_small * f["bytes_per_outer"]
        per_byte = f["pickle_small"]["delta"] / f["pickle_small"]["accounted"]
        f["pickle_per_accounted_byte"] = per_byte
        f["pickle_file_per_outer"] = f["pickle_small"]["file"] / n_small
        # the measured worker's PSS, plus its RSS growth per accounted byte
        # times the bytes it did not hold
        projected_worker = (f["pickle_small"]["pss"]
                            + per_byte * (f["accounted"] - f["pickle_small"]["accounted"]))
        f["pickle_projected_worker"] = projected_worker
        f["pickle_full"] = None
        avail = benchutil.mem_available()
        # the parent holds the tree while pickling it, the workers a copy each
        need = projected_worker * (workers + 1.5)
        if n_small < n_outer and avail and need < 0.5 * avail:
            log("tree: pickled copies at full size in %d workers (%s needed, %s available)"
                % (workers, benchutil.fmt_bytes(need), benchutil.fmt_bytes(avail)))
            f["pickle_full"] = pickle_reference(tmp, n_outer, lookups, seed, workers)
        elif n_small < n_outer:
            log("tree: pickled copies at full size not measured (%s needed, %s available)"
                % (benchutil.fmt_bytes(need), benchutil.fmt_bytes(avail or 0)))
    return f, path


def pickle_reference(tmp, n_outer, lookups, seed, count=1):
    """Pickle a tree of n_outer outer entries to a file; `count` workers
    each load it and look up; their memory while alive."""
    ppath = os.path.join(tmp, "tree-%d.pickle" % n_outer)
    log("tree: pickled copy of %s outer entries in %d worker(s)" % (format(n_outer, ","), count))
    tree = build_tree(n_outer)
    t0 = time.perf_counter_ns()
    with open(ppath, "wb") as fh:
        pickle.dump(tree, fh, protocol=5)
    dump_ns = time.perf_counter_ns() - t0
    del tree
    gc.collect()
    reports, total, _ = measure_workers(
        pickle_tree_worker, (ppath, n_outer, lookups, seed + 30), count)
    out = {"n_outer": n_outer, "workers": count, "file": os.path.getsize(ppath),
           "dump_ns": dump_ns, "pss": total["PSS"], "rss": total["RSS"], "uss": total["USS"],
           "rss0": benchutil.median([r[1] for r in reports]),
           "delta": benchutil.median([r[2] - r[1] for r in reports]),
           "load_ns": benchutil.median([r[3] for r in reports]),
           "rates": [r[4] / (r[5] / 1e9) for r in reports],
           "checked": sum(r[6] for r in reports), "errors": sum(r[7] for r in reports),
           "entries_ok": all(r[8] == n_outer for r in reports)}
    os.unlink(ppath)
    return out


# ----------------------------------------------------------------- report

def fmt_rate(per_s):
    if per_s >= 1e6:
        return "%.2f M/s" % (per_s / 1e6)
    return "%.0f k/s" % (per_s / 1e3)


def gib(nbytes):
    return "%.1f GiB" % (nbytes / GIB)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="permafrost Builder benchmark")
    parser.add_argument("--size", type=int, default=2_000_000,
                        help="entries of sections 1-3 (default 2000000)")
    parser.add_argument("--big", type=int, default=20_000_000,
                        help="entries of the on-the-fly build of section 4 (default 20000000)")
    parser.add_argument("--tree-gb", type=float, default=0.5,
                        help="GiB of Python objects (sys.getsizeof) of the tree of "
                             "section 5 (default 0.5)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repeats of each timing; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a quick run: --size 200000 --big 2000000 --tree-gb 0.05")
    parser.add_argument("--out", default=os.path.join(_HERE, "results"),
                        help="directory for the results file (default bench/results)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of section 5 (default: cpu count, at least 2)")
    parser.add_argument("--tree-lookups", type=int, default=None,
                        help="random nested lookups per worker (default 1000000, quick 200000)")
    parser.add_argument("--builder-memory", type=int, default=None,
                        help="Builder(memory=...) in bytes (default: the Builder's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None,
                        help="where the images are written (default: the system's)")
    parser.add_argument("--child-build", nargs=2, metavar=("N", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--child-tree", nargs=2, metavar=("N", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_build:
        return child_build(int(args.child_build[0]), args.child_build[1], args.builder_memory)
    if args.child_tree:
        return child_tree(int(args.child_tree[0]), args.child_tree[1], args.builder_memory)

    size = 200_000 if args.quick else args.size
    big = 2_000_000 if args.quick else args.big
    tree_gib = 0.05 if args.quick else args.tree_gb
    lookups = args.tree_lookups or (200_000 if args.quick else 1_000_000)
    workers = args.workers or max(2, os.cpu_count() or 2)
    if size < 1 or big < 1 or tree_gib <= 0 or args.repeat < 1 or workers < 1:
        parser.error("--size, --big, --tree-gb, --repeat and --workers must be positive")
    kw = {} if args.builder_memory is None else {"memory": args.builder_memory}

    pf = benchutil.import_permafrost()
    started = time.perf_counter()
    when = datetime.datetime.now()
    load_start = _loadavg()
    tmp = tempfile.mkdtemp(prefix="permafrost-bench-build-", dir=args.tmpdir)
    try:
        # ------------------------------------------------ sections 1 to 3
        log("making %s (key, value) pairs and their dict" % format(size, ","))
        pairs = flat_pairs(size)
        table = dict(pairs)

        log("freeze vs Builder (%d repeats)" % args.repeat)
        speed, closes, paths = bench_speed(pf, pairs, table, tmp, args.repeat, kw)
        sizes = {name: os.path.getsize(p) for name, p in paths.items()}
        for name in DIAG_SERIES:
            os.unlink(paths[name])
        log("pickle.dumps of the dict")
        pickle_ns, blob = timed_ns(pickle.dumps, table, 5)
        pickle_size = len(blob)
        del blob

        sample_len = min(size, LOOKUP_SAMPLE)
        log("lookups in the Builder's and freeze's images (%s keys per pass, %d passes)"
            % (format(sample_len, ","), args.repeat))
        look, look_n, look_wrong, look_checked = bench_flat_lookups(
            pf, pairs, paths, args.repeat, args.seed + 1)
        del pairs, table
        for name in SPEED_SERIES:
            os.unlink(paths[name])
        gc.collect()

        # ------------------------------------------------ section 4
        big_path = os.path.join(tmp, "big.pf")
        log("Builder of %s entries made on the fly, in a child process" % format(big, ","))
        bigf = run_child("--child-build", big, big_path, args.builder_memory)
        big_wrong, big_checked = check_big(pf, big_path, big, args.seed + 3)
        log("  %.1f s (loop %.1f s, close %.1f s), peak RSS %s, image %s"
            % (bigf["wall_s"], bigf["loop_ns"] / 1e9, bigf["close_ns"] / 1e9,
               benchutil.fmt_bytes(bigf["peak"]), benchutil.fmt_bytes(bigf["size"])))
        os.unlink(big_path)

        # ------------------------------------------------ section 5
        mem_skip = memory.unsupported_reason()
        if mem_skip is not None:
            log("worker memory not measured: %s" % mem_skip)
        tree, tree_path = bench_tree(pf, tmp, tree_gib, workers, lookups, args.seed,
                                     args.builder_memory, mem_skip is None)
        elapsed = time.perf_counter() - started

        # ------------------------------------------------ answers
        wrong = []
        for name, n in look_wrong.items():
            if n:
                wrong.append("%d of %d lookups in the %s image" % (n, look_checked, name))
        if big_wrong:
            wrong.append("%d of %d lookups in the big image" % (big_wrong, big_checked))
        if tree["build_wrong"]:
            wrong.append("%d of %d inner dicts of the tree image"
                         % (tree["build_wrong"], tree["build_checked"]))
        for label, part in (("tree workers", tree.get("workers")),
                            ("pickle workers (small)", tree.get("pickle_small")),
                            ("pickle workers (full)", tree.get("pickle_full"))):
            if part and (part["errors"] or not part["entries_ok"]):
                wrong.append("%s: %d of %d nested lookups wrong (entries ok: %s)"
                             % (label, part["errors"], part["checked"], part["entries_ok"]))

        # ------------------------------------------------ table
        ns = benchutil.fmt_time_ns
        fb = benchutil.fmt_bytes
        rows = []

        def add(figure, mine, ref, ratio, target, passed):
            rows.append([figure, mine, ref, ratio, target,
                         "-" if passed is None else verdict(passed)])

        n_txt = format(size, ",")
        for name, label in (("update", "Builder: b.update(pairs); close()"),
                            ("loop", "Builder: for k, v in pairs: b[k] = v; close()")):
            r = speed[name] / speed["freeze"]
            add("%s, %s entries" % (label, n_txt), ns(speed[name]),
                "freeze(d, path): " + ns(speed["freeze"]), ratio_text(r),
                "<= %.1fx" % BUILD_SPEED_TARGET, r <= BUILD_SPEED_TARGET)
        for name, label in (("update", "Builder entries/s, update()"),
                            ("loop", "Builder entries/s, b[k] = v loop")):
            rate = size / (speed[name] / 1e9)
            add(label, fmt_rate(rate), "freeze: " + fmt_rate(size / (speed["freeze"] / 1e9)),
                "-", ">= %.1f M/s" % (ENTRIES_PER_S_TARGET / 1e6), rate >= ENTRIES_PER_S_TARGET)
        for name in DIAG_SERIES:
            r = speed[name] / speed["freeze"]
            add("(diagnosis) %s: b[k] = ..., close()" % name, ns(speed[name]),
                "freeze(d, path): " + ns(speed["freeze"]), ratio_text(r), "(info)", None)
        r = (sizes["update"] / size) / (pickle_size / size)
        add("image bytes per entry, Builder", "%.1f B" % (sizes["update"] / size),
            "pickle.dumps(d, 5): %.1f B" % (pickle_size / size), ratio_text(r),
            "<= 1.0x", r <= 1.0)
        r = sizes["update"] / sizes["freeze"]
        add("image size, Builder vs freeze", fb(sizes["update"]),
            "freeze: " + fb(sizes["freeze"]), ratio_text(r), "(info)", None)
        r = look["builder"] / look["freeze"]
        add("lookup in the Builder's image, %s keys" % format(look_n, ","),
            ns(look["builder"]), "freeze's image: " + ns(look["freeze"]), ratio_text(r),
            "<= %.2fx" % LOOKUP_RATIO_TARGET, r <= LOOKUP_RATIO_TARGET)

        big_txt = format(big, ",")
        add("peak RSS, Builder of %s entries made on the fly" % big_txt, fb(bigf["peak"]),
            "after import permafrost: %s" % fb(bigf["baseline"]),
            "builder: +%s" % fb(bigf["peak"] - bigf["baseline"]),
            "< %s (issue: 100M entries)" % fb(PEAK_RSS_TARGET), bigf["peak"] < PEAK_RSS_TARGET)
        big_build_ns = bigf["loop_ns"] + bigf["close_ns"]
        add("build time, %s entries on the fly (loop + close)" % big_txt,
            "%s, %s" % (ns(big_build_ns), fmt_rate(big / (big_build_ns / 1e9))),
            "making the entries alone: %s" % ns(bigf["gen_ns"]),
            "-", "(info)", None)
        add("image size, %s entries" % big_txt, fb(bigf["size"]),
            "%.1f B per entry" % (bigf["size"] / big), "-", "(info)", None)

        tb = tree["build"]
        t_txt = "%s outer / %s inner" % (format(tree["n_outer"], ","),
                                        format(tree["n_inner"], ","))
        tree_build_ns = tb["loop_ns"] + tb["close_ns"]
        add("tree build, %s entries (b[outer] = inner dict)" % t_txt,
            "%s, %s inner" % (ns(tree_build_ns),
                              fmt_rate(tree["n_inner"] / (tree_build_ns / 1e9))),
            "making the inner dicts alone: %s" % ns(tb["gen_ns"]), "-", "(info)", None)
        r = tb["size"] / tree["accounted"]
        add("tree image size", fb(tb["size"]),
            "Python objects (getsizeof): %s" % fb(tree["accounted"]), ratio_text(r),
            "(info)", None)
        add("peak RSS of the tree build", fb(tb["peak"]),
            "after import permafrost: %s" % fb(tb["baseline"]),
            "builder: +%s" % fb(tb["peak"] - tb["baseline"]),
            "< %s" % fb(PEAK_RSS_TARGET), tb["peak"] < PEAK_RSS_TARGET)
        w = tree.get("workers")
        if w:
            budget = tb["size"] + workers * PER_WORKER_BUDGET
            ps, pfull = tree["pickle_small"], tree["pickle_full"]
            if pfull:
                ref_pss, how = pfull["pss"], "measured"
            else:
                ref_pss, how = workers * tree["pickle_projected_worker"], "PROJECTED"
            add("PSS of %d workers, random nested lookups" % workers, fb(w["pss"]),
                "%d pickled copies (%s): %s" % (workers, how, fb(ref_pss)),
                ratio_text(w["pss"] / ref_pss),
                # info: the per-worker part is the interpreter and this
                # script's imports (a spawned worker's PSS before any lookup
                # is about 15 MiB here), not the image
                "(info; image + %d x 15 MiB = %s)" % (workers, fb(budget)), None)
            rate = sum(w["rates"])
            ref_rates = (pfull or ps)["rates"]
            # the pickled side: summed over its workers (full size), or one
            # worker's rate (small size) times the number of workers
            ref_rate = sum(ref_rates) / len(ref_rates) * workers
            small = "" if pfull else " (%s outer, 1 worker x %d)" % (
                format(ps["n_outer"], ","), workers)
            add("nested lookups/s, %d workers summed" % workers, fmt_rate(rate),
                "pickled dict%s: %s" % (small, fmt_rate(ref_rate)),
                ratio_text(rate / ref_rate),
                "(info)", None)
        table_md = benchutil.markdown_table(
            ["figure", "permafrost", "reference", "ratio", "target", "result"], rows)

        # ------------------------------------------------ projection
        proj_md, proj_notes = projection(tree, workers)

        # ------------------------------------------------ notes
        notes = [
            "Data of sections 1-3: %s entries, key 'k<9 digits>-<5 hex>' (16 chars), value "
            "(int, one of 1000 shared 'category-<i %% 1000>' str objects, float with 2 "
            "decimals). pickle.dumps(d, protocol=5) took %s." % (n_txt, ns(pickle_ns)),
            "Build times: medians of %d runs, the order of the series rotated each run, "
            "cyclic GC off. freeze(d, path) times the dict's encoding only (the dict is "
            "built beforehand); the Builder series time Builder() + the entries + close(). "
            "close() alone (medians): update %s, loop %s, value not in a local %s, "
            "int values %s." % (args.repeat, ns(closes["update"]), ns(closes["loop"]),
                                ns(closes["loop, value not in a local"]),
                                ns(closes["loop, int values"])),
            "Diagnosis rows: `for kv in pairs: b[kv[0]] = kv[1]` (the same values, never "
            "bound to a local name) and `for k, v in pairs: b[k] = 0`. Image sizes: "
            "update() %s bytes, b[k] = v loop %s (images are not byte-comparable: two "
            "freeze() calls of one dict differ too)."
            % (format(sizes["update"], ","), format(sizes["loop"], ",")),
            "Sizes: Builder image %s bytes, freeze image %s, pickle %s."
            % (format(sizes["update"], ","), format(sizes["freeze"], ","),
               format(pickle_size, ",")),
            "Lookups: per key, one pass times `for k in keys: m[k]` over a random sample "
            "of %s existing keys (the same sample, in the same order, for both images; "
            "newly made equal str objects for every pass), one compiled copy of the loop "
            "per image, median of %d passes after one warm-up pass. %s sampled values "
            "of each image compared with the dict's: %s."
            % (format(look_n, ","), args.repeat, format(look_checked, ","),
               "all equal" if not any(look_wrong.values()) else "WRONG %r" % look_wrong),
            "Section 4: a child process (this script, --child-build) writes %s entries "
            "made in the loop (`b[key] = (i, cat, x)`, nothing held in a list) with "
            "Builder(%s); peak RSS is its VmHWM (RUSAGE_CHILDREN ru_maxrss says %s, but it also "
            "counts the parent's pages that the child held between fork and exec), RSS "
            "after import permafrost %s, RSS before close() %s. Loop %s, close() %s; "
            "the child's wall time %.1f s. Making the entries without a builder costs "
            "%s (timed on %s of them, scaled). %s sampled entries checked: %s."
            % (big_txt, "memory=%d" % args.builder_memory if args.builder_memory else "",
               fb(bigf["ru_maxrss"]), fb(bigf["baseline"]), fb(bigf["rss_before_close"]),
               ns(bigf["loop_ns"]), ns(bigf["close_ns"]), bigf["wall_s"], ns(bigf["gen_ns"]),
               format(min(big, 1_000_000), ","), format(big_checked, ","),
               "all right" if not big_wrong else "%d WRONG" % big_wrong),
            "Tree: outer key 'node-<8 digits>-<4 hex>' (18 chars) -> dict of 10..50 "
            "(mean %.1f) entries 'attr-<2 digits>-<5 hex>' (13 chars) -> ('tag-<n>', int, "
            "float), a fresh str per entry. sys.getsizeof accounting on %s outer entries: "
            "%.1f B per inner entry (everything included: outer and inner dicts, keys, "
            "tuples and their items), %.0f B per outer entry, so %.2f GiB is %s outer "
            "entries. The child writes `b[outer_key(o)] = inner_dict(o)` (loop %s, close() "
            "%s, wall %.1f s); %d whole inner dicts checked against the generator: %s."
            % (tree["n_inner"] / tree["n_outer"], format(TREE_SAMPLE_OUTER, ","),
               tree["bytes_per_inner"], tree["bytes_per_outer"], tree_gib,
               format(tree["n_outer"], ","), ns(tb["loop_ns"]), ns(tb["close_ns"]),
               tb["wall_s"], tree["build_checked"],
               "all right" if not tree["build_wrong"] else "%d WRONG" % tree["build_wrong"]),
        ]
        if w:
            ps, pfull = tree["pickle_small"], tree["pickle_full"]
            notes.append(
                "Tree workers: %d spawn processes each open the image and time %s random "
                "nested lookups `m[outer][inner]` (keys made in chunks of %s, untimed; the "
                "timing includes first touches of the mapping's pages, the file being in the "
                "page cache); %s of the answers compared with the generator: %s. Per "
                "worker: %s. Memory read while all are alive: PSS %s, RSS %s, USS %s; the "
                "image mapping in them: RSS %s, PSS %s (of a %s file); RSS after import "
                "permafrost (median) %s."
                % (workers, format(lookups, ","), format(WORKER_CHUNK, ","),
                   format(w["checked"], ","),
                   "all right" if not w["errors"] else "%d WRONG" % w["errors"],
                   ", ".join(fmt_rate(x) for x in w["rates"]), fb(w["pss"]), fb(w["rss"]),
                   fb(w["uss"]), fb(w["image_rss"]), fb(w["image_pss"]), fb(tb["size"]),
                   fb(w["rss0"])))
            notes.append(
                "Pickled reference, small size (measured): %s outer entries (%s of objects "
                "by getsizeof), pickle file %s (dump %s); one spawn worker's pickle.load "
                "took %s and its RSS grew %s after load (from %s after import): %.2f bytes "
                "of RSS per getsizeof byte; its dict answered %s nested lookups; PSS %s, "
                "USS %s. Projected PSS per worker at %.2f GiB: %s (this worker's PSS + its RSS "
                "growth per getsizeof byte x the bytes it did not hold)."
                % (format(ps["n_outer"], ","), fb(ps["accounted"]), fb(ps["file"]),
                   ns(ps["dump_ns"]), ns(ps["load_ns"]), fb(ps["delta"]), fb(ps["rss0"]),
                   tree["pickle_per_accounted_byte"], fmt_rate(ps["rates"][0]), fb(ps["pss"]),
                   fb(ps["uss"]), tree_gib, fb(tree["pickle_projected_worker"])))
            if pfull:
                notes.append(
                    "Pickled reference, full size (measured): %d workers each pickle.load "
                    "a %s file of the %s-outer-entry tree (load %s, median); summed PSS %s, "
                    "RSS %s; per worker RSS growth %s (the projection from the small size "
                    "said %s per worker in all)."
                    % (pfull["workers"], fb(pfull["file"]), format(pfull["n_outer"], ","),
                       ns(pfull["load_ns"]), fb(pfull["pss"]), fb(pfull["rss"]),
                       fb(pfull["delta"]), fb(tree["pickle_projected_worker"])))
            else:
                notes.append("Pickled copies at full size: not measured (they would not "
                             "fit comfortably, or the small size is the full size); the "
                             "PSS reference is the projection.")
        else:
            notes.append("Worker memory not measured: %s." % mem_skip)
        notes += proj_notes
        if wrong:
            notes.append("WRONG ANSWERS: " + "; ".join(wrong) + ".")
        notes.append("Whole run: %.0f s." % elapsed)

        version = getattr(pf, "__version__", "unknown")
        report = "\n".join(
            ["# permafrost Builder benchmark, %s" % when.strftime("%Y-%m-%d %H:%M"), ""]
            + ["- " + line for line in benchutil.machine_description(
                [os.path.relpath(os.path.abspath(__file__))] + list(argv))]
            + ["- load average (1 min) at start / end: %s / %s (this run adds "
               "about 1; more means other work shared the cores)" % (load_start, _loadavg()),
               "- permafrost: %s (%s)" % (version, os.path.dirname(pf.__file__)),
               "- sizes: --size %s, --big %s, --tree-gb %g, %d workers, %s nested "
               "lookups per worker, %d repeats"
               % (n_txt, big_txt, tree_gib, workers, format(lookups, ","), args.repeat),
               "", table_md, "", "## Projection for the user's case", "", proj_md,
               "", "## Notes", ""]
            + ["- " + n for n in notes]) + "\n"

        print()
        print(table_md)
        print()
        print(proj_md)
        print()
        for n in notes:
            print("- " + n)
        print()
        benchutil.write_results(args.out, "build", when, report)
        return 1 if wrong else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def projection(tree, workers):
    """The user's case from this run's figures: (Markdown table, notes)."""
    u = USER_CASE
    fb = benchutil.fmt_bytes
    accounted = u["gib"] * GIB
    inner = accounted / tree["bytes_per_inner"]
    image_per_inner = tree["build"]["size"] / tree["n_inner"]
    image = inner * image_per_inner
    rows = [
        ["Python objects (getsizeof)", gib(accounted), "given (the user's case)"],
        ["inner entries", format(round(inner), ","),
         "projected: / %.1f B per inner entry (measured on this tree's sample)"
         % tree["bytes_per_inner"]],
        ["image size", gib(image),
         "projected: x %.1f image bytes per inner entry (measured: %s / %s)"
         % (image_per_inner, fb(tree["build"]["size"]), format(tree["n_inner"], ","))],
        ["Builder peak RSS", "%s (at %s inner entries)" % (fb(tree["build"]["peak"]),
                                                         format(tree["n_inner"], ",")),
         "measured at this run's size; the Builder's memory is bounded by its "
         "memory= budget, not projected"],
    ]
    notes = []
    w = tree.get("workers")
    if w:
        overhead = (w["pss"] - w["image_pss"]) / workers
        pf_sum = image + u["workers"] * overhead
        per_byte = tree["pickle_per_accounted_byte"]
        pk_worker = tree["pickle_small"]["pss"] + per_byte * (
            accounted - tree["pickle_small"]["accounted"])
        pk_sum = u["workers"] * pk_worker
        pk_file = tree["pickle_file_per_outer"] * accounted / tree["bytes_per_outer"]
        rows += [
            ["permafrost: PSS per worker besides the image", fb(overhead),
             "measured: (summed PSS - image PSS) / %d workers" % workers],
            ["permafrost: summed PSS, %d workers" % u["workers"], gib(pf_sum),
             "projected: image once (every page touched) + %d x per-worker PSS" % u["workers"]],
            ["pickle: file size", gib(pk_file), "projected linearly from the small size"],
            ["pickle: PSS per worker", gib(pk_worker),
             "projected: one worker's PSS at the small size + %.2f B of RSS per "
             "getsizeof byte (measured there) x the extra bytes" % per_byte],
            ["pickle: %d copies" % u["workers"], gib(pk_sum),
             "projected: %d x per worker" % u["workers"]],
            ["machine", "%s RAM, %s free" % (gib(u["ram_gib"] * GIB), gib(u["free_gib"] * GIB)),
             "given (the user's case)"],
        ]
        fits_pf = pf_sum <= u["ram_gib"] * GIB
        notes.append(
            "Projection (user's case: %g GiB of Python objects, %d workers, %g GiB RAM, "
            "%g GiB free): %d pickled copies would need about %s, %s the RAM; permafrost "
            "workers sum to about %s of PSS, %s of it the image, which is file-backed "
            "page cache shared by all of them (the kernel can drop and re-read it, it is "
            "not anonymous memory); %s. Measured here: bytes per entry, the per-worker "
            "overhead, the RSS per getsizeof byte of an unpickled copy; projected: "
            "everything scaled to %g GiB."
            % (u["gib"], u["workers"], u["ram_gib"], u["free_gib"], u["workers"],
               gib(pk_sum), "%.1fx" % (pk_sum / (u["ram_gib"] * GIB)), gib(pf_sum), gib(image),
               ("the image alone is larger than the %g GiB free: the workers' working set "
                "decides how much of it stays resident" % u["free_gib"])
               if image > u["free_gib"] * GIB else "it fits in the %g GiB free" % u["free_gib"],
               u["gib"]) + ("" if fits_pf else " It does NOT fit in the RAM."))
    md = benchutil.markdown_table(["quantity", "value", "how"], rows)
    return md, notes


if __name__ == "__main__":
    sys.exit(main())
