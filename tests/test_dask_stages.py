"""Dedup on a DaskTaskRunner with one thread per worker, at any shard count: the tasks that submit Dask work from a
worker (exact and near dedup) must not deadlock, and must decide exactly what the in-process path decides. And every
listener of a LocalCluster from `dask_runner` is on its configured host (loopback by default)."""

import ipaddress
import json
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from prefect import flow, task

from selectflow.flows.dedup import DedupResult, deduplicate
from selectflow.flows.runner import dask_runner
from selectflow.config import DaskConfig, DedupConfig, IngestConfig, InputSpec
from selectflow.dedup.exact import KEY_COLUMNS, exact_duplicates
from selectflow.ingest import plan_inputs
from selectflow.stages import dedup as stages
from selectflow.stages.ingest import ingest_file
from selectflow.store import ArtifactRef, ArtifactStore, Shard
from tests.conftest import sample_records

DOCS_PER_FILE = 30
NEAR_SUFFIX = " Or so they say."  # a few new word shingles: estimated Jaccard stays far above the 0.7 threshold


def watchdog(seconds: float):
    """Fail a hung test instead of hanging the session. "signal" raises in the main thread, which waits on the flow's
    tasks in an interruptible wait; the cluster's teardown then stops the stuck workers and the session goes on.
    func_only: the Prefect server's start-up (session fixture, 30-50 s here) does not count."""
    return pytest.mark.timeout(seconds, method="signal", func_only=True)


def dedup_case(shards: int, processes: bool, seconds: float, slow: bool = False):
    marks = [watchdog(seconds)] + ([pytest.mark.slow] if slow else [])
    return pytest.param(shards, processes, marks=marks, id=f"{shards}-shards-{'processes' if processes else 'threads'}")


# Watchdogs: the time measured on this 2-core machine, at load ~5 and ~10 (other test runs), was 26-56 s (1 shard,
# processes), 5 s (1, threads), 49-87 s (20, processes), 27-50 s (20, threads), 91-277 s (62, processes), 68-102 s
# (62, threads), 296-424 s (200): nearly all Prefect's per-task submit. A watchdog under the 600 s global timeout
# cannot give the 200-shard cases 3x. Exact dedup used to deadlock from 62 shards on (the groupby becomes a p2p shuffle
# whose tasks wait for the worker that the calling task blocks); near dedup hung at random.
DEDUP_CASES = [
    dedup_case(1, True, 240, slow=True),
    dedup_case(1, False, 60),
    dedup_case(20, True, 300, slow=True),
    dedup_case(20, False, 240, slow=True),
    dedup_case(62, True, 420),
    dedup_case(62, False, 360, slow=True),
    dedup_case(200, True, 560, slow=True),
    dedup_case(200, False, 560, slow=True),
]


@pytest.fixture(scope="module")
def pool() -> list[str]:
    """Distinct short fortunes of 12-80 words: real text, long enough that a near copy stays a near duplicate."""
    texts = dict.fromkeys(r["text"] for r in sample_records("fortunes.jsonl.zst") if 12 <= len(r["text"].split()) <= 80)
    return list(texts)


def write_corpus(root: Path, n_files: int, pool: list[str]) -> None:
    """`n_files` JSONL files of DOCS_PER_FILE fortunes; each file also holds an exact copy of the previous file's first
    document and a near copy of the next file's second one (with one file, of its own)."""
    fresh = DOCS_PER_FILE - 2
    root.mkdir()
    for index in range(n_files):
        texts = [pool[(index * fresh + k) % len(pool)] for k in range(fresh)]  # wraps at 200 files: more exact copies
        texts.append(pool[((index - 1) % n_files) * fresh % len(pool)])
        texts.append(pool[(((index + 1) % n_files) * fresh + 1) % len(pool)] + NEAR_SUFFIX)
        lines = [json.dumps({"text": text}) + "\n" for text in texts]
        (root / f"part-{index:03d}.jsonl").write_text("".join(lines), encoding="utf-8")


def ingested_shards(corpus: Path, workspace: Path) -> list[Shard]:
    """One shard per input file. Ingested in-process: ingest submits no Dask work, so it is not what is tested here."""
    cfg = IngestConfig(inputs=[InputSpec(path=str(corpus / "*.jsonl"))])
    store = ArtifactStore(workspace)
    return [shard for file in plan_inputs(cfg) for shard in ingest_file(store, file, cfg).shards("docs")]


def dedup_on_dask(workspace: Path, shards: list[Shard], cfg: DedupConfig, processes: bool) -> DedupResult:
    runner_cfg = DaskConfig(n_workers=2, threads_per_worker=1, processes=processes)
    with dask_runner(runner_cfg) as runner:
        return deduplicate.with_options(task_runner=runner)(str(workspace), shards, cfg, retries=0)


def dedup_in_process(workspace: Path, shards: list[Shard], cfg: DedupConfig) -> tuple[ArtifactRef, ArtifactRef]:
    """Exact and near decisions with no Dask client: the reference the cluster's must equal."""
    store = ArtifactStore(workspace)
    exact = stages.exact_dedup(store, shards, cfg.exact, client=None)
    signatures = [stages.minhash_shard(store, shard, cfg.near) for shard in shards]
    return exact, stages.near_dedup(store, signatures, exact, cfg.near, client=None)


