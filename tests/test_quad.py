"""QUAD bandit selection (UCB / EXP3) and the random / top-k baselines, on synthetic influence (no model)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from selectflow.config import QuadConfig
from selectflow.select.baselines import BudgetError, random_select, topk_select
from selectflow.select.quad import QuadError, neighbours_from_arrays, quad_select, round_metrics, ucb_scores


def per_cluster_score(clusters: np.ndarray, value: dict[int, float], noise: float = 0.0, seed: int = 0):
    """score_fn: a fixed influence per cluster (+ fixed per-document noise); counts the documents it scores."""
    doc_noise = np.random.default_rng(seed).normal(0.0, noise, len(clusters)) if noise else np.zeros(len(clusters))
    calls = []

    def score(indices: np.ndarray) -> np.ndarray:
        calls.append(np.asarray(indices).copy())
        return np.array([value[int(clusters[i])] for i in indices]) + doc_noise[indices]

    score.calls = calls
    return score


def blocks_of(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


# ----------------------------------------------------------------------------------------------- UCB, as published


def test_ucb_scores_formula():
    scores = ucb_scores(np.array([0.25, 0.0]), np.array([2, 0]), global_pulls=4, alpha=0.5)
    assert scores[0] == pytest.approx(0.125 + 0.5 * math.sqrt(2 * math.log(4) / 3))
    assert scores[1] == pytest.approx(0.5 * math.sqrt(2 * math.log(4) / 1))
    assert ucb_scores(np.ones(3), np.ones(3), global_pulls=0, alpha=1.0).tolist() == [0.0, 0.0, 0.0]


def hand_case(max_rounds: int):
    clusters = blocks_of([20, 20, 20, 20])
    neighbours = {0: [(0, 0.0), (1, 0.1)], 1: [(1, 0.0), (0, 0.1)], 2: [(2, 0.0), (3, 0.25)], 3: [(3, 0.0)]}
    score = per_cluster_score(clusters, {0: 0.3, 1: -0.1, 2: 0.2, 3: 0.05})
    cfg = QuadConfig(alpha=0.5, pulls_per_round=2, samples_per_pull=2, threshold=0.0, block_size=1, budget=50,
                     max_rounds=max_rounds)
    return quad_select(clusters, neighbours, score, cfg, d_max=0.2), score


def test_ucb_hand_computed_rounds():
    result, score = hand_case(max_rounds=3)
    r0, r1, r2 = result.rounds
    # round 0 pulls the first B clusters; all scores are 0 before any update
    assert r0["pulled"] == [0, 1] and r0["scores"] == [0.0, 0.0]
    assert r0["rewards"] == pytest.approx([0.3, -0.1])
    # sharing 0 <-> 1 at d = 0.1 < d_max = 0.2 with weight 1 - 0.1/0.2 = 0.5; pulls and N count every update
    assert r0["shared_updates"] == 4 and r0["global_pulls"] == 4
    reward_sum = {0: 0.3 - 0.1 * 0.5, 1: 0.3 * 0.5 - 0.1}
    unpulled = 0.5 * math.sqrt(2 * math.log(4) / 1)
    expected_after_round0 = {0: reward_sum[0] / 2 + 0.5 * math.sqrt(2 * math.log(4) / 3),
                             1: reward_sum[1] / 2 + 0.5 * math.sqrt(2 * math.log(4) / 3), 2: unpulled, 3: unpulled}
    assert max(expected_after_round0[0], expected_after_round0[1]) < unpulled  # so round 1 pulls 2 and 3 (tie: id)
    assert r1["pulled"] == [2, 3]
    assert r1["scores"] == pytest.approx([expected_after_round0[2], expected_after_round0[3]], abs=1e-12)
    # 2 and 3 are at d = 0.25 >= d_max: no sharing between them
    assert r1["shared_updates"] == 2 and r1["global_pulls"] == 6
    expected_after_round1 = {0: reward_sum[0] / 2 + 0.5 * math.sqrt(2 * math.log(6) / 3),
                             1: reward_sum[1] / 2 + 0.5 * math.sqrt(2 * math.log(6) / 3),
                             2: 0.2 + 0.5 * math.sqrt(2 * math.log(6) / 2),
                             3: 0.05 + 0.5 * math.sqrt(2 * math.log(6) / 2)}
    ranked = sorted(expected_after_round1, key=lambda c: -expected_after_round1[c])[:2]
    assert r2["pulled"] == ranked == [2, 3]
    assert r2["scores"] == pytest.approx([expected_after_round1[c] for c in ranked], abs=1e-12)
    # positive rewards admit one block (block_size 1); cluster 1's negative reward admits nothing
    assert r0["admitted"] == {0: 1} and r1["admitted"] == {2: 1, 3: 1}
    assert len(score.calls) == 3 and all(len(call) == 4 for call in score.calls)  # one batched call per round


def test_neighbour_sharing_state():
    result, _ = hand_case(max_rounds=1)
    state = {c["cluster"]: c for c in result.clusters}
    assert state[1]["shared_reward_sum"] == pytest.approx(0.3 * 0.5 - 0.1)
    assert state[0]["shared_reward_sum"] == pytest.approx(0.3 - 0.1 * 0.5)
    assert state[0]["shared_pulls"] == state[1]["shared_pulls"] == 2
    assert state[2]["shared_pulls"] == 0 and state[0]["pulls"] == 1 and state[0]["mean_reward"] == pytest.approx(0.3)


def test_neighbours_from_arrays_and_missing_self():
    table = neighbours_from_arrays(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0.0, 0.05, 0.0]))
    assert table == {0: [(0, 0.0), (1, 0.05)], 1: [(1, 0.0)]}
    clusters = blocks_of([10, 10])
    cfg = QuadConfig(pulls_per_round=1, samples_per_pull=1, threshold=0.0, budget=5, max_rounds=1)
    result = quad_select(clusters, {}, per_cluster_score(clusters, {0: 1.0, 1: 1.0}), cfg, d_max=0.2)
    assert result.clusters[0]["shared_pulls"] == 1  # itself, though the table does not list it


def test_positive_clusters_admitted_negative_never():
    clusters = blocks_of([30] * 10)
    value = {c: (0.01 if c % 2 == 0 else -0.01) for c in range(10)}
    cfg = QuadConfig(pulls_per_round=3, samples_per_pull=3, threshold=0.0, block_size=10, budget=120, max_rounds=50)
    result = quad_select(clusters, {}, per_cluster_score(clusters, value, noise=0.003), cfg, d_max=0.2)
    picked = set(clusters[result.selected].tolist())
    assert picked and picked <= {0, 2, 4, 6, 8}
    assert result.stopped == "budget" and len(result.selected) == 120
    assert np.all(result.docs.admit_reward[result.selected] > 0)
    assert not result.docs.selected[np.isin(clusters, [1, 3, 5, 7, 9])].any()


def test_exhausted_clusters_are_not_pulled_again():
    clusters = blocks_of([2, 40, 40])  # cluster 0: two documents, fully scored by its first pull
    cfg = QuadConfig(pulls_per_round=2, samples_per_pull=2, threshold=0.0, block_size=5, budget=60, max_rounds=40)
    result = quad_select(clusters, {}, per_cluster_score(clusters, {0: 1.0, 1: 0.5, 2: 0.4}), cfg, d_max=0.2)
    pulls_of_0 = [r["round"] for r in result.rounds if 0 in r["pulled"]]
    assert pulls_of_0 == [0]
    assert result.clusters[0]["exhausted"] and result.clusters[0]["admitted_docs"] == 2
    assert len(result.selected) == 60


def test_all_exhausted_stops():
    clusters = blocks_of([6, 6])
    cfg = QuadConfig(pulls_per_round=2, samples_per_pull=2, threshold=0.0, block_size=2, budget=12, max_rounds=50)
    result = quad_select(clusters, {}, per_cluster_score(clusters, {0: -1.0, 1: -1.0}), cfg, d_max=0.2)
    assert result.stopped == "exhausted" and len(result.rounds) == 3 and len(result.selected) == 0
    assert result.scored == 12 and result.docs.scored.all()


# ----------------------------------------------------------------------------------------------- beyond the paper


def test_a_cluster_share_cap_spreads_the_budget_over_clusters():
    clusters = blocks_of([100, 100, 100, 100])  # cluster 0 has the highest influence, all are positive
    value = {0: 1.0, 1: 0.5, 2: 0.4, 3: 0.3}
    uncapped = QuadConfig(pulls_per_round=1, samples_per_pull=1, threshold=0.0, block_size=10, budget=80, alpha=0.0)
    taken = np.bincount(clusters[quad_select(clusters, {}, per_cluster_score(clusters, value), uncapped,
                                             d_max=0.2).selected], minlength=4)
    assert taken[0] == 80  # as published: the best cluster takes the whole budget
    capped = uncapped.model_copy(update={"max_cluster_share": 0.25})
    result = quad_select(clusters, {}, per_cluster_score(clusters, value), capped, d_max=0.2)
    assert np.bincount(clusters[result.selected], minlength=4).tolist() == [20, 20, 20, 20]
    assert result.stopped == "budget" and result.clusters[0]["exhausted"]


def test_reward_scale_divides_every_reward_and_keeps_the_choices():
    clusters = blocks_of([30] * 6)
    value = {c: 0.001 * (c - 2) for c in range(6)}
    cfg = QuadConfig(pulls_per_round=2, samples_per_pull=3, threshold=0.0, block_size=5, budget=40, alpha=0.0)
    raw = quad_select(clusters, {}, per_cluster_score(clusters, value), cfg, d_max=0.2)
    scaled = quad_select(clusters, {}, per_cluster_score(clusters, value), cfg, d_max=0.2, reward_scale=0.001)
    assert np.array_equal(raw.selected, scaled.selected)
    for a, b in zip(raw.rounds, scaled.rounds):
        assert b["rewards"] == pytest.approx([r / 0.001 for r in a["rewards"]])


def test_budget_aware_block_and_effective_clusters():
    from selectflow.stages.select_quad import budget_aware_block, effective_clusters

    lengths = np.full(1000, 200)
    assert budget_aware_block(QuadConfig(budget=640), lengths, 64) == 10
    assert budget_aware_block(QuadConfig(budget=200 * 640, budget_unit="tokens"), lengths, 64) == 10
    assert budget_aware_block(QuadConfig(budget=5), lengths, 64) == 1
    assert effective_clusters(np.array([0, 1, 2, 3]), np.ones(4)) == pytest.approx(4.0)
    assert effective_clusters(np.array([5, 5, 5, 6]), np.array([1, 1, 1, 3])) == pytest.approx(2.0)
    assert effective_clusters(np.array([], np.int64), np.array([])) is None


# ----------------------------------------------------------------------------------------------- budget, determinism


def test_docs_budget_exact_and_selection_shuffled():
    clusters = blocks_of([25] * 6)
    cfg = QuadConfig(pulls_per_round=2, samples_per_pull=2, threshold=0.0, block_size=10, budget=37)
    result = quad_select(clusters, {}, per_cluster_score(clusters, {c: 0.1 for c in range(6)}), cfg, d_max=0.2)
    assert len(result.selected) == 37 and len(set(result.selected.tolist())) == 37
    assert sorted(result.selected.tolist()) == sorted(result.admission_order.tolist())
    assert result.selected.tolist() != result.admission_order.tolist()
    assert result.docs.selected.sum() == 37 and result.stopped == "budget"


def test_tokens_budget_stops_at_the_document_that_reaches_it():
    rng = np.random.default_rng(3)
    clusters = blocks_of([40] * 5)
    lengths = rng.integers(5, 60, len(clusters))
    cfg = QuadConfig(pulls_per_round=2, samples_per_pull=2, threshold=0.0, block_size=15, budget=1000,
                     budget_unit="tokens")
    result = quad_select(clusters, {}, per_cluster_score(clusters, {c: 0.1 for c in range(5)}), cfg, 0.2, lengths)
    total = int(lengths[result.selected].sum())
    assert total == result.tokens >= 1000
    assert total - lengths[result.admission_order[-1]] < 1000
    assert result.rounds[-1]["selected_tokens"] == total


def test_deterministic_for_a_seed():
    clusters = blocks_of([30] * 8)
    value = {c: 0.01 * (c - 3) for c in range(8)}
    cfg = QuadConfig(pulls_per_round=3, samples_per_pull=2, threshold=0.0, block_size=7, budget=50, seed=5)
    first = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.01), cfg, d_max=0.2)
    again = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.01), cfg, d_max=0.2)
    other = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.01), cfg.model_copy(update={"seed": 6}), 0.2)
    assert first.selected.tolist() == again.selected.tolist() and first.rounds == again.rounds
    assert first.selected.tolist() != other.selected.tolist()
    exp3 = cfg.model_copy(update={"bandit": "exp3"})
    a = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.01), exp3, d_max=0.2)
    b = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.01), exp3, d_max=0.2)
    assert a.selected.tolist() == b.selected.tolist() and a.rounds == b.rounds


def test_budget_larger_than_pool_is_a_clear_error():
    clusters = blocks_of([10, 10])
    score = per_cluster_score(clusters, {0: 1.0, 1: 1.0})
    with pytest.raises(QuadError, match=r"budget of 21 docs exceeds the pool of 20 documents.*lower budget"):
        quad_select(clusters, {}, score, QuadConfig(budget=21), d_max=0.2)
    with pytest.raises(QuadError, match=r"budget of 500 tokens exceeds the whole pool \(20 documents, 200 tokens\)"):
        quad_select(clusters, {}, score, QuadConfig(budget=500, budget_unit="tokens"), 0.2, np.full(20, 10))


def test_bad_score_fn_is_reported():
    clusters = blocks_of([10, 10])
    with pytest.raises(QuadError, match="returned 1 scores for"):
        quad_select(clusters, {}, lambda idx: np.zeros(1), QuadConfig(budget=5, threshold=0.0), d_max=0.2)
    with pytest.raises(QuadError, match="non-finite"):
        quad_select(clusters, {}, lambda idx: np.full(len(idx), np.nan), QuadConfig(budget=5, threshold=0.0), d_max=0.2)
    with pytest.raises(QuadError, match="needs a numeric threshold"):
        quad_select(clusters, {}, lambda idx: np.zeros(len(idx)), QuadConfig(budget=5), d_max=0.2)


# ----------------------------------------------------------------------------------------------- EXP3 and comparisons


def test_exp3_concentrates_on_good_arms():
    clusters = blocks_of([400] * 10)
    good = {0, 7}
    value = {c: (0.01 if c in good else -0.01) for c in range(10)}
    cfg = QuadConfig(bandit="exp3", pulls_per_round=2, samples_per_pull=1, threshold=0.0, block_size=1,
                     budget=3000, max_rounds=150, exp3_gamma=0.3, seed=1)
    result = quad_select(clusters, {}, per_cluster_score(clusters, value, 0.002), cfg, d_max=0.2)
    assert result.stopped == "max_rounds"

    def good_share(rounds):
        pulled = [c for r in rounds for c in r["pulled"]]
        return sum(c in good for c in pulled) / len(pulled)

    # uniform pulling would give the 2 good arms of 10 a 0.2 share
    early, late = good_share(result.rounds[:20]), good_share(result.rounds[-50:])
    assert late > 0.5 and late > early + 0.2
    weights = {c["cluster"]: c["exp3_log_weight"] for c in result.clusters}
    assert min(weights[c] for c in good) > max(w for c, w in weights.items() if c not in good)
    assert result.rounds[-1]["probabilities"] and max(result.rounds[-1]["probabilities"]) <= 1.0


def test_quad_beats_random_and_scores_far_fewer_than_topk():
    rng = np.random.default_rng(11)
    k, size = 50, 100
    clusters = blocks_of([size] * k)
    truth = dict(enumerate(rng.normal(0.0, 0.01, k).tolist()))
    true_influence = np.array([truth[c] for c in clusters])
    score = per_cluster_score(clusters, truth, noise=0.005, seed=2)
    cfg = QuadConfig(pulls_per_round=8, samples_per_pull=4, threshold=0.002, block_size=50, budget=500, alpha=1e-3)
    result = quad_select(clusters, {}, score, cfg, d_max=0.2)
    baseline = random_select(len(clusters), 500, "docs", seed=0)
    assert len(result.selected) == len(baseline) == 500
    assert true_influence[result.selected].mean() > true_influence[baseline].mean() + 0.005
    assert result.scored <= 0.1 * len(clusters)  # top-k scores all 5,000
    assert sum(len(call) for call in score.calls) == result.scored


# ----------------------------------------------------------------------------------------------- baselines


def test_random_baseline_budget():
    picks = random_select(100, 30, "docs", seed=4)
    assert len(picks) == len(set(picks.tolist())) == 30 and picks.max() < 100
    assert random_select(100, 30, "docs", seed=4).tolist() == picks.tolist()
    lengths = np.arange(1, 101)
    picks = random_select(lengths, 700, "tokens", seed=4)
    assert lengths[picks].sum() >= 700 > lengths[picks[:-1]].sum()
    with pytest.raises(BudgetError, match="101 docs exceeds the pool of 100"):
        random_select(100, 101, "docs")


def test_topk_baseline_budget_and_order():
    scores = np.array([0.1, np.nan, 0.5, -0.2, 0.5, 0.3])
    assert topk_select(scores, None, 3, "docs").tolist() == [2, 4, 5]
    lengths = np.array([10, 10, 4, 10, 4, 10])
    assert topk_select(scores, lengths, 9, "tokens").tolist() == [2, 4, 5]
    assert topk_select(scores, lengths, 8, "tokens").tolist() == [2, 4]
    with pytest.raises(BudgetError, match="6 docs exceeds the pool of 5"):
        topk_select(scores, None, 6, "docs")


# ----------------------------------------------------------------------------------------------- stages

TOPICS = {
    "stars": "star galaxy orbit telescope comet nebula planet moon solar light".split(),
    "bread": "flour yeast oven dough crust bake knead loaf butter salt".split(),
    "ships": "sail hull anchor harbor mast deck captain wave port rope".split(),
    "codes": "compile python function variable loop debug module class return import".split(),
}
GOOD_TOPIC = "stars"


@pytest.fixture(scope="module")
def clustered_pool(tmp_path_factory):
    import pyarrow as pa

    from selectflow.config import ClusterConfig, EmbeddingConfig, SemDedupConfig
    from selectflow.schema import DOCS
    from selectflow.stages.cluster import cluster_stage, embed_stage, embedding_basis_stage
    from selectflow.store import ArtifactStore

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 30)) + f" {topic}" for topic, words in TOPICS.items() for _ in range(60)]
    texts += texts[:3]  # exact copies: semantic dedup drops them
    n = len(texts)
    docs = pa.table({"doc_id": [f"d{i:04d}" for i in range(n)], "source": ["memory://pool.jsonl"] * n,
                     "line": list(range(1, n + 1)), "domain": [t.rsplit(" ", 1)[1] for t in texts], "text": texts,
                     "content_hash": [f"h{i}" for i in range(n)], "n_bytes": [len(t) for t in texts],
                     "record": [None] * n}, schema=DOCS)
    store = ArtifactStore(tmp_path_factory.mktemp("quad-store"))
    pool = [store.build("pool", {}, ["synthetic"], "test", lambda w: w.write("docs", docs))]
    embedding = EmbeddingConfig(method="tfidf", dim=8, features=1024, svd_sample=200)
    basis = embedding_basis_stage(store, pool, embedding)
    embeddings = [embed_stage(store, pool[0], embedding, basis)]
    cluster_cfg = ClusterConfig(embedding=embedding, k=4, n_init=2, semdedup=SemDedupConfig(enabled=True, threshold=0.9999))
    return store, pool, cluster_stage(store, embeddings, cluster_cfg), cluster_cfg


class TopicScorer:
    """Influence by topic (the last word of each synthetic text): the good topic is positive, the others negative."""

    def __init__(self):
        self.scored = 0

    def score(self, texts):
        self.scored += len(texts)
        return np.array([0.02 if t.endswith(GOOD_TOPIC) else -0.01 for t in texts])


def test_stages_quad_random_topk(clustered_pool, monkeypatch):
    from selectflow.config import Budget, InfluenceConfig, QuadSelector, RandomSelector, TopkSelector
    from selectflow.schema import DOCS
    from selectflow.stages import select_quad as stages
    from selectflow.stages.selection import SelectionContext
    from selectflow.store import ArtifactRef

    store, pool, cluster_ref, cluster_cfg = clustered_pool
    scorer = TopicScorer()
    monkeypatch.setattr(stages, "_load_scorer", lambda ref, cfg: scorer)
    influence_ref = ArtifactRef("influence_reference", "fake", str(store.root / "nowhere"))
    budget = Budget(budget=40)
    context = SelectionContext(cluster_ref, influence_ref, InfluenceConfig())
    quad = QuadSelector(block_size=10, pulls_per_round=2, samples_per_pull=3)
    rounds_seen = []
    ref = stages.select_quad_stage(store, pool, budget, quad, context,
                                   progress=lambda rnd, record: rounds_seen.append(round_metrics(record)))

    stats = ref.manifest()["stats"]
    assert stats["excluded_by_cluster_stage"] == 3 and stats["docs_in"] == 240
    assert stats["docs_out"] == 40 and stats["stopped"] == "budget"
    # Unset threshold: calibrated on 32 random pool documents, a quarter of them from the good topic.
    assert stats["calibration_docs"] == 32 and stats["scored_docs"] + 32 == scorer.scored
    assert -0.01 < stats["threshold"] < 0.02
    selected = ref.read("docs")
    assert selected.schema == DOCS and selected.num_rows == 40
    assert set(selected["domain"].to_pylist()) == {GOOD_TOPIC}
    decisions = ref.read("decisions").to_pylist()
    assert len(decisions) == 240 and sum(d["decision"] == "selected" for d in decisions) == 40
    picked = next(d for d in decisions if d["decision"] == "selected")
    assert picked["reason"].startswith("selected: cluster ") and "pulled in round" in picked["reason"]
    assert any(d["reason"].startswith("not selected: cluster ") and "never rewarded" in d["reason"]
               for d in decisions)
    detail = ref.read("quad_decisions")
    assert detail.num_rows == 240 and sum(detail["scored"].to_pylist()) == stats["scored_docs"]
    rounds = json.loads((Path(ref.path) / "rounds.json").read_text())
    assert len(rounds) == stats["rounds"] == len(rounds_seen) and rounds[-1]["selected_docs"] == 40
    assert rounds_seen[-1]["quad_selected_docs"] == 40.0 and rounds_seen[0]["quad_pulled"] == 2.0
    assert rounds_seen[0]["quad_ucb_max"] == 0.0 and rounds_seen[-1]["quad_scored_docs"] == stats["scored_docs"]

    random_ref = stages.select_random_stage(store, pool, budget, RandomSelector(), context)
    assert random_ref.manifest()["stats"]["docs_out"] == 40 and random_ref.rows("decisions") == 240
    topk_ref = stages.select_topk_stage(store, pool, budget, TopkSelector(), context)
    topk_docs = topk_ref.read("docs")
    assert topk_docs.num_rows == 40 and set(topk_docs["domain"].to_pylist()) == {GOOD_TOPIC}
    assert topk_ref.manifest()["stats"]["scored_docs"] == 240 > 2 * stats["scored_docs"]
    sampled_ref = stages.select_topk_stage(store, pool, budget, TopkSelector(candidates=100), context)
    sampled = sampled_ref.read("decisions").to_pylist()
    assert sampled_ref.manifest()["stats"]["scored_docs"] == 100 == sum(d["score"] is not None for d in sampled)
    assert sum(d["decision"] == "selected" for d in sampled) == 40


class NoisyTopicScorer(TopicScorer):
    """TopicScorer plus a fixed per-text noise: inside one topic some documents (and pulls) beat its mean."""

    def score(self, texts):
        import zlib

        noise = np.array([zlib.crc32(t.encode()) / 2**32 - 0.5 for t in texts]) * 0.01
        return super().score(texts) + noise


def test_stages_quad_inside_each_domains_quota(clustered_pool, monkeypatch):
    """QUAD inside the fitted mixture's domain quotas: each domain gets its quota, its own calibrated threshold (QUAD
    picks the best of each, instead of only the good topic), one bandit per domain, rounds in one sequence."""
    from conftest import fitted_mixture

    from selectflow.config import Budget, InfluenceConfig, QuadSelector
    from selectflow.stages import select_quad as stages
    from selectflow.stages.selection import SelectionContext
    from selectflow.store import ArtifactRef

    store, pool, cluster_ref, _ = clustered_pool
    scorer = NoisyTopicScorer()
    monkeypatch.setattr(stages, "_load_scorer", lambda ref, cfg: scorer)
    weights = {f"domain {topic}": 0.1 for topic in TOPICS} | {f"domain {GOOD_TOPIC}": 0.7}
    context = SelectionContext(cluster_ref, ArtifactRef("influence_reference", "fake", str(store.root / "nowhere")),
                               InfluenceConfig(), mixture=fitted_mixture(store, weights))
    quad = QuadSelector(block_size=5, pulls_per_round=2, samples_per_pull=3, strata="domain", quota="mixture")
    ref = stages.select_quad_stage(store, pool, Budget(budget=40), quad, context)

    stats = ref.manifest()["stats"]
    strata = stats["strata"]
    assert {name: s["quota"] for name, s in strata.items()} == {name: 28 if GOOD_TOPIC in name else 4
                                                                  for name in weights}
    assert all(s["selected"] == s["quota"] for s in strata.values()) and stats["docs_out"] == 40
    picked = ref.read("docs")["domain"].to_pylist()
    assert {topic: picked.count(topic) for topic in TOPICS} == {t: 28 if t == GOOD_TOPIC else 4 for t in TOPICS}
    # one calibration per domain, on its own documents: the good topic's threshold is its own mean
    thresholds = {name: s["selector"]["threshold"] for name, s in strata.items()}
    assert thresholds[f"domain {GOOD_TOPIC}"] > 0.01 > max(t for n, t in thresholds.items() if GOOD_TOPIC not in n)
    assert stats["calibration_docs"] == 4 * 32 and stats["calibration_docs"] + stats["scored_docs"] == scorer.scored
    decisions = ref.read("decisions").to_pylist()
    assert len(decisions) == 240 and {d["group"] for d in decisions} == set(weights)
    assert all(d["reason"].startswith(f"{d['group']} (quota {strata[d['group']]['quota']} of its 60 documents): ")
               for d in decisions)
    assert ref.read("quad_decisions").num_rows == 240
    rounds = json.loads((Path(ref.path) / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == list(range(1, stats["rounds"] + 1))
    assert {r["stratum"] for r in rounds} == set(weights)
    assert rounds[-1]["scored_docs"] == stats["scored_docs"]  # counts "so far" carry on from domain to domain
    assert rounds[-1]["selected_docs"] >= 40 and np.all(np.diff([r["selected_docs"] for r in rounds]) >= 0)
    with pytest.raises(ValueError, match="'none' or 'domain'"):
        QuadSelector(strata="cluster")


@pytest.mark.parametrize("strata", ["none", "domain"])
def test_a_quad_stage_that_rewards_nothing_says_what_to_change(clustered_pool, monkeypatch, strata):
    from selectflow.config import Budget, InfluenceConfig, QuadSelector
    from selectflow.stages import select_quad as stages
    from selectflow.stages.selection import SelectionContext
    from selectflow.store import ArtifactRef

    store, pool, cluster_ref, _ = clustered_pool
    monkeypatch.setattr(stages, "_load_scorer", lambda ref, cfg: TopicScorer())
    context = SelectionContext(cluster_ref, ArtifactRef("influence_reference", "fake", str(store.root / "nowhere")),
                               InfluenceConfig())
    quad = QuadSelector(threshold=1.0, block_size=5, max_rounds=3, strata=strata)
    with pytest.raises(QuadError, match=r"QUAD selected nothing: .* exceeding the threshold \(1.*lower it"):
        stages.select_quad_stage(store, pool, Budget(budget=40), quad, context)
