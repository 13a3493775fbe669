"""The probe training loop: AdamW, warmup + cosine, per-step train loss and bits/byte, periodic held-out losses.

Losses are in nats per predicted token (each seq_len block predicts its last seq_len - 1 tokens); bits per byte
(bpb) divide the summed loss in bits by the UTF-8 bytes of the predicted tokens. Every comparison uses bpb, which
does not depend on the tokenizer (with byte tokens it is the loss in bits, end-of-text predictions included). On
CPU a run is deterministic for a given seed and thread count (fixed threads, deterministic algorithms, seeded init
and order); on CUDA it runs under bfloat16 autocast and is not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from selectflow.config import ProbeConfig
from selectflow.probe.data import TrainBlocks
from selectflow.probe.metrics import LN2, prequential_bits_per_byte, steps_to_level
from selectflow.probe.model import build_model, resolve_device
from selectflow.probe.tokenizer import ProbeTokenizer

_LOGIT_ELEMENTS = 1 << 20  # logits materialized at once: a 49k vocabulary in chunks, 257 byte symbols in one go


@dataclass
class ProbeRun:
    curve: list[dict]  # one row per step (row 0 = before training): train and held-out columns
    metrics: dict = field(default_factory=dict)


@contextlib.contextmanager
def _reproducible(device: torch.device, threads: int) -> Iterator[None]:
    """Fixed threads and deterministic kernels for the run; the previous global settings are restored after.

    The global random generator is left alone: the init is seeded in `build_model` (under a lock) and training draws
    no random numbers. Reseeding it here raced with probes built at once on other threads (Dask thread workers),
    giving subsets of one seed different inits."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _summed_loss(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Summed next-token cross-entropy (nats) over the batch, with logits materialized in chunks."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        hidden = model.base_model(input_ids=batch).last_hidden_state[:, :-1]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        targets = batch[:, 1:].reshape(-1)
        head = model.get_output_embeddings()
        chunk = max(_LOGIT_ELEMENTS // head.out_features, 1)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), chunk):
            logits = head(hidden[start:start + chunk]).float()
            total = total + F.cross_entropy(logits, targets[start:start + chunk], reduction="sum")
    return total


def learning_rate(step: int, steps: int, cfg: ProbeConfig) -> float:
    """Learning rate of 0-based `step`: linear warmup, then cosine to min_lr_ratio * peak (or constant)."""
    warmup = int(round(cfg.warmup_fraction * steps))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if cfg.schedule == "constant" or steps - warmup <= 1:
        return cfg.learning_rate
    progress = (step - warmup) / (steps - warmup - 1)
    floor = cfg.learning_rate * cfg.min_lr_ratio
    return floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def eval_steps(steps: int, evals: int) -> set[int]:
    """The steps after which held-out sets are evaluated: `evals` evenly spaced ones, the last one at the end."""
    return {max(1, round(steps * index / evals)) for index in range(1, evals + 1)}


@torch.no_grad()
def evaluate(model, blocks: np.ndarray, token_bytes: np.ndarray, batch_size: int, device) -> tuple[float, float]:
    """(loss in nats/token, bits/byte) on fixed held-out blocks."""
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        nats += float(_summed_loss(model, torch.from_numpy(chunk).to(device), device))
        tokens += chunk[:, 1:].size
        n_bytes += int(token_bytes[chunk[:, 1:]].sum())
    model.train()
    return nats / tokens, nats / LN2 / max(n_bytes, 1)


def train_probe(
    train: TrainBlocks, heldout: Mapping[str, np.ndarray], tokenizer: ProbeTokenizer, cfg: ProbeConfig,
    seed: int | None = None,
) -> ProbeRun:
    """Train a probe on `train` blocks from the init of `seed` (default cfg.seed); evaluate every held-out set at
    step 0 and at `cfg.evals` evenly spaced steps."""
    seed = cfg.seed if seed is None else seed
    device = resolve_device(cfg.device)
    token_bytes = tokenizer.token_bytes
    batch_size = cfg.batch_size
    steps = len(train.blocks) // batch_size
    evaluated_at = eval_steps(steps, cfg.evals)
    started = time.perf_counter()
    eval_seconds = 0.0
    with _reproducible(device, cfg.cpu_threads):
        model = build_model(cfg.model, tokenizer.vocab_size, seed, cfg.init_checkpoint).to(device)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.learning_rate, betas=(0.9, 0.95),
        )

        def run_evals(row: dict) -> None:
            nonlocal eval_seconds
            tick = time.perf_counter()
            for name, blocks in heldout.items():
                row[f"{name}_loss"], row[f"{name}_bpb"] = evaluate(model, blocks, token_bytes, batch_size, device)
            eval_seconds += time.perf_counter() - tick

        curve = [{"step": 0, "epoch": None, "lr": None, "train_loss": None, "train_bpb": None, "train_nats": None,
                  "train_bytes": None, "tokens_seen": 0}]
        run_evals(curve[0])
        for step in range(steps):
            batch_np = train.blocks[step * batch_size:(step + 1) * batch_size]
            batch = torch.from_numpy(batch_np).to(device)
            lr = learning_rate(step, steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            predicted = batch_np[:, 1:].size
            summed = _summed_loss(model, batch, device)
            (summed / predicted).backward()
            nats = summed.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n_bytes = int(token_bytes[batch_np[:, 1:]].sum())
            row = {"step": step + 1, "epoch": step * batch_size // train.unique_blocks + 1, "lr": lr,
                   "train_loss": nats / predicted, "train_bpb": nats / LN2 / max(n_bytes, 1),
                   "train_nats": nats, "train_bytes": n_bytes, "tokens_seen": (step + 1) * batch_np.size}
            if step + 1 in evaluated_at:
                run_evals(row)
            curve.append(row)
    wall = time.perf_counter() - started
    for row in curve:
        for name in heldout:
            row.setdefault(f"{name}_loss", None)
            row.setdefault(f"{name}_bpb", None)
    return ProbeRun(curve, _metrics(curve, train, list(heldout), cfg, seed, device, wall, eval_seconds))


def _metrics(curve, train: TrainBlocks, heldout: list[str], cfg: ProbeConfig, seed: int, device, wall,
             eval_seconds) -> dict:
    trained = curve[1:]
    first_epoch = [row for row in trained if row["epoch"] == 1]
    metrics = {
        "tokens": train.tokens,
        "unique_tokens": train.unique_blocks * train.blocks.shape[1],
        "epochs": train.epochs,
        "steps": len(trained),
        "docs_used": train.docs_used,
        "seed": seed,
        "first_epoch_loss": float(np.mean([row["train_loss"] for row in first_epoch])),
        "final_train_loss": trained[-1]["train_loss"],
        # = the first-epoch loss in bits per byte: the Entropy Law's L, in units every tokenizer shares
        "prequential_bpb": prequential_bits_per_byte([r["train_nats"] for r in first_epoch],
                                                     [r["train_bytes"] for r in first_epoch]),
        "wall_s": wall,
        "train_tokens_per_s": train.tokens / max(wall - eval_seconds, 1e-9),
        "device": str(device),
    }
    evaluated = [row for row in curve if row.get(f"{heldout[0]}_loss") is not None] if heldout else []
    for name in heldout:
        metrics[f"{name}_initial_loss"] = evaluated[0][f"{name}_loss"]
        metrics[f"{name}_initial_bpb"] = evaluated[0][f"{name}_bpb"]
        metrics[f"{name}_loss"] = evaluated[-1][f"{name}_loss"]
        metrics[f"{name}_bpb"] = evaluated[-1][f"{name}_bpb"]
    if heldout and cfg.speed_level is not None:
        key = f"{heldout[0]}_bpb"
        metrics["speed_level"] = cfg.speed_level
        metrics["steps_to_level"] = steps_to_level([r["step"] for r in evaluated], [r[key] for r in evaluated],
                                                   cfg.speed_level)
    return metrics
