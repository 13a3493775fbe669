"""Influence scoring throughput: batched hooks + Kronecker projection vs per-example autograd loops.

All paths score the same documents against the same fitted curvature and reference set:
  ours      batched forward/backward of a frozen model, hooks give (a, g), per-chunk layer gradients
            Σ_t g_t a_tᵀ formed one layer at a time (exact mode) or projected Σ_t (P_g g_t)(P_a a_t)ᵀ
            (--projection-dim k); no parameter gradient is ever computed;
  loop      batch size 1, every parameter requires grad, loss.backward() (a LESS-style loop), the chosen layers'
            .grad kept; then either
    + same    the same vectors as ours (as they are, or our projection P_g G P_aᵀ), so the scores must agree to
              rounding (this isolates what batching and skipping parameter gradients buy);
    + dense   what the published QUAD/LESS code does: the flattened gradients (D values) times a D × 8192
              Rademacher matrix (TRAK's projector), every 16 examples. For SmolLM2's attention layers D = 26.5M, so
              the matrix (217G entries) cannot be stored and is regenerated block by block, as TRAK's does; on a
              CPU that is slow enough that it is timed on --dense-blocks of its row blocks and scaled.
  exact     no projection at all: the full-space cosine, to say how close each projection gets (Spearman).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/influence/run.py --model smollm2 --docs 16 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import zstandard
from scipy.stats import spearmanr

from selectflow.config import InfluenceConfig
from selectflow.influence import InfluenceScorer, load_model_and_tokenizer
from selectflow.influence.exact import layer_gradients
from selectflow.influence.model import freeze
from selectflow.influence.scorer import document_means, unit_rows

SAMPLE = Path(__file__).parents[2] / "selectflow" / "data" / "sample"
DENSE_SEED = 12345


def records(name: str) -> list[str]:
    with zstandard.open(SAMPLE / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line).get("text", "") for line in handle]


def tiny_model(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return freeze(LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024)))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def normalized(vectors: torch.Tensor, normalize: bool) -> torch.Tensor:
    return unit_rows(vectors) if normalize else vectors


def dense_project(vectors: torch.Tensor, dim: int, max_blocks: int | None = None,
                  block_rows: int = 1 << 15) -> tuple[torch.Tensor, float]:
    """vectors (n, D) @ Π / √dim, Π a seeded D × dim Rademacher matrix generated block by block as TRAK's
    BasicProjector does (bernoulli_, then 2x - 1; never stored). With `max_blocks`, only the first row blocks are
    applied (every block costs the same, so a timing run can stop early) and the projection is partial.
    Returns (projection, fraction of Π applied)."""
    out = torch.zeros(vectors.shape[0], dim, device=vectors.device)
    generator = torch.Generator(device=vectors.device)
    block = torch.empty(block_rows, dim, device=vectors.device)
    starts = list(range(0, vectors.shape[1], block_rows))
    applied = starts[:max_blocks] if max_blocks else starts
    for index, start in enumerate(applied):
        rows = min(block_rows, vectors.shape[1] - start)
        generator.manual_seed(DENSE_SEED * 1_000_003 + index)
        signs = block[:rows].bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
        out.addmm_(vectors[:, start : start + rows], signs)
    return out / dim**0.5, len(applied) / len(starts)


def per_example_loop(scorer: InfluenceScorer, chunks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Batch-size-1 full backward per chunk: (flattened gradients (n, D), the scorer's vectors of them, seconds)."""
    full, same = [], []
    backward_s = same_s = 0.0
    for chunk in chunks:
        started = time.perf_counter()
        grads = layer_gradients(scorer.model, scorer.layers, chunk, scorer.dtype, full_backward=True)
        full.append(torch.cat([g.flatten() for g in grads.values()]))
        synchronize(scorer.device)
        backward_s += time.perf_counter() - started
        started = time.perf_counter()
        same.append(torch.cat([scorer.projections[n].project_matrix(g).flatten() for n, g in grads.items()]))
        synchronize(scorer.device)
        same_s += time.perf_counter() - started
    return torch.stack(full), torch.stack(same), {"backward_s": backward_s, "projection_s": same_s}


def timed_dense_projection(full: torch.Tensor, dim: int, interval: int, max_blocks: int | None,
                           device: torch.device) -> tuple[torch.Tensor, float, float]:
    """Project every `interval` examples, as LESS/QUAD do: (projections, seconds, fraction of Π applied)."""
    started = time.perf_counter()
    parts = [dense_project(full[start : start + interval], dim, max_blocks) for start in range(0, len(full), interval)]
    synchronize(device)
    return torch.cat([out for out, _ in parts]), time.perf_counter() - started, parts[0][1]


