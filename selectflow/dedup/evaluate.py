"""Ground truth for near dedup: exact Jaccard of shingle sets, and precision/recall of a clustering against it.

Ground truth: every pair of documents sharing at least one shingle gets its exact Jaccard from a sparse
document x shingle matrix (``X @ X.T`` in row blocks gives the intersections); a true duplicate pair has
Jaccard >= threshold. The oracle dedup is union-find over the true pairs ("true components").

Metric (:func:`pair_scores`), pair counting over clusterings: a predicted pair = two documents in the same predicted
component; a true pair = two documents in the same true component. precision = |pred & true| / |pred|,
recall = |pred & true| / |true|. Both sides are transitively closed, so a perfect method (exact all-pairs Jaccard +
union-find) scores 1/1 even when components chain. Also reported: the same on *dropped documents* (every member of a
component but its first is dropped).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from selectflow.dedup.near import components

__all__ = ["shingle_matrix", "true_pairs", "true_labels", "pair_scores"]


def shingle_matrix(shingle_hashes: np.ndarray, offsets: np.ndarray) -> sp.csr_matrix:
    """Binary CSR document x shingle matrix from concatenated per-document shingle hashes."""
    n = len(offsets) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    _, cols = np.unique(shingle_hashes, return_inverse=True)
    ncols = int(cols.max()) + 1 if cols.size else 0
    codes = np.unique(rows * max(ncols, 1) + cols.astype(np.int64))  # a set per document
    r, c = np.divmod(codes, max(ncols, 1))
    data = np.ones(codes.size, dtype=np.float32)
    return sp.csr_matrix((data, (r, c)), shape=(n, ncols))


def true_pairs(matrix: sp.csr_matrix, threshold: float, block: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) with exact Jaccard >= threshold: (i, j, jaccard)."""
    x = matrix.tocsr().astype(np.float32)
    sizes = np.asarray(x.sum(axis=1)).ravel()
    xt = x.T.tocsc()
    out_i, out_j, out_s = [], [], []
    for s in range(0, x.shape[0], block):
        inter = (x[s:s + block] @ xt).tocoo()
        i = inter.row.astype(np.int64) + s
        j = inter.col.astype(np.int64)
        keep = i < j
        i, j, c = i[keep], j[keep], inter.data[keep].astype(np.float64)
        jac = c / (sizes[i] + sizes[j] - c)
        keep = jac >= threshold
        out_i.append(i[keep]), out_j.append(j[keep]), out_s.append(jac[keep])
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
    return cat(out_i, np.int64), cat(out_j, np.int64), cat(out_s, np.float64)


def true_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component root (smallest index) of every document under the true pairs."""
    return components(n, i, j)


def _pairs_within(labels: np.ndarray) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def pair_scores(pred_labels: np.ndarray, true_labels_: np.ndarray) -> dict:
    """Pair-counting precision/recall/F1 of a predicted clustering, plus dropped-document precision/recall.

    Labels: one int per document; documents with the same label are in one component (singletons: unique labels).
    """
    pred = np.asarray(pred_labels, dtype=np.int64)
    true = np.asarray(true_labels_, dtype=np.int64)
    n_pred, n_true = _pairs_within(pred), _pairs_within(true)
    joint = _pairs_within(pred * (int(true.max()) + 1 if true.size else 1) + true)
    p = joint / n_pred if n_pred else 1.0
    r = joint / n_true if n_true else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    # Documents dropped: all but the first (smallest index) member of each component.
    def dropped(labels):
        first = np.zeros(labels.size, dtype=bool)
        _, idx = np.unique(labels, return_index=True)
        first[idx] = True
        return ~first
    dp, dt = dropped(pred), dropped(true)
    tp = int((dp & dt).sum())
    return {
        "pred_pairs": n_pred, "true_pairs": n_true, "precision": p, "recall": r, "f1": f1,
        "dropped_pred": int(dp.sum()), "dropped_true": int(dt.sum()),
        "drop_precision": tp / max(int(dp.sum()), 1) if dp.any() else 1.0,
        "drop_recall": tp / max(int(dt.sum()), 1) if dt.any() else 1.0,
    }
