"""Fixtures of the demo tests, built once per session.

- ``demo_kb``: the generation tests' small real KB (pages of the gensim
  Wikipedia sample with the bundled photos, embedded with ``text:minilm``,
  Faiss index), shared with them when both run in one session;
- ``photo_kb``: the same pages plus the vital "Cat" page, embedded with
  ``visual:minilm`` for the default offline profile (the served demo);
- ``oracle``: an OpenAI-compatible fake of ``vllm serve`` on 127.0.0.1
  (``tests/app/oracle_server.py``) that answers from the context it is given;
- ``demo_pipeline``: the real pipeline (MiniLM retriever, KB searcher, the
  real ``openai`` generator backend) pointed at the oracle;
- ``demo_app`` / ``client``: the Gradio app served on 127.0.0.1 (queue:
  4 at once) and a ``gradio_client.Client`` for it;
- ``bad_files``: photos a user might upload, written by the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.oracle_server import MODEL, OracleServer

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CONCURRENCY = 4


@pytest.fixture(scope="session")
def demo_kb(tmp_path_factory) -> Path:
    from tests.generation.kb_fixture import build_gen_kb

    return build_gen_kb(tmp_path_factory.getbasetemp() / "gen-kb")


@pytest.fixture(scope="session")
def photo_kb(tmp_path_factory) -> Path:
    """The same pages plus the vital "Cat" page, embedded with visual:minilm (the default offline profile)."""
    from tests.generation.kb_fixture import build_photo_kb

    return build_photo_kb(tmp_path_factory.getbasetemp() / "photo-kb")


@pytest.fixture(scope="session")
def oracle():
    with OracleServer() as server:
        yield server


def fake_vllm_profile(url: str, *, family: str = "qwen2_5_vl"):
    from ragvqa.config import GeneratorConfig, Profile

    return Profile(
        name="test-vllm",
        retriever="text:minilm",
        generator=GeneratorConfig(backend="openai", model=MODEL, family=family, base_url=url,
                                  num_beams=3, max_new_tokens=20, timeout_s=30.0, max_concurrency=8),
        k=3,
        description="MiniLM retriever + an OpenAI-compatible test server standing in for vLLM",
    )


@pytest.fixture(scope="session")
def demo_pipeline(demo_kb, oracle):
    from ragvqa.pipeline import build_pipeline

    return build_pipeline(demo_kb, fake_vllm_profile(oracle.url))


@pytest.fixture(scope="session")
def demo_app(demo_pipeline, demo_kb):
    from ragvqa.app.demo import build_app, launch

    app = build_app(demo_pipeline, kb_label=demo_kb.name)
    launch(app, port=None, concurrency=CONCURRENCY, queue_size=64, block=False, quiet=True)
    yield app
    app.close()


@pytest.fixture(scope="session")
def client(demo_app):
    from gradio_client import Client

    return Client(demo_app.local_url, verbose=False)


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, demo_kb) -> dict[str, Path]:
    """Uploads that must be refused (and one that must be downscaled), by kind."""
    from PIL import Image

    root = tmp_path_factory.mktemp("uploads")
    good = demo_kb / "images" / "Skimage_astronaut.png"
    files = {"good": good}
    files["text"] = root / "notes.jpg"
    files["text"].write_text("this is a text file, not a photo\n")
    files["truncated"] = root / "cut.png"
    data = good.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"] = root / "empty.png"
    files["empty"].write_bytes(b"")
    # 7000 x 7000 = 49 MP of one grey level: a 50 kB PNG that would decode to 49 MB.
    files["huge"] = root / "huge.png"
    Image.new("L", (7000, 7000), 128).save(files["huge"], optimize=True)
    # 3000 x 2000 = 6 MP: accepted, then downscaled to the 4 MP working size.
    files["large"] = root / "large.jpg"
    Image.new("RGB", (3000, 2000), (30, 90, 160)).save(files["large"], quality=80)
    return files
