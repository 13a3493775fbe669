from dataclasses import dataclass

from prefect import flow

from selectflow.config import ClusterConfig
from selectflow.flows.runner import run_stages
from selectflow.stages import cluster
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@dataclass
class Clustered:
    embeddings: list[ArtifactRef]  # per pool shard
    clusters: ArtifactRef
    reference: ArtifactRef | None  # the reference set assigned to the pool's clusters, when asked for


@flow(name="cluster", **FLOW_OPTIONS)
def cluster_pool(workspace: str, pool: list[ArtifactRef], cfg: ClusterConfig,
                 reference: list[ArtifactRef] | None = None, retries: int = 2,
                 retry_delay_seconds: float = 1.0) -> Clustered:
    """Embed every deduplicated shard (one task each, on the Dask workers), then k-means over all of them; with
    `reference`, that set too, each document assigned to its nearest cluster."""
    embeddings = embed(workspace, pool, pool, cfg, shard_task_options(retries, retry_delay_seconds))
    # k-means over every shard's embeddings: cluster per document, centroid distances, neighbours, SemDeDup
    (clusters,) = run_stages(cluster.cluster_stage, "clusters", workspace, [{"embeddings": embeddings, "cfg": cfg}],
                             "k-means")
    assigned = None
    if reference:
        (assigned,) = run_stages(cluster.reference_clusters_stage, "reference-clusters", workspace,
                                 [{"clusters": clusters, "embeddings": embed(workspace, pool, reference, cfg, {})}],
                                 "reference clusters")
    return Clustered(embeddings, clusters, assigned)


def embed(workspace: str, pool: list[ArtifactRef], shards: list[ArtifactRef], cfg: ClusterConfig,
          options: dict) -> list[ArtifactRef]:
    """Embeddings of `shards`, one task each, in the pool's embedding space (tfidf: the basis fit on the pool)."""
    basis = None
    if cfg.embedding.method == "tfidf":  # the TF-IDF + SVD basis every shard is embedded with, fit on a pool sample
        (basis,) = run_stages(cluster.embedding_basis_stage, "embedding-basis", workspace,
                              [{"pool": pool, "cfg": cfg.embedding}], "basis")
    return run_stages(cluster.embed_stage, "shard-embeddings", workspace,
                      [{"shard_ref": shard, "cfg": cfg.embedding, "basis": basis} for shard in shards], "embed",
                      label=lambda call: f"embed {call['shard_ref'].key:.12}", **options)
