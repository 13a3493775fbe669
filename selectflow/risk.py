"""Entropy-law risk check: does a selected subset look like one a model will do worse on?

The Entropy Law (Yin et al. 2024) finds that model performance falls as the compression ratio R of the training
data rises (more redundancy, less information), and that a first-epoch training loss L lower than expected means
the model finds the data easy (it "already knows" it). No formula or threshold is published; this module's rules:

1. Against the random subset of the same size (`check_against_reference`): the candidate is **at risk** when its
   R is higher (R > R_random * (1 + ratio_tolerance)) AND its L is lower (L < L_random - loss_tolerance) than the
   random subset's; otherwise **ok**. Without a random subset: **insufficient history**.
2. Against the history of this deployment (`check_against_history`): once at least `min_history` earlier
   (R, L, held-out loss) points exist, fit held-out loss ~ a + b*R + c*L by least squares and predict the
   candidate's held-out loss with a t-distribution prediction interval at `interval_level`. The baseline is the
   same fit's prediction for this run's random subset when given, else the median held-out loss of the history.
   The candidate is **at risk** when the baseline lies below its whole prediction interval (its predicted loss is
   worse than the baseline by more than the interval's half-width), **ok** otherwise. Fewer points, or a history
   whose R and L do not vary independently (rank-deficient fit), give **insufficient history**.
3. `combine`: at risk if either check says so; ok if at least one says ok; else insufficient history.

Every point of the history is a (subset, run) pair: all probed subsets of a run (zip, quad, random, full, ...) are
observations of the same law. They are logged on the flow's parent MLflow run as `probe.<subset>.<metric>` (see
`probe_metrics`), and each verdict as `risk.<subset>.at_risk` (1 at risk, 0 ok, -1 insufficient history) plus a tag
`risk.<subset>.verdict`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

from selectflow.config import RiskConfig

Verdict = Literal["ok", "at risk", "insufficient history"]
OK: Verdict = "ok"
AT_RISK: Verdict = "at risk"
INSUFFICIENT: Verdict = "insufficient history"
VERDICT_CODES = {AT_RISK: 1.0, OK: 0.0, INSUFFICIENT: -1.0}
_METRIC_KEY = re.compile(r"^probe\.(?P<subset>[^.]+)\.(?P<metric>[A-Za-z_]+)$")


@dataclass(frozen=True)
class RiskPoint:
    """One subset's entropy-law coordinates: compression ratio R, first-epoch loss L, and (history) held-out loss."""

    R: float
    L: float
    heldout_loss: float | None = None
    label: str = ""  # e.g. "<run id>/<subset>"


@dataclass(frozen=True)
class RiskVerdict:
    verdict: Verdict
    check: str  # "reference" | "history" | "combined"
    reason: str  # one paragraph
    numbers: dict[str, float | int | str | None] = field(default_factory=dict)

    @property
    def at_risk(self) -> bool:
        return self.verdict == AT_RISK

    def to_dict(self) -> dict:
        return asdict(self)


def point_from_stats(stats: dict, ratio: str = "zlib", label: str = "") -> RiskPoint:
    """A RiskPoint from a probe artifact's stats (R_zlib / R_zstd, first_epoch_loss, reference_loss)."""
    return RiskPoint(float(stats[f"R_{ratio}"]), float(stats["first_epoch_loss"]), stats.get("reference_loss"), label)


def check_against_reference(candidate: RiskPoint, random_same_size: RiskPoint | None, cfg: RiskConfig) -> RiskVerdict:
    """At risk when R is higher AND first-epoch loss lower than the random subset of the same size."""
    if random_same_size is None:
        return RiskVerdict(INSUFFICIENT, "reference", "No random subset of the same size was probed, so the "
                           "candidate's compression ratio and first-epoch loss have nothing to be compared with; add "
                           "'random' to selection.baselines and probe.subsets.", {"R": candidate.R, "L": candidate.L})
    reference = random_same_size
    higher_ratio = candidate.R > reference.R * (1.0 + cfg.ratio_tolerance)
    lower_loss = candidate.L < reference.L - cfg.loss_tolerance
    numbers = {"R": candidate.R, "L": candidate.L, "R_random": reference.R, "L_random": reference.L,
               "ratio_tolerance": cfg.ratio_tolerance, "loss_tolerance": cfg.loss_tolerance}
    compared = (f"The subset's compression ratio R = {candidate.R:.3f} ({cfg.ratio} ratio) against "
                f"{reference.R:.3f} for a random subset of the same size, and its first-epoch loss L = "
                f"{candidate.L:.3f} nats/token against {reference.L:.3f}.")
    if higher_ratio and lower_loss:
        return RiskVerdict(AT_RISK, "reference", f"{compared} It is both more redundant (R higher by more than "
                           f"{cfg.ratio_tolerance:.0%}) and easier to fit (L lower by more than {cfg.loss_tolerance} "
                           "nats): by the Entropy Law this is the signature of repetitive data the model learns "
                           "quickly but that carries less information, and the model trained on it is likely to do "
                           "worse than on a random sample.", numbers)
    why = []
    if not higher_ratio:
        why.append("its R is not higher than the random subset's beyond the tolerance")
    if not lower_loss:
        why.append("its L is not lower than the random subset's beyond the tolerance")
    return RiskVerdict(OK, "reference", f"{compared} No entropy-law risk: {' and '.join(why)}.", numbers)


