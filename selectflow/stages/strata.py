"""A selector inside quotas (`Stratified` options): the pool split into strata (its clusters or ingest domains),
each stratum's quota of the budget (`selectflow.select.strata`): its share of the pool, an equal share, the
reference set's share or its weight in the fitted mixture; the selector run inside each stratum; their picks joined
into one subset whose every decision names the stratum and quota it was made in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from selectflow.config import Budget, Stratified
from selectflow.select.baselines import take_budget
from selectflow.select.strata import stratum_quotas
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.selection import Selection, SelectionContext
from selectflow.store import ArtifactRef

UNITS = {"whitespace": "words", "bytes": "bytes", "bytes4": "4-byte tokens"}

# (stratum index, its pool positions, its quota) -> the selection inside it, in positions within the stratum
StratumSelector = Callable[[int, np.ndarray, int], Selection]


def strata_of(data: Pool, by: str) -> tuple[list[str], np.ndarray]:
    """The stratum names (sorted: "cluster 3", "domain prose") and each pool document's stratum index."""
    if by == "cluster":
        if len(data.clusters) and (data.clusters < 0).all():
            raise ValueError("strata 'cluster' need the cluster stage's artifact")
        labels = [f"cluster {c}" for c in data.clusters.tolist()]
    else:
        labels = [f"domain {d}" if d is not None else "domain (none)" for d in data.docs["domain"].to_pylist()]
    names, index = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    return [str(name) for name in names], index.astype(np.int64)


def strata_view(by: str, context: SelectionContext) -> ArtifactRef | None:
    """The cluster artifact a pool split `by` strata (or mixture components) is read with: its clusters are the
    strata, or it dropped documents by semantic dedup (None: the whole pool)."""
    return context.clusters if by == "cluster" else context.semdedup()


def strata_inputs(options: Stratified, context: SelectionContext, method: str) -> list[str]:
    """The keys of what the quotas are read from (they key the selection too); a ValueError saying what is missing."""
    if options.strata == "none":
        return []
    if options.strata == "cluster" and context.clusters is None:
        raise ValueError(f"{method} strata 'cluster' needs the cluster stage's artifact in its SelectionContext")
    if options.needs_reference_clusters:
        if context.reference_clusters is None:
            raise ValueError(f"{method} quota 'reference' needs the reference set's clusters in its SelectionContext")
        return [context.reference_clusters.key]
    if options.quota == "mixture":
        if context.mixture is None:
            raise ValueError(f"{method} quota 'mixture' needs the fitted mixture search in its SelectionContext")
        return [context.mixture.key]
    return []


def select_in_strata(stage: str, data: Pool, lengths: np.ndarray, budget: Budget, options: Stratified,
                     context: SelectionContext, select_in: StratumSelector, capacity: float = 1.0,
                     running: tuple[str, ...] = ()) -> Selection:
    """`select_in` run inside every stratum's quota of the budget, the picks joined. capacity: the share of a stratum
    the selector can take at most (quotas are capped at it); running: the counts "so far" of its round records,
    which the joined rounds carry on from stratum to stratum."""
    names, inverse = strata_of(data, options.strata)
    units = lengths if budget.budget_unit == "tokens" else np.ones(len(lengths), np.int64)
    held = np.bincount(inverse, weights=units, minlength=len(names)).astype(np.int64)
    rule = "reference" if options.quota == "mixture" else options.quota
    quotas = stratum_quotas((held * capacity).astype(np.int64), budget.budget, rule, _targets(options, names, context))
    unit = UNITS[budget.token_counter] if budget.budget_unit == "tokens" else "documents"
    strata = []
    for index, name in enumerate(names):
        rows = np.flatnonzero(inverse == index)
        quota = int(quotas[index])
        strata.append(Stratum(name, f"{name} (quota {quota} of its {held[index]} {unit})", rows, units[rows],
                              lengths[rows], quota, int(held[index]), select_in(index, rows, quota) if quota else None))
    return _joined(stage, data, strata, running)


