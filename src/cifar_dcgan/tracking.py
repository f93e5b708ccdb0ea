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
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cifar_dcgan.errors import PipelineError

MAX_BATCH = 1000  # MLflow's limit of metric values per log_batch request
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view


class Tracker(Protocol):
    """What the library may tell the tracking store; implementations never change results."""

    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None: ...

    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_dataset(self, dataset: Mapping[str, Any], context: str) -> None: ...

    def flush(self, final: bool = True) -> None: ...

    def register_model(
        self, model, name: str, alias: str, description: str, tags: Mapping[str, Any], promote: str
    ) -> Any: ...


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

    def log_dataset(self, dataset, context):
        pass

    def flush(self, final=True):
        pass

    def register_model(self, model, name, alias, description, tags, promote):
        return None


class MlflowTracker:
    """Logs to one MLflow run through `MlflowClient`, on a writer thread of its own.

    Metric histories and image grids are handed to that thread, so training never waits for
    the store. A tracking store that fails mid-training (a locked database, a server
    restarting) never stops the training: refused metric values are kept and sent again at
    the next flush; at the end they are retried for a while, and what still cannot be stored
    is written to `spill_path` (JSON lines). The run gets a `tracking_errors` tag saying what
    happened.
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
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self.pending: list[tuple[Future, list]] = []  # (a sent batch, its metrics), not yet confirmed
        self.uploads: list[Future] = []  # image grids being written
        self.backlog = []  # metrics the store refused, to send again
        self.errors: list[str] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._log_batch([(key, value, step) for key, value in metrics.items()])

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None:
        self._log_batch([(key, value, first_step + i) for i, value in enumerate(values)])

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.uploads = [future for future in self.uploads if not future.done()]
        self.uploads.append(
            self.writer.submit(
                self._safely, self.client.log_image, self.run_id, image, key=key, step=step, synchronous=True
            )
        )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._safely(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._safely(self.client.set_tag, self.run_id, key, value)

    def log_dataset(self, dataset: Mapping[str, Any], context: str) -> None:
        """The data the run saw, as an MLflow dataset input (the runs table's Datasets column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(
            name=dataset["name"],
            digest=dataset["digest"],
            source_type="url",
            source=json.dumps({"url": redact(dataset["source"])}),
            profile=json.dumps(dataset.get("profile", {})),
        )
        inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
        self._safely(self.client.log_inputs, self.run_id, datasets=inputs)

    def flush(self, final: bool = True) -> None:
        """Confirm what was sent. Refused values are sent again: once (`final=False`, between
        epochs) or until stored or out of retries (`final=True`, then spilled to a file)."""
        self._collect(wait=final)  # between epochs, a slow or dead store must not hold training
        for attempt in range(self.retries if final else 1):
            if not self.backlog:
                break
            if attempt:
                time.sleep(self.retry_delay)
            self._send(self.backlog)
            self._collect(wait=final)
        if final:
            wait_for(self.uploads)  # the run's own image grids, every one written or given up
            self.uploads = []
        if final and self.backlog:
            self._spill()
        if final and self.errors:
            summary = f"{len(self.errors)} tracking error(s), first: {self.errors[0]}"
            self.errors = []
            self._safely(self.client.set_tag, self.run_id, "tracking_errors", summary[:5000])

    def close(self) -> None:
        self.writer.shutdown(wait=True)

    def register_model(self, model, name, alias, description, tags, promote):
        """Log a Keras generator as an MLflow model of this run (native `.keras`, its sha256 as
        the run tag `keras_sha256`), register it as a new version of `name` tagged with `tags`,
        and move `alias` by the `promote` policy (`registry.promotion`). The requirements name
        the TensorFlow distribution actually installed."""
        import tempfile

        import keras
        import mlflow.keras
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from cifar_dcgan import registry

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(model.input_shape[-1])))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
        )
        # explicit requirements: inferring them costs seconds per call
        requirements = [tensorflow_requirement(), f"keras=={keras.__version__}"]
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / "generator"
            mlflow.keras.save_model(model, str(saved), signature=signature, pip_requirements=requirements)
            self.client.set_tag(
                self.run_id, registry.SHA_TAG, registry.file_sha256(saved / registry.KERAS_FILE)
            )
            self.client.log_artifacts(self.run_id, str(saved), "generator")
        return registry.register(self.client, self.uri, self.run_id, name, alias, description, tags, promote)

    def _log_batch(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._send([Metric(key, float(value), now, int(step)) for key, value, step in points])

    def _send(self, metrics: list) -> None:
        if self.backlog is metrics:
            self.backlog = []
        for start in range(0, len(metrics), MAX_BATCH):
            chunk = metrics[start : start + MAX_BATCH]
            future = self.writer.submit(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
            self.pending.append((future, chunk))

    def _collect(self, wait: bool = True) -> None:
        """Check sent batches; without `wait`, only those already finished (never blocks)."""
        still_running = []
        for future, chunk in self.pending:
            if not wait and not future.done():
                still_running.append((future, chunk))
                continue
            try:
                future.result()
            except Exception as error:  # any failure of the store: keep the values for later
                self._refused(chunk, error)
        self.pending = still_running

    def _refused(self, chunk: list, error: Exception) -> None:
        self.backlog.extend(chunk)
        self.errors.append(
            f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        )
        print(
            f"warning: tracking store {redact(self.uri)} refused {len(chunk)} value(s) "
            f"({self.errors[-1]}); keeping them to send again",
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


def tensorflow_requirement() -> str:
    """The pip requirement of the TensorFlow that is installed: `tensorflow-cpu`, `tensorflow`
    (GPU machines) or another build, at its version."""
    from importlib import metadata

    for name in ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos", "tf-nightly"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    import tensorflow as tf

    return f"tensorflow=={tf.__version__}"


def redact(uri: str) -> str:
    """`uri` without a password or user name (`http://user:secret@host` -> `http://***@host`)."""
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.username and not parsed.password:
        return uri
    host = parsed.hostname or ""
    netloc = f"***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def prepared_dataset(data_dir: Path) -> dict | None:
    """What `prepare` wrote about its data (`dataset.json`), or None for data prepared before it."""
    try:
        return json.loads((data_dir / "dataset.json").read_text())
    except (OSError, ValueError):
        return None


def repo_root(env: Mapping[str, str] | None = None) -> Path:
    """The repository the stage belongs to, even when DVC runs it in a temporary copy."""
    env = os.environ if env is None else env
    return Path(env.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root(env) / 'mlflow.db'}"


def run_name(stage: str, env: Mapping[str, str] | None = None) -> str:
    """`<DVC experiment>/<stage>` under `dvc exp run`; otherwise `<short commit>/<stage>`, or
    `workspace/<stage>` when tracked files differ from that commit (dvc.lock aside: DVC
    rewrites it after every stage)."""
    env = os.environ if env is None else env
    if env.get("DVC_EXP_NAME"):
        return f"{env['DVC_EXP_NAME']}/{stage}"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock")
    return f"{commit}/{stage}" if commit and dirty == "" else f"workspace/{stage}"


def run_tags(stage: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags on every run: the stage, MLflow's standard source tags (commit, branch, script,
    user) and DVC's experiment name and baseline."""
    import getpass

    env = os.environ if env is None else env
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    tags = {
        "stage": stage,
        "mlflow.runName": run_name(stage, env),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": f"stages/{script}" if script.endswith(".py") else script,
    }
    with contextlib.suppress(Exception):
        tags["mlflow.user"] = getpass.getuser()
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = tags["git_commit"] = commit
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
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
    parent_run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[MlflowTracker]:
    """Open an MLflow run for one stage (or reopen `resume_run_id`, when training resumes);
    it ends FINISHED, FAILED or KILLED with the stage.

    Under `dvc exp run` the stage runs of one DVC experiment are children of one parent run
    named after it (created by the first of them), so the UI shows them together; outside
    an experiment the run is a child of `parent_run_id`, if given. `system_metrics` samples
    CPU, memory and GPU use into the run's "System metrics" tab."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    check_store(uri)
    client = parent = None
    try:
        client = open_store(uri)
        all_tags = {**run_tags(stage), **(tags or {})}
        with store_lock(uri):  # parallel workers: one creates the experiment
            experiment_id = _experiment_id(client, experiment, uri)
        parent = _experiment_parent(client, experiment_id) or parent_run_id
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = _reopen(client, resume_run_id, all_tags) if resume_run_id else None
        if run is None:
            run = client.create_run(experiment_id, run_name=all_tags["mlflow.runName"], tags=all_tags)
    except MlflowException as error:
        _mark_parent(client, parent, "FAILED")
        raise PipelineError(
            f"cannot use the MLflow tracking store {redact(uri)}: {error.message}; "
            "check MLFLOW_TRACKING_URI or unset it to use ./mlflow.db"
        ) from None
    # from here on the run ends FAILED, KILLED or FINISHED, whatever happens
    run_id, status, tracker, monitor = run.info.run_id, "FAILED", None, None
    try:
        tracker = MlflowTracker(client, run_id, uri, spill_path=repo_root() / "mlflow-unlogged.jsonl")
        logged = run.data.params if resume_run_id and run.info.run_id == resume_run_id else {}
        changed = {k: f"{logged[k]} -> {v}" for k, v in params.items() if k in logged and logged[k] != str(v)}
        if changed:  # a resumed run given more epochs: MLflow params cannot change, so say it in tags
            tracker.set_tags({"changed_params": "; ".join(f"{k}: {v}" for k, v in changed.items())})
        items = [Param(key, str(value)) for key, value in params.items() if key not in logged]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start : start + 100])
        if system_metrics:
            monitor = _system_metrics(run_id, uri, resume=bool(logged))
        _mark_parent(client, parent, "RUNNING")
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _end_run(client, run_id, status, tracker, monitor)
        _mark_parent(client, parent, status)


def _end_run(client, run_id: str, status: str, tracker, monitor) -> None:
    """Stop the sampler, send what is queued, set the run's end status (tried even if the rest fails)."""
    try:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()
        if tracker is not None:
            tracker.flush()
            tracker.close()
    finally:
        for attempt in range(3):
            try:
                client.set_terminated(run_id, status=status)
                break
            except Exception as error:  # the store failing now must not hide the stage's own error
                if attempt == 2:
                    print(f"warning: could not mark run {run_id} {status}: {error}", file=sys.stderr)
                else:
                    time.sleep(1.0)


def _experiment_parent(client, experiment_id: str) -> str | None:
    """The parent run of the current DVC experiment (created on first use), or None outside one."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return None
    quoted = name.replace("'", "\\'")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.dvc_exp_name = '{quoted}' and tags.dvc_experiment = 'true'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {
        "dvc_experiment": "true",
        "dvc_exp_name": name,
        "mlflow.note.content": f"DVC experiment {name}: its stage runs are nested below",
        **{k.lower(): v for k, v in os.environ.items() if k == "DVC_EXP_BASELINE_REV"},
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def _mark_parent(client, parent: str | None, status: str) -> None:
    """The experiment's parent run shows the state of its latest stage."""
    if parent is None or os.environ.get("DVC_EXP_NAME") is None:
        return
    with contextlib.suppress(Exception):
        if status == "RUNNING":
            client.update_run(parent, status="RUNNING")
        else:
            client.set_terminated(parent, status=status)


def _system_metrics(run_id: str, uri: str, resume: bool):
    """MLflow's own sampler of CPU, memory, disk, network and GPU use, every 10 s, on a thread;
    a stage shorter than that still gets one sample, taken as it ends."""
    try:
        import logging

        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger(SystemMetricsMonitor.__module__).setLevel(logging.WARNING)  # start/stop notices

        class Monitor(SystemMetricsMonitor):
            published = 0

            def publish_metrics(self, metrics):
                super().publish_metrics(metrics)
                self.published += 1

            def finish(self):
                super().finish()
                if not self.published:  # stopped inside the first interval: MLflow logs nothing then
                    self.collect_metrics()
                    self.publish_metrics(self.aggregate_metrics())
                    self.mlflow_logger.flush()

        monitor = Monitor(run_id, resume_logging=resume, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as error:  # e.g. psutil missing: the stage runs without the tab
        print(f"warning: system metrics are off ({type(error).__name__}: {error})", flush=True)
        return None


def _reopen(client, run_id: str, tags: Mapping[str, str]):
    """The run `run_id` set RUNNING again, or None if the store no longer has it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage == "deleted":
        print(f"the MLflow run {run_id} to resume was deleted; continuing in a new run", flush=True)
        return None
    for key, value in {**tags, "resumed": "true"}.items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status="RUNNING")  # last: a failure before it leaves the run as it was
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
                f"the MLflow tracking server {redact(uri)} is unreachable ({type(error).__name__}); "
                "start it, correct MLFLOW_TRACKING_URI, or unset it to track into ./mlflow.db"
            ) from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise PipelineError(
                f"tracking store {redact(uri)}: folder {folder} does not exist; "
                "create it or fix MLFLOW_TRACKING_URI"
            )


@contextlib.contextmanager
def store_lock(uri: str, timeout: float = 600.0) -> Iterator[None]:
    """Hold `<database>.lock` while creating or migrating a SQLite store, or creating an
    experiment in it: two workers that start at once on a new store (`dvc queue start -j 2`)
    would otherwise both run MLflow's schema migrations and leave the database unusable.
    A tracking server serialises this itself; nothing to lock then."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    path = f"{uri.removeprefix('sqlite:///')}.lock"
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise PipelineError(
            f"the tracking store {redact(uri)} stayed locked for {timeout:.0f} s ({path}); "
            "if no other stage is running, delete that file"
        ) from None


def open_store(uri: str):
    """An `MlflowClient` on `uri` whose database exists and is migrated (done once, locked)."""
    from mlflow import MlflowClient

    with store_lock(uri):  # constructing the client creates and migrates the tables
        return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id (created if new), tagged to open in MLflow's model-training view."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # beside a SQLite store, never relative to the working folder: under `dvc exp run
        # --queue` that is a temporary copy, deleted with the artifacts in it
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def _git(*args: str) -> str | None:
    """Output of `git ARGS` in the current folder, or None outside a git repository."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None
