"""A corpus of broken datasets, made by mutating good ones: every variant is read (each
row a record or a bad row with its reason) or refused with one clear error, never a
traceback or a hang: 343 variants of seven files, and broken images one by one."""

import base64
import io
import json
import os
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from seemore.data.check import check
from seemore.data.text import read_text
from seemore.data.user import UserDataset
from seemore.errors import UserError

MUTATIONS_PER_KIND = 20  # truncations and byte flips per source, each


def png(side=12, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression bomb's header) and holds no
    pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def sources(root):
    """(name, main file, its good bytes) for every reader; the images they name are in
    root/images."""
    images = root / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(png(12 + i, (60 * i, 90, 200)))
    rows = [("a red box", "images/0.png"), ("a café, \"quoted\"", "images/1.png"),
            ("two boxes", "images/2.png")]
    b64 = [base64.b64encode(png(12 + i)).decode() for i in range(3)]

    def csv(header, firsts):
        quoted = ['"' + text.replace('"', '""') + '"' for text, _ in rows]
        return header + "".join(f"{a},{b}\n" for a, b in zip(firsts, quoted, strict=True))

    meta = "".join(json.dumps({"file_name": p, "text": t}) + "\n" for t, p in rows)
    llava = [{"image": p, "conversations": [{"from": "human", "value": "<image>\nwhat?"},
                                            {"from": "gpt", "value": t}]} for t, p in rows]
    paths = [p for _, p in rows]
    return [
        ("base64.csv", csv("b64string_images,caption\n", b64)),
        ("paths.csv", csv("image,caption\n", paths)),
        ("metadata.jsonl", meta),
        ("metadata.csv", csv("file_name,text\n", paths)),
        ("llava.jsonl", "".join(json.dumps(r) + "\n" for r in llava)),
        ("llava.json", json.dumps(llava)),
        ("text.txt", "the quick brown fox\njumps over the café\n" * 20),
    ]


def mutations(text: str, rng: random.Random):
    """(name, bytes) of broken versions of a good file."""
    good = text.encode()
    for _ in range(MUTATIONS_PER_KIND):
        cut = rng.randrange(len(good))
        yield f"truncated at {cut}", good[:cut]
    for i in range(MUTATIONS_PER_KIND):
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        yield f"bytes flipped ({i})", bytes(flipped)
    yield "UTF-16", text.encode("utf-16")
    yield "Latin-1", text.encode("latin-1", errors="replace")
    yield "byte order mark", b"\xef\xbb\xbf" + good
    yield "CRLF line ends", text.replace("\n", "\r\n").encode()
    yield "a quote left open", good.replace(b'"', b"", 1)
    yield "empty fields", good.replace(b"a red box", b"").replace(b"images/1.png", b"")
    yield "an extra column", good.replace(b"\n", b",extra\n", 2)
    yield "empty file", b""
    yield "NUL bytes", good.replace(b"box", b"b\x00x")


def read(kind, path):
    """Everything a user's command does with the file before training."""
    if kind == "text.txt":
        read_text(path)
        return
    check(path, context=192, n_visual=16)
    UserDataset(path, 32, on_bad="skip")


def outcome(kind, path) -> str:
    try:
        read(kind, path)
    except UserError as e:
        assert "\n" not in str(e), f"{path}: a multi-line error: {e}"
        return "refused"
    return "read"


def test_every_mutated_file_is_read_or_refused_clearly(tmp_path):
    rng = random.Random(0)
    results = []
    for kind, text in sources(tmp_path):
        for label, data in mutations(text, rng):
            folder = tmp_path / f"{len(results)}"
            folder.mkdir()
            (folder / "images").symlink_to(tmp_path / "images")
            path = folder / kind
            path.write_bytes(data)
            target = folder if kind.startswith("metadata") else path
            try:
                results.append(outcome(kind, target))
            except Exception as e:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{kind}, {label}: {type(e).__name__}: {e}")
    assert len(results) == 343
    assert "refused" in results and "read" in results


@pytest.mark.parametrize("image", ["zero bytes", "1 pixel", "30000 x 30000 header",
                                   "a directory", "a symlink loop", "unreadable", "not an image"])
def test_broken_images_are_bad_rows(tmp_path, image):
    path = tmp_path / "x.png"
    if image == "zero bytes":
        path.write_bytes(b"")
    elif image == "1 pixel":
        path.write_bytes(png(1))
    elif image == "30000 x 30000 header":
        path.write_bytes(png_header(30000, 30000))
    elif image == "a directory":
        path.mkdir()
    elif image == "a symlink loop":
        os.symlink(tmp_path / "y.png", tmp_path / "x.png")
        os.symlink(tmp_path / "x.png", tmp_path / "y.png")
    elif image == "unreadable":
        path.write_bytes(png())
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads it anyway
            pytest.skip("root can read a file without read permission")
    else:
        path.write_bytes(b"GIF89a but then nothing")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png",
                                                          "text": "a box"}) + "\n")
    report = check(tmp_path)
    assert report.rows == 1 and len(report.bad) == 1, report.bad
    with pytest.raises(UserError, match="metadata.jsonl:1: .*stopping before training"):
        UserDataset(tmp_path, 32)


def test_a_decompression_bomb_in_a_base64_csv(tmp_path):
    header = base64.b64encode(png_header(30000, 30000)).decode()
    path = tmp_path / "bomb.csv"
    path.write_text(f"b64string_images,caption\n{header},a bomb\n"
                    f"{base64.b64encode(png()).decode()},a box\n")
    data = UserDataset(path, 32, on_bad="skip")
    assert len(data.records) == 1 and "bomb.csv:2" in str(data.skipped[0])
    np.testing.assert_array_equal(data.images[0].shape, (32, 32, 3))
