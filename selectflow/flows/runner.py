"""Running shard tasks: one Dask cluster per flow run, progress as shards finish."""

import contextlib
import logging
from collections.abc import Callable

import dask
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from selectflow.config import DaskConfig
from selectflow.progress import StageProgress
from selectflow.store import ArtifactRef
from selectflow.tasks.stage import stage_calls


@contextlib.contextmanager
def dask_runner(cfg: DaskConfig):
    """A DaskTaskRunner on `cfg.address`, or on a LocalCluster started here for the whole flow run."""
    logging.getLogger("distributed").setLevel(logging.WARNING)  # per-worker INFO lines drown the flow's log
    if cfg.address:
        yield DaskTaskRunner(address=cfg.address)
        return
    from distributed import LocalCluster

    process_options = {"env": _prefect_env(), "host": cfg.host} if cfg.processes else {}
    # Dask's default MALLOC_TRIM_THRESHOLD_ (64 KiB) makes every large numpy temporary a fresh mmap: MinHash on
    # the workers used ~40% more CPU (bench/dedup). These must be set before the worker processes start.
    with dask.config.set({
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 2**27,
        "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 2**25,
    }), LocalCluster(
        n_workers=cfg.n_workers,
        threads_per_worker=cfg.threads_per_worker,
        processes=cfg.processes,
        # Even with no dashboard, the scheduler and every worker serve HTTP (health, metrics) on an address of their
        # own; in-process workers would bind it on every interface. Pin them all to the host, on free ports.
        dashboard_address=f"{cfg.host}:0",
        worker_dashboard_address=f"{cfg.host}:0",
        **process_options,
    ) as cluster:
        yield DaskTaskRunner(address=cluster.scheduler_address)


def _prefect_env() -> dict[str, str]:
    """Point worker processes at this flow's Prefect API; without it each would start a temporary server of its own."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {"PREFECT_API_URL": str(client.api_url).rstrip("/")}


def run_stages(stage: Callable[..., ArtifactRef], name: str, workspace: str, inputs: list[dict], progress: str,
               label: Callable[[dict], str] | None = None, **options) -> list[ArtifactRef]:
    """Run `stage` once per entry of `inputs` as tasks named `name` (see `stage_calls`), side by side; progress
    under `progress` as they finish; their artifacts in input order."""
    return run_tasks(stage_calls(stage, name, workspace, inputs, label, **options), progress)


def run_tasks(calls: list[tuple], stage: str) -> list[ArtifactRef]:
    """Submit each (task, parameters) at once so they run side by side; their artifacts, in call order."""
    futures = [task.submit(**params) for task, params in calls]
    with StageProgress(stage, total=len(futures)) as progress:
        for _ in as_completed(futures):
            progress.advance()
    return [future.result() for future in futures]
