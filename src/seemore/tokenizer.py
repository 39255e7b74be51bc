"""Character-level tokenizer with special tokens, saved as ``tokenizer.json``."""

from __future__ import annotations

import json
from pathlib import Path

from seemore.errors import UserError

PAD, BOS, EOS, IMAGE, UNK = "<pad>", "<bos>", "<eos>", "<image>", "<unk>"
SPECIALS = (PAD, BOS, EOS, IMAGE, UNK)
BOI, EOI = "<boi>", "<eoi>"


class CharTokenizer:
    """One id per character; ids 0..4 are the special tokens, in the order of SPECIALS.

    The character set is built from training text in sorted order, so the same text always
    gives the same tokenizer. Encoding text with a character outside the set raises a
    UserError naming the characters (strict=True), or maps them to <unk> (strict=False).

    A model that draws has ``codes`` more tokens after the characters: <boi> and <eoi>,
    which open and close an image, then one token per entry of the VQ-VAE's codebook.
    """

    kind = "char"

    def __init__(self, chars: list[str], codes: int = 0):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise UserError("tokenizer chars must be distinct single characters")
        self.chars = list(chars)
        self.codes = codes
        self.vocab = list(SPECIALS) + self.chars
        if codes:
            self.vocab += [BOI, EOI] + [f"<code{i}>" for i in range(codes)]
        self._index = {c: i for i, c in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.unk_id = range(len(SPECIALS))
        self.boi_id = len(SPECIALS) + len(self.chars)
        self.eoi_id = self.boi_id + 1
        self.code_ids = range(self.eoi_id + 1, self.eoi_id + 1 + codes)

    @classmethod
    def from_text(cls, text: str, codes: int = 0) -> CharTokenizer:
        return cls(sorted(set(text)), codes)

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.vocab == other.vocab

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self._index or c in SPECIALS})

    def encode(self, text: str, strict: bool = True, what: str = "text") -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown and strict:
            raise UserError(f"{what} {text!r} has characters the tokenizer does not know: "
                            f"{''.join(unknown)!r} (it knows {''.join(self.chars)!r})")
        return [self._index.get(c, self.unk_id) for c in text]

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; special and image tokens other than <unk> are dropped."""
        out = []
        for i in ids:
            if i == self.unk_id:
                out.append(UNK)
            elif len(SPECIALS) <= i < self.boi_id:
                out.append(self.vocab[i])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        data = {"kind": self.kind, "specials": list(SPECIALS), "chars": self.chars,
                "codes": self.codes}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != cls.kind or data.get("specials") != list(SPECIALS):
            raise UserError(f"{path}: not a seemore character tokenizer")
        return cls(data["chars"], data.get("codes", 0))
