"""Comparing subsets by paired probes: intervals over seeds, and verdicts only where the seeds support them."""

import math
import random
import string

import numpy as np
import pytest
from conftest import sample_records
from scipy import stats as scipy_stats

from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe import load_tokenizer, pack_eval, pack_train, train_probe
from selectflow.probe.compare import Interval, compare_probes, seeds_to_decide, t_interval
from selectflow.probe.data import common_budget, stream_tokens
from selectflow.summary import probe_summary

TINY = ProbeConfig(model=ProbeModelConfig(hidden=32, layers=1, heads=2, intermediate=64, seq_len=32), batch_size=4,
                   tokens=2048, evals=4, eval_tokens=512, learning_rate=1e-2, cpu_threads=1, device="cpu")
SEEDS = (0, 1, 2)


def _texts(name: str, limit: int) -> list[str]:
    return [r["text"] for r in sample_records(name, limit)]


def _probe(texts: list[str], held: dict, seed: int, tokens: int = 2048, short_subset: str = "shrink") -> tuple:
    tokenizer = load_tokenizer()
    train = pack_train(texts, tokenizer, tokens, 32, 4, seed, short_subset)
    run = train_probe(train, held, tokenizer, TINY, seed)
    evaluated = [row for row in run.curve if row["reference_bpb"] is not None]
    return run.metrics, ([row["step"] for row in evaluated], [row["reference_bpb"] for row in evaluated])


def _probe_all(subsets: dict[str, list[str]], held: dict, seeds=SEEDS, **kwargs) -> tuple[dict, dict]:
    stats, curves = {}, {}
    for name, texts in subsets.items():
        stats[name], curves[name] = {}, {}
        for seed in seeds:
            stats[name][seed], curves[name][seed] = _probe(texts, held, seed, **kwargs)
    return stats, curves


@pytest.fixture(scope="module")
def held():
    tokenizer = load_tokenizer()
    return {"reference": pack_eval(_texts("reference.jsonl.zst", 30), tokenizer, 512, 32, "reference"),
            "unseen": pack_eval(_texts("unseen.jsonl.zst", 20), tokenizer, 512, 32, "unseen")}


@pytest.fixture(scope="module")
def prose():
    return _texts("prose.jsonl.zst", 60)


@pytest.fixture(scope="module")
def probed(held, prose):
    """random: real prose; copy: the very same documents; noise: uniformly random printable characters, document
    for document of the same lengths. Three seeds each."""
    rng = random.Random(0)
    noise = ["".join(rng.choices(string.printable[:95], k=len(text))) for text in prose]
    return _probe_all({"random": prose, "copy": list(prose), "noise": noise}, held)


def _only(stats: dict, *names: str) -> dict:
    return {name: stats[name] for name in names}


def test_identical_subsets_are_indistinguishable(probed):
    stats, curves = probed
    comparison = compare_probes(_only(stats, "random", "copy"), _only(curves, "random", "copy"), 0.95)
    assert comparison.seeds == [0, 1, 2] and comparison.epochs == {"random": 1.0, "copy": 1.0}
    assert {d.metric for d in comparison.differences} == {"reference_bpb", "unseen_bpb", "prequential_bpb"}
    for diff in comparison.differences:
        # the same documents, seeds, inits and held-out blocks: every paired difference is exactly 0
        assert diff.verdict == "indistinguishable", diff.sentence
        assert (diff.interval.mean, diff.interval.low, diff.interval.high, diff.interval.sd) == (0, 0, 0, 0)
        assert not diff.interval.excludes_zero() and diff.seeds_to_decide is None
        assert "difference +0.000 [+0.000, +0.000] bpb" in diff.sentence and "-0.000" not in diff.sentence
    assert comparison.verdicts["copy"].startswith("indistinguishable from random at this budget")
    # ... while the seeds themselves differ: the noise pairing cancels is real
    assert comparison.metrics["random"]["reference_bpb"].sd > 0
    assert comparison.metrics["copy"] == comparison.metrics["random"]


def test_clearly_worse_subset_is_significantly_worse(probed):
    stats, curves = probed
    comparison = compare_probes(_only(stats, "random", "noise"), _only(curves, "random", "noise"), 0.95)
    for metric in ("reference_bpb", "unseen_bpb", "prequential_bpb"):
        diff = comparison.difference("noise", metric)
        assert diff.verdict == "worse", diff.sentence
        assert diff.interval.n == 3 and diff.interval.low > 0  # the interval excludes 0, above it
        paired = [stats["noise"][s][metric] - stats["random"][s][metric] for s in SEEDS]
        assert diff.interval.mean == pytest.approx(np.mean(paired))
        assert diff.interval.low == pytest.approx(scipy_stats.t.interval(0.95, 2, np.mean(paired),
                                                                         scipy_stats.sem(paired))[0])
    reference = comparison.difference("noise", "reference_bpb")
    assert reference.interval.mean > 0.5  # a model of uniform noise is far from a model of English
    assert comparison.verdicts["noise"] == reference.sentence
    assert reference.sentence.startswith(f"worse than random by {reference.interval.mean:.3f} "
                                         f"[{reference.interval.low:.3f}, {reference.interval.high:.3f}] bpb")
    # learning speed: one shared level, half way from the initial bpb to the best subset's mean final bpb
    finals = {name: np.mean([curves[name][s][1][-1] for s in SEEDS]) for name in ("random", "noise")}
    initial = max(curves[name][s][1][0] for name in ("random", "noise") for s in SEEDS)
    assert comparison.speed_level == pytest.approx(initial - 0.5 * (initial - min(finals.values())))
    assert comparison.speed["noise"].text == "not reached (3 of 3 seeds)"
    assert comparison.speed["random"].interval is not None and comparison.speed["random"].interval.mean > 0
    summary = probe_summary(comparison)
    assert summary["seeds"] == [0, 1, 2] and summary["subsets"]["noise"]["verdict"] == reference.sentence
    assert summary["subsets"]["noise"]["vs_random"] == reference.interval.text()
    assert comparison.to_dict()["verdicts"] == comparison.verdicts


