from __future__ import annotations

import math

from prefect import get_run_logger, task

from selectflow.config import InfluenceConfig, QuadConfig, ZipConfig
from selectflow.stages.select_quad import select_quad_stage, select_random_stage, select_topk_stage
from selectflow.stages.select_zip import zip_stage
from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED


@task(name="zip-selection", **STORE_CACHED)
def zip_selection(
    workspace: str, pool: list[ArtifactRef], cfg: ZipConfig, semantic_dedup: ArtifactRef | None = None
) -> ArtifactRef:
    """ZIP over the deduplicated pool (its rounds are sequential; candidates are scored in parallel inside).

    `semantic_dedup`: the cluster artifact whose semantic-dedup drops leave the pool too."""
    logger = get_run_logger()
    rounds = math.ceil(cfg.budget / cfg.k3) if cfg.budget_unit == "docs" else None

    def report(done: int, info: dict) -> None:
        logger.info(f"zip round {done}/{rounds or '?'}: {info['n_selected']} selected, "
                    f"set ratio {info['selected_ratio']:.3f}, {info['pool_left']} left in the pool")

    return zip_stage(ArtifactStore(workspace), pool, cfg, progress=report, clusters=semantic_dedup)


@task(name="quad-selection", **STORE_CACHED)
def quad_selection(
    workspace: str,
    pool: list[ArtifactRef],
    clusters: ArtifactRef,
    influence: ArtifactRef,
    cfg: QuadConfig,
    influence_cfg: InfluenceConfig,
) -> ArtifactRef:
    """QUAD's bandit over the clusters, scoring a few documents of each pulled cluster by influence."""
    logger = get_run_logger()

    def report(done: int, record: dict) -> None:
        rewarded = sum(reward > 0 for reward in record["rewards"])
        logger.info(f"quad round {done}: pulled {len(record['pulled'])} clusters, {rewarded} rewarded, "
                    f"{record['selected_docs']} selected, {record['scored_docs']} scored so far")

    return select_quad_stage(ArtifactStore(workspace), pool, clusters, influence, cfg, influence_cfg, progress=report)


@task(name="random-baseline", **STORE_CACHED)
def random_selection(
    workspace: str, pool: list[ArtifactRef], clusters: ArtifactRef | None, budget: QuadConfig, seed: int
) -> ArtifactRef:
    """A uniform random subset under the same budget, to compare the selectors against."""
    return select_random_stage(ArtifactStore(workspace), pool, clusters, budget, seed)


@task(name="topk-baseline", **STORE_CACHED)
def topk_selection(
    workspace: str,
    pool: list[ArtifactRef],
    clusters: ArtifactRef | None,
    influence: ArtifactRef,
    budget: QuadConfig,
    influence_cfg: InfluenceConfig,
    candidates: int | None,
    seed: int,
) -> ArtifactRef:
    """The highest-influence documents under the same budget (scores every candidate: the cost QUAD avoids)."""
    logger = get_run_logger()

    def report(done: int, total: int) -> None:
        logger.info(f"top-k: {done}/{total} candidates scored")

    return select_topk_stage(ArtifactStore(workspace), pool, clusters, influence, budget, influence_cfg, candidates,
                             seed, progress=report)
