import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from selectflow.config import RiskConfig
from selectflow.risk import (
    AT_RISK,
    CONTRADICTED,
    INCONCLUSIVE,
    INSUFFICIENT,
    OK,
    RiskPoint,
    SubsetEvidence,
    check_against_history,
    check_against_reference,
    check_subset,
    combine,
    fit_history,
    history_from_mlflow,
    law_direction,
    probe_metrics,
    r_tolerance,
    verdict_markdown,
    verdict_metrics,
)

CFG = RiskConfig(min_history=8, interval_level=0.9)
# The random subset: R of the whole subset, first-epoch bits per byte L for seeds 0-3 (seed noise ~0.3 bpb).
RANDOM = SubsetEvidence(R=3.0, L={0: 5.5, 1: 5.9, 2: 5.2, 3: 5.6})
TOL = 0.1  # R differs between uniform samples of the pool by up to this much by chance


def _evidence(R: float, dL: list[float]) -> SubsetEvidence:
    """A subset whose L differs from random's by dL[seed], seed by seed."""
    return SubsetEvidence(R, {seed: RANDOM.L[seed] + d for seed, d in enumerate(dL)})


STEADY_LOWER = [-0.30, -0.32, -0.28, -0.31]  # lower by ~0.3 on every seed: the paired interval excludes 0
NOISY_LOWER = [-0.30, 0.25, -0.45, 0.10]  # lower in the mean only


def test_r_tolerance_is_the_noise_of_r_between_uniform_samples():
    samples = [3.0, 3.04, 2.97]
    t = scipy_stats.t.ppf(0.975, 2)
    assert r_tolerance(samples, 0.95) == pytest.approx(t * np.std(samples, ddof=1) * math.sqrt(2))
    assert r_tolerance(samples, 0.8) < r_tolerance(samples, 0.95)
    assert r_tolerance([3.0], 0.95) is None and r_tolerance([], 0.95) is None


def test_higher_ratio_beyond_noise_and_significantly_lower_loss_is_at_risk():
    candidate = _evidence(3.5, STEADY_LOWER)
    verdict = check_against_reference(candidate, RANDOM, CFG, 0.95, TOL)
    assert verdict.verdict == AT_RISK and verdict.at_risk
    n = verdict.numbers
    assert n["R_random"] == 3.0 and n["dR"] == pytest.approx(0.5) and n["R_tolerance"] == TOL and n["seeds"] == 4
    assert n["dL"] == pytest.approx(np.mean(STEADY_LOWER)) and n["dL_high"] < 0
    assert "3.500" in verdict.reason and "4 paired seeds" in verdict.reason and "differ by up to 0.100 by chance" in verdict.reason


@pytest.mark.parametrize("candidate, why", [
    (_evidence(2.8, STEADY_LOWER), "R is not higher"),   # less redundant than random
    (_evidence(3.05, STEADY_LOWER), "R is not higher"),  # R higher only within the sampling noise
    (_evidence(3.5, [0.3, 0.32, 0.28, 0.31]), "L is not lower"),  # more redundant but harder to fit
    (_evidence(3.5, [0.0, 0.0, 0.0, 0.0]), "L is not lower"),  # exactly as hard: interval [0, 0]
])
def test_not_both_higher_ratio_and_lower_loss_is_ok(candidate, why):
    verdict = check_against_reference(candidate, RANDOM, CFG, 0.95, TOL)
    assert verdict.verdict == OK
    assert "No entropy-law risk" in verdict.reason and why in verdict.reason


def test_lower_loss_within_seed_noise_is_inconclusive():
    verdict = check_against_reference(_evidence(3.5, NOISY_LOWER), RANDOM, CFG, 0.95, TOL)
    assert verdict.verdict == INCONCLUSIVE and not verdict.at_risk
    assert verdict.numbers["dL"] < 0 < verdict.numbers["dL_high"]
    assert "inconclusive at this budget" in verdict.reason and "seeds (probe.seeds) would decide it" in verdict.reason
    # one seed: no interval at all, so never at risk
    single = check_against_reference(SubsetEvidence(3.5, {0: 5.0}), RANDOM, CFG, 0.95, TOL)
    assert single.verdict == INCONCLUSIVE and "probe.seeds >= 2" in single.reason
    # the confidence level matters: a difference undecided at 95% is decided at 80%
    borderline = _evidence(3.5, [-0.3, 0.0, -0.35, -0.1])
    assert check_against_reference(borderline, RANDOM, CFG, 0.95, TOL).verdict == INCONCLUSIVE
    assert check_against_reference(borderline, RANDOM, CFG, 0.8, TOL).verdict == AT_RISK


def test_without_uniform_samples_any_higher_r_counts():
    verdict = check_against_reference(_evidence(3.05, STEADY_LOWER), RANDOM, CFG, 0.95, None)
    assert verdict.verdict == AT_RISK and "no uniform-sample noise of R was measured" in verdict.reason


def test_no_random_subset_is_insufficient():
    assert check_against_reference(_evidence(3.0, STEADY_LOWER), None, CFG).verdict == INSUFFICIENT