def _targets(options: Stratified, names: list[str], context: SelectionContext) -> np.ndarray | None:
    if options.needs_reference_clusters:  # reference documents per stratum, each in its nearest pool cluster
        found = Counter(f"cluster {c}" for c in context.reference_clusters.read(
            "assignments", columns=["cluster"])["cluster"].to_pylist())
        return np.array([found[name] for name in names])
    if options.quota == "mixture":  # the probed mixture's weight per stratum (the same component names)
        fit = context.mixture.manifest()["stats"]
        if names != fit["components"]:
            raise ValueError(f"quota 'mixture': the pool's strata {names} are not the fitted mixture's components "
                             f"{fit['components']}; give the selector the mixture's components as strata")
        return np.asarray(fit["weights"], dtype=np.float64)
    return None


@dataclass
class Stratum:
    name: str  # e.g. "cluster 3", "domain prose"
    where: str  # the name with its quota, as reasons give it
    rows: np.ndarray  # its pool positions
    units: np.ndarray  # their budget units (tokens, or 1 each for a documents budget)
    lengths: np.ndarray  # their tokens
    quota: int
    held: int  # budget units it holds
    selection: Selection | None  # the selector inside its quota (None: quota 0)


def _joined(stage: str, data: Pool, strata: list[Stratum], running: tuple[str, ...]) -> Selection:
    """One selection from each stratum's: their picks stratum after stratum, each cut to its quota (ZIP checks its
    budget after whole rounds), every decision grouped by its stratum with a reason led by its quota; per stratum
    its quota, what it holds, what was taken and its selector's stats; the rounds numbered in one sequence; tables
    concatenated and JSON documents keyed by stratum."""
    doc_ids = data.docs["doc_id"].to_pylist()
    order, rounds, stats, decided = [], [], {}, {}
    tables: dict[str, list[pa.Table]] = {}
    documents: dict[str, dict] = {}
    for stratum in strata:
        if stratum.selection is None:
            stats[stratum.name] = {"quota": 0, "held": stratum.held, "selected": 0, "tokens": 0}
            decided |= {doc_ids[i]: ("rejected", f"{stratum.where}: not selected, quota 0", None)
                        for i in stratum.rows.tolist()}
            continue
        part = stratum.selection
        picked = np.asarray(part.order, np.int64)
        kept = take_budget(picked, stratum.units, stratum.quota, "tokens")
        stats[stratum.name] = {"quota": stratum.quota, "held": stratum.held, "selected": len(kept),
                               "tokens": int(stratum.lengths[kept].sum())}
        if part.stats:
            stats[stratum.name]["selector"] = part.stats
        order += stratum.rows[kept].tolist()
        carried = {key: rounds[-1][key] for key in running} if rounds else {}
        rounds += [{**record, "stratum": stratum.name, "stratum_round": record.get("round"),
                    "round": len(rounds) + number + 1} | {key: record[key] + value for key, value in carried.items()}
                   for number, record in enumerate(part.rounds or [])]
        for name, table in part.tables.items():
            tables.setdefault(name, []).append(table)
        for name, document in part.documents.items():
            documents.setdefault(name, {})[stratum.name] = document
        beyond = {doc_ids[i] for i in stratum.rows[picked[len(kept):]].tolist()}
        for row in part.decisions.table().to_pylist():
            if row["doc_id"] in beyond:
                decided[row["doc_id"]] = ("rejected", f"{stratum.where}: not selected: beyond the quota, though "
                                          f"{row['reason']}", row["score"])
            else:
                decided[row["doc_id"]] = (row["decision"], f"{stratum.where}: {row['reason']}", row["score"])
    group = {doc_ids[i]: stratum.name for stratum in strata for i in stratum.rows.tolist()}
    decisions = Decisions(stage)
    for doc_id in doc_ids:
        decision, reason, score = decided[doc_id]
        decisions.add(doc_id, decision, reason, score=score, group=group[doc_id])
    stopped = sorted({str(s.selection.stats["stopped"]) for s in strata
                      if s.selection is not None and "stopped" in s.selection.stats})
    joined = ({"strata": stats} | ({"rounds": len(rounds)} if rounds else {})
              | ({"stopped": ",".join(stopped)} if stopped else {}))
    return Selection(order, decisions, joined, rounds=rounds or None,
                     tables={name: pa.concat_tables(parts) for name, parts in tables.items()}, documents=documents)
