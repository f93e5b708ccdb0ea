"""The `model` section: the two networks' architecture (cifar_dcgan.models builds them)."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import IMAGE_SIZE, MAX_FILTERS, check
from cifar_dcgan.errors import PipelineError

MAX_WEIGHTS = 250_000_000  # per network: 1 GB of float32, x4 with gradients and Adam's two moments
MAX_D_CONVS = 6  # the first conv keeps 32 x 32, each next one halves it: 32 -> 1 after five


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
            2 <= len(self.d_filters) <= MAX_D_CONVS and min(self.d_filters) >= 1,
            "model.d_filters",
            list(self.d_filters),
            f"a list of 2 to {MAX_D_CONVS} positive widths (the first keeps 32x32, each next one halves it)",
        )
        check(
            1 <= len(self.g_filters) <= 5 and min(self.g_filters) >= 1,
            "model.g_filters",
            list(self.g_filters),
            "a list of 1 to 5 positive widths (32 = seed x 2^n)",
        )
        for key in ("d_filters", "g_filters"):
            widths = getattr(self, key)
            check(
                max(widths) <= MAX_FILTERS,
                f"model.{key}",
                list(widths),
                f"widths <= {MAX_FILTERS} (a 3x3 conv of {MAX_FILTERS} -> {MAX_FILTERS} channels already "
                "holds 151M weights)",
            )
        check(
            1 <= self.g_seed_filters <= MAX_FILTERS,
            "model.g_seed_filters",
            self.g_seed_filters,
            f"1 <= x <= {MAX_FILTERS} (channels of a conv's input, as for the widths)",
        )
        for key in ("d_kernel", "g_kernel"):
            check(
                1 <= getattr(self, key) <= IMAGE_SIZE,
                f"model.{key}",
                getattr(self, key),
                f"1 <= x <= {IMAGE_SIZE} (no wider than the {IMAGE_SIZE}x{IMAGE_SIZE} image)",
            )
        check(0.0 <= self.d_dropout < 1.0, "model.d_dropout", self.d_dropout, "0 <= x < 1")
        check(0.0 <= self.leaky_slope < 1.0, "model.leaky_slope", self.leaky_slope, "0 <= x < 1")
        self._check_size("discriminator", self.discriminator_weights(), "d_filters or model.d_kernel")
        self._check_size("generator", self.generator_weights(), "g_filters, g_seed_filters or g_kernel")

    def discriminator_weights(self) -> int:
        """Weights of the discriminator's convs and output layer (biases aside)."""
        widths, k = (3, *self.d_filters), self.d_kernel
        side = -(-IMAGE_SIZE // 2 ** (len(self.d_filters) - 1))  # 'same' padding rounds up
        return sum(k * k * a * b for a, b in zip(widths, widths[1:])) + side * side * widths[-1]

    def generator_weights(self) -> int:
        """Weights of the generator's upsampling blocks and output conv; the dense layer before
        them also scales with train_gan.latent_dim (checked there)."""
        widths, k = (self.g_seed_filters, *self.g_filters), self.g_kernel
        return sum(k * k * a * b for a, b in zip(widths, widths[1:])) + 3 * 3 * widths[-1] * 3

    def check_latent_dim(self, latent_dim: int) -> None:
        """The generator with its first layer, a dense one of latent_dim x (side x side x
        g_seed_filters) weights: called once both sections are loaded."""
        side = IMAGE_SIZE // 2 ** len(self.g_filters)
        weights = latent_dim * side * side * self.g_seed_filters + self.generator_weights()
        self._check_size("generator", weights, "g_seed_filters or train_gan.latent_dim")

    def _check_size(self, network: str, weights: int, keys: str) -> None:
        if weights > MAX_WEIGHTS:
            raise PipelineError(
                f"params.yaml: model: the {network} would hold ~{weights / 1e6:,.0f}M weights; at most "
                f"{MAX_WEIGHTS / 1e6:,.0f}M fit (1 GB of float32, x4 while training with gradients and "
                f"Adam's moments): lower model.{keys}"
            )
