"""The Python examples in the README and docs/api.md run, as written, on a real small KB.

Each fenced ```python block is executed in a fresh directory where
``data/kb/sample`` is the session's small KB (real gensim pages and the
vital "Cat" page, visual:minilm as the bundled sample is, Faiss) and
``photo.jpg`` a real photo; the offline profile loads Gemma 3 270M, so these
are slow tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.generation.kb_fixture import photo_kb, sample_photo  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_every_doc_has_examples():
    assert all(python_blocks(path) for path in DOCS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("doc", "number"),
    [(path.name, i) for path in DOCS for i in range(len(python_blocks(path)))],
)
def test_example_runs(doc, number, photo_kb, tmp_path, monkeypatch, capsys):  # noqa: F811
    path = next(p for p in DOCS if p.name == doc)
    code = python_blocks(path)[number]
    (tmp_path / "data" / "kb").mkdir(parents=True)
    (tmp_path / "data" / "kb" / "sample").symlink_to(photo_kb)
    (tmp_path / "photo.jpg").symlink_to(sample_photo(photo_kb, "Skimage_moon.png"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{doc}[python block {number}]", "exec"), {"__name__": "__example__"})
    assert capsys.readouterr().out.strip() or "assert" in code  # it showed or checked something
