"""`curate` against real servers on loopback: a `prefect server` process and an existing Dask scheduler."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_config

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server exited: {proc.stdout.read()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server we started, by its process group; never leave it running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "server-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_healthy(f"{api}/health", proc)
        yield api
    finally:
        stop(proc)


def test_curate_reports_to_a_real_prefect_server(prefect_server, tmp_path, small_corpus):
    config = write_config(tmp_path / "c.yaml", [{"path": str(small_corpus / "part-0[0-3].jsonl")}], tmp_path / "ws")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path / "client-home")}
    out = subprocess.run([sys.executable, "-m", "selectflow.cli", "run", "--config", str(config), "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{\n"):])
    flow_run = api_call(prefect_server, f"/flow_runs/{summary['run_id']}")
    assert flow_run["state"]["type"] == "COMPLETED"
    subflows = api_call(prefect_server, "/flow_runs/filter",
                        {"flow_runs": {"parent_flow_run_id": {"any_": [summary["run_id"]]}}})
    assert [run["state"]["type"] for run in subflows] == ["COMPLETED"] * 3  # ingest, dedup, select
    task_runs = api_call(prefect_server, "/task_runs/filter",
                         {"flow_runs": {"id": {"any_": [run["id"] for run in subflows]}}})
    names = [run["name"] for run in task_runs]
    assert sum(name.startswith("ingest file://") for name in names) == 4, names  # one task per input file
    assert all(run["state"]["type"] == "COMPLETED" for run in task_runs)


def api_call(api: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_curate_on_an_existing_dask_scheduler(prefect_harness, tmp_path, small_corpus):
    from distributed import LocalCluster

    from flows.curate import curate
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
