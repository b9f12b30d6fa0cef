"""Damaged, truncated, hostile and foreign inputs: every one is refused with
CorruptImageError or VersionError (or, where the damage is invisible, read
without complaint), never another exception, a crash or a hang.

Images are damaged at every truncation point, at random bytes (fixed seeds,
so a failure names its reproducer), at named header fields with the header
check recomputed (to reach the checks behind it), and at named fields of
ivals found by the pure-Python reader of helpers_format."""

from __future__ import annotations

import math
import random
import struct

import pytest

import helpers_format as fmt
import permafrost as pf
from helpers import deadline, scaled

ALLOWED = (pf.CorruptImageError, pf.VersionError)


def _images():
    shared_list = [1, 2, 3]
    long_str = "shared string " * 20
    cyclic = [1]
    cyclic.append(cyclic)
    return {
        "scalars": [None, True, False, 0, 127, -129, 2**40, -(2**62), 2**100, -(2**100), 1.5, -0.0, math.inf,
                    1 + 2j, "", "ascii", "x" * 200, "caf\xe9", "\u20acuro", "\U0001f600", "a\ud800", b"", b"bytes"],
        "nested": {"list": [1, [2, [3, []]]], "tuple": (1, (2, "x"), ()), "set": {1, 2, "a", (3, 4)},
                   "fs": frozenset({(1, 2), "b"}), "d": {"k": {"k2": None}}, "e": {}},
        "slotted": {**{f"key{i}": i for i in range(20)}, (1, "t"): "tuple", frozenset({1, 2}): "fs", 3.5: "f",
                    2**70: "big", b"b": "bytes", "sub": {f"s{i}": [i] for i in range(12)},
                    "set": set(range(30)), "fset": frozenset(f"e{i}" for i in range(12))},
        "srefs": {"items": [x for i in range(8) for x in (f"word-{i % 2}", bytes([i]) * 140, (f"word-{i % 2}", b"b-%d" % (i % 3)))],
                  "k": {"word-0": 0, frozenset({"word-1", b"b-2"}): 1}},
        "refs": {"a": long_str, "b": "".join(long_str), "c": b"\x00" * 150, "d": bytes(bytearray(b"\x00" * 150)),
                 "l1": shared_list, "l2": shared_list, "cyc": cyclic, "t": ("y" * 200, "y" * 200),
                 "keys": {long_str: 1, ("k", long_str): 2}},
    }


IMAGES = _images()


@pytest.fixture(scope="module")
def images():
    return {name: pf.dumps(value) for name, value in IMAGES.items()}


# ----------------------------------------------------------------- the walk


def full_walk(root, orig, budget: int = 20000) -> None:
    """Reads everything of root: thaw, iteration of every view, lookups of
    every key read and of every key of the original."""
    pf.thaw(root)
    left = [budget]
    _visit(root, orig, 0, left)


def _visit(node, orig, depth, left):
    left[0] -= 1
    if left[0] <= 0 or depth > 40:
        return
    sentinel = object()
    if isinstance(node, pf.DictView):
        len(node)
        for k, v in node.items():
            _visit(k, None, depth + 1, left)
            _visit(v, None, depth + 1, left)
            node.get(k, sentinel)
        list(node.values())
        if isinstance(orig, dict):
            for k, v in orig.items():
                _ = k in node
                got = node.get(k, sentinel)
                if got is not sentinel:
                    _visit(got, v, depth + 1, left)
    elif isinstance(node, pf.ListView):
        n = len(node)
        for i in range(n):
            _visit(node[i], orig[i] if isinstance(orig, list) and i < len(orig) else None, depth + 1, left)
        list(node)
        list(reversed(node))
        node[-1:]
    elif isinstance(node, (pf.SetView, pf.FrozenSetView)):
        for e in node:
            _visit(e, None, depth + 1, left)
            _ = e in node
        if isinstance(orig, (set, frozenset)):
            for e in orig:
                _ = e in node
        if isinstance(node, pf.FrozenSetView):
            hash(node)
    elif isinstance(node, tuple):
        for i, e in enumerate(node):
            _visit(e, orig[i] if isinstance(orig, tuple) and i < len(orig) else None, depth + 1, left)


