"""The pure-Python trie of bench/objects.py, and its word list, in a module of
their own so that 'spawn' workers can import them (permafrost stores the
classes by import name: trie_classes:Trie, trie_classes:Node).

Plain classes, no __slots__: each Node is an ordinary object with a
__dict__ holding `children` (a dict, one str char -> Node) and `terminal`
(a bool). Frozen, `children` reads back as a permafrost.DictView and each
child as a Node built on demand; the methods below work unchanged on both.
"""

import random

ALPHABET = "abcdefghijklmnopqrstuvwxyz"

# Letter weights roughly as in English text, so that the first letters of
# the words are skewed as a real word list's are.
_WEIGHTS = [8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.2, 0.8, 4.0, 2.4,
            6.7, 7.5, 1.9, 0.1, 6.0, 6.3, 9.1, 2.8, 1.0, 2.4, 0.2, 2.0, 0.1]
_SUFFIXES = ["s", "es", "ed", "er", "ers", "ing", "ings", "ly", "ness", "ment",
             "tion", "able", "al", "ist", "ism", "ous", "ful", "less", "y", "est"]
MIN_LEN, MAX_LEN = 3, 14


class Node:
    def __init__(self):
        self.children = {}
        self.terminal = False


class Trie:
    def __init__(self):
        self.root = Node()
        self.size = 0

    def insert(self, word):
        node = self.root
        for ch in word:
            nxt = node.children.get(ch)
            if nxt is None:
                nxt = node.children[ch] = Node()
            node = nxt
        if not node.terminal:
            node.terminal = True
            self.size += 1

    def _find(self, s):
        node = self.root
        for ch in s:
            node = node.children.get(ch)
            if node is None:
                return None
        return node

    def lookup(self, word):
        node = self._find(word)
        return node is not None and node.terminal

    def startswith(self, prefix):
        return self._find(prefix) is not None

    def __len__(self):
        return self.size


def build_trie(words):
    """A Trie holding `words`, inserted in order."""
    trie = Trie()
    for w in words:
        trie.insert(w)
    return trie


def make_words(n, seed=0):
    """`n` unique words of MIN_LEN..MAX_LEN letters of ALPHABET, the same
    for the same (n, seed) in every process: about 70% are a stem (one of
    n // 8 letter strings of 2..8 letters, drawn with a Zipf-like skew, so
    many words share prefixes) + random letters, a third of those with a
    common English suffix; the rest are random letters throughout. Returned
    in generation order."""
    rng = random.Random(seed)
    letters = list(ALPHABET)

    def rand_letters(k):
        return "".join(rng.choices(letters, _WEIGHTS, k=k))

    n_stems = max(16, n // 8)
    stems = [rand_letters(rng.randint(2, 8)) for _ in range(n_stems)]
    # Zipf-like: stem i drawn with weight 1 / (i + 1) ** 0.8.
    cum, acc = [], 0.0
    for i in range(n_stems):
        acc += 1.0 / (i + 1) ** 0.8
        cum.append(acc)
    seen = set()
    words = []
    while len(words) < n:
        length = rng.randint(MIN_LEN, MAX_LEN)
        r = rng.random()
        if r < 0.70:
            stem = rng.choices(stems, cum_weights=cum)[0][:length]
            tail = length - len(stem)
            if r < 0.25 and tail >= 2:
                suf = rng.choice(_SUFFIXES)[:tail]
                w = stem + rand_letters(tail - len(suf)) + suf
            else:
                w = stem + rand_letters(tail)
        else:
            w = rand_letters(length)
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def shuffled(seq, seed):
    out = list(seq)
    random.Random(seed).shuffle(out)
    return out
