"""``ragvqa demo``: argument errors are one line; the real command serves the page offline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ragvqa.cli import main


def test_missing_kb_is_one_line_error(tmp_path, capsys):
    assert main(["demo", "--kb", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: knowledge base directory not found:") and "\n" not in err
    assert "ragvqa build-kb --sample" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--concurrency", "0"], "--concurrency must be between 1 and 256"),
        (["--queue-size", "0"], "--queue-size must be between 1 and 10000"),
        (["--profile", "offline", "--generator-url", "http://127.0.0.1:9/v1"], "--generator-url needs a vision-language profile"),
    ],
)
def test_bad_options_fail_before_loading_models(tmp_path, capsys, argv, message):
    assert main(["demo", "--kb", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_auth_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGVQA_DEMO_AUTH", "no-colon")
    assert main(["demo", "--kb", str(tmp_path)]) == 2
    assert "RAGVQA_DEMO_AUTH must look like user:password" in capsys.readouterr().err


def test_demo_modules_import_light():
    code = (
        "import sys, ragvqa.cli.demo, ragvqa.app, ragvqa.app.demo, ragvqa.app.render; "
        "print(sorted(m for m in ('torch', 'faiss', 'gradio', 'ray', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ragvqa_demo_serves_the_page_offline(demo_kb):
    """The real command, real offline profile (MiniLM + Gemma 3 270M): page up, then Ctrl-C stops it."""
    import httpx

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragvqa", "demo", "--kb", str(demo_kb), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 400  # model loading on a busy 2-core box
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()
        assert page is not None and page.status_code == 200
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).text
        assert "Profile <b>offline</b>" in config and "The photo was NOT used" in config
        assert str(demo_kb) in config  # the KB is named in the header
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "Models loaded in" in out and "Demo stopped." in out
    assert "Traceback" not in out