def dropped(decisions: ArtifactRef) -> dict[str, str]:
    """Dropped doc_id -> the doc_id it duplicates."""
    table = decisions.read("decisions")
    table = table.filter(pc.equal(table["decision"], "dropped"))
    return dict(zip(table["doc_id"].to_pylist(), table["ref_doc_id"].to_pylist()))


@pytest.mark.parametrize(("n_shards", "processes"), DEDUP_CASES)
def test_dedup_on_one_thread_per_worker_finishes_and_matches_in_process(
        prefect_harness, tmp_path, pool, n_shards, processes):
    write_corpus(tmp_path / "corpus", n_shards, pool)
    shards = ingested_shards(tmp_path / "corpus", tmp_path / "ingest")
    assert len(shards) == n_shards
    cfg = DedupConfig()

    result = dedup_on_dask(tmp_path / "dask", shards, cfg, processes)
    keys = pa.concat_tables(pq.read_table(shard.path, columns=KEY_COLUMNS) for shard in shards)
    expected_exact = exact_duplicates(keys)
    assert dropped(result.exact) == dict(zip(*expected_exact.to_pydict().values()))
    exact, near = dedup_in_process(tmp_path / "reference", shards, cfg)
    assert result.exact.read("decisions").to_pylist() == exact.read("decisions").to_pylist()
    assert result.near.read("decisions").to_pylist() == near.read("decisions").to_pylist()
    assert len(dropped(exact)) >= n_shards and len(dropped(near)) >= 1  # both stages had something to drop
    kept = sum(ref.rows("docs") for ref in result.deduped)
    assert kept == keys.num_rows - len(dropped(exact)) - len(dropped(near))


def family_listeners() -> set[tuple[str, int]]:
    """(ip, port) of every listening socket of this process and of its children, recursively (worker processes)."""
    me = psutil.Process()
    pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
    return {(conn.laddr.ip, conn.laddr.port) for conn in psutil.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN and conn.pid in pids}


def cluster_ports(address: str) -> set[int]:
    """The ports the scheduler knows the cluster listens on: its own, each worker's and nanny's, and their HTTP ones."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        info = client.scheduler_info(n_workers=-1)
    workers = info["workers"].values()
    urls = [info["address"], *info["workers"], *(worker.get("nanny") for worker in workers)]
    services = [info["services"], *(worker["services"] for worker in workers)]
    return ({int(url.rsplit(":", 1)[1]) for url in urls if url and url.startswith("tcp://")}
            | {port for service in services for port in service.values()})


def assert_cluster_on(host: str, listeners: set[tuple[str, int]], ports: set[int]) -> None:
    public = sorted(item for item in listeners if not ipaddress.ip_address(item[0]).is_loopback)
    assert not public, f"listening beyond loopback: {public}"
    on_port = {port: ip for ip, port in listeners if port in ports}
    assert set(on_port) == ports, f"cluster ports not listening: {sorted(ports - set(on_port))}"
    assert set(on_port.values()) == {host}, f"cluster listeners off {host}: {on_port}"


@task
def double(value: int) -> int:
    return 2 * value


@flow
def listeners_while_running() -> set[tuple[str, int]]:
    assert double.submit(21).result() == 42  # a task on the cluster: its workers talk to the Prefect API
    return family_listeners()


@watchdog(180)
@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_cluster_listens_on_loopback_only(prefect_harness, processes):
    cfg = DaskConfig(n_workers=2, threads_per_worker=1, processes=processes)
    assert cfg.host == "127.0.0.1"
    with dask_runner(cfg) as runner:
        ports = cluster_ports(runner.address)
        assert_cluster_on(cfg.host, family_listeners(), ports)
        assert_cluster_on(cfg.host, listeners_while_running.with_options(task_runner=runner)(), ports)


@watchdog(180)
@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_cluster_binds_the_configured_host(prefect_harness, processes):
    # Every 127.x.y.z is loopback on Linux: a host other than the default proves it is honoured, not hard-coded.
    cfg = DaskConfig(n_workers=2, threads_per_worker=1, processes=processes, host="127.0.0.2")
    with dask_runner(cfg) as runner:
        assert_cluster_on("127.0.0.2", family_listeners(), cluster_ports(runner.address))


@task
def on_a_dask_worker() -> bool:
    from distributed import get_worker

    try:
        return get_worker() is not None
    except ValueError:  # not on a worker: a thread of the flow's own process
        return False


@flow
def nested() -> bool:
    return on_a_dask_worker.submit().result()


@flow
def outer() -> tuple[bool, bool, bool]:
    from selectflow.tasks.common import on_this_flows_runner

    # The caller's own task first: its runner then holds live futures, which a nested flow must not be handed.
    return on_a_dask_worker.submit().result(), nested(), on_this_flows_runner(nested)()


@watchdog(180)
def test_a_nested_flow_runs_its_tasks_where_its_caller_does(prefect_harness):
    # The mixture search is such a flow, inside the select flow (after the influence fit or the n-gram counts): its
    # probes must run on the workers.
    with dask_runner(DaskConfig(n_workers=1, threads_per_worker=1, processes=False)) as runner:
        caller, plain, inherited = outer.with_options(task_runner=runner)()
    assert (caller, plain, inherited) == (True, False, True)
