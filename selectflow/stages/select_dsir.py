"""DSIR as stages: hashed n-gram counts per shard (on the Dask workers), then importance resampling of the pool
toward the reference set. Lineage gives every document its log importance weight and its rank by weight."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from selectflow.config import Budget, DsirSelector, NgramFeatures
from selectflow.fingerprint import code_fingerprint
from selectflow.select.dsir import (
    importance_resample,
    length_normalized,
    log_importance,
    log_probabilities,
    ngram_counts,
)
from selectflow.stages.base import Decisions
from selectflow.stages.pool import Pool
from selectflow.stages.registry import DSIR, NGRAMS
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.stages.strata import select_in_strata, strata_inputs, strata_view
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports


def ngram_features_stage(store: ArtifactStore, shard_ref: ArtifactRef, cfg: NgramFeatures) -> ArtifactRef:
    """One shard's "docs" -> table "ngrams" (doc_id, buckets list<int32>, counts list<float32>): each document's
    hashed n-gram counts, sparse."""
    inputs = [shard.sha256 for shard in shard_ref.shards("docs")]  # by content: a re-deduplicated shard is reused

    def write(writer: ArtifactWriter) -> None:
        started = time.perf_counter()
        docs = shard_ref.read("docs", columns=["doc_id", "text"])
        counts = ngram_counts(docs["text"].to_pylist(), cfg.buckets, cfg.max_n)
        offsets = pa.array(counts.indptr, pa.int32())
        writer.write("ngrams", pa.table({
            "doc_id": docs["doc_id"],
            "buckets": pa.ListArray.from_arrays(offsets, pa.array(counts.indices, pa.int32())),
            "counts": pa.ListArray.from_arrays(offsets, pa.array(counts.data, pa.float32())),
        }))
        writer.stats(docs=docs.num_rows, ngrams=int(counts.sum()), seconds=round(time.perf_counter() - started, 3))

    return store.build(NGRAMS.name, cfg.model_dump(), inputs, _CODE, write)


def read_ngrams(refs: list[ArtifactRef], buckets: int) -> tuple[list[str], sp.csr_matrix]:
    """The documents of these n-gram artifacts and their counts (documents x buckets), in artifact order."""
    doc_ids, blocks = [], []
    for ref in refs:
        table = ref.read("ngrams")
        doc_ids += table["doc_id"].to_pylist()
        bucket_lists, count_lists = table["buckets"].combine_chunks(), table["counts"].combine_chunks()
        blocks.append(sp.csr_matrix((count_lists.flatten().to_numpy(), bucket_lists.flatten().to_numpy(),
                                     bucket_lists.offsets.to_numpy()), shape=(table.num_rows, buckets)))
    return doc_ids, sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, buckets), dtype=np.float32)


def select_dsir_stage(store: ArtifactStore, pool: list[ArtifactRef], budget: Budget, options: DsirSelector,
                      context: SelectionContext) -> ArtifactRef:
    """The pool resampled toward the reference set by DSIR importance weights, under the budget; with
    `options.strata`, resampled inside each stratum's quota of the budget."""
    if context.ngrams is None or context.reference_ngrams is None:
        raise ValueError("selector 'dsir' needs the n-gram counts of the pool and of the reference set in its "
                         "SelectionContext (ngrams, reference_ngrams)")
    buckets = options.features.buckets

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        pool_ids, pool_counts = read_ngrams(context.ngrams, buckets)
        _, reference_counts = read_ngrams(context.reference_ngrams, buckets)
        raw = log_probabilities(pool_counts.sum(axis=0).A1, options.smoothing)
        target = log_probabilities(reference_counts.sum(axis=0).A1, options.smoothing)
        row = {doc_id: index for index, doc_id in enumerate(pool_ids)}
        doc_ids = data.docs["doc_id"].to_pylist()
        counts = pool_counts[[row[doc_id] for doc_id in doc_ids]]
        weights = log_importance(counts, target, raw)
        if options.length == "normalized":
            weights = length_normalized(weights, counts)
        tokens = lengths if budget.budget_unit == "tokens" else None
        if options.strata == "none":
            selection = _resampled(doc_ids, weights, tokens, budget.budget, budget.budget_unit, options.seed)
        else:
            def dsir_in(index: int, rows: np.ndarray, quota: int) -> Selection:
                return _resampled([doc_ids[i] for i in rows.tolist()], weights[rows],
                                  None if tokens is None else tokens[rows], quota, budget.budget_unit, options.seed)

            selection = select_in_strata(DSIR.name, data, lengths, budget, options, context, dsir_in)
        selection.stats |= {"reference_ngrams": int(reference_counts.sum()),
                            "mean_log_weight_selected": float(weights[np.asarray(selection.order, np.int64)].mean()),
                            "mean_log_weight_pool": float(weights.mean())}
        return selection

    inputs = [ref.key for ref in [*context.ngrams, *context.reference_ngrams]] + strata_inputs(options, context, "dsir")
    return build_selection(store, DSIR, pool, strata_view(options.strata, context), budget.token_counter,
                           {**budget.budget_fields(), **options.model_dump()}, inputs, _CODE, select)


def _resampled(doc_ids: list[str], weights: np.ndarray, lengths: np.ndarray | None, budget: int, unit: str,
               seed: int) -> Selection:
    """These documents importance-resampled by their log weights under the budget, a reason for each."""
    chosen = importance_resample(weights, lengths, budget, unit, seed)
    by_weight = np.empty(len(weights), np.int64)
    by_weight[np.argsort(-weights, kind="stable")] = np.arange(len(weights))
    drawn = np.full(len(weights), -1)
    drawn[chosen] = np.arange(len(chosen))
    decisions = Decisions(DSIR.name)
    for index, doc_id in enumerate(doc_ids):
        weight = f"log importance weight {weights[index]:+.2f} (rank {by_weight[index] + 1} of {len(weights)})"
        if drawn[index] >= 0:
            decisions.add(doc_id, "selected", f"selected: {weight}, drawn #{drawn[index] + 1} of {len(chosen)} "
                          f"by importance resampling (seed {seed})", score=float(weights[index]))
        else:
            decisions.add(doc_id, "rejected", f"not selected: {weight}, not drawn by importance resampling "
                          f"(seed {seed})", score=float(weights[index]))
    return Selection(chosen, decisions)
