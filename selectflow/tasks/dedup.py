from __future__ import annotations

from prefect import task

from selectflow.config import ExactDedupConfig, NearDedupConfig
from selectflow.stages import dedup
from selectflow.store import ArtifactRef, ArtifactStore, Shard
from selectflow.tasks.common import STORE_CACHED, dask_client


@task(name="exact-duplicates", **STORE_CACHED)
def exact_decisions(workspace: str, shards: list[Shard], cfg: ExactDedupConfig) -> ArtifactRef:
    with dask_client() as client:
        return dedup.exact_dedup(ArtifactStore(workspace), shards, cfg, client=client)


@task(name="minhash-signatures", **STORE_CACHED, task_run_name="minhash {shard.sha256:.12}")
def shard_signatures(workspace: str, shard: Shard, cfg: NearDedupConfig) -> ArtifactRef:
    return dedup.minhash_shard(ArtifactStore(workspace), shard, cfg)


@task(name="near-duplicates", **STORE_CACHED)
def near_decisions(
    workspace: str, signatures: list[ArtifactRef], exact: ArtifactRef, cfg: NearDedupConfig
) -> ArtifactRef:
    with dask_client() as client:
        return dedup.near_dedup(ArtifactStore(workspace), signatures, exact, cfg, client=client)


@task(name="deduped-shard", **STORE_CACHED, task_run_name="filter {shard.sha256:.12}")
def deduped_shard(workspace: str, shard: Shard, decisions: list[ArtifactRef]) -> ArtifactRef:
    return dedup.filter_shard(ArtifactStore(workspace), shard, decisions)
