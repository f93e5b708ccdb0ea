"""Did it help? Compare training configurations across seeds, from the tracked runs.

    cifar-dcgan-compare                      # every finished train-gan run of the experiment
    cifar-dcgan-compare --runs base-1 base-2 base-3 smooth-1 smooth-2 smooth-3
    cifar-dcgan-compare --baseline train_gan.label_smoothing=0.0 --fcd-threshold 60

Reads the finished `train-gan` runs of the MLflow experiment (`tracking.experiment`), groups
them by the params that differ between them (the seed aside: runs that differ only in
`train_gan.seed` are replicates), and compares every group with a baseline group: the one at
the values of `params.yaml`, or the one `--baseline key=value ...` names.

Per group: the seeds, mean and 95% t-interval of best FCD, last FCD, KID, class entropy and
diversity, the FCD curve, seconds per iteration, and the training wall-clock and iterations
until FCD first reaches the threshold. Against the baseline: the difference of mean best FCD
with its 95% Welch interval and a verdict in words; when it finds no difference, what a sweep
would need to tell one (the difference as many seeds show 80% of the time, and the seeds per
arm the observed one would take). With fewer than ~8 seeds per group a bootstrap has too few
distinct resamples, so the intervals are t-intervals.

Writes `report.md` (also printed), `comparison.json`, `fcd_curves.png` and `grids.png` into
`--out` (default `reports/compare`) and logs them to an MLflow run (stage `compare`).
"""

import argparse
import collections
import dataclasses
import json
import math
import os
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
QUALITY_KEYS = ("best_fcd", "last_fcd", "last_kid", "class_entropy", "diversity")
POWER = 0.8  # a planned sweep should show a true difference of the size asked this often
MOST_SEEDS = 100  # past this many seeds per arm a plan says "more than": not a sweep anyone runs
COLLAPSE_BITS = 1.0  # a last snapshot whose predicted classes carry less entropy has collapsed
ONE_PANEL = 4  # groups drawn in one FCD panel; more bands than this hide each other
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
        if not self.epoch_seconds or not self.iterations_per_epoch:
            return None
        return sum(self.epoch_seconds.values()) / (len(self.epoch_seconds) * self.iterations_per_epoch)

    def within(self, seconds: float) -> "Run | None":
        """The run as it stood after `seconds` of training: only the snapshots taken by then
        (equal wall-clock for configurations of different cost); None before the first."""
        kept = [e for e in sorted(self.curve) if self.training_seconds(e) <= seconds]
        if not kept:
            return None
        last = {k: self.history[k].get(kept[-1], math.nan) for k in self.last}
        return dataclasses.replace(
            self,
            curve={e: self.curve[e] for e in kept},
            epoch_seconds={e: s for e, s in self.epoch_seconds.items() if e <= kept[-1]},
            last=last,
        )

    def training_seconds(self, epoch: int) -> float:
        """Training wall-clock until the snapshot of `epoch`; inf when an epoch's time is unknown."""
        if any(e not in self.epoch_seconds for e in range(1, epoch + 1)):
            return math.inf
        return sum(self.epoch_seconds[e] for e in range(1, epoch + 1))

    def reaches(self, threshold: float) -> tuple[float, int] | None:
        """(training seconds, iterations) until the FCD first is at most `threshold`, or None."""
        for epoch in sorted(self.curve):
            if self.curve[epoch] <= threshold:
                seconds = sum(s for e, s in self.epoch_seconds.items() if e <= epoch)
                return seconds, round(epoch * self.iterations_per_epoch)
        return None


def mean_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, standard deviation and the t-interval of the mean (None below 2 values)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    out = {"n": len(x), "mean": float(x.mean()), "sd": None, "low": None, "high": None}
    if len(x) >= 2:
        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1)) * sd / math.sqrt(len(x))
        out |= {"sd": sd, "low": out["mean"] - half, "high": out["mean"] + half}
    return out


