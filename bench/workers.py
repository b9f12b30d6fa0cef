"""Worker processes of bench/run.py, in a module of their own so that
'spawn' children can import them. Each receives its payload as bytes over a
pipe, as a pool task's argument would arrive."""

import gc
import os
import pickle
import time

from datasets import value_checksum

_MASK64 = (1 << 64) - 1


def unpickle_worker(conn):
    """Time `pickle.loads` of a pickled view in a fresh process.

    permafrost is imported first (not timed): the figure is what a task that
    carries a view costs a worker, not the interpreter's start-up. The first
    loads attaches the image (open + map); the second finds it attached.
    Sends (first_ns, second_ns, len(view), type name)."""
    import permafrost  # noqa: F401  (the import is not part of the timing)

    blob = conn.recv_bytes()
    gc.disable()
    t0 = time.perf_counter_ns()
    first = pickle.loads(blob)
    t1 = time.perf_counter_ns()
    second = pickle.loads(blob)
    t2 = time.perf_counter_ns()
    gc.enable()
    conn.send((t1 - t0, t2 - t1, len(first), type(first).__name__,
               len(second) == len(first)))
    conn.close()


def memory_worker(conn):
    """Receive a pickled table (a view by reference, or a whole dict), look
    up every key, report (pid, checksum, entries), then stay alive, holding
    the table, until the parent has read this process's memory and says
    go."""
    blob = conn.recv_bytes()
    table = pickle.loads(blob)
    del blob
    acc = 0
    for key in table:
        acc += value_checksum(table[key])
    entries = len(table)
    gc.collect()
    conn.send((os.getpid(), acc & _MASK64, entries))
    conn.recv()  # the parent's go: it has measured us
    conn.close()
