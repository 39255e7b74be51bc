"""The text tokenizers, saved as ``tokenizer.json``: learned from the training text, one id
per character (CharTokenizer, as in the original seemore) or byte-level BPE (BPETokenizer, as
in GPT-2, with the ``tokenizers`` library); or a pretrained language model's own
(PretrainedTokenizer), whose ids its embeddings were trained on."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from seemore.errors import UserError

PAD, BOS, EOS, IMAGE, UNK = "<pad>", "<bos>", "<eos>", "<image>", "<unk>"
SPECIALS = (PAD, BOS, EOS, IMAGE, UNK)
BOI, EOI = "<boi>", "<eoi>"


class Tokenizer(ABC):
    """What the model and the data ask of a tokenizer: the ids of <pad>, <bos>, <eos>,
    <image> (the slots of the visual tokens) and <unk>; text to ids and back; how many ids
    there are (the decoder's vocabulary); and saving as tokenizer.json. A model that draws
    has image codes (TrainedTokenizer only): codes of them, at code_ids, opened by <boi>
    and closed by <eoi>; the defaults say there are none."""

    kind = ""
    codes = 0
    code_ids = range(0)
    boi_id = eoi_id = -1
    pad_id: int
    bos_id: int
    eos_id: int
    image_id: int
    unk_id: int

    @abstractmethod
    def __len__(self) -> int:
        """How many ids there are."""

    def unknown_chars(self, text: str) -> list[str]:
        """The characters of text that encode() cannot write."""
        return []

    @abstractmethod
    def encode(self, text: str, strict: bool = True, what: str = "text") -> list[int]:
        """The text token ids of text; what names it in an error."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of the ids; special and image tokens other than <unk> are dropped."""

    @abstractmethod
    def fields(self) -> dict:
        """What tokenizer.json holds besides the kind."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.fields() == other.fields()

    def save(self, path: str | Path) -> None:
        data = {"kind": self.kind, **self.fields()}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")


class TrainedTokenizer(Tokenizer):
    """The id layout of a tokenizer learned from the training text: ids 0..4 are the special
    tokens, in the order of SPECIALS, then the text tokens, then, in a model that draws,
    ``codes`` more tokens: <boi> and <eoi>, which open and close an image, and one per
    entry of the VQ-VAE's codebook. Text that spells a special token ("<pad>") is text,
    never the special id."""

    def __init__(self, text_tokens: list[str], codes: int = 0):
        self.codes = codes
        self.vocab = list(SPECIALS) + list(text_tokens)
        if codes:
            self.vocab += [BOI, EOI] + [f"<code{i}>" for i in range(codes)]
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.unk_id = range(len(SPECIALS))
        self.boi_id = len(SPECIALS) + len(text_tokens)
        self.eoi_id = self.boi_id + 1
        self.code_ids = range(self.eoi_id + 1, self.eoi_id + 1 + codes)

    def __len__(self) -> int:
        return len(self.vocab)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.vocab == other.vocab

    @abstractmethod
    def decode_text(self, ids: list[int]) -> str:
        """Text of ids that are all text tokens."""

    def decode(self, ids: list[int]) -> str:
        out, run = [], []
        for i in ids:
            if len(SPECIALS) <= i < self.boi_id:
                run.append(i)
            elif i == self.unk_id:
                out += [self.decode_text(run), UNK]
                run = []
        return "".join(out) + self.decode_text(run)

    def save(self, path: str | Path) -> None:
        data = {"kind": self.kind, "specials": list(SPECIALS), **self.fields(),
                "codes": self.codes}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")


class CharTokenizer(TrainedTokenizer):
    """One id per character. The character set is built from training text in sorted
    order, so the same text always gives the same tokenizer. Encoding text with a character
    outside the set raises a UserError naming the characters (strict=True), or maps them to
    <unk> (strict=False)."""

    kind = "char"

    def __init__(self, chars: list[str], codes: int = 0):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise UserError("tokenizer chars must be distinct single characters")
        super().__init__(chars, codes)
        self.chars = list(chars)
        self._index = {c: i for i, c in enumerate(self.vocab[: self.boi_id])}

    @classmethod
    def from_text(cls, text: str, codes: int = 0) -> CharTokenizer:
        return cls(sorted(set(text)), codes)

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self._index or c in SPECIALS})

    def encode(self, text: str, strict: bool = True, what: str = "text") -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown and strict:
            raise UserError(f"{what} {text!r} has characters the tokenizer does not know: "
                            f"{''.join(unknown)!r} (it knows {''.join(self.chars)!r})")
        return [self._index.get(c, self.unk_id) for c in text]

    def decode_text(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def fields(self) -> dict:
        return {"chars": self.chars}


KNOWN_TEXTS = 100_000  # BPETokenizer's memory of encoded texts (a few MB at most)


class BPETokenizer(TrainedTokenizer):
    """Byte-level BPE: text is UTF-8 bytes, each shown as a printable character, and the
    most frequent pairs of neighbours within a word are merged into one token, up to
    vocab_size text tokens. Any text encodes (there is a token for every byte), and a word
    the training text repeats is one token: "a large red circle" is 4 tokens, not 18
    characters, which makes every sequence shorter and every step cheaper.

    The specials are ours, not the ``tokenizers`` library's, so that text can never spell
    one; text token j of the library's model is our id 5 + j."""

    kind = "bpe"

    def __init__(self, model: HFTokenizer, codes: int = 0):
        self.model = model
        # the ids of texts met before: training data repeats its questions, answers and
        # separators, and a call into the library cost a tenth of a shapes-world example
        self.known: dict[str, tuple[int, ...]] = {}
        vocab = sorted(model.get_vocab().items(), key=lambda item: item[1])
        super().__init__([token for token, _ in vocab], codes)

    @classmethod
    def from_text(cls, text: str, vocab_size: int = 1024, codes: int = 0) -> BPETokenizer:
        """Learned from text's lines; vocab_size counts the 256 byte tokens and the merges
        (fewer merges when the text runs out of repeated pairs)."""
        model = HFTokenizer(models.BPE())
        model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        model.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        model.train_from_iterator(sorted(set(text.splitlines())), trainer)
        return cls(model, codes)

    def encode(self, text: str, strict: bool = True, what: str = "text") -> list[int]:
        ids = self.known.get(text)
        if ids is None:
            if len(self.known) >= KNOWN_TEXTS:
                self.known.clear()
            ids = self.known[text] = tuple(len(SPECIALS) + i
                                           for i in self.model.encode(text).ids)
        return list(ids)

    def decode_text(self, ids: list[int]) -> str:
        return self.model.decode([i - len(SPECIALS) for i in ids]) if ids else ""

    def fields(self) -> dict:
        return {"bpe": json.loads(self.model.to_str())}


class PretrainedTokenizer(Tokenizer):
    """A pretrained language model's own tokenizer (its tokenizer.json), so that the text
    ids are the ones its embeddings were trained on. <bos>, <eos> and <pad> are the
    checkpoint's; <image> is one id added after its vocabulary of vocab_size ids (the rows
    of its embedding), which no text encodes to. Text is encoded without the template the
    checkpoint may add (a <bos> of its own), as the prompt format places <bos> itself."""

    kind = "pretrained"

    def __init__(self, model: HFTokenizer, vocab_size: int, bos_id: int, eos_id: int,
                 pad_id: int):
        self.model, self.vocab_size = model, vocab_size
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.image_id, self.unk_id = vocab_size, -1

    def __len__(self) -> int:
        return self.vocab_size + 1

    def encode(self, text: str, strict: bool = True, what: str = "text") -> list[int]:
        return self.model.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.model.decode([i for i in ids if i < self.vocab_size],
                                 skip_special_tokens=True)

    def fields(self) -> dict:
        return {"vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "pad_id": self.pad_id, "tokenizer": json.loads(self.model.to_str())}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer saved by Tokenizer.save, of any kind."""
    try:
        data = json.loads(Path(path).read_text())
        kind = data.get("kind")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: unreadable tokenizer.json ({e})") from None
    if kind == "pretrained":
        return _load_pretrained(path, data)
    if kind not in ("char", "bpe") or data.get("specials") != list(SPECIALS):
        raise UserError(f"{path}: not a seemore tokenizer (kind {kind!r})")
    try:
        if kind == "char":
            return CharTokenizer(data["chars"], data.get("codes", 0))
        model = HFTokenizer.from_str(json.dumps(data["bpe"]))
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable {kind} tokenizer ({e!r} missing or wrong)") from None
    except Exception as e:  # the tokenizers library raises plain Exception for a bad model
        raise UserError(f"{path}: unreadable BPE model ({e})") from None
    return BPETokenizer(model, data.get("codes", 0))


def _load_pretrained(path: str | Path, data: dict) -> PretrainedTokenizer:
    try:
        model = HFTokenizer.from_str(json.dumps(data["tokenizer"]))
        ids = [int(data[key]) for key in ("vocab_size", "bos_id", "eos_id", "pad_id")]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: unreadable pretrained tokenizer ({e!r} missing or "
                        "wrong)") from None
    except Exception as e:  # the tokenizers library raises plain Exception for a bad model
        raise UserError(f"{path}: unreadable tokenizer model ({e})") from None
    return PretrainedTokenizer(model, *ids)
