"""The CLI's errors: one line, exit 2, in seconds, creating nothing (a traceback only with --debug); lineage's answers
about documents a run never read; output cut short by a closed pipe."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from tests.conftest import SAMPLE, write_config
from tests.test_faults import (
    CliRun,
    CLI,
    cli,
    cli_env,
    pickles_under,
    records,
    run_refs,
    shared_small_run,
    small_config,
)

QUICK_S = 20  # an error found before anything starts: well under this even on a loaded 2-core machine


@pytest.fixture(scope="module")
def small_run(request, tmp_path_factory, small_corpus, prefect_harness) -> dict:
    """One finished small run (probes off, selector zip), shared with tests/test_faults.py."""
    return shared_small_run(request, tmp_path_factory, small_corpus)


def run_fails(tmp_path: Path, config: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`selectflow run` expected to stop in preflight: its result and how long it took. Prefect's home is outside the
    workspace so that 'nothing created' covers the workspace as a whole."""
    started = time.monotonic()
    result = cli("run", "--config", config, *args, env=cli_env(tmp_path / "prefect-home"))
    return result, time.monotonic() - started


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selectflow: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_nothing_started(tmp_path: Path, workspace: Path) -> None:
    assert not workspace.exists(), sorted(workspace.rglob("*"))
    assert not (tmp_path / "prefect-home").exists()


# ---------------------------------------------------------------------------------------------------------------
# Preflight: errors before anything starts


@pytest.mark.parametrize("how", ["config", "--input"])
def test_missing_input_path(tmp_path, how):
    workspace, missing = tmp_path / "ws", tmp_path / "nowhere" / "corpus.jsonl"
    if how == "config":
        config = write_config(tmp_path / "c.yaml", [{"path": str(missing)}], workspace)
        result, took = run_fails(tmp_path, config)
    else:
        config = write_config(tmp_path / "c.yaml", [{"path": str(SAMPLE / "prose.jsonl.zst")}], workspace)
        result, took = run_fails(tmp_path, config, "--input", str(missing))
    assert_one_line_error(result, str(missing))
    assert took < QUICK_S, took
    assert_nothing_started(tmp_path, workspace)


def test_debug_shows_the_traceback(tmp_path):
    workspace, missing = tmp_path / "ws", tmp_path / "nowhere.jsonl"
    config = write_config(tmp_path / "c.yaml", [{"path": str(missing)}], workspace)
    result, _ = run_fails(tmp_path, config, "--debug")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("selectflow: error: ")
    assert str(missing) in result.stderr
    assert_nothing_started(tmp_path, workspace)


def test_budget_larger_than_the_inputs(tmp_path, small_corpus):
    workspace = tmp_path / "ws"
    config = small_config(tmp_path / "c.yaml", small_corpus, workspace)
    records_in = sum(p.read_bytes().count(b"\n") for p in sorted(small_corpus.glob("part-0[0-3].jsonl")))
    result, took = run_fails(tmp_path, config, "--set", "selection.budget=100000")
    line = assert_one_line_error(result, "budget of 100000 docs", f"the inputs hold at most {records_in} records")
    assert "zip" in line
    assert took < QUICK_S, took
    assert_nothing_started(tmp_path, workspace)


@pytest.mark.parametrize("setting", [
    ("influence.model_path", ["selection.selectors=[{method: quad}]"]),
    ("cluster.embedding.model_path", ["cluster.embedding.method=minilm"]),
], ids=["influence", "embedding"])
def test_missing_model_path(tmp_path, small_corpus, setting):
    name, sets = setting
    workspace, missing = tmp_path / "ws", tmp_path / "no-such-model"
    config = small_config(tmp_path / "c.yaml", small_corpus, workspace,
                          reference=[{"path": str(SAMPLE / "reference.jsonl.zst")}])
    args = [arg for value in [*sets, f"{name}={missing}"] for arg in ("--set", value)]
    result, took = run_fails(tmp_path, config, *args)
    assert_one_line_error(result, f"{name}: {missing} does not exist")
    assert took < QUICK_S, took
    assert_nothing_started(tmp_path, workspace)


def test_commands_on_a_missing_workspace_create_nothing(tmp_path):
    missing = tmp_path / "no-workspace"
    for command in (["lineage"], ["lineage", "somedoc"], ["store", "verify"]):
        assert_one_line_error(cli(*command, "-w", missing), f"{missing} is not a selectflow workspace")
        assert not missing.exists(), command
    root = Path("/nonexistent")
    if not root.exists():
        assert_one_line_error(cli("lineage", "-w", root), "/nonexistent is not a selectflow workspace")
        assert not root.exists()


# ---------------------------------------------------------------------------------------------------------------
# Lineage questions about a finished run


