"""Quotas per stratum, and ZIP run inside them: the least redundant subset keeps the pool's mix."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import docs_table
from hypothesis import given, settings
from hypothesis import strategies as st

from selectflow.config import Budget, SelectionConfig, ZipSelector
from selectflow.select.baselines import BudgetError
from selectflow.select.strata import stratum_quotas
from selectflow.stages.select_zip import zip_stage
from selectflow.stages.selection import SelectionContext
from selectflow.store import ArtifactStore


def test_pool_quotas_follow_the_pool_and_uniform_quotas_fill_small_strata_first():
    assert stratum_quotas(np.array([600, 300, 100]), 100, "pool").tolist() == [60, 30, 10]
    # uniform: 100 / 3 each, but the last holds only 10; the rest is shared by the other two
    assert stratum_quotas(np.array([600, 300, 10]), 100, "uniform").tolist() == [45, 45, 10]
    assert stratum_quotas(np.array([5, 0, 5]), 4, "uniform").tolist() == [2, 0, 2]
    with pytest.raises(BudgetError, match="exceeds the 10 the strata hold"):
        stratum_quotas(np.array([5, 5]), 11, "pool")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=12), st.floats(0, 1), st.sampled_from(["pool", "uniform"]))
def test_quotas_sum_to_the_budget_and_never_exceed_a_stratum(sizes, fraction, rule):
    sizes = np.array(sizes)
    budget = int(fraction * sizes.sum())
    quotas = stratum_quotas(sizes, budget, rule)
    assert quotas.sum() == budget and (quotas >= 0).all() and (quotas <= sizes).all()


def redundant_and_diverse(seed: int) -> tuple[list[str], list[str]]:
    """'boiler': near-copies of one notice (very compressible); 'words': random word salad (hardly at all)."""
    rng = np.random.default_rng(seed)
    notice = "This file is part of the project and is distributed under the terms of the licence. "
    boiler = [notice * 4 + f"Copyright {1990 + i % 30} holder {i}." for i in range(120)]
    vocabulary = [f"w{i}" for i in range(5000)]
    words = [" ".join(rng.choice(vocabulary, 60)) for _ in range(120)]
    return boiler + words, ["boiler"] * 120 + ["words"] * 120


def test_stratified_zip_keeps_the_pool_mix_where_plain_zip_collapses(tmp_path):
    store = ArtifactStore(tmp_path)
    texts, domains = redundant_and_diverse(0)
    pool = [store.build("pool", {}, ["toy"], "test", lambda w: w.write("docs", docs_table(texts, domains, "d")))]
    budget = Budget(budget=sum(len(t.encode()) for t in texts) // 4, budget_unit="tokens", token_counter="bytes")
    small = {"k1": 100, "k2": 5, "k3": 5}  # k2 = k3: no candidate is discarded unpicked

    def domain_bytes(ref) -> dict[str, int]:
        docs = ref.read("docs").to_pylist()
        return {d: sum(r["n_bytes"] for r in docs if r["domain"] == d) for d in ("boiler", "words")}

    plain = domain_bytes(zip_stage(store, pool, budget, ZipSelector(**small), SelectionContext()))
    assert plain["boiler"] < 0.1 * plain["words"]  # the least redundant subset is one domain
    stratified_ref = zip_stage(store, pool, budget, ZipSelector(**small, strata="domain"), SelectionContext())
    stratified = domain_bytes(stratified_ref)
    held = {d: sum(len(t.encode()) for t, dom in zip(texts, domains) if dom == d) for d in ("boiler", "words")}
    for domain, size in held.items():  # each domain's quota is its share of the pool, cut at the document reaching it
        share = budget.budget * size / sum(held.values())
        assert share <= stratified[domain] < share + 400
    strata = stratified_ref.manifest()["stats"]["strata"]
    assert sum(s["quota"] for s in strata.values()) == budget.budget
    assert {name: s["held"] for name, s in strata.items()} == {f"domain {d}": size for d, size in held.items()}
    decisions = stratified_ref.read("decisions").to_pylist()
    assert all(d["reason"].startswith(f"{d['group']} (quota {strata[d['group']]['quota']} of its ") for d in decisions)
    assert any("selected in round" in d["reason"] for d in decisions if d["group"] == "domain boiler")
    cut = [d for d in decisions if "beyond the quota, though selected in round" in d["reason"]]
    assert cut and all(d["decision"] == "rejected" for d in cut)  # ZIP's last round went past the quota
    rounds = json.loads((Path(stratified_ref.path) / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))  # one sequence, stratum after stratum
    assert [r["stratum"] for r in rounds] == sorted(r["stratum"] for r in rounds)
    assert np.all(np.diff([r["n_selected"] for r in rounds]) > 0)  # selected so far, over all strata


def test_strata_need_a_tokens_budget():
    with pytest.raises(ValueError, match="zip strata 'cluster' need a tokens budget"):
        SelectionConfig(budget=100, selectors=[{"method": "zip", "strata": "cluster"}])
    with pytest.raises(ValueError, match="needs the cluster stage's artifact"):
        zip_stage(ArtifactStore("/nonexistent"), [], Budget(budget=10, budget_unit="tokens"),
                  ZipSelector(strata="cluster"), SelectionContext())


def test_reference_quotas_follow_the_reference_set_over_the_pool_clusters(tmp_path):
    from selectflow.config import ClusterConfig, EmbeddingConfig
    from selectflow.stages.cluster import cluster_stage, embed_stage, embedding_basis_stage, reference_clusters_stage

    store = ArtifactStore(tmp_path)
    rng = np.random.default_rng(0)
    topics = {"stars": [f"star{i}" for i in range(40)], "ships": [f"ship{i}" for i in range(40)],
              "bread": [f"bread{i}" for i in range(40)]}
    texts = [" ".join(rng.choice(words, 40)) for words in topics.values() for _ in range(80)]
    domains = [topic for topic in topics for _ in range(80)]
    pool = [store.build("pool", {}, ["toy"], "test", lambda w: w.write("docs", docs_table(texts, domains, "d")))]
    reference = [store.build("reference", {}, ["toy"], "test", lambda w: w.write("docs", docs_table(
        [" ".join(rng.choice(topics["ships"], 40)) for _ in range(20)], ["ships"] * 20, "r")))]
    embedding = EmbeddingConfig(method="tfidf", dim=8, features=1024, svd_sample=240)
    basis = embedding_basis_stage(store, pool, embedding)
    clusters = cluster_stage(store, [embed_stage(store, pool[0], embedding, basis)],
                             ClusterConfig(embedding=embedding, k=3, n_init=2))
    assigned = reference_clusters_stage(store, clusters, [embed_stage(store, reference[0], embedding, basis)])
    stats = assigned.manifest()["stats"]
    assert stats["docs"] == 20 and stats["clusters_reached"] == 1
    budget = Budget(budget=sum(len(t.encode()) for t in texts) // 6, budget_unit="tokens", token_counter="bytes")
    options = ZipSelector(k1=100, k2=5, k3=5, strata="cluster", quota="reference")
    ref = zip_stage(store, pool, budget, options, SelectionContext(clusters=clusters, reference_clusters=assigned))
    picked = ref.read("docs")["domain"].to_pylist()
    assert set(picked) == {"ships"}  # the whole budget goes to the reference set's cluster, which holds it
    with pytest.raises(ValueError, match="needs the reference set's clusters"):
        zip_stage(store, pool, budget, options, SelectionContext(clusters=clusters))
    with pytest.raises(ValueError, match="quota 'reference' needs strata 'cluster'"):
        ZipSelector(quota="reference")


def test_reference_quotas_spill_by_pool_share_once_the_reference_strata_are_full():
    quotas = stratum_quotas(np.array([100, 300, 600]), 400, "reference", np.array([0, 0, 0]) + [5, 0, 0])
    assert quotas.tolist() == [100, 100, 200]  # stratum 0 is full; the other 300 follow the pool's 300 : 600
    with pytest.raises(ValueError, match="needs the target count"):
        stratum_quotas(np.array([1, 2]), 2, "reference")
