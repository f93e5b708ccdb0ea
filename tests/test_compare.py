"""cifar-dcgan-compare on runs with known numbers, made in a temporary MLflow store."""

import json
import math
import re
import time
import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from cifar_dcgan.compare import verdicts
from cifar_dcgan.compare.cli import main
from cifar_dcgan.compare.plots import plot_curves
from cifar_dcgan.compare.stats import (
    mean_curve,
    mean_interval,
    reaches,
    seconds_per_iteration,
    to_threshold,
    training_seconds,
    welch_difference,
)
from conftest import REPO

BASE = {"train_gan.label_smoothing": "0.0", "train_gan.fcd_samples": "5000", "train_gan.epochs": "200"}


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("cifar10-dcgan", (tmp_path / "artifacts").as_uri())
    return client, experiment


def add_run(
    store,
    seed: int,
    curve: list[float],
    status: str = "FINISHED",
    evaluator: str = "judge-a",
    epoch_seconds: float = 60.0,
    iterations_per_epoch: int = 100,
    entropy: float = 3.0,
    failures: int = 0,
    resolved: str | None = None,
    onednn: str | None = None,
    cpu: str | None = None,
    start: int = 1,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    overrides: dict[str, dict[int, float]] | None = None,
    losses: bool = False,
    **params,
) -> str:
    """A train-gan run as the stage logs it: params, tags, FCD and timing per epoch from epoch
    `start`, with `overrides` (metric -> epoch -> value) and, with `losses`, d1 per iteration."""
    client, experiment = store
    tags = {"stage": "train-gan", "evaluator_digest": evaluator, **(tags or {})}
    if resolved:
        tags["precision_resolved"] = resolved
    if onednn:
        tags["onednn"] = onednn
    if cpu:
        tags["cpu"] = cpu
    run = client.create_run(experiment, run_name=name or f"s{seed}/train-gan", tags=tags)
    values = {**BASE, **params, "train_gan.seed": str(seed)}
    metrics = [Metric("failures", failures, 0, 0)]
    for epoch, fcd in enumerate(curve, start=start):
        logged = {
            "fcd": fcd,
            "kid": fcd / 100,
            "class_entropy": entropy,
            "diversity": 0.5,
            "epoch_seconds": epoch_seconds,
            "seconds_per_iteration": epoch_seconds / iterations_per_epoch,
        }
        logged |= {key: by_epoch[epoch] for key, by_epoch in (overrides or {}).items() if epoch in by_epoch}
        metrics += [Metric(key, value, 0, epoch) for key, value in logged.items()]
        if losses:  # the iterations of this epoch, numbered from the training's first
            first = (epoch - 1) * iterations_per_epoch + 1
            metrics += [Metric("d1", 0.5, 0, first + i) for i in range(iterations_per_epoch)]
    for at in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(run.info.run_id, metrics=metrics[at : at + 1000])
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in values.items()])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def compare_cli(tmp_path, *args) -> dict:
    main(["--params", str(REPO / "params.yaml"), "--out", str(tmp_path / "cmp"), *args])
    return json.loads((tmp_path / "cmp" / "comparison.json").read_text())


def by_label(result: dict) -> dict:
    return {g["label"]: g for g in result["groups"]}


def test_means_intervals_and_verdicts_on_known_numbers(store, tmp_path):
    # best FCD per seed: baseline 20, 22, 24; +10 worse; -10 better; the same mean, wider spread
    arms = {"0.0": [20, 22, 24], "0.1": [30, 32, 34], "0.2": [10, 12, 14], "0.3": [18, 22, 26]}
    for smoothing, bests in arms.items():
        for seed, best in enumerate(bests, start=1):
            add_run(store, seed, [best + 15, best], **{"train_gan.label_smoothing": smoothing})
    result = compare_cli(tmp_path, "--no-track")
    assert result["differing_params"] == ["train_gan.label_smoothing"]  # the seed is no group
    groups = by_label(result)
    assert list(groups) == [f"label_smoothing={s}" for s in ("0.0", "0.1", "0.2", "0.3")]
    base = groups["label_smoothing=0.0"]
    assert base["baseline"] and base["seeds"] == ["1", "2", "3"]
    # mean 22, sd 2, t(0.975, 2) = 4.3027: 22 +- 4.9683
    assert base["best_fcd"]["mean"] == pytest.approx(22)
    assert (base["best_fcd"]["low"], base["best_fcd"]["high"]) == pytest.approx((17.0317, 26.9683), abs=1e-3)
    assert base["last_fcd"]["mean"] == pytest.approx(22)
    assert base["curve"]["epoch"] == [1, 2] and base["curve"]["mean"] == pytest.approx([37, 22])
    # Welch: difference 10, se sqrt(4/3 + 4/3), df 4, t(0.975, 4) = 2.7764: 10 +- 4.5339
    worse = groups["label_smoothing=0.1"]["best_fcd_difference"]
    assert worse["difference"] == pytest.approx(10) and worse["df"] == pytest.approx(4)
    assert (worse["low"], worse["high"]) == pytest.approx((5.4661, 14.5339), abs=1e-3)
    assert groups["label_smoothing=0.1"]["verdict"].endswith("higher (worse)")
    assert groups["label_smoothing=0.2"]["verdict"].endswith("lower (better)")
    assert groups["label_smoothing=0.3"]["verdict"].endswith("no difference detectable")
    # three arms against one baseline: Holm's correction, and the interval for all three at once
    from scipy import stats

    judged = groups["label_smoothing=0.1"]["judged"]
    p = stats.ttest_ind([30, 32, 34], [20, 22, 24], equal_var=False).pvalue
    assert judged["comparisons"] == 3 and judged["p"] == pytest.approx(p)
    assert judged["p_holm"] == pytest.approx(3 * p)  # the two smallest p are equal: both times 3
    half = stats.t.ppf(1 - 0.05 / 6, 4) * math.sqrt(8 / 3)
    assert (judged["simultaneous"]["low"], judged["simultaneous"]["high"]) == pytest.approx(
        (10 - half, 10 + half)
    )
    assert groups["label_smoothing=0.3"]["judged"]["p_holm"] == pytest.approx(1)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "label_smoothing=0.1: best FCD 32.0 [27.0, 37.0] vs 22.0 [17.0, 27.0]: higher (worse)" in report
    assert "3 comparisons with the baseline, verdicts corrected for them (Holm" in report
    assert (
        f"Holm p {3 * p:.3g}, corrected 98.3% interval [+{10 - half:.2f}, +{10 + half:.1f}]): "
        "fits differences" in report
    )
    # the threshold is the worst group's mean best FCD (32): every run reached it at epoch 1 or 2
    assert result["fcd_threshold"] == pytest.approx(32)
    assert base["reached_threshold"] == 3 and base["seconds_to_threshold"] == pytest.approx(120)
    assert base["iterations_to_threshold"] == pytest.approx(200)
    assert base["seconds_per_iteration"]["mean"] == pytest.approx(0.6)
    assert (tmp_path / "cmp" / "fcd_curves.png").stat().st_size > 10_000
    assert (tmp_path / "cmp" / "grids.png").stat().st_size > 5_000


