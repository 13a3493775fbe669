"""Do the selectors beat random? Every selector and baseline of one pipeline run, probed by the run itself at equal
bytes (the default probe: 3 paired seeds, one epoch), as paired differences vs random with 95% intervals on the
reference set and on the unseen domain, plus each selector's work time and the run's recommendation.

    .venv/bin/python bench/selection/run.py --corpus sample --workspace WS
    .venv/bin/python bench/selection/run.py --corpus debian --workspace WS     # after debian_corpus.py
    .venv/bin/python bench/selection/run.py --corpus sample --workspace WS --label sample-zip-gain \
        --selectors "[{method: zip, mode: gain, strata: domain}, {method: random}]"
    .venv/bin/python bench/selection/run.py --corpus debian --workspace WS --versus mixture \
        --selectors "[{method: mixture}, {method: dsir, strata: domain, quota: mixture}, {method: random}]"

The run is `selectflow run` with the corpus's pipeline config (sample: the shipped one; debian: the one
`bench/probe_validity/debian_corpus.py` writes) and these overrides: selections of --budget bytes, the selectors of
--selectors, probes on. Everything but the probes and new selectors is cached in the workspace. Settings were
chosen on the sample; the Debian corpus is the report corpus. `--versus NAME` adds every subset's paired difference
against subset NAME too (e.g. a selector inside the mixture's quotas against the mixture's own random resample).
Results: `<root>/selection-<corpus>.json` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from selectflow.probe.compare import t_interval
from selectflow.report.assemble import probe_section
from selectflow.runs import load_run
from selectflow.stages.registry import PROBE
from selectflow.store import ArtifactStore

ROOT = Path("/tmp/selectflow-probe-validity")
SELECTORS = ("[{method: zip, mode: exact, k1: 10000, k2: 200, k3: 100}, "
             "{method: quad, bandit: ucb, pulls_per_round: 8, samples_per_pull: 2, block_size: 50}, "
             "{method: dsir}, {method: random}]")


def pipeline(corpus: str, root: Path) -> tuple[Path, list[str]]:
    """The corpus's pipeline config and the overrides that give it probes on the unseen domain."""
    if corpus == "sample":
        return REPO / "selectflow" / "data" / "sample.yaml", []
    folder = root / "corpora" / corpus
    if not (folder / "selectflow.yaml").is_file():
        raise SystemExit(f"{folder / 'selectflow.yaml'} not found: build the corpus with "
                         "bench/probe_validity/debian_corpus.py")
    return folder / "selectflow.yaml", [f"probe.unseen=[{{path: {folder / 'unseen.jsonl.zst'}}}]"]


def run_pipeline(config: Path, workspace: Path, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "selectflow.cli", "run", "-c", str(config), "-w", str(workspace)]
    for override in overrides:
        command += ["--set", override]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def measure(workspace: Path) -> dict:
    """The latest run's probes compared (as the run's report does) and each selector's work time."""
    store = ArtifactStore(workspace / "store")
    run = load_run(store)
    probes = probe_section(PROBE.by_subset(run))
    seconds = {stage.removeprefix("select_"): sum(_seconds(ref.manifest()["stats"]) for ref in run.refs(stage))
               for stage in run.stages if stage.startswith("select_")}
    return {"run_id": run.run_id, "probes": probes.model_dump(mode="json"), "selector_seconds": seconds}


