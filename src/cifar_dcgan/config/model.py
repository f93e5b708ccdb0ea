"""The `model` section: the two networks' architecture (cifar_dcgan.models builds them)."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import check


@dataclasses.dataclass(frozen=True)
class ModelParams:
    SECTION: ClassVar[str] = "model"

    d_filters: tuple[int, ...]  # discriminator conv widths; the first stride 1, the rest 2
    d_kernel: int  # discriminator kernel size
    d_dropout: float  # dropout before the discriminator's output layer
    d_batch_norm: bool  # batch norm after each strided discriminator conv
    g_seed_filters: int  # channels of the generator's first, smallest feature map
    g_filters: tuple[int, ...]  # one stride-2 upsampling block per entry
    g_kernel: int  # generator kernel size of the upsampling blocks
    g_batch_norm: bool  # batch norm after the generator's dense and upsampling layers
    g_upsampling: Literal["conv_transpose", "upsample_conv"]  # how the generator upsamples
    leaky_slope: float  # LeakyReLU negative slope, both networks
    init: Literal["glorot", "normal"]  # weight init: Keras default or N(0, 0.02)
    d_spectral_norm: bool  # spectral normalization of every discriminator conv and dense layer

    def __post_init__(self):
        check(
            len(self.d_filters) >= 2 and min(self.d_filters) >= 1,
            "model.d_filters",
            list(self.d_filters),
            "a list of at least 2 positive widths",
        )
        check(
            1 <= len(self.g_filters) <= 5 and min(self.g_filters) >= 1,
            "model.g_filters",
            list(self.g_filters),
            "a list of 1 to 5 positive widths (32 = seed x 2^n)",
        )
        for key in ("d_kernel", "g_kernel", "g_seed_filters"):
            check(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), "an integer >= 1")
        check(0.0 <= self.d_dropout < 1.0, "model.d_dropout", self.d_dropout, "0 <= x < 1")
        check(0.0 <= self.leaky_slope < 1.0, "model.leaky_slope", self.leaky_slope, "0 <= x < 1")
