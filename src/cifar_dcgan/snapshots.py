"""Snapshots of a training: every `train_gan.snapshot_every` epochs and at the last, D's
accuracy on held-out draws, the probe grid (7x7 samples from fixed latent points, so that
epochs differ by the generator only), the generator file, the evaluator's quality scores and
a row of `snapshots.csv`."""

import csv
import shutil
from pathlib import Path

import numpy as np

from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.evaluator import QUALITY, Evaluator
from cifar_dcgan.images import save_grid
from cifar_dcgan.models import latent_points, load_model
from cifar_dcgan.tracker import Tracker

LOSS_COLUMNS = ("d1", "d2", "g")  # the per-iteration losses, in loss_history's column order
SNAPSHOT_COLUMNS = ("epoch", "iteration", "acc_real", "acc_fake", *LOSS_COLUMNS, *QUALITY, "flag")
PROBE_IMAGES = 49  # a 7x7 grid


class Snapshots:
    def __init__(
        self,
        params: TrainGanParams,
        tracker: Tracker,
        real_images: np.ndarray,
        snapshots_dir: Path,
        reports_dir: Path,
        evaluator: Evaluator | None = None,
    ):
        self.params, self.tracker, self.real_images, self.evaluator = params, tracker, real_images, evaluator
        self.snapshots_dir, self.grids_dir = snapshots_dir, reports_dir / "grids"
        self.csv = reports_dir / "snapshots.csv"
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

    def due(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) ends with a snapshot."""
        return epoch % self.params.snapshot_every == 0 or epoch == self.params.epochs

    def judge_real_images(self) -> float | None:
        """The FCD floor: real training images scored like a snapshot's generated ones."""
        if self.evaluator is None:
            return None
        params = self.params
        rng = np.random.default_rng(params.seed + 3)
        n = min(params.fcd_samples, len(self.real_images))
        real = self.real_images[np.sort(rng.choice(len(self.real_images), n, replace=False))]
        scores = self.evaluator.quality(real, seed=params.seed)
        floor = scores["fcd"]
        # what real images of a snapshot's count score: a collapse signal is calibrated on it
        self.tracker.log_metrics(
            {"fcd_real_images": floor, "class_entropy_real_images": scores["class_entropy"]}, step=0
        )
        print(f"FCD of {n} real training images (the floor): {floor:.3f}", flush=True)
        return floor

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

    def redraw(self, rows: list[dict]) -> None:
        """After a resume: the grids and CSV of the snapshots saved before the interruption."""
        for row in rows:
            generator = load_model(self.snapshots_dir / f"epoch_{row['epoch']:03d}.keras")
            save_grid(
                generator(self.probe, training=False).numpy(),
                self.grids_dir / f"epoch_{row['epoch']:03d}.png",
            )
        if rows:
            write_csv(self.csv, self.columns, rows)

    def take(self, gan, epoch: int, history: np.ndarray, eval_rng: np.random.Generator, flag: str) -> dict:
        """Snapshot epoch `epoch` (1-based), whose per-iteration losses are `history`: files,
        scores and tracking; returns its row (also appended to snapshots.csv by the caller)."""
        n, params = self.params.eval_samples, self.params
        real = self.real_images[np.sort(eval_rng.integers(0, len(self.real_images), n))]
        latents = latent_points(eval_rng, n, params.latent_dim, params.latent_distribution)
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
            scores |= self.evaluator.quality(images, seed=params.seed)
        means = dict(zip(LOSS_COLUMNS, history.mean(axis=0).tolist()))
        iteration = (epoch - 1) * len(history) + len(history)
        self.tracker.log_metrics(scores, step=epoch)
        self.tracker.log_image(grid, key="generated", step=epoch)
        print(f"snapshot epoch {epoch}: {', '.join(f'{k} {v:.4g}' for k, v in scores.items())}", flush=True)
        return {"epoch": epoch, "iteration": iteration, **scores, **means, "flag": flag}

    def write(self, rows: list[dict]) -> None:
        write_csv(self.csv, self.columns, rows)


def write_csv(path: Path, columns, rows) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
