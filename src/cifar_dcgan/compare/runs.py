"""The finished train-gan runs of an MLflow experiment, as the comparison needs them, and
their groups: runs of the same configuration, one per seed."""

import dataclasses
import math
from collections.abc import Sequence

from cifar_dcgan.compare import stats
from cifar_dcgan.errors import PipelineError

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

SEED = "train_gan.seed"
PRECISION = "train_gan.precision"
RESOLVED = "precision_resolved"  # a tag: what `precision: auto` became on the run's machine
MACHINE = ("cpu", "gpu", "onednn", "bf16_kernels")  # tags a run's speed depends on (`machine_tags`)
LAST = {"last_kid": "kid", "class_entropy": "class_entropy", "diversity": "diversity"}  # of a snapshot
HISTORIES = ("fcd", "epoch_seconds", *LAST.values())  # per epoch


@dataclasses.dataclass
class Run:
    """One finished, scored training run, as the comparison needs it."""

    run_id: str
    name: str
    params: dict[str, str]
    seed: str
    evaluator: str
    curve: dict[int, float]  # epoch -> FCD
    last: dict[str, float]  # KID, class entropy, diversity of the last snapshot
    history: dict[str, dict[int, float]]  # the same per epoch, for a time budget
    epoch_seconds: dict[int, float]
    iterations_per_epoch: float
    start_time: int
    assumed: tuple[str, ...] = ()  # params tracked before they existed, counted at their classic value
    machine: dict[str, str] = dataclasses.field(default_factory=dict)  # MACHINE tags it has
    auto: bool = False  # ran `precision: auto`: its precision param is what that became on its machine

    @property
    def best_fcd(self) -> float:
        return min(self.curve.values())

    @property
    def last_fcd(self) -> float:
        return self.curve[max(self.curve)]

    def values(self) -> dict[str, float]:
        return {"best_fcd": self.best_fcd, "last_fcd": self.last_fcd, **self.last}

    def seconds_per_iteration(self) -> float | None:
        return stats.seconds_per_iteration(self.epoch_seconds, self.iterations_per_epoch)

    def within(self, seconds: float) -> "Run | None":
        """The run as it stood after `seconds` of training: only the snapshots taken by then
        (equal wall-clock for configurations of different cost); None before the first."""
        kept = [e for e in sorted(self.curve) if stats.training_seconds(self.epoch_seconds, e) <= seconds]
        if not kept:
            return None
        last = {k: self.history[k].get(kept[-1], math.nan) for k in self.last}
        return dataclasses.replace(
            self,
            curve={e: self.curve[e] for e in kept},
            epoch_seconds={e: s for e, s in self.epoch_seconds.items() if e <= kept[-1]},
            last=last,
        )

    def reaches(self, threshold: float) -> tuple[float, int] | None:
        """(training seconds, iterations) until the FCD first is at most `threshold`, or None."""
        return stats.reaches(self.curve, self.epoch_seconds, self.iterations_per_epoch, threshold)


