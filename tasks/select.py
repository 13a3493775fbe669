from __future__ import annotations

import math

from prefect import get_run_logger, task

from selectflow.config import ZipConfig
from selectflow.stages.select_zip import zip_stage
from selectflow.store import ArtifactRef, ArtifactStore
from tasks.common import content_cache_key


@task(name="zip-selection", cache_key_fn=content_cache_key, persist_result=True)
def zip_selection(workspace: str, pool: list[ArtifactRef], cfg: ZipConfig) -> ArtifactRef:
    """ZIP over the whole deduplicated pool (its rounds are sequential; candidates are scored in parallel inside)."""
    logger = get_run_logger()
    rounds = math.ceil(cfg.budget / cfg.k3) if cfg.budget_unit == "docs" else None

    def report(done: int, info: dict) -> None:
        logger.info(f"zip round {done}/{rounds or '?'}: {info['n_selected']} selected, "
                    f"set ratio {info['selected_ratio']:.3f}, {info['pool_left']} left in the pool")

    return zip_stage(ArtifactStore(workspace), pool, cfg, progress=report)
