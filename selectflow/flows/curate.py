"""The `curate` DAG: ingest -> exact + near dedup -> clusters -> influence -> selection (ZIP, QUAD, baselines)
-> probe training -> entropy-law risk check -> report."""

import contextlib
import json
import uuid
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import deployment, flow_run

from selectflow import summary
from selectflow.config import CurateConfig, IngestConfig, ProbeConfig
from selectflow.flows.cluster import cluster_pool
from selectflow.flows.dedup import deduplicate
from selectflow.flows.evaluate import ProbeRuns, assess_risk, compare_subsets, probe_subsets
from selectflow.flows.ingest import ingest_corpus
from selectflow.flows.runner import dask_runner
from selectflow.flows.select import select_subset
from selectflow.ingest import plan_inputs
from selectflow.preflight import check_docs_budgets
from selectflow.probe.compare import ProbeComparison
from selectflow.report import Risk, write_report
from selectflow.report.assemble import assemble_report, risk_section
from selectflow.risk import (
    SubsetAssessment,
    history_from_mlflow,
    probe_metrics,
    verdict_markdown,
    verdict_metrics,
)
from selectflow.runs import RunRecord, heartbeat, record_interrupted
from selectflow.select.quad import round_metrics
from selectflow.stages.registry import (
    CLUSTER,
    DEDUPED,
    EMBED,
    EXACT_DEDUP,
    INFLUENCE,
    INGEST,
    MINHASH,
    NEAR_DEDUP,
    PROBE,
    QUAD,
)
from selectflow.stopping import arm_deadline, is_interruption, note_signals
from selectflow.store import ArtifactRef, ArtifactStore, package_code_version
from selectflow.tasks.common import FLOW_OPTIONS
from selectflow.tracking import Tracker
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
    store = ArtifactStore(config.workspace / "store")
    store.clean_tmp()
    tracker = Tracker(config.tracking, config.workspace)
    tracker.mark_killed([run.mlflow_run_id for run in record_interrupted(store) if run.mlflow_run_id])
    run = RunRecord(
        run_id=flow_run.get_id() or uuid.uuid4().hex,
        flow_run_id=flow_run.get_id(),
        config=config.model_dump(mode="json"),
    )
    workspace = str(store.root)
    retrying = {"retries": config.retries, "retry_delay_seconds": config.retry_delay_seconds}
    tags = {"prefect.flow_run_id": str(run.flow_run_id), "selectflow.code_version": package_code_version(),
            "selectflow.deployment": deployment.get_name() or "local"}
    with tracker.run(config.run_name or flow_run.get_name(), tags, run.config) as mlflow_run, \
            dask_runner(config.dask) as task_runner, heartbeat(store, run), _recorded(run, store):
        run.mlflow_run_id = mlflow_run.info.run_id
        run.save(store)

        def record(stage: str, refs: list[ArtifactRef], params: dict | None = None, metrics: dict | None = None,
                   logged: list[ArtifactRef] = ()):
            """Add a stage's artifacts to the run record; with params, also a nested MLflow run for it."""
            run.add(stage, refs)
            run.save(store)
            if params is not None:
                tracker.stage(stage, [*refs, *logged], params, _numbers(metrics or refs[0].manifest()["stats"]))

        ingested = ingest_corpus.with_options(task_runner=task_runner)(workspace, files, config.ingest, **retrying)
        record(INGEST.name, ingested, config.ingest.model_dump(mode="json"), summary.ingest_metrics(ingested))

        shards = [shard for ref in ingested for shard in ref.shards("docs")]
        dedup = deduplicate.with_options(task_runner=task_runner)(workspace, shards, config.dedup, **retrying)
        record(EXACT_DEDUP.name, [dedup.exact], config.dedup.exact.model_dump())
        record(MINHASH.name, dedup.signatures)
        record(NEAR_DEDUP.name, [dedup.near], config.dedup.near.model_dump(), logged=dedup.signatures)
        record(DEDUPED.name, dedup.deduped)
        subsets: dict[str, ArtifactRef] = {}
        risk, comparison = None, None

        if config.selection.selector != "none":
            # A budget the deduplicated pool cannot meet fails here, in one line, before any selector starts.
            check_docs_budgets(config.selection, sum(ref.rows("docs") for ref in dedup.deduped))
            sets = {name: ingest_corpus.with_options(name=f"ingest-{name}", task_runner=task_runner)(
                workspace, planned, cfg, **retrying) for name, (cfg, planned) in held_out.items()}
            for name, refs in sets.items():
                record(f"{name}_set", refs)
            embeddings, clusters = cluster_pool.with_options(task_runner=task_runner)(
                workspace, dedup.deduped, config.cluster, **retrying)
            record(EMBED.name, embeddings)
            record(CLUSTER.name, [clusters], config.cluster.model_dump(), logged=embeddings)

            selection = select_subset.with_options(task_runner=task_runner)(
                workspace, dedup.deduped, config.selection, clusters, sets.get("reference"),
                config.influence if config.needs_influence else None)
            subsets = selection.subsets
            if selection.influence is not None:
                record(INFLUENCE.name, [selection.influence], config.influence.model_dump())
            for stage, ref in subsets.items():
                record(stage, [ref])
                track_selection(tracker, stage, ref, config.selection.model_dump())

            if config.needs_probes:
                probes = probe_subsets.with_options(task_runner=task_runner)(
                    workspace, dedup.deduped, subsets, sets["reference"], sets.get("unseen", []), config.probe,
                    uniform_samples=config.risk.uniform_samples if config.risk.enabled else 0, **retrying)
                for name, by_seed in probes.runs.items():
                    record(f"{PROBE.name}_{name}", list(by_seed.values()))
                    for seed, ref in by_seed.items():
                        track_probe(tracker, f"{name}_seed{seed}", ref, config.probe)
                comparison = compare_subsets(probes, config.probe)
                log_probe_results(tracker, probes, comparison)
                if config.risk.enabled:
                    risk = judge_risk(config, tracker, probes, exclude_run_id=run.mlflow_run_id,
                                      deployment=tags["selectflow.deployment"])

        published = {stage: summary.publish(run, stage, store) for stage in (DEDUPED.name, *subsets)}
        run.summary = summary.run_summary(run, store, published)
        if comparison is not None:
            run.summary["probes"] = summary.probe_summary(comparison)
        report = write_report(assemble_report(run, risk, comparison),
                              Path(run.summary[DEDUPED.name]).parent / "report.html")
        run.summary["report"] = str(report)
        if risk is not None:
            run.summary["risk"] = {"verdict": risk.overall, "reason": risk.reason}
        run.finish(store, "completed")
        tracker.log_summary(summary.summary_metrics(run.summary), {"summary.json": run.summary}, files=[report])
    create_markdown_artifact(summary.markdown(run.summary), key="curate-summary", description="selectflow run summary")
    create_link_artifact(report.as_uri(), link_text=f"run report ({report.name})", key="curate-report",
                         description="Self-contained HTML report: funnel, clusters, bandit, ZIP, probes, risk")
    if risk is not None and risk.overall == "at risk" and config.risk.fail_on_risk:
        raise SubsetAtRisk(f"risk.fail_on_risk: the selected subset is at risk. {risk.reason} Report: {report}")
    return run.summary


