import pytest

from seemore.errors import UserError
from seemore.tokenizer import SPECIALS, BPETokenizer, CharTokenizer, load_tokenizer


def test_round_trip_and_specials():
    tok = CharTokenizer.from_text("hello world?")
    assert tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.decode([tok.bos_id, *tok.encode("ow"), tok.eos_id, tok.pad_id]) == "ow"


def test_same_text_same_tokenizer_and_save_load(tmp_path):
    a, b = CharTokenizer.from_text("cab"), CharTokenizer.from_text("bca")
    assert a == b
    a.save(tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path / "tokenizer.json") == a


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
    assert load_tokenizer(tmp_path / "tokenizer.json") == tok
    assert CharTokenizer.from_text("ab") != tok


WORLD = "\n".join(["a large red circle at the top", "a small blue square at the left",
                   "what color is the circle?", "red", "where is the square?", "left"] * 5)


def test_bpe_round_trips_any_text_and_never_writes_a_special():
    tok = BPETokenizer.from_text(WORLD)
    assert tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    for text in ("a large red circle", "héllo ☃\n<pad><boi>", "", "  two  spaces"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(len(SPECIALS) <= i < tok.boi_id for i in ids)
    assert tok.unknown_chars("☃") == []
    assert tok.decode([tok.bos_id, *tok.encode("red"), tok.unk_id, tok.eos_id]) == "red<unk>"


def test_bpe_remembers_texts_but_hands_out_fresh_lists():
    tok = BPETokenizer.from_text(WORLD)
    first = tok.encode("what color is the circle?")
    first.append(0)  # a caller building a sequence on it must not change the next answer
    assert tok.encode("what color is the circle?") == first[:-1]
    assert tok.encode("what color is the circle?") == [
        len(SPECIALS) + i for i in tok.model.encode("what color is the circle?").ids]


def test_bpe_makes_the_words_of_its_text_single_tokens():
    tok = BPETokenizer.from_text(WORLD)
    assert len(tok.encode("a large red circle at the top")) == 7
    assert len(tok.encode("zebra")) > 1  # a word it never saw falls back to smaller pieces
    assert len(tok) - len(SPECIALS) <= 1024
    assert len(BPETokenizer.from_text(WORLD, vocab_size=260)) == len(SPECIALS) + 260


def test_bpe_depends_on_the_text_not_its_order_and_survives_save_load(tmp_path):
    tok = BPETokenizer.from_text(WORLD, codes=3)
    assert tok == BPETokenizer.from_text("\n".join(reversed(WORLD.splitlines())), codes=3)
    assert tok != BPETokenizer.from_text(WORLD) and tok != CharTokenizer.from_text(WORLD)
    assert list(tok.code_ids) == [tok.eoi_id + 1, tok.eoi_id + 2, tok.eoi_id + 3]
    tok.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded == tok and loaded.encode("a large red circle") == tok.encode("a large red circle")


def test_a_broken_tokenizer_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "tokenizer.json"
    for text, problem in (("{", "unreadable tokenizer.json"),
                          ('{"kind": "word", "specials": []}', "not a seemore tokenizer"),
                          ('{"kind": "bpe", "specials": ' + str(list(SPECIALS)).replace("'", '"')
                           + ', "bpe": {"model": 3}}', "unreadable BPE model")):
        path.write_text(text)
        with pytest.raises(UserError, match=problem):
            load_tokenizer(path)
