"""The statistics of a comparison, as pure functions of numbers: means and t-intervals over
seeds, the Welch interval of a difference, what a sweep would need to show one, the verdict,
and a run's timings (seconds per iteration, training time and iterations to an FCD)."""

import math
from collections.abc import Sequence

import numpy as np

POWER = 0.8  # a planned sweep should show a true difference of the size asked this often
MOST_SEEDS = 100  # past this many seeds per arm a plan says "more than": not a sweep anyone runs


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


def finite_interval(values: Sequence[float]) -> dict:
    """`mean_interval` of the finite values (a run may lack a score); no mean when none is."""
    kept = [v for v in values if math.isfinite(v)]
    return mean_interval(kept) if kept else {"n": 0, "mean": None, "sd": None, "low": None, "high": None}


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
    head = f"{label}: best FCD {mean_ci(group)} vs {mean_ci(baseline)}"
    if difference["low"] is None:
        return f"{head}: no interval; it needs 2 or more seeds in both groups ({n} vs {n0})"
    if difference["high"] < 0:
        return f"{head}: lower (better); the CI of the difference excludes 0"
    if difference["low"] > 0:
        return f"{head}: higher (worse); the CI of the difference excludes 0"
    return f"{head}: no difference detectable with {n} vs {n0} seeds"


def mean_ci(s: dict) -> str:
    """A `mean_interval` as text: the mean and, where there is one, its interval; "-" for none."""
    if s["mean"] is None:
        return "-"
    if s["low"] is None:
        return number(s["mean"])
    return f"{number(s['mean'])} [{number(s['low'])}, {number(s['high'])}]"


def number(x: float, signed: bool = False) -> str:
    """One decimal from 10 up (FCD 23.1), three significant digits below (KID 0.0123)."""
    text = f"{x:+.1f}" if signed else f"{x:.1f}"
    return text if abs(x) >= 10 else (f"{x:+.3g}" if signed else f"{x:.3g}")


def mean_curve(curves: Sequence[dict[int, float]]) -> dict:
    """Mean FCD per epoch over the seeds that have it (`curves`: epoch -> FCD, one per seed),
    with the t-interval where 2+ do."""
    epochs = sorted({e for c in curves for e in c})
    curve = {"epoch": [], "mean": [], "low": [], "high": [], "n": []}
    for epoch in epochs:
        s = mean_interval([c[epoch] for c in curves if epoch in c])
        for k in ("mean", "low", "high", "n"):
            curve[k].append(s[k])
        curve["epoch"].append(epoch)
    return curve


def seconds_per_iteration(epoch_seconds: dict[int, float], iterations_per_epoch: float) -> float | None:
    """Mean training seconds per iteration over the timed epochs; None when unknown."""
    if not epoch_seconds or not iterations_per_epoch:
        return None
    return sum(epoch_seconds.values()) / (len(epoch_seconds) * iterations_per_epoch)


def training_seconds(epoch_seconds: dict[int, float], epoch: int) -> float:
    """Training wall-clock until the snapshot of `epoch`; inf when an epoch's time is unknown."""
    if any(e not in epoch_seconds for e in range(1, epoch + 1)):
        return math.inf
    return sum(epoch_seconds[e] for e in range(1, epoch + 1))


def reaches(
    curve: dict[int, float], epoch_seconds: dict[int, float], iterations_per_epoch: float, threshold: float
) -> tuple[float, int | None] | None:
    """(training seconds, iterations) until the FCD first is at most `threshold`, or None; the
    seconds are inf, the iterations None, where an epoch's time or length is unknown."""
    for epoch in sorted(curve):
        if curve[epoch] <= threshold:
            iterations = round(epoch * iterations_per_epoch) if iterations_per_epoch else None
            return training_seconds(epoch_seconds, epoch), iterations
    return None


def to_threshold(hits: Sequence[tuple[float, int | None] | None]) -> dict:
    """Of a group's `reaches` (one per seed): how many seeds reached the threshold, and the
    mean seconds and iterations they took, over the seeds where these are known (None when
    none are)."""
    reached = [hit for hit in hits if hit]
    seconds = [s for s, _ in reached if math.isfinite(s)]
    iterations = [i for _, i in reached if i is not None]
    return {
        "reached_threshold": len(reached),
        "seconds_to_threshold": float(np.mean(seconds)) if seconds else None,
        "iterations_to_threshold": float(np.mean(iterations)) if iterations else None,
    }
