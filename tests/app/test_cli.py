"""``ragvqa demo``: argument errors are one line; the real command serves the page offline."""

from __future__ import annotations

import subprocess
import sys

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
    ],
)
def test_bad_options_fail_before_loading_models(tmp_path, capsys, argv, message):
    assert main(["demo", "--kb", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_port_in_use_fails_before_loading_models(tmp_path, capsys):
    import socket

    # tmp_path is no KB: had the models (and the KB) been loaded first, the error would be about the KB.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code = main(["demo", "--kb", str(tmp_path), "--port", str(busy.getsockname()[1])])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot serve on 127.0.0.1:") and "pick another --port" in err
    assert err.count("\n") == 1, err


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


def test_shutdown_is_bounded_when_a_close_call_hangs():
    """Ctrl-C must stop the demo even if the web server waits on a connection that never closes."""
    import threading

    from ragvqa.cli.demo import _close_within

    calls: list[str] = []
    release = threading.Event()
    assert _close_within([lambda: calls.append("app"), lambda: calls.append("pipeline")], 5.0)
    assert calls == ["app", "pipeline"]
    assert not _close_within([release.wait], 0.2)  # still blocked after 0.2 s: reported, not waited for
    release.set()
