"""What a comparison says: the result as data (`compare`, written as `comparison.json`) and as
the markdown report (`markdown`, written as `report.md`)."""

import collections
import math

import numpy as np

from cifar_dcgan.compare.groups import check_comparable, group_label, group_runs, pick_baseline, short_label
from cifar_dcgan.compare.runs import BEFORE_ADDED, MACHINE, RESOLVED, Run
from cifar_dcgan.compare.stats import (
    MOST_SEEDS,
    detection,
    finite_interval,
    mean_ci,
    mean_curve,
    number,
    to_threshold,
    verdict,
    welch_difference,
)
from cifar_dcgan.compare.text import literal, plain
from cifar_dcgan.errors import PipelineError

QUALITY_KEYS = ("best_fcd", "last_fcd", "last_kid", "class_entropy", "diversity")
COLLAPSE_BITS = 1.0  # a last snapshot whose predicted classes carry less entropy has collapsed


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
            f"run {plain(r.name)}: no snapshot within {within / 60:g} min of training, left out"
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
    summary = {
        key: {k: finite_interval([r.values()[k] for r in members]) for k in QUALITY_KEYS}
        for key, members in groups.items()
    }
    if threshold is None:  # the level every group reaches on average: its worst mean best FCD
        threshold = max(s["best_fcd"]["mean"] for s in summary.values())
    entries = []
    for key in [base_key, *[k for k in groups if k != base_key]]:
        members = groups[key]
        speed = [s for s in (r.seconds_per_iteration() for r in members) if s is not None]
        entry = {
            "label": group_label(differing, key),
            "short_label": "baseline" if key == base_key else short_label(differing, key, base_key),
            "params": dict(zip(differing, key)),
            "baseline": key == base_key,
            "seeds": [r.seed for r in members],
            "runs": [
                {"run_id": r.run_id, "name": r.name, "seed": r.seed, **_known(r.values())} for r in members
            ],
            **summary[key],
            "median_best_fcd": float(np.median([r.best_fcd for r in members])),
            # a rotation judge's classes are turns: its entropy is not a sign of collapse
            "collapsed": sum(
                r.judge_task == "classes" and r.last["class_entropy"] < COLLAPSE_BITS for r in members
            ),
            "seconds_per_iteration": finite_interval(speed) if speed else None,
            **to_threshold([r.reaches(threshold) for r in members]),
            "curve": mean_curve([r.curve for r in members]),
        }
        if key != base_key:
            bests, base_bests = [r.best_fcd for r in members], [r.best_fcd for r in groups[base_key]]
            diff = welch_difference(bests, base_bests)
            entry["best_fcd_difference"] = diff
            entry["best_fcd_detection"] = detection(bests, base_bests)
            entry["verdict"] = verdict(
                entry["short_label"], summary[key]["best_fcd"], summary[base_key]["best_fcd"], diff
            )
        entries.append(entry)
    return {
        "differing_params": differing,
        "fcd_threshold": threshold,
        "evaluator_digest": runs[0].evaluator,
        "fcd_samples": runs[0].params.get("train_gan.fcd_samples"),
        "within_minutes": within / 60 if within is not None else None,
        "notes": late + notes + [f"run {plain(r.name)}: {r.ignored} ignored" for r in runs if r.ignored],
        "machines": {
            key: dict(collections.Counter(r.machine[key] for r in runs if key in r.machine))
            for key in MACHINE
        },
        "assumed": {"params": assumed, "runs": older} if older else None,
        "auto_precision": sorted(r.name for r in runs if r.auto),
        "continued": [
            {"run_id": r.run_id, "name": r.name, "changed": {k: list(v) for k, v in r.continued.items()}}
            for r in runs
            if r.continued
        ],
        "groups": entries,
    }


