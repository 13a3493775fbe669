"""One measured run of selectflow's exact + near dedup over Parquet shards (run by run_bench.py in a child process).

    python bench/dedup/ours.py SHARD_DIR OUT_DIR --mode local|dask [--workers 2] [--batch 10000]

local: one process, shards read one after another.  dask: LocalCluster(workers, 1 thread each, processes);
signatures computed per shard on the workers, exact dedup via exact_duplicates_dask, LSH bands as dask tasks.
Writes OUT_DIR/labels.npy (component root per document, in shard order) and prints one JSON line of timings.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from selectflow.dedup.exact import exact_duplicates, exact_duplicates_dask  # noqa: E402
from selectflow.dedup.minhash import MinHasher  # noqa: E402
from selectflow.dedup.near import components, near_duplicates  # noqa: E402

CFG = dict(num_perm=128, ngram=5, unit="word", seed=1)
BANDS, ROWS, THRESHOLD = 16, 8, 0.7


def shard_signatures(path: str) -> np.ndarray:
    texts = pq.read_table(path, columns=["text"])["text"].to_pylist()
    return MinHasher(**CFG).signatures(texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("out")
    ap.add_argument("--mode", choices=["local", "dask"], default="local")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.shards, "*.parquet")))
    t_start = time.perf_counter()
    client = cluster = None
    if args.mode == "dask":
        import dask
        from dask.distributed import Client, LocalCluster

        # Dask's nannies export MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold at 128 KiB: every
        # large numpy temporary is then mmap'ed and page-faulted afresh (measured: +40% CPU for MinHash). Raise both.
        dask.config.set({"distributed.nanny.pre-spawn-environ": {
            "MALLOC_TRIM_THRESHOLD_": str(2**27), "MALLOC_MMAP_THRESHOLD_": str(2**25)}})
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=0)
        client = Client(cluster)
    t_ready = time.perf_counter()
    keys = pa.concat_tables([pq.read_table(p, columns=["doc_id", "content_hash", "source", "line"]) for p in paths])
    n = keys.num_rows

    t0 = time.perf_counter()
    if client is None:
        sig = np.vstack([shard_signatures(p) for p in paths])
    else:
        sig = np.vstack(client.gather(client.map(shard_signatures, paths, pure=False)))
    t_sig = time.perf_counter() - t0

    t0 = time.perf_counter()
    exact = exact_duplicates_dask(paths, client=client) if client is not None else exact_duplicates(keys)
    t_exact = time.perf_counter() - t0

    t0 = time.perf_counter()
    survivors = pc.invert(pc.is_in(keys["doc_id"], value_set=exact["doc_id"])).to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(survivors)
    sub = keys.take(pa.array(idx))
    near = near_duplicates(sub["doc_id"], sub["source"], sub["line"], sig[idx], BANDS, ROWS, THRESHOLD, client=client)
    t_near = time.perf_counter() - t0
    t_total = time.perf_counter() - t_ready

    # component labels over all documents: exact dup -> keeper, near dup -> keeper
    pos = {d: k for k, d in enumerate(keys["doc_id"].to_pylist())}
    ei = np.array([pos[d] for d in exact["doc_id"].to_pylist()] + [pos[d] for d in near["doc_id"].to_pylist()],
                  dtype=np.int64)
    ej = np.array([pos[d] for d in exact["dup_of"].to_pylist()] + [pos[d] for d in near["dup_of"].to_pylist()],
                  dtype=np.int64)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    np.save(os.path.join(args.out, "labels.npy"), components(n, ei, ej))
    if client is not None:
        client.close()
        cluster.close()
    print(json.dumps({"docs": n, "exact_dups": exact.num_rows, "near_dups": near.num_rows,
                      "t_signatures": t_sig, "t_exact": t_exact, "t_near": t_near, "t_compute": t_total,
                      "t_cluster_start": t_ready - t_start}))


if __name__ == "__main__":
    main()
