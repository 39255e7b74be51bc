"""Reading the datasets users bring, row by row, into records (or the reason a row is bad).

Formats, chosen by what the path is:

- a CSV file: the original seemore's columns ``b64string_images`` (base64-encoded image
  bytes) and ``caption``, or an image-path column (``image``, or the one named by
  image_column) with paths relative to the CSV's folder
- a folder with ``metadata.jsonl`` or ``metadata.csv`` (Hugging Face "imagefolder"):
  ``file_name`` plus ``text`` or ``caption``, or ``question`` and ``answer``; or with
  ``train/``, ``validation/`` and ``test/`` folders, each such a folder
- a ``.jsonl`` file (or a ``.json`` list) of LLaVA conversations: ``{"image": "rel/path.png",
  "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``;
  every human turn must be answered by a gpt turn

A ``split`` column (or key), ``train``, ``validation`` (or ``val``) or ``test``, puts a row in
that split; so does the folder it is in. Without one, data/user.py splits by content.

Rows are read lazily, one at a time and of any length (a base64 photo of several MB is one
CSV field), so a check or a streamed dataset never holds the whole file. A row
becomes a Record: where it is (file and line), its image (a path, or for a base64 CSV a
Cell that reads the row again when asked, so that no image is held in memory) and its
turns, (prompt, answer) pairs; a caption is the turn ("describe the image.", caption). A
row that cannot become one is a Bad with the reason.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from seemore.errors import UserError
from seemore.prompt import CAPTION_PROMPT

B64_COLUMN = "b64string_images"
IMAGE_TOKEN = "<image>"  # LLaVA marks the image's place in the first human turn
SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}

# Python's csv module refuses fields over 128 KB, and a base64 photo is megabytes: allow a
# field as long as a C long holds, since a row is read one at a time anyway
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class Cell:
    """A base64 image in a CSV file, by the byte offset of its row."""

    path: Path
    offset: int
    header: tuple[str, ...]
    column: str
    crc: int  # CRC-32 of the decoded bytes: the image's identity, without reading it

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            row = next(csv.DictReader(_Lines(f), fieldnames=self.header))
        return base64.b64decode(row[self.column])


class _Lines:
    """A binary file's lines as text for csv, counting the bytes read so far. A UTF-8 byte
    order mark at the start of the file is dropped; a line that is not UTF-8 is an error
    that names the file and the line."""

    def __init__(self, f, name: str = ""):
        self.f, self.offset, self.name, self.number = f, f.tell(), name, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.f.readline()
        if not line:
            raise StopIteration
        encoding = "utf-8-sig" if self.offset == 0 else "utf-8"
        self.offset += len(line)
        self.number += 1
        try:
            return line.decode(encoding)
        except UnicodeDecodeError:
            raise UserError(f"{self.name}:{self.number}: not UTF-8 text (save the file as "
                            "UTF-8)") from None


@dataclass(frozen=True)
class Record:
    location: str  # "file.csv:17": file and line, for messages
    image: Path | Cell  # a file, or a base64 cell of a CSV
    turns: tuple[tuple[str, str], ...]  # (prompt, answer) pairs, in order
    split: str = ""  # "train", "val" or "test" when the data says; "" splits by content

    def image_source(self) -> Path | bytes:
        """What data.images.load_image reads."""
        return self.image.read() if isinstance(self.image, Cell) else self.image

    def image_key(self) -> str | int:
        """The image's identity: its file's name, or its bytes' CRC-32."""
        return self.image.crc if isinstance(self.image, Cell) else self.image.name


@dataclass(frozen=True)
class Bad:
    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


def read_records(path: str | Path, image_column: str = "") -> Iterator[Record | Bad]:
    """Every row of a user's dataset as a Record, or a Bad saying what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        folders = [path / name for name in SPLIT_NAMES if (path / name).is_dir()]
        if folders and not _metadata(path):
            return (r for folder in folders for r in _read_imagefolder(
                folder, SPLIT_NAMES[folder.name]))
        return _read_imagefolder(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".csv":
        return _read_csv(path, image_column, path.parent)
    if path.suffix.lower() in (".jsonl", ".json"):
        return _read_llava(path)
    raise UserError(f"{path}: not a dataset seemore reads; give a .csv file, a .jsonl or "
                    ".json file of LLaVA conversations, or a folder with metadata.jsonl or "
                    "metadata.csv")


def _split(row: dict, where: str, default: str = "") -> str | Bad:
    """The split a row's ``split`` value names (default when it has none)."""
    value = str(row.get("split") or "").strip()
    if not value:
        return default
    if value.lower() not in SPLIT_NAMES:
        return Bad(where, f"split {value!r} is not train, validation or test")
    return SPLIT_NAMES[value.lower()]


def _turns(row: dict, where: str) -> tuple[tuple[str, str], ...] | Bad:
    """The turns of a caption row (text or caption) or a question row (question, answer)."""
    if "question" in row or "answer" in row:
        question, answer = (row.get("question") or "").strip(), (row.get("answer") or "").strip()
        if not question or not answer:
            return Bad(where, f"empty {'question' if not question else 'answer'}")
        return ((question, answer),)
    key = "caption" if "caption" in row else "text"
    caption = (row.get(key) or "").strip()
    if not caption:
        return Bad(where, f"empty {key}")
    return ((CAPTION_PROMPT, caption),)


