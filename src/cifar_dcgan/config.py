"""Typed, validated parameters: one frozen dataclass per `params.yaml` section.

The values and the reason for each default live in `params.yaml`; this module only says
what type and range each key must have. `load_params("params.yaml")` checks every key a
stage uses before any work starts and raises a PipelineError naming the key, the value
and what is allowed.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from cifar_dcgan.errors import PipelineError

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # CIFAR-10's splits: no sample can be larger
MAX_GENERATED = 50_000  # generated images scored at once (~0.6 GB of float32 images)
MAX_LATENT_DIM = 16_384  # the generator's first dense layer holds latent_dim x 4096 weights
MAX_D_STEPS = 10  # D updates per G update, unrolled in the traced step
MAX_SEED = 2**31 - 1  # Keras/NumPy take 0 .. 2**32 - 1; restarts add 7919 per restart to it
IMAGE_BYTES = 32 * 32 * 3 * 4
CIFAR_TRAIN = "CIFAR-10 has 50,000 training images"
# Keys added to `model` / `train_gan` after runs were first compared, at the value that does what
# the pipeline did before the key existed (each arrived off). A run tracked before then counts as
# these values in a comparison. A key added later belongs here, at its classic value.
BEFORE_ADDED = {
    "model.d_spectral_norm": False,
    "train_gan.g_ema": 0.0,
    "train_gan.loss": "bce",
    "train_gan.d_steps": 1,
    "train_gan.diff_augment": [],
}


@dataclasses.dataclass(frozen=True)
class TrackingParams:
    experiment: str  # MLflow experiment name


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    url: str  # http(s)://, file:// or a local path of cifar-10-python.tar.gz
    md5: str  # expected md5 of the archive
    limit: int | None  # keep only the first N training images
    retries: int  # download attempts after a transient network error

    def __post_init__(self):
        _check(
            len(self.md5) == 32 and all(c in "0123456789abcdef" for c in self.md5),
            "prepare.md5",
            self.md5,
            "32 lower-case hex digits",
        )
        _check(
            self.limit is None or self.limit >= 1,
            "prepare.limit",
            self.limit,
            "null (all images) or a whole number >= 1",
        )
        _check(self.retries >= 0, "prepare.retries", self.retries, "a whole number >= 0")


@dataclasses.dataclass(frozen=True)
class ModelParams:
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
        _check(
            len(self.d_filters) >= 2 and min(self.d_filters) >= 1,
            "model.d_filters",
            list(self.d_filters),
            "a list of at least 2 positive widths",
        )
        _check(
            1 <= len(self.g_filters) <= 5 and min(self.g_filters) >= 1,
            "model.g_filters",
            list(self.g_filters),
            "a list of 1 to 5 positive widths (32 = seed x 2^n)",
        )
        for key in ("d_kernel", "g_kernel", "g_seed_filters"):
            _check(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), "an integer >= 1")
        _check(0.0 <= self.d_dropout < 1.0, "model.d_dropout", self.d_dropout, "0 <= x < 1")
        _check(0.0 <= self.leaky_slope < 1.0, "model.leaky_slope", self.leaky_slope, "0 <= x < 1")


@dataclasses.dataclass(frozen=True)
class SanityParams:
    iterations: int  # discriminator updates on real vs. noise
    batch_size: int  # half real, half noise
    learning_rate: float  # Adam learning rate
    beta1: float  # Adam beta_1
    min_accuracy: float  # the gate: final real and noise accuracy must reach this
    seed: int  # seeds weights, sampling and noise

    def __post_init__(self):
        _check(
            self.iterations >= 1, "train_discriminator_sanity.iterations", self.iterations, "an integer >= 1"
        )
        _check_batch("train_discriminator_sanity.batch_size", self.batch_size)
        _check_seed("train_discriminator_sanity.seed", self.seed)
        _check(
            self.learning_rate > 0,
            "train_discriminator_sanity.learning_rate",
            self.learning_rate,
            "a number > 0",
        )
        _check(0 <= self.beta1 < 1, "train_discriminator_sanity.beta1", self.beta1, "0 <= x < 1")
        _check(
            0 <= self.min_accuracy <= 1,
            "train_discriminator_sanity.min_accuracy",
            self.min_accuracy,
            "0 <= x <= 1",
        )


@dataclasses.dataclass(frozen=True)
class EvaluatorParams:
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
        _check(
            1 <= len(self.filters) <= 5 and min(self.filters) >= 1,
            f"{s}.filters",
            list(self.filters),
            "a list of 1 to 5 positive widths (each block halves 32x32)",
        )
        _check(self.features >= 2, f"{s}.features", self.features, "an integer >= 2")
        _check(0 <= self.dropout < 1, f"{s}.dropout", self.dropout, "0 <= x < 1")
        _check(self.epochs >= 1, f"{s}.epochs", self.epochs, "an integer >= 1")
        _check_count(f"{s}.batch_size", self.batch_size, 1, TRAIN_IMAGES, CIFAR_TRAIN)
        _check(self.learning_rate > 0, f"{s}.learning_rate", self.learning_rate, "a number > 0")
        _check(
            0 <= self.warmup_epochs < self.epochs,
            f"{s}.warmup_epochs",
            self.warmup_epochs,
            f"0 <= x < train_evaluator.epochs ({self.epochs})",
        )
        _check(self.weight_decay >= 0, f"{s}.weight_decay", self.weight_decay, "a number >= 0")
        _check_seed(f"{s}.seed", self.seed)


@dataclasses.dataclass(frozen=True)
class TrainGanParams:
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

    def __post_init__(self):
        s = "train_gan"
        _check(self.epochs >= 1, f"{s}.epochs", self.epochs, "an integer >= 1")
        _check_batch(f"{s}.batch_size", self.batch_size)
        _check(
            1 <= self.snapshot_every <= self.epochs,
            f"{s}.snapshot_every",
            self.snapshot_every,
            f"1 <= x <= epochs ({self.epochs})",
        )
        _check_count(f"{s}.eval_samples", self.eval_samples, 1, TRAIN_IMAGES, CIFAR_TRAIN)
        _check_count(
            f"{s}.latent_dim",
            self.latent_dim,
            1,
            MAX_LATENT_DIM,
            "the generator's first layer in memory",
            4 * 4096,
        )
        _check_seed(f"{s}.seed", self.seed)
        for key in ("d_learning_rate", "g_learning_rate"):
            _check(getattr(self, key) > 0, f"{s}.{key}", getattr(self, key), "a number > 0")
        _check(0 <= self.beta1 < 1, f"{s}.beta1", self.beta1, "0 <= x < 1")
        _check(0 <= self.label_smoothing < 0.5, f"{s}.label_smoothing", self.label_smoothing, "0 <= x < 0.5")
        _check(0 <= self.label_noise < 0.5, f"{s}.label_noise", self.label_noise, "0 <= x < 0.5")
        _check(0 <= self.label_flip < 0.5, f"{s}.label_flip", self.label_flip, "0 <= x < 0.5")
        _check(self.max_restarts >= 0, f"{s}.max_restarts", self.max_restarts, "an integer >= 0")
        _check(self.failure_window >= 1, f"{s}.failure_window", self.failure_window, "an integer >= 1")
        _check(self.failure_loss > 0, f"{s}.failure_loss", self.failure_loss, "a number > 0")
        _check_count(f"{s}.fcd_samples", self.fcd_samples, 2, MAX_GENERATED, "generated images held at once")
        _check(0 <= self.g_ema < 1, f"{s}.g_ema", self.g_ema, "0 (off) or a decay 0 < x < 1, e.g. 0.999")
        _check(1 <= self.d_steps <= MAX_D_STEPS, f"{s}.d_steps", self.d_steps, f"1 <= x <= {MAX_D_STEPS}")
        if self.loss == "hinge":  # a hinge target is a side (+1 or -1): flips swap it, nothing scales it
            for key in ("label_smoothing", "label_noise"):
                _check(
                    getattr(self, key) == 0,
                    f"{s}.{key}",
                    getattr(self, key),
                    f"0 with {s}.loss hinge (its targets are sides, +1 or -1; label_flip can swap them)",
                )


@dataclasses.dataclass(frozen=True)
class SelectParams:
    epoch: int | None  # a manual pick; null lets the criterion choose
    criterion: Literal["fcd", "kid", "last", "acc_real"]  # the rule when no epoch is given
    target_acc_real: float  # for criterion acc_real: the D accuracy on real images aimed at
    fid_samples: int  # true FID (InceptionV3) of the chosen generator on this many images; 0: skip
    model_name: str  # MLflow registered model the chosen generator becomes a version of
    alias: str  # registry alias of the best (or hand-picked) version
    promote: Literal["if_better", "always", "never"]  # when the alias moves (cifar_dcgan.registry)

    def __post_init__(self):
        _check(
            self.epoch is None or self.epoch >= 1,
            "select_generator.epoch",
            self.epoch,
            "null or a snapshot epoch >= 1",
        )
        _check(
            0 <= self.target_acc_real <= 1,
            "select_generator.target_acc_real",
            self.target_acc_real,
            "0 <= x <= 1",
        )
        _check(
            self.fid_samples == 0 or 2 <= self.fid_samples <= TEST_IMAGES,
            "select_generator.fid_samples",
            self.fid_samples,
            f"0 (skip) or 2 to {TEST_IMAGES} (the test images it is compared with)",
        )
        _check_registry_names(self.model_name, self.alias)


SECTIONS = {
    "tracking": TrackingParams,
    "prepare": PrepareParams,
    "model": ModelParams,
    "train_discriminator_sanity": SanityParams,
    "train_evaluator": EvaluatorParams,
    "train_gan": TrainGanParams,
    "select_generator": SelectParams,
}


def load_params(path: str | Path, *sections: str) -> dict[str, Any]:
    """Read `params.yaml` and return the named sections as validated dataclasses."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PipelineError(f"cannot read {path}: {error.strerror}; run from the repo root") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    known = set(SECTIONS)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PipelineError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(known)}")
    return {name: parse_section(name, raw.get(name), SECTIONS[name]) for name in sections}


