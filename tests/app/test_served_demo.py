"""The real ``ragvqa demo`` command on the real offline profile, in a real headless Chromium.

One server process for the module (loading MiniLM + Gemma 3 270M is the slow
part): the page is served offline, a person uploads a bundled photo and asks
(Debian's /usr/bin/chromium driven by Playwright), a bad upload shows its
message, and Ctrl-C stops the server cleanly. The tests run in file order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragvqa.kb.sample import PHOTO_QUESTIONS, SAMPLE_QUESTIONS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ASTRONAUT = SAMPLE_QUESTIONS[0]
CAT = PHOTO_QUESTIONS[0]  # a photo on no page of the KB: the classifier's words find the page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc = proc
        self.url = url
        self.output = ""

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code and keeps the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        return self.proc.returncode


@pytest.fixture(scope="module")
def served(photo_kb):
    """``ragvqa demo --kb KB`` (the default offline profile, visual:minilm) running on a free port."""
    import httpx

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragvqa", "demo", "--kb", str(photo_kb), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    server = Served(proc, f"http://127.0.0.1:{port}/")
    deadline = time.monotonic() + 400  # model loading on a busy 2-core box
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(server.url, timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(1)
    if proc.poll() is not None:
        server.stop()
        pytest.fail(f"ragvqa demo exited early:\n{server.output}")
    yield server
    server.stop()


def test_page_is_served_offline(served, photo_kb):
    import httpx

    config = httpx.get(served.url + "config", timeout=10).text
    # The default profile looks at the photo: the header says what it can see, not "NOT used".
    assert "Profile <b>offline</b>" in config and "The photo was NOT used" not in config
    assert "sees objects and printed text, not scenes or faces" in config
    # the KB is named in the header by its folder name; the server's file system is not shown
    assert f"knowledge base <code>{photo_kb.name}</code>" in config and str(photo_kb) not in config
    # the bundled examples, the query photo's among them
    assert SAMPLE_QUESTIONS[1].question in config and "astronaut.png" in config
    assert CAT.question in config and "chelsea.png" in config


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
            page = context.new_page()
            # Generous: a busy 2-core box can take long; tests never assert on time.
            page.set_default_timeout(180_000)
            page.set_default_navigation_timeout(180_000)
            yield page
        finally:
            context.close()


@pytest.mark.browser
def test_browser_upload_ask_see_answer_and_evidence_then_a_bad_upload(served, page, photo_kb, bad_files, artifacts_dir):
    page.goto(served.url, wait_until="networkidle")
    assert page.title() == "ragvqa: ask about a photo"
    assert "The photo was NOT used" not in page.locator("#rv-banner").inner_text()

    page.locator("#rv-photo input[type=file]").set_input_files(str(photo_kb / "images" / ASTRONAUT.image))
    page.locator("#rv-photo img").first.wait_for(state="visible")
    page.locator("#rv-question textarea").fill(ASTRONAUT.question)
    page.locator("#rv-ask").click()

    evidence = page.locator("#rv-evidence .rv-hit")
    evidence.first.wait_for(state="visible")
    page.wait_for_function(
        "() => { const t = document.querySelector('#rv-answer textarea, #rv-answer input'); "
        "return t && t.value.trim().length > 0; }",
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
    # The classifier knows no astronaut (nothing confident): the note says the question did the
    # work, helped by photo-to-photo similarity (the portrait is the Astronaut page's photo).
    assert "The photo gave nothing confident" in info and "photo-to-photo similarity" in info
    assert "generation" in info and "Profile offline" in info
    # The highlight follows whatever the model answered (right or wrong): every mark is a word of
    # the answer, and an answer that appears in the evidence text is marked there.
    marks = [m.lower() for m in page.locator("#rv-evidence mark").all_inner_texts()]
    assert all(m in answer.lower() for m in marks), (marks, answer)
    if answer.strip().lower() in page.locator("#rv-evidence").inner_text().lower():
        assert marks, answer
    shot = artifacts_dir / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # A truncated PNG: a one-line message on the page, no stack trace, and the old answer is gone.
    page.reload(wait_until="networkidle")
    page.locator("#rv-photo input[type=file]").set_input_files(str(bad_files["truncated"]))
    page.locator("#rv-question textarea").fill(ASTRONAUT.question)
    page.locator("#rv-ask").click()
    message = page.get_by_text("'cut.png' is damaged or truncated")
    message.first.wait_for(state="visible")
    page.wait_for_timeout(500)  # let the message finish fading in before the screenshot
    page.screenshot(path=str(artifacts_dir / "demo-error.png"), full_page=True)
    assert "Traceback" not in page.locator("body").inner_text()
    assert page.locator("#rv-evidence .rv-hit").count() == 0

    # A bundled example fills in the photo and the question: the cat, whose photo is on no page.
    page.reload(wait_until="networkidle")  # a fresh page: the error message gone
    page.get_by_text(CAT.question).first.click()
    page.wait_for_function(
        "(q) => document.querySelector('#rv-question textarea').value === q", arg=CAT.question
    )
    assert page.locator("#rv-photo img").count() >= 1
    page.locator("#rv-ask").click()
    page.get_by_text("The photo was used (classifier: cat").first.wait_for(state="visible")
    assert "Cat" in page.locator("#rv-evidence .rv-hit").first.inner_text()
    info = page.locator("#rv-info").inner_text()
    assert "photo decoding" in info and "photo classifier + OCR" in info
    page.screenshot(path=str(artifacts_dir / "demo-photo.png"), full_page=True)


def test_ctrl_c_stops_the_server(served):
    assert served.stop() == 0, served.output
    assert "Models loaded in" in served.output and "Demo stopped." in served.output
    assert f"Serving the demo on {served.url}" in served.output
    assert "Traceback" not in served.output


def test_docs_screenshot_is_committed():
    """docs/demo.png (the README's picture) is a copy of tests/artifacts/demo-photo.png, checked by eye."""
    from PIL import Image

    with Image.open(Path(__file__).resolve().parents[2] / "docs" / "demo.png") as im:
        assert im.width >= 1000 and im.height >= 600
