"""A pure-Python reader of the permafrost image format, written from
docs/FORMAT.md alone (no permafrost import), for the tests.

It serves three purposes:
  - conformance: images made by the library must decode here to the value
    that was frozen, and their slot tables must index every key where
    FORMAT section 5 and R22 say (test_format.py);
  - crafting: tests rewrite header fields and recompute `header_check`
    (FORMAT R5) to reach the version checks (R4, R6, R11) behind it;
  - named offsets: `walk()` lists every ival of an image with the offsets of
    its fields, so corruption tests can damage one named field at a time.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction

MASK64 = (1 << 64) - 1
K1 = 0x9E3779B97F4A7C15
K2 = 0xC2B2AE3D27D4EB4F
K3 = 0x165667B19E3779F9
MIXK = 0xD6E8FEB86659FD93

MAGIC = b"\x89PFROST\n"
HEADER_LEN = 128
SECTION_ENTRY_LEN = 32
SECTION_DATA = 1
SECTION_VALUES = 2  # R28: u64 offsets that SREFs index
SECTION_REQUIRED = 1

# Header fields: name -> (offset, struct format), FORMAT section 2.
HEADER_FIELDS = {
    "magic": (0, "8s"),
    "version_major": (8, "<H"),
    "version_minor": (10, "<H"),
    "header_len": (12, "<I"),
    "incompat_flags": (16, "<Q"),
    "compat_flags": (24, "<Q"),
    "image_id": (32, "16s"),
    "image_size": (48, "<Q"),
    "root_off": (56, "<Q"),
    "section_table_off": (64, "<Q"),
    "section_count": (72, "<I"),
    "reserved76": (76, "<I"),
    "hash_seed": (80, "<Q"),
    "reserved88": (88, "32s"),
    "header_check": (120, "<Q"),
}

# Type numbers of the stable hash (FORMAT section 5).
HT_NONE, HT_INT, HT_FLOAT, HT_COMPLEX, HT_STR, HT_BYTES, HT_TUPLE, HT_FROZENSET = range(1, 9)

T_NONE, T_FALSE, T_TRUE, T_REF = 0x00, 0x01, 0x02, 0x03
T_FLOAT, T_COMPLEX, T_BIGINT, T_SREF = 0x04, 0x05, 0x06, 0x07
REF_TYPES = (T_REF, T_SREF)
T_STR_ASCII, T_STR_LATIN1, T_STR_UCS2, T_STR_UCS4, T_BYTES = 0x10, 0x11, 0x12, 0x13, 0x14
T_TUPLE, T_LIST, T_DICT, T_SET, T_FROZENSET = 0x18, 0x20, 0x21, 0x22, 0x23
T_SHORT_ASCII = 0x80
# Short tuples (R26): 0x19..0x1F is a tuple of type - 0x18 (1..7) items,
# no count varint. Decimal floats (R25): 0x30 + e (e = 0..9), one varint z,
# the value is the double nearest to m / 10**e with m = zigzag-decode(z).
T_TUPLE1, T_TUPLE7 = 0x19, 0x1F
T_DEC0, T_DEC9 = 0x30, 0x39
TUPLE_TYPES = (T_TUPLE,) + tuple(range(T_TUPLE1, T_TUPLE7 + 1))
DECIMAL_TYPES = tuple(range(T_DEC0, T_DEC9 + 1))
FLOAT_TYPES = (T_FLOAT,) + DECIMAL_TYPES
# Every type byte version 1.0 leaves reserved (R14).
RESERVED_TYPE_BYTES = tuple(
    [0x15, 0x16, 0x17] + list(range(0x24, T_DEC0)) + list(range(T_DEC9 + 1, T_SHORT_ASCII))
)

CONTAINER_TYPES = (T_LIST, T_DICT, T_SET, T_FROZENSET)
LIST_HEADER_LEN = 18
KEYED_HEADER_LEN = 26


class FormatError(Exception):
    """The Python reader found the image to break a FORMAT rule."""


# ----------------------------------------------------------------- the hash


def rotl64(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK64


def mix(x: int) -> int:
    x ^= x >> 32
    x = (x * MIXK) & MASK64
    x ^= x >> 32
    x = (x * MIXK) & MASK64
    x ^= x >> 32
    return x


def _step(h: int, w: int) -> int:
    return (rotl64(h ^ ((w * K2) & MASK64), 29) * K1) & MASK64


def pf_hash_bytes(p: bytes, seed: int) -> int:
    """pf_hash_bytes(p, len(p), seed) of FORMAT section 5."""
    n = len(p)
    h = (seed ^ (n * K1)) & MASK64
    full = n - n % 8
    for i in range(0, full, 8):
        h = _step(h, int.from_bytes(p[i : i + 8], "little"))
    if n % 8:
        h = _step(h, int.from_bytes(p[full:], "little"))
    return mix(h)


def checksum(p: bytes) -> int:
    """pf_checksum of FORMAT section 3: four lanes of the hash's step over
    32-byte blocks, the rest hashed with the folded lanes as seed; 0 -> 1."""
    n = len(p)
    lanes = [(K1 ^ n) & MASK64, (K2 ^ n) & MASK64, (K3 ^ n) & MASK64, (MIXK ^ n) & MASK64]
    full = n - n % 32
    for i in range(0, full, 32):
        for j in range(4):
            lanes[j] = _step(lanes[j], int.from_bytes(p[i + 8 * j : i + 8 * j + 8], "little"))
    seed = lanes[0] ^ rotl64(lanes[1], 16) ^ rotl64(lanes[2], 32) ^ rotl64(lanes[3], 48)
    return pf_hash_bytes(p[full:], seed) or 1


def type_seed(hash_seed: int, type_no: int) -> int:
    return (hash_seed ^ (type_no * K3)) & MASK64


def _le64(v: int) -> bytes:
    return (v & MASK64).to_bytes(8, "little")


def _f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def minimal_twos_complement(v: int) -> bytes:
    """Fewest little-endian two's complement bytes that hold v (R16)."""
    n = 1
    while not (-(1 << (8 * n - 1)) <= v < (1 << (8 * n - 1))):
        n += 1
    return v.to_bytes(n, "little", signed=True)


