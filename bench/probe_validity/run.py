"""Can the probes decide? Seed noise against the differences they report, ranking reproducibility across budgets,
the Entropy Law re-measured, and the risk check's false alarms.

    .venv/bin/python bench/probe_validity/run.py --corpus sample --parts noise --workspace WS
    .venv/bin/python bench/probe_validity/run.py --corpus sample --parts rankings law alarms
    .venv/bin/python bench/probe_validity/run.py --corpus debian --parts rankings law alarms   # after debian_corpus.py

Parts (every probe uses the default ProbeConfig except its budget, and is cached under
`<root>/probes/<corpus>/<group>/<subset>/<tokens>/seed<k>.json`, so a re-run resumes and parts share probes):
- noise: the zip / quad / random subsets of a workspace's latest completed run and a fresh uniform sample of its
  pool per seed ('full'), at the default budget and at 4x. Per subset the seed sd; per subset the paired difference
  vs random with its interval and signal-to-noise |mean| / sd.
- rankings: the recipes of `corpora.recipes` (different redundancy and domain mix), each built once at the
  largest budget; probes at the default budget (--seeds) and at 8x (--big-seeds). Pairwise rankings by mean held-out
  bpb (reference and unseen) at the default budget vs at 8x: the share that agree, over all pairs and over the
  pairs the default-budget probes call different (paired interval over seeds excluding 0).
- law: Spearman(R, held-out bpb) over the recipes at the default budget (R: zlib ratio of the text trained on, mean
  over seeds), with a bootstrap interval over recipes and seeds; reported whatever its sign.
- alarms: --pairs pairs of independent uniform samples of the pool; each pair goes through the risk check's rule
  against random (`selectflow.risk.check_against_reference`, R noise from `risk.uniform_samples` further uniform
  samples per pair, as a run measures it), and through the paired comparison of held-out bpb. Share flagged 'at
  risk'; share 'significantly different' (expected about 1 - confidence).
Results: `<root>/results-<corpus>.json` and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora

sys.path.insert(0, str(corpora.REPO))
from selectflow.compression import set_ratio
from selectflow.config import ProbeConfig, RiskConfig
from selectflow.probe import pack_eval, pack_train, train_probe
from selectflow.probe.compare import t_interval
from selectflow.probe.data import budget_blocks
from selectflow.probe.tokenizer import load_tokenizer
from selectflow.risk import SubsetEvidence, check_against_reference, r_tolerance

CFG = ProbeConfig()
DEFAULT = budget_blocks(CFG.tokens, CFG.batch_size, CFG.model.seq_len) * CFG.model.seq_len
MARGIN = 1.02  # subsets hold 2% more bytes than the largest budget they are probed at: one epoch, never repeated


# ------------------------------------------------------------------------------------------------------ probes

_HELDOUT: dict = {}


def _heldout(corpus: str, root: str) -> dict:
    if corpus not in _HELDOUT:
        _, held = corpora.load(corpus, Path(root))
        tokenizer = load_tokenizer("bytes")
        _HELDOUT[corpus] = {name: pack_eval(texts, tokenizer, CFG.eval_tokens, CFG.model.seq_len, name)
                            for name, texts in held.items()}
    return _HELDOUT[corpus]


def probe(corpus: str, root: str, name: str, texts: list[str], tokens: int, seed: int) -> dict:
    """One probe: the default config at `tokens`, seed `seed` (init, documents drawn, order)."""
    tokenizer = load_tokenizer("bytes")
    train = pack_train(texts, tokenizer, tokens, CFG.model.seq_len, CFG.batch_size, seed, "error", name)
    run = train_probe(train, _heldout(corpus, root), tokenizer, CFG, seed)
    curve = [{k: row[k] for k in ("step", "reference_bpb", "unseen_bpb")} for row in run.curve
             if row["reference_bpb"] is not None]
    return {"subset": name, "tokens": tokens, "seed": seed, **run.metrics,
            "R_zlib": set_ratio(train.texts_used, "zlib"), "curve": curve}


class Prober:
    """Runs probes side by side in worker processes (one torch thread each) and caches each result as JSON."""

    def __init__(self, corpus: str, root: Path, jobs: int):
        self.corpus, self.root, self.jobs = corpus, root, jobs

    def path(self, group: str, name: str, tokens: int, seed: int) -> Path:
        return self.root / "probes" / self.corpus / group / name / str(tokens) / f"seed{seed}.json"

    def run(self, group: str, jobs: list[tuple[str, list[str], int, int]]) -> dict[tuple[str, int, int], dict]:
        """jobs: (subset name, texts, tokens, seed) -> results by (name, tokens, seed). `group` names how the
        subsets were built (one name means one subset within a group)."""
        results, todo = {}, []
        for name, texts, tokens, seed in jobs:
            path = self.path(group, name, tokens, seed)
            if path.is_file():
                results[(name, tokens, seed)] = json.loads(path.read_text())
            else:
                todo.append((name, texts, tokens, seed))
        if todo:
            print(f"{len(todo)} probes to train ({len(jobs) - len(todo)} cached)", flush=True)
        with ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(probe, self.corpus, str(self.root), *job): job for job in todo}
            for future in as_completed(futures):
                name, _, tokens, seed = futures[future]
                result = future.result()
                path = self.path(group, name, tokens, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result))
                results[(name, tokens, seed)] = result
                print(f"  {name} tokens {tokens} seed {seed}: reference {result['reference_bpb']:.4f} bpb, "
                      f"{result['wall_s']:.0f} s", flush=True)
        return results


# ------------------------------------------------------------------------------------------------------ parts


def workspace_subsets(workspace: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The zip / quad / random subsets of the workspace's latest completed run, and its deduplicated pool."""
    from selectflow.runs import load_run
    from selectflow.store import ArtifactStore

    run = load_run(ArtifactStore(workspace / "store"))
    subsets = {stage.removeprefix("select_"): [t for ref in run.refs(stage) for t in ref.read("docs")["text"]
                                               .to_pylist()] for stage in ("select_zip", "select_quad",
                                                                           "select_random") if run.refs(stage)}
    pool = [text for ref in run.refs("deduped") for text in ref.read("docs")["text"].to_pylist()]
    return subsets, pool


