from __future__ import annotations

import pyarrow as pa
from prefect import task

from selectflow.config import InfluenceConfig
from selectflow.stages.influence import influence_reference_stage
from selectflow.store import ArtifactRef, ArtifactStore
from selectflow.tasks.common import STORE_CACHED, all_cores


@task(name="influence-reference", **STORE_CACHED)
def influence_reference(workspace: str, reference: list[ArtifactRef], cfg: InfluenceConfig) -> ArtifactRef:
    """EK-FAC curvature and the inverse-curvature reference gradient of the reference model on the target set."""
    docs = pa.concat_tables([ref.read("docs", columns=["text"]) for ref in reference])
    with all_cores():  # nothing else runs while the reference is fitted
        return influence_reference_stage(ArtifactStore(workspace), docs, cfg)
