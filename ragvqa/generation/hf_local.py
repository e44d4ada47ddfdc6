"""Generator backend: a vision-language model in-process with transformers (CPU or GPU).

For Qwen2.5-VL (``family="qwen2_5_vl"``) and LLaVA models in the transformers
format (``family="llava_more"``: ``LlavaForConditionalGeneration``, e.g. a
LLaVA-MORE checkpoint converted with transformers' LLaVA conversion script),
from a local directory or a hub id. Decoding is beam search as the paper sets
it (3 beams for Qwen2.5-VL, 5 for LLaVA-MORE, at most 20 new tokens).

No ``AutoProcessor``: transformers' stock Qwen2.5-VL processor insists on a
video processor, which needs torchvision (not installable beside the CPU
torch used here, see environment.md). The tokenizer and the PIL image
processor are loaded separately, the chat format is written by
:mod:`ragvqa.generation.chat_formats`, and the photo placeholder is expanded
to as many tokens as the image processor makes patches, exactly as the
processor would.
"""

from __future__ import annotations

import logging
from typing import Any

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError, ModelError, require
from ragvqa.generation.base import Generator, Prompt
from ragvqa.generation.torch_common import (
    generate_text,
    quiet_loading,
    resolve_device,
    stop_token_ids,
)

log = logging.getLogger(__name__)

FAMILIES = ("qwen2_5_vl", "llava_more")


class HFGenerator(Generator):
    """A transformers vision-language model answering one request at a time.

    One prompt per ``_generate_batch`` call: photos differ in size, so
    batching would pad both the text and the vision inputs.

    Args:
        config: ``model`` (path or hub id), ``family`` (``qwen2_5_vl`` or
            ``llava_more``), ``num_beams``, ``max_new_tokens``, ``device``.
    Attributes:
        name: ``"hf:<model>"``.
        sees_images: True.
    """

    backend = "hf"

    def __init__(self, config: GeneratorConfig) -> None:
        if config.family not in FAMILIES:
            raise InputError(
                f"the hf backend does not know model family {config.family!r}",
                hint=f"use one of {', '.join(FAMILIES)} (gemma_text runs on the gemma-offline backend)",
            )
        super().__init__(config)
        torch = require("torch", "offline")
        transformers = require("transformers", "offline")
        self.family = config.family
        self.device = resolve_device(config.device)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        source = config.model
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            if self.family == "qwen2_5_vl":
                from transformers import Qwen2_5_VLForConditionalGeneration
                from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                    Qwen2VLImageProcessorPil,
                )

                self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
                model_cls: Any = Qwen2_5_VLForConditionalGeneration
            else:
                from transformers import LlavaForConditionalGeneration

                self.image_processor = transformers.AutoImageProcessor.from_pretrained(source)
                model_cls = LlavaForConditionalGeneration
            with quiet_loading():
                self.model = model_cls.from_pretrained(source, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"cannot load {self.family} model {source!r} with transformers ({' '.join(str(exc).split())[:300]})",
                hint="pass a local checkpoint directory or a hub id (with network access) via --generator-model",
            ) from exc
        self.stop_ids = stop_token_ids(self.tokenizer, self.stop)

    def model_inputs(self, prompt: Prompt) -> dict[str, Any]:
        """Token ids and pixel tensors for one prompt, on the model's device.

        The photo placeholder is expanded the way the model's processor does:
        Qwen2.5-VL gets one ``<|image_pad|>`` per 2x2 group of 14-pixel
        patches (grid_t * grid_h * grid_w / merge_size**2); LLaVA gets one
        ``<image>`` per vision-tower patch (+1 with the "full" feature strategy).
        """
        text = prompt.text
        extra: dict[str, Any] = {}
        if prompt.image is not None:
            vision = self.image_processor(images=[prompt.image], return_tensors="pt")
            if self.family == "qwen2_5_vl":
                grid = vision["image_grid_thw"]  # (1, 3): t, h, w in patches
                merge = int(getattr(self.image_processor, "merge_size", 2))
                n_tokens = int(grid.prod()) // (merge * merge)
                text = text.replace("<|image_pad|>", "<|image_pad|>" * n_tokens, 1)
                extra = {"pixel_values": vision["pixel_values"], "image_grid_thw": grid}
            else:
                cfg = self.model.config
                side = cfg.vision_config.image_size // cfg.vision_config.patch_size
                n_tokens = side * side + (1 if cfg.vision_feature_select_strategy == "full" else 0)
                image_token = self.tokenizer.convert_ids_to_tokens(cfg.image_token_id)
                text = text.replace("<image>", image_token * n_tokens, 1)
                extra = {"pixel_values": vision["pixel_values"]}
        # The chat format already holds BOS where the family wants one.
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        inputs = {**encoded, **extra}
        dtype = self.model.dtype
        return {
            k: (v.to(self.device, dtype=dtype) if k == "pixel_values" else v.to(self.device))
            for k, v in inputs.items()
        }

    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        text = generate_text(
            self.model,
            self.tokenizer,
            self.model_inputs(prompts[0]),  # batch_size 1
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id or self.stop_ids[0],
        )
        return [text]