def test_holm_tost_pooled_sd_and_plan_on_known_numbers():
    from scipy import stats
    from statsmodels.stats.power import TTestIndPower

    base = [20.0, 22.0, 24.0]
    arms = {"worse": [30.0, 32.0, 34.0], "same": [21.0, 22.0, 23.0], "wide": [10.0, 22.0, 34.0]}
    judged = verdicts.judge_arms(arms, base, effect=5.0)
    p = {k: stats.ttest_ind(v, base, equal_var=False).pvalue for k, v in arms.items()}
    order = sorted(p, key=p.get)  # Holm: the k-th smallest p times (m - k + 1), kept monotone
    expected, running = {}, 0.0
    for k, label in enumerate(order):
        running = max(running, min(1.0, (3 - k) * p[label]))
        expected[label] = running
    for label in arms:
        assert judged[label]["p_holm"] == pytest.approx(expected[label])
    assert judged["worse"]["verdict"] == "higher (worse)"
    # "same": a difference of 0 with tight spreads: both one-sided tests reject at +-5, even corrected
    assert judged["same"]["verdict"] == "equivalent" and judged["same"]["equivalence_p_holm"] < 0.05
    assert "equivalent within +-5" in judged["same"]["rules_out"]
    assert judged["wide"]["verdict"] == "no difference detectable"
    assert "rules out neither an improvement nor a worsening of 5" in judged["wide"]["rules_out"]
    # the pooled sd: sum of squares over the groups' degrees of freedom (8 + 8 + 2 + 288 over 8)
    pooled = verdicts.pooled_sd([base, *arms.values()])
    assert pooled["df"] == 8 and pooled["sd"] == pytest.approx(math.sqrt(306 / 8))
    assert pooled["low"] < pooled["sd"] < pooled["high"]
    plan = verdicts.plan(pooled, 5.0, 3, (3, 3))
    n = TTestIndPower().solve_power(effect_size=5.0 / pooled["sd"], alpha=0.05 / 3, power=0.8)
    assert plan["seeds_per_arm"] == math.ceil(n) and plan["seeds_per_arm_high"] in (
        None,
        *range(plan["seeds_per_arm"] + 1, 101),
    )
    assert verdicts.plan(pooled, 0.5, 3, (3, 3))["seeds_per_arm"] is None  # more than 100
    assert verdicts.min_effect("10%", 30.0) == (pytest.approx(3.0), "10% of the baseline's mean")


def test_a_missed_difference_gets_a_plan_from_the_pooled_spread(store, tmp_path, capsys):
    arms = {"0.0": [20, 22, 24], "0.1": [22, 26, 30], "0.2": [30, 32, 34]}
    for smoothing, bests in arms.items():
        for seed, best in enumerate(bests, start=1):
            add_run(store, seed, [best], **{"train_gan.label_smoothing": smoothing})
    result = compare_cli(tmp_path, "--no-track", "--min-effect", "5")
    missed = by_label(result)["label_smoothing=0.1"]
    assert missed["verdict"].endswith("no difference detectable")
    assert result["pooled_sd"]["sd"] == pytest.approx(math.sqrt((8 + 32 + 8) / 6))  # not one arm's sd
    assert result["min_effect"] == {"fcd": 5.0, "chosen": "--min-effect"}
    out = capsys.readouterr().out
    plan = result["plan"]
    assert (
        "plan: to tell a difference of 5 80% of the time at alpha 0.025 per arm, "
        f"about {plan['seeds_per_arm']} seeds per arm at the pooled within-arm sd 2.83 (df 6, 3 groups"
    ) in out
    assert "fits differences from -" in out and "an improvement of 5" in out


def test_baseline_named_on_the_command_line_and_a_threshold(store, tmp_path):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best + 15, best])
        add_run(store, seed, [best + 5, best - 10], epoch_seconds=30, **{"train_gan.label_smoothing": "0.1"})
    result = compare_cli(
        tmp_path, "--no-track", "--baseline", "train_gan.label_smoothing=0.1", "--fcd-threshold", "27"
    )
    base, other = result["groups"]
    assert base["label"] == "label_smoothing=0.1" and base["baseline"]
    assert other["best_fcd_difference"]["difference"] == pytest.approx(10)
    # 0.1 reaches FCD 27 at epoch 1 for seeds 1, 2 (25, 27), at epoch 2 for seed 3: 30 + 30 + 60 s
    assert base["reached_threshold"] == 3 and base["seconds_to_threshold"] == pytest.approx(40)
    assert other["reached_threshold"] == 3 and other["seconds_to_threshold"] == pytest.approx(120)


