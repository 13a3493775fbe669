from __future__ import annotations

from prefect import task

from selectflow.config import IngestConfig
from selectflow.ingest import InputFile
from selectflow.stages.ingest import ingest_file
from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED


@task(name="ingest-file", **STORE_CACHED, task_run_name="ingest {file.uri}")
def ingested_shards(workspace: str, file: InputFile, cfg: IngestConfig) -> ArtifactRef:
    """Read one input into Parquet document shards and its quarantine table."""
    return ingest_file(ArtifactStore(workspace), file, cfg)
