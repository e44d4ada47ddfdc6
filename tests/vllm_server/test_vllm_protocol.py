"""The request shapes ragvqa's HTTP client sends, read by vLLM's own code (no server needed).

vLLM 0.32's request model (``ChatCompletionRequest``, the class its server
validates every chat request with) parses the bodies the client builds for
each paper family, with a photo, and turns them into the engine's beam-search
or sampling parameters; vLLM's template inspector says whether a chat
template gets structured content parts (the "openai" content format, which
keeps the photo where the client put it). Run in ``.venv-vllm``, where vLLM
lives; skipped only when that environment cannot be made.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
from PIL import Image

from ragvqa.config import PROFILES
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.openai_http import OpenAIGenerator
from ragvqa.generation.prompts import load_template

pytestmark = [pytest.mark.vllm_server]

READ_WITH_VLLM = r"""
import json, sys
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.renderers.hf import _detect_content_format

given = json.load(sys.stdin)
out = {"requests": [], "formats": {}}
for body in given["bodies"]:
    request = ChatCompletionRequest.model_validate(body)
    parts = [p["type"] for p in request.messages[0]["content"]]
    if request.use_beam_search:
        p = request.to_beam_search_params(body["max_tokens"], {})
        decoded = {"beam_width": p.beam_width, "max_tokens": p.max_tokens, "temperature": p.temperature,
                   "length_penalty": p.length_penalty}
    else:
        p = request.to_sampling_params(body["max_tokens"], {})
        decoded = {"n": p.n, "max_tokens": p.max_tokens, "temperature": p.temperature,
                   "stop": p.stop, "min_tokens": p.min_tokens}
    out["requests"].append({"parts": parts, "params": decoded})
for name, text in given["templates"].items():
    out["formats"][name] = _detect_content_format(text, default="string")
print(json.dumps(out))
"""


def unchecked(profile: str, **changes) -> OpenAIGenerator:
    """The profile's HTTP generator without a server (no load-time check)."""
    config = replace(PROFILES[profile].generator, backend="openai", **changes)
    return OpenAIGenerator(config, check=False)


def test_vllm_reads_the_client_requests_as_meant(vllm_env):
    photo = Image.new("RGB", (64, 48), (200, 30, 30))
    request = GenerationRequest("What was the lunar module called?", ("Apollo 11 landed Eagle.",), photo)
    infoseek = replace(request, dataset="infoseek")
    bodies = []
    with unchecked("paper") as qwen:
        bodies.append(qwen.payload(qwen.prepare(request), 3, 20))
        bodies.append(qwen.payload(qwen.prepare(infoseek), 3, 20))
    with unchecked("paper-llava") as llava:
        bodies.append(llava.payload(llava.prepare(request), 5, 20))
    with unchecked("offline") as gemma:
        bodies.append(gemma.payload(gemma.prepare(request), 1, 20))
    templates = {name: load_template(name) for name in ("gemma_base_chat.jinja", "llava_more_chat.jinja")}
    done = subprocess.run(
        [str(vllm_env / "bin" / "python"), "-c", READ_WITH_VLLM],
        input=json.dumps({"bodies": bodies, "templates": templates}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout.strip().splitlines()[-1])
    qwen_evqa, qwen_infoseek, llava_evqa, gemma_greedy = read["requests"]
    # The photo part stays where the client put it (after the worked examples for InfoSeek).
    assert qwen_evqa["parts"] == ["image_url", "text"] and llava_evqa["parts"] == ["image_url", "text"]
    assert qwen_infoseek["parts"] == ["text", "image_url", "text"]
    # The paper's decoding: beam search, 3 beams (Qwen2.5-VL) / 5 (LLaVA-MORE), 20 new tokens.
    assert qwen_evqa["params"] == {"beam_width": 3, "max_tokens": 20, "temperature": 0.0, "length_penalty": 1.0}
    assert llava_evqa["params"]["beam_width"] == 5
    # The offline model: greedy, stops at the newline, never before its first token; no photo.
    assert gemma_greedy["parts"] == ["text"]
    assert gemma_greedy["params"] == {"n": 1, "max_tokens": 20, "temperature": 0.0, "stop": ["\n"], "min_tokens": 1}
    # Both shipped templates take structured parts, so vLLM keeps the photo in place.
    assert read["formats"] == {"gemma_base_chat.jinja": "openai", "llava_more_chat.jinja": "openai"}
