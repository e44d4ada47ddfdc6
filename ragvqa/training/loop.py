"""The training run: :func:`train` ties data, model, loss, checkpoints and evaluation together.

One optimiser step = ``grad_accum`` micro-steps; in each, every process
encodes its slice of the micro-batch's queries and positive passages with the
one shared encoder, the symmetric InfoNCE runs over the whole micro-batch
(embeddings gathered across processes), and the loss / grad_accum is
back-propagated (DDP all-reduces gradients on the last micro-step only). Then
the gradient norm is clipped, Adam steps with the scheduled learning rate.

Files in the run directory ``OUT``::

    train_config.json   the settings; a rerun must match them to resume
    metrics.jsonl       training and evaluation records (ragvqa.training.metrics)
    checkpoints/step-NNNNNNNN/   atomic, resumable checkpoints (ragvqa.training.checkpoints)
    config.json, model.safetensors, tokenizer files   the trained model (``--retriever ret2:OUT``)
    summary.json        counts, first and last recall, throughput, peak memory
    training.png        loss and recall curves

A rerun of the same command after a crash or a kill resumes from the newest
checkpoint and ends with the same weights and metrics as an uninterrupted
run: batches are a pure function of (seed, step), the optimiser state and
every process's RNG state are restored, and evaluation uses no randomness.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import resource
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ragvqa.errors import InputError, ModelError
from ragvqa.training import distributed as dist_util
from ragvqa.training.batching import BatchPlan
from ragvqa.training.checkpoints import (
    latest_checkpoint,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
)
from ragvqa.training.collate import Collator, to_device
from ragvqa.training.config import TrainConfig
from ragvqa.training.data import TrainingData, read_kb_pairs, read_m2kr, summarize_counts
from ragvqa.training.evaluate import recall_at_k
from ragvqa.training.init import (
    _tokenizer_from,
    enable_gradient_checkpointing,
    load_initial,
    parse_init,
    set_backbones_frozen,
    trainable_backbones,
)
from ragvqa.training.loss import contrastive_loss
from ragvqa.training.metrics import METRICS_FILE, PLOT_FILE, MetricsLog, plot_metrics, read_metrics
from ragvqa.training.optim import build_optimizer, lr_factor, set_lr

logger = logging.getLogger(__name__)

RUN_FILE = "train_config.json"
SUMMARY_FILE = "summary.json"


class PairEncoder(nn.Module):
    """The encoder applied to both sides in one forward call (what DDP wraps).

    ReT-2 shares one head; a converted ReT v1 checkpoint with its own passage
    head trains both heads.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, queries: dict[str, torch.Tensor], documents: dict[str, torch.Tensor]):
        """-> (queries (n, D), documents (n, D)) embeddings, not normalised."""
        return self.model(**queries, side="query").embedding, self.model(**documents, side="passage").embedding


class MicroBatches(torch.utils.data.Dataset):
    """Item k: this process's inputs for the k-th micro-step after ``start_step``.

    Pure function of k (the batch plan), so data-loader workers may build
    items in any order and a resumed run starts at its step.
    """

    def __init__(self, plan: BatchPlan, data: TrainingData, collator: Collator, rank: int,
                 start_step: int, total_steps: int) -> None:
        self.plan, self.data, self.collator, self.rank = plan, data, collator, rank
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.plan.grad_accum

    def __getitem__(self, k: int) -> dict[str, Any]:
        step, micro = divmod(k, self.plan.grad_accum)
        step += self.start_step
        pairs = self.plan.micro_batch(step, micro)
        local = pairs[self.plan.local_slice(self.rank)]
        queries = [self.data.train[p.example] for p in local]
        docs = [self.data.passages[p.passage] for p in local]
        q_in, q_counts = self.collator([q.text for q in queries], [q.image for q in queries])
        d_in, d_counts = self.collator([d.text for d in docs], [d.image for d in docs])
        return {"step": step, "micro": micro, "queries": q_in, "documents": d_in,
                "positives": self.plan.positive_mask(pairs), "counts": dict(q_counts + d_counts)}


# ---------------------------------------------------------------------------
# run directory


