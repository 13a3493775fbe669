from prefect import flow

from selectflow.config import IngestConfig
from selectflow.flows.runner import run_stages
from selectflow.ingest import InputFile
from selectflow.stages.ingest import ingest_file
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@flow(name="ingest", **FLOW_OPTIONS)
def ingest_corpus(
    workspace: str, files: list[InputFile], cfg: IngestConfig, retries: int = 2, retry_delay_seconds: float = 1.0
) -> list[ArtifactRef]:
    """Every input file -> Parquet document shards + quarantine, one task per file."""
    return run_stages(ingest_file, "ingest-file", workspace, [{"file": f, "cfg": cfg} for f in files], "ingest",
                      label=lambda call: f"ingest {call['file'].uri}",
                      **shard_task_options(retries, retry_delay_seconds))
