"""The numbers a run reports: docs in/out per stage, quarantine, where the outputs are."""

from __future__ import annotations

import collections
import fcntl
import os
import shutil
from pathlib import Path

from selectflow.ingest import reason_kind
from selectflow.runs import RunRecord
from selectflow.stages.base import DECIDING, Kind, Stage, stages
from selectflow.store import ArtifactRef, ArtifactStore

FICLONE = 0x40049409  # Linux ioctl: share the source's blocks copy-on-write (btrfs, XFS)


def ingest_metrics(refs: list[ArtifactRef]) -> dict[str, float]:
    stats = [ref.manifest()["stats"] for ref in refs]
    return {
        "input_files": len(refs),
        "docs_out": sum(s["docs"] for s in stats),
        "quarantined": sum(s["quarantined"] for s in stats),
        "text_bytes": sum(s["text_bytes"] for s in stats),
        "skipped_links": sum(s.get("skipped_links", 0) for s in stats),
    }


def quarantine_reasons(refs: list[ArtifactRef]) -> dict[str, int]:
    """Quarantined records by kind of problem (`reason_kind`), most frequent first."""
    counts: collections.Counter[str] = collections.Counter()
    for ref in refs:
        if ref.files("quarantine"):
            reasons = ref.read("quarantine", columns=["reason"])["reason"]
            for entry in reasons.value_counts().to_pylist():
                counts[reason_kind(entry["values"])] += entry["counts"]
    return dict(counts.most_common())


def _work_seconds(refs: list[ArtifactRef]) -> float:
    return round(sum(ref.manifest().get("seconds", 0.0) for ref in refs), 2)


COUNTS = ("docs_in", "docs_out", "dropped")


def counts(refs: list[ArtifactRef]) -> dict[str, int]:
    """docs_in / docs_out / dropped summed over a deciding stage's artifacts."""
    stats = [ref.manifest()["stats"] for ref in refs]
    return {key: sum(s[key] for s in stats) for key in COUNTS}


def stage_row(run: RunRecord, stage: Stage) -> dict | None:
    """A stage's row of the run's stage table (None when the run has no artifact of it): documents in, out and
    dropped for the stages that decide about documents (summed over their artifacts), and the seconds of work."""
    refs = stage.refs(run)
    if not refs:
        return None
    decided = counts(refs) if stage.kind in DECIDING else dict.fromkeys(COUNTS)
    seconds = _work_seconds(refs + [ref for name in stage.work_of for ref in run.refs(name)])
    return {"stage": stage.name, **decided, "work_s": seconds}


def run_summary(run: RunRecord, store: ArtifactStore, outputs: dict[str, Path]) -> dict:
    """`outputs`: the published folders by stage (see `publish`); the first selector's is the run's result."""
    ingested = run.refs("ingest")
    ingest = ingest_metrics(ingested)
    result = next((stage.name for stage in stages(Kind.SELECTOR) if stage.name in outputs), "deduped")
    rows = [row for stage in stages() if stage.row and (row := stage_row(run, stage))]
    return {
        "run_id": run.run_id,
        "stages": rows,
        "quarantine": {"count": ingest["quarantined"], "reasons": quarantine_reasons(ingested),
                       "tables": [f for ref in ingested for f in ref.files("quarantine")]},
        "skipped_links": ingest["skipped_links"],
        "outputs": str(outputs[result]),
        "subsets": {stage: str(folder) for stage, folder in outputs.items() if stage != "deduped"},
        "deduped": str(outputs["deduped"]),
        "docs_out": {row["stage"]: row["docs_out"] for row in rows}.get(result, rows[-1]["docs_out"]),
        "run_record": str(store.root / "runs" / f"{run.run_id}.json"),
        "mlflow_run_id": run.mlflow_run_id,
    }