def paired(results: dict, a: str, b: str, tokens: int, seeds: list[int], metric: str, confidence: float):
    return t_interval([results[(a, tokens, s)][metric] - results[(b, tokens, s)][metric] for s in seeds], confidence)


def part_noise(prober: Prober, workspace: Path, seeds: list[int], budgets: list[int], confidence: float) -> dict:
    subsets, pool = workspace_subsets(workspace)
    out = {"subset_bytes": {name: sum(map(corpora.n_bytes, texts)) for name, texts in subsets.items()}, "rows": []}
    for tokens in budgets:
        factor = round(tokens / DEFAULT, 3)
        usable = {name: texts for name, texts in subsets.items() if out["subset_bytes"][name] >= tokens}
        if len(usable) < len(subsets):  # probed one epoch or not at all: the others are still compared
            short = sorted(set(subsets) - set(usable))
            out["rows"].append({"factor": factor, "skipped": f"{short} hold fewer than {tokens} bytes; run the "
                                "pipeline with selection budgets (token_counter bytes) of at least that"})
        if "random" not in usable:
            continue
        jobs = [(name, texts, tokens, s) for s in seeds for name, texts in usable.items()]
        jobs += [(f"full-{s}", corpora.take(random.Random(s).sample(pool, len(pool)), int(tokens * MARGIN)),
                  tokens, s) for s in seeds]
        results = prober.run(f"noise-{workspace.resolve().name}", jobs)
        for s in seeds:  # the 'full' sample of each seed is its own subset; compare it as one subset over seeds
            results[("full", tokens, s)] = results[(f"full-{s}", tokens, s)]
        for name in [*usable, "full"]:
            for metric in ("reference_bpb", "unseen_bpb"):
                sd = t_interval([results[(name, tokens, s)][metric] for s in seeds], confidence).sd
                row = {"factor": factor, "tokens": tokens, "subset": name, "metric": metric, "seed_sd": sd}
                if name != "random" and "random" in usable:
                    diff = paired(results, name, "random", tokens, seeds, metric, confidence)
                    row |= {"vs_random": diff.mean, "low": diff.low, "high": diff.high, "diff_sd": diff.sd,
                            "snr": abs(diff.mean) / diff.sd if diff.sd else math.inf}
                out["rows"].append(row)
    return out


