"""What a comparison says: the result as data (`compare`, written as `comparison.json`) and as
the markdown report (`markdown`, written as `report.md`)."""

import collections
import math

import numpy as np

from cifar_dcgan.compare.groups import check_comparable, group_label, group_runs, pick_baseline, short_label
from cifar_dcgan.compare.runs import BEFORE_ADDED, DIVERGED, MACHINE, RESOLVED, Run, ema_note
from cifar_dcgan.compare.stats import finite_interval, mean_ci, mean_curve, number, to_threshold
from cifar_dcgan.compare.text import literal, plain
from cifar_dcgan.compare.verdicts import ALPHA, judge_arms, min_effect, plan, plan_line, pooled_sd
from cifar_dcgan.errors import PipelineError

QUALITY_KEYS = ("best_fcd", "last_fcd", "last_kid", "class_entropy", "diversity")
ROBUST_KEYS = ("last_fcd", "last_kid", "class_entropy")  # one diverged run moves their means
# A last snapshot whose predicted classes carry this many bits less than as many real images
# (half as many classes in effect, or fewer) has collapsed; the real images' entropy is logged
# by train-gan (class_entropy_real_images), so the signal follows the judge and the data
COLLAPSE_BITS = 1.0
UNEVEN_LOAD = 1.5  # runs' load per core differing by more than this factor: their timings differ too
LOADED = 1.5  # a training alone keeps about 1 process per core runnable; above this it shared the CPU


