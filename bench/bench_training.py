"""`ragvqa train` throughput and peak memory on this machine, plus a GPU projection.

    .venv/bin/python bench/bench_training.py [--threads 1] [--work /tmp/bench-train] [--only tiny,b32,b32-unfrozen]
    .venv/bin/python bench/bench_training.py --device cuda     # the GPU check (bf16 autocast, NCCL-free)

Each configuration runs the real command (``python -m ragvqa train``) in a
fresh process on M2KR-style files written here (photos of plain colours,
224 px, and passages of about 60 words, so the text tower sees realistic
lengths), and reads the run's own ``metrics.jsonl`` (steps/s per step) and
``summary.json`` (peak resident memory of the training process):

- ``tiny``: the tests' tiny CLIP ReT-2 (width 16-32, 32 px), batch 16;
- ``b32``: CLIP ViT-B/32-sized backbones with random weights (text 12 x 512,
  vision 12 x 768, patch 32, 224 px) and the paper's cell (d = 1024), frozen
  backbones (the paper's default variant), batch 16;
- ``b32-unfrozen``: the same with trainable backbones (lr x 0.05) and
  activation checkpointing, as the paper's trainable variant.

With ``--device cuda`` (the device check of issue 15): the toy task for
300 steps in bf16 (recall before and after), then ViT-B/32- and
ViT-L/14-sized models, frozen and trainable, at GPU batch sizes (wall
pairs/s and peak GPU memory).

The first step (allocations, lazy initialisation) is left out. On a shared
machine wall time is mostly waiting, so the figure is CPU seconds of the
training process per step (``cpu_s_per_step`` in metrics.jsonl: all its
threads), with one torch thread by default (with two threads on a loaded
2-core box OpenMP spin-waits and wall time collapses).
The GPU rows are PROJECTED from FLOP counts (bench_ret2.flops_per_document):
no GPU was used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ret2 import H100_BF16_DENSE_TFLOPS, build_config, flops_per_document  # noqa: E402

ASSUMED_UTILISATION = 0.35  # same assumption as bench_ret2.py
WORDS = ["museum", "painting", "bridge", "cathedral", "river", "mountain", "species", "flower", "garden", "tower", "castle", "statue", "harbour", "village", "forest", "desert", "island", "temple", "market", "festival"]


def write_data(root: Path, n_queries: int = 96) -> dict[str, Path]:
    """M2KR-style files: 224 px colour photos, passages of about 60 words (about 70 CLIP tokens)."""
    import numpy as np

    from tests.training.toy import COLOURS, QUESTION, write_photo

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    with open(root / "queries.jsonl", "w") as fh:
        for i in range(n_queries):
            c = i % len(COLOURS)
            write_photo(root / "img" / f"{i}.png", COLOURS[c][1], rng, size=224)
            fh.write(json.dumps({"data_id": str(i), "question": QUESTION, "image_path": f"img/{i}.png",
                                 "passage_id": [f"p{c}"]}) + "\n")
    with open(root / "passages.jsonl", "w") as fh:
        for c, (name, _) in enumerate(COLOURS):
            text = name + " " + " ".join(rng.choice(WORDS, 60))
            fh.write(json.dumps({"passage_id": f"p{c}", "passage_text": text, "passage_image_path": None}) + "\n")
    return {"queries": root / "queries.jsonl", "passages": root / "passages.jsonl"}


def build_l14_config():
    """CLIP ViT-L/14-sized backbones (text 12 x 768, vision 24 x 1024, patch 14, 224 px), the paper's cell."""
    from transformers import CLIPTextConfig, CLIPVisionConfig

    from ragvqa.retriever.backbones import backbone_config_dict
    from ragvqa.retriever.configuration import ReT2Config

    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          projection_dim=768, max_position_embeddings=77)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768)
    return ReT2Config(text_backbone=backbone_config_dict(text), vision_backbone=backbone_config_dict(vision),
                      backbone_name="clip-vit-l-14")


def save_random(directory: Path, config) -> Path:
    """A random-weight ReT-2 of ``config`` saved with the OpenAI CLIP tokenizer (once)."""
    import torch

    from ragvqa.retriever.backbones import build_clip_tokenizer
    from ragvqa.retriever.modeling import ReT2Model

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(0)
    model = ReT2Model(config)
    model.save_pretrained(directory, tokenizer=build_clip_tokenizer(directory.parent / f"{directory.name}-tok"))
    return directory


