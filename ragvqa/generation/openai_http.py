"""Generator backend: an OpenAI-compatible chat server, e.g. ``vllm serve``.

This is the normal GPU deployment: start the model once on a GPU machine with
``vllm serve Qwen/Qwen2.5-VL-7B-Instruct`` (docs/generation.md lists the
flags) and point ragvqa at it (``--generator-url http://HOST:8000/v1``). On
any machine, ``scripts/serve_vllm_cpu.sh`` serves the offline profile's Gemma
3 270M with a real vLLM CPU server for ``--profile offline --generator-url``.

Each question is one ``POST {base_url}/chat/completions`` with a single user
turn: the text before the photo, the photo as an ``image_url`` part holding a
``data:image/jpeg;base64,...`` URI, and the text after it
(:func:`ragvqa.generation.chat_formats.openai_messages`). The server applies
the model's own chat template. The prompt is the model FAMILY's (the paper's
prompt for the chat families; the completion prompt for ``gemma_text``,
whose served model reads it verbatim through the template that
``ragvqa/prompts/gemma_base_chat.jinja`` provides).

What the client learns from the server when it connects (``check=True``):

- ``GET /v1/models``: the served name (a single model under another name is
  adopted) and vLLM's ``max_model_len``, the context the prompt must fit;
- for families that look at photos, whether the served model takes images:
  vLLM's ``POST /tokenize`` of a one-pixel-photo message answers HTTP 400
  "... is not a multimodal model" for a text-only model, which then gets no
  photo (a warning says so). A server without ``/tokenize`` (not vLLM) is
  taken at the family's word.

Before each request the prompt is fitted to ``max_model_len``: when its
token count (vLLM's ``/tokenize``, i.e. the served model's own tokenizer and
chat template) plus ``max_new_tokens`` does not fit, the retrieved documents
are cut, all to the same number of characters, to the longest length that
fits (a warning gives the numbers); if even documents cut to nothing do not
fit, a one-line GeneratorError gives the numbers. The photo's tokens are not
counted (only the server's processor knows them); a request that overflows
because of them gets the server's own error, which names the numbers too.

Decoding: ``temperature 0``; the family's plain-text stop sequences (``\\n``
for ``gemma_text``: the base model would go on to invent the next question),
with ``min_tokens 1`` so an answer never ends before its first token; chat
families stop at their end-of-turn token, which the server knows from the
model's generation config. Beam search goes through vLLM's extra request
parameters: ``use_beam_search: true, n: <beams>, length_penalty: 1.0``
(vLLM: ``ChatCompletionRequest.to_beam_search_params`` takes ``n`` as the
beam width; the ``n`` beams come back best first). vLLM's beam search
(0.32, ``entrypoints/generate/beam_search``) ends beams only at the EOS
token, not at stop strings, so a base model's beams run to ``max_tokens``;
the shared clean-up keeps the first line. ``best_of`` is not sent (current
vLLM rejects it for chat).

Requests run concurrently (at most ``max_concurrency`` in flight), each with a
timeout; connection failures, timeouts, HTTP 429 and 5xx are
:class:`~ragvqa.generation.base.TransientError` and retried with exponential
back-off by the base class; any other failure is a one-line GeneratorError
quoting the server's message, with a hint chosen from what that message
says. The answer goes through the same clean-up as every other backend's
(:func:`ragvqa.generation.base.clean_answer`).
"""


from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ragvqa.config import GeneratorConfig
from ragvqa.errors import GeneratorError, require
from ragvqa.generation.base import (
    IMAGE_MARKER,
    Generation,
    GenerationRequest,
    Generator,
    Prompt,
    TransientError,
    clean_answer,
)
from ragvqa.generation.chat_formats import openai_messages
from ragvqa.generation.prompts import PromptParts, build_prompt, gemma_completion_prompt

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Qwen2.5-VL's processor shrinks anything above this many pixels anyway
# (its default max_pixels); sending more only inflates the request.
MAX_SENT_PIXELS = 12_845_056
RETRY_STATUS = {429, 500, 502, 503, 504}
# Chat-template tokens a served model may add around the user turn (Llama
# 3.1's system turn with LLaVA-MORE's prompt is under 100): a prompt whose
# UTF-8 bytes plus this fit needs no token count.
TEMPLATE_TOKENS_MAX = 256
# The offline completion prompt keeps this many characters of each document
# (gemma_completion_prompt's default); a fitted prompt keeps at most as many.
GEMMA_CONTEXT_CHARS = 400


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


