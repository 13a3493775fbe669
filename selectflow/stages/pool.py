"""The selection pool: the deduplicated documents that the cluster stage kept (semantic dedup may drop some)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from selectflow.store import ArtifactRef


@dataclass
class Pool:
    docs: pa.Table  # DOCS schema, only documents the cluster stage kept
    clusters: np.ndarray  # cluster id per document (-1 when no cluster artifact was given)
    excluded: int  # documents the cluster stage dropped (or did not assign)


def read_pool(pool: list[ArtifactRef], cluster_ref: ArtifactRef | None) -> Pool:
    """Pool documents kept by the cluster stage, with their cluster ids."""
    docs = pa.concat_tables([ref.read("docs") for ref in pool])
    if cluster_ref is None:
        return Pool(docs, np.full(docs.num_rows, -1, np.int64), 0)
    assignments = cluster_ref.read("assignments", columns=["doc_id", "cluster", "kept"])
    cluster_of = {
        doc: cluster
        for doc, cluster, kept in zip(assignments["doc_id"].to_pylist(), assignments["cluster"].to_pylist(),
                                      assignments["kept"].to_pylist())
        if kept
    }
    keep = [index for index, doc in enumerate(docs["doc_id"].to_pylist()) if doc in cluster_of]
    kept = docs.take(pa.array(keep, pa.int64()))
    clusters = np.array([cluster_of[doc] for doc in kept["doc_id"].to_pylist()], dtype=np.int64)
    return Pool(kept, clusters, docs.num_rows - kept.num_rows)
