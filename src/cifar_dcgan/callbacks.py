"""The training's side jobs, one Keras callback each (Keras' own idiom: the step stays in
`train_step`, each job beside it in a small `Callback`). They share one `TrainingState`.

At each epoch's end Keras calls them in this order:
`FailureGuard` (is the epoch usable?), `EpochLog` (its losses), `Snapshots` (grid, generator
file, quality scores, CSV row) and `Checkpointing` (the resumable state).
"""

import contextlib
import csv
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from cifar_dcgan import checkpoint as checkpoint_lib
from cifar_dcgan.evaluator import QUALITY, Evaluator
from cifar_dcgan.images import save_grid
from cifar_dcgan.models import latent_points, load_model
from cifar_dcgan.tracker import Tracker
from cifar_dcgan.training_state import TrainingState

LOSSES = ("d1", "d2", "g")
SNAPSHOT_COLUMNS = ("epoch", "iteration", "acc_real", "acc_fake", "d1", "d2", "g", *QUALITY, "flag")
PROBE_IMAGES = 49  # a 7x7 grid


def epoch_losses(model, epoch: int) -> tuple[np.ndarray, int]:
    """Epoch `epoch`'s (0-based) (steps, 3) loss history and the number of its first iteration."""
    history = model.loss_history.numpy().copy()
    return history, epoch * len(history) + 1


def detect_failure(history: np.ndarray, window: int, d_loss: float) -> str | None:
    """`nan` for non-finite losses; `d_wins` when d1 and d2 both stay below `d_loss` over the
    last `window` iterations (mean BCE that low means ~100% accuracy on real and fake)."""
    if not np.all(np.isfinite(history)):
        return "nan"
    last = history[-window:]
    if last[:, 0].mean() < d_loss and last[:, 1].mean() < d_loss:
        return "d_wins"
    return None


class FailureGuard(keras.callbacks.Callback):
    """Detects a failed epoch (non-finite losses, a discriminator that has won) and applies
    `train_gan.on_failure`: warn (flag the snapshot), restart (go back with a new seed) or stop."""

    def __init__(self, state: TrainingState, tracker: Tracker, reports_dir: Path):
        super().__init__()
        self.state, self.tracker, self.reports_dir = state, tracker, reports_dir

    def on_epoch_end(self, epoch: int, logs=None):
        state, params = self.state, self.state.params
        state.failure, state.discarded = None, False
        if state.interrupted:
            return
        history, first_step = epoch_losses(self.model, epoch)
        state.failure = detect_failure(history, params.failure_window, params.failure_loss)
        if state.failure:
            action = self.act(epoch + 1, first_step + len(history) - 1, state.failure)
            state.discarded = action != "warn"

    def act(self, epoch: int, iteration: int, kind: str) -> str:
        """Record a failure; return the action taken: warn, restart or stop."""
        state, params = self.state, self.state.params
        policy = params.on_failure
        if policy == "restart" and state.restarts >= params.max_restarts:
            policy = "stop"
        state.events.append({"epoch": epoch, "iteration": iteration, "failure": kind, "action": policy})
        self.tracker.set_tags(
            {f"failure_epoch_{epoch:03d}": f"{kind}: {policy}", "failures": str(len(state.events))}
        )
        print(f"failure at epoch {epoch} (iteration {iteration}): {kind} -> {policy}", flush=True)
        if policy == "restart":
            state.restart_requested = True
        elif policy == "stop":
            state.stopped_by = kind
        if policy != "warn":
            self.model.stop_training = True
        write_failures(state, self.reports_dir)
        return policy


def write_failures(state: TrainingState, reports_dir: Path) -> None:
    report = {
        "events": len(state.events),
        "restarts": state.restarts,
        "stopped": state.stopped_by is not None,
        "log": state.events,
    }
    (reports_dir / "failures.json").write_text(json.dumps(report, indent=2) + "\n")


