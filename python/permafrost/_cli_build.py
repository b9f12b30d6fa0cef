"""``python -m permafrost build``: write an image from a JSON Lines, TSV or
CSV file with ``permafrost.Builder``, streaming (the input is never held in
memory whole).

    python -m permafrost build OUT --from FILE [--format jsonl|tsv|csv]
        [--kind dict|list] [--key-column COL] [--value-columns COL [COL ...]]
        [--types T,T,...] [--key-type T] [--memory BYTES] [--quiet]

The format comes from FILE's name when ``--format`` is not given (``.jsonl``
and ``.ndjson``: jsonl; ``.tsv`` and ``.tab``: tsv; ``.csv``: csv), after a
``.gz`` suffix, which is read through gzip. ``--from -`` reads standard input
(then ``--format`` is required; gzip data is recognised by its magic). Input
is UTF-8 (a leading byte-order mark is skipped).

JSON Lines (one JSON value per line; blank lines are skipped):

- dict root (the default): each line is either a two-item array
  ``[key, value]`` or an object with exactly the two fields ``key`` and
  ``value``: ``{"key": ..., "value": ...}``. Both forms carry any JSON key,
  where an object of one field per entry (``{"k": v}``) could only carry
  string keys. A key must be hashable once decoded: a JSON array used as a key
  becomes a tuple, recursively (``[1, [2, "a"]]`` gives ``(1, (2, "a"))``); an
  object as a key is an error. Values are kept as decoded (objects are dicts,
  arrays are lists).
- list root (``--kind list``): each line is one value.

TSV and CSV: the first row is the header, which names the columns. TSV
splits each line on tabs, with no quoting; CSV follows RFC 4180 (Python's
``csv`` module, excel dialect: quoted fields may hold commas, quotes and
newlines). Every row must have as many fields as the header; empty rows are
skipped. A column is given by its name or by its 0-based index (a name that
is also a header name is taken as a name).

- dict root: the key is the ``--key-column`` (default the first column); the
  value columns are ``--value-columns`` (default every column but the key).
  One value column gives its field itself (so a two-column file gives
  ``{key: value}``), several give a tuple of their fields in order.
- list root: each row gives the ``--value-columns`` (default all columns) the
  same way: one column its field, several a tuple.
- Fields stay strings (no type guessing) unless ``--types`` gives one
  converter per value column (``str``, ``int`` or ``float``, comma separated,
  e.g. ``--types int,str,float``) or ``--key-type`` one for the key.

In both formats a key written twice keeps its first place and takes its last
value, as in a dict (``1``, ``1.0`` and ``True`` are one key).

Exit status: 0 when the image is published; 2 for a bad command line or bad
input (a malformed line names its line number); 1 when the image could not be
written. On any error no image is published at OUT (an image already there is
left as it was) and no temporary file is left behind.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import stat
import sys
import time
import zlib

import permafrost

__all__ = ["add_parser", "run"]

_PROG = "python -m permafrost build"
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".tab": "tsv",
               ".csv": "csv"}
_CONVERTERS = {"str": str, "int": int, "float": float}
_MIB = 1 << 20
_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
INTERVAL = 2.0   # seconds between plain progress lines
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


class InputError(Exception):
    """Bad input or a bad command line: exit status 2."""


# ------------------------------------------------------------------ parser

def add_parser(sub):
    """Add the ``build`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "build", help="build an image from a JSON Lines, TSV or CSV file",
        description=__doc__.split("\n\n", 2)[2].split("\nExit status")[0].replace("``", ""),
        epilog="Exit status: 0 when the image is published; 2 for a bad command line\n"
               "or bad input (a malformed line names its line number); 1 when the image\n"
               "could not be written. On error nothing is published at OUT.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT", help="the image to write (published atomically)")
    p.add_argument("--from", dest="source", metavar="FILE", required=True,
                   help="the input file ('-' for standard input; a .gz suffix is read through gzip)")
    p.add_argument("--format", choices=("jsonl", "tsv", "csv"),
                   help="the input format (default: from FILE's extension)")
    p.add_argument("--kind", choices=("dict", "list"), default="dict",
                   help="the root of the image (default: dict)")
    p.add_argument("--key-column", metavar="COL",
                   help="TSV/CSV, dict root: the key column, by name or 0-based index "
                        "(default: the first)")
    p.add_argument("--value-columns", metavar="COL", nargs="+",
                   help="TSV/CSV: the value columns, by name or 0-based index "
                        "(default: all but the key column)")
    p.add_argument("--types", metavar="T,T,...",
                   help="TSV/CSV: one converter per value column among str, int, float "
                        "(default: all str, no type guessing)")
    p.add_argument("--key-type", metavar="T", choices=tuple(_CONVERTERS),
                   help="TSV/CSV, dict root: the key's converter (str, int or float; default str)")
    p.add_argument("--memory", metavar="BYTES", type=_size, default=None,
                   help="the builder's memory budget, e.g. 268435456, 512M or 2G "
                        "(default: Builder's, 256 MiB; at least 1 MiB)")
    p.add_argument("--ordered", action="store_true",
                   help="give every dict whose keys are all str (or all bytes) an order "
                        "index, for prefix and range queries (docs/ORDERED.md)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress and no summary (errors are still reported)")
    p.set_defaults(run=run)
    return p


def _size(text):
    s = text.strip().upper()
    if s.endswith("IB") and s[-3:-2] in ("K", "M", "G", "T"):
        s = s[:-2]
    elif s.endswith("B"):
        s = s[:-1]
    unit = s[-1:] if s[-1:] in ("K", "M", "G", "T") else ""
    digits = s[:-1] if unit else s
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"not a size in bytes: {text!r} (e.g. 268435456, 512M, 2G)")
    n = int(digits) * _SIZE_SUFFIXES[unit]
    if n >= 1 << 63:
        raise argparse.ArgumentTypeError(f"too large: {text!r}")
    return n


# ------------------------------------------------------------------ input

class _CountingRaw(io.RawIOBase):
    """A raw reader over a binary file that counts the bytes read from it
    (the progress of the input, compressed bytes for a .gz file)."""

    def __init__(self, f):
        self._f = f
        self.count = 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self._f.readinto(b)
        if n:
            self.count += n
        return n


class _Input:
    """The input as text lines, with the bytes read so far and the total
    size where known."""

    def __init__(self, source, fmt_given):
        self.name = "<stdin>" if source == "-" else source
        if source == "-":
            self._file = None
            raw = sys.stdin.buffer
            self.total = None
            name = ""
        else:
            try:
                self._file = open(source, "rb", buffering=0)
            except OSError as e:
                raise InputError(f"cannot read {source}: {e.strerror or e}") from None
            raw = self._file
            st = os.fstat(self._file.fileno())
            if stat.S_ISDIR(st.st_mode):
                self._file.close()
                raise InputError(f"cannot read {source}: it is a folder")
            self.total = (st.st_size or None) if stat.S_ISREG(st.st_mode) else None
            name = os.path.basename(source).lower()
        self._counter = _CountingRaw(raw)
        binary = io.BufferedReader(self._counter, 1 << 20)
        gz = name.endswith(".gz")
        if gz:
            name = name[:-3]
        elif source == "-":
            gz = binary.peek(2)[:2] == b"\x1f\x8b"
        if gz:
            binary = gzip.GzipFile(fileobj=binary, mode="rb")
        fmt = fmt_given or _EXTENSIONS.get(os.path.splitext(name)[1])
        if fmt is None:
            self.close()
            if source == "-":
                raise InputError("--format is required when reading standard input")
            raise InputError(f"cannot tell the format of {source} from its name "
                             f"(.jsonl, .ndjson, .tsv, .tab, .csv, optionally .gz): give --format")
        self.format = fmt
        self.text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict",
                                     newline="" if fmt != "jsonl" else None)

    @property
    def bytes_read(self):
        return self._counter.count

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lines(inp):
    """(line number, line) of the input; read errors become InputError."""
    lineno = 0
    it = iter(inp.text)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except _READ_ERRORS as e:
            raise InputError(f"{inp.name}: {_after(lineno)}{_why(e)}") from None
        lineno += 1
        yield lineno, line


def _after(lineno):
    return f"cannot read after line {lineno}: " if lineno else "cannot read: "


def _why(e):
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 ({e.reason})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# ------------------------------------------------------------------ JSON Lines

_SHAPE = 'a dict root wants [key, value] or {"key": ..., "value": ...} on each line'


def _json_key(x):
    """A decoded JSON key made hashable: arrays become tuples, recursively."""
    if type(x) is list:
        return tuple(_json_key(y) for y in x)
    if type(x) is dict:
        raise InputError("a JSON object cannot be a key (it is not hashable)")
    return x


def _jsonl_records(inp, kind):
    """(line number, key, value) for a dict root, (line number, value) for a list."""
    for lineno, line in _lines(inp):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{inp.name}:{lineno}: invalid JSON at column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise InputError(f"{inp.name}:{lineno}: JSON nested too deeply") from None
        if kind == "list":
            yield lineno, obj
            continue
        if type(obj) is list:
            if len(obj) != 2:
                raise InputError(f"{inp.name}:{lineno}: an array of {len(obj)} items: {_SHAPE}")
            key, value = obj
        elif type(obj) is dict:
            if obj.keys() != {"key", "value"}:
                fields = ", ".join(map(json.dumps, list(obj)[:5])) or "none"
                raise InputError(f"{inp.name}:{lineno}: an object with the fields {fields}: {_SHAPE}")
            key, value = obj["key"], obj["value"]
        else:
            raise InputError(f"{inp.name}:{lineno}: a JSON {_json_type(obj)}: {_SHAPE}")
        try:
            key = _json_key(key)
        except InputError as e:
            raise InputError(f"{inp.name}:{lineno}: {e}") from None
        except RecursionError:
            raise InputError(f"{inp.name}:{lineno}: key nested too deeply") from None
        yield lineno, key, value


def _json_type(x):
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, (int, float)):
        return "number"
    return "string"


# ------------------------------------------------------------------ TSV / CSV

def _column(spec, header):
    """The index of column ``spec`` (a header name, else a 0-based index)."""
    found = [i for i, name in enumerate(header) if name == spec]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"column name {spec!r} appears {len(found)} times in the header: "
                         f"give its index ({', '.join(map(str, found))})")
    if spec.isascii() and spec.isdigit():
        i = int(spec)
        if i < len(header):
            return i
        raise InputError(f"column index {i} is out of range: the header has "
                         f"{len(header)} column(s), 0 to {len(header) - 1}")
    names = ", ".join(map(repr, header[:20])) + (", ..." if len(header) > 20 else "")
    raise InputError(f"no column named {spec!r}; the header has {names}")


class _Table:
    """Rows of a TSV or CSV input, the header read and the columns resolved."""

    def __init__(self, inp, args):
        self.inp = inp
        if inp.format == "tsv":
            reader = csv.reader(inp.text, delimiter="\t", quoting=csv.QUOTE_NONE,
                                strict=True)
        else:
            reader = csv.reader(inp.text, strict=True)
        self._reader = reader
        self._it = iter(reader)
        header = self._next()
        while header is not None and not header:
            header = self._next()
        if header is None:
            raise InputError(f"{inp.name}: empty input: no header row")
        self.header = header
        self.kind = args.kind
        if args.kind == "dict":
            self.key = _column(args.key_column, header) if args.key_column is not None else 0
        else:
            self.key = None
        if args.value_columns:
            self.values = [_column(c, header) for c in args.value_columns]
        else:
            self.values = [i for i in range(len(header)) if i != self.key]
        if not self.values:
            raise InputError(f"{inp.name}: no value column: the header has only the key column")
        self.convs = [str] * len(self.values)
        if args.types is not None:
            names = [t.strip() for t in args.types.split(",")]
            bad = [t for t in names if t not in _CONVERTERS]
            if bad:
                raise InputError(f"--types: unknown type {bad[0]!r} (str, int or float)")
            if len(names) != len(self.values):
                raise InputError(f"--types gives {len(names)} type(s) for "
                                 f"{len(self.values)} value column(s)")
            self.convs = [_CONVERTERS[t] for t in names]
        self.key_conv = _CONVERTERS[args.key_type or "str"]

    def _next(self):
        try:
            return next(self._it)
        except StopIteration:
            return None
        except csv.Error as e:
            raise InputError(f"{self.inp.name}:{self._reader.line_num}: {e}") from None
        except _READ_ERRORS as e:
            raise InputError(f"{self.inp.name}: {_after(self._reader.line_num)}"
                             f"{_why(e)}") from None

    def _convert(self, conv, text, col, lineno):
        if conv is str:
            return text
        try:
            return conv(text)
        except ValueError:
            raise InputError(f"{self.inp.name}:{lineno}: column {self.header[col]!r}: "
                             f"cannot read {text!r} as {conv.__name__}") from None

    def records(self):
        width = len(self.header)
        values, convs, key = self.values, self.convs, self.key
        single = len(values) == 1
        plain = all(c is str for c in convs)
        while True:
            row = self._next()
            if row is None:
                return
            if not row:
                continue
            lineno = self._reader.line_num
            if len(row) != width:
                raise InputError(f"{self.inp.name}:{lineno}: {len(row)} field(s), "
                                 f"the header has {width}")
            if plain:
                fields = [row[i] for i in values]
            else:
                fields = [self._convert(c, row[i], i, lineno) for c, i in zip(convs, values)]
            value = fields[0] if single else tuple(fields)
            if key is None:
                yield lineno, value
            else:
                k = row[key]
                if self.key_conv is not str:
                    k = self._convert(self.key_conv, k, key, lineno)
                yield lineno, k, value


# ------------------------------------------------------------------ progress

class Progress:
    """Progress of a build on ``stream``: a tqdm bar where tqdm is importable
    (bytes of the input as the unit), else a plain line every ``interval``
    seconds. Only on a terminal; ``enabled=False`` shows nothing."""

    def __init__(self, inp, stream, enabled, *, use_tqdm=True, interval=None):
        interval = INTERVAL if interval is None else interval
        self.inp = inp
        self.stream = stream
        self.entries = 0
        self.start = time.monotonic()
        self._bar = None
        self._next = self.start + interval
        self._interval = interval
        self.enabled = enabled
        if not enabled:
            return
        tqdm = None
        if use_tqdm:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=inp.total, unit="B", unit_scale=True, unit_divisor=1024,
                             desc="build", file=stream, dynamic_ncols=True)
            self._interval = 0.1
            self._next = self.start + self._interval

    def tick(self, n=1):
        """Count ``n`` entries; refresh the display now and then."""
        self.entries += n
        if self.enabled and (self.entries & 255) == 0:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self._interval
                self.show(now)

    def show(self, now=None):
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.entries / elapsed
        done = self.inp.bytes_read
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.entries:,} entries, {rate:,.0f} entries/s",
                                      refresh=False)
            self._bar.update(done - self._bar.n)
            return
        line = f"{_PROG}: {self.entries:,} entries, {done / _MIB:,.1f} MiB read"
        total = self.inp.total
        if total:
            line += f" of {total / _MIB:,.1f} MiB ({100 * min(done, total) / total:.0f}%)"
        line += f", {rate:,.0f} entries/s"
        if total and done:
            eta = (total - min(done, total)) * elapsed / done
            line += f", ETA {_clock(eta)}"
        print(line, file=self.stream, flush=True)

    def finish(self):
        if not self.enabled:
            return
        if self._bar is not None:
            self.show()
            self._bar.close()
            self._bar = None
        print(f"{_PROG}: input read ({self.entries:,} entries); writing the index",
              file=self.stream, flush=True)


    def abort(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _clock(seconds):
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------ build

def _error(stream, message):
    print(f"{_PROG}: error: {message}", file=stream, flush=True)


def run(args, stderr=None):
    """Run ``build`` for the parsed ``args``; returns the exit status."""
    stderr = sys.stderr if stderr is None else stderr
    start = time.monotonic()
    try:
        inp = _Input(args.source, args.format)
    except InputError as e:
        _error(stderr, e)
        return 2
    with inp:
        try:
            if inp.format == "jsonl":
                for opt in ("key_column", "value_columns", "types", "key_type"):
                    if getattr(args, opt):
                        raise InputError(f"--{opt.replace('_', '-')} applies to TSV and CSV "
                                         f"input only")
                records = _jsonl_records(inp, args.kind)
            else:
                if args.kind == "list" and (args.key_column is not None or args.key_type):
                    raise InputError("--key-column and --key-type apply to a dict root only")
                records = _Table(inp, args).records()
            if os.path.isdir(args.out):
                raise InputError(f"{args.out} is a folder")
        except InputError as e:
            _error(stderr, e)
            return 2
        try:
            opts = {} if args.memory is None else {"memory": args.memory}
            builder = permafrost.Builder(args.out, args.kind, ordered=args.ordered, **opts)
        except ValueError as e:
            _error(stderr, e)
            return 2
        except MemoryError:
            _error(stderr, f"cannot reserve --memory {args.memory:,} bytes")
            return 1
        except (OSError, permafrost.Error) as e:
            _error(stderr, f"cannot write {args.out}: {_why(e)}")
            return 1
        progress = Progress(inp, stderr, stderr.isatty() and not args.quiet)
        lineno = 0
        try:
            try:
                if args.kind == "list":
                    for lineno, value in records:
                        builder.append(value)
                        progress.tick()
                else:
                    for lineno, key, value in records:
                        builder[key] = value
                        progress.tick()
            except (TypeError, ValueError, RecursionError) as e:
                raise InputError(f"{inp.name}:{lineno}: {e}") from None
            progress.finish()
            builder.close()
        except BaseException as e:
            builder.abort()
            progress.abort()
            if isinstance(e, InputError):
                _error(stderr, f"{e}; no image written")
                return 2
            if isinstance(e, KeyboardInterrupt):
                _error(stderr, "interrupted; no image written")
                return 130
            if isinstance(e, (OSError, permafrost.Error, MemoryError)):
                _error(stderr, f"cannot write {args.out}: {_why(e)}; no image written")
                return 1
            raise
    elapsed = time.monotonic() - start
    if not args.quiet:
        _summary(stderr, args.out, progress.entries, elapsed)
    return 0


def _summary(stream, out, records, elapsed):
    try:
        with permafrost.Image(out) as image:
            size = image.size
            root = image.root
            entries = len(root)
            del root
    except (OSError, permafrost.Error) as e:  # replaced meanwhile: say what we know
        print(f"{_PROG}: wrote {out} ({records:,} records; cannot reopen it: {e})", file=stream)
        return
    rate = records / elapsed if elapsed > 0 else float("inf")
    dups = f" from {records:,} records" if records != entries else ""
    print(f"{_PROG}: wrote {out}: {entries:,} entries{dups}, {size:,} bytes "
          f"({size / _MIB:,.2f} MiB) in {elapsed:.2f} s ({rate:,.0f} entries/s)",
          file=stream, flush=True)
