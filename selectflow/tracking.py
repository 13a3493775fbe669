"""MLflow tracking: a parent run per flow run, a nested run per stage with its manifests and datasets."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

from selectflow.config import TrackingConfig
from selectflow.stopping import is_interruption
from selectflow.store import ArtifactRef
from selectflow.workspace import setup_lock


def tracking_uri(cfg: TrackingConfig, workspace: Path) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace / 'mlflow.db'}"


class Tracker:
    """Thin wrapper over MLflow so stages log the same way; only the flow's own process talks to MLflow."""

    def __init__(self, cfg: TrackingConfig, workspace: Path):
        import mlflow  # ~1 s: imported only when tracking starts

        self.mlflow = mlflow
        self.uri = tracking_uri(cfg, workspace)
        mlflow.set_tracking_uri(self.uri)
        # The first use of a SQLite store creates and migrates it: two processes doing that at once break it.
        database = Path(self.uri.removeprefix("sqlite:///")) if self.uri.startswith("sqlite:///") else None
        with setup_lock(database.with_name(database.name + ".lock")) if database else contextlib.nullcontext():
            experiment = mlflow.get_experiment_by_name(cfg.experiment)
            if experiment is None:
                # With our own SQLite store, keep artifacts in the workspace too (MLflow's default is ./mlruns of cwd).
                location = (workspace / "mlruns").as_uri() if database else None
                experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        self.parent_id: str | None = None

    def mark_killed(self, run_ids: list[str]) -> None:
        """End MLflow runs whose process was killed (they would say RUNNING forever) as KILLED."""
        client = self.mlflow.MlflowClient(self.uri)
        for run_id in run_ids:
            with contextlib.suppress(self.mlflow.exceptions.MlflowException):
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "KILLED")

    @contextlib.contextmanager
    def run(self, run_name: str | None, tags: dict[str, str], params: dict):
        with self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=tags) as run:
            self.parent_id = run.info.run_id
            self.mlflow.log_params(_flatten(params))
            try:
                yield run
            except BaseException as exc:
                self.mlflow.end_run("KILLED" if is_interruption(exc) else "FAILED")
                raise

    def stage(
        self,
        name: str,
        refs: list[ArtifactRef],
        params: dict,
        metrics: dict[str, float],
        series: list[dict[str, float]] | None = None,
        texts: dict[str, str] | None = None,
    ) -> str:
        """A nested run for one stage: parameters, metrics, every manifest, and output datasets for lineage.

        `series` holds one dict of metrics per step (e.g. per selection round); `texts` are files to attach.
        """
        mlflow = self.mlflow
        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=name, nested=True, tags={"selectflow.stage": name}
        ) as run:
            mlflow.log_params(_flatten(params))
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            for step, values in enumerate(series or []):
                mlflow.log_metrics({k: float(v) for k, v in values.items() if isinstance(v, (int, float))}, step=step)
            for filename, content in (texts or {}).items():
                mlflow.log_text(content, filename)
            with tempfile.TemporaryDirectory() as tmp:
                for ref in refs:
                    path = Path(tmp) / f"{ref.stage}-{ref.key}.json"
                    path.write_text((Path(ref.path) / "manifest.json").read_text())
                mlflow.log_artifacts(tmp, artifact_path="manifests")
            for ref in refs[:50]:  # a dataset entry per artifact; huge shard lists are summarised by manifests
                mlflow.log_input(_dataset(ref), context=name)
            return run.info.run_id

    def log_summary(
        self,
        metrics: dict[str, float],
        artifacts: dict[str, dict] | None = None,
        tags: dict[str, str] | None = None,
        files: list[Path] = (),
    ) -> None:
        """Metrics, JSON artifacts, tags and files on the flow's parent run."""
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=self.parent_id)
        for name, payload in (artifacts or {}).items():
            self.mlflow.log_dict(payload, name, run_id=self.parent_id)
        client = self.mlflow.MlflowClient(self.uri)
        for key, value in (tags or {}).items():
            client.set_tag(self.parent_id, key, value)
        for path in files:
            client.log_artifact(self.parent_id, str(path))


def _dataset(ref: ArtifactRef):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a file:// URI matches MLflow's local source twice; either is right
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(ref.path).as_uri())
    return MetaDataset(source=source, name=f"{ref.stage}/{ref.key}", digest=ref.key[:36])


def _flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat
