"""What a sweep runs: its arms (a name and `-S` overrides each) times its seeds, one DVC
experiment per arm and seed, named `<arm>-<seed>`; checked before any machine starts."""

import dataclasses
import re

import yaml

from cifar_dcgan.errors import PipelineError, quoted

NAME = re.compile(
    r"[A-Za-z0-9]+(?:[_.][A-Za-z0-9]+)*"
)  # a DVC experiment name's safe part ("a..b" is no git ref); `-` joins arm and seed
SEED_KEY = "train_gan.seed"
PRECISION_KEY = "train_gan.precision"
JUDGE_SECTIONS = ("prepare", "train_discriminator_sanity", "train_evaluator")  # the sweep's, not an arm's


@dataclasses.dataclass(frozen=True)
class Trial:
    """One DVC experiment of the sweep."""

    name: str  # `<arm>-<seed>`, the DVC experiment's and the MLflow parent run's name
    arm: str
    seed: int
    overrides: tuple[str, ...]  # `KEY=VALUE`, as `dvc exp run -S` takes them, the seed last


def trials(arms: list[list[str]], seeds: list[int], params: dict) -> list[Trial]:
    """Every arm x seed. `arms` holds `[NAME, KEY=VALUE, ...]` per arm; `params` is the
    baseline commit's params.yaml, against which each key is checked."""
    if not arms:
        raise PipelineError("no arm given: name at least one, e.g. --arm classic")
    if not seeds or len(set(seeds)) != len(seeds):
        raise PipelineError(f"--seeds must name distinct seeds, got {seeds}")
    names = [arm[0] for arm in arms]
    for name in names:
        if not NAME.fullmatch(name):
            raise PipelineError(
                f"arm name {quoted(name)} is not usable in a DVC experiment name: use letters, digits, "
                "`_` and `.`"
            )
    if len(set(names)) != len(names):
        raise PipelineError(f"two arms share a name: {names}")
    planned = []
    for name, *overrides in arms:
        checked = tuple(_override(item, params, name) for item in overrides)
        if any(key == SEED_KEY for key, _ in checked):
            raise PipelineError(f"arm {name} sets {SEED_KEY}: the seed comes from --seeds")
        judged = [key for key, _ in checked if key.split(".")[0] in JUDGE_SECTIONS]
        if judged:
            raise PipelineError(
                f"arm {name} changes {', '.join(judged)}: the data and the judge are the sweep's, "
                "trained once for every arm (FCDs of different judges cannot be compared); change "
                "them in params.yaml of the baseline commit instead"
            )
        precision = dict(checked).get(PRECISION_KEY, _lookup(params, PRECISION_KEY))
        if precision == "auto":
            raise PipelineError(
                f"arm {name} trains with {PRECISION_KEY} = auto, which each machine resolves by its CPU: "
                f"pin it, e.g. {PRECISION_KEY}=float32 or {PRECISION_KEY}=mixed_bfloat16, so that every "
                "seed of an arm trains alike"
            )
        for seed in seeds:
            pairs = [f"{key}={value}" for key, value in checked]
            planned.append(Trial(f"{name}-{seed}", name, seed, (*pairs, f"{SEED_KEY}={seed}")))
    return planned


def _override(item: str, params: dict, arm: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise PipelineError(f"arm {arm}: {quoted(item)} is not KEY=VALUE, e.g. train_gan.loss=hinge")
    try:
        _lookup(params, key)
    except KeyError:
        raise PipelineError(
            f"arm {arm}: params.yaml of the baseline commit has no key {quoted(key)}"
        ) from None
    try:
        yaml.safe_load(value)
    except yaml.YAMLError:
        raise PipelineError(f"arm {arm}: the value of {key} is not valid YAML: {quoted(value)}") from None
    return key, value


def _lookup(params: dict, key: str):
    value = params
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value