def recipe_subsets(pool: dict[str, list[str]], largest: int) -> dict[str, list[str]]:
    built = {}
    for name, recipe in corpora.recipes(pool).items():
        if corpora.largest_feasible(pool, recipe) < largest:
            print(f"recipe {name} cannot reach {largest} bytes on this pool; skipped", flush=True)
            continue
        built[name] = corpora.mixture(pool, **recipe, budget=largest, seed=0)
    return built


def rank_agreement(small: dict[str, float], big: dict[str, float],
                   pairs: list[tuple[str, str]] | None = None) -> tuple[int, int]:
    pairs = list(itertools.combinations(sorted(small), 2)) if pairs is None else pairs
    same = sum((small[a] < small[b]) == (big[a] < big[b]) for a, b in pairs)
    return same, len(pairs)


def decided_pairs(results: dict, names: list[str], tokens: int, seeds: list[int], metric: str,
                  confidence: float) -> list[tuple[str, str]]:
    """The pairs the probes at `tokens` call different: paired interval over seeds excluding 0."""
    return [(a, b) for a, b in itertools.combinations(sorted(names), 2)
            if paired(results, a, b, tokens, seeds, metric, confidence).excludes_zero()]


def part_rankings(prober: Prober, pool: dict, seeds: list[int], big_seeds: list[int], factor: int,
                  confidence: float) -> dict:
    big = DEFAULT * factor
    subsets = recipe_subsets(pool, int(big * MARGIN))
    jobs = [(name, texts, DEFAULT, s) for s in seeds for name, texts in subsets.items()]
    jobs += [(name, texts, big, s) for s in big_seeds for name, texts in subsets.items()]
    results = prober.run(f"recipes-x{factor}", jobs)
    out = {"factor": factor, "recipes": {}, "agreement": {}}
    for name in subsets:
        out["recipes"][name] = {
            f"{metric}@{tokens}": t_interval([results[(name, tokens, s)][metric] for s in chosen], confidence).__dict__
            for tokens, chosen in ((DEFAULT, seeds), (big, big_seeds)) if chosen
            for metric in ("reference_bpb", "unseen_bpb")}
    for metric in ("reference_bpb", "unseen_bpb") if big_seeds else ():
        small = {n: statistics.mean(results[(n, DEFAULT, s)][metric] for s in seeds) for n in subsets}
        large = {n: statistics.mean(results[(n, big, s)][metric] for s in big_seeds) for n in subsets}
        same, total = rank_agreement(small, large)
        decided = decided_pairs(results, list(subsets), DEFAULT, seeds, metric, confidence)
        same_decided, n_decided = rank_agreement(small, large, decided)
        out["agreement"][metric] = {"agree": same, "pairs": total, "share": same / total,
                                    "decided_agree": same_decided, "decided_pairs": n_decided,
                                    "decided_share": same_decided / n_decided if n_decided else None}
    out["results"] = {f"{k[0]}|{k[1]}|{k[2]}": {m: v[m] for m in ("reference_bpb", "unseen_bpb", "R_zlib",
                                                                    "prequential_bpb", "wall_s")}
                      for k, v in results.items()}
    return out


