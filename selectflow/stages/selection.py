"""What every selector and baseline stage shares: the pool it reads, the token length of each document, and how its
result is written. A selector only computes a `Selection`; `build_selection` writes it the same way for all:
"docs" (the selected documents in selection order), "decisions" (one per pool document) and the stats docs_in /
docs_out / dropped / tokens / excluded_by_cluster_stage / seconds, plus rounds.json when it works in rounds."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from selectflow.select.zip import token_counter
from selectflow.stages.base import Decisions, Stage, write_decisions
from selectflow.stages.pool import Pool, read_pool
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter


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
