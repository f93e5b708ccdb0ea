"""The `model` section: the two networks' architecture (cifar_dcgan.models builds them)."""

import dataclasses
from typing import ClassVar, Literal

from cifar_dcgan.config import MAX_FILTERS, check
from cifar_dcgan.errors import PipelineError

MAX_WEIGHTS = 250_000_000  # per network: 1 GB of float32, x4 with gradients and Adam's two moments
MAX_LAYERS = 8  # convs per network: 2^7 = 128 px already halves to 1 pixel
MAX_KERNEL = 32  # no image this pipeline prepares (28 to 128 px) needs a wider kernel


@dataclasses.dataclass(frozen=True)
class ModelParams:
    SECTION: ClassVar[str] = "model"

    d_filters: tuple[int, ...]  # discriminator conv widths
    d_strides: tuple[int, ...] | None  # one per d_filters entry; None: the first 1, the rest 2
    d_kernel: int  # discriminator kernel size
    d_dropout: float  # dropout before the discriminator's output layer (0: no layer)
    d_batch_norm: bool  # batch norm after each discriminator conv but the first
    d_batch_norm_first: bool  # with d_batch_norm: after the first conv too
    g_seed_filters: int  # channels of the generator's first, smallest feature map
    g_filters: tuple[int, ...]  # one stride-2 upsampling block per entry
    g_kernel: int  # generator kernel size of the upsampling blocks
    g_batch_norm: bool  # batch norm after the generator's upsampling layers
    g_batch_norm_dense: bool  # with g_batch_norm: after the dense layer too
    g_batch_norm_after_activation: bool  # LeakyReLU then batch norm (else batch norm first)
    g_upsampling: Literal["conv_transpose", "upsample_conv"]  # how the generator upsamples
    g_output: Literal["conv", "conv_transpose", "upsample_conv"]  # G's last layer; upsample_conv doubles
    g_output_kernel: int  # kernel size of G's output layer
    leaky_slope: float  # LeakyReLU negative slope, both networks
    init: Literal["glorot", "normal", "truncated_normal"]  # Keras default, or N(0, 0.02) (truncated)
    d_spectral_norm: bool  # spectral normalization of every discriminator conv and dense layer

    def __post_init__(self):
        check(
            2 <= len(self.d_filters) <= MAX_LAYERS and min(self.d_filters) >= 1,
            "model.d_filters",
            list(self.d_filters),
            f"a list of 2 to {MAX_LAYERS} positive widths",
        )
        check(
            self.d_strides is None
            or (len(self.d_strides) == len(self.d_filters) and all(s in (1, 2) for s in self.d_strides)),
            "model.d_strides",
            None if self.d_strides is None else list(self.d_strides),
            f"null (1, then 2s) or one stride of 1 or 2 per d_filters entry ({len(self.d_filters)})",
        )
        check(
            1 <= len(self.g_filters) <= MAX_LAYERS and min(self.g_filters) >= 1,
            "model.g_filters",
            list(self.g_filters),
            f"a list of 1 to {MAX_LAYERS} positive widths (image side = seed side x 2^n)",
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
        for key in ("d_kernel", "g_kernel", "g_output_kernel"):
            check(
                1 <= getattr(self, key) <= MAX_KERNEL,
                f"model.{key}",
                getattr(self, key),
                f"1 <= x <= {MAX_KERNEL}",
            )
        check(0.0 <= self.d_dropout < 1.0, "model.d_dropout", self.d_dropout, "0 <= x < 1")
        check(0.0 <= self.leaky_slope < 1.0, "model.leaky_slope", self.leaky_slope, "0 <= x < 1")
        # the convs, whatever the image size (its dense layers are checked with the data's shape)
        widths, k = (3, *self.d_filters), self.d_kernel
        self._check_size(
            "discriminator", sum(k * k * a * b for a, b in zip(widths, widths[1:])), "d_filters or d_kernel"
        )
        widths, k = (self.g_seed_filters, *self.g_filters), self.g_kernel
        self._check_size(
            "generator",
            sum(k * k * a * b for a, b in zip(widths, widths[1:])) + self.g_output_kernel**2 * widths[-1] * 3,
            "g_filters, g_seed_filters or g_kernel",
        )

    @property
    def strides(self) -> tuple[int, ...]:
        """The discriminator's stride per conv."""
        return self.d_strides or (1,) + (2,) * (len(self.d_filters) - 1)

    @property
    def g_doublings(self) -> int:
        """How many times the generator doubles its seed's side."""
        return len(self.g_filters) + (self.g_output == "upsample_conv")

    def check_shape(self, image_shape: tuple[int, int, int], latent_dim: int | None) -> int:
        """Refuse an image size the generator cannot reach, saying what would fit, and networks
        too large for memory at this size (the generator's only with `latent_dim`). Returns the
        side of the generator's seed."""
        side, channels = image_shape[0], image_shape[2]
        doublings = self.g_doublings
        if side % 2**doublings:
            fits = max(n for n in range(MAX_LAYERS + 1) if side % 2**n == 0)
            change = (
                "use an even prepare.resolution"
                if fits == 0
                else f"at most {fits} fit {side} px: change model.g_filters, or prepare.resolution"
            )
            raise PipelineError(
                f"params.yaml: model: the generator doubles its seed {doublings} times "
                f"(model.g_filters has {len(self.g_filters)} entries"
                f"{', plus model.g_output upsample_conv' if self.g_output == 'upsample_conv' else ''}), "
                f"which cannot make {side}x{side} images ({side} / 2^{doublings} is not whole; e.g. "
                f"28 = 7 x 2^2, 32 = 4 x 2^3, 64 = 8 x 2^3); {change}"
            )
        seed = side // 2**doublings
        widths, k = (channels, *self.d_filters), self.d_kernel
        d_side = side
        for stride in self.strides:
            d_side = -(-d_side // stride)  # 'same' padding rounds up
        d_weights = sum(k * k * a * b for a, b in zip(widths, widths[1:])) + d_side * d_side * widths[-1]
        self._check_size("discriminator", d_weights, "d_filters, d_strides or d_kernel")
        if latent_dim is None:
            return seed
        widths, k = (self.g_seed_filters, *self.g_filters), self.g_kernel
        g_weights = (
            latent_dim * seed * seed * self.g_seed_filters
            + sum(k * k * a * b for a, b in zip(widths, widths[1:]))
            + self.g_output_kernel**2 * widths[-1] * channels
        )
        self._check_size("generator", g_weights, "g_filters, g_seed_filters or train_gan.latent_dim")
        return seed

    def _check_size(self, network: str, weights: int, keys: str) -> None:
        if weights > MAX_WEIGHTS:
            raise PipelineError(
                f"params.yaml: model: the {network} would hold ~{weights / 1e6:,.0f}M weights; at most "
                f"{MAX_WEIGHTS / 1e6:,.0f}M fit (1 GB of float32, x4 while training with gradients and "
                f"Adam's moments): lower model.{keys}"
            )
