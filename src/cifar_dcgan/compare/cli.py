"""The command line, `cifar-dcgan-compare` (also `python -m cifar_dcgan.compare`): reads the
runs, compares them, writes and logs the report."""

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cifar_dcgan.compare as package
from cifar_dcgan.compare.report import add_verdicts, compare, from_runs, markdown
from cifar_dcgan.compare.runs import load_runs
from cifar_dcgan.compare.text import plain
from cifar_dcgan.compare.verdicts import valid_effect
from cifar_dcgan.config import TrackingParams, flatten, load_params
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.train_gan import TrainGanParams
from cifar_dcgan.errors import PipelineError, run_stage
from cifar_dcgan.store import check_store, open_store, redact, tracking_uri
from cifar_dcgan.tracking import stage_run

OUTPUTS = ("report.md", "comparison.json", "fcd_curves.png", "grids.png")


def main(argv: list[str] | None = None) -> None:
    """`cifar-dcgan-compare`, on `argv` instead of the command line's arguments when given. As in
    every stage (`run_stage`): a PipelineError exits 2 with one `error: ...` line, Ctrl-C 130,
    SIGTERM 143 and SIGHUP 129, without a traceback."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run_stage(lambda: _compare(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-dcgan-compare",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment in params)")
    parser.add_argument("--runs", nargs="+", default=(), metavar="NAME", help="DVC experiment or run names")
    parser.add_argument("--tag", metavar="KEY=VALUE", help="only runs with this tag")
    parser.add_argument(
        "--baseline", nargs="+", default=(), metavar="KEY=VALUE", help="the baseline group (default: params)"
    )
    parser.add_argument("--fcd-threshold", type=_finite, help="default: the worst group's mean best FCD")
    parser.add_argument(
        "--within-minutes",
        type=_finite,
        metavar="M",
        help="equal wall-clock: each run counts only the snapshots of its first M minutes of training",
    )
    parser.add_argument(
        "--min-effect",
        type=_effect,
        metavar="FCD|N%",
        help="the smallest difference in best FCD worth telling, absolute (5) or a share of the baseline's "
        "mean (10%%, the default): what each interval rules out, equivalence, the plan of a sweep",
    )
    parser.add_argument(
        "--pool-code",
        action="store_true",
        help="pool runs of one configuration even when they ran different versions of the training code",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="judge a comparison.json written earlier again (its per-run numbers), without the store",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/compare"))
    parser.add_argument("--no-track", action="store_true", help="do not log the report to MLflow")
    return parser


def _compare(args: argparse.Namespace) -> None:
    if args.from_json is not None:
        return _again(args.from_json, args.min_effect, args.out)
    if args.tag is not None:
        _pairs([args.tag], "--tag")
    if args.within_minutes is not None and not args.within_minutes > 0:
        raise PipelineError(f"--within-minutes {args.within_minutes:g}: give a positive number of minutes")
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
            + (f" named {', '.join(map(plain, args.runs))}" if args.runs else "")
            + (
                f" with tag {plain(args.tag)} (a run's tags are on its page in the MLflow UI)"
                if args.tag
                else ""
            )
            + "; queue a sweep (docs/comparing.md)"
        )
    defaults = {k: str(v) for k, v in flatten({k: params[k] for k in ("model", "train_gan")}).items()}
    within = args.within_minutes * 60 if args.within_minutes is not None else None
    baseline = _pairs(args.baseline, "--baseline") or defaults
    result = compare(runs, baseline, args.fcd_threshold, within, args.min_effect, args.pool_code)

    # matplotlib takes most of a second to import: --help and a refusal do without it
    from cifar_dcgan.compare.plots import plot_curves, plot_grids

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
            for name in OUTPUTS:
                tracker.log_artifact(args.out / name, "compare")
    print(f"written to {args.out}/ ({', '.join(OUTPUTS)})")


def _again(path: Path, effect: str | None, out: Path) -> None:
    """report.md and comparison.json of an earlier comparison.json, judged again: a report
    stays in step with the statistics, and a README table with its report."""
    try:
        result = json.loads(path.read_text())
        result = add_verdicts(from_runs(result), effect)
        report = markdown(result, [])
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise PipelineError(
            f"--from-json {path}: not a comparison.json of cifar-dcgan-compare ({plain(error)})"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report)
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    print(report)
    print(f"written to {out}/ (report.md, comparison.json)")


def _effect(text: str) -> str:
    """--min-effect: a positive FCD or a positive percentage."""
    if not valid_effect(text):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive FCD (5) or a percentage (10%)")
    return text


def _finite(text: str) -> float:
    """A number argument: NaN and infinity would compare false with everything, silently."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
    return value


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(
                f"{flag} {plain(item)}: expected KEY=VALUE, e.g. train_gan.label_smoothing=0.1"
            )
        pairs[key] = value
    return pairs
