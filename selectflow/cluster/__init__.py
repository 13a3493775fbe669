"""Embeddings, k-means clustering and semantic dedup (pure logic; stages live in selectflow.stages.cluster)."""

from selectflow.cluster.embed import (
    EmbeddingError,
    TfidfBasis,
    fit_tfidf_basis,
    minilm_embed,
    normalize_rows,
    resolve_device,
    tfidf_embed,
)
from selectflow.cluster.kmeans import ClusterError, Clustering, centroid_distances, neighbour_pairs, spherical_kmeans
from selectflow.cluster.semdedup import SemDedupResult, semantic_dedup

__all__ = [
    "ClusterError", "Clustering", "EmbeddingError", "SemDedupResult", "TfidfBasis", "centroid_distances",
    "fit_tfidf_basis", "minilm_embed", "neighbour_pairs", "normalize_rows", "resolve_device",
    "semantic_dedup", "spherical_kmeans", "tfidf_embed",
]
