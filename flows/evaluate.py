from prefect import flow

from flows.runner import run_shards, run_tasks
from selectflow.config import ProbeConfig, RiskConfig
from selectflow.lineage import SUBSET_OF_STAGE
from selectflow.risk import RiskPoint, SubsetAssessment, check_subset, point_from_stats
from selectflow.store import ArtifactRef
from tasks.common import FLOW_OPTIONS, shard_task_options
from tasks.probe import full_pool_sample, probe_training


@flow(name="probe", **FLOW_OPTIONS)
def probe_subsets(
    workspace: str,
    pool: list[ArtifactRef],
    selected: dict[str, ArtifactRef],
    reference: list[ArtifactRef],
    unseen: list[ArtifactRef],
    cfg: ProbeConfig,
    retries: int = 2,
    retry_delay_seconds: float = 1.0,
) -> dict[str, ArtifactRef]:
    """One short probe training run per subset, all at the same token budget, side by side on the workers."""
    subsets = {SUBSET_OF_STAGE[stage]: [ref] for stage, ref in selected.items()}
    names = cfg.subsets or [*subsets, "full"]
    if missing := [name for name in names if name not in subsets and name != "full"]:
        raise ValueError(f"probe.subsets names {missing}, which this run does not select (it has {list(subsets)}); "
                         "change probe.subsets or selection.selector / selection.baselines")
    if "full" in names:
        subsets["full"] = run_shards(full_pool_sample, [{"workspace": workspace, "pool": pool, "cfg": cfg}],
                                     "full-pool sample")
    task = probe_training.with_options(**shard_task_options(retries, retry_delay_seconds))
    calls = [(task, {"workspace": workspace, "name": name, "subset": subsets[name], "reference": reference,
                     "unseen": unseen, "cfg": cfg}) for name in names]
    return dict(zip(names, run_tasks(calls, "probe")))


def assess_risk(stats: dict[str, dict], history: list[RiskPoint], cfg: RiskConfig) -> list[SubsetAssessment]:
    """The entropy-law checks of each selected subset (zip, quad), from the probes' stats by subset, against the
    random subset and the history."""
    random = point_from_stats(stats["random"], cfg.ratio, "random") if "random" in stats else None
    return [check_subset(name, point_from_stats(stats[name], cfg.ratio, name), random, history, cfg)
            for name in ("zip", "quad") if name in stats]
