"""QUAD selection (Zhang et al. 2024): a multi-armed bandit over clusters that scores a few documents per pull.

UCB, as published (iTheresaApocalypse/Quad, ``Quad-data_selection.py``)
-----------------------------------------------------------------------
- Arms are clusters (ids sorted ascending). Per arm: a shared reward sum ``R_j`` and a shared pull count ``n_j``;
  a global pull count ``N``. Score ``s_j = R_j / n_j + alpha * sqrt(2 ln N / (n_j + 1))`` (``R_j / n_j = 0`` while
  ``n_j = 0``); before the first update every score is 0.
- Each round pulls the ``pulls_per_round`` active arms with the highest score (ties: lower cluster id), so round 0
  pulls the first B clusters. For every pulled arm ``samples_per_pull`` of its documents are scored (one batched
  ``score_fn`` call per round) and its reward is ``r = mean influence - threshold``.
- The reward is shared with every neighbour ``j`` at centroid distance ``d < d_max`` (itself included, d = 0):
  ``R_j += r * (1 - d / d_max)``, ``n_j += 1`` and ``N += 1`` per neighbour update.
- An arm with ``r > 0`` admits its next block of ``block_size`` documents.
- Beyond the paper (defaults keep it): ``reward_scale`` divides every reward (the stage passes the calibration
  sample's influence sd for ``reward: z``), and an arm stops admitting once it holds ``max_cluster_share`` of the
  budget (it is then exhausted).
- Stop when the budget is met, when every cluster is exhausted, or after ``max_rounds``.
- The output order is shuffled with the seed (the reference shuffles the final set); the admission order is kept
  in ``QuadResult.admission_order``.

EXP3 (LEAD, HKUSTDial/LEAD ``exp3.py``), multiple plays
------------------------------------------------------
- Per active arm a weight ``w``; ``p = (1 - gamma) * w / sum(w) + gamma / K`` over the K active arms; each round
  ``min(B, K)`` arms are drawn without replacement with probabilities ``p``.
- Rewards go into [0, 1] as ``x = 0.5 + 0.5 * r / m`` where ``m`` is the largest ``|r|`` seen so far (including this
  round), so a zero reward maps to 0.5 and the sign of ``r`` is kept; influence scores are tiny, so a fixed scale
  would need tuning per model. (LEAD min-max-normalizes to [-1, 1] over its reward history, which loses the sign.)
- Importance weighting by the inclusion probability ``q = min(1, B * p)`` (Exp3.M-style):
  ``w *= exp(gamma * (x / q) / K)``. No neighbour sharing (LEAD has none). Admission as for UCB.

Choices the paper leaves open (documented here, deterministic for ``cfg.seed``)
-----------------------------------------------------------------------------
- Block order: each cluster's documents are put in a seeded random order once; blocks are consecutive slices.
- Scoring samples: a second seeded order per cluster; each pull scores the next ``samples_per_pull`` documents of
  it, so a document is scored at most once (without replacement). Scored documents can be admitted like any other.
- Exhausted arm (never pulled again): all its documents are admitted, or all have been scored (a pull would learn
  nothing new). A pull with fewer unscored documents left than ``samples_per_pull`` scores the ones left.
- Budget: 'docs' truncates the last block exactly to the budget; 'tokens' keeps the last block up to and
  including the document that makes the total reach the budget (see ``selectflow.select.baselines.take_budget``).
  Within a round, rewarded arms admit in pull order; once the budget is met later arms of that round admit nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from selectflow.config import QuadConfig
from selectflow.select.baselines import BudgetError, check_budget, take_budget

ScoreFn = Callable[[np.ndarray], np.ndarray]
Neighbours = Mapping[int, Sequence[tuple[int, float]]]


class QuadError(BudgetError):
    """A QUAD configuration or input that cannot run; the message says what to change."""


@dataclass
class QuadDocs:
    """Per pool document (arrays in pool order): what QUAD did with it."""

    cluster: np.ndarray  # int64 cluster id
    scored: np.ndarray  # bool
    influence: np.ndarray  # float64, NaN if not scored
    scored_round: np.ndarray  # int64, -1 if not scored
    admitted_round: np.ndarray  # int64, -1 if not admitted
    admitted_block: np.ndarray  # int64, 0-based block of its cluster, -1 if not admitted
    pull_rank: np.ndarray  # int64, position of the admitting pull in its round, -1 if not admitted
    admit_reward: np.ndarray  # float64, reward of the admitting pull, NaN if not admitted
    selected: np.ndarray  # bool


@dataclass
class QuadResult:
    selected: np.ndarray  # pool indices, shuffled with the seed (published behaviour)
    admission_order: np.ndarray  # the same indices in the order they were admitted
    docs: QuadDocs
    rounds: list[dict]  # per round: pulls, scores/probabilities, rewards, admissions, running totals
    clusters: list[dict]  # per cluster: size, own pulls, mean own reward, shared state, blocks admitted
    stopped: str  # "budget" | "exhausted" | "max_rounds"
    scored: int  # documents scored in all
    tokens: int | None  # tokens of the selection (None without lengths)
    seconds: dict = field(default_factory=dict)


def ucb_scores(reward_sum: np.ndarray, pulls: np.ndarray, global_pulls: int, alpha: float) -> np.ndarray:
    """QUAD's cluster score: mean shared reward + alpha * sqrt(2 ln(global pulls) / (pulls + 1)); 0 before any pull."""
    reward_sum = np.asarray(reward_sum, dtype=np.float64)
    pulls = np.asarray(pulls, dtype=np.float64)
    if global_pulls <= 0:
        return np.zeros_like(reward_sum)
    mean = np.divide(reward_sum, pulls, out=np.zeros_like(reward_sum), where=pulls > 0)
    return mean + alpha * np.sqrt(2.0 * math.log(global_pulls) / (pulls + 1.0))


