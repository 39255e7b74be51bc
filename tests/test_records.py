"""Users' datasets: every format read, every kind of bad row found with its location, and
`seemore data check` reporting them."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from seemore.cli import main
from seemore.data.check import check
from seemore.data.records import Bad, Record, read_records
from seemore.errors import UserError
from seemore.prompt import CAPTION_PROMPT
from seemore.tokenizer import CharTokenizer


def png(size=(12, 10), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def original_csv(tmp_path):
    """The original seemore format, one good row and one of each kind of bad row."""
    return write_csv(tmp_path / "inputs.csv", ["b64string_images", "caption"], [
        [b64(png()), "a red box"],                        # line 2: good
        ["!!not base64!!", "a red box"],                  # 3: invalid base64
        [b64(png()[:40]), "a truncated png"],             # 4
        [b64(b"plain bytes, not an image"), "junk"],      # 5
        [b64(png()), ""],                                 # 6: empty caption
        [b64(png((1, 1))), "a dot"],                      # 7: 1x1
        [b64(png()), "z" * 400],                          # 8: longer than the context
        [b64(png((20, 20))), "a red box"],                # 9: good
    ])


def test_original_csv_rows_and_their_problems(original_csv):
    records = list(read_records(original_csv))
    assert isinstance(records[0], Record) and records[0].turns == ((CAPTION_PROMPT, "a red box"),)
    assert isinstance(records[1], Bad) and "invalid base64" in records[1].reason
    assert records[1].location == f"{original_csv}:3"
    assert isinstance(records[4], Bad) and records[4].reason == "empty caption"

    report = check(original_csv, context=192, n_visual=16)
    assert report.rows == 8 and report.images == 5  # rows 2, 6 and 8 share an image
    reasons = {b.location.rsplit(":", 1)[1]: b.reason for b in report.bad}
    assert set(reasons) == {"3", "4", "5", "6", "7", "8"}
    assert "not a readable image" in reasons["4"] and "not a readable image" in reasons["5"]
    assert "1x1 pixels" in reasons["7"]
    assert "tokens with the image; the context (model.decoder.max_seq_len) is 192" in reasons["8"]
    assert report.sizes == {(12, 10): 1, (20, 20): 1}


def test_unknown_characters_are_bad_against_a_tokenizer(original_csv):
    tokenizer = CharTokenizer.from_text("a red box describe the image.")
    report = check(original_csv, tokenizer=tokenizer)
    unknown = [b for b in report.bad if "characters the tokenizer does not know" in b.reason]
    assert [b.location.rsplit(":", 1)[1] for b in unknown] == ["8"]  # 'z'
    assert report.unknown == {"z": 400}


def test_image_paths_missing_columns_and_empty_files(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(png())
    paths = write_csv(tmp_path / "paths.csv", ["image", "caption"],
                      [["pics/a.png", "red"], ["pics/missing.png", "gone"]])
    first, second = read_records(paths)
    assert first.image == tmp_path / "pics" / "a.png"
    assert isinstance(second, Bad) and "does not exist" in second.reason
    named = write_csv(tmp_path / "named.csv", ["photo", "caption"], [["pics/a.png", "red"]])
    assert isinstance(next(read_records(named, image_column="photo")), Record)
    with pytest.raises(UserError, match="seemore needs 'image' and 'caption'"):
        list(read_records(named))
    no_text = write_csv(tmp_path / "no_text.csv", ["image"], [["pics/a.png"]])
    with pytest.raises(UserError, match="the columns are 'image'"):
        list(read_records(no_text))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="the file is empty"):
        list(read_records(tmp_path / "empty.csv"))
    with pytest.raises(UserError, match="not a dataset seemore reads"):
        list(read_records(tmp_path / "pics" / "a.png"))


def test_imagefolder_with_captions_and_questions(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").write_bytes(png())
    rows = [{"file_name": "a.png", "text": "a red box"},
            {"file_name": "a.png", "question": "what color?", "answer": "red"},
            {"file_name": "a.png", "question": "what color?", "answer": ""},
            {"text": "no file"}]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    records = list(read_records(folder))
    assert records[0].turns == ((CAPTION_PROMPT, "a red box"),)
    assert records[1].turns == (("what color?", "red"),)
    assert [r.reason for r in records[2:]] == [
        "empty answer", "no 'file_name'", "malformed JSON (Expecting property name enclosed "
        "in double quotes at column 2)"]
    assert records[4].location == f"{folder / 'metadata.jsonl'}:5"
    csv_folder = tmp_path / "csvset"
    csv_folder.mkdir()
    (csv_folder / "b.png").write_bytes(png())
    write_csv(csv_folder / "metadata.csv", ["file_name", "caption"], [["b.png", "red"]])
    assert next(read_records(csv_folder)).image == csv_folder / "b.png"
    with pytest.raises(UserError, match="needs metadata.jsonl or metadata.csv"):
        list(read_records(tmp_path))


def test_llava_conversations(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    turn = [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "a box"},
            {"from": "human", "value": "what color?"}, {"from": "gpt", "value": "red"}]
    rows = [{"image": "a.png", "conversations": turn},
            {"image": "a.png", "conversations": turn[:3]},
            {"image": "a.png", "conversations": [turn[1], turn[0]]},
            {"conversations": turn}]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = list(read_records(path))
    assert records[0].turns == (("what is it?", "a box"), ("what color?", "red"))
    assert [r.reason for r in records[1:]] == [
        "turn 4 should be from 'gpt' (the answer to turn 3)",
        "turn 1 should be from 'human'", "no 'image'"]
    listed = tmp_path / "chat.json"
    listed.write_text(json.dumps(rows[:1]))
    assert next(read_records(listed)).turns == records[0].turns


def test_data_check_command(original_csv, tmp_path, capsys):
    assert main(["data", "check", str(original_csv)]) == 1
    out = capsys.readouterr().out
    assert "8 rows, 5 images, 6 bad" in out
    assert f"bad: {original_csv}:3: invalid base64" in out
    assert "image sizes: 12x10 (1), 20x20 (1)" in out
    good = write_csv(tmp_path / "good.csv", ["b64string_images", "caption"],
                     [[b64(png()), "a red box"]])
    assert main(["data", "check", str(good)]) == 0
    assert main(["data", "check", str(tmp_path / "nope.csv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_base64_images_are_read_again_from_their_row_not_held(tmp_path):
    images = [png((12, 10)), png((8, 9), (0, 0, 255))]
    path = tmp_path / "multi.csv"
    path.write_text(f'b64string_images,caption\n{b64(images[0])},"two\nlines"\n'
                    f"{b64(images[1])},blue\n")
    first, second = read_records(path)
    assert first.turns[0][1] == "two\nlines" and second.location == f"{path}:4"
    assert not isinstance(first.image, bytes)  # a reference to the row
    assert [first.image_source(), second.image_source()] == images


def photo(side=1024, seed=0) -> bytes:
    """A PNG the size of an ordinary photo: smooth colour with noise, 1-3 MB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([x, y, 1 - x * y], -1) * 200
    pixels = (base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_base64_csv_of_full_size_photos_is_read(tmp_path):
    """The original format with real photos: each field is megabytes, past the csv module's
    default limit of 128 KB."""
    images = [photo(seed=i) for i in range(2)]
    assert all(len(b) > 1_000_000 for b in images)
    path = write_csv(tmp_path / "photos.csv", ["b64string_images", "caption"],
                     [[b64(b), f"photo {i}"] for i, b in enumerate(images)])
    records = list(read_records(path))
    assert [type(r) for r in records] == [Record, Record]
    assert records[1].image_source() == images[1]
    report = check(path, context=192, n_visual=16)
    assert report.rows == 2 and not report.bad


def test_byte_order_marks_encodings_and_extra_fields(tmp_path):
    good = [b64(png()), "a red box"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + "b64string_images,caption\n{},{}\r\n".format(*good).encode())
    assert [type(r) for r in read_records(bom)] == [Record]  # BOM and CRLF are fine

    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"b64string_images,caption\n{good[0]},caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.csv:2: not UTF-8 text"):
        list(read_records(latin))

    extra = write_csv(tmp_path / "extra.csv", ["b64string_images", "caption"],
                      [[*good, "and more"]])
    (bad,) = read_records(extra)
    assert isinstance(bad, Bad) and "3 fields for 2 columns" in bad.reason

    lines = tmp_path / "rows.jsonl"
    lines.write_bytes(b'\xef\xbb\xbf{"image": "x.png", "conversations": []}\n\xff\xfe{}\n')
    first, second = read_records(lines)
    assert first.reason == "no 'conversations' list" and second.reason == "not UTF-8 text"


def test_splits_named_by_a_column_or_by_folders(tmp_path):
    image = b64(png())
    named = write_csv(tmp_path / "named.csv", ["b64string_images", "caption", "split"], [
        [image, "one", "train"], [image, "two", "validation"], [image, "three", "TEST"],
        [image, "four", ""], [image, "five", "dev"]])
    rows = list(read_records(named))
    assert [r.split for r in rows[:4]] == ["train", "val", "test", ""]
    assert isinstance(rows[4], Bad) and "split 'dev' is not train, validation or test" in \
        rows[4].reason

    for split in ("train", "validation", "test"):
        (tmp_path / "hf" / split).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "hf" / split / "a.png")
        (tmp_path / "hf" / split / "metadata.jsonl").write_text(
            json.dumps({"file_name": "a.png", "text": f"from {split}"}) + "\n")
    rows = list(read_records(tmp_path / "hf"))
    assert [(r.split, r.turns[0][1]) for r in rows] == [
        ("train", "from train"), ("val", "from validation"), ("test", "from test")]
