"""Mixture search: proposals, the regression and its optimum, quotas, and the whole search on a toy corpus whose
reference set is one of its two domains."""

import typing

import numpy as np
import pytest
from conftest import docs_table, sample_records

from selectflow.config import MixtureSelector, ProbeConfig, ProbeModelConfig
from selectflow.select.mixture import (
    MixtureRegression,
    Regression,
    best_mixture,
    cross_validated,
    propose_mixtures,
    resample,
    with_floor,
)


def test_proposals_lie_on_the_simplex_above_the_floor_and_repeat_per_seed():
    natural = np.array([0.7, 0.2, 0.1])
    proposals = propose_mixtures(natural, 50, 1.0, 0.05, seed=3)
    assert proposals.shape == (50, 3)
    assert np.allclose(proposals.sum(axis=1), 1.0) and proposals.min() >= 0.05 - 1e-12
    assert np.array_equal(proposals, propose_mixtures(natural, 50, 1.0, 0.05, seed=3))
    assert not np.array_equal(proposals, propose_mixtures(natural, 50, 1.0, 0.05, seed=4))
    assert np.allclose(proposals.mean(axis=0), natural, atol=0.12)  # drawn around the natural proportions
    with pytest.raises(ValueError, match="lower floor"):
        with_floor(natural, 0.34)


class ConstantLoss(MixtureRegression):
    """A stub fit that predicts the same loss for every mixture."""

    def predict(self, weights):
        return np.full(len(np.atleast_2d(weights)), 2.5)


@pytest.mark.parametrize("kind", typing.get_args(Regression))
def test_a_fit_without_preference_keeps_the_natural_mixture(kind):
    natural = np.array([0.5, 0.3, 0.2])
    proposals = propose_mixtures(natural, 12, 1.0, 0.0, seed=0)
    weights, preferred = best_mixture(ConstantLoss(), natural, 0.0, proposals, candidates=1000)
    assert not preferred and np.allclose(weights, natural)
    # a real fit on measurements that do not depend on the weights predicts no difference either
    flat = MixtureRegression(kind).fit(proposals, np.full(12, 3.0))
    weights, preferred = best_mixture(flat, natural, 0.0, proposals, candidates=1000)
    assert not preferred and np.allclose(weights, natural)
    _, spearman = cross_validated(proposals, np.full(12, 3.0), kind)
    assert np.isnan(spearman)


@pytest.mark.parametrize("kind", typing.get_args(Regression))
def test_the_fit_ranks_unseen_mixtures_and_its_optimum_follows_the_loss(kind):
    rng = np.random.default_rng(0)
    natural = np.array([0.4, 0.4, 0.2])
    proposals = propose_mixtures(natural, 40, 1.0, 0.02, seed=1)
    losses = 3.0 - 1.5 * proposals[:, 2] + 0.4 * proposals[:, 0] + rng.normal(0, 0.01, 40)  # more of 2 helps
    predicted, spearman = cross_validated(proposals, losses, kind)
    assert spearman > 0.8 and predicted.shape == (40,)
    weights, preferred = best_mixture(MixtureRegression(kind).fit(proposals, losses), natural, 0.02, proposals,
                                      candidates=20_000)
    assert preferred and np.isclose(weights.sum(), 1.0) and weights.min() >= 0.02 - 1e-12
    assert weights[2] > 0.5 > natural[2] and weights[2] == weights.max()


class FavoursLast(MixtureRegression):
    """A stub fit whose loss falls linearly with the last component's weight (its optimum: a corner)."""

    def predict(self, weights):
        return 3.0 - np.atleast_2d(weights)[:, -1]