def versus(workspace: Path, baseline: str, confidence: float = 0.95) -> dict:
    """Every other subset's paired difference against `baseline` (subset - baseline, per metric, over shared seeds)."""
    by_subset = PROBE.by_subset(load_run(ArtifactStore(workspace / "store")))
    if baseline not in by_subset:
        raise SystemExit(f"--versus {baseline}: no such probed subset (probed: {sorted(by_subset)})")
    stats = {name: {int(ref.manifest()["stats"]["seed"]): ref.manifest()["stats"] for ref in refs}
             for name, refs in by_subset.items()}
    differences = {}
    for name in stats.keys() - {baseline}:
        seeds = sorted(stats[name].keys() & stats[baseline].keys())
        for metric in ("reference_bpb", "unseen_bpb"):
            if all(stats[n][seed].get(metric) is not None for n in (name, baseline) for seed in seeds):
                interval = t_interval([stats[name][seed][metric] - stats[baseline][seed][metric] for seed in seeds],
                                      confidence)
                differences.setdefault(name, {})[metric] = {"mean": interval.mean, "low": interval.low,
                                                            "high": interval.high, "seeds": seeds}
    return {"baseline": baseline, "differences": differences}


def _seconds(stats: dict) -> float:
    seconds = stats.get("seconds", 0)  # ZIP reports its phases: {init, rounds, final, total}
    return seconds["total"] if isinstance(seconds, dict) else seconds


def markdown(result: dict) -> str:
    probes = result["probes"]
    lines = [(f"Probes: {probes['budget_tokens']} bytes each, seeds {probes['seeds']}; subset - random in held-out "
              "bits per byte, mean [95% CI] (+ = worse than random)."), "",
             "| subset | reference bpb | − random (reference) | unseen bpb | − random (unseen) | epochs | select s |",
             "|---|---:|---|---:|---|---:|---:|"]
    for name, subset in probes["subsets"].items():
        summary = subset["summary"]
        cells = [name]
        for metric in ("reference_bpb", "unseen_bpb"):
            estimate = summary[metric]
            cells.append("-" if estimate is None else f"{estimate['mean']:.3f}")
            diff = next((d for d in probes["differences"] if d["subset"] == name and d["metric"] == metric), None)
            if diff is None or diff.get("low") is None:
                cells.append("baseline" if name == "random" else "-")
            else:
                star = " *" if diff["verdict"] in ("better", "worse") else ""
                cells.append(f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]{star}")
        cells += [f"{summary['epochs']:.2f}", f"{result['selector_seconds'].get(name, 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("versus"):
        lines += ["", f"Against {result['versus']['baseline']} (subset − {result['versus']['baseline']}):", "",
                  "| subset | reference | unseen |", "|---|---|---|"]
        for name, by_metric in sorted(result["versus"]["differences"].items()):
            lines.append(f"| {name} | " + " | ".join(_difference(by_metric.get(metric))
                                                     for metric in ("reference_bpb", "unseen_bpb")) + " |")
    lines += ["", "* = the interval excludes 0.", "", probes["recommendation"] or "(no recommendation)"]
    return "\n".join(lines)


def _difference(d: dict | None) -> str:
    if d is None:
        return "-"
    if d["low"] is None:
        return f"{d['mean']:+.3f} (1 seed)"
    star = " *" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{star}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="sample", help="sample, or a corpus built under <root>/corpora")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--budget", type=int, default=4_400_000, help="selection budget in UTF-8 bytes")
    parser.add_argument("--selectors", default=SELECTORS, help="selection.selectors, as YAML")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="further overrides")
    parser.add_argument("--versus", help="also compare every subset with this one (paired, per seed)")
    parser.add_argument("--label", help="names the results file (default: the corpus); one run per label, e.g. "
                        "another ZIP variant in the same workspace (every other subset and its probes are cached)")
    args = parser.parse_args()
    config, overrides = pipeline(args.corpus, args.root)
    run_pipeline(config, args.workspace, [*overrides, f"selection.budget={args.budget}", "selection.budget_unit=tokens",
                                          "selection.token_counter=bytes", f"selection.selectors={args.selectors}",
                                          "probe.enabled=true", *args.overrides])
    result = {"corpus": args.corpus, "budget_bytes": args.budget, "selectors": args.selectors, **measure(args.workspace)}
    if args.versus:
        result["versus"] = versus(args.workspace, args.versus)
    out = args.root / f"selection-{args.label or args.corpus}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
