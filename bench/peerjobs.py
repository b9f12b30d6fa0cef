"""The worker side of bench/peers.py, and the three ways it starts workers.

A job is a generator function run in each worker: it yields one report per
phase (the first item of a report is the worker's pid), and after each
yield it waits until the parent has collected every worker's report of
that phase and lets them all go on together. So a memory job can hold its
store while the parent reads the workers' PSS, and a throughput job can
open its store, then start its timed loop at the same moment as the others.

Runners start workers:

- SpawnRunner: fresh spawn processes (a pool's workers without fork).
- ForkRunner: a holder process (spawned) loads the table once and forks the
  workers, which inherit it; the holder relays the reports and the "go"s.
- RayRunner: Ray actors, one per worker (Ray's own worker processes).

drive(runner, job, args, count, on_phase) runs a job in `count` workers.
"""

import gc
import os
import pickle
import time
import traceback

import contenders
import datasets

_MASK64 = (1 << 64) - 1
TIMEOUT = 900           # seconds a worker may take for one phase
CHUNK = 1_000           # throughput: lookups between two looks at the clock

# Set in a fork holder right before each fork: the attach of a forked
# worker is timed from there (the fork itself + the first answer).
FORKED_AT = None


class WorkerError(RuntimeError):
    pass


def _checksum_of(kind):
    return datasets.value_checksum if kind == "flat" else datasets.mapping_checksum


# ----------------------------------------------------------------- jobs


def attach_job(cls_name, spec, key, kind):
    """Open the store and answer one lookup (imports done first, not timed;
    in a forked worker the clock started before the fork)."""
    contender = contenders.make(cls_name)
    contender.available()
    import permafrost  # noqa: F401 - imported before timing, as a worker would
    gc.disable()
    t0 = FORKED_AT if FORKED_AT is not None else time.perf_counter_ns()
    reader = contender.open_reader(spec)
    value = reader.get(key)
    t1 = time.perf_counter_ns()
    gc.enable()
    yield (os.getpid(), t1 - t0, _checksum_of(kind)(value))


def memory_job(cls_name, spec, kind):
    """Open the store, touch every entry (iterate the items, decode every
    value), collect, then hold the store while the parent reads this
    process's memory."""
    contender = contenders.make(cls_name)
    reader = contender.open_reader(spec)
    checksum = _checksum_of(kind)
    t0 = time.perf_counter()
    acc = n = 0
    for _, value in reader.items():
        acc += checksum(value)
        n += 1
    seconds = time.perf_counter() - t0
    gc.collect()
    yield (os.getpid(), acc & _MASK64, n, seconds)


def idle_job(cls_name):
    """A worker with the imports of a reader (the contender's module and
    permafrost) and nothing opened: the PSS a worker costs anyway."""
    contender = contenders.make(cls_name)
    contender.available()
    import permafrost  # noqa: F401
    gc.collect()
    yield (os.getpid(),)


def throughput_job(cls_name, spec, keys_path, seconds):
    """Phase 1: open the store, load the keys and look each up once, checked
    by a checksum. Phase 2, started with the other workers: for `seconds`,
    look the keys up in chunks, each chunk new copies of its keys (made
    untimed, so that no str hash is cached, as for keys read from input),
    GC off. Reports the lookups, the ns spent in them, and the wall ns."""
    contender = contenders.make(cls_name)
    reader = contender.open_reader(spec)
    with open(keys_path, "rb") as f:
        keys = datasets.fresh_keys(pickle.load(f))
    get = reader.get
    acc = 0
    for k in keys:
        acc += datasets.value_checksum(get(k))
    chunks = [keys[i:i + CHUNK] for i in range(0, len(keys), CHUNK)]
    yield (os.getpid(), acc & _MASK64)
    gc.disable()
    count = spent = 0
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    t1 = start
    while t1 < deadline:
        for chunk in chunks:
            chunk = datasets.fresh_keys(chunk)
            t0 = time.perf_counter_ns()
            for k in chunk:
                get(k)
            t1 = time.perf_counter_ns()
            spent += t1 - t0
            count += len(chunk)
            if t1 >= deadline:
                break
    gc.enable()
    yield (os.getpid(), count, spent, t1 - start)


