"""Kill `selectflow run` mid-ingest with SIGKILL, re-run: the result equals an uninterrupted run's."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import write_config

CLI = [sys.executable, "-m", "selectflow.cli"]


def run_cli(config: Path, workspace: Path, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(workspace / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.Popen([*CLI, "run", "--config", str(config), "--json"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finished(proc: subprocess.Popen, timeout=300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def result_tables(workspace: Path) -> dict:
    (run_dir,) = (workspace / "outputs").iterdir()
    docs = [r for f in sorted((run_dir / "deduped").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    decisions = {}
    for stage in ("dedup_exact", "dedup_near"):
        (folder,) = (workspace / "store" / "artifacts" / stage).iterdir()
        decisions[stage] = sorted(
            (r for f in sorted(folder.glob("decisions-*.parquet")) for r in pq.read_table(f).to_pylist()),
            key=lambda r: r["doc_id"],
        )
    return {"docs": sorted(docs, key=lambda r: r["doc_id"]), **decisions}


def test_kill_mid_run_then_resume_loses_nothing(tmp_path, small_corpus):
    inputs = [{"path": str(small_corpus / "part-*.jsonl")}]
    reference_ws, killed_ws = tmp_path / "reference", tmp_path / "killed"
    reference_cfg = write_config(tmp_path / "ref.yaml", inputs, reference_ws)
    killed_cfg = write_config(tmp_path / "killed.yaml", inputs, killed_ws)
    reference = run_cli(reference_cfg, reference_ws)

    victim = run_cli(killed_cfg, killed_ws)
    ingest_dir = killed_ws / "store" / "artifacts" / "ingest"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(ingest_dir.glob("*/manifest.json"))) < 3:
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done_before_kill = {p.parent.name: p.stat().st_mtime_ns for p in ingest_dir.glob("*/manifest.json")}
    assert 3 <= len(done_before_kill) < 12, "the kill must land mid-ingest"
    assert not (killed_ws / "store" / "artifacts" / "deduped").exists()

    finished(run_cli(killed_cfg, killed_ws))
    finished(reference)
    # Shards finished before the kill were reused, not recomputed; the rest were completed exactly once.
    for key, mtime in done_before_kill.items():
        assert (ingest_dir / key / "manifest.json").stat().st_mtime_ns == mtime
    assert len(list(ingest_dir.glob("*/manifest.json"))) == 12
    resumed, expected = result_tables(killed_ws), result_tables(reference_ws)
    assert resumed == expected
    assert len({d["doc_id"] for d in resumed["docs"]}) == len(resumed["docs"])

    # The CLI answers lineage questions about the resumed run.
    dropped = next(d for d in resumed["dedup_exact"] if d["decision"] == "dropped")
    lineage = subprocess.run([*CLI, "lineage", dropped["doc_id"], "--workspace", str(killed_ws)],
                             capture_output=True, text=True, check=True).stdout
    assert f"exact duplicate of {dropped['ref_doc_id']}" in lineage and "final: out: dropped at dedup_exact" in lineage
    assert ".jsonl line " in lineage
    graph = subprocess.run([*CLI, "lineage", "--workspace", str(killed_ws)],
                           capture_output=True, text=True, check=True).stdout
    assert "ingest: 12 artifact(s)" in graph and "deduped: " in graph
    missing = subprocess.run([*CLI, "lineage", "--run", "nope", "--workspace", str(killed_ws)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no run with id starting 'nope'" in missing.stderr
