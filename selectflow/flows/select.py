import math
from dataclasses import dataclass

from prefect import flow

from selectflow.config import InfluenceConfig, QuadConfig, SelectionConfig
from selectflow.flows.runner import run_stages, run_tasks
from selectflow.stages.influence import influence_reference_stage
from selectflow.stages.registry import QUAD, RANDOM, TOPK, ZIP
from selectflow.stages.select_quad import select_quad_stage, select_random_stage, select_topk_stage
from selectflow.stages.select_zip import zip_stage
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS
from selectflow.tasks.stage import stage_calls


@dataclass
class Selection:
    subsets: dict[str, ArtifactRef]  # by stage: select_zip, select_quad, select_random, select_topk
    influence: ArtifactRef | None  # the fitted influence reference, when a selector scores influence


@flow(name="select", **FLOW_OPTIONS)
def select_subset(
    workspace: str,
    pool: list[ArtifactRef],
    cfg: SelectionConfig,
    clusters: ArtifactRef | None = None,
    reference: list[ArtifactRef] | None = None,
    influence_cfg: InfluenceConfig | None = None,
) -> Selection:
    """Fit the influence reference when needed, then the selectors and baselines side by side over the same pool."""
    influence = None
    if influence_cfg is not None:  # EK-FAC curvature and the inverse-curvature reference gradient, on every core
        (influence,) = run_stages(influence_reference_stage, "influence-reference", workspace,
                                  [{"reference": reference, "cfg": influence_cfg}], "influence reference",
                                  use_all_cores=True)
    calls = {}

    def call(stage, task_name: str, **inputs) -> tuple:
        (entry,) = stage_calls(stage, task_name, workspace, [{"pool": pool, **inputs}])
        return entry

    if cfg.selector in ("zip", "both"):
        # Only when semantic dedup dropped documents: otherwise re-clustering would needlessly re-run ZIP.
        semdedup = clusters if clusters is not None and clusters.manifest()["stats"]["dropped"] else None
        calls[ZIP.name] = call(zip_stage, "zip-selection", cfg=cfg.zip, clusters=semdedup)
    if cfg.selector in ("quad", "both"):
        calls[QUAD.name] = call(select_quad_stage, "quad-selection", cluster_ref=clusters, influence_ref=influence,
                                cfg=cfg.quad, influence_cfg=influence_cfg)
    if calls and "random" in cfg.baselines:
        calls[RANDOM.name] = call(select_random_stage, "random-baseline", cluster_ref=clusters,
                                  cfg=baseline_budget(cfg), seed=cfg.seed)
    if calls and "topk" in cfg.baselines:
        calls[TOPK.name] = call(select_topk_stage, "topk-baseline", cluster_ref=clusters, influence_ref=influence,
                                cfg=baseline_budget(cfg), influence_cfg=influence_cfg,
                                candidates=cfg.topk_candidates, seed=cfg.seed)
    return Selection(dict(zip(calls, run_tasks(list(calls.values()), "selection"))), influence)


def baseline_budget(cfg: SelectionConfig) -> QuadConfig:
    """The baselines get the budget of the subset they are compared with: QUAD's, else what ZIP will select."""
    if cfg.selector in ("quad", "both"):
        return cfg.quad
    budget = cfg.zip.budget
    if cfg.zip.budget_unit == "docs":
        budget = math.ceil(budget / cfg.zip.k3) * cfg.zip.k3  # ZIP picks whole rounds of k3
    return QuadConfig(budget=budget, budget_unit=cfg.zip.budget_unit, token_counter=cfg.zip.token_counter)
