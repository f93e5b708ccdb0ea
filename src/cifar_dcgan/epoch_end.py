"""The end of each training epoch, in one place and in this order: detect a failure -> apply
`train_gan.on_failure` -> log the epoch -> snapshot -> checkpoint. Keras' `fit()` calls
`EpochEnd` (its one callback, beside the step in `train_step`); so does a resumed training
whose epoch's end was cut short.

A signal (Ctrl-C, SIGTERM) only sets `interrupted` (`finish_iteration_on_signal`): the
iteration finishes, `fit()` stops, and training saves a checkpoint of that iteration.
"""

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from cifar_dcgan import checkpoint as checkpoint_lib
from cifar_dcgan.checkpoint import Checkpoint, Progress
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.snapshots import LOSS_COLUMNS, Snapshots
from cifar_dcgan.tracker import Tracker


def detect_failure(history: np.ndarray, window: int, d_loss: float) -> str | None:
    """`nan` for non-finite losses; `d_wins` when d1 and d2 both stay below `d_loss` over the
    last `window` iterations (mean BCE that low means ~100% accuracy on real and fake)."""
    if not np.all(np.isfinite(history)):
        return "nan"
    last = history[-window:]
    if last[:, 0].mean() < d_loss and last[:, 1].mean() < d_loss:
        return "d_wins"
    return None


def write_failures(progress: Progress, reports_dir: Path, stopped: bool) -> None:
    report = {"events": len(progress.events), "restarts": progress.restarts, "stopped": stopped}
    (reports_dir / "failures.json").write_text(
        json.dumps({**report, "log": progress.events}, indent=2) + "\n"
    )