def read_all(data: bytes, orig):
    """loads, the full check, a full walk and repr; returns None or the
    permafrost.Error raised. Any other exception propagates (and fails the
    test), and so does a walk that fails on an image the full check passed:
    with its checksums cleared, so that the check judges the structure."""
    try:
        image = pf.Image.from_buffer(_without_checksums(data))
    except ALLOWED as e:
        return e
    try:
        image.verify()
        verified = True
    except ALLOWED:
        verified = False
    try:
        root = image.root
        full_walk(root, orig)
        try:
            repr(root)
        except pf.LimitError:
            pass
    except ALLOWED as e:
        if verified:
            raise AssertionError(f"verify() passed, but reading raised {e!r}") from e
        return e
    return None


def _without_checksums(data: bytes) -> bytes:
    """data with every section checksum set to 0 (none), where the section
    table can be found."""
    if len(data) < 128 or data[:8] != b"\x89PFROST\n":
        return data
    buf = bytearray(data)
    stab, count = struct.unpack_from("<QI", buf, 64)
    for k in range(min(count, 64)):
        at = stab + 32 * k + 24
        if 0 <= at and at + 8 <= len(buf):
            buf[at:at + 8] = bytes(8)
    return bytes(buf)


def assert_refused_or_read(data: bytes, orig, what: str) -> None:
    try:
        read_all(data, orig)
    except Exception as e:  # noqa: BLE001 - re-raised with the reproducer
        raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e


def assert_corrupt(data: bytes, orig, what: str) -> None:
    err = read_all(data, orig)
    assert isinstance(err, pf.CorruptImageError), f"{what}: read without error" if err is None else f"{what}: {err!r}"


# ----------------------------------------------------------------- sanity


@pytest.mark.parametrize("name", list(IMAGES))
def test_intact_images_read(images, name):
    assert read_all(images[name], IMAGES[name]) is None
    if name != "refs":  # a cyclic list compares by endless recursion
        assert pf.loads(images[name]) == IMAGES[name]


def test_header_check_matches_the_library(images):
    for data in images.values():
        h = fmt.read_header(data)
        assert h["header_check"] == fmt.header_check(data)
        assert h["image_size"] == len(data)


# ----------------------------------------------------------------- truncation


@pytest.mark.parametrize("name", list(IMAGES))
def test_every_truncation_is_corrupt(images, name):
    data = images[name]
    with deadline(60):
        for i in range(len(data)):
            with pytest.raises(pf.CorruptImageError):
                pf.loads(data[:i])


