"""Answers "why is this document in (or out of) the final set" and "what did this run produce from what"."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.dataset as ds

from selectflow.ingest import canonical_uri
from selectflow.runs import RunRecord, choose_run
from selectflow.stages.base import Kind, stages
from selectflow.store import ArtifactStore
from selectflow.text import doc_id as make_doc_id

_FILE_LINE = re.compile(r"^(?P<source>.+):(?P<line>\d+)$")


def _find(files: list[str], column: str, value, columns: list[str]) -> list[dict]:
    if not files:
        return []
    try:
        table = ds.dataset(files, format="parquet").to_table(filter=ds.field(column) == value, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise LookupError(f"the run's artifacts are damaged or gone ({exc}); `selectflow store verify` lists what, "
                          "and re-running the same command rebuilds them") from None
    return table.to_pylist()


class UnknownDocument(LookupError):
    """The document id, or FILE:LINE, is not in the run's input."""


def doc_lineage(store: ArtifactStore, doc: str, run_id: str | None = None) -> dict:
    """Origin and per-stage decisions of one document, by doc_id or by `FILE:LINE` of the input; raises
    UnknownDocument when the run never read it."""
    run, note = choose_run(store, run_id)
    ingested = run.refs("ingest")
    docs_files = [f for ref in ingested for f in ref.files("docs")]
    quarantined = []
    record = _FILE_LINE.match(doc)
    if record:
        source, line = canonical_uri(record["source"]), int(record["line"])
        doc = make_doc_id(source, line)
        quarantine_files = [f for ref in ingested for f in ref.files("quarantine")]
        quarantined = [
            row for row in _find(quarantine_files, "source", source, ["source", "line", "reason"])
            if row["line"] == line
        ]
    columns = ["doc_id", "source", "line", "domain", "n_bytes", "content_hash", "text"]
    origin = _find(docs_files, "doc_id", doc, columns)
    result = {"doc_id": doc, "run_id": run.run_id, "note": note, "origin": None, "decisions": [], "final": None}
    if quarantined:
        result["quarantined"] = quarantined[0]
        result["final"] = f"out: quarantined at ingest ({quarantined[0]['reason']})"
        return result
    if not origin and record:
        read = bool(_find(docs_files, "source", source, ["line"])) or bool(_find(quarantine_files, "source", source,
                                                                                  ["line"]))
        why = "no record at that line" if read else "the file is not one of its inputs"
        raise UnknownDocument(f"record {source}:{line} is not in run {run.run_id}'s input ({why})")
    if not origin:
        raise UnknownDocument(f"unknown document id {doc!r}: not in run {run.run_id}'s input "
                              "(give a doc_id from its outputs, or FILE:LINE of an input record)")
    row = origin[0]
    row["text"] = row["text"][:200]
    result["origin"] = row
    result["decisions"].append({"stage": "ingest", "decision": "kept", "reason": f"read from {row['source']} line {row['line']}"})
    for stage in stages(Kind.FILTER):
        found = _with_keeper_origins(_decisions(run, stage.name, doc), docs_files)
        result["decisions"].extend(found)
        if any(d["decision"] == "dropped" for d in found):
            result["final"] = f"out: dropped at {stage.name}"
            return result
    verdicts = {}
    for stage in stages(Kind.SELECTOR, Kind.BASELINE):
        found = _decisions(run, stage.name, doc)
        result["decisions"].extend(found)
        if found:
            verdicts[stage.name] = found[0]["decision"]
    result["final"] = _selection_verdict(verdicts, run.live_status(store))
    return result


def _with_keeper_origins(decisions: list[dict], docs_files: list[str]) -> list[dict]:
    """Each decision that names another document (the copy that was kept) also says where that one came from."""
    for decision in decisions:
        if keeper := decision.get("ref_doc_id"):
            rows = _find(docs_files, "doc_id", keeper, ["source", "line"])
            decision["ref_origin"] = f"{rows[0]['source']}:{rows[0]['line']}" if rows else None
    return decisions


def _decisions(run: RunRecord, stage: str, doc: str) -> list[dict]:
    files = [f for ref in run.refs(stage) for f in ref.files("decisions")]
    return _find(files, "doc_id", doc, ["stage", "decision", "reason", "ref_doc_id", "score", "group"])


def _selection_verdict(verdicts: dict[str, str], status: str) -> str:
    """Kept by every filter; now: which of the run's subsets took it (baselines are named but do not decide)."""
    primaries = [stage.name for stage in stages(Kind.SELECTOR) if stage.name in verdicts]
    if not primaries:
        return "in: kept by every stage" if status == "completed" else f"undecided: run is {status}"
    chosen = [stage for stage in primaries if verdicts[stage] == "selected"]
    passed = [stage for stage in primaries if stage not in chosen]
    if not chosen:
        return f"out: not selected at {' or '.join(passed)}"
    return f"in: selected by {', '.join(chosen)}" + (f"; not selected by {', '.join(passed)}" if passed else "")


def run_graph(store: ArtifactStore, run_id: str | None = None) -> dict:
    """The run's artifacts by stage, each with its inputs, row counts and location."""
    run, note = choose_run(store, run_id)
    key_to_stage = {ref.key: stage for stage in run.stages for ref in run.refs(stage)}
    sha_to_artifact = {
        shard.sha256: f"{ref.stage}/{ref.key[:12]}"
        for ref in run.refs("ingest") for shard in ref.shards("docs")
    }
    stages = []
    for stage in run.stages:
        artifacts = []
        for ref in run.refs(stage):
            manifest = ref.manifest()
            inputs = []
            for item in manifest["inputs"]:
                if item in key_to_stage:
                    inputs.append(f"{key_to_stage[item]}/{item[:12]}")
                elif item in sha_to_artifact:
                    inputs.append(f"shard of {sha_to_artifact[item]}")
                else:
                    inputs.append(manifest["config"].get("uri", "input") + f" @ {item[:12]}")
            tables = {name: t["rows"] for name, t in manifest["tables"].items()}
            artifacts.append({"key": ref.key, "path": ref.path, "inputs": inputs, "tables": tables,
                              "stats": manifest["stats"], "seconds": manifest.get("seconds")})
        stages.append({"stage": stage, "artifacts": artifacts})
    return {"run_id": run.run_id, "status": run.live_status(store), "note": note, "started_at": run.started_at,
            "finished_at": run.finished_at,
            "mlflow_run_id": run.mlflow_run_id, "flow_run_id": run.flow_run_id, "stages": stages}