def test_the_optimum_stays_inside_the_range_the_probes_covered():
    natural = np.array([0.6, 0.3, 0.1])
    probed = propose_mixtures(natural, 24, 1.0, 0.02, seed=0)
    weights, preferred = best_mixture(FavoursLast(), natural, 0.02, probed, candidates=20_000)
    assert preferred and natural[2] < weights[2] <= probed[:, 2].max()  # toward the favoured corner, not into it
    assert np.all(weights >= probed.min(axis=0) - 1e-12) and np.all(weights <= probed.max(axis=0) + 1e-12)
    unbounded = best_mixture(FavoursLast(), natural, 0.02, np.array([[0.0] * 3, [1.0] * 3]), candidates=20_000)[0]
    assert unbounded[2] > probed[:, 2].max()  # the fit alone would leave the probed range
    narrow = np.array([[0.6, 0.3, 0.1], [0.58, 0.3, 0.12]])  # hardly any candidate falls inside: the probed count
    weights, preferred = best_mixture(FavoursLast(), natural, 0.02, narrow, candidates=1000, top=1)
    assert preferred and np.allclose(weights, narrow[1])


def test_resample_fills_each_component_to_its_quota():
    rng = np.random.default_rng(0)
    components = rng.integers(0, 3, 3000)
    lengths = rng.integers(50, 500, 3000)
    weights = np.array([0.6, 0.3, 0.1])
    order, quotas = resample(components, lengths, weights, 200_000, "tokens", seed=5)
    assert len(set(order.tolist())) == len(order) and quotas.sum() == 200_000
    assert np.allclose(quotas / quotas.sum(), weights, atol=1e-4)
    filled = np.bincount(components[order], weights=lengths[order], minlength=3)
    assert np.all(filled >= quotas) and np.all(filled < quotas + 500)  # the last document of a quota is not cut
    docs, quotas = resample(components, None, weights, 900, "docs", seed=5)
    assert len(docs) == 900 and np.bincount(components[docs], minlength=3).tolist() == quotas.tolist() == [540, 270, 90]
    # a component that cannot hold its share gives the rest to the others
    small = np.array([0] * 50 + [1] * 2000)
    order, quotas = resample(small, None, np.array([0.9, 0.1]), 500, "docs", seed=0)
    assert quotas.tolist() == [50, 450] and len(order) == 500
    assert np.array_equal(order, resample(small, None, np.array([0.9, 0.1]), 500, "docs", seed=0)[0])


def _chunks(name: str, n: int, size: int = 400) -> list[str]:
    """`n` pieces of `size` characters of a sample domain, shuffled (so a held-out piece is like the others)."""
    text = "\n".join(r["text"] for r in sample_records(name, 400))
    pieces = [text[i:i + size] for i in range(0, len(text) - size, size)]
    return [pieces[i] for i in np.random.default_rng(0).permutation(len(pieces))[:n]]


