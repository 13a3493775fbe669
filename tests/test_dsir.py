"""DSIR: importance weights toward the reference set, resampling under the budget, and the stages with lineage."""

import numpy as np
import pytest
from conftest import docs_table, fitted_mixture

from selectflow.config import Budget, DsirSelector, NgramFeatures
from selectflow.select.dsir import importance_resample, log_importance, log_probabilities, ngram_counts
from selectflow.stages.select_dsir import ngram_features_stage, select_dsir_stage
from selectflow.stages.selection import SelectionContext
from selectflow.store import ArtifactStore

KITCHEN = "butter flour oven simmer garlic onion whisk dough sugar salt pepper roast bake stir".split()
KERNEL = "kernel module driver interrupt scheduler memory page thread mutex syscall buffer device".split()
SHARED = "the a of and to in is it for with on that this by".split()


def texts_of(words: list[str], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words + SHARED, int(rng.integers(20, 60)))) for _ in range(count)]


def test_weights_favour_the_target_domain_and_the_sample_takes_it():
    pool = texts_of(KITCHEN, 200, 0) + texts_of(KERNEL, 200, 1)
    reference = texts_of(KERNEL, 50, 2)
    counts = ngram_counts(pool, 4096, 2)
    raw = log_probabilities(counts.sum(axis=0).A1, 1.0)
    target = log_probabilities(ngram_counts(reference, 4096, 2).sum(axis=0).A1, 1.0)
    weights = log_importance(counts, target, raw)
    assert weights[200:].min() > weights[:200].max()  # every kernel document outweighs every kitchen one
    chosen = importance_resample(weights, None, 100, "docs", seed=0)
    assert len(chosen) == len(set(chosen.tolist())) == 100
    assert (chosen >= 200).mean() == 1.0


def test_with_a_reference_like_the_pool_the_sample_keeps_the_mix():
    pool = texts_of(KITCHEN, 200, 0) + texts_of(KERNEL, 200, 1)
    reference = texts_of(KITCHEN, 50, 3) + texts_of(KERNEL, 50, 4)
    counts = ngram_counts(pool, 4096, 1)
    weights = log_importance(counts, log_probabilities(ngram_counts(reference, 4096, 1).sum(axis=0).A1, 1.0),
                             log_probabilities(counts.sum(axis=0).A1, 1.0))
    chosen = importance_resample(weights, None, 200, "docs", seed=0)
    assert 0.25 < (chosen >= 200).mean() < 0.75


def test_normalized_weights_do_not_favour_short_documents():
    from scipy.stats import spearmanr

    from selectflow.select.dsir import length_normalized

    rng = np.random.default_rng(0)
    pool = [" ".join(rng.choice(KITCHEN + SHARED, int(n))) for n in rng.integers(5, 400, 300)]
    reference = texts_of(KERNEL, 50, 2)  # unlike the whole pool: every weight is negative
    counts = ngram_counts(pool, 4096, 2)
    weights = log_importance(counts, log_probabilities(ngram_counts(reference, 4096, 2).sum(axis=0).A1, 1.0),
                             log_probabilities(counts.sum(axis=0).A1, 1.0))
    lengths = [len(text.split()) for text in pool]
    assert spearmanr(weights, lengths)[0] < -0.9  # summed: the shorter, the likelier
    assert abs(spearmanr(length_normalized(weights, counts), lengths)[0]) < 0.3


def test_resampling_is_seeded_and_meets_a_tokens_budget():
    weights = np.random.default_rng(0).normal(size=300)
    lengths = np.random.default_rng(1).integers(10, 100, 300)
    first = importance_resample(weights, lengths, 2000, "tokens", seed=5)
    assert np.array_equal(first, importance_resample(weights, lengths, 2000, "tokens", seed=5))
    assert not np.array_equal(first, importance_resample(weights, lengths, 2000, "tokens", seed=6))
    assert lengths[first[:-1]].sum() < 2000 <= lengths[first].sum()
    with pytest.raises(ValueError, match="dsir: a budget of 99999 tokens exceeds the whole pool"):
        importance_resample(weights, lengths, 99_999, "tokens", seed=0)


