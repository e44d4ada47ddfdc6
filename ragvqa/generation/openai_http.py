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
timeout; connection failures, timeouts, HTTP 429 and 5xx are
:class:`~ragvqa.generation.base.TransientError` and retried with exponential
back-off by the base class; any other failure is a one-line GeneratorError
naming the server and what to do. The answer goes through the same clean-up
as every other backend's (:func:`ragvqa.generation.base.clean_answer`).
"""

from __future__ import annotations

import base64
import io
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ragvqa.config import GeneratorConfig
from ragvqa.errors import GeneratorError, require
from ragvqa.generation.base import IMAGE_MARKER, Generator, Prompt, TransientError
from ragvqa.generation.chat_formats import openai_messages
from ragvqa.generation.prompts import PromptParts

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
    """``http://host:8000`` or ``.../v1/`` -> ``http://host:8000/v1``.

    Raises:
        GeneratorError: not an http(s) URL with a host (and a valid port), or
            one holding spaces, control characters, credentials, a query or a
            fragment.
    """
    text = url.strip()

    def refuse(why: str, *, show: bool = True) -> GeneratorError:
        where = f"the generator URL {text!r}" if show else "the generator URL"
        return GeneratorError(f"{where} {why}", hint="pass e.g. --generator-url http://127.0.0.1:8000/v1")

    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise refuse("holds spaces or control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise refuse(f"cannot be parsed ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise refuse("is not an http(s) URL")
    if not parts.hostname:
        raise refuse("has no host name")
    if parts.username is not None or parts.password is not None:
        # ragvqa sends no credentials, and a password would be printed in errors.
        raise refuse("holds a user name or password; ragvqa talks to servers without credentials", show=False)
    if parts.query or parts.fragment:
        raise refuse("has a query or fragment; give the API's base URL")
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return base if path.endswith("/v1") else f"{base}/v1"


class OpenAIGenerator(Generator):
    """Answers through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    One prompt per HTTP request (``batch_size`` 1), at most
    ``config.max_concurrency`` in flight; the base class batches, retries and
    cleans up the answers (:class:`ragvqa.generation.base.Generator`).

    Args:
        config: backend settings; ``base_url``, ``model`` (the served model
            name), ``num_beams``, ``max_new_tokens``, ``timeout_s``,
            ``max_concurrency``.
        check: ask the server for ``/v1/models`` now, so a server that is down
            fails at load time with a clear error rather than at the first question.
        retries: extra attempts for retryable failures.
        backoff_s: first back-off delay; doubles on each retry.
    """

    backend = "openai"

    def __init__(
        self,
        config: GeneratorConfig,
        *,
        check: bool = True,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        httpx = require("httpx", "offline")
        super().__init__(config)
        self.base_url = normalise_base_url(config.base_url)
        self.model = config.model
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, config.max_concurrency)
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        if check:
            try:
                self.check_server()
            except BaseException:
                self.close()  # the caller never gets the object, so nobody else can
                raise

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- server check -----------------------------------------------------------------

    def served_models(self) -> list[str]:
        """Model names the server serves (``GET /v1/models``)."""
        body = self.with_retries(self._request, "GET", "/models", None)
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

    def _render(self, parts: PromptParts, *, with_image: bool) -> str:
        # The server applies the chat template; what is sent is the user turn,
        # with the photo part where IMAGE_MARKER stands.
        return parts.text(IMAGE_MARKER if with_image else "")

    def payload(self, prompt: Prompt, num_beams: int, max_new_tokens: int) -> dict[str, Any]:
        """The JSON body of one chat completion request."""
        image_url = image_data_uri(prompt.image) if prompt.image is not None else None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(prompt.parts, image_url),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "n": 1,
        }
        if num_beams > 1:
            # vLLM: beam width = n; all n beams come back, best first.
            body.update({"use_beam_search": True, "n": num_beams, "length_penalty": 1.0})
        return body

    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        return [self._complete(self.payload(p, num_beams, max_new_tokens)) for p in prompts]

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
        return content

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One HTTP call; returns the parsed JSON body.

        Raises:
            TransientError: unreachable, timed out, HTTP 429 or 5xx (retried by the caller).
            GeneratorError: any other failure.
        """
        import httpx

        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"the generator server at {self.base_url} did not answer within {self.config.timeout_s:g} s",
                hint="the server may be overloaded; raise timeout_s or lower max_concurrency",
            ) from exc
        except httpx.ConnectError as exc:
            raise TransientError(
                f"cannot reach the generator server at {self.base_url} ({type(exc).__name__}: {_short(exc)})",
                hint="start it with `vllm serve MODEL` (docs/generation.md) or pass --generator-url",
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"the connection to the generator server at {self.base_url} broke before it answered "
                f"({type(exc).__name__}: {_short(exc)})",
                hint="check the server's log: it may have crashed or run out of memory",
            ) from exc
        if response.status_code in RETRY_STATUS:
            raise TransientError(
                f"{url} answered HTTP {response.status_code}: {_error_text(response)}",
                hint=_hint_for(response.status_code),
            )
        if response.status_code >= 400:
            raise GeneratorError(
                f"{url} answered HTTP {response.status_code}: {_error_text(response)}",
                hint=_hint_for(response.status_code),
            )
        try:
            return response.json()
        except ValueError as exc:
            raise GeneratorError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON ({_short(response.text)})",
                hint="check that --generator-url points at the OpenAI API (ends in /v1)",
            ) from exc


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
