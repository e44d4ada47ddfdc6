"""The demo page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Uses the real offline profile (MiniLM retriever + Gemma 3 270M from PyPI) for
one question: what a user without a GPU gets from ``ragvqa demo``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ragvqa.kb.sample import SAMPLE_QUESTIONS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ASTRONAUT = SAMPLE_QUESTIONS[0]


@pytest.fixture(scope="module")
def offline_app(demo_kb):
    from ragvqa.app.demo import build_app, launch
    from tests.generation.kb_fixture import offline_pipeline_for

    app = build_app(offline_pipeline_for(demo_kb), kb_label="sample KB (test subset)")
    launch(app, port=None, concurrency=1, block=False, quiet=True)
    yield app
    app.close()


@pytest.fixture()
def page(tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_upload_ask_see_answer_and_evidence_then_a_bad_upload(offline_app, page, demo_kb, bad_files, artifacts_dir):
    page.goto(offline_app.local_url, wait_until="networkidle")
    assert page.title() == "ragvqa: ask about a photo"
    # The offline profile says up front that it ignores the photo.
    assert "The photo was NOT used" in page.locator("#rv-banner").inner_text()

    page.locator("#rv-photo input[type=file]").set_input_files(str(demo_kb / "images" / ASTRONAUT.image))
    page.locator("#rv-photo img").first.wait_for(state="visible", timeout=30_000)
    page.locator("#rv-question textarea").fill(ASTRONAUT.question)
    page.locator("#rv-ask").click()

    evidence = page.locator("#rv-evidence .rv-hit")
    evidence.first.wait_for(state="visible", timeout=240_000)
    page.wait_for_function(
        "() => { const t = document.querySelector('#rv-answer textarea, #rv-answer input'); "
        "return t && t.value.trim().length > 0; }",
        timeout=60_000,
    )
    answer = page.locator("#rv-answer textarea, #rv-answer input").first.input_value()
    assert answer.strip()
    assert evidence.count() == 3
    first = evidence.first.inner_text()
    assert "Astronaut" in first and "retrieval score" in first
    assert page.locator("#rv-evidence .rv-hit img.rv-thumb").count() >= 1  # the page's photo, inline
    href = page.locator("#rv-evidence .rv-hit a").first.get_attribute("href")
    assert href.startswith("https://en.wikipedia.org/wiki/")
    info = page.locator("#rv-info").inner_text()
    assert "The photo was NOT used" in info and "generation" in info and "Profile offline" in info
    if ASTRONAUT.answer.lower() in answer.lower():
        assert page.locator("#rv-evidence mark").count() >= 1
    shot = artifacts_dir / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # A truncated PNG: a one-line message on the page, no stack trace, and the old answer is gone.
    page.reload(wait_until="networkidle")
    page.locator("#rv-photo input[type=file]").set_input_files(str(bad_files["truncated"]))
    page.locator("#rv-question textarea").fill(ASTRONAUT.question)
    page.locator("#rv-ask").click()
    message = page.get_by_text("'cut.png' is damaged or truncated")
    message.first.wait_for(state="visible", timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "demo-error.png"), full_page=True)
    body = page.locator("body").inner_text()
    assert "Traceback" not in body
    assert page.locator("#rv-evidence .rv-hit").count() == 0


def test_docs_screenshot_is_committed():
    """docs/demo.png (the README's picture) is a copy of the artifact above, checked by eye."""
    from PIL import Image

    docs_png = Path(__file__).resolve().parents[2] / "docs" / "demo.png"
    with Image.open(docs_png) as im:
        assert im.width >= 1000 and im.height >= 600


def copy_artifact_to_docs(artifacts_dir: Path) -> None:  # pragma: no cover - run by hand
    shutil.copyfile(artifacts_dir / "demo.png", Path(__file__).resolve().parents[2] / "docs" / "demo.png")
