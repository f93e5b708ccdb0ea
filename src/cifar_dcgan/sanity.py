"""The discriminator sanity gate: D must learn real images vs. uniform noise, or we stop.

    python stages/train_discriminator_sanity.py   (what `dvc repro` runs)

If the discriminator cannot tell CIFAR-10 from noise after a few updates, the data, the
scaling or the model is broken, and hours of GAN training would be wasted.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.sanity import SanityParams
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.gan import accuracy, discriminator_update
from cifar_dcgan.losses import bce
from cifar_dcgan.models import adam, build_discriminator
from cifar_dcgan.tracker import Tracker


@dataclass(frozen=True)
class SanityResult:
    acc_real: list[float]  # per iteration, measured before that iteration's update
    acc_fake: list[float]

    @property
    def final(self) -> dict[str, float]:
        return {"acc_real": self.acc_real[-1], "acc_fake": self.acc_fake[-1]}


def train_sanity(
    real_images: np.ndarray, model: ModelParams, params: SanityParams, tracker: Tracker
) -> SanityResult:
    """Train a fresh D on real (target 1) vs. noise in [-1, 1] (target 0)."""
    keras.utils.set_random_seed(params.seed)
    discriminator = build_discriminator(model, params.seed, image_shape=tuple(real_images.shape[1:]))
    optimizer = adam(params.learning_rate, params.beta1)
    update = tf.function(
        lambda images, targets: discriminator_update(discriminator, optimizer, images, targets, bce)
    )
    rng = np.random.default_rng(params.seed)
    half = params.batch_size // 2
    ones, zeros = tf.ones((half, 1)), tf.zeros((half, 1))
    acc_real, acc_fake = [], []
    for _ in range(params.iterations):
        real = real_images[rng.integers(0, len(real_images), half)]  # (B/2, H, W, C)
        noise = rng.uniform(-1.0, 1.0, real.shape).astype(np.float32)
        _, real_predictions = update(tf.constant(real), ones)
        _, fake_predictions = update(tf.constant(noise), zeros)
        acc_real.append(float(accuracy(real_predictions, real=True)))
        acc_fake.append(float(accuracy(fake_predictions, real=False)))
    tracker.log_history("acc_real", acc_real, first_step=1)
    tracker.log_history("acc_fake", acc_fake, first_step=1)
    return SanityResult(acc_real, acc_fake)


def write_reports(result: SanityResult, reports_dir: Path) -> None:
    """history.csv (a DVC plot) and metrics.json (DVC metrics)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    rows = [f"{i},{r:.6f},{f:.6f}" for i, (r, f) in enumerate(zip(result.acc_real, result.acc_fake), start=1)]
    (reports_dir / "history.csv").write_text("\n".join(["iteration,acc_real,acc_fake", *rows]) + "\n")
    (reports_dir / "metrics.json").write_text(json.dumps(result.final, indent=2) + "\n")


def check_gate(result: SanityResult, min_accuracy: float) -> None:
    """Raise if D did not learn real vs. noise well enough to start GAN training."""
    failed = {k: v for k, v in result.final.items() if v < min_accuracy}
    if failed:
        got = ", ".join(f"{k} = {v:.3f}" for k, v in failed.items())
        raise PipelineError(
            f"discriminator sanity check failed: {got} after {len(result.acc_real)} iterations, "
            f"below train_discriminator_sanity.min_accuracy = {min_accuracy}. The discriminator "
            "cannot tell real images from noise: check the prepared data (reports/prepare/"
            "preview.png) and the model section of params.yaml before training the GAN"
        )
