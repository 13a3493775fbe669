"""Does the mixture search find better mixtures, and can its regression rank mixtures it has not seen?

    .venv/bin/python bench/mixture/run.py --corpus sample --workspace WS
    .venv/bin/python bench/mixture/run.py --corpus debian --workspace WS     # after debian_corpus.py

1. The pipeline runs with the corpus's config (as `bench/selection/run.py` does) and the selectors
   `[{method: mixture, mixtures: --mixtures, ...}, {method: random}]`, probes on, and the curricula of the mixture
   subset (`--orders`). Everything is cached in the workspace.
2. `--heldout` more mixtures, drawn like the proposals but with another seed, are sampled and probed exactly like
   the proposals (same stages, same probe budget) and never shown to the fit. The fit (refit here on the run's
   probed mixtures, as the stage does) predicts them: Spearman(predicted, measured) over them is the held-out rank
   correlation (target >= 0.8), with a bootstrap interval over the held-out mixtures. Every regression kind is
   scored the same way on the same probes (`regressions` in the results), so that settings chosen on one corpus
   can be carried to another.
3. Reported with it: the cross-validated Spearman of the run, the proposed weights, the validation (proposed vs
   natural and uniform at the search's probe budget, paired seeds), the run's own probes (mixture subset vs random
   at the default budget), and the curricula. Results: `<root>/mixture-<label>.json` and markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import typing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench" / "selection"))
from run import ROOT, measure, pipeline, run_pipeline  # noqa: E402  (bench/selection/run.py)

from selectflow.cli import _parse_sets  # noqa: E402
from selectflow.config import MixtureSelector, load_config  # noqa: E402
from selectflow.runs import load_run  # noqa: E402
from selectflow.select.mixture import MixtureRegression, Regression, propose_mixtures  # noqa: E402
from selectflow.stages.mixture import mixture_sample_stage  # noqa: E402
from selectflow.stages.probe import probe_stage  # noqa: E402
from selectflow.stages.registry import CURRICULUM, MIXTURE_FIT, MIXTURE_PLAN, MIXTURE_VALIDATION  # noqa: E402
from selectflow.store import ArtifactStore  # noqa: E402

HELDOUT_SEED = 7919  # proposals use seed 0 (the option's default); held-out mixtures never share their draws


def heldout_mixtures(store: ArtifactStore, run, config, options: MixtureSelector, n: int, jobs: int) -> list[dict]:
    """`n` fresh mixtures around the same natural proportions, sampled and probed like the proposals (`jobs`
    processes side by side, one torch thread each)."""
    plan = run.refs(MIXTURE_PLAN.name)[0]
    natural = np.asarray(plan.manifest()["stats"]["natural"])
    weights = propose_mixtures(natural, n, options.concentration, options.floor, HELDOUT_SEED)
    calls = [(store, run.refs("deduped"), plan, run.refs("reference_set"), run.refs("unseen_set"), config.probe,
              options, mixture.tolist(), index) for index, mixture in enumerate(weights)]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as executor:
        return list(executor.map(_probe_heldout, calls))


def _probe_heldout(call) -> dict:
    store, pool, plan, reference, unseen, probe, options, weights, index = call
    label = f"held-out mixture {index}"
    sample = mixture_sample_stage(store, pool, plan, weights, HELDOUT_SEED + index, label, options)
    probed = probe_stage(store, label, [sample], reference, unseen or None, probe, probe.seed, options.probe_tokens,
                         stage="mixture_probe")
    result = {"weights": weights, **{k: v for k, v in probed.manifest()["stats"].items() if k.endswith("_bpb")}}
    print(f"  {label}: {options.target} {result[f'{options.target}_bpb']:.4f} bpb", flush=True)
    return result


def score_regressions(table: dict, key: str, held: list[dict], seed: int) -> dict:
    """Every regression kind fitted on the run's probed mixtures, and its Spearman on the held-out ones."""
    measured = np.asarray([h[key] for h in held])
    scored = {}
    for kind in typing.get_args(Regression):
        model = MixtureRegression(kind, seed).fit(np.asarray(table["weights"]), np.asarray(table[key]))
        guess = model.predict(np.asarray([h["weights"] for h in held]))
        scored[kind] = {"spearman_heldout": float(spearmanr(guess, measured)[0]),
                        "spearman_heldout_ci": bootstrap_spearman(guess, measured), "predicted": guess.tolist()}
    return scored


