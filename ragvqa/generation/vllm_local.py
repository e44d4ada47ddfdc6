"""Generator backend: vLLM in-process (``vllm.LLM``), for GPU environments.

Use it for large offline batches (evaluation) on a GPU machine where vLLM is
installed. vLLM's CUDA wheels pin their own torch, transformers and pillow
(0.33: torch 2.14, transformers < 5.21, pillow >= 13), which clash with the
demo's gradio 6; so vLLM lives in its own environment (docs/generation.md).
The usual way to use it is therefore the ``openai`` backend talking to
``vllm serve`` over HTTP; this backend is for a GPU environment built around
vLLM that also has ragvqa installed (``pip install --no-deps ragvqa`` there).

``vllm`` is imported only when this backend is chosen. The prompt is the
model family's chat format (:mod:`ragvqa.generation.chat_formats`) with one
image placeholder, which vLLM's multimodal processor expands itself; the
photo goes in ``multi_modal_data``. Beam search uses ``LLM.beam_search`` with
``BeamSearchParams(beam_width, max_tokens)``; one beam uses greedy
``LLM.generate``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ragvqa.config import GeneratorConfig
from ragvqa.errors import MissingDependencyError, ModelError
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.chat_formats import get_format
from ragvqa.generation.offline_gemma import clean_answer
from ragvqa.generation.prompts import build_prompt

log = logging.getLogger(__name__)


def import_vllm() -> Any:
    """Import vllm or explain where it belongs."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(
            f"the vllm backend needs the vllm package, which is not installed here ({exc})",
            hint="vLLM needs its own GPU environment: run `vllm serve MODEL` there and use "
            "--generator-url (backend openai); see docs/generation.md",
        ) from exc
    return vllm


class VLLMGenerator:
    """``vllm.LLM`` answering batches of requests with beam search.

    Args:
        config: ``model`` (path or hub id), ``family``, ``num_beams``,
            ``max_new_tokens``.
        llm_options: extra ``vllm.LLM`` keyword arguments (e.g.
            ``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``).
    """

    sees_images = True

    def __init__(self, config: GeneratorConfig, **llm_options: Any) -> None:
        vllm = import_vllm()
        self.config = config
        self.name = f"vllm:{config.model}"
        self.format = get_format(config.family)
        self.sees_images = config.family != "gemma_text"
        options = {"max_model_len": 8192, "limit_mm_per_prompt": {"image": 1}, **llm_options}
        try:
            self.llm = vllm.LLM(model=config.model, **options)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"vLLM could not load {config.model!r} ({' '.join(str(exc).split())[:300]})",
                hint="check the model path/id, GPU memory (gpu_memory_utilization) and max_model_len",
            ) from exc
        self._vllm = vllm

    def prompt_for(self, request: GenerationRequest) -> str:
        """The chat-formatted prompt (one image placeholder)."""
        parts = build_prompt(request.question, request.contexts, dataset=request.dataset)
        return self.format.render(parts, with_image=request.image is not None and self.sees_images)

    def _inputs(self, request: GenerationRequest) -> dict[str, Any]:
        prompt: dict[str, Any] = {"prompt": self.prompt_for(request)}
        if request.image is not None and self.sees_images:
            prompt["multi_modal_data"] = {"image": request.image}
        return prompt

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Answers for a batch of requests, in order (vLLM batches them itself)."""
        beams = num_beams or self.config.num_beams
        limit = max_new_tokens or self.config.max_new_tokens
        prompts = [self._inputs(r) for r in requests]
        if not prompts:
            return []
        if beams == 1:
            params = self._vllm.SamplingParams(temperature=0.0, max_tokens=limit, stop=list(self.format.stop))
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            return [clean_answer(o.outputs[0].text) for o in outputs]
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=beams, max_tokens=limit)
        outputs = self.llm.beam_search(prompts, params)
        tokenizer = self.llm.get_tokenizer()
        answers = []
        for out in outputs:
            best = out.sequences[0]
            # `tokens` holds prompt + answer; `logprobs` has one entry per
            # generated token, so its length says where the answer starts.
            generated = best.tokens[len(best.tokens) - len(best.logprobs) :]
            answers.append(clean_answer(tokenizer.decode(generated, skip_special_tokens=True)))
        return answers
