"""What verifying every cache hit costs: the sha256 check of a whole workspace's store, against the time the run took.

    .venv/bin/python bench/store/verify_cost.py selectflow-workspace [--repeats 3]

Prints bytes and files checked, the median seconds of a full check, the throughput, and the share of the latest
completed run's wall time that checking its artifacts once takes (every cache hit of a re-run checks each of
them once).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from pathlib import Path

from selectflow.runs import load_run
from selectflow.store import ArtifactStore, manifest_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = ArtifactStore(args.workspace / "store")
    refs = store.artifacts()
    entries = [entry for ref in refs for entry in manifest_files(ref.manifest())]
    total = sum(entry["bytes"] for entry in entries)
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        damaged = [ref for ref in refs if ref.verify()]
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    run = load_run(store)
    wall = (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds()
    print(f"{len(refs)} artifacts, {len(entries)} files, {total / 1e6:.1f} MB; damaged: {len(damaged)}")
    print(f"full check: median {median:.3f} s of {args.repeats} ({total / 1e6 / median:.0f} MB/s)")
    print(f"run {run.run_id}: {wall:.0f} s wall; checking all its artifacts once = {100 * median / wall:.2f}% of it")


if __name__ == "__main__":
    main()