def test_within_minutes_compares_at_equal_wall_clock(store, tmp_path, capsys):
    # smoothing 0.1 ends better but costs twice the time per epoch: in the first 2.5 minutes
    # the classic runs took two snapshots (40 + seed) and the slower ones one (45 + seed)
    for seed in (1, 2, 3):
        add_run(store, seed, [50 + seed, 40 + seed, 30 + seed, 20 + seed], epoch_seconds=60)
        slow = [45 + seed, 25 + seed, 15 + seed, 10 + seed]
        add_run(store, seed, slow, epoch_seconds=120, **{"train_gan.label_smoothing": "0.1"})
    add_run(store, 4, [44, 24, 14, 9], epoch_seconds=200, **{"train_gan.label_smoothing": "0.1"})
    at_the_end = by_label(compare_cli(tmp_path, "--no-track"))["label_smoothing=0.1"]
    assert at_the_end["best_fcd"]["mean"] == pytest.approx(11.25) and len(at_the_end["seeds"]) == 4
    assert "lower (better)" in at_the_end["verdict"]
    result = compare_cli(tmp_path, "--no-track", "--within-minutes", "2.5")
    base, slow = result["groups"]
    assert result["within_minutes"] == 2.5
    assert base["best_fcd"]["mean"] == pytest.approx(42) and base["last_fcd"]["mean"] == pytest.approx(42)
    assert slow["best_fcd"]["mean"] == pytest.approx(47) and slow["seeds"] == ["1", "2", "3"]
    assert slow["best_fcd_difference"]["difference"] == pytest.approx(5)
    assert "higher (worse)" in slow["verdict"]
    out = capsys.readouterr().out
    assert "run s4/train-gan: no snapshot within 2.5 min of training, left out" in out
    assert "each run counts only its snapshots of the first 2.5 minutes of training" in out


def test_pictures_name_each_group_by_what_it_changes_from_the_baseline(store, tmp_path):
    arms = {("0.0", "0.0"): 20, ("0.1", "0.0"): 30, ("0.0", "0.05"): 25}
    for (smoothing, noise), best in arms.items():
        for seed in (1, 2):
            extra = {"train_gan.label_smoothing": smoothing, "train_gan.label_noise": noise}
            add_run(store, seed, [best + seed], **extra)
    result = compare_cli(tmp_path, "--no-track")
    short = {g["label"]: g["short_label"] for g in result["groups"]}
    assert short == {
        "label_noise=0.0, label_smoothing=0.0": "baseline",
        "label_noise=0.0, label_smoothing=0.1": "label_smoothing=0.1",
        "label_noise=0.05, label_smoothing=0.0": "label_noise=0.05",
    }


def test_many_groups_get_a_panel_each_over_the_baseline(store, tmp_path):
    # six bands in one axes hide each other: past four groups, one panel per group
    for i, smoothing in enumerate(("0.0", "0.1", "0.2", "0.3", "0.4", "0.5")):
        for seed in (1, 2):
            add_run(store, seed, [60 - i, 40 + i + seed], **{"train_gan.label_smoothing": smoothing})
    result = compare_cli(tmp_path, "--no-track")
    panels = plot_curves(result, tmp_path / "curves.png")
    assert panels == [
        ["baseline (2 seeds)", f"label_smoothing={s} (2 seeds)"] for s in ("0.1", "0.2", "0.3", "0.4", "0.5")
    ]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    two = {**result, "groups": result["groups"][:2]}
    assert plot_curves(two, tmp_path / "two.png") == [["baseline (2 seeds)", "label_smoothing=0.1 (2 seeds)"]]


def test_one_seed_shows_means_and_says_a_ci_needs_two(store, tmp_path, capsys):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best])
    add_run(store, 1, [30], **{"train_gan.label_smoothing": "0.1"})
    result = compare_cli(tmp_path, "--no-track")
    single = by_label(result)["label_smoothing=0.1"]
    assert single["best_fcd"]["mean"] == 30 and single["best_fcd"]["low"] is None
    out = capsys.readouterr().out
    assert "label_smoothing=0.1: one seed; a confidence interval needs 2 or more seeds" in out
    assert "no interval: it needs 2 or more seeds in both groups" in out


def test_runs_tracked_before_a_trick_existed_pool_with_its_classic_value(store, tmp_path):
    # three classic runs from before the stabilizers' keys, one classic and three hinge runs
    # tracked with them: the classic runs are one group of four seeds, not two groups
    classic_now = {
        "model.d_spectral_norm": "False",
        "train_gan.g_ema": "0.0",
        "train_gan.loss": "bce",
        "train_gan.d_steps": "1",
        "train_gan.diff_augment": "[]",
    }
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best])
        add_run(store, seed, [best + 10], **{**classic_now, "train_gan.loss": "hinge"})
    add_run(store, 4, [26], **classic_now)
    result = compare_cli(tmp_path, "--no-track")
    assert result["differing_params"] == ["train_gan.loss"]
    classic, hinge = result["groups"]
    assert classic["label"] == "loss=bce" and classic["baseline"] and classic["seeds"] == ["1", "2", "3", "4"]
    assert hinge["seeds"] == ["1", "2", "3"]
    assert hinge["best_fcd_difference"]["difference"] == pytest.approx(9)  # 32 vs (20 + 22 + 24 + 26) / 4
    assert result["assumed"]["runs"] == ["s1/train-gan", "s2/train-gan", "s3/train-gan"]
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "3 run(s) were tracked before model.d_spectral_norm, train_gan.g_ema, train_gan.loss" in report
    assert "train_gan.loss=bce, train_gan.d_steps=1, train_gan.diff_augment=[])" in report