def _prepare_out(config: TrainConfig, force: bool, env: dist_util.DistEnv) -> bool:
    """Check (or start) the run directory; returns True when OUT holds a run to continue."""
    out = Path(config.out_dir)
    run_file = out / RUN_FILE
    resuming = False
    if env.is_main:
        if force and run_file.is_file():  # a run directory: everything in it is the run's
            for path in out.iterdir():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        if run_file.is_file():
            previous = json.loads(run_file.read_text())
            diff = _differences(previous.get("resume_key", {}), config.resume_key())
            if diff:
                raise InputError(
                    f"{out} holds a training run with other settings ({diff})",
                    hint="rerun with the same settings to resume, pass --force to start over, or use another --out",
                )
            resuming = True
        elif out.exists() and any(out.iterdir()):
            raise InputError(
                f"{out} is not empty and holds no ragvqa training run",
                hint="pass a new or empty --out directory",
            )
        else:
            out.mkdir(parents=True, exist_ok=True)
            tmp = run_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"config": config.to_dict(), "resume_key": config.resume_key()},
                                      indent=2, sort_keys=True) + "\n")
            tmp.replace(run_file)
    resuming = dist_util.broadcast_object(resuming, env)
    dist_util.barrier(env)
    return resuming


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:4])


def _read_data(config: TrainConfig, instruction: str) -> TrainingData:
    d = config.data
    if d.get("kind") == "m2kr":
        return read_m2kr(d["queries"], d["passages"], image_root=d.get("image_root"),
                         eval_queries=d.get("eval_queries"), default_instruction=instruction,
                         eval_fraction=config.eval_fraction, eval_pool=config.eval_pool, seed=config.seed)
    if d.get("kind") == "kb":
        return read_kb_pairs(d["kb"], d["pairs"], image_root=d.get("image_root"),
                             eval_pairs=d.get("eval_pairs"), instruction=instruction,
                             eval_fraction=config.eval_fraction, eval_pool=config.eval_pool, seed=config.seed)
    raise InputError(f"unknown training data kind {d.get('kind')!r}", hint="use M2KR files or --kb with --pairs")