def str_code_units(s: str) -> tuple[int, bytes]:
    """(width, code units) of s as CPython stores it (PEP 393, R15)."""
    top = max(map(ord, s), default=0)
    if top < 0x100:
        return 1, bytes(map(ord, s))
    if top < 0x10000:
        return 2, struct.pack(f"<{len(s)}H", *map(ord, s))
    return 4, struct.pack(f"<{len(s)}I", *map(ord, s))


def key_hash(key, hash_seed: int) -> int:
    """The stable hash of a Python key value (FORMAT section 5)."""
    t = type(key)
    if key is None:
        return pf_hash_bytes(b"", type_seed(hash_seed, HT_NONE))
    if t is bool or t is int:
        v = int(key)
        if -(1 << 63) <= v < (1 << 63):
            return pf_hash_bytes(_le64(v), type_seed(hash_seed, HT_INT))
        return pf_hash_bytes(minimal_twos_complement(v), type_seed(hash_seed, HT_INT))
    if t is float:
        if key == key and key not in (float("inf"), float("-inf")) and key == int(key):
            return key_hash(int(key), hash_seed)
        return pf_hash_bytes(_le64(_f64_bits(key)), type_seed(hash_seed, HT_FLOAT))
    if t is complex:
        if key.imag == 0:
            return key_hash(key.real, hash_seed)
        re = 0.0 if key.real == 0 else key.real
        im = 0.0 if key.imag == 0 else key.imag
        payload = _le64(_f64_bits(re)) + _le64(_f64_bits(im))
        return pf_hash_bytes(payload, type_seed(hash_seed, HT_COMPLEX))
    if t is str:
        _, units = str_code_units(key)
        return pf_hash_bytes(units, type_seed(hash_seed, HT_STR))
    if t is bytes:
        return pf_hash_bytes(key, type_seed(hash_seed, HT_BYTES))
    if t is tuple:
        payload = b"".join(_le64(key_hash(item, hash_seed)) for item in key)
        return pf_hash_bytes(payload, type_seed(hash_seed, HT_TUPLE))
    if t is frozenset:
        total = sum(mix(key_hash(item, hash_seed)) for item in key) & MASK64
        return pf_hash_bytes(_le64(total) + _le64(len(key)), type_seed(hash_seed, HT_FROZENSET))
    raise TypeError(f"not a key type: {t.__name__}")