def test_precision_auto_runs_count_as_what_it_became_never_across_machines(store, tmp_path):
    # seeds 1, 2 of `precision: auto` on a bf16 machine and on a float32 one, and seeds 3, 4 of
    # float32 named: the float32 machine's auto runs are float32 runs, the bf16 ones are not
    auto = {"train_gan.precision": "auto"}
    for seed in (1, 2):
        add_run(store, seed, [30 + seed], resolved="mixed_bfloat16", **auto)
        add_run(store, seed, [20 + seed], resolved="float32", **auto)
    for seed in (3, 4):
        add_run(store, seed, [20 + seed], resolved="float32", **{"train_gan.precision": "float32"})
    result = compare_cli(tmp_path, "--no-track")
    assert result["differing_params"] == ["train_gan.precision"]
    base, bf16 = result["groups"]
    assert base["label"] == "precision=float32" and base["baseline"]
    assert base["seeds"] == ["1", "2", "3", "4"] and bf16["seeds"] == ["1", "2"]
    assert bf16["label"] == "precision=mixed_bfloat16"
    assert bf16["best_fcd_difference"]["difference"] == pytest.approx(31.5 - 22.5)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "4 run(s) of precision auto count as the precision it became on their machine" in report
    only_float32 = compare_cli(tmp_path, "--no-track", "--tag", "precision_resolved=float32")
    assert [g["best_fcd"]["mean"] for g in only_float32["groups"]] == [pytest.approx(22.5)]


def test_timings_of_different_kernel_sets_are_flagged(store, tmp_path):
    # smoothing 0.1 ran where TensorFlow's own kernels were on: its s / iteration is not comparable
    for seed in (1, 2):
        add_run(store, seed, [20 + seed], epoch_seconds=60, onednn="on")
        add_run(
            store, seed, [22 + seed], epoch_seconds=110, onednn="off", **{"train_gan.label_smoothing": "0.1"}
        )
    result = compare_cli(tmp_path, "--no-track")
    assert result["machines"]["onednn"] == {"on": 2, "off": 2}
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert (
        "timings (s / iteration, time to the threshold) mix machines or kernels: "
        "2 run(s) with onednn=off; 2 with onednn=on; compare speed within one (--tag 'onednn=off')"
    ) in report
    only_on = compare_cli(tmp_path, "--no-track", "--tag", "onednn=on")
    assert only_on["machines"]["onednn"] == {"on": 2}
    assert "mix machines" not in (tmp_path / "cmp" / "report.md").read_text()


def test_timings_from_different_cpus_are_flagged_and_one_cpu_can_be_kept(store, tmp_path):
    # a sweep run in two batches, on an AVX2-only machine and on one with AMX: the same training,
    # 6x apart in speed; runs tracked before the cpu tag existed are no mix by themselves
    slow, fast = "AMD EPYC (avx2), 2 cores", "Intel Xeon (amx_bf16, avx512_bf16), 2 cores"
    add_run(store, 1, [21], epoch_seconds=700, cpu=slow)
    add_run(store, 2, [22], epoch_seconds=110, cpu=fast)
    add_run(store, 3, [23], epoch_seconds=120, cpu=fast)
    add_run(store, 4, [24], epoch_seconds=120)
    result = compare_cli(tmp_path, "--no-track")
    assert result["machines"]["cpu"] == {slow: 1, fast: 2}
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert (
        f"mix machines or kernels: 2 run(s) with cpu={fast}; 1 with cpu={slow}; "
        f"compare speed within one (--tag 'cpu={fast}')"
    ) in report
    compare_cli(tmp_path, "--no-track", "--within-minutes", "20")  # in equal minutes a slow CPU trains less
    assert "timings, and with them the snapshots each run had by the time limit, mix machines" in (
        (tmp_path / "cmp" / "report.md").read_text()
    )
    kept = compare_cli(tmp_path, "--no-track", "--tag", f"cpu={fast}")  # the command the line gives
    (group,) = kept["groups"]
    assert sorted(group["seeds"]) == ["2", "3"]
    assert group["seconds_per_iteration"]["mean"] == pytest.approx(1.15)
    assert "mix machines" not in (tmp_path / "cmp" / "report.md").read_text()


def test_explicit_precisions_are_grouped_by_the_param_alone(store, tmp_path):
    for seed in (1, 2):
        add_run(store, seed, [20 + seed], resolved="float32", **{"train_gan.precision": "float32"})
        add_run(
            store, seed, [22 + seed], resolved="mixed_bfloat16", **{"train_gan.precision": "mixed_bfloat16"}
        )
    result = compare_cli(tmp_path, "--no-track")
    assert result["differing_params"] == ["train_gan.precision"]
    assert [g["label"] for g in result["groups"]] == ["precision=float32", "precision=mixed_bfloat16"]


def test_fcd_of_different_evaluators_is_never_pooled(store, tmp_path, capsys):
    add_run(store, 1, [20], evaluator="judge-a")
    add_run(store, 2, [22], evaluator="judge-b")
    with pytest.raises(SystemExit) as exit_info:
        compare_cli(tmp_path, "--no-track")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "scored by 2 different evaluators" in err and "not comparable" in err
    assert "Traceback" not in err and not (tmp_path / "cmp").exists()


