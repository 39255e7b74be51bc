"""Image decoding: every kind of picture users bring, and every kind of broken file."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from seemore.data.images import load_image, load_image_tensor, resize, to_tensor
from seemore.errors import UserError


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that declares a size, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


RED = (200, 30, 30)


@pytest.mark.parametrize("make, message", [
    (lambda: encode(Image.new("RGB", (32, 32), RED))[:60], "not a readable image"),
    (lambda: encode(Image.new("RGB", (32, 32), RED), "JPEG")[:200], "not a readable image"),
    (lambda: b"this is not an image", "not a readable image"),
    (lambda: b"", "the image is empty (0 bytes)"),
    (lambda: encode(Image.new("RGB", (1, 1), RED)), "is 1x1 pixels; it needs at least 4"),
    (lambda: png_declaring(0, 10), "not a readable image"),
    (lambda: png_declaring(20000, 20000), "decompression-bomb limit"),
    (lambda: png_declaring(10000, 10000), "decompression-bomb limit"),  # only a warning in PIL
])
def test_broken_images_are_refused_with_their_name(make, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        load_image(make(), name="photos.csv:7")
    assert str(error.value).startswith("photos.csv:7: ")
    assert "BytesIO" not in str(error.value)


def test_missing_file_and_zero_pixel_array(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="https://example.com/a.png: images are not "
                                        "downloaded; save it and give its path"):
        load_image("https://example.com/a.png")
    with pytest.raises(UserError, match="is 0x0 pixels"):
        load_image(np.zeros((0, 0, 3), np.uint8))


def test_every_mode_becomes_8_bit_rgb():
    grey16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert grey16.mode.startswith("I")
    assert load_image(encode(grey16)).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    assert load_image(encode(half)).getpixel((0, 0)) == (128, 128, 128)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    r, g, b = load_image(encode(cmyk, "JPEG")).getpixel((4, 4))
    assert r > 200 and g < 40 and b < 40
    palette = Image.new("RGB", (8, 8), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_image(encode(palette)).getpixel((0, 0)) == RED
    assert load_image(encode(Image.new("L", (8, 8), 77))).getpixel((0, 0)) == (77, 77, 77)
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent: white
    assert load_image(encode(clear)).getpixel((0, 0)) == (255, 255, 255)
    half_red = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    assert load_image(encode(half_red)).getpixel((0, 0)) == (255, 127, 127)


def test_exif_orientation_and_the_first_frame_of_an_animation():
    wide = Image.new("RGB", (16, 8), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert load_image(encode(wide, "JPEG", exif=exif.tobytes())).size == (8, 16)
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, _, b = load_image(gif).getpixel((4, 4))
    assert r > 150 and b < 80


def test_squash_and_letterbox():
    tall = Image.new("RGB", (10, 40), RED)
    assert resize(tall, 16, "squash").getpixel((0, 8)) == RED  # stretched to the edges
    boxed = resize(tall, 16, "letterbox")
    assert boxed.size == (16, 16) and boxed.getpixel((8, 8)) == RED
    assert boxed.getpixel((0, 8)) == RED  # padded with the mean colour: all red here
    two = Image.new("RGB", (40, 10), (0, 0, 0))
    two.paste(Image.new("RGB", (20, 10), (255, 255, 255)), (20, 0))
    corner = resize(two, 16, "letterbox").getpixel((0, 0))
    assert corner == (128, 128, 128)  # the pad is the mean colour, not black or white
    assert load_image_tensor(tall, 16, "letterbox").shape == (3, 16, 16)
    with pytest.raises(UserError, match="unknown resize policy 'crop'"):
        resize(tall, 16, "crop")


def test_float_arrays_are_0_to_1_and_others_are_refused():
    """An array of 0-255 floats used to be clipped to 1.0: every pixel white, silently."""
    assert load_image(np.full((8, 8, 3), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(UserError, match=r"float values from 200.0 to 200.0; expected 0 to 1"):
        load_image(np.full((8, 8, 3), 200.0))
    with pytest.raises(UserError, match=r"float values from -1.0 to 1.0; expected 0 to 1"):
        load_image(np.linspace(-1, 1, 192).reshape(8, 8, 3))
    with pytest.raises(UserError, match="not a number"):
        load_image(np.full((8, 8, 3), np.nan))


def photo(width: int = 2000, height: int = 1500) -> Image.Image:
    """A real-sized photo-like image: smooth gradients and waves under sensor noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([np.sin(x / 50) * 60 + np.cos(y / 70) * 60 + 128, x / width * 255,
                       y / height * 255], -1) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("policy", ["squash", "letterbox"])
def test_a_large_jpeg_decodes_only_as_large_as_the_model_needs(policy):
    """A 2000x1500 JPEG (about 1 MB) for a 64-pixel model decodes at 1/8 scale, still at
    least 64 pixels a side, and the model's input is within a few levels of the one made
    from the full decode."""
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 1500x2000
    data = encode(photo(), "JPEG", quality=92, exif=exif.tobytes())
    assert len(data) > 500_000
    assert load_image(data).size == (1500, 2000)
    assert load_image(data, size=64).size == (188, 250)
    assert load_image(data, size=200).size == (375, 500)  # 1/4: 1/8 would leave 188 < 200
    full = resize(load_image(data), 64, policy)
    quick = load_image_tensor(data, 64, policy)
    difference = (quick - to_tensor(np.asarray(full))).abs()
    assert difference.mean() < 2 / 255 and difference.max() < 12 / 255
    assert load_image(encode(photo(), "PNG"), size=64).size == (2000, 1500)  # JPEG only
