"""``python -m permafrost``: tools around images.

    python -m permafrost memory [--children] [--json] PID [PID ...]

reports what the OS charges each process and the permafrost images they map
(resident, shared and private bytes; see ``permafrost.memory_report``).

    python -m permafrost build OUT --from FILE [--format jsonl|tsv|csv] [--kind dict|list]
        [--key-column COL] [--value-columns COL ...] [--types T,...] [--key-type T]
        [--memory BYTES] [--quiet]

writes an image from a JSON Lines, TSV or CSV file with ``permafrost.Builder``
(streaming; the rules are in ``permafrost._cli_build``). JSON Lines for a dict
root: one ``[key, value]`` array or ``{"key": ..., "value": ...}`` object per
line, a JSON array used as a key becoming a tuple.

    python -m permafrost info IMAGE [--verify] [--json]

prints an image's header, section table and root, following a pointer file;
``--verify`` checks the whole image. Exits 1 for a file that is not an image,
a corrupt one, or one that fails the check.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

from ._memory import memory_report


def _memory(args):
    report = memory_report(args.pids, children=args.children)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report)
    return 0 if report.processes else 1


# ------------------------------------------------------------------ info

# docs/FORMAT.md sections 2, 3 and 7.
_HEADER = struct.Struct("<8sHHIQQ16sQQQIIQ32xQ")   # the 128-byte header
_SECTION = struct.Struct("<IIQQQ")                    # one section table entry
_SECTION_KINDS = {1: "DATA", 2: "VALUES"}
_IMAGE_MAGIC = b"\x89PFROST\n"
_POINTER_MAGIC = b"\x89PFPTR1\n"
_POINTER_SIZE = 41


class _InfoError(Exception):
    pass


def _read_header(path, image_id):
    """The header fields and section table of the image file at ``path``,
    which must hold the image ``image_id`` (else None: it was replaced)."""
    with open(path, "rb") as f:
        raw = f.read(_HEADER.size)
        if len(raw) < _HEADER.size:
            return None
        (magic, major, minor, header_len, incompat, compat, iid, size, root_off,
         table_off, count, _reserved, seed) = _HEADER.unpack(raw)[:13]
        if iid != image_id:
            return None
        f.seek(table_off)
        table = f.read(count * _SECTION.size)
    if len(table) != count * _SECTION.size:
        return None
    sections = []
    for i in range(count):
        kind, flags, off, length, check = _SECTION.unpack_from(table, i * _SECTION.size)
        sections.append({
            "kind": kind, "name": _SECTION_KINDS.get(kind, "unknown"),
            "required": bool(flags & 1), "flags": flags, "offset": off, "length": length,
            "checksum": f"{check:016x}" if check else None,
        })
    header = {
        "format_version": f"{major}.{minor}", "header_len": header_len,
        "incompat_flags": incompat, "compat_flags": compat, "image_id": iid.hex(),
        "image_size": size, "hash_seed": seed, "root_offset": root_off,
        "section_table_offset": table_off, "section_count": count,
    }
    return header, sections


def _pointer_target(path):
    """The version file a pointer file at ``path`` names, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(_POINTER_SIZE + 1)
    except OSError:
        return None   # permafrost.Image reports it
    if not head.startswith(_POINTER_MAGIC):
        return None
    return os.fspath(path) + ".v-" + head[8:40].decode("ascii", "replace")