JOBS = {"attach": (attach_job, 1), "memory": (memory_job, 1), "idle": (idle_job, 1),
        "throughput": (throughput_job, 2)}


def phases(job):
    return JOBS[job][1]


def pipe_worker(job, args, conn):
    """Runs a job in this process: each report goes to `conn`, then waits
    for "go". An exception goes back as a WorkerError report."""
    try:
        for report in JOBS[job][0](*args):
            conn.send(report)
            if conn.recv() != "go":
                break
    except BaseException:
        try:
            conn.send(WorkerError("%s worker %d:\n%s" % (job, os.getpid(),
                                                          traceback.format_exc())))
        except OSError:
            pass
    finally:
        conn.close()


def _recv(conn, what):
    if not conn.poll(TIMEOUT):
        raise TimeoutError("%s: no answer in %d s" % (what, TIMEOUT))
    msg = conn.recv()
    if isinstance(msg, WorkerError):
        raise msg
    return msg


def drive(runner, job, args, count, on_phase=None):
    """Runs `job(*args)` in `count` workers of `runner`; after each phase,
    calls on_phase(i, reports) while they all wait. Returns the reports of
    every phase (a list per phase, one report per worker)."""
    group = runner.start(job, args, count)
    out = []
    try:
        for i in range(phases(job)):
            reports = group.recv_all()
            if on_phase is not None:
                on_phase(i, reports)
            out.append(reports)
            group.release()
    except BaseException:
        group.abort()
        raise
    group.finish()
    return out


# ----------------------------------------------------------------- spawn


class _PipeGroup:
    def __init__(self, procs, conns, what):
        self.procs, self.conns, self.what = procs, conns, what

    def recv_all(self):
        return [_recv(c, self.what) for c in self.conns]

    def release(self):
        for c in self.conns:
            c.send("go")

    def finish(self, wait=60):
        for p in self.procs:
            p.join(wait)
            if p.is_alive():
                p.terminate()
                p.join()
        for c in self.conns:
            c.close()

    def abort(self):
        self.finish(wait=0.5)


class SpawnRunner:
    """Fresh spawn processes."""
    kind = "spawn"

    def __init__(self):
        import multiprocessing
        self.ctx = multiprocessing.get_context("spawn")

    def start(self, job, args, count):
        return _start_pipe_group(self.ctx, job, args, count, pipe_worker, ())

    def close(self):
        pass


def _start_pipe_group(ctx, job, args, count, target, extra):
    procs, conns = [], []
    global FORKED_AT
    try:
        for _ in range(count):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=target, args=(job, args) + extra + (child_end,))
            if ctx.get_start_method() == "fork":
                FORKED_AT = time.perf_counter_ns()  # the child inherits it
            proc.start()
            FORKED_AT = None
            child_end.close()
            procs.append(proc)
            conns.append(parent_end)
    except BaseException:
        _PipeGroup(procs, conns, job).abort()
        raise
    return _PipeGroup(procs, conns, "%s (%s)" % (job, ctx.get_start_method()))


# ----------------------------------------------------------------- fork