def mulhi64(a: int, b: int) -> int:
    return ((a & MASK64) * (b & MASK64)) >> 64


# ----------------------------------------------------------------- header


def read_header(data: bytes) -> dict:
    if len(data) < HEADER_LEN:
        raise FormatError("shorter than a header")
    out = {}
    for name, (off, fmt) in HEADER_FIELDS.items():
        (out[name],) = struct.unpack_from(fmt, data, off)
    return out


def header_check(data: bytes) -> int:
    """The header check value over data[0:120] (R5)."""
    return pf_hash_bytes(bytes(data[:120]), 0)


def with_fields(data: bytes, recheck: bool = True, **fields) -> bytes:
    """A copy of `data` with header fields replaced; `header_check` is
    recomputed unless recheck is False (or it is one of the fields)."""
    buf = bytearray(data)
    for name, value in fields.items():
        off, fmt = HEADER_FIELDS[name]
        struct.pack_into(fmt, buf, off, value)
    if recheck and "header_check" not in fields:
        struct.pack_into("<Q", buf, 120, header_check(buf))
    return bytes(buf)


def read_sections(data: bytes) -> list[dict]:
    h = read_header(data)
    out = []
    for i in range(h["section_count"]):
        off = h["section_table_off"] + i * SECTION_ENTRY_LEN
        kind, flags, s_off, s_len, checksum = struct.unpack_from("<IIQQQ", data, off)
        out.append(dict(kind=kind, flags=flags, offset=s_off, length=s_len, checksum=checksum))
    return out


def append_section(data: bytes, kind: int, flags: int, offset: int, length: int) -> bytes:
    """Appends one section-table entry at the end of an image whose section
    table ends the image (as version 1.0 writers lay it out), growing
    image_size and section_count and recomputing the header check."""
    h = read_header(data)
    end = h["section_table_off"] + h["section_count"] * SECTION_ENTRY_LEN
    if end != h["image_size"]:
        raise FormatError("section table does not end the image")
    body = bytes(data[: h["image_size"]]) + struct.pack("<IIQQQ", kind, flags, offset, length, 0)
    return with_fields(body, image_size=len(body), section_count=h["section_count"] + 1)


# ----------------------------------------------------------------- decoding


