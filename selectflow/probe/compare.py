"""Comparing subsets by their probes: means with confidence intervals over seeds, paired differences vs random,
and verdicts that only claim a difference the seeds support.

Every subset is probed once per seed with the same model init and the same held-out blocks, so the seed-to-seed
noise common to all subsets cancels in a paired difference d_s = metric(subset, seed s) - metric(random, seed s).
Intervals are Student-t over seeds at `confidence`. All metrics are bits per byte: lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as scipy_stats

from selectflow.probe.metrics import speed_level, steps_to_level

BASELINE = "random"
COMPARED_METRICS = ("reference_bpb", "unseen_bpb", "prequential_bpb")
METRIC_LABELS = {"reference_bpb": "reference held-out", "unseen_bpb": "unseen-domain held-out",
                 "prequential_bpb": "first-epoch (prequential)"}


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with its t confidence interval (low = high = None with fewer than 2 seeds)."""

    mean: float
    low: float | None
    high: float | None
    sd: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        if self.low is None:
            return f"{self.mean:.{digits}f} (1 seed, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def t_interval(values: Sequence[float], confidence: float) -> Interval:
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(values) == 0:
        raise ValueError("confidence interval: no finite values")
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, None, None, None, 1)
    sd = float(values.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, sd, len(values))


def seeds_to_decide(interval: Interval, confidence: float) -> int | None:
    """Seeds at which an interval of this sd would exclude zero if the mean held (None if the mean is 0 or unknown)."""
    if interval.sd is None or interval.mean == 0:
        return None
    if interval.sd == 0:
        return 2
    n = 2
    while n < 10_000:
        t = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)
        if t * interval.sd / math.sqrt(n) < abs(interval.mean):
            return n
        n += 1
    return None


@dataclass(frozen=True)
class Difference:
    """One subset's paired difference vs the baseline on one metric (subset - baseline; negative = better)."""

    subset: str
    metric: str
    interval: Interval | None  # None when the comparison is refused
    verdict: str  # "better" | "worse" | "indistinguishable" | "not comparable"
    sentence: str
    seeds_to_decide: int | None = None


@dataclass(frozen=True)
class Speed:
    """Steps to the shared held-out level, per seed; an interval when every seed reached it."""

    steps: list[int | None]
    interval: Interval | None

    @property
    def text(self) -> str:
        missed = sum(step is None for step in self.steps)
        if missed:
            return f"not reached ({missed} of {len(self.steps)} seeds)"
        return f"{self.interval.text(0)} steps"


@dataclass(frozen=True)
class Recommendation:
    """The selected subset to train on: the best on reference held-out bpb among the selectors that beat the random
    baseline there without being worse on the unseen domain; None when no selector does."""

    subset: str | None
    sentence: str


@dataclass
class ProbeComparison:
    """Everything the summary, the report and the risk check say about probes, computed from per-seed results."""

    budget_tokens: int
    seeds: list[int]
    confidence: float
    epochs: dict[str, float]
    metrics: dict[str, dict[str, Interval]]  # subset -> metric -> interval over seeds
    differences: list[Difference]
    speed_level: float | None
    speed: dict[str, Speed]
    verdicts: dict[str, str]  # subset -> one sentence (vs the baseline, on the reference set)
    notes: list[str] = field(default_factory=list)
    recommendation: Recommendation | None = None  # None when the baseline was not probed

    def difference(self, subset: str, metric: str) -> Difference | None:
        return next((d for d in self.differences if d.subset == subset and d.metric == metric), None)

    def to_dict(self) -> dict:
        return asdict(self)


