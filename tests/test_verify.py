"""permafrost.verify() and open(verify=True): the full check of an image.
Every image made by the hypothesis round trips also passes it
(helpers.Roundtrip); here: what it returns, what it finds, and a close()
from another thread while it runs."""

from __future__ import annotations

import os
import threading

import pytest

import permafrost as pf

TABLE = {f"key{i}": (i, i / 3, f"v{i % 50}", [i] * (i % 3)) for i in range(30_000)}
TABLE["nested"] = {"set": {1, 2.5, "x"}, "fs": frozenset({(1, 2), "y"}), "t": ((1,), ())}


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "t.pf"
    pf.freeze(TABLE, path)
    return path


def test_verify_takes_a_path_an_image_or_a_view(image_file):
    by_path = pf.verify(image_file)
    assert by_path == pf.verify(str(image_file))
    assert by_path["keys"] == len(TABLE) + 3 + 2 + 3  # + the nested dict, set, frozenset
    assert by_path["containers"] == 1 + 1 + 1 + 1 + sum(1 for v in TABLE.values()
                                                        if isinstance(v, tuple))
    assert by_path["checksums"] == 2
    with pf.Image(image_file) as image:
        assert image.verify() == by_path
        assert pf.verify(image) == by_path
        assert pf.verify(image.root["nested"]) == by_path  # the whole image
    root = pf.open(image_file, verify=True)
    assert root["key7"] == (7, 7 / 3, "v7", [7])


def _damaged_copy(src, dst, old, new):
    data = bytearray(src.read_bytes())
    at = data.index(old)
    data[at:at + len(old)] = new
    dst.write_bytes(data)


def test_a_changed_byte_is_found_by_verify_not_by_open(image_file, tmp_path):
    bad = tmp_path / "bad.pf"
    _damaged_copy(image_file, bad, b"v49", b"w49")  # still a valid encoding
    root = pf.open(bad)  # O(1): the header is intact
    assert root["key49"][2] == "w49"  # a silent wrong answer, which only verify sees
    with pytest.raises(pf.CorruptImageError, match="checksum"):
        pf.verify(bad)
    with pytest.raises(pf.CorruptImageError, match="checksum"):
        pf.open(bad, verify=True)
    with pytest.raises(pf.CorruptImageError):
        pf.verify(root)
    assert pf.open(bad, copy=True, verify=False)["key49"][2] == "w49"


def test_verify_of_a_closed_image_raises(image_file):
    image = pf.Image(image_file)
    image.close()
    with pytest.raises(pf.ClosedImageError):
        image.verify()


def test_close_from_another_thread_while_verifying(tmp_path):
    """verify releases the GIL and holds the image: a close() meanwhile
    waits for it, never unmaps under it."""
    path = tmp_path / "big.pf"
    pf.freeze({i: (i, str(i)) for i in range(400_000)}, path)
    for _ in range(5):
        image = pf.Image(path)
        out = {}
        thread = threading.Thread(target=lambda: out.update(image.verify()))
        thread.start()
        image.close()
        thread.join()
        assert out["keys"] == 400_000 and image.closed
        with pytest.raises(pf.ClosedImageError):
            image.root


def test_verify_of_a_buffer_image_and_a_shared_one():
    img = pf.Image.from_buffer(pf.dumps([1, "two", (3.0,)]))
    assert img.verify()["values"] == 5
    if os.name == "posix":
        with pf.share({"a": [1, 2]}) as view:
            assert pf.verify(view)["keys"] == 1


def test_an_sref_may_point_forward_at_a_container():
    """FORMAT R28: an SREF's target need not lie before it. An SREF turned
    to point at a list written later is a valid image (the list is shared):
    verify passes it, and reading gives the list twice."""
    import struct

    import helpers_format as fmt

    x = ["w" * 20, "p" * 300, "w" * 20, "q" * 300, "w" * 20, [7, 8]]
    data = bytearray(pf.dumps(x))
    ivals = fmt.walk(bytes(data))
    srefs = [iv for iv in ivals if iv.type == fmt.T_SREF]
    lists = [iv for iv in ivals if iv.type == fmt.T_LIST]
    assert srefs and len(lists) == 2  # the root and [7, 8]
    inner = max(lists, key=lambda iv: iv.pos)
    [values] = [s for s in fmt.read_sections(bytes(data)) if s["kind"] == fmt.SECTION_VALUES]
    index = fmt.read_varint(bytes(data), srefs[0].pos + 1, len(data))[0]
    struct.pack_into("<Q", data, values["offset"] + 8 * index, inner.pos)
    stab = fmt.read_header(bytes(data))["section_table_off"]
    for k, s in enumerate(fmt.read_sections(bytes(data))):  # checksums, again
        chunk = bytes(data[s["offset"]:s["offset"] + s["length"]])
        struct.pack_into("<Q", data, stab + 32 * k + 24, fmt.checksum(chunk))
    image = pf.Image.from_buffer(bytes(data))
    stats = image.verify()
    assert stats["checksums"] == 2
    root = pf.thaw(image.root)
    assert root[5] == [7, 8] and [7, 8] in root[:5]
    assert sum(1 for item in root if item == [7, 8]) == 2
