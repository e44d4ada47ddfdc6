from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ragvqa.cli import main
from ragvqa.config import get_profile
from ragvqa.errors import InputError, MissingDependencyError, require
from ragvqa.retriever.registry import parse_spec


def test_help_lists_every_subcommand(capsys):
    import argparse

    from ragvqa.cli import COMMANDS, build_parser

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    listed = list(action.choices)
    assert listed == [name.replace("_", "-") for name in COMMANDS]
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^ +{name}( |$)", out, flags=re.M) for name in listed), out
    # every subcommand answers its own --help
    for name in listed:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name


def test_a_missing_subcommand_module_fails_loudly(monkeypatch):
    import ragvqa.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "no_such_command"])
    with pytest.raises(ModuleNotFoundError, match="no_such_command"):
        cli.build_parser()


def test_abbreviated_options_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--kb", "kb", "--jso", "what is this?"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --jso" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["search", "ask"])
def test_non_utf8_question_is_a_one_line_error(command, capsys, tmp_path):
    import os

    # What Python makes of the argv bytes b"caf\xe9?" on a UTF-8 system: a lone surrogate.
    question = os.fsdecode(b"caf\xe9?")
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(photo)
    argv = [command, "--kb", str(tmp_path), question]
    if command == "ask":
        argv += ["--image", str(photo)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the ") and "not valid UTF-8" in err and len(err.splitlines()) == 1


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
