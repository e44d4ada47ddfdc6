"""What the photo adds to the offline profile, measured on the development set.

    .venv/bin/python bench/bench_offline_photo.py --kb data/kb/sample \
        --questions eval/devsets/offline_photos.jsonl --out eval/offline-photo-report.md

The KB must be embedded with ``visual:minilm`` (``ragvqa build-kb --sample
--retriever visual:minilm``). For every question, in one run and one process:

- the photo is described once (classifier and OCR timed apart);
- retrieval runs with the question alone (the same retriever, no photo:
  what the offline profile did before it looked at photos) and with the
  photo, for each fusion setting of the grid (question_weight x
  image_weight; only query vectors change, so one embedded KB serves all);
- Gemma 3 270M answers twice, from the question-alone documents and from
  the photo's documents plus the photo's description, scored with the
  InfoSeek matching rules.

The report gives gold page in the top 3, answer accuracy, the grid, a row
per question and per-stage seconds (median and mean) on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

GRID_QUESTION_WEIGHTS = (0.3, 0.5, 0.7)
GRID_IMAGE_WEIGHTS = (0.0, 0.5, 1.0, 2.0)


def gold_rank(hits, gold: set[str]) -> int | None:
    from ragvqa.evaluation.datasets import page_key_from_url

    for i, hit in enumerate(hits, 1):
        if page_key_from_url(hit.document.page_title) in gold:
            return i
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, required=True)
    parser.add_argument("--questions", type=Path, default=Path("eval/devsets/offline_photos.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("eval/offline-photo-report.md"))
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--from-json", type=Path, help="re-render the report from a --json file")
    args = parser.parse_args()
    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        grid = {tuple(float(x) for x in k.split(",")): v for k, v in raw["grid"].items()}
        write_report(args.out, raw["meta"], raw["rows"], grid)  # type: ignore[arg-type]
        print(f"report: {args.out}")
        return 0

    import torch

    from ragvqa.config import get_profile
    from ragvqa.evaluation.adapters import get_adapter
    from ragvqa.evaluation.datasets import page_key_from_url
    from ragvqa.evaluation.metrics.infoseek import score_prediction
    from ragvqa.generation.base import GenerationRequest
    from ragvqa.generation.registry import load_generator
    from ragvqa.imageio import open_image
    from ragvqa.index.search import KBSearcher
    from ragvqa.pipeline.rag import document_context
    from ragvqa.retriever.registry import load_retriever

    threads = torch.get_num_threads()
    prepared = get_adapter("jsonl").prepare(args.questions, args.questions.parent)
    questions = prepared.questions
    started = time.perf_counter()
    retriever = load_retriever("visual:minilm", device="cpu")
    searcher = KBSearcher(args.kb, retriever)
    generator = None if args.no_generate else load_generator(get_profile("offline").generator)
    load_s = time.perf_counter() - started
    default = retriever.config

    def search(image, question, config, k=3):
        retriever.config = config
        try:
            vec = retriever.encode_queries([image], [question])
        finally:
            retriever.config = default
        return searcher.search_vectors(vec, k)[0]

    kb_photo_digests = {
        hashlib.sha256(f.read_bytes()).hexdigest() for f in searcher.kb.images_root.glob("*") if f.is_file()
    } if getattr(searcher.kb, "images_root", None) else set()
    load_before = os.getloadavg()
    rows = []
    grid: dict[tuple[float, float], list[int | None]] = {}
    for pq in questions:
        photo = open_image(pq.image)
        gold = {page_key_from_url(t) for t in pq.source.gold_titles}
        retriever._cache.clear()  # time the photo's description for every question
        t0 = time.perf_counter()
        evidence = retriever.describe(photo)
        assert evidence is not None
        t1 = time.perf_counter()
        hits_q = search(None, pq.question, default)
        t2 = time.perf_counter()
        hits_p = search(photo, pq.question, default)
        t3 = time.perf_counter()
        for a in GRID_QUESTION_WEIGHTS:
            for w in GRID_IMAGE_WEIGHTS:
                cfg = replace(default, question_weight=a, image_weight=w)
                grid.setdefault((a, w), []).append(gold_rank(search(photo, pq.question, cfg), gold))
        row = {
            "id": pq.key,
            "question": pq.question,
            "image": pq.source.image,
            "gold": sorted(pq.source.gold_titles),
            "photo_words": evidence.query_words(),
            "confident": evidence.confident,
            "kb_photo": hashlib.sha256(Path(pq.image).read_bytes()).hexdigest() in kb_photo_digests,
            "labels": [[n, round(p, 3)] for n, p in evidence.labels[:3]],
            "rank_question": gold_rank(hits_q, gold),
            "rank_photo": gold_rank(hits_p, gold),
            "top_question": [h.document.page_title for h in hits_q],
            "top_photo": [h.document.page_title for h in hits_p],
            "seconds": {
                "classifier": evidence.seconds["classifier"],
                "ocr": evidence.seconds["ocr"],
                "describe": t1 - t0,
                "retrieve_question": t2 - t1,
                "retrieve_photo": t3 - t2,
            },
        }
        if generator is not None:
            ref = pq.source.reference()
            for mode, hits, seen in (("question", hits_q, ""), ("photo", hits_p, evidence.text())):
                request = GenerationRequest(
                    question=pq.question,
                    contexts=tuple(document_context(h.document) for h in hits),
                    dataset="infoseek",
                    photo_evidence=seen,
                )
                g0 = time.perf_counter()
                answer = generator.generate([request])[0]
                row["seconds"][f"generate_{mode}"] = time.perf_counter() - g0
                row[f"answer_{mode}"] = answer
                row[f"correct_{mode}"] = bool(score_prediction(answer, ref))
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("id", "rank_question", "rank_photo", "photo_words")}), flush=True)

    meta = {
        "questions": str(args.questions),
        "documents": len(searcher.kb),
        "threads": threads,
        "load_s": load_s,
        "loadavg": [load_before[0], os.getloadavg()[0]],
        "default": [default.question_weight, default.image_weight, default.doc_image_weight],
        "generated": generator is not None,
    }
    if args.json:
        grid_json = {f"{a},{w}": v for (a, w), v in grid.items()}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "grid": grid_json}, indent=1))
    write_report(args.out, meta, rows, grid)
    print(f"report: {args.out}")
    return 0


def write_report(out: Path, meta: dict, rows: list[dict], grid: dict[tuple[float, float], list]) -> None:
    """The markdown report from the raw results (also: --from-json)."""
    n = len(rows)
    generated = meta["generated"]
    a0, w0, sin_th = meta["default"]

    def top3(ranks):
        return sum(1 for r in ranks if r is not None and r <= 3)

    lines = [
        "# The photo in the offline profile: development-set report",
        "",
        f"Made by `bench/bench_offline_photo.py` on `{meta['questions']}` ({n} questions, photos "
        "from scikit-image, scikit-learn, matplotlib and the InfoSeek samples; provenance in "
        "`eval/devsets/PROVENANCE.md`) over the bundled KB (`ragvqa build-kb --sample`, "
        f"{meta['documents']} documents) embedded with `visual:minilm`. One process, "
        f"torch threads {meta['threads']}; models loaded in {meta['load_s']:.1f} s; 1-minute load "
        f"average {meta['loadavg'][0]:.1f} at the start, {meta['loadavg'][1]:.1f} at the end (other "
        "jobs shared the 2 cores, so times are upper bounds).",
        "",
        "Both columns use the same retriever, index and generator in the same run; "
        "\"question alone\" gives no photo (the offline profile before this change), "
        "\"with the photo\" gives the photo (labels + hypernyms + OCR words, photo-to-photo "
        "similarity, and the photo's description in the prompt).",
        "",
        "| | question alone | with the photo |",
        "|---|---|---|",
        f"| gold page in top 3 | {top3([r['rank_question'] for r in rows])}/{n} | {top3([r['rank_photo'] for r in rows])}/{n} |",
        f"| gold page at rank 1 | {sum(r['rank_question'] == 1 for r in rows)}/{n} | {sum(r['rank_photo'] == 1 for r in rows)}/{n} |",
    ]
    if generated:
        lines.append(
            f"| answer right (InfoSeek rules) | {sum(r['correct_question'] for r in rows)}/{n} | "
            f"{sum(r['correct_photo'] for r in rows)}/{n} |"
        )
    lines += [
        "",
        f"The photo gave confident words for {sum(r['confident'] for r in rows)}/{n} questions.",
        "",
        "| subset | n | top 3: question / photo | right: question / photo |",
        "|---|---|---|---|",
    ]
    subsets = [
        ("photo is also a KB page photo (photo-to-photo match)", [r for r in rows if r.get("kb_photo")]),
        ("other photos", [r for r in rows if not r.get("kb_photo")]),
        ("... with confident words", [r for r in rows if not r.get("kb_photo") and r["confident"]]),
        ("... nothing confident", [r for r in rows if not r.get("kb_photo") and not r["confident"]]),
    ]
    for label, sub in subsets:
        right = (
            f"{sum(r['correct_question'] for r in sub)} / {sum(r['correct_photo'] for r in sub)}"
            if generated
            else "-"
        )
        lines.append(
            f"| {label} | {len(sub)} | {top3([r['rank_question'] for r in sub])} / "
            f"{top3([r['rank_photo'] for r in sub])} | {right} |"
        )
    lines += [
        "",
        "## Fusion grid (gold page in top 3 with the photo)",
        "",
        "question_weight `a` (rows) x image_weight `w` (columns); document-side weight "
        f"`sin(th)` = {sin_th} (fixed at embedding). The default is a = {a0}, w = {w0}.",
        "",
        "| a \\ w | " + " | ".join(str(w) for w in GRID_IMAGE_WEIGHTS) + " |",
        "|---|" + "---|" * len(GRID_IMAGE_WEIGHTS),
    ]
    for a in GRID_QUESTION_WEIGHTS:
        cells = [f"{top3(grid[(a, w)])}" for w in GRID_IMAGE_WEIGHTS]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    stage_keys = ["classifier", "ocr", "retrieve_photo", "retrieve_question"]
    if generated:
        stage_keys += ["generate_photo", "generate_question"]
    lines += [
        "",
        "## Time per question (seconds, this machine)",
        "",
        "| stage | median | mean | max |",
        "|---|---|---|---|",
    ]
    for key in stage_keys:
        vals = [r["seconds"][key] for r in rows]
        lines.append(f"| {key} | {statistics.median(vals):.2f} | {statistics.mean(vals):.2f} | {max(vals):.2f} |")
    lines += [
        "",
        "## Per question",
        "",
        "| id | photo words | gold rank: question / photo | answer: question / photo |",
        "|---|---|---|---|",
    ]
    for r in rows:
        words = (r["photo_words"] or "(nothing confident)").replace("|", "/")[:80]
        ans = ""
        if generated:
            ans = (
                f"{r['answer_question'][:30]!s} {'✓' if r['correct_question'] else '✗'} / "
                f"{r['answer_photo'][:30]!s} {'✓' if r['correct_photo'] else '✗'}"
            ).replace("|", "/")
        lines.append(f"| {r['id']} | {words} | {r['rank_question'] or '-'} / {r['rank_photo'] or '-'} | {ans} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
