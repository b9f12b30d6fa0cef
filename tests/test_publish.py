"""Versioned publish: freeze(obj, path) over an image that readers hold, in
both of the core's publish modes: renaming the image over the path (POSIX's
default) and writing a new version plus a pointer file (Windows' default,
run here on every OS through the binding's mode argument)."""

from __future__ import annotations

import gc
import os
import pickle
import sys

import pytest

import permafrost as pf
from helpers import run_isolated

RENAME, POINTER = 1, 2
MODES = {"rename": RENAME, "pointer": POINTER}


def publish(obj, path, mode):
    pf._binding.freeze(obj, os.fspath(path), mode)


def _versions(path):
    return sorted(n for n in os.listdir(path.parent) if n.startswith(path.name + ".v-"))


@pytest.fixture(params=sorted(MODES))
def mode(request):
    return MODES[request.param]


def test_readers_keep_the_old_image_and_open_gets_the_new(clean_dir, mode):
    path = clean_dir.file("t.pf")
    gen1 = {"generation": 1, "rows": [list(range(i)) for i in range(50)]}
    gen2 = {"generation": 2, "rows": ["other"] * 10}
    publish(gen1, path, mode)
    old = pf.open(path)
    old_id = pf.image_of(old).id
    publish(gen2, path, mode)
    new = pf.open(path)
    assert pf.thaw(old) == gen1 and pf.thaw(new) == gen2
    assert pf.image_of(new).id != old_id
    assert pf.image_of(new).path == pf.image_of(old).path == str(path)
    if mode == POINTER:
        assert os.path.getsize(path) == 41
        [version] = _versions(path)
        assert version == "t.pf.v-" + pf.image_of(new).id.hex()
        clean_dir.expected.add(version)
    else:
        assert _versions(path) == []
    del old, new
    gc.collect()


def test_a_by_reference_view_of_the_old_image_is_stale(tmp_path, mode):
    path = tmp_path / "t.pf"
    publish({"generation": 1}, path, mode)
    blob = pickle.dumps(pf.open(path))
    publish({"generation": 2}, path, mode)
    proc = run_isolated(f"""
        import pickle, permafrost as pf
        try:
            pickle.loads({blob!r})
        except pf.StaleImageError as e:
            print("STALE")
        print(pf.open({str(path)!r})["generation"])
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["STALE", "2"]


def test_pointer_versions_go_once_no_reader_maps_them(clean_dir):
    path = clean_dir.file("t.pf")
    views = []
    for generation in range(4):
        publish({"generation": generation}, path, POINTER)
        views.append(pf.open(path))
    # POSIX removes an old version at once: its readers keep their pages.
    kept = _versions(path)
    assert kept == ["t.pf.v-" + pf.image_of(views[-1]).id.hex()]
    assert [v["generation"] for v in views] == [0, 1, 2, 3]
    clean_dir.expected.update(kept)
    # Back to renaming: the pointer's versions are removed too.
    publish({"generation": 4}, path, RENAME)
    assert _versions(path) == [] and pf.open(path)["generation"] == 4
    assert [v["generation"] for v in views] == [0, 1, 2, 3]
    clean_dir.expected.clear()
    clean_dir.expected.add("t.pf")


def test_a_failed_freeze_leaves_the_published_image(clean_dir, mode):
    path = clean_dir.file("t.pf")
    publish({"ok": True}, path, mode)
    with pytest.raises(TypeError):
        publish({"bad": memoryview(b"")}, path, mode)
    assert pf.open(path) == {"ok": True}
    if mode == POINTER:
        clean_dir.expected.update(_versions(path))


@pytest.mark.parametrize("content", [
    b"\x89PFPTR1\n" + b"0" * 31 + b"G\n",
    b"\x89PFPTR1\n" + b"A" * 32 + b"\n",
    b"\x89PFPTR1\n" + b"0" * 32,
    b"\x89PFPTR1\n" + b"0" * 32 + b"\n\n",
    b"\x89PFPTR1\n../../etc/passwd\n",
])
def test_a_damaged_pointer_file_is_a_corrupt_image(tmp_path, content):
    path = tmp_path / "t.pf"
    path.write_bytes(content)
    with pytest.raises(pf.CorruptImageError):
        pf.open(path)


def test_a_pointer_to_a_missing_version_is_file_not_found(tmp_path):
    path = tmp_path / "t.pf"
    path.write_bytes(b"\x89PFPTR1\n" + b"ab" * 16 + b"\n")
    with pytest.raises(FileNotFoundError, match="pointer file"):
        pf.open(path)


def test_a_pointer_to_another_image_is_corrupt(tmp_path):
    path = tmp_path / "t.pf"
    publish({"a": 1}, path, POINTER)
    [version] = _versions(path)
    pf.freeze({"b": 2}, tmp_path / version)  # another id under that name
    with pytest.raises(pf.CorruptImageError, match="another image id"):
        pf.open(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/PID/smaps")
def test_memory_report_names_the_version_a_reader_maps(tmp_path):
    path = tmp_path / "t.pf"
    publish({"k%d" % i: i for i in range(10_000)}, path, POINTER)
    root = pf.open(path)
    pf.thaw(root)
    [version] = _versions(path)
    names = [im.name for im in pf.memory_report().images]
    assert str(tmp_path / version) in names
    pf.image_of(root).close()


def test_unknown_publish_mode_is_refused(tmp_path):
    with pytest.raises(ValueError):
        publish([1], tmp_path / "t.pf", 7)
    with pytest.raises(ValueError):
        publish([1], tmp_path / "t.pf", -1)
    assert os.listdir(tmp_path) == []
