"""The report's input model: what one run shows, as plain JSON-able pydantic models.

Every section is optional; `report.assemble` fills what a run produced (a run with selector 'zip' has no bandit, a
first run has no history). `RunReport.model_validate_json(...)` / `.model_dump_json()` round-trip it, so the
model can be written next to the run's artifacts and re-rendered later.

Subset names are free text ("zip", "quad", "random", "topk", ...) and key every per-subset field; the
report gives each subset one colour across all plots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Verdict = Literal["ok", "at risk", "insufficient history"]


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


class CurvePoint(_Model):
    step: int = Field(..., ge=0)
    tokens: int = Field(..., ge=0, description="Training tokens seen so far.")
    train_loss: float = Field(..., description="Training loss (nats/token) of the batch at this step.")
    train_bpb: float | None = Field(None, description="Training loss in bits per byte.")


class HeldoutPoint(_Model):
    step: int = Field(..., ge=0)
    set: str = Field(..., description="Held-out set name (e.g. 'reference', 'pool').")
    loss: float = Field(..., description="Held-out loss (nats/token).")


class ProbeSummary(_Model):
    first_epoch_loss: float | None = Field(None, description="L of the Entropy Law: mean first-epoch train loss.")
    prequential_bpb: float | None = Field(None, description="Prequential code length, bits per byte.")
    final_heldout: dict[str, float] = Field({}, description="Held-out set -> final loss.")
    steps_to_heldout_level: int | None = Field(None, description="Steps to reach the target held-out level.")


class ProbeResult(_Model):
    curve: list[CurvePoint] = []
    heldout: list[HeldoutPoint] = []
    summary: ProbeSummary = Field(default_factory=ProbeSummary)


class SubsetRisk(_Model):
    R_zlib: float | None = None
    R_zstd: float | None = None
    L: float | None = Field(None, description="First-epoch training loss of the probe on this subset.")


class RiskCheck(_Model):
    name: str = Field(..., description="e.g. 'vs random', 'vs history'.")
    subset: str | None = None
    verdict: Verdict
    detail: str = ""


class HistoryPoint(_Model):
    run_id: str
    R: float
    L: float
    heldout_loss: float | None = None
    predicted_heldout: float | None = Field(None, description="The fit's prediction for that run, if known.")


class RiskFit(_Model):
    """A fit of held-out loss on R and L over the history.

    `coefficients` names its terms; when they are exactly {intercept, R, L} the fit is linear and the
    scatter draws its iso-loss lines.
    """

    coefficients: dict[str, float]
    predicted_heldout: float | None = Field(None, description="Predicted held-out loss of this run.")
    interval: tuple[float, float] | None = Field(None, description="Prediction interval of this run (low, high).")
    level: float = Field(0.9, gt=0, lt=1, description="Coverage of the interval.")
    n_runs: int | None = Field(None, ge=0, description="Runs the fit used.")


class Risk(_Model):
    overall: Verdict
    reason: str = ""
    ratio_name: str = Field("R_zstd", description="Which ratio the history and the fit use (R_zlib or R_zstd).")
    subsets: dict[str, SubsetRisk] = {}
    checks: list[RiskCheck] = []
    history: list[HistoryPoint] = []
    fit: RiskFit | None = None
    min_history: int | None = Field(None, ge=0, description="Runs the fit needs (shown when there are fewer).")


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
    probes: dict[str, ProbeResult] = Field({}, description="subset -> probe training result.")
    risk: Risk | None = None

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
        found += list(self.probes)
        if self.risk:
            found += list(self.risk.subsets) + [c.subset for c in self.risk.checks if c.subset]
        for name in found:
            if name not in names:
                names.append(name)
        return names
