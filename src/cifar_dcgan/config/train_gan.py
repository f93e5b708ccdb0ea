"""The `train_gan` section: how the DCGAN trains (cifar_dcgan.training)."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import (
    CIFAR_TRAIN,
    MAX_D_STEPS,
    MAX_GENERATED,
    MAX_LATENT_DIM,
    MAX_SEED,
    TRAIN_IMAGES,
    check,
    check_batch,
    check_count,
    check_epochs,
    check_learning_rate,
    check_seed,
)

RESTART_SEED_STEP = 7919  # restart n trains on seed + 7919 n (cifar_dcgan.training)
MAX_RESTARTS = (2**32 - 1 - MAX_SEED) // RESTART_SEED_STEP  # its seed stays one NumPy accepts
EMA_COVERED = 0.95  # TrainGanParams.ema_coverage below this: the run is too short to test its g_ema


@dataclasses.dataclass(frozen=True)
class TrainGanParams:
    SECTION: ClassVar[str] = "train_gan"

    epochs: int  # passes of floor(N / batch_size) iterations
    batch_size: int  # half real, half generated in each D update; all generated in G's
    sampling: Literal["random", "shuffled"]  # real half-batches: drawn with replacement or a shuffled pass
    snapshot_every: int  # epochs between snapshots (the last epoch always gets one)
    eval_samples: int  # real and generated images D's accuracy is measured on
    latent_dim: int  # size of the generator's input
    latent_distribution: Literal["gaussian", "uniform"]  # N(0, 1) or U(-1, 1)
    d_learning_rate: float  # discriminator Adam learning rate
    g_learning_rate: float  # generator Adam learning rate
    beta1: float  # Adam beta_1, both optimizers
    label_smoothing: float  # one-sided: real targets become 1 - s
    label_noise: float  # real targets get U(-n, n) added (clipped to [0, 1])
    label_flip: float  # probability of swapping real/fake labels in D updates
    seed: int  # seeds weights, sampling, latents and the probe grid
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16", "auto"]  # compute dtype policy
    distribute: Literal["none", "mirrored", "multi_worker"]  # tf.distribute strategy of the step
    on_failure: Literal["warn", "stop", "restart"]  # what a detected failure does
    max_restarts: int  # restarts allowed with on_failure restart before stopping
    failure_window: int  # last iterations of each epoch checked for a discriminator that has won
    failure_loss: float  # d1 and d2 both below this over the window: D has won
    fcd_samples: int  # generated images FCD, KID and the other quality metrics use per snapshot
    g_ema: float  # EMA decay of G's weights for snapshots (0: off); G itself trains as before
    loss: Literal["bce", "hinge", "least_squares"]  # the adversarial loss (cifar_dcgan.losses)
    d_steps: int  # D updates (each on a real and a generated half-batch) per G update
    diff_augment: tuple[Literal["color", "translation", "cutout"], ...]  # DiffAugment of what D sees

    def ema_coverage(self, updates: int) -> float:
        """Of the weight `g_ema` gives past updates (decay^k for the k-th last), the share that
        `updates` updates fill: 1 - decay^updates (1 with the average off). Below EMA_COVERED a
        run is too short to test its decay: its average weighs its updates more evenly than the
        decay says, the earliest ones too."""
        return 1.0 - self.g_ema**updates if self.g_ema > 0 else 1.0

    def __post_init__(self):
        s = "train_gan"
        check_epochs(f"{s}.epochs", self.epochs)
        check_batch(f"{s}.batch_size", self.batch_size)
        check(
            1 <= self.snapshot_every <= self.epochs,
            f"{s}.snapshot_every",
            self.snapshot_every,
            f"1 <= x <= epochs ({self.epochs})",
        )
        check_count(f"{s}.eval_samples", self.eval_samples, 1, TRAIN_IMAGES, CIFAR_TRAIN)
        check_count(
            f"{s}.latent_dim",
            self.latent_dim,
            1,
            MAX_LATENT_DIM,
            "the generator's first layer in memory",
            4 * 4096,
        )
        check_seed(f"{s}.seed", self.seed)
        for key in ("d_learning_rate", "g_learning_rate"):
            check_learning_rate(f"{s}.{key}", getattr(self, key))
        check(0 <= self.beta1 < 1, f"{s}.beta1", self.beta1, "0 <= x < 1")
        check(0 <= self.label_smoothing < 0.5, f"{s}.label_smoothing", self.label_smoothing, "0 <= x < 0.5")
        check(0 <= self.label_noise < 0.5, f"{s}.label_noise", self.label_noise, "0 <= x < 0.5")
        check(0 <= self.label_flip < 0.5, f"{s}.label_flip", self.label_flip, "0 <= x < 0.5")
        check(
            0 <= self.max_restarts <= MAX_RESTARTS,
            f"{s}.max_restarts",
            self.max_restarts,
            f"0 <= x <= {MAX_RESTARTS:,} (restart n seeds with seed + {RESTART_SEED_STEP} n, below 2**32)",
        )
        check(self.failure_window >= 1, f"{s}.failure_window", self.failure_window, "an integer >= 1")
        check(self.failure_loss > 0, f"{s}.failure_loss", self.failure_loss, "a number > 0")
        check_count(f"{s}.fcd_samples", self.fcd_samples, 2, MAX_GENERATED, "generated images held at once")
        check(0 <= self.g_ema < 1, f"{s}.g_ema", self.g_ema, "0 (off) or a decay 0 < x < 1, e.g. 0.999")
        check(1 <= self.d_steps <= MAX_D_STEPS, f"{s}.d_steps", self.d_steps, f"1 <= x <= {MAX_D_STEPS}")
        if self.loss == "hinge":  # a hinge target is a side (+1 or -1): flips swap it, nothing scales it
            for key in ("label_smoothing", "label_noise"):
                check(
                    getattr(self, key) == 0,
                    f"{s}.{key}",
                    getattr(self, key),
                    f"0 with {s}.loss hinge (its targets are sides, +1 or -1; label_flip can swap them)",
                )
