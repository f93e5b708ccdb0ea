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
    uncorrected) and the simultaneous one (Bonferroni, 1 - alpha / arms), Welch's p and Holm's
    adjusted p, two one-sided tests of equivalence within +-`effect` (Holm-adjusted too), and
    the verdict: lower / higher when Holm's p < alpha, else equivalent within the effect when
    its tests say so, else no difference detectable."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.weightstats import ttost_ind

    m = len(arms)
    out = {}
    for label, values in arms.items():
        a, b = np.asarray(values, float), np.asarray(baseline, float)
        entry = {
            "comparisons": m,
            "interval": welch_difference(a, b),
            "simultaneous": welch_difference(a, b, 1 - alpha / m),
            "p": None,
            "equivalence_p": None,
        }
        if len(a) >= 2 and len(b) >= 2 and (a.var() + b.var()) > 0:
            entry["p"] = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
            if effect > 0:
                entry["equivalence_p"] = float(ttost_ind(a, b, -effect, effect, usevar="unequal")[0])
        out[label] = entry
    for key in ("p", "equivalence_p"):
        tested = [label for label in out if out[label][key] is not None]
        adjusted = multipletests([out[label][key] for label in tested], alpha, "holm")[1] if tested else []
        for label, p in zip(tested, adjusted):
            out[label][f"{key}_holm"] = float(p)
    for entry in out.values():
        entry["verdict"] = _verdict(entry, alpha)
        entry["rules_out"] = rules_out(
            entry["simultaneous" if m > 1 else "interval"], effect, entry["verdict"] == "equivalent"
        )
    return out


def _verdict(entry: dict, alpha: float) -> str:
    d = entry["interval"]["difference"]
    if entry.get("p_holm") is not None and entry["p_holm"] < alpha:
        return "lower (better)" if d < 0 else "higher (worse)"
    if entry.get("equivalence_p_holm") is not None and entry["equivalence_p_holm"] < alpha:
        return "equivalent"
    return "no difference detectable"


def rules_out(interval: dict, effect: float, equivalent: bool = False) -> str:
    """What a difference's interval excludes, in words: "rules out worse than +17.3; cannot
    rule out better than -7.3", then against the smallest effect worth telling (`equivalent`:
    the two one-sided tests said so, which a (1 - 2 alpha) interval inside +-effect means)."""
    low, high = interval["low"], interval["high"]
    if low is None:
        return "no interval: it needs 2 or more seeds in both groups"
    words = [
        "rules out any worsening" if high <= 0 else f"rules out worse than {number(high, True)}",
        "rules out any improvement" if low >= 0 else f"cannot rule out better than {number(low, True)}",
    ]
    e = number(effect)
    if equivalent or (-effect < low and high < effect):
        words.append(f"equivalent within +-{e}")
    elif high < -effect:
        words.append(f"better by more than {e}")
    elif low > effect:
        words.append(f"worse by more than {e}")
    elif low > -effect:
        words.append(f"an improvement of {e} or more is ruled out; a worsening of {e} is not")
    elif high < effect:
        words.append(f"a worsening of {e} or more is ruled out; an improvement of {e} is not")
    else:
        words.append(f"neither an improvement nor a worsening of {e} is ruled out")
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
        n = power_of.solve_power(effect_size=effect / sd, alpha=a, power=power)
        n = math.ceil(float(np.squeeze(n)))
        return n if n <= MOST_SEEDS else None

    shown = None
    if min(seeds) >= 2:
        size = power_of.solve_power(nobs1=seeds[0], ratio=seeds[1] / seeds[0], alpha=a, power=power)
        shown = float(np.squeeze(size)) * pooled["sd"]
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
