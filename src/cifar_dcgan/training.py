"""Train the DCGAN with `fit()`, saving snapshots and reporting through an injected tracker.

    python stages/train_gan.py   (what `dvc repro train-gan` runs)

Outputs: `epoch_NNN.keras` generator snapshots; in the reports folder `losses.csv`
(d1/d2/g per iteration), `snapshots.csv` (one row per snapshot: D's accuracy, mean losses
and, given an evaluator, FCD / KID / class score / class entropy / diversity),
`metrics.json` (final and best numbers for `dvc exp show`), `grids/epoch_NNN.png` (7x7
samples from fixed probe latent points), `losses.png` / `accuracy.png` / `quality.png` and
`run.json` (the tracking run, for selection).
"""

import csv
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan import checkpoint as checkpoint_lib
from cifar_dcgan.checkpoint import Checkpoint
from cifar_dcgan.config import ModelParams, TrainGanParams
from cifar_dcgan.errors import PipelineError, TrainingInterrupted
from cifar_dcgan.evaluator import QUALITY, Evaluator
from cifar_dcgan.gan import DCGAN
from cifar_dcgan.images import save_grid, save_line_plot
from cifar_dcgan.models import adam, build_discriminator, build_generator, dtype_policy, latent_points
from cifar_dcgan.tracking import Tracker

LOSSES = ("d1", "d2", "g")
SNAPSHOT_COLUMNS = ("epoch", "iteration", "acc_real", "acc_fake", "d1", "d2", "g", *QUALITY, "flag")
PROBE_IMAGES = 49  # a 7x7 grid


def detect_failure(history: np.ndarray, window: int, d_loss: float) -> str | None:
    """`nan` for non-finite losses; `d_wins` when d1 and d2 both stay below `d_loss` over the
    last `window` iterations (mean BCE that low means ~100% accuracy on real and fake)."""
    if not np.all(np.isfinite(history)):
        return "nan"
    last = history[-window:]
    if last[:, 0].mean() < d_loss and last[:, 1].mean() < d_loss:
        return "d_wins"
    return None


