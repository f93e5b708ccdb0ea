"""The `train_discriminator_sanity` section: the discriminator's sanity gate (cifar_dcgan.sanity)."""

import dataclasses
from typing import ClassVar

from cifar_dcgan.config import check, check_batch, check_learning_rate, check_seed

MAX_ITERATIONS = 100_000  # a working discriminator passes within a few dozen; this many take hours


@dataclasses.dataclass(frozen=True)
class SanityParams:
    SECTION: ClassVar[str] = "train_discriminator_sanity"

    iterations: int  # discriminator updates on real vs. noise
    batch_size: int  # half real, half noise
    learning_rate: float  # Adam learning rate
    beta1: float  # Adam beta_1
    min_accuracy: float  # the gate: final real and noise accuracy must reach this
    seed: int  # seeds weights, sampling and noise

    def __post_init__(self):
        check(
            1 <= self.iterations <= MAX_ITERATIONS,
            "train_discriminator_sanity.iterations",
            self.iterations,
            f"1 <= x <= {MAX_ITERATIONS:,} (a working discriminator passes within a few dozen)",
        )
        check_batch("train_discriminator_sanity.batch_size", self.batch_size)
        check_seed("train_discriminator_sanity.seed", self.seed)
        check_learning_rate("train_discriminator_sanity.learning_rate", self.learning_rate)
        check(0 <= self.beta1 < 1, "train_discriminator_sanity.beta1", self.beta1, "0 <= x < 1")
        check(
            0 <= self.min_accuracy <= 1,
            "train_discriminator_sanity.min_accuracy",
            self.min_accuracy,
            "0 <= x <= 1",
        )
