"""One trial on one node: the DVC experiment of one arm and seed in a fresh clone, each epoch's
training checkpoint handed to the caller (Ray Tune keeps it), then the experiment pushed.

A trial given the checkpoint of an earlier attempt (its node died) copies it into the clone's
`models/checkpoint` and `models/snapshots`, both `persist` outputs: train-gan resumes from it
exactly as after an interrupted `dvc repro`, in the same MLflow run.

That is why a trial does what `dvc exp run -n NAME -S ...` does in three steps: the overrides
written into params.yaml (by DVC's own parser), `dvc repro` with the variables `dvc exp run`
sets for the stages (its name and baseline, by which the MLflow parent run is found), then
`dvc exp save -n NAME`. `dvc exp run` itself checks every output out from dvc.lock before
reproducing, which would replace a restored checkpoint with none."""

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` applies

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.sweep.plan import Trial
from cifar_dcgan.sweep.workspace import Source, check_environment, clone, command, env, tail
from cifar_dcgan.tracking import end_orphaned_runs

POLL_SECONDS = 1.0  # how often the trial looks for a new epoch checkpoint
PARTS = {"checkpoint": "models/checkpoint", "snapshots": "models/snapshots"}  # kept folder: clone's folder

Report = Callable[[dict, Path | None], None]  # metrics and, when there is one, a checkpoint folder


def run_trial(trial: Trial, source: Source, folder: Path, resume: Path | None, report: Report) -> dict:
    """Run `trial` in `folder` (its own, empty), resuming from the kept checkpoint folder
    `resume` if given; returns its final metrics, with the seconds each part took (`setup_s`:
    the clone, the judge restored, the checkpoint; `repro_s`: the stages; `push_s`: the
    experiment saved and pushed)."""
    started = time.monotonic()
    check_environment(source.environment)
    log = folder / "trial.log"
    repo = clone(source, folder, log)
    # the judge and the stages before it, as the sweep's first step left them in the run cache
    command(["dvc", "pull", "--run-cache", "--quiet"], repo, source, log, check=False)
    resumed_from = restore(resume, repo) if resume else 0
    apply_overrides(repo / "params.yaml", list(trial.overrides))
    run = ["dvc", "repro", "--pull"]
    experiment = {"DVC_EXP_NAME": trial.name, "DVC_EXP_BASELINE_REV": source.commit}
    _end_orphans(repo, {**env(source, repo), **experiment}, log)
    seconds = {"setup_s": time.monotonic() - started}
    with open(log, "a") as out:
        out.write(f"$ {' '.join(run)}  (experiment {trial.name}: {' '.join(trial.overrides)})\n")
        out.flush()
        process = subprocess.Popen(
            run,
            cwd=repo,
            env={**env(source, repo), **experiment},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _watch(process, repo, folder, resumed_from, report)
        finally:
            if process.poll() is None:  # the trial was cancelled: train-gan saves its checkpoint on SIGTERM
                _stop(process)
    if process.returncode != 0:
        raise PipelineError(
            f"trial {trial.name}: `dvc repro` failed (exit {process.returncode}):\n{tail(log)}"
        )
    seconds["repro_s"] = time.monotonic() - started - seconds["setup_s"]
    command(["dvc", "exp", "save", "--quiet", "-n", trial.name], repo, source, log)
    # --force: a name free when the sweep started can only hold an earlier attempt of this trial
    command(["dvc", "exp", "push", "--force", "--run-cache", "origin", trial.name], repo, source, log)
    seconds["push_s"] = time.monotonic() - started - seconds["setup_s"] - seconds["repro_s"]
    metrics = json.loads((repo / "reports" / "train_gan" / "metrics.json").read_text())
    final = {**_numbers(metrics), **seconds, "resumed_from_epoch": resumed_from, "finished": 1}
    report(final, None)  # no checkpoint: a finished training's would make a rerun train again
    return final


def restore(kept: Path, repo: Path) -> int:
    """Copy a kept checkpoint into the clone; the epochs it had done."""
    if not (kept / "checkpoint" / "state.npz").is_file():
        raise PipelineError(
            f"the checkpoint Ray handed this rerun ({kept}) holds no training state: --storage must "
            "be one folder every node reaches at the same path (NFS, say)"
        )
    for part, place in PARTS.items():
        if (kept / part).is_dir():
            shutil.copytree(kept / part, repo / place, dirs_exist_ok=True)
    return epochs_done(repo / PARTS["checkpoint"] / "state.npz")


def keep(repo: Path, target: Path) -> Path:
    """A copy of the clone's checkpoint and snapshots in `target`: the state file first, so
    that the snapshots are never older than it."""
    for part, place in PARTS.items():
        if (repo / place).is_dir():
            shutil.copytree(repo / place, target / part)
    return target


def epochs_done(state: Path) -> int:
    return _progress(state)[0]


def _progress(state: Path) -> tuple[int, bool]:
    """The epochs a checkpoint has done, and whether its training's reports were written."""
    meta = _meta(state)
    return int(meta.get("epochs_done", 0)), bool(meta.get("reported"))


def _meta(state: Path) -> dict:
    try:
        with np.load(state, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError):
        return {}


def _watch(process: subprocess.Popen, repo: Path, folder: Path, resumed_from: int, report: Report) -> None:
    """Until `process` ends, hand each new epoch checkpoint to `report`."""
    state = repo / PARTS["checkpoint"] / "state.npz"
    seen, count = _stamp(state), 0
    while process.poll() is None:
        time.sleep(POLL_SECONDS)
        stamp = _stamp(state)
        if stamp is None or stamp == seen:
            continue
        seen, count = stamp, count + 1
        kept = keep(repo, folder / f"checkpoint-{count:04d}")
        epochs, reported = _progress(kept / "checkpoint" / "state.npz")
        # not the finished training's last save: a rerun from it would train again from scratch
        # (checkpoint.load), while the last epoch's checkpoint before it has its reports rewritten
        if epochs > resumed_from and not reported:
            report({"epoch": epochs, "resumed_from_epoch": resumed_from, **_last_snapshot(kept)}, kept)
        shutil.rmtree(kept, ignore_errors=True)


def _end_orphans(repo: Path, variables: dict, log: Path) -> None:
    """Runs an earlier attempt of this trial left RUNNING when its machine died, ended as
    KILLED; not the run the restored checkpoint continues."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    state = repo / PARTS["checkpoint"] / "state.npz"
    keep_run = _meta(state).get("run_id") if state.is_file() else None
    with open(log, "a") as out:
        try:
            ended = end_orphaned_runs(
                variables, params["tracking"]["experiment"], keep_run, "a rerun of its sweep trial"
            )
        except Exception as error:  # tracking must never stop training
            out.write(f"warning: could not end an earlier attempt's runs: {type(error).__name__}: {error}\n")
            return
        if ended:
            out.write(f"ended as KILLED, left RUNNING by an earlier attempt: {', '.join(ended)}\n")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _last_snapshot(kept: Path) -> dict:
    """The FCD of the latest snapshot the checkpoint records, for Ray's progress table."""
    rows = _meta(kept / "checkpoint" / "state.npz").get("rows") or []
    return {"fcd": float(rows[-1]["fcd"])} if rows and "fcd" in rows[-1] else {}


def _numbers(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if isinstance(value, int | float)}


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        process.kill()