def test_truncated_file_refused(images, tmp_path):
    data = images["slotted"]
    path = tmp_path / "cut.pf"
    for cut in range(0, len(data), max(1, len(data) // 40)):
        path.write_bytes(data[:cut])
        with pytest.raises(pf.CorruptImageError):
            pf.open(path)


# ----------------------------------------------------------------- not an image


def _foreign_inputs():
    rng = random.Random(1234)
    inputs = {
        "empty": b"",
        "hello": b"hello",
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "magic only": fmt.MAGIC,
        "magic and zeros": fmt.MAGIC + bytes(300),
        "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
        "json": b'{"a": [1, 2, 3]}' * 20,
        "zeros": bytes(1000),
        "ones": b"\xff" * 1000,
    }
    for i in range(20):
        inputs[f"random{i}"] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
    for i in range(10):  # random bytes behind a right magic
        inputs[f"magic+random{i}"] = fmt.MAGIC + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
    return inputs


FOREIGN = _foreign_inputs()


@pytest.mark.parametrize("data", list(FOREIGN.values()), ids=list(FOREIGN))
def test_not_an_image(data, tmp_path):
    # Behind a right magic, garbage may read as an unknown version: the
    # version is checked before a header check whose place and algorithm a
    # later version could change (R4 before R5).
    expected = ALLOWED if data.startswith(fmt.MAGIC) else pf.CorruptImageError
    with pytest.raises(expected):
        pf.loads(data)
    with pytest.raises(expected):
        pf.Image.from_buffer(data)
    path = tmp_path / "foreign.pf"
    path.write_bytes(data)
    with pytest.raises(expected):
        pf.open(path)


# ----------------------------------------------------------------- header fields


@pytest.mark.parametrize("major", [0, 2, 3, 0xFFFF])
def test_unknown_major_version(images, major):
    with pytest.raises(pf.VersionError):
        pf.loads(fmt.with_fields(images["nested"], version_major=major))


def test_newer_minor_version_reads(images):
    data = fmt.with_fields(images["nested"], version_minor=7)
    assert pf.loads(data) == IMAGES["nested"]


@pytest.mark.parametrize("bit", [2, 17, 63])  # bit 0: objects (R32-R35), 1: order (R36)
def test_unknown_incompat_flag(images, bit):
    with pytest.raises(pf.VersionError):
        pf.loads(fmt.with_fields(images["nested"], incompat_flags=1 << bit))


@pytest.mark.parametrize("bit", [0, 1, 63])
def test_unknown_compat_flag_ignored(images, bit):
    assert pf.loads(fmt.with_fields(images["nested"], compat_flags=1 << bit)) == IMAGES["nested"]


def test_unknown_required_section(images):
    data = images["nested"]
    with pytest.raises(pf.VersionError):
        pf.loads(fmt.append_section(data, kind=99, flags=fmt.SECTION_REQUIRED, offset=128, length=0))


def test_unknown_optional_section_ignored(images):
    data = fmt.append_section(images["nested"], kind=99, flags=0, offset=128, length=16)
    assert pf.loads(data) == IMAGES["nested"]


def test_second_data_section_is_corrupt(images):
    data = images["nested"]
    sec = fmt.read_sections(data)[0]
    with pytest.raises(pf.CorruptImageError):
        pf.loads(fmt.append_section(data, kind=fmt.SECTION_DATA, flags=1, offset=sec["offset"],
                                    length=sec["length"]))


def test_header_check_mismatch(images):
    data = bytearray(images["nested"])
    data[120] ^= 1
    with pytest.raises(pf.CorruptImageError):
        pf.loads(bytes(data))


def test_image_id_and_seed_are_free_fields(images):
    """image_id is any 16 bytes; with another hash_seed the slot tables no
    longer match, but iteration (thaw) does not use them."""
    data = fmt.with_fields(images["slotted"], image_id=b"\xff" * 16)
    assert pf.loads(data) == IMAGES["slotted"]
    assert pf.Image.from_buffer(data).id == b"\xff" * 16
    data = fmt.with_fields(images["slotted"], hash_seed=0x1234567)
    assert read_all(data, IMAGES["slotted"]) is None
    assert pf.thaw(pf.loads(data)) == IMAGES["slotted"]


def _bad_headers(data):
    h = fmt.read_header(data)
    size, start = h["image_size"], 128
    sec = fmt.read_sections(data)[0]
    return {
        "reserved76": dict(reserved76=1),
        "reserved88": dict(reserved88=b"\x01" + bytes(31)),
        "reserved88 last": dict(reserved88=bytes(31) + b"\x80"),
        "header_len 64": dict(header_len=64),
        "header_len 0": dict(header_len=0),
        "header_len huge": dict(header_len=2**31),
        "image_size short": dict(image_size=size - 1),
        "image_size long": dict(image_size=size + 1),
        "image_size tiny": dict(image_size=64),
        "image_size huge": dict(image_size=2**64 - 1),
        "root in header": dict(root_off=5),
        "root past data": dict(root_off=sec["offset"] + sec["length"]),
        "root at end": dict(root_off=size),
        "root huge": dict(root_off=2**64 - 1),
        "section table in header": dict(section_table_off=start - 32),
        "section table past end": dict(section_table_off=size - 16),
        "section table huge": dict(section_table_off=2**64 - 16),
        "section_count 0": dict(section_count=0),
        "section_count 2": dict(section_count=2),
        "section_count 65": dict(section_count=65),
        "section_count huge": dict(section_count=2**32 - 1),
        "magic": dict(magic=b"\x89PFROST\r"),
    }


@pytest.mark.parametrize("case", list(_bad_headers(pf.dumps(IMAGES["nested"]))))
def test_bad_header_field(images, case):
    fields = _bad_headers(images["nested"])[case]
    with pytest.raises(pf.CorruptImageError):
        pf.loads(fmt.with_fields(images["nested"], **fields))


def _section_patch(data, **changes):
    """data with its first section entry changed (check recomputed)."""
    h = fmt.read_header(data)
    buf = bytearray(data)
    base = h["section_table_off"]
    layout = {"kind": (0, "<I"), "flags": (4, "<I"), "offset": (8, "<Q"), "length": (16, "<Q"),
              "checksum": (24, "<Q")}
    for name, value in changes.items():
        off, f = layout[name]
        struct.pack_into(f, buf, base + off, value)
    return fmt.with_fields(bytes(buf))


@pytest.mark.parametrize(
    "changes",
    [
        dict(kind=2, flags=0),  # no DATA section left
        dict(offset=0),
        dict(offset=64),
        dict(length=2**64 - 1),
        dict(offset=2**64 - 8, length=16),
        dict(length=0),
    ],
    ids=str,
)
def test_bad_section_entry(images, changes):
    err = read_all(_section_patch(images["nested"], **changes), IMAGES["nested"])
    assert isinstance(err, (pf.CorruptImageError, pf.VersionError)), err


# ----------------------------------------------------------------- named ival fields


def _fixed_varint(value: int, length: int) -> bytes:
    """value as an LEB128 varint of exactly `length` bytes (padded)."""
    out = bytearray()
    for i in range(length):
        b = (value >> (7 * i)) & 0x7F
        out.append(b | (0x80 if i < length - 1 else 0))
    assert value < 1 << (7 * length)
    return bytes(out)


def _patched(data: bytes, pos: int, raw: bytes) -> bytes:
    return data[:pos] + raw + data[pos + len(raw):]


def _ivals(data):
    return fmt.walk(data)


# A sample of the type bytes FORMAT R14 leaves reserved: both ends of each
# reserved range.
RESERVED_TYPES = sorted({fmt.RESERVED_TYPE_BYTES[0], fmt.RESERVED_TYPE_BYTES[-1], 0x07, 0x15, 0x17, 0x24, 0x2F,
                         0x40, 0x7F} & set(fmt.RESERVED_TYPE_BYTES))


@pytest.mark.parametrize("name", list(IMAGES))
def test_reserved_type_bytes(images, name):
    data, orig = images[name], IMAGES[name]
    with deadline(60):
        for iv in _ivals(data):
            for t in RESERVED_TYPES:
                assert_corrupt(_patched(data, iv.pos, bytes([t])), orig, f"{name}: type {t:#x} at {iv.pos}")


@pytest.mark.parametrize("name", list(IMAGES))
def test_container_header_fields(images, name):
    data, orig = images[name], IMAGES[name]
    with deadline(60):
        for iv in _ivals(data):
            if iv.type not in fmt.CONTAINER_TYPES:
                continue
            where = f"{name}: container at {iv.pos}"
            for w in (0, 1, 3, 5, 16, 255):
                assert_corrupt(_patched(data, iv.pos + 1, bytes([w])), orig, f"{where} width {w}")
            for count in (2**64 - 1, 2**63, 2**40):
                assert_corrupt(_patched(data, iv.pos + 2, struct.pack("<Q", count)), orig, f"{where} count {count}")
            for body_len in (2**64 - 1, 2**40, iv.body_len + len(data)):
                assert_corrupt(_patched(data, iv.pos + 10, struct.pack("<Q", body_len)), orig,
                               f"{where} body_len {body_len}")
            if iv.type != fmt.T_LIST:
                for nslots in (2**64 - 1, 2**40):
                    assert_corrupt(_patched(data, iv.pos + 18, struct.pack("<Q", nslots)), orig,
                                   f"{where} nslots {nslots}")
                # Fewer or no slots: damage a reader may not see, never a crash.
                for nslots in (0, 1, max(iv.nslots - 1, 0)):
                    assert_refused_or_read(_patched(data, iv.pos + 18, struct.pack("<Q", nslots)), orig,
                                           f"{where} nslots {nslots}")
                for count in (0, max(iv.count - 1, 0), iv.count + 1):
                    assert_refused_or_read(_patched(data, iv.pos + 2, struct.pack("<Q", count)), orig,
                                           f"{where} count {count}")


@pytest.mark.parametrize("name", list(IMAGES))
def test_list_table_entries(images, name):
    data, orig = images[name], IMAGES[name]
    for iv in _ivals(data):
        if iv.type != fmt.T_LIST or not iv.count:
            continue
        for i in range(iv.count):
            off = iv.table + i * iv.width
            for rel in (iv.body_len, iv.body_len + 1, 2 ** (8 * iv.width) - 1):
                assert_corrupt(_patched(data, off, rel.to_bytes(iv.width, "little")), orig,
                               f"{name}: list {iv.pos} entry {i} = {rel}")
            for rel in range(0, min(iv.body_len, 40)):  # inside the body, maybe mid-ival
                assert_refused_or_read(_patched(data, off, rel.to_bytes(iv.width, "little")), orig,
                                       f"{name}: list {iv.pos} entry {i} = {rel}")


@pytest.mark.parametrize("name", ["slotted", "refs"])
def test_slot_tables_without_empty_slot(images, name):
    """Probing stops after nslots (R23): lookups in a table with no empty
    slot, or with every slot naming one record, end (found, missing, or
    corrupt) instead of looping."""
    data, orig = images[name], IMAGES[name]
    with deadline(60):
        for iv in _ivals(data):
            if iv.type == fmt.T_LIST or not iv.nslots:
                continue
            ibits = iv.body_len.bit_length()
            all_tags_record0 = (((1 << (8 * iv.width - ibits)) - 1) << ibits) | 1
            fills = [b"\xff" * iv.width, (1).to_bytes(iv.width, "little"), all_tags_record0.to_bytes(iv.width, "little")]
            for fill in (f * iv.nslots for f in fills):
                assert_refused_or_read(_patched(data, iv.table, fill), orig, f"{name}: slots of {iv.pos}")


@pytest.mark.parametrize("name", list(IMAGES))
def test_bad_refs(images, name):
    data, orig = images[name], IMAGES[name]
    ivals = _ivals(data)
    refs = [iv for iv in ivals if iv.type == fmt.T_REF]
    if name == "refs":
        assert len(refs) >= 4
    data_start = fmt.Image(data).data_start
    for iv in refs:
        n = iv.varint_len
        targets = {
            "itself": 0,
            "header": iv.pos,
            "before data": iv.pos - data_start + 1,
            "before the image": iv.pos + 1,
        }
        other_refs = [r.pos for r in refs if r.pos < iv.pos]
        if other_refs:
            targets["a REF"] = iv.pos - other_refs[0]
        for what, d in targets.items():
            if d >= 1 << (7 * n):
                continue
            assert_corrupt(_patched(data, iv.varint_pos, _fixed_varint(d, n)), orig,
                           f"{name}: REF at {iv.pos} to {what} (d={d})")
        # Anywhere else before it: maybe a valid ival, maybe not; never a crash.
        for d in range(1, min(iv.pos - data_start, 1 << (7 * n)), 7):
            assert_refused_or_read(_patched(data, iv.varint_pos, _fixed_varint(d, n)), orig,
                                   f"{name}: REF at {iv.pos} d={d}")


def test_bad_srefs(images):
    """FORMAT R28: an SREF index past the VALUES table, a VALUES entry
    outside DATA or at a REF or SREF, are corrupt; any other entry reads as
    some value or is refused, never a crash."""
    data, orig = images["srefs"], IMAGES["srefs"]
    img = fmt.Image(data)
    ivals = _ivals(data)
    srefs = [iv for iv in ivals if iv.type == fmt.T_SREF]
    assert len(srefs) >= 8 and img.values
    for iv in srefs:
        assert_corrupt(_patched(data, iv.varint_pos, _fixed_varint(len(img.values), iv.varint_len)), orig,
                       f"SREF at {iv.pos} past VALUES")
    vs = [s for s in fmt.read_sections(data) if s["kind"] == fmt.SECTION_VALUES][0]
    refs = [iv.pos for iv in ivals if iv.type in fmt.REF_TYPES]
    for i in range(len(img.values)):
        entry = vs["offset"] + 8 * i
        bad = {"header": 0, "before data": img.data_start - 1, "data end": img.data_end,
               "the VALUES table": vs["offset"], "far": 2**63, "a REF": refs[0], "an SREF": srefs[0].pos}
        for what, target in bad.items():
            assert_corrupt(_patched(data, entry, struct.pack("<Q", target)), orig, f"VALUES[{i}] to {what}")
        for target in range(img.data_start, img.data_end, 5):
            assert_refused_or_read(_patched(data, entry, struct.pack("<Q", target)), orig, f"VALUES[{i}] = {target}")


def test_bad_values_section(images):
    data, orig = images["srefs"], IMAGES["srefs"]
    h = fmt.read_header(data)
    secs = fmt.read_sections(data)
    assert [s["kind"] for s in secs] == [fmt.SECTION_DATA, fmt.SECTION_VALUES]
    entry = h["section_table_off"] + fmt.SECTION_ENTRY_LEN
    length = secs[1]["length"]
    # Without the table, with a ragged or shorter one, or twice.
    assert_corrupt(fmt.with_fields(data, section_count=1), orig, "SREFs without VALUES")
    for n in (length - 1, length - 4, length + 3):
        assert_corrupt(_patched(data, entry + 16, struct.pack("<Q", n)), orig, f"VALUES length {n}")
    assert_corrupt(_patched(data, entry + 16, struct.pack("<Q", length - 8)), orig, "VALUES one entry short")
    assert_corrupt(fmt.append_section(data, kind=fmt.SECTION_VALUES, flags=1, offset=secs[1]["offset"],
                                      length=length), orig, "two VALUES sections")


def test_tuple_containing_itself(images):
    """FORMAT R18: a REF inside a tuple back to that tuple is corrupt (not a
    RecursionError, not a crash)."""
    data, orig = images["refs"], IMAGES["refs"]
    ivals = {iv.pos: iv for iv in _ivals(data)}
    found = 0
    for iv in ivals.values():
        if iv.type not in fmt.TUPLE_TYPES:
            continue
        for child in iv.children:
            civ = ivals[child]
            if civ.type == fmt.T_REF and child - iv.pos < 1 << (7 * civ.varint_len):
                found += 1
                assert_corrupt(_patched(data, civ.varint_pos, _fixed_varint(child - iv.pos, civ.varint_len)), orig,
                               f"tuple at {iv.pos} containing itself")
    assert found


@pytest.mark.parametrize("name", ["scalars", "slotted", "refs"])
def test_bad_string_units(images, name):
    """FORMAT R15: ASCII bytes are < 0x80, UCS-4 units <= 0x10FFFF."""
    data, orig = images[name], IMAGES[name]
    checked = 0
    for iv in _ivals(data):
        if (iv.type >= fmt.T_SHORT_ASCII or iv.type == fmt.T_STR_ASCII) and iv.count:
            for pos in {iv.payload_pos, iv.end - 1}:
                for b in (0x80, 0xFF):
                    checked += 1
                    assert_corrupt(_patched(data, pos, bytes([b])), orig, f"{name}: ASCII str at {iv.pos}")
        if iv.type == fmt.T_STR_UCS4:
            for unit in (0x110000, 0xFFFFFFFF):
                checked += 1
                assert_corrupt(_patched(data, iv.payload_pos, struct.pack("<I", unit)), orig,
                               f"{name}: UCS-4 str at {iv.pos}")
    assert checked


def test_overlong_varint(images):
    """FORMAT R13: a varint of more than 10 bytes, or past 2**64, is corrupt."""
    data, orig = images["scalars"], IMAGES["scalars"]
    for iv in _ivals(data):
        if iv.type == fmt.T_STR_ASCII and iv.count >= 12:  # the 200-char string: room for 11 bytes
            for raw in (b"\xff" * 11, b"\x80" * 10 + b"\x01", b"\xff" * 9 + b"\x7f"):
                assert_corrupt(_patched(data, iv.varint_pos, raw), orig, f"varint {raw.hex()}")
            return
    pytest.fail("no long ASCII string in the image")


# ----------------------------------------------------------------- random damage


def _mutate(rng: random.Random, data: bytes, mode: str) -> tuple[bytes, str]:
    buf = bytearray(data)
    size = len(buf)
    if mode == "byte":
        pos = rng.randrange(128, size)
        val = rng.randrange(256)
        buf[pos] = val
        return bytes(buf), f"[{pos}]={val:#x}"
    if mode == "bit":
        pos = rng.randrange(128, size)
        bit = 1 << rng.randrange(8)
        buf[pos] ^= bit
        return bytes(buf), f"[{pos}]^={bit:#x}"
    if mode == "multi":
        changes = []
        for _ in range(rng.randrange(2, 9)):
            pos = rng.randrange(128, size)
            val = rng.choice([0, 0xFF, 0x80, 0x7F, 1, 3, rng.randrange(256)])
            buf[pos] = val
            changes.append(f"[{pos}]={val:#x}")
        return bytes(buf), " ".join(changes)
    if mode == "run":
        pos = rng.randrange(128, size)
        n = rng.randrange(1, 9)
        fill = rng.choice([b"\x00", b"\xff", None])
        raw = fill * n if fill else bytes(rng.randrange(256) for _ in range(n))
        buf[pos : pos + n] = raw[: size - pos]
        return bytes(buf), f"[{pos}:{pos + n}]={raw.hex()}"
    if mode == "header":
        pos = rng.randrange(0, 120)
        val = rng.randrange(256)
        buf[pos] = val
        return fmt.with_fields(bytes(buf)), f"header[{pos}]={val:#x} (check recomputed)"
    raise ValueError(mode)


MODES = {"byte": 900, "bit": 450, "multi": 450, "run": 300, "header": 150}  # per image: 2250 x 4 images


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(IMAGES))
def test_random_damage(images, name, mode):
    data, orig = images[name], IMAGES[name]
    seed = f"{name}/{mode}"
    rng = random.Random(seed)
    with deadline(120):
        for i in range(scaled(MODES[mode])):
            damaged, what = _mutate(rng, data, mode)
            assert_refused_or_read(damaged, orig, f"seed {seed!r} #{i}: {what}")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(IMAGES))
def test_random_damage_long(images, name):
    """Ten times the default damage, other seeds, every mode."""
    data, orig = images[name], IMAGES[name]
    with deadline(600):
        for mode, count in MODES.items():
            seed = f"long/{name}/{mode}"
            rng = random.Random(seed)
            for i in range(scaled(10 * count)):
                damaged, what = _mutate(rng, data, mode)
                assert_refused_or_read(damaged, orig, f"seed {seed!r} #{i}: {what}")