@dataclass(frozen=True)
class HistoryFit:
    """Least-squares fit of held-out loss ~ a + b*R + c*L with what a prediction interval needs."""

    coef: np.ndarray  # [a, b, c]
    xtx_inv: np.ndarray  # (X^T X)^-1
    residual_var: float  # RSS / (n - 3)
    n: int
    r2: float

    @property
    def df(self) -> int:
        return self.n - 3

    def predict(self, R: float, L: float, level: float) -> tuple[float, float]:
        """(prediction, half-width of the `level` prediction interval for a new observation)."""
        x = np.array([1.0, R, L])
        mean = float(x @ self.coef)
        spread = math.sqrt(self.residual_var * (1.0 + float(x @ self.xtx_inv @ x)))
        return mean, float(scipy_stats.t.ppf(0.5 + level / 2.0, self.df)) * spread


def fit_history(history: list[RiskPoint]) -> HistoryFit | None:
    """The fit over points with a held-out loss; None when there are fewer than 4 or R and L are collinear."""
    points = [p for p in history if p.heldout_loss is not None and math.isfinite(p.heldout_loss)]
    if len(points) < 4:
        return None
    X = np.array([[1.0, p.R, p.L] for p in points])
    y = np.array([p.heldout_loss for p in points])
    if np.linalg.matrix_rank(X) < 3:
        return None
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    residuals = y - X @ coef
    rss = float(residuals @ residuals)
    tss = float(((y - y.mean()) ** 2).sum())
    return HistoryFit(coef, np.linalg.inv(X.T @ X), rss / (len(points) - 3), len(points),
                      1.0 - rss / tss if tss > 0 else 1.0)


def check_against_history(
    candidate: RiskPoint, history: list[RiskPoint], cfg: RiskConfig, baseline: RiskPoint | None = None
) -> RiskVerdict:
    """Predict the candidate's held-out loss from the history's fit; at risk if the baseline is below its interval."""
    usable = [p for p in history if p.heldout_loss is not None and math.isfinite(p.heldout_loss)]
    numbers: dict = {"R": candidate.R, "L": candidate.L, "history": len(usable), "min_history": cfg.min_history}
    if len(usable) < cfg.min_history:
        return RiskVerdict(INSUFFICIENT, "history", f"Only {len(usable)} earlier probe result(s) with a held-out "
                           f"loss are in this deployment's history; the fit of held-out loss against compression "
                           f"ratio and first-epoch loss needs at least {cfg.min_history} (risk.min_history), so no "
                           "prediction is made yet.", numbers)
    fit = fit_history(usable)
    if fit is None:
        return RiskVerdict(INSUFFICIENT, "history", f"The {len(usable)} earlier probe results do not vary "
                           "independently in compression ratio and first-epoch loss (the fit is rank-deficient), so "
                           "held-out loss cannot be predicted from them.", numbers)
    predicted, half_width = fit.predict(candidate.R, candidate.L, cfg.interval_level)
    if baseline is not None:
        reference_loss, _ = fit.predict(baseline.R, baseline.L, cfg.interval_level)
        baseline_name = "the fit's prediction for this run's random subset"
    else:
        reference_loss = float(np.median([p.heldout_loss for p in usable]))
        baseline_name = "the history's median held-out loss"
    a, b, c = (float(v) for v in fit.coef)
    numbers.update(a=a, b=b, c=c, r2=fit.r2, residual_sd=math.sqrt(fit.residual_var), predicted_loss=predicted,
                   interval_low=predicted - half_width, interval_high=predicted + half_width,
                   interval_level=cfg.interval_level, baseline_loss=reference_loss)
    fitted = (f"Over {fit.n} earlier probe results, held-out loss = {a:.3f} + {b:.3f}*R + {c:.3f}*L "
              f"(R^2 {fit.r2:.2f}); for R = {candidate.R:.3f} and L = {candidate.L:.3f} it predicts "
              f"{predicted:.3f} nats/token, {cfg.interval_level:.0%} prediction interval "
              f"[{predicted - half_width:.3f}, {predicted + half_width:.3f}], against {reference_loss:.3f} for "
              f"{baseline_name}.")
    if predicted - half_width > reference_loss:
        return RiskVerdict(AT_RISK, "history", f"{fitted} The whole interval lies above the baseline: a model "
                           "trained on this subset is predicted to do worse on the target set.", numbers)
    return RiskVerdict(OK, "history", f"{fitted} The baseline is within or above the interval, so the subset is "
                       "not predicted to be worse.", numbers)


