"""The verdicts of a comparison, as pure functions of each arm's per-seed numbers: every arm
against the baseline at once (Holm's correction for the number of arms), what its interval
rules out against the smallest effect a user cares about (`--min-effect`), equivalence (two
one-sided tests), and the plan of a sweep that could tell that effect, from the spread of
all the arms pooled. Lower is better (FCD): a difference arm - baseline > 0 is worse."""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from cifar_dcgan.compare.stats import number, welch_difference

ALPHA = 0.05  # the family-wise error rate of all of a comparison's verdicts together
POWER = 0.8  # a planned sweep shows a true difference of the size asked this often
MIN_EFFECT_SHARE = 0.10  # without --min-effect: 10% of the baseline's mean best FCD
MOST_SEEDS = 100  # past this many seeds per arm a plan says "more than": not a sweep anyone runs


def valid_effect(text: str) -> bool:
    """A `--min-effect` text: a positive FCD ("5") or a positive percentage ("10%")."""
    try:
        value = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def min_effect(text: str | None, baseline_mean: float) -> tuple[float, str]:
    """The smallest difference worth telling, in FCD, and how it was chosen: `text` is an
    absolute FCD ("5") or a share of the baseline's mean best FCD ("10%"); None: 10%."""
    if text is None:
        default = f"{MIN_EFFECT_SHARE:.0%} of the baseline's mean, the default"
        return MIN_EFFECT_SHARE * baseline_mean, default
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        return share * baseline_mean, f"{text} of the baseline's mean"
    return float(text), "--min-effect"


def judge_arms(
    arms: Mapping[str, Sequence[float]], baseline: Sequence[float], effect: float, alpha: float = ALPHA
) -> dict[str, dict]:
    """Each arm against the baseline: the difference of means with its Welch interval (95%,
    uncorrected) and its corrected one, at the level Holm's step-down tests the arm at
    (1 - alpha / (m - j) for the j-th smallest p; the rest at the level where the steps
    stopped), so the corrected interval excludes 0 exactly when Holm rejects: the verdict
    and the words agree. Welch's p and Holm's adjusted p; two one-sided tests (TOST) of
    equivalence within +-`effect`, corrected the same way as a family of their own, with the
    (1 - 2 level) interval they amount to. Verdict: lower / higher when the corrected
    interval excludes 0, else equivalent when the equivalence interval lies inside +-effect,
    else no difference detectable."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.weightstats import ttost_ind

    m = len(arms)
    out, p, tost = {}, {}, {}
    b = np.asarray(baseline, float)
    for label, values in arms.items():
        a = np.asarray(values, float)
        out[label] = {"comparisons": m, "interval": welch_difference(a, b), "p": None, "equivalence_p": None}
        if len(a) >= 2 and len(b) >= 2 and (a.var() + b.var()) > 0:
            p[label] = out[label]["p"] = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
            if effect > 0:
                tost[label] = float(ttost_ind(a, b, -effect, effect, usevar="unequal")[0])
                out[label]["equivalence_p"] = tost[label]
    for key, family in (("p", p), ("equivalence_p", tost)):
        if family:
            adjusted = multipletests(list(family.values()), alpha, "holm")[1]
            for label, value in zip(family, adjusted):
                out[label][f"{key}_holm"] = float(value)
    levels, tost_levels = holm_levels(p, alpha), holm_levels(tost, alpha)
    for label, values in arms.items():
        a, entry = np.asarray(values, float), out[label]
        entry["level"] = levels.get(label, alpha / m)
        entry["simultaneous"] = welch_difference(a, b, 1 - entry["level"])
        entry["equivalence_level"] = tost_levels.get(label)
        entry["equivalence"] = (
            welch_difference(a, b, 1 - 2 * tost_levels[label]) if label in tost_levels else None
        )
        entry["verdict"] = _verdict(entry, effect)
        entry["rules_out"] = rules_out(entry, effect)
    return out


def holm_levels(pvalues: Mapping[str, float], alpha: float = ALPHA) -> dict[str, float]:
    """The level Holm's step-down tests each p at: alpha / (m - j) for the j-th smallest
    (from 0) while every smaller one was rejected; from the first that is not, that level for
    it and all larger ones. A p below its level is exactly what Holm rejects."""
    ordered = sorted(pvalues, key=pvalues.get)
    m, levels, stopped = len(ordered), {}, None
    for j, label in enumerate(ordered):
        level = stopped if stopped is not None else alpha / (m - j)
        if stopped is None and pvalues[label] >= level:
            stopped = level
        levels[label] = level
    return levels


def _verdict(entry: dict, effect: float) -> str:
    corrected, equivalence = entry["simultaneous"], entry["equivalence"]
    if entry["p"] is None:  # one seed, or no spread in either group: nothing to test
        return "no test"
    if entry["p"] is not None and corrected["low"] is not None:
        if corrected["high"] < 0:
            return "lower (better)"
        if corrected["low"] > 0:
            return "higher (worse)"
    if (
        equivalence
        and equivalence["low"] is not None
        and -effect < equivalence["low"] < equivalence["high"] < effect
    ):
        return "equivalent"
    return "no difference detectable"


def rules_out(entry: dict, effect: float) -> str:
    """What an arm's corrected interval allows, in words ("fits differences from -7.3 to
    +17.3", below 0 better), then against the smallest effect worth telling."""
    interval = entry["simultaneous"]
    low, high = interval["low"], interval["high"]
    if low is None:
        return "no interval: it needs 2 or more seeds in both groups"
    if entry["p"] is None:
        return "no test: neither group's best FCD varies between its seeds"
    e = number(effect)
    words = [f"fits differences from {number(low, True)} to {number(high, True)}"]
    if entry["verdict"] == "equivalent":
        eq = entry["equivalence"]
        level = 1 - 2 * entry["equivalence_level"]
        words.append(
            f"equivalent within +-{e} (two one-sided tests: their {level:.1%} interval "
            f"[{number(eq['low'], True)}, {number(eq['high'], True)}] lies inside)"
        )
    elif high < -effect:
        words.append(f"better by more than {e}")
    elif low > effect:
        words.append(f"worse by more than {e}")
    elif low > -effect:
        words.append(f"rules out an improvement of {e} or more, not a worsening of {e}")
    elif high < effect:
        words.append(f"rules out a worsening of {e} or more, not an improvement of {e}")
    else:
        words.append(f"rules out neither an improvement nor a worsening of {e}")
    return "; ".join(words)


