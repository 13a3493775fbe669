from __future__ import annotations

import pyarrow as pa
from prefect import task

from selectflow.config import ProbeConfig
from selectflow.stages.probe import full_pool_stage, probe_stage
from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED


def _docs(refs: list[ArtifactRef]) -> pa.Table | None:
    return pa.concat_tables([ref.read("docs") for ref in refs]) if refs else None


@task(name="full-pool-sample", **STORE_CACHED, task_run_name="full-pool sample seed {seed}")
def full_pool_sample(workspace: str, pool: list[ArtifactRef], cfg: ProbeConfig, seed: int, tokens: int) -> ArtifactRef:
    """The deduplicated pool sampled to the probe's token budget: the 'no selection' point of comparison."""
    return full_pool_stage(ArtifactStore(workspace), pool, cfg, seed, tokens)


@task(name="probe-training", **STORE_CACHED, task_run_name="probe {name} seed {seed}")
def probe_training(
    workspace: str,
    name: str,
    subset: list[ArtifactRef],
    reference: list[ArtifactRef],
    unseen: list[ArtifactRef],
    cfg: ProbeConfig,
    seed: int,
    tokens: int,
) -> ArtifactRef:
    """A short probe training run on one subset for one seed: loss curve, code length, held-out bits per byte."""
    return probe_stage(ArtifactStore(workspace), name, subset, _docs(reference), _docs(unseen), cfg, seed, tokens)
