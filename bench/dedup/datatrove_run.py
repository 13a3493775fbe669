"""One measured run of DataTrove's MinHash dedup (stages 1-3) over the same Parquet shards.

Runs in bench/.venv-datatrove (never in the project venv):

    bench/.venv-datatrove/bin/python bench/dedup/datatrove_run.py SHARD_DIR OUT_DIR --workers 2

Config comparable to ours: 5-gram words, 16 buckets x 8 hashes (128), seed 1, 64-bit xxhash shingles (DataTrove's
defaults otherwise: simplify_text normalization, spaCy English word tokenizer). DataTrove has no Jaccard verification:
every bucket match is a duplicate. Stage 1 runs one task per shard, stage 2 one task per bucket, stage 3 is single-task
(as designed). Writes OUT_DIR/labels.npy (cluster root per document in shard order) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np
import pyarrow.parquet as pq
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import ParquetReader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.shards, "*.parquet")))
    n_files = len(files)
    cfg = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8, seed=1)
    work = os.path.abspath(args.out)
    logs = os.path.join(work, "logs")
    reader = ParquetReader(os.path.abspath(args.shards), text_key="text", id_key="doc_id", glob_pattern="*.parquet")
    times = {}
    t0 = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[reader, MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)],
        tasks=n_files, workers=args.workers, logging_dir=f"{logs}/s1", skip_completed=False,
    ).run()
    times["t_signatures"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)],
        tasks=cfg.num_buckets, workers=args.workers, logging_dir=f"{logs}/s2", skip_completed=False,
    ).run()
    times["t_buckets"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove", config=cfg,
                                      save_cluster_id=True)],
        tasks=1, workers=1, logging_dir=f"{logs}/s3", skip_completed=False,
    ).run()
    times["t_cluster"] = time.perf_counter() - t2
    times["t_compute"] = time.perf_counter() - t0

    # labels: documents in shard order; cluster members get the first member's global index as label
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n = int(offsets[-1])
    labels = np.arange(n, dtype=np.int64)
    cluster_of = np.full(n, -1, dtype=np.int64)
    for rank in range(n_files):
        path = f"{work}/remove/{rank:06d}.clusters"
        if os.path.exists(path):
            data = np.frombuffer(open(path, "rb").read(), dtype="<u4").reshape(-1, 2)
            cluster_of[offsets[rank] + data[:, 0].astype(np.int64)] = data[:, 1]
    members = np.flatnonzero(cluster_of >= 0)
    if members.size:
        _, first = np.unique(cluster_of[members], return_index=True)
        root_of_cluster = {int(cluster_of[members[f]]): int(members[f]) for f in first}
        labels[members] = [root_of_cluster[int(c)] for c in cluster_of[members]]
    np.save(os.path.join(work, "labels.npy"), labels)
    removed = sum(os.path.getsize(p) // 4 for p in glob.glob(f"{work}/remove/*.remove"))
    print(json.dumps({"docs": n, "near_dups": int(removed), **times}))


if __name__ == "__main__":
    main()