@dataclass(frozen=True)
class ServedModel:
    """One model a server serves (an entry of ``GET /v1/models``).

    Attributes:
        name: the served model name (what requests put in ``model``).
        max_model_len: the context length in tokens, prompt plus answer, when
            the server says it (vLLM does); None otherwise.
    """

    name: str
    max_model_len: int | None = None


class OpenAIGenerator(Generator):
    """Answers through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    One prompt per HTTP request (``batch_size`` 1), at most
    ``config.max_concurrency`` in flight; the base class batches, retries and
    cleans up the answers (:class:`ragvqa.generation.base.Generator`).

    Args:
        config: backend settings; ``base_url``, ``model`` (the served model
            name), ``family``, ``num_beams``, ``max_new_tokens``,
            ``timeout_s``, ``max_concurrency``.
        check: ask the server now what it serves (``/v1/models``: name,
            context length) and whether it takes photos, so a server that is
            down or unsuitable fails at load time with a clear error rather
            than at the first question.
        retries: extra attempts for retryable failures.
        backoff_s: first back-off delay; doubles on each retry.
    Attributes:
        max_model_len: the served context length (None: unknown, prompts are
            sent as they are).
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
        # vLLM's /tokenize lives beside /v1, at the server's root.
        self.server_root = self.base_url.removesuffix("/v1")
        self.model = config.model
        self.max_model_len: int | None = None
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = max(1, config.max_concurrency)
        # Plain-text stop sequences only: end-of-turn markers are special
        # tokens, which the server drops from the text before matching stops.
        self.stop = tuple(s for s in self.stop if s and not _is_special_marker(s))
        self._can_tokenize: bool | None = None  # None: not asked yet
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

    # -- what the server serves ---------------------------------------------------------

    def served_models(self) -> list[ServedModel]:
        """The models the server serves (``GET /v1/models``), with vLLM's ``max_model_len``."""
        body = self.with_retries(self._request, "GET", "/models", None)
        try:
            return [ServedModel(str(m["id"]), _positive_int(m.get("max_model_len"))) for m in body["data"]]
        except (KeyError, TypeError, AttributeError) as exc:
            raise GeneratorError(
                f"{self.base_url}/models answered without a model list ({_short(body)})",
                hint="is this an OpenAI-compatible server such as `vllm serve`?",
            ) from exc

    def check_server(self) -> None:
        """Learn the served model (name, context length) and whether it takes photos.

        Raises:
            GeneratorError: unreachable server, no such model, or a served
                model that cannot take chat requests at all.
        """
        served = self.served_models()
        by_name = {m.name: m for m in served}
        if self.model in by_name:
            chosen = by_name[self.model]
        elif len(served) == 1:
            # `vllm serve /models/qwen` serves the path as its name; the profile's
            # hub id is then just a label. Use what the server has.
            chosen = served[0]
            log.warning("server %s serves %r, not %r; using it", self.base_url, chosen.name, self.model)
            self.model = chosen.name
            self.name = f"openai:{self.model}"
        else:
            raise GeneratorError(
                f"the server at {self.base_url} does not serve {self.model!r} "
                f"(it serves: {', '.join(by_name) or 'nothing'})",
                hint="pass the served name with --generator-model, or start vllm serve with that model",
            )
        self.max_model_len = chosen.max_model_len
        if self.sees_images:
            self._check_takes_images()

    def _check_takes_images(self) -> None:
        """Stop sending photos to a text-only model (vLLM's /tokenize tells, at no generation cost)."""
        from PIL import Image

        pixel = image_data_uri(Image.new("RGB", (28, 28), (128, 128, 128)))
        probe = openai_messages(PromptParts("", "."), pixel)
        response = self.with_retries(
            self._send, "POST", f"{self.server_root}/tokenize", {"model": self.model, "messages": probe}
        )
        if response.status_code == 404:
            self._can_tokenize = False  # not vLLM: trust the family
            return
        if response.status_code < 400:
            self._can_tokenize = True
            return
        message = _error_text(response)
        if "not a multimodal model" in message:
            self._can_tokenize = True
            self.sees_images = False
            log.warning(
                "the served model %r on %s takes no images: it answers from the question and the "
                "retrieved text only",
                self.model,
                self.base_url,
            )
            return
        if "chat template" in message:
            raise GeneratorError(
                f"the server at {self.base_url} cannot take chat requests for {self.model!r}: {message}",
                hint=_hint_for(response.status_code, message),
            )
        # Anything else (an image the processor dislikes, ...): the real
        # requests will show whether it matters, with the server's message.
        log.warning("could not ask %s whether %r takes images (HTTP %d: %s)", self.base_url, self.model,
                    response.status_code, message)

    # -- prompt: fitted to the served context ---------------------------------------------

    def _render(self, parts: PromptParts, *, with_image: bool) -> str:
        # The server applies the chat template; what is sent is the user turn,
        # with the photo part where IMAGE_MARKER stands.
        return parts.text(IMAGE_MARKER if with_image else "")

    def generate_detailed(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Generation]:
        """As :meth:`Generator.generate_detailed`, each prompt fitted to the served context first.

        Fitting needs the call's ``max_new_tokens`` and the request's
        documents, so it happens here rather than in :meth:`prepare`; the
        prompt reported with each answer is the one sent.

        Raises:
            GeneratorError: a prompt that cannot fit even with its documents
                cut to nothing (the message gives the token counts).
        """
        beams, limit = self.decoding(num_beams, max_new_tokens)
        prompts = [self.fit(r, self.prepare(r), limit) for r in requests]
        raws = self._run_batches(prompts, beams, limit)
        return [
            Generation(text=clean_answer(raw), raw=raw, prompt=p.text) for p, raw in zip(prompts, raws, strict=True)
        ]

    def count_tokens(self, prompt: Prompt) -> int | None:
        """Tokens of ``prompt`` as the served model reads it (chat template included, photo excluded).

        Asks vLLM's ``POST /tokenize``; None when the server has no such
        endpoint (then prompts are sent as they are).
        """
        if self._can_tokenize is False:
            return None
        body = {
            "model": self.model,
            "messages": openai_messages(prompt.parts, None),
            "add_generation_prompt": True,
        }
        response = self.with_retries(self._send, "POST", f"{self.server_root}/tokenize", body)
        if response.status_code == 404:
            self._can_tokenize = False
            return None
        self._can_tokenize = True
        if response.status_code >= 400:
            raise GeneratorError(
                f"{self.server_root}/tokenize answered HTTP {response.status_code}: {_error_text(response)}",
                hint=_hint_for(response.status_code, _error_text(response)),
            )
        try:
            return int(response.json()["count"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GeneratorError(
                f"{self.server_root}/tokenize answered without a token count ({_short(response.text)})",
                hint="is this a vLLM server?",
            ) from exc

    def fit(self, request: GenerationRequest, prompt: Prompt, max_new_tokens: int) -> Prompt:
        """``prompt``, or the same prompt with its documents cut so it fits the served context.

        Raises:
            GeneratorError: it does not fit even with the documents cut to
                nothing (the message gives the numbers).
        """
        if self.max_model_len is None:
            return prompt
        budget = self.max_model_len - max_new_tokens
        # A token covers at least one byte of text: a prompt this short fits
        # whatever the tokenizer, and needs no round trip to count it.
        if len(prompt.text.encode("utf-8")) + TEMPLATE_TOKENS_MAX <= budget:
            return prompt
        tokens = self.count_tokens(prompt)
        if tokens is None or tokens <= budget:
            return prompt
        longest = self._context_chars_limit(request)
        if longest is None:
            raise self._too_long(tokens, max_new_tokens, cut=False)
        # Binary search for the longest per-document cut that fits.
        low, high, best = 0, longest, None
        smallest = tokens
        while low <= high:
            middle = (low + high) // 2
            candidate = self._cut(request, prompt, middle)
            count = self.count_tokens(candidate)
            assert count is not None  # the server answered /tokenize above
            smallest = min(smallest, count)
            if count <= budget:
                best, low = (candidate, middle, count), middle + 1
            else:
                high = middle - 1
        if best is None:
            raise self._too_long(smallest, max_new_tokens, cut=True)
        candidate, chars, count = best
        log.warning(
            "the prompt for %r was %d tokens; with %d new tokens it exceeds the %d that %s takes, so each "
            "retrieved document was cut to %d characters (%d tokens)",
            request.question[:60],
            tokens,
            max_new_tokens,
            self.max_model_len,
            self.model,
            chars,
            count,
        )
        return candidate

    def _context_chars_limit(self, request: GenerationRequest) -> int | None:
        """The per-document character cut the prompt already has (None: no documents to cut)."""
        if not request.contexts:
            return None
        longest = max(len(" ".join(c.split())) for c in request.contexts)
        if self.config.family == "gemma_text":
            longest = min(longest, GEMMA_CONTEXT_CHARS)
        return max(0, longest - 1)  # the current prompt (no cut) is known not to fit

    def _cut(self, request: GenerationRequest, prompt: Prompt, chars: int) -> Prompt:
        """The prompt with every document cut to ``chars`` characters."""
        if self.config.family == "gemma_text":
            parts = PromptParts(
                "",
                gemma_completion_prompt(
                    request.question, request.contexts, dataset=request.dataset, max_context_chars=chars
                ),
            )
        else:
            parts = build_prompt(request.question, request.contexts, dataset=request.dataset, max_context_chars=chars)
        return Prompt(text=self._render(parts, with_image=prompt.image is not None), parts=parts, image=prompt.image)

    def _too_long(self, tokens: int, max_new_tokens: int, *, cut: bool) -> GeneratorError:
        how = " with the retrieved documents cut to nothing" if cut else ""
        return GeneratorError(
            f"the prompt is {tokens:,} tokens{how}; with {max_new_tokens:,} new tokens it needs "
            f"{tokens + max_new_tokens:,}, but {self.model} on {self.base_url} takes at most "
            f"{self.max_model_len:,} (its max_model_len)",
            hint="ask a shorter question, lower --max-new-tokens, or serve the model with a larger --max-model-len",
        )

    # -- generation -------------------------------------------------------------------

    def payload(self, prompt: Prompt, num_beams: int, max_new_tokens: int) -> dict[str, Any]:
        """The JSON body of one chat completion request."""
        image_url = image_data_uri(prompt.image) if prompt.image is not None and self.sees_images else None
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(prompt.parts, image_url),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "n": 1,
        }
        if self.stop:
            # min_tokens 1: the first token is never checked against the
            # stop strings, so an answer cannot end before it begins.
            body.update({"stop": list(self.stop), "min_tokens": 1})
        if num_beams > 1:
            # vLLM: beam width = n; all n beams come back, best first.
            body.update({"use_beam_search": True, "n": num_beams, "length_penalty": 1.0})
        return body

    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        return [self._complete(p, num_beams, max_new_tokens) for p in prompts]

    def _complete(self, prompt: Prompt, num_beams: int, max_new_tokens: int) -> str:
        body = self.payload(prompt, num_beams, max_new_tokens)
        url = f"{self.base_url}/chat/completions"
        response = self._send("POST", url, body)
        if response.status_code == 400 and prompt.image is not None and self.sees_images:
            message = _error_text(response)
            if "not a multimodal model" in message:
                # Not checked at load (check=False): learn it now, once.
                log.warning("the served model %r takes no images; sending the text only", self.model)
                self.sees_images = False
                response = self._send("POST", url, self.payload(prompt, num_beams, max_new_tokens))
        answer = self._json(response, url)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise GeneratorError(
                f"{url} answered without choices[0].message.content ({_short(answer)})",
                hint="check the server's log; is it an OpenAI-compatible chat server?",
            ) from exc
        if not isinstance(content, str):
            raise GeneratorError(
                f"{url} answered with non-text content ({_short(content)})",
                hint="check the server's log",
            )
        return content

    # -- HTTP -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One call to ``{base_url}{path}``; returns the parsed JSON body.

        Raises:
            TransientError: unreachable, timed out, HTTP 429 or 5xx (retried by the caller).
            GeneratorError: any other failure.
        """
        url = f"{self.base_url}{path}"
        return self._json(self._send(method, url, body), url)

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        """One HTTP call; the response, whatever its status except 429/5xx.

        Raises:
            TransientError: unreachable, timed out, broken connection, HTTP 429 or 5xx.
        """
        import httpx

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
                hint="start it with `vllm serve MODEL` or scripts/serve_vllm_cpu.sh (docs/generation.md), "
                "or pass --generator-url",
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"the connection to the generator server at {self.base_url} broke before it answered "
                f"({type(exc).__name__}: {_short(exc)})",
                hint="check the server's log: it may have crashed or run out of memory",
            ) from exc
        if response.status_code in RETRY_STATUS:
            message = _error_text(response)
            raise TransientError(
                f"{url} answered HTTP {response.status_code}: {message}",
                hint=_hint_for(response.status_code, message),
            )
        return response

    def _json(self, response: Any, url: str) -> Any:
        """The JSON body of a successful response; a one-line GeneratorError otherwise."""
        if response.status_code >= 400:
            message = _error_text(response)
            raise GeneratorError(
                f"{url} answered HTTP {response.status_code}: {message}",
                hint=_hint_for(response.status_code, message),
            )
        try:
            return response.json()
        except ValueError as exc:
            raise GeneratorError(
                f"{url} answered HTTP {response.status_code} with a body that is not JSON ({_short(response.text)})",
                hint="check that --generator-url points at the OpenAI API (ends in /v1)",
            ) from exc


def _is_special_marker(text: str) -> bool:
    """``<|im_end|>``-style markers: special tokens, never in a server's output text."""
    return text.startswith("<|") and text.endswith("|>")


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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


# What a server's error message says -> what to do about it. Checked in
# order against the lower-cased message; the first match gives the hint.
_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("maximum context length", "context length", "max_model_len", "too long"),
        "the prompt does not fit the served model: lower --k or --max-new-tokens, or serve it with a "
        "larger --max-model-len",
    ),
    (
        ("not a multimodal model",),
        "the served model takes no images; ragvqa sends none once it knows (check the server with "
        "GET /v1/models)",
    ),
    (
        ("chat template",),
        "the served model has no chat template: start the server with --chat-template FILE "
        "(scripts/serve_vllm_cpu.sh passes ragvqa/prompts/gemma_base_chat.jinja)",
    ),
    (
        ("limit_mm_per_prompt", "at most 0 image", "at most 0 image(s)"),
        "the server takes no images for this model: start it with --limit-mm-per-prompt '{\"image\": 1}'",
    ),
    (
        ("use_beam_search", "length_penalty", "beam search", "beam_search"),
        "this server does not take vLLM's beam-search fields (use_beam_search, n, length_penalty): "
        "serve the model with vLLM, or answer greedily with --beams 1",
    ),
    (
        ("min_tokens", "extra inputs are not permitted", "extra_forbidden", "unrecognized request argument"),
        "this server refuses a field vLLM takes (the message names it): serve the model with vLLM",
    ),
)


def _hint_for(status: int, message: str = "") -> str:
    """What to do about an HTTP error, chosen from what the server's message says."""
    lowered = message.lower()
    for needles, hint in _CAUSES:
        if any(n in lowered for n in needles):
            return hint
    if status == 404:
        return "the URL should end in /v1 and the model name should be one the server serves"
    if status in (401, 403):
        return "the server wants an API key; this client sends none (run vllm serve without --api-key on a private network)"
    if status in (400, 422):
        return "the server refused the request; its message above says why"
    return "check the server's log"
