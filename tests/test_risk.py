import math

import numpy as np
import pytest

from selectflow.config import RiskConfig
from selectflow.risk import (
    AT_RISK,
    INSUFFICIENT,
    OK,
    RiskPoint,
    check_against_history,
    check_against_reference,
    check_subset,
    combine,
    fit_history,
    history_from_mlflow,
    point_from_stats,
    probe_metrics,
    verdict_markdown,
    verdict_metrics,
)

CFG = RiskConfig(ratio_tolerance=0.02, loss_tolerance=0.05, min_history=8, interval_level=0.9)


def test_higher_ratio_and_lower_loss_than_random_is_at_risk():
    verdict = check_against_reference(RiskPoint(R=3.5, L=5.0), RiskPoint(R=3.0, L=5.5), CFG)
    assert verdict.verdict == AT_RISK and verdict.at_risk
    assert verdict.numbers["R_random"] == 3.0 and verdict.numbers["L"] == 5.0
    assert "3.500" in verdict.reason and "5.500" in verdict.reason


@pytest.mark.parametrize("candidate", [
    RiskPoint(R=2.8, L=5.0),   # less redundant than random
    RiskPoint(R=3.5, L=5.8),   # more redundant but harder to fit
    RiskPoint(R=3.05, L=5.0),  # R higher only within the 2% tolerance
    RiskPoint(R=3.5, L=5.47),  # L lower only within the 0.05 tolerance
])
def test_not_both_higher_ratio_and_lower_loss_is_ok(candidate):
    verdict = check_against_reference(candidate, RiskPoint(R=3.0, L=5.5), CFG)
    assert verdict.verdict == OK
    assert "No entropy-law risk" in verdict.reason


def test_no_random_subset_is_insufficient():
    assert check_against_reference(RiskPoint(3.0, 5.0), None, CFG).verdict == INSUFFICIENT


def _synthetic_history(n: int, noise: float, seed: int = 0) -> list[RiskPoint]:
    rng = np.random.default_rng(seed)
    R = rng.uniform(2.0, 5.0, n)
    L = rng.uniform(4.0, 7.0, n)
    y = 1.0 + 0.5 * R + 0.3 * L + rng.normal(0, noise, n)
    return [RiskPoint(float(r), float(l), float(v), f"run{i}") for i, (r, l, v) in enumerate(zip(R, L, y))]


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
        inside += abs(point.heldout_loss - mean) <= half
    assert 0.85 <= inside / len(fresh) <= 0.95


def test_history_verdicts_both_ways():
    history = _synthetic_history(30, noise=0.02)
    baseline = RiskPoint(3.0, 5.0)  # predicted 1 + 1.5 + 1.5 = 4.0
    worse = check_against_history(RiskPoint(4.0, 5.0), history, CFG, baseline=baseline)  # predicted 4.5
    assert worse.verdict == AT_RISK
    assert worse.numbers["predicted_loss"] == pytest.approx(4.5, abs=0.05)
    assert worse.numbers["baseline_loss"] == pytest.approx(4.0, abs=0.05)
    assert worse.numbers["interval_low"] > worse.numbers["baseline_loss"]
    same = check_against_history(RiskPoint(3.02, 5.0), history, CFG, baseline=baseline)
    assert same.verdict == OK
    assert same.numbers["interval_low"] <= same.numbers["baseline_loss"] <= same.numbers["interval_high"]
    # without a baseline point, the history's median held-out loss is the baseline
    median = float(np.median([p.heldout_loss for p in history]))
    assert check_against_history(RiskPoint(3.0, 5.0), history, CFG).numbers["baseline_loss"] == median


def test_insufficient_history():
    short = _synthetic_history(7, noise=0.02)
    verdict = check_against_history(RiskPoint(4.0, 5.0), short, CFG)
    assert verdict.verdict == INSUFFICIENT and "at least 8" in verdict.reason
    collinear = [RiskPoint(3.0, 5.0, 4.0 + 0.01 * i) for i in range(10)]  # R and L never vary
    assert check_against_history(RiskPoint(4.0, 5.0), collinear, CFG).verdict == INSUFFICIENT
    no_losses = [RiskPoint(p.R, p.L, None) for p in _synthetic_history(20, 0.02)]
    assert check_against_history(RiskPoint(4.0, 5.0), no_losses, CFG).verdict == INSUFFICIENT


def test_combined_verdict():
    reference_risk = check_against_reference(RiskPoint(3.5, 5.0), RiskPoint(3.0, 5.5), CFG)
    history_short = check_against_history(RiskPoint(3.5, 5.0), [], CFG)
    assert combine(reference_risk, history_short).verdict == AT_RISK
    reference_ok = check_against_reference(RiskPoint(2.5, 5.0), RiskPoint(3.0, 5.5), CFG)
    assert combine(reference_ok, history_short).verdict == OK
    assert combine(history_short, check_against_reference(RiskPoint(3, 5), None, CFG)).verdict == INSUFFICIENT
    assessed = check_subset("zip", RiskPoint(4.0, 5.0), RiskPoint(3.0, 5.0), _synthetic_history(30, 0.02), CFG)
    verdict = assessed.verdict
    assert [check.check for check in assessed.checks] == ["reference", "history"]
    assert verdict.verdict == AT_RISK and verdict.numbers["reference.verdict"] == OK
    assert verdict.numbers["history.verdict"] == AT_RISK
    metrics, tags = verdict_metrics("zip", verdict)
    assert metrics["risk.zip.at_risk"] == 1.0 and tags == {"risk.zip.verdict": AT_RISK}
    assert metrics["risk.zip.predicted_loss"] == pytest.approx(4.5, abs=0.05)
    page = verdict_markdown("zip", verdict)
    assert "zip is **at risk**" in page and "| history.verdict | at risk |" in page and verdict.reason in page


def test_mlflow_round_trip(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("risk-test", artifact_location=str(tmp_path / "artifacts"))
    stats = {"R_zlib": 3.1, "R_zstd": 3.9, "first_epoch_loss": 6.2, "reference_loss": 7.4, "unseen_loss": 8.0,
             "prequential_bpb": 2.5}
    run_ids = []
    for index, deployment in enumerate(["nightly", "nightly", "other"]):
        run = client.create_run(experiment, tags={"selectflow.deployment": deployment}, run_name=f"run-{index}")
        for subset in ("zip", "random"):
            shifted = {k: v + index + (0.5 if subset == "zip" else 0.0) for k, v in stats.items()}
            for key, value in probe_metrics(subset, shifted).items():
                client.log_metric(run.info.run_id, key, value)
        client.log_metric(run.info.run_id, "risk.zip.at_risk", 0.0)  # not a probe metric: ignored
        run_ids.append(run.info.run_id)
    points = history_from_mlflow(uri, "risk-test", deployment="nightly", exclude_run_id=run_ids[1])
    assert [p.label for p in points] == [f"{run_ids[0]}/random", f"{run_ids[0]}/zip"]
    assert points[1] == RiskPoint(3.6, 6.7, 7.9, f"{run_ids[0]}/zip")
    zstd = history_from_mlflow(uri, "risk-test", deployment="nightly", ratio="zstd")
    assert len(zstd) == 4 and {p.R for p in zstd} == {3.9, 4.4, 4.9, 5.4}
    assert len(history_from_mlflow(uri, "risk-test")) == 6
    assert len(history_from_mlflow(uri, "risk-test", run_name="run-2")) == 2
    assert history_from_mlflow(uri, "no-such-experiment") == []
    assert point_from_stats(stats) == RiskPoint(3.1, 6.2, 7.4)
