"""`selectflow` command line: run the curate flow, audit lineage, inspect configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from selectflow.config import ConfigError, CurateConfig, load_config

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


def cmd_run(args) -> int:
    config = _build_config(args)
    _offline_environment(config.workspace)
    from flows.curate import curate  # imports Prefect: after the environment is set

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
    _offline_environment(config.workspace)
    from flows.curate import curate

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

    table = Table(title=f"selectflow run {summary['run_id']}")
    for column in ("stage", "docs in", "docs out", "dropped", "work s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in summary["stages"]:
        table.add_row(row["stage"], *(str(row[k]) for k in ("docs_in", "docs_out", "dropped", "work_s")))
    console = Console(soft_wrap=True)  # paths stay whole, on any terminal width
    console.print(table)
    quarantine = summary["quarantine"]
    reasons = ", ".join(f"{k}: {v}" for k, v in quarantine["reasons"].items()) or "none"
    console.print(f"Quarantined records: {quarantine['count']} ({reasons})")
    for table_path in quarantine["tables"][:5]:
        console.print(f"  {table_path}")
    console.print(f"Results (Parquet):   {summary['outputs']}")
    for stage, folder in summary.get("subsets", {}).items():
        if folder != summary["outputs"]:
            console.print(f"  {stage + ':':<18} {folder}")
    if risk := summary.get("risk"):
        console.print(f"Entropy-law risk:    {risk['verdict']}")
    if "report" in summary:
        console.print(f"Report (HTML):       {summary['report']}")
    console.print(f"Run record:          {summary['run_record']}")
    console.print(f"Lineage:             selectflow lineage DOC_ID   |   selectflow lineage --run {summary['run_id'][:8]}")
    console.print(f"MLflow run:          {summary['mlflow_run_id']} at {mlflow_uri}")
    if mlflow_uri.startswith("sqlite:///"):
        console.print(f"  browse it with:    mlflow ui --backend-store-uri {mlflow_uri}")


def cmd_lineage(args) -> int:
    from selectflow.lineage import doc_lineage, run_graph
    from selectflow.store import ArtifactStore

    store = ArtifactStore(Path(args.workspace or DEFAULT_WORKSPACE) / "store")
    if args.doc is None:
        result = run_graph(store, args.run)
        print(json.dumps(result, indent=2) if args.json else _format_graph(result))
    else:
        result = doc_lineage(store, args.doc, args.run)
        print(json.dumps(result, indent=2) if args.json else _format_doc(result))
    return 0


def _format_doc(result: dict) -> str:
    lines = [f"document {result['doc_id']} in run {result['run_id']}"]
    if origin := result["origin"]:
        lines.append(f"  origin: {origin['source']} line {origin['line']} (domain {origin['domain']}, "
                     f"{origin['n_bytes']} bytes)")
        lines.append(f"  text:   {origin['text'][:100]!r}")
    if quarantined := result.get("quarantined"):
        lines.append(f"  quarantined: {quarantined['source']} line {quarantined['line']}: {quarantined['reason']}")
    for decision in result["decisions"]:
        lines.append(f"  {decision['stage']:<13} {decision['decision']:<8} {decision['reason']}")
    lines.append(f"  final: {result['final']}")
    return "\n".join(lines)


def _format_graph(result: dict) -> str:
    lines = [f"run {result['run_id']} ({result['status']}, started {result['started_at']}, "
             f"MLflow run {result['mlflow_run_id']})"]
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_options(sub):
        sub.add_argument("--config", "-c", help=f"YAML config file (default: the embedded sample, {SAMPLE_CONFIG})")
        sub.add_argument("--input", "-i", action="append", default=[],
                         help="input path/glob/URL replacing the config's inputs (repeatable; text field 'text')")
        sub.add_argument("--workspace", "-w", help="where artifacts, runs and MLflow go (default ./selectflow-workspace)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config field, dotted, e.g. --set dedup.near.threshold=0.8")
        sub.add_argument("--dask-address", help="use this Dask scheduler (tcp://host:8786) instead of a LocalCluster")

    run = commands.add_parser(
        "run", help="run the curate flow (ingest, dedup, clusters, influence, selection, probes, risk check, report)"
    )
    config_options(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(func=cmd_run)

    serve = commands.add_parser(
        "serve", help="serve `curate` as a Prefect deployment (schedule, UI and API triggers) until interrupted")
    config_options(serve)
    serve.add_argument("--name", default="curate", help="deployment name (default: curate)")
    serve.add_argument("--cron", default="0 3 * * *",
                       help="schedule as a cron string, UTC (default: daily at 03:00; '' for no schedule)")
    serve.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1: runs share the workspace)")
    serve.set_defaults(func=cmd_serve)

    lineage = commands.add_parser("lineage", help="why a document is in or out; or a run's artifact graph")
    lineage.add_argument("doc", nargs="?", help="a doc_id, or FILE:LINE of an input record; omit for the graph")
    lineage.add_argument("--run", help="run id or prefix (default: the latest run)")
    lineage.add_argument("--workspace", "-w", help="workspace of the run (default ./selectflow-workspace)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)

    config = commands.add_parser("config", help="print the effective config (or its JSON schema)")
    config_options(config)
    config.add_argument("--schema", action="store_true", help="print the JSON schema of the config")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, LookupError) as exc:
        print(f"selectflow: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from selectflow.ingest import IngestError
        from selectflow.select import ZipError

        if isinstance(exc, (IngestError, ZipError)):  # bad input or an impossible budget: say it, no traceback
            print(f"selectflow: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
