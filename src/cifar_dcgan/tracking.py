"""Experiment tracking, injected: stages open an MLflow run and hand a Tracker to the library.

Training code only ever sees the small `Tracker` interface, so tracking can be switched off
(`NullTracker`) without changing a single number the training computes.

Where runs go: `MLFLOW_TRACKING_URI` when set; otherwise `sqlite:///<repo root>/mlflow.db`
with artifacts in `<repo root>/mlartifacts`, where the repo root is `DVC_ROOT` when DVC
runs the stage in a temporary copy (`dvc exp run --queue` / `--temp`), so that queued
experiments land in the same store as `dvc repro`.
"""

import contextlib
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cifar_dcgan.errors import PipelineError

MAX_BATCH = 1000  # MLflow's limit of metric values per log_batch request


class Tracker(Protocol):
    """What the library may tell the tracking store; implementations never change results."""

    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None: ...

    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...

    def register_model(self, model, name: str, alias: str, description: str) -> str | None: ...


class NullTracker:
    """Tracking switched off."""

    run_id = None

    def log_metrics(self, metrics, step):
        pass

    def log_history(self, key, values, first_step):
        pass

    def log_image(self, image, key, step):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass

    def flush(self):
        pass

    def register_model(self, model, name, alias, description):
        return None


class MlflowTracker:
    """Logs to one MLflow run through `MlflowClient`, batching metric histories."""

    def __init__(self, client, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.pending = []  # asynchronous log_batch operations not yet confirmed

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._log_batch([(key, value, step) for key, value in metrics.items()])

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None:
        self._log_batch([(key, value, first_step + i) for i, value in enumerate(values)])

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.client.log_image(self.run_id, image, key=key, step=step, synchronous=False)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def register_model(self, model, name: str, alias: str, description: str) -> str:
        """Log a Keras generator as an MLflow model, register a new version, move `alias` to it."""
        import keras
        import mlflow
        import mlflow.keras
        import tensorflow as tf
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(model.input_shape[-1])))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
        )
        # explicit requirements: inferring them costs seconds per call
        requirements = [f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"]
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.run_id, nested=True):
            info = mlflow.keras.log_model(
                model,
                name="generator",
                signature=signature,
                pip_requirements=requirements,
                registered_model_name=name,
            )
        version = str(info.registered_model_version)
        self.client.update_model_version(name, version, description=description)
        self.client.set_registered_model_alias(name, alias, version)
        return version

    def _log_batch(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value, step in points]
        for start in range(0, len(metrics), MAX_BATCH):
            # asynchronous: training goes on while MLflow writes (16 ms per value when synchronous)
            operation = self.client.log_batch(
                self.run_id, metrics=metrics[start : start + MAX_BATCH], synchronous=False
            )
            self.pending.append(operation)

    def flush(self) -> None:
        """Wait until every metric logged so far is stored (raises what storing raised)."""
        import mlflow

        while self.pending:
            self.pending.pop(0).wait()
        mlflow.flush_artifact_async_logging()


def repo_root(env: Mapping[str, str] | None = None) -> Path:
    """The repository the stage belongs to, even when DVC runs it in a temporary copy."""
    env = os.environ if env is None else env
    return Path(env.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root(env) / 'mlflow.db'}"


def run_tags(stage: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags on every run: the stage, the git commit and DVC's experiment name and baseline."""
    env = os.environ if env is None else env
    tags = {"stage": stage}
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    for key in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        if env.get(key):
            tags[key.lower()] = env[key]
    return tags


@contextlib.contextmanager
def stage_run(
    stage: str,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[MlflowTracker]:
    """Open an MLflow run for one stage (or reopen `resume_run_id`, when training resumes);
    it ends FINISHED, FAILED or KILLED with the stage."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    check_store(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        all_tags = {**run_tags(stage), **(tags or {})}
        run = _reopen(client, resume_run_id, all_tags) if resume_run_id else None
        if run is None:
            run = client.create_run(_experiment_id(client, experiment, uri), run_name=stage, tags=all_tags)
    except MlflowException as error:
        raise PipelineError(
            f"cannot use the MLflow tracking store {uri}: {error.message}; "
            "check MLFLOW_TRACKING_URI or unset it to use ./mlflow.db"
        ) from None
    run_id = run.info.run_id
    tracker = MlflowTracker(client, run_id, uri)
    from mlflow.entities import Param

    items = [Param(key, str(value)) for key, value in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.flush()
        client.set_terminated(run_id, status=status)


def _reopen(client, run_id: str, tags: Mapping[str, str]):
    """The run `run_id` set RUNNING again, or None if the store no longer has it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    client.update_run(run_id, status="RUNNING")
    for key, value in {**tags, "resumed": "true"}.items():
        client.set_tag(run_id, key, value)
    return run


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, when the tracking store cannot be reached."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            raise PipelineError(
                f"the MLflow tracking server {uri} is unreachable ({type(error).__name__}); start it, "
                "correct MLFLOW_TRACKING_URI, or unset it to track into ./mlflow.db"
            ) from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise PipelineError(
                f"tracking store {uri}: folder {folder} does not exist; create it or fix MLFLOW_TRACKING_URI"
            )


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
        location = (repo_root() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None
