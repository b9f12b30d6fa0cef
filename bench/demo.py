#!/usr/bin/env python3
"""permafrost demo: one big lookup table, a pool of processes, one copy in RAM;
then the whole pipeline of callable classes, shared with permafrost.share().

The user's situation (docs/BENCHMARKS.md): a pipeline stage holds a huge
pure-Python lookup dict and must run in a pool of processes. This script
runs the same stage twice in a 'spawn' pool, where every worker looks up
every key of the input:

  1. the usual way: the stage holds the plain dict, and the pool pickles it
     into every worker (through the pool initializer);
  2. the permafrost way: the dict is frozen once to an image file, and the
     stage holds the view returned by permafrost.open(); the view pickles by
     reference, so each worker receives a few hundred bytes and maps the one
     image.

While the workers are still alive (after each has touched every entry) it
reads their memory from /proc (PSS: shared pages divided among the processes
that map them), and prints both runs side by side. Both runs must return the
same checksums.

Part 2 runs the user's whole pipeline (bench/pipeline_demo.py): a Pipeline
of callable classes, a table stage and a pure-Python Trie of Node objects,
once pickled into each worker and once as ``permafrost.share(pipeline)``,
whose workers run the same classes' code on the one shared image.

    python bench/demo.py [--size 2000000] [--workers 2]
"""

import argparse
import gc
import multiprocessing
import os
import pickle
import random
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
import pipeline_demo  # noqa: E402
from trie_classes import build_trie  # noqa: E402


def write_input(path, keys, seed):
    """The pipeline's input: every key once, in random order, one per line."""
    order = list(keys)
    random.Random(seed).shuffle(order)
    with open(path, "w", encoding="ascii") as f:
        for i in range(0, len(order), 100_000):
            f.write("\n".join(order[i:i + 100_000]))
            f.write("\n")


def _times(reference, mine, fewer, more):
    """'5.2x less' / '1.3x more': how `mine` compares with `reference`."""
    if mine <= reference:
        return "%.1fx %s" % (reference / mine, fewer)
    return "%.1fx %s" % (mine / reference, more)


