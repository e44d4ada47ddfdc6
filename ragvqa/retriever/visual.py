"""The offline visual retriever: a text encoder that also looks at the photo.

``visual:minilm`` (``visual:PATH`` for another sentence-transformers model)
is what the offline profile can do with a photo when no vision-language
model ships in any package registry. It is NOT ReT-2 and not a joint
image-text embedding; it combines two honest signals:

1. **Words from the photo** (:func:`ragvqa.vision.describe_photo`): the
   ImageNet classifier's confident labels and their WordNet hypernyms ("cat",
   "Egyptian cat") and the text OCR reads in the photo. The query's text
   vector mixes the question's MiniLM vector with the words' vector::

       t_q = normalise(a * minilm(question) + (1 - a) * minilm(words))

   When the photo yields nothing confident the words are left out and
   ``t_q = minilm(question)`` (the retriever's :meth:`notice` says so).
2. **Photo-to-photo similarity** where KB documents have photos: the
   classifier's pooled features, mean-centred (:mod:`ragvqa.vision.features`).

Both live in one inner product. A vector is ``[text part (384) | image part
(1280)]``::

    query    = normalise([t_q, w * v_q])        (v_q = 0 without usable pixels)
    document = [cos(th) * t_d, sin(th) * v_d]   (a document with a readable photo)
               [t_d, 0]                         (a text-only document)

so ``score = (cos(th) * text_cos + w * sin(th) * photo_cos) / |[t_q, w v_q]|``
for documents with photos and ``text_cos / |...|`` for the others. ``th``
(``doc_image_weight = sin(th)``) is fixed when the KB is embedded and is part
of the fingerprint; ``a`` and ``w`` only change query vectors and can be
tuned without re-embedding. The defaults were chosen on the development set
``eval/devsets/offline_photos.jsonl`` (docs/offline.md).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError
from ragvqa.retriever.base import ImageInput
from ragvqa.retriever.baselines import (
    TextDenseRetriever,
    _check_lengths,
    _normalise,
    canonical_hash,
    load_image,
)
from ragvqa.retriever.precision import resolve_dtype

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from ragvqa.vision.evidence import PhotoEvidence, VisionConfig

logger = logging.getLogger(__name__)

KIND = "visual"
#: Evidence kept for recently seen photos, so the pipeline's generator step
#: reuses what retrieval computed instead of classifying the photo again.
EVIDENCE_CACHE_SIZE = 64


@dataclass(frozen=True)
class VisualConfig:
    """Fusion weights (module docstring; chosen on the development set).

    Attributes:
        question_weight: ``a``, the question's share of the query text vector
            (1 - a goes to the photo's words).
        image_weight: ``w``, the query's photo part against its text part.
        doc_image_weight: ``sin(th)``, the photo part of a document that has
            a photo (fixed at embedding time; part of the fingerprint).
    """

    question_weight: float = 0.5
    image_weight: float = 1.0
    doc_image_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.question_weight <= 1.0:
            raise InputError(f"question_weight {self.question_weight} is not in [0, 1]")
        if self.image_weight < 0:
            raise InputError(f"image_weight {self.image_weight} is negative")
        if not 0.0 <= self.doc_image_weight < 1.0:
            raise InputError(f"doc_image_weight {self.doc_image_weight} is not in [0, 1)")


class VisualTextRetriever:
    """MiniLM text retrieval + the photo's labels, OCR text and features.

    Attributes:
        name: ``"visual:minilm"`` or ``"visual:<arg>"``.
        dim: text dim + 1280 (1664 for MiniLM).
        uses_images: True.
        text: the wrapped :class:`TextDenseRetriever`.
        config: the fusion weights; vision: the photo thresholds.
        stats: counters (``queries``, ``photo_queries``, ``confident_photos``,
            ``unconfident_photos``, ``documents``, ``image_documents``,
            ``unreadable_images``, ``missing_images``).
        spec, load_options: for rebuilding in another process (Ray).
    """

    uses_images = True

    def __init__(
        self,
        text: TextDenseRetriever,
        *,
        name: str,
        spec: str,
        config: VisualConfig | None = None,
        vision: VisionConfig | None = None,
        device: str = "cpu",
    ) -> None:
        from ragvqa.vision.classifier import FEATURE_DIM, get_classifier
        from ragvqa.vision.evidence import VisionConfig

        self.text = text
        self.name = name
        self.spec = spec
        self.config = config or VisualConfig()
        self.vision = replace(vision or VisionConfig(), device=device)
        self.device = device
        self.classifier = get_classifier(device)
        self.text_dim = text.dim
        self.image_dim = FEATURE_DIM
        self.dim = text.dim + FEATURE_DIM
        self.instruction = text.instruction
        self.load_options = {**text.load_options, "visual": asdict(self.config)}
        self.stats: collections.Counter = collections.Counter()
        self._fingerprint: dict[str, Any] | None = None
        self._cache: collections.OrderedDict[Any, tuple[Any, PhotoEvidence]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_spec(
        cls, kind: str, arg: str, *, visual: dict[str, float] | None = None, **options: Any
    ) -> VisualTextRetriever:
        """Load ``visual:minilm`` (the PyPI MiniLM) or ``visual:PATH_OR_HUB_ID``.

        Args:
            visual: VisualConfig fields to override (``question_weight``, ...).
            options: the text encoder's (``device``, ``dtype``, ``instruction``,
                ``max_seq_length``; see :meth:`TextDenseRetriever.from_spec`).
        """
        if kind != KIND:
            raise InputError(f"VisualTextRetriever cannot load {kind}:{arg}", hint="use visual:minilm")
        if "dtype" in options:  # "auto" as a visual retriever (the same rule as text today)
            options["dtype"] = resolve_dtype(options["dtype"], options.get("device", "cpu"), KIND)
        text = TextDenseRetriever.from_spec("text", arg, **options)
        name = f"{KIND}:{text.name.partition(':')[2]}"
        config = VisualConfig(**(visual or {}))
        return cls(text, name=name, spec=f"{kind}:{arg}", config=config, device=text.device)

    # -- identity ---------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """name, config_hash, weights_sha256, dim, uses_images and the fusion weights.

        ``config_hash`` covers the text encoder's config, the document-side
        weight, the feature mean and the classifier; ``weights_sha256`` both
        models' weights. The query-side weights are informational (they do
        not change document vectors).
        """
        if self._fingerprint is None:
            from ragvqa.vision.features import mean_digest

            text_fp = self.text.fingerprint()
            config = {
                "kind": KIND,
                "text_config_hash": text_fp["config_hash"],
                "classifier": "efficientnet-lite2 imagenet-1k, 260 px, global average pool 1280",
                "feature_mean_sha256": mean_digest(),
                "doc_image_weight": self.config.doc_image_weight,
                "layout": "[text | image]",
            }
            weights = canonical_hash(
                {"text": text_fp["weights_sha256"], "classifier": self.classifier.weights_sha256}
            )
            self._fingerprint = {
                "name": self.name,
                "spec": self.spec,
                "config_hash": canonical_hash(config),
                "weights_sha256": weights,
                "dim": self.dim,
                "uses_images": True,
                "query_instruction": self.instruction,
                "question_weight": self.config.question_weight,
                "image_weight": self.config.image_weight,
            }
        return dict(self._fingerprint)

    # -- the photo --------------------------------------------------------------------

    def _cache_key(self, image: Any) -> Any:
        if isinstance(image, (str, Path)):
            path = Path(image)
            try:
                stat = path.stat()
            except OSError:
                return None
            return ("path", str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        return ("object", id(image))

    def describe(self, image: ImageInput | bytes) -> PhotoEvidence | None:
        """What the photo offers (cached for the last photos seen); None without one.

        Raises:
            InputError: an unreadable photo (the caller's photo, not a KB one).
        """
        from ragvqa.vision.evidence import describe_photo

        if image is None:
            return None
        key = self._cache_key(image)
        with self._lock:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key][1]
        evidence = describe_photo(image, self.vision)
        with self._lock:
            if key is not None:
                # The photo object is kept with its entry so its id is not reused.
                self._cache[key] = (image, evidence)
                while len(self._cache) > EVIDENCE_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return evidence

    @staticmethod
    def notice(evidence: PhotoEvidence | None) -> str | None:
        """One line for the user: what the photo contributed to retrieval (None: no photo)."""
        if evidence is None:
            return None
        if evidence.confident:
            return evidence.summary()
        why = "; ".join(evidence.notes) or "no label or text reached the confidence threshold"
        matched = "" if evidence.features is None else " (and photo-to-photo similarity where KB documents have photos)"
        return f"The photo gave nothing confident ({why}): retrieval used the question alone{matched}."

    # -- encoding ---------------------------------------------------------------------

    def _join(self, text_part: np.ndarray, image_part: np.ndarray | None, image_scale: np.ndarray) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(text_part), self.dim), dtype=np.float32)
        out[:, : self.text_dim] = text_part
        if image_part is not None:
            out[:, self.text_dim :] = image_part * image_scale[:, None]
        return out

    def encode_queries(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """N (photo, question) queries -> float32 (N, dim), L2-normalised.

        Raises:
            InputError: a query with neither a usable photo nor a question, or
                an unreadable query photo.
        """
        import numpy as np

        _check_lengths(images, texts)
        evidences = [self.describe(img) for img in images]
        a = self.config.question_weight
        questions: list[str] = []
        words: list[str] = []
        for i, (ev, text) in enumerate(zip(evidences, texts, strict=True)):
            usable_words = ev.query_words() if ev is not None and ev.confident else ""
            if not text and not usable_words and (ev is None or ev.features is None):
                raise InputError(f"query {i} has neither a usable photo nor a question", hint="give a question")
            questions.append(text or "")
            words.append(usable_words)
            if ev is not None:
                self.stats["photo_queries"] += 1
                self.stats["confident_photos" if ev.confident else "unconfident_photos"] += 1
        self.stats["queries"] += len(questions)
        q_vecs = self.text.encode_queries([None] * len(questions), questions, batch_size)
        word_rows = [i for i, w in enumerate(words) if w]
        text_part = q_vecs.copy()
        if word_rows:
            w_vecs = self.text._encode([words[i] for i in word_rows], batch_size)
            for j, i in enumerate(word_rows):
                qa = a if questions[i] else 0.0
                text_part[i] = qa * q_vecs[i] + (1.0 - qa) * w_vecs[j]
        text_part = _normalise(text_part)
        image_part = np.zeros((len(questions), self.image_dim), dtype=np.float32)
        scale = np.zeros(len(questions), dtype=np.float32)
        from ragvqa.vision.features import centred

        for i, ev in enumerate(evidences):
            if ev is not None and ev.features is not None:
                image_part[i] = centred(ev.features)
                scale[i] = self.config.image_weight
        return _normalise(self._join(text_part, image_part, scale))

    def encode_documents(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """N documents -> float32 (N, dim): text, plus the photo part where a photo reads.

        A missing or unreadable document photo makes that document text-only
        (counted in ``stats``), never an exception.
        """
        import numpy as np

        from ragvqa.vision.features import centred

        _check_lengths(images, texts)
        self.stats["documents"] += len(texts)
        text_part = self.text.encode_documents([None] * len(texts), texts, batch_size)
        loaded: list[Image.Image | None] = [
            load_image(img, self.stats) if img is not None else None for img in images
        ]
        rows = [i for i, img in enumerate(loaded) if img is not None]
        image_part = np.zeros((len(texts), self.image_dim), dtype=np.float32)
        scale = np.zeros(len(texts), dtype=np.float32)
        sin_th = self.config.doc_image_weight
        cos_th = math.sqrt(1.0 - sin_th * sin_th)
        step = max(1, min(int(batch_size), 16))
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            results = self.classifier.classify([loaded[i] for i in chunk], top_k=1)  # type: ignore[misc]
            for i, result in zip(chunk, results, strict=True):
                image_part[i] = centred(result.features)
                scale[i] = sin_th
                text_part[i] *= cos_th
        self.stats["image_documents"] += len(rows)
        return self._join(text_part, image_part, scale)

    def close(self) -> None:
        """Forget cached photo evidence."""
        with self._lock:
            self._cache.clear()
