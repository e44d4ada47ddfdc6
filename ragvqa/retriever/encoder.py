"""ReT2Retriever: the ReT-2 model behind ragvqa's Retriever interface.

Turns lists of (image, text) into L2-normalised float32 vectors:

- images (PIL images, paths, or None) are opened, resized and normalised in
  a thread pool, one batch ahead of the model, so decoding overlaps the
  forward pass; a missing image becomes a black placeholder plus a 0 in the
  vision mask, and an unreadable document image is counted and treated the
  same way (a query image that cannot be read is an InputError);
- texts are tokenised with the checkpoint's tokenizer, truncated at the
  model's limit; a missing text is the empty string plus a 0 in the text mask;
- queries get the M2KR instruction in front, ``f"{instruction} {question}"``,
  and a query with no question has the instruction alone as its text (both as
  the official ReT code builds them); instructions may differ per query;
- queries are encoded by the query head, documents by the passage head (the
  same one unless the checkpoint has separate ones).

Image pre-processing reproduces transformers' CLIPImageProcessor /
SiglipImageProcessor (the PIL ones, which the official code ran) bit for bit:
the resized short side is exact, the long side truncated (not rounded), then
a centre crop, ``float32(uint8 * (1/255))`` in float64, then ``(x - mean) /
std`` in float32.

A multi-token checkpoint (ReT v1: 32 tokens) has no single vector per input:
:meth:`ReT2Retriever.encode_query_tokens` / :meth:`encode_document_tokens`
return (N, T, D) per-token normalised arrays for late interaction, and the
single-vector methods refuse.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ragvqa.errors import InputError, ModelError
from ragvqa.retriever.base import ImageInput
from ragvqa.retriever.checkpoint import load_ret2
from ragvqa.retriever.configuration import ReT2Config
from ragvqa.retriever.hashing import state_dict_sha256, weight_files_sha256
from ragvqa.retriever.modeling import ReT2Model
from ragvqa.retriever.precision import resolve_dtype

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Refuse decompression bombs the same way everywhere (pixels).
MAX_IMAGE_PIXELS = 40_000_000


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / torch dtype -> torch dtype (InputError if unknown)."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise InputError(f"unknown dtype {name!r}", hint=f"use one of {', '.join(_DTYPES)}") from None


class ImagePreprocessor:
    """Image -> normalised array, as the vision tower expects (thread-safe, no torch).

    CLIP: resize the short side to ``image_size`` and centre-crop; SigLIP:
    resize to ``image_size`` squared; SigLIP2 NaFlex: resize to fit the patch
    budget keeping the aspect ratio, then cut into patches. The first two equal
    transformers' (PIL) image processors bit for bit (tests compare them).
    """

    def __init__(self, config: ReT2Config) -> None:
        self.config = config
        self.size = config.image_size
        self.crop = config.crop_size
        self.resample = _RESAMPLE.get(config.image_resample, Image.Resampling.BICUBIC)
        self.mean = np.asarray(config.image_mean, dtype=np.float32)[:, None, None]  # (3, 1, 1)
        self.std = np.asarray(config.image_std, dtype=np.float32)[:, None, None]
        self.naflex = config.vision_backbone.get("model_type") == "siglip2_vision_model"
        self.patch_size = int(config.vision_backbone.get("patch_size", 16))

    def open(self, image: ImageInput) -> Image.Image:
        """Open a path or pass a PIL image through; RGB. Raises OSError/ValueError if unreadable."""
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        if image is None:
            raise ValueError("no image")
        with Image.open(Path(image)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{img.width}x{img.height} pixels is over the {MAX_IMAGE_PIXELS} limit")
            return img.convert("RGB")

    def placeholder(self) -> Image.Image:
        """The black image fed where an image is missing (masked out by the model)."""
        return Image.new("RGB", (self.size, self.size))

    def __call__(self, image: Image.Image) -> dict[str, np.ndarray]:
        """One RGB image -> {"pixel_values": (3, S, S)} or NaFlex patches + mask + shape."""
        if self.naflex:
            return self._naflex(image)
        if self.config.image_resize == "square":
            image = image.resize((self.size, self.size), self.resample)
            array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)
        else:
            w, h = image.size
            # transformers' get_resize_output_image_size: the long side is truncated, not rounded.
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.size * long / short)
            new_w, new_h = (self.size, new_long) if w <= h else (new_long, self.size)
            image = image.resize((new_w, new_h), self.resample)
            array = center_crop(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1), self.crop)  # (3, C, C)
        # transformers' rescale (float64 product, then float32) and normalize (float32).
        array = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
        return {"pixel_values": (array - self.mean) / self.std}

    def _naflex(self, image: Image.Image) -> dict[str, np.ndarray]:
        from transformers.models.siglip2.image_processing_pil_siglip2 import (
            get_image_size_for_max_num_patches,
        )

        p, budget = self.patch_size, self.config.max_num_patches
        h, w = get_image_size_for_max_num_patches(image.height, image.width, p, budget)
        array = np.asarray(image.resize((w, h), self.resample), dtype=np.float32).transpose(2, 0, 1) / 255.0
        array = (array - self.mean) / self.std  # (3, h, w)
        hp, wp = h // p, w // p
        patches = array.reshape(3, hp, p, wp, p).transpose(1, 3, 2, 4, 0).reshape(hp * wp, p * p * 3)
        padded = np.zeros((budget, p * p * 3), dtype=np.float32)  # (P, 3*p*p)
        padded[: hp * wp] = patches
        mask = np.zeros(budget, dtype=np.int64)
        mask[: hp * wp] = 1
        return {
            "pixel_values": padded,
            "pixel_attention_mask": mask,
            "spatial_shapes": np.asarray([hp, wp], dtype=np.int64),
        }


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) -> (C, size, size) around the centre; zero-padded when smaller (as transformers does)."""
    _, h, w = array.shape
    top, left = (h - size) // 2, (w - size) // 2
    if top >= 0 and left >= 0:
        return array[:, top : top + size, left : left + size]
    new_h, new_w = max(size, h), max(size, w)
    padded = np.zeros((array.shape[0], new_h, new_w), dtype=array.dtype)
    top_pad, left_pad = -(-(new_h - h) // 2), -(-(new_w - w) // 2)  # ceil
    padded[:, top_pad : top_pad + h, left_pad : left_pad + w] = array
    top, left = top + top_pad, left + left_pad
    return padded[:, max(0, top) : min(new_h, top + size), max(0, left) : min(new_w, left + size)]


def query_texts(
    texts: Sequence[str | None], instructions: Sequence[str | None] | str | None
) -> list[str | None]:
    """Query strings as the official ReT code builds them.

    ``f"{instruction} {question}"``; a query without a question has the
    instruction alone as its text; without an instruction the question alone;
    neither: no text (None). ``instructions``: one string for all queries, or
    one per query.
    """
    n = len(texts)
    if instructions is None or isinstance(instructions, str):
        instructions = [instructions] * n
    elif len(instructions) != n:
        raise InputError(f"{len(instructions)} instructions for {n} queries", hint="pass one per query, or one string")
    out: list[str | None] = []
    for instruction, question in zip(instructions, texts, strict=True):
        has_q = bool(question and question.strip())
        has_i = bool(instruction and instruction.strip())
        if has_q and has_i:
            out.append(f"{instruction} {question}")
        elif has_q:
            out.append(question)
        else:
            out.append(instruction if has_i else None)
    return out


class ReT2Retriever:
    """ReT-2 as a :class:`ragvqa.retriever.base.Retriever`.

    Args:
        model: a ReT2Model (moved to ``device`` / ``dtype`` here).
        tokenizer: the text tower's tokenizer.
        instruction: query instruction; default: the checkpoint config's.
        device: torch device string.
        dtype: float32, bfloat16 or float16 (half precision only makes sense on GPU).
        source: the checkpoint path or hub id (recorded in the fingerprint).
        checkpoint_dir: the local checkpoint directory; its weight file's sha256
            is the fingerprint's weights_sha256 (else the in-memory state dict's).
        num_workers: image loading threads.
    """

    name = "ret2"
    uses_images = True

    def __init__(
        self,
        model: ReT2Model,
        tokenizer: Any,
        *,
        instruction: str | None = None,
        device: str = "cpu",
        dtype: str | torch.dtype = "float32",
        source: str = "",
        checkpoint_dir: str | Path | None = None,
        num_workers: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.torch_dtype = parse_dtype(dtype)
        self.model = model.to(device=self.device, dtype=self.torch_dtype).eval()
        self.config = model.config
        self.tokenizer = tokenizer
        self.instruction = self.config.instruction if instruction is None else instruction
        self.dim = int(self.config.output_dim)
        self.num_tokens = model.num_output_tokens  # 1, or k for a multi-token checkpoint
        self.source = source
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.preprocess = ImagePreprocessor(self.config)
        self.num_workers = num_workers or min(8, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="ret2-img")
        self.stats: Counter[str] = Counter()
        self._weights_sha256: str | None = None
        # What load_retriever needs to rebuild this retriever elsewhere (set by from_spec).
        self.spec: str | None = None
        self.load_options: dict[str, Any] = {}

    # ---- construction ------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        instruction: str | None = None,
        **kw: Any,
    ) -> ReT2Retriever:
        """Load a ragvqa ReT-2 checkpoint (dir or hub id) with its tokenizer."""
        from transformers import AutoTokenizer

        torch_dtype = parse_dtype(dtype)
        if torch_dtype != torch.float32 and torch.device(device).type == "cpu":
            logger.warning("ReT-2 in %s on CPU is slow and less exact; float32 is the CPU choice", dtype)
        model, directory = load_ret2(path_or_id, device=device, dtype=torch_dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"checkpoint {path_or_id} has no usable tokenizer files ({str(exc).splitlines()[0]})",
                hint="re-save it with ReT2Model.save_pretrained(dir, tokenizer=...) or convert it again",
            ) from exc
        return cls(model, tokenizer, instruction=instruction, device=device, dtype=dtype,
                   source=str(path_or_id), checkpoint_dir=directory, **kw)

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
    ) -> ReT2Retriever:
        """Registry entry point: ``ret2:PATH_OR_HUB_ID``."""
        if kind != "ret2":
            raise InputError(f"ReT2Retriever cannot load a {kind!r} spec", hint="use ret2:PATH_OR_HUB_ID")
        if dtype == "auto":  # ragvqa.retriever.precision decides (float32 on a CPU for ReT-2)
            dtype = resolve_dtype(dtype, device, kind)
        retriever = cls.from_pretrained(arg, device=device, dtype=dtype, instruction=instruction, **kw)
        # What load_retriever needs to rebuild this retriever elsewhere: the Ray
        # engine's actors load the checkpoint themselves instead of receiving a
        # pickled copy of the whole model.
        retriever.spec = f"{kind}:{arg}"
        retriever.load_options = {"device": device, "dtype": dtype, "instruction": instruction, **kw}
        return retriever

    # ---- identity ----------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """name, config_hash (sha256 of the canonical config), weights_sha256, dim, source.

        weights_sha256 is that of the checkpoint's weight file when the model
        came from one (the same whatever dtype/device it runs in), else of the
        in-memory state dict. The query instruction is not part of it: it
        changes only query vectors.
        """
        if self._weights_sha256 is None:
            self._weights_sha256 = (
                weight_files_sha256(self.checkpoint_dir)  # cached per file version
                if self.checkpoint_dir is not None
                else state_dict_sha256(self.model)
            )
        return {
            "name": self.name,
            "source": self.source,
            "config_hash": self.config.config_hash(),
            "weights_sha256": self._weights_sha256,
            "dim": self.dim,
            "dtype": str(self.torch_dtype).removeprefix("torch."),
            "query_instruction": self.instruction,
        }

    # ---- encoding ----------------------------------------------------------
    def encode_queries(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str | None],
        batch_size: int = 32,
        *,
        instructions: Sequence[str | None] | str | None = None,
    ) -> np.ndarray:
        """(N,) images and questions -> (N, dim) float32, rows L2-normalised.

        The text is ``f"{instruction} {question}"``; a query with no question
        keeps the instruction as its text (the official code does the same).
        ``instructions``: one per query or one for all; default the retriever's.
        """
        return self._single(self.encode_query_tokens(images, texts, batch_size, instructions=instructions))

    def encode_documents(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """(N,) images and texts -> (N, dim) float32, rows L2-normalised."""
        return self._single(self.encode_document_tokens(images, texts, batch_size))

    def encode_query_tokens(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str | None],
        batch_size: int = 32,
        *,
        instructions: Sequence[str | None] | str | None = None,
    ) -> np.ndarray:
        """Like :meth:`encode_queries` but (N, T, dim): T = num_tokens, each token L2-normalised."""
        if instructions is None:
            instructions = self.instruction
        return self._encode(images, query_texts(texts, instructions), batch_size, side="query")

    def encode_document_tokens(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int = 32
    ) -> np.ndarray:
        """Like :meth:`encode_documents` but (N, T, dim), each token L2-normalised."""
        return self._encode(images, [t if t and t.strip() else None for t in texts], batch_size, side="passage")

    def _single(self, tokens: np.ndarray) -> np.ndarray:
        if self.num_tokens != 1:
            raise ModelError(
                f"this ReT checkpoint encodes each input as {self.num_tokens} tokens, not one vector",
                hint="search it with late interaction (encode_*_tokens, ragvqa.index.late_interaction)",
            )
        return tokens[:, 0]

    def close(self) -> None:
        """Stop the image threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _encode(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], batch_size: int, side: str
    ) -> np.ndarray:
        if len(images) != len(texts):
            raise InputError(f"{len(images)} images but {len(texts)} texts", hint="pass one of each per item")
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.num_tokens, self.dim), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        starts = list(range(0, n, batch_size))
        out = np.empty((n, self.num_tokens, self.dim), dtype=np.float32)

        def submit(start: int) -> list[Future]:
            return [self._pool.submit(self._load_image, img, side) for img in images[start : start + batch_size]]

        pending = submit(starts[0])
        for i, start in enumerate(starts):
            loaded = [f.result() for f in pending]
            if i + 1 < len(starts):
                pending = submit(starts[i + 1])  # decode the next batch while this one runs
            out[start : start + len(loaded)] = self._forward(loaded, texts[start : start + batch_size], side)
        return out

    def _load_image(self, image: ImageInput, side: str) -> tuple[dict[str, np.ndarray], bool]:
        """-> (preprocessed arrays, present?). Runs in a worker thread. ``side``: query / passage."""
        if image is None:
            return self.preprocess(self.preprocess.placeholder()), False
        try:
            pil = self.preprocess.open(image)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            if side == "query":
                raise InputError(
                    f"cannot read query image {image}: {exc}", hint="pass a readable JPEG/PNG file"
                ) from exc
            self.stats["unreadable_images"] += 1
            logger.debug("unreadable document image %s: %s", image, exc)
            return self.preprocess(self.preprocess.placeholder()), False
        return self.preprocess(pil), True

    @torch.inference_mode()
    def _forward(
        self, loaded: list[tuple[dict[str, np.ndarray], bool]], texts: Sequence[str | None], side: str
    ) -> np.ndarray:
        """One batch -> (B, T, dim) float32, each token L2-normalised."""
        cfg = self.config
        tokens = self.tokenizer(
            [t or "" for t in texts],
            padding="max_length" if cfg.text_padding == "max_length" else True,
            truncation=True,
            max_length=cfg.max_text_length,
            return_tensors="pt",
        )
        arrays = [a for a, _ in loaded]
        inputs = {
            key: torch.from_numpy(np.stack([a[key] for a in arrays])).to(self.device) for key in arrays[0]
        }
        pixel_values = inputs.pop("pixel_values").to(self.torch_dtype)
        text_present = torch.tensor([t is not None for t in texts], device=self.device)
        vision_present = torch.tensor([ok for _, ok in loaded], device=self.device)
        self.stats["text_only"] += int((~vision_present).sum())
        out = self.model(
            tokens["input_ids"].to(self.device),
            tokens["attention_mask"].to(self.device),
            pixel_values,
            text_present,
            vision_present,
            side=side,
            **inputs,
        )
        emb = F.normalize(out.tokens.float(), dim=-1)  # (B, T, dim), float32
        return emb.cpu().numpy()