def make_strategy(distribute: str) -> tf.distribute.Strategy:
    """`none`: the default (one device); `mirrored`: every local GPU, or every logical CPU
    device when there is no GPU; `multi_worker`: the cluster described by TF_CONFIG. Create
    it before any other TensorFlow work (multi_worker must be created at program start)."""
    if distribute == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if distribute == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes files and tracks: always, except on the workers of a
    multi-worker cluster other than the chief (or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def real_index_batches(n: int, half_batch: int, sampling: str, seed: int) -> tf.data.Dataset:
    """An endless dataset of (half_batch,) indices into the real images: drawn with
    replacement like the classic code, or successive slices of reshuffled passes."""
    if sampling == "shuffled":
        indices = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return indices.repeat().batch(half_batch, drop_remainder=True).prefetch(2)
    draws = tf.data.Dataset.random(seed=seed).batch(half_batch)
    return draws.map(lambda x: tf.math.floormod(x, n)).prefetch(2)


def headline_metrics(rows: list[dict], iterations: int, seconds: float, failures: int) -> dict:
    """The numbers `dvc exp show` lists for a training: best FCD and its epoch, the last
    snapshot's quality and D accuracies, the last epoch's mean losses, speed, failures."""
    last = rows[-1]
    metrics = {}
    if "fcd" in last:
        best = min(rows, key=lambda row: (row["fcd"], -row["epoch"]))
        metrics |= {"best_fcd": best["fcd"], "best_fcd_epoch": best["epoch"]}
        metrics |= {"last_fcd": last["fcd"], "last_kid": last["kid"]}
        metrics |= {k: last[k] for k in ("class_entropy", "diversity")}
    metrics |= {k: last[k] for k in ("acc_real", "acc_fake", "d1", "d2", "g")}
    metrics |= {
        "s_per_iter": seconds / max(iterations, 1),
        "train_min": seconds / 60,
        "failures": failures,
    }
    return metrics


class SnapshotCallback(keras.callbacks.Callback):
    """Per epoch: the loss history to the tracker. Per snapshot: D's accuracy on held-out
    draws, a probe grid, the generator file and a row in snapshots.csv."""

    def __init__(
        self,
        real_images: np.ndarray,
        params: TrainGanParams,
        snapshots_dir: Path,
        reports_dir: Path,
        tracker: Tracker,
        evaluator: Evaluator | None = None,
    ):
        super().__init__()
        self.real_images, self.config = real_images, params  # (Keras owns self.params)
        self.snapshots_dir, self.reports_dir, self.tracker = snapshots_dir, reports_dir, tracker
        self.evaluator = evaluator
        self.columns = (
            SNAPSHOT_COLUMNS if evaluator else tuple(c for c in SNAPSHOT_COLUMNS if c not in QUALITY)
        )
        self.eval_rng = np.random.default_rng(params.seed + 1)
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
        self.fcd_floor: float | None = None  # FCD of as many real training images: the best reachable
        self.losses: list[np.ndarray] = []  # (iterations, 3) blocks of finished epochs
        self.epochs_done = 0
        self.rows: list[dict] = []
        self.checkpoint_dir: Path | None = None
        self.fingerprint = ""
        self.interrupted: str | None = None  # the signal's name once one arrived
        self.last_good: Checkpoint | None = None  # the state a restart goes back to
        self.events: list[dict] = []  # detected failures and what was done
        self.restarts = 0
        self.restart_requested = False
        self.stopped_by: str | None = None
        self.epoch_seconds: list[float] = []  # training time of each finished epoch, scoring aside
        self.epoch_started = time.monotonic()

    def judge_real_images(self) -> None:
        """The FCD floor: real training images scored like a snapshot's generated ones."""
        if self.evaluator is None:
            return
        rng = np.random.default_rng(self.config.seed + 3)
        n = min(self.config.fcd_samples, len(self.real_images))
        real = self.real_images[np.sort(rng.choice(len(self.real_images), n, replace=False))]
        self.fcd_floor = self.evaluator.quality(real, seed=self.config.seed)["fcd"]
        self.tracker.log_metrics({"fcd_real_images": self.fcd_floor}, step=0)
        print(f"FCD of {n} real training images (the floor): {self.fcd_floor:.3f}", flush=True)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue where `checkpoint` left off, re-drawing the grids of earlier snapshots."""
        self.losses = [checkpoint.losses]
        self.epochs_done = checkpoint.epochs_done
        self.rows = checkpoint.rows
        self.events, self.restarts = checkpoint.events, checkpoint.restarts
        self.epoch_seconds = list(checkpoint.epoch_seconds)
        self.eval_rng.bit_generator.state = checkpoint.eval_rng
        for row in self.rows:
            generator = keras.models.load_model(self.snapshots_dir / f"epoch_{row['epoch']:03d}.keras")
            save_grid(
                generator(self.probe, training=False).numpy(),
                self.reports_dir / "grids" / f"epoch_{row['epoch']:03d}.png",
            )
        if self.rows:
            self._write_csv(self.reports_dir / "snapshots.csv", self.columns, self.rows)

    def capture(self) -> Checkpoint:
        return Checkpoint(
            fingerprint=self.fingerprint,
            run_id=self.tracker.run_id,
            epochs_done=self.epochs_done,
            values=[v.numpy().copy() for v in self.model.state_variables()],
            losses=np.concatenate(self.losses) if self.losses else np.zeros((0, 3), np.float32),
            rows=list(self.rows),
            eval_rng=self.eval_rng.bit_generator.state,
            events=list(self.events),
            restarts=self.restarts,
            epoch_seconds=list(self.epoch_seconds),
            layout=checkpoint_lib.layout(self.model.state_variables()),
        )

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
        state = self.model.seed_generator.state
        state.assign(np.array([seed, 0], dtype=state.dtype))
        self.eval_rng.bit_generator.state = self.last_good.eval_rng

    def handle_failure(self, epoch: int, iteration: int, kind: str) -> str:
        """Record a failure; return the action taken: warn, restart or stop."""
        policy = self.config.on_failure
        if policy == "restart" and self.restarts >= self.config.max_restarts:
            policy = "stop"
        self.events.append({"epoch": epoch, "iteration": iteration, "failure": kind, "action": policy})
        self.tracker.set_tags(
            {f"failure_epoch_{epoch:03d}": f"{kind}: {policy}", "failures": str(len(self.events))}
        )
        print(f"failure at epoch {epoch} (iteration {iteration}): {kind} -> {policy}", flush=True)
        if policy == "restart":
            self.restart_requested = True
        elif policy == "stop":
            self.stopped_by = kind
        if policy != "warn":
            self.model.stop_training = True
        self.write_failures()
        return policy

    def write_failures(self) -> None:
        report = {
            "events": len(self.events),
            "restarts": self.restarts,
            "stopped": self.stopped_by is not None,
            "log": self.events,
        }
        (self.reports_dir / "failures.json").write_text(json.dumps(report, indent=2) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            self.model.stop_training = True  # after this iteration

    def on_epoch_begin(self, epoch: int, logs=None):
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None):
        if self.interrupted:
            return  # a partial epoch: its end-of-epoch work happens after resuming
        epoch += 1  # 1-based from here on, like the snapshot files
        seconds = time.monotonic() - self.epoch_started
        history = self.model.loss_history.numpy().copy()  # (steps_per_epoch, 3)
        first_step = (epoch - 1) * len(history) + 1
        failure = detect_failure(history, self.config.failure_window, self.config.failure_loss)
        if failure and self.handle_failure(epoch, first_step + len(history) - 1, failure) != "warn":
            return  # nothing of this epoch is kept
        self.losses.append(history)
        self.epochs_done = epoch
        self.epoch_seconds.append(seconds)
        for i, key in enumerate(LOSSES):
            self.tracker.log_history(key, history[:, i], first_step)
        means = dict(zip(LOSSES, history.mean(axis=0).tolist()))
        timing = {"epoch_seconds": seconds, "seconds_per_iteration": seconds / len(history)}
        self.tracker.log_metrics({**{f"epoch_{k}": v for k, v in means.items()}, **timing}, step=epoch)
        if epoch % self.config.snapshot_every == 0 or epoch == self.config.epochs:
            self.snapshot(epoch, first_step + len(history) - 1, means, flag=failure or "")
        self.save_checkpoint()

    def snapshot(self, epoch: int, iteration: int, means: dict[str, float], flag: str = "") -> None:
        gan, n = self.model, self.config.eval_samples
        real = self.real_images[np.sort(self.eval_rng.integers(0, len(self.real_images), n))]
        latents = latent_points(self.eval_rng, n, self.config.latent_dim, self.config.latent_distribution)
        fake = gan.generator(latents, training=False)
        acc = {
            "acc_real": float(np.mean(gan.discriminator(real, training=False).numpy() > 0.5)),
            "acc_fake": float(np.mean(gan.discriminator(fake, training=False).numpy() < 0.5)),
        }
        grid = save_grid(
            gan.generator(self.probe, training=False).numpy(),
            self.reports_dir / "grids" / f"epoch_{epoch:03d}.png",
        )
        gan.generator.save(self.snapshots_dir / f"epoch_{epoch:03d}.keras")
        if self.evaluator:
            images = gan.generator.predict(self.quality_latents, batch_size=500, verbose=0)
            acc |= self.evaluator.quality(images, seed=self.config.seed)
        self.rows.append({"epoch": epoch, "iteration": iteration, **acc, **means, "flag": flag})
        self._write_csv(self.reports_dir / "snapshots.csv", self.columns, self.rows)
        self.tracker.log_metrics(acc, step=epoch)
        self.tracker.log_image(grid, key="generated", step=epoch)
        scores = ", ".join(f"{k} {v:.4g}" for k, v in acc.items())
        print(f"snapshot epoch {epoch}: {scores}", flush=True)

    def on_train_end(self, logs=None):
        if self.interrupted or self.epochs_done < self.config.epochs:
            return
        self.write_failures()
        losses = np.concatenate(self.losses)  # (iterations, 3)
        iterations = np.arange(1, len(losses) + 1)
        with open(self.reports_dir / "losses.csv", "w") as file:
            file.write("iteration,d1,d2,g\n")
            np.savetxt(
                file, np.column_stack([iterations, losses]), fmt=["%d", "%.6f", "%.6f", "%.6f"], delimiter=","
            )
        save_line_plot(
            self.reports_dir / "losses.png",
            iterations,
            dict(zip(LOSSES, losses.T)),
            "iteration",
            "binary cross-entropy",
            "Discriminator (d1 real, d2 fake) and generator (g) losses",
        )
        epochs = [row["epoch"] for row in self.rows]
        save_line_plot(
            self.reports_dir / "accuracy.png",
            epochs,
            {k: [row[k] for row in self.rows] for k in ("acc_real", "acc_fake")},
            "epoch",
            "discriminator accuracy",
            "D accuracy at each snapshot",
        )
        last = self.rows[-1]
        seconds = float(sum(self.epoch_seconds))
        final = headline_metrics(self.rows, len(losses), seconds, len(self.events))
        reports = ["losses.png", "accuracy.png", "snapshots.csv", "metrics.json"]
        if self.evaluator:
            save_line_plot(
                self.reports_dir / "quality.png",
                epochs,
                {
                    "FCD of generated images": [row["fcd"] for row in self.rows],
                    "FCD of real images": [self.fcd_floor] * len(epochs),
                },
                "epoch",
                "FCD (lower is better)",
                f"FCD at each snapshot ({self.config.fcd_samples} images vs. the real test split)",
            )
            reports.append("quality.png")
        summary = {
            "epochs": last["epoch"],
            "iterations": last["iteration"],
            "restarts": self.restarts,
            "fcd_floor": self.fcd_floor,
            "evaluator_digest": self.evaluator.digest if self.evaluator else None,
            "run_id": self.tracker.run_id,
        }
        (self.reports_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.tracker.log_metrics({"train_minutes": seconds / 60}, step=last["epoch"])
        self.tracker.log_artifact(self.reports_dir / "grids" / f"epoch_{last['epoch']:03d}.png", "grids")
        (self.reports_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        for name in reports:
            self.tracker.log_artifact(self.reports_dir / name, "reports")

    @staticmethod
    def _write_csv(path: Path, columns, rows) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)


REPORTS = ("losses.csv", "snapshots.csv", "losses.png", "accuracy.png", "quality.png")
REPORTS += ("failures.json", "run.json", "metrics.json")


def clear_earlier_outputs(snapshots_dir: Path, reports_dir: Path, keep_snapshots: bool) -> None:
    """Delete what an earlier training wrote there (its reports and grids, and unless resuming
    its snapshots), and nothing else: the folders may be shared or given by hand (`--reports reports`)."""
    own = [(reports_dir, name) for name in REPORTS] + [(reports_dir / "grids", "epoch_*.png")]
    if not keep_snapshots:
        own.append((snapshots_dir, "epoch_*.keras"))
    for folder, pattern in own:
        for path in folder.glob(pattern):
            if path.is_file() or path.is_symlink():  # a link (from DVC's cache): the link only
                path.unlink()


def train_gan(
    real_images: np.ndarray,
    model: ModelParams,
    params: TrainGanParams,
    snapshots_dir: Path,
    reports_dir: Path,
    tracker: Tracker,
    checkpoint_dir: Path | None = None,
    resume: Checkpoint | None = None,
    evaluator: Evaluator | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> DCGAN:
    """Train (from `resume` if given); returns the trained DCGAN (files are written on the way).
    SIGINT/SIGTERM finish the current iteration, save a checkpoint and raise TrainingInterrupted.
    Under `strategy` (default: `make_strategy(params.distribute)`) every replica gets an
    equal share of each half-batch."""
    strategy = strategy or make_strategy(params.distribute)
    steps = len(real_images) // params.batch_size
    if steps < 1:
        raise PipelineError(
            f"train_gan.batch_size = {params.batch_size} is larger than the "
            f"{len(real_images)} training images; lower it or raise prepare.limit"
        )
    replicas = strategy.num_replicas_in_sync
    if (params.batch_size // 2) % replicas:
        raise PipelineError(
            f"train_gan.batch_size = {params.batch_size}: half of it must divide evenly among the "
            f"{replicas} replicas of train_gan.distribute = {params.distribute}; "
            f"use a multiple of {2 * replicas}"
        )
    clear_earlier_outputs(snapshots_dir, reports_dir, keep_snapshots=resume is not None)
    for folder in (snapshots_dir, reports_dir / "grids"):
        folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(params.seed)
    with strategy.scope():
        with dtype_policy(params.precision):
            discriminator = build_discriminator(model, params.seed)
            generator = build_generator(model, params.latent_dim, params.seed)
        gan = DCGAN(discriminator, generator, tf.constant(real_images), params, steps)
        gan.compile(
            adam(params.d_learning_rate, params.beta1, params.precision),
            adam(params.g_learning_rate, params.beta1, params.precision),
        )
        gan.state_variables()  # builds both optimizers under the strategy
    if replicas > 1:
        print(f"training on {replicas} replicas ({params.distribute})", flush=True)
    callback = SnapshotCallback(real_images, params, snapshots_dir, reports_dir, tracker, evaluator)
    callback.checkpoint_dir = checkpoint_dir
    callback.fingerprint = checkpoint_lib.fingerprint(
        model, params, real_images, evaluator.digest if evaluator else ""
    )
    callback.judge_real_images()
    callback.set_model(gan)
    if resume:
        expected = checkpoint_lib.layout(gan.state_variables())
        found = [[name, list(value.shape)] for (name, _), value in zip(resume.layout, resume.values)]
        if found != expected:  # the fingerprint should have caught it: never assign misfitting values
            rejected = checkpoint_lib.set_aside(checkpoint_dir, "its variables do not fit the model")
            raise PipelineError(
                f"the checkpoint does not fit the model; it was moved to {rejected}: run again"
            )
        for variable, value in zip(gan.state_variables(), resume.values, strict=True):
            variable.assign(value)
        callback.restore(resume)
    done = int(gan.iteration.numpy())
    if resume and done // steps > resume.epochs_done:  # stopped between an epoch's last step and its end
        callback.on_epoch_end(resume.epochs_done)
    first_grid = reports_dir / "grids" / "epoch_000.png"
    kept_grid = checkpoint_dir / "epoch_000.png" if checkpoint_dir else None  # the weights it shows are gone
    if resume:
        print(f"resuming at iteration {done} (epoch {done // steps + 1}) from {checkpoint_dir}", flush=True)
        if kept_grid and kept_grid.is_file():
            shutil.copyfile(kept_grid, first_grid)
    else:  # the probe grid before training, step 0: where the UI's image slider starts
        grid = save_grid(gan.generator(callback.probe, training=False).numpy(), first_grid)
        tracker.log_image(grid, key="generated", step=0)
        if kept_grid:
            kept_grid.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first_grid, kept_grid)

    handlers = {}

    def on_signal(signum, frame):
        callback.interrupted = signal.Signals(signum).name
        signal.signal(signum, handlers[signum])  # a second signal acts at once
        print(f"\n{callback.interrupted}: finishing this iteration, then saving a checkpoint", flush=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, on_signal)
    callback.last_good = callback.capture()
    try:
        while True:
            _fit_from(gan, callback, real_images, params, steps)
            if not callback.restart_requested:
                break
            callback.restart_requested = False
            callback.restarts += 1
            callback.go_back(seed=params.seed + 7919 * callback.restarts)
            print(
                f"restart {callback.restarts} of {params.max_restarts} from iteration "
                f"{int(gan.iteration.numpy())} with a new seed",
                flush=True,
            )
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if callback.interrupted:
        callback.save_checkpoint()
        raise TrainingInterrupted(
            f"training stopped by {callback.interrupted} after iteration {int(gan.iteration.numpy())}; "
            f"checkpoint saved in {checkpoint_dir}: run `dvc repro` again to resume"
        )
    if callback.stopped_by:
        raise PipelineError(
            f"training stopped: failure '{callback.stopped_by}' (see {reports_dir / 'failures.json'}); the "
            "checkpoint and snapshots of the last good epoch are kept. Lower the learning rates or change "
            "train_gan.on_failure in params.yaml"
        )
    return gan


def _fit_from(
    gan: DCGAN, callback: SnapshotCallback, real_images, params: TrainGanParams, steps: int
) -> None:
    """fit() from the current iteration: a partial epoch's remaining steps first, then whole epochs."""
    done = int(gan.iteration.numpy())
    parts = [(done // steps, steps - done % steps)] if done % steps else []
    parts.append((-(-done // steps), steps))
    for first_epoch, steps_this_part in parts:
        if (
            first_epoch >= params.epochs
            or callback.interrupted
            or callback.restart_requested
            or callback.stopped_by
        ):
            continue
        epochs = first_epoch + 1 if steps_this_part < steps else params.epochs
        dataset = real_index_batches(len(real_images), params.batch_size // 2, params.sampling, params.seed)
        gan.fit(
            dataset.skip(int(gan.iteration.numpy())),
            initial_epoch=first_epoch,
            epochs=epochs,
            steps_per_epoch=steps_this_part,
            callbacks=[callback],
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