def test_unfinished_failed_and_flagged_runs_are_skipped_with_a_line(store, tmp_path, capsys):
    for seed in (1, 2):
        add_run(store, seed, [20 + seed])
    running = add_run(store, 3, [10], status="RUNNING")
    failed = add_run(store, 4, [10], status="FAILED")
    flagged = add_run(store, 5, [10], failures=1)
    result = compare_cli(tmp_path, "--no-track")
    assert result["groups"][0]["seeds"] == ["1", "2"]
    err = capsys.readouterr().err
    assert f"run {running[:8]} (s3/train-gan): running, skipped" in err
    assert f"run {failed[:8]} (s4/train-gan): failed, skipped" in err
    assert f"run {flagged[:8]} (s5/train-gan): flagged by failure detection, skipped" in err


def test_no_runs_is_one_clear_line(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_cli(tmp_path, "--no-track")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no finished, scored train-gan runs in experiment 'cifar10-dcgan'")
    assert "Traceback" not in err
    add_run(store, 1, [21], cpu="AMD EPYC (avx2), 2 cores")  # a tag that no run has says which
    with pytest.raises(SystemExit):
        compare_cli(tmp_path, "--no-track", "--tag", "cpu=AMD EPYC (avx2), 8 cores")
    err = capsys.readouterr().err
    assert "runs in experiment 'cifar10-dcgan'" in err
    assert "with tag cpu=AMD EPYC (avx2), 8 cores (a run's tags are on its page in the MLflow UI)" in err


def test_the_report_is_logged_to_its_own_mlflow_run(store, tmp_path):
    client, experiment = store
    for seed in (1, 2):
        add_run(store, seed, [20 + seed])
        add_run(store, seed, [25 + seed], **{"train_gan.label_smoothing": "0.1"})
    compare_cli(tmp_path)
    (run,) = client.search_runs([experiment], "tags.stage = 'compare'")
    assert run.info.status == "FINISHED" and run.info.run_name.endswith("/compare")
    logged = sorted(a.path for a in client.list_artifacts(run.info.run_id, "compare"))
    assert logged == [f"compare/{n}" for n in ("comparison.json", "fcd_curves.png", "grids.png", "report.md")]


def test_welch_interval_is_scipys():
    from scipy import stats as scipy_stats

    group, baseline = [31.0, 35.5, 29.0, 40.0], [22.0, 24.5, 21.0]
    found = welch_difference(group, baseline)
    test = scipy_stats.ttest_ind(group, baseline, equal_var=False)
    interval = test.confidence_interval(confidence_level=0.95)
    assert found["difference"] == pytest.approx(np.mean(group) - np.mean(baseline))
    assert found["df"] == pytest.approx(test.df)
    assert (found["low"], found["high"]) == pytest.approx((interval.low, interval.high))
    assert welch_difference([30.0], baseline)["low"] is None  # one seed: no interval
    same = welch_difference([5.0, 5.0], [3.0, 3.0])
    assert (same["low"], same["high"], same["df"]) == (2.0, 2.0, float("inf"))


def test_mean_interval_is_the_t_interval():
    from scipy import stats as scipy_stats

    values = [20.0, 22.0, 27.0, 23.0]
    found = mean_interval(values)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (found["n"], found["sd"]) == (4, pytest.approx(np.std(values, ddof=1)))
    assert (found["low"], found["high"]) == pytest.approx((low, high))
    assert mean_interval([7.0]) == {"n": 1, "mean": 7.0, "sd": None, "low": None, "high": None}


def test_time_to_threshold_and_the_mean_curve():
    curve, seconds = {1: 50.0, 2: 30.0, 3: 25.0}, {1: 60.0, 2: 40.0, 3: 50.0}
    assert reaches(curve, seconds, 100, 30.0) == (100.0, 200)  # first at or below 30: epoch 2
    assert reaches(curve, seconds, 100, 20.0) is None
    assert training_seconds(seconds, 3) == 150.0 and training_seconds({1: 60.0, 3: 50.0}, 3) == math.inf
    assert seconds_per_iteration(seconds, 100) == pytest.approx(0.5)
    assert seconds_per_iteration({}, 100) is None and seconds_per_iteration(seconds, 0) is None
    hits = to_threshold([(100.0, 200), None, (140.0, 300)])
    assert hits == {"reached_threshold": 2, "seconds_to_threshold": 120.0, "iterations_to_threshold": 250.0}
    assert to_threshold([None])["seconds_to_threshold"] is None
    mean = mean_curve([{1: 40.0, 2: 30.0}, {1: 44.0}])  # the second seed has no epoch 2
    assert mean["epoch"] == [1, 2] and mean["mean"] == [42.0, 30.0] and mean["n"] == [2, 1]
    assert mean["low"][1] is None and mean["low"][0] < 42.0 < mean["high"][0]


def test_a_run_continued_with_more_epochs_counts_at_the_epochs_it_ended_with(store, tmp_path):
    # seeds 1, 2 trained 2 epochs, and 3 epochs; seed 3 trained 2, then `dvc exp run -S
    # train_gan.epochs=3` continued it in the same MLflow run, whose epochs param stays 2
    for seed in (1, 2):
        add_run(store, seed, [40 + seed, 30 + seed], **{"train_gan.epochs": "2"})
        add_run(store, seed, [40 + seed, 30 + seed, 20 + seed], **{"train_gan.epochs": "3"})
    continued = {"changed_params": "train_gan.epochs: 2 -> 3"}
    add_run(store, 3, [43, 33, 23], tags=continued, **{"train_gan.epochs": "2"})
    result = compare_cli(tmp_path, "--no-track", "--baseline", "train_gan.epochs=2")
    two, three = by_label(result)["epochs=2"], by_label(result)["epochs=3"]
    assert two["seeds"] == ["1", "2"] and three["seeds"] == ["1", "2", "3"]
    assert two["curve"]["epoch"] == [1, 2]  # not an epoch the 2-epoch trainings never had
    assert three["best_fcd"]["mean"] == pytest.approx(22)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert (
        "1 run(s) were continued with changed params and count at the values they ended with (their "
        "changed_params tag; MLflow keeps the params first logged): s3/train-gan (train_gan.epochs 2 -> 3)."
    ) in report


def test_a_training_resumed_into_a_new_mlflow_run_is_left_out_as_partial(store, tmp_path, capsys):
    # 4 epochs with a snapshot each; seed 3's first MLflow run was deleted after epoch 2, and its
    # training resumed from the checkpoint in a new run: FCD, timing and losses of epochs 3-4 only
    params = {"train_gan.epochs": "4", "train_gan.snapshot_every": "1"}
    for seed in (1, 2):
        add_run(store, seed, [60, 50, 40 + seed, 30 + seed], losses=True, **params)
    partial = add_run(store, 3, [22, 20], start=3, losses=True, **params)
    result = compare_cli(tmp_path, "--no-track")
    (group,) = result["groups"]
    assert group["seeds"] == ["1", "2"] and group["best_fcd"]["mean"] == pytest.approx(31.5)
    line = (
        f"run {partial[:8]} (s3/train-gan): a partial history: no losses or timing for epoch 1-2 of its 4 "
        "(resumed into a new MLflow run?), skipped"
    )
    assert f"skipped: {line}" in capsys.readouterr().err
    assert f"- {line}" in (tmp_path / "cmp" / "report.md").read_text()


def test_nan_and_infinite_metrics_are_left_out_and_never_printed(store, tmp_path, capsys):
    for seed, best in ((1, 20), (2, 22), (3, 24)):
        add_run(store, seed, [best + 10, best])
    # smoothing 0.1: seed 1 has a NaN FCD snapshot and NaN seconds per iteration, seed 2 an
    # infinite epoch time, seed 3 no finite FCD at all
    smooth = {"train_gan.label_smoothing": "0.1"}
    add_run(
        store, 1, [math.nan, 30], overrides={"seconds_per_iteration": {1: math.nan, 2: math.nan}}, **smooth
    )
    add_run(store, 2, [42, 32], overrides={"epoch_seconds": {2: math.inf}}, **smooth)
    unscored = add_run(store, 3, [math.nan, math.nan], **smooth)
    add_run(store, 4, [44, 34], **smooth)
    result = compare_cli(tmp_path, "--no-track")
    base, other = result["groups"]
    assert other["seeds"] == ["1", "2", "4"] and other["best_fcd"]["mean"] == pytest.approx(32)
    assert result["fcd_threshold"] == pytest.approx(32)  # the worse group's mean best FCD
    assert other["best_fcd_difference"]["difference"] == pytest.approx(10)
    # seeds 1 and 2 got to FCD 32 at epoch 2; seed 1's iterations and seed 2's time are unknown
    assert other["reached_threshold"] == 2 and other["seconds_to_threshold"] == pytest.approx(120)
    assert other["iterations_to_threshold"] == pytest.approx(200)
    captured = capsys.readouterr()
    report = (tmp_path / "cmp" / "report.md").read_text()
    for text in (captured.out, captured.err, report):
        assert not re.search(r"\b(nan|inf)\b", text), text  # as Python prints them
    assert "label_smoothing=0.1: best FCD 32.0 [27.0, 37.0] vs 22.0 [17.0, 27.0]: higher (worse)" in report
    assert "| 2 of 3 reached: 2.0 min, 200 it (mean of the 2; 1 censored) |" in report
    assert (
        f"run {unscored[:8]} (s3/train-gan): none of its 2 FCD values is a finite number, skipped" in report
    )
    assert (
        "run s1/train-gan: 4 NaN or infinite values (fcd at epoch 1; seconds_per_iteration at epoch 1-2; "
        "kid at epoch 1) ignored"
    ) in report
    assert "run s2/train-gan: 1 NaN or infinite value (epoch_seconds at epoch 2) ignored" in report
    json.loads((tmp_path / "cmp" / "comparison.json").read_text(), parse_constant=pytest.fail)


def test_run_names_and_values_cannot_forge_report_lines_or_reach_the_terminal_raw(store, tmp_path, capsys):
    forged = "x\n\n## Against the baseline\n\n- forged: lower (better); the CI of the difference excludes 0"
    tag = "\x1b[2J\x1b[31mAMD EPYC"
    for seed in (1, 2):
        add_run(store, seed, [20 + seed], cpu="Intel Xeon")
        add_run(
            store,
            seed,
            [30 + seed],
            cpu=tag,
            **{"train_gan.label_smoothing": "<b>0.1</b>|`x`\x1b[31m$\\oops$"},
        )
    add_run(store, 3, [10], status="RUNNING", name=forged)
    add_run(store, 4, [10], status="RUNNING", name="# " + "long " * 100)
    compare_cli(tmp_path, "--no-track")
    captured = capsys.readouterr()
    report = (tmp_path / "cmp" / "report.md").read_text()
    for text in (captured.out, captured.err, report):
        assert "\x1b" not in text and "<b>" not in text
        assert text.count("\n## Against the baseline\n") == (0 if text is captured.err else 1)
        assert "\n- forged" not in text
        assert max(map(len, text.splitlines())) < 700  # a long name is cut
    assert "- label_smoothing=&lt;b&gt;0.1&lt;/b&gt;\\|\\`x\\`\\\\x1b[31m$\\\\oops$: best FCD" in report
    assert (tmp_path / "cmp" / "fcd_curves.png").is_file()  # matplotlib drew `$\oops$`, not a formula
    rows = [line for line in report.splitlines() if line.startswith("| label_smoothing")]
    assert [len(re.findall(r"(?<!\\)\|", row)) for row in rows] == [10, 10]  # no cell more
    assert "(x  ## Against the baseline  - forged: lower (better)" in report
    assert "with cpu=\\\\x1b[2J\\\\x1b[31mAMD EPYC" in report
    assert "(x  ## Against the baseline  - forged" in captured.err
    cut = "(# " + "long " * 19 + "...): running, skipped"  # 100 characters of the name
    assert cut in captured.err and cut in report


def test_runs_named_among_thousands_of_newer_runs_are_found(store, tmp_path):
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    client, experiment = store
    for seed in (1, 2):
        add_run(store, seed, [20 + seed])
    # a later sweep of 5,000 runs, written straight into MLflow's tables (create_run takes ~45 s)
    tables = SqlAlchemyStore(client.tracking_uri, str(tmp_path / "artifacts"))
    later = int(time.time() * 1000) + 60_000
    with tables.ManagedSessionMaker(read_only=False) as session:
        for i in range(5000):
            run_id = uuid.uuid4().hex
            session.add(
                SqlRun(
                    run_uuid=run_id,
                    name=f"sweep-{i}/train-gan",
                    experiment_id=int(experiment),
                    status="FINISHED",
                    start_time=later + i,
                    end_time=later + i,
                    lifecycle_stage="active",
                    artifact_uri=str(tmp_path / "artifacts" / run_id),
                    user_id="sweeper",
                    source_type="LOCAL",
                    source_name="stages/train_gan.py",
                    entry_point_name="",
                    source_version="",
                )
            )
            session.add(SqlTag(run_uuid=run_id, key="stage", value="train-gan"))
    assert len(client.search_runs([experiment], max_results=50_000)) == 5002
    # one search of 5,000 runs, newest first, ended before the two named ones
    result = compare_cli(tmp_path, "--no-track", "--runs", "s1/train-gan", "s2/train-gan")
    assert result["groups"][0]["seeds"] == ["1", "2"]


def test_a_tag_value_with_a_quote_selects_its_runs(store, tmp_path):
    for seed, user in ((1, "o'brien"), (2, "o'brien"), (3, "alice"), (4, 'say "o\'k"'), (5, 'say "o\'k"')):
        add_run(store, seed, [20 + seed], tags={"mlflow.user": user})
    kept = compare_cli(tmp_path, "--no-track", "--tag", "mlflow.user=o'brien")  # was a filter-syntax error
    assert kept["groups"][0]["seeds"] == ["1", "2"]
    both = compare_cli(tmp_path, "--no-track", "--tag", 'mlflow.user=say "o\'k"')  # no quote mark fits
    assert both["groups"][0]["seeds"] == ["4", "5"]


def test_a_threshold_that_is_no_finite_number_is_a_usage_error(store, tmp_path, capsys):
    for seed in (1, 2):
        add_run(store, seed, [20 + seed])
    with pytest.raises(SystemExit) as exit_info:
        compare_cli(tmp_path, "--no-track", "--fcd-threshold", "nan")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: cifar-dcgan-compare" in err
    assert "argument --fcd-threshold: 'nan': give a finite number" in err
    assert not (tmp_path / "cmp").exists()


def test_runs_of_different_training_code_are_not_pooled_unless_asked(store, tmp_path, capsys):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best], tags={"code_digest": "a" * 64})
        add_run(
            store, seed, [best + 10], tags={"code_digest": "a" * 64}, **{"train_gan.label_smoothing": "0.1"}
        )
    add_run(store, 4, [40], tags={"code_digest": "b" * 64}, name="newer/train-gan")
    with pytest.raises(SystemExit) as exit_info:
        compare_cli(tmp_path, "--no-track")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "runs of one configuration ran 2 versions of the training code" in err
    assert "newer/train-gan: bbbbbbbbbbbb" in err and "--pool-code" in err and "Traceback" not in err
    result = compare_cli(tmp_path, "--no-track", "--pool-code")
    assert result["groups"][0]["seeds"] == ["1", "2", "3", "4"]
    assert result["evidence"]["code_digests"] == ["a" * 64, "b" * 64]
    assert any("2 versions of the training code" in note for note in result["notes"])


