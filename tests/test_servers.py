"""`curate` against real servers on loopback: a `prefect server` process and an existing Dask scheduler."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.servers import api_call, clean_env, postgres_bin, postgres_query, postgres_server, prefect_server

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def prefect_api(request, tmp_path):
    """A real `prefect server` on its default SQLite database, and on PostgreSQL (as in infra/)."""
    if request.param == "sqlite":
        with prefect_server(tmp_path / "server-home") as api:
            yield api
        return
    if postgres_bin() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI installs it")
    with postgres_server() as database_url, prefect_server(tmp_path / "server-home", database_url) as api:
        yield api
        assert postgres_query(database_url, "select count(*) from flow_run") >= 5  # the runs went to PostgreSQL


def test_curate_reports_to_a_real_prefect_server(prefect_api, tmp_path, small_corpus):
    config = write_config(tmp_path / "c.yaml", [{"path": str(small_corpus / "part-0[0-3].jsonl")}], tmp_path / "ws")
    env = clean_env(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "client-home"))
    out = subprocess.run([sys.executable, "-m", "selectflow.cli", "run", "--config", str(config), "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{\n"):])
    flow_run = api_call(prefect_api, f"/flow_runs/{summary['run_id']}")
    assert flow_run["state"]["type"] == "COMPLETED"
    subflows = api_call(prefect_api, "/flow_runs/filter",
                        {"flow_runs": {"parent_flow_run_id": {"any_": [summary["run_id"]]}}})
    assert [run["state"]["type"] for run in subflows] == ["COMPLETED"] * 4  # ingest, dedup, cluster, select
    task_runs = api_call(prefect_api, "/task_runs/filter",
                         {"flow_runs": {"id": {"any_": [run["id"] for run in subflows]}}})
    names = [run["name"] for run in task_runs]
    assert sum(name.startswith("ingest file://") for name in names) == 4, names  # one task per input file
    assert all(run["state"]["type"] == "COMPLETED" for run in task_runs)


@pytest.mark.slow  # ~65 s on 2 cores; the default suite must stay under 15 minutes
def test_curate_on_an_existing_dask_scheduler(prefect_harness, tmp_path, small_corpus):
    from distributed import LocalCluster

    from selectflow.flows.curate import curate
    from selectflow.config import load_config

    inputs = [{"path": str(small_corpus / "part-0[0-5].jsonl")}]
    local = curate(load_config(write_config(tmp_path / "local.yaml", inputs, tmp_path / "local")))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = curate(load_config(write_config(
            tmp_path / "remote.yaml", inputs, tmp_path / "remote", dask={"address": cluster.scheduler_address})))
    assert [(r["stage"], r["docs_out"]) for r in remote["stages"]] == [
        (r["stage"], r["docs_out"]) for r in local["stages"]
    ]
    assert output_ids(remote) == output_ids(local)


def output_ids(summary: dict) -> list[str]:
    import pyarrow.parquet as pq

    return sorted(i for f in Path(summary["outputs"]).glob("*.parquet") for i in pq.read_table(f)["doc_id"].to_pylist())
