"""`selectflow` command line: run the curate flow, audit lineage, inspect configuration."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from selectflow.config import ConfigError, CurateConfig, load_config
from selectflow.preflight import preflight
from selectflow.stopping import Interrupted, exit_now, stop_on_signals
from selectflow.workspace import WorkspaceBusy, setup_lock, workspace_lock

SAMPLE_CONFIG = Path(__file__).parent / "data" / "sample.yaml"
DEFAULT_WORKSPACE = Path("selectflow-workspace")


def _offline_environment(workspace: Path) -> None:
    """Settings that must be in place before Prefect or transformers are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server migrates a fresh SQLite file on first start: over Prefect's 20 s on a loaded 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Without a server configured, Prefect's temporary server and its result cache live in the workspace.
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(workspace.absolute() / "prefect")
    if "PREFECT_HOME" in os.environ:
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect's SQLite needs the folder


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set dedup.near.threshold=0.8")
        key, value = pair.split("=", 1)
        overrides[key.strip()] = value
    return overrides


def _build_config(args) -> CurateConfig:
    overrides = _parse_sets(args.set)
    if args.workspace:
        overrides["workspace"] = str(Path(args.workspace).absolute())
    if args.dask_address:
        overrides["dask.address"] = args.dask_address
    if args.input:
        overrides["ingest.inputs"] = [{"path": str(Path(p).absolute()) if "://" not in p else p} for p in args.input]
    return load_config(args.config or SAMPLE_CONFIG, overrides)


def _start_prefect(debug: bool) -> None:
    """Prefect's logging set up for this command, and its temporary server started now (when no server is
    configured): never two processes creating the same server database at once."""
    from prefect.logging.configuration import setup_logging

    setup_logging()  # later set-ups in this process are incremental: they keep the handlers configured here
    if not debug:
        _console_without_tracebacks()
    if "PREFECT_API_URL" in os.environ:
        return
    from prefect.client.orchestration import get_client

    with setup_lock(Path(os.environ["PREFECT_HOME"]) / ".setup.lock"), get_client(sync_client=True):
        pass


def _console_without_tracebacks() -> None:
    """Prefect's console lines without their tracebacks (the Prefect UI and API logs keep them; --debug shows them)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for handler in {h for logger in loggers for h in logger.handlers if isinstance(h, PrefectConsoleHandler)}:
        handler.setFormatter(_OneLine(handler.formatter or logging.Formatter()))


class _OneLine(logging.Formatter):
    """Formats with `inner`, leaving out the traceback (the record itself is left intact for other handlers)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def cmd_run(args) -> int:
    config = _build_config(args)
    preflight(config)
    with workspace_lock(config.workspace), stop_on_signals():
        _offline_environment(config.workspace)
        _start_prefect(args.debug)
        from selectflow.flows.curate import curate  # imports Prefect: after the environment is set

        summary = curate(config)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from selectflow.tracking import tracking_uri

        _print_summary(summary, tracking_uri(config.tracking, config.workspace))
    return 0


def cmd_serve(args) -> int:
    """Serve `curate` as a deployment from this process: scheduled runs and runs triggered from the UI or API."""
    config = _build_config(args)
    preflight(config)
    _offline_environment(config.workspace)
    _start_prefect(args.debug)
    from selectflow.flows.curate import curate

    curate.serve(
        name=args.name,
        cron=args.cron or None,
        parameters={"config": config.model_dump(mode="json")},
        limit=args.limit,
        description="selectflow curate, served by `selectflow serve`",
        tags=["selectflow"],
    )
    return 0


