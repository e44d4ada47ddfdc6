"""Generator backend: an OpenAI-compatible chat server, e.g. ``vllm serve``.

This is the normal GPU deployment: start the model once on a GPU machine with
``vllm serve Qwen/Qwen2.5-VL-7B-Instruct`` (docs/generation.md lists the
flags) and point ragvqa at it (``--generator-url http://HOST:8000/v1``).

Each question is one ``POST {base_url}/chat/completions`` with a single user
turn: the text before the photo, the photo as an ``image_url`` part holding a
``data:image/jpeg;base64,...`` URI, and the text after it
(:func:`ragvqa.generation.chat_formats.openai_messages`). The server applies
the model's own chat template.

Beam search goes through vLLM's extra request parameters. Checked against
vllm-project/vllm, file vllm/entrypoints/openai/chat_completion/protocol.py
(commit d5dba2d7b0ab9b98096560c69db7126b54b14d79): ``ChatCompletionRequest``
accepts ``use_beam_search: bool`` and ``length_penalty: float``, and its
``to_beam_search_params`` sets ``beam_width = n``; the response then holds
``n`` choices, best first. So a paper request is ``use_beam_search=true,
n=<beams>, temperature=0, max_tokens=20``. Older vLLM (< 0.6) also wanted
``best_of`` = beams; current vLLM rejects ``best_of`` for chat, so it is not sent.

Requests run concurrently (at most ``max_concurrency`` in flight), each with a
timeout; connection failures, timeouts, HTTP 429 and 5xx are retried with
exponential back-off; any other failure is a one-line GeneratorError naming
the server and what to do.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ragvqa.config import GeneratorConfig
from ragvqa.errors import GeneratorError, require
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.chat_formats import openai_messages
from ragvqa.generation.prompts import build_prompt

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Qwen2.5-VL's processor shrinks anything above this many pixels anyway
# (its default max_pixels); sending more only inflates the request.
MAX_SENT_PIXELS = 12_845_056
RETRY_STATUS = {429, 500, 502, 503, 504}


def image_data_uri(image: Image.Image, *, max_pixels: int = MAX_SENT_PIXELS, quality: int = 95) -> str:
    """A ``data:image/jpeg;base64,...`` URI for an RGB image.

    Images above ``max_pixels`` are scaled down (aspect kept) first.
    """
    width, height = image.size
    if width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
        image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def normalise_base_url(url: str) -> str:
    """``http://host:8000`` or ``.../v1/`` -> ``http://host:8000/v1``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise GeneratorError(
            f"generator URL {url!r} is not an http(s) URL", hint="pass e.g. --generator-url http://127.0.0.1:8000/v1"
        )
    return url if url.endswith("/v1") else f"{url}/v1"


