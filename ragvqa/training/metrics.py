"""The run's metrics: one JSON object per line in ``OUT/metrics.jsonl``, and a plot at the end.

Records::

    {"type": "train", "step": 120, "epoch": 0, "loss": 1.93, "batch_recall@1": 0.41,
     "lr": 4.9e-05, "grad_norm": 0.82, "steps_per_s": 3.1, "cpu_s_per_step": 0.6, "elapsed_s": 38.7}
    {"type": "eval", "step": 120, "recall@1": 0.52, "recall@5": 0.87, "recall@10": 0.95,
     "queries": 200, "pool": 1000}

``step`` counts finished optimiser steps (eval at step 0 = before training).
A resumed run first drops the records after the checkpoint it resumes from,
so the file ends up as an uninterrupted run's would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete records (a torn last line of a killed run is ignored)."""
    if not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class MetricsLog:
    """Appends records to ``metrics.jsonl``, flushed line by line.

    Args:
        path: the file.
        keep_until: the step a resumed run continues from: records after it
            are dropped first (None: a new run, the file is started afresh).
    """

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= keep_until] if keep_until is not None else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def plot_metrics(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss (left) and held-out recall@k (right) against the step, as a PNG; None if nothing to plot."""
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("InfoNCE loss")
    ax_loss.set_title("training loss")
    keys = sorted({k for r in evals for k in r if k.startswith("recall@")}, key=lambda k: int(k.split("@")[1]))
    for key in keys:
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax_rec.plot([s for s, _ in points], [v for _, v in points], marker="o", label=key)
    ax_rec.set_xlabel("step")
    ax_rec.set_ylabel("recall")
    ax_rec.set_ylim(0, 1.02)
    ax_rec.set_title("held-out recall@k")
    if keys:
        ax_rec.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
