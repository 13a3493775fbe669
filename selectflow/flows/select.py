from dataclasses import dataclass, replace

from prefect import flow

from selectflow.config import InfluenceConfig, ProbeConfig, SelectionConfig
from selectflow.flows.cluster import Clustered
from selectflow.flows.mixture import MixtureSearch, search_mixture
from selectflow.flows.runner import run_stages, run_tasks
from selectflow.stages.base import selector_stage
from selectflow.stages.influence import influence_reference_stage
from selectflow.stages.select_dsir import ngram_features_stage
from selectflow.stages.selection import SelectionContext, budgets_by_method
from selectflow.stages.strata import strata_view
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, on_this_flows_runner
from selectflow.tasks.stage import stage_calls


@dataclass
class Selection:
    subsets: dict[str, ArtifactRef]  # by stage name (select_zip, select_quad, select_random, ...), config order
    influence: ArtifactRef | None  # the fitted influence reference, when a selector scores influence
    ngrams: list[ArtifactRef]  # hashed n-gram counts of the pool and reference shards, when a selector needs them
    mixture: MixtureSearch | None = None  # the mixture search, when the mixture selector runs


@flow(name="select", **FLOW_OPTIONS)
def select_subset(
    workspace: str,
    pool: list[ArtifactRef],
    cfg: SelectionConfig,
    clustered: Clustered | None = None,
    reference: list[ArtifactRef] | None = None,
    influence_cfg: InfluenceConfig | None = None,
    unseen: list[ArtifactRef] | None = None,
    probe: ProbeConfig | None = None,
) -> Selection:
    """Fit the influence reference, count n-grams and search the mixture when needed, then every selector and
    baseline side by side over the same pool."""
    influence = None
    if influence_cfg is not None:  # EK-FAC curvature and the inverse-curvature reference gradient, on every core
        (influence,) = run_stages(influence_reference_stage, "influence-reference", workspace,
                                  [{"reference": reference, "cfg": influence_cfg}], "influence reference",
                                  use_all_cores=True)
    ngrams = count_ngrams(workspace, pool, reference or [], cfg)
    context = SelectionContext(None if clustered is None else clustered.clusters, influence, influence_cfg, **ngrams,
                               reference_clusters=None if clustered is None else clustered.reference)
    search = None
    if (options := cfg.mixture_search) is not None:
        search = on_this_flows_runner(search_mixture)(workspace, pool, strata_view(options.components, context),
                                                      reference or [], unseen or [], options, probe or ProbeConfig())
        context = replace(context, mixture=search.fit)
    budgets = budgets_by_method(cfg)
    calls = {}
    for options in cfg.selectors:
        stage = selector_stage(options.method)
        inputs = {"pool": pool, "budget": budgets[options.method], "options": options, "context": context}
        (calls[stage.name],) = stage_calls(stage.function(), f"{options.method}-{stage.kind}", workspace, [inputs])
    return Selection(dict(zip(calls, run_tasks(list(calls.values()), "selection"))), influence,
                     ngrams.get("ngrams", []) + ngrams.get("reference_ngrams", []), search)


def count_ngrams(workspace: str, pool: list[ArtifactRef], reference: list[ArtifactRef],
                 cfg: SelectionConfig) -> dict[str, list[ArtifactRef]]:
    """The hashed n-gram counts of every pool and reference shard, one task each, when a selector needs them (with
    the first such selector's `features`)."""
    features = next((options.features for options in cfg.selectors if options.needs_ngrams), None)
    if features is None:
        return {}
    counted = run_stages(ngram_features_stage, "ngram-features", workspace,
                         [{"shard_ref": ref, "cfg": features} for ref in [*pool, *reference]], "n-gram features",
                         label=lambda call: f"n-grams {call['shard_ref'].key:.12}")
    return {"ngrams": counted[:len(pool)], "reference_ngrams": counted[len(pool):]}
