from __future__ import annotations

from prefect import task

from selectflow.config import ClusterConfig, EmbeddingConfig
from selectflow.stages import cluster
from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED


@task(name="embedding-basis", **STORE_CACHED)
def embedding_basis(workspace: str, pool: list[ArtifactRef], cfg: EmbeddingConfig) -> ArtifactRef:
    """The TF-IDF + SVD basis every shard is embedded with (fit once on a sample of the pool)."""
    return cluster.embedding_basis_stage(ArtifactStore(workspace), pool, cfg)


@task(name="shard-embeddings", **STORE_CACHED, task_run_name="embed {shard.key:.12}")
def shard_embeddings(
    workspace: str, shard: ArtifactRef, cfg: EmbeddingConfig, basis: ArtifactRef | None
) -> ArtifactRef:
    return cluster.embed_stage(ArtifactStore(workspace), shard, cfg, basis)


@task(name="clusters", **STORE_CACHED)
def cluster_assignments(workspace: str, embeddings: list[ArtifactRef], cfg: ClusterConfig) -> ArtifactRef:
    """k-means over every shard's embeddings: cluster per document, centroid distances, neighbours, SemDeDup."""
    return cluster.cluster_stage(ArtifactStore(workspace), embeddings, cfg)
