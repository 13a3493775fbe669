"""Exact deduplication on the normalized-text hash (`content_hash`), across all shards.

Keeper of each `content_hash` group: the smallest ``(source, line)`` (ties, which ingest never produces, broken by
``doc_id``): the first occurrence, whatever order the shards arrive in. The result has one row per duplicate (not
per keeper): ``doc_id``, ``dup_of`` (the keeper's doc_id), sorted by the duplicate's ``(source, line, doc_id)``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KEY_COLUMNS", "RESULT_SCHEMA", "exact_duplicates", "exact_duplicates_dask"]

KEY_COLUMNS = ["doc_id", "content_hash", "source", "line"]
RESULT_SCHEMA = pa.schema([pa.field("doc_id", pa.string(), nullable=False),
                           pa.field("dup_of", pa.string(), nullable=False)])


def _empty() -> pa.Table:
    return RESULT_SCHEMA.empty_table()


def exact_duplicates(keys: pa.Table) -> pa.Table:
    """One row per duplicate document: doc_id, dup_of (keeper = smallest (source, line) of its content_hash)."""
    keys = keys.select(KEY_COLUMNS)
    for name in KEY_COLUMNS:
        if keys[name].null_count:
            raise ValueError(f"exact_duplicates: column {name!r} has nulls")
    if keys.num_rows == 0:
        return _empty()
    keys = keys.combine_chunks()
    order = pc.sort_indices(keys, sort_keys=[("content_hash", "ascending"), ("source", "ascending"),
                                             ("line", "ascending"), ("doc_id", "ascending")])
    ranked = keys.take(order)
    hashes = ranked["content_hash"]
    n = ranked.num_rows
    first = np.ones(n, dtype=bool)
    if n > 1:
        first[1:] = pc.not_equal(hashes.slice(1), hashes.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    if first.all():
        return _empty()
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    dup = np.flatnonzero(~first)
    out = pa.table({
        "doc_id": ranked["doc_id"].take(pa.array(dup)),
        "dup_of": ranked["doc_id"].take(pa.array(group_start[dup])),
        "source": ranked["source"].take(pa.array(dup)),
        "line": ranked["line"].take(pa.array(dup)),
    })
    out = out.sort_by([("source", "ascending"), ("line", "ascending"), ("doc_id", "ascending")])
    return out.select(["doc_id", "dup_of"]).cast(RESULT_SCHEMA).combine_chunks()


def exact_duplicates_dask(parquet_paths: list[str], client=None) -> pa.Table:
    """`exact_duplicates` over DOCS-schema Parquet shards with dask.dataframe (a groupby across shards).

    Reads only doc_id, content_hash, source, line. Plan: a tree-reduced groupby over all shards gives, per
    content_hash, the copy count and the smallest sort key ``source \\0 line(20 digits) \\0 doc_id`` (whose last field
    is the keeper's doc_id); only the groups with more than one copy come back (small), then a broadcast join of the
    shards against them (per partition, no shuffle) yields the non-keeper rows. Uses `client` when given, else
    dask's current default scheduler. Equal to ``exact_duplicates(concat of the shards)``.
    """
    import dask
    import dask.dataframe as dd

    if not parquet_paths:
        return _empty()

    def compute(collection):
        return client.compute(collection).result() if client is not None else collection.compute()

    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.read_parquet(list(parquet_paths), columns=KEY_COLUMNS)
        # The composite key orders like the tuple (source, line, doc_id): "\0" sorts before every other character
        # and lines are non-negative, zero-padded to a fixed width.
        ddf = ddf.assign(key=ddf["source"].astype(object) + "\0"
                         + ddf["line"].astype("int64").astype(str).str.zfill(20) + "\0" + ddf["doc_id"].astype(object))
        stats = ddf.groupby("content_hash").agg(copies=("doc_id", "count"), keeper_key=("key", "min"))
        stats = compute(stats[stats["copies"] > 1][["keeper_key"]])
        if len(stats) == 0:
            return _empty()
        # Broadcast hash join against the (small, in-memory) duplicate groups: per partition, no shuffle.
        rows = ddf.merge(stats, left_on="content_hash", right_index=True, how="inner")
        rows = compute(rows[rows["key"] != rows["keeper_key"]][["doc_id", "source", "line", "keeper_key"]])
    if len(rows) == 0:
        return _empty()
    frame = rows.assign(dup_of=rows["keeper_key"].str.rsplit("\0", n=1).str[-1])
    table = pa.Table.from_pandas(frame[["doc_id", "dup_of", "source", "line"]].reset_index(drop=True),
                                 preserve_index=False)
    table = table.sort_by([("source", "ascending"), ("line", "ascending"), ("doc_id", "ascending")])
    return table.select(["doc_id", "dup_of"]).cast(RESULT_SCHEMA).combine_chunks()
