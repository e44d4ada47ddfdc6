"""MediaWiki dump source: plain/bz2/multistream files, workers, skip/limit, bad input.

Fixtures: the real enwiki sample that ships in gensim, repacked by the test
into a multistream dump + index, and small hand-written dumps in the official
export-0.10 format.
"""

from __future__ import annotations

import bz2
import collections
import importlib.util
import re
from pathlib import Path

import pytest

from ragvqa.errors import DataError, InputError, RagvqaError
from ragvqa.kb.sources.mediawiki import find_index, is_index_file, iter_pages
from ragvqa.kb.sources.mediawiki_writer import write_multistream
from ragvqa.types import ImageRef, Page, Section

SAMPLE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEFTOVERS = re.compile(r"\[\[|\]\]|\{\{|\}\}|<ref|</?(?:span|div|small|sup|br|center)\b|'''|\{\|")


@pytest.fixture(scope="session")
def sample() -> Path:
    # Locate gensim without importing it (its import pulls in scipy: seconds).
    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        pytest.skip("gensim (extra 'sample') ships the dump sample")
    path = Path(spec.origin).parent / "test" / "test_data" / SAMPLE_NAME
    assert path.is_file(), path
    return path


def read(path: Path, **kw) -> tuple[list[Page], collections.Counter]:
    counts: collections.Counter = collections.Counter()
    return list(iter_pages(path, counts=counts, **kw)), counts


@pytest.fixture(scope="session")
def sample_pages(sample: Path) -> tuple[list[Page], collections.Counter]:
    return read(sample)


