"""QUAD selection and its baselines as stages: the clustered pool -> the selected documents, a reason for each.

The pool is the deduplicated documents that the cluster stage kept (semantic dedup may drop some), in pool order.
Each stage writes "docs" (the selection, DOCS schema), "decisions" (one row per pool document) and stats;
`select_quad` also writes "quad_decisions" (per-document bandit detail), rounds.json and clusters.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectflow.config import Budget, InfluenceConfig, QuadConfig, QuadSelector, RandomSelector, TopkSelector
from selectflow.fingerprint import code_fingerprint
from selectflow.select.baselines import random_select, topk_select
from selectflow.select.quad import QuadError, QuadResult, neighbours_from_arrays, quad_select
from selectflow.select.strata import effective_strata
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.registry import QUAD, RANDOM, TOPK
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.stages.strata import select_in_strata, strata_inputs
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports

SCORE_BATCH = 256  # documents per scorer call for top-k (bounds memory; progress between calls)

QUAD_DECISIONS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("cluster", pa.int32(), nullable=False),
        pa.field("scored", pa.bool_(), nullable=False),
        pa.field("influence", pa.float64()),  # null if not scored
        pa.field("scored_round", pa.int32()),
        pa.field("round", pa.int32()),  # round that admitted it (null: not admitted)
        pa.field("arm", pa.int32()),  # cluster whose pull admitted it (its own cluster; null: not admitted)
        pa.field("block", pa.int32()),  # 0-based block of its cluster
        pa.field("pull_rank", pa.int32()),  # position of the admitting pull in its round
        pa.field("reward", pa.float64()),  # reward of the admitting pull
        pa.field("selected", pa.bool_(), nullable=False),
    ]
)


def _load_scorer(influence_ref: ArtifactRef, cfg: InfluenceConfig):
    """The influence stage's scorer (imported late: the stage module loads torch and the model code)."""
    from selectflow.stages.influence import load_scorer

    return load_scorer(influence_ref, cfg)


def _needs(context: SelectionContext, method: str, clusters: bool = False) -> tuple[ArtifactRef, ArtifactRef]:
    if context.influence is None or context.influence_cfg is None or (clusters and context.clusters is None):
        raise ValueError(f"selector {method!r} needs the influence reference{' and the clusters' if clusters else ''} "
                         "in its SelectionContext")
    return context.clusters, context.influence


# ----------------------------------------------------------------------------------------------- QUAD


def _quad_decisions(doc_ids: list[str], result: QuadResult) -> Decisions:
    docs = result.docs
    per_cluster = {c["cluster"]: c for c in result.clusters}
    decisions = Decisions(QUAD.name)
    for i, doc in enumerate(doc_ids):
        c = int(docs.cluster[i])
        info = per_cluster[c]
        if docs.scored[i]:
            scored = f"; influence {docs.influence[i]:.3g} (scored in round {docs.scored_round[i]})"
        else:
            scored = "; not scored"
        if docs.selected[i]:
            reason = (f"selected: cluster {c} pulled in round {docs.admitted_round[i]} (reward "
                      f"{docs.admit_reward[i]:+.3g}), admitted in its block {docs.admitted_block[i] + 1}"
                      + scored)
        elif info["pulls"] == 0:
            reason = f"not selected: cluster {c} never pulled" + scored
        elif info["rewarded"] == 0:
            reason = (f"not selected: cluster {c} never rewarded (pulled {info['pulls']}×, mean reward "
                      f"{info['mean_reward']:+.3g})" + scored)
        else:
            reason = (f"not selected: cluster {c} rewarded in {info['rewarded']} of {info['pulls']} pulls, but "
                      f"its {info['blocks_admitted']} admitted block(s) ({info['admitted_docs']} of "
                      f"{info['size']} docs) did not reach this document" + scored)
        influence = None if np.isnan(docs.influence[i]) else float(docs.influence[i])
        decisions.add(doc, "selected" if docs.selected[i] else "rejected", reason, score=influence,
                      group=f"cluster {c}")
    return decisions