def zigzag_decode(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def zigzag_encode(m: int) -> int:
    return 2 * m if m >= 0 else -2 * m - 1


def decimal_value(z: int, e: int) -> float:
    """The double of a decimal float (R25): (double)m / 10**e, one IEEE-754
    division of two exact binary64 values (Python floats are binary64)."""
    m = zigzag_decode(z)
    if abs(m) >= 1 << 53:
        raise FormatError(f"decimal float mantissa {m} of 2**53 or more")
    return float(m) / float(10**e)


def read_varint(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(value, position after) of the LEB128 varint at pos (R13)."""
    value = 0
    for i in range(10):
        if pos + i >= limit:
            raise FormatError(f"varint at {pos} runs past the data")
        b = data[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if value >= 1 << 64:
                raise FormatError(f"varint at {pos} overflows")
            return value, pos + i + 1
    raise FormatError(f"varint at {pos} longer than 10 bytes")


@dataclass
class Ival:
    """One ival as it sits in the image, with the offsets of its fields."""

    pos: int
    type: int
    end: int  # just past the ival
    ref_target: int | None = None  # REF/SREF: where it points (SREF: None if the index is out of range)
    varint_pos: int | None = None  # REF/str/bytes/tuple/bigint: the varint
    varint_len: int = 0
    payload_pos: int | None = None  # first byte of the payload proper
    count: int = 0  # containers / tuples / str chars / bytes
    width: int = 0  # container table width
    body: int = 0  # container body offset
    body_len: int = 0
    table: int = 0  # container table offset
    nslots: int = 0
    children: list[int] = field(default_factory=list)  # ival offsets


class Image:
    """A parsed image: header, DATA bounds, and ival decoding."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.header = h = read_header(self.data)
        if h["magic"] != MAGIC:
            raise FormatError("bad magic")
        if h["header_check"] != header_check(self.data):
            raise FormatError("header check mismatch")
        self.size = h["image_size"]
        if len(self.data) < self.size:
            raise FormatError("image truncated")
        data_sections = [s for s in read_sections(self.data) if s["kind"] == SECTION_DATA]
        if len(data_sections) != 1:
            raise FormatError("not exactly one DATA section")
        values_sections = [s for s in read_sections(self.data) if s["kind"] == SECTION_VALUES]
        if len(values_sections) > 1:
            raise FormatError("more than one VALUES section")
        self.values: list[int] = []
        if values_sections:
            vs = values_sections[0]
            if vs["length"] % 8:
                raise FormatError("VALUES length not a multiple of 8")
            self.values = list(struct.unpack_from(f"<{vs['length'] // 8}Q", self.data, vs["offset"]))
        self.data_start = data_sections[0]["offset"]
        self.data_end = self.data_start + data_sections[0]["length"]
        self.seed = h["hash_seed"]
        self.root_off = h["root_off"]

    # -- raw ival structure

    def ival(self, pos: int) -> Ival:
        """Parses the ival at pos without following a REF."""
        d, lim = self.data, self.data_end
        if not self.data_start <= pos < lim:
            raise FormatError(f"ival at {pos} outside DATA")
        t = d[pos]
        if t in (T_NONE, T_FALSE, T_TRUE):
            return Ival(pos, t, pos + 1)
        if t == T_REF:
            dist, nxt = read_varint(d, pos + 1, lim)
            return Ival(pos, t, nxt, ref_target=pos - dist, varint_pos=pos + 1, varint_len=nxt - pos - 1)
        if t == T_SREF:
            i, nxt = read_varint(d, pos + 1, lim)
            target = self.values[i] if i < len(self.values) else None
            return Ival(pos, t, nxt, ref_target=target, count=i, varint_pos=pos + 1, varint_len=nxt - pos - 1)
        if t == T_FLOAT:
            return Ival(pos, t, self._fits(pos, 9), payload_pos=pos + 1)
        if t in DECIMAL_TYPES:
            z, nxt = read_varint(d, pos + 1, lim)
            return Ival(pos, t, nxt, varint_pos=pos + 1, varint_len=nxt - pos - 1, payload_pos=pos + 1)
        if t == T_COMPLEX:
            return Ival(pos, t, self._fits(pos, 17), payload_pos=pos + 1)
        if t == T_BIGINT or t in (T_STR_ASCII, T_STR_LATIN1, T_STR_UCS2, T_STR_UCS4, T_BYTES):
            n, p = read_varint(d, pos + 1, lim)
            unit = {T_STR_UCS2: 2, T_STR_UCS4: 4}.get(t, 1)
            end = self._fits(p, n * unit)
            return Ival(pos, t, end, varint_pos=pos + 1, varint_len=p - pos - 1, payload_pos=p, count=n)
        if 0x08 <= t <= 0x0F:
            return Ival(pos, t, self._fits(pos, 1 + t - 0x07), payload_pos=pos + 1)
        if t >= T_SHORT_ASCII:
            n = t - T_SHORT_ASCII
            return Ival(pos, t, self._fits(pos, 1 + n), payload_pos=pos + 1, count=n)
        if t in TUPLE_TYPES:
            if t == T_TUPLE:
                n, p = read_varint(d, pos + 1, lim)
                vlen = p - pos - 1
            else:
                n, p, vlen = t - T_TUPLE, pos + 1, 0
            children = []
            for _ in range(n):
                children.append(p)
                p = self.ival(p).end
            return Ival(pos, t, p, varint_pos=pos + 1 if vlen else None, varint_len=vlen, count=n,
                        children=children)
        if t in CONTAINER_TYPES:
            hlen = LIST_HEADER_LEN if t == T_LIST else KEYED_HEADER_LEN
            self._fits(pos, hlen)
            width = d[pos + 1]
            count, body_len = struct.unpack_from("<QQ", d, pos + 2)
            nslots = struct.unpack_from("<Q", d, pos + 18)[0] if t != T_LIST else 0
            if width not in (2, 4, 8):
                raise FormatError(f"table width {width} at {pos}")
            body = pos + hlen
            table = body + body_len
            nentries = count if t == T_LIST else nslots
            end = self._fits(table, nentries * width)
            iv = Ival(pos, t, end, count=count, width=width, body=body, body_len=body_len, table=table, nslots=nslots)
            if t == T_LIST:
                for i in range(count):
                    rel = int.from_bytes(d[table + i * width : table + (i + 1) * width], "little")
                    if rel >= body_len:
                        raise FormatError(f"list table entry {i} at {pos} past the body")
                    iv.children.append(body + rel)
            else:
                p = body
                per_record = 2 if t == T_DICT else 1
                for _ in range(count * per_record):
                    iv.children.append(p)
                    p = self.ival(p).end
                if p != table:
                    raise FormatError(f"records of {pos} do not fill the body")
            return iv
        raise FormatError(f"reserved type byte {t:#x} at {pos}")

    def _fits(self, pos: int, n: int) -> int:
        if pos + n > self.data_end:
            raise FormatError(f"{n} bytes at {pos} run past DATA")
        return pos + n

    def resolve(self, pos: int) -> int:
        """Follows a REF or an SREF (one step, R17, R28)."""
        iv = self.ival(pos)
        if iv.type not in REF_TYPES:
            return pos
        target = iv.ref_target
        if iv.type == T_REF and (target < self.data_start or target >= pos):
            raise FormatError(f"REF at {pos} points outside DATA or forwards")
        if iv.type == T_SREF and (target is None or not self.data_start <= target < self.data_end):
            raise FormatError(f"SREF at {pos}: index {iv.count} outside VALUES or target outside DATA")
        if self.data[target] in REF_TYPES:
            raise FormatError(f"REF at {pos} points at a REF or SREF")
        return target

    # -- values

    def decode(self, pos: int | None = None, _memo: dict | None = None, _tuples: frozenset = frozenset()):
        """The Python value at pos (default: the root), with shared
        references and cycles rebuilt."""
        memo = {} if _memo is None else _memo
        pos = self.resolve(self.root_off if pos is None else pos)
        if pos in memo:
            return memo[pos]
        iv = self.ival(pos)
        d, t = self.data, iv.type
        if t == T_NONE:
            return None
        if t in (T_FALSE, T_TRUE):
            return t == T_TRUE
        if t == T_FLOAT:
            return struct.unpack_from("<d", d, iv.payload_pos)[0]
        if t in DECIMAL_TYPES:
            return decimal_value(read_varint(d, iv.payload_pos, iv.end)[0], t - T_DEC0)
        if t == T_COMPLEX:
            return complex(*struct.unpack_from("<dd", d, iv.payload_pos))
        if 0x08 <= t <= 0x0F or t == T_BIGINT:
            return int.from_bytes(d[iv.payload_pos : iv.end], "little", signed=True)
        if t >= T_SHORT_ASCII or t == T_STR_ASCII:
            raw = d[iv.payload_pos : iv.end]
            if any(b >= 0x80 for b in raw):
                raise FormatError(f"non-ASCII byte in ASCII str at {pos}")
            return raw.decode("ascii")
        if t == T_STR_LATIN1:
            return d[iv.payload_pos : iv.end].decode("latin-1")
        if t == T_STR_UCS2:
            return "".join(map(chr, struct.unpack_from(f"<{iv.count}H", d, iv.payload_pos)))
        if t == T_STR_UCS4:
            units = struct.unpack_from(f"<{iv.count}I", d, iv.payload_pos)
            if any(u > 0x10FFFF for u in units):
                raise FormatError(f"UCS-4 unit above 0x10FFFF at {pos}")
            return "".join(map(chr, units))
        if t == T_BYTES:
            return d[iv.payload_pos : iv.end]
        if t in TUPLE_TYPES:
            if pos in _tuples:
                raise FormatError(f"tuple at {pos} contains itself (R18)")
            inner = _tuples | {pos}
            out = tuple(self.decode(c, memo, inner) for c in iv.children)
            memo[pos] = out
            return out
        if t == T_LIST:
            out = memo[pos] = []
            out.extend(self.decode(c, memo) for c in iv.children)
            return out
        if t == T_DICT:
            out = memo[pos] = {}
            kids = iv.children
            for i in range(0, len(kids), 2):
                out[self.decode(kids[i], memo)] = self.decode(kids[i + 1], memo)
            return out
        if t in (T_SET, T_FROZENSET):
            items = [self.decode(c, memo) for c in iv.children]
            out = memo[pos] = set(items) if t == T_SET else frozenset(items)
            return out
        raise FormatError(f"cannot decode type {t:#x} at {pos}")

    # -- the slot table

    def slot(self, iv: Ival, i: int) -> int:
        off = iv.table + i * iv.width
        return int.from_bytes(self.data[off : off + iv.width], "little")

    def find_slot(self, iv: Ival, key_hash_value: int, rec_off: int) -> int | None:
        """Index of the slot that indexes the record at body offset rec_off,
        following R22's probe sequence from the home slot; None if the
        sequence meets an empty slot or exhausts nslots first."""
        ibits = iv.body_len.bit_length()
        tagbits = 8 * iv.width - ibits
        tag = key_hash_value if tagbits >= 64 else key_hash_value & ((1 << tagbits) - 1)
        want = ((tag << ibits) | (rec_off + 1)) & ((1 << (8 * iv.width)) - 1)
        i = mulhi64(key_hash_value, iv.nslots)
        for _ in range(iv.nslots):
            s = self.slot(iv, i)
            if s == 0:
                return None
            if s == want:
                return i
            i = (i + 1) % iv.nslots
        return None


def walk(data: bytes) -> list[Ival]:
    """Every ival reachable from the root (REFs included, each once), in
    offset order."""
    img = Image(data)
    seen: dict[int, Ival] = {}
    todo = [img.root_off]
    while todo:
        pos = todo.pop()
        if pos in seen:
            continue
        iv = seen[pos] = img.ival(pos)
        if iv.type in REF_TYPES and iv.ref_target is not None:
            todo.append(iv.ref_target)
        todo.extend(iv.children)
    return [seen[p] for p in sorted(seen)]


# ----------------------------------------------------------------- writing


def encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_float(v: float) -> bytes:
    """The canonical encoding of a float (R25), from the rule's text with
    exact rational arithmetic: the decimal form 0x30 + e when some e in 0..9
    and integer m give float(m) / 10**e == v (one binary64 division, which
    Python's float division is) in fewer than 9 bytes, with the smallest e;
    else 0x04 and the 8 bytes."""
    if math.isfinite(v) and not (v == 0.0 and math.copysign(1.0, v) < 0):
        exact = Fraction(v)
        for e in range(10):
            near = round(exact * 10**e)
            for m in (near - 1, near, near + 1):
                if abs(m) < 1 << 53 and float(m) / float(10**e) == v:
                    enc = bytes([T_DEC0 + e]) + encode_varint(zigzag_encode(m))
                    if len(enc) < 9:
                        return enc
    return bytes([T_FLOAT]) + struct.pack("<d", v)


def _narrowest(limit_bits: int) -> int:
    for w in (2, 4, 8):
        if 8 * w >= limit_bits:
            return w
    raise ValueError("too large")


class Writer:
    """An independent writer of version 1.0 images, from FORMAT.md alone.

    It lets the tests check that the library reads images it did not write
    (any conforming writer's), and craft images with chosen layouts:
    `slots` forces a slot count per keyed container (0 = scan), `dedup`
    turns off REFs for equal strings and bytes, `sref` references them
    through the VALUES table when that is shorter (R28, as the library's
    writer does). `compact` writes floats and
    tuples in their canonical forms (R25, R26); without it, every float is
    0x04 and every tuple 0x18 with a count, forms a reader also accepts.
    """

    def __init__(self, hash_seed: int = 0, dedup: bool = True, min_slotted: int = 9, compact: bool = False,
                 sref: bool = False):
        self.buf = bytearray(HEADER_LEN)
        self.sref = sref
        self.values: list[int] = []  # the VALUES table (R28)
        self.value_index: dict[tuple, int] = {}
        self.seed = hash_seed
        self.dedup = dedup
        self.compact = compact
        self.min_slotted = min_slotted
        self.by_id: dict[int, int] = {}
        self.by_value: dict[tuple, int] = {}
        self._keep: list = []  # keeps ids in by_id valid

    def pos(self) -> int:
        return len(self.buf)

    def ref(self, target: int) -> int:
        pos = self.pos()
        self.buf += bytes([T_REF]) + encode_varint(pos - target)
        return pos

    def write(self, v) -> int:
        t = type(v)
        if t in (list, dict, set, frozenset, tuple):
            if id(v) in self.by_id:
                return self.ref(self.by_id[id(v)])
        pos = self.pos()
        b = self.buf
        if v is None:
            b.append(T_NONE)
        elif t is bool:
            b.append(T_TRUE if v else T_FALSE)
        elif t is int:
            raw = minimal_twos_complement(v)
            if len(raw) <= 8:
                b += bytes([0x07 + len(raw)]) + raw
            else:
                b += bytes([T_BIGINT]) + encode_varint(len(raw)) + raw
        elif t is float:
            b += encode_float(v) if self.compact else bytes([T_FLOAT]) + struct.pack("<d", v)
        elif t is complex:
            b += bytes([T_COMPLEX]) + struct.pack("<dd", v.real, v.imag)
        elif t in (str, bytes):
            return self._write_blob(v)
        elif t is tuple:
            self.by_id[id(v)] = pos
            self._keep.append(v)
            if self.compact and 1 <= len(v) <= 7:
                b.append(T_TUPLE + len(v))
            else:
                b += bytes([T_TUPLE]) + encode_varint(len(v))
            for item in v:
                self.write(item)
        elif t is list:
            self._container(v, T_LIST, list(v), [])
        elif t is dict:
            self._container(v, T_DICT, list(v.items()), list(v))
        elif t in (set, frozenset):
            self._container(v, T_SET if t is set else T_FROZENSET, list(v), list(v))
        else:
            raise TypeError(f"cannot write {t.__name__}")
        return pos

    def _write_blob(self, v) -> int:
        key = (type(v), v)
        if self.dedup and key in self.by_value:
            target = self.by_value[key]
            ref_len = 1 + len(encode_varint(self.pos() - target))
            if self.sref:
                i = self.value_index.get(key, len(self.values))
                sref_len = 1 + len(encode_varint(i))
                if sref_len < ref_len and sref_len < self._blob_len(v):
                    if i == len(self.values):
                        self.values.append(target)
                        self.value_index[key] = i
                    pos = self.pos()
                    self.buf += bytes([T_SREF]) + encode_varint(i)
                    return pos
            if ref_len < self._blob_len(v):
                return self.ref(target)
        pos = self.pos()
        if type(v) is bytes:
            self.buf += bytes([T_BYTES]) + encode_varint(len(v)) + v
        else:
            width, units = str_code_units(v)
            if width == 1 and all(ord(c) < 0x80 for c in v):
                if len(v) < 128:
                    self.buf += bytes([T_SHORT_ASCII + len(v)]) + units
                else:
                    self.buf += bytes([T_STR_ASCII]) + encode_varint(len(v)) + units
            else:
                tb = {1: T_STR_LATIN1, 2: T_STR_UCS2, 4: T_STR_UCS4}[width]
                self.buf += bytes([tb]) + encode_varint(len(v)) + units
        self.by_value.setdefault((type(v), v), pos)
        return pos

    def _blob_len(self, v) -> int:
        save = (self.buf, self.by_value, self.dedup)
        self.buf, self.by_value, self.dedup = bytearray(), {}, False
        try:
            self._write_blob(v)
            return len(self.buf)
        finally:
            self.buf, self.by_value, self.dedup = save

    def _container(self, v, type_byte: int, items: list, keys: list) -> None:
        pos = self.pos()
        self.by_id[id(v)] = pos
        self._keep.append(v)
        hlen = LIST_HEADER_LEN if type_byte == T_LIST else KEYED_HEADER_LEN
        self.buf += bytes(hlen)
        body = self.pos()
        rec_offs = []
        for item in items:
            rec_offs.append(self.pos() - body)
            if type_byte == T_DICT:
                self.write(item[0])
                self.write(item[1])
            else:
                self.write(item)
        body_len = self.pos() - body
        count = len(items)
        if type_byte == T_LIST:
            width = _narrowest(max(body_len, 1).bit_length())
            for off in rec_offs:
                self.buf += off.to_bytes(width, "little")
            struct.pack_into("<BBQQ", self.buf, pos, type_byte, width, count, body_len)
            return
        nslots = count + count * 3 // 17 + 1 if count >= self.min_slotted else 0
        ibits = body_len.bit_length()
        width = _narrowest(ibits + 4)
        slots = [0] * nslots
        tagbits = 8 * width - ibits
        for key, off in zip(keys, rec_offs):
            if not nslots:
                break
            h = key_hash(key, self.seed)
            tag = h if tagbits >= 64 else h & ((1 << tagbits) - 1)
            i = mulhi64(h, nslots)
            while slots[i]:
                i = (i + 1) % nslots
            slots[i] = ((tag << ibits) | (off + 1)) & ((1 << (8 * width)) - 1)
        for s in slots:
            self.buf += s.to_bytes(width, "little")
        struct.pack_into("<BBQQQ", self.buf, pos, type_byte, width, count, body_len, nslots)

    def finish(self, root_pos: int, image_id: bytes = bytes(range(16))) -> bytes:
        data_len = self.pos() - HEADER_LEN
        values_off = self.pos()
        self.buf += b"".join(struct.pack("<Q", off) for off in self.values)
        table_off = self.pos()
        self.buf += struct.pack("<IIQQQ", SECTION_DATA, SECTION_REQUIRED, HEADER_LEN, data_len, 0)
        nsec = 1
        if self.values:
            self.buf += struct.pack("<IIQQQ", SECTION_VALUES, SECTION_REQUIRED, values_off, 8 * len(self.values), 0)
            nsec = 2
        struct.pack_into("<8sHHIQQ16sQQQII", self.buf, 0, MAGIC, 1, 0, HEADER_LEN, 0, 0,
                         image_id, self.pos(), root_pos, table_off, nsec, 0)
        struct.pack_into("<Q", self.buf, 80, self.seed)
        struct.pack_into("<Q", self.buf, 120, header_check(self.buf))
        return bytes(self.buf)


def build(value, hash_seed: int = 0, **options) -> bytes:
    """An image of `value` made by the Python Writer."""
    w = Writer(hash_seed, **options)
    return w.finish(w.write(value))
