"""The curriculum comparison of one subset: each order's learning speed against the shuffled order, paired over
seeds (see `selectflow.probe.curriculum`)."""

from __future__ import annotations

from dataclasses import asdict

import pyarrow as pa

from selectflow.fingerprint import code_fingerprint
from selectflow.probe.compare import t_interval
from selectflow.probe.curriculum import BASELINE_ORDER, area_under_curve
from selectflow.probe.metrics import learning_speed
from selectflow.stages.registry import CURRICULUM
from selectflow.store import ArtifactRef, ArtifactStore, ArtifactWriter

_CODE = code_fingerprint(__name__)


def curriculum_stage(store: ArtifactStore, subset: str, probes: dict[str, dict[int, ArtifactRef]], confidence: float,
                     speed_fraction: float) -> ArtifactRef:
    """Table "orders" (order, seed, area under the reference curve, final reference bpb, steps to the seed's shared
    level) and stats: per order the mean area and final bpb with their intervals, the steps to the level per seed,
    the paired differences from the shuffled order, and the verdict."""

    def write(writer: ArtifactWriter) -> None:
        curves = {order: {seed: ref.read("curve").to_pylist() for seed, ref in by_seed.items()}
                  for order, by_seed in probes.items()}
        seeds = sorted(curves[BASELINE_ORDER])
        rows = []
        for seed in seeds:
            evaluated = {order: [(r["step"], r["reference_bpb"]) for r in by_seed[seed]
                                 if r.get("reference_bpb") is not None] for order, by_seed in curves.items()}
            level, steps = learning_speed({order: tuple(zip(*points)) for order, points in evaluated.items()},
                                          speed_fraction)
            rows += [{"order": order, "seed": seed, "area_bpb": area_under_curve(by_seed[seed]),
                      "final_bpb": evaluated[order][-1][1], "level_bpb": level, "steps_to_level": steps[order]}
                     for order, by_seed in curves.items()]
        writer.write("orders", pa.Table.from_pylist(rows))
        value = {(row["order"], row["seed"]): row for row in rows}
        summary = {}
        for order in curves:
            summary[order] = {metric: asdict(t_interval([value[(order, s)][metric] for s in seeds], confidence))
                              for metric in ("area_bpb", "final_bpb")}
            summary[order]["steps_to_level"] = [value[(order, s)]["steps_to_level"] for s in seeds]  # None: not reached
            if order != BASELINE_ORDER:
                summary[order]["vs_shuffled"] = {metric: asdict(t_interval(
                    [value[(order, s)][metric] - value[(BASELINE_ORDER, s)][metric] for s in seeds], confidence))
                    for metric in ("area_bpb", "final_bpb")}
        writer.stats(subset=subset, seeds=seeds, confidence=confidence, orders=summary,
                     verdict=curriculum_verdict(subset, summary, confidence))

    inputs = [ref.key for by_seed in probes.values() for ref in by_seed.values()]
    return store.build(CURRICULUM.name, {"subset": subset, "confidence": confidence, "speed_fraction": speed_fraction},
                       inputs, _CODE, write)


def curriculum_verdict(subset: str, summary: dict, confidence: float) -> str:
    """Which order learns the subset fastest (lowest area under the reference curve), said only where the paired
    interval against the shuffled order excludes zero."""
    faster, slower = [], []
    for order, stats in summary.items():
        d = stats.get("vs_shuffled", {}).get("area_bpb")
        if d is None or d["low"] is None:
            continue
        text = f"{order} ({d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] bpb of area)"
        (faster if d["high"] < 0 else slower if d["low"] > 0 else []).append((d["mean"], text))
    head = f"Curricula of {subset} ({confidence:.0%} intervals over seeds, vs the shuffled order): "
    if faster:
        best = min(faster)[1]
        return head + f"fastest: {best}" + (f"; slower: {', '.join(t for _, t in sorted(slower))}" if slower else "")
    return head + ("no order learns faster than the shuffled one" +
                   (f"; slower: {', '.join(t for _, t in sorted(slower))}" if slower else "") + ".")