def fork_holder(pickle_path, spec, freeze, conn):
    """The parent of a fork pool, in a spawn process of its own: loads the
    table (with gc.disable() first when `freeze`), then for each request
    (job, args, count) forks `count` workers that inherit it (gc.freeze()
    right before when `freeze`) and relays their reports and the parent's
    go's. None ends it."""
    import multiprocessing
    if freeze:
        gc.disable()
    with open(pickle_path, "rb") as f:
        contenders.HELD[spec] = pickle.load(f)
    ctx = multiprocessing.get_context("fork")
    conn.send(("ready", os.getpid()))
    while True:
        request = conn.recv()
        if request is None:
            break
        job, args, count = request
        try:
            if freeze:
                gc.freeze()
            group = _start_pipe_group(ctx, job, args, count, forked_worker, (freeze,))
            try:
                for _ in range(phases(job)):
                    conn.send(group.recv_all())
                    if conn.recv() != "go":
                        raise RuntimeError("fork holder: the parent stopped the job")
                    group.release()
            except BaseException:
                group.abort()
                raise
            group.finish()
        except WorkerError as e:
            conn.send(e)
        except Exception:
            conn.send(WorkerError("fork holder:\n%s" % traceback.format_exc()))
        finally:
            if freeze:
                gc.unfreeze()
        conn.send("joined")
    conn.close()


def forked_worker(job, args, freeze, conn):
    if freeze:
        gc.enable()  # the holder runs with GC off; its children collect again
    pipe_worker(job, args, conn)


class _HolderGroup:
    def __init__(self, runner, what):
        self.runner, self.what = runner, what

    def recv_all(self):
        return _recv(self.runner.conn, self.what)

    def release(self):
        self.runner.conn.send("go")

    def finish(self):
        msg = _recv(self.runner.conn, self.what)
        if msg != "joined":
            raise RuntimeError("fork holder: unexpected %r" % (msg,))

    def abort(self):
        self.runner.close(force=True)


class ForkRunner:
    """Workers forked from a holder process that loaded the table from a
    pickle written here (untimed)."""
    kind = "fork"

    def __init__(self, table, folder, spec, freeze):
        import multiprocessing
        path = os.path.join(folder, "held.pickle")
        with open(path, "wb") as f:
            pickle.dump(table, f, protocol=5)
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=fork_holder, args=(path, spec, freeze, child))
        self.proc.start()
        child.close()
        _ready, self.holder_pid = _recv(self.conn, "fork holder start")
        os.remove(path)

    def start(self, job, args, count):
        if self.proc is None:
            raise RuntimeError("fork holder: stopped after an error")
        self.conn.send((job, args, count))
        return _HolderGroup(self, "%s (fork)" % job)

    def close(self, force=False):
        if self.proc is None:
            return
        if not force:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()
        self.proc = None


# ----------------------------------------------------------------- Ray


class _JobActor:
    """One worker: runs a job's generator one phase per step()."""

    def __init__(self):
        self.gen = None

    def step(self, job=None, args=None):
        try:
            if job is not None:
                self.gen = JOBS[job][0](*args)
            return next(self.gen)
        except Exception:
            return WorkerError("%s actor %d:\n%s" % (job, os.getpid(), traceback.format_exc()))


class _ActorGroup:
    def __init__(self, actors, pending, what):
        self.actors, self.pending, self.what = actors, pending, what

    def recv_all(self):
        import ray
        reports = ray.get(self.pending, timeout=TIMEOUT)
        for r in reports:
            if isinstance(r, WorkerError):
                raise r
        return reports

    def release(self):
        self.pending = [a.step.remote() for a in self.actors]

    def finish(self):
        import ray
        for a in self.actors:
            ray.kill(a)

    abort = finish


class RayRunner:
    """Ray actors (num_cpus=0, so that more than the cores can live)."""
    kind = "ray"

    def __init__(self):
        import ray
        self.actor_class = ray.remote(num_cpus=0)(_JobActor)

    def start(self, job, args, count):
        actors = [self.actor_class.remote() for _ in range(count)]
        pending = [a.step.remote(job, args) for a in actors]
        return _ActorGroup(actors, pending, "%s (ray)" % job)

    def close(self):
        pass


def make_runner(contender, table, folder, spec):
    if contender.runner == "fork":
        return ForkRunner(table, folder, spec, contender.gc_freeze)
    if contender.runner == "ray":
        return RayRunner()
    return SpawnRunner()