def load_runs(client, experiment_id: str, names: Sequence[str] = (), tag: str | None = None):
    """The comparable train-gan runs, and one line for every run left out and why."""
    filters = ["tags.stage = 'train-gan'"]
    if tag:
        key, _, value = tag.partition("=")
        filters.append(f"tags.`{key}` = '{value}'")
    found = client.search_runs([experiment_id], " and ".join(filters), max_results=5000)
    wanted = set(names)
    runs, skipped = [], []
    for r in found:
        name = r.data.tags.get("dvc_exp_name") or r.info.run_name
        if wanted and name not in wanted and r.info.run_name not in wanted:
            continue
        label = f"run {r.info.run_id[:8]} ({r.info.run_name})"
        if r.info.status != "FINISHED":
            skipped.append(f"{label}: {r.info.status.lower()}, skipped")
            continue
        if r.data.metrics.get("failures", 0) or r.data.tags.get("failures"):
            skipped.append(f"{label}: flagged by failure detection, skipped")
            continue
        histories = {key: client.get_metric_history(r.info.run_id, key) for key in HISTORIES}
        if not histories["fcd"]:
            skipped.append(f"{label}: its snapshots were not scored (no FCD), skipped")
            continue
        if "evaluator_digest" not in r.data.tags:
            skipped.append(f"{label}: no evaluator_digest tag (tracked by an older version), skipped")
            continue
        by_step = {key: {m.step: m.value for m in values} for key, values in histories.items()}
        latest, seconds = r.data.metrics, by_step["epoch_seconds"]
        last = {name: latest.get(key, math.nan) for name, key in LAST.items()}
        per_iteration = latest.get("seconds_per_iteration")
        steps = latest.get("epoch_seconds", 0) / per_iteration if per_iteration else 0.0
        assumed = {k: str(v) for k, v in BEFORE_ADDED.items() if k not in r.data.params}
        params = {**assumed, **r.data.params}
        auto = params.get(PRECISION) == "auto"
        if auto:  # the same training as the precision it became, named: bf16 here, float32 there
            params[PRECISION] = r.data.tags.get(RESOLVED, "auto (untagged)")
        runs.append(
            Run(
                run_id=r.info.run_id,
                name=r.info.run_name,
                params=params,
                seed=r.data.params.get(SEED, "?"),
                evaluator=r.data.tags["evaluator_digest"],
                curve=by_step["fcd"],
                last=last,
                history={name: by_step[key] for name, key in LAST.items()},
                epoch_seconds=seconds,
                iterations_per_epoch=round(steps),
                start_time=r.info.start_time,
                assumed=tuple(sorted(assumed)),
                machine={key: r.data.tags[key] for key in MACHINE if key in r.data.tags},
                auto=auto,
            )
        )
    return runs, skipped


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
                f"run {seeds[r.seed].name} and {r.name} share params and seed {r.seed}: the newer counts"
            )
        seeds[r.seed] = r
    ordered = {
        key: sorted(seeds.values(), key=lambda r: r.seed) for key, seeds in sorted(groups.items(), key=str)
    }
    return differing, ordered, notes


def check_comparable(runs: list[Run]) -> None:
    """Refuse to pool FCDs of different judges or of different sample counts."""
    judges = sorted({r.evaluator for r in runs})
    if len(judges) > 1:
        raise PipelineError(
            f"the runs were scored by {len(judges)} different evaluators (digests "
            f"{', '.join(j[:12] for j in judges)}): FCD from different classifiers is not comparable. "
            "Compare the runs of one judge: --runs NAME ... or --tag evaluator_digest=DIGEST"
        )
    counts = sorted({r.params.get("train_gan.fcd_samples") for r in runs}, key=str)
    if len(counts) > 1:
        raise PipelineError(
            f"train_gan.fcd_samples differs between the runs ({', '.join(map(str, counts))}): FCD depends "
            "on the number of images; compare runs scored on the same count (--runs NAME ...)"
        )


def pick_baseline(differing: list[str], groups: dict, baseline: dict[str, str]) -> tuple:
    """The group whose differing params equal `baseline` (a key's value as MLflow logged it)."""
    unknown = sorted(set(baseline) - set(differing))
    if unknown and not set(baseline) & set(differing):
        raise PipelineError(
            f"--baseline {', '.join(unknown)}: not among the params that differ between the runs "
            f"({', '.join(differing) or 'none'})"
        )
    matches = [
        key
        for key in groups
        if all(key[differing.index(k)] == v for k, v in baseline.items() if k in differing)
    ]
    if not matches:
        listed = "; ".join(group_label(differing, key) for key in groups)
        raise PipelineError(
            f"no group of runs has {', '.join(f'{k}={v}' for k, v in baseline.items())}; the groups are: "
            f"{listed}. Name one with --baseline KEY=VALUE ..."
        )
    if len(matches) > 1:
        listed = "; ".join(group_label(differing, key) for key in matches)
        raise PipelineError(f"--baseline matches several groups ({listed}); give more KEY=VALUE pairs")
    return matches[0]


def group_label(differing: list[str], key: tuple) -> str:
    """A group's name: its values of the params that differ, without their section."""
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in zip(differing, key)) or "all runs"


def short_label(differing: list[str], key: tuple, base_key: tuple) -> str:
    """Only what a group changes from the baseline, for pictures with many groups."""
    changed = [(k, v) for k, v, b in zip(differing, key, base_key) if v != b]
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in changed)
