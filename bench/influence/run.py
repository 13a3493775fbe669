"""Influence scoring throughput: batched hooks + Kronecker projection vs a per-example autograd loop.

Both score the same documents against the same fitted reference (same chunks, projections, normalization), so
their scores must agree; only how per-chunk gradients are obtained differs:
  ours      batched forward/backward of a frozen model, hooks give (a, g), projected per-chunk gradients
            Σ_t (P_g g_t)(P_a a_t)ᵀ, no parameter gradient is ever computed;
  baseline  batch size 1, every parameter requires grad, loss.backward() (a LESS-style loop), the chosen layers'
            .grad flattened, then the same projection P_g G P_aᵀ, normalization and dot product.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/influence/run.py --model smollm2 --docs 32 --max-tokens 256
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

from selectflow.config import InfluenceConfig
from selectflow.influence import InfluenceScorer, load_model_and_tokenizer
from selectflow.influence.exact import layer_gradients
from selectflow.influence.model import freeze

SAMPLE = Path(__file__).parents[2] / "selectflow" / "data" / "sample"


def records(name: str) -> list[str]:
    with zstandard.open(SAMPLE / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line).get("text", "") for line in handle]


def tiny_model(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return freeze(LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024)))


def baseline_scores(scorer: InfluenceScorer, documents: list[list[int]]) -> np.ndarray:
    scores = np.zeros(len(documents))
    for index, ids in enumerate(documents):
        chunk_scores = []
        for chunk in scorer.chunks(ids):
            grads = layer_gradients(scorer.model, scorer.layers, chunk, scorer.dtype, full_backward=True)
            vector = torch.cat([scorer.projections[n].project_matrix(g).flatten() for n, g in grads.items()])
            if scorer.cfg.normalize:
                vector = vector / vector.norm().clamp(min=1e-30)
            chunk_scores.append(float(vector @ scorer.reference))
        scores[index] = np.mean(chunk_scores) if chunk_scores else 0.0
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", default="attention")
    parser.add_argument("--reference-docs", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.jsonl"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(None)
    load_s = time.perf_counter() - started
    if args.model == "tiny":
        model = tiny_model(len(tokenizer))
    cfg = InfluenceConfig(max_tokens=args.max_tokens, max_chunks=1, layers=args.layers, curvature_samples=32,
                          batch_size=args.batch_size, device="cpu")
    scorer = InfluenceScorer(cfg, model, tokenizer).fit(records("reference.jsonl.zst")[: args.reference_docs])

    pool = [t for name in ("prose.jsonl.zst", "code.jsonl.zst", "fortunes.jsonl.zst") for t in records(name)[:200]]
    documents = [ids for ids in scorer.tokenize(pool) if len(ids) >= args.max_tokens][: args.docs]
    tokens = sum(len(c) for ids in documents for c in scorer.chunks(ids))

    started = time.perf_counter()
    ours = scorer.score_token_ids(documents)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    base = baseline_scores(scorer, documents)
    base_s = time.perf_counter() - started

    row = {
        "model": args.model, "layers": args.layers, "docs": len(documents), "max_tokens": args.max_tokens,
        "tokens": tokens, "batch_size": args.batch_size, "projection_dim": cfg.projection_dim,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "model_load_s": round(load_s, 1), "fit": scorer.stats,
        "ours_s": round(ours_s, 2), "baseline_s": round(base_s, 2),
        "ours_docs_per_s": round(len(documents) / ours_s, 3), "baseline_docs_per_s": round(len(documents) / base_s, 3),
        "speedup": round(base_s / ours_s, 2), "ours_s_per_doc": round(ours_s / len(documents), 3),
        "max_abs_score_diff": float(np.abs(ours - base).max()), "score_range": float(np.abs(base).max()),
    }
    print(json.dumps(row))
    with open(args.out, "a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