def test_unknown_document_id(small_run):
    result = cli("lineage", "0123456789abcdef0000", "-w", small_run["workspace"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"selectflow: unknown document id '0123456789abcdef0000': not in run {small_run['run_id']}'s input "
        "(give a doc_id from its outputs, or FILE:LINE of an input record)")


def test_file_line_not_in_the_input(small_run, small_corpus):
    source = small_corpus / "part-00.jsonl"
    lines = source.read_bytes().count(b"\n")
    workspace = small_run["workspace"]
    beyond = cli("lineage", f"{source}:{lines + 1}", "-w", workspace)
    assert beyond.returncode == 1 and beyond.stdout == "", beyond.stdout + beyond.stderr
    assert (f"record {source.as_uri()}:{lines + 1} is not in run {small_run['run_id']}'s input "
            "(no record at that line)") in beyond.stderr
    assert "Traceback" not in beyond.stderr

    other = cli("lineage", f"{small_corpus / 'part-11.jsonl'}:1", "-w", workspace)  # a file the run did not read
    assert other.returncode == 1 and "is not in run" in other.stderr and "not one of its inputs" in other.stderr


@pytest.mark.parametrize("stage", ["dedup_exact", "dedup_near"])
def test_duplicate_names_the_kept_copy(small_run, stage):
    workspace, run_id = small_run["workspace"], small_run["run_id"]
    (decided,) = run_refs(workspace, run_id, stage)
    decisions = decided.read("decisions")
    dropped = decisions.filter(pc.equal(decisions["decision"], "dropped")).to_pylist()
    assert dropped, f"the small corpus has no {stage} duplicate"
    duplicate = dropped[0]
    docs = [ref.read("docs", columns=["doc_id", "source", "line"]) for ref in run_refs(workspace, run_id, "ingest")]
    origin = {row["doc_id"]: row for table in docs for row in table.to_pylist()}
    keeper = origin[duplicate["ref_doc_id"]]
    assert keeper["source"].startswith("file:///")

    if stage == "dedup_exact":  # by doc_id, as text
        result = cli("lineage", duplicate["doc_id"], "-w", workspace)
        assert result.returncode == 0, result.stderr
        assert f"kept copy at {keeper['source']}:{keeper['line']}" in result.stdout, result.stdout
        assert f"final: out: dropped at {stage}" in result.stdout
    else:  # by FILE:LINE of the input, as JSON
        record = origin[duplicate["doc_id"]]
        result = cli("lineage", f"{record['source'].removeprefix('file://')}:{record['line']}", "-w", workspace,
                     "--json")
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["doc_id"] == duplicate["doc_id"] and answer["final"] == f"out: dropped at {stage}"
        assert answer["decisions"][-1]["ref_origin"] == f"{keeper['source']}:{keeper['line']}", answer


@pytest.mark.parametrize("what,reader", [("graph", "head -c 10"), ("graph", "true"), ("doc", "true")])
def test_output_into_a_closed_pipe(small_run, what, reader):
    """`selectflow lineage ... | head -c 10`: no traceback, no BrokenPipeError. `| true` closes the pipe before
    anything is written (head may read everything before the writer notices), so the write always fails."""
    target = [] if what == "graph" else [small_run["ids"]["select_zip"][0]]
    command = shlex.join([*CLI, "lineage", *target, "--run", small_run["run_id"][:8], "--json", "-w",
                          str(small_run["workspace"])])
    result = subprocess.run(["bash", "-c", f"{command} | {reader}; echo \"status=${{PIPESTATUS[0]}}\" >&2"],
                            capture_output=True, text=True, timeout=120)
    *errors, status = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert errors == [] and status in ("status=0", "status=141"), result.stderr
    assert len(result.stdout) == (10 if reader.startswith("head") else 0)


def test_lineage_of_a_completed_run_has_no_note(small_run):
    graph = cli("lineage", "-w", small_run["workspace"])
    assert graph.returncode == 0, graph.stderr
    first, *rest = graph.stdout.splitlines()
    assert first.startswith(f"run {small_run['run_id']} (completed, started ") and ", finished " in first
    assert not any(line.startswith("note:") for line in rest)
    record = records(small_run["workspace"])[small_run["run_id"]]
    assert record["status"] == "completed" and record["finished_at"]


def test_store_verify_on_a_finished_run(small_run):
    result = cli("store", "verify", "-w", small_run["workspace"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 damaged" in result.stdout and "DAMAGED" not in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# An impossible budget found only once deduplicated: fails in-flow, one line, before any selector


@pytest.mark.slow
def test_budget_the_deduplicated_pool_cannot_meet(tmp_path, small_corpus):
    workspace = tmp_path / "ws"
    inputs = [{"path": str(small_corpus / "part-00.jsonl")}, {"path": str(small_corpus / "bad.jsonl")}]
    lines = sum((small_corpus / name).read_bytes().count(b"\n") for name in ("part-00.jsonl", "bad.jsonl"))
    config = write_config(tmp_path / "c.yaml", inputs, workspace,
                          selection={"budget": lines, "selectors": [{"method": "zip", "k1": 1, "k2": 1, "k3": 1}]})
    run = CliRun(config, workspace, tmp_path)
    assert run.wait() == 2, run.output()[-4000:]
    err = run.err.read_text()
    assert "Traceback" not in run.output()
    said = [line for line in err.splitlines() if line.startswith("selectflow:")]  # among Prefect's log lines
    assert len(said) == 1 and said[0].startswith(f"selectflow: error: zip: a budget of {lines} docs needs "), err
    artifacts = {p.name for p in (workspace / "store" / "artifacts").iterdir()}
    assert "deduped" in artifacts and not artifacts & {"embed", "cluster", "select_zip", "select_random"}
    (record,) = records(workspace).values()
    assert record["status"] == "failed" and record["finished_at"]
    assert pickles_under(workspace) == []  # Prefect's home is in the workspace: a failed flow's result too
