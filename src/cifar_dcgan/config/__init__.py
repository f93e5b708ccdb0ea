"""Typed, validated parameters: one frozen dataclass per `params.yaml` section, each in a
module of its own (`cifar_dcgan.config.train_gan`, ...), so that a stage's code depends on
the sections it reads and no other.

The values and the reason for each default live in `params.yaml`; the section modules only
say what type and range each key must have. `load_params("params.yaml", ModelParams, ...)`
checks every key a stage uses before any work starts and raises a PipelineError naming the
key, the value and what is allowed. This module holds what the sections share: reading the
file, the checks, and the bounds set by the data.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from cifar_dcgan.errors import PipelineError

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # CIFAR-10's splits: no sample can be larger
MAX_GENERATED = 50_000  # generated images scored at once (~0.6 GB of float32 images)
MAX_LATENT_DIM = 16_384  # the generator's first dense layer holds latent_dim x 4096 weights
MAX_D_STEPS = 10  # D updates per G update, unrolled in the traced step
MAX_SEED = 2**31 - 1  # Keras/NumPy take 0 .. 2**32 - 1; restarts add 7919 per restart to it
IMAGE_BYTES = 32 * 32 * 3 * 4
CIFAR_TRAIN = "CIFAR-10 has 50,000 training images"


@dataclasses.dataclass(frozen=True)
class TrackingParams:
    SECTION: ClassVar[str] = "tracking"

    experiment: str  # MLflow experiment name


SECTION_NAMES = (  # every section params.yaml may hold, in its order
    "tracking",
    "prepare",
    "model",
    "train_discriminator_sanity",
    "train_evaluator",
    "train_gan",
    "select_generator",
)


def load_params(path: str | Path, *sections: type) -> dict[str, Any]:
    """Read `params.yaml` and return the sections of these classes as validated dataclasses,
    by section name (`{"train_gan": TrainGanParams(...)}`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PipelineError(f"cannot read {path}: {error.strerror}; run from the repo root") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    known = set(SECTION_NAMES)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PipelineError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(known)}")
    return {cls.SECTION: parse_section(cls.SECTION, raw.get(cls.SECTION), cls) for cls in sections}


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
        check(value in args, key, value, "one of " + " | ".join(args))
        return value
    if origin is tuple and typing.get_origin(args[0]) is Literal:  # a set of options: may be empty
        choices = typing.get_args(args[0])
        allowed = f"a list of distinct items of {' | '.join(choices)} (empty: none)"
        check(isinstance(value, list) and len(set(map(str, value))) == len(value), key, value, allowed)
        check(all(v in choices for v in value), key, value, allowed)
        return tuple(value)
    if origin is tuple:
        check(isinstance(value, list) and len(value) > 0, key, value, "a non-empty list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if typ is bool:
        check(isinstance(value, bool), key, value, "true or false")
    elif typ is int:
        check(isinstance(value, int) and not isinstance(value, bool), key, value, "a whole number")
    elif typ is float:
        check(isinstance(value, int | float) and not isinstance(value, bool), key, value, "a number")
        return float(value)
    elif typ is str:
        check(isinstance(value, str) and value != "", key, value, "a non-empty string")
    return value


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise PipelineError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def check_batch(key: str, value: int) -> None:
    check(value >= 4 and value % 2 == 0, key, value, "an even integer >= 4 (half real, half fake)")
    check_count(key, value, 4, TRAIN_IMAGES, CIFAR_TRAIN)


def check_count(key: str, value: int, low: int, high: int, why: str, item_bytes: int = IMAGE_BYTES) -> None:
    """A size bounded by the data (CIFAR-10's split sizes) or by memory; too large, the message
    says what `value` would cost."""
    if low <= value <= high:
        return
    cost = f"; {value} would take ~{value * item_bytes / 1e9:,.0f} GB as float32" if value > high else ""
    raise PipelineError(
        f"params.yaml: {key} = {value!r} is not allowed; expected {low} <= x <= {high} ({why}){cost}"
    )


def check_seed(key: str, value: int) -> None:
    check(0 <= value <= MAX_SEED, key, value, f"0 <= x <= {MAX_SEED} (the seeds Keras and NumPy accept)")