def test_search_moves_weight_toward_the_domain_of_the_reference_set(tmp_path):
    from selectflow.config import Budget
    from selectflow.stages.mixture import (
        mixture_fit_stage,
        mixture_plan_stage,
        mixture_sample_stage,
        mixture_validation_stage,
        select_mixture_stage,
    )
    from selectflow.stages.probe import probe_stage
    from selectflow.stages.registry import MIXTURE_PROBE
    from selectflow.stages.selection import SelectionContext
    from selectflow.store import ArtifactStore

    prose, code = _chunks("prose.jsonl.zst", 500), _chunks("code.jsonl.zst", 400)
    store = ArtifactStore(tmp_path)
    pool_docs = docs_table(prose[:400] + code, ["prose"] * 400 + ["code"] * 400, "toy")
    pool = [store.build("pool", {}, ["toy"], "test", lambda writer: writer.write("docs", pool_docs))]
    reference = docs_table(prose[400:], ["prose"] * 100, "ref")  # the target: held-out prose
    probe = ProbeConfig(model=ProbeModelConfig(hidden=32, layers=1, heads=2, intermediate=64, seq_len=64),
                        batch_size=8, evals=2, eval_tokens=4096, learning_rate=3e-3, cpu_threads=1, device="cpu")
    options = MixtureSelector(mixtures=8, probe_tokens=65_536, concentration=0.5, floor=0.05, candidates=2000,
                              top=20)
    plan = mixture_plan_stage(store, pool, None, options)
    planned = plan.manifest()["stats"]
    assert planned["components"] == ["domain code", "domain prose"] and len(planned["mixtures"]) == 8
    def probed(label, weights, sample_seed, seed):
        sample = mixture_sample_stage(store, pool, plan, weights, sample_seed, label, options)
        return probe_stage(store, label, [sample], reference, None, probe, seed, options.probe_tokens,
                           stage=MIXTURE_PROBE.name)

    probes = [probed(f"mixture {i}", weights, i, 0) for i, weights in enumerate(planned["mixtures"])]
    fit_ref = mixture_fit_stage(store, plan, probes, options)
    fit = fit_ref.manifest()["stats"]
    prose_share = planned["natural"][1]
    assert fit["preferred"] and fit["weights"][1] > prose_share + 0.2  # the fit asks for more prose
    assert fit["spearman_cv"] > 0.5 and fit["predicted_bpb"] < fit["predicted_natural_bpb"]
    compared = {"proposed": fit["weights"], "natural": planned["natural"], "uniform": [0.5, 0.5]}
    checked = {name: {seed: probed(f"{name} mixture", weights, 100 + seed, seed) for seed in (0, 1)}
               for name, weights in compared.items()}
    validation = mixture_validation_stage(store, fit_ref, checked, 0.95).manifest()["stats"]
    beats = validation["differences"]["proposed - uniform"]["reference_bpb"]
    assert beats["high"] < 0 and "beats the uniform mixture" in validation["verdict"]  # prose 0.9 vs 0.5
    budget = Budget(budget=60_000, budget_unit="tokens", token_counter="bytes")
    selected = select_mixture_stage(store, pool, budget, options, SelectionContext(mixture=fit_ref))
    stats = selected.manifest()["stats"]
    held = stats["tokens_by_component"]
    assert held["domain prose"] / sum(held.values()) == pytest.approx(fit["weights"][1], abs=0.03)
    decisions = selected.read("decisions").to_pylist()
    assert all("quota of domain" in row["reason"] for row in decisions) and stats["docs_out"] > 0


def test_a_probe_sample_holds_its_quotas_drawn_from_every_pool_shard(tmp_path):
    from selectflow.stages.mixture import mixture_plan_stage, mixture_sample_stage
    from selectflow.store import ArtifactStore

    store = ArtifactStore(tmp_path)
    shards = [docs_table(["a" * 99] * 300, ["short"] * 300, "s"), docs_table(["b" * 199] * 300, ["long"] * 300, "l")]
    pool = [store.build("pool", {"shard": i}, ["toy"], "test", lambda writer, d=d: writer.write("docs", d))
            for i, d in enumerate(shards)]
    options = MixtureSelector(mixtures=4, probe_tokens=20_000)
    plan = mixture_plan_stage(store, pool, None, options)
    assert plan.read("members").num_rows == 600 and plan.manifest()["stats"]["natural"] == [pytest.approx(2 / 3),
                                                                                           pytest.approx(1 / 3)]
    sample = mixture_sample_stage(store, pool, plan, [0.25, 0.75], 3, "mixture x", options)
    docs, decisions = sample.read("docs"), sample.read("decisions").to_pylist()
    by_domain = {d: sum(len(t) + 1 for t, k in zip(docs["text"].to_pylist(), docs["domain"].to_pylist()) if k == d)
                 for d in ("long", "short")}
    assert by_domain == {"long": 5000, "short": 15000}  # 25 x 200 bytes and 150 x 100: each quota exactly filled
    assert [row["doc_id"] for row in decisions] == docs["doc_id"].to_pylist()  # only the sampled documents
    assert all(row["decision"] == "selected" and "in the probe sample of mixture x" in row["reason"]
               for row in decisions)
    assert sample.key == mixture_sample_stage(store, pool, plan, [0.25, 0.75], 3, "mixture x", options).key
