"""Typed, validated parameters: one frozen dataclass per `params.yaml` section, each in a
module of its own (`cifar_dcgan.config.train_gan`, ...), so that a stage's code depends on
the sections it reads and no other.

The values and the reason for each default live in `params.yaml`; the section modules only
say what type and range each key must have. `load_params("params.yaml", ModelParams, ...)`
checks every key a stage uses before any work starts and raises a PipelineError naming the
key, the value and what is allowed. This module holds what the sections share: reading the
file (refusing anchors and aliases, duplicate keys and sizes no params file has), the checks,
and the bounds set by the data, the memory and the time.
"""

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from cifar_dcgan.errors import PipelineError, clip, quoted

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # CIFAR-10's splits: no sample can be larger
MAX_GENERATED = 50_000  # generated images scored at once (~0.6 GB of float32 images)
MAX_LATENT_DIM = 16_384  # G's first dense layer holds latent_dim x 4 x 4 x g_seed_filters weights
MAX_D_STEPS = 10  # D updates per G update, unrolled in the traced step
MAX_SEED = 2**31 - 1  # Keras/NumPy take 0 .. 2**32 - 1; restarts add 7919 per restart to it
MAX_EPOCHS = 100_000  # an epoch of the full training split takes minutes: this many take months
IMAGE_SIZE = 32  # CIFAR-10 images are 32 x 32: no kernel needs to be wider
MAX_FILTERS = 4096  # a 3x3 conv of 4096 -> 4096 channels holds 151M weights (0.6 GB, x4 while training)
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE * 3 * 4
CIFAR_TRAIN = "CIFAR-10 has 50,000 training images"
MAX_PARAMS_BYTES = 1_000_000  # the shipped params.yaml is ~6 KB: anything this large is not a params file
MAX_DEPTH = 8  # nesting a params file needs: section, key, list (8 leaves room)


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
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    known = set(SECTION_NAMES)
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise PipelineError(f"{path}: unknown section(s) {quoted(unknown)}; allowed: {sorted(known)}")
    params = {cls.SECTION: parse_section(cls.SECTION, raw.get(cls.SECTION), cls) for cls in sections}
    return params


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`, refused with a PipelineError naming the file when it is not
    what a params file can be: too large, nested too deep, with anchors and aliases (which
    expand a few KB into GB), or with a key given twice (which DVC refuses)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PARAMS_BYTES + 1)
    except OSError as error:
        raise PipelineError(f"cannot read {path}: {error.strerror}; run from the repo root") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise PipelineError(
            f"{path} is larger than {MAX_PARAMS_BYTES:,} bytes; a params file needs a few KB "
            "(the shipped params.yaml is ~6 KB): is it the right file?"
        )
    try:
        loader = _ParamsLoader(data.decode("utf-8"), path)
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {clip(str(error), 600)}") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise PipelineError(f"{path}: a value cannot be read: {clip(str(error), 300)}") from None
    finally:
        loader.dispose()


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a params file never needs: anchors and aliases,
    keys given twice, and nesting deeper than MAX_DEPTH (PyYAML recurses per level)."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.name = str(path)  # YAML's own messages name the file, not "<unicode string>"
        self.path, self.keys = path, []  # keys: where the node being composed sits

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise PipelineError(
                f"{self.path}, line {line}: YAML anchors and aliases (&name, *name, <<: *name) are "
                "not allowed in a params file; write the values out in full"
            )
        if len(self.keys) >= MAX_DEPTH:
            raise PipelineError(
                f"{self.path}, line {line}: nested deeper than {MAX_DEPTH} levels; a params file needs "
                "three (section, key, list of values)"
            )
        self.keys.append(index.value if isinstance(index, yaml.ScalarNode) else "")
        try:
            return super().compose_node(parent, index)
        finally:
            self.keys.pop()

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first = {}  # (tag, text) of each key: `1` and `"1"` differ, `a` and `"a"` do not
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if (key.tag, key.value) in first:
                name = ".".join(k for k in [*self.keys, key.value] if k)
                raise PipelineError(
                    f"{self.path}, line {key.start_mark.line + 1}: duplicate key {clip(name)} (first "
                    f"on line {first[key.tag, key.value]}); DVC refuses such a file too: keep one"
                )
            first[key.tag, key.value] = key.start_mark.line + 1
        return node


def parse_section(name: str, values: Any, cls: type) -> Any:
    """Build `cls` from a mapping, checking unknown and missing keys and every type."""
    if not isinstance(values, dict):
        raise PipelineError(f"params.yaml: section '{name}' is missing or not a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise PipelineError(
            f"params.yaml: unknown key(s) {clip(', '.join(f'{name}.{k}' for k in unknown))}; "
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
        check(_finite(value), key, value, "a finite number")
        return float(value)
    elif typ is str:
        check(isinstance(value, str) and value != "", key, value, "a non-empty string")
    return value


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise PipelineError(f"params.yaml: {key} = {quoted(value)} is not allowed; expected {allowed}")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float's range
        return False


def check_batch(key: str, value: int) -> None:
    check(value >= 4 and value % 2 == 0, key, value, "an even integer >= 4 (half real, half fake)")
    check_count(key, value, 4, TRAIN_IMAGES, CIFAR_TRAIN)


def check_count(key: str, value: int, low: int, high: int, why: str, item_bytes: int = IMAGE_BYTES) -> None:
    """A size bounded by the data (CIFAR-10's split sizes) or by memory; too large, the message
    says what `value` would cost."""
    if low <= value <= high:
        return
    cost = f"; {quoted(value)} would take {_gigabytes(value * item_bytes)} as float32" if value > high else ""
    raise PipelineError(
        f"params.yaml: {key} = {quoted(value)} is not allowed; expected {low} <= x <= {high} ({why}){cost}"
    )


def _gigabytes(size: int) -> str:
    gb = size // 10**9
    return f"~{gb:,} GB" if gb < 10**15 else "more memory than any machine has"


def check_seed(key: str, value: int) -> None:
    check(0 <= value <= MAX_SEED, key, value, f"0 <= x <= {MAX_SEED} (the seeds Keras and NumPy accept)")


def check_epochs(key: str, value: int) -> None:
    check(1 <= value <= MAX_EPOCHS, key, value, f"1 <= x <= {MAX_EPOCHS:,} (an epoch takes minutes)")


def check_learning_rate(key: str, value: float) -> None:
    check(0 < value, key, value, "a number > 0 (and finite)")
