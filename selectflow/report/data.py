"""The report's input model: what one run shows, as plain JSON-able pydantic models.

Every section is optional; `report.assemble` fills what a run produced (a run with selector 'zip' has no bandit, a
first run has no history). `RunReport.model_validate_json(...)` / `.model_dump_json()` round-trip it, so the
model can be written next to the run's artifacts and re-rendered later.

Every loss is in bits per byte (bpb): comparable across tokenizers, lower is better. Probe results are over
seeds, as means with confidence intervals.

Subset names are free text ("zip", "quad", "random", "topk", ...) and key every per-subset field; the
report gives each subset one colour across all plots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Verdict = Literal["ok", "at risk", "inconclusive", "law contradicted", "insufficient history"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunnelStep(_Model):
    """Documents into and out of one stage (stages in DAG order)."""

    stage: str = Field(..., description="ingest, dedup_exact, dedup_near, cluster, select_zip, select_quad, ...")
    docs_in: int = Field(..., ge=0)
    docs_out: int = Field(..., ge=0)
    dropped: int | None = Field(None, ge=0, description="Unset: docs_in - docs_out (a selection keeps, not drops).")
    work_s: float | None = Field(None, ge=0, description="Seconds of work in the stage (not wall time of the run).")

    @model_validator(mode="after")
    def _default_dropped(self) -> FunnelStep:
        if self.dropped is None:
            self.dropped = max(self.docs_in - self.docs_out, 0)
        return self


class ClusterComposition(_Model):
    """Cluster sizes in the pool and in each subset."""

    pool: dict[int, int] = Field(..., description="cluster id -> documents in the deduplicated pool.")
    labels: dict[int, str] = Field({}, description="cluster id -> short label (e.g. its most common domain).")
    subsets: dict[str, dict[int, int]] = Field({}, description="subset -> cluster id -> documents selected.")


class DomainComposition(_Model):
    """Documents per domain in the pool and in each subset."""

    pool: dict[str, int] = Field({}, description="domain -> documents in the deduplicated pool.")
    subsets: dict[str, dict[str, int]] = Field({}, description="subset -> domain -> documents selected.")


class BanditRound(_Model):
    """One bandit round: the pulled clusters with their reward and score (aligned lists)."""

    round: int = Field(..., ge=0)
    pulled: list[int] = Field(..., description="Cluster ids pulled this round.")
    rewards: list[float] = Field(..., description="Reward of each pulled cluster (mean influence - threshold).")
    scores: list[float] = Field([], description="UCB score (or EXP3 probability) of each pulled cluster.")
    selected_docs: int = Field(..., ge=0, description="Documents selected so far, after this round.")

    @model_validator(mode="after")
    def _aligned(self) -> BanditRound:
        if len(self.rewards) != len(self.pulled) or (self.scores and len(self.scores) != len(self.pulled)):
            raise ValueError(
                f"bandit round {self.round}: pulled ({len(self.pulled)}), rewards ({len(self.rewards)}) and scores "
                f"({len(self.scores)}) must be aligned lists of the same length (scores may be empty)"
            )
        return self


class Bandit(_Model):
    subset: str = Field("quad", description="The subset the bandit selected.")
    kind: Literal["ucb", "exp3"] = "ucb"
    rounds: list[BanditRound] = Field(..., min_length=1)


class ZipRound(_Model):
    """One ZIP round, as in `selectflow.select.zip` result.rounds."""

    model_config = ConfigDict(extra="ignore")  # the ZIP rounds carry timings and stage sizes too

    round: int = Field(..., ge=0)
    n_selected: int = Field(..., ge=0)
    selected_ratio: float = Field(..., description="Compression ratio of the selected set so far.")
    pool_left: int = Field(..., ge=0)


class Zip(_Model):
    subset: str = "zip"
    rounds: list[ZipRound] = Field(..., min_length=1)


class Estimate(_Model):
    """A mean over seeds with its t confidence interval (low = high = None from a single seed)."""

    mean: float
    low: float | None = None
    high: float | None = None
    n: int = Field(1, ge=1, description="Seeds the mean is over.")

    @model_validator(mode="after")
    def _both_bounds(self) -> Estimate:
        if (self.low is None) != (self.high is None):
            raise ValueError(f"estimate {self.mean}: give both interval bounds (low, high) or neither")
        return self


class BandPoint(Estimate):
    """One step of a curve over seeds: the mean and its confidence interval at that step."""

    step: int = Field(..., ge=0)


class ProbeSummary(_Model):
    """One subset's probe results over seeds (every loss in bits per byte, lower is better)."""

    epochs: float | None = Field(None, gt=0, description="Passes over the subset's unique tokens (1 = no token "
                                 "repeated); the largest over seeds. Subsets repeated differently are not compared.")
    reference_bpb: Estimate | None = Field(None, description="Final held-out bpb on the reference (target) set.")
    unseen_bpb: Estimate | None = Field(None, description="Final held-out bpb on the unseen-domain set.")
    prequential_bpb: Estimate | None = Field(
        None, description="L of the Entropy Law: the first-epoch training loss in bpb (= prequential code length).")
    speed: str | None = Field(None, description="Steps to the shared reference level: the interval over seeds, or "
                              "'not reached (k of n seeds)'.")


