"""A run record: which artifacts each stage of one `curate` run produced, saved as it goes, and what became of it.

A record says `running` while its run works; a run that ends says `completed`, `failed` or `interrupted` (SIGTERM,
Ctrl-C) with `finished_at`. A run killed outright cannot say anything: its record still says `running`, so a reader
checks that the process is alive (same pid and process start time on this host; elsewhere, a heartbeat file touched
every HEARTBEAT_S seconds) and otherwise treats it as `interrupted`. The next run on the workspace writes that down,
in the record and in MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from selectflow.store import ArtifactRef, ArtifactStore

HEARTBEAT_S = 10.0
ENDED = ("completed", "failed", "interrupted")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _process_started(pid: int) -> float:
    return round(psutil.Process(pid).create_time(), 2)


@dataclass
class RunRecord:
    run_id: str
    config: dict
    started_at: str = field(default_factory=_now)
    status: str = "running"  # running | completed | failed | interrupted
    finished_at: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    pid_started: float = field(default_factory=lambda: _process_started(os.getpid()))
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
        tmp = path.with_suffix(f".json.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))  # unsorted: stages keep DAG order
        os.replace(tmp, path)
        return path

    def finish(self, store: ArtifactStore, status: str) -> None:
        self.status, self.finished_at = status, _now()
        self.save(store)

    def live_status(self, store: ArtifactStore) -> str:
        """The status, with a `running` record whose process is gone read as `interrupted`."""
        if self.status != "running" or self._alive(store):
            return self.status
        return "interrupted"

    def _alive(self, store: ArtifactStore) -> bool:
        if self.host == socket.gethostname():
            try:
                return _process_started(self.pid) == self.pid_started
            except psutil.Error:
                return False
        beat = _heartbeat_file(store, self.run_id)
        return beat.is_file() and time.time() - beat.stat().st_mtime < 3 * HEARTBEAT_S


def _heartbeat_file(store: ArtifactStore, run_id: str) -> Path:
    return store.root / "runs" / f"{run_id}.heartbeat"


@contextlib.contextmanager
def heartbeat(store: ArtifactStore, run: RunRecord):
    """Touch the run's heartbeat file every HEARTBEAT_S seconds while the block runs (seen from other hosts)."""
    beat = _heartbeat_file(store, run.run_id)
    stop = threading.Event()

    def beating() -> None:
        while not stop.wait(HEARTBEAT_S):
            beat.touch()

    beat.touch()  # before the block starts, so the run reads as alive from its first moment
    thread = threading.Thread(target=beating, name="selectflow-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        beat.unlink(missing_ok=True)


def all_runs(store: ArtifactStore) -> list[RunRecord]:
    """Every run record of the workspace, oldest first."""
    runs = [RunRecord(**json.loads(path.read_text())) for path in (store.root / "runs").glob("*.json")]
    return sorted(runs, key=lambda run: run.started_at)


def record_interrupted(store: ArtifactStore) -> list[RunRecord]:
    """Write `interrupted` into the records of runs that were killed while running; the runs so marked."""
    dead = [run for run in all_runs(store) if run.live_status(store) == "interrupted" and run.status == "running"]
    for run in dead:
        run.finish(store, "interrupted")
        _heartbeat_file(store, run.run_id).unlink(missing_ok=True)
    return dead


def load_run(store: ArtifactStore, run_id: str | None = None) -> RunRecord:
    """A run by id or unique id prefix; by default the latest completed one (see `choose_run`)."""
    return choose_run(store, run_id)[0]


def choose_run(store: ArtifactStore, run_id: str | None = None) -> tuple[RunRecord, str]:
    """A run by id or unique id prefix; by default the latest completed one. Also a note saying which run was taken
    and, when it is not the latest, why ('' when the choice needs no comment)."""
    runs = all_runs(store)
    if not runs:
        raise LookupError(f"no runs recorded under {store.root / 'runs'}; run `selectflow run` first")
    if run_id is not None:
        matches = [run for run in runs if run.run_id.startswith(run_id)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs"
            raise LookupError(f"{found} with id starting {run_id!r} under {store.root / 'runs'}")
        run = matches[0]
        status = run.live_status(store)
        return run, "" if status == "completed" else f"run {run.run_id} is {status}: its decisions may be incomplete"
    latest = runs[-1]
    completed = [run for run in runs if run.status == "completed"]
    if not completed:
        return latest, (f"no completed run in this workspace; showing the latest, {latest.run_id}, which is "
                        f"{latest.live_status(store)}: its decisions may be incomplete")
    if completed[-1] is latest:
        return latest, ""
    return completed[-1], (f"showing the latest completed run, {completed[-1].run_id}; the latest run, "
                           f"{latest.run_id}, is {latest.live_status(store)} (pick it with --run)")
