"""How much ranking the Kronecker projection keeps: Spearman of projected scores against exact ones on SmolLM2.

Per-example gradients of the attention layers (batch size 1, plain autograd) and the full-space reference iHVPs
are computed once; each projection size k then projects both sides with two seeds. Exact scores are the
normalized full-space dot products that `projection_dim: null` computes.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/influence/projection_noise.py --docs 48
"""

from __future__ import annotations

import argparse
import json

import torch
from run import doc_scores, per_example_loop, records
from scipy.stats import spearmanr

from selectflow.config import InfluenceConfig
from selectflow.influence import InfluenceScorer, load_model_and_tokenizer
from selectflow.influence.projection import KroneckerProjection
from selectflow.influence.scorer import unit_rows


def projected_scores(scorer: InfluenceScorer, full: torch.Tensor, reference: torch.Tensor, k: int, seed: int):
    docs, refs = scorer.split_layers(full, projected=False), scorer.split_layers(reference, projected=False)
    projected_docs, projected_refs = [], []
    for index, (name, layer) in enumerate(scorer.layers.items()):
        projection = KroneckerProjection.seeded(layer.in_features, layer.out_features, k, seed * 100_003 + index)
        projected_docs.append(projection.project_matrix(docs[name]).flatten(1))
        projected_refs.append(projection.project_matrix(refs[name]).flatten(1))
    return unit_rows(torch.cat(projected_docs, 1)) @ unit_rows(torch.cat(projected_refs, 1)).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--reference-docs", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer(None)
    cfg = InfluenceConfig(max_tokens=args.max_tokens, max_chunks=1, curvature_samples=32, device="cpu")
    reference_texts = records("reference.jsonl.zst")[: args.reference_docs]
    scorer = InfluenceScorer(cfg, model, tokenizer).fit(reference_texts)
    pool = [t for name in ("prose.jsonl.zst", "code.jsonl.zst", "fortunes.jsonl.zst") for t in records(name)[:200]]
    documents = [ids for ids in scorer.tokenize(pool) if len(ids) >= args.max_tokens][: args.docs]
    chunks = [scorer.chunks(ids)[0] for ids in documents]
    full, _, _ = per_example_loop(scorer, chunks)
    reference = scorer.reference_vectors(scorer.reference_chunks(scorer.tokenize(reference_texts)), projected=False)
    counts = [1] * len(chunks)
    exact = doc_scores(unit_rows(full) @ unit_rows(reference).mean(0), counts)
    ours = scorer.score_token_ids(documents)
    row = {"docs": len(chunks), "max_tokens": args.max_tokens, "exact_mean": float(exact.mean()),
           "exact_std": float(exact.std()), "spearman_scorer_vs_exact": round(float(spearmanr(ours, exact)[0]), 3)}
    for k in (32, 64, 128, 256):
        seeds = [doc_scores(projected_scores(scorer, full, reference, k, seed), counts) for seed in (0, 1)]
        row[f"k{k}"] = {"spearman_vs_exact": [round(float(spearmanr(s, exact)[0]), 3) for s in seeds],
                        "spearman_seed0_vs_seed1": round(float(spearmanr(*seeds)[0]), 3)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