class EpochLog(keras.callbacks.Callback):
    """Each kept epoch: its per-iteration losses, mean losses and timing to the tracker."""

    def __init__(self, state: TrainingState, tracker: Tracker):
        super().__init__()
        self.state, self.tracker = state, tracker
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None):
        if not self.state.keeps_epoch:
            return
        seconds = time.monotonic() - self.started
        history, first_step = epoch_losses(self.model, epoch)
        self.state.losses.append(history)
        self.state.epochs_done = epoch + 1
        self.state.epoch_seconds.append(seconds)
        for i, key in enumerate(LOSSES):
            self.tracker.log_history(key, history[:, i], first_step)
        means = {f"epoch_{k}": v for k, v in zip(LOSSES, history.mean(axis=0).tolist())}
        timing = {"epoch_seconds": seconds, "seconds_per_iteration": seconds / len(history)}
        self.tracker.log_metrics({**means, **timing}, step=epoch + 1)


class Snapshots(keras.callbacks.Callback):
    """Every `snapshot_every` epochs and at the last: D's accuracy on held-out draws, the probe
    grid, the generator file, the evaluator's quality scores and a row in snapshots.csv."""

    def __init__(
        self,
        state: TrainingState,
        tracker: Tracker,
        real_images: np.ndarray,
        snapshots_dir: Path,
        reports_dir: Path,
        evaluator: Evaluator | None = None,
    ):
        super().__init__()
        self.state, self.tracker, self.real_images, self.evaluator = state, tracker, real_images, evaluator
        self.snapshots_dir, self.grids_dir, self.csv = (
            snapshots_dir,
            reports_dir / "grids",
            reports_dir / "snapshots.csv",
        )
        params = state.params
        self.columns = (
            SNAPSHOT_COLUMNS if evaluator else tuple(c for c in SNAPSHOT_COLUMNS if c not in QUALITY)
        )
        self.probe = latent_points(
            np.random.default_rng(params.seed), PROBE_IMAGES, params.latent_dim, params.latent_distribution
        )
        # the same latent points judge every snapshot, so epochs differ by the generator only
        self.quality_latents = latent_points(
            np.random.default_rng(params.seed + 2),
            params.fcd_samples,
            params.latent_dim,
            params.latent_distribution,
        )

    def judge_real_images(self) -> None:
        """The FCD floor: real training images scored like a snapshot's generated ones."""
        if self.evaluator is None:
            return
        params = self.state.params
        rng = np.random.default_rng(params.seed + 3)
        n = min(params.fcd_samples, len(self.real_images))
        real = self.real_images[np.sort(rng.choice(len(self.real_images), n, replace=False))]
        self.state.fcd_floor = self.evaluator.quality(real, seed=params.seed)["fcd"]
        self.tracker.log_metrics({"fcd_real_images": self.state.fcd_floor}, step=0)
        print(f"FCD of {n} real training images (the floor): {self.state.fcd_floor:.3f}", flush=True)

    def first_grid(self, generator, kept: Path | None, resume: bool) -> None:
        """The probe grid before training (step 0, where the UI's image slider starts), kept
        beside the checkpoint (`kept`): on resume the weights it shows are gone."""
        first = self.grids_dir / "epoch_000.png"
        if resume:
            if kept and kept.is_file():
                shutil.copyfile(kept, first)
            return
        self.tracker.log_image(
            save_grid(generator(self.probe, training=False).numpy(), first), "generated", 0
        )
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first, kept)

    def redraw(self) -> None:
        """After a resume: the grids and CSV of the snapshots saved before the interruption."""
        for row in self.state.rows:
            generator = load_model(self.snapshots_dir / f"epoch_{row['epoch']:03d}.keras")
            save_grid(
                generator(self.probe, training=False).numpy(),
                self.grids_dir / f"epoch_{row['epoch']:03d}.png",
            )
        if self.state.rows:
            write_csv(self.csv, self.columns, self.state.rows)

    def on_epoch_end(self, epoch: int, logs=None):
        epoch += 1  # 1-based from here on, like the snapshot files
        params = self.state.params
        if self.state.keeps_epoch and (epoch % params.snapshot_every == 0 or epoch == params.epochs):
            self.snapshot(epoch)

    def snapshot(self, epoch: int) -> None:
        state, gan, n = self.state, self.model, self.state.params.eval_samples
        history, first_step = epoch_losses(gan, epoch - 1)
        real = self.real_images[np.sort(state.eval_rng.integers(0, len(self.real_images), n))]
        latents = latent_points(state.eval_rng, n, state.params.latent_dim, state.params.latent_distribution)
        fake = gan.generator(latents, training=False)
        threshold = gan.loss.threshold  # D says "real" above it (cifar_dcgan.losses)
        scores = {
            "acc_real": float(np.mean(gan.discriminator(real, training=False).numpy() > threshold)),
            "acc_fake": float(np.mean(gan.discriminator(fake, training=False).numpy() < threshold)),
        }
        shown = gan.snapshot_generator()  # G, or the moving average of its weights (train_gan.g_ema)
        grid = save_grid(shown(self.probe, training=False).numpy(), self.grids_dir / f"epoch_{epoch:03d}.png")
        shown.save(self.snapshots_dir / f"epoch_{epoch:03d}.keras")
        if self.evaluator:
            images = shown.predict(self.quality_latents, batch_size=500, verbose=0)
            scores |= self.evaluator.quality(images, seed=state.params.seed)
        means = dict(zip(LOSSES, history.mean(axis=0).tolist()))
        iteration = first_step + len(history) - 1
        state.rows.append(
            {"epoch": epoch, "iteration": iteration, **scores, **means, "flag": state.failure or ""}
        )
        write_csv(self.csv, self.columns, state.rows)
        self.tracker.log_metrics(scores, step=epoch)
        self.tracker.log_image(grid, key="generated", step=epoch)
        print(f"snapshot epoch {epoch}: {', '.join(f'{k} {v:.4g}' for k, v in scores.items())}", flush=True)


