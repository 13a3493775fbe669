"""The deployment as users run it: real Prefect server, process worker, MLflow server, Dask scheduler + 2 workers.

`deployments/prefect.yaml` is deployed, a `prefect worker` picks up runs triggered through the API and the CLI with
parameter overrides, one run on the Dask cluster and one on a LocalCluster; both must select the same documents.
"""

import json
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from selectflow.lineage import doc_lineage
from selectflow.store import ArtifactStore
from tests.conftest import SAMPLE, write_config
from tests.servers import BIN, api_call, clean_env, dask_cluster, mlflow_server, prefect_server, server

pytestmark = pytest.mark.integration
REPO = SAMPLE.parents[2]


def run_cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def wait_for_run(api: str, flow_run_id: str, timeout: float = 400) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = api_call(api, f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} still {run['state']['type']} after {timeout}s")


def selected_ids(workspace: Path) -> list[str]:
    (run_dir,) = (workspace / "outputs").iterdir()
    files = sorted((run_dir / "select_zip").glob("*.parquet"))
    return [doc for f in files for doc in pq.read_table(f)["doc_id"].to_pylist()]


@pytest.mark.slow  # ~4.5 min on 2 cores: five servers and three flow runs
def test_deployment_runs_on_a_worker_with_real_servers(tmp_path, small_corpus):
    inputs = [{"path": str(small_corpus / "part-0[0-5].jsonl")}]
    with prefect_server(tmp_path / "prefect-home") as api, mlflow_server(tmp_path / "mlflow") as mlflow_url:
        env = clean_env(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "client-home"),
                        PREFECT_WORKER_QUERY_SECONDS="1")
        run_cli(["work-pool", "create", "selectflow", "--type", "process"], env)
        run_cli(["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], env)
        deployment = api_call(api, "/deployments/name/curate/curate")
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert "config" in deployment["parameter_openapi_schema"]["properties"]  # the UI's form

        def config_for(name: str, **extra) -> dict:
            path = write_config(tmp_path / f"{name}.yaml", inputs, tmp_path / name,
                                tracking={"tracking_uri": mlflow_url}, **extra)
            from selectflow.config import load_config

            return load_config(path).model_dump(mode="json")

        with dask_cluster(env) as address, server(
            [str(BIN / "prefect"), "worker", "start", "--pool", "selectflow"], env,
            lambda: api_call(api, "/work_pools/selectflow")["status"] == "READY", "prefect worker", cwd=str(REPO),
        ):
            # Triggered through the API, as the UI does, on the external Dask cluster.
            on_dask = api_call(api, f"/deployments/{deployment['id']}/create_flow_run",
                               {"parameters": {"config": config_for("dask", dask={"address": address})}})
            # Triggered with the CLI's parameter override, on a LocalCluster the flow run starts itself.
            local = json.dumps(config_for("local", dask={"n_workers": 2, "processes": True}))
            out = run_cli(["deployment", "run", "curate/curate", "--param", f"config={local}"], env)
            local_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
            dask_run, local_run = wait_for_run(api, on_dask["id"]), wait_for_run(api, local_id)
            retried, ingest_before = failed_run_retried_from_ui(api, deployment["id"], tmp_path, small_corpus, mlflow_url)
        assert dask_run["state"]["type"] == "COMPLETED", dask_run["state"]
        assert local_run["state"]["type"] == "COMPLETED", local_run["state"]

        assert retried["state"]["type"] == "COMPLETED", retried["state"]["message"]
        assert retried["run_count"] == 2
        ingest = tmp_path / "retry" / "store" / "artifacts" / "ingest"
        after = {p.parent.name: p.stat().st_mtime_ns for p in ingest.glob("*/manifest.json")}
        assert len(after) == 6 and all(after[key] == mtime for key, mtime in ingest_before.items())

        ids = selected_ids(tmp_path / "dask")
        assert len(ids) == 150 and ids == selected_ids(tmp_path / "local")

        import mlflow

        client = mlflow.MlflowClient(mlflow_url)
        (experiment,) = [e for e in client.search_experiments() if e.name == "selectflow"]
        parents = client.search_runs([experiment.experiment_id],
                                     f"tags.`prefect.flow_run_id` = '{on_dask['id']}'")
        assert len(parents) == 1 and parents[0].data.metrics["docs_out"] == 150
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
        zip_run = next(c for c in children if c.data.tags["selectflow.stage"] == "select_zip")
        assert client.list_artifacts(zip_run.info.run_id, "manifests")  # artifacts went through the server

    store = ArtifactStore(tmp_path / "dask" / "store")
    lineage = doc_lineage(store, ids[0])
    assert lineage["final"] == "in: selected by select_zip"
    assert lineage["origin"]["source"].startswith(f"file://{small_corpus}")


def failed_run_retried_from_ui(api: str, deployment_id: str, tmp_path: Path, corpus: Path, mlflow_url: str):
    """A run fails (its pool is too small for the ZIP budget); more data arrives; the run is retried the way the UI's
    Retry button does it (state AwaitingRetry). The retry reuses the shards the failed attempt finished."""
    import shutil

    from selectflow.config import load_config

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("part-00.jsonl", "part-01.jsonl"):
        shutil.copy(corpus / name, inbox / name)
    config = load_config(write_config(tmp_path / "retry.yaml", [{"path": str(inbox / "*.jsonl")}], tmp_path / "retry",
                                      tracking={"tracking_uri": mlflow_url})).model_dump(mode="json")
    run = api_call(api, f"/deployments/{deployment_id}/create_flow_run", {"parameters": {"config": config}})
    failed = wait_for_run(api, run["id"])
    assert failed["state"]["type"] == "FAILED" and "the pool needs at least" in failed["state"]["message"]
    ingest = tmp_path / "retry" / "store" / "artifacts" / "ingest"
    before = {p.parent.name: p.stat().st_mtime_ns for p in ingest.glob("*/manifest.json")}
    assert len(before) == 2
    for name in ("part-02.jsonl", "part-03.jsonl", "part-04.jsonl", "part-05.jsonl"):
        shutil.copy(corpus / name, inbox / name)
    api_call(api, f"/flow_runs/{run['id']}/set_state",
             {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True})
    return wait_for_run(api, run["id"]), before


@pytest.mark.slow  # ~70 s on 2 cores
def test_selectflow_serve_takes_triggered_runs(tmp_path, small_corpus):
    config = write_config(tmp_path / "c.yaml", [{"path": str(small_corpus / "part-0[0-3].jsonl")}], tmp_path / "ws")
    with prefect_server(tmp_path / "prefect-home") as api:
        env = clean_env(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "client-home"))
        serve = [str(BIN / "selectflow"), "serve", "--config", str(config), "--name", "nightly", "--cron", "30 2 * * *"]
        with server(serve, env, lambda: api_call(api, "/deployments/name/curate/nightly"), "selectflow serve",
                    cwd=str(REPO)):
            deployment = api_call(api, "/deployments/name/curate/nightly")
            assert deployment["schedules"][0]["schedule"]["cron"] == "30 2 * * *"
            defaults = deployment["parameters"]["config"]
            assert defaults["ingest"]["inputs"][0]["path"].endswith("part-0[0-3].jsonl")
            override = json.loads(json.dumps(defaults))
            override["selection"]["budget"] = 50  # a per-run override, as from the UI form
            run = api_call(api, f"/deployments/{deployment['id']}/create_flow_run",
                           {"parameters": {"config": override}})
            finished = wait_for_run(api, run["id"])
        assert finished["state"]["type"] == "COMPLETED", finished["state"]["message"]
        assert len(selected_ids(tmp_path / "ws")) == 50  # ceil(50 / k3=25) * 25
