"""Influence of training documents on a reference set's loss, with EK-FAC curvature and projected gradients.

Score of a document chunk z (per-chunk mean next-token loss L, chosen linear layers l, projections P_l):

    x(z)   = concat_l  P_g,l G_l(z) P_a,lᵀ                         projected per-chunk gradient, G_l = Σ_t g_t a_tᵀ
    r_i    = concat_l  P_g,l [H_l⁻¹ G_l(ref_i)] P_a,lᵀ              projected iHVP of reference chunk i (full space)
    r̄      = mean_i r_i / ‖r_i‖         (normalize=True, as QUAD)   or   mean_i r_i   (normalize=False)
    s(z)   = ⟨r̄, x(z) / ‖x(z)‖⟩          (normalize=True)            or   ⟨r̄, x(z)⟩    (normalize=False)

H_l⁻¹ is the damped EK-FAC inverse of layer l (see `ekfac`), applied in the full layer space to the reference
gradients before projecting, so reference and candidate vectors live in the same projected space; without
normalization s(z) is an unbiased estimate of ḡ_refᵀ H⁻¹ g(z) (exact when projection_dim ≥ the layer widths).
A document's score is the mean over its chunks; a document with fewer than 2 tokens has no next-token loss and
scores 0.0. Positive = a gradient step on the document lowers the reference loss (to first order).

Fitting makes three batched passes: (1) K-FAC factors A, S on `curvature_samples` chunks, (2) the eigenvalue
correction on the same chunks, (3) the reference vectors over all reference chunks.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selectflow.config import InfluenceConfig
from selectflow.influence.capture import Batch, forward_backward
from selectflow.influence.ekfac import EigenvalueAccumulator, FactorAccumulator, LayerCurvature, rotated_gradients
from selectflow.influence.model import (
    InfluenceError,
    context_length,
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
    select_linear_layers,
)
from selectflow.influence.projection import KroneckerProjection

STATE_FORMAT = 1
# Fields that change what the fitted reference vector means; the others only change how documents are read/run.
FIT_FIELDS = ("model_path", "layers", "projection_dim", "normalize", "damping", "curvature_samples",
              "reference_samples", "seed")


def chunk_token_ids(ids: list[int], max_tokens: int, max_chunks: int, min_chunk_tokens: int) -> list[list[int]]:
    """The first `max_chunks` chunks of `max_tokens` tokens; chunks shorter than `min_chunk_tokens` are dropped
    unless the document has only one chunk. Documents with fewer than 2 tokens give no chunk."""
    if len(ids) < 2:
        return []
    chunks = [ids[start : start + max_tokens] for start in range(0, len(ids), max_tokens)][:max_chunks]
    kept = [chunk for chunk in chunks if len(chunk) >= max(min_chunk_tokens, 2)]
    return kept or chunks[:1]


class _ProjectedGradients:
    """Scoring consumer: x(z) = P_g G P_aᵀ per layer and chunk, from the projected hook tensors."""

    def __init__(self, projections: dict[str, KroneckerProjection]):
        self.projections = projections
        self.blocks: dict[str, torch.Tensor] = {}

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        return self.projections[name].project_inputs(a)

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        projected_g = self.projections[name].project_grads(g)
        self.blocks[name] = torch.bmm(projected_g.transpose(1, 2), context)


class _ReferenceVectors:
    """Pass 3 consumer: P_g Q_S [(Q_Sᵀ G Q_A) ⊘ (Λ + λ)] Q_Aᵀ P_aᵀ per layer and reference chunk."""

    def __init__(self, curvature: dict[str, LayerCurvature], projections: dict[str, KroneckerProjection]):
        self.curvature = curvature
        # (P_g Q_S) X (P_a Q_A)ᵀ rotates back to the layer space and projects in one product per side
        self.back_g = {n: c.q_s if projections[n].p_g is None else projections[n].p_g @ c.q_s
                       for n, c in curvature.items()}
        self.back_a = {n: c.q_a if projections[n].p_a is None else projections[n].p_a @ c.q_a
                       for n, c in curvature.items()}
        self.blocks: dict[str, torch.Tensor] = {}

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        return a

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        layer = self.curvature[name]
        inverse = layer.inverse_rotated(rotated_gradients(context, g, layer.q_a, layer.q_s))
        self.blocks[name] = self.back_g[name] @ inverse @ self.back_a[name].T


class InfluenceScorer:
    """Fit on a reference set, then score documents (small batches are fine: nothing is precomputed per pool).

    `model`/`tokenizer` override `cfg.model_path` (tests, or a model already in memory); the tokenizer must be
    callable as `tokenizer(texts, add_special_tokens=False)["input_ids"]`.
    """

    def __init__(self, cfg: InfluenceConfig, model: nn.Module | None = None, tokenizer: Any = None):
        self.cfg = cfg
        if model is None:
            model, loaded_tokenizer = load_model_and_tokenizer(cfg.model_path)
            tokenizer = tokenizer or loaded_tokenizer
        limit = context_length(model)
        if limit is not None and cfg.max_tokens > limit:
            raise InfluenceError(
                f"influence.max_tokens={cfg.max_tokens} exceeds the model's context ({limit} positions); "
                f"set max_tokens <= {limit} (longer documents are split into chunks anyway)"
            )
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.layers = select_linear_layers(model, cfg.layers)
        self.projections = {
            name: KroneckerProjection.seeded(layer.in_features, layer.out_features, cfg.projection_dim,
                                             cfg.seed * 100_003 + index).to(self.device)
            for index, (name, layer) in enumerate(self.layers.items())
        }
        self.reference: torch.Tensor | None = None
        self.curvature: dict[str, LayerCurvature] | None = None  # kept after fit (not saved: scoring needs none)
        self.stats: dict[str, Any] = {}

    # --- tokens and chunks -------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.tokenizer is None:
            raise InfluenceError("no tokenizer: pass one to InfluenceScorer, or use the *_token_ids methods")
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def chunks(self, ids: list[int]) -> list[list[int]]:
        cfg = self.cfg
        return chunk_token_ids(ids, cfg.max_tokens, cfg.max_chunks, cfg.min_chunk_tokens)

    def _batches(self, chunks: list[list[int]]):
        """(positions, Batch) over chunks sorted by length (less padding)."""
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
        for start in range(0, len(order), self.cfg.batch_size):
            positions = order[start : start + self.cfg.batch_size]
            yield positions, Batch.from_chunks([chunks[i] for i in positions], self.device)

    def _run(self, chunks: list[list[int]], consumer) -> None:
        for _, batch in self._batches(chunks):
            forward_backward(self.model, self.layers, batch, consumer, self.dtype)

    def _vectors(self, chunks: list[list[int]], consumer) -> torch.Tensor:
        """(n_chunks, D) concatenated per-layer blocks, in chunk order."""
        out: torch.Tensor | None = None
        for positions, batch in self._batches(chunks):
            forward_backward(self.model, self.layers, batch, consumer, self.dtype)
            block = torch.cat([consumer.blocks[name].flatten(1) for name in self.layers], dim=1)
            if out is None:
                out = torch.empty((len(chunks), block.shape[1]), device=self.device)
            out[positions] = block
        return out

    # --- fitting ----------------------------------------------------------------------------------------------
    def fit(self, reference_texts: list[str], curvature_texts: list[str] | None = None) -> InfluenceScorer:
        """Fit EK-FAC on a sample of chunks of `curvature_texts` (default: the reference) and the reference vector."""
        if not reference_texts:
            raise InfluenceError("the reference set is empty: influence needs at least one reference text "
                                 "(set `reference:` in the config to a non-empty input)")
        curvature = self.tokenize(curvature_texts) if curvature_texts else None
        return self.fit_token_ids(self.tokenize(reference_texts), curvature)

    def fit_token_ids(self, reference: list[list[int]], curvature: list[list[int]] | None = None) -> InfluenceScorer:
        started = time.perf_counter()
        reference_chunks = [chunk for ids in reference for chunk in self.chunks(ids)]
        if not reference_chunks:
            raise InfluenceError(f"the reference set ({len(reference)} documents) has no text of >= 2 tokens; "
                                 "influence needs reference texts the model can compute a next-token loss on")
        if self.cfg.reference_samples is not None and self.cfg.reference_samples < len(reference_chunks):
            reference_chunks = random.Random(self.cfg.seed + 1).sample(reference_chunks, self.cfg.reference_samples)
        pool = reference_chunks if curvature is None else [c for ids in curvature for c in self.chunks(ids)]
        sample = random.Random(self.cfg.seed).sample(pool, min(self.cfg.curvature_samples, len(pool)))

        factors = FactorAccumulator()
        self._run(sample, factors)
        factors_s = time.perf_counter() - started
        eigenvalues = EigenvalueAccumulator(factors.eigenbases())
        self._run(sample, eigenvalues)
        curvature_layers = eigenvalues.curvature(self.cfg.damping)
        eigen_s = time.perf_counter() - started - factors_s

        vectors = self._vectors(reference_chunks, _ReferenceVectors(curvature_layers, self.projections))
        if self.cfg.normalize:
            vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-30)
        self.reference = vectors.mean(0)
        self.curvature = curvature_layers
        self.stats = {
            "reference_docs": len(reference),
            "reference_chunks": len(reference_chunks),
            "reference_tokens": sum(len(c) for c in reference_chunks),
            "curvature_chunks": len(sample),
            "layers": len(self.layers),
            "dims": int(self.reference.numel()),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "factors_seconds": round(factors_s, 3),
            "eigenvalue_seconds": round(eigen_s, 3),
            "reference_seconds": round(time.perf_counter() - started - factors_s - eigen_s, 3),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return self

    # --- scoring ----------------------------------------------------------------------------------------------
    def score(self, texts: list[str]) -> np.ndarray:
        """Influence score per text (float64), higher = more helpful for the reference loss."""
        return self.score_token_ids(self.tokenize(texts))

    def chunk_vectors(self, chunks: list[list[int]]) -> torch.Tensor:
        """Projected per-chunk gradients x(z) (n_chunks, D), normalized when cfg.normalize."""
        vectors = self._vectors(chunks, _ProjectedGradients(self.projections))
        if self.cfg.normalize:
            vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-30)
        return vectors

    def score_token_ids(self, documents: list[list[int]]) -> np.ndarray:
        if self.reference is None:
            raise InfluenceError("InfluenceScorer is not fitted: call fit(reference_texts) or load(path, cfg) first")
        per_doc = [self.chunks(ids) for ids in documents]
        flat = [chunk for chunks in per_doc for chunk in chunks]
        scores = np.zeros(len(documents))
        if not flat:
            return scores
        chunk_scores = (self.chunk_vectors(flat) @ self.reference).double().cpu().numpy()
        start = 0
        for index, chunks in enumerate(per_doc):
            if chunks:
                scores[index] = chunk_scores[start : start + len(chunks)].mean()
            start += len(chunks)
        return scores

    # --- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save what scoring needs: the reference vector, layer names, projections and fit config/stats."""
        if self.reference is None:
            raise InfluenceError("nothing to save: fit the scorer first")
        torch.save({
            "format": STATE_FORMAT,
            "config": self.cfg.model_dump(),
            "layers": list(self.layers),
            "projections": {n: (p.p_a, p.p_g) for n, p in ((n, p.to(torch.device("cpu")))
                                                           for n, p in self.projections.items())},
            "reference": self.reference.cpu(),
            "stats": self.stats,
        }, path)

    @classmethod
    def load(cls, path: str | Path, cfg: InfluenceConfig, model: nn.Module | None = None,
             tokenizer: Any = None) -> InfluenceScorer:
        """A fitted scorer from `save`; `cfg` may change how documents are read (max_tokens, batch_size, device...)
        but not what the reference vector means (FIT_FIELDS)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise InfluenceError(f"{path}: influence state format {state.get('format')} != {STATE_FORMAT}; refit it")
        fitted = state["config"]
        changed = [f"{field}: fitted {fitted[field]!r}, now {getattr(cfg, field)!r}"
                   for field in FIT_FIELDS if fitted[field] != getattr(cfg, field)]
        if changed:
            raise InfluenceError(f"{path} was fitted with a different influence config ({'; '.join(changed)}); "
                                 "refit the reference or use the fitted values")
        scorer = cls(cfg, model, tokenizer)
        if list(scorer.layers) != state["layers"]:
            raise InfluenceError(f"{path}: the model's scored layers differ from the fitted ones; use the same model")
        scorer.projections = {n: KroneckerProjection(p_a, p_g).to(scorer.device)
                              for n, (p_a, p_g) in state["projections"].items()}
        scorer.reference = state["reference"].to(scorer.device)
        scorer.stats = state["stats"]
        return scorer
