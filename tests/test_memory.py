"""permafrost.memory_report() and `python -m permafrost memory`: the
figures of the images a process maps, the processes it cannot measure, and
what it says where a platform gives less."""

from __future__ import annotations

import gc
import json
import os
import pickle
import subprocess
import sys
import textwrap
import types

import pytest

import permafrost as pf
from permafrost import _memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/PID/smaps")
TABLE = {"k%d" % i: ("v%d" % i, i) for i in range(50_000)}


@pytest.fixture
def read_image(tmp_path):
    """(path, root) of an image of TABLE that this process opened and read
    whole; closed at the end."""
    path = tmp_path / "t.pf"
    pf.freeze(TABLE, path)
    root = pf.open(path)
    assert pf.thaw(root) == TABLE  # every page touched
    yield path, root
    pf.image_of(root).close()


def _mine(report, name):
    [proc] = [p for p in report.processes if p.pid == os.getpid()]
    return [im for im in proc.images if im.name == name]


@linux
def test_an_opened_image_is_found_with_its_resident_bytes(read_image):
    path, _ = read_image
    report = pf.memory_report()
    [im] = _mine(report, str(path))
    size = os.path.getsize(path)
    assert size <= im.size < size + 8192
    assert 0.7 * size <= im.rss <= im.size
    assert im.private + im.shared == im.rss
    assert not im.deleted
    [agg] = [a for a in report.images if a.name == str(path)]
    assert (agg.processes, agg.rss, agg.pss) == (1, im.rss, im.pss)
    [proc] = report.processes
    assert proc.pid == os.getpid()
    assert proc.rss >= proc.pss >= proc.uss > 0
    assert proc.rss >= im.rss
    assert report.total_pss == proc.pss
    assert "image " + str(path) in str(report)


@linux
def test_a_replaced_image_is_still_found_as_deleted(tmp_path):
    path = tmp_path / "t.pf"
    pf.freeze(TABLE, path)
    old = pf.open(path)
    pf.thaw(old)
    pf.freeze({"new": 1}, path)  # readers of the old image keep it
    [im] = _mine(pf.memory_report(), str(path))
    assert im.deleted and im.rss > 0
    del old  # the last view: the image is unmapped
    gc.collect()
    assert _mine(pf.memory_report(), str(path)) == []


@linux
def test_a_shared_segment_is_shared_with_a_process_that_attached():
    """The owner and a worker that read every entry: each one's resident
    image pages are shared, and together they pay for one copy."""
    root = pf.share(TABLE)
    pf.thaw(root)
    name = "/dev/shm" + pf.image_of(root).shared_name
    code = textwrap.dedent("""
        import pickle, sys, permafrost as pf
        root = pickle.loads(bytes.fromhex(sys.stdin.readline()))
        assert len(pf.thaw(root)) == 50_000
        print("ready", flush=True)
        sys.stdin.readline()
    """)
    worker = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        worker.stdin.write(pickle.dumps(root).hex() + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline() == "ready\n"
        report = pf.memory_report([os.getpid(), worker.pid])
        [im] = [a for a in report.images if a.name == name]
        assert im.processes == 2 and im.deleted is False
        for proc in report.processes:
            [mine] = [m for m in proc.images if m.name == name]
            assert mine.rss > 0 and mine.shared >= 0.8 * mine.rss and mine.pss < mine.rss
        # two processes, each with about the whole image resident: one copy
        assert im.rss > 1.5 * im.pss
        assert im.pss <= im.size
        worker.stdin.write("done\n")
        worker.stdin.flush()
        assert worker.wait(60) == 0
    finally:
        worker.kill()
        worker.wait()
        pf.image_of(root).close()


def test_processes_that_cannot_be_measured_are_named_in_the_notes():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    report = pf.memory_report([gone.pid, os.getpid()])
    assert [p.pid for p in report.processes] == [os.getpid()]
    assert any(str(gone.pid) in note and "no process" in note for note in report.notes)
    assert pf.memory_report(os.getpid()).processes[0].pid == os.getpid()


@linux
def test_children_are_found():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        pids = [p.pid for p in pf.memory_report(children=True).processes]
        assert pids[0] == os.getpid() and child.pid in pids
        assert child.pid not in [p.pid for p in pf.memory_report().processes]
    finally:
        child.stdin.close()
        child.wait()


def test_without_smaps_or_psutil_the_report_says_what_it_cannot_measure(monkeypatch):
    monkeypatch.setattr(_memory, "_linux", lambda: False)
    monkeypatch.setattr(_memory, "_psutil", lambda: None)
    report = pf.memory_report()
    [proc] = report.processes
    assert (proc.rss, proc.pss, proc.uss) == (None, None, None)
    assert report.total_pss is None
    assert any("psutil is not installed" in n for n in report.notes)
    assert any("per-image figures" in n for n in report.notes)
    assert "-" in str(report)


def test_with_psutil_only_the_process_figures_are_given(monkeypatch):
    """Elsewhere than Linux, psutil's memory_full_info() gives RSS and USS;
    no PSS is said, not invented."""
    class NoSuchProcess(Exception):
        pass

    class Process:
        def __init__(self, pid):
            if pid != os.getpid():
                raise NoSuchProcess(pid)

        def memory_full_info(self):
            return types.SimpleNamespace(rss=300, uss=100)

    fake = types.SimpleNamespace(Process=Process, NoSuchProcess=NoSuchProcess,
                                 Error=Exception)
    monkeypatch.setattr(_memory, "_linux", lambda: False)
    monkeypatch.setattr(_memory, "_psutil", lambda: fake)
    report = pf.memory_report([os.getpid(), -5])
    [proc] = report.processes
    assert (proc.rss, proc.uss, proc.pss, proc.images) == (300, 100, None, [])
    assert report.total_uss == 100 and report.total_pss is None
    assert any("no process -5" in n for n in report.notes)
    assert any("gives no PSS" in n for n in report.notes)


@linux
def test_the_command_line_reports_an_image_as_json(read_image):
    path, _ = read_image
    out = subprocess.run([sys.executable, "-m", "permafrost", "memory", "--json",
                          str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    [proc] = report["processes"]
    assert proc["pid"] == os.getpid() and report["total_pss"] == proc["pss"]
    assert str(path) in [im["name"] for im in report["images"]]
    text = subprocess.run([sys.executable, "-m", "permafrost", "memory", str(os.getpid())],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "image " + str(path) in text.stdout


def test_the_command_line_fails_when_nothing_was_measured():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = subprocess.run([sys.executable, "-m", "permafrost", "memory", str(gone.pid)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no process %d" % gone.pid in out.stdout
    bad = subprocess.run([sys.executable, "-m", "permafrost", "memory", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr
