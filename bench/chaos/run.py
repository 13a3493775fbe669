"""Chaos bench: what survives kill -9 at many points of a full `selectflow run`, repeated small runs (no hang), and
corrupted artifacts. See bench/chaos/README.md for the commands and what each part checks.

Every run is a real `selectflow run --config ... --json` subprocess in its own process group (start_new_session), on
its own workspace with its own PREFECT_HOME (as tests/test_resume.py does). The code under test is a snapshot of the
repository's selectflow/ taken when the bench starts (`--code snapshot`, the default; it is put
first on PYTHONPATH and is the CLI's working directory), so edits made to the working tree while the bench runs cannot
change cache keys half-way; `--code live` runs the working tree as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "selectflow" / "data" / "sample"
PY = sys.executable
POLL_S = 0.005
sys.path.insert(0, str(REPO))
from tests.conftest import build_tiny_lm, sample_records, write_small_corpus  # noqa: E402  (the tests' data)

PROJECTION_DIM = 0  # --projection-dim


# ----------------------------------------------------------------------------------------------------------- data


def build_data(data: Path) -> None:
    """Corpus (like tests/conftest.py's small_corpus, in 6 JSONL files of 200 records, plus one file of bad
    records), the repeat corpora (1, 20, 62 files of 30 fortunes each, as tests/test_dask_stages.py writes them) and a
    tiny Llama + 512-token BPE tokenizer (as conftest's tiny_lm) for influence and probes."""
    done = data / ".done"
    if done.is_file():
        return
    if data.exists():
        shutil.rmtree(data)
    (data / "corpus").mkdir(parents=True)
    write_small_corpus(data / "corpus", files=6)
    # Repeat corpora: tests/test_dask_stages.py's write_corpus (exact and near copies across neighbouring files).
    pool = list(dict.fromkeys(r["text"] for r in sample_records("fortunes.jsonl.zst")
                              if 12 <= len(r["text"].split()) <= 80))
    for n_files in (1, 20, 62):
        root = data / f"repeat-{n_files}"
        root.mkdir()
        fresh = 28
        for index in range(n_files):
            texts = [pool[(index * fresh + k) % len(pool)] for k in range(fresh)]
            texts.append(pool[((index - 1) % n_files) * fresh % len(pool)])
            texts.append(pool[(((index + 1) % n_files) * fresh + 1) % len(pool)] + " Or so they say.")
            (root / f"part-{index:03d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    build_tiny_lm(data / "tiny-lm")
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def full_config(data: Path, workspace: Path) -> dict:
    """Every stage on: ingest (6 files of 200 documents + a file of bad records, one shard each), exact + near dedup, tfidf clusters, influence on
    the tiny LM, ZIP (12 rounds of k3=10) + QUAD + the random baseline, probes of 4 subsets x 2 seeds, the
    risk check."""
    tiny = str(data / "tiny-lm")
    return {
        "workspace": str(workspace),
        "ingest": {"inputs": [{"path": str(data / "corpus" / "*.jsonl")}], "shard_rows": 200},
        "reference": [{"path": str(SAMPLE / "reference.jsonl.zst")}],
        "dask": {"n_workers": 2, "threads_per_worker": 1, "processes": True},
        "retry_delay_seconds": 0.1,
        "cluster": {"k": 8, "embedding": {"method": "tfidf", "dim": 32}},
        "influence": {"model_path": tiny, "max_tokens": 32, "max_chunks": 1, "curvature_samples": 8,
                      "reference_samples": 16,
                      **({"projection_dim": PROJECTION_DIM} if PROJECTION_DIM else {})},
        "selection": {"budget": 120, "selectors": [
            {"method": "zip", "mode": "exact", "k1": 400, "k2": 40, "k3": 10},
            # An untrained model's influence is noise around 0: a negative threshold rewards every pull.
            {"method": "quad", "pulls_per_round": 2, "samples_per_pull": 2, "block_size": 10, "threshold": -1.0},
            {"method": "random"}]},
        "probe": {"tokens": 512, "tokenizer": "hf", "tokenizer_path": tiny, "seeds": 2, "batch_size": 2,
                  "evals": 4, "eval_tokens": 128, "cpu_threads": 1, "model": {"hidden": 32, "heads": 4, "intermediate": 64, "seq_len": 32},
                  "unseen": [{"path": str(SAMPLE / "unseen.jsonl.zst")}]},
        "risk": {"enabled": True, "fail_on_risk": False},
    }


def repeat_config(data: Path, workspace: Path, shards: int, processes: bool, selector: str) -> dict:
    return {
        "workspace": str(workspace),
        "ingest": {"inputs": [{"path": str(data / f"repeat-{shards}" / "*.jsonl")}], "shard_rows": 1000},
        "dask": {"n_workers": 2, "threads_per_worker": 1, "processes": processes},
        "retry_delay_seconds": 0.1,
        "cluster": {"k": 2, "embedding": {"method": "tfidf", "dim": 8}},
        "selection": {"budget": 10, "selectors": [] if selector == "none" else [
            {"method": "zip", "mode": "exact", "k1": 20, "k2": 10, "k3": 5}]},
        "probe": {"enabled": False},
    }


def write_yaml(path: Path, config: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------------------ processes


class Env:
    def __init__(self, root: Path, code: str, templates: bool):
        self.root = root
        self.use_templates = templates
        self.api_url: str | None = None  # set: runs use this Prefect server instead of a temporary one each
        self.code_dir = REPO
        if code not in ("snapshot", "live"):  # an existing snapshot folder (shared by benches run side by side)
            self.code_dir = Path(code).absolute()
        elif code == "snapshot":
            self.code_dir = root / "code"
            if self.code_dir.exists():
                shutil.rmtree(self.code_dir)
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / "selectflow", self.code_dir / "selectflow", ignore=ignore)

    def templates(self) -> None:
        """An empty, already migrated Prefect server database and MLflow store, copied into each fresh workspace: a
        fresh temporary Prefect server migrates its SQLite file for ~50 s and MLflow's for ~15 s on this loaded box,
        which would otherwise be most of every run here. (Only the databases' creation is skipped: each workspace
        still starts its own temporary Prefect server and its own MLflow experiment.)"""
        template = self.root / "templates"
        if (template / ".done").is_file():
            return
        if template.exists():
            shutil.rmtree(template)
        template.mkdir(parents=True)
        script = ("import sys; from pathlib import Path; from selectflow.cli import _offline_environment, "
                  "_start_prefect; _offline_environment(Path(sys.argv[1])); _start_prefect(False); "
                  "import mlflow; mlflow.MlflowClient(f'sqlite:///{sys.argv[1]}/mlflow.db').search_experiments()")
        subprocess.run([PY, "-c", script, str(template)], cwd=self.code_dir, env=self.env(template), check=True,
                       capture_output=True, timeout=600)
        import sqlite3

        for db in (template / "prefect" / "prefect.db", template / "mlflow.db"):
            with sqlite3.connect(db) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for extra in template.glob("prefect/prefect.db-*"):
            extra.unlink()
        (template / ".done").write_text("")

    def fresh_workspace(self, workspace: Path) -> None:
        if workspace.exists():
            shutil.rmtree(workspace)
        workspace.mkdir(parents=True)
        if self.use_templates:
            shutil.copytree(self.root / "templates" / "prefect", workspace / "prefect",
                            ignore=shutil.ignore_patterns("*.lock", "*.pid", "*.log"))
            shutil.copy2(self.root / "templates" / "mlflow.db", workspace / "mlflow.db")

    def env(self, workspace: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env |= {"PREFECT_HOME": str(workspace / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(self.code_dir), "PYTHONUNBUFFERED": "1"}
        if self.api_url:
            env["PREFECT_API_URL"] = self.api_url
        return env

    def prefect_server(self) -> subprocess.Popen:
        """One Prefect server for all repeated runs (`prefect server start`, its database under --root)."""
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        home = self.root / "prefect-server"
        if not home.exists():
            shutil.copytree(self.root / "templates" / "prefect", home)
        env = self.env(home) | {"PREFECT_HOME": str(home)}
        env.pop("PREFECT_API_URL", None)
        log = open(self.root / "prefect-server.log", "w")
        server = subprocess.Popen([str(Path(PY).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, start_new_session=True, stdout=log,
                                  stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        self.api_url = url
                        return server
            except OSError:
                time.sleep(1)
        killpg(server)
        raise SystemExit(f"prefect server did not start; see {self.root / 'prefect-server.log'}")

    def start(self, args: list[str], workspace: Path, log: Path) -> subprocess.Popen:
        """`python -m selectflow.cli ARGS` in its own session (process group), stdout to `log`, stderr beside it."""
        workspace.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        out, err = open(log, "w"), open(log.with_suffix(".stderr.log"), "w")
        proc = subprocess.Popen([PY, "-m", "selectflow.cli", *args], cwd=self.code_dir, env=self.env(workspace),
                                start_new_session=True, stdout=out, stderr=err, text=True)
        out.close()
        err.close()
        return proc

    def cli(self, args: list[str], workspace: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "selectflow.cli", *args], cwd=self.code_dir, env=self.env(workspace),
                              capture_output=True, text=True, timeout=timeout)

    def inspect(self, workspace: Path, request: dict, timeout: float = 600) -> dict:
        """Run this file's `_inspect` in the code under test: lineage, run records, MLflow statuses, outputs."""
        proc = subprocess.run([PY, __file__, "_inspect", json.dumps(request)], cwd=self.code_dir,
                              env=self.env(workspace), capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            raise RuntimeError(f"_inspect failed on {workspace}:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.splitlines()[-1])

    def code_version(self) -> str:
        return subprocess.run([PY, "-c", "from selectflow.store import package_code_version as v; print(v())"],
                              cwd=self.code_dir, env=self.env(self.root), capture_output=True, text=True,
                              check=True).stdout.strip()


def killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def leftovers(workspace: Path, grace: float = 5.0) -> list[tuple[int, str]]:
    """Processes still alive `grace` seconds after the run ended whose command line or PREFECT_HOME points into the
    workspace (orphans): (pid, command line)."""
    import psutil

    deadline = time.monotonic() + grace
    while True:
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                args = proc.info["cmdline"] or []
                home = proc.environ().get("PREFECT_HOME", "")
            except (psutil.Error, OSError):
                continue
            mine = f"{workspace}/"
            if home.startswith(mine) or any(a.startswith(mine) or a in (str(workspace), f"{workspace}.yaml")
                                            for a in args):
                found.append((proc.pid, " ".join(args)[:300]))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def reap(found: list[tuple[int, str]]) -> None:
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_gaps(log: Path, started: float, ended: float) -> dict:
    """The longest silence of a run's log (between its timestamped lines, from the start and up to the end), in s."""
    import datetime as dt

    stamps = [started]
    day = dt.datetime.fromtimestamp(started, dt.timezone.utc).date()
    for line in log.read_text(errors="replace").splitlines():
        if len(line) > 12 and line[2] == ":" and line[5] == ":" and line[8] == ".":
            try:
                clock = dt.datetime.strptime(line[:12], "%H:%M:%S.%f").time()
            except ValueError:
                continue
            stamp = dt.datetime.combine(day, clock, dt.timezone.utc).timestamp()
            stamps.append(stamp + 86400 if stamp < stamps[0] - 3600 else stamp)
    stamps.append(ended)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"max_silence_s": round(max(gaps), 1), "log_lines": len(stamps) - 2}


def run_to_end(env: Env, config: Path, workspace: Path, log: Path, timeout: float) -> tuple[int | None, float, dict]:
    """(returncode or None on timeout, seconds, the --json summary or {})."""
    started = time.monotonic()
    proc = env.start(["run", "--config", str(config), "--json"], workspace, log)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killpg(proc)
        return None, time.monotonic() - started, {}
    seconds = time.monotonic() - started
    return proc.returncode, seconds, parse_summary(log)


def parse_summary(log: Path) -> dict:
    text = log.read_text(errors="replace")
    start = text.rfind("\n{\n")
    start = 0 if text.startswith("{") else start + 1
    try:
        return json.loads(text[start:])
    except ValueError:
        return {}


# ------------------------------------------------------------------------------------------------ store snapshots


def artifacts(workspace: Path) -> dict[str, str]:
    """'stage/key' -> manifest created_at, for every committed artifact of the workspace."""
    out = {}
    for manifest in (workspace / "store" / "artifacts").glob("*/*/manifest.json"):
        try:
            created = json.loads(manifest.read_text()).get("created_at", "")
        except (OSError, ValueError):
            created = "unreadable"
        out[f"{manifest.parent.parent.name}/{manifest.parent.name}"] = created
    return out


def count(workspace: Path, stage: str) -> int:
    return len(list((workspace / "store" / "artifacts" / stage).glob("*/manifest.json")))


def zip_checkpoints(workspace: Path) -> int:
    return len(list((workspace / "store" / "checkpoints" / "select_zip").glob("*/zip_state.npz")))


# ----------------------------------------------------------------------------------------------------- kill points


@dataclass
class Point:
    name: str
    where: str  # human description
    trigger: object  # callable(workspace, expected) -> bool: kill now
    landed: object  # callable(state_at_kill, expected) -> bool: the kill hit the intended window
    state: dict = field(default_factory=dict)


def _mid(stage: str, label: str | None = None):
    """Kill when about half of a per-shard stage's artifacts exist."""
    return Point(
        label or f"mid-{stage}", f"some but not all {stage} artifacts",
        lambda ws, exp: count(ws, stage) >= max(1, exp[stage] // 2),
        lambda st, exp: 1 <= st[stage] < exp[stage])


def _after(stage: str, next_stage: str | None, label: str | None = None):
    """Kill as soon as every artifact of `stage` exists (the stage boundary)."""
    return Point(
        label or f"after-{stage}", f"all {stage} artifacts committed" + (f", before {next_stage}" if next_stage else ""),
        lambda ws, exp: count(ws, stage) >= exp[stage],
        lambda st, exp: st[stage] == exp[stage] and (next_stage is None or st[next_stage] < exp[next_stage]))


POOL_INGEST = 7  # 6 corpus files + bad.jsonl; the reference and unseen sets are ingested later, after dedup


def kill_points() -> list[Point]:
    ingest_mid = Point("mid-ingest", "some but not all pool ingest artifacts",
                       lambda ws, exp: count(ws, "ingest") >= 3,
                       lambda st, exp: 1 <= st["ingest"] < POOL_INGEST)
    ingest_end = Point("after-ingest", "all 7 pool ingest artifacts, before dedup_exact",
                       lambda ws, exp: count(ws, "ingest") >= POOL_INGEST,
                       lambda st, exp: st["ingest"] >= POOL_INGEST and st["dedup_exact"] == 0)
    seen: set = set()

    def zip_rounds(ws: Path, exp: dict) -> bool:
        """Each finished ZIP round replaces zip_state.npz (new inode, new mtime): kill once 4 saves were seen."""
        for path in (ws / "store" / "checkpoints" / "select_zip").glob("*/zip_state.npz"):
            try:
                stat = path.stat()
                seen.add((stat.st_ino, stat.st_mtime_ns))
            except OSError:
                pass
        return len(seen) >= 4 and count(ws, "select_zip") == 0

    zip_mid = Point("mid-zip", "ZIP round checkpoints saved (4 seen), select_zip not committed", zip_rounds,
                    lambda st, exp: st["zip_checkpoints"] >= 1 and st["select_zip"] == 0)
    probe_mid = Point("mid-probe", "at least one probe artifact, not all",
                      lambda ws, exp: count(ws, "probe") >= 1,
                      lambda st, exp: 1 <= st["probe"] < exp["probe"])
    selection_end = Point("after-selection", "select_zip, select_quad and select_random committed, before probes",
                          lambda ws, exp: all(count(ws, s) >= 1 for s in ("select_zip", "select_quad", "select_random")),
                          lambda st, exp: all(st[s] == 1 for s in ("select_zip", "select_quad", "select_random"))
                          and st["probe"] == 0)
    # In priority order: --points N runs the first N.
    return [
        ingest_mid,
        _after("dedup_exact", "minhash"),
        _mid("minhash"),
        _after("dedup_near", "deduped"),
        _mid("deduped", "mid-filter"),
        _mid("embed"),
        _after("influence_reference", None, "after-influence"),
        zip_mid,
        selection_end,
        probe_mid,
        _after("probe", None, "after-probes"),
        ingest_end,
        _after("minhash", "dedup_near"),
        _after("deduped", "embed", "after-filter"),
        _after("cluster", None),
    ]


STAGES = ("ingest", "dedup_exact", "minhash", "dedup_near", "deduped", "embedding_basis", "embed", "cluster",
          "influence_reference", "select_zip", "select_quad", "select_random", "probe_full_pool", "probe")


def state_of(workspace: Path) -> dict:
    state = {stage: count(workspace, stage) for stage in STAGES}
    state["zip_checkpoints"] = zip_checkpoints(workspace)
    return state


# --------------------------------------------------------------------------------------------------- comparisons


def lineage_sample(ref: dict) -> list[str]:
    """~20 doc ids: 5 dropped at exact, 5 at near, 4 selected by ZIP, 3 by QUAD, 3 by random only, and one quarantined
    record as FILE:LINE (sorted ids, first k: deterministic)."""
    picks = (ref["dropped_exact"][:5] + ref["dropped_near"][:5] + sorted(ref["selected"]["select_zip"])[:4]
             + sorted(ref["selected"]["select_quad"])[:3])
    only_random = sorted(set(ref["selected"]["select_random"]) - set(picks))[:3]
    return [*dict.fromkeys(picks + only_random), ref["bad_record"]]


def compare(ref: dict, got: dict) -> dict:
    """What differs between the reference run's results and a resumed run's."""
    out = {"deduped": ref["deduped"] == got["deduped"], "n_deduped": len(got["deduped"])}
    for stage in ("select_zip", "select_quad", "select_random"):
        out[stage] = ref["outputs"].get(stage) == got["outputs"].get(stage) and bool(got["outputs"].get(stage))
    same = [doc for doc in ref["lineage"] if ref["lineage"][doc] == got["lineage"].get(doc)]
    out["lineage_same"] = len(same)
    out["lineage_total"] = len(ref["lineage"])
    out["lineage_diff"] = {doc: {"ref": ref["lineage"][doc], "got": got["lineage"].get(doc)}
                           for doc in ref["lineage"] if doc not in same}
    out["ok"] = all(out[k] for k in ("deduped", "select_zip", "select_quad", "select_random")) and \
        out["lineage_same"] == out["lineage_total"]
    return out


# ------------------------------------------------------------------------------------------------ in-process probe


def _inspect(request: dict) -> dict:
    """Runs inside the code under test (PYTHONPATH): answers about one workspace."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from selectflow.lineage import UnknownDocument, doc_lineage
    from selectflow.runs import all_runs
    from selectflow.store import ArtifactStore

    workspace = Path(request["workspace"])
    store = ArtifactStore(workspace / "store")
    out: dict = {"runs": {r.run_id: {"status": r.status, "live_status": r.live_status(store),
                                     "mlflow_run_id": r.mlflow_run_id, "started_at": r.started_at}
                          for r in all_runs(store)}}
    if request.get("mlflow"):
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
        out["mlflow"] = {}
        for run_id in request["mlflow"]:
            try:
                out["mlflow"][run_id] = client.get_run(run_id).info.status
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                out["mlflow"][run_id] = f"error: {type(exc).__name__}: {exc}"
    summary = request.get("summary")
    if summary:
        def ids(folder: str | None) -> list[str]:
            if not folder:
                return []
            return [d for f in sorted(Path(folder).glob("part-*.parquet"))
                    for d in pq.read_table(f, columns=["doc_id"])["doc_id"].to_pylist()]

        out["deduped"] = ids(summary["deduped"])
        out["outputs"] = {stage: ids(folder) for stage, folder in summary.get("subsets", {}).items()}
        run_id = summary["run_id"]
        from selectflow.runs import load_run

        loaded = load_run(store, run_id)
        run = loaded[0] if isinstance(loaded, tuple) else loaded

        def dropped(stage: str) -> list[str]:
            table = run.refs(stage)[0].read("decisions", columns=["doc_id", "decision"])
            return sorted(table.filter(pc.equal(table["decision"], "dropped"))["doc_id"].to_pylist())

        out["dropped_exact"], out["dropped_near"] = dropped("dedup_exact"), dropped("dedup_near")
        out["selected"] = out["outputs"]
        out["zip_stats"] = run.refs("select_zip")[0].manifest()["stats"] if run.refs("select_zip") else {}
        out["run_artifacts"] = sorted(f"{ref.stage}/{ref.key}" for stage in run.stages for ref in run.refs(stage))
        lineage = {}
        for doc in request.get("docs", []):
            try:
                answer = doc_lineage(store, doc, run_id)
            except UnknownDocument as exc:
                lineage[doc] = {"error": str(exc).replace(run_id, "RUN")}
                continue
            lineage[doc] = {"decisions": answer["decisions"], "final": answer["final"],
                            **({"quarantined": answer["quarantined"]} if "quarantined" in answer else {})}
        out["lineage"] = lineage
    return out


# ------------------------------------------------------------------------------------------------------ the parts


def reference_run(env: Env, data: Path, root: Path, timeout: float) -> dict:
    workspace = root / "kill" / "reference"
    env.fresh_workspace(workspace)
    config = write_yaml(root / "kill" / "reference.yaml", full_config(data, workspace))
    rc, seconds, summary = run_to_end(env, config, workspace, root / "kill" / "reference.log", timeout)
    if rc != 0 or not summary:
        raise SystemExit(f"reference run failed (rc {rc}); see {root / 'kill' / 'reference.log'} and .stderr.log")
    result = env.inspect(workspace, {"workspace": str(workspace), "summary": summary})
    bad = f"{data / 'corpus' / 'bad.jsonl'}:2"
    result["bad_record"] = bad
    docs = lineage_sample(result)
    result = env.inspect(workspace, {"workspace": str(workspace), "summary": summary, "docs": docs})
    result["bad_record"] = bad
    result["seconds"] = seconds
    result["expected"] = state_of(workspace)
    result["workspace"] = str(workspace)
    result["docs"] = docs
    # The CLI gives the same lineage answers as the in-process call used for every comparison.
    cli = env.cli(["lineage", docs[0], "--workspace", str(workspace), "--json"], workspace)
    answer = json.loads(cli.stdout)
    result["cli_matches_inprocess"] = {"decisions": answer["decisions"], "final": answer["final"]} == \
        result["lineage"][docs[0]]
    print(f"reference run: {seconds:.1f} s, {len(result['deduped'])} deduped, "
          f"{ {k: len(v) for k, v in result['outputs'].items()} }, expected artifacts {result['expected']}", flush=True)
    return result


def kill_point(env: Env, data: Path, root: Path, point: Point, ref: dict, timeout: float) -> dict:
    workspace = root / "kill" / point.name
    env.fresh_workspace(workspace)
    config = write_yaml(root / "kill" / f"{point.name}.yaml", full_config(data, workspace))
    expected = ref["expected"]
    row: dict = {"point": point.name, "where": point.where, "workspace": str(workspace)}
    started = time.monotonic()
    victim = env.start(["run", "--config", str(config), "--json"], workspace, root / "kill" / f"{point.name}.killed.log")
    fired = False
    while time.monotonic() - started < timeout:
        if point.trigger(workspace, expected):
            fired = True
            break
        if victim.poll() is not None:
            break
        time.sleep(POLL_S)
    if victim.poll() is None:
        killpg(victim)
        row["killed"] = True
    else:
        row["killed"] = False
        row["victim_rc"] = victim.returncode
    row["kill_s"] = round(time.monotonic() - started, 1)
    state = state_of(workspace)
    row["state_at_kill"] = state
    row["landed"] = fired and row["killed"] and bool(point.landed(state, expected))
    orphans = leftovers(workspace)
    row["orphans"] = len(orphans)
    row["orphan_cmdlines"] = [cmd for _, cmd in orphans]
    reap(orphans)

    # The killed run reads as interrupted (run record via selectflow.runs, and the CLI's run graph).
    before = env.inspect(workspace, {"workspace": str(workspace)})
    killed = [rid for rid, r in before["runs"].items() if r["status"] == "running" or r["live_status"] != "completed"]
    row["killed_run"] = killed[0] if len(killed) == 1 else killed
    row["record_live_status"] = [before["runs"][rid]["live_status"] for rid in killed]
    if len(killed) == 1:
        graph = env.cli(["lineage", "--run", killed[0], "--workspace", str(workspace), "--json"], workspace)
        try:
            row["graph_status"] = json.loads(graph.stdout)["status"]
        except ValueError:
            row["graph_status"] = f"rc {graph.returncode}: {graph.stderr.strip()[-300:]}"
    arts_before = artifacts(workspace)

    rc, seconds, summary = run_to_end(env, config, workspace, root / "kill" / f"{point.name}.rerun.log", timeout)
    row["rerun_rc"], row["rerun_s"] = rc, round(seconds, 1)
    if rc != 0 or not summary:
        row["ok"] = False
        row["error"] = f"re-run failed (rc {rc}); see {root / 'kill' / point.name}.rerun.log"
        return row
    arts_after = artifacts(workspace)
    mlflow_ids = [before["runs"][rid]["mlflow_run_id"] for rid in killed if before["runs"][rid]["mlflow_run_id"]]
    got = env.inspect(workspace, {"workspace": str(workspace), "summary": summary, "docs": ref["docs"],
                                  "mlflow": mlflow_ids})
    used = got["run_artifacts"]
    row["reused"] = sum(1 for a in used if a in arts_before and arts_before[a] == arts_after.get(a))
    row["rebuilt"] = sum(1 for a in used if a not in arts_before or arts_before[a] != arts_after.get(a))
    row["used"] = len(used)
    row["record_after"] = [got["runs"][rid]["status"] for rid in killed if rid in got["runs"]]
    row["mlflow_killed_status"] = [got["mlflow"][m] for m in mlflow_ids] or ["(no MLflow run yet)"]
    row["resumed_from_round"] = got["zip_stats"].get("resumed_from_round")
    row["quarantined"] = len(list((workspace / "store" / "quarantine").glob("*/*")))
    row["compare"] = compare(ref, got)
    row["ok"] = (row["compare"]["ok"] and row["landed"] and row["record_live_status"] == ["interrupted"]
                 and row.get("graph_status") == "interrupted" and row["record_after"] == ["interrupted"]
                 and all(s in ("KILLED", "(no MLflow run yet)") for s in row["mlflow_killed_status"])
                 and (point.name != "mid-zip" or (row["resumed_from_round"] or 0) > 0))
    return row


def run_kill(env: Env, data: Path, root: Path, n_points: int, timeout: float,
             names: list[str] | None = None, jobs: int = 1) -> tuple[dict, dict]:
    started = time.monotonic()
    ref = reference_run(env, data, root, timeout)
    rows = []
    points = [p for p in kill_points() if p.name in names] if names else kill_points()[:n_points]

    def one(point: Point) -> dict:
        row = kill_point(env, data, root, point, ref, timeout)
        if not row["landed"]:  # the kill missed its window (a loaded machine can delay the watcher): once more
            print(f"{point.name}: kill missed its window ({row['state_at_kill']}); retrying once", flush=True)
            missed = row
            fresh = next(p for p in kill_points() if p.name == point.name)  # a trigger may keep state
            row = kill_point(env, data, root, fresh, ref, timeout)
            row["missed_first"] = {k: missed[k] for k in ("state_at_kill", "kill_s", "killed")}
        print(f"{point.name}: ok={row['ok']} landed={row['landed']} kill@{row['kill_s']}s rerun {row.get('rerun_s')}s "
              f"reused {row.get('reused')} rebuilt {row.get('rebuilt')} mlflow {row.get('mlflow_killed_status')} "
              f"zip resumed {row.get('resumed_from_round')} compare "
              f"{ {k: v for k, v in row.get('compare', {}).items() if k != 'lineage_diff'} }", flush=True)
        if not row["ok"]:
            print(json.dumps(row, indent=2, default=str), flush=True)
        return row

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each point is subprocesses: threads only wait and poll
        rows = list(pool.map(one, points))
    ref_public = {k: ref[k] for k in ("seconds", "expected", "docs", "workspace", "cli_matches_inprocess")}
    ref_public["counts"] = {"deduped": len(ref["deduped"]), **{k: len(v) for k, v in ref["outputs"].items()},
                            "dropped_exact": len(ref["dropped_exact"]), "dropped_near": len(ref["dropped_near"])}
    return {"reference": ref_public, "points": rows, "seconds": round(time.monotonic() - started, 1)}, ref


def run_repeat(env: Env, data: Path, root: Path, repeats: int, watchdog: float, jobs: int = 1,
               shared_server: bool = True) -> dict:
    started = time.monotonic()
    server = env.prefect_server() if shared_server else None
    configs = [(shards, processes) for shards in (1, 20, 62) for processes in (True, False)]

    def one(index: int) -> dict:
        shards, processes = configs[index % len(configs)]
        selector = ("none", "zip")[(index // len(configs)) % 2]
        name = f"r{index:02d}-{shards}-{'proc' if processes else 'thread'}-{selector}"
        workspace = root / "repeat" / name
        env.fresh_workspace(workspace)
        config = write_yaml(root / "repeat" / f"{name}.yaml", repeat_config(data, workspace, shards, processes,
                                                                            selector))
        rc, seconds, summary = run_to_end(env, config, workspace, root / "repeat" / f"{name}.log", watchdog)
        ended = time.time()
        gaps = log_gaps(root / "repeat" / f"{name}.stderr.log", ended - seconds, ended)
        orphans = leftovers(workspace)
        reap(orphans)
        row = {"name": name, "shards": shards, "processes": processes, "selector": selector, "rc": rc,
               "seconds": round(seconds, 1), "hang": rc is None, "failed": rc not in (0, None) or (rc == 0 and not summary),
               "orphans": len(orphans), "orphan_cmdlines": [cmd for _, cmd in orphans], "docs_out": summary.get("docs_out"),
               **gaps, "exit_after_summary_s": round(ended - (root / "repeat" / f"{name}.log").stat().st_mtime, 1)
               if summary else None}
        if rc is None:  # evidence: how long the log had been silent when the watchdog fired, and its last lines
            log = (root / "repeat" / f"{name}.stderr.log")
            row["silent_s"] = round(time.time() - log.stat().st_mtime, 1)
            row["log_tail"] = log.read_text(errors="replace").splitlines()[-15:]
        print(f"{name}: rc={rc} {seconds:.1f}s docs_out={row['docs_out']} orphans={len(orphans)}"
              + (f" HANG (log silent {row['silent_s']} s)" if rc is None else ""), flush=True)
        if rc == 0 and summary:  # keep the evidence of failures and hangs only
            shutil.rmtree(workspace, ignore_errors=True)
        return row

    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            rows = list(pool.map(one, range(repeats)))
    finally:
        if server is not None:
            killpg(server)
    return {"runs": rows, "seconds": round(time.monotonic() - started, 1), "watchdog_s": watchdog, "jobs": jobs,
            "prefect": "one shared `prefect server start`" if shared_server else "a temporary server per workspace"}


def truncate_parquet(folder: Path) -> str | None:
    parts = sorted(folder.glob("*.parquet")) or sorted(p for p in folder.iterdir() if p.is_file()
                                                        and p.name != "manifest.json")
    if not parts:
        return None
    target = parts[0]
    size = target.stat().st_size
    with open(target, "r+b") as handle:
        handle.truncate(size // 2)
    return f"{target.name} {size}->{size // 2} B"


def run_corrupt(env: Env, data: Path, root: Path, ref: dict | None, timeout: float,
                finished: Path | None = None) -> dict:
    """Damage one artifact of every stage of a finished workspace, re-run, check quarantine + rebuild + same ids.
    `finished`: a workspace whose last run completed (a kill point's, after its re-run); else one is made here."""
    started = time.monotonic()
    if ref is None:
        ref = reference_run(env, data, root, timeout)
    if finished is not None:
        workspace, first_s = finished, None
        config = root / "kill" / f"{finished.name}.yaml"
        log_dir = root / "kill"
    else:
        workspace = root / "corrupt" / "ws"
        env.fresh_workspace(workspace)
        config = write_yaml(root / "corrupt" / "ws.yaml", full_config(data, workspace))
        log_dir = root / "corrupt"
        rc, first_s, summary = run_to_end(env, config, workspace, log_dir / "first.log", timeout)
        if rc != 0:
            return {"error": f"first run failed rc {rc}", "seconds": round(time.monotonic() - started, 1)}
    damaged = {}
    for stage_dir in sorted((workspace / "store" / "artifacts").iterdir()):
        folder = sorted(p for p in stage_dir.iterdir() if (p / "manifest.json").is_file())[0]
        damaged[stage_dir.name] = {"key": folder.name, "what": truncate_parquet(folder)}
    rc, rerun_s, summary = run_to_end(env, config, workspace, log_dir / "corrupt-rerun.log", timeout)
    if rc != 0 or not summary:
        return {"damaged": damaged, "error": f"re-run failed rc {rc}; see {log_dir / 'corrupt-rerun.log'}",
                "seconds": round(time.monotonic() - started, 1)}
    for stage, entry in damaged.items():
        moved = list((workspace / "store" / "quarantine" / stage).glob(f"{entry['key']}-*/DAMAGE.json"))
        entry["quarantined"] = len(moved)
        entry["rebuilt"] = (workspace / "store" / "artifacts" / stage / entry["key"] / "manifest.json").is_file()
    got = env.inspect(workspace, {"workspace": str(workspace), "summary": summary, "docs": ref["docs"]})
    result = compare(ref, got)
    return {"damaged": damaged, "compare": result, "first_s": first_s and round(first_s, 1), "rerun_s": round(rerun_s, 1),
            "ok": result["ok"] and all(e["quarantined"] == 1 and e["rebuilt"] for e in damaged.values()),
            "seconds": round(time.monotonic() - started, 1), "workspace": str(workspace)}


# ---------------------------------------------------------------------------------------------------------- tables


def markdown(results: dict) -> str:
    lines = []
    if kill := results.get("kill"):
        ref = kill["reference"]
        lines += [f"Reference run (uninterrupted): {ref['seconds']:.1f} s; {ref['counts']}.", "",
                  "| kill point | state at kill (committed artifacts) | landed | killed run read as | re-run s | "
                  "reused / rebuilt | ZIP resumed_from_round | MLflow of killed run | deduped + zip/quad/random ids | "
                  f"lineage ({len(ref['docs'])} docs) | orphans | result |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in kill["points"]:
            st = row["state_at_kill"]
            shown = ", ".join(f"{k} {v}" for k, v in st.items() if v)
            c = row.get("compare", {})
            ids = "same" if c and all(c[k] for k in ("deduped", "select_zip", "select_quad", "select_random")) \
                else ("DIFFER: " + ",".join(k for k in ("deduped", "select_zip", "select_quad", "select_random")
                                             if not c.get(k)) if c else "-")
            lines.append(
                f"| {row['point']} | {shown or 'nothing'} | {'yes' if row['landed'] else 'NO'} | "
                f"{'/'.join(row.get('record_live_status', []))} (graph: {row.get('graph_status')}) → "
                f"{'/'.join(row.get('record_after', []))} | {row.get('rerun_s')} | "
                f"{row.get('reused')} / {row.get('rebuilt')} | {row.get('resumed_from_round')} | "
                f"{', '.join(row.get('mlflow_killed_status', []))} | {ids} | "
                f"{c.get('lineage_same', '-')}/{c.get('lineage_total', '-')} | {row.get('orphans')} | "
                f"{'pass' if row['ok'] else 'FAIL'} |")
        lines += ["", f"Kill part: {kill['seconds']:.0f} s in all.", ""]
    if repeat := results.get("repeat"):
        lines += [f"| shards | dask.processes | runs | failures | hangs (> {repeat['watchdog_s']:.0f} s) | "
                  "median s | max s | longest log silence s | exit after summary s (median) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        groups: dict = {}
        for row in repeat["runs"]:
            groups.setdefault((row["shards"], row["processes"]), []).append(row)
        for (shards, processes), rows in groups.items():
            times = [r["seconds"] for r in rows if not r["hang"]]
            lines.append(f"| {shards} | {str(processes).lower()} | {len(rows)} | {sum(r['failed'] for r in rows)} | "
                         f"{sum(r['hang'] for r in rows)} | {statistics.median(times) if times else '-'} | "
                         f"{max(times) if times else '-'} | {max(r.get('max_silence_s', 0) for r in rows)} | "
                         f"{statistics.median([r['exit_after_summary_s'] for r in rows if r.get('exit_after_summary_s') is not None] or [0])} |")
        total = repeat["runs"]
        lines += ["", f"Repeat part: {len(total)} runs ({repeat.get('jobs', 1)} side by side, Prefect: "
                  f"{repeat.get('prefect')}), {sum(r['failed'] for r in total)} failures, "
                  f"{sum(r['hang'] for r in total)} hangs, {sum(r['orphans'] for r in total)} orphan processes, "
                  f"{repeat['seconds']:.0f} s in all.", ""]
    if corrupt := results.get("corrupt"):
        if "damaged" in corrupt:
            lines += ["| stage | damaged | quarantined | rebuilt |", "|---|---|---|---|"]
            for stage, entry in corrupt["damaged"].items():
                lines.append(f"| {stage} | {entry['what']} | {entry.get('quarantined')} | {entry.get('rebuilt')} |")
        c = corrupt.get("compare", {})
        lines += ["", f"Corruption round: ids same: {bool(c) and all(c.get(k) for k in ('deduped', 'select_zip', 'select_quad', 'select_random'))}, "
                  f"lineage {c.get('lineage_same')}/{c.get('lineage_total')}, re-run {corrupt.get('rerun_s')} s, "
                  f"{'pass' if corrupt.get('ok') else 'FAIL ' + str(corrupt.get('error', ''))}.", ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_inspect":
        print(json.dumps(_inspect(json.loads(sys.argv[2])), default=str))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated bench still stops its Prefect server
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/selectflow-chaos"),
                        help="where data, the code snapshot, workspaces and logs go")
    parser.add_argument("--only", choices=["kill", "repeat", "corrupt"], action="append",
                        help="run only these parts (repeatable); default: kill and repeat")
    parser.add_argument("--points", type=int, default=15, help="kill points to run (in the listed order)")
    parser.add_argument("--point", action="append", help="run only this kill point (by name; repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="kill points run side by side (after the reference)")
    parser.add_argument("--repeats", type=int, default=50, help="repeated small runs")
    parser.add_argument("--timeout", type=float, default=600, help="limit of one full run (kill part)")
    parser.add_argument("--repeat-jobs", type=int, default=1, help="repeated runs side by side")
    parser.add_argument("--repeat-temporary-servers", action="store_true",
                        help="each repeated run starts its own temporary Prefect server (default: one shared "
                        "`prefect server start`, which saves ~50 s of server start per run on a loaded machine)")
    parser.add_argument("--watchdog", type=float, default=300, help="a repeated run taking longer is a hang")
    parser.add_argument("--no-templates", action="store_true",
                        help="let every workspace create its Prefect and MLflow databases itself (slow)")
    parser.add_argument("--projection-dim", type=int, default=0,
                        help="influence.projection_dim (0: unset, exact scores)")
    parser.add_argument("--code", default="snapshot",
                        help="'snapshot' (copy selectflow/ under --root now), 'live' (the working "
                        "tree), or the path of an existing snapshot (to share one between benches run side by side)")
    args = parser.parse_args()
    parts = args.only or ["kill", "repeat"]
    global PROJECTION_DIM
    PROJECTION_DIM = args.projection_dim
    root = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = root / "data"
    build_data(data)
    env = Env(root, args.code, not args.no_templates)
    if env.use_templates:
        env.templates()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "machine": f"{os.cpu_count()} cores, {platform.python_version()}, load {os.getloadavg()}",
                     "code": f"HEAD {head.strip()}{' + uncommitted changes' if dirty else ''}, "
                             f"package_code_version {env.code_version()} ({args.code})",
                     "args": vars(args) | {"root": str(root)}}
    results["args"]["only"] = parts
    out = root / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"

    def save() -> None:
        out.write_text(json.dumps(results, indent=2, default=str))

    ref = None
    if "kill" in parts:
        results["kill"], ref = run_kill(env, data, root, args.points, args.timeout, args.point, args.jobs)
        save()
    if "repeat" in parts:
        results["repeat"] = run_repeat(env, data, root, args.repeats, args.watchdog, args.repeat_jobs,
                                       not args.repeat_temporary_servers)
        save()
    if "corrupt" in parts:
        done = [Path(row["workspace"]) for row in results.get("kill", {}).get("points", []) if row.get("rerun_rc") == 0]
        results["corrupt"] = run_corrupt(env, data, root, ref, args.timeout, done[-1] if done else None)
        save()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_end"] = os.getloadavg()
    save()
    print()
    print(f"{results['date']}; {results['machine']}; {results['code']}")
    print(markdown(results))
    print(f"Total: {results['seconds']:.0f} s. Raw results: {out}")


if __name__ == "__main__":
    main()
