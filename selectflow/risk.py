"""Entropy-law risk check: does a selected subset look like one a model will do worse on?

The Entropy Law (Yin et al. 2024) finds that model performance falls as the compression ratio R of the training
data rises (more redundancy, less information), and that a first-epoch training loss L lower than expected means
the model finds the data easy (it "already knows" it). No formula or threshold is published; this module's rules,
with every tolerance derived from the run's own seed noise (`selectflow.probe.compare`):

1. Against the random subset (`check_against_reference`). R is the compression ratio of the whole subset
   (deterministic); L is the probes' first-epoch loss in bits per byte (= prequential code length), one value per
   seed. R counts as higher when R - R_random exceeds the noise of R between uniform samples of the pool
   (`risk.uniform_samples` seeded samples at the probe budget: t * sd * sqrt(2)); L counts as lower when the
   paired interval of L - L_random lies below 0. Both: **at risk**. R higher and L lower in the mean but its
   interval reaching 0: **inconclusive**, with the seeds that would decide it. Otherwise **ok**. When this deployment's history contradicts the law's direction
   (the fit's coefficient of R is negative with an interval excluding 0), the rule is not applied: **law
   contradicted**, and the verdict says what the history shows.
2. Against the history of this deployment (`check_against_history`): once at least `min_history` earlier
   (R, L, held-out bpb) points exist, fit held-out bpb ~ a + b*R + c*L by least squares and predict the
   candidate's with a t prediction interval at `interval_level`. The baseline is the same fit's prediction for this
   run's random subset. **At risk** when the baseline lies below the candidate's whole interval, **ok** otherwise;
   fewer points or collinear R and L: **insufficient history**.
3. `combine`: at risk if any check says so; else ok, inconclusive, law contradicted, insufficient history, in that
   order of precedence.

Every point of the history is a (subset, run) pair: all probed subsets of a run are observations of one law. They
are logged on the flow's parent MLflow run as `probe.<subset>.<metric>` (see `probe_metrics`; seed means), and each
verdict as `risk.<subset>.at_risk` (1 at risk, 0 ok, -1 otherwise) plus a tag `risk.<subset>.verdict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

from selectflow.config import RiskConfig
from selectflow.probe.compare import seeds_to_decide, t_interval

Verdict = Literal["ok", "at risk", "inconclusive", "law contradicted", "insufficient history"]
OK: Verdict = "ok"
AT_RISK: Verdict = "at risk"
INCONCLUSIVE: Verdict = "inconclusive"
CONTRADICTED: Verdict = "law contradicted"
INSUFFICIENT: Verdict = "insufficient history"
PRECEDENCE = (AT_RISK, OK, INCONCLUSIVE, CONTRADICTED, INSUFFICIENT)
VERDICT_CODES = {AT_RISK: 1.0, OK: 0.0, INCONCLUSIVE: -1.0, CONTRADICTED: -1.0, INSUFFICIENT: -1.0}
_METRIC_KEY = re.compile(r"^probe\.(?P<subset>[^.]+)\.(?P<metric>[A-Za-z_]+)$")


@dataclass(frozen=True)
class RiskPoint:
    """One subset's entropy-law coordinates: compression ratio R, first-epoch bpb L, and (history) held-out bpb."""

    R: float
    L: float
    heldout_bpb: float | None = None
    label: str = ""  # e.g. "<run id>/<subset>"


@dataclass(frozen=True)
class SubsetEvidence:
    """What the check against random needs of one subset: its R and its per-seed first-epoch bpb."""

    R: float
    L: Mapping[int, float]  # seed -> first-epoch bits per byte

    def point(self, label: str = "") -> RiskPoint:
        return RiskPoint(self.R, float(np.mean(list(self.L.values()))), None, label)


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


@dataclass(frozen=True)
class LawDirection:
    """The sign of R's coefficient in this deployment's history fit, with its interval."""

    b: float
    low: float
    high: float
    n: int

    @property
    def contradicted(self) -> bool:
        return self.high < 0

    @property
    def text(self) -> str:
        sign = "contradicts" if self.contradicted else "agrees with" if self.low > 0 else "neither confirms nor contradicts"
        return (f"over {self.n} earlier points, held-out bpb changes by {self.b:+.3f} [{self.low:+.3f}, {self.high:+.3f}] "
                f"per unit of R, which {sign} the Entropy Law's direction (higher R, worse)")


def r_tolerance(uniform_R: list[float], confidence: float) -> float | None:
    """How much R differs between two uniform samples of the pool by chance (t * sd * sqrt 2), from the R of
    several seeded uniform samples; None with fewer than 2."""
    if len(uniform_R) < 2:
        return None
    t = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(uniform_R) - 1))
    return t * float(np.std(uniform_R, ddof=1)) * math.sqrt(2.0)


