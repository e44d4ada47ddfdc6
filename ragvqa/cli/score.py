"""``ragvqa score``: score prediction files with the official rules (no models but BEM).

    ragvqa score infoseek --predictions P.jsonl --references infoseek_val.jsonl --qtypes infoseek_val_qtype.jsonl
    ragvqa score evqa --predictions P.jsonl --references test.csv --bem BEM_DIR
    ragvqa score evqa --predictions P.jsonl --references test.csv --no-bem

Prints one JSON object. InfoSeek: the official script's keys and values
(``final_score``, ``unseen_question_score``, ``unseen_entity_score``) plus
``counts``. E-VQA: ``accuracy_all``, ``accuracy_single_hop``, per-type
accuracies (x100, 2 decimals), ``n`` and ``counts``. Both: ``coverage``
(reference questions scored, missing; prediction lines invalid, extra,
duplicate); a warning on stderr when some reference has no usable
prediction. An empty predictions file, or one with no usable prediction, is
an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a predictions file with the official E-VQA (BEM) or InfoSeek rules",
        description="Score predictions against official reference files; prints JSON.",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    info = sub.add_parser("infoseek", help="InfoSeek accuracy (official infoseek_eval rules)")
    info.add_argument(
        "--predictions", required=True, type=Path, help='JSONL of {"data_id", "prediction"}'
    )
    info.add_argument(
        "--references", required=True, type=Path, help="infoseek_val.jsonl (or *_withkb.jsonl)"
    )
    info.add_argument("--qtypes", required=True, type=Path, help="infoseek_val_qtype.jsonl")
    info.add_argument("--out", type=Path, help="also write the JSON to this file")
    info.set_defaults(func=run)

    evqa = sub.add_parser("evqa", help="Encyclopedic-VQA accuracy (exact match, then BEM)")
    evqa.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help='JSONL of {"question_id": row, "prediction"}',
    )
    evqa.add_argument("--references", required=True, type=Path, help="the E-VQA CSV (test.csv)")
    group = evqa.add_mutually_exclusive_group()
    group.add_argument(
        "--bem", help="BEM model dir (transformers format, or from `ragvqa convert bem`) or hub id"
    )
    group.add_argument(
        "--no-bem", action="store_true", help="exact match only (scores are lower bounds)"
    )
    evqa.add_argument(
        "--bem-layout",
        choices=["official", "pair"],
        help="segment ids 0/1/2 or 0/1/1 (default: from the model dir)",
    )
    evqa.add_argument("--device", default="cpu", help="torch device for BEM")
    evqa.add_argument("--batch-size", type=int, default=16, help="BEM examples per forward pass")
    evqa.add_argument("--out", type=Path, help="also write the JSON to this file")
    evqa.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ragvqa.errors import InputError
    from ragvqa.evaluation.adapters import get_adapter
    from ragvqa.evaluation.scoring import Coverage

    adapter = get_adapter(args.dataset)
    bem = None
    if adapter.uses_bem:
        if not args.bem and not args.no_bem:
            raise InputError(
                "E-VQA scoring needs BEM for answers that do not match exactly",
                hint="pass --bem BEM_DIR, or --no-bem to score exact match only",
            )
        if args.bem:
            from ragvqa.evaluation.metrics.bem.scorer import BEMScorer

            bem = BEMScorer(
                args.bem, layout=args.bem_layout, device=args.device, batch_size=args.batch_size
            )
    metrics = adapter.score_file(
        args.predictions, args.references, qtypes=getattr(args, "qtypes", None), bem=bem
    )
    if bem is not None:
        metrics["bem_model"] = bem.describe()
        metrics["counts"]["bem_truncated_inputs"] = bem.stats["truncated"]
    warning = Coverage(**metrics["coverage"]).warning()
    if warning:  # scores over part of the references: said on stderr, stdout stays JSON
        print(warning, file=sys.stderr)
    text = json.dumps(metrics, indent=2, ensure_ascii=False)
    if args.out:
        from ragvqa.kb.store import atomic_write_bytes

        atomic_write_bytes(args.out, (text + "\n").encode())
    print(text)
    return 0