def test_repeated_subset_is_not_comparable_and_shrink_makes_it_comparable(probed, held, prose):
    stats, curves = probed
    small = _texts("fortunes.jsonl.zst", 5)  # ~1,650 bytes: less than the 2,048 of the budget
    assert stream_tokens(small, load_tokenizer()) < 2048
    repeated, repeated_curves = _probe_all({"small": small}, held, seeds=(0, 1), short_subset="repeat")
    assert all(s["epochs"] > 1.0 and s["tokens"] == 2048 for s in repeated["small"].values())
    comparison = compare_probes(_only(stats, "random") | repeated, _only(curves, "random") | repeated_curves)
    for diff in comparison.differences:
        assert diff.verdict == "not comparable" and diff.interval is None
        assert "epochs" in diff.sentence and "short_subset 'shrink'" in diff.sentence
    assert comparison.verdicts["small"].startswith("not comparable with random")
    # shrink: both train one epoch on the smallest subset's whole batches, and are compared
    budget, note = common_budget(2048, {"random": stream_tokens(prose, load_tokenizer()),
                                        "small": stream_tokens(small, load_tokenizer())}, 4, 32)
    assert budget < 2048 and note
    shrunk, shrunk_curves = _probe_all({"random": prose, "small": small}, held, seeds=(0, 1), tokens=budget)
    comparison = compare_probes(shrunk, shrunk_curves, notes=[note])
    assert comparison.epochs == {"random": 1.0, "small": 1.0} and comparison.budget_tokens == budget
    assert all(d.verdict != "not comparable" and d.interval.n == 2 for d in comparison.differences)
    assert comparison.notes == [note]


def test_interval_matches_student_t_and_needs_two_seeds():
    values = [5.1, 5.3, 4.9, 5.0]
    interval = t_interval(values, 0.9)
    low, high = scipy_stats.t.interval(0.9, 3, np.mean(values), scipy_stats.sem(values))
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    assert interval.n == 4 and interval.half_width == pytest.approx((high - low) / 2)
    one = t_interval([5.1, float("nan"), None], 0.95)  # non-finite values are left out
    assert (one.mean, one.low, one.high, one.n) == (5.1, None, None, 1) and not one.excludes_zero()
    assert one.text() == "5.100 (1 seed, no interval)"
    with pytest.raises(ValueError, match="no finite values"):
        t_interval([], 0.95)


def test_interval_narrows_with_more_seeds_and_covers_at_its_level():
    """Seed-to-seed paired differences drawn from one fixed distribution (mean 0.1, sd 0.05 bpb)."""
    rng = np.random.default_rng(0)
    mean, sd, reps = 0.1, 0.05, 3000
    widths, decided = {}, {}
    for n in (3, 8):
        intervals = [t_interval(rng.normal(mean, sd, n), 0.95) for _ in range(reps)]
        widths[n] = np.mean([i.half_width for i in intervals])
        c4 = math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)  # E[sample sd] = c4 * sd
        expected = scipy_stats.t.ppf(0.975, n - 1) * c4 * sd / math.sqrt(n)
        assert widths[n] == pytest.approx(expected, rel=0.05)
        coverage = np.mean([i.low <= mean <= i.high for i in intervals])
        assert 0.93 <= coverage <= 0.97
        decided[n] = np.mean([i.excludes_zero() for i in intervals])
    assert widths[8] < widths[3] / 2
    assert decided[8] > decided[3]  # more seeds decide a real difference more often


def test_seeds_to_decide():
    interval = Interval(0.05, -0.07, 0.17, 0.05, 3)
    n = seeds_to_decide(interval, 0.95)
    assert n is not None and n > 3
    half = lambda k: scipy_stats.t.ppf(0.975, k - 1) * 0.05 / math.sqrt(k)
    assert half(n) < 0.05 <= half(n - 1)
    assert seeds_to_decide(Interval(0.0, 0.0, 0.0, 0.0, 3), 0.95) is None  # nothing to decide
    assert seeds_to_decide(Interval(0.1, 0.1, 0.1, 0.0, 3), 0.95) == 2
    assert seeds_to_decide(Interval(0.1, None, None, None, 1), 0.95) is None


