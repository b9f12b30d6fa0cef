"""The pipeline pattern, end to end: callable classes holding views (and
plain data) as attributes, composed into a pipeline and mapped over inputs
in-process, with multiprocessing.Pool and ProcessPoolExecutor under every
start method, and with joblib (loky and multiprocessing backends). The same
test body runs for each; results must equal the pipeline's over the
original Python objects, each task's payload must stay under 1 KB whatever
the data size, and on Linux the workers' image pages must be shared
(permafrost.memory_report)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
import sys
from multiprocessing.reduction import ForkingPickler

import pytest

import permafrost as pf
from helpers_pipeline import make_pipeline, pipeline_data, pipeline_inputs

joblib = pytest.importorskip("joblib")

N = 60_000
INPUTS = pipeline_inputs(N, 120)
RUNNERS = (["in-process"]
           + ["Pool-" + m for m in multiprocessing.get_all_start_methods()]
           + ["ProcessPoolExecutor-" + m for m in multiprocessing.get_all_start_methods()]
           + ["joblib-loky", "joblib-multiprocessing"])
LINUX = sys.platform.startswith("linux")


@contextlib.contextmanager
def mapper(runner):
    """A `map(function, inputs) -> list` running on `runner`, whose workers
    stay alive until the block ends (so that they can be measured)."""
    kind, _, how = runner.partition("-")
    if runner == "in-process":
        yield lambda f, xs: list(map(f, xs))
    elif kind == "Pool":
        with multiprocessing.get_context(how).Pool(2) as pool:
            yield lambda f, xs: pool.map(f, xs, chunksize=4)
    elif kind == "ProcessPoolExecutor":
        ctx = multiprocessing.get_context(how)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
            yield lambda f, xs: list(ex.map(f, xs, chunksize=4))
    else:
        try:
            with joblib.Parallel(n_jobs=2, backend=how, batch_size=4) as parallel:
                yield lambda f, xs: parallel(joblib.delayed(f)(x) for x in xs)
        finally:
            if how == "loky":
                # loky keeps its workers and a manager thread for reuse; a
                # later fork() of this test process must not inherit them.
                from joblib.externals.loky import get_reusable_executor
                get_reusable_executor().shutdown(wait=True)


def payloads(pipeline, record):
    """The pickled size of one task (the callable and its input) under each
    pickler a pool uses: pickle, multiprocessing's, loky's cloudpickle."""
    task = (pipeline, (record,))
    sizes = {"pickle": len(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)),
             "multiprocessing": len(ForkingPickler.dumps(task))}
    cloudpickle = pytest.importorskip("cloudpickle")
    sizes["cloudpickle"] = len(cloudpickle.dumps(task))
    return sizes


@pytest.fixture(scope="module")
def data():
    return pipeline_data(N)


@pytest.fixture(scope="module")
def expected(data):
    pipeline = make_pipeline(data)
    return [pipeline(x)[0] for x in INPUTS]


@pytest.fixture(scope="module", params=["file", "share"])
def views(request, data, tmp_path_factory):
    """The tables as views: of a file image, or of a shared-memory segment
    this process owns. Every page is read here first, as an owner that
    uses its table does, so that the workers' pages have a second mapper."""
    if request.param == "file":
        path = tmp_path_factory.mktemp("pipeline") / "tables.pf"
        pf.freeze(data, path)
        root = pf.open(path)
    else:
        root = pf.share(data)
    assert pf.thaw(root) == data
    yield root
    pf.image_of(root).close()


@pytest.mark.parametrize("runner", RUNNERS)
def test_pipeline_runs_the_same_everywhere(runner, views, expected):
    pipeline = make_pipeline(views)
    for record in INPUTS[:5]:
        for pickler, size in payloads(pipeline, record).items():
            assert size < 1024, f"{pickler} task payload of {size} bytes"
    with mapper(runner) as run:
        results = run(pipeline, INPUTS)
        assert [r for r, _ in results] == expected
        workers = sorted({pid for _, pid in results} - {os.getpid()})
        if runner == "in-process":
            assert workers == []
            return
        assert workers, "no task ran in a worker"
        if LINUX:
            assert_image_pages_shared(pf.image_of(views), workers)


def assert_image_pages_shared(image, workers):
    """Every worker maps the image and its resident image pages are
    shared (with this process, which read all of them), and the image
    costs the whole group about one copy."""
    report = pf.memory_report([os.getpid()] + workers)
    assert len(report.processes) == 1 + len(workers), report.notes
    name = image.shared_name
    found = [im for im in report.images
             if (im.name == "/dev/shm" + name if name else im.name == str(image.path))]
    assert len(found) == 1, report
    im = found[0]
    assert im.processes == 1 + len(workers), report
    assert im.pss <= im.size * 1.01 + 65536, report
    for proc in report.processes:
        if proc.pid == os.getpid():
            continue
        [mine] = [m for m in proc.images if m.name == im.name]
        assert mine.rss > 0, report
        assert mine.shared >= 0.9 * mine.rss, report
        assert mine.pss < mine.rss, report


def test_task_payload_does_not_grow_with_the_data(tmp_path):
    """The same pipeline over tables 100 times larger pickles to about the
    same size (a view's offsets take a few more digits): views travel by
    reference."""
    sizes = []
    for n in (1_000, 100_000):
        pf.freeze(pipeline_data(n), tmp_path / "t.pf")
        pipeline = make_pipeline(pf.open(tmp_path / "t.pf"))
        sizes.append(payloads(pipeline, INPUTS[0]))
        pf.image_of(pipeline.stages[1].lexicon).close()
    for pickler, small in sizes[0].items():
        assert abs(sizes[1][pickler] - small) <= 16, sizes
    assert max(sizes[1].values()) < 1024


def test_the_pipeline_over_plain_objects_is_what_it_looks_like(data):
    """The reference results are not trivial: words are found, missed,
    and dropped as stop words."""
    result, pid = make_pipeline(data)("W5 w1 nowhere THE w70000")
    assert pid == os.getpid()
    assert result == (round(data["weights"][5 % 13] * 5, 6), ("w5", "nowhere", "w70000"))