def parse_section(name: str, values: Any, cls: type) -> Any:
    """Build `cls` from a mapping, checking unknown and missing keys and every type."""
    if not isinstance(values, dict):
        raise PipelineError(f"params.yaml: section '{name}' is missing or not a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PipelineError(
            f"params.yaml: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"allowed in '{name}': {', '.join(fields)}"
        )
    missing = [k for k in fields if k not in values]
    if missing:
        raise PipelineError(f"params.yaml: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(f"{name}.{k}", values[k], hints[k]) for k in fields}
    return cls(**kwargs)


def flatten(params: dict[str, Any]) -> dict[str, Any]:
    """`{"model": ModelParams(...)}` -> `{"model.d_dropout": 0.4, ...}`, for tracking."""
    flat = {}
    for section, value in params.items():
        for key, item in dataclasses.asdict(value).items():
            flat[f"{section}.{key}"] = list(item) if isinstance(item, tuple) else item
    return flat


def _coerce(key: str, value: Any, typ: Any) -> Any:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        _check(value in args, key, value, "one of " + " | ".join(args))
        return value
    if origin is tuple and typing.get_origin(args[0]) is Literal:  # a set of options: may be empty
        choices = typing.get_args(args[0])
        allowed = f"a list of distinct items of {' | '.join(choices)} (empty: none)"
        _check(isinstance(value, list) and len(set(map(str, value))) == len(value), key, value, allowed)
        _check(all(v in choices for v in value), key, value, allowed)
        return tuple(value)
    if origin is tuple:
        _check(isinstance(value, list) and len(value) > 0, key, value, "a non-empty list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if typ is bool:
        _check(isinstance(value, bool), key, value, "true or false")
    elif typ is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "a whole number")
    elif typ is float:
        _check(isinstance(value, int | float) and not isinstance(value, bool), key, value, "a number")
        return float(value)
    elif typ is str:
        _check(isinstance(value, str) and value != "", key, value, "a non-empty string")
    return value


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise PipelineError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _check_batch(key: str, value: int) -> None:
    _check(value >= 4 and value % 2 == 0, key, value, "an even integer >= 4 (half real, half fake)")
    _check_count(key, value, 4, TRAIN_IMAGES, CIFAR_TRAIN)


def _check_count(key: str, value: int, low: int, high: int, why: str, item_bytes: int = IMAGE_BYTES) -> None:
    """A size bounded by the data (CIFAR-10's split sizes) or by memory; too large, the message
    says what `value` would cost."""
    if low <= value <= high:
        return
    cost = f"; {value} would take ~{value * item_bytes / 1e9:,.0f} GB as float32" if value > high else ""
    raise PipelineError(
        f"params.yaml: {key} = {value!r} is not allowed; expected {low} <= x <= {high} ({why}){cost}"
    )


def _check_seed(key: str, value: int) -> None:
    _check(0 <= value <= MAX_SEED, key, value, f"0 <= x <= {MAX_SEED} (the seeds Keras and NumPy accept)")


def _check_registry_names(model_name: str, alias: str) -> None:
    """MLflow's own rules for a registered model name and an alias, checked when params load,
    so that a bad one is refused before anything is computed or written."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    for key, value, checks in (
        ("select_generator.model_name", model_name, (_validate_model_name,)),
        ("select_generator.alias", alias, (_validate_model_alias_name, _validate_model_alias_name_reserved)),
    ):
        try:
            for check in checks:
                check(value)
        except MlflowException as error:
            raise PipelineError(
                f"params.yaml: {key} = {value!r} is not allowed by MLflow: {error.message}"
            ) from None
