"""``ragvqa convert bem``: the official BEM TF Hub SavedModel -> a PyTorch directory.

    ragvqa convert bem SAVEDMODEL_DIR OUT_DIR [--vocab vocab.txt] [--num-heads 12] [--hidden-act gelu_new]
    ragvqa convert bem SAVEDMODEL_DIR --list-variables

SAVEDMODEL_DIR is the unpacked ``google/answer_equivalence/bem/1`` model
(``saved_model.pb`` + ``variables/``). Needs tensorflow (and tensorflow_text
if the SavedModel's ops need it), ideally in an environment of its own:
``pip install tensorflow tensorflow-text`` next to ragvqa. Run once; OUT_DIR
then loads with ``ragvqa score evqa --bem OUT_DIR`` / ``ragvqa eval --bem OUT_DIR``
with no tensorflow. The variable-name mapping is
``ragvqa.evaluation.metrics.bem.convert.TF_TO_TORCH`` (documented in docs/evaluation.md).

This module adds the ``bem`` target to the ``convert`` command group
(``ragvqa/cli/convert.py`` lists :func:`add_bem` in its CONVERTERS).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_bem(sub: argparse._SubParsersAction) -> None:
    """Register ``convert bem`` under the ``convert`` subparsers."""
    parser = sub.add_parser(
        "bem",
        help="official BEM TF SavedModel -> PyTorch BERT classifier dir (needs tensorflow, once)",
        description="Convert the official BEM answer-equivalence SavedModel for ragvqa's PyTorch BEM scorer.",
    )
    parser.add_argument(
        "saved_model_dir",
        type=Path,
        help="unpacked TF Hub SavedModel (google/answer_equivalence/bem/1)",
    )
    parser.add_argument("out_dir", type=Path, nargs="?", help="output directory")
    parser.add_argument(
        "--vocab",
        type=Path,
        help="vocab.txt (default: the SavedModel's assets, else the uncased BERT vocab)",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        help="attention heads when the names do not say (default hidden/64)",
    )
    parser.add_argument(
        "--hidden-act",
        default="gelu_new",
        help="activation: gelu_new (tanh approximation, TF BERT) or gelu (exact)",
    )
    parser.add_argument(
        "--list-variables",
        action="store_true",
        help="print the SavedModel's variable names and shapes",
    )
    parser.set_defaults(func=run_bem)


def run_bem(args: argparse.Namespace) -> int:
    from ragvqa.errors import InputError
    from ragvqa.evaluation.metrics.bem.convert import (
        convert_tf_savedmodel,
        read_tf_savedmodel_variables,
    )

    if args.list_variables:
        variables = read_tf_savedmodel_variables(args.saved_model_dir)
        for name, value in sorted(variables.items()):
            print(f"{name}\t{tuple(value.shape)}")
        return 0
    if args.out_dir is None:
        raise InputError("no output directory", hint="ragvqa convert bem SAVEDMODEL_DIR OUT_DIR")
    summary = convert_tf_savedmodel(
        args.saved_model_dir,
        args.out_dir,
        vocab_path=args.vocab,
        num_heads=args.num_heads,
        hidden_act=args.hidden_act,
    )
    summary["next"] = (
        f"ragvqa score evqa --predictions P.jsonl --references test.csv --bem {args.out_dir}"
    )
    print(json.dumps(summary, indent=2))
    return 0
