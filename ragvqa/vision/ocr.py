"""Text written in a photo, read with RapidOCR (PP-OCRv4 ONNX models from PyPI).

``rapidocr-onnxruntime`` 1.4.4 (Apache-2.0) ships the detection,
direction-classification and recognition models inside the wheel and runs
them on onnxruntime; no download. A line is kept when the recogniser's
confidence is at least :data:`MIN_LINE_SCORE`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragvqa.errors import ModelError, require

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: Lines read with less confidence are mostly texture read as letters
#: (gravel, fur, noise).
MIN_LINE_SCORE = 0.8
#: The longer side is reduced to this before detection: OCR time grows with
#: the pixels, and the detector itself works at 960 px.
MAX_SIDE = 1600


@dataclass(frozen=True)
class TextLine:
    """One line of text read in a photo.

    Attributes:
        text: the characters read.
        score: the recogniser's confidence (0-1).
        box: four (x, y) corners in the photo's pixels (of the reduced photo
            for a photo larger than :data:`MAX_SIDE`).
    """

    text: str
    score: float
    box: tuple[tuple[float, float], ...]


class PhotoReader:
    """A RapidOCR engine; load with :func:`get_reader`."""

    def __init__(self) -> None:
        rapidocr = require("rapidocr_onnxruntime", "offline")
        try:
            self.engine = rapidocr.RapidOCR()
        except Exception as exc:  # missing model file, onnxruntime failure
            raise ModelError(
                f"cannot start RapidOCR ({type(exc).__name__}: {exc})",
                hint="reinstall rapidocr-onnxruntime==1.4.4 and onnxruntime",
            ) from exc

    def read(self, image: Image.Image, min_score: float = MIN_LINE_SCORE) -> list[TextLine]:
        """The text lines in one RGB photo, top to bottom, confident ones only."""
        import numpy as np

        image = image if image.mode == "RGB" else image.convert("RGB")
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        # RapidOCR takes OpenCV's BGR channel order for arrays.
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        result, _elapsed = self.engine(bgr)
        lines = []
        for box, text, score in result or []:
            text = " ".join(str(text).split())
            if text and float(score) >= min_score:
                corners = tuple((float(x), float(y)) for x, y in box)
                lines.append(TextLine(text=text, score=float(score), box=corners))
        return merge_rows(lines)


def merge_rows(lines: list[TextLine]) -> list[TextLine]:
    """Join boxes that sit on one row (left to right, with a space); rows top to bottom.

    The detector often boxes the words of a widely spaced sign separately
    ("EIFFEL", "TOWER"); two boxes share a row when their vertical centres
    are closer than half the taller box's height. A merged line's score is
    its lowest box score; its box spans them all.
    """

    def span(line: TextLine) -> tuple[float, float, float]:
        ys = [y for _, y in line.box]
        return min(ys), max(ys), min(x for x, _ in line.box)

    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda ln: (sum(span(ln)[:2]) / 2, span(ln)[2])):
        top, bottom, _ = span(line)
        if rows:
            last_top = min(span(ln)[0] for ln in rows[-1])
            last_bottom = max(span(ln)[1] for ln in rows[-1])
            height = max(bottom - top, last_bottom - last_top)
            if abs((top + bottom) / 2 - (last_top + last_bottom) / 2) < height / 2:
                rows[-1].append(line)
                continue
        rows.append([line])
    merged = []
    for row in rows:
        row.sort(key=lambda ln: span(ln)[2])
        if len(row) == 1:
            merged.append(row[0])
            continue
        xs = [x for ln in row for x, _ in ln.box]
        ys = [y for ln in row for _, y in ln.box]
        box = ((min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys)))
        merged.append(
            TextLine(" ".join(ln.text for ln in row), min(ln.score for ln in row), box)
        )
    return merged


_lock = threading.Lock()
_cache: dict[str, Any] = {}


def get_reader() -> PhotoReader:
    """The process-wide OCR engine (loaded on first use, under 1 s)."""
    with _lock:
        if "reader" not in _cache:
            _cache["reader"] = PhotoReader()
        return _cache["reader"]