def pooled_sd(groups: Sequence[Sequence[float]], level: float = 0.95) -> dict | None:
    """The within-group standard deviation pooled over every group of 2 or more values, its
    degrees of freedom and its chi-square interval (None when no group has 2 values)."""
    from scipy import stats

    kept = [np.asarray(g, float) for g in groups if len(g) >= 2]
    df = sum(len(g) - 1 for g in kept)
    if not df:
        return None
    sd = math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in kept) / df)
    tail = (1 - level) / 2
    return {
        "sd": sd,
        "df": df,
        "groups": len(kept),
        "low": sd * math.sqrt(df / stats.chi2.ppf(1 - tail, df)),
        "high": sd * math.sqrt(df / stats.chi2.ppf(tail, df)),
    }


def plan(
    pooled: dict | None,
    effect: float,
    comparisons: int,
    seeds: tuple[int, int],
    alpha: float = ALPHA,
    power: float = POWER,
) -> dict | None:
    """A sweep that tells `effect` `power` of the time, every arm against the baseline at
    alpha / comparisons (two-sided t-tests): seeds per arm at the pooled sd and at its upper
    bound (None: more than MOST_SEEDS), and the difference `seeds` (arm, baseline) show that
    often. A plan for the next sweep, from every arm's spread: not the observed difference."""
    from statsmodels.stats.power import TTestIndPower

    if pooled is None or effect <= 0 or pooled["sd"] == 0:
        return None
    power_of = TTestIndPower()
    a = alpha / max(comparisons, 1)

    def seeds_for(sd: float) -> int | None:
        """The fewest seeds per arm with that power (solve_power does not converge at large
        effects: count up instead)."""
        for n in range(2, MOST_SEEDS + 1):
            if power_of.power(effect_size=effect / sd, nobs1=n, alpha=a, ratio=1.0) >= power:
                return n
        return None

    shown = None
    if min(seeds) >= 2:
        size = float(
            np.squeeze(power_of.solve_power(nobs1=seeds[0], ratio=seeds[1] / seeds[0], alpha=a, power=power))
        )
        shown = size * pooled["sd"] if math.isfinite(size) else None
    return {
        "effect": effect,
        "power": power,
        "alpha": a,
        "sd": pooled["sd"],
        "seeds_per_arm": seeds_for(pooled["sd"]),
        "seeds_per_arm_high": seeds_for(pooled["high"]),
        "detectable": shown,
    }


def plan_line(p: dict, pooled: dict, seeds: tuple[int, int]) -> str:
    """The plan in words."""
    sd = (
        f"pooled within-arm sd {number(pooled['sd'])} (df {pooled['df']}, {pooled['groups']} groups; 95% "
        f"[{number(pooled['low'])}, {number(pooled['high'])}])"
    )

    def count(n):
        return f"about {n}" if n is not None else f"more than {MOST_SEEDS}"

    shown = ""
    if p["detectable"] is not None:
        shown = f"; {seeds[0]} vs {seeds[1]} seeds show +-{number(p['detectable'])} or more that often"
    return (
        f"plan: to tell a difference of {number(p['effect'])} {p['power']:.0%} of the time at alpha "
        f"{p['alpha']:.3g} per arm, {count(p['seeds_per_arm'])} seeds per arm at the {sd}, "
        f"{count(p['seeds_per_arm_high'])} at its upper bound{shown}. Choose the count before the sweep: "
        "adding seeds until an interval excludes 0 finds differences that are not there"
    )
