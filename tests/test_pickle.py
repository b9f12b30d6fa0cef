"""Pickling views: by reference for file images (a few hundred bytes,
attached once per process), by value for buffer images (out of band with
protocol 5), the stale-image check, and pools of every start method."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys

import pytest

import permafrost as pf
from helpers import assert_same, run_isolated
from helpers_pipeline import Lookup

PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))


@pytest.fixture(scope="module")
def table_100k(tmp_path_factory):
    path = tmp_path_factory.mktemp("pickle") / "t100k.pf"
    table = {f"key{i}": [i, str(i)] for i in range(100_000)}
    pf.freeze(table, path)
    return path, table


@pytest.fixture(scope="module")
def table_200k(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "t200k.pf"
    table = {i: (i * 7, f"v{i}") for i in range(200_000)}
    table["nested"] = {"list": [1, 2, {3}], "fs": frozenset({"a"})}
    pf.freeze(table, path)
    return path, table


# ----------------------------------------------------------------- by reference


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_file_view_pickles_by_reference(table_100k, protocol):
    path, table = table_100k
    view = pf.open(path)
    data = pickle.dumps(view, protocol=protocol)
    assert len(data) < 300
    back = pickle.loads(data)
    assert type(back) is pf.DictView
    assert len(back) == len(table)
    assert back["key99999"] == [99999, "99999"]
    assert back == table


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nested_views_pickle_by_reference(table_100k, protocol):
    path, table = table_100k
    view = pf.open(path)
    inner = view["key123"]
    data = pickle.dumps(inner, protocol=protocol)
    assert len(data) < 300
    assert pickle.loads(data) == [123, "123"]
    pair = pickle.dumps((view["key1"], view["key2"]), protocol=protocol)
    assert len(pair) < 600
    assert pickle.loads(pair) == ([1, "1"], [2, "2"])


def test_unpickle_reuses_the_image(table_100k):
    path, _ = table_100k
    data = pickle.dumps(pf.open(path))
    a = pickle.loads(data)
    b = pickle.loads(data)
    assert pf.image_of(a) is pf.image_of(b)
    c = pickle.loads(pickle.dumps(pf.open(path)["key5"]))
    assert pf.image_of(c) is pf.image_of(a)


def test_unpickle_in_another_process(table_100k, tmp_path):
    path, _ = table_100k
    pickled = tmp_path / "view.pickle"
    pickled.write_bytes(pickle.dumps(pf.open(path)["key42"]))
    proc = run_isolated(f"""
        import pickle
        view = pickle.loads(open({str(pickled)!r}, "rb").read())
        assert view == [42, "42"], view
        print("OK")
    """)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_reference_survives_a_change_of_folder(tmp_path, monkeypatch):
    """An image opened by a relative path is pickled by its absolute path."""
    monkeypatch.chdir(tmp_path)
    pf.freeze({"where": "here"}, "rel.pf")
    data = pickle.dumps(pf.open("rel.pf"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; v = pickle.loads(sys.stdin.buffer.read()); print(v['where'])"],
        input=data, capture_output=True, cwd=elsewhere, timeout=120,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == b"here"


def test_stale_image_detected(tmp_path):
    path = tmp_path / "img.pf"
    pf.freeze({"generation": 1}, path)
    pickled = tmp_path / "view.pickle"
    pickled.write_bytes(pickle.dumps(pf.open(path)))
    pf.freeze({"generation": 2}, path)  # another image at the same path
    proc = run_isolated(f"""
        import pickle
        import permafrost as pf
        try:
            view = pickle.loads(open({str(pickled)!r}, "rb").read())
        except pf.StaleImageError:
            print("STALE")
        else:
            print("NOT STALE", dict(view))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "STALE"


def test_missing_image_on_unpickle(tmp_path):
    path = tmp_path / "img.pf"
    pf.freeze([1, 2], path)
    pickled = tmp_path / "view.pickle"
    pickled.write_bytes(pickle.dumps(pf.open(path)))
    path.unlink()
    proc = run_isolated(f"""
        import pickle
        import permafrost as pf
        try:
            pickle.loads(open({str(pickled)!r}, "rb").read())
        except (OSError, pf.Error) as e:
            print("REFUSED", type(e).__name__)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("REFUSED")


# ----------------------------------------------------------------- by value


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_buffer_view_pickles_by_value(protocol):
    value = {"a": list(range(1000)), "b": {"c": frozenset({1, 2})}}
    image = pf.dumps(value)
    view = pf.loads(image)
    data = pickle.dumps(view, protocol=protocol)
    assert len(data) >= len(image)
    back = pickle.loads(data)
    assert back == value
    assert_same(pf.thaw(back), value)
    inner = pickle.loads(pickle.dumps(view["b"]["c"], protocol=protocol))
    assert type(inner) is pf.FrozenSetView and inner == frozenset({1, 2})


def test_buffer_view_out_of_band():
    value = {"a": list(range(1000)), "s": "x" * 5000}
    image = pf.dumps(value)
    view = pf.loads(image)
    buffers = []
    data = pickle.dumps(view["a"], protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1
    assert isinstance(buffers[0], pickle.PickleBuffer)
    assert bytes(buffers[0].raw()) == image
    assert len(data) < 300
    back = pickle.loads(data, buffers=buffers)
    assert back == list(range(1000))
    assert type(back) is pf.ListView


# ----------------------------------------------------------------- pools


def _keys():
    return [0, 1, 199_999, "nested", 200_000, -1, "absent"] + list(range(5, 200_000, 997))


def test_pipeline_stage_pickles_small(table_200k):
    path, _ = table_200k
    stage = Lookup(pf.open(path))
    assert len(pickle.dumps(stage)) < 1024
    again = pickle.loads(pickle.dumps(stage))
    assert [again(k) for k in _keys()] == [stage(k) for k in _keys()]


def test_pool_with_buffer_image():
    """A buffer image travels by value to spawned workers."""
    table = {f"k{i}": i for i in range(1000)}
    stage = Lookup(pf.loads(pf.dumps(table)))
    keys = ["k0", "k999", "k1000"]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(stage, keys) == [stage(k) for k in keys]
