"""Spherical-ish k-means over L2-normalized embeddings (scikit-learn MiniBatchKMeans), and centroid neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from selectflow.cluster.embed import normalize_rows


class ClusterError(ValueError):
    """A clustering setting that cannot work for this data; the message says what to change."""


@dataclass(frozen=True)
class Clustering:
    labels: np.ndarray  # int32 [n], 0..k-1, every cluster non-empty
    centroids: np.ndarray  # float32 [k, dim], unit norm
    distances: np.ndarray  # float32 [n], cosine distance (1 - cos) of each document to its centroid
    inertia: float  # scikit-learn's inertia (sum of squared Euclidean distances to the raw centres)
    requested_k: int


def spherical_kmeans(
    embeddings: np.ndarray, k: int, *, batch_size: int, max_iter: int, n_init: int, seed: int
) -> Clustering:
    """Cluster unit vectors with mini-batch k-means; centroids are the normalized means of their members.

    Centres that end with no member are dropped and the rest renumbered in order, so `labels` covers 0..k'-1
    with k' <= k (k' is `len(centroids)`).
    """
    n = len(embeddings)
    if k > n:
        raise ClusterError(f"cluster.k={k} is more than the {n} documents to cluster; lower cluster.k to at most {n}")
    points = normalize_rows(np.asarray(embeddings, dtype=np.float32))
    model = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, max_iter=max_iter, n_init=n_init, random_state=seed)
    model.fit(points)
    used, labels = np.unique(model.labels_, return_inverse=True)
    sums = np.zeros((len(used), points.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, points)
    centroids = normalize_rows(sums)
    distances = np.clip(1.0 - np.einsum("ij,ij->i", points, centroids[labels]), 0.0, 2.0).astype(np.float32)
    return Clustering(labels.astype(np.int32), centroids, distances, float(model.inertia_), k)


def centroid_distances(centroids: np.ndarray) -> np.ndarray:
    """k x k cosine distances (1 - cos) between unit centroids, zero diagonal."""
    distances = np.clip(1.0 - centroids @ centroids.T, 0.0, 2.0).astype(np.float32)
    np.fill_diagonal(distances, 0.0)
    return distances


def neighbour_pairs(distances: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, neighbour, distance) for every ordered pair closer than `threshold`, each cluster with itself."""
    rows, cols = np.nonzero(distances < threshold)
    return rows.astype(np.int32), cols.astype(np.int32), distances[rows, cols].astype(np.float32)
