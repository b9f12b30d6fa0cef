"""Small helpers shared by the benchmarks under bench/."""

import os
import platform
import statistics
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)


def import_permafrost():
    """Import permafrost: the installed one, else an in-place build under
    python/ of this checkout. Exits with a clear message when neither
    imports."""
    try:
        import permafrost
        return permafrost
    except ImportError as first:
        local = os.path.join(REPO_DIR, "python")
        if os.path.isdir(os.path.join(local, "permafrost")) and local not in sys.path:
            sys.path.insert(0, local)
            try:
                import permafrost
                return permafrost
            except ImportError:
                sys.path.remove(local)
        sys.exit("bench: cannot import permafrost (%s).\n"
                 "Build it first (make, or pip install .) and run with that "
                 "interpreter, e.g. .venv/bin/python %s" % (first, " ".join(sys.argv)))


def machine_description(argv=None):
    """Lines describing the machine and the run, for the results file."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    lines = [
        "CPU: %s" % cpu,
        "cores: %s logical (%s usable by this process)" % (os.cpu_count(), usable),
        "RAM: %s" % ("%.1f GiB" % (ram / 2**30) if ram else "unknown"),
        "OS: %s %s" % (platform.system(), platform.release()),
        "Python: %s (%s)" % (platform.python_version(), sys.executable),
    ]
    if argv is not None:
        lines.append("command: %s" % " ".join([os.path.basename(sys.executable)] + list(argv)))
    return lines


def mem_available():
    """The kernel's MemAvailable in bytes, or None where /proc/meminfo has
    none (not Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def median(values):
    return statistics.median(values)


def fmt_time_ns(ns):
    """A duration in the unit that reads best."""
    if ns < 1_000:
        return "%.1f ns" % ns
    if ns < 1_000_000:
        return "%.2f us" % (ns / 1e3)
    if ns < 1_000_000_000:
        return "%.2f ms" % (ns / 1e6)
    return "%.2f s" % (ns / 1e9)


def fmt_bytes(n):
    if n < 1024:
        return "%d B" % n
    if n < 1024 * 1024:
        return "%.1f KiB" % (n / 1024)
    if n < 1024 ** 3:
        return "%.1f MiB" % (n / 1024 ** 2)
    return "%.2f GiB" % (n / 1024 ** 3)


def markdown_table(header, rows):
    """A Markdown table with columns padded so that it also reads as text."""
    cols = len(header)
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(cols)]
    out = []
    for i, row in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def results_stem(out_dir, name, when):
    """OUT_DIR/<name>-<date>-<time>: the report's path without ".md", for
    files written next to it (charts)."""
    return os.path.join(out_dir, "%s-%s" % (name, when.strftime("%Y-%m-%d-%H%M%S")))


def write_results(out_dir, name, when, text):
    """Writes a run's report to OUT_DIR/<name>-<date>-<time>.md (UTF-8),
    says where on stdout, and returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    path = results_stem(out_dir, name, when) + ".md"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print("written to %s" % path)
    return path


def measure_live_workers(ctx, target, args, count, measure, payload=None):
    """Start `count` processes of `ctx` running target(*args, conn); send
    each `payload` (bytes) if given; receive one report from each (its pid
    first), call measure(pids) while they are all alive and waiting, then
    release them (send "go") and join them. Returns (reports, measured)."""
    procs, conns = [], []
    try:
        for _ in range(count):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=target, args=tuple(args) + (child_end,))
            proc.start()
            child_end.close()
            procs.append(proc)
            conns.append(parent_end)
        if payload is not None:
            for conn in conns:
                conn.send_bytes(payload)
        reports = [conn.recv() for conn in conns]
        measured = measure([r[0] for r in reports])
        for conn in conns:
            conn.send("go")
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return reports, measured