def _paired(name: str, metric: str, values: Mapping[int, float], baseline: Mapping[int, float],
            epochs: Mapping[str, float], confidence: float) -> Difference:
    label = METRIC_LABELS.get(metric, metric)
    if not math.isclose(epochs[name], epochs[BASELINE], rel_tol=1e-9):
        return Difference(name, metric, None, "not comparable",
                          f"not comparable with {BASELINE}: trained {epochs[name]:.2f} epochs vs {epochs[BASELINE]:.2f} "
                          "(unequal repetition confounds quality; use probe.short_subset 'shrink')")
    seeds = sorted(set(values) & set(baseline))
    interval = t_interval([values[s] - baseline[s] for s in seeds], confidence)
    if interval.low is None:
        return Difference(name, metric, interval, "indistinguishable",
                          f"undecided on the {label} set: {interval.mean + 0.0:+.3f} bpb minus {BASELINE} from one "
                          "seed, no interval (probe.seeds >= 2)")
    # Sentences give magnitudes ("beats by", "worse by"); the undecided one gives subset - baseline (+ = worse).
    # "+ 0.0": no "-0.000" when the spread is 0.
    if interval.excludes_zero() and interval.mean < 0:
        return Difference(name, metric, interval, "better",
                          f"beats {BASELINE} by {-interval.mean:.3f} [{-interval.high:.3f}, {-interval.low:.3f}] bpb "
                          f"on the {label} set")
    if interval.excludes_zero():
        return Difference(name, metric, interval, "worse",
                          f"worse than {BASELINE} by {interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}] bpb "
                          f"on the {label} set")
    needed = seeds_to_decide(interval, confidence)
    hint = f"; about {needed} seeds would decide a difference this large, if it is real" if needed else ""
    return Difference(name, metric, interval, "indistinguishable",
                      f"indistinguishable from {BASELINE} at this budget on the {label} set (difference "
                      f"{interval.mean + 0.0:+.3f} [{interval.low + 0.0:+.3f}, {interval.high + 0.0:+.3f}] bpb{hint})",
                      needed)


def recommend(metrics: Mapping[str, Mapping[str, Interval]], differences: Sequence[Difference],
              selectors: Sequence[str]) -> Recommendation:
    """Which of the `selectors`' subsets to train on, from their paired differences vs the baseline."""
    found = {(d.subset, d.metric): d for d in differences}
    probed = [name for name in selectors if (name, "reference_bpb") in found]
    winners = [name for name in probed if found[name, "reference_bpb"].verdict == "better"
               and (found.get((name, "unseen_bpb")) is None or found[name, "unseen_bpb"].verdict != "worse")]
    if winners:
        best = min(winners, key=lambda name: metrics[name]["reference_bpb"].mean)
        unseen = found.get((best, "unseen_bpb"))
        also = [name for name in winners if name != best]
        return Recommendation(best, f"Recommended: {best}, which {found[best, 'reference_bpb'].sentence}"
                              + (f"; unseen domain: {unseen.sentence}" if unseen else "")
                              + (f". Also beating {BASELINE}: {', '.join(also)}" if also else "") + ".")
    if not probed:
        return Recommendation(None, "No selector was probed against random: nothing to recommend.")
    falls_short = []
    for name in probed:
        reference, unseen = found[name, "reference_bpb"], found.get((name, "unseen_bpb"))
        shortfall = f"{name} {_signed(reference)} on the reference set"
        if reference.verdict == "better":  # then it is worse on the unseen domain
            shortfall += f" but {_signed(unseen)} (worse) on the unseen domain"
        falls_short.append(shortfall)
    needed = sorted({d.seeds_to_decide for name in probed if (d := found[name, "reference_bpb"]).seeds_to_decide})
    seeds = "-".join(map(str, sorted({needed[0], needed[-1]}))) if needed else ""
    more = f"; about {seeds} seeds would decide the undecided ones if they are real" if needed else ""
    return Recommendation(None, f"No selector beats {BASELINE} on this data at this budget (subset - {BASELINE}, "
                                f"bpb: {'; '.join(falls_short)}): train on a uniform sample of the pool "
                                f"({BASELINE}){more}.")


