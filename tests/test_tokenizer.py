import pytest

from seemore.errors import UserError
from seemore.tokenizer import SPECIALS, CharTokenizer


def test_round_trip_and_specials():
    tok = CharTokenizer.from_text("hello world?")
    assert tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.decode([tok.bos_id, *tok.encode("ow"), tok.eos_id, tok.pad_id]) == "ow"


def test_same_text_same_tokenizer_and_save_load(tmp_path):
    a, b = CharTokenizer.from_text("cab"), CharTokenizer.from_text("bca")
    assert a == b
    a.save(tmp_path / "tokenizer.json")
    assert CharTokenizer.load(tmp_path / "tokenizer.json") == a


def test_unknown_characters_are_an_error_naming_them():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(UserError, match="'XZ'"):
        tok.encode("a XZ", what="question")
    assert tok.encode("aX", strict=False) == [tok.encode("a")[0], tok.unk_id]


def test_special_token_text_is_not_a_special_token():
    tok = CharTokenizer.from_text("<pad>")
    assert tok.pad_id not in tok.encode("<pad>")


def test_image_codes_follow_the_characters_and_survive_save_load(tmp_path):
    tok = CharTokenizer.from_text("ab", codes=3)
    assert len(tok) == 5 + 2 + 2 + 3
    assert tok.vocab[tok.boi_id] == "<boi>" and tok.vocab[tok.eoi_id] == "<eoi>"
    assert list(tok.code_ids) == [9, 10, 11]
    assert tok.decode([tok.bos_id, *tok.encode("ab"), tok.boi_id, 9, 11, tok.eoi_id]) == "ab"
    tok.save(tmp_path / "tokenizer.json")
    assert CharTokenizer.load(tmp_path / "tokenizer.json") == tok
    assert CharTokenizer.from_text("ab") != tok
