"""One run per workspace at a time, and first-time database setup never raced.

`workspace_lock` is held by a run for its whole life (the CLI takes it before anything starts; the flow takes it too,
for deployments, re-entrantly in the same process). A second run on the same workspace fails at once with a message
naming the run that holds it. `setup_lock` serializes the creation of shared databases (MLflow's SQLite store, the
temporary Prefect server's) between processes that may start together, e.g. a run and `selectflow serve`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

LOCK_FILE = ".selectflow.lock"
_held: dict[Path, int] = {}  # lock file -> re-entry count, for locks this process holds
_held_guard = threading.Lock()


class WorkspaceBusy(RuntimeError):
    """Another run holds the workspace."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


@contextlib.contextmanager
def workspace_lock(workspace: Path):
    """Exclusive use of `workspace` for this process; raises WorkspaceBusy at once if another process has it."""
    path = Path(workspace).absolute() / LOCK_FILE
    with _held_guard:
        if _held.get(path):
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(
                f"workspace {path.parent} is in use by another selectflow run ({_holder(path)}); wait for it to "
                "finish, or give this run another --workspace") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        with _held_guard:
            _held[path] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[path]
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def setup_lock(path: Path):
    """Waits for, then holds, an exclusive lock on `path` (created if missing) between processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
