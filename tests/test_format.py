"""Conformance to docs/FORMAT.md, checked against helpers_format, a reader
and writer written from the document alone: images the library writes
decode there to the frozen value with the layout rules a version 1.0 writer
follows, and the library reads the images of that other writer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers_format as fmt
import permafrost as pf
from helpers import TRICKY_KEYS, assert_same, has_nan, hashables, values

# Frozen vectors of the stable hash, computed with helpers_format from the
# algorithm text of FORMAT section 5 (seed 0), to catch a change on either
# side; tests/c/test_hash.c freezes the C side's.
HASH_VECTORS = [
    (b"", 0, 0x0),
    (b"a", 0, None),
    (b"abcdefgh", 0, None),
    (b"abcdefghi", 12345, None),
]


def test_python_hash_is_deterministic_and_spreads():
    assert fmt.pf_hash_bytes(b"", 0) == fmt.mix(0)
    seen = {fmt.pf_hash_bytes(bytes([i]) * n, s) for i in range(4) for n in range(17) for s in (0, 1)}
    assert len(seen) == 4 * 17 * 2 - 2 * 3  # b"" is the same input for every i
    assert fmt.key_hash(1, 7) == fmt.key_hash(1.0, 7) == fmt.key_hash(True, 7) == fmt.key_hash(1 + 0j, 7)
    assert fmt.key_hash(-0.0, 7) == fmt.key_hash(0, 7)
    assert fmt.key_hash(2**64, 7) == fmt.key_hash(float(2**64), 7)
    assert fmt.key_hash("a", 7) != fmt.key_hash(b"a", 7)
    assert fmt.key_hash(frozenset({1, "a"}), 7) == fmt.key_hash(frozenset({"a", 1.0}), 7)
    assert fmt.key_hash(complex(-0.0, 2), 7) == fmt.key_hash(complex(0.0, 2), 7)


@given(x=values())
def test_library_images_decode_in_python(x):
    data = pf.dumps(x)
    img = fmt.Image(data)
    assert img.size == len(data)
    assert_same(img.decode(), x)


def _key_pos(img, pos):
    return img.resolve(pos)


@given(x=values(allow_nan=False))
def test_layout_rules_of_a_v1_writer(x):
    """R15, R16 (narrowest forms), R17 (REF targets), R22 (slot counts,
    widths, and each key at the slot its stable hash selects)."""
    data = pf.dumps(x)
    check_layout(data)


def check_layout(data: bytes) -> None:
    img = fmt.Image(data)
    h = img.header
    assert h["version_major"] == 1 and h["header_len"] == 128
    assert h["reserved76"] == 0 and h["reserved88"] == bytes(32)
    assert img.data_start == 128
    for iv in fmt.walk(data):
        t = iv.type
        if t == fmt.T_REF:
            assert img.data_start <= iv.ref_target < iv.pos
            assert data[iv.ref_target] not in fmt.REF_TYPES
        elif t == fmt.T_SREF:                                   # R28
            assert iv.ref_target is not None, f"SREF index {iv.count} past VALUES"
            assert img.data_start <= iv.ref_target < img.data_end
            assert data[iv.ref_target] not in fmt.REF_TYPES
        elif 0x08 <= t <= 0x0F or t == fmt.T_BIGINT:
            v = img.decode(iv.pos)
            assert data[iv.payload_pos : iv.end] == fmt.minimal_twos_complement(v), f"R16 at {iv.pos}"
            assert (t == fmt.T_BIGINT) == (iv.end - iv.payload_pos > 8)
        elif t in (fmt.T_STR_ASCII, fmt.T_STR_LATIN1, fmt.T_STR_UCS2, fmt.T_STR_UCS4) or t >= fmt.T_SHORT_ASCII:
            s = img.decode(iv.pos)
            width, _ = fmt.str_code_units(s)
            ascii_ = all(ord(c) < 0x80 for c in s)
            if ascii_:
                assert t == (fmt.T_SHORT_ASCII + len(s) if len(s) < 128 else fmt.T_STR_ASCII), f"R15 at {iv.pos}"
            else:
                assert t == {1: fmt.T_STR_LATIN1, 2: fmt.T_STR_UCS2, 4: fmt.T_STR_UCS4}[width], f"R15 at {iv.pos}"
        elif t in (fmt.T_DICT, fmt.T_SET, fmt.T_FROZENSET):
            _check_slots(img, iv)


def _check_slots(img, iv) -> None:
    if iv.count > 8:
        assert iv.nslots == iv.count + iv.count * 3 // 17 + 1
    assert iv.nslots == 0 or iv.nslots > iv.count
    if iv.nslots:
        ibits = iv.body_len.bit_length()
        narrowest = next(w for w in (2, 4, 8) if 8 * w - ibits >= 4)
        assert iv.width == narrowest, f"R22 width at {iv.pos}"
        used = 0
        step = 2 if iv.type == fmt.T_DICT else 1
        for key_pos in iv.children[::step]:
            key = img.decode(key_pos)
            slot = img.find_slot(iv, fmt.key_hash(key, img.seed), key_pos - iv.body)
            assert slot is not None, f"key {key!r} of {iv.pos} not at its R22 slot"
            used += 1
        assert used == iv.count
        assert sum(1 for i in range(iv.nslots) if img.slot(iv, i)) == iv.count


def test_layout_of_sample_images():
    keys = [k for k in TRICKY_KEYS if not (isinstance(k, float) and math.isnan(k))]
    samples = [
        {k: i for i, k in enumerate(dict.fromkeys(keys))},
        set(range(1000)),
        frozenset(f"s{i}" for i in range(5000)),
        {f"k{i}": [i] * 3 for i in range(3000)},
        ["x" * 200, "x" * 200, "\u20ac" * 3, "\u20ac" * 3, b"b" * 50, b"b" * 50],
        [2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 127, 128, -128, -129, 0, 2**1000],
    ]
    for x in samples:
        check_layout(pf.dumps(x))


def sref_sample():
    """Strings and bytes met three times or more, far apart (R28): among
    values, inside tuples, as dict keys and inside frozenset keys."""
    words = [f"word-{i}" for i in range(3)]
    items = []
    for i in range(12):
        items += [words[i % 3], bytes([i]) * 150, (words[(i + 1) % 3], b"blob-%d" % (i % 2))]
    return {"items": items, "keys": {w: len(w) for w in words},
            "fs": {frozenset({words[0], b"blob-1"}): 1, (words[1], words[2]): 2}}


@pytest.mark.parametrize("x", [None, "a" * 31, list(range(1000)), {"k": "v" * 5000}])
def test_section_checksums_follow_the_spec(x):
    """The checksum of every section, computed from FORMAT section 3 alone."""
    data = pf.dumps(x)
    sections = fmt.read_sections(data)
    assert sections
    for s in sections:
        assert s["checksum"] == fmt.checksum(data[s["offset"]: s["offset"] + s["length"]])


def test_sref_layout_and_reading():
    x = sref_sample()
    data = pf.dumps(x)
    img = fmt.Image(data)
    srefs = [iv for iv in fmt.walk(data) if iv.type == fmt.T_SREF]
    assert len(srefs) >= 20 and len(img.values) == 5
    assert [s["kind"] for s in fmt.read_sections(data)] == [fmt.SECTION_DATA, fmt.SECTION_VALUES]
    check_layout(data)
    assert img.decode() == x
    root = pf.loads(data)
    assert root == x and pf.thaw(root) == x
    for k, v in x["keys"].items():
        assert root["keys"][k] == v and root["keys"].get(k.encode()) is None
    assert root["fs"][frozenset({"word-0", b"blob-1"})] == 1
    assert root["fs"][("word-1", "word-2")] == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_library_reads_python_written_srefs(seed):
    """Another writer's SREFs, its own choice of when (any shorter one)."""
    x = sref_sample()
    data = fmt.build(x, hash_seed=seed, sref=True)
    assert fmt.T_SREF in {iv.type for iv in fmt.walk(data)}
    root = pf.loads(data)
    assert root == x and pf.thaw(root) == x
    for k, v in x["keys"].items():
        assert root["keys"][k] == v
    assert root["fs"][("word-1", "word-2")] == 2


