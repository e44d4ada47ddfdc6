"""One call that says what a photo offers: :func:`describe_photo` -> :class:`PhotoEvidence`.

The evidence is what the offline retriever adds to the question and what the
offline generator reads before the documents:

    The photo appears to show: cat, Egyptian cat; text in the photo: "EIFFEL TOWER".

It is ``confident`` only when a concept word reaches
``VisionConfig.min_term_confidence`` or the OCR read at least
``VisionConfig.min_ocr_chars`` letters or digits; otherwise callers fall back
to the question alone and say so. A blank photo (almost no pixel variation)
is not classified or read at all, and a photo of pixel noise (neighbouring
pixels unrelated) is not classified: an ImageNet classifier always names
some class, and on a flat grey field or on static that name means nothing
(uniform noise comes out as "doormat" at 0.49).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import RagvqaError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from ragvqa.vision.ocr import TextLine

log = logging.getLogger(__name__)

#: A photo whose pixels vary less than this (standard deviation of the
#: grey levels, 0-255) is blank: nothing to classify or read.
BLANK_STD = 2.0
#: A photo whose neighbouring pixels correlate less than this (lag-1
#: autocorrelation of the grey levels at 256 px, the lower of the two
#: directions) is noise. Measured: uniform and Gaussian noise 0.15; the
#: least correlated real photos in skimage/sklearn/matplotlib/InfoSeek
#: samples (grass, text, brick) 0.64-0.71, most above 0.9.
NOISE_CORRELATION = 0.35


#: How a notice that the photo contributed begins (the demo shows it as information, not a warning).
PHOTO_USED = "The photo was used"

@dataclass(frozen=True)
class VisionConfig:
    """How much of the photo to trust.

    Attributes:
        min_term_confidence: a concept word is used when the classes it
            covers hold at least this much probability (chosen on the
            development set, docs/offline.md).
        max_terms: at most this many concept words are used.
        top_k: classes kept from the classifier (their mass feeds the words).
        ocr: read text in the photo.
        min_ocr_chars: OCR text counts as evidence from this many letters or
            digits on.
        max_ocr_chars: OCR text is cut here (a photo of a page holds more
            than a query or a prompt needs).
        device: torch device of the classifier.
    """

    min_term_confidence: float = 0.35
    max_terms: int = 4
    top_k: int = 10
    ocr: bool = True
    min_ocr_chars: int = 3
    max_ocr_chars: int = 300
    device: str = "cpu"


@dataclass(frozen=True, eq=False)
class PhotoEvidence:
    """What the offline models got from one photo.

    Attributes:
        labels: the classifier's top classes (name, probability), best first.
        terms: concept words (class names and hypernyms) with the summed
            probability of the classes they cover, best first (all of them;
            :attr:`confident_terms` are the ones used).
        ocr_lines: text lines read in the photo (confident ones only).
        features: float32 (1280,) L2-normalised pooled classifier features,
            or None for a blank photo.
        seconds: time per stage: ``classifier``, ``ocr``.
        confident: True when the photo gave something usable (see module doc).
        config: the settings used.
        notes: what went wrong or was skipped ("the photo is blank", "OCR
            unavailable: ...").
    """

    labels: tuple[tuple[str, float], ...]
    terms: tuple[tuple[str, float], ...]
    ocr_lines: tuple[TextLine, ...]
    features: np.ndarray | None
    seconds: dict[str, float]
    confident: bool
    config: VisionConfig = field(default_factory=VisionConfig)
    notes: tuple[str, ...] = ()

    @property
    def confident_terms(self) -> tuple[tuple[str, float], ...]:
        """The concept words used: confidence >= the threshold, at most ``max_terms``."""
        cfg = self.config
        return tuple((t, c) for t, c in self.terms if c >= cfg.min_term_confidence)[: cfg.max_terms]

    @property
    def ocr_text(self) -> str:
        """The lines read, joined with " / ", cut at ``max_ocr_chars``."""
        text = " / ".join(line.text for line in self.ocr_lines)
        return text[: self.config.max_ocr_chars].rstrip()

    @property
    def has_text(self) -> bool:
        """True when the OCR read enough letters or digits to use."""
        return sum(ch.isalnum() for ch in self.ocr_text) >= self.config.min_ocr_chars

    def query_words(self) -> str:
        """What the retriever adds to the question: concept words, then the text read."""
        parts = [t for t, _ in self.confident_terms]
        if self.has_text:
            parts.append(self.ocr_text)
        return ", ".join(parts)

    def text(self) -> str:
        """The sentence the generator reads; "" when the photo gave nothing confident.

        Example: ``The photo appears to show: cat, Egyptian cat; text in the photo: "Paris 1889".``
        """
        parts = []
        terms = [t for t, _ in self.confident_terms]
        if terms:
            parts.append("The photo appears to show: " + ", ".join(terms))
        if self.has_text:
            parts.append(f'text in the photo: "{self.ocr_text}"')
        if not parts:
            return ""
        sentence = "; ".join(parts)
        return sentence[0].upper() + sentence[1:] + "."

    def summary(self) -> str:
        """One line for a user notice: what the photo contributed, with confidences."""
        if not self.confident:
            seen = ", ".join(f"{n} {p:.2f}" for n, p in self.labels[:3]) or "nothing"
            why = "; ".join(self.notes) or f"best guesses {seen}, all below {self.config.min_term_confidence:.2f}"
            return f"The photo gave nothing confident ({why}); retrieval used the question alone."
        parts = []
        if self.confident_terms:
            parts.append("classifier: " + ", ".join(f"{t} {c:.2f}" for t, c in self.confident_terms))
        if self.has_text:
            parts.append(f'text read: "{self.ocr_text}"')
        return f"{PHOTO_USED} (" + "; ".join(parts) + ")."

    def as_json(self) -> dict[str, Any]:
        """JSON-able form (features left out)."""
        return {
            "confident": self.confident,
            "labels": [[n, round(p, 4)] for n, p in self.labels],
            "terms": [[t, round(c, 4)] for t, c in self.confident_terms],
            "ocr_text": self.ocr_text,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "notes": list(self.notes),
        }


def _gray_thumbnail(image: Image.Image):
    import numpy as np

    small = image.convert("L")
    small.thumbnail((256, 256))
    return np.asarray(small, dtype=np.float64)


def is_blank(image: Image.Image) -> bool:
    """True when the photo is (nearly) one flat colour."""
    return float(_gray_thumbnail(image).std()) < BLANK_STD


def is_noise(image: Image.Image) -> bool:
    """True when neighbouring pixels are nearly unrelated (static, not a scene)."""
    gray = _gray_thumbnail(image)
    gray = gray - gray.mean()
    var = float((gray * gray).mean())
    if var < BLANK_STD**2 or min(gray.shape) < 2:
        return False
    across = float((gray[:, 1:] * gray[:, :-1]).mean()) / var
    down = float((gray[1:] * gray[:-1]).mean()) / var
    return min(across, down) < NOISE_CORRELATION


def describe_photo(image: Image.Image | str | Path | bytes, config: VisionConfig | None = None) -> PhotoEvidence:
    """Classify and read one photo.

    Args:
        image: an RGB PIL image, or a path / the file's bytes (opened with
            :func:`ragvqa.imageio.open_image`, whose size limit applies).
        config: thresholds and switches (default :class:`VisionConfig`).
    Returns:
        a :class:`PhotoEvidence`; ``seconds`` holds ``classifier`` and ``ocr``.
    Raises:
        InputError: an unreadable photo (from open_image).
        ModelError / MissingDependencyError: the classifier cannot load. An
        OCR engine that cannot load only adds a note (the labels still count).
    """
    from ragvqa.imageio import open_image
    from ragvqa.vision.classifier import get_classifier
    from ragvqa.vision.terms import aggregate_terms, imagenet_classes

    cfg = config or VisionConfig()
    pil = open_image(image)  # paths and bytes decoded; a PIL image size-checked, made RGB
    seconds: dict[str, float] = {}
    notes: list[str] = []
    labels: tuple[tuple[str, float], ...] = ()
    terms: tuple[tuple[str, float], ...] = ()
    features = None
    started = time.perf_counter()
    if is_blank(pil):
        notes.append("the photo is blank (one flat colour)")
        seconds["classifier"] = time.perf_counter() - started
        seconds["ocr"] = 0.0
        return PhotoEvidence(labels, terms, (), None, seconds, False, cfg, tuple(notes))
    if is_noise(pil):
        notes.append("the photo looks like pixel noise, not a scene")
    else:
        result = get_classifier(cfg.device).classify([pil], top_k=cfg.top_k)[0]
        classes = imagenet_classes()
        labels = tuple((classes[i].name, p) for i, p in result.top[:5])
        terms = tuple(aggregate_terms(list(result.top)))
        features = result.features
    seconds["classifier"] = time.perf_counter() - started

    lines: tuple[TextLine, ...] = ()
    started = time.perf_counter()
    if cfg.ocr:
        try:
            from ragvqa.vision.ocr import get_reader

            lines = tuple(get_reader().read(pil))
        except RagvqaError as exc:  # no OCR engine: the labels still count
            notes.append(f"OCR unavailable: {exc.one_line()}")
            log.warning("OCR unavailable: %s", exc.one_line())
    seconds["ocr"] = time.perf_counter() - started
    evidence = PhotoEvidence(labels, terms, lines, features, seconds, False, cfg, tuple(notes))
    confident = bool(evidence.confident_terms) or evidence.has_text
    return PhotoEvidence(labels, terms, lines, features, seconds, confident, cfg, tuple(notes))


def evidence_text(evidence: PhotoEvidence | None) -> str:
    """The generator's sentence for an evidence ("" for None or nothing confident)."""
    return "" if evidence is None or not evidence.confident else evidence.text()
