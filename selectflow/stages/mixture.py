"""Mixture search as stages (see `selectflow.select.mixture`): the plan (components, natural proportions, proposed
mixtures), one sample of the pool per proposal for its probe, the fit of held-out bits per byte on the weights, and
the selector that resamples the pool to the best mixture. `selectflow.flows.mixture` runs the samples and their
probes side by side on the workers; every probe is cached like any other."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selectflow.config import Budget, MixtureSelector
from selectflow.fingerprint import code_fingerprint
from selectflow.probe.compare import t_interval
from selectflow.select.mixture import (
    MixtureRegression,
    best_mixture,
    cross_validated,
    natural_weights,
    propose_mixtures,
    resample,
)
from selectflow.stages.base import Decisions, write_decisions
from selectflow.stages.pool import Pool, read_pool
from selectflow.stages.registry import MIXTURE, MIXTURE_FIT, MIXTURE_PLAN, MIXTURE_SAMPLE, MIXTURE_VALIDATION
from selectflow.stages.selection import Selection, SelectionContext, build_selection
from selectflow.stages.strata import strata_of, strata_view
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)  # this module and every selectflow module it imports
_SEARCH_FIELDS = {"components", "mixtures", "concentration", "floor", "seed"}  # what the plan depends on


def packed_bytes(docs: pa.Table) -> np.ndarray:
    """Bytes each document takes in a byte-level probe's stream: its UTF-8 bytes and the end-of-text symbol."""
    return np.fromiter((len(text.encode("utf-8")) + 1 for text in docs["text"].to_pylist()), np.int64, docs.num_rows)


def mixture_plan_stage(store: ArtifactStore, pool: list[ArtifactRef], clusters: ArtifactRef | None,
                       options: MixtureSelector) -> ArtifactRef:
    """The components, their natural proportions (by bytes) and the proposed mixtures (stats); table "members":
    each pool document's component and packed bytes, which the probe samples are drawn from."""

    def write(writer: ArtifactWriter) -> None:
        data = read_pool(pool, clusters)
        names, components = strata_of(data, options.components)
        if len(names) < 2:
            raise ValueError(f"mixture: the pool has {len(names)} {options.components} component(s); mixing needs at "
                             "least 2 (label domains at ingest, or use components: cluster)")
        sizes = packed_bytes(data.docs)
        natural = natural_weights(components, sizes, len(names))
        proposals = propose_mixtures(natural, options.mixtures, options.concentration, options.floor, options.seed)
        writer.write("members", pa.table({"doc_id": data.docs["doc_id"], "component": pa.array(components, pa.int32()),
                                          "bytes": pa.array(sizes, pa.int64())}))
        writer.stats(components=names, natural=natural.tolist(), mixtures=proposals.tolist(),
                     held_bytes=np.bincount(components, weights=sizes).astype(int).tolist())

    keys = [ref.key for ref in pool] + ([clusters.key] if clusters else [])
    return store.build(MIXTURE_PLAN.name, options.model_dump(include=_SEARCH_FIELDS), keys, _CODE, write)


def mixture_sample_stage(store: ArtifactStore, pool: list[ArtifactRef], plan: ArtifactRef, weights: list[float],
                         seed: int, label: str, options: MixtureSelector) -> ArtifactRef:
    """A probe's sample of the pool resampled to `weights` (seeded), just covering `probe_tokens` bytes. Drawn from
    the plan's members (the pool's shards are only filtered to the sampled ids); only the sampled documents get a
    decision (the quota they fill)."""

    def write(writer: ArtifactWriter) -> None:
        members = plan.read("members")
        names = plan.manifest()["stats"]["components"]
        components = members["component"].to_numpy().astype(np.int64)
        order, quotas = resample(components, members["bytes"].to_numpy(), np.asarray(weights), options.probe_tokens,
                                 "tokens", seed)
        doc_ids = members["doc_id"].take(pa.array(order, pa.int64()))
        decisions = Decisions(MIXTURE_SAMPLE.name)
        for doc_id, c in zip(doc_ids.to_pylist(), components[order].tolist()):
            decisions.add(doc_id, "selected", f"selected: fills the quota of {_quota(names, weights, quotas, c)} in "
                          f"the probe sample of {label}", group=names[c])
        write_decisions(writer, decisions, _docs_in_order(pool, doc_ids), label=label, weights=weights,
                        quotas=dict(zip(names, quotas.tolist())))

    config = {"weights": weights, "seed": seed, "label": label, "probe_tokens": options.probe_tokens}
    return store.build(MIXTURE_SAMPLE.name, config, [ref.key for ref in pool] + [plan.key], _CODE, write)