def test_id_and_seed_are_random():
    a, b = fmt.read_header(pf.dumps([])), fmt.read_header(pf.dumps([]))
    assert a["image_id"] != b["image_id"]


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEFCAFEF00D])
@given(x=values())
def test_library_reads_python_written_images(seed, x):
    data = fmt.build(x, hash_seed=seed)
    root = pf.loads(data)
    assert_same(pf.thaw(root), x)


@given(
    keys=st.lists(hashables(allow_nan=False), min_size=0, max_size=40, unique_by=lambda k: k),
    probes=st.lists(hashables(allow_nan=False), max_size=10),
    seed=st.integers(0, 2**64 - 1),
    min_slotted=st.sampled_from([0, 9, 1000]),
)
def test_library_looks_up_in_python_written_tables(keys, probes, seed, min_slotted):
    """The library finds keys where another writer's slot table puts them,
    whatever the hash seed, scanned or slotted."""
    d = {k: i for i, k in enumerate(keys)}
    view = pf.loads(fmt.build(d, hash_seed=seed, min_slotted=min_slotted))
    for k in keys + probes + TRICKY_KEYS:
        assert view.get(k, -1) == d.get(k, -1), k
    s = pf.loads(fmt.build(set(keys), hash_seed=seed, min_slotted=min_slotted))
    for k in keys + probes:
        assert (k in s) == (k in d)


def test_library_reads_non_deduplicated_images():
    x = ["x" * 300] * 3 + [b"y" * 200] * 3
    data = fmt.build(x, dedup=False)
    assert len(data) > 1500
    assert pf.loads(data) == x


def test_python_reader_agrees_with_thaw_on_cycles():
    a = [1]
    a.append(a)
    d = {"a": a}
    d["d"] = d
    data = pf.dumps(d)
    y = fmt.Image(data).decode()
    assert y["d"] is y and y["a"][1] is y["a"]
    t = pf.thaw(pf.loads(fmt.build(d)))
    assert t["d"] is t and t["a"][1] is t["a"]


@given(x=values(allow_nan=True, max_leaves=10))
def test_python_writer_and_reader_agree(x):
    """Self-check of the helpers: what they write they read back."""
    data = fmt.build(x, hash_seed=99)
    assert_same(fmt.Image(data).decode(), x)
    if not has_nan(x):
        check_layout(data)
