from dataclasses import dataclass, field

from prefect import flow

from selectflow.config import DedupConfig, FilterOptions
from selectflow.flows.runner import run_stages
from selectflow.stages import dedup
from selectflow.stages.base import Kind, filter_stage, stages
from selectflow.stages.filters import filter_documents
from selectflow.store import ArtifactRef, Shard
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@dataclass
class DedupResult:
    exact: ArtifactRef
    signatures: list[ArtifactRef]
    near: ArtifactRef
    deduped: list[ArtifactRef]
    filtered: dict[str, list[ArtifactRef]] = field(default_factory=dict)  # by document filter stage, DAG order


@flow(name="dedup", **FLOW_OPTIONS)
def deduplicate(
    workspace: str, shards: list[Shard], cfg: DedupConfig, filters: list[FilterOptions] | None = None,
    retries: int = 2, retry_delay_seconds: float = 1.0,
) -> DedupResult:
    """The document filters on every shard, then exact duplicates across all shards, then MinHash-LSH near
    duplicates of what is left, then filter shards."""
    retrying = shard_task_options(retries, retry_delay_seconds)
    filtered = {}
    for options in in_dag_order(filters or []):
        stage = filter_stage(options.method)
        filtered[stage.name] = run_stages(filter_documents, f"{options.method}-filter", workspace,
                                          [{"shard": shard, "options": options} for shard in shards], stage.name,
                                          label=lambda call: f"{call['options'].method} {call['shard'].sha256:.12}",
                                          **retrying)
        shards = [shard for ref in filtered[stage.name] for shard in ref.shards("docs")]
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
    return DedupResult(exact, signatures, near, deduped, filtered)


def in_dag_order(filters: list[FilterOptions]) -> list[FilterOptions]:
    order = [stage.method for stage in stages(Kind.FILTER)]
    return sorted(filters, key=lambda options: order.index(options.method))
