"""ImageNet-1k class names and their WordNet hypernyms, as query words.

The table (``data/imagenet_terms.json``, made by
:mod:`ragvqa.vision.build_terms`, WordNet 3.0 notice in ``data/NOTICE.md``)
gives each of the classifier's 1,000 classes its lemmas and its hypernym
chain. :func:`aggregate_terms` turns the classifier's probabilities into
concept words with a confidence each: the probability mass of every class
that is, or is a kind of, that concept. Three breeds of cat at 0.60, 0.14
and 0.10 make "cat" 0.84, surer than any one breed.

Not every hypernym is a useful query word: the WordNet top ("entity",
"artifact", "organism") and wide technical nodes ("placental", "chordate")
match everything. A hypernym is kept only when it covers at most
:data:`MAX_TERM_CLASSES` of the 1,000 classes, is among the
:data:`MAX_HYPERNYMS` nearest, and is not in :data:`VAGUE_TERMS`.
"""

from __future__ import annotations

import collections
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ragvqa.errors import ModelError

TERMS_FILE = Path(__file__).with_name("data") / "imagenet_terms.json"
NUM_CLASSES = 1000
#: A hypernym covering more classes than this says too little ("dog", 118
#: classes, stays; "canine", 130, and everything above it go).
MAX_TERM_CLASSES = 120
#: Nearest hypernyms considered per class ("Egyptian cat": domestic cat, cat,
#: feline, carnivore).
MAX_HYPERNYMS = 4
#: Narrow enough by count, but words that describe no topic of their own.
VAGUE_TERMS = frozenset(
    {
        # WordNet's upper levels and wide technical nodes
        "object", "whole", "artifact", "organism", "animal", "living thing", "vertebrate",
        "invertebrate", "placental", "chordate", "matter", "substance", "solid", "material",
        # shapes, supports, parts and materials rather than topics
        "covering", "protective covering", "structure", "supporting structure", "framework",
        "support", "rack", "case", "container", "receptacle", "surface", "area", "piece", "part",
        "line", "sheet", "fabric", "mat", "floor cover", "shade", "round shape", "sphere",
        "globule", "ball", "fastener", "restraint", "barrier", "obstruction", "gear", "rig",
        "screen", "seat", "tissue", "powder", "toiletry", "reproductive structure", "plant organ",
        "geological formation", "shelter", "decoration",
        # categories too broad to name a subject
        "implement", "equipment", "instrument", "device", "measuring instrument",
        "optical instrument", "source of illumination", "conveyance", "vehicle", "craft",
        "system", "commodity", "consumer goods", "mechanism", "article", "ware", "creation",
        "product", "produce", "food", "foodstuff", "nutriment", "dish", "establishment",
        "facility", "housing", "dwelling", "residence", "house", "building", "clothing",
        "garment", "headdress", "furnishing", "furniture", "tableware", "crockery", "game",
        "game equipment", "sports equipment", "puzzle",
    }
)


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class.

    Attributes:
        index: the classifier's output index (0-999).
        wnid: the WordNet 3.0 noun synset id (``n02124075``).
        names: its WordNet lemmas; ``names[0]`` is the display name.
        hypernyms: its hypernym chain, nearest first, one lemma each.
    """

    index: int
    wnid: str
    names: tuple[str, ...]
    hypernyms: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[0]


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1,000 classes in index order (read once per process)."""
    try:
        raw = json.loads(TERMS_FILE.read_text(encoding="utf-8"))["classes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot read the ImageNet class table {TERMS_FILE} ({exc})",
            hint="reinstall ragvqa (the file ships in the package)",
        ) from exc
    classes = tuple(
        ImageNetClass(index=i, wnid=c["wnid"], names=tuple(c["names"]), hypernyms=tuple(c["hypernyms"]))
        for i, c in enumerate(raw)
    )
    if len(classes) != NUM_CLASSES:
        raise ModelError(f"{TERMS_FILE} holds {len(classes)} classes, expected {NUM_CLASSES}")
    return classes


@functools.lru_cache(maxsize=1)
def _term_class_counts() -> dict[str, int]:
    counts: collections.Counter = collections.Counter()
    for cls in imagenet_classes():
        for term in set(cls.hypernyms):
            counts[term] += 1
    return dict(counts)


def class_terms(cls: ImageNetClass) -> tuple[str, ...]:
    """The query words of one class: its display name, then its useful hypernyms.

    Example: "Egyptian cat" -> ("Egyptian cat", "domestic cat", "cat", "feline").
    """
    counts = _term_class_counts()
    kept = [
        term
        for term in cls.hypernyms[:MAX_HYPERNYMS]
        if counts.get(term, 0) <= MAX_TERM_CLASSES and term not in VAGUE_TERMS
    ]
    out: list[str] = []
    for term in (cls.name, *kept):
        if term.lower() not in (t.lower() for t in out):
            out.append(term)
    return tuple(out)


def aggregate_terms(probabilities: list[tuple[int, float]]) -> list[tuple[str, float]]:
    """Concept words with the summed probability of the classes they cover.

    Args:
        probabilities: (class index, probability) pairs, e.g. the top 10.
    Returns:
        (term, confidence) pairs, most confident first; a term's confidence is
        the sum of the probabilities of the given classes whose
        :func:`class_terms` include it (at most 1). Ties keep the order of
        first appearance (the more specific, higher-ranked term first).
    """
    classes = imagenet_classes()
    mass: dict[str, float] = {}
    display: dict[str, str] = {}
    for index, prob in probabilities:
        for term in class_terms(classes[index]):
            key = term.lower()
            display.setdefault(key, term)
            mass[key] = mass.get(key, 0.0) + float(prob)
    order = {key: i for i, key in enumerate(display)}
    ranked = sorted(mass, key=lambda key: (-mass[key], order[key]))
    return [(display[key], min(1.0, mass[key])) for key in ranked]
