"""Influence of training documents on a reference set's loss, with EK-FAC curvature.

Score of a document chunk z (per-chunk mean next-token loss L, chosen linear layers l):

    G_l(z) = Σ_t g_t a_tᵀ                                            the chunk's gradient of layer l (d_out × d_in)
    r_i    = concat_l H_l⁻¹ G_l(ref_i)                                iHVP of reference chunk i
    r̄      = mean_i r_i / ‖r_i‖         (normalize=True, as QUAD)   or   mean_i r_i   (normalize=False)
    s(z)   = ⟨r̄, G(z)⟩ / ‖G(z)‖          (normalize=True)            or   ⟨r̄, G(z)⟩

H_l⁻¹ is the damped EK-FAC inverse of layer l (see `ekfac`). Exact mode (projection_dim unset) forms each chunk's
G_l in the batch, one layer at a time, and takes the dot product with the full-space r̄ (held once, 4 bytes per
scored weight); r̄ is averaged in each layer's eigenbasis and rotated back once, which is exact because a rotation
keeps norms. With projection_dim = k, both sides are replaced by P_g,l (·) P_a,lᵀ, Kronecker random projections
computed from the projected hook tensors, so neither G_l nor r̄ is ever held in full; without normalization the
projected score is an unbiased estimate of the exact one, but its noise can swamp the small differences between
documents of a real model (bench/RESULTS.md).

A document's score is the mean over its chunks; a document with fewer than 2 tokens has no next-token loss and
scores 0.0. Positive = a gradient step on the document lowers the reference loss (to first order).

Fitting makes three batched passes: (1) K-FAC factors A, S on `curvature_samples` chunks, (2) the eigenvalue
correction on the same chunks, (3) the reference vectors over all reference chunks.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
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

STATE_FORMAT = 2  # 2: safetensors (1 was a torch pickle)
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


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit L2 norm (a zero row stays zero)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-30)


def document_means(chunk_scores: np.ndarray, chunks_per_document: list[int]) -> np.ndarray:
    """A document's score: the mean of its consecutive chunks' scores; 0.0 for a document without chunks."""
    scores, start = np.zeros(len(chunks_per_document)), 0
    for index, count in enumerate(chunks_per_document):
        if count:
            scores[index] = chunk_scores[start : start + count].mean()
        start += count
    return scores


class _ProjectedGradients:
    """Scoring consumer: x(z) = P_g G P_aᵀ (or G) per layer and chunk, from the projected hook tensors."""

    def __init__(self, projections: dict[str, KroneckerProjection]):
        self.projections = projections
        self.blocks: dict[str, torch.Tensor] = {}

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        return self.projections[name].project_inputs(a)

    def layer_block(self, name: str, context: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.projections[name].project_grads(g).transpose(1, 2), context)

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        self.blocks[name] = self.layer_block(name, context, g)


class _ChunkScores(_ProjectedGradients):
    """Scoring consumer for one batch: ⟨r̄_l, x_l(z)⟩ and ‖x_l(z)‖² summed over layers per chunk; a layer's block
    is dropped as soon as it is reduced."""

    def __init__(self, projections: dict[str, KroneckerProjection], reference: dict[str, torch.Tensor]):
        super().__init__(projections)
        self.reference = reference
        self.dots: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        block = self.layer_block(name, context, g)
        dots, squares = (block * self.reference[name]).sum((1, 2)), block.square().sum((1, 2))
        self.dots = dots if self.dots is None else self.dots + dots
        self.squares = squares if self.squares is None else self.squares + squares


class _RotatedReference:
    """Exact-mode pass 3 consumer: (Q_Sᵀ G Q_A) ⊘ (Λ + λ) per layer and reference chunk, in the eigenbasis."""

    def __init__(self, curvature: dict[str, LayerCurvature]):
        self.curvature = curvature
        self.blocks: dict[str, torch.Tensor] = {}

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        return a

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        layer = self.curvature[name]
        self.blocks[name] = layer.inverse_rotated(rotated_gradients(context, g, layer.q_a, layer.q_s))


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
            if cfg.projection_dim else KroneckerProjection(None, None)
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
        reference_chunks = self.reference_chunks(reference)
        pool = reference_chunks if curvature is None else [c for ids in curvature for c in self.chunks(ids)]
        sample = random.Random(self.cfg.seed).sample(pool, min(self.cfg.curvature_samples, len(pool)))

        factors = FactorAccumulator()
        self._run(sample, factors)
        factors_s = time.perf_counter() - started
        eigenvalues = EigenvalueAccumulator(factors.eigenbases())
        self._run(sample, eigenvalues)
        self.curvature = eigenvalues.curvature(self.cfg.damping)
        eigen_s = time.perf_counter() - started - factors_s

        self.reference = self._reference_mean(reference_chunks)
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

    def reference_chunks(self, reference: list[list[int]]) -> list[list[int]]:
        """The reference chunks `fit` averages: all chunks, or a seeded sample of `reference_samples`."""
        chunks = [chunk for ids in reference for chunk in self.chunks(ids)]
        if not chunks:
            raise InfluenceError(f"the reference set ({len(reference)} documents) has no text of >= 2 tokens; "
                                 "influence needs reference texts the model can compute a next-token loss on")
        if self.cfg.reference_samples is not None and self.cfg.reference_samples < len(chunks):
            chunks = random.Random(self.cfg.seed + 1).sample(chunks, self.cfg.reference_samples)
        return chunks

    def _reference_mean(self, chunks: list[list[int]]) -> torch.Tensor:
        """r̄, flattened layer by layer like the scored blocks."""
        if self.cfg.projection_dim is not None:
            vectors = self.reference_vectors(chunks)
            return (unit_rows(vectors) if self.cfg.normalize else vectors).mean(0)
        consumer, sums = _RotatedReference(self.curvature), {}
        for _, batch in self._batches(chunks):
            forward_backward(self.model, self.layers, batch, consumer, self.dtype)
            weights = torch.ones(batch.mask.shape[0], device=self.device)
            if self.cfg.normalize:  # ‖r_i‖ = ‖rotated r_i‖
                norms = sum(block.square().sum((1, 2)) for block in consumer.blocks.values()).sqrt()
                weights = 1.0 / norms.clamp(min=1e-30)
            for name, block in consumer.blocks.items():
                summed = torch.einsum("n,nij->ij", weights, block)
                sums[name] = summed + sums[name] if name in sums else summed
        mean = []
        for name in self.layers:  # back from each eigenbasis, once
            layer = self.curvature[name]
            mean.append((layer.q_s @ (sums[name] / len(chunks)) @ layer.q_a.T).flatten())
        return torch.cat(mean)

    def reference_vectors(self, chunks: list[list[int]], projected: bool = True) -> torch.Tensor:
        """Per-chunk iHVPs r_i (n_chunks, D) with the fitted curvature, unnormalized: projected as in `fit`, or
        (projected=False) in the full layer space, each layer's d_out × d_in block flattened row-major."""
        if self.curvature is None:
            raise InfluenceError("no curvature: fit the scorer first (a loaded scorer keeps only its reference vector)")
        identity = {name: KroneckerProjection(None, None) for name in self.layers}
        return self._vectors(chunks, _ReferenceVectors(self.curvature, self.projections if projected else identity))

    # --- scoring ----------------------------------------------------------------------------------------------
    def score(self, texts: list[str]) -> np.ndarray:
        """Influence score per text (float64), higher = more helpful for the reference loss."""
        return self.score_token_ids(self.tokenize(texts))

    def chunk_vectors(self, chunks: list[list[int]]) -> torch.Tensor:
        """Projected per-chunk gradients x(z) (n_chunks, D), normalized when cfg.normalize."""
        vectors = self._vectors(chunks, _ProjectedGradients(self.projections))
        return unit_rows(vectors) if self.cfg.normalize else vectors

    def _require_fitted(self) -> None:
        if self.reference is None:
            raise InfluenceError("InfluenceScorer is not fitted: call fit(reference_texts) or load(path, cfg) first")

    def split_layers(self, vectors: torch.Tensor, projected: bool = True) -> dict[str, torch.Tensor]:
        """Views of (…, D) vectors as per-layer (…, rows, cols) blocks: shaped like the scored blocks (k_g × k_a, or
        d_out × d_in without projection), or (projected=False) like the layers' weights."""
        blocks, offset = {}, 0
        for name, layer in self.layers.items():
            projection = self.projections[name]
            rows = layer.out_features if not projected or projection.p_g is None else projection.p_g.shape[0]
            cols = layer.in_features if not projected or projection.p_a is None else projection.p_a.shape[0]
            blocks[name] = vectors[..., offset : offset + rows * cols].unflatten(-1, (rows, cols))
            offset += rows * cols
        return blocks

    def chunk_scores(self, chunks: list[list[int]]) -> torch.Tensor:
        """s(z) per chunk, batch by batch: no chunk's full vector outlives its layer's hook."""
        self._require_fitted()
        scores = torch.zeros(len(chunks), dtype=torch.float64)
        reference = self.split_layers(self.reference)
        for positions, batch in self._batches(chunks):
            consumer = _ChunkScores(self.projections, reference)
            forward_backward(self.model, self.layers, batch, consumer, self.dtype)
            dots = consumer.dots / consumer.squares.sqrt().clamp(min=1e-30) if self.cfg.normalize else consumer.dots
            scores[positions] = dots.double().cpu()
        return scores

    def score_token_ids(self, documents: list[list[int]]) -> np.ndarray:
        self._require_fitted()
        per_doc = [self.chunks(ids) for ids in documents]
        flat = [chunk for chunks in per_doc for chunk in chunks]
        chunk_scores = self.chunk_scores(flat).numpy() if flat else np.zeros(0)
        return document_means(chunk_scores, [len(chunks) for chunks in per_doc])

    # --- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save what scoring needs: the reference vector, layer names, projections and fit config/stats."""
        if self.reference is None:
            raise InfluenceError("nothing to save: fit the scorer first")
        tensors = {"reference": self.reference.cpu().contiguous()}
        for name, projection in self.projections.items():  # a side left out is the identity (None)
            for side, matrix in (("a", projection.p_a), ("g", projection.p_g)):
                if matrix is not None:
                    tensors[f"projection.{name}.{side}"] = matrix.cpu().contiguous()
        metadata = {"format": STATE_FORMAT, "config": self.cfg.model_dump(mode="json"), "layers": list(self.layers),
                    "projected_layers": list(self.projections), "stats": self.stats}
        # safetensors: tensors plus JSON text, nothing that runs code when loaded
        save_file(tensors, str(path), metadata={"selectflow": json.dumps(metadata, default=str)})

    @classmethod
    def load(cls, path: str | Path, cfg: InfluenceConfig, model: nn.Module | None = None,
             tokenizer: Any = None) -> InfluenceScorer:
        """A fitted scorer from `save`; `cfg` may change how documents are read (max_tokens, batch_size, device...)
        but not what the reference vector means (FIT_FIELDS)."""
        with safe_open(str(path), framework="pt") as handle:
            state = json.loads(handle.metadata()["selectflow"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        if state.get("format") != STATE_FORMAT:
            raise InfluenceError(f"{path}: influence state format {state.get('format')} != {STATE_FORMAT}; refit it")
        fitted = state["config"]
        now = cfg.model_dump(mode="json")
        changed = [f"{field}: fitted {fitted[field]!r}, now {now[field]!r}"
                   for field in FIT_FIELDS if fitted[field] != now[field]]
        if changed:
            raise InfluenceError(f"{path} was fitted with a different influence config ({'; '.join(changed)}); "
                                 "refit the reference or use the fitted values")
        scorer = cls(cfg, model, tokenizer)
        if list(scorer.layers) != state["layers"]:
            raise InfluenceError(f"{path}: the model's scored layers differ from the fitted ones; use the same model")
        scorer.projections = {
            n: KroneckerProjection(tensors.get(f"projection.{n}.a"), tensors.get(f"projection.{n}.g")).to(scorer.device)
            for n in state["projected_layers"]}
        scorer.reference = tensors["reference"].to(scorer.device)
        scorer.stats = state["stats"]
        return scorer
