"""The `train_evaluator` section: the offline judge behind FCD and KID (cifar_dcgan.evaluator)."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import (
    CIFAR_TRAIN,
    MAX_FILTERS,
    TEST_IMAGES,
    TRAIN_IMAGES,
    check,
    check_count,
    check_epochs,
    check_learning_rate,
    check_seed,
)

# FID's InceptionV3 features are 2048 wide; FCD's covariance of F features needs many more than
# F images to be estimated (the test split has 10,000), and its square root takes F^3 per snapshot
MAX_FEATURES = 2048


@dataclasses.dataclass(frozen=True)
class EvaluatorParams:
    SECTION: ClassVar[str] = "train_evaluator"

    filters: tuple[int, ...]  # conv widths, one block of two 3x3 convs + 2x2 max-pool each
    pool: Literal["after", "between"]  # where a block's max-pool sits: after its two convs or between them
    features: int  # width of the penultimate layer: the features FCD and KID compare
    dropout: float  # dropout before the class layer
    augment: bool  # random horizontal flips and shifts of up to 4 pixels while training
    epochs: int  # passes over the training split
    batch_size: int  # images per update
    learning_rate: float  # AdamW peak learning rate, cosine-decayed to 0
    warmup_epochs: float  # the learning rate rises linearly from 0 to the peak over these first epochs
    weight_decay: float  # AdamW decoupled weight decay
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16", "auto"]  # while training only
    seed: int  # weights, shuffling and augmentation

    def __post_init__(self):
        s = "train_evaluator"
        check(
            1 <= len(self.filters) <= 5 and 1 <= min(self.filters) and max(self.filters) <= MAX_FILTERS,
            f"{s}.filters",
            list(self.filters),
            f"a list of 1 to 5 widths of 1 to {MAX_FILTERS} (each block halves the image; a 3x3 conv of "
            f"{MAX_FILTERS} -> {MAX_FILTERS} channels already holds 151M weights)",
        )
        check(
            2 <= self.features <= MAX_FEATURES,
            f"{s}.features",
            self.features,
            f"2 <= x <= {MAX_FEATURES} (as wide as FID's InceptionV3 features; FCD's covariance needs "
            f"many more images than features, and the test split has {TEST_IMAGES:,})",
        )
        check(0 <= self.dropout < 1, f"{s}.dropout", self.dropout, "0 <= x < 1")
        check_epochs(f"{s}.epochs", self.epochs)
        check_count(f"{s}.batch_size", self.batch_size, 1, TRAIN_IMAGES, CIFAR_TRAIN)
        check_learning_rate(f"{s}.learning_rate", self.learning_rate)
        check(
            0 <= self.warmup_epochs < self.epochs,
            f"{s}.warmup_epochs",
            self.warmup_epochs,
            f"0 <= x < train_evaluator.epochs ({self.epochs})",
        )
        check(self.weight_decay >= 0, f"{s}.weight_decay", self.weight_decay, "a number >= 0")
        check_seed(f"{s}.seed", self.seed)

    def check_image_size(self, image_shape: tuple[int, ...]) -> None:
        """Each block halves the image (rounding down): refuse more blocks than its side allows."""
        side, blocks = image_shape[0], len(self.filters)
        check(
            side >= 2**blocks,
            "train_evaluator.filters",
            list(self.filters),
            f"at most {max(1, side.bit_length() - 1)} entries for images of {side}x{side} "
            f"(each block halves them: {blocks} would leave nothing)",
        )
