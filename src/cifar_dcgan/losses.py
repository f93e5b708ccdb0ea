"""The adversarial losses of `train_gan.loss`, each as D's two losses and G's, and what D's
output means under it.

In every loss a target is 1 for "real" and 0 for "fake" (before label flips, smoothing and
noise), d1 is D's loss on real images, d2 on generated ones, and g is G's loss; lower d1/d2
means D tells them apart better, lower g means G fools D better. D's accuracy counts an
output above `threshold` as "real".

- `bce` (the classic DCGAN): D outputs a probability (sigmoid); d = binary cross-entropy
  with the target, g = cross-entropy with target 1 (the "non-saturating" loss).
- `least_squares` (LSGAN, Mao et al. 2017, targets a = 0, b = c = 1): D outputs a score;
  d = (D(x) - target)^2, g = (D(G(z)) - 1)^2. Smoothing, noise and flips move the targets.
- `hinge` (Lim & Ye 2017; SAGAN, BigGAN): D outputs a score; d = max(0, 1 - y D(x)) with
  side y = +1 for target 1 and -1 for target 0, g = -D(G(z)). A target must be a side:
  label flips swap sides, smoothing and noise have no meaning (params refuse them).
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def bce(targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy over this replica's batch. (Keras' loss classes would also
    divide by the number of replicas under a strategy; here that scaling is explicit.)"""
    return tf.reduce_mean(keras.losses.binary_crossentropy(targets, outputs))


def squares(targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(outputs - targets))


def hinge(targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.relu(1.0 - (2.0 * targets - 1.0) * outputs))


@dataclasses.dataclass(frozen=True)
class AdversarialLoss:
    name: str
    activation: str | None  # D's output layer: "sigmoid" (a probability) or None (a score)
    threshold: float  # D says "real" above it
    discriminator: Loss  # (targets, D's outputs) -> mean loss of this replica's batch
    generator: Callable[[tf.Tensor], tf.Tensor]  # D's outputs on generated images -> G's loss
    description: str  # what d1, d2 and g are under this loss

    @property
    def note(self) -> str:
        """The train-gan run's description in MLflow: the loss and what its numbers mean."""
        return f"train_gan.loss = {self.name}: {self.description}"


LOSSES = {
    "bce": AdversarialLoss(
        "bce",
        "sigmoid",
        0.5,
        bce,
        lambda outputs: bce(tf.ones_like(outputs), outputs),
        "D outputs P(real); d1, d2: binary cross-entropy of D on real / generated images with "
        "their targets; g: cross-entropy of D(G(z)) with target 1; accuracy: P(real) > 0.5",
    ),
    "least_squares": AdversarialLoss(
        "least_squares",
        None,
        0.5,
        squares,
        lambda outputs: squares(tf.ones_like(outputs), outputs),
        "D outputs a score; d1, d2: mean (D(x) - target)^2 on real / generated images (targets "
        "1 and 0); g: mean (D(G(z)) - 1)^2; accuracy: score > 0.5",
    ),
    "hinge": AdversarialLoss(
        "hinge",
        None,
        0.0,
        hinge,
        lambda outputs: -tf.reduce_mean(outputs),
        "D outputs a score; d1: mean max(0, 1 - D(x)) on real images, d2: mean max(0, 1 + D(G(z))) "
        "on generated ones; g: -mean D(G(z)); accuracy: score > 0",
    ),
}
