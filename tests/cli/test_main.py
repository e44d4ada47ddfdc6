from __future__ import annotations

import subprocess
import sys

import pytest

from ragvqa.cli import main
from ragvqa.config import get_profile
from ragvqa.errors import InputError, MissingDependencyError, require
from ragvqa.retriever.registry import parse_spec


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(InputError, match="unknown profile 'nope'"):
        get_profile("nope")


def test_retriever_spec_parsing():
    assert parse_spec("text:minilm") == ("text", "minilm")
    with pytest.raises(InputError, match="names no model"):
        parse_spec("ret2:")
    with pytest.raises(InputError, match="unknown retriever spec"):
        parse_spec("bm25:x")


def test_require_names_the_extra():
    with pytest.raises(MissingDependencyError) as exc:
        require("ragvqa_no_such_module", "demo")
    assert "ragvqa[demo]" in exc.value.one_line()


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "ragvqa", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ragvqa ")


def test_import_ragvqa_is_light():
    code = "import sys, ragvqa, ragvqa.cli, ragvqa.config, ragvqa.types; print(sorted(m for m in ('torch','faiss','gradio','ray','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
