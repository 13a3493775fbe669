"""Exact dedup: keeper determinism across shard orders, dask path equal to the in-memory path."""

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectflow.dedup.exact import exact_duplicates, exact_duplicates_dask
from selectflow.schema import DOCS
from selectflow.text import content_hash, doc_id

TEXTS = ["Hello world", "hello   WORLD", "Another doc", "unique one", "another DOC ", "x", "X", "y",
         "Hello world\n", "  ", "\t"]


def _shards(n_shards=4, copies=3, seed=0):
    rng = random.Random(seed)
    shards = []
    for s in range(n_shards):
        source = f"file:///data/shard-{s}.jsonl"
        rows = [rng.choice(TEXTS) for _ in range(copies * len(TEXTS) // n_shards + 3)]
        shards.append(pa.table({
            "doc_id": [doc_id(source, k + 1) for k in range(len(rows))],
            "source": [source] * len(rows),
            "line": pa.array(range(1, len(rows) + 1), pa.int64()),
            "domain": [None] * len(rows),
            "text": rows,
            "content_hash": [content_hash(t) for t in rows],
            "n_bytes": pa.array([len(t.encode()) for t in rows], pa.int64()),
            "record": [None] * len(rows),
        }, schema=DOCS))
    return shards


def _keys(tables):
    return pa.concat_tables(tables).select(["doc_id", "content_hash", "source", "line"])


def _reference(keys: pa.Table) -> set[tuple[str, str]]:
    """Plain-Python statement of the rule: keeper = smallest (source, line) of each content_hash."""
    rows = sorted(keys.to_pylist(), key=lambda r: (r["source"], r["line"], r["doc_id"]))
    keeper, out = {}, set()
    for r in rows:
        if r["content_hash"] in keeper:
            out.add((r["doc_id"], keeper[r["content_hash"]]))
        else:
            keeper[r["content_hash"]] = r["doc_id"]
    return out


def test_exact_matches_rule_and_is_deterministic_across_shard_orders():
    shards = _shards()
    expected = exact_duplicates(_keys(shards))
    assert expected.column_names == ["doc_id", "dup_of"]
    assert set(zip(*expected.to_pydict().values())) == _reference(_keys(shards))
    assert expected.num_rows > 0
    rng = random.Random(1)
    for _ in range(5):
        order = shards[:]
        rng.shuffle(order)
        rows = _keys(order).to_pylist()
        rng.shuffle(rows)  # also shuffle rows across shards
        assert exact_duplicates(pa.Table.from_pylist(rows, schema=_keys(order).schema)).equals(expected)


def test_keeper_is_first_occurrence_and_duplicates_only():
    shards = _shards()
    keys = _keys(shards)
    dups = exact_duplicates(keys).to_pylist()
    by_id = {r["doc_id"]: r for r in keys.to_pylist()}
    dropped = {d["doc_id"] for d in dups}
    for d in dups:
        dup, keeper = by_id[d["doc_id"]], by_id[d["dup_of"]]
        assert dup["content_hash"] == keeper["content_hash"]
        assert (keeper["source"], keeper["line"]) < (dup["source"], dup["line"])
        assert keeper["doc_id"] not in dropped
    # one keeper per hash: dropped = all rows minus number of distinct hashes
    assert len(dropped) == keys.num_rows - len(set(keys["content_hash"].to_pylist()))


def test_exact_empty_and_no_duplicates():
    empty = _keys(_shards())[:0]
    assert exact_duplicates(empty).num_rows == 0
    keys = pa.table({"doc_id": ["a", "b"], "content_hash": ["h1", "h2"], "source": ["s", "s"],
                     "line": pa.array([1, 2], pa.int64())})
    assert exact_duplicates(keys).num_rows == 0


@pytest.mark.parametrize("use_client", [False, True])
def test_exact_dask_equals_in_memory(tmp_path, use_client):
    shards = _shards(n_shards=5, copies=4, seed=3)
    paths = []
    for k, table in enumerate(shards):
        path = tmp_path / f"shard-{k}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    expected = exact_duplicates(_keys(shards))
    if use_client:
        from dask.distributed import Client

        with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
            got = exact_duplicates_dask(paths[::-1], client=client)
    else:
        import dask

        with dask.config.set(scheduler="synchronous"):
            got = exact_duplicates_dask(paths[::-1])
    assert got.equals(expected)


def test_exact_dask_without_duplicates(tmp_path):
    import dask

    table = _shards(n_shards=1)[0]
    first = {}
    for k, h in enumerate(table["content_hash"].to_pylist()):
        first.setdefault(h, k)
    unique = table.take(sorted(first.values()))
    path = tmp_path / "unique.parquet"
    pq.write_table(unique, path)
    with dask.config.set(scheduler="synchronous"):
        got = exact_duplicates_dask([str(path)])
    assert got.num_rows == 0 and got.schema.names == ["doc_id", "dup_of"]
    assert exact_duplicates_dask([]).num_rows == 0