def neighbours_from_arrays(cluster: np.ndarray, neighbour: np.ndarray, distance: np.ndarray) -> dict[int, list]:
    """The cluster artifact's "neighbours" table (one row per pair) as {cluster: [(neighbour, distance), ...]}."""
    table: dict[int, list[tuple[int, float]]] = {}
    for c, j, d in zip(np.asarray(cluster).tolist(), np.asarray(neighbour).tolist(), np.asarray(distance).tolist()):
        table.setdefault(int(c), []).append((int(j), float(d)))
    return table


class _Arms:
    """Bandit state per cluster (index = position in the sorted cluster ids)."""

    def __init__(self, clusters: np.ndarray, neighbours: Neighbours, d_max: float, rng: np.random.Generator,
                 cap: float):
        self.ids, inverse = np.unique(clusters, return_inverse=True)
        k = len(self.ids)
        position = {int(c): a for a, c in enumerate(self.ids.tolist())}
        members = [[] for _ in range(k)]
        for index, arm in enumerate(inverse.tolist()):
            members[arm].append(index)
        self.blocks = [rng.permutation(np.asarray(m, dtype=np.int64)) for m in members]
        self.samples = [rng.permutation(np.asarray(m, dtype=np.int64)) for m in members]
        self.sizes = np.array([len(m) for m in members], dtype=np.int64)
        self.admit_ptr = np.zeros(k, dtype=np.int64)
        self.score_ptr = np.zeros(k, dtype=np.int64)
        self.blocks_admitted = np.zeros(k, dtype=np.int64)
        self.spent = np.zeros(k, dtype=np.int64)  # budget units admitted
        self.cap = cap  # budget units an arm may admit
        self.reward_sum = np.zeros(k)  # shared (UCB)
        self.pulls = np.zeros(k, dtype=np.int64)  # shared, counts neighbour updates (UCB)
        self.global_pulls = 0
        self.own_pulls = np.zeros(k, dtype=np.int64)
        self.own_reward_sum = np.zeros(k)
        self.rewarded = np.zeros(k, dtype=np.int64)
        self.log_weight = np.zeros(k)  # EXP3
        self.share = self._share_lists(neighbours, position, d_max)

    def _share_lists(self, neighbours: Neighbours, position: dict[int, int], d_max: float) -> list[list]:
        share = []
        for a, cid in enumerate(self.ids.tolist()):
            weights = {a: 1.0}  # itself at distance 0, whether or not the table lists it
            for other, distance in neighbours.get(cid, ()):
                j = position.get(int(other))
                if j is not None and distance < d_max and j != a:
                    weights[j] = 1.0 - float(distance) / d_max
            share.append(sorted(weights.items()))
        return share

    def exhausted(self) -> np.ndarray:
        return (self.admit_ptr >= self.sizes) | (self.score_ptr >= self.sizes) | (self.spent >= self.cap)


