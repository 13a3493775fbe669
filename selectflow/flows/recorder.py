"""A curate run's bookkeeping, in one place: the run record (lineage and resume read it), the MLflow runs (a nested
run per stage, metrics and verdicts on the parent), the summary, the report and the Prefect artifacts. What it
records of a stage follows from the stage's declaration (`selectflow.stages.registry`)."""

import contextlib
import json
import uuid
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import deployment, flow_run

from selectflow import summary
from selectflow.config import CurateConfig, ProbeConfig
from selectflow.flows.cluster import Clustered
from selectflow.flows.dedup import DedupResult
from selectflow.flows.evaluate import CurriculumRuns, ProbeRuns, assess_risk, compare_subsets
from selectflow.flows.select import Selection
from selectflow.probe.compare import BASELINE, ProbeComparison
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
from selectflow.stages.base import Stage, stage_of_name
from selectflow.stages.registry import (
    CLUSTER,
    CURRICULUM,
    CURRICULUM_PROBE,
    DEDUPED,
    EMBED,
    EXACT_DEDUP,
    INFLUENCE,
    INGEST,
    MINHASH,
    MIXTURE_FIT,
    MIXTURE_PLAN,
    MIXTURE_PROBE,
    MIXTURE_SAMPLE,
    MIXTURE_VALIDATION,
    NEAR_DEDUP,
    NGRAMS,
    PROBE,
    QUAD,
    REFERENCE_CLUSTERS,
)
from selectflow.stopping import arm_deadline, is_interruption
from selectflow.store import ArtifactRef, ArtifactStore, package_code_version
from selectflow.tracking import Tracker