def test_a_moving_average_that_never_reached_its_decay_is_named(store, tmp_path, capsys):
    ema = {"train_gan.g_ema": "0.999", "train_gan.epochs": "4", "train_gan.snapshot_every": "1"}
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best + 3, best + 2, best + 1, best], **{**ema, "train_gan.g_ema": "0.0"})
        # a run of this version: 156 updates fill 1 - 0.999^156 = 14% of the average's weights
        add_run(store, seed, [best + 3, best + 2, best + 1, best], tags={"g_ema_coverage": "0.1445"},
                iterations_per_epoch=39, name=f"ema-{seed}", **ema)  # fmt: skip
    # one tracked before the bias correction: its decay warmed up to 0.945 by update 156
    add_run(store, 4, [30, 28, 26, 24], iterations_per_epoch=39, name="old-ema", **ema)
    compare_cli(tmp_path, "--no-track")
    out = capsys.readouterr().out
    assert (
        "G's moving average could not show its decay in 3 run(s) (g_ema 0.999 averages over about 1,000 "
        "updates; its 156 fill 14% of that): ema-1, ema-2, ema-3"
    ) in out
    assert "(1 + t) / (10 + t)) in this older run: 0.945 at its last update (156)" in out
    assert "old-ema" in out


def test_a_diverged_run_is_listed_apart_and_cannot_move_the_medians(store, tmp_path, capsys):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best + 5, best])
    for seed, last in enumerate([30, 2114, 34], start=1):  # seed 2 blew up in its last epoch
        add_run(store, seed, [31, last], name=f"fp-{seed}", **{"train_gan.label_smoothing": "0.1"})
    result = compare_cli(tmp_path, "--no-track")
    arm = result["groups"][1]
    assert arm["diverged"] == ["fp-2"] and arm["robust"]["last_fcd"]["median"] == pytest.approx(34)
    assert arm["last_fcd"]["mean"] > 700  # the mean it replaces in the table
    out = capsys.readouterr().out
    assert "| 34.0 [32.0, 1074.0] |" in out  # median [quartiles] of 30, 34, 2114
    assert "1 run(s) diverged (last FCD over 3x its best; the best snapshot still counts): fp-2" in out


