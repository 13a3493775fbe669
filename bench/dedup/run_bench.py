"""Dedup benchmark driver: selectflow (1 process and 2-worker dask) vs DataTrove MinHash (1 and 2 workers).

    .venv/bin/python bench/dedup/run_bench.py --sizes 10000 100000 [--gt-max 100000] [--datatrove-max 100000]

For each size: builds the corpus (build_corpus.py, cached in bench/data/), writes it as Parquet shards, computes the
exact-Jaccard ground truth (5-gram word shingles, threshold 0.7; cached), runs every configuration as a child process
while sampling the RSS of the whole process tree (child + its workers) every 50 ms, scores the resulting components
(selectflow.dedup.evaluate.pair_scores) and prints a markdown table. Results: bench/data/results_<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_corpus import DATA, build  # noqa: E402

from selectflow.dedup.evaluate import pair_scores, shingle_matrix, true_labels, true_pairs  # noqa: E402
from selectflow.dedup.minhash import MinHasher  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
DT_PY = str(ROOT / "bench" / ".venv-datatrove" / "bin" / "python")


def shards(n: int) -> Path:
    folder = DATA / f"shards_{n}"
    if not folder.exists():
        table = pq.read_table(build(n))
        rows = min(10_000, max(n // 4, 1))
        folder.mkdir(parents=True)
        for k, s in enumerate(range(0, n, rows)):
            pq.write_table(table.slice(s, rows), folder / f"part-{k:05d}.parquet")
    return folder


def ground_truth(n: int) -> np.ndarray:
    path = DATA / f"truth_{n}.npy"
    if not path.exists():
        t0 = time.perf_counter()
        texts = pq.read_table(build(n), columns=["text"])["text"].to_pylist()
        sh, off = MinHasher(ngram=5, unit="word").shingle_hashes(texts)  # == reference `shingles` (tested)
        del texts
        i, j, _ = true_pairs(shingle_matrix(sh, off), 0.7)
        np.save(path, true_labels(n, i, j))
        print(f"ground truth {n}: {i.size} pairs with Jaccard >= 0.7 in {time.perf_counter() - t0:.0f} s", flush=True)
    return np.load(path)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(cmd: list[str], timeout: float) -> tuple[dict, float, float]:
    """Run cmd; return (its JSON line + cpu_s, wall seconds, peak RSS of its process tree in MiB).

    cpu_s: user + system CPU seconds of the child and all its waited-for descendants (workers included)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    peak = [0]
    cpu_seen: dict[int, float] = {}  # pid -> last observed user + system CPU seconds

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root] + root.children(recursive=True)
                rss = 0
                for p in tree:
                    try:
                        with p.oneshot():
                            rss += p.memory_info().rss
                            t = p.cpu_times()
                            cpu_seen[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timeout after {timeout:.0f} s"}, time.perf_counter() - t0, peak[0] / 2**20
    wall = time.perf_counter() - t0
    thread.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"rc={proc.returncode}: {err[-2000:]}"}, wall, peak[0] / 2**20
    # CPU of the whole tree: waited-for descendants (rusage) or, if larger, the sum of what was sampled per process
    # (pool workers that are not waited for are invisible to rusage; sampling misses at most the last 50 ms of each).
    cpu = max(_children_cpu() - cpu0, sum(cpu_seen.values()))
    return {**json.loads(lines[-1]), "cpu_s": cpu}, wall, peak[0] / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--gt-max", type=int, default=100_000)
    ap.add_argument("--datatrove-max", type=int, default=100_000)
    ap.add_argument("--configs", nargs="+", default=["ours-1", "ours-dask2", "datatrove-1", "datatrove-2"])
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--report", action="store_true", help="only print the table of the saved results_<size>.json")
    args = ap.parse_args()
    if args.report:
        print_table([r for n in args.sizes for r in json.loads((DATA / f"results_{n}.json").read_text()).values()])
        return
    rows = []
    for n in args.sizes:
        folder = shards(n)
        truth = ground_truth(n) if n <= args.gt_max else None
        results = {}
        for name in args.configs:
            out = DATA / "runs" / f"{name}_{n}"
            if name.startswith("datatrove") and n > args.datatrove_max:
                continue
            subprocess.run(["rm", "-rf", str(out)], check=True)
            workers = 2 if name.endswith("2") else 1
            if name == "ours-1":
                cmd = [PY, "bench/dedup/ours.py", str(folder), str(out), "--mode", "local"]
            elif name == "ours-dask2":
                cmd = [PY, "bench/dedup/ours.py", str(folder), str(out), "--mode", "dask", "--workers", "2"]
            else:
                cmd = [DT_PY, "bench/dedup/datatrove_run.py", str(folder), str(out), "--workers", str(workers)]
            info, wall, peak = measured(cmd, args.timeout)
            info.update(config=name, n=n, cores=workers, wall_s=wall, peak_rss_mib=peak,
                        docs_per_s=n / wall, docs_per_s_per_core=n / wall / workers,
                        load_avg_1m=os.getloadavg()[0])
            if "cpu_s" in info:
                info["docs_per_cpu_s"] = n / info["cpu_s"]
            if "error" not in info and truth is not None:
                info.update(pair_scores(np.load(out / "labels.npy"), truth))
            results[name] = info
            rows.append(info)
            print(json.dumps(info), flush=True)
        saved = DATA / f"results_{n}.json"  # merged: configurations not run this time keep their last result
        merged = {**(json.loads(saved.read_text()) if saved.exists() else {}), **results}
        saved.write_text(json.dumps(merged, indent=1))
    print()
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print("| docs | config | cores | wall s | docs/s | docs/s/core | docs/CPU-s | peak RSS MiB | dropped (true) "
          "| dropped P | dropped R | dropped F1 | pair P | pair R | pair F1 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['n']:,} | {r['config']} | {r['cores']} | {r['wall_s']:.1f} | - | - | - "
                  f"| {r['peak_rss_mib']:.0f} "
                  f"| {r['error'][-80:].replace(chr(10), ' ')} | | | | | | |")
            continue
        q = lambda k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
        if "drop_precision" in r:
            p, rc = r["drop_precision"], r["drop_recall"]
            r["drop_f1"] = 2 * p * rc / (p + rc) if p + rc else 0.0
        dropped = r.get("dropped_pred", r.get("near_dups", 0) + r.get("exact_dups", 0))
        truth = f" ({r['dropped_true']:,})" if "dropped_true" in r else ""
        print(f"| {r['n']:,} | {r['config']} | {r['cores']} | {r['wall_s']:.1f} | {r['docs_per_s']:,.0f} | "
              f"{r['docs_per_s_per_core']:,.0f} | {r['docs_per_cpu_s']:,.0f} | {r['peak_rss_mib']:,.0f} | "
              f"{dropped:,}{truth} | {q('drop_precision')} | {q('drop_recall')} | {q('drop_f1')} | "
              f"{q('precision')} | {q('recall')} | {q('f1')} |")


if __name__ == "__main__":
    main()