def _docs_in_order(pool: list[ArtifactRef], doc_ids: pa.Array) -> pa.Table:
    """The pool documents with these ids, in this order."""
    found = pa.concat_tables([docs.filter(pc.is_in(docs["doc_id"], value_set=doc_ids))
                              for docs in (ref.read("docs") for ref in pool)])
    row_of = {doc_id: row for row, doc_id in enumerate(found["doc_id"].to_pylist())}
    return found.take(pa.array([row_of[doc_id] for doc_id in doc_ids.to_pylist()], pa.int64()))


def mixture_fit_stage(store: ArtifactStore, plan: ArtifactRef, probes: list[ArtifactRef],
                      options: MixtureSelector) -> ArtifactRef:
    """Held-out bits per byte fitted on the weights of the probed mixtures; the best mixture by the fit.

    Table "mixtures": each probed mixture's weights, measured bpb (reference, unseen when probed, prequential) and
    its cross-validated prediction. Stats: components, natural, weights (the result), preferred (False: the fit
    predicts no difference and the natural proportions are kept), predicted bpb of the result and of the natural
    mixture, spearman_cv (predicted vs measured on mixtures left out of the fit)."""
    fitted = {"target", "regression", "candidates", "top", "floor", "concentration", "seed"}

    def write(writer: ArtifactWriter) -> None:
        planned = plan.manifest()["stats"]
        weights = np.asarray(planned["mixtures"])
        stats = [ref.manifest()["stats"] for ref in probes]
        key = f"{options.target}_bpb"
        if any(key not in s for s in stats):
            raise ValueError(f"mixture target {options.target!r}: the mixture probes have no {options.target} "
                             "held-out set (give probe.unseen, or target: reference)")
        losses = np.array([s[key] for s in stats])
        predicted, spearman = cross_validated(weights, losses, options.regression, seed=options.seed)
        model = MixtureRegression(options.regression, options.seed).fit(weights, losses)
        natural = np.asarray(planned["natural"])
        best, preferred = best_mixture(model, natural, options.floor, weights, options.concentration,
                                       options.candidates, options.top, options.seed)
        columns = {"mixture": list(range(len(weights))), "weights": weights.tolist(), "predicted_cv": predicted}
        for name in ("reference_bpb", "unseen_bpb", "prequential_bpb"):
            if all(name in s for s in stats):
                columns[name] = [s[name] for s in stats]
        writer.write("mixtures", pa.table(columns))
        writer.stats(components=planned["components"], natural=natural.tolist(), weights=best.tolist(),
                     preferred=preferred, target=options.target, regression=options.regression,
                     predicted_bpb=float(model.predict(best)[0]),
                     predicted_natural_bpb=float(model.predict(natural)[0]),
                     measured_bpb_range=[float(losses.min()), float(losses.max())],
                     spearman_cv=None if np.isnan(spearman) else spearman, mixtures=len(weights))

    return store.build(MIXTURE_FIT.name, options.model_dump(include=fitted),
                       [plan.key, *(ref.key for ref in probes)], _CODE, write)


def mixture_validation_stage(store: ArtifactStore, fit: ArtifactRef, probes: dict[str, dict[int, ArtifactRef]],
                             confidence: float) -> ArtifactRef:
    """The proposed mixture against the natural and the uniform one, probed with the same seeds: each one's mean
    held-out bpb and the paired differences proposed - natural and proposed - uniform with their intervals, and
    the verdict (stats)."""

    def write(writer: ArtifactWriter) -> None:
        stats = {name: {seed: ref.manifest()["stats"] for seed, ref in by_seed.items()}
                 for name, by_seed in probes.items()}
        metrics = [m for m in ("reference_bpb", "unseen_bpb", "prequential_bpb")
                   if all(m in s for by_seed in stats.values() for s in by_seed.values())]
        seeds = sorted(stats["proposed"])
        means = {name: {m: asdict(t_interval([by_seed[s][m] for s in seeds], confidence)) for m in metrics}
                 for name, by_seed in stats.items()}
        differences = {f"proposed - {other}": {m: asdict(t_interval(
            [stats["proposed"][s][m] - stats[other][s][m] for s in seeds], confidence)) for m in metrics}
            for other in ("natural", "uniform")}
        writer.stats(seeds=seeds, confidence=confidence, means=means, differences=differences,
                     verdict=validation_verdict(differences, fit.manifest()["stats"]["target"], confidence))

    inputs = [fit.key] + [ref.key for by_seed in probes.values() for ref in by_seed.values()]
    return store.build(MIXTURE_VALIDATION.name, {"confidence": confidence}, inputs, _CODE, write)


