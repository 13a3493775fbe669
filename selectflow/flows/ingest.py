from prefect import flow

from selectflow.config import IngestConfig
from selectflow.flows.runner import run_shards
from selectflow.ingest import InputFile
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options
from selectflow.tasks.ingest import ingested_shards


@flow(name="ingest", **FLOW_OPTIONS)
def ingest_corpus(
    workspace: str, files: list[InputFile], cfg: IngestConfig, retries: int = 2, retry_delay_seconds: float = 1.0
) -> list[ArtifactRef]:
    """Every input file -> Parquet document shards + quarantine, one task per file."""
    task = ingested_shards.with_options(**shard_task_options(retries, retry_delay_seconds))
    return run_shards(task, [{"workspace": workspace, "file": f, "cfg": cfg} for f in files], "ingest")
