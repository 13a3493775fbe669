from prefect import flow

from selectflow.config import ClusterConfig
from selectflow.flows.runner import run_stages
from selectflow.stages import cluster
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@flow(name="cluster", **FLOW_OPTIONS)
def cluster_pool(
    workspace: str, pool: list[ArtifactRef], cfg: ClusterConfig, retries: int = 2, retry_delay_seconds: float = 1.0
) -> tuple[list[ArtifactRef], ArtifactRef]:
    """Embed every deduplicated shard (one task each, on the Dask workers), then k-means over all of them."""
    basis = None
    if cfg.embedding.method == "tfidf":  # the TF-IDF + SVD basis every shard is embedded with, fit on a pool sample
        (basis,) = run_stages(cluster.embedding_basis_stage, "embedding-basis", workspace,
                              [{"pool": pool, "cfg": cfg.embedding}], "basis")
    embeddings = run_stages(cluster.embed_stage, "shard-embeddings", workspace,
                            [{"shard_ref": shard, "cfg": cfg.embedding, "basis": basis} for shard in pool], "embed",
                            label=lambda call: f"embed {call['shard_ref'].key:.12}",
                            **shard_task_options(retries, retry_delay_seconds))
    # k-means over every shard's embeddings: cluster per document, centroid distances, neighbours, SemDeDup
    (clusters,) = run_stages(cluster.cluster_stage, "clusters", workspace, [{"embeddings": embeddings, "cfg": cfg}],
                             "k-means")
    return embeddings, clusters
