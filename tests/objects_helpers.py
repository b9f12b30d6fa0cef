"""Classes and functions for the objects-in-images tests (test_objects.py):
module-level, so that images can name them and processes started with
`spawn` can import them."""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import typing

# ----------------------------------------------------------------- a trie


class Node:
    """One node of a pure-Python trie: children by character, a parent link
    (so every node is in a cycle with its parent), a terminal flag."""

    def __init__(self, parent=None, char=""):
        self.parent = parent
        self.char = char
        self.children = {}
        self.terminal = False

    def word(self):
        """The word spelled from the root to this node (through the parent
        links)."""
        chars = []
        node = self
        while node.parent is not None:
            chars.append(node.char)
            node = node.parent
        return "".join(reversed(chars))


class Trie:
    def __init__(self, words=()):
        self.root = Node()
        self.size = 0
        for w in words:
            self.insert(w)

    def insert(self, word):
        node = self.root
        for ch in word:
            child = node.children.get(ch)
            if child is None:
                child = node.children[ch] = Node(node, ch)
            node = child
        if not node.terminal:
            node.terminal = True
            self.size += 1

    def _find(self, prefix):
        node = self.root
        for ch in prefix:
            node = node.children.get(ch)
            if node is None:
                return None
        return node

    def lookup(self, word):
        node = self._find(word)
        return node is not None and node.terminal

    def startswith(self, prefix):
        """The words starting with prefix, sorted."""
        node = self._find(prefix)
        if node is None:
            return []
        out, stack = [], [(node, prefix)]
        while stack:
            n, w = stack.pop()
            if n.terminal:
                out.append(w)
            for ch, child in n.children.items():
                stack.append((child, w + ch))
        return sorted(out)

    def __len__(self):
        return self.size


def trie_answers(trie, word):
    """What a worker computes for one word: membership, completions of its
    first two letters, and the word found again through parent links."""
    node = trie._find(word)
    return (word, trie.lookup(word), trie.startswith(word[:2]),
            node.word() if node is not None else None)


# ----------------------------------------------------------------- a pipeline


class Normalize:
    """Stage 1: a dict of synonyms."""

    def __init__(self, synonyms):
        self.synonyms = synonyms

    def __call__(self, text):
        return [self.synonyms.get(w, w) for w in text.split()]


class Known:
    """Stage 2: a Trie."""

    def __init__(self, trie):
        self.trie = trie

    def __call__(self, words):
        return [(w, self.trie.lookup(w), len(self.trie.startswith(w[:3]))) for w in words]


class Weigh:
    """Stage 3: a list of weights."""

    def __init__(self, weights):
        self.weights = weights

    def __call__(self, rows):
        total = 0.0
        for w, known, completions in rows:
            if known:
                total += self.weights[len(w) % len(self.weights)] * (1 + completions)
        return round(total, 6), tuple(w for w, known, _ in rows if known)


class Pipeline:
    def __init__(self, *stages):
        self.stages = list(stages)

    def __call__(self, item):
        x = item
        for stage in self.stages:
            x = stage(x)
        return x


def pid_of(_):
    return os.getpid()


# ----------------------------------------------------------------- value classes


class Plain:
    """A plain class with a __dict__ and no __eq__."""

    def __init__(self, a, b, c=None):
        self.a = a
        self.b = b
        self.c = c


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is Slotted and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Slotted({self.x!r}, {self.y!r})"


class SlottedChild(Slotted):
    """Slots from a base and a __dict__ of its own."""

    def __init__(self, x, y, z):
        super().__init__(x, y)
        self.z = z

    def __eq__(self, other):
        return type(other) is SlottedChild and (self.x, self.y, self.z) == (other.x, other.y, other.z)


@dataclasses.dataclass
class Point:
    x: typing.Any
    y: typing.Any


@dataclasses.dataclass(frozen=True)
class Frozen:
    label: str
    items: typing.Any = ()


class Pair(typing.NamedTuple):
    first: typing.Any
    second: typing.Any = None


Coord = collections.namedtuple("Coord", "lat lon")


class Color(enum.Enum):
    RED = 1
    GREEN = "green"
    BLUE = (3, "b")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 10


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyTuple(tuple):
    pass


class MySet(set):
    pass


class MyFrozenset(frozenset):
    pass


def helper_function(x):
    return x + 1


def make_reduced(value):
    return Reduced(value)


class Reduced:
    """Reduces through a function, which no built-in rule covers: stored
    as a pickle with allow_pickle=True."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return (make_reduced, (self.value,))

    def __eq__(self, other):
        return type(other) is Reduced and self.value == other.value


def item_attr(args):
    """For pool workers: the attribute `attr` of `view[key]`, thawed."""
    import permafrost as pf

    view, key, attr = args
    return pf.thaw(getattr(view[key], attr))


def item_of(args):
    """For pool workers: `view[key]`, thawed."""
    import permafrost as pf

    view, key = args
    return pf.thaw(view[key])


class WithState:
    """__getstate__/__setstate__ of its own: the state goes through them."""

    def __init__(self, v):
        self.v = v
        self.cache = {"derived": v}

    def __getstate__(self):
        return {"v": self.v}

    def __setstate__(self, state):
        self.v = state["v"]
        self.cache = {"derived": state["v"], "restored": True}

    def __eq__(self, other):
        return type(other) is WithState and self.v == other.v


class Doubled:
    """A data descriptor named as an instance attribute: pickle writes the
    attribute straight into __dict__, past the property's setter."""

    def __init__(self, a):
        self.__dict__["a"] = a

    @property
    def a(self):
        return ("doubled", self.__dict__["a"])

    @a.setter
    def a(self, value):
        raise AttributeError("read-only")


class NewArgs:
    """__new__ takes an argument (given back by __getnewargs__)."""

    def __new__(cls, n):
        self = super().__new__(cls)
        self.n = n
        return self

    def __getnewargs__(self):
        return (self.n,)


# What dataclass(slots=True) (3.10+) and weakref_slot=True (3.11+) make,
# written out so that every supported Python has them.
class SlotsPoint:
    __slots__ = ("x", "y")

    def __init__(self, x, y=0):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)

    __hash__ = None

    def __repr__(self):
        return "SlotsPoint(x=%r, y=%r)" % (self.x, self.y)


class WeakSlotsPoint:
    __slots__ = ("x", "__weakref__")

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is type(self) and self.x == other.x

    __hash__ = None

    def __repr__(self):
        return "WeakSlotsPoint(x=%r)" % (self.x,)


def default_value():
    """A default factory of a defaultdict (tests/test_objects.py)."""
    return "default"
