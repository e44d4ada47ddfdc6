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

from ragvqa.evaluation.adapters import PAPER_TABLE_VII, DatasetAdapter, fmt, get_adapter
from ragvqa.evaluation.rundir import RESUME_KEYS, stored_hits

log = logging.getLogger(__name__)

RECALL_PLOT = "recall.png"
REPORT = "report.md"

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


def _score_rows(adapter: DatasetAdapter, answers: dict[str, Any] | None) -> list[str]:
    """This run's headline scores beside the ReT-2 paper's Table VII rows."""
    columns = adapter.score_columns
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    if answers:
        cells = " | ".join(f"**{fmt(v)}**" for v in adapter.run_scores(answers))
        lines.append(f"| **this run**{adapter.run_label_note(answers)} | {cells} |")
    for row in PAPER_TABLE_VII:
        paper = adapter.paper_scores(row)
        if not paper:  # a dataset the paper did not evaluate (jsonl)
            continue
        cells = " | ".join(f"{v:.1f}" for v in paper)
        lines.append(f"| paper: {row.generator} + {row.retriever} | {cells} |")
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
    adapter = get_adapter(metrics["dataset"])
    config = metrics.get("config", {})
    answers = metrics.get("answers")
    ret = metrics.get("retrieval", {})
    lines: list[str] = [
        f"# ragvqa evaluation: {adapter.title}",
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
            lines.append(f"| {key} | {_md_escape(fmt(config[key]))} |")
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
        lines.append(adapter.scored_sentence(answers))
        lines.append("")
        lines += _score_rows(adapter, answers)
        lines.append("")
        lines.append(
            "Paper rows: ReT-2 paper, Table VII (full test/val sets, k = 3, GPU models); "
            "a small or offline run is not comparable in size or models."
        )
        lines.append("")
        lines += adapter.breakdown(answers)
        lines.append("")

    lines += ["## Retrieval", ""]
    ks = sorted(int(key.split("@")[1]) for key in ret if key.startswith("recall@"))
    if ks:
        lines.append("| K | " + " | ".join(str(k) for k in ks) + " |")
        lines.append("|---|" + "---|" * len(ks))
        lines.append("| Recall@K | " + " | ".join(fmt(ret.get(f"recall@{k}")) for k in ks) + " |")
        lines.append(
            "| pseudo-recall@K | "
            + " | ".join(fmt(ret.get(f"pseudo_recall@{k}")) for k in ks)
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
        # The documents the generator read: k of them (0: none; None: not recorded).
        k_gen = config.get("k")
        lines += _sample_section(
            adapter, answers, prepared, predictions, retrieval, pipeline, samples, k_gen
        )
    atomic_write_bytes(out / REPORT, ("\n".join(lines) + "\n").encode())
    return out / REPORT


def _sample_section(
    adapter: DatasetAdapter,
    answers: dict[str, Any],
    prepared: Any,
    predictions: dict[str, dict[str, Any]],
    retrieval: dict[str, dict[str, Any]],
    pipeline: Any | None,
    samples: int,
    k_gen: int | None,
) -> list[str]:
    """Right and wrong answers, each with the documents the generator was given."""
    per_q = answers.get("per_question", {})
    right = [pq for pq in prepared.questions if per_q.get(pq.key, {}).get("score") == 1.0]
    wrong = [
        pq for pq in prepared.questions if pq.key in per_q and per_q[pq.key].get("score") == 0.0
    ]
    lines = ["## Sample answers", ""]
    if k_gen == 0:
        lines += ["No documents were given to the generator (k = 0).", ""]
    elif k_gen is None:
        lines += ["The number of documents given to the generator was not recorded.", ""]
    kb = getattr(getattr(pipeline, "searcher", None), "kb", None)
    for title, group in (("Right", right[:samples]), ("Wrong", wrong[:samples])):
        lines += [f"### {title} ({len(right) if title == 'Right' else len(wrong)} in all)", ""]
        if not group:
            lines += ["(none)", ""]
        for pq in group:
            lines.append(f"- **Q{pq.key}**: {_md_escape(pq.question)}")
            lines.append(f"  - image: `{pq.image.name}`")
            lines.append(
                f"  - prediction: `{_md_escape(predictions[pq.key]['prediction'])}`; "
                f"reference: `{_md_escape(adapter.reference_text(pq.source))}`"
            )
            matched = per_q.get(pq.key, {}).get("matched_by")
            if matched:
                lines.append(f"  - matched by: {matched}")
            rec = retrieval.get(pq.key)
            if rec and k_gen:
                lines += _given_documents(stored_hits(rec)[: int(k_gen)], kb)
        lines.append("")
    return lines


def _given_documents(hits: list[tuple[int, float, str]], kb: Any | None) -> list[str]:
    """One line per document: title, section and the start of its text (titles only without the KB)."""
    docs = None
    if kb is not None:
        try:
            docs = kb.get([doc_id for doc_id, _, _ in hits])
        except Exception:  # a KB changed since the run: show titles only
            docs = None
    lines = []
    for rank, (_, score, page_title) in enumerate(hits):
        text = page_title
        if docs is not None:
            d = docs[rank]
            section = (
                f" / {d.section_title}" if d.section_title and d.section_title != d.page_title else ""
            )
            text = f"{d.page_title}{section}: {_md_escape(d.text)[:200]}"
        lines.append(f"  - doc {rank + 1} (score {score:.3f}): {_md_escape(text)}")
    return lines