def log_probe_results(tracker: Tracker, probes: ProbeRuns, comparison: ProbeComparison) -> None:
    """On the parent run: each subset's seed means (R of the whole subset, L and held-out bits per byte: the history
    later risk checks fit on), its paired difference vs random with the interval, and its learning speed."""
    metrics = {"probe.budget_tokens": float(probes.budget), "probe.seeds": float(len(comparison.seeds))}
    for name, intervals in comparison.metrics.items():
        profile = probes.profiles.get(name, {})
        metrics |= probe_metrics(name, {
            "R_zlib": profile.get("R_zlib"), "R_zstd": profile.get("R_zstd"),
            "L_bpb": intervals["prequential_bpb"].mean,
            "heldout_bpb": intervals["reference_bpb"].mean if "reference_bpb" in intervals else None,
            "unseen_bpb": intervals["unseen_bpb"].mean if "unseen_bpb" in intervals else None,
            "epochs": comparison.epochs[name]})
        if (speed := comparison.speed.get(name)) is not None and speed.interval is not None:
            metrics[f"probe.{name}.steps_to_level"] = speed.interval.mean
    for diff in comparison.differences:
        if diff.interval is not None and diff.interval.low is not None:
            key = f"probe.{diff.subset}.vs_random.{diff.metric}"
            metrics |= {key: diff.interval.mean, f"{key}.low": diff.interval.low, f"{key}.high": diff.interval.high}
    if comparison.speed_level is not None:
        metrics["probe.speed_level_bpb"] = comparison.speed_level
    tracker.log_summary(metrics, tags={f"probe.{name}.verdict": text for name, text in comparison.verdicts.items()})