def publish(run: RunRecord, stage: str, store: ArtifactStore) -> Path:
    """Copy a stage's shards to `<workspace>/outputs/<run>/<stage>/part-NNNNN.parquet`.

    Copies (reflinks where the filesystem shares blocks copy-on-write), never links: editing an output must not
    change the store, which later runs reuse."""
    folder = store.root.parent / "outputs" / run.run_id / stage
    folder.mkdir(parents=True, exist_ok=True)
    files = [f for ref in run.refs(stage) for f in ref.files("docs")]
    for index, source in enumerate(files):
        copy_file(Path(source), folder / f"part-{index:05d}.parquet")
    return folder


def copy_file(source: Path, target: Path) -> None:
    """An independent copy of `source` at `target`, written to a temporary name first (a kill leaves no half file)."""
    partial = target.with_name(f".{target.name}.partial")
    with open(source, "rb") as src, open(partial, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:  # no reflinks here (ext4, tmpfs, another filesystem): a plain copy
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(partial, target)


def probe_summary(comparison) -> dict:
    """The run summary's probe part: budget, seeds, and per subset its reference bpb and verdict vs random."""
    subsets = {}
    for name, intervals in comparison.metrics.items():
        diff = comparison.difference(name, "reference_bpb")
        subsets[name] = {
            "reference_bpb": intervals["reference_bpb"].text() if "reference_bpb" in intervals else None,
            "vs_random": None if diff is None or diff.interval is None else diff.interval.text(),
            "verdict": comparison.verdicts.get(name, "the baseline" if name == "random" else "no baseline"),
            "epochs": round(comparison.epochs[name], 3),
        }
    recommendation = comparison.recommendation
    return {"budget_tokens": comparison.budget_tokens, "seeds": comparison.seeds,
            "confidence": comparison.confidence, "subsets": subsets, "notes": comparison.notes,
            "recommended": None if recommendation is None else recommendation.subset,
            "recommendation": None if recommendation is None else recommendation.sentence}


def summary_metrics(summary: dict) -> dict[str, float]:
    metrics = {"docs_out": summary["docs_out"], "quarantined": summary["quarantine"]["count"]}
    for row in summary["stages"]:
        if row["docs_in"] is not None:
            metrics[f"{row['stage']}.docs_in"] = row["docs_in"]
            metrics[f"{row['stage']}.docs_out"] = row["docs_out"]
    return metrics


def row_cells(row: dict) -> list[str]:
    """A stage row as table cells: stage, docs in, docs out, dropped, work s ('-' where a stage counts none)."""
    return ["-" if row[key] is None else str(row[key]) for key in ("stage", "docs_in", "docs_out", "dropped", "work_s")]


def markdown(summary: dict) -> str:
    lines = ["| stage | docs in | docs out | dropped | work s |", "|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in summary["stages"]]
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["quarantine"]["reasons"].items()) or "none"
    risk = [f"**Entropy-law risk: {summary['risk']['verdict']}.** {summary['risk']['reason']}", ""] \
        if "risk" in summary else []
    report = [f"Report: `{summary['report']}`"] if "report" in summary else []
    probes = []
    if probe := summary.get("probes"):
        probes = [f"Probes: {probe['budget_tokens']} tokens each, seeds {probe['seeds']}, "
                  f"{probe['confidence']:.0%} intervals.", "", "| subset | reference bpb | vs random | verdict |",
                  "|---|---|---|---|"]
        probes += [f"| {name} | {row['reference_bpb']} | {row['vs_random'] or '-'} | {row['verdict']} |"
                   for name, row in probe["subsets"].items()]
        probes += [f"- {note}" for note in probe["notes"]] + [""]
        if probe.get("recommendation"):
            probes += [f"**{probe['recommendation']}**", ""]
    return "\n".join([f"# selectflow run {summary['run_id']}", "", *risk, *probes, *lines, "",
                      f"Quarantined: {summary['quarantine']['count']} ({reasons})", "",
                      f"Outputs: `{summary['outputs']}`", *report])
