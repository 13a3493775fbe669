"""Influence reference stage: fit EK-FAC and the reference vector on the reference set once, as an artifact.

The selection stage (QUAD bandit, top-k baseline) then calls `load_scorer(ref, cfg).score(texts)` on the few
documents it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from selectflow.config import InfluenceConfig
from selectflow.fingerprint import code_fingerprint
from selectflow.influence.model import model_fingerprint, resolve_device, resolve_dtype
from selectflow.influence.scorer import InfluenceScorer
from selectflow.stages.base import read_docs
from selectflow.stages.registry import INFLUENCE
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter, stable_hash

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

STATE_FILE = "influence_state.safetensors"


def influence_reference_stage(
    store: ArtifactStore,
    reference: pa.Table | list[ArtifactRef],
    cfg: InfluenceConfig,
    curvature: pa.Table | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> ArtifactRef:
    """Fit the scorer on `reference["text"]` (EK-FAC on a sample of `curvature["text"]` when given, else of the
    reference) and save its state. `model`/`tokenizer` override cfg.model_path (tests); the artifact key then only
    knows cfg, so keep such stores separate."""
    texts = read_docs(reference, ["text"]).column("text").to_pylist()
    curvature_texts = curvature.column("text").to_pylist() if curvature is not None else None
    inputs = [f"reference:{stable_hash(texts)}"]
    if curvature_texts is not None:
        inputs.append(f"curvature:{stable_hash(curvature_texts)}")

    def write(writer: ArtifactWriter) -> None:
        scorer = InfluenceScorer(cfg, model, tokenizer).fit(texts, curvature_texts)
        scorer.save(writer.file(STATE_FILE))
        writer.stats(**scorer.stats, state_file=STATE_FILE)

    return store.build(INFLUENCE.name, fit_key(cfg), inputs, _CODE, write)


def fit_key(cfg: InfluenceConfig) -> dict:
    """What decides the fitted state and every score from it: the settings less the run settings (batch_size and
    device change only how fast it goes), the model by content, and the dtype as resolved for the device."""
    settings = cfg.model_dump(exclude={"model_path", "batch_size", "device", "dtype"})
    dtype = resolve_dtype(cfg.dtype, resolve_device(cfg.device))
    return {**settings, "model": model_fingerprint(cfg.model_path), "dtype": str(dtype)}


def load_scorer(ref: ArtifactRef, cfg: InfluenceConfig, model: Any = None, tokenizer: Any = None) -> InfluenceScorer:
    """The fitted scorer of an influence_reference artifact, ready to score documents."""
    return InfluenceScorer.load(Path(ref.path) / STATE_FILE, cfg, model, tokenizer)