class EpochEnd(keras.callbacks.Callback):
    """What training knows besides its weights (`progress`, kept by checkpoints), and what an
    epoch's end decided: `outcome` is `restart` or `stop` once a failure's policy says so."""

    def __init__(
        self,
        params: TrainGanParams,
        tracker: Tracker,
        snapshots: Snapshots,
        reports_dir: Path,
        checkpoint_dir: Path | None,
        fingerprint: str,
        progress: Progress,
    ):
        super().__init__()
        self.train_params, self.tracker, self.snapshots, self.reports_dir = (
            params,
            tracker,
            snapshots,
            reports_dir,
        )
        self.checkpoint_dir, self.fingerprint, self.progress = checkpoint_dir, fingerprint, progress
        self.eval_rng = np.random.default_rng(params.seed + 1)  # D's held-out accuracy draws
        if progress.eval_rng is not None:
            self.eval_rng.bit_generator.state = progress.eval_rng
        self.interrupted: str | None = None  # the signal's name once one arrived
        self.outcome: str | None = None
        self.stopped_by: str | None = None  # the failure that stopped training
        self.last_good: Checkpoint | None = None  # what a restart goes back to
        self.started = time.monotonic()

    @property
    def goes_on(self) -> bool:
        return not (self.interrupted or self.outcome)

    def on_epoch_begin(self, epoch: int, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            self.model.stop_training = True  # after this iteration

    def on_epoch_end(self, epoch: int, logs=None):
        self.end(epoch + 1)

    def end(self, epoch: int) -> None:
        """Epoch `epoch` (1-based) ends: the whole sequence, unless a signal cut the epoch short."""
        if self.interrupted:
            return  # its last iteration is checkpointed as it is; a resume ends the epoch
        history = self.model.loss_history.numpy().copy()  # (steps, 3): d1, d2, g per iteration
        failure = detect_failure(history, self.train_params.failure_window, self.train_params.failure_loss)
        if failure and self.apply_policy(epoch, len(history), failure) != "warn":
            self.model.stop_training = True
            return  # the epoch is thrown away: training restarts from the last good state or stops
        self.log(epoch, history)
        if self.snapshots.due(epoch):
            row = self.snapshots.take(self.model, epoch, history, self.eval_rng, failure or "")
            self.progress.rows.append(row)
            self.snapshots.write(self.progress.rows)
        self.save_checkpoint()

    def apply_policy(self, epoch: int, steps: int, kind: str) -> str:
        """Record a failure; return the action taken: warn, restart or stop."""
        params, progress = self.train_params, self.progress
        policy = params.on_failure
        if policy == "restart" and progress.restarts >= params.max_restarts:
            policy = "stop"
        iteration = epoch * steps
        progress.events.append({"epoch": epoch, "iteration": iteration, "failure": kind, "action": policy})
        self.tracker.set_tags(
            {f"failure_epoch_{epoch:03d}": f"{kind}: {policy}", "failures": str(len(progress.events))}
        )
        print(f"failure at epoch {epoch} (iteration {iteration}): {kind} -> {policy}", flush=True)
        if policy == "restart":
            self.outcome = "restart"
        elif policy == "stop":
            self.outcome, self.stopped_by = "stop", kind
        write_failures(progress, self.reports_dir, stopped=self.stopped_by is not None)
        return policy

    def log(self, epoch: int, history: np.ndarray) -> None:
        """The epoch's per-iteration losses, mean losses and timing, to the progress and the tracker."""
        seconds = time.monotonic() - self.started
        progress = self.progress
        progress.losses = np.concatenate([progress.losses, history])
        progress.epochs_done = epoch
        progress.epoch_seconds.append(seconds)
        first_step = (epoch - 1) * len(history) + 1
        for i, key in enumerate(LOSS_COLUMNS):
            self.tracker.log_history(key, history[:, i], first_step)
        means = {f"epoch_{k}": v for k, v in zip(LOSS_COLUMNS, history.mean(axis=0).tolist())}
        timing = {
            "epoch_seconds": seconds,
            "seconds_per_iteration": seconds / len(history),
            # runnable processes per core over the last minute: timings under other load are slower
            "load_per_core": os.getloadavg()[0] / (os.cpu_count() or 1),
        }
        self.tracker.log_metrics({**means, **timing}, step=epoch)

    def capture(self) -> Checkpoint:
        variables = self.model.state_variables()
        progress = dataclasses.replace(
            self.progress,
            rows=list(self.progress.rows),
            events=list(self.progress.events),
            epoch_seconds=list(self.progress.epoch_seconds),
            eval_rng=self.eval_rng.bit_generator.state,
        )
        values = [v.numpy().copy() for v in variables]
        layout = checkpoint_lib.layout(variables)
        return Checkpoint(self.fingerprint, self.tracker.run_id, values, layout, progress)

    def save_checkpoint(self) -> None:
        """Remember the state as the last good one; write it to disk when checkpointing."""
        self.last_good = self.capture()
        if self.checkpoint_dir is None:
            return
        self.tracker.flush(final=False)  # resend refused values; the run's end confirms the rest
        checkpoint_lib.save(self.checkpoint_dir, self.last_good)

    def go_back(self, seed: int) -> None:
        """Return to the last good state, with a new seed for latent points and labels."""
        for variable, value in zip(self.model.state_variables(), self.last_good.values, strict=True):
            variable.assign(value)
        seeds = self.model.seed_generator.state
        seeds.assign(np.array([seed, 0], dtype=seeds.dtype))
        self.eval_rng.bit_generator.state = self.last_good.progress.eval_rng
        self.outcome = None


@contextlib.contextmanager
def finish_iteration_on_signal(epoch_end: EpochEnd) -> Iterator[None]:
    """SIGINT/SIGTERM set `epoch_end.interrupted`: the iteration finishes, then training stops.
    A second signal acts at once (the handler in place before)."""
    handlers = {}

    def on_signal(signum, frame):
        epoch_end.interrupted = signal.Signals(signum).name
        signal.signal(signum, handlers[signum])
        print(f"\n{epoch_end.interrupted}: finishing this iteration, then saving a checkpoint", flush=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