@pytest.fixture(scope="session")
def sample_multistream(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("ms") / "enwiki-test-pages-articles-multistream.xml.bz2"
    index = write_multistream(sample, dst, pages_per_stream=20)
    assert index == dst.with_name("enwiki-test-pages-articles-multistream-index.txt.bz2")
    assert find_index(dst) == index
    return dst


# --- the real sample ---------------------------------------------------------------------------


def test_sample_counts_are_plausible(sample_pages) -> None:
    pages, counts = sample_pages
    # 206 <page> elements: ~106 articles, the rest redirects and one non-article namespace.
    assert counts["pages_read"] == 206
    assert len(pages) == 206 - sum(v for k, v in counts.items() if k.startswith("skipped_"))
    assert 95 <= len(pages) <= 115
    assert 80 <= counts["skipped_redirect"] <= 110
    assert counts["skipped_namespace"] >= 1
    assert counts["skipped_malformed"] == 0
    titles = {p.title for p in pages}
    assert {"Astronaut", "Apollo 11", "Albert Einstein"} <= titles
    assert all(p.url == "https://en.wikipedia.org/wiki/" + p.title.replace(" ", "_") for p in pages)
    assert all(p.page_id.isdigit() for p in pages)


def test_sample_astronaut(sample_pages) -> None:
    pages, _ = sample_pages
    page = next(p for p in pages if p.title == "Astronaut")
    assert page.page_id == "664"
    assert page.url == "https://en.wikipedia.org/wiki/Astronaut"
    titles = [s.title for s in page.sections]
    assert titles[0] == "Astronaut" and page.sections[0].level == 1
    assert {"Definition", "Terminology", "Space travel milestones", "Training"} <= set(titles)
    assert [s.index for s in page.sections] == list(range(len(page.sections)))
    lead = page.sections[0]
    assert lead.text.startswith(
        "An astronaut or cosmonaut is a person trained by a human spaceflight"
    )
    assert lead.images[0] == ImageRef(
        "Astronaut-EVA.jpg",
        "NASA Astronaut Bruce McCandless II using a Manned Maneuvering Unit outside on shuttle "
        "mission STS-41-B in 1984.",
        "file_link",
    )
    milestones = page.sections[titles.index("Space travel milestones")]
    assert [i.ref for i in milestones.images][:2] == [
        "Gagarin in Sweden.jpg",
        "RIAN archive 612748 Valentina Tereshkova.jpg",
    ]
    assert "Yuri Gagarin" in milestones.text
    assert page.first_image().ref == "Astronaut-EVA.jpg"


def test_sample_infobox_images(sample_pages) -> None:
    pages, _ = sample_pages
    einstein = next(p for p in pages if p.title == "Albert Einstein")
    assert einstein.page_image is not None and einstein.page_image.kind == "infobox"
    assert einstein.page_image.ref.endswith(".jpg")
    assert einstein.page_image in einstein.sections[0].images
    with_infobox = sum(p.page_image is not None for p in pages)
    assert with_infobox >= 20


def test_sample_text_has_no_markup_leftovers(sample_pages) -> None:
    pages, _ = sample_pages
    n_images = 0
    for page in pages:
        for section in page.sections:
            assert not LEFTOVERS.search(section.text), (page.title, section.title)
            assert not LEFTOVERS.search(section.title), (page.title, section.title)
            for image in section.images:
                n_images += 1
                assert not LEFTOVERS.search(image.caption), (page.title, image)
                assert not image.ref.lower().startswith(("file:", "image:")), image
    assert n_images >= 900  # ~1,000 File links in the sample, plus galleries and infoboxes
    total = sum(len(s.text) for p in pages for s in p.sections)
    assert total > 2_000_000


def test_multistream_equals_plain(sample_pages, sample_multistream: Path) -> None:
    pages, counts = sample_pages
    ms_pages, ms_counts = read(sample_multistream)
    assert ms_counts == counts
    assert ms_pages == pages


def test_multistream_two_workers_identical(sample_pages, sample_multistream: Path) -> None:
    pages, counts = sample_pages
    ms_pages, ms_counts = read(sample_multistream, workers=2)
    assert ms_counts == counts
    assert ms_pages == pages


def test_plain_two_workers_identical(sample: Path, sample_pages) -> None:
    pages, counts = sample_pages
    got, got_counts = read(sample, workers=2)
    assert got_counts == counts
    assert got == pages


def test_skip_and_limit_plain_and_multistream(
    sample: Path, sample_pages, sample_multistream: Path
) -> None:
    pages, _ = sample_pages
    plain, plain_counts = read(sample, skip=50, limit=10)
    assert plain == pages[50:60]
    ms, ms_counts = read(sample_multistream, skip=50, limit=10, workers=2)
    assert ms == pages[50:60]
    assert ms_counts == plain_counts
    # pages passed over by skip are not counted again; the ones after it are
    assert 10 <= plain_counts["pages_read"] < 206
    rest, _ = read(sample_multistream, skip=len(pages) - 3)
    assert rest == pages[-3:]
    assert read(sample_multistream, skip=10_000)[0] == []
    assert read(sample, limit=0)[0] == []


def test_explicit_index_path(sample_pages, sample_multistream: Path, tmp_path: Path) -> None:
    pages, _ = sample_pages
    # An uncompressed index under another name, passed explicitly.
    index = tmp_path / "my-index.txt"
    index.write_bytes(bz2.decompress(find_index(sample_multistream).read_bytes()))
    dump = tmp_path / "dump.xml.bz2"
    dump.symlink_to(sample_multistream)
    assert find_index(dump) is None
    got, _ = read(dump, index_path=index, limit=5)
    assert got == pages[:5]


# --- hand-written dumps ------------------------------------------------------------------------

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
    </namespaces>
  </siteinfo>
"""


def page_xml(
    title: str, page_id: int, text: str | None, *, ns: int | None = 0, extra: str = ""
) -> str:
    def esc(s: str) -> str:
        return (
            s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        )

    ns_xml = f"    <ns>{ns}</ns>\n" if ns is not None else ""
    text_xml = f'      <text xml:space="preserve">{esc(text)}</text>\n' if text is not None else ""
    return (
        f"  <page>\n    <title>{esc(title)}</title>\n{ns_xml}    <id>{page_id}</id>\n{extra}"
        f"    <revision>\n      <id>{page_id}00</id>\n{text_xml}    </revision>\n  </page>\n"
    )


ARTICLE = """{{Infobox building
| name = Old Tower
| image = Old_tower_2010.jpg
| caption = The tower in 2010
}}
The '''Old Tower''' is a [[tower]] in [[Utrecht|the city]].<ref>{{cite web|url=http://x}}</ref>
== History ==
[[File:Tower plan.png|thumb|Plan with [[Floor plan|floors]]]]
Built in 1321.<!-- date disputed -->
{| class="wikitable"
| a || b
|}
=== Restoration ===
<gallery>
File:Resto 1.jpg|Before
Resto 2.jpg|After [[restoration]]
</gallery>
Restored in 1990 by [http://example.org the city].
[[Category:Towers]]
[[nl:Oude toren]]
"""

HAND_PAGES = [
    page_xml("Old Tower", 11, ARTICLE),
    page_xml("Tower", 12, "#REDIRECT [[Old Tower]]", extra='    <redirect title="Old Tower" />\n'),
    page_xml("Talk:Old Tower", 13, "Discussion [[x]]", ns=1),
    page_xml("Lower case redirect", 14, "#redirect [[Old Tower]]"),
    page_xml("No text", 15, None),
    page_xml("Blank", 16, "  \n "),
    page_xml("AT&T", 17, "'''AT&amp;T''' is a company."),
    page_xml("File:Old tower 2010.jpg", 18, "A photo", ns=None),  # old dump: no <ns>
    page_xml("", 19, "no title"),
]

EXPECTED = [
    Page(
        page_id="11",
        title="Old Tower",
        url="https://en.wikipedia.org/wiki/Old_Tower",
        sections=[
            Section(
                0,
                "Old Tower",
                "The Old Tower is a tower in the city.",
                [ImageRef("Old tower 2010.jpg", "The tower in 2010", "infobox")],
                1,
            ),
            Section(
                1,
                "History",
                "Built in 1321.",
                [ImageRef("Tower plan.png", "Plan with floors", "file_link")],
                2,
            ),
            Section(
                2,
                "Restoration",
                "Restored in 1990 by the city.",
                [
                    ImageRef("Resto 1.jpg", "Before", "gallery"),
                    ImageRef("Resto 2.jpg", "After restoration", "gallery"),
                ],
                3,
            ),
        ],
        page_image=ImageRef("Old tower 2010.jpg", "The tower in 2010", "infobox"),
    ),
    Page(
        page_id="17",
        title="AT&T",
        url="https://en.wikipedia.org/wiki/AT&T",
        sections=[Section(0, "AT&T", "AT&T is a company.", [], 1)],
    ),
]
EXPECTED_COUNTS = {
    "pages_read": 9,
    "skipped_redirect": 2,
    "skipped_namespace": 2,
    "skipped_malformed": 2,
    "skipped_empty": 1,
}


@pytest.fixture
def hand_xml(tmp_path: Path) -> Path:
    path = tmp_path / "small.xml"
    path.write_text(HEADER + "".join(HAND_PAGES) + "</mediawiki>\n", encoding="utf-8")
    return path


def test_hand_written_plain_xml(hand_xml: Path) -> None:
    pages, counts = read(hand_xml)
    assert pages == EXPECTED
    assert dict(counts) == EXPECTED_COUNTS


def test_hand_written_bz2_and_multistream(hand_xml: Path, tmp_path: Path) -> None:
    packed = tmp_path / "small.xml.bz2"
    packed.write_bytes(bz2.compress(hand_xml.read_bytes()))
    assert read(packed) == (EXPECTED, collections.Counter(EXPECTED_COUNTS))
    multi = tmp_path / "small-multistream.xml.bz2"
    write_multistream(hand_xml, multi, pages_per_stream=2)
    for workers in (1, 2):
        pages, counts = read(multi, workers=workers)
        assert pages == EXPECTED
        assert dict(counts) == EXPECTED_COUNTS
    assert read(multi, skip=1)[0] == EXPECTED[1:]


def test_counts_are_incremented_not_reset(hand_xml: Path) -> None:
    counts: collections.Counter = collections.Counter({"pages_read": 100, "skipped_redirect": 1})
    list(iter_pages(hand_xml, counts=counts))
    assert counts["pages_read"] == 109
    assert counts["skipped_redirect"] == 3


# --- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read(tmp_path / "nope.xml.bz2")


def test_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    broken = HAND_PAGES[0].replace("</title>", "</titel>")
    path.write_text(HEADER + broken + "</mediawiki>\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"bad\.xml: malformed XML at line 11, column \d+ .*: mismatched tag$"
    ) as info:
        read(path)
    assert isinstance(info.value, RagvqaError)


def test_xml_cut_short_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.xml.bz2"
    path.write_bytes(bz2.compress((HEADER + HAND_PAGES[0]).encode()))  # no </mediawiki>
    with pytest.raises(DataError, match="malformed XML"):
        read(path)


def test_truncated_bz2_names_offset(sample: Path, tmp_path: Path) -> None:
    data = sample.read_bytes()
    path = tmp_path / "truncated.xml.bz2"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(
        DataError, match=r"truncated\.xml\.bz2: truncated bz2 stream.* ends at byte (\d+)"
    ) as info:
        read(path)
    assert str(len(data) // 3) in info.value.message


def test_corrupt_bz2_names_offset(sample: Path, tmp_path: Path) -> None:
    data = bytearray(sample.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "corrupt.xml.bz2"
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"corrupt\.xml\.bz2: corrupt bz2 data .* compressed byte \d+"
    ):
        read(path)


def test_corrupt_multistream_stream(sample_multistream: Path, tmp_path: Path) -> None:
    data = bytearray(sample_multistream.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    dump = tmp_path / "x-multistream.xml.bz2"
    dump.write_bytes(bytes(data))
    (tmp_path / "x-multistream-index.txt.bz2").write_bytes(
        find_index(sample_multistream).read_bytes()
    )
    for workers in (1, 2):
        with pytest.raises(
            DataError,
            match=r"x-multistream\.xml\.bz2: corrupt bz2 data in the stream starting at compressed byte \d+",
        ) as info:
            read(dump, workers=workers)
        # the same one-line error (with its hint) whether raised in a worker process or not
        assert "download it again" in info.value.one_line()


def test_bad_index(sample_multistream: Path, tmp_path: Path) -> None:
    index = tmp_path / "index.txt"
    index.write_text("600:10:AccessibleComputing\nnot-a-number:12:Anarchism\n")
    with pytest.raises(DataError, match=r"index\.txt: line 2 is not 'offset:page_id:title'"):
        read(sample_multistream, index_path=index)
    index.write_text(f"{10**12}:10:Far away\n")
    with pytest.raises(DataError, match="beyond the end"):
        read(sample_multistream, index_path=index)
    with pytest.raises(InputError, match="index not found"):
        read(sample_multistream, index_path=tmp_path / "missing.txt")


def test_find_index_naming(tmp_path: Path) -> None:
    dump = tmp_path / "enwiki-20240601-pages-articles-multistream1.xml-p1p41242.bz2"
    dump.write_bytes(b"")
    assert find_index(dump) is None
    index = tmp_path / "enwiki-20240601-pages-articles-multistream-index1.txt-p1p41242.bz2"
    index.write_bytes(b"")
    assert find_index(dump) == index
    whole = tmp_path / "enwiki-20240601-pages-articles-multistream.xml.bz2"
    plain_index = tmp_path / "enwiki-20240601-pages-articles-multistream-index.txt"
    plain_index.write_bytes(b"")
    assert find_index(whole) == plain_index
    assert find_index(tmp_path / "enwiki-20240601-pages-articles.xml.bz2") is None
    assert is_index_file(index) and is_index_file(plain_index)
    assert not is_index_file(dump) and not is_index_file(whole)


def test_empty_and_non_xml_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.xml: malformed XML at line 1"):
        read(empty)
    garbage = tmp_path / "garbage.xml.bz2"
    garbage.write_bytes(b"BZh9" + bytes(range(256)) * 4)
    with pytest.raises(
        DataError, match=r"garbage\.xml\.bz2: corrupt bz2 data .* compressed byte 0"
    ):
        read(garbage)


def test_write_multistream_refuses_a_file_without_pages(tmp_path: Path) -> None:
    src = tmp_path / "nopages.xml"
    src.write_text(HEADER + "</mediawiki>\n", encoding="utf-8")
    dst = tmp_path / "out-multistream.xml.bz2"
    with pytest.raises(DataError, match="no <page> element"):
        write_multistream(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nopages.xml"]  # nothing half-written
