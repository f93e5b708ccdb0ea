"""Experiment tracking: stages open an MLflow run (`stage_run`) and hand its `MlflowTracker`
to the library, which sees only the `cifar_dcgan.tracker.Tracker` interface.

Under `dvc exp run` the stage runs of one DVC experiment are nested under one parent run;
each run is tagged with its stage, its commit and its DVC experiment. Where the store is and
how it is opened: `cifar_dcgan.store`.
"""

import contextlib
import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path
from typing import Any

import numpy as np

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.metric_writer import MetricWriter
from cifar_dcgan.store import (
    check_store,
    experiment_id,
    open_store,
    redact,
    repo_root,
    store_lock,
    tag_condition,
    tracking_uri,
)


class MlflowTracker:
    """Logs to one MLflow run through `MlflowClient`, on a writer thread of its own.

    Metric histories and image grids are handed to that thread, so training never waits for
    the store. A tracking store that fails mid-training (a locked database, a server
    restarting) never stops the training: refused metric values are kept (`MetricWriter`),
    other calls are tried three times. The run gets a `tracking_errors` tag saying what
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
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self.metrics = MetricWriter(client, run_id, uri, self.writer, spill_path, retries, retry_delay)
        self.uploads: list[Future] = []  # image grids being written
        self.errors: list[str] = []
        # a resumed run's last step per metric: steps up to it were logged before the
        # interruption and are not logged again (an epoch redone after a crash)
        self.logged_through: dict[str, int] = {}
        self.failing = False  # a call just gave up: the next ones try once, so a dead store costs little

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._log([(key, value, step) for key, value in metrics.items()])

    def log_history(self, key: str, values: Sequence[float], first_step: int) -> None:
        self._log([(key, value, first_step + i) for i, value in enumerate(values)])

    def _log(self, points: list[tuple[str, float, int]]) -> None:
        new = [p for p in points if p[2] > self.logged_through.get(p[0], -1)]
        if new:
            self.metrics.log(new)

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
        """Confirm the metrics sent (`MetricWriter.flush`); at the end also wait for the image
        grids and tag the run with what went wrong. Metric values get their whole retry budget
        even when other calls have failed: a server restarting gets every value once it is back."""
        self.metrics.flush(final)
        if not final:
            return
        wait_for(self.uploads)  # the run's own image grids, every one written or given up
        self.uploads = []
        errors, self.errors, self.metrics.errors = self.metrics.errors + self.errors, [], []
        if errors:
            summary = f"{len(errors)} tracking error(s), first: {errors[0]}"
            print(f"warning: the tracking store {redact(self.uri)}: {summary}"[:1000], flush=True)
            self._safely(self.client.set_tag, self.run_id, "tracking_errors", summary[:5000])

    def close(self) -> None:
        self.writer.shutdown(wait=True)

    def _safely(self, call, *args, **kwargs) -> None:
        attempts = 1 if self.failing else 3
        for attempt in range(attempts):
            try:
                call(*args, **kwargs)
                self.failing = False
                return
            except Exception as error:  # tracking must never stop training
                if attempt == attempts - 1:
                    first = str(error).splitlines()[0] if str(error) else ""
                    self.errors.append(
                        f"{getattr(call, '__name__', 'call')}: {type(error).__name__}: {first}"[:400]
                    )
                    if not self.failing:  # one line when the store starts failing, not one per call
                        print(f"warning: tracking call failed: {self.errors[-1]}", flush=True)
                    self.failing = True
                else:
                    time.sleep(1.0)


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
            experiment_key = experiment_id(client, experiment, uri)
        parent = _experiment_parent(client, experiment_key) or parent_run_id
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = _reopen(client, resume_run_id, all_tags) if resume_run_id else None
        if run is None:
            run = client.create_run(experiment_key, run_name=all_tags["mlflow.runName"], tags=all_tags)
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
        if resume_run_id and run_id == resume_run_id:
            tracker.logged_through = {m.key: m.step for m in run.data._metric_objs}  # latest step per key
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


def _experiment_parent(client, experiment: str) -> str | None:
    """The parent run of the current DVC experiment (created on first use), or None outside one.
    A DVC experiment's name is unique in one repository only: two sweeps, or two users, on a
    shared server each have a `base-1`. So the parent is the run of this name, baseline commit
    and user (and sweep, when `CIFAR_DCGAN_SWEEP` names one)."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return None
    identity = _identity(os.environ)
    found = _parents(client, experiment, identity)
    if found:
        return found[0].info.run_id
    tags = {
        "dvc_experiment": "true",
        **{k: v for k, v in identity.items() if v},
        "mlflow.note.content": f"DVC experiment {name}: its stage runs are nested below",
    }
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return client.create_run(experiment, run_name=name, tags=tags).info.run_id


def _identity(env: Mapping[str, str]) -> dict[str, str]:
    """What tells one DVC experiment's parent run from another's of the same name."""
    return {
        "dvc_exp_name": env.get("DVC_EXP_NAME", ""),
        "dvc_exp_baseline_rev": env.get("DVC_EXP_BASELINE_REV", ""),
        "mlflow.user": getpass.getuser(),
        "sweep": env.get("CIFAR_DCGAN_SWEEP", ""),
    }


def _parents(client, experiment: str, identity: Mapping[str, str]) -> list:
    condition = tag_condition("dvc_exp_name", identity["dvc_exp_name"])  # None if unquotable
    found = client.search_runs(
        [experiment],
        filter_string=" and ".join(filter(None, [condition, "tags.dvc_experiment = 'true'"])),
        max_results=1000,
    )
    return [run for run in found if _same_experiment(run.data.tags, identity)]


def end_orphaned_runs(env: Mapping[str, str], experiment_name: str, keep: str | None, why: str) -> list[str]:
    """End as KILLED the stage runs still RUNNING under the DVC experiment that `env` names
    (its name, baseline and sweep), except `keep`: runs of an earlier attempt whose machine
    died, which nothing else would ever end. Returns the names of the runs ended."""
    client = open_store(tracking_uri(env))  # on a server, MLflow's retries bounded as every stage's
    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        return []
    ended = []
    for parent in _parents(client, found.experiment_id, _identity(env)):
        running = f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'"
        children = client.search_runs([found.experiment_id], filter_string=running)
        for run in children:
            if run.info.run_id != keep:
                client.set_tag(run.info.run_id, "ended_by", why)
                client.set_terminated(run.info.run_id, status="KILLED")
                ended.append(run.info.run_name)
    return ended


def _same_experiment(tags: Mapping[str, str], identity: Mapping[str, str]) -> bool:
    """A parent run's tags name this experiment; one made before parents recorded their user
    (no `mlflow.user` tag) counts as the user's own."""
    return all(tags.get(k, "") == v or (k == "mlflow.user" and k not in tags) for k, v in identity.items())


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


def _git(*args: str) -> str | None:
    """Output of `git ARGS` in the current folder, or None outside a git repository."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None