def part_law(rankings: dict, seeds: list[int], boot: int = 2000) -> dict:
    by_recipe: dict[str, list[dict]] = {}
    for key, row in rankings["results"].items():
        name, tokens, seed = key.split("|")
        if int(tokens) == DEFAULT and int(seed) in seeds:
            by_recipe.setdefault(name, []).append(row)
    names = sorted(by_recipe)
    out = {"n_subsets": len(names)}
    rng = np.random.default_rng(0)
    for metric in ("reference_bpb", "unseen_bpb"):
        R = np.array([statistics.mean(r["R_zlib"] for r in by_recipe[n]) for n in names])
        y = np.array([statistics.mean(r[metric] for r in by_recipe[n]) for n in names])
        rho = float(scipy_stats.spearmanr(R, y).statistic)
        samples = []
        for _ in range(boot):  # resample recipes, and within each recipe its seeds
            pick = rng.integers(0, len(names), len(names))
            rs, ys = [], []
            for i in pick:
                rows = by_recipe[names[i]]
                chosen = [rows[j] for j in rng.integers(0, len(rows), len(rows))]
                rs.append(statistics.mean(r["R_zlib"] for r in chosen))
                ys.append(statistics.mean(r[metric] for r in chosen))
            if len(set(rs)) > 1 and len(set(ys)) > 1:
                samples.append(scipy_stats.spearmanr(rs, ys).statistic)
        out[metric] = {"spearman": rho, "low": float(np.percentile(samples, 2.5)),
                       "high": float(np.percentile(samples, 97.5)), "points": dict(zip(names, zip(R.tolist(),
                                                                                              y.tolist())))}
    return out


def part_alarms(prober: Prober, pool: dict, pairs: int, seeds: list[int], confidence: float) -> dict:
    cfg = RiskConfig()
    size = int(DEFAULT * MARGIN)
    samples = {f"uniform-{i:02d}": corpora.uniform(pool, size, 1000 + i) for i in range(2 * pairs)}
    jobs = [(name, texts, DEFAULT, s) for s in seeds for name, texts in samples.items()]
    results = prober.run("uniform", jobs)
    names = sorted(samples)
    whole_R = {name: set_ratio(texts, "zlib") for name, texts in samples.items()}
    flagged, different, rows = 0, 0, []
    for index in range(pairs):
        a, b = names[2 * index], names[2 * index + 1]
        # R's noise as a run measures it: risk.uniform_samples further samples of the pool, compressed, not probed
        noise = [set_ratio(corpora.uniform(pool, size, 5000 + 100 * index + j), "zlib")
                 for j in range(cfg.uniform_samples)]
        tolerance = r_tolerance(noise, confidence)
        evidence = {n: SubsetEvidence(whole_R[n], {s: results[(n, DEFAULT, s)]["prequential_bpb"] for s in seeds})
                    for n in (a, b)}
        verdict = check_against_reference(evidence[a], evidence[b], cfg, confidence, tolerance)
        diff = paired(results, a, b, DEFAULT, seeds, "reference_bpb", confidence)
        flagged += verdict.verdict == "at risk"
        different += diff.excludes_zero()
        rows.append({"candidate": a, "random": b, "verdict": verdict.verdict, "dR": verdict.numbers["dR"],
                     "R_tolerance": tolerance, "dL": verdict.numbers["dL"], "dL_low": verdict.numbers["dL_low"],
                     "dL_high": verdict.numbers["dL_high"], "d_reference_bpb": diff.mean, "low": diff.low,
                     "high": diff.high})
    return {"pairs": pairs, "flagged": flagged, "flagged_share": flagged / pairs, "different": different,
            "different_share": different / pairs, "rows": rows}


# ------------------------------------------------------------------------------------------------------ tables


