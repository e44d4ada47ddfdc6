"""Opening the user's photo: one function, one-line errors.

Every front end (CLI, demo, evaluation) opens query photos through
:func:`open_image`, so a missing file, a text file named ``.jpg``, a truncated
JPEG or a decompression bomb gets the same one-line :class:`InputError`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

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
        stream: io.IOBase = io.BytesIO(source)
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
            raise InputError(f"{where} is too large ({exc})", hint="resize the photo") from None
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
    """RGB copy; transparent pixels become white rather than black."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _check_size(size: tuple[int, int], max_pixels: int, where: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{where} has no pixels ({width}x{height})", hint="pass a real photo")
    if width * height > max_pixels:
        raise InputError(
            f"{where} is too large: {width}x{height} = {width * height:,} pixels (limit {max_pixels:,})",
            hint="resize the photo (a few megapixels is plenty)",
        )
