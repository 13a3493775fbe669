"""What every selector and baseline stage shares: the pool it reads, the token length of each document, and how its
result is written. A selector only computes a `Selection`; `build_selection` writes it the same way for all:
"docs" (the selected documents in selection order), "decisions" (one per pool document) and the stats docs_in /
docs_out / dropped / tokens / excluded_by_cluster_stage / seconds, plus rounds.json when it works in rounds.

Every selector and baseline stage is a function (store, pool, budget, options, context[, log]) -> ArtifactRef:
`pool` the deduplicated documents' artifacts, `budget` the run's `Budget`, `options` its `SelectorOptions`,
`context` a `SelectionContext`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from selectflow.config import Budget, InfluenceConfig, SelectionConfig
from selectflow.select.zip import token_counter
from selectflow.stages.base import Decisions, Kind, Stage, selector_stage, write_decisions
from selectflow.stages.pool import Pool, read_pool
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter


@dataclass(frozen=True)
class SelectionContext:
    """What a selector may use besides the pool, its budget and its options."""

    clusters: ArtifactRef | None = None  # the cluster stage's artifact: assignments, neighbours, semantic dedup
    influence: ArtifactRef | None = None  # the fitted influence reference (for selectors that need_influence)
    influence_cfg: InfluenceConfig | None = None
    ngrams: list[ArtifactRef] | None = None  # hashed n-gram counts per pool shard (for selectors that need_ngrams)
    reference_ngrams: list[ArtifactRef] | None = None  # the same for the reference set
    reference_clusters: ArtifactRef | None = None  # the reference set assigned to the pool's clusters, when needed
    mixture: ArtifactRef | None = None  # the fitted mixture search (for selectors that need_mixture)

    def semdedup(self) -> ArtifactRef | None:
        """The cluster artifact when its semantic dedup dropped documents (a selector must not pick those), else
        None: a selector that needs nothing else from the clusters then stays cached when only they change."""
        if self.clusters is not None and self.clusters.manifest()["stats"]["dropped"]:
            return self.clusters
        return None


@dataclass
class Selection:
    order: Sequence[int]  # the selected pool positions, in selection order
    decisions: Decisions  # one per pool document
    stats: dict = field(default_factory=dict)
    rounds: list[dict] | None = None  # per-round records (MLflow series), for selectors that work in rounds
    tables: dict[str, pa.Table] = field(default_factory=dict)  # further tables of the artifact
    documents: dict[str, object] = field(default_factory=dict)  # further JSON files of the artifact


Selector = Callable[[Pool, np.ndarray, ArtifactWriter], Selection]  # (pool, token lengths, writer) -> Selection


def token_lengths(docs: pa.Table, counter: str) -> np.ndarray:
    count = token_counter(counter)
    return np.fromiter((count(text) for text in docs["text"].to_pylist()), np.int64, docs.num_rows)


def build_selection(store: ArtifactStore, stage: Stage, pool: list[ArtifactRef], clusters: ArtifactRef | None,
                    counter: str, config: dict, inputs: list[str], code: str, select: Selector) -> ArtifactRef:
    """The artifact of `select` run on the pool (less what the cluster stage dropped, when `clusters` is given);
    keyed by `config`, the pool, `clusters` and further `inputs`, and the selector module's `code` fingerprint."""

    def write(writer: ArtifactWriter) -> None:
        started = time.perf_counter()
        data = read_pool(pool, clusters)
        lengths = token_lengths(data.docs, counter)
        result = select(data, lengths, writer)
        for name, table in result.tables.items():
            writer.write(name, table)
        for name, document in result.documents.items():
            writer.write_json(name, document)
        if result.rounds is not None:
            writer.write_json("rounds.json", result.rounds)
        order = np.asarray(result.order, np.int64)
        stats = {"excluded_by_cluster_stage": data.excluded, "tokens": int(lengths[order].sum()),
                 "seconds": round(time.perf_counter() - started, 3)} | result.stats
        write_decisions(writer, result.decisions, data.docs.take(pa.array(order, pa.int64())), **stats)

    keys = [ref.key for ref in pool] + ([clusters.key] if clusters else []) + inputs
    return store.build(stage.name, config, keys, code, write)


def budgets_by_method(cfg: SelectionConfig) -> dict[str, Budget]:
    """Each selector gets the run's budget; a baseline gets the budget of the subsets it is compared with: the
    smallest any selector will take (ZIP takes whole rounds of k3 documents)."""
    budget = cfg.budget_of
    stages = {options.method: selector_stage(options.method) for options in cfg.selectors}
    taken = [options.budget_taken(budget) for options in cfg.selectors if stages[options.method].kind == Kind.SELECTOR]
    compared = min(taken, key=lambda b: b.budget, default=budget)
    return {method: compared if stage.kind == Kind.BASELINE else budget for method, stage in stages.items()}