def markdown(result: dict) -> str:
    lines = [f"Corpus {result['corpus']}; default budget {DEFAULT} bytes; seeds {result['seeds']}; "
             f"{result['confidence']:.0%} intervals."]
    if noise := result.get("noise"):
        lines += ["", "| budget | subset | metric | seed sd | vs random [CI] | sd of difference | signal/noise |",
                  "|---|---|---|---:|---|---:|---:|"]
        for row in noise["rows"]:
            if "skipped" in row:
                lines.append(f"| {row['factor']}x | - | - | - | skipped: {row['skipped']} | - | - |")
                continue
            vs = (f"{row['vs_random']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]" if "vs_random" in row
                  else "(baseline)")
            lines.append(f"| {row['factor']}x | {row['subset']} | {row['metric']} | {row['seed_sd']:.4f} | {vs} | "
                         f"{row.get('diff_sd', float('nan')):.4f} | {row.get('snr', float('nan')):.1f} |")
    if rankings := result.get("rankings"):
        lines += ["", f"| recipe | reference bpb @1x | @{rankings['factor']}x | unseen bpb @1x | "
                  f"@{rankings['factor']}x |", "|---|---|---|---|---|"]
        for name, cells in rankings["recipes"].items():
            shown = [f"{c['mean']:.4f} ± {c['high'] - c['mean']:.4f}" if c.get("high") is not None else
                     f"{c['mean']:.4f}" for c in cells.values()] + ["-", "-"]
            lines.append(f"| {name} | {shown[0]} | {shown[2]} | {shown[1]} | {shown[3]} |")
        for metric, agreement in rankings["agreement"].items():
            lines.append(f"\nPairwise ranking agreement, {metric}, 1x vs {rankings['factor']}x: "
                         f"{agreement['agree']}/{agreement['pairs']} = {agreement['share']:.0%}; among the pairs the "
                         f"1x probes call different: {agreement['decided_agree']}/{agreement['decided_pairs']}")
    if law := result.get("law"):
        for metric in ("reference_bpb", "unseen_bpb"):
            entry = law[metric]
            lines.append(f"\nEntropy law over {law['n_subsets']} equal-byte subsets: Spearman(R zlib, {metric}) = "
                         f"{entry['spearman']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}] (bootstrap 95%)")
    if alarms := result.get("alarms"):
        lines.append(f"\nFalse alarms: {alarms['flagged']}/{alarms['pairs']} pairs of uniform samples flagged "
                     f"'at risk' ({alarms['flagged_share']:.0%}); {alarms['different']}/{alarms['pairs']} "
                     f"significantly different on reference bpb ({alarms['different_share']:.0%}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="sample", help="sample, or a corpus built under <root>/corpora")
    parser.add_argument("--root", type=Path, default=Path("/tmp/selectflow-probe-validity"))
    parser.add_argument("--parts", nargs="+", default=["rankings", "law", "alarms"],
                        choices=["noise", "rankings", "law", "alarms"])
    parser.add_argument("--workspace", type=Path, help="noise: a workspace with a completed run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--big-seeds", type=int, default=2, help="rankings: seeds at the large budget")
    parser.add_argument("--big-factor", type=int, default=8)
    parser.add_argument("--noise-tokens", type=int, nargs="+", default=[DEFAULT, 4 * DEFAULT],
                        help="noise: probe budgets in bytes (default: the default budget and 4x)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=max((os.cpu_count() or 2), 1))
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    seeds, big_seeds = list(range(args.seeds)), list(range(args.big_seeds))
    prober = Prober(args.corpus, args.root, args.jobs)
    out_path = args.root / f"results-{args.corpus}.json"
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result |= {"corpus": args.corpus, "seeds": seeds, "confidence": CFG.confidence, "default_tokens": DEFAULT,
               "probe": CFG.model_dump(mode="json"), "load_start": os.getloadavg()}
    started = time.monotonic()
    pool = corpora.load(args.corpus, args.root)[0]
    if "noise" in args.parts:
        if args.workspace is None:
            raise SystemExit("--parts noise needs --workspace (a workspace whose latest run completed)")
        result["noise"] = part_noise(prober, args.workspace, seeds, args.noise_tokens, CFG.confidence)
    if "rankings" in args.parts or "law" in args.parts:
        result["rankings"] = part_rankings(prober, pool, seeds, big_seeds, args.big_factor, CFG.confidence)
    if "law" in args.parts:
        result["law"] = part_law(result["rankings"], seeds)
    if "alarms" in args.parts:
        result["alarms"] = part_alarms(prober, pool, args.pairs, seeds, CFG.confidence)
    result["seconds"] = round(time.monotonic() - started, 1)
    out_path.write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result))


if __name__ == "__main__":
    main()