def _synthetic_history(n: int, noise: float, seed: int = 0, b: float = 0.5) -> list[RiskPoint]:
    """Held-out bits per byte = 1 + b*R + 0.3*L (+ noise)."""
    rng = np.random.default_rng(seed)
    R = rng.uniform(2.0, 5.0, n)
    L = rng.uniform(4.0, 7.0, n)
    y = 1.0 + b * R + 0.3 * L + rng.normal(0, noise, n)
    return [RiskPoint(float(r), float(l), float(v), f"run{i}") for i, (r, l, v) in enumerate(zip(R, L, y))]


def test_law_contradicted_when_the_history_says_higher_r_is_better():
    candidate = _evidence(3.5, STEADY_LOWER)  # at risk by the rule
    against = _synthetic_history(20, noise=0.05, b=-0.5)
    direction = law_direction(against, CFG)
    assert direction.contradicted and direction.high < 0 and direction.b == pytest.approx(-0.5, abs=0.1)
    verdict = check_against_reference(candidate, RANDOM, CFG, 0.95, TOL, direction)
    assert verdict.verdict == CONTRADICTED and "Not applied" in verdict.reason and "contradicts" in verdict.reason
    assert verdict.numbers["law_b_high"] < 0
    assessed = check_subset("zip", candidate, RANDOM, against, CFG, 0.95, TOL)
    assert assessed.checks[0].verdict == CONTRADICTED
    # the history agreeing with the law, or not deciding its sign, leaves the rule in force
    agreeing = law_direction(_synthetic_history(20, noise=0.05), CFG)
    assert agreeing.low > 0 and "agrees with" in agreeing.text
    assert check_against_reference(candidate, RANDOM, CFG, 0.95, TOL, agreeing).verdict == AT_RISK
    flat = law_direction(_synthetic_history(10, noise=1.0, b=0.0, seed=3), CFG)
    assert flat.low < 0 < flat.high and not flat.contradicted and "neither confirms" in flat.text
    assert check_against_reference(candidate, RANDOM, CFG, 0.95, TOL, flat).verdict == AT_RISK
    # too short a history says nothing about the direction
    assert law_direction(against[:7], CFG) is None


def test_fit_recovers_known_coefficients_and_interval_covers():
    history = _synthetic_history(400, noise=0.05)
    fit = fit_history(history)
    assert fit is not None and fit.n == 400
    np.testing.assert_allclose(fit.coef, [1.0, 0.5, 0.3], atol=0.03)
    assert math.sqrt(fit.residual_var) == pytest.approx(0.05, rel=0.15)
    # the 90% interval for a new point is ~ +-1.645 * sigma, and covers ~90% of fresh draws
    fresh = _synthetic_history(500, noise=0.05, seed=1)
    inside = 0
    for point in fresh:
        mean, half = fit.predict(point.R, point.L, 0.9)
        assert half == pytest.approx(1.645 * 0.05, rel=0.2)
        inside += abs(point.heldout_bpb - mean) <= half
    assert 0.85 <= inside / len(fresh) <= 0.95
    direction = fit.direction(0.9)
    assert direction.low < 0.5 < direction.high and direction.n == 400


def test_history_verdicts_both_ways_in_bits_per_byte():
    history = _synthetic_history(30, noise=0.02)
    baseline = RiskPoint(3.0, 5.0)  # predicted 1 + 1.5 + 1.5 = 4.0
    worse = check_against_history(RiskPoint(4.0, 5.0), history, CFG, baseline=baseline)  # predicted 4.5
    assert worse.verdict == AT_RISK
    assert worse.numbers["predicted_loss"] == pytest.approx(4.5, abs=0.05)
    assert worse.numbers["baseline_loss"] == pytest.approx(4.0, abs=0.05)
    assert worse.numbers["interval_low"] > worse.numbers["baseline_loss"]
    assert "held-out bpb = " in worse.reason and "bits/byte" in worse.reason and "nats" not in worse.reason
    same = check_against_history(RiskPoint(3.02, 5.0), history, CFG, baseline=baseline)
    assert same.verdict == OK
    assert same.numbers["interval_low"] <= same.numbers["baseline_loss"] <= same.numbers["interval_high"]
    # without a baseline point, the history's median held-out bpb is the baseline
    median = float(np.median([p.heldout_bpb for p in history]))
    assert check_against_history(RiskPoint(3.0, 5.0), history, CFG).numbers["baseline_loss"] == median


def test_insufficient_history():
    short = _synthetic_history(7, noise=0.02)
    verdict = check_against_history(RiskPoint(4.0, 5.0), short, CFG)
    assert verdict.verdict == INSUFFICIENT and "at least 8" in verdict.reason
    collinear = [RiskPoint(3.0, 5.0, 4.0 + 0.01 * i) for i in range(10)]  # R and L never vary
    assert check_against_history(RiskPoint(4.0, 5.0), collinear, CFG).verdict == INSUFFICIENT
    assert law_direction(collinear, CFG) is None
    no_losses = [RiskPoint(p.R, p.L, None) for p in _synthetic_history(20, 0.02)]
    assert check_against_history(RiskPoint(4.0, 5.0), no_losses, CFG).verdict == INSUFFICIENT


