"""Progress of long stages: a live bar on a terminal, periodic log lines elsewhere (CI, workers, the UI log)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("selectflow")


class StageProgress:
    def __init__(self, stage: str, total: int, unit: str = "shards"):
        self.stage, self.total, self.unit = stage, total, unit
        self.done = 0
        self._bar = None
        self._last_log = 0.0
        self._started = time.perf_counter()

    def __enter__(self) -> StageProgress:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(f"[bold]{self.stage}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif time.perf_counter() - self._last_log > 5 or self.done == self.total:
            self._last_log = time.perf_counter()
            self._emit(f"{self.stage}: {self.done}/{self.total} {self.unit}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
        seconds = time.perf_counter() - self._started
        self._emit(f"{self.stage}: {self.done}/{self.total} {self.unit} in {seconds:.1f}s")

    @staticmethod
    def _emit(message: str) -> None:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            get_run_logger().info(message)
        except MissingContextError:
            log.info(message)
