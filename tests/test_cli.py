"""``python -m permafrost build`` and ``info``: images built from JSON Lines,
TSV and CSV files equal what the documented rules give in Python; errors
publish nothing and leave no temporary file; ``info`` reports the header,
the sections and the root, and refuses what is not a sound image."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import struct
import subprocess
import sys

import pytest

import permafrost as pf
from permafrost import _cli_build
from permafrost.__main__ import main


def cli(*args, input=None):
    """Run ``python -m permafrost ARGS`` in a new interpreter."""
    return subprocess.run([sys.executable, "-m", "permafrost", *map(str, args)],
                          input=input, capture_output=True, timeout=60)


def leftovers(folder, out):
    """Files of an abandoned build of ``out`` left in ``folder``."""
    return [n for n in os.listdir(folder) if n.startswith(out.name + ".tmp")]


def items_repr(mapping):
    """The items in order, with the type of each key and value (1, 1.0 and
    True are equal but not the same key object)."""
    return repr([(type(k).__name__, k, v) for k, v in mapping.items()])


# ------------------------------------------------------------------ oracles

def json_key(x):
    return tuple(json_key(y) for y in x) if isinstance(x, list) else x


def jsonl_dict(path):
    """The documented rules of a dict root, in plain Python."""
    result = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            key, value = obj if isinstance(obj, list) else (obj["key"], obj["value"])
            result[json_key(key)] = value
    return result


def table_rows(path, fmt):
    with open(path, newline="", encoding="utf-8") as f:
        if fmt == "tsv":
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        else:
            rows = [r for r in csv.reader(f) if r]
    return rows[0], rows[1:]


# ------------------------------------------------------------------ data

KEY_STRINGS = ["a", "é", "日本語", "emoji 🧊", "tab\there", 'quote"s', "", "a" * 200,
               "\u2028sep", "x" * 20]


def random_key(rng, depth=0):
    r = rng.random()
    if r < 0.35:
        return rng.choice(KEY_STRINGS) + str(rng.randrange(300))
    if r < 0.5:
        return rng.randrange(-50, 400)
    if r < 0.55:
        return rng.choice([1.0, 2.5, -0.0, 1e300, True, False, None, 2 ** 70])
    if r < 0.85 or depth > 2:
        return rng.choice(KEY_STRINGS)
    return [random_key(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.5:
        return rng.choice([None, True, False, 0, -7, 2 ** 80, 0.1, 1e-9, "v",
                           rng.choice(KEY_STRINGS), "long " * 30])
    if r < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(KEY_STRINGS) + str(i): random_value(rng, depth + 1)
            for i in range(rng.randrange(4))}


def write_jsonl_pairs(path, n=3000, seed=7):
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        key, value = random_key(rng), random_value(rng)
        if rng.random() < 0.5:
            line = json.dumps([key, value], ensure_ascii=rng.random() < 0.5)
        else:
            line = json.dumps({"value": value, "key": key}, ensure_ascii=False)
        lines.append(line)
        if i % 97 == 0:
            lines.append("   ")           # blank lines are skipped
    text = "\r\n".join(lines[: n // 2]) + "\n" + "\n".join(lines[n // 2:]) + "\n"
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------ build: JSON Lines

def test_jsonl_dict_equals_the_documented_rules(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.pf"
    write_jsonl_pairs(src)
    assert main(["build", str(out), "--from", str(src), "--memory", "1M"]) == 0
    expected = jsonl_dict(src)
    assert len(expected) < 3000              # duplicates were met
    assert any(isinstance(k, tuple) for k in expected)
    got = pf.thaw(pf.open(out))
    assert items_repr(got) == items_repr(expected)
    pf.verify(out)
    err = capsys.readouterr().err
    assert f"{len(expected):,} entries from 3,0" in err and str(out) in err


def test_jsonl_duplicates_keep_the_first_place_and_the_last_value(tmp_path):
    src, out = tmp_path / "d.ndjson", tmp_path / "out.pf"
    src.write_text('["b", 1]\n["a", 2]\n{"key": "b", "value": 3}\n[1, "int"]\n'
                   '[true, "bool"]\n[1.0, "float"]\n[[1, [2, "é"]], []]\n'
                   '[[1, [2, "é"]], {"n": [null]}]\n', encoding="utf-8")
    assert main(["build", str(out), "--from", str(src), "-q"]) == 0
    root = pf.open(out)
    assert list(root.items()) == [("b", 3), ("a", 2), (1, "float"),
                                  ((1, (2, "é")), {"n": [None]})]
    assert type(next(k for k in root if k == 1)) is int
    assert pf.thaw(root) == jsonl_dict(src)


def test_jsonl_list_root(tmp_path):
    src, out = tmp_path / "l.jsonl", tmp_path / "out.pf"
    values = [random_value(random.Random(i)) for i in range(500)]
    src.write_text("\n\n".join(json.dumps(v) for v in values) + "\n", encoding="utf-8")
    assert main(["build", str(out), "--from", str(src), "--kind", "list", "-q"]) == 0
    assert pf.thaw(pf.open(out)) == values


def test_gzip_input_and_stdin(tmp_path):
    src, out = tmp_path / "in.jsonl.gz", tmp_path / "out.pf"
    plain = tmp_path / "plain.jsonl"
    write_jsonl_pairs(plain, n=300)
    data = gzip.compress(plain.read_bytes())
    src.write_bytes(data)
    expected = items_repr(jsonl_dict(plain))
    proc = cli("build", out, "--from", src)
    assert proc.returncode == 0, proc.stderr
    assert items_repr(pf.thaw(pf.open(out))) == expected
    assert b"entries" in proc.stderr and b"MiB" in proc.stderr   # summary, no terminal
    out2 = tmp_path / "out2.pf"
    proc = cli("build", out2, "--from", "-", "--format", "jsonl", "--quiet", input=data)
    assert proc.returncode == 0 and proc.stderr == b""
    assert items_repr(pf.thaw(pf.open(out2))) == expected
    proc = cli("build", out2, "--from", "-", input=data)
    assert proc.returncode == 2 and b"--format is required" in proc.stderr


# ------------------------------------------------------------------ build: TSV / CSV

def write_table(path, fmt, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        if fmt == "tsv":
            f.write("".join("\t".join(r) + "\n" for r in rows))
        else:
            csv.writer(f).writerows(rows)


def table_data(ncols, n=800, seed=3):
    rng = random.Random(seed)
    header = ["id", "name", "score", "note"][:ncols]
    rows = [header]
    for i in range(n):
        rows.append([str(rng.randrange(600)), rng.choice(KEY_STRINGS).replace("\t", " ")
                     + str(i % 50), str(rng.randrange(-9, 99)), f"{rng.random():.3f}"][:ncols])
    return rows


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_two_columns_give_str_values(tmp_path, fmt):
    src, out = tmp_path / f"in.{fmt}", tmp_path / "out.pf"
    write_table(src, fmt, table_data(2))
    assert main(["build", str(out), "--from", str(src), "-q"]) == 0
    header, rows = table_rows(src, fmt)
    expected = {}
    for r in rows:
        expected[r[0]] = r[1]
    assert header == ["id", "name"] and len(expected) < len(rows)
    assert items_repr(pf.thaw(pf.open(out))) == items_repr(expected)


def test_ordered_builds_an_order_index(tmp_path):
    src, out, plain = tmp_path / "in.tsv", tmp_path / "out.pf", tmp_path / "plain.pf"
    write_table(src, "tsv", table_data(2))
    assert main(["build", str(out), "--from", str(src), "--ordered", "-q",
                 "--memory", "1M"]) == 0
    assert main(["build", str(plain), "--from", str(src), "-q"]) == 0
    view = pf.open(out)
    assert list(view.sorted_keys()) == sorted(pf.open(plain))
    assert list(view.items(prefix="1")) == sorted((k, v) for k, v in pf.open(plain).items()
                                                  if k.startswith("1"))
    with pytest.raises(pf.NoOrderedIndexError, match="Builder"):
        pf.open(plain).sorted_keys()


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_several_columns_give_tuples(tmp_path, fmt):
    src, out = tmp_path / f"in.{fmt}", tmp_path / "out.pf"
    write_table(src, fmt, table_data(4))
    header, rows = table_rows(src, fmt)
    # Default: key = first column, value = the other columns, as strings.
    assert main(["build", str(out), "--from", str(src), "-q"]) == 0
    expected = {}
    for r in rows:
        expected[r[0]] = (r[1], r[2], r[3])
    assert items_repr(pf.thaw(pf.open(out))) == items_repr(expected)
    # Key by name, value columns by name and index, converters.
    assert main(["build", str(out), "--from", str(src), "-q", "--key-column", "name",
                 "--value-columns", "3", "score", "id", "--types", "float,int,str"]) == 0
    expected = {}
    for r in rows:
        expected[r[1]] = (float(r[3]), int(r[2]), r[0])
    assert items_repr(pf.thaw(pf.open(out))) == items_repr(expected)
    # One value column: its field itself; an int key.
    assert main(["build", str(out), "--from", str(src), "-q", "--key-type", "int",
                 "--value-columns", "note", "--types", "float"]) == 0
    expected = {}
    for r in rows:
        expected[int(r[0])] = float(r[3])
    assert items_repr(pf.thaw(pf.open(out))) == items_repr(expected)


def test_csv_quoting_unicode_and_list_root(tmp_path):
    src, out = tmp_path / "q.csv", tmp_path / "out.pf"
    rows = [["k", "v", "w"], ["a,b", 'say "hi"', "line1\nline2"], ["日本", "🧊", ""],
            [], ["a,b", "again", "x"]]
    write_table(src, "csv", rows)
    src.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())    # a BOM is skipped
    assert main(["build", str(out), "--from", str(src), "-q"]) == 0
    assert list(pf.open(out).items()) == [("a,b", ("again", "x")), ("日本", ("🧊", ""))]
    assert main(["build", str(out), "--from", str(src), "-q", "--kind", "list"]) == 0
    assert pf.thaw(pf.open(out)) == [tuple(r) for r in rows[1:] if r]
    assert main(["build", str(out), "--from", str(src), "-q", "--kind", "list",
                 "--value-columns", "w"]) == 0
    assert pf.thaw(pf.open(out)) == ["line1\nline2", "", "x"]


def test_tsv_has_no_quoting(tmp_path):
    src, out = tmp_path / "in.tab", tmp_path / "out.pf"
    src.write_text('k\tv\n"a"\t"b,c"\n', encoding="utf-8")
    assert main(["build", str(out), "--from", str(src), "-q"]) == 0
    assert dict(pf.open(out)) == {'"a"': '"b,c"'}


# ------------------------------------------------------------------ build: errors

@pytest.mark.parametrize("bad_line, message", [
    ('["b", 2', "in.jsonl:3: invalid JSON"),
    ('["b", 2, 3]', "in.jsonl:3: an array of 3 items"),
    ('{"key": "b"}', "in.jsonl:3: an object with the fields"),
    ('"just a string"', "in.jsonl:3: a JSON string"),
    ('[{"k": 1}, 2]', "in.jsonl:3: a JSON object cannot be a key"),
])
def test_a_malformed_line_publishes_nothing(tmp_path, capsys, bad_line, message):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.pf"
    src.write_text('["a", 1]\n\n' + bad_line + '\n["c", 3]\n', encoding="utf-8")
    assert main(["build", str(out), "--from", str(src)]) == 2
    err = capsys.readouterr().err
    assert message in err and "no image written" in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path, out) == []


def test_a_malformed_line_leaves_the_old_image(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.pf"
    pf.freeze({"old": True}, out)
    src.write_text('["a", 1]\n' * 5000 + "nope\n", encoding="utf-8")
    proc = cli("build", out, "--from", src)
    assert proc.returncode == 2
    assert b"in.jsonl:5001: invalid JSON" in proc.stderr and b"Traceback" not in proc.stderr
    assert pf.open(out) == {"old": True} and leftovers(tmp_path, out) == []


@pytest.mark.parametrize("content, args, message", [
    (None, [], "cannot read"),
    ("id,name\n1,a\n", ["--value-columns", "nmae"], "no column named 'nmae'"),
    ("id,name\n1,a\n", ["--key-column", "7"], "column index 7 is out of range"),
    ("id,id\n1,a\n", ["--key-column", "id"], "appears 2 times"),
    ("id,name\n1,a\n", ["--types", "int,int"], "--types gives 2 type(s) for 1"),
    ("id,name\n1,a\n", ["--types", "decimal"], "unknown type 'decimal'"),
    ("id,name\n1,a\n2,b,c\n", [], "in.csv:3: 3 field(s), the header has 2"),
    ("id,name\n1,a\n2,b\n", ["--types", "int"], "in.csv:2: column 'name': cannot read 'a' as int"),
    ("", [], "no header row"),
])
def test_bad_input_or_columns(tmp_path, capsys, content, args, message):
    src, out = tmp_path / "in.csv", tmp_path / "out.pf"
    if content is not None:
        src.write_text(content, encoding="utf-8")
    assert main(["build", str(out), "--from", str(src), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path, out) == []


def test_unreadable_input(tmp_path, capsys):
    out = tmp_path / "out.pf"
    cut = tmp_path / "cut.jsonl.gz"
    data = gzip.compress("".join(f'["k{i}", {i}]\n' for i in range(20000)).encode())
    cut.write_bytes(data[: len(data) // 2])
    assert main(["build", str(out), "--from", str(cut)]) == 2
    assert "cut.jsonl.gz: cannot read after line" in capsys.readouterr().err
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'["caf\xe9", 1]\n')
    assert main(["build", str(out), "--from", str(latin)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path, out) == []


def test_bad_command_lines(tmp_path, capsys):
    src, out = tmp_path / "in.txt", tmp_path / "out.pf"
    src.write_text("x\n")
    assert main(["build", str(out), "--from", str(src)]) == 2
    assert "give --format" in capsys.readouterr().err
    assert main(["build", str(out), "--from", str(src), "--format", "jsonl",
                 "--key-column", "a"]) == 2
    assert "TSV and CSV input only" in capsys.readouterr().err
    assert main(["build", str(tmp_path), "--from", str(src), "--format", "jsonl"]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["build", str(out), "--from", str(src), "--memory", "lots"])
    assert e.value.code == 2
    assert main(["build", str(out), "--from", str(src), "--format", "jsonl",
                 "--memory", "1000"]) == 2
    assert "1 MiB" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path, out) == []


# ------------------------------------------------------------------ build: progress

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_progress_lines_on_a_terminal(tmp_path, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.pf"
    src.write_text("".join(f'["k{i}", {i}]\n' for i in range(3000)), encoding="utf-8")
    monkeypatch.setitem(sys.modules, "tqdm", None)        # no tqdm: plain lines
    monkeypatch.setattr(_cli_build, "INTERVAL", 0.0)
    args = type("Args", (), dict(source=str(src), out=str(out), format=None, kind="dict",
                                 key_column=None, value_columns=None, types=None, ordered=False,
                                 key_type=None, memory=None, quiet=False))()
    tty = _Tty()
    assert _cli_build.run(args, stderr=tty) == 0
    lines = tty.getvalue().splitlines()
    assert any("entries," in ln and "MiB read of" in ln and "ETA" in ln for ln in lines)
    assert "wrote" in lines[-1] and "3,000 entries" in lines[-1]
    args.quiet = True
    tty = _Tty()
    assert _cli_build.run(args, stderr=tty) == 0 and tty.getvalue() == ""


def test_pyproject_declares_the_progress_extra():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
        assert 'progress = ["tqdm"]' in f.read()


# ------------------------------------------------------------------ info

def header_of(path):
    with open(path, "rb") as f:
        raw = f.read(128)
    return struct.unpack_from("<8sHHIQQ16sQQQIIQ", raw)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.pf"
    pf.freeze({"k%d" % i: ["shared string value"] * 2 for i in range(100)}, path)
    return path


def test_info_reports_header_sections_and_root(image, capsys):
    assert main(["info", str(image)]) == 0
    text = capsys.readouterr().out
    fields = header_of(image)
    assert pf.Image(image).id.hex() in text
    assert f"{fields[7]:,} bytes" in text and f"0x{fields[12]:016x}" in text
    assert "format version    1.0" in text and "DATA" in text
    assert "root              dict, 100 entries" in text


def test_info_verify_and_json(image, capsys):
    assert main(["info", str(image), "--verify"]) == 0
    assert "OK" in capsys.readouterr().out
    proc = cli("info", image, "--verify", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    fields = header_of(image)
    with pf.Image(image) as img:
        assert info["header"]["image_id"] == img.id.hex()
        assert info["header"]["image_size"] == img.size == os.path.getsize(image)
    assert info["header"]["root_offset"] == fields[8]
    assert info["header"]["hash_seed"] == fields[12]
    assert info["header"]["section_count"] == len(info["sections"]) == fields[10]
    assert [s["name"] for s in info["sections"]][0] == "DATA"
    values = [s for s in info["sections"] if s["name"] == "VALUES"]
    assert info["repeated_strings"] == (values[0]["length"] // 8 if values else 0)
    assert info["root"] == {"type": "dict", "entries": 100}
    assert info["pointer"] is None
    assert info["verify"]["ok"] and info["verify"]["stats"] == pf.verify(image)


def test_info_follows_a_pointer_file(tmp_path, capsys):
    path = tmp_path / "p.pf"
    pf._binding.freeze(["a", "b"], os.fspath(path), 2)     # versioned publish
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    version = str(path) + ".v-" + info["header"]["image_id"]
    assert info["pointer"] == {"pointer_file": str(path), "version_file": version}
    assert os.path.exists(version) and info["root"] == {"type": "list", "entries": 2}
    assert main(["info", str(path)]) == 0
    assert "pointer file      yes: names " + os.path.basename(version) in capsys.readouterr().out


def test_info_refuses_a_truncated_image(image, tmp_path):
    cut = tmp_path / "cut.pf"
    cut.write_bytes(image.read_bytes()[:-10])
    proc = cli("info", cut)
    assert proc.returncode == 1 and proc.stdout == b""
    err = proc.stderr.decode()
    assert "corrupt image" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_info_refuses_a_file_that_is_not_an_image(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("hello " * 100)
    assert main(["info", str(other)]) == 1
    assert "not a permafrost image" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.pf")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_info_verify_finds_a_damaged_byte(image, tmp_path, capsys):
    bad = tmp_path / "bad.pf"
    data = bytearray(image.read_bytes())
    data[200] ^= 0x01                                     # inside DATA
    bad.write_bytes(bytes(data))
    assert main(["info", str(bad)]) == 0                  # the header is sound
    capsys.readouterr()
    assert main(["info", str(bad), "--verify"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "checksum" in captured.err