def _print_summary(summary: dict, mlflow_uri: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from selectflow.summary import row_cells

    table = Table(title=f"selectflow run {summary['run_id']}")
    for column in ("stage", "docs in", "docs out", "dropped", "work s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in summary["stages"]:
        table.add_row(*row_cells(row))
    console = Console(soft_wrap=True)  # paths stay whole, on any terminal width
    console.print(table)
    quarantine = summary["quarantine"]
    reasons = ", ".join(f"{k}: {v}" for k, v in quarantine["reasons"].items()) or "none"
    console.print(f"Quarantined records: {quarantine['count']} ({reasons})")
    for table_path in quarantine["tables"][:5]:
        console.print(f"  {table_path}")
    if summary["skipped_links"]:
        console.print(f"Symlinks skipped:    {summary['skipped_links']} (inside input directories; "
                      "`follow_symlinks: true` on an input reads them)")
    console.print(f"Results (Parquet):   {summary['outputs']}")
    for stage, folder in summary.get("subsets", {}).items():
        if folder != summary["outputs"]:
            console.print(f"  {stage + ':':<18} {folder}")
    if probes := summary.get("probes"):
        console.print(f"Probes:              {probes['budget_tokens']} tokens each, seeds {probes['seeds']}; "
                      f"held-out reference bits/byte, mean [{probes['confidence']:.0%} CI]; vs random: paired difference")
        for name, row in probes["subsets"].items():
            console.print(f"  {name + ':':<8} {row['reference_bpb']}  {row['verdict']}")
        for note in probes["notes"]:
            console.print(f"  note: {note}")
        if probes.get("recommendation"):
            console.print(f"Recommendation:      {probes['recommendation']}")
    if risk := summary.get("risk"):
        console.print(f"Entropy-law risk:    {risk['verdict']}")
    if "report" in summary:
        console.print(f"Report (HTML):       {summary['report']}")
    console.print(f"Run record:          {summary['run_record']}")
    console.print(f"Lineage:             selectflow lineage DOC_ID   |   selectflow lineage --run {summary['run_id'][:8]}")
    console.print(f"MLflow run:          {summary['mlflow_run_id']} at {mlflow_uri}")
    if mlflow_uri.startswith("sqlite:///"):
        console.print(f"  browse it with:    mlflow ui --backend-store-uri {mlflow_uri}")


def _existing_store(workspace: str | None):
    from selectflow.store import ArtifactStore

    root = Path(workspace or DEFAULT_WORKSPACE).absolute()
    if not (root / "store" / "runs").is_dir():
        raise LookupError(f"{root} is not a selectflow workspace (no store/runs in it); pass the --workspace "
                          "of a run")
    return ArtifactStore(root / "store")


def cmd_lineage(args) -> int:
    from selectflow.lineage import UnknownDocument, doc_lineage, run_graph

    store = _existing_store(args.workspace)
    if args.doc is None:
        result = run_graph(store, args.run)
        print(json.dumps(result, indent=2) if args.json else _format_graph(result))
        return 0
    try:
        result = doc_lineage(store, args.doc, args.run)
    except UnknownDocument as exc:
        print(f"selectflow: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else _format_doc(result))
    return 0


def cmd_store_verify(args) -> int:
    """Check every artifact of a workspace against its manifest; with --quarantine, move the damaged ones aside."""
    store = _existing_store(args.workspace)
    damaged, checked, started = 0, 0, time.perf_counter()
    for ref in store.artifacts():
        checked += 1
        if problems := ref.verify():
            damaged += 1
            where = f"moved to {store.quarantine(ref, problems)}" if args.quarantine else "left in place"
            print(f"DAMAGED {ref.stage}/{ref.key} ({where}):", *problems, sep="\n  ")
    print(f"{checked} artifacts checked in {time.perf_counter() - started:.1f}s: {damaged} damaged"
          + ("" if not damaged or args.quarantine else "; --quarantine moves them aside, a re-run rebuilds them"))
    return 1 if damaged else 0


def _format_doc(result: dict) -> str:
    lines = [f"document {result['doc_id']} in run {result['run_id']}"]
    if result["note"]:
        lines.append(f"  note:   {result['note']}")
    if origin := result["origin"]:
        lines.append(f"  origin: {origin['source']} line {origin['line']} (domain {origin['domain']}, "
                     f"{origin['n_bytes']} bytes)")
        lines.append(f"  text:   {origin['text'][:100]!r}")
    if quarantined := result.get("quarantined"):
        lines.append(f"  quarantined: {quarantined['source']} line {quarantined['line']}: {quarantined['reason']}")
    for decision in result["decisions"]:
        keeper = f"; kept copy at {decision['ref_origin']}" if decision.get("ref_origin") else ""
        lines.append(f"  {decision['stage']:<13} {decision['decision']:<8} {decision['reason']}{keeper}")
    lines.append(f"  final: {result['final']}")
    return "\n".join(lines)


def _format_graph(result: dict) -> str:
    ended = f", finished {result['finished_at']}" if result["finished_at"] else ""
    lines = [f"run {result['run_id']} ({result['status']}, started {result['started_at']}{ended}, "
             f"MLflow run {result['mlflow_run_id']})"]
    if result["note"]:
        lines.append(f"note: {result['note']}")
    for stage in result["stages"]:
        lines.append(f"{stage['stage']}: {len(stage['artifacts'])} artifact(s)")
        for artifact in stage["artifacts"]:
            tables = ", ".join(f"{name}={rows}" for name, rows in artifact["tables"].items())
            inputs = artifact["inputs"]
            shown = ", ".join(inputs[:3]) + (f", ... ({len(inputs)} inputs)" if len(inputs) > 3 else "")
            lines.append(f"  {stage['stage']}/{artifact['key'][:12]}  [{tables}]  <- {shown}")
    return "\n".join(lines)


def cmd_config(args) -> int:
    if args.schema:
        print(json.dumps(CurateConfig.model_json_schema(), indent=2))
    else:
        print(json.dumps(_build_config(args).model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selectflow", description="Select the subset of a raw corpus worth training on, and record why."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks with errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command = functools.partial(commands.add_parser, parents=[common])

    def config_options(sub):
        sub.add_argument("--config", "-c", help=f"YAML config file (default: the embedded sample, {SAMPLE_CONFIG})")
        sub.add_argument("--input", "-i", action="append", default=[],
                         help="input path/glob/URL replacing the config's inputs (repeatable; text field 'text')")
        sub.add_argument("--workspace", "-w", help="where artifacts, runs and MLflow go (default ./selectflow-workspace)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config field, dotted, e.g. --set dedup.near.threshold=0.8")
        sub.add_argument("--dask-address", help="use this Dask scheduler (tcp://host:8786) instead of a LocalCluster")

    run = add_command(
        "run", help="run the curate flow (ingest, dedup, clusters, influence, selection, probes, risk check, report)"
    )
    config_options(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_run)

    serve = add_command(
        "serve", help="serve `curate` as a Prefect deployment (schedule, UI and API triggers) until interrupted")
    config_options(serve)
    serve.add_argument("--name", default="curate", help="deployment name (default: curate)")
    serve.add_argument("--cron", default="0 3 * * *",
                       help="schedule as a cron string, UTC (default: daily at 03:00; '' for no schedule)")
    serve.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1: runs share the workspace)")
    serve.set_defaults(func=cmd_serve)

    lineage = add_command("lineage", help="why a document is in or out; or a run's artifact graph")
    lineage.add_argument("doc", nargs="?", help="a doc_id, or FILE:LINE of an input record; omit for the graph")
    lineage.add_argument("--run", help="run id or prefix (default: the latest run)")
    lineage.add_argument("--workspace", "-w", help="workspace of the run (default ./selectflow-workspace)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)

    config = add_command("config", help="print the effective config (or its JSON schema)")
    config_options(config)
    config.add_argument("--schema", action="store_true", help="print the JSON schema of the config")
    config.set_defaults(func=cmd_config)

    store = commands.add_parser("store", help="check the artifact store")
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")
    verify = store_commands.add_parser(
        "verify", parents=[common], help="check every artifact's files against its manifest (size and sha256)")
    verify.add_argument("--workspace", "-w", help="workspace to check (default ./selectflow-workspace)")
    verify.add_argument("--quarantine", action="store_true",
                        help="move damaged artifacts to <workspace>/store/quarantine (a re-run rebuilds them)")
    verify.set_defaults(func=cmd_store_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Interrupted as exc:
        print(f"selectflow: {exc}: the run is recorded as interrupted; the same command resumes it", file=sys.stderr)
        exit_now(128 + exc.signum)  # everything is recorded: skip the interpreter's slow final garbage collection
    except BrokenPipeError:  # the reader went away (`selectflow lineage ... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        if args.debug:
            traceback.print_exc()
        print(f"selectflow: error: {exc}", file=sys.stderr)
        return 2


def _is_user_error(exc: Exception) -> bool:
    """Bad input, a wrong setting, an impossible budget, a busy workspace: said in one line, no traceback."""
    from selectflow.ingest import IngestError
    from selectflow.select import ZipError
    from selectflow.select.baselines import BudgetError

    if isinstance(exc, (KeyError, IndexError)):  # lookups gone wrong inside the code: bugs
        return False
    return isinstance(exc, (ConfigError, LookupError, IngestError, ZipError, BudgetError, WorkspaceBusy))


if __name__ == "__main__":
    sys.exit(main())
