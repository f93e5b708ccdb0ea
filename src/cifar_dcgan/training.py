"""Train the DCGAN with `fit()`, saving snapshots and reporting through an injected tracker.

    python stages/train_gan.py   (what `dvc repro train-gan` runs)

Outputs: `epoch_NNN.keras` generator snapshots; in the reports folder `losses.csv`
(d1/d2/g per iteration), `snapshots.csv` (one row per snapshot), `metrics.json` (final
numbers for `dvc exp show`), `grids/epoch_NNN.png` (7x7 samples from fixed probe latent
points), `losses.png` / `accuracy.png` and `run.json` (the tracking run, for selection).
"""

import csv
import json
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan.config import ModelParams, TrainGanParams
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.gan import DCGAN
from cifar_dcgan.images import save_grid, save_line_plot
from cifar_dcgan.models import adam, build_discriminator, build_generator, dtype_policy
from cifar_dcgan.tracking import Tracker

LOSSES = ("d1", "d2", "g")
SNAPSHOT_COLUMNS = ("epoch", "iteration", "acc_real", "acc_fake", "d1", "d2", "g")
PROBE_IMAGES = 49  # a 7x7 grid


def latent_points(rng: np.random.Generator, n: int, dim: int, distribution: str) -> np.ndarray:
    """(n, dim) float32 latent points drawn from numpy, outside the training RNG."""
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (n, dim)).astype(np.float32)
    return rng.standard_normal((n, dim)).astype(np.float32)


def real_index_batches(n: int, half_batch: int, sampling: str, seed: int) -> tf.data.Dataset:
    """An endless dataset of (half_batch,) indices into the real images: drawn with
    replacement like the classic code, or successive slices of reshuffled passes."""
    if sampling == "shuffled":
        indices = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return indices.repeat().batch(half_batch, drop_remainder=True).prefetch(2)
    draws = tf.data.Dataset.random(seed=seed).batch(half_batch)
    return draws.map(lambda x: tf.math.floormod(x, n)).prefetch(2)


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
    ):
        super().__init__()
        self.real_images, self.config = real_images, params  # (Keras owns self.params)
        self.snapshots_dir, self.reports_dir, self.tracker = snapshots_dir, reports_dir, tracker
        self.eval_rng = np.random.default_rng(params.seed + 1)
        self.probe = latent_points(
            np.random.default_rng(params.seed), PROBE_IMAGES, params.latent_dim, params.latent_distribution
        )
        self.losses: list[np.ndarray] = []
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch: int, logs=None):
        epoch += 1  # 1-based from here on, like the snapshot files
        history = self.model.loss_history.numpy().copy()  # (steps_per_epoch, 3)
        self.losses.append(history)
        first_step = (epoch - 1) * len(history) + 1
        for i, key in enumerate(LOSSES):
            self.tracker.log_history(key, history[:, i], first_step)
        means = dict(zip(LOSSES, history.mean(axis=0).tolist()))
        self.tracker.log_metrics({f"epoch_{k}": v for k, v in means.items()}, step=epoch)
        if epoch % self.config.snapshot_every == 0 or epoch == self.config.epochs:
            self.snapshot(epoch, first_step + len(history) - 1, means)

    def snapshot(self, epoch: int, iteration: int, means: dict[str, float]) -> None:
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
        self.rows.append({"epoch": epoch, "iteration": iteration, **acc, **means})
        self._write_csv(self.reports_dir / "snapshots.csv", SNAPSHOT_COLUMNS, self.rows)
        self.tracker.log_metrics(acc, step=epoch)
        self.tracker.log_image(grid, key="generated", step=epoch)
        print(
            f"snapshot epoch {epoch}: acc_real {acc['acc_real']:.3f}, acc_fake {acc['acc_fake']:.3f}",
            flush=True,
        )

    def on_train_end(self, logs=None):
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
        final = {
            "epochs": last["epoch"],
            "iterations": last["iteration"],
            **{k: last[k] for k in SNAPSHOT_COLUMNS[2:]},
        }
        (self.reports_dir / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        (self.reports_dir / "run.json").write_text(json.dumps({"run_id": self.tracker.run_id}) + "\n")
        for name in ("losses.png", "accuracy.png", "snapshots.csv", "metrics.json"):
            self.tracker.log_artifact(self.reports_dir / name, "reports")

    @staticmethod
    def _write_csv(path: Path, columns, rows) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)


def train_gan(
    real_images: np.ndarray,
    model: ModelParams,
    params: TrainGanParams,
    snapshots_dir: Path,
    reports_dir: Path,
    tracker: Tracker,
) -> DCGAN:
    """Train from scratch; returns the trained DCGAN (the files are written on the way)."""
    steps = len(real_images) // params.batch_size
    if steps < 1:
        raise PipelineError(
            f"train_gan.batch_size = {params.batch_size} is larger than the "
            f"{len(real_images)} training images; lower it or raise prepare.limit"
        )
    for folder in (snapshots_dir, reports_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    keras.utils.set_random_seed(params.seed)
    with dtype_policy(params.precision):
        discriminator = build_discriminator(model, params.seed)
        generator = build_generator(model, params.latent_dim, params.seed)
    gan = DCGAN(discriminator, generator, tf.constant(real_images), params, steps)
    gan.compile(
        adam(params.d_learning_rate, params.beta1, params.precision),
        adam(params.g_learning_rate, params.beta1, params.precision),
    )
    callback = SnapshotCallback(real_images, params, snapshots_dir, reports_dir, tracker)
    dataset = real_index_batches(len(real_images), params.batch_size // 2, params.sampling, params.seed)
    gan.fit(
        dataset,
        epochs=params.epochs,
        steps_per_epoch=steps,
        callbacks=[callback],
        shuffle=False,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return gan
