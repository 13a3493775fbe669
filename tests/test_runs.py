"""Run records tell the truth about dead runs; one run per workspace; signals stop a run within its deadline."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from selectflow.runs import RunRecord, choose_run, heartbeat, record_interrupted
from selectflow.store import ArtifactStore
from selectflow.workspace import workspace_lock


def dead_process() -> tuple[int, float]:
    """The pid and start time of a process that has exited."""
    import psutil

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = round(psutil.Process(child.pid).create_time(), 2)
    child.wait()
    return child.pid, started


def record(store, run_id, status, started_at, **fields):
    run = RunRecord(run_id=run_id, config={}, status=status, started_at=started_at, **fields)
    run.save(store)
    return run


def test_a_killed_run_reads_as_interrupted_and_the_next_run_writes_it_down(tmp_path):
    store = ArtifactStore(tmp_path)
    pid, started = dead_process()
    record(store, "done", "completed", "2026-01-01T00:00:00Z", finished_at="2026-01-01T00:10:00Z")
    killed = record(store, "killed", "running", "2026-01-02T00:00:00Z", pid=pid, pid_started=started)
    alive = record(store, "alive", "running", "2026-01-03T00:00:00Z")  # this very process
    assert killed.live_status(store) == "interrupted" and alive.live_status(store) == "running"
    # Another process that reuses the pid later is not the run: the start time differs.
    assert record(store, "reused", "running", "2026-01-01T00:00:01Z",
                  pid_started=alive.pid_started - 5).live_status(store) == "interrupted"

    run, note = choose_run(store)
    assert run.run_id == "done" and "latest completed run, done" in note and "alive, is running" in note
    assert choose_run(store, "killed")[1] == "run killed is interrupted: its decisions may be incomplete"

    marked = {run.run_id for run in record_interrupted(store)}
    assert marked == {"killed", "reused"}
    saved = json.loads((tmp_path / "runs" / "killed.json").read_text())
    assert saved["status"] == "interrupted" and saved["finished_at"]


def test_another_hosts_run_is_alive_while_its_heartbeat_is(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    remote = record(store, "remote", "running", "2026-01-01T00:00:00Z", host="elsewhere")
    assert remote.live_status(store) == "interrupted"  # no heartbeat at all
    with heartbeat(store, remote):
        assert remote.live_status(store) == "running"
        stale = time.time() - 60
        os.utime(tmp_path / "runs" / "remote.heartbeat", (stale, stale))
        assert remote.live_status(store) == "interrupted"
    assert not (tmp_path / "runs" / "remote.heartbeat").exists()


def test_a_second_process_cannot_take_a_workspace_in_use(tmp_path):
    probe = textwrap.dedent(f"""
        from selectflow.workspace import WorkspaceBusy, workspace_lock
        try:
            with workspace_lock({str(tmp_path)!r}):
                print("acquired")
        except WorkspaceBusy as exc:
            print(exc)
    """)
    with workspace_lock(tmp_path), workspace_lock(tmp_path):  # re-entrant in one process
        busy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert f"workspace {tmp_path} is in use by another selectflow run (pid {os.getpid()}" in busy
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert free.strip() == "acquired"  # released when the outer block ended, not the inner one


STOPPABLE = textwrap.dedent("""
    import sys, time
    from selectflow.stopping import Interrupted, stop_on_signals
    try:
        with stop_on_signals():
            print("ready", flush=True)
            time.sleep(60)
    except Interrupted as exc:
        print(f"interrupted {exc.signum}", flush=True)
        if sys.argv[1] == "hang":  # cleanup that never ends (a task thread that cannot be interrupted)
            time.sleep(60)
        sys.exit(0)
""")


@pytest.mark.parametrize("cleanup", ["quick", "hang"])
def test_sigterm_ends_a_run_within_its_deadline(cleanup):
    from selectflow.stopping import GRACE_S

    child = subprocess.Popen([sys.executable, "-c", STOPPABLE, cleanup], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=GRACE_S + 20)
    took = time.monotonic() - sent
    assert f"interrupted {int(signal.SIGTERM)}" in out
    if cleanup == "quick":
        assert child.returncode == 0 and took < GRACE_S
    else:  # the deadline ends it: 128 + SIGTERM
        assert child.returncode == 143 and GRACE_S - 1 < took < GRACE_S + 10
