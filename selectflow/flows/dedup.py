from dataclasses import dataclass

from prefect import flow

from selectflow.config import DedupConfig
from selectflow.flows.runner import run_stages
from selectflow.stages import dedup
from selectflow.store import ArtifactRef, Shard
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


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
    (exact,) = run_stages(dedup.exact_dedup, "exact-duplicates", workspace, [{"shards": shards, "cfg": cfg.exact}],
                          "exact dedup")
    signatures = run_stages(dedup.minhash_shard, "minhash-signatures", workspace,
                            [{"shard": shard, "cfg": cfg.near} for shard in shards], "minhash",
                            label=lambda call: f"minhash {call['shard'].sha256:.12}", **retrying)
    (near,) = run_stages(dedup.near_dedup, "near-duplicates", workspace,
                         [{"signatures": signatures, "exact": exact, "cfg": cfg.near}], "near dedup")
    deduped = run_stages(dedup.filter_shard, "deduped-shard", workspace,
                         [{"shard": shard, "decisions": [exact, near]} for shard in shards], "filter",
                         label=lambda call: f"filter {call['shard'].sha256:.12}", **retrying)
    return DedupResult(exact, signatures, near, deduped)