def bootstrap_spearman(predicted: np.ndarray, measured: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        pick = rng.integers(0, len(measured), len(measured))
        if np.ptp(measured[pick]) > 0 and np.ptp(predicted[pick]) > 0:
            values.append(spearmanr(predicted[pick], measured[pick])[0])
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="sample")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--budget", type=int, default=4_400_000, help="selection budget in UTF-8 bytes")
    parser.add_argument("--mixtures", type=int, default=24)
    parser.add_argument("--heldout", type=int, default=12, help="0: none (they do not depend on the optimum)")
    parser.add_argument("--probe-tokens", type=int, default=1_048_576, help="bytes per mixture probe")
    parser.add_argument("--jobs", type=int, default=2, help="held-out probes side by side")
    parser.add_argument("--components", default="domain", choices=["domain", "cluster"])
    parser.add_argument("--regression", choices=typing.get_args(Regression), help="default: the selector's")
    parser.add_argument("--orders", default="[domain, easy_to_hard]",
                        help="curricula of the mixture subset; '' for none")
    parser.add_argument("--label")
    args = parser.parse_args()
    config_path, overrides = pipeline(args.corpus, args.root)
    regression = f", regression: {args.regression}" if args.regression else ""
    selectors = (f"[{{method: mixture, components: {args.components}, mixtures: {args.mixtures}, "
                 f"probe_tokens: {args.probe_tokens}{regression}}}, {{method: random}}]")
    overrides += [f"selection.budget={args.budget}", "selection.budget_unit=tokens", "selection.token_counter=bytes",
                  f"selection.selectors={selectors}", "probe.enabled=true"]
    if args.orders:
        overrides += ["curriculum.enabled=true", "curriculum.subset=mixture", f"curriculum.orders={args.orders}"]
    run_pipeline(config_path, args.workspace, overrides)
    store = ArtifactStore(args.workspace / "store")
    run = load_run(store)
    config = load_config(config_path, _parse_sets(overrides))
    options = next(s for s in config.selection.selectors if s.method == "mixture")
    fit_ref = run.refs(MIXTURE_FIT.name)[0]
    fit, table = fit_ref.manifest()["stats"], fit_ref.read("mixtures").to_pydict()
    key = f"{options.target}_bpb"
    held = heldout_mixtures(store, run, config, options, args.heldout, args.jobs) if args.heldout else []
    regressions = score_regressions(table, key, held, options.seed) if held else {}
    scored = regressions.get(options.regression, {})
    result = {"corpus": args.corpus, "components": fit["components"], "natural": fit["natural"],
              "proposed": fit["weights"], "regression": options.regression, "spearman_cv": fit["spearman_cv"],
              "spearman_heldout": scored.get("spearman_heldout"),
              "spearman_heldout_ci": scored.get("spearman_heldout_ci"), "regressions": regressions,
              "heldout": [h | {"predicted": p} for h, p in zip(held, scored.get("predicted", []))],
              "validation": run.refs(MIXTURE_VALIDATION.name)[0].manifest()["stats"],
              "curriculum": run.refs(CURRICULUM.name)[0].manifest()["stats"] if args.orders else None,
              **measure(args.workspace)}
    out = args.root / f"mixture-{args.label or args.corpus}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    proposed = dict(zip(fit["components"], np.round(fit["weights"], 3).tolist()))
    print(f"proposed {proposed} (cross-validated Spearman {fit['spearman_cv']})")
    print(result["validation"]["verdict"])
    for kind, scored in regressions.items():
        print(f"  {kind}: held-out Spearman {scored['spearman_heldout']:.2f} {scored['spearman_heldout_ci']}")
    if result["curriculum"]:
        print(result["curriculum"]["verdict"])
    print(result["probes"]["recommendation"])
    print(f"results: {out}")


if __name__ == "__main__":
    main()
