"""The run report: ``report.md`` + ``recall.png`` in the run directory.

The report shows the run's configuration, the answer scores beside the ReT-2
paper's Table VII rows, Recall@K and pseudo-recall@K (table and plot), what
was skipped and why, and a sample of right and wrong answers with the
documents the generator was given.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

from ragvqa.evaluation.runner import RESUME_KEYS

log = logging.getLogger(__name__)

RECALL_PLOT = "recall.png"
REPORT = "report.md"

# ReT-2 paper, Table VII (k = 3 retrieved documents; reference/ret2.md):
# (generator, retriever, E-VQA single-hop, E-VQA all, InfoSeek unseen-Q, unseen-E, all)
PAPER_TABLE_VII: tuple[tuple[str, str, float, float, float, float, float], ...] = (
    ("Qwen2.5-VL-7B", "none", 19.8, 19.7, 18.6, 18.1, 18.3),
    ("Qwen2.5-VL-7B", "CLIP ViT-L", 19.5, 20.4, 18.7, 17.9, 18.3),
    ("Qwen2.5-VL-7B", "ReT-2", 33.5, 31.6, 27.9, 25.1, 26.4),
    ("LLaVA-MORE-8B", "none", 13.8, 14.9, 8.9, 8.0, 8.4),
    ("LLaVA-MORE-8B", "ReT-2", 28.5, 27.1, 24.3, 21.5, 22.8),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _md_escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def plot_recall(retrieval: dict[str, Any], path: Path) -> Path | None:
    """Recall@K and pseudo-recall@K against K (log x axis), PNG; None if nothing to plot."""
    ks = sorted(int(key.split("@")[1]) for key in retrieval if key.startswith("recall@"))
    rec = [retrieval.get(f"recall@{k}") for k in ks]
    pseudo = [retrieval.get(f"pseudo_recall@{k}") for k in ks]
    if all(v is None for v in rec + pseudo):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for values, label, marker in (
        (rec, "Recall@K (right page)", "o"),
        (pseudo, "pseudo-recall@K (answer in text)", "s"),
    ):
        pts = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("K (retrieved documents)")
    ax.set_ylabel("% of questions")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    k_max = retrieval.get("retrieved_k")
    ax.set_title(f"Retrieval ({retrieval.get('queries', 0)} questions, {k_max} retrieved each)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _score_rows(dataset: str, answers: dict[str, Any] | None) -> list[str]:
    lines = []
    if dataset == "evqa":
        lines.append("| system | E-VQA single-hop | E-VQA all |")
        lines.append("|---|---|---|")
        if answers:
            note = "" if answers.get("bem") else " (exact match only, no BEM)"
            lines.append(
                f"| **this run**{note} | **{_fmt(answers.get('accuracy_single_hop'))}** | **{_fmt(answers.get('accuracy_all'))}** |"
            )
        for gen, ret, sh, al, *_ in PAPER_TABLE_VII:
            lines.append(f"| paper: {gen} + {ret} | {sh:.1f} | {al:.1f} |")
    else:
        lines.append("| system | InfoSeek unseen-Q | unseen-E | all (harmonic mean) |")
        lines.append("|---|---|---|---|")
        if answers:
            uq = answers.get("unseen_question_score", {}).get("score")
            ue = answers.get("unseen_entity_score", {}).get("score")
            lines.append(
                f"| **this run** | **{_fmt(uq)}** | **{_fmt(ue)}** | **{_fmt(answers.get('final_score'))}** |"
            )
        for gen, ret, _sh, _al, uq, ue, al in PAPER_TABLE_VII:
            lines.append(f"| paper: {gen} + {ret} | {uq:.1f} | {ue:.1f} | {al:.1f} |")
    return lines


def write_report(
    out: Path,
    metrics: dict[str, Any],
    prepared: Any,
    predictions: dict[str, dict[str, Any]],
    retrieval: dict[str, dict[str, Any]],
    *,
    pipeline: Any | None = None,
    samples: int = 3,
) -> Path:
    """Write ``report.md`` (and ``recall.png``) into the run directory ``out``."""
    from ragvqa.kb.store import atomic_write_bytes

    out = Path(out)
    dataset = metrics["dataset"]
    config = metrics.get("config", {})
    answers = metrics.get("answers")
    ret = metrics.get("retrieval", {})
    lines: list[str] = [
        f"# ragvqa evaluation: {'Encyclopedic-VQA' if dataset == 'evqa' else 'InfoSeek'}",
        "",
    ]
    lines.append(f"Written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")
    lines.append("")
    for notice in metrics.get("notices", []):
        lines.append(f"> **Note:** {notice}")
        lines.append("")
    lines += ["## Configuration", "", "| setting | value |", "|---|---|"]
    # The settings a resume must match, then the ones that may differ between resumes.
    for key in (*RESUME_KEYS, "limit", "uses_image"):
        if key in config:
            lines.append(f"| {key} | {_md_escape(_fmt(config[key]))} |")
    gen_cfg = config.get("generator_config") or {}
    if gen_cfg:
        lines.append(
            f"| decoding | {gen_cfg.get('num_beams')} beams, at most {gen_cfg.get('max_new_tokens')} new tokens |"
        )
    lines.append("")

    lines += ["## Answer accuracy", ""]
    if answers is None:
        lines.append("Retrieval only (`--retrieval-only`): no answers were generated.")
    else:
        if dataset == "evqa":
            lines.append(
                f"{answers.get('n', 0)} questions scored with the official E-VQA rules "
                f"({'exact match, then BEM' if answers.get('bem') else 'exact match only: BEM was not run, so these are lower bounds'})."
            )
        else:
            c = answers.get("counts", {})
            lines.append(
                f"{c.get('matched_predictions', 0)} predictions scored with the official InfoSeek rules "
                f"({c.get('n_unseen_question', 0)} unseen-question, {c.get('n_unseen_entity', 0)} unseen-entity)."
            )
        lines.append("")
        lines += _score_rows(dataset, answers)
        lines.append("")
        lines.append(
            "Paper rows: ReT-2 paper, Table VII (full test/val sets, k = 3, GPU models); "
            "a small or offline run is not comparable in size or models."
        )
        lines.append("")
        if dataset == "evqa":
            lines += ["| question type | accuracy | n |", "|---|---|---|"]
            for qtype in ("templated", "automatic", "multi_answer", "2_hop"):
                lines.append(
                    f"| {qtype} | {_fmt(answers.get(f'accuracy_{qtype}'))} | {answers.get(f'n_{qtype}', 0)} |"
                )
        else:
            lines += ["| split | all | String | Numerical | Time |", "|---|---|---|---|---|"]
            for split in ("unseen_question", "unseen_entity"):
                s = answers.get(f"{split}_score", {})
                lines.append(
                    f"| {split} | {_fmt(s.get('score'))} | {_fmt(s.get('score_string'))} | {_fmt(s.get('score_num'))} | {_fmt(s.get('score_time'))} |"
                )
        lines.append("")

    lines += ["## Retrieval", ""]
    ks = sorted(int(key.split("@")[1]) for key in ret if key.startswith("recall@"))
    if ks:
        lines.append("| K | " + " | ".join(str(k) for k in ks) + " |")
        lines.append("|---|" + "---|" * len(ks))
        lines.append("| Recall@K | " + " | ".join(_fmt(ret.get(f"recall@{k}")) for k in ks) + " |")
        lines.append(
            "| pseudo-recall@K | "
            + " | ".join(_fmt(ret.get(f"pseudo_recall@{k}")) for k in ks)
            + " |"
        )
        lines.append("")
        lines.append(
            f"{ret.get('queries', 0)} questions; {ret.get('queries_with_positives', 0)} with a known right page "
            f"(Recall), {ret.get('queries_with_answers', 0)} with answer strings (pseudo-recall); "
            f"{ret.get('retrieved_k')} documents retrieved per question (K above it repeats the last value)."
        )
        lines.append("")
        try:
            plot = plot_recall(ret, out / RECALL_PLOT)
        except Exception as exc:  # the report stays useful without the picture
            log.warning("recall plot not written: %s", exc)
            plot = None
        if plot is not None:
            lines += [f"![Recall@K]({RECALL_PLOT})", ""]

    lines += ["## Counts", "", "| what | count |", "|---|---|"]
    for key, value in sorted(metrics.get("counts", {}).items()):
        lines.append(f"| {key} | {value} |")
    run = metrics.get("run", {})
    for key, value in run.items():
        lines.append(f"| run.{key} | {value} |")
    lines.append("")

    if answers is not None:
        k_gen = int(config.get("k") or 3)
        lines += _sample_section(
            dataset, answers, prepared, predictions, retrieval, pipeline, samples, k_gen
        )
    atomic_write_bytes(out / REPORT, ("\n".join(lines) + "\n").encode())
    return out / REPORT


def _sample_section(
    dataset, answers, prepared, predictions, retrieval, pipeline, samples, k_gen
) -> list[str]:
    per_q = answers.get("per_question", {})
    right = [pq for pq in prepared.questions if per_q.get(pq.key, {}).get("score") == 1.0]
    wrong = [
        pq for pq in prepared.questions if pq.key in per_q and per_q[pq.key].get("score") == 0.0
    ]
    lines = ["## Sample answers", ""]
    kb = getattr(getattr(pipeline, "searcher", None), "kb", None)
    for title, group in (("Right", right[:samples]), ("Wrong", wrong[:samples])):
        lines += [f"### {title} ({len(right) if title == 'Right' else len(wrong)} in all)", ""]
        if not group:
            lines += ["(none)", ""]
        for pq in group:
            refs = pq.source.answer if dataset == "evqa" else _infoseek_refs(pq.source)
            lines.append(f"- **Q{pq.key}**: {_md_escape(pq.question)}")
            lines.append(f"  - image: `{pq.image.name}`")
            lines.append(
                f"  - prediction: `{_md_escape(predictions[pq.key]['prediction'])}`; reference: `{_md_escape(refs)}`"
            )
            matched = per_q.get(pq.key, {}).get("matched_by")
            if matched:
                lines.append(f"  - matched by: {matched}")
            rec = retrieval.get(pq.key)
            if rec:
                docs = None
                if kb is not None:
                    try:
                        docs = kb.get(rec["doc_ids"][:k_gen])
                    except Exception:  # a KB changed since the run: show titles only
                        docs = None
                for rank in range(min(k_gen, len(rec["doc_ids"]))):
                    text = ""
                    if docs is not None:
                        d = docs[rank]
                        section = (
                            f" / {d.section_title}"
                            if d.section_title and d.section_title != d.page_title
                            else ""
                        )
                        text = f"{d.page_title}{section}: {_md_escape(d.text)[:200]}"
                    else:
                        text = rec["pages"][rank]
                    lines.append(
                        f"  - doc {rank + 1} (score {rec['scores'][rank]:.3f}): {_md_escape(text)}"
                    )
        lines.append("")
    return lines


def _infoseek_refs(q: Any) -> str:
    if isinstance(q.answer_eval, list) and q.answer_eval and isinstance(q.answer_eval[0], dict):
        entry = q.answer_eval[0]
        return f"{entry.get('wikidata')} (range {entry.get('range')})"
    if isinstance(q.answer_eval, list):
        return " / ".join(str(a) for a in q.answer_eval[:5])
    return str(q.answer_eval)
