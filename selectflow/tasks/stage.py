"""The one Prefect task: it runs any stage function on the workspace's artifact store.

A stage function takes the store first and returns its artifact (see `selectflow.stages`). This task gives it what
only a running task has, when its signature asks for it: `client`, the Dask client for a stage that fans out over
the cluster; `log`, the task's logger for a stage that reports progress. With `all_cores`, a stage that runs a model
alone gets every core of its worker for the duration.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

from prefect import Task, get_run_logger, task

from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED, all_cores, dask_client


@task(name="stage", task_run_name="{label}", **STORE_CACHED)
def run_stage(workspace: str, stage: Callable[..., ArtifactRef], inputs: dict, label: str = "stage",
              use_all_cores: bool = False) -> ArtifactRef:
    accepts = inspect.signature(stage).parameters
    with contextlib.ExitStack() as context:
        if "client" in accepts:
            inputs = inputs | {"client": context.enter_context(dask_client())}
        if "log" in accepts:
            inputs = inputs | {"log": get_run_logger().info}
        if use_all_cores:
            context.enter_context(all_cores())
        return stage(ArtifactStore(workspace), **inputs)


def stage_calls(stage: Callable[..., ArtifactRef], name: str, workspace: str, inputs: list[dict],
                label: Callable[[dict], str] | None = None, use_all_cores: bool = False,
                **options) -> list[tuple[Task, dict]]:
    """(task, parameters) to run `stage` once per entry of `inputs`, as tasks named `name` (`options`: retries and
    other task options); `label(inputs)` names each task run."""
    named = run_stage.with_options(name=name, **options)
    return [(named, {"workspace": workspace, "stage": stage, "inputs": entry,
                     "label": label(entry) if label else name, "use_all_cores": use_all_cores})
            for entry in inputs]
