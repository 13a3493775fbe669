"""Start and stop real servers on loopback for integration tests; never leave one running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect settings (tests set their own), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    return env | extra


def wait_until(check, what: str, proc: subprocess.Popen | None = None, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited: {proc.stdout.read()[-3000:] if proc.stdout else ''}")
        try:
            if result := check():
                return result
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout}s")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def api_call(api: str, path: str, body: dict | None = None, attempts: int = 5):
    """JSON in, JSON out. Retries a 503, which a loaded Prefect server returns while its SQLite file is busy, and
    a GET that timed out (a server sharing 2 cores with flow runs can stall past 10 s; a POST is never repeated)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api}{path}", data=data, headers={"Content-Type": "application/json"})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts - 1:
                raise
        except (TimeoutError, urllib.error.URLError) as exc:
            timed_out = isinstance(exc, TimeoutError) or isinstance(exc.reason, TimeoutError)
            if not timed_out or body is not None or attempt == attempts - 1:
                raise
        time.sleep(1 + attempt)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT the process group (Prefect's worker ignores SIGTERM), then SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def server(args: list[str], env: dict[str, str], ready, what: str, cwd: str | None = None, timeout: float = 120):
    """Run `args` in its own process group until the block ends; `ready()` must become true first."""
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_until(ready, what, proc, timeout)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def prefect_server(home: Path, database_url: str | None = None):
    """`prefect server start` on loopback: SQLite in `home`, or the PostgreSQL database at `database_url`."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = clean_env(PREFECT_HOME=str(home))
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    with server([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env,
                lambda: http_ok(f"{api}/health"), "prefect server"):
        yield api


@contextlib.contextmanager
def mlflow_server(root: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    with server(args, clean_env(), lambda: http_ok(f"{url}/health"), "mlflow server", timeout=180):
        yield url


@contextlib.contextmanager
def dask_cluster(env: dict[str, str], workers: int = 2):
    """A `dask scheduler` and `workers` single-threaded `dask worker` processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    def workers_up() -> bool:
        from distributed import Client

        with Client(address, timeout=5) as client:
            return len(client.scheduler_info()["workers"]) == workers

    scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    worker = [str(BIN / "dask"), "worker", address, "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard"]
    with server(scheduler, env, lambda: socket.create_connection(("127.0.0.1", port), timeout=1), "dask scheduler"):
        with server(worker, env, workers_up, "dask workers"):
            yield address


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (`apt-get install postgresql`), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]), reverse=True)
    return found[0].parent if found else None


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL cluster on loopback (trust auth, its own data folder), run as the `postgres` user
    when we are root (PostgreSQL refuses to run as root); yields an asyncpg URL of its `postgres` database."""
    import pwd
    import shutil
    import tempfile

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed: `apt-get install postgresql` (scripts/test.sh does)")
    root = Path(tempfile.mkdtemp(prefix="selectflow-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(root / "data"), "--auth=trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        args = [*as_user, str(bin_dir / "postgres"), "-D", str(root / "data"), "-h", "127.0.0.1", "-p", str(port),
                "-k", str(root), "-c", "fsync=off"]
        with server(args, clean_env(), lambda: socket.create_connection(("127.0.0.1", port), timeout=1),
                    "postgres"):
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def postgres_query(database_url: str, sql: str):
    """The single value `sql` returns from the database at `database_url` (via psql)."""
    from urllib.parse import urlparse

    url = urlparse(database_url.replace("+asyncpg", ""))
    out = subprocess.run([str(postgres_bin() / "psql"), "-h", url.hostname, "-p", str(url.port), "-U", url.username,
                          "-d", url.path.lstrip("/"), "-tAc", sql], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())
