"""The runs' groups: runs of the same configuration, one per seed, and the baseline among them."""

from cifar_dcgan.compare.runs import SEED, Run
from cifar_dcgan.compare.text import plain
from cifar_dcgan.errors import PipelineError


def group_runs(runs: list[Run]) -> tuple[list[str], dict[tuple, list[Run]], list[str]]:
    """(the params that differ, seed aside; groups keyed by their values; lines about
    replicates dropped). Of two runs with the same params and seed only the newest counts:
    on one machine they are the same training, not two seeds. Runs of `precision: auto` count
    as the precision it became on their machine (`load_runs`): bf16 ones pool with bf16 runs,
    float32 ones with float32 runs, never with each other."""
    keys = sorted({k for r in runs for k in r.params} - {SEED})
    differing = [k for k in keys if len({r.params.get(k) for r in runs}) > 1]
    groups: dict[tuple, dict[str, Run]] = {}
    notes = []
    for r in sorted(runs, key=lambda r: r.start_time):
        key = tuple(r.params.get(k) for k in differing)
        seeds = groups.setdefault(key, {})
        if r.seed in seeds:
            notes.append(
                f"run {plain(seeds[r.seed].name)} and {plain(r.name)} share params and seed {plain(r.seed)}: "
                "the newer counts"
            )
        seeds[r.seed] = r
    ordered = {
        key: sorted(seeds.values(), key=lambda r: seed_order(r.seed))
        for key, seeds in sorted(groups.items(), key=str)
    }
    return differing, ordered, notes


def seed_order(seed: str) -> tuple:
    """Seeds in numeric order (2 before 10), any other text after them."""
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


def check_comparable(runs: list[Run]) -> None:
    """Refuse to pool FCDs of different judges or of different sample counts."""
    judges = sorted({r.evaluator for r in runs})
    if len(judges) > 1:
        raise PipelineError(
            f"the runs were scored by {len(judges)} different evaluators (digests "
            f"{', '.join(plain(j[:12]) for j in judges)}): FCD from different classifiers is not comparable. "
            "Compare the runs of one judge: --runs NAME ... or --tag evaluator_digest=DIGEST"
        )
    counts = sorted({r.params.get("train_gan.fcd_samples") for r in runs}, key=str)
    if len(counts) > 1:
        raise PipelineError(
            f"train_gan.fcd_samples differs between the runs ({', '.join(map(plain, counts))}): FCD depends "
            "on the number of images; compare runs scored on the same count (--runs NAME ...)"
        )


def pick_baseline(differing: list[str], groups: dict, baseline: dict[str, str]) -> tuple:
    """The group whose differing params equal `baseline` (a key's value as MLflow logged it)."""
    unknown = sorted(set(baseline) - set(differing))
    if unknown and not set(baseline) & set(differing):
        raise PipelineError(
            f"--baseline {', '.join(map(plain, unknown))}: not among the params that differ between the runs "
            f"({', '.join(differing) or 'none'})"
        )
    matches = [
        key
        for key in groups
        if all(key[differing.index(k)] == v for k, v in baseline.items() if k in differing)
    ]
    if not matches:
        listed = "; ".join(group_label(differing, key) for key in groups)
        named = ", ".join(plain(f"{k}={v}") for k, v in baseline.items())
        raise PipelineError(
            f"no group of runs has {named}; the groups are: {listed}. Name one with --baseline KEY=VALUE ..."
        )
    if len(matches) > 1:
        listed = "; ".join(group_label(differing, key) for key in matches)
        raise PipelineError(f"--baseline matches several groups ({listed}); give more KEY=VALUE pairs")
    return matches[0]


def group_label(differing: list[str], key: tuple) -> str:
    """A group's name: its values of the params that differ, without their section."""
    return ", ".join(_pair(k, v) for k, v in zip(differing, key)) or "all runs"


def short_label(differing: list[str], key: tuple, base_key: tuple) -> str:
    """Only what a group changes from the baseline, for pictures with many groups."""
    changed = [(k, v) for k, v, b in zip(differing, key, base_key) if v != b]
    return ", ".join(_pair(k, v) for k, v in changed)


def _pair(key: str, value) -> str:
    """`key=value` as shown, the key without its section."""
    return f"{plain(key.split('.', 1)[-1])}={plain(value)}"
