"""Faults and load: a file changed under its readers (open(copy=True)), a
full disk and an exhausted address space while freezing, a worker killed
in the middle of its reads, and processes x threads reading one image."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time

import pytest

import permafrost as pf
from helpers import run_isolated
from helpers_pipeline import Lookup

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux rlimits and signals")
under_asan = "asan" in os.environ.get("LD_PRELOAD", "")
TABLE = {f"k{i}": (i, f"v{i}", [i] * (i % 4)) for i in range(20_000)}


# ----------------------------------------------------------------- copy=True


def test_a_copy_survives_the_file_being_rewritten_in_place(tmp_path):
    path = tmp_path / "t.pf"
    pf.freeze(TABLE, path)
    root = pf.open(path, copy=True)
    assert pf.image_of(root).copied and pf.image_of(root).path == str(path)
    with open(path, "r+b") as f:  # what a careless program does
        f.truncate(100)
    assert pf.thaw(root) == TABLE
    with pytest.raises(pf.CorruptImageError):
        pf.open(path, copy=True)


@linux
def test_a_mapping_does_not_survive_it_which_is_why_copy_exists(tmp_path):
    """The documented limit of every mmap reader: after the file is
    truncated under a live mapping, the lost pages fault (SIGBUS, on most
    kernels) or read as zeros (some sandboxes): never the original data."""
    path = tmp_path / "t.pf"
    pf.freeze(TABLE, path)
    proc = run_isolated(f"""
        import permafrost as pf
        from test_faults import TABLE
        root = pf.open({str(path)!r})
        open({str(path)!r}, "r+b").truncate(100)
        try:
            print("same" if pf.thaw(root) == TABLE else "different")
        except pf.CorruptImageError:
            print("corrupt")
    """, cwd=os.path.dirname(__file__))
    assert proc.returncode == -signal.SIGBUS or (
        proc.returncode == 0 and proc.stdout.strip() in ("different", "corrupt")), proc


def test_a_view_of_a_copy_is_copied_where_it_is_unpickled(tmp_path):
    path = tmp_path / "t.pf"
    pf.freeze(TABLE, path)
    stage = Lookup(pf.open(path, copy=True))
    blob = pickle.dumps(stage)
    assert len(blob) < 1024
    proc = run_isolated(f"""
        import pickle, permafrost as pf
        stage = pickle.loads({blob!r})
        print(pf.image_of(stage.table).copied, stage("k7"))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True ('k7', (7, 'v7', [7, 7, 7]), 20000)"
    # In this process the copy and a mapping of the same file stay apart.
    mapped = pickle.loads(pickle.dumps(pf.open(path)))
    copied = pickle.loads(blob).table
    assert not pf.image_of(mapped).copied and pf.image_of(copied).copied


# ----------------------------------------------------------------- resources


@linux
def test_a_full_disk_during_freeze_leaves_the_old_image(tmp_path):
    """A file size limit stands in for a full disk: freeze fails with a
    clear OSError, the published image is untouched, no temporary file."""
    path = tmp_path / "t.pf"
    pf.freeze({"old": True}, path)
    proc = run_isolated(f"""
        import resource, signal, permafrost as pf
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            pf.freeze({{i: "x" * 100 for i in range(10_000)}}, {str(path)!r})
        except OSError as e:
            print("refused", e.errno != 0)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "refused True"
    assert pf.open(path) == {"old": True}
    assert os.listdir(tmp_path) == ["t.pf"]


@linux
@pytest.mark.skipif(under_asan, reason="ASan needs the address space that RLIMIT_AS takes")
def test_no_memory_for_the_encoder_is_a_memory_error():
    proc = run_isolated("""
        import resource, permafrost as pf
        big = [bytes(range(256)) * 4096 * (i + 1) for i in range(40)]  # 200 MiB
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20), hard))
        try:
            pf.dumps(big)
        except MemoryError:
            print("MemoryError")
        print(pf.loads(pf.dumps({"still": "working"}))["still"])
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["MemoryError", "working"]


# ----------------------------------------------------------------- killed worker


def _read_for(stage, seconds, pid_dir):
    """Pool task: note this worker's pid, then look keys up for `seconds`;
    returns the number of answers that matched."""
    with open(os.path.join(pid_dir, str(os.getpid())), "w"):
        pass
    good, i, end = 0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        key = f"k{i % 20_000}"
        good += stage(key) == (key, TABLE[key], len(TABLE))
        i += 1
    return good, i


@linux
def test_a_worker_killed_mid_reads_leaves_the_pool_working(tmp_path):
    """kill -9 of one worker while three read a shared image: the others
    finish with every answer right, the pool replaces the dead worker, and
    the segment goes with its owner."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    with pf.share(TABLE) as view:
        stage = Lookup(view)
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            pending = [pool.apply_async(_read_for, (stage, 1.5, str(pid_dir)))
                       for _ in range(3)]
            deadline = time.monotonic() + 60
            while len(os.listdir(pid_dir)) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            pids = sorted(int(p) for p in os.listdir(pid_dir))
            assert len(pids) == 3
            os.kill(pids[0], signal.SIGKILL)
            # The killed worker's task never ends; the two others do.
            deadline = time.monotonic() + 60
            while sum(t.ready() for t in pending) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            done = [t.get() for t in pending if t.ready()]
            assert len(done) == 2
            assert all(good == tried > 0 for good, tried in done)
            # A new task runs (on a replacement worker if need be).
            assert pool.apply_async(stage, ("k5",)).get(timeout=60) == \
                ("k5", (5, "v5", [5]), len(TABLE))
            pool.terminate()
        name = pf.image_of(view).shared_name
    assert not os.path.exists("/dev/shm" + name)


# ----------------------------------------------------------------- load


def _threads_reading(blob, threads, rounds):
    """In a worker: `threads` threads look up every key `rounds` times
    through one unpickled view and count the answers that differ."""
    import concurrent.futures
    view = pickle.loads(blob)
    keys = list(TABLE)

    def run(t):
        bad = 0
        for r in range(rounds):
            for key in keys[t::threads]:
                bad += view[key] != TABLE[key]
            bad += len(view) != len(TABLE)
        return bad

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        return sum(ex.map(run, range(threads)))


@pytest.mark.parametrize("source", ["file", "share"])
def test_processes_times_threads_read_one_image(tmp_path, source):
    if source == "file":
        pf.freeze(TABLE, tmp_path / "t.pf")
        root = pf.open(tmp_path / "t.pf")
    else:
        root = pf.share(TABLE)
    try:
        blob = pickle.dumps(root)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            bad = pool.starmap(_threads_reading, [(blob, 4, 2)] * 2)
        assert bad == [0, 0]
        assert _threads_reading(blob, 8, 1) == 0  # and 8 threads here
    finally:
        pf.image_of(root).close()

