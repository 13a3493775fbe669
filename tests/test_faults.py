"""Faults: damaged artifacts are found, quarantined and rebuilt; killed, stopped and concurrent runs are recorded for
what they are and resume; a run leaves no pickle in its workspace and publishes copies, not links.

The fast core (a corruption round trip in-process, store verify, the pickle and copy checks, an in-flow budget
failure) shares one small in-process run with tests/test_cli_errors.py (`shared_small_run`); the CLI runs that kill,
stop or race `selectflow run` are marked slow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED_MLFLOW, write_config

CLI = [sys.executable, "-m", "selectflow.cli"]
# A small but complete run: 4 input files (real text, with exact and near duplicates), tfidf clusters, ZIP + random.
SMALL_SELECTION = {"budget": 40, "selectors": [{"method": "zip", "k1": 100, "k2": 20, "k3": 10}, {"method": "random"}]}
SMALL_CLUSTER = {"k": 4, "embedding": {"method": "tfidf", "dim": 32}}
RESULT_STAGES = ("deduped", "select_zip", "select_random")
# Every stage that leaves an artifact in a zip + tfidf run (embedding_basis is the tfidf basis the embeddings share).
DAMAGEABLE = ("ingest", "dedup_exact", "minhash", "dedup_near", "deduped", "embedding_basis", "embed", "cluster",
              "select_zip", "select_random")
KINDS = ("truncate", "overwrite", "delete")
# What ArtifactRef.verify says about each kind of damage.
SAYS = {"truncate": "bytes, the manifest says", "overwrite": "content differs from the manifest's sha256",
        "delete": ": missing"}


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers (tests/test_cli_errors.py imports some of them)


def small_inputs(corpus: Path) -> list[dict]:
    return [{"path": str(corpus / "part-0[0-3].jsonl")}]


def small_config(path: Path, corpus: Path, workspace: Path, **extra) -> Path:
    extra = {"selection": SMALL_SELECTION, "cluster": SMALL_CLUSTER} | extra
    return write_config(path, small_inputs(corpus), workspace, **extra)


def result_ids(workspace: Path, run_id: str) -> dict[str, list[str]]:
    """The published ids of a run: the deduplicated pool (sorted), ZIP's and the random baseline's picks (in order)."""
    ids = {}
    for stage in RESULT_STAGES:
        files = sorted((workspace / "outputs" / run_id / stage).glob("part-*.parquet"))
        ids[stage] = [i for f in files for i in pq.read_table(f, columns=["doc_id"])["doc_id"].to_pylist()]
    ids["deduped"] = sorted(ids["deduped"])
    return ids


def shared_small_run(request, tmp_path_factory, small_corpus) -> dict:
    """One uninterrupted in-process run of the small config, made once per test session (both test files use it):
    its workspace, config, summary and published ids. Prefect's result storage is pointed into the workspace, where
    the CLI puts it (PREFECT_HOME=<workspace>/prefect), so the pickle check sees whatever Prefect would store there.
    Tests may read the workspace, not change its store (copy it first)."""
    cached = getattr(request.session, "_selectflow_small_run", None)
    if cached is not None:
        return cached
    request.getfixturevalue("prefect_harness")
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from selectflow.flows.curate import curate
    from selectflow.config import load_config

    root = tmp_path_factory.mktemp("small-run")
    workspace = root / "ws"
    config = small_config(root / "small.yaml", small_corpus, workspace)
    started = time.time()
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: workspace / "prefect" / "storage"}):
        summary = curate(load_config(config))
    run = {"workspace": workspace, "config": config, "summary": summary, "run_id": summary["run_id"],
           "ids": result_ids(workspace, summary["run_id"]), "seconds": round(time.time() - started, 1)}
    assert run["ids"]["select_zip"] and len(run["ids"]["deduped"]) > len(run["ids"]["select_zip"])
    request.session._selectflow_small_run = run
    return run


@pytest.fixture(scope="module")
def small_run(request, tmp_path_factory, small_corpus, prefect_harness) -> dict:
    return shared_small_run(request, tmp_path_factory, small_corpus)


def cli(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def verify(capsys, workspace: Path, *flags: str) -> tuple[int, str]:
    """`selectflow store verify -w WORKSPACE [flags]`, in this process (a subprocess costs seconds): code, stdout."""
    from selectflow.cli import main

    capsys.readouterr()
    code = main(["store", "verify", "-w", str(workspace), *flags])
    return code, capsys.readouterr().out


def cli_env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


class CliRun:
    """`selectflow run` in its own process group (test_resume.py's run_cli), output to files, not pipes: a run that
    is not read from while the test waits must never block on a full pipe."""

    def __init__(self, config: Path, workspace: Path, logs: Path, name: str = "run"):
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        self.started = time.monotonic()
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--json"],
                                         env=cli_env(workspace / "prefect"), start_new_session=True,
                                         stdout=out, stderr=err, text=True)
        self.pid = self.proc.pid

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def finished(self, timeout: float = 600) -> str:
        assert self.wait(timeout) == 0, self.output()[-4000:]
        return self.output()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_until(self, condition, timeout: float = 400, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the run ended before {what}:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def manifests(workspace: Path, stage: str) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns
            for p in (workspace / "store" / "artifacts" / stage).glob("*/manifest.json")}


def records(workspace: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (workspace / "store" / "runs").glob("*.json")}


def run_refs(workspace: Path, run_id: str, stage: str) -> list:
    """The artifacts a run record lists for a stage."""
    from selectflow.store import ArtifactRef

    return [ArtifactRef(**ref) for ref in records(workspace)[run_id]["stages"].get(stage, [])]


def _is_pickle(head: bytes) -> bool:
    """Pickle protocol 2-5 (b"\\x80" + protocol), raw or base64-encoded (Prefect's result files are base64)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    with contextlib.suppress(ValueError):
        raw = base64.b64decode(head[:8], validate=True)
        return len(raw) >= 2 and raw[0] == 0x80 and 2 <= raw[1] <= 5
    return False


def pickles_under(root: Path) -> list[str]:
    """Every file under `root` that is, or holds, a pickle: raw or base64 pickles, Prefect result files (JSON naming a
    pickle serializer), zip archives with pickled members (torch.save), .npy/.npz that need allow_pickle."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        with open(path, "rb") as handle:
            head = handle.read(64)
        if _is_pickle(head):
            found.append(f"{path}: a pickle")
        elif head.startswith(b"{") and b'"serializer"' in path.read_bytes() and b"pickle" in path.read_bytes():
            found.append(f"{path}: a Prefect result stored with a pickle serializer")
        elif path.suffix == ".npy":
            try:
                np.load(path, allow_pickle=False)
            except ValueError:
                found.append(f"{path}: a .npy array of Python objects (pickled)")
        elif head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith((".pkl", ".pickle")) or _is_pickle(archive.open(member).read(64)):
                        found.append(f"{path}: member {member} is a pickle")
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as arrays:
                    for name in arrays.files:
                        try:
                            arrays[name]
                        except ValueError:
                            found.append(f"{path}: array {name} is pickled")
    return found


def damage(path: Path, kind: str) -> None:
    if kind == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    elif kind == "overwrite":  # same size, a few bytes flipped in the middle
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
        with open(path, "r+b") as handle:
            handle.write(data)
        assert path.stat().st_size == len(data)
    else:
        path.unlink()


def damage_every_stage(store: Path, rotation: int) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """In each stage, damage up to three of its files (over all its artifacts, in name order): the first truncated,
    the next overwritten, the third deleted, the kinds rotated by `rotation` (so a stage of one file gets a different
    kind in each rotation). Returns (stage, key) -> [(file name, kind)]."""
    damaged: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for stage in DAMAGEABLE:
        files = [(folder, entry["name"])
                 for folder in sorted((store / "artifacts" / stage).iterdir())
                 for entry in json.loads((folder / "manifest.json").read_text())["files"]]
        assert files, f"no {stage} artifact to damage"
        for index, (folder, name) in enumerate(files[:3]):
            kind = KINDS[(index + rotation) % 3]
            damage(folder / name, kind)
            damaged.setdefault((stage, folder.name), []).append((name, kind))
    return damaged


def copy_workspace(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".selectflow.lock"))
    return target


# ---------------------------------------------------------------------------------------------------------------
# a. Damaged artifacts: detected on the cache hit, quarantined with a note, rebuilt; the result is unchanged.


@pytest.mark.parametrize("rotation", [0, pytest.param(1, marks=pytest.mark.slow),
                                      pytest.param(2, marks=pytest.mark.slow)])
def test_damaged_artifacts_are_quarantined_and_rebuilt(small_run, tmp_path, small_corpus, rotation, caplog, capsys):
    from selectflow.flows.curate import curate
    from selectflow.config import load_config

    workspace = copy_workspace(small_run["workspace"], tmp_path / "ws")
    store = workspace / "store"
    before = {stage: manifests(workspace, stage) for stage in DAMAGEABLE}
    damaged = damage_every_stage(store, rotation)
    assert {kind for hits in damaged.values() for _, kind in hits} == set(KINDS)

    # `store verify` finds every damaged artifact, names every damaged file, and leaves them in place.
    code, out = verify(capsys, workspace)
    assert code == 1, out
    for (stage, key), hits in damaged.items():
        assert f"DAMAGED {stage}/{key} (left in place)" in out
        for name, kind in hits:
            assert f"{store}/artifacts/{stage}/{key}/{name}" in out
    assert f": {len(damaged)} damaged" in out
    assert not (store / "quarantine").exists()

    config = load_config(small_config(tmp_path / "c.yaml", small_corpus, workspace))
    with caplog.at_level("WARNING", logger="selectflow.store"):
        summary = curate(config)

    # Each damaged artifact was moved to quarantine/<stage>/<key>-<stamp>-<rand>/ with a DAMAGE.json naming the file.
    quarantined = {(folder.parent.name, folder.name.split("-")[0]): folder
                   for folder in (store / "quarantine").glob("*/*")}
    assert set(quarantined) == set(damaged), "exactly the damaged artifacts are quarantined"
    for (stage, key), hits in damaged.items():
        folder = quarantined[(stage, key)]
        note = json.loads((folder / "DAMAGE.json").read_text())
        assert note["artifact"] == f"{stage}/{key}"
        for name, kind in hits:
            said = [p for p in note["problems"] if f"/{stage}/{key}/{name}: " in p and SAYS[kind] in p]
            assert said, (name, kind, note)
            assert (folder / name).exists() == (kind != "delete")  # the damaged files are kept for inspection
        assert (folder / "manifest.json").is_file()
        assert any(f"damaged artifact {stage}/{key} moved to {folder}" in r.getMessage() for r in caplog.records)

    # ... and rebuilt under the same key (the rebuild is deterministic); what was intact was not rebuilt.
    for stage in DAMAGEABLE:
        after = manifests(workspace, stage)
        assert set(after) == set(before[stage]), stage
        for key, mtime in after.items():
            if (stage, key) not in damaged:
                assert mtime == before[stage][key], f"{stage}/{key} was intact but rebuilt"
    assert result_ids(workspace, summary["run_id"]) == small_run["ids"]
    code, out = verify(capsys, workspace)
    assert code == 0 and ": 0 damaged" in out, out


def test_unreadable_manifest_is_quarantined_and_rebuilt(tmp_path):
    """A manifest cut short, or gone: the artifact is moved aside as damaged (not trusted, not crashed on), rebuilt."""
    import pyarrow as pa

    from selectflow.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    built = []

    def write(writer):
        built.append(1)
        writer.write("docs", pa.table({"x": [1, 2, 3]}))

    ref = store.build("s", {"a": 1}, ["in"], "v1", write)
    manifest = Path(ref.path) / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    assert store.build("s", {"a": 1}, ["in"], "v1", write) == ref and len(built) == 2
    manifest.unlink()
    assert store.build("s", {"a": 1}, ["in"], "v1", write) == ref and len(built) == 3
    notes = [json.loads((moved / "DAMAGE.json").read_text())
             for moved in (tmp_path / "store" / "quarantine" / "s").iterdir()]
    assert len(notes) == 2 and all("unreadable manifest" in note["problems"][0] for note in notes)
    assert ref.read("docs").num_rows == 3 and not ref.verify()


# ---------------------------------------------------------------------------------------------------------------
# b. `selectflow store verify`


def test_store_verify_reports_and_quarantines(tmp_path, capsys):
    import pyarrow as pa

    from selectflow.store import ArtifactStore

    workspace = tmp_path / "ws"
    store = ArtifactStore(workspace / "store")
    refs = []
    for key in ("k1", "k2", "k3"):
        with store.writer("stage", key, [], {}, "v1") as writer:
            writer.write("docs", pa.table({"x": list(range(100))}))
            writer.write_json("extra.json", {"key": key})
            refs.append(writer.commit())

    ok = cli("store", "verify", "-w", workspace)  # once as a command, the rest in this process
    assert ok.returncode == 0 and "3 artifacts checked" in ok.stdout and ": 0 damaged" in ok.stdout, ok.stdout

    damage(Path(refs[0].path) / "docs-00000.parquet", "overwrite")
    damage(Path(refs[1].path) / "extra.json", "delete")  # not a table: still listed in the manifest, still checked
    code, out = verify(capsys, workspace)
    assert code == 1, out
    assert f"{refs[0].path}/docs-00000.parquet: content differs from the manifest's sha256" in out
    assert f"{refs[1].path}/extra.json: missing" in out
    assert ": 2 damaged" in out and "stage/k3" not in out
    assert all(Path(ref.path).is_dir() for ref in refs) and not (workspace / "store" / "quarantine").exists()

    code, out = verify(capsys, workspace, "--quarantine")
    assert code == 1 and out.count("moved to ") == 2, out
    assert not Path(refs[0].path).exists() and not Path(refs[1].path).exists() and Path(refs[2].path).is_dir()
    notes = {json.loads(p.read_text())["artifact"]: json.loads(p.read_text())["problems"]
             for p in (workspace / "store" / "quarantine" / "stage").glob("*/DAMAGE.json")}
    assert set(notes) == {"stage/k1", "stage/k2"}
    assert any("docs-00000.parquet" in p for p in notes["stage/k1"])
    assert any("extra.json: missing" in p for p in notes["stage/k2"])

    code, out = verify(capsys, workspace)
    assert code == 0 and "1 artifacts checked" in out and ": 0 damaged" in out, out


# ---------------------------------------------------------------------------------------------------------------
# c. No pickle in the workspace; d. published outputs are copies


def test_no_pickle_in_the_workspace(small_run):
    workspace = small_run["workspace"]
    assert len(list(workspace.rglob("*"))) > 50  # the walk below sees the whole store
    assert pickles_under(workspace) == []
    storage = workspace / "prefect" / "storage"
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*")), list(storage.rglob("*"))


def test_pickle_detector_finds_pickles(tmp_path):
    """The check above can fail: it finds raw, base64 (Prefect's) and zipped (torch.save) pickles."""
    import pickle

    import torch

    (tmp_path / "raw").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tmp_path / "b64").write_bytes(base64.b64encode(pickle.dumps(ValueError("x"), protocol=5)))
    (tmp_path / "result.json").write_text(json.dumps({"metadata": {"serializer": {"type": "pickle"}}, "result": "x"}))
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "fine.npy", np.zeros(3))
    (tmp_path / "fine.json").write_text("{}")
    found = "\n".join(pickles_under(tmp_path))
    for name in ("raw", "b64", "result.json", "state.pt", "objects.npy"):
        assert f"{tmp_path / name}:" in found, name
    assert "fine" not in found


def test_failed_run_pickles_nothing_and_fails_before_selection(prefect_harness, tmp_path, small_corpus):
    """A budget the deduplicated pool cannot meet (though the raw input could) fails in-flow before any selector;
    the failed run is recorded as failed, and, failed or not, leaves no pickle in the workspace (Prefect's result
    storage pointed where the CLI puts it, <workspace>/prefect/storage)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from selectflow.flows.curate import curate
    from selectflow.config import load_config
    from selectflow.select import ZipError

    inputs = [{"path": str(small_corpus / "part-00.jsonl")}, {"path": str(small_corpus / "bad.jsonl")}]
    lines = sum((small_corpus / name).read_bytes().count(b"\n") for name in ("part-00.jsonl", "bad.jsonl"))
    workspace = tmp_path / "ws"
    config = load_config(write_config(
        tmp_path / "c.yaml", inputs, workspace, cluster=SMALL_CLUSTER,
        selection={"budget": lines, "selectors": [{"method": "zip", "k1": 1, "k2": 1, "k3": 1}]}))
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: workspace / "prefect" / "storage"}), \
            pytest.raises(ZipError, match=f"a budget of {lines} docs"):
        curate(config)
    artifacts = {p.name for p in (workspace / "store" / "artifacts").iterdir()}
    assert {"ingest", "dedup_exact", "deduped"} <= artifacts
    assert not artifacts & {"embedding_basis", "embed", "cluster", "select_zip", "select_random"}
    (record,) = records(workspace).values()
    assert record["status"] == "failed" and record["finished_at"]
    assert pickles_under(workspace) == []


def test_outputs_are_copies_not_links(small_run, capsys):
    from selectflow.store import file_sha256

    workspace, run_id = small_run["workspace"], small_run["run_id"]
    checked = 0
    for stage in RESULT_STAGES:
        sources = [Path(f) for ref in run_refs(workspace, run_id, stage) for f in ref.files("docs")]
        outputs = sorted((workspace / "outputs" / run_id / stage).glob("part-*.parquet"))
        assert len(outputs) == len(sources) > 0
        for source, output in zip(sources, outputs):
            assert os.stat(output).st_ino != os.stat(source).st_ino
            assert os.stat(output).st_nlink == 1 and os.stat(source).st_nlink == 1
            assert file_sha256(output) == file_sha256(source)
            checked += 1
    assert checked >= 3

    # Editing an output leaves the store intact.
    output = sorted((workspace / "outputs" / run_id / "select_zip").glob("part-*.parquet"))[0]
    size = output.stat().st_size
    try:
        with open(output, "ab") as handle:
            handle.write(b"garbage appended by a careless consumer")
        code, out = verify(capsys, workspace)
        assert code == 0 and ": 0 damaged" in out, out
    finally:
        with open(output, "r+b") as handle:
            handle.truncate(size)


# ---------------------------------------------------------------------------------------------------------------
# e. A SIGKILLed run reads as interrupted, is recorded so by the next run, and lineage answers from completed runs.


@pytest.mark.slow
def test_killed_run_reads_as_interrupted(small_run, tmp_path, small_corpus):
    import mlflow

    workspace = tmp_path / "ws"
    config = small_config(tmp_path / "c.yaml", small_corpus, workspace)
    victim = CliRun(config, workspace, tmp_path, "victim")
    victim.wait_until(lambda: manifests(workspace, "ingest"), what="the first ingest artifact")
    victim.kill()
    ((killed_id, killed),) = records(workspace).items()
    assert killed["status"] == "running" and killed["finished_at"] is None  # a SIGKILLed process writes nothing
    assert killed["pid"] == victim.pid and killed["mlflow_run_id"]

    graph = cli("lineage", "--run", killed_id[:8], "-w", workspace)
    assert graph.returncode == 0, graph.stderr
    assert graph.stdout.startswith(f"run {killed_id} (interrupted, started ")
    assert f"note: run {killed_id} is interrupted: its decisions may be incomplete" in graph.stdout
    latest = cli("lineage", "-w", workspace, "--json")
    assert latest.returncode == 0, latest.stderr
    assert json.loads(latest.stdout)["status"] == "interrupted"
    assert "no completed run in this workspace" in json.loads(latest.stdout)["note"]

    CliRun(config, workspace, tmp_path, "rerun").finished()
    after = records(workspace)
    assert after[killed_id]["status"] == "interrupted" and after[killed_id]["finished_at"]
    (completed_id,) = set(after) - {killed_id}
    assert after[completed_id]["status"] == "completed" and after[completed_id]["finished_at"]
    client = mlflow.MlflowClient(SHARED_MLFLOW)
    assert client.get_run(killed["mlflow_run_id"]).info.status == "KILLED"
    assert client.get_run(after[completed_id]["mlflow_run_id"]).info.status == "FINISHED"
    assert result_ids(workspace, completed_id) == small_run["ids"]

    # A later run killed as soon as it is recorded: lineage still answers from the latest completed run, and says so.
    third = CliRun(config, workspace, tmp_path, "third")
    third.wait_until(lambda: len(records(workspace)) == 3, what="the third run's record")
    third.kill()
    (third_id,) = set(records(workspace)) - {killed_id, completed_id}
    doc = small_run["ids"]["select_zip"][0]
    lineage = cli("lineage", doc, "-w", workspace)
    assert lineage.returncode == 0, lineage.stderr
    assert lineage.stdout.startswith(f"document {doc} in run {completed_id}")
    assert (f"note:   showing the latest completed run, {completed_id}; the latest run, {third_id}, is interrupted"
            in lineage.stdout)
    assert "final: in: selected by select_zip" in lineage.stdout
    graph = cli("lineage", "-w", workspace)
    assert graph.stdout.startswith(f"run {completed_id} (completed, started ") and ", finished " in graph.stdout


# ---------------------------------------------------------------------------------------------------------------
# f. SIGTERM: a clean stop within seconds, nothing left running, recorded as interrupted; a re-run resumes.


def _prefect_flow_run_state(workspace: Path, flow_run_id: str) -> tuple[str, str] | None:
    with contextlib.closing(sqlite3.connect(workspace / "prefect" / "prefect.db")) as db:
        return db.execute("SELECT state_type, state_name FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()


@pytest.mark.slow
def test_sigterm_stops_the_run_cleanly_and_it_resumes(small_run, tmp_path, small_corpus):
    import mlflow

    workspace = tmp_path / "ws"
    config = small_config(tmp_path / "c.yaml", small_corpus, workspace)
    victim = CliRun(config, workspace, tmp_path, "victim")
    victim.wait_until(lambda: manifests(workspace, "ingest"), what="the first ingest artifact")
    assert len(group_members(victim.pid)) >= 2  # the CLI and its temporary Prefect server, at least
    signalled = time.monotonic()
    os.kill(victim.pid, signal.SIGTERM)
    # When the CLI says it stopped, the run has unwound: what is left is the process's own exit (CPU time sampled).
    said, cpu_said, cpu_last, process = None, None, None, psutil.Process(victim.pid)
    while victim.proc.poll() is None and time.monotonic() - signalled < 120:
        with contextlib.suppress(psutil.Error):
            cpu_last = sum(process.cpu_times()[:2])
        if said is None and "the run is recorded as interrupted" in victim.err.read_text():
            said, cpu_said = time.monotonic() - signalled, cpu_last
        time.sleep(0.05)
    code = victim.wait(timeout=1)
    took = time.monotonic() - signalled
    output = victim.output()
    assert "the run is recorded as interrupted" in victim.err.read_text(), output[-4000:]
    assert took < 15, (f"SIGTERM took {took:.1f}s to end the process: the run unwound in {said and round(said, 1)}s; "
                       f"the exit after that took {cpu_said and cpu_last and round(cpu_last - cpu_said, 1)} CPU s")
    assert code == 143, output[-4000:]
    deadline = time.monotonic() + 3  # SIGKILLed children may take a moment to go
    while (left := group_members(victim.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [(p.pid, p.cmdline()) for p in left]

    ((run_id, record),) = records(workspace).items()
    assert record["status"] == "interrupted" and record["finished_at"]
    assert mlflow.MlflowClient(SHARED_MLFLOW).get_run(record["mlflow_run_id"]).info.status == "KILLED"
    assert _prefect_flow_run_state(workspace, record["flow_run_id"]) == ("CRASHED", "Crashed")
    assert not (workspace / "outputs").exists()
    done = manifests(workspace, "ingest")

    CliRun(config, workspace, tmp_path, "rerun").finished()
    (completed_id,) = set(records(workspace)) - {run_id}
    assert records(workspace)[completed_id]["status"] == "completed"
    assert result_ids(workspace, completed_id) == small_run["ids"]
    assert {k: v for k, v in manifests(workspace, "ingest").items() if k in done} == done  # resumed, not redone
    assert pickles_under(workspace) == []  # the CLI layout: Prefect's home (and result storage) in the workspace


# ---------------------------------------------------------------------------------------------------------------
# g. Two runs at once on one fresh workspace: one runs, the other is turned away at once.


@pytest.mark.slow
def test_second_run_on_a_busy_workspace_fails_at_once(small_run, tmp_path, small_corpus):
    workspace = tmp_path / "ws"
    config = small_config(tmp_path / "c.yaml", small_corpus, workspace)
    runs = [CliRun(config, workspace, tmp_path, "first"), CliRun(config, workspace, tmp_path, "second")]
    deadline = time.monotonic() + 90
    while all(run.proc.poll() is None for run in runs):
        assert time.monotonic() < deadline, "neither run was turned away"
        time.sleep(0.05)
    (loser,) = [run for run in runs if run.proc.poll() is not None]
    (winner,) = [run for run in runs if run is not loser]
    assert winner.proc.poll() is None, "the second run must fail while the first still runs"
    assert loser.proc.returncode == 2, loser.output()
    lines = loser.err.read_text().strip().splitlines()
    assert len(lines) == 1 and loser.out.read_text() == "", loser.output()
    assert lines[0].startswith(f"selectflow: error: workspace {workspace} is in use by another selectflow run "
                               f"(pid {winner.pid} on "), lines
    assert time.monotonic() - loser.started < 60
    winner.finished()
    for run in runs:
        text = run.output()
        assert "OperationalError" not in text and "alembic" not in text.lower(), text[-4000:]
    ((run_id, record),) = records(workspace).items()
    assert record["status"] == "completed" and record["pid"] == winner.pid
    assert result_ids(workspace, run_id) == small_run["ids"]
    # c. in the CLI's own layout (Prefect's home in the workspace): no pickle, no stored Prefect results at all.
    assert pickles_under(workspace) == []
    storage = workspace / "prefect" / "storage"
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*")), list(storage.rglob("*"))