def test_stages_select_the_reference_domain_with_a_weight_per_document(tmp_path):
    store = ArtifactStore(tmp_path)
    kitchen, kernel = texts_of(KITCHEN, 120, 0), texts_of(KERNEL, 120, 1)
    shards = [docs_table(kitchen[:60] + kernel[:60], ["kitchen"] * 60 + ["kernel"] * 60, "a"),
              docs_table(kitchen[60:] + kernel[60:], ["kitchen"] * 60 + ["kernel"] * 60, "b")]
    pool = [store.build("pool", {"shard": i}, ["toy"], "test", lambda w, t=t: w.write("docs", t))
            for i, t in enumerate(shards)]
    reference = [store.build("reference", {}, ["toy"], "test",
                             lambda w: w.write("docs", docs_table(texts_of(KERNEL, 30, 2), ["kernel"] * 30, "r")))]
    options = DsirSelector(features=NgramFeatures(buckets=2048))
    ngrams = [ngram_features_stage(store, ref, options.features) for ref in pool]
    context = SelectionContext(ngrams=ngrams, reference_ngrams=[ngram_features_stage(store, reference[0],
                                                                                     options.features)])
    ref = select_dsir_stage(store, pool, Budget(budget=50), options, context)
    selected = ref.read("docs")
    assert selected.num_rows == 50 and set(selected["domain"].to_pylist()) == {"kernel"}
    decisions = ref.read("decisions").to_pylist()
    assert len(decisions) == 240 and all(d["score"] is not None for d in decisions)
    picked = next(d for d in decisions if d["decision"] == "selected")
    assert "log importance weight" in picked["reason"] and "drawn #" in picked["reason"]
    assert ref.manifest()["stats"]["docs_out"] == 50
    assert select_dsir_stage(store, pool, Budget(budget=50), options, context).key == ref.key  # cached
    summed = select_dsir_stage(store, pool, Budget(budget=50), options.model_copy(update={"length": "sum"}), context)
    assert summed.key != ref.key and set(summed.read("docs")["domain"].to_pylist()) == {"kernel"}
    with pytest.raises(ValueError, match="needs the n-gram counts"):
        select_dsir_stage(store, pool, Budget(budget=50), options, SelectionContext())


def test_stages_resample_inside_each_domains_quota(tmp_path):
    """Inside quotas DSIR cannot take only the reference's domain: each domain gets its quota (here its weight in
    the fitted mixture, or an equal share), filled with the documents most like the reference."""
    store = ArtifactStore(tmp_path)
    kitchen, kernel = texts_of(KITCHEN, 120, 0), texts_of(KERNEL, 120, 1)
    # a few kitchen documents that talk about kernels: inside the kitchen quota, the reference prefers them
    kitchen[:10] = [text + " " + " ".join(KERNEL * 3) for text in kitchen[:10]]
    pool = [store.build("pool", {}, ["toy"], "test", lambda w: w.write("docs", docs_table(
        kitchen + kernel, ["kitchen"] * 120 + ["kernel"] * 120, "a")))]
    reference = store.build("reference", {}, ["toy"], "test",
                            lambda w: w.write("docs", docs_table(texts_of(KERNEL, 30, 2), ["kernel"] * 30, "r")))
    features = NgramFeatures(buckets=2048)
    context = SelectionContext(ngrams=[ngram_features_stage(store, pool[0], features)],
                               reference_ngrams=[ngram_features_stage(store, reference, features)],
                               mixture=fitted_mixture(store, {"domain kernel": 0.3, "domain kitchen": 0.7}))
    options = DsirSelector(features=features, strata="domain", quota="mixture")
    ref = select_dsir_stage(store, pool, Budget(budget=40), options, context)
    picked = ref.read("docs")
    assert picked["domain"].to_pylist().count("kitchen") == 28 and picked.num_rows == 40
    assert set(picked["doc_id"].to_pylist()) >= {f"a{i:04d}" for i in range(10)}  # the kernel-like kitchen ones
    strata = ref.manifest()["stats"]["strata"]
    assert {name: (s["quota"], s["held"], s["selected"]) for name, s in strata.items()} == {
        "domain kernel": (12, 120, 12), "domain kitchen": (28, 120, 28)}
    decisions = ref.read("decisions").to_pylist()
    assert len(decisions) == 240 and {d["group"] for d in decisions} == set(strata)
    assert all(d["reason"].startswith(f"{d['group']} (quota {strata[d['group']]['quota']} of its 120 documents): ")
               for d in decisions)
    uniform = select_dsir_stage(store, pool, Budget(budget=40), options.model_copy(update={"quota": "uniform"}),
                                context)
    assert uniform.key != ref.key and uniform.read("docs")["domain"].to_pylist().count("kitchen") == 20
    clusters = SelectionContext(ngrams=context.ngrams, reference_ngrams=context.reference_ngrams,
                                mixture=fitted_mixture(store, {"cluster 0": 0.5, "cluster 1": 0.5}))
    with pytest.raises(ValueError, match="strata .* are not the fitted mixture's components"):
        select_dsir_stage(store, pool, Budget(budget=40), options, clusters)
    with pytest.raises(ValueError, match="dsir quota 'mixture' needs the fitted mixture search"):
        select_dsir_stage(store, pool, Budget(budget=40), options, SelectionContext(
            ngrams=context.ngrams, reference_ngrams=context.reference_ngrams))
