"""A small OpenAI-compatible chat server on 127.0.0.1 that checks what it gets.

It stands in for ``vllm serve`` (a GPU engine that cannot run here). It
validates each request the way vLLM's ``ChatCompletionRequest`` would need it
(messages with text and image_url parts, a decodable base64 image, beam
search fields), records it, and answers according to a script of behaviours
set by the test: ``ok``, ``status:<code>``, ``garbage`` (not JSON),
``no_choices``, ``drop`` (close the connection without
answering), ``sleep:<seconds>``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    """Run with ``with FakeOpenAIServer(models=[...]) as server: server.url``."""

    def __init__(
        self, models: list[str] | None = None, answer: str = "Eagle", delay_s: float = 0.0, pad: bool = True
    ) -> None:
        self.models = models or ["Qwen/Qwen2.5-VL-7B-Instruct"]
        self.answer = answer
        self.pad = pad  # False: choices[0] content is exactly `answer`
        self.delay_s = delay_s
        self.script: list[str] = []  # behaviours for the next chat requests, then "ok"
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []  # request validation failures
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    data = {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    behaviour = server.script.pop(0) if server.script else "ok"
                try:
                    time.sleep(server.delay_s)
                    body = json.loads(raw)
                    server.requests.append(body)
                    server.problems.extend(validate(body, server.models))
                    if behaviour.startswith("status:"):
                        code = int(behaviour.split(":")[1])
                        msg = {"error": {"message": f"scripted failure {code}", "code": code}}
                        self._send(code, json.dumps(msg).encode())
                    elif behaviour == "garbage":
                        self._send(200, b"<html>proxy error</html>", "text/html")
                    elif behaviour == "drop":  # a crashed server: the connection closes, no answer
                        self.close_connection = True
                    elif behaviour == "no_choices":
                        self._send(200, b'{"id": "x", "choices": []}')
                    elif behaviour.startswith("sleep:"):
                        time.sleep(float(behaviour.split(":")[1]))
                        self._send(200, json.dumps(reply(body, server.answer, server.pad)).encode())
                    else:
                        self._send(200, json.dumps(reply(body, server.answer, server.pad)).encode())
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def reply(body: dict[str, Any], answer: str, pad: bool = True) -> dict[str, Any]:
    """A chat completion with n choices; choice i says '<answer>' (+ ' #i' for i > 0).

    With ``pad`` the text comes as a model often writes it, after a space and
    before a newline; without it, exactly as given.
    """
    question = ""
    for part in body["messages"][0]["content"]:
        if part["type"] == "text" and "Question:" in part["text"]:
            question = part["text"].rsplit("Question:", 1)[1].splitlines()[0].strip()
    text = answer if answer != "{question}" else question
    n = body.get("n", 1)
    before, after = (" ", "\n") if pad else ("", "")
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": f"{before}{text}{'' if i == 0 else f' #{i}'}{after}"},
             "finish_reason": "stop"}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def validate(body: dict[str, Any], models: list[str]) -> list[str]:
    """What vLLM would reject (or what the paper's settings forbid) in a request."""
    problems = []
    if body.get("model") not in models:
        problems.append(f"unknown model {body.get('model')!r}")
    messages = body.get("messages")
    if not (isinstance(messages, list) and len(messages) == 1 and messages[0].get("role") == "user"):
        return [*problems, "expected exactly one user message"]
    for part in messages[0]["content"]:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            prefix = "data:image/jpeg;base64,"
            if not url.startswith(prefix):
                problems.append("image is not a JPEG data URI")
                continue
            from PIL import Image

            try:
                Image.open(io.BytesIO(base64.b64decode(url[len(prefix):], validate=True))).load()
            except Exception as exc:  # noqa: BLE001 - any decode failure is a problem to report
                problems.append(f"image does not decode: {exc}")
        elif part["type"] != "text":
            problems.append(f"unexpected content part {part['type']!r}")
    if body.get("use_beam_search"):
        if not isinstance(body.get("n"), int) or body["n"] < 2:
            problems.append("beam search needs n = beam width >= 2")
        if body.get("temperature") not in (0, 0.0):
            problems.append("beam search should run at temperature 0")
    if "best_of" in body:
        problems.append("best_of is rejected by current vLLM chat completions")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens missing")
    return problems
