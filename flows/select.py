from prefect import flow

from flows.runner import run_shards
from selectflow.config import SelectionConfig
from selectflow.store import ArtifactRef
from tasks.select import zip_selection


@flow(name="select")
def select_subset(workspace: str, pool: list[ArtifactRef], cfg: SelectionConfig) -> dict[str, ArtifactRef]:
    """The configured selectors over the deduplicated pool; each returns its selected documents and decisions."""
    selected = {}
    if cfg.selector == "zip":
        (selected["select_zip"],) = run_shards(zip_selection, [{"workspace": workspace, "pool": pool, "cfg": cfg.zip}],
                                               "zip selection")
    return selected