def doc_scores(chunk_scores: torch.Tensor, chunks_per_document: list[int]) -> np.ndarray:
    return document_means(chunk_scores.double().cpu().numpy(), chunks_per_document)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", default="attention")
    parser.add_argument("--reference-docs", type=int, default=32)
    parser.add_argument("--projection-dim", type=int, default=None, help="unset: exact scores (the default)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--dense-dim", type=int, default=8192, help="published projection size; 0 skips the column")
    parser.add_argument("--project-interval", type=int, default=16, help="examples per dense projection (LESS: 16)")
    parser.add_argument("--dense-blocks", type=int, default=16,
                        help="time the dense projection on this many of Π's row blocks and scale; 0: all of them")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.jsonl"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(None)
    load_s = time.perf_counter() - started
    if args.model == "tiny":
        model = tiny_model(len(tokenizer))
    cfg = InfluenceConfig(max_tokens=args.max_tokens, max_chunks=1, layers=args.layers, curvature_samples=32,
                          projection_dim=args.projection_dim, batch_size=args.batch_size, device=args.device,
                          dtype=args.dtype)
    reference_texts = records("reference.jsonl.zst")[: args.reference_docs]
    scorer = InfluenceScorer(cfg, model, tokenizer).fit(reference_texts)

    pool = [t for name in ("prose.jsonl.zst", "code.jsonl.zst", "fortunes.jsonl.zst") for t in records(name)[:200]]
    documents = [ids for ids in scorer.tokenize(pool) if len(ids) >= args.max_tokens][: args.docs]
    counts = [len(scorer.chunks(ids)) for ids in documents]
    chunks = [chunk for ids in documents for chunk in scorer.chunks(ids)]

    synchronize(scorer.device)
    started = time.perf_counter()
    ours = scorer.score_token_ids(documents)
    synchronize(scorer.device)
    ours_s = time.perf_counter() - started
    full, same, loop = per_example_loop(scorer, chunks)
    same_scores = doc_scores(normalized(same, cfg.normalize) @ scorer.reference, counts)
    del same
    same_s = loop["backward_s"] + loop["projection_s"]

    reference_full = normalized(scorer.reference_vectors(scorer.reference_chunks(scorer.tokenize(reference_texts)),
                                                         projected=False), cfg.normalize)
    exact = doc_scores(normalized(full, cfg.normalize) @ reference_full.mean(0), counts)
    n = len(documents)
    row = {
        "model": args.model, "layers": args.layers, "docs": n, "max_tokens": args.max_tokens,
        "tokens": sum(len(c) for c in chunks), "batch_size": args.batch_size, "projection_dim": cfg.projection_dim,
        "gradient_dims": full.shape[1], "device": str(scorer.device), "dtype": scorer.stats["dtype"],
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(scorer.device) if scorer.device.type == "cuda" else None,
        "model_load_s": round(load_s, 1), "fit": scorer.stats,
        "ours_s": round(ours_s, 2), "ours_docs_per_s": round(n / ours_s, 3),
        "loop_backward_s": round(loop["backward_s"], 2),
        "loop_same_s": round(same_s, 2), "loop_same_docs_per_s": round(n / same_s, 3),
        "speedup_vs_loop_same": round(same_s / ours_s, 2),
        "max_abs_score_diff_vs_loop_same": float(np.abs(ours - same_scores).max()),
        "score_range": float(np.abs(same_scores).max()),
        "spearman_ours_vs_exact": round(float(spearmanr(ours, exact)[0]), 3),
    }
    if args.dense_dim:
        dense, seconds, fraction = timed_dense_projection(full, args.dense_dim, args.project_interval,
                                                          args.dense_blocks or None, scorer.device)
        dense_s = loop["backward_s"] + seconds / fraction
        row |= {
            "dense_dim": args.dense_dim, "project_interval": args.project_interval,
            "dense_fraction_timed": round(fraction, 4), "dense_projection_timed_s": round(seconds, 2),
            "loop_dense_s": round(dense_s, 2), "loop_dense_docs_per_s": round(n / dense_s, 4),
            "speedup_vs_loop_dense": round(dense_s / ours_s, 1),
        }
        if fraction == 1.0:
            reference_dense = normalized(dense_project(reference_full, args.dense_dim)[0], cfg.normalize).mean(0)
            dense_scores = doc_scores(normalized(dense, cfg.normalize) @ reference_dense, counts)
            row["spearman_dense_vs_exact"] = round(float(spearmanr(dense_scores, exact)[0]), 3)
    print(json.dumps(row))
    with open(args.out, "a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
