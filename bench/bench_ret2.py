"""ReT-2 encoder cost against the bare backbone forward, same inputs, same run.

    .venv/bin/python bench/bench_ret2.py [--batch 32] [--repeats 3] [--threads 1] [--naive] [--memory]

Configuration: CLIP ViT-B/32-sized backbones (text 12 x 512, vision 12 x 768,
patch 32, 224 px, joint size 512) with random weights, the paper's cell
(d = 1024, 16 heads, MLP 4d), layers 3/7/11 from Table I, documents of 77
tokens (texts are truncated there) with an image each.

Prints, for fp32 on this machine's CPU:
  - bare:   CLIP text + vision towers, plain forward (no hidden states);
  - ret2:   the ReT-2 model forward (towers with hidden states + adapters +
            3 cell steps + projection + global features);
  - naive:  the same, with the cross-attention computed the textbook way
            (project all N tokens to keys and values) for comparison;
  - the ratios ret2/bare and naive/bare, documents/s, FLOPs per document
    (analytic), and a projection of bf16 throughput on one H100 (PROJECTED:
    from the FLOP count and an assumed utilisation; no GPU was used).
With --memory, peak resident memory per batch size, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT_LEN = 77
H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM spec sheet, dense bf16
ASSUMED_H100_UTILISATION = 0.35  # typical for ViT-B-sized encoders at batch 256 (assumption)


def build_config():
    from transformers import CLIPTextConfig, CLIPVisionConfig

    from ragvqa.retriever.backbones import backbone_config_dict
    from ragvqa.retriever.configuration import ReT2Config

    text = CLIPTextConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                          num_attention_heads=8, projection_dim=512, max_position_embeddings=77)
    vision = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512)
    return ReT2Config(text_backbone=backbone_config_dict(text), vision_backbone=backbone_config_dict(vision),
                      backbone_name="clip-vit-b-32")


def inputs(batch: int):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(300, 49000, (batch, TEXT_LEN), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407
    return ids, torch.ones(batch, TEXT_LEN, dtype=torch.long), torch.randn(batch, 3, 224, 224, generator=g)


def layer_flops(n: int, w: int, mlp: int) -> float:
    """Multiply-adds x 2 of one pre-LN transformer block on n tokens of width w."""
    return 2 * n * (4 * w * w + 2 * w * mlp) + 2 * 2 * n * n * w


def flops_per_document(cfg) -> dict[str, float]:
    t, v = cfg.text_backbone, cfg.vision_backbone
    n_v = (v["image_size"] // v["patch_size"]) ** 2 + 1
    text = t["num_hidden_layers"] * layer_flops(TEXT_LEN, t["hidden_size"], t["intermediate_size"])
    vision = v["num_hidden_layers"] * layer_flops(n_v, v["hidden_size"], v["intermediate_size"])
    vision += 2 * (n_v - 1) * 3 * v["patch_size"] ** 2 * v["hidden_size"]  # patch embedding
    d, steps, heads = cfg.hidden_size, 3, cfg.num_heads
    adapters = steps * 2 * (TEXT_LEN * t["hidden_size"] + n_v * v["hidden_size"]) * d
    # per step and modality: q proj, folded key (d*d), scores and pooling (2*N*d*H), value (d*d), out (d*d)
    attention = steps * sum(2 * (4 * d * d + 2 * n * d * heads) for n in (TEXT_LEN, n_v))
    gates_mlp = steps * 2 * (4 * d * d + 2 * d * cfg.mlp_ratio * d)
    naive_extra = steps * sum(2 * 2 * n * d * d for n in (TEXT_LEN, n_v))  # full K and V projections
    return {"backbones": text + vision, "cell": adapters + attention + gates_mlp + 2 * d * 512,
            "naive_extra": naive_extra}


def naive_attention_forward(self, query, tokens, mask):
    """Textbook cross-attention: project all tokens to keys and values (for comparison)."""
    import torch.nn.functional as F

    B, N, d = tokens.shape
    H, hd = self.num_heads, self.head_dim
    w_q, w_k, w_v = self.in_proj_weight.chunk(3, dim=0)
    q = F.linear(query, w_q).view(B, H, 1, hd)
    k = F.linear(tokens, w_k).view(B, N, H, hd).transpose(1, 2)
    v = F.linear(tokens, w_v).view(B, N, H, hd).transpose(1, 2)
    attn_mask = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, 1, hd)
    return self.out_proj(out.reshape(*query.shape))  # (B, 1, d) state token(s), or (B, d)


def time_interleaved(fns: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Best CPU time and best wall time of each function, runs interleaved.

    The box is shared, so wall time swings with the other processes' load;
    CPU time of this process (one torch thread) measures the work itself.
    Interleaving exposes every variant to the same background.
    """
    for fn in fns.values():
        fn()  # warm-up
    best = {name: {"cpu_s": float("inf"), "wall_s": float("inf")} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            c1, w1 = time.process_time(), time.perf_counter()
            best[name]["cpu_s"] = min(best[name]["cpu_s"], c1 - c0)
            best[name]["wall_s"] = min(best[name]["wall_s"], w1 - w0)
    return best


def speed(batch: int, repeats: int, threads: int, naive: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    from ragvqa.retriever.cell import StateCrossAttention
    from ragvqa.retriever.modeling import ReT2Model

    torch.manual_seed(0)
    cfg = build_config()
    model = ReT2Model(cfg).eval()
    ids, am, pix = inputs(batch)
    text_model, vision_model = model.text_tower.model, model.vision_tower.model

    with torch.inference_mode():
        def bare():
            text_model(input_ids=ids, attention_mask=am)
            vision_model(pixel_values=pix)

        def ret2():
            model(ids, am, pix)

        fast = StateCrossAttention.forward

        def ret2_naive():
            StateCrossAttention.forward = naive_attention_forward
            try:
                model(ids, am, pix)
            finally:
                StateCrossAttention.forward = fast

        fns = {"bare": bare, "ret2": ret2}
        if naive:
            fns["ret2_naive_attention"] = ret2_naive
        times = time_interleaved(fns, repeats)
    flops = flops_per_document(cfg)
    per_doc = flops["backbones"] + flops["cell"]
    t_ret2, t_bare = times["ret2"]["cpu_s"], times["bare"]["cpu_s"]
    cpu_flops = per_doc * batch / t_ret2
    h100_docs = H100_BF16_DENSE_TFLOPS * 1e12 * ASSUMED_H100_UTILISATION / per_doc
    out = {
        "batch": batch,
        "torch_threads": torch.get_num_threads(),
        "times": times,
        "ratio_ret2_over_bare_cpu_time": round(t_ret2 / t_bare, 3),
        "ratio_ret2_over_bare_wall": round(times["ret2"]["wall_s"] / times["bare"]["wall_s"], 3),
    }
    if naive:
        out["ratio_naive_over_bare_cpu_time"] = round(times["ret2_naive_attention"]["cpu_s"] / t_bare, 3)
    out.update({
        "docs_per_cpu_second_fp32": round(batch / t_ret2, 2),
        "docs_per_s_fp32_wall_this_run": round(batch / times["ret2"]["wall_s"], 2),
        "gflops_per_doc_backbones": round(flops["backbones"] / 1e9, 3),
        "gflops_per_doc_cell": round(flops["cell"] / 1e9, 3),
        "gflops_per_doc_naive_extra": round(flops["naive_extra"] / 1e9, 3),
        "flop_ratio_ret2_over_bare": round(per_doc / flops["backbones"], 3),
        "cpu_achieved_gflops": round(cpu_flops / 1e9, 1),
        "h100_bf16_docs_per_s_PROJECTED": round(h100_docs),
    })
    return out


def memory(batch: int) -> dict:
    """Peak RSS during one forward pass at ``batch`` (run in a fresh process).

    A thread samples the resident set every 2 ms; the figure is the peak
    minus the resident set just before the forward (model already loaded).
    """
    import threading

    import psutil
    import torch

    from ragvqa.retriever.modeling import ReT2Model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ReT2Model(build_config()).eval()
    ids, am, pix = inputs(batch)
    proc = psutil.Process()
    with torch.inference_mode():
        model(ids[:1], am[:1], pix[:1])  # first call allocates lazily-built buffers
    before = proc.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.inference_mode():
        model(ids, am, pix)
    done.set()
    sampler.join()
    mib = 1024 * 1024
    return {"batch": batch, "rss_before_forward_mib": round(before / mib),
            "forward_peak_extra_mib": round((peak - before) / mib)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = work)")
    parser.add_argument("--naive", action="store_true", help="also time textbook cross-attention")
    parser.add_argument("--memory", action="store_true", help="also peak memory for batch 1, 8, 32")
    parser.add_argument("--memory-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.disable(logging.WARNING)
    if args.memory_one:
        print(json.dumps(memory(args.memory_one)))
        return
    print(json.dumps(speed(args.batch, args.repeats, args.threads, args.naive), indent=2))
    if args.memory:
        for batch in (1, 8, 32):
            out = subprocess.run([sys.executable, __file__, "--memory-one", str(batch)],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