def welch_difference(group: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict:
    """Difference of means (group - baseline) with its Welch t-interval (None below 2 each)."""
    a, b = np.asarray(group, dtype=float), np.asarray(baseline, dtype=float)
    out = {"difference": float(a.mean() - b.mean()), "low": None, "high": None, "df": None}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return out | {"low": out["difference"], "high": out["difference"], "df": float("inf")}
    df, half = (float(x) for x in _welch(va, vb, (len(a), len(b)), level))
    return out | {"low": out["difference"] - half, "high": out["difference"] + half, "df": df}


def _welch(va, vb, seeds: tuple[int, int], level: float):
    """Welch's degrees of freedom and interval half-width from each group's variance of the
    mean (numbers or arrays of them)."""
    from scipy import stats

    df = (va + vb) ** 2 / (va**2 / (seeds[0] - 1) + vb**2 / (seeds[1] - 1))
    return df, stats.t.ppf(0.5 + level / 2, df) * np.sqrt(va + vb)


def _welch_sweeps(sd: tuple[float, float], seeds: tuple[int, int], level: float, sweeps: int = 20_000):
    """Simulated sweeps of normal best FCDs with these spreads and seed counts, around no
    difference: each one's error in the difference of means and its Welch half-width (which a
    true difference does not change). Welch's own df is estimated, so this, not the
    noncentral t at the true spreads, is how often its interval excludes 0 (3 vs 3 seeds:
    70% where that says 80%). A fixed seed: the same answer every time."""
    rng = np.random.default_rng(0)
    a, b = sd[0] * rng.standard_normal((sweeps, seeds[0])), sd[1] * rng.standard_normal((sweeps, seeds[1]))
    va, vb = a.var(axis=1, ddof=1) / seeds[0], b.var(axis=1, ddof=1) / seeds[1]
    _, half = _welch(va, vb, seeds, level)
    return a.mean(axis=1) - b.mean(axis=1), half


def _shown(difference: float, errors: np.ndarray, half: np.ndarray) -> float:
    return float(np.mean(np.abs(difference + errors) > half))


def detection(
    group: Sequence[float],
    baseline: Sequence[float],
    level: float = 0.95,
    power: float = POWER,
    most: int = MOST_SEEDS,
) -> dict | None:
    """What seeds can show, from the spread these measured: the difference that as many
    seeds again would show `power` of the time (Welch's interval at `level` excluding 0),
    and the seeds per arm that would show the observed difference that often (None: more
    than `most`). A plan for the next sweep, not a result: a few seeds' spread is uncertain
    itself. None below 2 seeds in either group."""
    a, b = np.asarray(group, dtype=float), np.asarray(baseline, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    sd = (float(a.std(ddof=1)), float(b.std(ddof=1)))
    out = {"power": power, "sd": list(sd), "detectable": 0.0, "seeds_per_arm": 2}
    if sd == (0.0, 0.0):
        return out
    errors, half = _welch_sweeps(sd, (len(a), len(b)), level)
    low, high = 0.0, float(np.quantile(np.abs(errors) + half, power))  # shown that often at `high`
    while high - low > 1e-4 * high:  # bisect: shown more often the larger the difference
        middle = (low + high) / 2
        low, high = (low, middle) if _shown(middle, errors, half) >= power else (middle, high)
    out["detectable"] = high
    difference = abs(float(a.mean() - b.mean()))

    def enough(n: int) -> bool:
        return _shown(difference, *_welch_sweeps(sd, (n, n), level)) >= power

    if difference == 0 or not enough(most):
        out["seeds_per_arm"] = None
        return out
    fewest, plenty = 1, most  # not enough at `fewest` (a seed has no interval), enough at `plenty`
    while plenty - fewest > 1:
        middle = (fewest + plenty) // 2
        fewest, plenty = (fewest, middle) if enough(middle) else (middle, plenty)
    out["seeds_per_arm"] = plenty
    return out


def verdict(label: str, group: dict, baseline: dict, difference: dict) -> str:
    """One sentence: lower, higher, or no difference detectable with these seeds."""
    n, n0 = group["n"], baseline["n"]
    head = f"{label}: best FCD {_mean_ci(group)} vs {_mean_ci(baseline)}"
    if difference["low"] is None:
        return f"{head}: no interval; it needs 2 or more seeds in both groups ({n} vs {n0})"
    if difference["high"] < 0:
        return f"{head}: lower (better); the CI of the difference excludes 0"
    if difference["low"] > 0:
        return f"{head}: higher (worse); the CI of the difference excludes 0"
    return f"{head}: no difference detectable with {n} vs {n0} seeds"


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
        listed = "; ".join(_label(differing, key) for key in groups)
        raise PipelineError(
            f"no group of runs has {', '.join(f'{k}={v}' for k, v in baseline.items())}; the groups are: "
            f"{listed}. Name one with --baseline KEY=VALUE ..."
        )
    if len(matches) > 1:
        listed = "; ".join(_label(differing, key) for key in matches)
        raise PipelineError(f"--baseline matches several groups ({listed}); give more KEY=VALUE pairs")
    return matches[0]


def compare(
    runs: list[Run], baseline: dict[str, str], threshold: float | None = None, within: float | None = None
) -> dict:
    """Everything the report says, as data: one entry per group, baseline first. With
    `within` (seconds), each run counts only the snapshots of its first `within` seconds of
    training."""
    late = []
    if within is not None:
        cut = [(r, r.within(within)) for r in runs]
        late = [
            f"run {r.name}: no snapshot within {within / 60:g} min of training, left out"
            for r, c in cut
            if c is None
        ]
        runs = [c for _, c in cut if c is not None]
    if not runs:
        raise PipelineError(
            "no finished, scored train-gan runs to compare"
            + (f" within {within / 60:g} min" if within else "")
        )
    check_comparable(runs)
    differing, groups, notes = group_runs(runs)
    older = sorted(r.name for r in runs if r.assumed)
    assumed = {k: str(v) for k, v in BEFORE_ADDED.items() if any(k in r.assumed for r in runs)}
    base_key = pick_baseline(differing, groups, baseline) if differing else next(iter(groups))
    stats = {
        key: {k: mean_interval([r.values()[k] for r in members]) for k in QUALITY_KEYS}
        for key, members in groups.items()
    }
    if threshold is None:  # the level every group reaches on average: its worst mean best FCD
        threshold = max(s["best_fcd"]["mean"] for s in stats.values())
    entries = []
    for key in [base_key, *[k for k in groups if k != base_key]]:
        members = groups[key]
        speed = [s for s in (r.seconds_per_iteration() for r in members) if s is not None]
        reached = [hit for hit in (r.reaches(threshold) for r in members) if hit]
        entry = {
            "label": _label(differing, key),
            "short_label": "baseline" if key == base_key else _label_against(differing, key, base_key),
            "params": dict(zip(differing, key)),
            "baseline": key == base_key,
            "seeds": [r.seed for r in members],
            "runs": [{"run_id": r.run_id, "name": r.name, "seed": r.seed, **r.values()} for r in members],
            **stats[key],
            "median_best_fcd": float(np.median([r.best_fcd for r in members])),
            "collapsed": sum(r.last["class_entropy"] < COLLAPSE_BITS for r in members),
            "seconds_per_iteration": mean_interval(speed) if speed else None,
            "reached_threshold": len(reached),
            "seconds_to_threshold": float(np.mean([s for s, _ in reached])) if reached else None,
            "iterations_to_threshold": float(np.mean([i for _, i in reached])) if reached else None,
            "curve": _mean_curve(members),
        }
        if key != base_key:
            bests, base_bests = [r.best_fcd for r in members], [r.best_fcd for r in groups[base_key]]
            diff = welch_difference(bests, base_bests)
            entry["best_fcd_difference"] = diff
            entry["best_fcd_detection"] = detection(bests, base_bests)
            entry["verdict"] = verdict(
                entry["short_label"], stats[key]["best_fcd"], stats[base_key]["best_fcd"], diff
            )
        entries.append(entry)
    return {
        "differing_params": differing,
        "fcd_threshold": threshold,
        "evaluator_digest": runs[0].evaluator,
        "fcd_samples": runs[0].params.get("train_gan.fcd_samples"),
        "within_minutes": within / 60 if within is not None else None,
        "notes": late + notes,
        "machines": {
            key: dict(collections.Counter(r.machine[key] for r in runs if key in r.machine))
            for key in MACHINE
        },
        "assumed": {"params": assumed, "runs": older} if older else None,
        "auto_precision": sorted(r.name for r in runs if r.auto),
        "groups": entries,
    }


def _mean_curve(members: list[Run]) -> dict:
    """Mean FCD per epoch over the seeds that have it, with the t-interval where 2+ do."""
    epochs = sorted({e for r in members for e in r.curve})
    curve = {"epoch": [], "mean": [], "low": [], "high": [], "n": []}
    for epoch in epochs:
        s = mean_interval([r.curve[epoch] for r in members if epoch in r.curve])
        for k in ("mean", "low", "high", "n"):
            curve[k].append(s[k])
        curve["epoch"].append(epoch)
    return curve


def _label(differing: list[str], key: tuple) -> str:
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in zip(differing, key)) or "all runs"


def _label_against(differing: list[str], key: tuple, base_key: tuple) -> str:
    """Only what a group changes from the baseline, for pictures with many groups."""
    changed = [(k, v) for k, v, b in zip(differing, key, base_key) if v != b]
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in changed)


