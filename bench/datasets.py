"""Deterministic data sets for the demo and the benchmarks.

The shape follows the user's case (docs/BENCHMARKS.md): one big lookup table
from identifier-like string keys to small values, the kind of dict a
pipeline stage consults once per input record. Everything here is pure
Python and depends only on the seed, so every process and every run builds
the same data.
"""

import random

# Key prefixes of 3..6 characters; with 10 hex digits a key has 13..16 chars.
_PREFIXES = ("user:", "order:", "sku:", "ip:", "acct:", "sess:")

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"

VALUE_KINDS = ("str", "int", "tuple")

_MASK64 = (1 << 64) - 1


def _vocabulary(rng, count):
    """`count` distinct short words and codes of 3..10 characters."""
    words = []
    seen = set()
    while len(words) < count:
        if rng.random() < 0.7:
            # pronounceable word: 2..5 consonant-vowel syllables, cut to 3..10
            syllables = rng.randint(2, 5)
            word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                           for _ in range(syllables))
            word = word[: rng.randint(3, 10)]
        else:
            # status / country / product code, e.g. "EU-42", "X7KQ"
            letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
                              for _ in range(rng.randint(2, 4)))
            word = letters + ("-" if rng.random() < 0.5 else "") + str(rng.randint(0, 999))
            word = word[:10]
            if len(word) < 3:
                word = word + "00"
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _zipf_cum_weights(count, s=1.1):
    """Cumulative weights of a Zipf-like law over `count` ranks: a few
    values are very common, most are rare (as in real categorical data)."""
    cum = []
    total = 0.0
    for rank in range(1, count + 1):
        total += 1.0 / rank ** s
        cum.append(total)
    return cum


def _random_int(rng):
    """An int of a realistic magnitude: counters, ids, timestamps, sizes."""
    bits = rng.choices((7, 15, 24, 31, 40, 62), weights=(25, 25, 15, 15, 15, 5))[0]
    value = rng.getrandbits(bits)
    if rng.random() < 0.1:
        value = -value
    return value


def iter_items(n, seed=0):
    """Yield the `n` (key, value) pairs of `lookup_dict(n, seed)` in order.

    Keys are unique identifier strings like 'user:3fa9c01b7e' (13..16
    chars). Values are, about one third each: a short str drawn with
    repetition from a vocabulary (the same str object is reused, as strings
    from one parser often are), an int of various magnitudes, and a tuple
    (int, float, str).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    vocab = _vocabulary(rng, max(50, min(20_000, n // 20 + 50)))
    cum = _zipf_cum_weights(len(vocab))
    seen = set()
    emitted = 0
    while emitted < n:
        key = "%s%010x" % (rng.choice(_PREFIXES), rng.getrandbits(40))
        if key in seen:  # a 40-bit collision: draw again, deterministically
            continue
        seen.add(key)
        r = rng.random()
        if r < 1 / 3:
            value = rng.choices(vocab, cum_weights=cum)[0]
        elif r < 2 / 3:
            value = _random_int(rng)
        else:
            value = (rng.getrandbits(rng.choice((8, 20, 32))),
                     round(rng.uniform(0.0, 10_000.0), 2),
                     rng.choices(vocab, cum_weights=cum)[0])
        emitted += 1
        yield key, value


def lookup_dict(n, seed=0):
    """A dict of `n` entries shaped like the user's lookup tables
    (see `iter_items`). Same `n` and `seed` -> the same dict, in the same
    insertion order, in every process."""
    return dict(iter_items(n, seed))


def fresh_keys(keys):
    """Equal str objects, newly made, one per key (duplicates included).

    A lookup key read from input is a new object: its hash is not cached yet
    and it is not the object stored in the dict, so a dict lookup must hash
    it and compare characters. Timing lookups with the dict's own key
    objects skips both; these keys don't.
    """
    out = [k.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
           for k in keys]
    if out and keys and out[0] is keys[0]:  # pragma: no cover - CPython detail
        raise RuntimeError("fresh_keys() returned an existing str object")
    return out


def sample_keys(keys, count, seed=1):
    """`count` distinct keys of `keys` in random order (all of them, shuffled,
    when `count >= len(keys)`). The returned objects are the ones in `keys`."""
    rng = random.Random(seed)
    keys = list(keys)
    if count >= len(keys):
        rng.shuffle(keys)
        return keys
    return rng.sample(keys, count)


def value_checksum(value):
    """A small int that depends on the value's content, the same in every
    process (unlike hash() of str, which is randomized per process)."""
    t = type(value)
    if t is int:
        return value & 0xFFFFFFFF
    if t is str:
        return len(value) * 131 + ord(value[0]) if value else 7
    if t is tuple:
        return (value_checksum(value[0]) * 3 + int(value[1] * 100)
                + value_checksum(value[2]))
    if value is None:
        return 11
    if t is float:
        return int(value * 100) & 0xFFFFFFFF
    raise TypeError("value_checksum: unexpected %s" % t.__name__)


def mapping_checksum(mapping):
    """value_checksum summed over a mapping's values, plus its length: the
    checksum of one inner dict of a "hash tree" (a dict of dicts)."""
    acc = len(mapping)
    for value in mapping.values():
        acc += value_checksum(value)
    return acc & _MASK64


def table_checksum(mapping, keys):
    """Checksum of `mapping[k]` over `keys`, order-independent."""
    acc = 0
    for k in keys:
        acc += value_checksum(mapping[k])
    return acc & _MASK64


if __name__ == "__main__":  # a quick look at the data
    import collections
    import pickle
    import sys
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    t0 = time.perf_counter()
    d = lookup_dict(n)
    t1 = time.perf_counter()
    kinds = collections.Counter(type(v).__name__ for v in d.values())
    lens = collections.Counter(len(k) for k in d)
    print("%d entries in %.2f s" % (len(d), t1 - t0))
    print("value kinds:", dict(kinds))
    print("key lengths:", dict(sorted(lens.items())))
    print("distinct str values:",
          len({v for v in d.values() if type(v) is str}))
    print("pickle size: %d bytes" % len(pickle.dumps(d, protocol=5)))
    for i, (k, v) in enumerate(d.items()):
        if i == 8:
            break
        print("  %r: %r" % (k, v))
