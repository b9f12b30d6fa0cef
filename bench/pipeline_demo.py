"""The pipeline of the demo (bench/demo.py), in a module of its own so that
workers started with 'spawn' can import it.

`Enrich` is a pipeline stage as the user writes them: a callable class that
holds a big lookup table and maps a batch of input records (here: keys) to
a result (here: a checksum of the looked-up values). The same class is used
with a plain dict and with a permafrost view: the stage does not know which
one it holds.
"""

import os
import time

from datasets import value_checksum

_MASK64 = (1 << 64) - 1

# per-worker state, set by the pool initializer
_stage = None
_start_barrier = None


class Enrich:
    """Look every key of a batch up in `table`; return a checksum of the
    values found."""

    def __init__(self, table):
        self.table = table

    def __call__(self, keys):
        table = self.table
        acc = 0
        for key in keys:
            acc += value_checksum(table[key])
        return acc & _MASK64


def init_worker(stage, start_barrier):
    """Pool initializer: receives the stage (unpickled here, in the worker)."""
    global _stage, _start_barrier
    _stage = stage
    _start_barrier = start_barrier


def read_batches(path, batch_len):
    """The input: one key per line, read in batches. Every key is a new str
    object, as in a real pipeline that parses its input."""
    batch = []
    with open(path, "r", encoding="ascii") as f:
        for line in f:
            batch.append(line[:-1])
            if len(batch) == batch_len:
                yield batch
                batch = []
    if batch:
        yield batch


def run_input(input_path, batch_len=10_000):
    """Pool task: run the stage over the whole input, so that this worker
    touches every entry of the table. Returns (pid, checksum, records,
    seconds spent in the stage)."""
    # All workers start together: each of them takes exactly one task.
    _start_barrier.wait()
    t0 = time.perf_counter()
    acc = 0
    records = 0
    for batch in read_batches(input_path, batch_len):
        acc += _stage(batch)
        records += len(batch)
    return os.getpid(), acc & _MASK64, records, time.perf_counter() - t0


# ---------------------------------------------------------------- part 2
# The user's whole pipeline: callables implemented as classes, one of them a
# pure-Python trie of Node objects (bench/trie_classes.py, which
# bench/objects.py measures). `permafrost.share(pipeline)` freezes the
# pipeline itself; the workers run these classes' own code on the one copy.

class TrieMatch:
    """A stage: how many keys of a batch the trie holds."""

    def __init__(self, trie):
        self.trie = trie

    def __call__(self, keys):
        lookup = self.trie.lookup
        return sum(1 for k in keys if lookup(k))


class Pipeline:
    """Stages applied to each batch; the result combines theirs."""

    def __init__(self, *stages):
        self.stages = stages

    def __call__(self, keys):
        acc = 0
        for stage in self.stages:
            acc = (acc * 1000003 + stage(keys)) & _MASK64
        return acc
