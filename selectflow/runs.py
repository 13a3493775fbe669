"""A run record: which artifacts each stage of one `curate` run produced, saved as it goes."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selectflow.store import ArtifactRef, ArtifactStore


@dataclass
class RunRecord:
    run_id: str
    config: dict
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    status: str = "running"
    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    stages: dict[str, list[dict]] = field(default_factory=dict)  # stage -> artifact refs, in order
    summary: dict = field(default_factory=dict)

    def add(self, stage: str, refs: list[ArtifactRef]) -> None:
        self.stages[stage] = [asdict(ref) for ref in refs]

    def refs(self, stage: str) -> list[ArtifactRef]:
        return [ArtifactRef(**ref) for ref in self.stages.get(stage, [])]

    def save(self, store: ArtifactStore) -> Path:
        path = store.root / "runs" / f"{self.run_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))  # unsorted: stages keep DAG order
        os.replace(tmp, path)
        return path


def load_run(store: ArtifactStore, run_id: str | None = None) -> RunRecord:
    """A run by id or unique id prefix; the latest run when `run_id` is None."""
    runs = sorted((store.root / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise LookupError(f"no runs recorded under {store.root / 'runs'}; run `selectflow run` first")
    if run_id is None:
        chosen = runs[-1]
    else:
        matches = [p for p in runs if p.stem.startswith(run_id)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs"
            raise LookupError(f"{found} with id starting {run_id!r} under {store.root / 'runs'}")
        chosen = matches[0]
    return RunRecord(**json.loads(chosen.read_text()))