def _peak_memory_mib(device: torch.device) -> dict[str, float]:
    out = {"cpu_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["gpu_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _rng_state(env: dist_util.DistEnv) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if env.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(env.device)
    return state


def _set_rng_state(states: list[dict[str, torch.Tensor]], env: dist_util.DistEnv, seed: int) -> None:
    if env.rank >= len(states):
        logger.warning("the checkpoint has no RNG state for process %d (fewer processes then): reseeding", env.rank)
        torch.manual_seed(seed + env.rank)
        return
    torch.set_rng_state(states[env.rank]["torch"])
    if env.device.type == "cuda" and "cuda" in states[env.rank]:
        torch.cuda.set_rng_state(states[env.rank]["cuda"], env.device)


# ---------------------------------------------------------------------------


def train(config: TrainConfig, *, force: bool = False) -> dict[str, Any]:
    """Run (or resume) a training run; returns the summary (also written to OUT/summary.json).

    Under ``torchrun`` every process calls this; only rank 0 writes files.
    """
    if config.precision == "bf16" and dist_util.pick_device(config.device).type != "cuda":
        raise InputError("bf16 autocast is for CUDA GPUs", hint="use --precision fp32 on the CPU")
    env = dist_util.setup(config.device)
    try:
        return Trainer(config, env).run(force)
    finally:
        dist_util.teardown(env)


class _Interval:
    """What the training records average over: the steps since the last one."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.loss, self.correct, self.seen, self.steps = 0.0, 0.0, 0.0, 0

    def add(self, loss: float, correct: float, seen: float) -> None:
        self.loss += loss
        self.correct += correct
        self.seen += seen
        self.steps += 1

    def record(self) -> dict[str, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return {
            "loss": self.loss / self.steps,
            "batch_recall@1": self.correct / max(1.0, self.seen),
            "steps_per_s": round(self.steps / max(1e-9, wall), 4),
            # CPU seconds of this process (all its threads) per step: the work itself,
            # unlike steps_per_s, which on a shared machine is mostly waiting
            "cpu_s_per_step": round(cpu / self.steps, 4),
        }


class Trainer:
    """One process's part of a training run (see the module docstring)."""

    def __init__(self, config: TrainConfig, env: dist_util.DistEnv) -> None:
        self.config = config
        self.env = env
        self.out = Path(config.out_dir)
        self.counts: Counter[str] = Counter()  # unreadable images met in batches (this process)
        self.elapsed_before = 0.0  # training seconds of the sessions before a resume
        self.use_bf16 = config.precision == "bf16" or (config.precision == "auto" and env.device.type == "cuda")

    # ---- set-up ----------------------------------------------------------
    def run(self, force: bool) -> dict[str, Any]:
        config, env = self.config, self.env
        kind, arg = parse_init(config.init)
        if kind == "ret2" and Path(arg).expanduser().resolve() == self.out.expanduser().resolve():
            raise InputError("--init and --out are the same directory", hint="write the new run to another --out")
        resuming = _prepare_out(config, force, env)
        summary_path = self.out / SUMMARY_FILE
        if resuming and summary_path.is_file():
            done_before: dict[str, Any] = json.loads(summary_path.read_text())
            if done_before.get("status") == "complete":
                self.say(f"{self.out} is already trained ({done_before.get('steps')} steps); nothing to do")
                return done_before
        latest = latest_checkpoint(self.out) if resuming else None
        self._load_model(latest)
        self.data = _read_data(config, self.model.config.instruction)
        self.say(f"data: {summarize_counts(self.data.counts)}")
        self.plan = BatchPlan(self.data.train, config.batch_size, config.grad_accum, env.world_size, config.seed)
        self.total = self.plan.steps_for_epochs(config.epochs) if config.epochs > 0 else config.steps
        self.optimizer = build_optimizer(self.model, config)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        start_step = self._restore(latest)
        self.wrapped: nn.Module = PairEncoder(self.model)
        if env.distributed:
            self.wrapped = DDP(self.wrapped, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                               broadcast_buffers=False)
        self.collator = Collator(self.tokenizer, self.model.config)
        keep = start_step if latest is not None else None
        self.metrics = MetricsLog(self.out / METRICS_FILE, keep_until=keep) if env.is_main else None
        if latest is None:
            self.evaluate(0)
        seconds = self._loop(start_step)
        return self._finish(start_step, seconds)

    def _load_model(self, latest: tuple[int, Path] | None) -> None:
        """The model and tokenizer: from the newest checkpoint, else from --init (rank 0 first)."""
        config, env = self.config, self.env
        if latest is not None:
            self.model, _ = _load_checkpoint_model(latest[1])
            self.tokenizer = _tokenizer_from(latest[1])
            self.init_info = json.loads((self.out / RUN_FILE).read_text()).get("init_info", {})
        else:
            if env.is_main:
                self.model, self.tokenizer, self.init_info = load_initial(config.init, work_dir=self.out,
                                                                          seed=config.seed)
                run = json.loads((self.out / RUN_FILE).read_text())
                run["init_info"] = self.init_info
                (self.out / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True, default=str) + "\n")
            dist_util.barrier(env)  # rank 0 converts an official checkpoint once; the others reuse it
            if not env.is_main:
                self.model, self.tokenizer, self.init_info = load_initial(config.init, work_dir=self.out,
                                                                          seed=config.seed)
        # What checkpoints and the result save: the tokenizer as loaded. The collator's calls leave
        # their padding and truncation settings in a fast tokenizer, which save_pretrained writes into
        # tokenizer.json and a reload turns into tokenizer_config.json entries, so a run resumed from a
        # checkpoint would end with other tokenizer files than an uninterrupted one.
        self.tokenizer_files = copy.deepcopy(self.tokenizer)
        if config.freeze_backbones is not None:
            set_backbones_frozen(self.model, config.freeze_backbones)
        checkpointing = config.gradient_checkpointing
        if checkpointing is None:
            checkpointing = bool(trainable_backbones(self.model))
        if checkpointing:
            enable_gradient_checkpointing(self.model)
        self.model.to(env.device).train()

    def _restore(self, latest: tuple[int, Path] | None) -> int:
        """Optimiser, RNG and counters from the checkpoint; returns the step to start at."""
        env = self.env
        if latest is None:
            torch.manual_seed(self.config.seed + env.rank)  # this process's dropout stream
            return 0
        state = load_trainer_state(latest[1])
        self.optimizer.load_state_dict(state["optimizer"])
        per_rank = state.get("counts", [])
        if env.rank < len(per_rank):
            self.counts.update(per_rank[env.rank])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        _set_rng_state(state["rng"], env, self.config.seed)
        self.say(f"resuming from {latest[1]} (step {state['step']} of {self.total})")
        return int(state["step"])

    # ---- the loop ----------------------------------------------------------
    def _loop(self, start_step: int) -> float:
        """Steps start_step..total; returns the seconds it took."""
        config, env = self.config, self.env
        loader = torch.utils.data.DataLoader(
            MicroBatches(self.plan, self.data, self.collator, env.rank, start_step, self.total),
            batch_size=None,
            num_workers=config.num_workers,
            # A generator of its own: the loader must not draw from the global RNG
            # (that would shift dropout between a resumed and an uninterrupted run).
            generator=torch.Generator().manual_seed(config.seed),
            pin_memory=env.device.type == "cuda",
            prefetch_factor=4 if config.num_workers else None,
        )
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=start_step, unit="step", desc="train", dynamic_ncols=True,
                        disable=not (config.progress and env.is_main), file=sys.stderr)
        t0 = time.perf_counter()
        interval = _Interval()
        batches = iter(loader)
        for step in range(start_step, self.total):
            lr = set_lr(self.optimizer, lr_factor(step, self.total, config.warmup_steps, config.schedule))
            loss, correct, seen, grad_norm = self.train_step(batches)
            done = step + 1
            interval.add(loss, correct, seen)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if done % config.log_every == 0 or done == self.total:
                if self.metrics is not None:
                    self.metrics.write({"type": "train", "step": done, "epoch": self.plan.epoch_of(step),
                                        **interval.record(), "lr": lr, "grad_norm": grad_norm,
                                        "elapsed_s": round(self.elapsed_before + time.perf_counter() - t0, 3)})
                interval.reset()
            if (config.eval_every and done % config.eval_every == 0) or done == self.total:
                self.evaluate(done)  # before the checkpoint: a run resumed from it keeps this record
            if done % config.checkpoint_every == 0 or done == self.total:
                elapsed = self.elapsed_before + time.perf_counter() - t0
                self.checkpoint(done, {"epoch": self.plan.epoch_of(step), "total_steps": self.total, "loss": loss},
                                elapsed)
        self.bar.close()
        return time.perf_counter() - t0

    def train_step(self, batches) -> tuple[float, float, float, float]:
        """One optimiser step -> (mean loss over processes, in-batch top-1 hits, pairs, gradient norm)."""
        config, env = self.config, self.env
        step_loss, correct, seen = 0.0, 0, 0
        for micro in range(config.grad_accum):
            item = next(batches)
            self.counts.update(item["counts"])
            q_in, d_in = to_device(item["queries"], env.device), to_device(item["documents"], env.device)
            last = micro == config.grad_accum - 1
            # DDP all-reduces gradients on the last micro-step only
            sync = self.wrapped.no_sync() if isinstance(self.wrapped, DDP) and not last else contextlib.nullcontext()
            with sync:
                autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()
                with autocast:
                    q_emb, d_emb = self.wrapped(q_in, d_in)
                result = contrastive_loss(q_emb, d_emb, item["positives"], temperature=config.temperature,
                                          symmetric=config.symmetric, group=env.gather_group)
                (result.loss / config.grad_accum).backward()
            step_loss += float(result.loss.detach()) / config.grad_accum
            correct += int(result.correct.sum())
            seen += int(result.correct.numel())
        max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss,) = dist_util.mean_over_processes([step_loss], env)
        correct_all, seen_all = dist_util.sum_over_processes([correct, seen], env)
        if not math.isfinite(loss):
            raise ModelError(
                f"the loss became {loss}",
                hint="lower --lr or keep the backbones frozen; the last checkpoint is intact",
            )
        return loss, correct_all, seen_all, grad_norm

    def evaluate(self, step: int) -> None:
        """Held-out recall@k on rank 0 (the others wait), written to the metrics."""
        queries = self.data.eval[: self.config.eval_max_queries]
        if not queries:
            return
        if self.env.is_main:
            result = recall_at_k(self.model, self.collator, queries, self.data.passages, self.data.eval_pool,
                                 self.config.eval_ks, device=self.env.device,
                                 batch_size=max(8, self.plan.local_size), autocast=self.use_bf16)
            assert self.metrics is not None
            self.metrics.write({"type": "eval", "step": step, **result})
            shown = ", ".join(f"{k} {result[k]:.3f}" for k in result if k.startswith("recall@"))
            self.say(f"eval at step {step}: {shown} ({result['queries']} queries, pool {result['pool']})")
        self.model.train()
        dist_util.barrier(self.env)

    def checkpoint(self, step: int, info: dict[str, Any], elapsed: float) -> None:
        """Every process's RNG and counters to rank 0, which writes the checkpoint."""
        rng = dist_util.gather_objects(_rng_state(self.env), self.env)
        counts = dist_util.gather_objects(dict(self.counts), self.env)  # per process, in rank order
        if self.env.is_main:
            state = {"step": step, "optimizer": self.optimizer.state_dict(), "rng": rng, "counts": counts,
                     "world_size": self.env.world_size, "elapsed_s": elapsed}
            path = save_checkpoint(self.out, step, self.model, self.tokenizer_files, state, info)
            prune_checkpoints(self.out, self.config.keep_checkpoints)
            self.say(f"checkpoint step {step} saved: {path}")
        dist_util.barrier(self.env)

    # ---- the end -----------------------------------------------------------
    def _finish(self, start_step: int, seconds: float) -> dict[str, Any]:
        """The trained model at the top of OUT, summary.json and the plot (rank 0)."""
        config, env = self.config, self.env
        batch_counts: Counter[str] = Counter()
        for c in dist_util.gather_objects(dict(self.counts), env):
            batch_counts.update(c)
        summary: dict[str, Any] = {}
        if env.is_main:
            self.model.eval()
            from ragvqa.retriever.checkpoint import save_pretrained

            save_pretrained(self.model, self.out, tokenizer=self.tokenizer_files)
            records = read_metrics(self.out / METRICS_FILE)
            evals = [r for r in records if r.get("type") == "eval"]
            summary = {
                "status": "complete",
                "steps": self.total,
                "batch_size": config.batch_size,
                "world_size": env.world_size,
                "device": str(env.device),
                "precision": "bf16" if self.use_bf16 else "fp32",
                "init": self.init_info,
                "data": self.data.describe,
                "data_counts": dict(self.data.counts),
                "batch_counts": dict(batch_counts),
                "first_eval": evals[0] if evals else None,
                "final_eval": evals[-1] if evals and evals[-1]["step"] == self.total else None,
                "final_loss": next((r["loss"] for r in reversed(records) if r.get("type") == "train"), None),
                "seconds_this_session": round(seconds, 2),
                "steps_per_s_this_session": round((self.total - start_step) / max(seconds, 1e-9), 4),
                "peak_memory": _peak_memory_mib(env.device),
                "model_dir": str(self.out),
            }
            plot = plot_metrics(records, self.out / PLOT_FILE)
            summary["plot"] = str(plot) if plot else None
            path = self.out / SUMMARY_FILE
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
            tmp.replace(path)
            assert self.metrics is not None
            self.metrics.close()
        dist_util.barrier(env)
        return summary

    def say(self, message: str) -> None:
        """A line for the person watching (rank 0), above the progress bar when there is one."""
        if not self.env.is_main:
            return
        bar = getattr(self, "bar", None)
        if bar is not None and not bar.disable:
            bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)


def _load_checkpoint_model(directory: Path):
    from ragvqa.retriever.checkpoint import load_ret2

    model, directory = load_ret2(directory)
    return model, directory