def test_combined_verdict():
    at_risk = _evidence(3.5, STEADY_LOWER)
    reference_risk = check_against_reference(at_risk, RANDOM, CFG, 0.95, TOL)
    history_short = check_against_history(at_risk.point(), [], CFG)
    inconclusive = check_against_reference(_evidence(3.5, NOISY_LOWER), RANDOM, CFG, 0.95, TOL)
    reference_ok = check_against_reference(_evidence(2.5, STEADY_LOWER), RANDOM, CFG, 0.95, TOL)
    contradicted = check_against_reference(at_risk, RANDOM, CFG, 0.95, TOL,
                                           law_direction(_synthetic_history(20, 0.05, b=-0.5), CFG))
    assert combine(reference_risk, history_short).verdict == AT_RISK
    assert combine(reference_ok, history_short).verdict == OK
    assert combine(inconclusive, reference_ok).verdict == OK
    assert combine(history_short, inconclusive).verdict == INCONCLUSIVE
    assert combine(contradicted, history_short).verdict == CONTRADICTED
    assert combine(contradicted, inconclusive).verdict == INCONCLUSIVE
    assert combine(history_short, check_against_reference(at_risk, None, CFG)).verdict == INSUFFICIENT
    # the candidate's point for the history fit: R and its mean L over seeds
    assert at_risk.point("zip") == RiskPoint(3.5, pytest.approx(np.mean(list(at_risk.L.values()))), None, "zip")
    # a subset the history predicts worse than random, though the reference check finds no risk
    assessed = check_subset("zip", SubsetEvidence(4.0, {0: 5.0, 1: 5.1}), SubsetEvidence(3.0, {0: 5.0, 1: 5.1}),
                            _synthetic_history(30, 0.02), CFG, 0.95, TOL)
    verdict = assessed.verdict
    assert [check.check for check in assessed.checks] == ["reference", "history"]
    assert verdict.verdict == AT_RISK and verdict.numbers["reference.verdict"] == OK
    assert verdict.numbers["history.verdict"] == AT_RISK
    metrics, tags = verdict_metrics("zip", verdict)
    assert metrics["risk.zip.at_risk"] == 1.0 and tags == {"risk.zip.verdict": AT_RISK}
    assert metrics["risk.zip.predicted_loss"] == pytest.approx(1 + 2.0 + 0.3 * 5.05, abs=0.05)
    page = verdict_markdown("zip", verdict)
    assert "zip is **at risk**" in page and "| history.verdict | at risk |" in page and verdict.reason in page
    for other, code in ((inconclusive, -1.0), (contradicted, -1.0), (reference_ok, 0.0)):
        metrics, tags = verdict_metrics("quad", other)
        assert metrics == {"risk.quad.at_risk": code} and tags == {"risk.quad.verdict": other.verdict}


def test_mlflow_round_trip(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("risk-test", artifact_location=str(tmp_path / "artifacts"))
    means = {"R_zlib": 3.1, "R_zstd": 3.9, "L_bpb": 6.2, "heldout_bpb": 7.4, "unseen_bpb": 8.0, "epochs": None}
    run_ids = []
    for index, deployment in enumerate(["nightly", "nightly", "other"]):
        run = client.create_run(experiment, tags={"selectflow.deployment": deployment}, run_name=f"run-{index}")
        for subset in ("zip", "random"):
            shifted = {k: None if v is None else v + index + (0.5 if subset == "zip" else 0.0)
                       for k, v in means.items()}
            metrics = probe_metrics(subset, shifted)
            assert f"probe.{subset}.epochs" not in metrics  # None: not logged
            for key, value in metrics.items():
                client.log_metric(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "risk.zip.at_risk", 0.0)  # not a probe metric: ignored
        run_ids.append(run.info.run_id)
    # a run from before bpb probes (nats per token): not mixed into a history in bits per byte
    old = client.create_run(experiment, tags={"selectflow.deployment": "nightly"})
    for key, value in {"R_zlib": 3.0, "first_epoch_loss": 9.0, "heldout_loss": 9.5}.items():
        client.log_metric(old.info.run_id, f"probe.random.{key}", value)
    points = history_from_mlflow(uri, "risk-test", deployment="nightly", exclude_run_id=run_ids[1])
    assert [p.label for p in points] == [f"{run_ids[0]}/random", f"{run_ids[0]}/zip"]
    assert points[1] == RiskPoint(3.6, 6.7, 7.9, f"{run_ids[0]}/zip")
    zstd = history_from_mlflow(uri, "risk-test", deployment="nightly", ratio="zstd")
    assert len(zstd) == 4 and {p.R for p in zstd} == {3.9, 4.4, 4.9, 5.4}
    assert len(history_from_mlflow(uri, "risk-test")) == 6
    assert len(history_from_mlflow(uri, "risk-test", run_name="run-2")) == 2
    assert history_from_mlflow(uri, "no-such-experiment") == []
    assert probe_metrics("zip", {"L_bpb": 6.2, "heldout_bpb": None}) == {"probe.zip.L_bpb": 6.2}