def test_collapse_is_called_against_real_images_of_the_same_count(store, tmp_path, capsys):
    for seed, (entropy, real) in enumerate([(2.9, 3.3), (1.6, 3.3), (0.9, None)], start=1):
        run_id = add_run(store, seed, [30, 25], entropy=entropy, name=f"r{seed}")
        if real is not None:
            MlflowClient().log_metric(run_id, "class_entropy_real_images", real, step=0)
    result = compare_cli(tmp_path, "--no-track")
    (group,) = result["groups"]
    # 2.9 bits is within a bit of real images' 3.3: no collapse; 1.6 is not; no real entropy: no call
    assert group["collapsed"] == ["r2"] and group["uncalibrated"] == 1
    out = capsys.readouterr().out
    assert "1 run(s) collapsed (last class entropy 1 bit or more below real images'): r2" in out
    assert "1 run(s) lack the class entropy of real images" in out


def test_a_comparison_json_is_judged_again_without_the_store(store, tmp_path, capsys):
    arms = {"0.0": [20, 22, 24], "0.1": [30, 32, 34], "0.3": [18, 22, 26]}
    for smoothing, bests in arms.items():
        for seed, best in enumerate(bests, start=1):
            add_run(store, seed, [best + 15, best], **{"train_gan.label_smoothing": smoothing})
    first = compare_cli(tmp_path, "--no-track", "--min-effect", "20%")
    again = tmp_path / "again"
    main(
        ["--from-json", str(tmp_path / "cmp" / "comparison.json"), "--min-effect", "20%", "--out", str(again)]
    )
    second = json.loads((again / "comparison.json").read_text())
    for a, b in zip(first["groups"][1:], second["groups"][1:], strict=True):
        assert a["verdict"] == b["verdict"] and a["judged"]["rules_out"] == b["judged"]["rules_out"]
        assert a["judged"]["p_holm"] == pytest.approx(b["judged"]["p_holm"])
    assert second["plan"] == pytest.approx(first["plan"])
    with pytest.raises(SystemExit):
        main(["--from-json", str(tmp_path / "mlflow.db"), "--out", str(again)])
    assert "not a comparison.json of cifar-dcgan-compare" in capsys.readouterr().err


