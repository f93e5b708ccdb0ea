"""Experiment tracking, injected: stages open an MLflow run and hand a Tracker to the library.

Training code only ever sees the small `Tracker` interface, so tracking can be switched off
(`NullTracker`) without changing a single number the training computes.

Where runs go: `MLFLOW_TRACKING_URI` when set; otherwise `sqlite:///<repo root>/mlflow.db`
with artifacts in `<repo root>/mlartifacts`, where the repo root is `DVC_ROOT` when DVC
runs the stage in a temporary copy (`dvc exp run --queue` / `--temp`), so that queued
experiments land in the same store as `dvc repro`.
"""

import contextlib
import json
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

    def flush(self, final: bool = True) -> None: ...

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

    def flush(self, final=True):
        pass

    def register_model(self, model, name, alias, description):
        return None


class MlflowTracker:
    """Logs to one MLflow run through `MlflowClient`: metric histories in asynchronous batches.

    A tracking store that fails mid-training (a locked database, a server restarting) never
    stops the training: refused metric values are kept and sent again at the next flush; at
    the end they are retried for a while, and what still cannot be stored is written to
    `spill_path` (JSON lines). The run gets a `tracking_errors` tag saying what happened.
    """

    def __init__(
        self,
        client,
        run_id: str,
        uri: str,
        spill_path: Path | None = None,
        retries: int = 5,
        retry_delay: float = 2.0,
    ):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.spill_path, self.retries, self.retry_delay = spill_path, retries, retry_delay
        self.pending = []  # (asynchronous operation, its metrics), not yet confirmed
        self.backlog = []  # metrics the store refused, to send again
        self.errors: list[str] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._log_batch([(key, value, step) for key, value in metrics.items()])

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None:
        self._log_batch([(key, value, first_step + i) for i, value in enumerate(values)])

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self._safely(self.client.log_image, self.run_id, image, key=key, step=step, synchronous=False)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._safely(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._safely(self.client.set_tag, self.run_id, key, value)

    def flush(self, final: bool = True) -> None:
        """Confirm what was sent. Refused values are sent again: once (`final=False`, between
        epochs) or until stored or out of retries (`final=True`, then spilled to a file)."""
        import mlflow

        self._collect(wait=final)  # between epochs, a slow or dead store must not hold training
        for attempt in range(self.retries if final else 1):
            if not self.backlog:
                break
            if attempt:
                time.sleep(self.retry_delay)
            self._send(self.backlog)
            self._collect(wait=final)
        if final:
            self._safely(mlflow.flush_artifact_async_logging)
        if final and self.backlog:
            self._spill()
        if final and self.errors:
            summary = f"{len(self.errors)} tracking error(s), first: {self.errors[0]}"
            self.errors = []
            self._safely(self.client.set_tag, self.run_id, "tracking_errors", summary[:5000])

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
        self._send([Metric(key, float(value), now, int(step)) for key, value, step in points])

    def _send(self, metrics: list) -> None:
        if self.backlog is metrics:
            self.backlog = []
        for start in range(0, len(metrics), MAX_BATCH):
            chunk = metrics[start : start + MAX_BATCH]
            try:  # asynchronous: training goes on while MLflow writes (16 ms per value when synchronous)
                self.pending.append(
                    (self.client.log_batch(self.run_id, metrics=chunk, synchronous=False), chunk)
                )
            except Exception as error:  # any failure of the store: keep the values for later
                self._refused(chunk, error)

    def _collect(self, wait: bool = True) -> None:
        """Check sent batches; without `wait`, only those already finished (never blocks)."""
        still_running = []
        for operation, chunk in self.pending:
            futures = getattr(operation, "_operation_futures", None)
            if not wait and futures is not None and not all(f.done() for f in futures):
                still_running.append((operation, chunk))
                continue
            try:
                operation.wait()
            except Exception as error:
                self._refused(chunk, error)
        self.pending = still_running

    def _refused(self, chunk: list, error: Exception) -> None:
        self.backlog.extend(chunk)
        self.errors.append(
            f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        )
        print(
            f"warning: tracking store {self.uri} refused {len(chunk)} value(s) ({self.errors[-1]}); "
            "keeping them to send again",
            flush=True,
        )

    def _safely(self, call, *args, **kwargs) -> None:
        for attempt in range(3):
            try:
                call(*args, **kwargs)
                return
            except Exception as error:  # tracking must never stop training
                if attempt == 2:
                    self.errors.append(
                        f"{getattr(call, '__name__', 'call')}: {type(error).__name__}: {error}"[:400]
                    )
                    print(f"warning: tracking call failed: {self.errors[-1]}", flush=True)
                else:
                    time.sleep(1.0)

    def _spill(self) -> None:
        lost = [
            {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in self.backlog
        ]
        self.errors.append(f"{len(lost)} value(s) could not be stored")
        if self.spill_path is not None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as file:
                file.writelines(json.dumps({"run_id": self.run_id, **m}) + "\n" for m in lost)
            print(f"warning: {len(lost)} metric value(s) written to {self.spill_path} instead", flush=True)
        self.backlog = []


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
    tracker = MlflowTracker(client, run_id, uri, spill_path=repo_root() / "mlflow-unlogged.jsonl")
    from mlflow.entities import Param

    logged = run.data.params if resume_run_id and run.info.run_id == resume_run_id else {}
    changed = {k: f"{logged[k]} -> {v}" for k, v in params.items() if k in logged and logged[k] != str(v)}
    if changed:  # a resumed run given more epochs: MLflow params cannot change, so say it in tags
        client.set_tag(run.info.run_id, "changed_params", "; ".join(f"{k}: {v}" for k, v in changed.items()))
    items = [Param(key, str(value)) for key, value in params.items() if key not in logged]
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
        tracker._safely(client.set_terminated, run_id, status=status)


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
