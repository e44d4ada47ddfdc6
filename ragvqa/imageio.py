"""Opening the user's photo: one function, one-line errors.

Every front end (CLI, demo, evaluation) opens query photos through
:func:`open_image`, so a missing file, a text file named ``.jpg``, a truncated
JPEG or a decompression bomb gets the same one-line :class:`InputError`.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ragvqa.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

# 40 megapixels: larger than any phone photo, small enough that decoding stays
# well under 200 MB of RGB pixels.
DEFAULT_MAX_PIXELS = 40_000_000


def open_image(
    source: str | Path | bytes | Image.Image,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open and fully decode a photo as an RGB PIL image.

    Args:
        source: a file path, the file's bytes, or a PIL image (converted to
            RGB, size-checked).
        max_pixels: width x height above which the image is refused (a guard
            against decompression bombs and accidental huge scans).
    Returns:
        an RGB ``PIL.Image.Image`` whose pixels are loaded (the file is closed).
    Raises:
        InputError: missing path, a directory, unreadable file, not an image,
            truncated or corrupt image data, or more than ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels, "the given image")
        return _to_rgb(source)

    if isinstance(source, (bytes, bytearray)):
        where = f"image data ({len(source)} bytes)"
        if not source:
            raise InputError("the image data is empty", hint="upload or pass a JPEG/PNG/WebP photo")
        stream: IO[bytes] = io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        where = str(path)
        if not path.exists():
            raise InputError(f"image not found: {path}", hint="check the path given to --image")
        if path.is_dir():
            raise InputError(f"{path} is a directory, not an image file", hint="pass the path of one photo")
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise InputError(
                f"cannot read image {path}: {exc.strerror or exc}", hint="check the file's permissions"
            ) from exc
        if path.stat().st_size == 0:
            stream.close()
            raise InputError(f"{path} is an empty file, not an image", hint="pass a JPEG/PNG/WebP photo")

    # Pillow itself warns above Image.MAX_IMAGE_PIXELS and refuses above twice
    # that; we check our own (lower) limit from the header, before decoding,
    # and turn Pillow's refusal into the same one-line error.
    with stream, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream)
        except UnidentifiedImageError:
            raise InputError(
                f"{where} is not an image Pillow can read",
                hint="pass a JPEG, PNG, WebP, GIF or BMP photo",
            ) from None
        except Image.DecompressionBombError as exc:
            # Pillow refuses above twice its own limit before reading the size
            # out: say it in our terms (the documented max_pixels limit).
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            raise InputError(
                f"{where} is too large: {pixels} (limit {max_pixels:,})",
                hint="resize the photo (a few megapixels is plenty)",
            ) from None
        _check_size(image.size, max_pixels, where)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            # Truncated JPEG/PNG data and corrupt streams land here.
            raise InputError(
                f"{where} is damaged or truncated ({' '.join(str(exc).split())})",
                hint="re-export or re-download the photo",
            ) from exc
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent pixels become white rather than black.

    16-bit and 32-bit grayscale (``I;16*``, ``I``, ``F`` modes: scans,
    medical and astronomy images) are scaled to 8 bits by their bit depth;
    Pillow's own conversion clips every value above 255 to white.
    """
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _deep_gray_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _deep_gray_to_rgb(image: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale image as 8-bit RGB, scaled by its bit depth."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or (values.size and float(values.max()) > 255):
        top = 65535.0  # 16-bit samples (PNG stores them as I;16 or I)
    else:
        top = 255.0
    gray = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _check_size(size: tuple[int, int], max_pixels: int, where: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{where} has no pixels ({width}x{height})", hint="pass a real photo")
    if width * height > max_pixels:
        raise InputError(
            f"{where} is too large: {width}x{height} = {width * height:,} pixels (limit {max_pixels:,})",
            hint="resize the photo (a few megapixels is plenty)",
        )
