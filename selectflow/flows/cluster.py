from prefect import flow

from selectflow.config import ClusterConfig
from selectflow.flows.runner import run_shards
from selectflow.store import ArtifactRef
from selectflow.tasks.cluster import cluster_assignments, embedding_basis, shard_embeddings
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@flow(name="cluster", **FLOW_OPTIONS)
def cluster_pool(
    workspace: str, pool: list[ArtifactRef], cfg: ClusterConfig, retries: int = 2, retry_delay_seconds: float = 1.0
) -> tuple[list[ArtifactRef], ArtifactRef]:
    """Embed every deduplicated shard (one task each, on the Dask workers), then k-means over all of them."""
    basis = None
    if cfg.embedding.method == "tfidf":
        (basis,) = run_shards(embedding_basis, [{"workspace": workspace, "pool": pool, "cfg": cfg.embedding}], "basis")
    embeddings = run_shards(
        shard_embeddings.with_options(**shard_task_options(retries, retry_delay_seconds)),
        [{"workspace": workspace, "shard": shard, "cfg": cfg.embedding, "basis": basis} for shard in pool],
        "embed",
    )
    (clusters,) = run_shards(cluster_assignments, [{"workspace": workspace, "embeddings": embeddings, "cfg": cfg}],
                             "k-means")
    return embeddings, clusters