def markdown(result: dict, skipped: list[str]) -> str:
    """The report: one row per group, then the verdicts, then what was left out."""
    t = result["fcd_threshold"]
    lines = [
        "# Comparison across seeds",
        "",
        f"Differing params: {', '.join(map(_shown, result['differing_params'])) or 'none'}. FCD of "
        f"{_shown(result['fcd_samples'])} images, evaluator {_shown(result['evaluator_digest'][:12])}; "
        "lower is better. "
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
            f"that do what they did ({pairs}): {', '.join(map(_shown, older))}.",
            "",
        ]
    if result["auto_precision"]:
        auto = result["auto_precision"]
        lines[2:2] = [
            f"{len(auto)} run(s) of precision auto count as the precision it became on their machine "
            f"(their {RESOLVED} tag): {', '.join(map(_shown, auto))}.",
            "",
        ]
    if result["continued"]:
        lines[2:2] = [_continued_line(result["continued"]), ""]
    for g in result["groups"]:
        speed = g["seconds_per_iteration"]
        lines.append(
            f"| {literal(g['label'])}{' (baseline)' if g['baseline'] else ''} | {len(g['seeds'])} "
            f"| {mean_ci(g['best_fcd'])} | {mean_ci(g['last_fcd'])} | {mean_ci(g['last_kid'])} "
            f"| {mean_ci(g['class_entropy'])} | {mean_ci(g['diversity'])} "
            f"| {mean_ci(speed) if speed else '-'} | {_reach(g)} |"
        )
    lines += ["", "## Against the baseline", ""]
    n0 = len(result["groups"][0]["seeds"])  # the baseline comes first
    for g in result["groups"]:
        if g["baseline"]:
            continue
        d = g["best_fcd_difference"]
        interval = f" [{number(d['low'], True)}, {number(d['high'], True)}]" if d["low"] is not None else ""
        lines.append(f"- {literal(g['verdict'])} (difference {number(d['difference'], True)}{interval})")
        if d["low"] is not None and d["low"] <= 0 <= d["high"] and g["best_fcd_detection"]:
            lines.append(f"  - {_detection_line(g['best_fcd_detection'], d, len(g['seeds']), n0)}")
    if len(result["groups"]) == 1:
        lines.append("- only one group: nothing to compare with")
    single = [literal(g["label"]) for g in result["groups"] if len(g["seeds"]) < 2]
    if single:
        lines.append(f"- {', '.join(single)}: one seed; a confidence interval needs 2 or more seeds")
    collapsed = [
        f"{literal(g['short_label'])} {g['collapsed']}/{len(g['seeds'])}"
        for g in result["groups"]
        if g["collapsed"]
    ]
    if collapsed:
        lines.append(
            f"- collapsed at the last snapshot (class entropy < {COLLAPSE_BITS} bit): {', '.join(collapsed)}"
        )
    lines += _machine_lines(result["machines"], result["within_minutes"] is not None)
    if skipped or result["notes"]:
        lines += ["", "## Left out", "", *[f"- {literal(line)}" for line in skipped + result["notes"]]]
    return "\n".join(lines) + "\n"


def _shown(value) -> str:
    """A value from the tracking store (a run name, a param or tag value) as literal markdown."""
    return literal(plain(value))


def _known(values: dict[str, float]) -> dict[str, float | None]:
    """Scores for comparison.json: None for one the run lacks (JSON has no NaN)."""
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def _reach(g: dict) -> str:
    """A group's cell "to FCD <= threshold": seeds that got there, and their mean minutes and
    iterations where known."""
    seeds = f"{g['reached_threshold']}/{len(g['seeds'])} seeds"
    if not g["reached_threshold"]:
        return seeds
    seconds, iterations = g["seconds_to_threshold"], g["iterations_to_threshold"]
    minutes = f"{seconds / 60:.1f} min" if seconds is not None else "time unknown"
    return f"{seeds}, {minutes}, " + (
        f"{iterations:.0f} it" if iterations is not None else "iterations unknown"
    )


def _continued_line(continued: list[dict]) -> str:
    """The runs continued with changed params (more epochs), and what they count as."""
    runs = []
    for c in continued:
        changes = ", ".join(f"{_shown(k)} {_shown(a)} -> {_shown(b)}" for k, (a, b) in c["changed"].items())
        runs.append(f"{_shown(c['name'])} ({changes})")
    return (
        f"{len(runs)} run(s) were continued with changed params and count at the values they ended with "
        f"(their changed_params tag; MLflow keeps the params first logged): {', '.join(runs)}."
    )


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
        rest = [f"{m} with {key}={_shown(value)}" for value, m in others]
        most = _shown(most)
        mix = "; ".join([f"{n} run(s) with {key}={most}", *rest])
        lines.append(
            f"- {what} mix machines or kernels: {mix}; compare speed within one (--tag '{key}={most}')"
        )
    return lines


def _detection_line(found: dict, difference: dict, n: int, n0: int) -> str:
    """What a sweep would need to tell the difference, in words."""
    sd = " and ".join(number(s) for s in found["sd"])
    share = f"{found['power']:.0%} of the time"
    head = (
        f"with the spread these seeds measured (sd {sd}), {n} vs {n0} seeds show a difference of "
        f"+-{number(found['detectable'])} or more {share}"
    )
    observed = number(difference["difference"], True)
    if found["seeds_per_arm"] is None:
        return f"{head}; one of {observed} would take more than {MOST_SEEDS} seeds per arm"
    return (
        f"{head}; one of {observed} would take about {found['seeds_per_arm']} seeds per arm (choose the "
        "count before the sweep: adding seeds until the interval excludes 0 finds differences that are "
        "not there)"
    )
