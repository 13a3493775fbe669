"""What every selectflow task shares: a content-derived cache key and access to the Dask cluster."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from pydantic import BaseModel

from selectflow.store import package_code_version, stable_hash


def _jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def content_cache_key(context, parameters: dict) -> str:
    """Key = task name + its inputs (file fingerprints, shard hashes, artifact keys, config) + code version.

    Inputs identify content, not runs, so a re-run, or a scheduled run over a grown corpus, skips every shard whose
    content and config are unchanged.
    """
    params = {name: _jsonable(value) for name, value in parameters.items()}
    return stable_hash(context.task.name, params, package_code_version(), size=20)


# Task options of every task that produces an artifact: skipped when its inputs, config and code are unchanged.
CACHED = {"cache_key_fn": content_cache_key, "persist_result": True}


@contextlib.contextmanager
def dask_client():
    """The cluster's client when running on a Dask worker (DaskTaskRunner), else None (thread pool, tests)."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        yield None
        return
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
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