def test_a_rerun_of_a_seed_left_out_by_runs_is_still_named(store, tmp_path, capsys):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best], name=f"base-{seed}")
    add_run(store, 1, [30], name="rerun-1")  # the same params and seed, newer
    compare_cli(tmp_path, "--no-track", "--runs", "base-1", "base-2", "base-3")
    out = capsys.readouterr().out
    assert "run rerun-1 has the params and seed of base-1 but is not among --runs" in out


def test_timings_under_different_loads_are_flagged(store, tmp_path, capsys):
    for seed, best in enumerate([20, 22, 24], start=1):
        add_run(store, seed, [best], overrides={"load_per_core": {1: 1.0}})
        add_run(
            store, seed, [best], overrides={"load_per_core": {1: 2.1}}, **{"train_gan.label_smoothing": "0.1"}
        )
    compare_cli(tmp_path, "--no-track")
    assert (
        "the runs ran under different loads (1 to 2.1 runnable processes per core" in capsys.readouterr().out
    )


def test_a_verdict_and_its_words_come_from_one_procedure():
    """Holm rejects more than the Bonferroni interval shows; the interval printed is the one
    Holm's step-down tests each arm at, so a "lower" arm's interval never reaches 0, and an
    "equivalent" arm names the interval its two one-sided tests amount to."""
    base = [50.0, 51.0, 52.0, 53.0, 54.0]
    arms = {
        "a": [40.0, 41.0, 42.0, 43.0, 44.0],
        "b": [47.5, 48.5, 49.5, 50.5, 51.5],
        "c": [47.2, 48.2, 49.2, 50.2, 51.2],
    }
    for label, entry in verdicts.judge_arms(arms, base, effect=1.0).items():
        rejected = entry["p_holm"] < 0.05
        assert (entry["verdict"] != "no difference detectable") == rejected, label
        assert (entry["simultaneous"]["high"] < 0) == rejected, label
    near = verdicts.judge_arms({"y": [49.5, 50.5, 51.5, 52.5, 53.5]}, base, effect=5.0)["y"]
    assert near["verdict"] == "equivalent"
    eq = near["equivalence"]
    assert -5 < eq["low"] < eq["high"] < 5 and "their 90.0% interval" in near["rules_out"]


def test_a_plan_for_a_large_effect_against_a_small_spread_is_two_seeds():
    pooled = verdicts.pooled_sd([[40, 41, 40.5], [44, 44.5, 45]])
    assert verdicts.plan(pooled, 40.0, 1, (3, 3))["seeds_per_arm"] == 2  # no NaN from the solver
    assert verdicts.judge_arms({"q": [10.0, 10.0]}, [20.0, 20.0], 1.0)["q"]["rules_out"].startswith("no test")
