"""ZIP benchmark: selectflow's exact mode vs the naive reference (bench/zip/naive.py), and zstd mode vs exact/random.

Real documents: the embedded sample corpus (selectflow/data/sample/*.jsonl.zst: prose, code, dictionary, fortunes,
licences, ShareGPT Q&A; ~17k records, kept as original records), shuffled with seed 0.

    .venv/bin/python bench/zip/run.py            # all parts, JSON lines on stdout
    .venv/bin/python bench/zip/run.py --part compare|paper|zstd

- compare: pool 2000, budget 300, K1=2000 K2=100 K3=50: both run to the end, ids compared, both timed.
- paper:   pool 10000, budget 1000, K1=10000 K2=200 K3=100 (the paper's): fast one run fully (threads and
  processes); the naive one run for its first NAIVE_ROUNDS rounds for real, and its total EXTRAPOLATED from sampled
  per-evaluation timings of every round (naive evaluation = zlib.compress(str(anchor + [x]), 9) with the anchors of
  the fast run's own trajectory, which the compare part shows to be the naive one's), divided by the 2 processes.
- zstd:    the same pool/budget in zstd mode; whole-subset ratios (zstd-19 long window, zlib-9 on texts joined by a
  blank line) of exact, zstd and 5 random subsets of the same size.
- naive:   the paper part's pool, budget and K with the naive reference run to the END (2 processes, 44 min on 2
  idle cores), with selectflow's exact mode on the same pool before and after it; ids compared.
- scale:   `--pool N --budget B --mode M` (default 1,000,000 / 100,000 / exact), the paper's K, 2 worker threads and
  the stage's checkpointing, on the dedup benchmark's corpus of N documents (`bench/dedup/build_corpus.py`: real
  Debian text, ~30% near and exact copies; no records, so exact mode scores repr({"text": ...})). Wall and CPU
  seconds, peak RSS, median seconds per round and stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import zstandard

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "zip"))

from naive import naive_zip  # noqa: E402

from selectflow.compression import compression_ratio, join_texts  # noqa: E402
from selectflow.schema import DOCS  # noqa: E402
from selectflow.select import ZipConfig, zip_select  # noqa: E402
from selectflow.select.zip import ZipCheckpoint  # noqa: E402

SAMPLE = ROOT / "selectflow" / "data" / "sample"
NAIVE_ROUNDS = 3
PAPER_K = dict(k1=10_000, k2=200, k3=100)


def load_docs(n: int) -> pa.Table:
    rows = []
    for path in sorted(SAMPLE.glob("*.jsonl.zst")):
        with zstandard.open(path, "rt", encoding="utf-8") as handle:
            for k, line in enumerate(handle):
                rec = json.loads(line)
                text = "\n".join(t["value"] for t in rec["conversations"]) if "conversations" in rec else rec["text"]
                rows.append({"doc_id": f"{path.stem}-{k}", "source": path.name, "line": k + 1,
                             "domain": rec.get("domain"), "text": text, "content_hash": "", "n_bytes": len(text),
                             "record": line.strip()})
    order = np.random.default_rng(0).permutation(len(rows))[:n]
    return pa.Table.from_pylist([rows[i] for i in order], schema=DOCS)


def records_of(docs: pa.Table) -> list:
    return [json.loads(r) for r in docs["record"].to_pylist()]


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def part_compare() -> None:
    docs = load_docs(2000)
    kw = dict(k1=2000, k2=100, k3=50)
    t = time.perf_counter()
    fast = zip_select(docs, ZipConfig(budget=300, workers=2, **kw))
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ids = docs["doc_id"].to_pylist()
    slow = [ids[i] for i in naive_zip(records_of(docs), 300, processes=2, **kw)]
    t_naive = time.perf_counter() - t
    emit({"part": "compare", "pool": 2000, "budget": 300, **kw, "identical_ids_in_order": slow == fast.selected,
          "n_selected": len(fast.selected), "seconds_fast": round(t_fast, 2), "seconds_naive": round(t_naive, 2),
          "speedup": round(t_naive / t_fast, 1)})


def _time_naive_evals(anchor: list, cands: list, repeat: int = 1) -> float:
    """Mean seconds of one naive evaluation ratio(anchor + [x]) over cands."""
    t = time.perf_counter()
    for x in cands:
        s = str(anchor + [x]).encode("utf-8")
        len(s) / len(zlib.compress(s, 9))
    return (time.perf_counter() - t) / len(cands)


def part_paper() -> None:
    docs = load_docs(10_000)
    kw = dict(k1=10_000, k2=200, k3=100)
    out = {"part": "paper", "pool": 10_000, "budget": 1000, **kw, "cores": os.cpu_count()}
    results = {}
    for parallel in ("threads", "processes"):
        t = time.perf_counter()
        res = zip_select(docs, ZipConfig(budget=1000, workers=2, parallel=parallel, **kw))
        results[parallel] = res
        out[f"seconds_fast_{parallel}"] = round(time.perf_counter() - t, 2)
        out[f"seconds_fast_{parallel}_init"] = round(res.seconds["init"], 2)
    out["threads_eq_processes"] = results["threads"].selected == results["processes"].selected
    fast = results["threads"]
    out["fast_rounds"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in fast.rounds]
    records = records_of(docs)
    pos = {d: i for i, d in enumerate(docs["doc_id"].to_pylist())}
    sel = [pos[d] for d in fast.selected]
    rng = np.random.default_rng(1)
    # extrapolated naive cost, per round, 1 process
    t_init = _time_naive_evals([], [records[i] for i in rng.choice(10_000, 300, replace=False)]) * 10_000
    per_round = []
    for r in range(10):
        anchor = [records[i] for i in sel[: r * 100]]
        cands = [records[i] for i in rng.choice(10_000, 12, replace=False)]
        coarse = _time_naive_evals(anchor, cands) * 10_000
        picks = [records[i] for i in sel[r * 100 : (r + 1) * 100]]
        fine = 0.0
        for k0 in range(0, 100, 10):  # sample k = 0, 10, ..., 90; each stands for 10 greedy steps
            each = _time_naive_evals(picks[:k0], [records[i] for i in rng.choice(10_000, 4, replace=False)])
            fine += sum((200 - k) * each for k in range(k0, k0 + 10))
        per_round.append((coarse, fine))
    naive_total_1proc = t_init + sum(c + f for c, f in per_round)
    out["naive_extrapolated_seconds_1proc"] = round(naive_total_1proc, 1)
    out["naive_extrapolated_seconds_2proc"] = round(naive_total_1proc / 2, 1)
    out["naive_extrapolated_rounds_1proc"] = [[round(c, 1), round(f, 1)] for c, f in per_round]
    # real naive run of its first NAIVE_ROUNDS rounds (2 processes), to check the extrapolation and the ids
    times = []
    t = time.perf_counter()
    head = naive_zip(records, 1000, processes=2, max_rounds=NAIVE_ROUNDS,
                     on_round=lambda r, info: times.append(info), **kw)
    out["naive_real_first_rounds_seconds_2proc"] = round(time.perf_counter() - t, 1)
    out["naive_real_first_rounds_ids_equal"] = head == sel[: len(head)]
    out["naive_extrapolated_first_rounds_seconds_2proc"] = round(
        (t_init + sum(c + f for c, f in per_round[:NAIVE_ROUNDS])) / 2, 1)
    out["speedup_threads_vs_naive_2proc"] = round(naive_total_1proc / 2 / out["seconds_fast_threads"], 1)
    out["speedup_processes_vs_naive_2proc"] = round(naive_total_1proc / 2 / out["seconds_fast_processes"], 1)
    emit(out)


def part_naive() -> None:
    docs = load_docs(10_000)
    ids = docs["doc_id"].to_pylist()
    out = {"part": "naive", "pool": 10_000, "budget": 1000, **PAPER_K, "cores": os.cpu_count()}
    t = time.perf_counter()
    fast = zip_select(docs, ZipConfig(budget=1000, workers=2, **PAPER_K))
    out["seconds_fast_threads"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    slow = [ids[i] for i in naive_zip(records_of(docs), 1000, processes=2, **PAPER_K)]
    out["seconds_naive_2proc"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    again = zip_select(docs, ZipConfig(budget=1000, workers=2, **PAPER_K))
    out["seconds_fast_threads_after"] = round(time.perf_counter() - t, 1)
    out["identical_ids_in_order"] = slow == fast.selected == again.selected
    out["speedup"] = round(out["seconds_naive_2proc"] / statistics.median(
        [out["seconds_fast_threads"], out["seconds_fast_threads_after"]]), 1)
    emit(out)


def scale_docs(n: int) -> pa.Table:
    sys.path.insert(0, str(ROOT / "bench" / "dedup"))
    import pyarrow.parquet as pq
    from build_corpus import build

    corpus = pq.read_table(build(n), columns=["doc_id", "source", "line", "text", "content_hash"])
    n_bytes = pa.array([len(t.encode()) for t in corpus["text"].to_pylist()], pa.int64())
    nulls = pa.nulls(corpus.num_rows, pa.string())
    return pa.table([corpus["doc_id"], corpus["source"], corpus["line"], nulls, corpus["text"],
                     corpus["content_hash"], n_bytes, nulls], schema=DOCS)


def part_scale(pool: int, budget: int, mode: str) -> None:
    docs = scale_docs(pool)
    out = {"part": "scale", "pool": pool, "budget": budget, "mode": mode, **PAPER_K, "workers": 2,
           "parallel": "threads", "cores": os.cpu_count(), "pool_mbytes": round(sum(docs["n_bytes"].to_pylist()) / 1e6)}
    started = time.perf_counter()

    def progress(done: int, info: dict) -> None:
        if done % 50 == 0:
            print(f"round {done}: {info['n_selected']} selected, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr, flush=True)

    cpu, t = os.times(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        res = zip_select(docs, ZipConfig(mode=mode, budget=budget, workers=2, **PAPER_K), progress=progress,
                         checkpoint=ZipCheckpoint(Path(folder)))
    wall, after = time.perf_counter() - t, os.times()
    out.update(seconds_wall=round(wall, 1), seconds_cpu=round(after.user - cpu.user + after.system - cpu.system, 1),
               cores_used=round((after.user - cpu.user + after.system - cpu.system) / wall, 2),
               peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
               seconds={k: round(v, 1) for k, v in res.seconds.items()}, rounds=len(res.rounds),
               n_selected=len(res.selected), final_ratio=res.final_ratio)
    for stage in ("global", "coarse", "fine"):
        out[f"median_round_seconds_{stage}"] = round(statistics.median(r[f"seconds_{stage}"] for r in res.rounds), 3)
    emit(out)


def _ratios(texts: list[str]) -> dict:
    joined = join_texts(texts)
    return {"zstd19_long": round(compression_ratio(joined, "zstd", 19, 27), 4),
            "zlib9": round(compression_ratio(joined, "zlib", 9), 4), "mbytes": round(len(joined) / 1e6, 3)}


def part_zstd() -> None:
    docs = load_docs(10_000)
    texts = docs["text"].to_pylist()
    pos = {d: i for i, d in enumerate(docs["doc_id"].to_pylist())}
    kw = dict(k1=10_000, k2=200, k3=100, budget=1000, workers=2)
    out = {"part": "zstd", "pool": 10_000, **kw}
    for mode in ("exact", "zstd"):
        t = time.perf_counter()
        res = zip_select(docs, ZipConfig(mode=mode, **kw))
        out[f"seconds_{mode}"] = round(time.perf_counter() - t, 1)
        out[mode] = _ratios([texts[pos[d]] for d in res.selected])
    rand = [_ratios([texts[i] for i in np.random.default_rng(s).choice(10_000, 1000, replace=False)])
            for s in range(5)]
    out["random_mean_5_seeds"] = {k: round(statistics.mean(r[k] for r in rand), 4) for k in rand[0]}
    out["random_each"] = rand
    out["whole_pool"] = _ratios(texts)
    emit(out)
    # equal size in TOKENS (zstd mode's docs-budget subset is made of short documents)
    tokens = np.array([len(t.split()) for t in texts])
    budget = 150_000
    kw.update(budget=budget, budget_unit="tokens")
    out = {"part": "zstd_tokens", "pool": 10_000, **kw}
    for mode in ("exact", "zstd"):
        t = time.perf_counter()
        res = zip_select(docs, ZipConfig(mode=mode, **kw))
        out[f"seconds_{mode}"] = round(time.perf_counter() - t, 1)
        sel = [pos[d] for d in res.selected]
        out[mode] = {**_ratios([texts[i] for i in sel]), "docs": len(sel), "tokens": int(tokens[sel].sum())}
    rand = []
    for s in range(5):
        perm = np.random.default_rng(s).permutation(10_000)
        k = int(np.searchsorted(np.cumsum(tokens[perm]), budget)) + 1
        rand.append({**_ratios([texts[i] for i in perm[:k]]), "docs": k, "tokens": int(tokens[perm[:k]].sum())})
    out["random_mean_5_seeds"] = {k: round(statistics.mean(r[k] for r in rand), 4) for k in rand[0]}
    emit(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["compare", "paper", "zstd", "naive", "scale", "all"], default="all",
                    help="all = compare, zstd, paper (naive and scale take an hour each)")
    ap.add_argument("--pool", type=int, default=1_000_000, help="scale: documents in the pool")
    ap.add_argument("--budget", type=int, default=100_000, help="scale: documents selected")
    ap.add_argument("--mode", choices=["exact", "zstd", "gain"], default="exact", help="scale: ZIP mode")
    args = ap.parse_args()
    emit({"start": time.strftime("%Y-%m-%d %H:%M:%S"), "cores": os.cpu_count(), "zlib": zlib.ZLIB_RUNTIME_VERSION,
          "zstd": zstandard.ZSTD_VERSION})
    for name, fn in (("compare", part_compare), ("zstd", part_zstd), ("paper", part_paper)):
        if args.part in (name, "all"):
            fn()
    if args.part == "naive":
        part_naive()
    if args.part == "scale":
        part_scale(args.pool, args.budget, args.mode)
