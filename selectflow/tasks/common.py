"""What every selectflow task shares: the artifact store as its only cache, and access to the Dask cluster."""

from __future__ import annotations

import contextlib

from prefect.cache_policies import NO_CACHE

# Options of every task that produces an artifact. The artifact store is the only cache: a task always runs, and finds
# its artifact in the store (verified against its manifest) when its inputs, config and code are unchanged. Prefect
# neither caches nor persists task results, so nothing is pickled to disk and the two caches can never disagree.
STORE_CACHED = {"cache_policy": NO_CACHE, "persist_result": False}
# Options of every flow. Prefect writes a failed flow run's exception to its result storage whatever persist_result
# says, with cloudpickle by default: JSON keeps the workspace free of pickles.
FLOW_OPTIONS = {"persist_result": False, "result_serializer": "json"}


def on_this_flows_runner(subflow):
    """`subflow` set to run its tasks where the calling flow runs its own. A flow called inside another gets Prefect's
    default thread pool otherwise, in the calling process, however the caller's tasks are run (Dask workers). It gets
    a copy of the caller's runner (same cluster): the caller's own, once it has run a task, holds live futures that
    every task of the subflow would then fail to serialize."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return subflow if context is None else subflow.with_options(task_runner=context.task_runner.duplicate())


@contextlib.contextmanager
def dask_client():
    """The cluster's client when running on a Dask worker (DaskTaskRunner), else None (thread pool, tests).

    The task's thread secedes from the worker's thread pool while it waits on the work it submits, and rejoins after:
    otherwise, with one thread per worker, the waiting task holds the only thread its own sub-tasks could run on.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        yield None
        return
    from distributed import worker_client

    with worker_client() as client:
        yield client


@contextlib.contextmanager
def all_cores():
    """torch on every core this process may use, for the few tasks that run a model alone (a Dask worker process
    starts with one thread: OMP_NUM_THREADS=1); the previous setting is restored afterwards."""
    import os

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def shard_task_options(retries: int, retry_delay_seconds: float) -> dict:
    """Retries with exponential backoff, for tasks that process one shard."""
    return {
        "retries": retries,
        "retry_delay_seconds": [retry_delay_seconds * 2**attempt for attempt in range(retries)] or 0,
    }
