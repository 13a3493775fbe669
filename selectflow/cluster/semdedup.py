"""Semantic dedup inside clusters (SemDeDup-style, Abbas et al. 2023).

Keep rule (deterministic): inside each cluster, documents are visited nearest-to-centroid first (ties: doc_id);
a document is dropped when its cosine similarity to an already-kept document of the same cluster exceeds the
threshold, and it names the most similar kept one. Dropped documents are never compared against, so a chain
A ~ B ~ C with A and C apart keeps A and C.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SemDedupResult:
    keeper: np.ndarray  # int64 [n]: -1 for a kept document, else the index of the kept document it duplicates
    cosine: np.ndarray  # float32 [n]: cosine to that keeper (nan when kept)

    @property
    def kept(self) -> np.ndarray:
        return self.keeper < 0


def semantic_dedup(
    embeddings: np.ndarray, labels: np.ndarray, distances: np.ndarray, doc_ids: list[str], threshold: float
) -> SemDedupResult:
    n = len(embeddings)
    keeper = np.full(n, -1, dtype=np.int64)
    cosine = np.full(n, np.nan, dtype=np.float32)
    for cluster in np.unique(labels):
        members = sorted(np.flatnonzero(labels == cluster), key=lambda i: (distances[i], doc_ids[i]))
        kept = np.empty((len(members), embeddings.shape[1]), dtype=np.float32)
        kept_index = np.empty(len(members), dtype=np.int64)
        count = 0
        for index in members:
            if count:
                sims = kept[:count] @ embeddings[index]
                best = int(np.argmax(sims))
                if sims[best] > threshold:
                    keeper[index], cosine[index] = kept_index[best], sims[best]
                    continue
            kept[count], kept_index[count] = embeddings[index], index
            count += 1
    return SemDedupResult(keeper, cosine)
