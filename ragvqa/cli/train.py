"""``ragvqa train``: fine-tune a ReT-2 retriever (one process, or several under torchrun)."""

from __future__ import annotations

import argparse

from ragvqa.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ragvqa.training.config import (
        PAPER_BACKBONE_LR_SCALE,
        PAPER_BATCH_SIZE,
        PAPER_LR,
        PAPER_STEPS,
    )

    p = subparsers.add_parser(
        "train",
        help="fine-tune a ReT-2 retriever on M2KR-style data or on your own KB (resumable, torchrun for DDP)",
        description=(
            "Train a ReT-2 retriever with the paper's objective (symmetric InfoNCE over in-batch negatives) "
            "and recipe as defaults. Data: M2KR-style query and passage JSONL files, or a ragvqa KB with a "
            "JSONL of question-document pairs. Checkpoints are atomic; rerunning the same command resumes. "
            "Several processes: torchrun --nproc_per_node N -m ragvqa train ... The result loads with "
            "--retriever ret2:OUT. Guide: docs/training.md."
        ),
    )
    p.add_argument("--out", required=True, metavar="OUT", help="run directory (checkpoints, metrics, the trained model)")
    p.add_argument("--init", required=True, metavar="SPEC",
                   help="start from ret2:PATH (a ragvqa or official ReT-2 checkpoint, dir or hub id) "
                        "or backbones:TEXT[,VISION] (a fresh ReT-2 on pretrained backbones)")
    data = p.add_argument_group("data (M2KR-style files, or a KB with pairs)")
    data.add_argument("--m2kr-queries", metavar="JSONL", help="training queries (data_id, instruction, question, image_path, passage_id)")
    data.add_argument("--m2kr-passages", metavar="JSONL", help="passages (passage_id, passage_text, passage_image_path)")
    data.add_argument("--m2kr-eval-queries", metavar="JSONL", help="held-out queries (default: --eval-fraction of the training ones)")
    data.add_argument("--kb", metavar="KB_DIR", help="a KB built by ragvqa build-kb")
    data.add_argument("--pairs", metavar="JSONL", help="questions about the KB: question, image, doc_ids")
    data.add_argument("--eval-pairs", metavar="JSONL", help="held-out pairs (default: --eval-fraction of --pairs)")
    data.add_argument("--image-root", metavar="DIR", help="where relative image paths start (default: each file's directory)")

    opt = p.add_argument_group("optimisation (defaults: the ReT-2 paper's M2KR recipe)")
    opt.add_argument("--steps", type=int, default=PAPER_STEPS, help=f"optimiser steps (default {PAPER_STEPS})")
    opt.add_argument("--epochs", type=float, default=0.0, help="train this many passes over the data instead of --steps")
    opt.add_argument("--batch-size", type=int, default=PAPER_BATCH_SIZE,
                     help=f"pairs per optimiser step over all processes and accumulation steps (default {PAPER_BATCH_SIZE})")
    opt.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimiser step (default 1)")
    opt.add_argument("--lr", type=float, default=PAPER_LR, help=f"learning rate of the ReT-2 cell (default {PAPER_LR})")
    opt.add_argument("--backbone-lr-scale", type=float, default=PAPER_BACKBONE_LR_SCALE,
                     help=f"lr multiplier of trainable backbones (default {PAPER_BACKBONE_LR_SCALE})")
    opt.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="lr schedule (default cosine)")
    opt.add_argument("--warmup-steps", type=int, default=0, help="linear lr warm-up steps (default 0)")
    opt.add_argument("--temperature", type=float, default=1.0, help="logit temperature (default 1.0: raw cosine, as the ReT code)")
    opt.add_argument("--one-way", action="store_true", help="query->document loss only (default: symmetric)")
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm, 0 = none (default 1.0)")
    opt.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    freeze = opt.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-backbones", dest="freeze", action="store_const", const=True,
                        help="the paper's frozen variant (default: as the --init checkpoint's config says)")
    freeze.add_argument("--unfreeze-backbones", dest="freeze", action="store_const", const=False,
                        help="the paper's trainable variant (backbones at lr x backbone-lr-scale)")
    opt.add_argument("--gradient-checkpointing", choices=("auto", "on", "off"), default="auto",
                     help="recompute backbone activations (auto: on when a backbone is trainable)")
    opt.add_argument("--seed", type=int, default=0, help="seed of the data order, dropout and fresh weights (default 0)")

    run = p.add_argument_group("hardware, checkpoints, evaluation, output")
    run.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda (torchrun: one GPU per process)")
    run.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="auto: bf16 autocast on CUDA, fp32 on CPU")
    run.add_argument("--num-workers", type=int, default=2, help="data-loading processes per training process (default 2)")
    run.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    run.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (default 2)")
    run.add_argument("--eval-every", type=int, default=1000, help="steps between held-out evaluations, 0 = start and end only")
    run.add_argument("--eval-fraction", type=float, default=0.02,
                     help="share of the training queries held out when no eval file is given (default 0.02)")
    run.add_argument("--eval-k", default="1,5,10", metavar="K,K", help="recall@k values (default 1,5,10)")
    run.add_argument("--eval-pool", type=int, default=10_000, help="passages searched at evaluation (default 10000)")
    run.add_argument("--eval-max-queries", type=int, default=1000, help="held-out queries evaluated (default 1000)")
    run.add_argument("--log-every", type=int, default=10, help="steps per metrics line (default 10)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--force", action="store_true", help="discard the run already in OUT and start over")
    p.set_defaults(func=run_train)


