"""The statistics of a comparison's groups, as pure functions of numbers: means and
t-intervals over seeds, the Welch interval of a difference, and a run's timings (seconds per
iteration, training time and iterations to an FCD). Verdicts: `verdicts`."""

import math
from collections.abc import Sequence

import numpy as np


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


def mean_ci(s: dict) -> str:
    """A `mean_interval` as text: the mean and, where there is one, its interval; "-" for none."""
    if s is None or s.get("mean") is None:
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