UNFROZEN = ["--unfreeze-backbones"]
TOY = ["--lr", "5e-3", "--temperature", "0.05", "--eval-every", "100"]  # the toy task's learning settings
# CPU: what this 2-core box can run; GPU (--device cuda): the device check of issue 15.
CONFIGS = {
    "cpu": {
        "tiny": {"model": "tiny", "steps": 40, "batch": 16, "extra": []},
        "b32": {"model": "b32", "steps": 4, "batch": 16, "extra": []},
        "b32-unfrozen": {"model": "b32", "steps": 3, "batch": 16, "extra": UNFROZEN},
    },
    "cuda": {
        "tiny-toy": {"model": "tiny", "steps": 300, "batch": 16, "extra": TOY, "data": "toy"},
        "b32": {"model": "b32", "steps": 30, "batch": 128, "extra": []},
        "b32-unfrozen": {"model": "b32", "steps": 20, "batch": 128, "extra": UNFROZEN},
        "l14": {"model": "l14", "steps": 20, "batch": 128, "extra": []},
        "l14-unfrozen": {"model": "l14", "steps": 10, "batch": 64, "extra": UNFROZEN},
    },
}


def run(name: str, cfg: dict, ckpt: Path, data: dict[str, Path], work: Path, threads: int, device: str) -> dict:
    out = work / f"run-{name}"
    shutil.rmtree(out, ignore_errors=True)
    evaluation = ["--m2kr-eval-queries", str(data["eval"])] if "eval" in data else ["--eval-fraction", "0"]
    cmd = [sys.executable, "-m", "ragvqa", "train", "--out", str(out), "--init", f"ret2:{ckpt}",
           "--m2kr-queries", str(data["queries"]), "--m2kr-passages", str(data["passages"]), *evaluation,
           "--steps", str(cfg["steps"]), "--batch-size", str(cfg["batch"]), "--device", device,
           "--log-every", "1", "--checkpoint-every", "100000", "--no-progress",
           "--num-workers", "0" if device == "cpu" else "6", *cfg["extra"]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    records = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "train"]
    timed = records[1:]  # drop the first step
    cpu = statistics.median(r["cpu_s_per_step"] for r in timed)
    summary = json.loads((out / "summary.json").read_text())
    wall = statistics.median(r["steps_per_s"] for r in timed)
    result = {"config": name, "device": device, "precision": summary["precision"], "batch": cfg["batch"],
              "steps_timed": len(timed), "threads": threads, "cpu_s_per_step": round(cpu, 3),
              "pairs_per_cpu_s": round(cfg["batch"] / cpu, 2), "wall_steps_per_s": round(wall, 4),
              "wall_pairs_per_s": round(wall * cfg["batch"], 1), **summary["peak_memory"]}
    if summary.get("first_eval") and summary.get("final_eval"):
        result["recall@1"] = [summary["first_eval"]["recall@1"], summary["final_eval"]["recall@1"]]
    return result


def projection() -> list[dict]:
    """bf16 pairs/s on one H100 and the paper's 75k x 512 recipe, from FLOPs (PROJECTED)."""
    large = build_l14_config()
    rows = []
    achieved = H100_BF16_DENSE_TFLOPS * 1e12 * ASSUMED_UTILISATION
    for name, cfg in (("ViT-B/32", build_config()), ("ViT-L/14", large)):
        f = flops_per_document(cfg)
        backbones, cell = f["backbones"], f["cell"]
        # per pair: a query and a document forward; backward = 2x forward of what trains;
        # frozen: only the cell (and projections) train; trainable: everything, plus the
        # activation-checkpointing recompute of the backbones.
        frozen = 2 * (backbones + 3 * cell)
        trainable = 2 * (4 * backbones + 3 * cell)
        for variant, flops in (("frozen", frozen), ("trainable", trainable)):
            pairs = achieved / flops
            rows.append({"model": name, "variant": variant, "gflop_per_pair": round(flops / 1e9, 1),
                         "pairs_per_s": round(pairs), "s_per_step_512": round(512 / pairs, 2),
                         "hours_75k_steps": round(75_000 * 512 / pairs / 3600, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-train"))
    parser.add_argument("--only", help="comma-separated configurations (default: all for the device)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from tests.training.toy import save_tiny_checkpoint, write_m2kr

    configs = CONFIGS[args.device]
    names = args.only.split(",") if args.only else list(configs)
    data = write_data(args.work / "data", n_queries=96 if args.device == "cpu" else 1024)
    toy = write_m2kr(args.work / "toy")
    toy_data = {"queries": toy["train"], "passages": toy["passages"], "eval": toy["eval"]}
    builders = {
        "tiny": lambda d: save_tiny_checkpoint(d) if not (d / "config.json").is_file() else d,
        "b32": lambda d: save_random(d, build_config()),
        "l14": lambda d: save_random(d, build_l14_config()),
    }
    for name in names:
        cfg = configs[name]
        ckpt = builders[cfg["model"]](args.work / cfg["model"])
        result = run(name, cfg, ckpt, toy_data if cfg.get("data") == "toy" else data, args.work,
                     args.threads, args.device)
        print(json.dumps(result), flush=True)
    for row in projection():
        print(json.dumps({"PROJECTED": True, **row}), flush=True)


if __name__ == "__main__":
    main()