class RunRecorder:
    """Opened once per run (`open`); each stage's artifacts are handed to it as the DAG produces them."""

    def __init__(self, config: CurateConfig, store: ArtifactStore, tracker: Tracker, run: RunRecord,
                 deployment_name: str):
        self.config, self.store, self.tracker, self.run = config, store, tracker, run
        self.deployment = deployment_name
        self.subsets: dict[str, ArtifactRef] = {}
        self.comparison: ProbeComparison | None = None
        self.risk: Risk | None = None

    @classmethod
    @contextlib.contextmanager
    def open(cls, config: CurateConfig):
        """The run record and the parent MLflow run, kept alive (heartbeat) and closed as completed, failed or
        interrupted; runs a previous process left running are marked killed first."""
        store = ArtifactStore(config.workspace / "store")
        store.clean_tmp()
        tracker = Tracker(config.tracking, config.workspace)
        tracker.mark_killed([run.mlflow_run_id for run in record_interrupted(store) if run.mlflow_run_id])
        run = RunRecord(run_id=flow_run.get_id() or uuid.uuid4().hex, flow_run_id=flow_run.get_id(),
                        config=config.model_dump(mode="json"))
        name = deployment.get_name() or "local"
        tags = {"prefect.flow_run_id": str(run.flow_run_id), "selectflow.code_version": package_code_version(),
                "selectflow.deployment": name}
        with tracker.run(config.run_name or flow_run.get_name(), tags, run.config) as mlflow_run, \
                heartbeat(store, run), _recorded(run, store):
            run.mlflow_run_id = mlflow_run.info.run_id
            run.save(store)
            yield cls(config, store, tracker, run, name)

    @property
    def workspace(self) -> str:
        return str(self.store.root)

    def stage(self, stage: Stage | str, refs: list[ArtifactRef], params: dict | None = None,
              metrics: dict | None = None, logged: list[ArtifactRef] = ()) -> None:
        """Add a stage's artifacts to the run record; with params, also a nested MLflow run for it."""
        name = stage if isinstance(stage, str) else stage.name
        self.run.add(name, refs)
        self.run.save(self.store)
        if params is not None:
            self.tracker.stage(name, [*refs, *logged], params, _numbers(metrics or refs[0].manifest()["stats"]))

    def ingested(self, refs: list[ArtifactRef]) -> None:
        self.stage(INGEST, refs, self.config.ingest.model_dump(mode="json"), summary.ingest_metrics(refs))

    def deduplicated(self, dedup: DedupResult) -> None:
        options = {options.method: options for options in self.config.filters}
        for name, refs in dedup.filtered.items():
            stage = stage_of_name(name)
            self.stage(stage, refs, options[stage.method].model_dump(), summary.counts(refs))
        self.stage(EXACT_DEDUP, [dedup.exact], self.config.dedup.exact.model_dump())
        self.stage(MINHASH, dedup.signatures)
        self.stage(NEAR_DEDUP, [dedup.near], self.config.dedup.near.model_dump(), logged=dedup.signatures)
        self.stage(DEDUPED, dedup.deduped)

    def held_out(self, sets: dict[str, list[ArtifactRef]]) -> None:
        for name, refs in sets.items():
            self.stage(f"{name}_set", refs)

    def clustered(self, clustered: Clustered) -> None:
        self.stage(EMBED, clustered.embeddings)
        self.stage(CLUSTER, [clustered.clusters], self.config.cluster.model_dump(), logged=clustered.embeddings)
        if clustered.reference is not None:
            self.stage(REFERENCE_CLUSTERS, [clustered.reference])

    def selected(self, selection: Selection) -> None:
        if selection.influence is not None:
            self.stage(INFLUENCE, [selection.influence], self.config.influence.model_dump())
        if selection.ngrams:
            self.stage(NGRAMS, selection.ngrams)
        if (search := selection.mixture) is not None:
            for stage, refs in ((MIXTURE_PLAN, [search.plan]), (MIXTURE_SAMPLE, search.samples),
                                (MIXTURE_PROBE, search.probes), (MIXTURE_FIT, [search.fit]),
                                (MIXTURE_VALIDATION, [search.validation])):
                self.stage(stage, refs)
            self._track_named_probes(search.probes)
        self.subsets = selection.subsets
        options = {selector.method: selector for selector in self.config.selection.selectors}
        for stage, ref in selection.subsets.items():
            self.stage(stage, [ref])
            params = self.config.selection.budget_fields() | options[stage_of_name(stage).subset].model_dump()
            track_selection(self.tracker, stage, ref, params)

    def curricula(self, curricula: CurriculumRuns) -> None:
        """The curriculum probes and their comparison, in the run record and as nested MLflow runs."""
        self.stage(CURRICULUM_PROBE, curricula.probes)
        self.stage(CURRICULUM, [curricula.comparison])
        self._track_named_probes(curricula.probes)
        self.tracker.stage(CURRICULUM.name, [curricula.comparison], self.config.curriculum.model_dump(),
                           _numbers(curricula.comparison.manifest()["stats"]["orders"]))

    def _track_named_probes(self, refs: list[ArtifactRef]) -> None:
        """Nested MLflow runs of probes that are not a subset's (mixture search, curricula), by name and seed."""
        for ref in refs:
            probed = ref.manifest()["stats"]
            track_probe(self.tracker, f"{probed['name']} seed {probed['seed']}".replace(" ", "_"), ref,
                        self.config.probe)

    def probed(self, probes: ProbeRuns) -> None:
        """The probes' artifacts and MLflow runs, their comparison over seeds, and the risk check when enabled."""
        for name, by_seed in probes.runs.items():
            self.stage(PROBE.record(name), list(by_seed.values()))
            for seed, ref in by_seed.items():
                track_probe(self.tracker, f"{name}_seed{seed}", ref, self.config.probe)
        self.comparison = compare_subsets(probes, self.config.probe)
        log_probe_results(self.tracker, probes, self.comparison)
        if self.config.risk.enabled:
            self.risk = judge_risk(self.config, self.tracker, probes, exclude_run_id=self.run.mlflow_run_id,
                                   deployment=self.deployment)

    def finish(self) -> dict:
        """Publish the outputs, write the summary and the report, close the run as completed; its summary."""
        run = self.run
        published = {stage: summary.publish(run, stage, self.store) for stage in (DEDUPED.name, *self.subsets)}
        run.summary = summary.run_summary(run, self.store, published)
        if self.comparison is not None:
            run.summary["probes"] = summary.probe_summary(self.comparison)
        report = write_report(assemble_report(run, self.risk, self.comparison),
                              Path(run.summary[DEDUPED.name]).parent / "report.html")
        run.summary["report"] = str(report)
        if self.risk is not None:
            run.summary["risk"] = {"verdict": self.risk.overall, "reason": self.risk.reason}
        run.finish(self.store, "completed")
        self.tracker.log_summary(summary.summary_metrics(run.summary), {"summary.json": run.summary}, files=[report])
        return run.summary

    def publish_to_prefect(self) -> None:
        """The summary and a link to the report as Prefect artifacts of the flow run."""
        create_markdown_artifact(summary.markdown(self.run.summary), key="curate-summary",
                                 description="selectflow run summary")
        report = Path(self.run.summary["report"])
        create_link_artifact(report.as_uri(), link_text=f"run report ({report.name})", key="curate-report",
                             description="Self-contained HTML report: funnel, clusters, bandit, ZIP, probes, risk")


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
    tags = {f"probe.{name}.verdict": text for name, text in comparison.verdicts.items()}
    if (recommendation := comparison.recommendation) is not None:
        tags |= {"probe.recommended": recommendation.subset or BASELINE,
                 "probe.recommendation": recommendation.sentence}
    tracker.log_summary(metrics, tags=tags)


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


def log_risk(tracker: Tracker, assessed: list[SubsetAssessment], overall: str) -> None:
    """Each selected subset's verdict as a metric and a tag of the parent run, the overall one as a tag too."""
    metrics, tags = {}, {"risk.verdict": overall}
    for item in assessed:
        subset_metrics, subset_tags = verdict_metrics(item.subset, item.verdict)
        metrics |= subset_metrics
        tags |= subset_tags
    tracker.log_summary(metrics, tags=tags)


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
