"""The `curate` DAG: ingest -> exact + near dedup -> selection (ZIP)."""

import contextlib
import json
import uuid
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.dedup import deduplicate
from flows.ingest import ingest_corpus
from flows.runner import dask_runner
from flows.select import select_subset
from selectflow import summary
from selectflow.config import CurateConfig
from selectflow.ingest import plan_inputs
from selectflow.runs import RunRecord
from selectflow.store import ArtifactRef, ArtifactStore, package_code_version
from selectflow.tracking import Tracker


@flow(name="curate", log_prints=True)
def curate(config: CurateConfig) -> dict:
    """Take a raw corpus to its selected subset, with per-document lineage and an MLflow run."""
    files = plan_inputs(config.ingest)  # a missing or unreadable input fails here, before anything starts
    store = ArtifactStore(config.workspace / "store")
    store.clean_tmp()
    run = RunRecord(
        run_id=flow_run.get_id() or uuid.uuid4().hex,
        flow_run_id=flow_run.get_id(),
        config=config.model_dump(mode="json"),
    )
    workspace = str(store.root)
    retrying = {"retries": config.retries, "retry_delay_seconds": config.retry_delay_seconds}
    tracker = Tracker(config.tracking, config.workspace)
    tags = {"prefect.flow_run_id": str(run.flow_run_id), "selectflow.code_version": package_code_version()}
    with tracker.run(config.run_name or flow_run.get_name(), tags, run.config) as mlflow_run, \
            dask_runner(config.dask) as task_runner, _recorded(run, store):
        run.mlflow_run_id = mlflow_run.info.run_id
        run.save(store)

        ingested = ingest_corpus.with_options(task_runner=task_runner)(workspace, files, config.ingest, **retrying)
        run.add("ingest", ingested)
        run.save(store)
        tracker.stage("ingest", ingested, config.ingest.model_dump(mode="json"), summary.ingest_metrics(ingested))

        shards = [shard for ref in ingested for shard in ref.shards("docs")]
        dedup = deduplicate.with_options(task_runner=task_runner)(workspace, shards, config.dedup, **retrying)
        run.add("dedup_exact", [dedup.exact])
        run.add("minhash", dedup.signatures)
        run.add("dedup_near", [dedup.near])
        run.add("deduped", dedup.deduped)
        run.save(store)
        tracker.stage("dedup_exact", [dedup.exact], config.dedup.exact.model_dump(), dedup.exact.manifest()["stats"])
        tracker.stage("dedup_near", [dedup.near, *dedup.signatures], config.dedup.near.model_dump(),
                      dedup.near.manifest()["stats"])

        selected = select_subset.with_options(task_runner=task_runner)(workspace, dedup.deduped, config.selection)
        for stage, ref in selected.items():
            run.add(stage, [ref])
        run.save(store)
        if "select_zip" in selected:
            track_zip(tracker, selected["select_zip"], config.selection.zip)

        published = {stage: summary.publish(run, stage, store) for stage in ("deduped", *selected)}
        run.summary = summary.run_summary(run, store, published)
        run.status = "completed"
        run.save(store)
        tracker.log_summary(summary.summary_metrics(run.summary), {"summary.json": run.summary})
    create_markdown_artifact(summary.markdown(run.summary), key="curate-summary", description="selectflow run summary")
    return run.summary


@contextlib.contextmanager
def _recorded(run: RunRecord, store: ArtifactStore):
    """A run that raises is recorded as failed (a killed one stays 'running': lineage says it is undecided)."""
    try:
        yield
    except BaseException:
        run.status = "failed"
        run.save(store)
        raise


def track_zip(tracker: Tracker, selected: ArtifactRef, cfg) -> None:
    manifest = selected.manifest()
    stats = manifest["stats"]
    metrics = {"selected": stats["docs_out"], "pool": stats["docs_in"], "seconds": stats["seconds"]["total"]}
    metrics |= {f"final_ratio.{name}": value for name, value in stats["final_ratio"].items()}
    rounds = (Path(selected.path) / "rounds.json").read_text()
    ids = "\n".join(selected.read("docs", columns=["doc_id"])["doc_id"].to_pylist()) + "\n"
    tracker.stage("select_zip", [selected], cfg.model_dump(), metrics, series=json.loads(rounds),
                  texts={"selected_ids.txt": ids, "rounds.json": rounds})
