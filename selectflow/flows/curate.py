"""The `curate` DAG: ingest -> exact + near dedup -> clusters -> influence -> selection (ZIP, QUAD, DSIR, baselines)
-> probe training -> entropy-law risk check -> report."""

from prefect import flow
from prefect.futures import PrefectFuture

from selectflow.config import CurateConfig, IngestConfig
from selectflow.flows.cluster import cluster_pool
from selectflow.flows.dedup import deduplicate
from selectflow.flows.evaluate import compare_curricula, probe_subsets
from selectflow.flows.ingest import ingest_corpus
from selectflow.flows.recorder import RunRecorder
from selectflow.flows.runner import dask_runner
from selectflow.flows.select import select_subset
from selectflow.ingest import InputFile, plan_inputs
from selectflow.preflight import check_docs_budgets
from selectflow.stages.base import selector_stage
from selectflow.stages.ingest import ingest_file
from selectflow.stopping import note_signals
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options
from selectflow.tasks.stage import stage_calls
from selectflow.workspace import workspace_lock


@flow(name="curate", log_prints=True, **FLOW_OPTIONS)
def curate(config: CurateConfig) -> dict:
    """Take a raw corpus to its selected subsets, judged by probe training, with lineage and an MLflow run."""
    with workspace_lock(config.workspace), note_signals():
        return _curate(config)


def _curate(config: CurateConfig) -> dict:
    # A missing or unreadable input fails here, before anything starts (the CLI checks it even earlier).
    files = plan_inputs(config.ingest)
    held_out = {name: (cfg, plan_inputs(cfg)) for name, cfg in held_out_sets(config).items()}
    retrying = {"retries": config.retries, "retry_delay_seconds": config.retry_delay_seconds}
    with dask_runner(config.dask) as runner, RunRecorder.open(config) as recorder:
        workspace = recorder.workspace
        ingested = ingest_corpus.with_options(task_runner=runner)(workspace, files, config.ingest, **retrying)
        recorder.ingested(ingested)
        sets = submit_held_out(workspace, held_out, retrying) if config.selecting else {}  # read while dedup runs
        pool = deduplicate.with_options(task_runner=runner)(
            workspace, [shard for ref in ingested for shard in ref.shards("docs")], config.dedup, config.filters,
            **retrying)
        recorder.deduplicated(pool)
        if config.selecting:
            # A budget the deduplicated pool cannot meet fails here, in one line, before any selector starts.
            check_docs_budgets(config.selection, sum(ref.rows("docs") for ref in pool.deduped))
            sets = {name: [future.result() for future in futures] for name, futures in sets.items()}
            recorder.held_out(sets)
            clustered = cluster_pool.with_options(task_runner=runner)(
                workspace, pool.deduped, config.cluster, sets.get("reference") if config.needs_reference_clusters
                else None, **retrying)
            recorder.clustered(clustered)
            selection = select_subset.with_options(task_runner=runner)(
                workspace, pool.deduped, config.selection, clustered, sets.get("reference"),
                config.influence if config.needs_influence else None, sets.get("unseen", []), config.probe)
            recorder.selected(selection)
            if config.needs_probes:
                recorder.probed(probe_subsets.with_options(task_runner=runner)(
                    workspace, pool.deduped, selection.subsets, sets["reference"], sets.get("unseen", []),
                    config.probe, uniform_samples=config.risk.uniform_samples if config.risk.enabled else 0,
                    **retrying))
            if config.curriculum.enabled:
                name = config.curriculum.subset or config.selection.methods[0]
                recorder.curricula(compare_curricula.with_options(task_runner=runner)(
                    workspace, name, [selection.subsets[selector_stage(name).name]], sets["reference"],
                    sets.get("unseen", []), config.probe, config.curriculum, **retrying))
        result = recorder.finish()
    recorder.publish_to_prefect()
    if recorder.risk is not None and recorder.risk.overall == "at risk" and config.risk.fail_on_risk:
        raise SubsetAtRisk(f"risk.fail_on_risk: the selected subset is at risk. {recorder.risk.reason} "
                           f"Report: {result['report']}")
    return result


def submit_held_out(workspace: str, held_out: dict[str, tuple[IngestConfig, list[InputFile]]],
                    retrying: dict) -> dict[str, list[PrefectFuture]]:
    """The reference and unseen sets' ingest tasks, submitted to run beside dedup (nothing there depends on them)."""
    options = shard_task_options(retrying["retries"], retrying["retry_delay_seconds"])
    return {name: [task.submit(**params) for task, params in stage_calls(
        ingest_file, f"ingest-{name}", workspace, [{"file": file, "cfg": cfg} for file in planned],
        label=lambda call: f"ingest {call['file'].uri}", **options)]
        for name, (cfg, planned) in held_out.items()}


class SubsetAtRisk(RuntimeError):
    """The entropy-law risk check flagged a selected subset and the config says to fail the run."""


def held_out_sets(config: CurateConfig) -> dict[str, IngestConfig]:
    """The reference (target) set and the unseen-domain set, each read like any input (quarantine included)."""
    sets = {"reference": config.reference,
            "unseen": config.probe.unseen if config.needs_probes or config.needs_mixture or config.curriculum.enabled
            else []}
    return {name: IngestConfig(inputs=inputs) for name, inputs in sets.items() if inputs}


