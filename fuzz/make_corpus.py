"""Writes the seed corpora of the fuzz targets (see fuzz/README.md).

    .venv/bin/python fuzz/make_corpus.py          # after `make install`

fuzz/corpus/read/<name>.pfi: small real images made with permafrost.dumps,
one per value below, covering every type and form of docs/FORMAT.md; and
two made with permafrost.Builder (pooled strings, an ordered build).
fuzz/corpus/roundtrip/<name>.prog: programs for fuzz_roundtrip.c.

File names are fixed. An image holds a random image id and hash seed, so
its bytes differ from run to run: an existing image file that still loads
to an equal value is left alone (so a rerun changes nothing in git), and
one whose value changed, or that no longer loads, is rewritten. --force
rewrites them all; --check only reports what would change (exit 1 if any).
"""

import argparse
import math
import os
import struct
import sys
import tempfile

import permafrost

HERE = os.path.dirname(os.path.abspath(__file__))
READ_DIR = os.path.join(HERE, "corpus", "read")
ROUNDTRIP_DIR = os.path.join(HERE, "corpus", "roundtrip")
MAX_FILE = 4096
MAX_TOTAL = 200 * 1024


def _cycles():
    """Values with shared references and cycles (R17)."""
    shared_list = [1, 2, "x"]
    shared_tuple = ("t", 1.5, None)
    self_list = [1, "a"]
    self_list.append(self_list)
    self_dict = {"name": "root"}
    self_dict["self"] = self_dict
    inner = []
    tuple_cycle = (inner, "tail")
    inner.append(tuple_cycle)
    ring = [[] for _ in range(3)]
    for i, node in enumerate(ring):
        node.append(ring[(i + 1) % 3])
    return {
        "ref_shared_list": [shared_list, shared_list, {"again": shared_list}],
        "ref_shared_tuple": [shared_tuple, shared_tuple, (shared_tuple,)],
        "ref_self_list": self_list,
        "ref_self_dict": self_dict,
        "ref_tuple_list_cycle": tuple_cycle,
        "ref_ring": ring,
        "ref_dedup_strings": ["a repeated string value"] * 6
        + [b"repeated bytes value"] * 4,
        "ref_dedup_keys": [{"shared key name": i, "other": -i} for i in range(6)],
        # R28: strings met 3+ times far apart go through the VALUES table.
        "sref_strings": [x for i in range(6) for x in
                         ("word-%d" % (i % 2), bytes([i]) * 140, ("word-%d" % (i % 2), b"b-%d" % (i % 2)))]
        + [{"word-0": 0, frozenset({"word-1", b"b-1"}): 1}],
    }


def values():
    """name -> value; every name is a file name."""
    big_dict = {"key%02d" % i: i * 3 for i in range(20)}
    mixed_keys = {
        None: "none",
        True: "true (also 1)",
        2: "int",
        2.5: "float",
        -7.25: "negative float",
        complex(1, 2): "complex",
        "s": "str",
        b"s": "bytes (not equal to the str)",
        (1, "a"): "tuple",
        frozenset({1, 2}): "frozenset",
        2 ** 80: "big int",
        "caf\xe9": "latin-1 key",
        "\u65e5\u672c": "ucs-2 key",
        "\U0001F600": "ucs-4 key",
        0.1: "decimal float key",
    }
    out = {
        "none": None,
        "true": True,
        "false": False,
        "int_small": 5,
        "int_neg": -300,
        "int_i64_max": 2 ** 63 - 1,
        "int_i64_min": -(2 ** 63),
        "int_big": 2 ** 100 + 12345,
        "int_big_neg": -(3 ** 150),
        "float_dec_1_5": 1.5,
        "float_dec_0_1": 0.1,
        "float_dec_neg": -2.5,
        "float_dec_100": 100.0,
        "float_dec_1e-9": 1e-9,
        "float_zero": 0.0,
        "float_neg_zero": -0.0,
        "float_raw": 0.1 + 0.2,
        "float_third": 1 / 3,
        "float_inf": math.inf,
        "float_nan": math.nan,
        "floats_every_e": [m / 10 ** e for e in range(10) for m in (7, -123456)],
        "complex": complex(1.5, -2.25),
        "complex_real": complex(3, 0),
        "str_empty": "",
        "str_short": "abc",
        "str_127": "a" * 127,
        "str_long_ascii": "long ascii " * 20,
        "str_latin1": "caf\xe9",
        "str_latin1_long": "\xe9t\xe9 " * 50,
        "str_ucs2": "\u65e5\u672c\u8a9e",
        "str_ucs4": "emoji \U0001F600 \U0010FFFF",
        "str_surrogate_ucs2": "lone \ud800 surrogate",
        "str_surrogate_ucs4": "\udfff\U0001F600",
        "bytes_empty": b"",
        "bytes": bytes(range(256)),
        "tuple_empty": (),
        "tuple_1": (1,),
        "tuple_7": (1, "two", 3.0, None, True, b"6", (7,)),
        "tuple_8": tuple(range(8)),
        "tuple_long": tuple("item%d" % i for i in range(40)),
        "tuple_nested": ((((1, 2), (3,)), ()), ("a", ("b", ("c",)))),
        "list_empty": [],
        "list_small": [1, "a", None, 2.5, b"x"],
        "list_ints": list(range(-50, 150)),
        "list_nested": [[1, [2, [3, [4, []]]]], [], [[]]],
        "dict_empty": {},
        "dict_small_scan": {"a": 1, "b": [2, 3], "c": {"d": None}},
        "dict_8_scan": {i: str(i) for i in range(8)},
        "dict_9_slots": {i: str(i) for i in range(9)},
        "dict_20_slots": big_dict,
        "dict_300_slots": {i: i % 7 for i in range(300)},
        "dict_mixed_keys": mixed_keys,
        "dict_tuple_keys": {(i, str(i), (i, i)): i for i in range(12)},
        "set_empty": set(),
        "set_small": {1, "a", (2, 3)},
        "set_slots": {"member%d" % i for i in range(20)},
        "frozenset_small": frozenset({1, 2.5, "x"}),
        "frozenset_slots": frozenset(range(100, 130)),
        "frozenset_keys": {frozenset({i, i + 1}): i for i in range(10)},
        "nested_mix": {
            "users": [{"id": i, "tags": {"t%d" % (i % 3)}, "pos": (i, -i)}
                      for i in range(6)],
            "meta": {"version": (1, 0), "frozen": frozenset({"a", "b"})},
        },
        "deep_lists": _deep(60),
    }
    out.update(_cycles())
    out.update(_objects())
    out.update(_ordered())
    return out


