"""Clean stops: SIGTERM or Ctrl-C ends a run within seconds, recorded as interrupted, with nothing left running.

The first signal raises `Interrupted` in the main thread, so the run unwinds normally: its record and MLflow run say
`interrupted`, the Dask cluster and the temporary Prefect server close. (Inside a flow run Prefect turns SIGTERM into
its own `TerminationSignal` first; the flow arms the same deadline when it sees either.) Unwinding is given
GRACE_S seconds: a task thread that cannot be interrupted (an in-process Dask worker in the middle of a model
forward pass) would otherwise hold the interpreter's exit until it finishes. Past the deadline, or at a second signal,
every child process is killed and the process exits at once; the artifact store loses nothing either way (writes
are atomic) and a re-run resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import psutil

GRACE_S = 8.0
_deadline_armed = threading.Event()
_stop_requested = threading.Event()
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM, SIGINT)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def is_interruption(exc: BaseException) -> bool:
    """A stop from outside (signal, Ctrl-C, Prefect's TerminationSignal), not a failure of the run itself.

    A signal's exception can surface wrapped in another (raised inside a pydantic serializer, say), so a signal
    noted by the handlers here counts whatever exception it became."""
    from prefect.exceptions import TerminationSignal

    return _stop_requested.is_set() or isinstance(exc, (KeyboardInterrupt, TerminationSignal))


def kill_children() -> None:
    """SIGKILL every process this one started (Dask nannies and workers, the temporary Prefect server)."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def exit_now(code: int) -> None:
    """End the process at once, with its children (output flushed first)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    kill_children()
    os._exit(code)


def arm_deadline(code: int = 128 + signal.SIGTERM, grace_s: float = GRACE_S) -> None:
    """Exit (killing children) in `grace_s` seconds unless the process has ended by then. Idempotent."""
    if _deadline_armed.is_set():
        return
    _deadline_armed.set()
    timer = threading.Timer(grace_s, exit_now, args=(code,))
    timer.daemon = True
    timer.start()


@contextlib.contextmanager
def _handlers(make):
    """Install `make(previous handler)` for SIGTERM and SIGINT (main thread only), restoring the old ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, make(previous[signum]))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stop_on_signals():
    """For a command that owns its process: SIGTERM and SIGINT raise `Interrupted` (first) or end it (second)."""
    seen = []

    def make(_previous):
        def handle(signum, _frame):
            if seen:
                exit_now(128 + signum)
            seen.append(signum)
            _stop_requested.set()
            arm_deadline(128 + signum)
            raise Interrupted(signum)

        return handle

    with _handlers(make):
        yield


@contextlib.contextmanager
def note_signals():
    """Inside a flow run: note SIGTERM and SIGINT and arm the deadline, then hand the signal to the handler already in
    place (Prefect's, which turns SIGTERM into a crash or a cancellation of the flow run)."""

    def make(previous):
        def handle(signum, frame):
            _stop_requested.set()
            arm_deadline(128 + signum)
            if callable(previous):
                previous(signum, frame)
            raise Interrupted(signum)

        return handle

    with _handlers(make):
        yield
