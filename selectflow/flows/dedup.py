from dataclasses import dataclass

from prefect import flow

from selectflow.config import DedupConfig
from selectflow.flows.runner import run_shards
from selectflow.store import ArtifactRef, Shard
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options
from selectflow.tasks.dedup import deduped_shard, exact_decisions, near_decisions, shard_signatures


@dataclass
class DedupResult:
    exact: ArtifactRef
    signatures: list[ArtifactRef]
    near: ArtifactRef
    deduped: list[ArtifactRef]


@flow(name="dedup", **FLOW_OPTIONS)
def deduplicate(
    workspace: str, shards: list[Shard], cfg: DedupConfig, retries: int = 2, retry_delay_seconds: float = 1.0
) -> DedupResult:
    """Exact duplicates across all shards, then MinHash-LSH near duplicates of what is left, then filter shards."""
    retrying = shard_task_options(retries, retry_delay_seconds)
    (exact,) = run_shards(exact_decisions, [{"workspace": workspace, "shards": shards, "cfg": cfg.exact}], "exact dedup")
    signatures = run_shards(
        shard_signatures.with_options(**retrying),
        [{"workspace": workspace, "shard": shard, "cfg": cfg.near} for shard in shards],
        "minhash",
    )
    (near,) = run_shards(
        near_decisions,
        [{"workspace": workspace, "signatures": signatures, "exact": exact, "cfg": cfg.near}],
        "near dedup",
    )
    deduped = run_shards(
        deduped_shard.with_options(**retrying),
        [{"workspace": workspace, "shard": shard, "decisions": [exact, near]} for shard in shards],
        "filter",
    )
    return DedupResult(exact, signatures, near, deduped)