def _data_spec(args: argparse.Namespace) -> dict:
    m2kr = args.m2kr_queries or args.m2kr_passages or args.m2kr_eval_queries
    kb = args.kb or args.pairs or args.eval_pairs
    if m2kr and kb:
        raise InputError("give either M2KR files or --kb with --pairs, not both")
    if m2kr:
        if not (args.m2kr_queries and args.m2kr_passages):
            raise InputError("M2KR data needs both --m2kr-queries and --m2kr-passages")
        return {"kind": "m2kr", "queries": args.m2kr_queries, "passages": args.m2kr_passages,
                "eval_queries": args.m2kr_eval_queries, "image_root": args.image_root}
    if kb:
        if not (args.kb and args.pairs):
            raise InputError("KB training needs both --kb and --pairs")
        return {"kind": "kb", "kb": args.kb, "pairs": args.pairs, "eval_pairs": args.eval_pairs,
                "image_root": args.image_root}
    raise InputError("no training data", hint="pass --m2kr-queries/--m2kr-passages, or --kb and --pairs")


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise InputError(f"--eval-k {text!r} is not a comma-separated list of integers") from None
    return ks


def build_config(args: argparse.Namespace):
    """The TrainConfig the arguments describe (InputError for a bad combination)."""
    from ragvqa.training.config import TrainConfig

    gc = {"auto": None, "on": True, "off": False}[args.gradient_checkpointing]
    return TrainConfig(
        out_dir=args.out, init=args.init, data=_data_spec(args), steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        backbone_lr_scale=args.backbone_lr_scale, schedule=args.schedule, warmup_steps=args.warmup_steps,
        temperature=args.temperature, symmetric=not args.one_way, max_grad_norm=args.max_grad_norm,
        weight_decay=args.weight_decay, freeze_backbones=args.freeze, gradient_checkpointing=gc,
        precision=args.precision, device=args.device, seed=args.seed, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, eval_every=args.eval_every, eval_fraction=args.eval_fraction,
        eval_ks=_ks(args.eval_k), eval_pool=args.eval_pool, eval_max_queries=args.eval_max_queries,
        log_every=args.log_every, num_workers=args.num_workers, progress=not args.no_progress,
    )


def format_summary(summary: dict) -> str:
    """Lines for the person at the terminal."""
    if not summary:
        return ""
    lines = [f"trained {summary['steps']} steps (batch {summary['batch_size']}, {summary['world_size']} process(es), "
             f"{summary['device']}, {summary['precision']}): {summary['model_dir']}"]
    first, last = summary.get("first_eval"), summary.get("final_eval")
    if first and last:
        keys = sorted((k for k in last if k.startswith("recall@")), key=lambda k: int(k.split("@")[1]))
        lines.append("held-out " + ", ".join(f"{k} {first.get(k, 0):.3f} -> {last[k]:.3f}" for k in keys)
                     + f" ({last['queries']} queries, pool {last['pool']})")
    lines.append(f"final loss {summary.get('final_loss')}, {summary.get('steps_per_s_this_session')} steps/s, "
                 f"peak memory {summary.get('peak_memory')}")
    if summary.get("plot"):
        lines.append(f"plot: {summary['plot']}")
    lines.append(f"use it: ragvqa embed KB_DIR --retriever ret2:{summary['model_dir']}")
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    from ragvqa.training.loop import train

    summary = train(build_config(args), force=args.force)
    text = format_summary(summary)
    if text:
        print(text)
    return 0