def _pick_ucb(arms: _Arms, active: np.ndarray, b: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    scores = ucb_scores(arms.reward_sum, arms.pulls, arms.global_pulls, alpha)
    candidates = np.flatnonzero(active)
    order = candidates[np.lexsort((arms.ids[candidates], -scores[candidates]))]
    pulled = order[:b]
    return pulled, scores[pulled]


def _exp3_probabilities(arms: _Arms, active: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(active)
    logw = arms.log_weight[candidates]
    w = np.exp(logw - logw.max())
    p = (1.0 - gamma) * w / w.sum() + gamma / len(candidates)
    return candidates, p / p.sum()


def _check_inputs(clusters: np.ndarray, lengths: np.ndarray | None, cfg: QuadConfig, d_max: float) -> None:
    if clusters.ndim != 1:
        raise QuadError(f"quad: clusters must be one cluster id per pool document (1-D), got shape {clusters.shape}")
    if lengths is not None and len(lengths) != len(clusters):
        raise QuadError(f"quad: {len(lengths)} lengths for {len(clusters)} documents: give one length per document")
    if not d_max > 0:
        raise QuadError(f"quad: d_max (cluster.neighbour_distance) must be > 0, got {d_max}")
    if cfg.budget_unit == "tokens" and lengths is None:
        raise QuadError("quad: a tokens budget needs lengths (tokens per document); pass them or use budget_unit docs")
    try:
        check_budget(len(clusters), lengths, cfg.budget, cfg.budget_unit, "quad")
    except BudgetError as exc:
        raise QuadError(str(exc)) from None
    if cfg.threshold is None or cfg.block_size is None:
        raise QuadError("quad: quad_select needs a numeric threshold and block_size (the select_quad stage resolves "
                        "unset ones)")


def quad_select(
    clusters: np.ndarray,
    neighbours: Neighbours,
    score_fn: ScoreFn,
    cfg: QuadConfig,
    d_max: float,
    lengths: np.ndarray | None = None,
    progress: Callable[[int, dict], None] | None = None,
    reward_scale: float = 1.0,
) -> QuadResult:
    """Select pool documents with QUAD (UCB or EXP3 over clusters); see the module docstring.

    clusters: cluster id per pool document. neighbours: {cluster: [(neighbour, centroid distance), ...]}.
    score_fn: pool indices -> influence per document (called once per round). lengths: tokens per document
    (needed for a tokens budget; reported when given).
    """
    t_start = time.perf_counter()
    clusters = np.asarray(clusters, dtype=np.int64)
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    _check_inputs(clusters, lengths, cfg, d_max)
    n = len(clusters)
    rng = np.random.default_rng(cfg.seed)
    arms = _Arms(clusters, neighbours, d_max, rng, cfg.max_cluster_share * cfg.budget)
    docs = QuadDocs(
        cluster=clusters.copy(), scored=np.zeros(n, bool), influence=np.full(n, np.nan),
        scored_round=np.full(n, -1, np.int64), admitted_round=np.full(n, -1, np.int64),
        admitted_block=np.full(n, -1, np.int64), pull_rank=np.full(n, -1, np.int64),
        admit_reward=np.full(n, np.nan), selected=np.zeros(n, bool),
    )
    admitted: list[np.ndarray] = []
    spent = 0  # in budget units
    max_abs_reward = 0.0
    rounds: list[dict] = []
    scoring_seconds = 0.0
    stopped = "max_rounds"

    for rnd in range(cfg.max_rounds):
        active = ~arms.exhausted()
        if not active.any():
            stopped = "exhausted"
            break
        b = min(cfg.pulls_per_round, int(active.sum()))
        if cfg.bandit == "ucb":
            pulled, pull_scores = _pick_ucb(arms, active, b, cfg.alpha)
            info = {"scores": pull_scores.tolist()}
        else:
            candidates, p = _exp3_probabilities(arms, active, cfg.exp3_gamma)
            drawn = rng.choice(len(candidates), size=b, replace=False, p=p)
            pulled, pull_p = candidates[drawn], p[drawn]
            info = {"probabilities": pull_p.tolist()}

        samples = []
        for a in pulled:
            start = arms.score_ptr[a]
            samples.append(arms.samples[a][start : start + cfg.samples_per_pull])
            arms.score_ptr[a] = start + len(samples[-1])
        batch = np.concatenate(samples)
        t_score = time.perf_counter()
        values = np.asarray(score_fn(batch), dtype=np.float64).reshape(-1)
        scoring_seconds += time.perf_counter() - t_score
        if len(values) != len(batch):
            raise QuadError(f"quad: score_fn returned {len(values)} scores for {len(batch)} documents")
        if not np.all(np.isfinite(values)):
            bad = batch[~np.isfinite(values)][:5].tolist()
            raise QuadError(f"quad: score_fn returned non-finite influence for pool documents {bad}")
        docs.scored[batch], docs.influence[batch], docs.scored_round[batch] = True, values, rnd

        bounds = np.cumsum([0] + [len(s) for s in samples])
        means = np.array([values[bounds[i] : bounds[i + 1]].mean() for i in range(len(pulled))])
        rewards = (means - cfg.threshold) / reward_scale
        arms.own_pulls[pulled] += 1
        arms.own_reward_sum[pulled] += rewards
        arms.rewarded[pulled] += rewards > 0

        shared = 0
        if cfg.bandit == "ucb":
            for a, r in zip(pulled.tolist(), rewards.tolist()):
                for j, weight in arms.share[a]:
                    arms.reward_sum[j] += r * weight
                    arms.pulls[j] += 1
                    arms.global_pulls += 1
                    shared += 1
        else:
            max_abs_reward = max(max_abs_reward, float(np.abs(rewards).max()))
            x = 0.5 + 0.5 * rewards / max_abs_reward if max_abs_reward > 0 else np.full(len(rewards), 0.5)
            inclusion = np.minimum(1.0, b * pull_p)
            arms.log_weight[pulled] += cfg.exp3_gamma * (x / inclusion) / int(active.sum())

        admissions = {}
        budget_met = False
        for rank, (a, r) in enumerate(zip(pulled.tolist(), rewards.tolist())):
            if r <= 0 or budget_met:
                continue
            start = arms.admit_ptr[a]
            block = arms.blocks[a][start : start + cfg.block_size]
            block = take_budget(block, lengths, min(cfg.budget - spent, math.ceil(arms.cap) - arms.spent[a]),
                                cfg.budget_unit)
            arms.admit_ptr[a] = start + len(block)
            arms.spent[a] += len(block) if cfg.budget_unit == "docs" else int(lengths[block].sum())
            docs.admitted_round[block], docs.admitted_block[block] = rnd, arms.blocks_admitted[a]
            docs.pull_rank[block], docs.admit_reward[block] = rank, r
            arms.blocks_admitted[a] += 1
            admitted.append(block)
            spent += len(block) if cfg.budget_unit == "docs" else int(lengths[block].sum())
            admissions[int(arms.ids[a])] = len(block)
            budget_met = spent >= cfg.budget

        n_selected = sum(len(block) for block in admitted)
        record = {
            "round": rnd,
            "pulled": arms.ids[pulled].tolist(),
            **info,
            "rewards": rewards.tolist(),
            "sampled": [len(s) for s in samples],
            "admitted": admissions,
            "shared_updates": shared,
            "global_pulls": arms.global_pulls,
            "selected_docs": n_selected,
            "selected_tokens": None if lengths is None else int(sum(int(lengths[b_].sum()) for b_ in admitted)),
            "scored_docs": int(docs.scored.sum()),
        }
        rounds.append(record)
        if progress is not None:
            progress(rnd, record)
        if budget_met:
            stopped = "budget"
            break
    else:
        stopped = "max_rounds" if arms.exhausted().sum() < len(arms.ids) else "exhausted"

    admission_order = np.concatenate(admitted) if admitted else np.zeros(0, np.int64)
    docs.selected[admission_order] = True
    selected = admission_order[rng.permutation(len(admission_order))]
    return QuadResult(
        selected=selected,
        admission_order=admission_order,
        docs=docs,
        rounds=rounds,
        clusters=_cluster_summary(arms, cfg),
        stopped=stopped,
        scored=int(docs.scored.sum()),
        tokens=None if lengths is None else int(lengths[admission_order].sum()),
        seconds={"scoring": round(scoring_seconds, 3), "total": round(time.perf_counter() - t_start, 3)},
    )


def _cluster_summary(arms: _Arms, cfg: QuadConfig) -> list[dict]:
    final_ucb = ucb_scores(arms.reward_sum, arms.pulls, arms.global_pulls, cfg.alpha)
    exhausted = arms.exhausted()
    summary = []
    for a, cid in enumerate(arms.ids.tolist()):
        own = int(arms.own_pulls[a])
        summary.append({
            "cluster": int(cid),
            "size": int(arms.sizes[a]),
            "pulls": own,
            "mean_reward": float(arms.own_reward_sum[a] / own) if own else None,
            "rewarded": int(arms.rewarded[a]),
            "blocks_admitted": int(arms.blocks_admitted[a]),
            "admitted_docs": int(arms.admit_ptr[a]),
            "scored_docs": int(arms.score_ptr[a]),
            "shared_pulls": int(arms.pulls[a]),
            "shared_reward_sum": float(arms.reward_sum[a]),
            "ucb": float(final_ucb[a]) if cfg.bandit == "ucb" else None,
            "exp3_log_weight": float(arms.log_weight[a]) if cfg.bandit == "exp3" else None,
            "exhausted": bool(exhausted[a]),
        })
    return summary


def round_metrics(record: dict) -> dict[str, float]:
    """One round record as flat MLflow metrics (log with step=record["round"])."""
    rewards = record["rewards"]
    metrics = {
        "quad_pulled": float(len(record["pulled"])),
        "quad_reward_mean": float(np.mean(rewards)),
        "quad_reward_max": float(np.max(rewards)),
        "quad_rewarded_pulls": float(sum(r > 0 for r in rewards)),
        "quad_admitted_docs": float(sum(record["admitted"].values())),
        "quad_selected_docs": float(record["selected_docs"]),
        "quad_scored_docs": float(record["scored_docs"]),
    }
    if record.get("scores"):
        metrics["quad_ucb_max"] = float(np.max(record["scores"]))
        metrics["quad_ucb_min_pulled"] = float(np.min(record["scores"]))
    if record.get("probabilities"):
        metrics["quad_exp3_p_max"] = float(np.max(record["probabilities"]))
    if record.get("selected_tokens") is not None:
        metrics["quad_selected_tokens"] = float(record["selected_tokens"])
    return metrics
