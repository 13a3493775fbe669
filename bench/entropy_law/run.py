"""Validate the Entropy Law on real text: compression ratio R vs held-out probe loss over subsets of equal tokens.

Subsets are cut from the sample corpus's pool files (never the reference or unseen sets) with controlled
redundancy:
- mix-dupXX: documents from every pool domain, with XX% of the text replaced by near-duplicates of the subset's own
  documents (each copy has ~5% of its words dropped or swapped for another word of the same document);
- one domain: prose only, code only, licences only (naturally redundant), fortunes only.
Every subset is probe-trained at the same token budget (selectflow.stages.probe, tokens cut by the same rule), then
Pearson/Spearman correlations of R (zlib-9, zstd) and first-epoch loss L against held-out loss are reported.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/entropy_law/run.py --out bench/entropy_law/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "probe_validity"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import corpora
from corpora import near_duplicate

from selectflow.config import ProbeConfig, ProbeModelConfig
from selectflow.probe import budget_blocks, load_tokenizer
from selectflow.schema import DOCS
from selectflow.stages.probe import probe_stage
from selectflow.store import ArtifactStore

SAMPLE = ROOT / "selectflow" / "data" / "sample"
POOL_FILES = {"prose": "prose.jsonl.zst", "code": "code.jsonl.zst", "dictionary": "dictionary.jsonl.zst",
              "fortune": "fortunes.jsonl.zst", "license": "licenses.jsonl.zst", "qa": "qa.jsonl.zst"}
MARGIN = 1.02  # subsets hold 2% more tokens than the budget: the probe trains on ~all of each, never repeats


def read(name: str) -> list[str]:
    return corpora.read(SAMPLE / name)


def take(texts: list[str], tokens: int, count) -> list[str]:
    """The first documents of `texts` whose tokens (with a separator each) reach `tokens`."""
    picked, total = [], 0
    for text in texts:
        if total >= tokens:
            break
        picked.append(text)
        total += count(text) + 1
    return picked


def mixed(domains: dict[str, list[str]], dup_fraction: float, tokens: int, count, rng: random.Random) -> list[str]:
    """(1 - dup_fraction) of the tokens from every domain equally, the rest near-duplicates of those documents.

    The unique documents of a lower duplicate fraction include those of a higher one (prefixes of one order)."""
    unique_tokens = int(tokens * MARGIN * (1 - dup_fraction))
    base = [text for texts in domains.values() for text in take(texts, unique_tokens // len(domains), count)]
    copies, total = [], 0
    sources = rng.sample(base, len(base))
    while total < tokens * MARGIN - unique_tokens:
        copy = near_duplicate(sources[len(copies) % len(sources)], rng)
        copies.append(copy)
        total += count(copy) + 1
    return base + copies


def table(texts: list[str], tag: str) -> pa.Table:
    rows = [{"doc_id": f"{tag}-{i}", "source": f"bench://{tag}", "line": i + 1, "domain": tag, "text": text,
             "content_hash": f"{tag}-{i}", "n_bytes": len(text.encode()), "record": None}
            for i, text in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=DOCS)


def correlate(rows: list[dict]) -> dict:
    """Pearson/Spearman of R and L against held-out losses: over all subsets, and over the mix-dup series only."""
    correlations = {}
    for scope, chosen in (("all", rows), ("mix-dup", [r for r in rows if r["subset"].startswith("mix-dup")])):
        for x in ("R_zlib", "R_zstd", "first_epoch_loss"):
            for y in ("reference_loss", "unseen_loss"):
                xs, ys = [r[x] for r in chosen], [r[y] for r in chosen]
                pearson, spearman = stats.pearsonr(xs, ys), stats.spearmanr(xs, ys)
                correlations[f"{scope}: {x}~{y}"] = {"n": len(xs), "pearson": pearson.statistic,
                                                     "pearson_p": pearson.pvalue, "spearman": spearman.statistic,
                                                     "spearman_p": spearman.pvalue}
    return correlations


def markdown(result: dict) -> str:
    """The RESULTS.md tables of a results.json."""
    lines = ["| subset | R zlib-9 | R zstd | first-epoch L | prequential bpb | ref loss | ref bpb | unseen loss "
             "| unseen bpb | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['subset']} | {r['R_zlib']:.3f} | {r['R_zstd']:.3f} | {r['first_epoch_loss']:.3f} | "
                     f"{r['prequential_bpb']:.3f} | {r['reference_loss']:.3f} | {r['reference_bpb']:.3f} | "
                     f"{r['unseen_loss']:.3f} | {r['unseen_bpb']:.3f} | {r['wall_s']:.0f} |")
    lines += ["", "| subsets: x ~ held-out loss | n | Pearson r (p) | Spearman rho (p) |", "|---|---:|---:|---:|"]
    for key, c in correlate(result["rows"]).items():
        lines.append(f"| {key} | {c['n']} | {c['pearson']:+.2f} ({c['pearson_p']:.3f}) | "
                     f"{c['spearman']:+.2f} ({c['spearman_p']:.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "entropy_law" / "results.json"))
    parser.add_argument("--report", help="print the markdown tables of this results.json and exit")
    parser.add_argument("--tokens", type=int, default=12_288)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", choices=("hf", "bytes"), default="hf",
                        help="'hf' (SmolLM2's, as in bench/RESULTS.md) or 'bytes' (the probes' default; --tokens are "
                        "then bytes: about 4x as many for the same text)")
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return
    cfg = ProbeConfig(model=ProbeModelConfig(hidden=64, layers=2, heads=4, intermediate=256, seq_len=64),
                      batch_size=8, tokens=args.tokens, learning_rate=5e-3, evals=3, eval_tokens=2048,
                      seed=args.seed, tokenizer=args.tokenizer)
    rng = random.Random(args.seed)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_path, cfg.init_checkpoint)
    budget = budget_blocks(cfg.tokens, cfg.batch_size, cfg.model.seq_len) * cfg.model.seq_len

    def count(text: str) -> int:
        return len(tokenizer.encode_batch([text])[0])

    domains = {name: rng.sample(texts, len(texts)) for name, texts in
               ((name, read(file)) for name, file in POOL_FILES.items())}
    subsets = {f"mix-dup{int(f * 100):02d}": mixed(domains, f, budget, count, random.Random(args.seed))
               for f in (0.0, 0.2, 0.4, 0.6, 0.7)}
    for name in ("prose", "code", "license", "fortune"):
        subsets[f"only-{name}"] = take(domains[name], int(budget * MARGIN), count)
    reference = table(read("reference.jsonl.zst"), "reference")
    unseen = table(read("unseen.jsonl.zst"), "unseen")
    store = ArtifactStore(tempfile.mkdtemp(prefix="entropy-law-"))
    rows = []
    started = time.perf_counter()
    for name, texts in subsets.items():
        docs = store.build("bench_docs", {"name": name, "seed": args.seed}, [], "bench",
                           lambda writer, texts=texts, name=name: writer.write("docs", table(texts, name)))
        s = probe_stage(store, name, [docs], reference, unseen, cfg, args.seed, budget).manifest()["stats"]
        rows.append({"subset": name, **{k: s[k] for k in ("tokens", "epochs", "R_zlib", "R_zstd", "first_epoch_loss",
                                                           "prequential_bpb", "reference_loss", "reference_bpb",
                                                           "unseen_loss", "unseen_bpb", "wall_s")}})
        print(json.dumps(rows[-1]), flush=True)
    correlations = correlate(rows)
    result = {"config": cfg.model_dump(), "rows": rows, "correlations": correlations,
              "seconds": time.perf_counter() - started}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(correlations, indent=2))
    print(f"total {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