def judge_risk(config: CurateConfig, tracker: Tracker, probes: ProbeRuns, exclude_run_id: str,
               deployment: str) -> Risk:
    """The entropy-law risk check of each selected subset against the random subset and this deployment's history."""
    history = history_from_mlflow(tracker.uri, config.tracking.experiment, deployment=deployment,
                                  exclude_run_id=exclude_run_id, ratio=config.risk.ratio,
                                  limit=config.risk.history_limit)
    assessed = assess_risk(probes, history, config.risk, config.probe.confidence)
    risk = risk_section(assessed, probes, history, config.risk)
    log_risk(tracker, assessed, risk.overall)
    for item in assessed:
        create_markdown_artifact(verdict_markdown(item.subset, item.verdict), key=f"risk-{item.subset}",
                                 description=f"Entropy-law risk check of the {item.subset} subset")
    return risk


class SubsetAtRisk(RuntimeError):
    """The entropy-law risk check flagged a selected subset and the config says to fail the run."""


def log_risk(tracker: Tracker, assessed: list[SubsetAssessment], overall: str) -> None:
    """Each selected subset's verdict as a metric and a tag of the parent run, the overall one as a tag too."""
    metrics, tags = {}, {"risk.verdict": overall}
    for item in assessed:
        subset_metrics, subset_tags = verdict_metrics(item.subset, item.verdict)
        metrics |= subset_metrics
        tags |= subset_tags
    tracker.log_summary(metrics, tags=tags)


def held_out_sets(config: CurateConfig) -> dict[str, IngestConfig]:
    """The reference (target) set and the unseen-domain set, each read like any input (quarantine included)."""
    sets = {"reference": config.reference, "unseen": config.probe.unseen if config.needs_probes else []}
    return {name: IngestConfig(inputs=inputs) for name, inputs in sets.items() if inputs}


@contextlib.contextmanager
def _recorded(run: RunRecord, store: ArtifactStore):
    """A run that raises is recorded as interrupted (a signal, Ctrl-C) or failed; an interrupted one is also given a
    deadline to unwind by (see selectflow.stopping). A run killed outright is found out by the next reader."""
    try:
        yield
    except BaseException as exc:
        interrupted = is_interruption(exc)
        if interrupted:
            arm_deadline()
        run.finish(store, "interrupted" if interrupted else "failed")
        raise


def track_selection(tracker: Tracker, stage: str, selected: ArtifactRef, params: dict) -> None:
    """A selector's nested MLflow run: its stats as metrics, its rounds as series, the selected ids."""
    metrics = _numbers(selected.manifest()["stats"])
    rounds_file = Path(selected.path) / "rounds.json"
    rounds = json.loads(rounds_file.read_text()) if rounds_file.is_file() else []
    ids = "\n".join(selected.read("docs", columns=["doc_id"])["doc_id"].to_pylist()) + "\n"
    texts = {"selected_ids.txt": ids} | ({"rounds.json": rounds_file.read_text()} if rounds else {})
    per_round = round_metrics if stage == QUAD.name else _numbers  # QUAD's rounds hold per-arm lists
    tracker.stage(stage, [selected], params, metrics, series=[per_round(r) for r in rounds], texts=texts)


def track_probe(tracker: Tracker, name: str, probe: ArtifactRef, cfg: ProbeConfig) -> None:
    """A probe's nested MLflow run: its metrics, and its loss curve at the evaluated steps as series (the whole
    curve is in the artifact and the report)."""
    curve = [row for row in probe.read("curve").to_pylist() if row.get("reference_bpb") is not None]
    tracker.stage(f"{PROBE.name}_{name}", [probe], cfg.model_dump(mode="json"), _numbers(probe.manifest()["stats"]),
                  series=[_numbers(row) for row in curve])


def _numbers(values: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested stats, with dotted names (lists and strings are left to the attached files)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out
