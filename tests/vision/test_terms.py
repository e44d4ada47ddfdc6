"""The ImageNet class table and the concept words made from classifier output."""

from __future__ import annotations

import json

import pytest

from ragvqa.vision import build_terms
from ragvqa.vision.terms import (
    MAX_TERM_CLASSES,
    VAGUE_TERMS,
    aggregate_terms,
    class_terms,
    imagenet_classes,
)


def test_table_has_the_1000_classes_in_index_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [c.index for c in classes] == list(range(1000))
    # Fixed points of ImageNet-1k's class order (the classifier's output index).
    assert classes[0].wnid == "n01440764" and classes[0].name == "tench"
    assert classes[285].name == "Egyptian cat"
    assert classes[967].name == "espresso"
    assert classes[881].names == ("upright", "upright piano")
    assert len({c.wnid for c in classes}) == 1000


def test_hypernyms_lead_to_the_everyday_word():
    classes = imagenet_classes()
    assert class_terms(classes[285])[:3] == ("Egyptian cat", "domestic cat", "cat")
    assert "coffee" in class_terms(classes[967])
    assert "piano" in class_terms(classes[881])
    assert "dog" in class_terms(classes[211])  # vizsla
    for cls in classes:
        terms = class_terms(cls)
        assert terms[0] == cls.name
        assert not (set(terms[1:]) & VAGUE_TERMS)
        assert "entity" not in terms and "organism" not in terms


def test_aggregate_sums_the_mass_of_covered_classes():
    # Egyptian cat, tiger cat, tabby: three kinds of "cat".
    terms = dict(aggregate_terms([(285, 0.6), (282, 0.14), (281, 0.1), (967, 0.05)]))
    assert terms["cat"] == pytest.approx(0.84)
    assert terms["Egyptian cat"] == pytest.approx(0.6)
    assert terms["espresso"] == pytest.approx(0.05)
    ranked = aggregate_terms([(285, 0.6), (282, 0.14), (281, 0.1)])
    assert ranked[0][1] == pytest.approx(0.84)
    assert [c for _, c in ranked] == sorted((c for _, c in ranked), reverse=True)


def test_no_kept_hypernym_is_too_generic():
    from ragvqa.vision.terms import _term_class_counts

    counts = _term_class_counts()
    for cls in imagenet_classes():
        for term in class_terms(cls)[1:]:
            assert counts[term] <= MAX_TERM_CLASSES


def _data_noun(entries: list[tuple[str, list[str], list[tuple[str, str]]]]) -> tuple[bytes, dict[str, int]]:
    """A WordNet data.noun in the real format, byte offsets included.

    entries: (key, lemmas, [(pointer symbol, target key)]); returns the file
    and each key's offset.
    """
    header = b"  1 This software and database is being provided to you, the LICENSEE\n"
    offsets: dict[str, int] = {}
    # Offsets are 8 digits, so line lengths do not depend on them: lay out twice.
    for _ in range(2):
        out = bytearray(header)
        for key, lemmas, pointers in entries:
            offsets.setdefault(key, 0)
            start = len(out)
            offsets[key] = start
            words = " ".join(f"{w.replace(' ', '_')} 0" for w in lemmas)
            ptrs = " ".join(f"{sym} {offsets.get(t, 0):08d} n 0000" for sym, t in pointers)
            line = f"{start:08d} 05 n {len(lemmas):02x} {words} {len(pointers):03d} {ptrs} | gloss of {key}\n"
            out += line.replace("  ", " ").encode()
    return bytes(out), offsets


def test_build_terms_reads_wordnet_offsets_and_chains(tmp_path):
    data, offsets = _data_noun(
        [
            ("entity", ["entity"], []),
            ("animal", ["animal", "beast"], [("@", "entity")]),
            ("cat", ["cat", "true cat"], [("@", "animal"), ("~", "entity")]),
            ("mau", ["Egyptian cat"], [("@", "cat")]),
            ("tower", ["Eiffel Tower"], [("@i", "entity")]),
        ]
    )
    (tmp_path / "data.noun").write_bytes(data)
    words, parents = build_terms.parse_synset(data, offsets["cat"])
    assert words == ["cat", "true cat"] and parents == [offsets["animal"]]
    mau = build_terms.class_terms(data, f"n{offsets['mau']:08d}")
    assert mau["names"] == ["Egyptian cat"]
    assert mau["hypernyms"] == ["cat", "animal", "entity"]
    tower = build_terms.class_terms(data, f"n{offsets['tower']:08d}")
    assert tower["hypernyms"] == ["entity"]  # instance hypernyms (@i) count
    with pytest.raises(ValueError):
        build_terms.parse_synset(data, offsets["cat"] + 1)


def test_build_terms_matches_the_committed_table_when_wordnet_is_here(tmp_path):
    """The shipped table is exactly what the tool makes from WordNet 3.0."""
    from pathlib import Path

    wordnet = Path("/usr/share/wordnet/data.noun")
    if not wordnet.is_file():
        pytest.skip("WordNet 3.0 (Debian wordnet-base) is not installed")
    shipped = json.loads(build_terms.OUT.read_text())["classes"]
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("\n".join(c["wnid"] for c in shipped))
    out = tmp_path / "terms.json"
    assert build_terms.main(["--wnids", str(wnids), "--wordnet", str(wordnet.parent), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["classes"] == shipped