def write_csv(path: Path, columns, rows) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class Checkpointing(keras.callbacks.Callback):
    """The resumable state: captured at every kept epoch's end (what a restart goes back to),
    written to `state.checkpoint_dir`, and after the iteration during which a signal arrived."""

    def __init__(self, state: TrainingState, tracker: Tracker):
        super().__init__()
        self.state, self.tracker = state, tracker

    def on_train_batch_end(self, batch, logs=None):
        if self.state.interrupted:
            self.model.stop_training = True  # after this iteration

    def on_epoch_end(self, epoch: int, logs=None):
        if self.state.keeps_epoch:
            self.save()

    def save(self) -> None:
        """Remember the state as the last good one; write it to disk when checkpointing."""
        self.state.last_good = self.state.capture(self.model.state_variables(), self.tracker.run_id)
        if self.state.checkpoint_dir is None:
            return
        self.tracker.flush(final=False)  # resend refused values; the run's end confirms the rest
        checkpoint_lib.save(self.state.checkpoint_dir, self.state.last_good)

    def go_back(self, seed: int) -> None:
        """Return to the last good state, with a new seed for latent points and labels."""
        for variable, value in zip(self.model.state_variables(), self.state.last_good.values, strict=True):
            variable.assign(value)
        seeds = self.model.seed_generator.state
        seeds.assign(np.array([seed, 0], dtype=seeds.dtype))
        self.state.eval_rng.bit_generator.state = self.state.last_good.eval_rng


@contextlib.contextmanager
def finish_iteration_on_signal(state: TrainingState) -> Iterator[None]:
    """SIGINT/SIGTERM set `state.interrupted`: the iteration finishes, then `Checkpointing`
    stops training. A second signal acts at once (the handler in place before)."""
    handlers = {}

    def on_signal(signum, frame):
        state.interrupted = signal.Signals(signum).name
        signal.signal(signum, handlers[signum])
        print(f"\n{state.interrupted}: finishing this iteration, then saving a checkpoint", flush=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