def check_against_reference(
    candidate: SubsetEvidence, random: SubsetEvidence | None, cfg: RiskConfig, confidence: float = 0.95,
    tolerance_R: float | None = None, law: LawDirection | None = None,
) -> RiskVerdict:
    """At risk when R is higher than the random subset's beyond sampling noise AND L is lower (paired interval)."""
    if random is None:
        return RiskVerdict(INSUFFICIENT, "reference", "No random subset was probed, so the candidate's compression "
                           "ratio and first-epoch loss have nothing to be compared with; add 'random' to "
                           "selection.selectors and probe.subsets.", {"R": candidate.R})
    seeds = sorted(set(candidate.L) & set(random.L))
    dL = t_interval([candidate.L[s] - random.L[s] for s in seeds], confidence)
    dR = candidate.R - random.R
    tol = tolerance_R or 0.0
    numbers = {"R": candidate.R, "R_random": random.R, "dR": dR, "R_tolerance": tolerance_R, "dL": dL.mean,
               "dL_low": dL.low, "dL_high": dL.high, "seeds": len(seeds), "confidence": confidence}
    tol_text = (f"two uniform samples of the pool differ by up to {tol:.3f} by chance" if tolerance_R is not None
                else "no uniform-sample noise of R was measured: set risk.uniform_samples to 2 or more")
    compared = (f"R = {candidate.R:.3f} vs {random.R:.3f} for random ({cfg.ratio}; {dR:+.3f}, {tol_text}); "
                f"first-epoch loss L minus random's: {dL.text()} bits/byte over {len(seeds)} paired seeds.")
    if law is not None and law.contradicted:
        numbers |= {"law_b": law.b, "law_b_low": law.low, "law_b_high": law.high}
        return RiskVerdict(CONTRADICTED, "reference", f"{compared} Not applied: {law.text}.", numbers)
    higher_R = dR > tol
    lower_L = dL.excludes_zero() and dL.mean < 0
    if higher_R and lower_L:
        return RiskVerdict(AT_RISK, "reference", f"{compared} More redundant and easier to fit than random, both "
                           "beyond their noise: by the Entropy Law, repetitive data the model learns quickly but that "
                           "carries less information; a model trained on it is likely to do worse.", numbers)
    if higher_R and dL.mean < 0:
        needed = seeds_to_decide(dL, confidence)
        more = f" About {needed} seeds (probe.seeds) would decide it." if needed else " Use probe.seeds >= 2."
        return RiskVerdict(INCONCLUSIVE, "reference", f"{compared} More redundant than random, and L is lower in "
                           f"the mean but within seed noise: inconclusive at this budget.{more}", numbers)
    why = []
    if not higher_R:
        why.append("its R is not higher than random's beyond sampling noise")
    if not lower_L:
        why.append("its L is not lower than random's beyond seed noise")
    return RiskVerdict(OK, "reference", f"{compared} No entropy-law risk: {' and '.join(why)}.", numbers)


@dataclass(frozen=True)
class HistoryFit:
    """Least-squares fit of held-out bpb ~ a + b*R + c*L with what a prediction interval needs."""

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

    def direction(self, level: float) -> LawDirection | None:
        """R's coefficient with its `level` interval (None without residual degrees of freedom)."""
        if self.df < 1:
            return None
        half = float(scipy_stats.t.ppf(0.5 + level / 2.0, self.df)) * math.sqrt(self.residual_var * self.xtx_inv[1, 1])
        b = float(self.coef[1])
        return LawDirection(b, b - half, b + half, self.n)


def fit_history(history: list[RiskPoint]) -> HistoryFit | None:
    """The fit over points with a held-out bpb; None when there are fewer than 4 or R and L are collinear."""
    points = _usable(history)
    if len(points) < 4:
        return None
    X = np.array([[1.0, p.R, p.L] for p in points])
    y = np.array([p.heldout_bpb for p in points])
    if np.linalg.matrix_rank(X) < 3:
        return None
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    residuals = y - X @ coef
    rss = float(residuals @ residuals)
    tss = float(((y - y.mean()) ** 2).sum())
    return HistoryFit(coef, np.linalg.inv(X.T @ X), rss / (len(points) - 3), len(points),
                      1.0 - rss / tss if tss > 0 else 1.0)


def _usable(history: list[RiskPoint]) -> list[RiskPoint]:
    return [p for p in history if p.heldout_bpb is not None and math.isfinite(p.heldout_bpb)]


def law_direction(history: list[RiskPoint], cfg: RiskConfig) -> LawDirection | None:
    """The history's verdict on the law's direction, once the history is long enough to fit."""
    fit = fit_history(history) if len(_usable(history)) >= cfg.min_history else None
    return fit.direction(cfg.interval_level) if fit is not None else None