class ProbeResult(_Model):
    """One subset's probes, one per seed, summarized over the seeds."""

    seeds: list[int] = Field([], description="The seeds this subset was probed with.")
    train: list[BandPoint] = Field([], description="Training bpb over seeds (consecutive steps averaged in bins).")
    heldout: dict[str, list[BandPoint]] = Field(
        {}, description="Held-out set ('reference', 'unseen') -> bpb at each evaluated step, over seeds.")
    summary: ProbeSummary = Field(default_factory=ProbeSummary)
    verdict: str | None = Field(None, description="One sentence: this subset vs the baseline on the reference set.")


Comparison = Literal["better", "worse", "indistinguishable", "not comparable"]


class ProbeDifference(_Model):
    """A subset's paired difference vs the baseline on one metric (subset - baseline, bpb; negative = better)."""

    subset: str
    metric: str = Field(..., description="reference_bpb, unseen_bpb or prequential_bpb.")
    mean: float | None = Field(None, description="Mean paired difference; None when the comparison is refused.")
    low: float | None = None
    high: float | None = None
    verdict: Comparison
    sentence: str = ""
    seeds_to_decide: int | None = Field(None, ge=2, description="Seeds that would decide a difference this large.")

    @model_validator(mode="after")
    def _numbers_unless_refused(self) -> ProbeDifference:
        if self.verdict != "not comparable" and self.mean is None:
            raise ValueError(f"difference {self.subset}/{self.metric}: verdict {self.verdict!r} needs a mean")
        return self


class Probes(_Model):
    """The probe section: each subset's results over seeds and its paired differences vs the baseline."""

    budget_tokens: int | None = Field(None, ge=0, description="Training tokens of every probe (equal budgets).")
    seeds: list[int] = Field([], description="Paired seeds: every subset trains once per seed.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of every confidence interval (t over seeds).")
    baseline: str = Field("random", description="The subset every difference is taken against.")
    speed_level: float | None = Field(None, description="Reference bpb level the learning speed counts steps to.")
    subsets: dict[str, ProbeResult] = Field({}, description="subset -> its probes over seeds.")
    differences: list[ProbeDifference] = []
    notes: list[str] = Field([], description="Caveats of the comparison (budgets lowered, no baseline, ...).")
    recommended: str | None = Field(None, description="The selector's subset to train on; None: none beats the "
                                    "baseline (or it was not probed).")
    recommendation: str | None = Field(None, description="Why: the recommended subset's difference vs the baseline "
                                       "with its interval, or that no selector beats it.")

    def difference(self, subset: str, metric: str) -> ProbeDifference | None:
        return next((d for d in self.differences if d.subset == subset and d.metric == metric), None)


class SubsetRisk(_Model):
    R_zlib: float | None = None
    R_zstd: float | None = None
    L: float | None = Field(None, description="First-epoch training loss in bpb (mean over seeds).")
    heldout_bpb: float | None = Field(None, description="Final reference held-out bpb (mean over seeds).")


class RiskCheck(_Model):
    name: str = Field(..., description="e.g. 'vs reference', 'vs history'.")
    subset: str | None = None
    verdict: Verdict
    detail: str = ""


class HistoryPoint(_Model):
    run_id: str
    R: float
    L: float = Field(..., description="First-epoch training loss in bpb.")
    heldout_bpb: float | None = Field(None, description="Reference held-out bpb.")
    predicted_heldout: float | None = Field(None, description="The fit's prediction for that run, if known.")


