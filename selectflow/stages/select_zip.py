"""ZIP selection stage: the deduplicated pool -> the selected documents, in selection order, with a reason for each.

A killed stage resumes from its last finished ZIP round: the rounds' state is checkpointed under the writer's
`checkpoint_dir` (`<store>/checkpoints/select_zip/<key>/`), which the store removes once the artifact commits."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from selectflow.config import Budget, ZipConfig, ZipSelector
from selectflow.fingerprint import code_fingerprint
from selectflow.select.baselines import take_budget
from selectflow.select.strata import stratum_quotas
from selectflow.select.zip import ZipCheckpoint, zip_select
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.registry import ZIP
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports
UNITS = {"whitespace": "words", "bytes": "bytes", "bytes4": "4-byte tokens"}


def _reason(row: dict, mode: str) -> str:
    measure = {"exact": "zlib-9 ratio of the records", "zstd": "marginal zstd ratio",
               "gain": "raw bytes per compressed byte added"}[mode]
    if row["selected"]:
        return (f"selected in round {row['round']} as #{row['order'] + 1} at {measure} {row['ratio']:.3f} "
                f"(+{row['marginal_bytes']} compressed bytes; own ratio {row['own_ratio']:.3f})")
    where = {"global": "never among the lowest-ratio candidates",
             "coarse": f"reached the coarse stage in round {row['round']}",
             "fine": f"reached the fine stage in round {row['round']} but was not picked"}[row["stage_reached"]]
    return f"not selected: {where}; ratio at rejection {row['ratio']:.3f} (own ratio {row['own_ratio']:.3f})"


def zip_stage(
    store: ArtifactStore,
    pool: list[ArtifactRef],
    budget: Budget,
    options: ZipSelector,
    context: SelectionContext,
    progress: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> ArtifactRef:
    """ZIP over the pool, less what the cluster stage's semantic dedup dropped; with `options.strata`, one ZIP inside
    each stratum's quota of the budget. Resumes a killed run from its last finished round (`resumed_from_round` in
    the artifact's stats; 0 when it started fresh). progress(round, info) after every round; without it, `log` gets
    a line per round."""
    cfg = options.config(budget)
    options.check_budget(budget)
    if progress is None and log is not None:
        rounds = math.ceil(cfg.budget / cfg.k3) if cfg.budget_unit == "docs" else None

        def progress(done: int, info: dict) -> None:
            log(f"zip round {done}/{rounds or '?'}: {info['n_selected']} selected, "
                f"set ratio {info['selected_ratio']:.3f}, {info['pool_left']} left in the pool")

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        if options.strata == "none":
            return _zip(data.docs, cfg, progress, ZipCheckpoint(writer.checkpoint_dir))
        names, inverse = np.unique(_strata(data, options.strata), return_inverse=True)
        names = names.tolist()
        target = None
        if options.needs_reference_clusters:  # reference documents per stratum, each in its nearest pool cluster
            found = Counter(f"cluster {c}" for c in context.reference_clusters.read(
                "assignments", columns=["cluster"])["cluster"].to_pylist())
            target = np.array([found[name] for name in names])
        if options.quota == "mixture":  # the probed mixture's weight per stratum (the same component names)
            fit = context.mixture.manifest()["stats"]
            weight = dict(zip(fit["components"], fit["weights"]))
            target = np.array([weight.get(name, 0.0) for name in names])
        held = np.bincount(inverse, weights=lengths, minlength=len(names)).astype(np.int64)
        # Every round K2 candidates leave the pool and K3 of them are picked: ZIP takes about K3/K2 of a stratum.
        quotas = stratum_quotas((held * min(1.0, cfg.k3 / cfg.k2)).astype(np.int64), budget.budget,
                                "reference" if options.quota == "mixture" else options.quota, target)
        strata = []
        for index, name in enumerate(names):
            rows = np.flatnonzero(inverse == index)
            where = f"{name} (quota {quotas[index]} of its {held[index]} {UNITS[budget.token_counter]})"
            local = cfg.model_copy(update={"budget": max(int(quotas[index]), 1), "k1": min(cfg.k1, len(rows)),
                                           "k2": min(cfg.k2, len(rows)), "k3": min(cfg.k3, len(rows))})
            part = None if quotas[index] == 0 else _zip(data.docs.take(pa.array(rows, pa.int64())), local, progress,
                                                        ZipCheckpoint(writer.checkpoint_dir / f"{index}"))
            strata.append(Stratum(name, where, rows, lengths[rows], int(quotas[index]), int(held[index]), part))
        return _joined(data, strata)

    clusters = context.clusters if options.strata == "cluster" else context.semdedup()
    if options.strata == "cluster" and clusters is None:
        raise ValueError("zip strata 'cluster' needs the cluster stage's artifact in its SelectionContext")
    if options.needs_reference_clusters and context.reference_clusters is None:
        raise ValueError("zip quota 'reference' needs the reference set's clusters in its SelectionContext")
    if options.quota == "mixture" and context.mixture is None:
        raise ValueError("zip quota 'mixture' needs the fitted mixture search in its SelectionContext")
    inputs = [context.reference_clusters.key] if options.needs_reference_clusters else []
    inputs += [context.mixture.key] if options.quota == "mixture" else []
    config = cfg.model_dump() | ({} if options.strata == "none" else {"strata": options.strata, "quota": options.quota})
    return build_selection(store, ZIP, pool, clusters, cfg.token_counter, config, inputs, _CODE, select)


def _zip(docs: pa.Table, cfg: ZipConfig, progress, checkpoint: ZipCheckpoint) -> Selection:
    result = zip_select(docs, cfg, progress=progress, checkpoint=checkpoint)
    decisions = Decisions(ZIP.name)
    for r in result.decisions.to_pylist():
        decisions.add(r["doc_id"], "selected" if r["selected"] else "rejected", _reason(r, cfg.mode),
                      score=r["ratio"], group=None if r["round"] is None else f"round {r['round']}")
    position = {doc_id: index for index, doc_id in enumerate(docs["doc_id"].to_pylist())}
    stats = {"stopped": result.stopped, "final_ratio": result.final_ratio, "seconds": result.seconds,
             "rounds": len(result.rounds), "resumed_from_round": result.resumed_from_round}
    return Selection([position[doc_id] for doc_id in result.selected], decisions, stats, rounds=result.rounds,
                     tables={"zip_decisions": result.decisions})


def _strata(data: Pool, strata: str) -> list[str]:
    if strata == "cluster":
        return [f"cluster {c}" for c in data.clusters.tolist()]
    return [f"domain {d}" for d in data.docs["domain"].to_pylist()]


@dataclass
class Stratum:
    name: str  # e.g. "cluster 3", "domain prose"
    where: str  # the name with its quota, as reasons give it
    rows: np.ndarray  # its pool positions
    lengths: np.ndarray  # their tokens
    quota: int
    held: int  # budget units it holds
    selection: Selection | None  # ZIP inside its quota (None: quota 0)


def _joined(data: Pool, strata: list[Stratum]) -> Selection:
    """One selection from each stratum's: their picks stratum after stratum, each cut to its quota (ZIP checks its
    budget after whole rounds of K3), every decision grouped by its stratum with a reason led by its quota, and per
    stratum its quota, what it holds and what was taken."""
    doc_ids = data.docs["doc_id"].to_pylist()
    order, rounds, stats, decided = [], [], {}, {}
    for stratum in strata:
        if stratum.selection is None:
            stats[stratum.name] = {"quota": stratum.quota, "held": stratum.held, "selected": 0, "tokens": 0}
            decided |= {doc_ids[i]: ("rejected", f"{stratum.where}: not selected, quota 0", None)
                        for i in stratum.rows.tolist()}
            continue
        picked = np.asarray(stratum.selection.order, np.int64)
        kept = take_budget(picked, stratum.lengths, stratum.quota, "tokens")
        stats[stratum.name] = {"quota": stratum.quota, "held": stratum.held, "selected": len(kept),
                               "tokens": int(stratum.lengths[kept].sum())}
        order += stratum.rows[kept].tolist()
        rounds += [{**record, "stratum": stratum.name} for record in stratum.selection.rounds or []]
        beyond = {doc_ids[i] for i in stratum.rows[picked[len(kept):]].tolist()}
        for row in stratum.selection.decisions.table().to_pylist():
            if row["doc_id"] in beyond:
                decided[row["doc_id"]] = ("rejected", f"{stratum.where}: not selected: beyond the quota, though "
                                          f"{row['reason']}", row["score"])
            else:
                decided[row["doc_id"]] = (row["decision"], f"{stratum.where}: {row['reason']}", row["score"])
    group = {doc_ids[i]: stratum.name for stratum in strata for i in stratum.rows.tolist()}
    decisions = Decisions(ZIP.name)
    for doc_id in doc_ids:
        decision, reason, score = decided[doc_id]
        decisions.add(doc_id, decision, reason, score=score, group=group[doc_id])
    stopped = sorted({s.selection.stats["stopped"] for s in strata if s.selection is not None})
    return Selection(order, decisions, {"strata": stats, "stopped": ",".join(stopped), "rounds": len(rounds)},
                     rounds=rounds)