def check_against_history(
    candidate: RiskPoint, history: list[RiskPoint], cfg: RiskConfig, baseline: RiskPoint | None = None
) -> RiskVerdict:
    """Predict the candidate's held-out bpb from the history's fit; at risk if the baseline is below its interval."""
    usable = _usable(history)
    numbers: dict = {"R": candidate.R, "L": candidate.L, "history": len(usable), "min_history": cfg.min_history}
    if len(usable) < cfg.min_history:
        return RiskVerdict(INSUFFICIENT, "history", f"Only {len(usable)} earlier probe result(s) with a held-out "
                           f"bpb are in this deployment's history; the fit of held-out bpb against compression "
                           f"ratio and first-epoch loss needs at least {cfg.min_history} (risk.min_history), so no "
                           "prediction is made yet.", numbers)
    fit = fit_history(usable)
    if fit is None:
        return RiskVerdict(INSUFFICIENT, "history", f"The {len(usable)} earlier probe results do not vary "
                           "independently in compression ratio and first-epoch loss (the fit is rank-deficient), so "
                           "held-out bpb cannot be predicted from them.", numbers)
    predicted, half_width = fit.predict(candidate.R, candidate.L, cfg.interval_level)
    if baseline is not None:
        reference_loss, _ = fit.predict(baseline.R, baseline.L, cfg.interval_level)
        baseline_name = "the fit's prediction for this run's random subset"
    else:
        reference_loss = float(np.median([p.heldout_bpb for p in usable]))
        baseline_name = "the history's median held-out bpb"
    a, b, c = (float(v) for v in fit.coef)
    numbers.update(a=a, b=b, c=c, r2=fit.r2, residual_sd=math.sqrt(fit.residual_var), predicted_loss=predicted,
                   interval_low=predicted - half_width, interval_high=predicted + half_width,
                   interval_level=cfg.interval_level, baseline_loss=reference_loss)
    fitted = (f"Over {fit.n} earlier probe results, held-out bpb = {a:.3f} + {b:.3f}*R + {c:.3f}*L "
              f"(R^2 {fit.r2:.2f}); for R = {candidate.R:.3f} and L = {candidate.L:.3f} it predicts "
              f"{predicted:.3f} bits/byte, {cfg.interval_level:.0%} prediction interval "
              f"[{predicted - half_width:.3f}, {predicted + half_width:.3f}], against {reference_loss:.3f} for "
              f"{baseline_name}.")
    if (direction := fit.direction(cfg.interval_level)) is not None:
        numbers.update(b_low=direction.low, b_high=direction.high)
        fitted += f" The Entropy Law's direction: {direction.text}."
    if predicted - half_width > reference_loss:
        return RiskVerdict(AT_RISK, "history", f"{fitted} The whole interval lies above the baseline: a model "
                           "trained on this subset is predicted to do worse on the target set.", numbers)
    return RiskVerdict(OK, "history", f"{fitted} The baseline is within or above the interval, so the subset is "
                       "not predicted to be worse.", numbers)


def combine(*verdicts: RiskVerdict) -> RiskVerdict:
    """At risk if any check says so; else ok, inconclusive, law contradicted, insufficient history (precedence)."""
    if not verdicts:
        raise ValueError("combine: give at least one verdict")
    kinds = {v.verdict for v in verdicts}
    overall = next(kind for kind in PRECEDENCE if kind in kinds)
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
    subset: str, candidate: SubsetEvidence, random: SubsetEvidence | None, history: list[RiskPoint], cfg: RiskConfig,
    confidence: float = 0.95, tolerance_R: float | None = None,
) -> SubsetAssessment:
    """Both checks and the combined verdict."""
    checks = (check_against_reference(candidate, random, cfg, confidence, tolerance_R, law_direction(history, cfg)),
              check_against_history(candidate.point(subset), history, cfg,
                                    baseline=random.point("random") if random is not None else None))
    return SubsetAssessment(subset, checks, combine(*checks))


def probe_metrics(subset: str, means: Mapping[str, float | None]) -> dict[str, float]:
    """What the flow logs on its parent MLflow run for one probed subset (seed means; the history of later checks):
    R of the whole subset, L (first-epoch bpb), held-out bpb on the reference and unseen sets."""
    return {f"probe.{subset}.{key}": float(value) for key, value in means.items() if value is not None}


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
    the current run. Points missing R, L_bpb or heldout_bpb are skipped (so are runs from before bpb probes).
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
            if all(k in values for k in (f"R_{ratio}", "L_bpb", "heldout_bpb")):
                points.append(RiskPoint(values[f"R_{ratio}"], values["L_bpb"], values["heldout_bpb"],
                                        f"{run.info.run_id}/{subset}"))
    return points


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")