class RiskFit(_Model):
    """A fit of held-out bpb on R and L over the history.

    `coefficients` names its terms; when they are exactly {intercept, R, L} the fit is linear and the
    scatter draws its line at the history's mean L.
    """

    coefficients: dict[str, float]
    predicted_heldout: float | None = Field(None, description="Predicted held-out bpb of this run.")
    interval: tuple[float, float] | None = Field(None, description="Prediction interval of this run (low, high).")
    level: float = Field(0.9, gt=0, lt=1, description="Coverage of the intervals.")
    n_runs: int | None = Field(None, ge=0, description="Runs the fit used.")
    R_interval: tuple[float, float] | None = Field(
        None, description="Interval of R's coefficient at `level` (its sign: the law's direction in this history).")
    direction: str = Field("", description="The sign statement, e.g. '... which contradicts the Entropy Law's "
                           "direction (higher R, worse)'.")

    @property
    def sign(self) -> str | None:
        """How R's coefficient relates to the Entropy Law (higher R, higher held-out bpb), or None without interval."""
        if self.R_interval is None:
            return None
        low, high = self.R_interval
        return ("contradicts the Entropy Law" if high < 0 else "agrees with the Entropy Law" if low > 0
                else "neither confirms nor contradicts the Entropy Law")


class Risk(_Model):
    overall: Verdict
    reason: str = ""
    ratio_name: str = Field("R_zstd", description="Which ratio the history and the fit use (R_zlib or R_zstd).")
    subsets: dict[str, SubsetRisk] = {}
    checks: list[RiskCheck] = []
    history: list[HistoryPoint] = []
    fit: RiskFit | None = None
    min_history: int | None = Field(None, ge=0, description="Runs the fit needs (shown when there are fewer).")


class MixtureTrial(_Model):
    """One probed mixture of the search: its weights, measured held-out bpb and the cross-validated prediction."""

    weights: list[float]
    measured: float
    predicted: float


class Mixture(_Model):
    """The mixture search: components, natural and proposed weights, the fit and the validation."""

    components: list[str]
    natural: list[float]
    weights: list[float]
    target: str = "reference"
    trials: list[MixtureTrial] = []
    spearman_cv: float | None = None
    predicted: float | None = None
    predicted_natural: float | None = None
    preferred: bool = True
    differences: dict[str, Estimate] = Field({}, description="proposed - natural / uniform on the target metric.")
    verdict: str = ""


class Curriculum(_Model):
    """One subset trained in several orders: mean held-out curve per order, area vs shuffled, the verdict."""

    subset: str
    curves: dict[str, list[BandPoint]] = Field(..., description="order -> reference bpb over seeds per step.")
    vs_shuffled: dict[str, Estimate] = Field({}, description="order -> area under the curve minus shuffled's.")
    confidence: float = 0.95
    verdict: str = ""


class RunReport(_Model):
    run_id: str
    created_at: datetime | None = None
    run_name: str | None = None
    code_version: str | None = None
    config: dict[str, str | int | float | bool | None] = Field(
        {}, description="A small config summary: selector, budgets, k, model names ... (shown as a table)."
    )
    subsets: list[str] = Field([], description="Subset order (and colour order). Unset: order of appearance.")
    funnel: list[FunnelStep] = []
    clusters: ClusterComposition | None = None
    domains: DomainComposition | None = None
    bandit: Bandit | None = None
    zip: Zip | None = None
    probes: Probes | None = None
    risk: Risk | None = None
    mixture: Mixture | None = None
    curriculum: Curriculum | None = None

    def subset_names(self) -> list[str]:
        """Every subset the report mentions: `subsets` first, then in order of appearance."""
        names = list(self.subsets)
        found: list[str] = []
        if self.clusters:
            found += list(self.clusters.subsets)
        if self.domains:
            found += list(self.domains.subsets)
        if self.bandit:
            found.append(self.bandit.subset)
        if self.zip:
            found.append(self.zip.subset)
        if self.probes:
            found += list(self.probes.subsets)
        if self.risk:
            found += list(self.risk.subsets) + [c.subset for c in self.risk.checks if c.subset]
        for name in found:
            if name not in names:
                names.append(name)
        return names