def compare(
    runs: list[Run],
    baseline: dict[str, str],
    threshold: float | None = None,
    within: float | None = None,
    effect: str | None = None,
    pool_code: bool = False,
) -> dict:
    """Everything the report says, as data: one entry per group, baseline first. With
    `within` (seconds), each run counts only the snapshots of its first `within` seconds of
    training. `effect`: the smallest difference worth telling (`--min-effect`)."""
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
    check_code(groups, pool_code)
    runs = [r for members in groups.values() for r in members]  # a replaced rerun counts nowhere
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
        entries.append(
            {
                "label": group_label(differing, key),
                "short_label": "baseline" if key == base_key else short_label(differing, key, base_key),
                "params": dict(zip(differing, key)),
                "baseline": key == base_key,
                "seeds": [r.seed for r in members],
                "runs": [_run_entry(r) for r in members],
                **summary[key],
                "median_best_fcd": float(np.median([r.best_fcd for r in members])),
                "robust": {k: quartiles([r.values()[k] for r in members]) for k in ROBUST_KEYS},
                "diverged": [r.name for r in members if r.diverged],
                "collapsed": [r.name for r in members if _collapsed(r)],
                "uncalibrated": sum(r.judge_task == "classes" and r.real_entropy is None for r in members),
                "seconds_per_iteration": finite_interval(speed) if speed else None,
                **to_threshold([r.reaches(threshold) for r in members]),
                "curve": mean_curve([r.curve for r in members]),
            }
        )
    codes = sorted({r.code or "untracked" for r in runs})
    result = {
        "differing_params": differing,
        "fcd_threshold": threshold,
        "evaluator_digest": runs[0].evaluator,
        "fcd_samples": runs[0].params.get("train_gan.fcd_samples"),
        "within_minutes": within / 60 if within is not None else None,
        "evidence": {
            "iterations": _values(r.iterations for r in runs),
            "training_images": _values(r.training_images for r in runs),
            "judge_accuracy": _values(r.judge_accuracy for r in runs),
            "code_digests": codes,
            "load_per_core": _values(r.load for r in runs),
            "loaded": sorted(plain(r.name) for r in runs if r.load is not None and r.load > LOADED),
            "ema": _by_note((r.name, r.ema) for r in runs),
        },
        "notes": late
        + notes
        + [f"run {plain(r.name)}: {r.ignored} ignored" for r in runs if r.ignored]
        + (
            [f"the groups ran {len(codes)} versions of the training code ({_short(codes)})"]
            if len(codes) > 1
            else []
        ),
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
    return add_verdicts(result, effect)


def add_verdicts(result: dict, effect: str | None = None) -> dict:
    """Every arm's verdict against the baseline (the first group), all arms at once, and the
    plan of a sweep, from the per-run best FCDs in `result` alone: a comparison.json written
    earlier can be judged again (`--from-json`)."""
    groups = result["groups"]
    base = [r["best_fcd"] for r in groups[0]["runs"]]
    size, how = min_effect(effect, float(np.mean(base)))
    arms = {g["label"]: [r["best_fcd"] for r in g["runs"]] for g in groups[1:]}
    judged = judge_arms(arms, base, size)
    for g in groups[1:]:
        entry = judged[g["label"]]
        g["best_fcd_difference"] = entry["interval"]
        g["judged"] = {k: v for k, v in entry.items() if k != "interval"}
        g["verdict"] = (
            f"{g['short_label']}: best FCD {mean_ci(g['best_fcd'])} vs {mean_ci(groups[0]['best_fcd'])}: "
            f"{entry['verdict']}"
        )
    pooled = pooled_sd([[r["best_fcd"] for r in g["runs"]] for g in groups])
    seeds = (min((len(g["runs"]) for g in groups[1:]), default=0), len(base))
    result["min_effect"] = {"fcd": size, "chosen": how}
    result["pooled_sd"] = pooled
    result["plan"] = plan(pooled, size, len(arms), seeds) if arms else None
    return result


def from_runs(result: dict) -> dict:
    """A comparison.json of an older version brought up to this one from its per-run numbers:
    medians and quartiles, diverged runs; its collapse counts (an absolute threshold then)
    are dropped: the real images' entropy that calibrates the signal is not in it."""
    for g in result["groups"]:
        runs = g["runs"]
        g["robust"] = {k: quartiles([_or_nan(r.get(k)) for r in runs]) for k in ROBUST_KEYS}
        g["diverged"] = [
            r["name"]
            for r in runs
            if r.get("last_fcd") is not None and r["last_fcd"] > DIVERGED * r["best_fcd"]
        ]
        if not isinstance(g.get("collapsed"), list):
            g["collapsed"], g["uncalibrated"] = [], len(runs)
    evidence = result.setdefault("evidence", {})
    if "ema" not in evidence:  # an older run's average warmed up differently: say how far it got
        iterations = evidence.get("iterations") or [None]
        evidence["ema"] = _by_note(
            (r["name"], ema_note(g["params"], None, max(iterations) if iterations[0] else None))
            for g in result["groups"]
            for r in g["runs"]
        )
    return result


def _or_nan(value) -> float:
    return math.nan if value is None else float(value)


def quartiles(values: list[float]) -> dict:
    """Median and interquartile range of the finite values (None when none is)."""
    kept = [v for v in values if math.isfinite(v)]
    if not kept:
        return {"n": 0, "median": None, "q1": None, "q3": None}
    q1, median, q3 = (float(q) for q in np.percentile(kept, [25, 50, 75]))
    return {"n": len(kept), "median": median, "q1": q1, "q3": q3}


def check_code(groups: dict, pool_code: bool) -> None:
    """Refuse to pool one configuration's runs of different training code: the same params and
    seed train differently when the code differs. `pool_code` pools them anyway."""
    if pool_code:
        return
    for members in groups.values():
        codes = sorted({r.code or "untracked" for r in members})
        if len(codes) > 1:
            runs = "; ".join(f"{plain(r.name)}: {(r.code or 'untracked')[:12]}" for r in members)
            raise PipelineError(
                f"runs of one configuration ran {len(codes)} versions of the training code ({runs}): their "
                "numbers differ for that reason too. Compare runs of one version (--runs NAME ...), or pool "
                "them anyway with --pool-code"
            )


def _collapsed(r: Run) -> bool:
    return (
        r.judge_task == "classes"
        and r.real_entropy is not None
        and r.last["class_entropy"] < r.real_entropy - COLLAPSE_BITS
    )


def _run_entry(r: Run) -> dict:
    return {
        "run_id": r.run_id,
        "name": r.name,
        "seed": r.seed,
        **_known(r.values()),
        "diverged": r.diverged,
        "code_digest": r.code or None,
        "iterations": r.iterations,
        "load_per_core": r.load,
        "class_entropy_real_images": r.real_entropy,
    }


def _by_note(pairs) -> dict[str, list[str]]:
    """Run names by their note, runs without one left out."""
    notes: dict[str, list[str]] = {}
    for name, note in pairs:
        if note:
            notes.setdefault(note, []).append(plain(name))
    return {note: sorted(names) for note, names in notes.items()}


def _short(codes: list[str]) -> str:
    return ", ".join(c[:12] for c in codes)


def _values(values) -> list:
    """The distinct known values, sorted."""
    return sorted({v for v in values if v is not None})


def markdown(result: dict, skipped: list[str]) -> str:
    """The report: one row per group, then the verdicts, then what was left out."""
    t, within = result.get("fcd_threshold"), result.get("within_minutes")
    lines = [
        "# Comparison across seeds",
        "",
        f"Differing params: {', '.join(map(_shown, result['differing_params'])) or 'none'}. FCD of "
        f"{_shown(result['fcd_samples'])} images, evaluator {_shown(result['evaluator_digest'][:12])}; "
        "lower is better. "
        "Best FCD and diversity: means with 95% t-intervals over seeds (a group of one seed has no "
        "interval); last FCD, KID and class entropy: medians [interquartile range], which one diverged run "
        "cannot move far."
        + (
            " Equal wall-clock: each run counts only its snapshots of the first "
            f"{within:g} minutes of training. Its best FCD is the best of those "
            "(what select-generator would pick by then), so an arm that snapshots more often within the "
            "time has more picks; its last FCD, KID and entropy are those of its snapshot at the cutoff."
            if within is not None
            else ""
        ),
        "",
        "| group | seeds | best FCD | last FCD | KID | class entropy | diversity | s / iteration "
        f"| to FCD <= {t:.1f} |"
        if t is not None
        else "| to the threshold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if result.get("assumed"):
        older, values = result["assumed"]["runs"], result["assumed"]["params"]
        pairs = ", ".join(f"{k}={v}" for k, v in values.items())
        lines[2:2] = [
            f"{len(older)} run(s) were tracked before {', '.join(values)} existed and count at the values "
            f"that do what they did ({pairs}): {', '.join(map(_shown, older))}.",
            "",
        ]
    if result.get("auto_precision"):
        auto = result["auto_precision"]
        lines[2:2] = [
            f"{len(auto)} run(s) of precision auto count as the precision it became on their machine "
            f"(their {RESOLVED} tag): {', '.join(map(_shown, auto))}.",
            "",
        ]
    if result.get("continued"):
        lines[2:2] = [_continued_line(result["continued"]), ""]
    for g in result["groups"]:
        speed, robust = g.get("seconds_per_iteration"), g.get("robust", {})
        cells = [_quartiles(robust[k]) if k in robust else mean_ci(g.get(k)) for k in ROBUST_KEYS]
        lines.append(
            f"| {literal(g['label'])}{' (baseline)' if g['baseline'] else ''} | {len(g['seeds'])} "
            f"| {mean_ci(g['best_fcd'])} | {' | '.join(cells)} | {mean_ci(g.get('diversity'))} "
            f"| {mean_ci(speed) if speed else '-'} | {_reach(g)} |"
        )
    lines += ["", "## Against the baseline", ""]
    if len(result["groups"]) == 1:
        lines.append("- only one group: nothing to compare with")
    else:
        lines += [f"{_evidence_line(result)}", ""]
    for g in result["groups"][1:]:
        d, j = g["best_fcd_difference"], g["judged"]
        interval = f" [{number(d['low'], True)}, {number(d['high'], True)}]" if d["low"] is not None else ""
        tests = f"Welch p {j['p']:.3g}" if j["p"] is not None else "no test"
        if j["comparisons"] > 1:
            sim = j["simultaneous"]
            if j.get("p_holm") is not None:
                tests += f", Holm p {j['p_holm']:.3g}"
            if sim["low"] is not None:
                both = f"{number(sim['low'], True)}, {number(sim['high'], True)}"
                tests += f", corrected {1 - j['level']:.1%} interval [{both}]"
        lines.append(
            f"- {literal(g['verdict'])} (difference {number(d['difference'], True)}{interval}; {tests}): "
            f"{j['rules_out']}"
        )
    if result.get("plan"):
        n = (min(len(g["seeds"]) for g in result["groups"][1:]), len(result["groups"][0]["seeds"]))
        lines.append(f"- {plan_line(result['plan'], result['pooled_sd'], n)}")
    single = [literal(g["label"]) for g in result["groups"] if len(g["seeds"]) < 2]
    if single:
        lines.append(f"- {', '.join(single)}: one seed; a confidence interval needs 2 or more seeds")
    lines += _run_lines(result)
    lines += _machine_lines(result.get("machines", {}), within is not None)
    notes = skipped + result.get("notes", [])
    if notes:
        lines += ["", "## Left out", "", *[f"- {literal(line)}" for line in notes]]
    return "\n".join(lines) + "\n"


def _evidence_line(result: dict) -> str:
    """What every verdict below rests on: how long, on how much, judged how well, how many
    seeds and comparisons, and the smallest effect worth telling."""
    e = result.get("evidence", {})

    def some(values, fmt, unknown):
        return " or ".join(fmt(v) for v in values) if values else unknown

    iterations = some(e.get("iterations"), lambda v: f"{v:,}", "an unknown number of")
    images = some(e.get("training_images"), lambda v: f"{v:,}", "an unknown number of")
    accuracy = some(e.get("judge_accuracy"), lambda v: f"{v:.0%} accurate", "accuracy unknown")
    groups = result["groups"]
    seeds = sorted({len(g["seeds"]) for g in groups})
    m = len(groups) - 1
    correction = (
        f"{m} comparisons with the baseline, verdicts corrected for them (Holm's step-down at "
        f"{ALPHA:.0%} family-wise, the differences and the equivalence tests each a family; the uncorrected "
        "95% interval is shown first, then the corrected one Holm's test amounts to)"
        if m > 1
        else "one comparison"
    )
    effect = result.get("min_effect")
    smallest = (
        f"; smallest difference worth telling {number(effect['fcd'])} FCD ({effect['chosen']})"
        if effect
        else ""
    )
    judge = _shown(result["evaluator_digest"][:12])
    return (
        f"After {iterations} iterations on {images} training images (judge {judge}, "
        f"{accuracy}), {' or '.join(map(str, seeds))} seed{'s' if seeds[-1] > 1 else ''} per group; "
        f"{correction}{smallest}."
    )


def _run_lines(result: dict) -> list[str]:
    """Runs a reader should know about: diverged, collapsed, a moving average that never
    reached its decay, and timings under different loads."""
    lines = []
    for key, what in (
        ("diverged", f"diverged (last FCD over {DIVERGED:g}x its best; the best snapshot still counts)"),
        ("collapsed", f"collapsed (last class entropy {COLLAPSE_BITS:g} bit or more below real images')"),
    ):
        runs = [f"{literal(_shown(name))}" for g in result["groups"] for name in g.get(key, [])]
        if runs:
            lines.append(f"- {len(runs)} run(s) {what}: {', '.join(runs)}")
    uncalibrated = sum(g.get("uncalibrated", 0) for g in result["groups"])
    if uncalibrated:
        lines.append(
            f"- {uncalibrated} run(s) lack the class entropy of real images (tracked by an older version): "
            "no collapse signal for them"
        )
    for note, names in result.get("evidence", {}).get("ema", {}).items():
        lines.append(
            f"- G's moving average could not show its decay in {len(names)} run(s) ({literal(note)}): "
            f"{', '.join(map(_shown, names))}"
        )
    loads = result.get("evidence", {}).get("load_per_core", [])
    if loads and min(loads) > 0 and max(loads) / min(loads) > UNEVEN_LOAD:
        lines.append(
            f"- the runs ran under different loads ({number(min(loads))} to {number(max(loads))} runnable "
            "processes per core, median over epochs): their timings are not comparable"
        )
    loaded = result.get("evidence", {}).get("loaded", [])
    if loaded:
        lines.append(
            f"- {len(loaded)} run(s) shared the CPU with other work (over {LOADED:g} runnable processes per "
            f"core; a training alone keeps about 1): their timings are slower than a quiet machine's: "
            f"{', '.join(map(_shown, loaded))}"
        )
    return lines


def _quartiles(q: dict) -> str:
    if q["median"] is None:
        return "-"
    if q["n"] < 2:
        return number(q["median"])
    return f"{number(q['median'])} [{number(q['q1'])}, {number(q['q3'])}]"


def _shown(value) -> str:
    """A value from the tracking store (a run name, a param or tag value) as literal markdown."""
    return literal(plain(value))


def _known(values: dict[str, float]) -> dict[str, float | None]:
    """Scores for comparison.json: None for one the run lacks (JSON has no NaN)."""
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def _reach(g: dict) -> str:
    """A group's cell "to FCD <= threshold": how many seeds got there ("k of n reached"), and
    the mean minutes and iterations of those that did. The others are censored: they had not
    by their last snapshot, so the mean flatters a group where some never did."""
    n, k = len(g["seeds"]), g.get("reached_threshold")
    if k is None:
        return "-"
    seeds = f"{k} of {n} reached"
    if not k:
        return seeds
    seconds, iterations = g["seconds_to_threshold"], g["iterations_to_threshold"]
    minutes = f"{seconds / 60:.1f} min" if seconds is not None else "time unknown"
    mean = f"{minutes}, " + (f"{iterations:.0f} it" if iterations is not None else "iterations unknown")
    return f"{seeds}: {mean}" + (f" (mean of the {k}; {n - k} censored)" if k < n else "")


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
