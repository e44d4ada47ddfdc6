"""The demo's HTML: untrusted KB text escaped, answers highlighted, links and thumbnails safe."""

from __future__ import annotations

import pytest

from ragvqa.app import render
from ragvqa.types import Answer, Document, Hit


def doc(text: str, *, title: str = "Astronaut", section: str = "History", url: str = "https://en.wikipedia.org/wiki/Astronaut", index: int = 2) -> Document:
    return Document(doc_id=7, page_id="1", page_title=title, page_url=url, section_index=index, section_title=section, text=text)


def test_kb_text_is_escaped_everywhere():
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    hit = Hit(document=doc(f"Before {evil} after", title=f"T{evil}", section=f"S{evil}"), score=0.5, rank=0)
    out = render.evidence_html([hit], answer=evil, k=3)
    assert "<script>" not in out and "<img src=x" not in out and 'onerror="' not in out
    assert "&lt;script&gt;" in out


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "//evil.example/x", "ftp://x/y", 'https://x/"onmouseover="a'])
def test_only_plain_http_links(url):
    out = render.evidence_html([Hit(document=doc("text", url=url), score=0.1, rank=0)], answer="", k=1)
    assert "<a " not in out


def test_link_to_the_wikipedia_page():
    out = render.evidence_html([Hit(document=doc("text"), score=0.1, rank=0)], answer="", k=1)
    assert '<a href="https://en.wikipedia.org/wiki/Astronaut" target="_blank" rel="noopener noreferrer nofollow">Astronaut</a>' in out
    assert "› History" in out and "retrieval score 0.100" in out and 'data-doc-id="7"' in out


def test_highlight_whole_words_case_insensitive():
    html, found = render.highlight_snippet("In 1969 Apollo 11 landed; apollo 110 did not.", "apollo 11")
    assert found
    assert html.count("<mark>") == 1 and "<mark>Apollo 11</mark>" in html


def test_highlight_multiword_answer_marks_its_words():
    html, found = render.highlight_snippet("Neil Armstrong walked first; Armstrong was the commander.", "Commander Neil Armstrong")
    assert found and "<mark>Armstrong</mark>" in html and "<mark>Commander</mark>" not in html
    assert "<mark>commander</mark>" in html


def test_snippet_is_centred_on_a_late_answer():
    text = "filler " * 200 + "The answer is SpaceShipOne here. " + "tail " * 200
    html, found = render.highlight_snippet(text, "SpaceShipOne", limit=200)
    assert found and html.startswith("…") and html.endswith("…")
    assert "<mark>SpaceShipOne</mark>" in html and len(html) < 300


def test_no_answer_in_text_shows_the_start():
    html, found = render.highlight_snippet("alpha beta gamma " * 50, "zeta", limit=60)
    assert not found and html.startswith("alpha beta") and html.endswith("…") and "<mark>" not in html


def test_thumbnail_of_a_real_photo_and_none_for_bad_files(tmp_path):
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.new("RGB", (640, 320), (200, 10, 10)).save(photo)
    uri = render.thumbnail_uri(photo)
    assert uri.startswith("data:image/jpeg;base64,")
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as thumb:
        assert thumb.size == (160, 80)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    assert render.thumbnail_uri(broken) is None
    assert render.thumbnail_uri(tmp_path / "missing.jpg") is None
    assert render.thumbnail_uri(None) is None


def test_no_image_placeholder_and_no_retrieval_text():
    out = render.evidence_html([Hit(document=doc("t"), score=0.2, rank=0, image_file=None)], answer="", k=1)
    assert "no image" in out and "<img" not in out
    assert "No retrieval" in render.evidence_html([], answer="x", k=0)
    assert "no documents" in render.evidence_html([], answer="x", k=3)


def test_info_lists_notices_profile_and_timings():
    ans = Answer(text="x", hits=[], timings={"generate": 1.5, "encode": 0.012, "total": 1.6, "photo": 0.002},
                 profile="offline", used_image=False, notices=["The photo was <NOT> used."])
    out = render.info_html(ans, generator="gemma-offline:gemma3-270m", retriever="text:minilm", k=3)
    assert "The photo was &lt;NOT&gt; used." in out
    assert out.index("photo decoding") < out.index("query encoding") < out.index("generation") < out.index("total")
    assert "<b>12 ms</b>" in out and "<b>1.50 s</b>" in out
    assert "top 3" in out and "text:minilm" in out
    assert "no retrieval" in render.info_html(ans, generator="g", retriever="text:minilm", k=0)


def test_what_the_photo_gave_is_information_and_a_fallback_is_a_warning():
    """The notice the vision layer writes for a confident photo is shown as information."""
    from ragvqa.vision.evidence import PhotoEvidence

    used = PhotoEvidence(labels=(("Egyptian cat", 0.6),), terms=(("cat", 0.86),), ocr_lines=(), features=None,
                         seconds={}, confident=True)
    blank = PhotoEvidence(labels=(), terms=(), ocr_lines=(), features=None, seconds={}, confident=False,
                          notes=("the photo is blank",))
    out = render.notices_html([used.summary(), blank.summary()])
    first, second = out.split("</div>")[:2]
    assert "rv-photo-used" in first and first.endswith(">The photo was used (classifier: cat 0.86).")
    assert "rv-photo-used" not in second and "⚠" in second and "nothing confident" in second