class OpenAIGenerator:
    """Answers through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        config: backend settings; ``base_url``, ``model`` (the served model
            name), ``num_beams``, ``max_new_tokens``, ``timeout_s``,
            ``max_concurrency``.
        check: ask the server for ``/v1/models`` now, so a server that is down
            fails at load time with a clear error rather than at the first question.
        retries: extra attempts for retryable failures.
        backoff_s: first back-off delay; doubles on each retry.
    """

    def __init__(
        self,
        config: GeneratorConfig,
        *,
        check: bool = True,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        httpx = require("httpx", "offline")
        self.config = config
        self.base_url = normalise_base_url(config.base_url)
        self.model = config.model
        self.retries = retries
        self.backoff_s = backoff_s
        self.sees_images = config.family != "gemma_text"
        self.name = f"openai:{config.model}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            limits=httpx.Limits(max_connections=max(1, config.max_concurrency)),
        )
        if check:
            self.check_server()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- server check -----------------------------------------------------------------

    def served_models(self) -> list[str]:
        """Model names the server serves (``GET /v1/models``)."""
        body = self._request("GET", "/models", None)
        try:
            return [str(m["id"]) for m in body["data"]]
        except (KeyError, TypeError) as exc:
            raise GeneratorError(
                f"{self.base_url}/models answered without a model list ({_short(body)})",
                hint="is this an OpenAI-compatible server such as `vllm serve`?",
            ) from exc

    def check_server(self) -> None:
        """Fail now if the server is unreachable; adopt its model if it serves one other name."""
        served = self.served_models()
        if self.model in served:
            return
        if len(served) == 1:
            # `vllm serve /models/qwen` serves the path as its name; the profile's
            # hub id is then just a label. Use what the server has.
            log.warning("server %s serves %r, not %r; using it", self.base_url, served[0], self.model)
            self.model = served[0]
            self.name = f"openai:{self.model}"
            return
        raise GeneratorError(
            f"the server at {self.base_url} does not serve {self.model!r} (it serves: {', '.join(served) or 'nothing'})",
            hint="pass the served name with --generator-model, or start vllm serve with that model",
        )

    # -- generation -------------------------------------------------------------------

    def prompt_for(self, request: GenerationRequest) -> str:
        """The prompt text sent (``<image>`` marks where the photo part goes)."""
        parts = build_prompt(request.question, request.contexts, dataset=request.dataset)
        return parts.text("<image>" if request.image is not None and self.sees_images else "")

    def payload(self, request: GenerationRequest, num_beams: int, max_new_tokens: int) -> dict[str, Any]:
        """The JSON body of one chat completion request."""
        parts = build_prompt(request.question, request.contexts, dataset=request.dataset)
        image_url = image_data_uri(request.image) if request.image is not None and self.sees_images else None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(parts, image_url),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "n": 1,
        }
        if num_beams > 1:
            # vLLM: beam width = n; all n beams come back, best first.
            body.update({"use_beam_search": True, "n": num_beams, "length_penalty": 1.0})
        return body

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """One short answer per request, in order; requests run concurrently."""
        beams = num_beams or self.config.num_beams
        limit = max_new_tokens or self.config.max_new_tokens
        bodies = [self.payload(r, beams, limit) for r in requests]
        if len(bodies) <= 1:
            return [self._complete(b) for b in bodies]
        workers = max(1, min(self.config.max_concurrency, len(bodies)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragvqa-http") as pool:
            return list(pool.map(self._complete, bodies))

    def _complete(self, body: dict[str, Any]) -> str:
        response = self._request("POST", "/chat/completions", body)
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise GeneratorError(
                f"{self.base_url}/chat/completions answered without choices[0].message.content ({_short(response)})",
                hint="check the server's log; is it an OpenAI-compatible chat server?",
            ) from exc
        if not isinstance(content, str):
            raise GeneratorError(
                f"{self.base_url}/chat/completions answered with non-text content ({_short(content)})",
                hint="check the server's log",
            )
        return content.strip()

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One HTTP call with retries; returns the parsed JSON body."""
        import httpx

        url = f"{self.base_url}{path}"
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TimeoutException as exc:
                if last:
                    raise GeneratorError(
                        f"the generator server at {self.base_url} did not answer within {self.config.timeout_s:g} s "
                        f"({self.retries + 1} attempts)",
                        hint="the server may be overloaded; raise timeout_s or lower max_concurrency",
                    ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise GeneratorError(
                        f"cannot reach the generator server at {self.base_url} ({type(exc).__name__}: {exc})",
                        hint="start it with `vllm serve MODEL` (docs/generation.md) or pass --generator-url",
                    ) from exc
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise GeneratorError(
                            f"{url} answered HTTP {response.status_code} with a body that is not JSON "
                            f"({_short(response.text)})",
                            hint="check that --generator-url points at the OpenAI API (ends in /v1)",
                        ) from exc
                if response.status_code not in RETRY_STATUS or last:
                    raise GeneratorError(
                        f"{url} answered HTTP {response.status_code}: {_error_text(response)}",
                        hint=_hint_for(response.status_code),
                    )
            log.warning("request to %s failed (attempt %d of %d); retrying in %.1f s", url, attempt + 1, self.retries + 1, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_text(response: Any) -> str:
    """The server's error message (OpenAI error JSON or raw text), shortened."""
    try:
        body = response.json()
        if isinstance(body, dict):
            err = body.get("error", body)
            if isinstance(err, dict):
                return _short(err.get("message") or err)
            return _short(err)
    except ValueError:
        pass
    return _short(response.text or response.reason_phrase)


def _hint_for(status: int) -> str:
    if status == 404:
        return "the URL should end in /v1 and the model name should be one the server serves"
    if status in (400, 422):
        return "the server rejected the request; a vLLM server new enough for use_beam_search is needed (docs/generation.md)"
    if status in (401, 403):
        return "the server wants an API key; this client sends none (run vllm serve without --api-key on a private network)"
    return "check the server's log"