def _mean_ci(s: dict) -> str:
    if s["low"] is None:
        return _number(s["mean"])
    return f"{_number(s['mean'])} [{_number(s['low'])}, {_number(s['high'])}]"


def _number(x: float, signed: bool = False) -> str:
    """One decimal from 10 up (FCD 23.1), three significant digits below (KID 0.0123)."""
    text = f"{x:+.1f}" if signed else f"{x:.1f}"
    return text if abs(x) >= 10 else (f"{x:+.3g}" if signed else f"{x:.3g}")


def markdown(result: dict, skipped: list[str]) -> str:
    """The report: one row per group, then the verdicts, then what was left out."""
    t = result["fcd_threshold"]
    lines = [
        "# Comparison across seeds",
        "",
        f"Differing params: {', '.join(result['differing_params']) or 'none'}. FCD of "
        f"{result['fcd_samples']} images, evaluator {result['evaluator_digest'][:12]}; lower is better. "
        "Means with 95% t-intervals over seeds; a group of one seed has no interval."
        + (
            " Equal wall-clock: each run counts only its snapshots of the first "
            f"{result['within_minutes']:g} minutes of training (best and last FCD, KID, entropy and "
            "diversity as they stood then)."
            if result["within_minutes"] is not None
            else ""
        ),
        "",
        "| group | seeds | best FCD | last FCD | KID | class entropy | diversity | s / iteration "
        f"| to FCD <= {t:.1f} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if result["assumed"]:
        older, values = result["assumed"]["runs"], result["assumed"]["params"]
        pairs = ", ".join(f"{k}={v}" for k, v in values.items())
        lines[2:2] = [
            f"{len(older)} run(s) were tracked before {', '.join(values)} existed and count at the values "
            f"that do what they did ({pairs}): {', '.join(older)}.",
            "",
        ]
    if result["auto_precision"]:
        auto = result["auto_precision"]
        lines[2:2] = [
            f"{len(auto)} run(s) of precision auto count as the precision it became on their machine "
            f"(their {RESOLVED} tag): {', '.join(auto)}.",
            "",
        ]
    for g in result["groups"]:
        speed = g["seconds_per_iteration"]
        reach = (
            f"{g['reached_threshold']}/{len(g['seeds'])} seeds, {g['seconds_to_threshold'] / 60:.1f} min, "
            f"{g['iterations_to_threshold']:.0f} it"
            if g["reached_threshold"]
            else f"0/{len(g['seeds'])} seeds"
        )
        lines.append(
            f"| {g['label']}{' (baseline)' if g['baseline'] else ''} | {len(g['seeds'])} "
            f"| {_mean_ci(g['best_fcd'])} | {_mean_ci(g['last_fcd'])} | {_mean_ci(g['last_kid'])} "
            f"| {_mean_ci(g['class_entropy'])} | {_mean_ci(g['diversity'])} "
            f"| {_mean_ci(speed) if speed else '-'} | {reach} |"
        )
    lines += ["", "## Against the baseline", ""]
    n0 = len(result["groups"][0]["seeds"])  # the baseline comes first
    for g in result["groups"]:
        if g["baseline"]:
            continue
        d = g["best_fcd_difference"]
        interval = f" [{_number(d['low'], True)}, {_number(d['high'], True)}]" if d["low"] is not None else ""
        lines.append(f"- {g['verdict']} (difference {_number(d['difference'], True)}{interval})")
        if d["low"] is not None and d["low"] <= 0 <= d["high"] and g["best_fcd_detection"]:
            lines.append(f"  - {_detection_line(g['best_fcd_detection'], d, len(g['seeds']), n0)}")
    if len(result["groups"]) == 1:
        lines.append("- only one group: nothing to compare with")
    single = [g["label"] for g in result["groups"] if len(g["seeds"]) < 2]
    if single:
        lines.append(f"- {', '.join(single)}: one seed; a confidence interval needs 2 or more seeds")
    collapsed = [
        f"{g['short_label']} {g['collapsed']}/{len(g['seeds'])}" for g in result["groups"] if g["collapsed"]
    ]
    if collapsed:
        lines.append(
            f"- collapsed at the last snapshot (class entropy < {COLLAPSE_BITS} bit): {', '.join(collapsed)}"
        )
    lines += _machine_lines(result["machines"], result["within_minutes"] is not None)
    if skipped or result["notes"]:
        lines += ["", "## Left out", "", *[f"- {line}" for line in skipped + result["notes"]]]
    return "\n".join(lines) + "\n"


def _machine_lines(machines: dict[str, dict[str, int]], within: bool) -> list[str]:
    """A line for each machine tag whose runs differ: their timings (s / iteration, time to the
    threshold) are not comparable, whatever their image quality is; at equal wall-clock
    (`within`) their quality is not either."""
    lines = []
    what = "timings (s / iteration, time to the threshold)"
    if within:  # a faster machine trains further in the same minutes
        what = "timings, and with them the snapshots each run had by the time limit,"
    for key, counts in machines.items():
        if len(counts) < 2:
            continue
        (most, n), *others = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # most runs first
        rest = [f"{m} with {key}={value}" for value, m in others]
        mix = "; ".join([f"{n} run(s) with {key}={most}", *rest])
        lines.append(
            f"- {what} mix machines or kernels: {mix}; compare speed within one (--tag '{key}={most}')"
        )
    return lines


def _detection_line(found: dict, difference: dict, n: int, n0: int) -> str:
    """What a sweep would need to tell the difference, in words."""
    sd = " and ".join(_number(s) for s in found["sd"])
    share = f"{found['power']:.0%} of the time"
    head = (
        f"with the spread these seeds measured (sd {sd}), {n} vs {n0} seeds show a difference of "
        f"+-{_number(found['detectable'])} or more {share}"
    )
    observed = _number(difference["difference"], True)
    if found["seeds_per_arm"] is None:
        return f"{head}; one of {observed} would take more than {MOST_SEEDS} seeds per arm"
    return (
        f"{head}; one of {observed} would take about {found['seeds_per_arm']} seeds per arm (choose the "
        "count before the sweep: adding seeds until the interval excludes 0 finds differences that are "
        "not there)"
    )


def plot_curves(result: dict, path: Path) -> list[list[str]]:
    """FCD per epoch: each group's mean over seeds, its 95% interval as a band. Up to
    `ONE_PANEL` groups share one panel; more get a panel each, over the baseline in grey.
    Returns the series of each panel, as drawn."""
    from cifar_dcgan.images import save_band_panels, save_band_plot

    def at_least_0(values):  # FCD is never negative: a wide t-band stops at 0
        return [None if v is None else max(v, 0.0) for v in values]

    series = {
        f"{g['short_label']} ({len(g['seeds'])} seeds)": (
            g["curve"]["epoch"],
            g["curve"]["mean"],
            at_least_0(g["curve"]["low"]),
            g["curve"]["high"],
        )
        for g in result["groups"]
    }
    title = "FCD per snapshot: mean and 95% CI over seeds"
    if len(series) <= ONE_PANEL:
        save_band_plot(path, series, "epoch", "FCD (lower is better)", title)
        return [list(series)]
    baseline, *others = series.items()  # the baseline group comes first
    save_band_panels(path, baseline, dict(others), "epoch", "FCD (lower is better)", title)
    return [[baseline[0], name] for name, _ in others]


def plot_grids(result: dict, client, path: Path, columns: int = 5) -> None:
    """The last probe grid of one seed per group (the first that has one), `columns` a row."""
    import matplotlib.image

    from cifar_dcgan.images import plt

    groups = result["groups"]
    rows, columns = -(-len(groups) // columns), min(columns, len(groups))
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    with tempfile.TemporaryDirectory() as folder:
        for i, (ax, g) in enumerate(zip(axes.flat, groups)):
            for shown in g["runs"]:  # the first seed whose grid the store still has
                grid = _last_grid(client, shown["run_id"], Path(folder) / str(i))
                if grid is not None:
                    ax.imshow(matplotlib.image.imread(grid))
                    break
            else:
                shown = g["runs"][0]
                ax.text(0.5, 0.5, "no grid logged", ha="center", va="center")
            label = textwrap.fill(g["short_label"], 40)
            ax.set_title(
                f"{label}\nseed {shown['seed']}, FCD {shown['last_fcd']:.1f} (best {shown['best_fcd']:.1f})",
                fontsize=9,
            )
    figure.suptitle("Last snapshot's probe grid, one seed per group")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _last_grid(client, run_id: str, folder: Path) -> Path | None:
    """The run's last probe grid, downloaded into `folder`; None when the store lacks it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(client.download_artifacts(run_id, "grids", str(folder)))
    except Exception:  # a run tracked before grids were logged, or artifacts gone
        return None
    grids = sorted(local.glob("epoch_*.png"))
    return grids[-1] if grids else None


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"{flag} {item}: expected KEY=VALUE, e.g. train_gan.label_smoothing=0.1")
        pairs[key] = value
    return pairs


def main(argv: list[str] | None = None) -> None:
    from cifar_dcgan.config import TrackingParams, flatten, load_params
    from cifar_dcgan.config.model import ModelParams
    from cifar_dcgan.config.train_gan import TrainGanParams
    from cifar_dcgan.store import check_store, open_store, redact, tracking_uri
    from cifar_dcgan.tracking import stage_run

    parser = argparse.ArgumentParser(
        prog="cifar-dcgan-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment in params)")
    parser.add_argument("--runs", nargs="+", default=(), metavar="NAME", help="DVC experiment or run names")
    parser.add_argument("--tag", metavar="KEY=VALUE", help="only runs with this tag")
    parser.add_argument(
        "--baseline", nargs="+", default=(), metavar="KEY=VALUE", help="the baseline group (default: params)"
    )
    parser.add_argument("--fcd-threshold", type=float, help="default: the worst group's mean best FCD")
    parser.add_argument(
        "--within-minutes",
        type=float,
        metavar="M",
        help="equal wall-clock: each run counts only the snapshots of its first M minutes of training",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/compare"))
    parser.add_argument("--no-track", action="store_true", help="do not log the report to MLflow")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.tag is not None:
            _pairs([args.tag], "--tag")
        if args.within_minutes is not None and not args.within_minutes > 0:
            raise PipelineError(
                f"--within-minutes {args.within_minutes:g}: give a positive number of minutes"
            )
        params = load_params(args.params, TrackingParams, ModelParams, TrainGanParams)
        experiment = args.experiment or params["tracking"].experiment
        uri = tracking_uri()
        check_store(uri)
        client = open_store(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise PipelineError(
                f"the tracking store {redact(uri)} has no experiment '{experiment}'; run a sweep first"
            )
        runs, skipped = load_runs(client, found.experiment_id, args.runs, args.tag)
        for line in skipped:
            print(f"skipped: {line}", file=sys.stderr)
        if not runs:
            raise PipelineError(
                f"no finished, scored train-gan runs in experiment '{experiment}' of {redact(uri)}"
                + (f" named {', '.join(args.runs)}" if args.runs else "")
                + (
                    f" with tag {args.tag} (a run's tags are on its page in the MLflow UI)"
                    if args.tag
                    else ""
                )
                + "; queue a sweep (README: Comparing configurations)"
            )
        defaults = {k: str(v) for k, v in flatten({k: params[k] for k in ("model", "train_gan")}).items()}
        within = args.within_minutes * 60 if args.within_minutes is not None else None
        result = compare(runs, _pairs(args.baseline, "--baseline") or defaults, args.fcd_threshold, within)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    report = markdown(result, skipped)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report)
    (args.out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_curves(result, args.out / "fcd_curves.png")
    plot_grids(result, client, args.out / "grids.png")
    print(report)
    if not args.no_track:
        summary = {
            "runs": len(runs),
            "groups": len(result["groups"]),
            "fcd_threshold": result["fcd_threshold"],
        }
        with stage_run(
            "compare", experiment, summary, {"compared_runs": ",".join(r.run_id for r in runs)[:5000]}
        ) as tracker:
            for name in ("report.md", "comparison.json", "fcd_curves.png", "grids.png"):
                tracker.log_artifact(args.out / name, "compare")
    print(f"written to {args.out}/ (report.md, comparison.json, fcd_curves.png, grids.png)")


if __name__ == "__main__":
    main()