def validation_verdict(differences: dict, target: str, confidence: float) -> str:
    """One sentence on the target metric: does the proposed mixture beat the natural and the uniform one?"""
    parts = []
    for name, by_metric in differences.items():
        other = name.removeprefix("proposed - ")
        d = by_metric[f"{target}_bpb"]
        if d["low"] is None:
            parts.append(f"vs the {other} mixture {d['mean']:+.3f} bpb (1 seed, no interval)")
        elif d["high"] < 0:
            parts.append(f"beats the {other} mixture by {-d['mean']:.3f} [{-d['high']:.3f}, {-d['low']:.3f}] bpb")
        elif d["low"] > 0:
            parts.append(f"is worse than the {other} mixture by {d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}] bpb")
        else:
            parts.append(f"is indistinguishable from the {other} mixture ({d['mean']:+.3f} [{d['low']:+.3f}, "
                         f"{d['high']:+.3f}] bpb)")
    return (f"On the {target} held-out set at the search's probe budget ({confidence:.0%} intervals over seeds), "
            f"the proposed mixture {' and '.join(parts)}.")


def select_mixture_stage(store: ArtifactStore, pool: list[ArtifactRef], budget: Budget, options: MixtureSelector,
                         context: SelectionContext) -> ArtifactRef:
    """The pool resampled to the mixture search's best weights under the budget; each document's decision names
    the component quota it filled (or found full)."""
    if context.mixture is None:
        raise ValueError("selector 'mixture' needs the fitted mixture search in its SelectionContext (mixture)")
    fit = context.mixture.manifest()["stats"]
    weights = np.asarray(fit["weights"])

    def select(data: Pool, lengths: np.ndarray, writer: ArtifactWriter) -> Selection:
        names, components = strata_of(data, options.components)
        if names != fit["components"]:
            raise ValueError(f"mixture: the pool's components {names} differ from the fitted {fit['components']}")
        order, quotas = resample(components, lengths if budget.budget_unit == "tokens" else None, weights,
                                 budget.budget, budget.budget_unit, options.seed)
        decisions = _quota_decisions(MIXTURE.name, data, names, components, order, weights, quotas,
                                     "the mixture's resample")
        filled = np.bincount(components[order], weights=lengths[order], minlength=len(names))
        return Selection(order, decisions, {
            "weights": dict(zip(names, weights.round(4).tolist())),
            "natural": dict(zip(names, np.round(fit["natural"], 4).tolist())),
            "quotas": dict(zip(names, quotas.tolist())), "tokens_by_component": dict(zip(names, filled.tolist())),
            "preferred": fit["preferred"], "spearman_cv": fit["spearman_cv"]})

    return build_selection(store, MIXTURE, pool, strata_view(options.components, context), budget.token_counter,
                           {**budget.budget_fields(), **options.model_dump()}, [context.mixture.key], _CODE, select)


def _quota(names: list[str], weights, quotas: np.ndarray, c: int) -> str:
    return f"{names[c]} (weight {weights[c]:.3f}, quota {quotas[c]})"


def _quota_decisions(stage: str, data: Pool, names: list[str], components: np.ndarray, order: np.ndarray,
                     weights: np.ndarray, quotas: np.ndarray, what: str) -> Decisions:
    drawn = np.full(data.docs.num_rows, -1)
    drawn[order] = np.arange(len(order))
    decisions = Decisions(stage)
    for index, doc_id in enumerate(data.docs["doc_id"].to_pylist()):
        c = components[index]
        quota = _quota(names, weights, quotas, c)
        if drawn[index] >= 0:
            decisions.add(doc_id, "selected", f"selected: fills the quota of {quota} in {what}", group=names[c])
        else:
            decisions.add(doc_id, "rejected", f"not selected: the quota of {quota} was filled before it was drawn "
                          f"in {what}", group=names[c])
    return decisions