def _ordered():
    """Ordered containers (format 1.1, R36): every value whose name starts
    with "ordered_" is written with dumps(ordered=True), which orders each
    dict, set and frozenset whose keys are all str or all bytes."""
    strs = ["", "a", "ab", "abc", "b", "a\x00", "a\x00b", "\x00", "\x7f",
            "caf", "caf\xe9", "\x80", "\xe9t\xe9", "\xff", "\u0100", "\u07ff",
            "\u0800", "\u65e5", "\u65e5\u672c", "lone \ud800", "\ud800\udc00",
            "\udfff", "\uffff", "\U00010000", "\U0001F600", "\U0001F600x",
            "\U0010FFFF"]
    shuffled = strs[11:] + strs[:11]        # inserted out of sorted order
    ties = ["prefix__%03d" % i for i in range(40)]  # one 8-byte prefix
    blobs = [b"", b"\x00", b"\x00\x00", b"\x00\xff", b"a", b"ab",
             b"abcdefgh", b"abcdefgh\x00", b"abcdefghi", b"\x7f", b"\x80",
             b"\xff", b"\xff\x00", b"\xff\xff"]
    return {
        "ordered_dict_widths": {k: i for i, k in enumerate(shuffled)},
        "ordered_dict_sorted": {k: i for i, k in enumerate(sorted(strs))},
        "ordered_dict_ties": {k: None for k in reversed(ties)},
        "ordered_set_ties": set(ties),
        "ordered_bytes": {k: len(k) for k in reversed(blobs)},
        "ordered_frozenset_bytes": frozenset(blobs),
        "ordered_small": [{"b": 1, "a": 2}, {"x"}, frozenset({b"\xff", b"\x00"})],
        "ordered_large": {"%03x" % ((i * 97) % 300): i for i in range(300)},
        "ordered_nested": {
            "outer": {"inner": {"deep": {b"y", b"x"}},
                      "list": [{"b": 1, "a": 2}, frozenset({"q", "p"})]},
            "fs key": {frozenset({"k2", "k1"}): "an ordered frozenset key"},
        },
        # eligible containers next to ineligible ones (int, mixed, tuple keys)
        "ordered_mixed": [{"b": 1, "a": 2}, {2: "int", 1: "keys"},
                          {"s": 1, b"b": 2}, {"y", "x"}, {(1, "t"): 0},
                          {b"2", b"1"}, {1.5, "x"}, set(), {}],
        # keys stored once and reached by REF or SREF from later dicts
        "ordered_ref_keys": [{"shared key one": i, "shared key two": -i}
                             for i in range(4)]
        + [{"word-%d" % j: j for j in range(12)} for _ in range(3)],
    }