def _signed(difference: Difference) -> str:
    if difference.interval is None:
        return "not comparable"
    if difference.interval.low is None:
        return f"{difference.interval.mean:+.3f} (1 seed)"
    return f"{difference.interval.mean + 0.0:+.3f} [{difference.interval.low + 0.0:+.3f}, " \
           f"{difference.interval.high + 0.0:+.3f}]"


def learning_speeds(curves: Mapping[str, Mapping[int, tuple[Sequence[int], Sequence[float | None]]]],
                    fraction: float, level: float | None, confidence: float) -> tuple[float, dict[str, Speed]]:
    """Steps each (subset, seed) needs to reach one shared reference level: by default `fraction` of the way from
    the initial bpb to the best subset's mean final bpb."""
    if level is None:
        initial = max(next(v for v in values if v is not None)
                      for by_seed in curves.values() for _, values in by_seed.values())
        finals = [float(np.mean([next(v for v in reversed(values) if v is not None) for _, values in by_seed.values()]))
                  for by_seed in curves.values()]
        level = speed_level(initial, finals, fraction)
    speeds = {}
    for name, by_seed in curves.items():
        steps = [steps_to_level(s, v, level) for s, v in (by_seed[seed] for seed in sorted(by_seed))]
        reached = [float(step) for step in steps if step is not None]
        speeds[name] = Speed(steps, t_interval(reached, confidence) if len(reached) == len(steps) else None)
    return level, speeds


def compare_probes(
    stats: Mapping[str, Mapping[int, Mapping]],
    curves: Mapping[str, Mapping[int, tuple[Sequence[int], Sequence[float | None]]]],
    confidence: float = 0.95,
    speed_fraction: float = 0.5,
    speed_level_bpb: float | None = None,
    notes: Sequence[str] = (),
    selectors: Sequence[str] | None = None,
) -> ProbeComparison:
    """`stats`: subset -> seed -> probe stats; `curves`: subset -> seed -> (eval steps, reference bpb); `selectors`:
    the subsets a recommendation chooses from (None: every subset but the baseline)."""
    if not stats:
        raise ValueError("compare probes: no probe results")
    seeds = sorted({seed for by_seed in stats.values() for seed in by_seed})
    budgets = {int(s["tokens"]) for by_seed in stats.values() for s in by_seed.values()}
    epochs = {name: max(float(s["epochs"]) for s in by_seed.values()) for name, by_seed in stats.items()}
    metrics = {name: {metric: t_interval([s[metric] for s in by_seed.values()], confidence)
                      for metric in COMPARED_METRICS if all(s.get(metric) is not None for s in by_seed.values())}
               for name, by_seed in stats.items()}
    differences, verdicts = [], {}
    if BASELINE in stats:
        for name in stats:
            if name == BASELINE:
                continue
            for metric in metrics[name]:
                if metric in metrics[BASELINE]:
                    differences.append(_paired(name, metric, {s: v[metric] for s, v in stats[name].items()},
                                               {s: v[metric] for s, v in stats[BASELINE].items()}, epochs, confidence))
            reference = next((d for d in differences if d.subset == name and d.metric == "reference_bpb"), None)
            if reference is not None:
                verdicts[name] = reference.sentence
    level, speed = learning_speeds(curves, speed_fraction, speed_level_bpb, confidence) if curves else (None, {})
    all_notes = list(notes)
    if len(budgets) > 1:
        all_notes.append(f"probes trained on different budgets {sorted(budgets)}: differences mix budget and data")
    if BASELINE not in stats:
        all_notes.append(f"no '{BASELINE}' subset was probed: no paired differences (add it to selection.selectors)")
    chosen_from = [name for name in stats if name != BASELINE] if selectors is None else selectors
    recommendation = recommend(metrics, differences, chosen_from) if BASELINE in stats else None
    return ProbeComparison(max(budgets), seeds, confidence, epochs, metrics, differences, level, speed, verdicts,
                           all_notes, recommendation)