def combine(*verdicts: RiskVerdict) -> RiskVerdict:
    """At risk if any check says so; ok if any says ok; insufficient history otherwise."""
    if not verdicts:
        raise ValueError("combine: give at least one verdict")
    kinds = [v.verdict for v in verdicts]
    overall = AT_RISK if AT_RISK in kinds else OK if OK in kinds else INSUFFICIENT
    numbers = {f"{v.check}.{k}": value for v in verdicts for k, value in v.numbers.items()}
    numbers.update({f"{v.check}.verdict": v.verdict for v in verdicts})
    reason = " ".join(f"[{v.check}: {v.verdict}] {v.reason}" for v in verdicts)
    return RiskVerdict(overall, "combined", reason, numbers)


@dataclass(frozen=True)
class SubsetAssessment:
    subset: str
    checks: tuple[RiskVerdict, ...]  # vs the random subset, vs the history
    verdict: RiskVerdict  # the checks combined: the one to log and act on


def check_subset(
    subset: str, candidate: RiskPoint, random_same_size: RiskPoint | None, history: list[RiskPoint], cfg: RiskConfig
) -> SubsetAssessment:
    """Both checks and the combined verdict."""
    checks = (check_against_reference(candidate, random_same_size, cfg),
              check_against_history(candidate, history, cfg, baseline=random_same_size))
    return SubsetAssessment(subset, checks, combine(*checks))


def probe_metrics(subset: str, stats: dict) -> dict[str, float]:
    """What the flow logs on its parent MLflow run for one probed subset (the history of later checks)."""
    values = {"R_zlib": stats["R_zlib"], "R_zstd": stats["R_zstd"], "first_epoch_loss": stats["first_epoch_loss"],
              "heldout_loss": stats["reference_loss"], "unseen_loss": stats.get("unseen_loss"),
              "prequential_bpb": stats.get("prequential_bpb")}
    return {f"probe.{subset}.{key}": float(value) for key, value in values.items() if value is not None}


def verdict_metrics(subset: str, verdict: RiskVerdict) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) to log for a subset's verdict: `risk.<subset>.at_risk` and tag `risk.<subset>.verdict`."""
    metrics = {f"risk.{subset}.at_risk": VERDICT_CODES[verdict.verdict]}
    prefix = "history." if verdict.check == "combined" else ""
    for key in ("predicted_loss", "interval_low", "interval_high"):
        if isinstance(value := verdict.numbers.get(prefix + key), float):
            metrics[f"risk.{subset}.{key}"] = value
    return metrics, {f"risk.{subset}.verdict": verdict.verdict}


def verdict_markdown(subset: str, verdict: RiskVerdict) -> str:
    """A Prefect markdown artifact: the verdict, the reason paragraph and the numbers."""
    rows = "\n".join(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
                     for key, value in verdict.numbers.items())
    return (f"# Entropy-law risk: {subset} is **{verdict.verdict}**\n\n{verdict.reason}\n\n"
            f"| number | value |\n|---|---|\n{rows}\n")


def history_from_mlflow(
    tracking_uri: str,
    experiment: str,
    deployment: str | None = None,
    run_name: str | None = None,
    exclude_run_id: str | None = None,
    ratio: str = "zlib",
    limit: int = 500,
) -> list[RiskPoint]:
    """Every (run, subset) point logged by earlier runs (`probe_metrics`), newest runs first.

    Filters: the `selectflow.deployment` tag of the parent run, and/or its run name; `exclude_run_id` leaves out
    the current run. Points missing R, L or held-out loss are skipped.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    clauses = []
    if deployment is not None:
        clauses.append(f"tags.`selectflow.deployment` = '{_quoted(deployment)}'")
    if run_name is not None:
        clauses.append(f"attributes.run_name = '{_quoted(run_name)}'")
    runs = client.search_runs([found.experiment_id], " and ".join(clauses), max_results=limit,
                              order_by=["attributes.start_time DESC"])
    points = []
    for run in runs:
        if run.info.run_id == exclude_run_id:
            continue
        by_subset: dict[str, dict[str, float]] = {}
        for key, value in run.data.metrics.items():
            if match := _METRIC_KEY.match(key):
                by_subset.setdefault(match["subset"], {})[match["metric"]] = value
        for subset, values in sorted(by_subset.items()):
            if all(k in values for k in (f"R_{ratio}", "first_epoch_loss", "heldout_loss")):
                points.append(RiskPoint(values[f"R_{ratio}"], values["first_epoch_loss"], values["heldout_loss"],
                                        f"{run.info.run_id}/{subset}"))
    return points


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")