def _objects():
    """Objects (format 1.1, R32-R33) and keys of other types (keyed values,
    R35), of standard library classes so that the corpus needs no module of
    its own."""
    import datetime
    import decimal
    import fractions
    import functools
    import http
    import types
    import uuid
    from collections import OrderedDict
    third = fractions.Fraction(1, 3)
    ns = types.SimpleNamespace(name="ns", items=[1, 2], pair=(third, third))
    ns.me = ns
    # Keyed values: proxies that are tagged tuples (flags 0) and, for
    # Decimal("2.5") in the tuple key, a plain float (flag EQ).
    plus_0530 = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    keyed = [
        decimal.Decimal("0.1"),                        # ("fraction", 1, 10)
        third,                                         # ("fraction", 1, 3)
        datetime.date(2020, 1, 1),                     # ("date", ordinal)
        datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=plus_0530),  # ("datetime@utc", us)
        uuid.UUID(int=7),                              # ("uuid", 7)
        range(0, 9, 3),                                # ("range", 3, 0, 3)
        (1, decimal.Decimal("2.5")),                   # a plain tuple holding one
    ]
    return {
        "obj_call": [third, third, range(2, 9, 3), bytearray(b"ba")],
        "obj_call_state": [ns, functools.partial(max, 3)],
        "obj_nested": datetime.datetime(2020, 1, 2, 3, 4, 5,
                                        tzinfo=datetime.timezone.utc),
        "obj_reduce": {"id": uuid.UUID(int=12345), "when": datetime.date(1999, 12, 31)},
        "obj_global": [len, os.path.join, fractions.Fraction, third],
        "obj_pickle": [OrderedDict(a=1), OrderedDict(b=2)],
        "keyed_dict": {k: i for i, k in enumerate(keyed)},
        "keyed_frozenset": frozenset(keyed),
        # proxies equal to their keys (flag EQ): an int, a float, an IntEnum's
        # int, next to a plain key
        "keyed_eq": {decimal.Decimal("2"): "two", fractions.Fraction(1, 2): "half",
                     http.HTTPStatus.OK: "ok", "plain": [third]},
    }


def _deep(n):
    v = "bottom"
    for _ in range(n):
        v = [v]
    return v


# Opcodes of fuzz/fuzz_roundtrip.c (its enum, in order).
(OP_NONE, OP_FALSE, OP_TRUE, OP_INT8, OP_INT64, OP_BIGINT, OP_FLOAT_BITS,
 OP_FLOAT_DEC, OP_COMPLEX, OP_STR1, OP_STR2, OP_STR4, OP_STR_LONG, OP_BYTES,
 OP_TUPLE, OP_LIST, OP_DICT, OP_SET, OP_FROZENSET, OP_DUP, OP_LINK) = range(21)


def _prog(seed, *ops):
    out = bytearray(struct.pack("<Q", seed))
    for op in ops:
        out += bytes(op) if isinstance(op, (bytes, bytearray)) else bytes([op])
    return bytes(out)


def _i64(v):
    return struct.pack("<q", v)


def _f64(v):
    return struct.pack("<d", v)


def programs():
    """name -> fuzz_roundtrip program."""
    scalars = _prog(
        1,
        OP_NONE, OP_FALSE, OP_TRUE,
        OP_INT8, 0x85,
        OP_INT64, _i64(-(2 ** 40)),
        OP_BIGINT, 12, bytes(range(1, 13)),
        OP_FLOAT_BITS, _f64(0.1 + 0.2),
        OP_FLOAT_DEC, 1, struct.pack("<i", 15),
        OP_FLOAT_DEC, 9, struct.pack("<i", -3),
        OP_COMPLEX, _f64(1.5), 0, _f64(-2.0),
        OP_STR1, 5, b"hello",
        OP_STR1, 3, b"\xe9t\xe9",
        OP_STR2, 2, struct.pack("<HH", 0x65E5, 0xD800),
        OP_STR4, 1, struct.pack("<I", 0x1F600),
        OP_STR_LONG, 50, 0x41, 1,
        OP_BYTES, 4, b"\x00\x01\x02\xff",
    )
    slot_dict = []
    for i in range(12):
        slot_dict += [OP_INT8, i, OP_STR1, 1, 0x61 + i]
    dict_slots = _prog(2, *slot_dict, OP_DICT, 12)
    keys = _prog(
        3,
        OP_INT8, 1, OP_FLOAT_DEC, 0, struct.pack("<i", 1), OP_TRUE,
        OP_TUPLE, 3,                      # (1, 1.0, True)
        OP_STR1, 1, b"k", OP_INT8, 2, OP_FROZENSET, 2,
        OP_DUP, 1,                        # the tuple again: an equal key
        OP_INT8, 1, OP_INT8, 7,
        OP_DICT, 3,                       # {(1, 1.0, True): 1, 7: ...}
        OP_INT8, 1, OP_TRUE, OP_FLOAT_DEC, 0, struct.pack("<i", 1),
        OP_SET, 3,                        # {1, True, 1.0}: one key
    )
    cycles = _prog(
        4,
        OP_INT8, 5, OP_LIST, 1,           # L = [5]
        OP_LINK, 0, 0,                    # L.append(L)
        OP_DUP, 0, OP_TUPLE, 1,           # (L,)
        OP_LINK, 1, 0,                    # L.append((L,))
        OP_DUP, 1, OP_LIST, 2,
    )
    shared = _prog(
        5,
        OP_STR1, 6, b"shared", OP_INT8, 9, OP_TUPLE, 2,
        OP_DUP, 0, OP_DUP, 0, OP_LIST, 3,
        OP_DUP, 0, OP_DUP, 0, OP_LIST, 2,
        OP_BYTES, 8, b"dupbytes", OP_DUP, 0, OP_DUP, 0,
    )
    big_set = []
    for i in range(30):
        big_set += [OP_INT64, _i64(i * 7919 - 100000)]
    sets = _prog(6, *big_set, OP_SET, 30, OP_DUP, 0, OP_DUP, 0)
    return {
        "scalars": scalars,
        "dict_slots": dict_slots,
        "equal_keys": keys,
        "cycles": cycles,
        "shared": shared,
        "big_set": sets,
    }


