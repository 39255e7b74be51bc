"""A user's dataset (a CSV file, an image folder or LLaVA conversations; data/records.py)
behind the same interface as the built-in datasets (data/datasets.py).

Opening it reads every row and decodes every image once, at the model's image size, in
DataLoader workers (data.num_workers), so that a bad row stops the run before its first
step (``on_bad="error"``, with the row and the reason) or is left out and counted
(``on_bad="skip"``). A dataset of up to CACHE_ROWS rows keeps the decoded images in memory
(about 12 KB each at 64x64); a larger one keeps only the rows (a file's path, or where a
base64 CSV's row starts) and reads and decodes each image again when it is drawn, in the
training loop's DataLoader workers: it is streamed from disk, never held whole.

A row's split is the one the data names (a ``split`` column, or the train/, validation/ or
test/ folder it is in); otherwise it is fixed by the row's content, not its place: a hash
(CRC-32) of the image's file name or bytes and the row's text puts a tenth of the rows in
test, a tenth in val and the rest in train, the same on every run and whatever the order
of the rows (a place-based rule would put every test row on the same side of a file that
alternates captions and questions). Rows that repeat one image and text therefore share a
split, so a small hand-made dataset may have no test rows at all; evaluation then says why
and is skipped. A train index past the end wraps around.

A row's turns become the example's caption (a caption row), its question (a single
question-answer row), or its conversation (several turns, trained as one sequence).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from seemore.config import ON_BAD
from seemore.data.images import load_image, resize
from seemore.data.labelled import FOLDS, Labelled, example_rng
from seemore.data.records import Bad, Record, read_records
from seemore.errors import UserError
from seemore.prompt import CAPTION_PROMPT, conversation_length

CACHE_ROWS = 20_000


def _fit(row: Record | Bad, context: int, n_visual: int) -> Record | Bad:
    if isinstance(row, Bad) or not context:
        return row
    length = conversation_length(row.turns, n_visual)
    if length <= context:
        return row
    return Bad(row.location, f"{length} tokens with the image; the context "
                             f"(model.decoder.max_seq_len) is {context}")


def _as_is(item):
    return item


class _Decode(Dataset):
    """Each record's image as the model sees it, or the reason it cannot be decoded."""

    def __init__(self, records: list[Record], image_size: int, policy: str):
        self.records, self.image_size, self.policy = records, image_size, policy

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> np.ndarray | str:
        record = self.records[i]
        try:
            image = load_image(record.image_source(), record.location, self.image_size)
        except UserError as e:
            return str(e).removeprefix(f"{record.location}: ")
        return np.asarray(resize(image, self.image_size, self.policy))


def _split(record: Record) -> str:
    """The split the data names, or one from the row's content: fold 0 of ten is test,
    fold 1 val, the rest train."""
    if record.split:
        return record.split
    image = str(record.image_key()).encode()
    fold = zlib.crc32(repr(record.turns).encode(), zlib.crc32(image)) % 10
    return {f: s for s, f in FOLDS.items()}.get(fold, "train")


class UserDataset:
    question_types = ("answer",)
    eval_splits = ("test",)

    def __init__(self, path: str | Path, image_size: int, image_column: str = "",
                 policy: str = "squash", on_bad: str = "error", num_workers: int = 0,
                 cache: bool | None = None, context: int = 0, n_visual: int = 0):
        """cache: keep the decoded images in memory (default: up to CACHE_ROWS rows).
        context, n_visual: a row longer than context tokens, with n_visual image tokens,
        is bad (0: no limit)."""
        if on_bad not in ON_BAD:
            raise UserError(f"on_bad must be error or skip, got {on_bad!r}")
        self.path = Path(path)
        rows = [_fit(r, context, n_visual) for r in read_records(path, image_column)]
        readable = [r for r in rows if isinstance(r, Record)]
        cache = len(readable) <= CACHE_ROWS if cache is None else cache
        decoded = DataLoader(_Decode(readable, image_size, policy), batch_size=None,
                             num_workers=num_workers, collate_fn=_as_is)
        images = iter(decoded)
        self.records, self.skipped = [], []
        self.images: list[np.ndarray] | None = [] if cache else None
        for row in rows:  # in file order, so that the first bad row is the first reported
            if isinstance(row, Record):
                image = next(images)
                if not isinstance(image, str):
                    self.records.append(row)
                    if cache:
                        self.images.append(image)
                    continue
                row = Bad(row.location, image)
            if on_bad == "error":
                raise UserError(f"{row} (stopping before training; `seemore data check "
                                f"{path}` lists every bad row, data.on_bad_sample=skip leaves "
                                "them out)")
            self.skipped.append(row)
        self.decode = _Decode(self.records, image_size, policy)  # when not cached
        if not self.records:
            raise UserError(f"{path}: no usable rows ({len(self.skipped)} bad)")
        names = np.array([_split(r) for r in self.records])
        self.splits = {s: np.flatnonzero(names == s) for s in ("train", "val", "test")}
        self.named_splits = any(r.split for r in self.records)

    def size(self, split: str) -> int:
        return len(self._indices(split))

    def _indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; choose train, val or test")
        return self.splits[split]

    rng = staticmethod(example_rng)

    def why_empty(self, split: str) -> str:
        """Why a split has no rows, and what to do about it."""
        if self.named_splits:
            return (f"{self.path}: no {split} rows (the data names each row's split: give "
                    f"some rows split={split}, or evaluate on other data with `seemore eval "
                    "RUN --data SOURCE`)")
        distinct = len({(r.image_key(), r.turns) for r in self.records})
        return (f"{self.path}: no {split} rows: {len(self.records)} usable rows, "
                f"{distinct} distinct image/text pairs, and rows are split by content (a "
                "tenth test, a tenth val), so a repeated row stays in one split; add distinct "
                "rows, give a 'split' column (train, validation, test), or evaluate on other "
                "data with `seemore eval RUN --data SOURCE`")

    def labelled(self, split: str, index: int) -> Labelled:
        indices = self._indices(split)
        if not len(indices):
            raise UserError(self.why_empty(split))
        row = int(indices[index % len(indices)])
        turns, where = self.records[row].turns, self.records[row].location
        image = self.images[row] if self.images is not None else self.decode[row]
        if isinstance(image, str):  # it decoded once; the file changed since
            raise UserError(f"{self.records[row].location}: {image}")
        if len(turns) == 1 and turns[0][0] == CAPTION_PROMPT:
            return Labelled(image, turns[0][1], [], location=where)
        if len(turns) == 1:
            return Labelled(image, "", [("answer", *turns[0])], location=where)
        return Labelled(image, "", [], conversation=turns, location=where)

    def pair(self, split: str, index: int) -> tuple[np.ndarray, str]:
        example = self.labelled(split, index)
        return example.image, example.caption

    @staticmethod
    def parse_caption(text: str) -> list[str]:
        """A user's caption has no objects to parse: its words stand in for them."""
        return text.split()

    def corpus(self) -> str:
        """Every character of the rows' text."""
        return "".join(q + a for r in self.records for q, a in r.turns)