def quad_decisions_table(doc_ids: list[str], result: QuadResult) -> pa.Table:
    docs = result.docs

    def nullable(values: np.ndarray, missing: np.ndarray) -> list:
        return [None if gone else value for value, gone in zip(values.tolist(), missing.tolist())]

    admitted = docs.admitted_round < 0
    return pa.table(
        {
            "doc_id": doc_ids,
            "cluster": docs.cluster.astype(np.int32),
            "scored": docs.scored,
            "influence": nullable(docs.influence, ~docs.scored),
            "scored_round": nullable(docs.scored_round, ~docs.scored),
            "round": nullable(docs.admitted_round, admitted),
            "arm": nullable(docs.cluster, admitted),
            "block": nullable(docs.admitted_block, admitted),
            "pull_rank": nullable(docs.pull_rank, admitted),
            "reward": nullable(docs.admit_reward, admitted),
            "selected": docs.selected,
        },
        schema=QUAD_DECISIONS,
    )


def select_quad_stage(
    store: ArtifactStore,
    pool: list[ArtifactRef],
    budget: Budget,
    options: QuadSelector,
    context: SelectionContext,
    d_max: float | None = None,
    progress: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ArtifactRef:
    """QUAD over the clustered pool (`context.clusters`), scoring with `context.influence`.

    d_max: QUAD's neighbour distance; None takes the cluster artifact's `neighbour_distance` (the one its
    "neighbours" table was cut at), which is what it should be. progress(round, record) after every round; without
    it, `log` gets a line per round.
    """
    cfg = options.config(budget)
    cluster_ref, influence_ref = _needs(context, "quad", clusters=True)
    if progress is None and log is not None:
        def progress(done: int, record: dict) -> None:
            rewarded = sum(reward > 0 for reward in record["rewards"])
            log(f"quad round {done}: pulled {len(record['pulled'])} clusters, {rewarded} rewarded, "
                f"{record['selected_docs']} selected, {record['scored_docs']} scored so far")
    if d_max is None:
        d_max = float(cluster_ref.manifest()["config"]["neighbour_distance"])

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        texts, pool_ids = data.docs["text"].to_pylist(), data.docs["doc_id"].to_pylist()
        table = cluster_ref.read("neighbours")
        neighbours = neighbours_from_arrays(table["cluster"].to_numpy(), table["neighbour"].to_numpy(),
                                            table["distance"].to_numpy())
        scorer = _load_scorer(influence_ref, context.influence_cfg)

        def quad_in(rows: np.ndarray, quota: int) -> Selection:
            sample = np.random.default_rng(cfg.seed).choice(len(rows), size=min(cfg.calibration_docs, len(rows)),
                                                            replace=False)
            threshold, scale, calibration = _calibrated(cfg, [texts[rows[i]] for i in sample], scorer)
            clusters = data.clusters[rows]
            local = cfg.model_copy(update={"budget": quota})
            block_size = cfg.block_size or budget_aware_block(local, lengths[rows], len(np.unique(clusters)))
            run_cfg = local.model_copy(update={"threshold": threshold, "block_size": block_size})
            result = quad_select(clusters, neighbours, lambda idx: scorer.score([texts[rows[i]] for i in idx]),
                                 run_cfg, d_max, lengths[rows], progress=progress, reward_scale=scale)
            doc_ids = [pool_ids[i] for i in rows.tolist()]
            stats = {"threshold": threshold, "reward_scale": scale, "calibration_docs": calibration,
                     "block_size": block_size, "rounds": len(result.rounds), "scored_docs": result.scored,
                     "stopped": result.stopped, "clusters": len(result.clusters),
                     "scoring_seconds": result.seconds["scoring"],
                     "pulled_clusters": sum(1 for c in result.clusters if c["pulls"]),
                     "mean_influence_scored": float(np.nanmean(result.docs.influence)) if result.scored else None}
            return Selection(result.selected, _quad_decisions(doc_ids, result), stats, rounds=result.rounds,
                             tables={"quad_decisions": quad_decisions_table(doc_ids, result)},
                             documents={"clusters.json": result.clusters})

        if options.strata == "none":
            selection = quad_in(np.arange(data.docs.num_rows), cfg.budget)
            runs = [selection.stats]
        else:  # each stratum's threshold is calibrated on its own documents: QUAD picks the best of each
            selection = select_in_strata(QUAD.name, data, lengths, budget, options, context,
                                         lambda index, rows, quota: quad_in(rows, quota),
                                         running=("selected_docs", "scored_docs"))
            runs = [s["selector"] for s in selection.stats["strata"].values() if "selector" in s]
            selection.stats |= {name: sum(run[name] for run in runs) for name in ("calibration_docs", "scored_docs")}
        order = np.asarray(selection.order, np.int64)
        if not len(order):
            scored = selection.tables["quad_decisions"]
            thresholds = ", ".join(f"{run['threshold']:.3g}" for run in runs)
            raise QuadError(
                f"QUAD selected nothing: it stopped ({selection.stats.get('stopped')}) after "
                f"{selection.stats.get('rounds', 0)} rounds and {pc.sum(scored['scored']).as_py()} scored documents "
                f"(mean influence {pc.mean(scored['influence']).as_py():.2e}) without any pull's mean influence "
                f"exceeding the threshold ({thresholds}: the quad selector's threshold, or the calibrated mean); lower "
                "it, or check that the reference set and influence.model_path fit this pool"
            )
        selection.stats |= {"bandit": cfg.bandit,
                            "effective_clusters": effective_clusters(data.clusters[order], lengths[order])}
        return selection

    # influence_ref's key holds every influence setting that changes a score; the run settings change none
    config = {"quad": cfg.model_dump(), "d_max": d_max}
    if options.strata != "none":
        config |= {"strata": options.strata, "quota": options.quota}
    inputs = [influence_ref.key] + strata_inputs(options, context, "quad")
    return build_selection(store, QUAD, pool, cluster_ref, cfg.token_counter, config, inputs, _CODE, select)


def _calibrated(cfg: QuadConfig, sample: list[str], scorer) -> tuple[float, float, int]:
    """The reward threshold and scale: unset ones from the influence of these random pool documents (their mean,
    and for reward 'z' their sd), and how many documents were scored for that."""
    if cfg.threshold is not None and cfg.reward != "z":
        return cfg.threshold, 1.0, 0
    scores = np.asarray(scorer.score(sample), dtype=np.float64)
    threshold = float(scores.mean()) if cfg.threshold is None else cfg.threshold
    if cfg.reward != "z":
        return threshold, 1.0, len(sample)
    scale = float(scores.std(ddof=1)) if len(sample) > 1 else 0.0
    if not scale > 0:
        raise QuadError(f"quad reward 'z': the {len(sample)} calibration documents' influence has no spread to scale "
                        "by; raise calibration_docs or use reward: influence")
    return threshold, scale, len(sample)


def budget_aware_block(cfg: QuadConfig, lengths: np.ndarray, clusters: int) -> int:
    """Block size of an unset `block_size`: the budget in documents (a tokens budget in documents of the pool's mean
    length) over the number of clusters, at least 1."""
    documents = cfg.budget if cfg.budget_unit == "docs" else cfg.budget / max(float(np.mean(lengths)), 1.0)
    return max(1, math.ceil(documents / max(clusters, 1)))


def effective_clusters(clusters: np.ndarray, lengths: np.ndarray) -> float | None:
    """How many clusters the selection's tokens draw on, evenly counted (None for an empty selection)."""
    if not len(clusters) or lengths.sum() == 0:
        return None
    return effective_strata(np.bincount(clusters - clusters.min(), weights=lengths))


# ----------------------------------------------------------------------------------------------- baselines


def select_random_stage(store: ArtifactStore, pool: list[ArtifactRef], budget: Budget, options: RandomSelector,
                        context: SelectionContext) -> ArtifactRef:
    """A uniform random subset of the pool under the budget (grouped by cluster in its decisions when clustered)."""
    cluster_ref, seed = context.clusters, options.seed

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        selected = random_select(lengths if budget.budget_unit == "tokens" else data.docs.num_rows, budget.budget,
                                 budget.budget_unit, seed)
        rank = np.full(data.docs.num_rows, -1)
        rank[selected] = np.arange(len(selected))
        decisions = Decisions(RANDOM.name)
        for doc, r, group in zip(data.docs["doc_id"].to_pylist(), rank.tolist(), _groups(data)):
            if r >= 0:
                decisions.add(doc, "selected", f"selected: drawn uniformly at random (seed {seed}), #{r + 1} of "
                              f"{len(selected)}", group=group)
            else:
                decisions.add(doc, "rejected", f"not selected: not drawn in the uniform random sample (seed {seed})",
                              group=group)
        return Selection(selected, decisions)

    return build_selection(store, RANDOM, pool, cluster_ref, budget.token_counter,
                           {**budget.budget_fields(), "seed": seed}, [], _CODE, select)


def select_topk_stage(
    store: ArtifactStore,
    pool: list[ArtifactRef],
    budget: Budget,
    options: TopkSelector,
    context: SelectionContext,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ArtifactRef:
    """The highest-influence documents under the budget, among `options.candidates` seeded-sampled documents (None:
    all); progress(scored, total) after every batch, else a line to `log`."""
    cluster_ref, influence_ref = _needs(context, "topk")
    candidates, seed = options.candidates, options.seed
    if progress is None and log is not None:
        def progress(done: int, total: int) -> None:
            log(f"top-k: {done}/{total} candidates scored")

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        n = data.docs.num_rows
        if candidates is None or candidates >= n:
            chosen = np.arange(n)
        else:
            chosen = np.sort(np.random.default_rng(seed).choice(n, size=candidates, replace=False))
        texts = data.docs["text"].to_pylist()
        scorer = _load_scorer(influence_ref, context.influence_cfg)
        scores = np.full(n, np.nan)
        for start in range(0, len(chosen), SCORE_BATCH):
            batch = chosen[start : start + SCORE_BATCH]
            scores[batch] = np.asarray(scorer.score([texts[i] for i in batch]), dtype=np.float64)
            if progress is not None:
                progress(min(start + SCORE_BATCH, len(chosen)), len(chosen))
        selected = topk_select(scores, lengths, budget.budget, budget.budget_unit)
        rank = np.full(n, -1)
        scored = chosen[np.argsort(-scores[chosen], kind="stable")]
        rank[scored] = np.arange(len(scored))
        cut = len(selected)
        decisions = Decisions(TOPK.name)
        for i, (doc, group) in enumerate(zip(data.docs["doc_id"].to_pylist(), _groups(data))):
            score = None if np.isnan(scores[i]) else float(scores[i])
            if rank[i] < 0:
                decisions.add(doc, "rejected", f"not selected: not among the {len(chosen)} scored candidates "
                              f"(seed {seed})", score=score, group=group)
            elif rank[i] < cut:
                decisions.add(doc, "selected", f"selected: influence {scores[i]:.3g}, rank {rank[i] + 1} of "
                              f"{len(chosen)} scored", score=score, group=group)
            else:
                decisions.add(doc, "rejected", f"not selected: influence {scores[i]:.3g}, rank {rank[i] + 1} of "
                              f"{len(chosen)} scored, below the budget cut at rank {cut}", score=score, group=group)
        return Selection(selected, decisions, {"scored_docs": len(chosen),
                                               "mean_influence_scored": float(np.nanmean(scores)) if len(chosen)
                                               else None})

    config = {**budget.budget_fields(), "candidates": candidates, "seed": seed}
    return build_selection(store, TOPK, pool, cluster_ref, budget.token_counter, config, [influence_ref.key], _CODE,
                           select)


def _groups(data: Pool) -> list[str | None]:
    return [None if c < 0 else f"cluster {c}" for c in data.clusters.tolist()]
