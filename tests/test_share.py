"""share(): images in named shared memory, their owner and lifetime, the
registry that removes the segments of killed owners. Pools attaching to
them under every start method: test_pipeline.py."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

import permafrost as pf

SHM = "/dev/shm"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shared memory")


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    """Each test gets its own registry (children inherit the variable), and
    must leave no segment of its own behind."""
    monkeypatch.setenv("PERMAFROST_RUNTIME_DIR", str(tmp_path / "runtime"))
    before = set(_segments())
    yield tmp_path / "runtime"
    left = set(_segments()) - before
    for name in left:  # do not let one failure leak into the machine
        pf._binding._shm_unlink("/" + name)
    assert not left, f"segments left behind: {sorted(left)}"


def _segments():
    if not os.path.isdir(SHM):
        return []
    return [n for n in os.listdir(SHM) if n.startswith("pf-")]


def _exists(name):
    return os.path.exists(os.path.join(SHM, name.lstrip("/")))


def _registry(runtime):
    try:
        with open(runtime / "segments") as f:
            return [line.split()[0] for line in f]
    except FileNotFoundError:
        return []


TABLE = {f"key{i}": (i, i / 4, f"v{i % 7}") for i in range(2000)}
TABLE["nested"] = {"list": [1, 2, {3}], "fs": frozenset({"a"})}


def test_share_reads_like_the_original_and_close_removes_it(private_registry):
    view = pf.share(TABLE)
    image = pf.image_of(view)
    name = image.shared_name
    assert name.startswith("/pf-") and len(name) <= 31
    assert image.owner and image.path is None and image.size > 0
    assert view == TABLE and view["key7"] == TABLE["key7"]
    assert _exists(name) and _registry(private_registry) == [name]
    view.close()
    assert not _exists(name) and _registry(private_registry) == []
    # The owner's views keep reading until the last one dies.
    assert view["key1999"] == TABLE["key1999"]
    assert image.closed


def test_with_block_removes_the_segment():
    with pf.share({"a": [1, 2, 3]}) as view:
        name = pf.image_of(view).shared_name
        assert _exists(name)
        assert view["a"] == [1, 2, 3]
    assert not _exists(name)


def test_dropping_the_last_view_removes_the_segment():
    view = pf.share([1, 2, 3])
    name = pf.image_of(view).shared_name
    del view
    assert not _exists(name)


def test_scalar_and_tuple_roots():
    # Nothing refers to the segment once the root is a plain value.
    assert pf.share(42) == 42
    assert pf.share(("a", 1.5, None)) == ("a", 1.5, None)


def test_views_pickle_by_reference_and_attach_once():
    view = pf.share(TABLE)
    try:
        blob = pickle.dumps(view["nested"], protocol=5)
        assert len(blob) < 300
        again = pickle.loads(blob)
        assert again == TABLE["nested"]
        twice = pickle.loads(pickle.dumps(view))
        assert pf.image_of(twice) is pf.image_of(pickle.loads(pickle.dumps(view)))
        assert not pf.image_of(twice).owner
    finally:
        view.close()


def test_attach_after_the_owner_closed_raises_image_gone():
    view = pf.share({"a": 1})
    blob = pickle.dumps(view)
    view.close()
    code = textwrap.dedent(f"""
        import pickle, permafrost as pf
        try:
            pickle.loads({blob!r})
        except pf.ImageGoneError as e:
            assert isinstance(e, pf.Error)
            print("gone:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gone:")


def _owner_script(then):
    return textwrap.dedent(f"""
        import os, sys, time, permafrost as pf
        view = pf.share({{"k": list(range(100))}})
        print(pf.image_of(view).shared_name, flush=True)
        {then}
    """)


def test_owner_exiting_normally_removes_its_segment(private_registry):
    out = subprocess.run([sys.executable, "-c", _owner_script("pass")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    name = out.stdout.split()[0]
    assert not _exists(name)
    assert _registry(private_registry) == []


def test_killed_owner_is_cleaned_up(private_registry):
    proc = subprocess.Popen([sys.executable, "-c", _owner_script("time.sleep(600)")],
                            stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().split()[0]
        assert _exists(name) and _registry(private_registry) == [name]
        # A live owner's segment is never touched.
        assert pf.cleanup() == [] and _exists(name)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert _exists(name)                      # nobody removed it
    assert pf.cleanup() == [name]
    assert not _exists(name) and _registry(private_registry) == []
    assert pf.cleanup() == []


def test_next_share_cleans_up_a_killed_owner(private_registry):
    proc = subprocess.Popen([sys.executable, "-c", _owner_script("os.kill(os.getpid(), 9)")],
                            stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().split()[0]
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and _exists(name)
    with pf.share({"x": 1}) as view:
        assert not _exists(name)
        assert _registry(private_registry) == [pf.image_of(view).shared_name]


def test_a_reused_pid_does_not_keep_a_segment(private_registry):
    """An entry whose pid is alive but started at another time (the pid was
    reused) belongs to a gone owner."""
    view = pf.share({"x": 1})
    name = pf.image_of(view).shared_name
    path = private_registry / "segments"
    pid, start = path.read_text().split()[1:]
    path.write_text(f"{name} {pid} {int(start) + 1}\n")
    assert pf.cleanup() == [name] and not _exists(name)
    assert view["x"] == 1                      # the mapping stays readable
    view.close()                               # the name is gone already: no error


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_never_removes_the_parents_segment():
    view = pf.share({"x": [1, 2]})
    name = pf.image_of(view).shared_name
    pid = os.fork()
    if pid == 0:  # the child: close, drop, exit through atexit
        try:
            assert not pf.image_of(view).owner
            pf.image_of(view).close()
            code = 0 if _exists(name) else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert _exists(name)
    code = f"""
import os, sys, permafrost as pf
pid = os.fork()
if pid == 0:
    sys.exit(0)            # a normal exit: atexit runs in the child
os.waitpid(pid, 0)
v = pf.share({{"y": 1}})
n = pf.image_of(v).shared_name
pid = os.fork()
if pid == 0:
    sys.exit(0)
os.waitpid(pid, 0)
print(os.path.exists("/dev/shm/" + n.lstrip("/")))
v.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True"
    view.close()
    assert not _exists(name)


def test_unshareable_object_leaves_nothing(private_registry):
    with pytest.raises(TypeError):
        pf.share({"a": memoryview(b"")})
    assert _registry(private_registry) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE on tmpfs")
def test_a_segment_the_os_refuses_raises_shared_memory_error(private_registry):
    """A segment that cannot be sized fails before anything is written, as a
    clear SharedMemoryError (an OSError), and leaves nothing behind. A file
    size limit stands in for a full /dev/shm (both refuse the sizing)."""
    code = textwrap.dedent("""
        import resource, signal, permafrost as pf
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            pf.share({i: "x" * 100 for i in range(1000)})
        except pf.SharedMemoryError as e:
            assert isinstance(e, OSError) and isinstance(e, pf.Error) and e.errno
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    assert _registry(private_registry) == []