def _check_columns(found: list[str], where: str, image_column: str) -> None:
    if not found:
        raise UserError(f"{where}: the file is empty (no header row)")
    has_text = "caption" in found or "text" in found or {"question", "answer"} <= set(found)
    if image_column not in found or not has_text:
        need = f"{image_column!r} and 'caption' (or 'text', or 'question' and 'answer')"
        raise UserError(f"{where}: the columns are {', '.join(map(repr, found))}; "
                        f"seemore needs {need}")


def _read_csv(path: Path, image_column: str, root: Path,
              split: str = "") -> Iterator[Record | Bad]:
    with open(path, "rb") as f:
        lines = _Lines(f, str(path))
        reader = csv.DictReader(lines)
        columns = tuple(reader.fieldnames or ())
        column = image_column or (B64_COLUMN if B64_COLUMN in columns else "image")
        _check_columns(columns, f"{path}", column)
        while True:
            start = lines.offset
            try:
                row = next(reader)
            except StopIteration:
                return
            where = f"{path}:{reader.line_num}"
            turns, row_split = _turns(row, where), _split(row, where, split)
            if isinstance(turns, Bad) or isinstance(row_split, Bad):
                yield turns if isinstance(turns, Bad) else row_split
                continue
            if None in row:
                yield Bad(where, f"{len(columns) + len(row[None])} fields for "
                                 f"{len(columns)} columns (a comma in a field that is not "
                                 "quoted?)")
                continue
            value = (row.get(column) or "").strip()
            if not value:
                yield Bad(where, f"empty {column!r}")
            elif column == B64_COLUMN:
                try:
                    crc = zlib.crc32(base64.b64decode(value, validate=True))
                except (binascii.Error, ValueError) as e:
                    yield Bad(where, f"invalid base64 in {column!r} ({e})")
                else:
                    yield Record(where, Cell(path, start, columns, column, crc), turns,
                                 row_split)
            else:
                yield _with_image(root / value, where, turns, row_split)


def _with_image(image: Path, where: str, turns, split: str = "") -> Record | Bad:
    if not image.is_file():
        return Bad(where, f"image {image} does not exist")
    return Record(where, image, turns, split)


def _metadata(folder: Path) -> Path | None:
    """An image folder's metadata file: metadata.jsonl, else metadata.csv, else None."""
    for name in ("metadata.jsonl", "metadata.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_imagefolder(folder: Path, split: str = "") -> Iterator[Record | Bad]:
    metadata = _metadata(folder)
    if metadata is None:
        raise UserError(f"{folder}: a dataset folder needs metadata.jsonl or metadata.csv "
                        "(file_name, and text/caption or question/answer), or train/, "
                        "validation/ and test/ folders that have one")
    if metadata.suffix == ".csv":
        yield from _read_csv(metadata, "file_name", folder, split)
        return
    for where, row in _json_lines(metadata):
        if isinstance(row, Bad):
            yield row
        elif "file_name" not in row:
            yield Bad(where, "no 'file_name'")
        else:
            turns, row_split = _turns(row, where), _split(row, where, split)
            if isinstance(turns, Bad) or isinstance(row_split, Bad):
                yield turns if isinstance(turns, Bad) else row_split
            else:
                yield _with_image(folder / str(row["file_name"]), where, turns, row_split)


def _json_lines(path: Path) -> Iterator[tuple[str, dict | Bad]]:
    """(location, object) for every non-blank line of a JSONL file."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield where, Bad(where, "not UTF-8 text")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, Bad(where, f"malformed JSON ({e.msg} at column {e.colno})")
                continue
            yield where, row if isinstance(row, dict) else Bad(where, "not a JSON object")


def _read_llava(path: Path) -> Iterator[Record | Bad]:
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text (save the file as UTF-8)") from None
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON list of conversations")
        items = ((f"{path}[{i}]", row if isinstance(row, dict) else Bad(f"{path}[{i}]",
                                                                         "not a JSON object"))
                 for i, row in enumerate(rows))
    else:
        items = _json_lines(path)
    for where, row in items:
        yield row if isinstance(row, Bad) else _conversation(row, where, path.parent)


def _conversation(row: dict, where: str, root: Path) -> Record | Bad:
    if not row.get("image"):
        return Bad(where, "no 'image'")
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        return Bad(where, "no 'conversations' list")
    pairs = []
    for i in range(0, len(turns), 2):
        human, gpt = turns[i], turns[i + 1] if i + 1 < len(turns) else None
        if not isinstance(human, dict) or human.get("from") != "human":
            return Bad(where, f"turn {i + 1} should be from 'human'")
        if not isinstance(gpt, dict) or gpt.get("from") != "gpt":
            return Bad(where, f"turn {i + 2} should be from 'gpt' (the answer to turn {i + 1})")
        question = str(human.get("value", "")).replace(IMAGE_TOKEN, "").strip()
        answer = str(gpt.get("value", "")).strip()
        if not question or not answer:
            return Bad(where, f"turn {i + 1 if not question else i + 2} is empty")
        pairs.append((question, answer))
    split = _split(row, where)
    if isinstance(split, Bad):
        return split
    return _with_image(root / str(row["image"]), where, tuple(pairs), split)