def run_pool(stage, input_path, workers, batch_len, image_path=None):
    """Run `stage` over the input in a fresh spawn pool; measure the
    workers' memory after they are done, while they are still alive."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    gc.collect()
    t0 = time.perf_counter()
    pool = ctx.Pool(workers, initializer=pipeline_demo.init_worker,
                    initargs=(stage, barrier))
    try:
        results = pool.map(pipeline_demo.run_input,
                           [input_path] * workers, chunksize=1)
        wall = time.perf_counter() - t0
        pids = [r[0] for r in results]
        if len(set(pids)) != workers:
            raise RuntimeError("a worker ran two tasks: %r" % pids)
        # The pool's workers are idle now but alive, still holding the stage
        # (and, for permafrost, the mapping of every page they touched).
        if memory.unsupported_reason() is None:
            per_worker = [memory.usage(pid) for pid in pids]
            image = (memory.total_mapping_usage(pids, image_path)
                     if image_path else None)
        else:
            per_worker = image = None
    finally:
        pool.terminate()
        pool.join()
    return {
        "wall": wall,
        "checksums": [r[1] for r in results],
        "records": [r[2] for r in results],
        "stage_seconds": [r[3] for r in results],
        "pss": sum(u["PSS"] for u in per_worker) if per_worker else None,
        "uss": sum(u["USS"] for u in per_worker) if per_worker else None,
        "rss": sum(u["RSS"] for u in per_worker) if per_worker else None,
        "image": image,
    }


def pipeline_part(permafrost, table, tmp, args):
    """Part 2: the whole pipeline of callables (a table stage and a trie of
    Node objects), pickled into each worker, then shared with
    permafrost.share(pipeline). Prints a table; returns its rows, or None
    if the results differ."""
    fmt_b = benchutil.fmt_bytes
    n_words = min(len(table), args.trie_words)
    words = list(table)[:n_words]
    t = time.perf_counter()
    pipeline = pipeline_demo.Pipeline(pipeline_demo.Enrich(table),
                                      pipeline_demo.TrieMatch(build_trie(words)))
    build_s = time.perf_counter() - t
    input_path = os.path.join(tmp, "input2.txt")
    write_input(input_path, words, args.seed + 2)
    print()
    print("part 2: the whole pipeline as classes (a table stage and a pure-Python "
          "trie of %s words, built in %.1f s), %d spawn workers"
          % (format(n_words, ","), build_s, args.workers))
    plain_sent = len(pickle.dumps(pipeline))
    print("  run 3: the pipeline pickled into each worker ...")
    plain = run_pool(pipeline, input_path, args.workers, args.batch)
    t = time.perf_counter()
    shared = permafrost.share(pipeline)      # one image: the stages, the table, the trie
    share_s = time.perf_counter() - t
    shared_sent = len(pickle.dumps(shared))
    print("  run 4: permafrost.share(pipeline) (%.1f s): an instance of %s whose "
          "stages read the one shared image ..." % (share_s, type(shared).__name__))
    pf = run_pool(shared, input_path, args.workers, args.batch)
    del shared
    gc.collect()
    ok = plain["checksums"] == pf["checksums"] and len(set(pf["checksums"])) == 1
    rows = []
    if plain["pss"] is not None:
        rows.append(["workers' PSS, total", fmt_b(plain["pss"]), fmt_b(pf["pss"]),
                     "%.2fx" % (pf["pss"] / plain["pss"])])
    rows += [
        ["wall time, pool start to all results", "%.2f s" % plain["wall"],
         "%.2f s" % pf["wall"], "%.2fx" % (pf["wall"] / plain["wall"])],
        ["pipeline pickled to each worker", fmt_b(plain_sent), fmt_b(shared_sent),
         "1/%s" % format(round(plain_sent / max(shared_sent, 1)), ",")],
        ["checksums (%d workers)" % args.workers, "%016x" % plain["checksums"][0],
         "%016x" % pf["checksums"][0], "match" if ok else "MISMATCH"],
    ]
    print()
    print(benchutil.markdown_table(
        ["", "pipeline pickled", "share(pipeline)", "shared / pickled"], rows))
    if not ok:
        print("FAILED: the pipeline's results differ: %r / %r"
              % (plain["checksums"], pf["checksums"]))
        return None
    if plain["pss"] is not None:
        print("Part 2: the same classes ran unchanged in the workers on one shared "
              "copy: %s of memory in total instead of %s (%s)."
              % (fmt_b(pf["pss"]), fmt_b(plain["pss"]),
                 _times(plain["pss"], pf["pss"], "less", "more")))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="permafrost demo: a lookup table shared by a spawn pool")
    parser.add_argument("--size", type=int, default=2_000_000,
                        help="entries in the lookup dict (default 2000000)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes in the pool (default 2)")
    parser.add_argument("--batch", type=int, default=10_000,
                        help="input records per call of the stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trie-words", type=int, default=50_000,
                        help="words in part 2's trie (default 50000)")
    parser.add_argument("--tmpdir", default=None,
                        help="where to put the image and the input file")
    args = parser.parse_args(argv)
    if args.size < 1 or args.workers < 1:
        parser.error("--size and --workers must be >= 1")

    permafrost = benchutil.import_permafrost()
    fmt_b = benchutil.fmt_bytes
    tmp = tempfile.mkdtemp(prefix="permafrost-demo-", dir=args.tmpdir)
    try:
        print("permafrost demo: %s-entry lookup dict, %d spawn workers, "
              "each looks up every key" % (format(args.size, ","), args.workers))

        t = time.perf_counter()
        table = datasets.lookup_dict(args.size, args.seed)
        print("  built the dict in %.1f s (str keys; str / int / tuple values)"
              % (time.perf_counter() - t))

        image_path = os.path.join(tmp, "table.pf")
        t = time.perf_counter()
        permafrost.freeze(table, image_path)
        freeze_s = time.perf_counter() - t
        image_size = os.path.getsize(image_path)

        input_path = os.path.join(tmp, "input.txt")
        write_input(input_path, table.keys(), args.seed + 1)
        expected = datasets.table_checksum(table, table.keys())

        plain_stage = pipeline_demo.Enrich(table)
        plain_sent = len(pickle.dumps(plain_stage))
        print("  froze it in %.1f s: image %s; pickle of the stage %s"
              % (freeze_s, fmt_b(image_size), fmt_b(plain_sent)))

        print("  run 1: stage holds the plain dict, pickled into each worker ...")
        plain = run_pool(plain_stage, input_path, args.workers, args.batch)
        del plain_stage

        view = permafrost.open(image_path)
        pf_stage = pipeline_demo.Enrich(view)
        pf_sent = len(pickle.dumps(pf_stage))
        print("  run 2: stage holds the permafrost view ...")
        pf = run_pool(pf_stage, input_path, args.workers, args.batch, image_path)
        del pf_stage
        permafrost.image_of(view).close()
        del view

        ok = (all(c == expected for c in plain["checksums"] + pf["checksums"])
              and all(r == args.size for r in plain["records"] + pf["records"]))

        def ratio(a, b):
            if not b:
                return "-"
            r = a / b
            return "%.2fx" % r if r >= 0.01 else "1/%sx" % format(round(1 / r), ",")

        w = args.workers
        measured = plain["pss"] is not None
        rows = []
        if measured:
            rows += [
                ["workers' PSS, total", fmt_b(plain["pss"]), fmt_b(pf["pss"]),
                 ratio(pf["pss"], plain["pss"])],
                ["workers' PSS, per worker", fmt_b(plain["pss"] / w),
                 fmt_b(pf["pss"] / w), ratio(pf["pss"], plain["pss"])],
                ["workers' USS (private), total", fmt_b(plain["uss"]),
                 fmt_b(pf["uss"]), ratio(pf["uss"], plain["uss"])],
            ]
        rows += [
            ["wall time, pool start to all results", "%.2f s" % plain["wall"],
             "%.2f s" % pf["wall"], ratio(pf["wall"], plain["wall"])],
            ["time in the stage, per worker (median)",
             "%.2f s" % benchutil.median(plain["stage_seconds"]),
             "%.2f s" % benchutil.median(pf["stage_seconds"]),
             ratio(benchutil.median(pf["stage_seconds"]),
                   benchutil.median(plain["stage_seconds"]))],
            ["stage pickled to each worker", fmt_b(plain_sent), fmt_b(pf_sent),
             ratio(pf_sent, plain_sent)],
            ["table size (pickle / image)", fmt_b(plain_sent), fmt_b(image_size),
             ratio(image_size, plain_sent)],
            ["checksums (%d workers)" % w, "%016x" % plain["checksums"][0],
             "%016x" % pf["checksums"][0], "match" if ok else "MISMATCH"],
        ]
        print()
        print(benchutil.markdown_table(
            ["", "plain dict (pickled)", "permafrost view", "permafrost / plain"], rows))
        if pf["image"] is not None:
            im = pf["image"]
            print()
            print("image mapping in the workers: %s resident in total, %s PSS "
                  "(the one copy of a %s image, divided among %d workers)"
                  % (fmt_b(im["RSS"]), fmt_b(im["PSS"]), fmt_b(image_size), w))
        print()
        if not ok:
            print("FAILED: the workers' checksums differ (expected %016x): %r / %r"
                  % (expected, plain["checksums"], pf["checksums"]))
            return 1
        if measured:
            print("Conclusion: %d workers sharing one frozen image used %s of memory "
                  "in total instead of %s for %d pickled copies (%s), and finished in "
                  "%.2f s instead of %.2f s; same results."
                  % (w, fmt_b(pf["pss"]), fmt_b(plain["pss"]), w,
                     _times(plain["pss"], pf["pss"], "less", "more"),
                     pf["wall"], plain["wall"]))
        else:
            print("Memory not measured: %s." % memory.unsupported_reason())
            print("Conclusion: %d workers sharing one frozen image finished in %.2f s "
                  "instead of %.2f s with %d pickled copies; same results."
                  % (w, pf["wall"], plain["wall"], w))
        if pipeline_part(permafrost, table, tmp, args) is None:
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
