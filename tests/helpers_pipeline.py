"""Pipeline stages for the pool tests: module-level, so that a process
started with `spawn` or `forkserver` can import them by name."""

from __future__ import annotations

import os

import permafrost as pf


class Lookup:
    """A callable stage holding a read-only table (a view of an image):
    what a user's pipeline step looks like."""

    def __init__(self, table):
        self.table = table

    def __call__(self, key):
        value = self.table.get(key)
        return key, pf.thaw(value), len(self.table)


# ------------------------------------------------- the pipeline pattern
#
# What a user's pipeline looks like: callable classes holding read-only
# tables (dicts of tuples, a list, a set) and plain data as attributes,
# composed into one callable that is mapped over the inputs. The same
# classes run over the original Python objects and over views.


class Tokenize:
    """Plain data only: split a record into words, lower-cased."""

    def __init__(self, separator):
        self.separator = separator

    def __call__(self, record):
        return [w.lower() for w in record.split(self.separator) if w]


class Annotate:
    """Look each word up in a dict of tuples; unknown words get `default`."""

    def __init__(self, lexicon, default):
        self.lexicon = lexicon
        self.default = default

    def __call__(self, words):
        out = []
        for w in words:
            entry = self.lexicon.get(w)
            out.append((w,) + (tuple(entry) if entry is not None else self.default))
        return out


class Score:
    """Weights from a list indexed by an annotation, and a set of stop words."""

    def __init__(self, weights, stop_words):
        self.weights = weights
        self.stop_words = stop_words

    def __call__(self, annotated):
        total = 0.0
        kept = []
        for word, cls, rank in annotated:
            if word in self.stop_words:
                continue
            total += self.weights[cls % len(self.weights)] * rank
            kept.append(word)
        return round(total, 6), tuple(kept)


class Pipeline:
    """Stages applied in turn; the result comes back with the pid of the
    process that computed it."""

    def __init__(self, *stages):
        self.stages = stages

    def __call__(self, record):
        x = record
        for stage in self.stages:
            x = stage(x)
        return x, os.getpid()


def make_pipeline(data):
    """The pipeline over `data`: a dict with 'lexicon', 'weights' and
    'stop_words', original objects or views alike."""
    return Pipeline(Tokenize(" "), Annotate(data["lexicon"], (0, 0)),
                    Score(data["weights"], data["stop_words"]))


def pipeline_data(n):
    """The tables of the pipeline, with `n` lexicon entries."""
    return {
        "lexicon": {"w%d" % i: (i % 13, i % 101) for i in range(n)},
        "weights": [1.0 + k / 8 for k in range(13)],
        "stop_words": frozenset({"w0", "w1", "w2", "the", "of"}),
    }


def pipeline_inputs(n, count):
    """`count` records of words, some absent from the lexicon."""
    return [" ".join("W%d" % ((r * 7919 + k * 104729) % (n + n // 10))
                     for k in range(1 + r % 9)) + " the"
            for r in range(count)]
