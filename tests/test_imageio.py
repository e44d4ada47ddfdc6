from __future__ import annotations

import io

import pytest
from PIL import Image

from ragvqa.errors import InputError
from ragvqa.imageio import open_image


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


def test_opens_path_bytes_and_pil_as_rgb(tmp_path, astronaut_png):
    path = tmp_path / "a.png"
    path.write_bytes(astronaut_png)
    for source in (path, str(path), astronaut_png, Image.open(io.BytesIO(astronaut_png))):
        image = open_image(source)
        assert image.mode == "RGB" and image.size == (512, 512)


def test_grey_and_transparent_images_become_rgb(tmp_path):
    grey = tmp_path / "g.png"
    Image.new("L", (4, 4), 7).save(grey)
    assert open_image(grey).getpixel((0, 0)) == (7, 7, 7)
    clear = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(clear)
    assert open_image(clear).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.jpg", b"this is text, not a photo", "not an image"),
        ("empty.png", b"", "empty file"),
    ],
)
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as exc:
        open_image(path)
    assert "\n" not in exc.value.one_line()


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputError, match="image not found"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="is a directory"):
        open_image(tmp_path)


def test_truncated_jpeg(tmp_path, astronaut_png):
    buf = io.BytesIO()
    Image.open(io.BytesIO(astronaut_png)).convert("RGB").save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        open_image(path)


def test_too_many_pixels_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(InputError, match="too large: 300x300"):
        open_image(path, max_pixels=50_000)
    with pytest.raises(InputError, match="too large"):
        open_image(Image.new("RGB", (300, 300)), max_pixels=50_000)
    with pytest.raises(InputError, match="empty"):
        open_image(b"")


def test_16_bit_grayscale_keeps_its_tones():
    """A 16-bit PNG (mode I;16) is scaled by its bit depth; Pillow's own convert clips it to white."""
    import io

    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    pixels = np.asarray(open_image(buffer.getvalue()))
    assert pixels.shape == (64, 64, 3)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[-1, -1].tolist() == [255, 255, 255]
    assert abs(float(pixels.mean()) - 127.5) < 1.0  # a ramp stays a ramp, not a white sheet
    expected = (ramp.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(pixels[..., 0], expected)


def test_pillow_bomb_refusal_is_said_in_our_terms(tmp_path):
    """Above twice Pillow's own limit, Pillow refuses before we see the size: same message shape."""
    import struct
    import zlib

    # A valid PNG header claiming 20000 x 20000 pixels (400 MP), no real pixel data needed.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match=r"is too large: 400,000,000 pixels \(limit 40,000,000\)"):
        open_image(path)