def _built(ordered):
    """An image written by the streaming Builder: strings pooled across
    records (SREF), a key written twice, nested levels; with ordered=True
    every level of str or bytes keys sorted at its end (R36)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "b.pfi")
        with permafrost.Builder(path, ordered=ordered, memory=1 << 20) as b:
            for i in range(40):
                b["key %02d" % ((i * 7) % 40)] = ("shared value", i)
            b["key 03"] = "again"
            with b.dict("nested") as n:
                for k in (b"pear", b"apple", b"pea"):
                    n[k] = {"name": k.decode(), "size": len(k)}
            with b.list("list") as items:
                items.extend(["shared value", 1.5, None, {"b": 1, "a": 2}])
        with open(path, "rb") as f:
            return f.read()


def _same_value(path, data):
    """Whether the image at path loads to a value equal to that of `data`
    (the new image: compared through thaw on both sides, so that what thaw
    does with a cycle is the same on both)."""
    value = permafrost.thaw(permafrost.loads(data, trust=True, allow_pickle=True))
    try:
        with open(path, "rb") as f:
            raw = f.read()
        old = permafrost.thaw(permafrost.loads(raw, trust=True,
                                               allow_pickle=True))
    except (permafrost.Error, ValueError, OSError):
        return False
    # an ordered image thaws equal to a plain one: the incompat flags and
    # minor version (header bytes 10..24) tell them apart
    if raw[10:12] != data[10:12] or raw[16:24] != data[16:24]:
        return False
    if type(old) is not type(value):
        return False
    try:
        if old == value:
            return True
    except RecursionError:
        pass
    # NaN is not equal to itself, and cycles recurse without end under ==;
    # repr writes both the same way each time.
    return repr(old) == repr(value)


def _write(path, data, check):
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    if not check:
        with open(path, "wb") as f:
            f.write(data)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true",
                    help="rewrite every image, even one whose value is equal")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a file would change")
    args = ap.parse_args(argv)
    os.makedirs(READ_DIR, exist_ok=True)
    os.makedirs(ROUNDTRIP_DIR, exist_ok=True)
    changed, total = [], 0
    images = [(name, lambda value=value, name=name: permafrost.dumps(
        value, allow_pickle=name == "obj_pickle", ordered=name.startswith("ordered_")))
        for name, value in sorted(values().items())]
    images += [("built_plain", lambda: _built(False)), ("built_ordered", lambda: _built(True))]
    for name, make in images:
        path = os.path.join(READ_DIR, name + ".pfi")
        data = make()
        if len(data) > MAX_FILE:
            sys.exit("make_corpus: %s is %d bytes (limit %d)"
                     % (name, len(data), MAX_FILE))
        if not args.force and _same_value(path, data):
            total += os.path.getsize(path)
            continue
        total += len(data)
        if _write(path, data, args.check):
            changed.append(path)
    for name, prog in sorted(programs().items()):
        path = os.path.join(ROUNDTRIP_DIR, name + ".prog")
        total += len(prog)
        if _write(path, prog, args.check):
            changed.append(path)
    if total > MAX_TOTAL:
        sys.exit("make_corpus: corpus is %d bytes (limit %d)" % (total, MAX_TOTAL))
    for path in changed:
        print(("would write " if args.check else "wrote ")
              + os.path.relpath(path))
    print("make_corpus: %d file(s) %s, %d bytes in all"
          % (len(changed), "would change" if args.check else "written", total))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
