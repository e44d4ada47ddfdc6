"""Fixtures of the KB-building tests: small source files written in the official
formats (E-VQA KB JSON, Wiki6M JSONL, MediaWiki XML) and the real bundled sample KB."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest

COMMONS = "https://upload.wikimedia.org/wikipedia/commons"

# E-VQA KB entries covering every case the builder distinguishes.
EVQA_ENTRIES: dict[str, object] = {
    "https://en.wikipedia.org/wiki/Eiffel_Tower": {
        "title": "Eiffel Tower",
        "url": "https://en.wikipedia.org/wiki/Eiffel_Tower",
        "section_titles": ["Eiffel Tower", "History", "Design", "References", "See also", "Gallery"],
        "section_texts": [
            "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris.",
            "The tower was built from 1887 to 1889 as the centrepiece of the 1889 World's Fair.",
            "The design was by Maurice Koechlin and Émile Nouguier.",
            "Harriss, J. (1975). The Tallest Tower.",
            "List of tallest towers",
            " ",
        ],
        "image_urls": [
            f"{COMMONS}/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg",
            f"{COMMONS}/thumb/1/1b/Eiffel_construction.jpg/220px-Eiffel_construction.jpg",
        ],
        "image_reference_descriptions": ["The tower from the Champ de Mars", "Construction in 1888"],
        "image_section_indices": [0, 1],
    },
    "https://en.wikipedia.org/wiki/Plain": {
        "title": "Plain",
        "url": "https://en.wikipedia.org/wiki/Plain",
        "section_titles": ["Plain", "Geography"],
        "section_texts": ["A plain is a flat expanse of land.", "Plains occur as lowlands."],
        "image_urls": [],
        "image_reference_descriptions": [],
        "image_section_indices": [],
    },
    "https://en.wikipedia.org/wiki/Late_image": {
        "title": "Late image",
        "url": "https://en.wikipedia.org/wiki/Late_image",
        "section_titles": ["Late image", "Body", "Tail"],
        "section_texts": ["Lead text without its own image.", "Body text.", "Tail text with the picture."],
        "image_urls": [f"{COMMONS}/0/0f/Late_picture.png"],
        "image_reference_descriptions": ["the only picture"],
        "image_section_indices": [2],
    },
    "https://en.wikipedia.org/wiki/Empty": {
        "title": "Empty",
        "section_titles": ["Empty"],
        "section_texts": [""],
        "image_urls": [],
    },
    "https://en.wikipedia.org/wiki/Broken": {"title": "Broken", "section_titles": ["Broken"], "section_texts": "not a list"},
}


def write_evqa(path: Path, entries: dict[str, object]) -> Path:
    """The E-VQA KB format: one JSON object, URL -> entry."""
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def evqa_pages(n: int, sections: int = 3, seed: int = 0) -> dict[str, object]:
    """n generated E-VQA entries (each with `sections` sections and one image)."""
    out: dict[str, object] = {}
    for i in range(n):
        title = f"Generated page {seed}-{i}"
        url = f"https://en.wikipedia.org/wiki/Generated_page_{seed}-{i}"
        titles = [title] + [f"Part {j}" for j in range(1, sections)]
        texts = [f"Text of {title}, section {j}: " + "word " * (5 + (i * 7 + j) % 40) for j in range(sections)]
        out[url] = {
            "title": title,
            "url": url,
            "section_titles": titles,
            "section_texts": texts,
            "image_urls": [f"{COMMONS}/b/b{i % 10}/Generated_{i}.jpg"] if i % 3 else [],
            "image_reference_descriptions": ["generated"] if i % 3 else [],
            "image_section_indices": [i % sections] if i % 3 else [],
        }
    return out


WIKI6M_RECORDS: list[object] = [
    {
        "wikidata_id": "Q243",
        "wikipedia_title": "Eiffel Tower",
        "wikipedia_content": " ".join(f"eiffel{j}" for j in range(230)),
        "wikipedia_image_url": f"{COMMONS}/a/a8/Tour_Eiffel_Wikimedia_Commons.jpg",
        "wikipedia_summary": "A tower in Paris.",
    },
    {
        "wikidata_id": "Q1",
        "wikipedia_title": "Universe",
        "wikipedia_content": "The Universe is all of space and time and their contents.",
        "wikipedia_image_url": None,
        "wikipedia_summary": "Everything.",
    },
    "NOT JSON",
    {"wikidata_id": "Q2", "wikipedia_title": "Earth", "wikipedia_content": "", "wikipedia_image_url": None},
    {
        "wikidata_id": "Q3",
        "wikipedia_title": "Moon",
        "wikipedia_content": "The Moon is Earth's only natural satellite.",
        "wikipedia_image_url": f"{COMMONS}/e/e1/FullMoon2010.jpg",
        "wikipedia_summary": "",
    },
]


def write_wiki6m(path: Path, records: list[object]) -> Path:
    """Wiki6M JSONL (gzip-compressed when the name ends in .gz); a str record is written raw."""
    lines = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    data = lines.encode("utf-8")
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


MEDIAWIKI_HEAD = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo><sitename>Wikipedia</sitename><dbname>enwiki</dbname>
    <namespaces><namespace key="0" case="first-letter" /><namespace key="4" case="first-letter">Wikipedia</namespace></namespaces>
  </siteinfo>
"""


def mediawiki_page(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    from xml.sax.saxutils import escape

    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{red}"
        f"    <revision><id>{page_id}0</id><model>wikitext</model><format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text)}" xml:space="preserve">{escape(text)}</text>\n'
        f"    </revision>\n  </page>\n"
    )


MW_PAGES = [
    (
        1,
        "Lighthouse",
        "[[File:Lighthouse lead.jpg|thumb|A lighthouse at dusk]]\n"
        "A '''lighthouse''' is a tower that emits light to aid navigation.\n\n"
        "== History ==\n[[File:Old lighthouse.jpg|thumb|An old one]]\n"
        "The Pharos of Alexandria was among the first lighthouses.\n\n"
        "== Operation ==\nKeepers tended the lamps every night until automation came.\n\n"
        "== References ==\n* Some book, 1999.\n\n== External links ==\n* [http://example.org Site]\n",
    ),
    (2, "Beacon", "#REDIRECT [[Lighthouse]]"),
    (3, "Wikipedia:About", "A project page, not an article."),
    (
        4,
        "Harbour",
        "A '''harbour''' is a sheltered body of water where ships can be docked.\n\n"
        "== Types ==\nNatural harbours and artificial harbours exist.\n\n== Notes ==\n",
    ),
]


def write_mediawiki(path: Path, pages: list[tuple] = MW_PAGES) -> Path:
    """A pages-articles XML dump (.xml.bz2) holding the given pages."""
    body = MEDIAWIKI_HEAD
    for page_id, title, text in pages:
        ns = 4 if title.startswith("Wikipedia:") else 0
        redirect = "Lighthouse" if text.startswith("#REDIRECT") else None
        body += mediawiki_page(page_id, title, text, ns=ns, redirect=redirect)
    body += "</mediawiki>\n"
    path.write_bytes(bz2.compress(body.encode("utf-8")))
    return path


@pytest.fixture(scope="session")
def sample_kb(tmp_path_factory):
    """The real bundled sample KB (gensim's Wikipedia dump sample + skimage photos), built once."""
    from ragvqa.kb.sample import build_sample_kb

    out = tmp_path_factory.mktemp("sample") / "kb"
    result = build_sample_kb(out, vital=False, progress=False)
    return result