def _not_an_image(path):
    """A message for a readable file that starts with neither magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[:8] in (_IMAGE_MAGIC, _POINTER_MAGIC) or (
            len(head) < 8 and (_IMAGE_MAGIC.startswith(head) or _POINTER_MAGIC.startswith(head))):
        return None
    return "not a permafrost image (it does not start with the image or pointer file magic)"


def _root_summary(root):
    import permafrost
    names = {permafrost.DictView: "dict", permafrost.ListView: "list",
             permafrost.SetView: "set", permafrost.FrozenSetView: "frozenset"}
    kind = names.get(type(root))
    if kind is not None:
        return {"type": kind, "entries": len(root)}
    if type(root) is tuple:
        return {"type": "tuple", "entries": len(root)}
    return {"type": type(root).__name__, "entries": None}


def _gather(path, verify):
    """Everything ``info`` reports, as a dict; raises _InfoError."""
    import permafrost
    for _attempt in range(5):
        pointer = _pointer_target(path)
        try:
            image = permafrost.Image(path)
        except (permafrost.Error, OSError, ValueError) as e:
            raise _InfoError(_not_an_image(path) or _message(e)) from None
        try:
            image_id = image.id
            file_path = os.fspath(path)
            if pointer is not None:
                file_path = os.fspath(path) + ".v-" + image_id.hex()
            try:
                parsed = _read_header(file_path, image_id)
            except OSError:
                parsed = None
            if parsed is None:
                continue   # replaced between the open and the read: again
            header, sections = parsed
            try:
                root = _root_summary(image.root)
            except (permafrost.ClassNotAllowedError, permafrost.ClassNotFoundError,
                    permafrost.PickleNotAllowedError) as e:
                # An object (or pickle) root: info imports nothing, and says
                # what the root would need.
                root = {"type": "object", "entries": None, "note": _message(e)}
            except (permafrost.Error, ValueError) as e:
                raise _InfoError(_message(e)) from None
            values = [s for s in sections if s["kind"] == 2]
            info = {
                "path": os.fspath(path),
                "pointer": None if pointer is None else {
                    "pointer_file": os.fspath(path), "version_file": file_path},
                "header": header,
                "sections": sections,
                "root": root,
                "repeated_strings": values[0]["length"] // 8 if values else 0,
            }
            if verify:
                try:
                    info["verify"] = {"ok": True, "stats": image.verify()}
                except (permafrost.Error, ValueError, OSError) as e:
                    info["verify"] = {"ok": False, "error": _message(e)}
            return info
        finally:
            image.close()
    raise _InfoError("the image kept changing while it was read (being republished?)")


def _message(e):
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename is not None else ""
        return f"{e.strerror}{where}"
    return str(e) or type(e).__name__


def _print_info(info):
    h = info["header"]
    mib = h["image_size"] / (1 << 20)
    print(f"image             {info['path']}")
    if info["pointer"]:
        print(f"pointer file      yes: names {os.path.basename(info['pointer']['version_file'])}")
    print(f"format version    {h['format_version']}")
    print(f"image id          {h['image_id']}")
    print(f"image size        {h['image_size']:,} bytes ({mib:,.2f} MiB)")
    print(f"hash seed         0x{h['hash_seed']:016x}")
    print(f"root offset       {h['root_offset']}")
    print(f"flags             incompat 0x{h['incompat_flags']:x}, compat 0x{h['compat_flags']:x}")
    print(f"sections          {h['section_count']} (table at offset {h['section_table_offset']:,})")
    for s in info["sections"]:
        name = s["name"] if s["name"] != "unknown" else f"unknown({s['kind']})"
        check = f"checksum {s['checksum']}" if s["checksum"] else "no checksum"
        req = ", required" if s["required"] else ""
        print(f"  {name:<8} offset {s['offset']:>12,}  length {s['length']:>14,}  {check}{req}")
    r = info["root"]
    entries = f", {r['entries']:,} entries" if r["entries"] is not None else ""
    note = f" ({r['note']})" if r.get("note") else ""
    print(f"root              {r['type']}{entries}{note}")
    print(f"repeated strings  {info['repeated_strings']:,} (VALUES table entries)")
    v = info.get("verify")
    if v is not None:
        if v["ok"]:
            stats = ", ".join(f"{k} {n:,}" for k, n in v["stats"].items())
            print(f"verify            OK ({stats})")
        else:
            print(f"verify            FAILED: {v['error']}")


def _info(args):
    try:
        info = _gather(args.image, args.verify)
    except _InfoError as e:
        print(f"python -m permafrost info: {args.image}: {e}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_info(info)
    sys.stdout.flush()
    v = info.get("verify")
    if v is not None and not v["ok"]:
        print(f"python -m permafrost info: {args.image}: {v['error']}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    from . import _cli_build

    parser = argparse.ArgumentParser(prog="python -m permafrost",
                                     description="Tools around permafrost images.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    mem = sub.add_parser(
        "memory", help="memory of processes and of the images they map",
        description="Report each process's RSS, PSS and USS and, for the "
                    "permafrost images it maps, the bytes resident, shared and "
                    "private. Exits 1 if none of the processes could be measured.")
    mem.add_argument("pids", metavar="PID", type=int, nargs="+")
    mem.add_argument("--children", action="store_true",
                     help="also report every descendant of the PIDs (pool workers)")
    mem.add_argument("--json", action="store_true", help="print the report as JSON")
    mem.set_defaults(run=_memory)
    _cli_build.add_parser(sub)
    info = sub.add_parser(
        "info", help="header, sections and root of an image",
        description="Print an image's header (format version, image id, size, hash "
                    "seed, root offset), its section table, its root's type and entry "
                    "count and the number of repeated-string table entries. Opening "
                    "checks the header; --verify checks the whole image "
                    "(permafrost.verify). A pointer file is followed to the version it "
                    "names. Exits 1 for a file that is not an image, a corrupt image or "
                    "a failed check.")
    info.add_argument("image", metavar="IMAGE")
    info.add_argument("--verify", action="store_true",
                      help="check the whole image, O(size), and print the counts checked")
    info.add_argument("--json", action="store_true", help="print everything as one JSON object")
    info.set_defaults(run=_info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
