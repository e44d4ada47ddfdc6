"""An OpenAI-compatible chat server on 127.0.0.1 that answers like a reader of the context.

It stands in for ``vllm serve`` (which needs a GPU). Each request is checked
with the generation tests' vLLM-style validator
(``tests.generation.fake_openai_server.validate``: one user message, a JPEG
data URI that decodes, beam-search fields), and answered from the prompt it
got: for a question that contains one of ``ragvqa.kb.sample.SAMPLE_QUESTIONS``,
the expected answer when it appears in the prompt's ``Context:`` block, else
``unknown``. So an answer is "correct" only if retrieval found the right
document AND the pipeline put it in the prompt.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ragvqa.kb.sample import SAMPLE_QUESTIONS
from tests.generation.fake_openai_server import validate

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def prompt_text(body: dict[str, Any]) -> str:
    """The text parts of the one user message, joined."""
    return "".join(p.get("text", "") for p in body["messages"][0]["content"] if p.get("type") == "text")


def oracle_answer(prompt: str) -> str:
    """The sample answer if its question is asked and its answer is in the context, else 'unknown'."""
    question = prompt.rsplit("Question:", 1)[-1].split("\n", 1)[0]
    context = prompt.split("Context:", 1)[1] if "Context:" in prompt else ""
    for sample in SAMPLE_QUESTIONS:
        if sample.question in question:
            return sample.answer if sample.answer.lower() in context.lower() else "unknown"
    return "unknown"


class OracleServer:
    """``with OracleServer() as server: server.url`` (ends in /v1).

    Attributes:
        requests: the JSON bodies received, in arrival order.
        problems: what vLLM would reject in them (should stay empty).
        max_in_flight: most chat requests handled at the same moment.
    """

    def __init__(self, models: tuple[str, ...] = (MODEL,), delay_s: float = 0.05) -> None:
        self.models = list(models)
        self.delay_s = delay_s  # long enough for concurrent requests to overlap
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    threading.Event().wait(server.delay_s)
                    body = json.loads(raw)
                    problems = validate(body, server.models)
                    with server._lock:
                        server.requests.append(body)
                        server.problems.extend(problems)
                    text = oracle_answer(prompt_text(body))
                    n = int(body.get("n", 1))
                    self._send(200, {
                        "id": "chatcmpl-oracle",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": i, "message": {"role": "assistant", "content": f" {text}\n"}, "finish_reason": "stop"}
                            for i in range(n)
                        ],
                    })
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.problems.clear()
            self.max_in_flight = self.in_flight

    def __enter__(self) -> OracleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