def _stats(values: dict[str, list[float]], tokens: int = 1024, epochs: float = 1.0) -> dict:
    return {name: {seed: {"tokens": tokens, "epochs": epochs, "reference_bpb": v, "prequential_bpb": v + 0.5}
                   for seed, v in enumerate(vs)} for name, vs in values.items()}


def test_verdict_sentences():
    # the seeds move every subset together (5.0, 5.4, 4.8); the paired difference is steady
    comparison = compare_probes(_stats({"random": [5.0, 5.4, 4.8], "zip": [4.8, 5.21, 4.59],
                                        "quad": [5.1, 5.2, 4.85]}), {})
    better = comparison.difference("zip", "reference_bpb")
    assert better.verdict == "better" and better.interval.high < 0
    assert better.sentence.startswith(f"beats random by {-better.interval.mean:.3f} [{-better.interval.high:.3f}, "
                                      f"{-better.interval.low:.3f}] bpb on the reference held-out set")
    unsure = comparison.difference("quad", "reference_bpb")
    assert unsure.verdict == "indistinguishable" and unsure.interval.low < 0 < unsure.interval.high
    assert f"about {unsure.seeds_to_decide} seeds would decide" in unsure.sentence
    assert set(comparison.verdicts) == {"zip", "quad"} and comparison.notes == []
    # unpaired, zip's interval overlaps random's widely: only the pairing separates them
    assert comparison.metrics["zip"]["reference_bpb"].high > comparison.metrics["random"]["reference_bpb"].low
    one_seed = compare_probes(_stats({"random": [5.0], "zip": [4.8]}), {})
    assert one_seed.difference("zip", "reference_bpb").verdict == "indistinguishable"
    assert "from one seed, no interval" in one_seed.verdicts["zip"]
    no_baseline = compare_probes(_stats({"zip": [4.8, 4.9]}), {})
    assert no_baseline.differences == [] and "no 'random' subset was probed" in no_baseline.notes[0]
    mixed = compare_probes(_stats({"random": [5.0, 5.1]}) | _stats({"zip": [4.8, 4.9]}, tokens=2048), {})
    assert mixed.budget_tokens == 2048 and "different budgets [1024, 2048]" in mixed.notes[0]


def _with_unseen(stats: dict, unseen: dict[str, list[float]]) -> dict:
    for name, values in unseen.items():
        for seed, value in enumerate(values):
            stats[name][seed]["unseen_bpb"] = value
    return stats


def test_recommendation_names_the_best_selector_that_beats_random_without_losing_the_unseen_domain():
    reference = {"random": [5.0, 5.4, 4.8], "zip": [4.8, 5.21, 4.59], "quad": [4.5, 4.92, 4.3],
                 "dsir": [4.9, 5.31, 4.69], "full": [4.0, 4.4, 3.8]}
    unseen = {"random": [6.0, 6.2, 5.9], "zip": [6.0, 6.21, 5.9], "quad": [6.5, 6.71, 6.4],
              "dsir": [5.9, 6.1, 5.8], "full": [6.0, 6.2, 5.9]}
    stats = _with_unseen(_stats(reference), unseen)
    # quad is best on the reference set but worse on the unseen domain; 'full' is not a selector
    comparison = compare_probes(stats, {}, selectors=["zip", "quad", "dsir"])
    recommendation = comparison.recommendation
    assert recommendation.subset == "zip"
    assert recommendation.sentence.startswith("Recommended: zip, which beats random by 0.200 [")
    assert "Also beating random: dsir." in recommendation.sentence
    assert probe_summary(comparison)["recommended"] == "zip"
    # without the selectors named, every subset but the baseline competes
    assert compare_probes(stats, {}).recommendation.subset == "full"


def test_recommendation_says_plainly_when_no_selector_beats_random():
    stats = _with_unseen(_stats({"random": [5.0, 5.4, 4.8], "zip": [5.2, 5.61, 5.0], "quad": [4.5, 4.92, 4.3]}),
                         {"random": [6.0, 6.2, 5.9], "zip": [6.0, 6.2, 5.9], "quad": [6.5, 6.71, 6.4]})
    recommendation = compare_probes(stats, {}, selectors=["zip", "quad"]).recommendation
    assert recommendation.subset is None
    assert recommendation.sentence.startswith("No selector beats random on this data at this budget (subset - "
                                              "random, bpb: zip +0.203 [")
    assert "; quad -0.493 [" in recommendation.sentence and "(worse) on the unseen domain" in recommendation.sentence
    assert recommendation.sentence.endswith("train on a uniform sample of the pool (random).")
    undecided = compare_probes(_stats({"random": [5.0, 5.4, 4.8], "zip": [5.1, 5.3, 4.9]}), {}, selectors=["zip"])
    assert "seeds would decide the undecided ones if they are real." in undecided.recommendation.sentence
    assert compare_probes(_stats({"zip": [4.8, 4.9]}), {}).recommendation is None  # no baseline probed
