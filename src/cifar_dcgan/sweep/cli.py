"""The command line, `cifar-dcgan-sweep` (also `python -m cifar_dcgan.sweep`): checks the
baseline, the arms and the shared services, then runs the sweep on the Ray cluster."""

import argparse
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import yaml

import cifar_dcgan.sweep as package
from cifar_dcgan.errors import PipelineError, run_stage
from cifar_dcgan.store import check_store, redact
from cifar_dcgan.sweep import engine
from cifar_dcgan.sweep.plan import trials
from cifar_dcgan.sweep.workspace import Source, environment

SERVER_SCHEMES = ("http", "https")  # every node must reach one store: a server, not a file


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run_stage(lambda: _sweep(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-dcgan-sweep",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arm",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "KEY=VALUE"),
        help="an arm: its name, then the params it changes (as `dvc exp run -S`); repeat per arm",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, required=True, metavar="N", help="train_gan.seed of each run"
    )
    parser.add_argument("--git-remote", help="where trials clone from and push to (default: origin's URL)")
    parser.add_argument(
        "--dvc-remote", help="URL of the DVC remote every node shares (default: the default remote's)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="the MLflow server every node logs to (default: MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS", "auto"),
        help="the Ray head, host:port (default: RAY_ADDRESS, else a cluster started on this machine)",
    )
    parser.add_argument(
        "--storage",
        type=Path,
        required=True,
        help="Ray's storage for trial checkpoints: a folder every node reaches at the same path (NFS)",
    )
    parser.add_argument("--name", help="the sweep's name (default: sweep-<commit>-<time>)")
    parser.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="Ray CPUs each trial holds (default 1)"
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=3,
        help="reruns of a trial whose node or process died (default 3; a failed training is not rerun)",
    )
    return parser


def _sweep(args: argparse.Namespace) -> None:
    commit = _baseline()
    git_remote = args.git_remote or _git("remote", "get-url", "origin", what="a git remote named origin")
    _check_pushed(commit, git_remote)
    dvc_remote = args.dvc_remote or _default_dvc_remote()
    uri = _server(args.tracking_uri)
    params = yaml.safe_load(_git("show", f"{commit}:params.yaml", what="params.yaml in the baseline commit"))
    planned = trials(args.arm, args.seeds, params)
    _check_names_free(planned, git_remote)
    source = Source(
        git_remote=git_remote,
        commit=commit,
        dvc_remote=dvc_remote,
        tracking_uri=uri,
        sweep=args.name or f"sweep-{commit[:8]}-{time.strftime('%Y%m%d-%H%M%S')}",
        environment=environment(),
        author=_author(),
    )
    print(
        f"sweep {source.sweep}: {len(planned)} trials of commit {commit[:12]}, tracked on {redact(uri)}",
        flush=True,
    )
    outcomes = engine.run(
        planned, source, args.ray_address, args.storage.resolve(), args.cpus_per_trial, args.max_failures
    )
    for outcome in outcomes:
        state = "finished" if outcome["finished"] else f"FAILED: {outcome['error']}"
        resumed = (
            f", resumed from epoch {outcome['resumed_from_epoch']}" if outcome["resumed_from_epoch"] else ""
        )
        print(f"  {outcome['name']}: {state}{resumed}{_took(outcome['seconds'])}")
    failed = [outcome["name"] for outcome in outcomes if not outcome["finished"]]
    names = " ".join(outcome["name"] for outcome in outcomes)
    print(
        f"compare them: MLFLOW_TRACKING_URI={redact(uri)} cifar-dcgan-compare --runs {names}\n"
        f"fetch them: dvc exp pull {redact(git_remote)} <name>, or dvc exp list {redact(git_remote)}"
    )
    if failed:
        raise PipelineError(f"{len(failed)} of {len(outcomes)} trials failed: {', '.join(failed)}; see above")


def _took(seconds: dict) -> str:
    """Where a finished trial's time went: the clone and restores, the stages, the push."""
    if len(seconds) < 3:
        return ""
    return (
        f" (set-up {seconds['setup_s']:.0f} s, stages {seconds['repro_s']:.0f} s,"
        f" save and push {seconds['push_s']:.0f} s)"
    )


def _git(*args: str, what: str) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"cannot read {what} (`git {' '.join(args)}`: {result.stderr.strip()[:300]})")
    return result.stdout.strip() if args[0] != "show" else result.stdout


def _baseline() -> str:
    commit = _git("rev-parse", "HEAD", what="this repository's commit (run the sweep inside the project)")
    changed = _git("diff", "--name-only", "HEAD", what="the uncommitted changes").splitlines()
    if changed:
        raise PipelineError(
            f"uncommitted changes ({', '.join(changed[:5])}): every trial starts from a "
            "commit on the git remote, so commit and push them first"
        )
    return commit


def _check_pushed(commit: str, remote: str) -> None:
    tips = [
        line.split()[0]
        for line in _git("ls-remote", remote, what=f"the git remote {redact(remote)}").splitlines()
    ]
    for tip in tips:
        if (
            subprocess.run(
                ["git", "merge-base", "--is-ancestor", commit, tip], capture_output=True
            ).returncode
            == 0
        ):
            return
    raise PipelineError(
        f"commit {commit[:12]} is not on the git remote {redact(remote)} (or not fetched here): push it "
        "(`git push`), then start the sweep again: every trial clones it from there"
    )


def _default_dvc_remote() -> str:
    """The URL of this project's default DVC remote (`dvc remote add -d`)."""
    name = subprocess.run(["dvc", "remote", "default"], capture_output=True, text=True).stdout.strip()
    if name:
        url = subprocess.run(["dvc", "config", f"remote.{name}.url"], capture_output=True, text=True)
        if url.returncode == 0 and url.stdout.strip():
            return url.stdout.strip()
    raise PipelineError(
        "no DVC remote: name one every node reaches with --dvc-remote, or `dvc remote add -d`"
    )


def _server(uri: str | None) -> str:
    if not uri or urllib.parse.urlparse(uri).scheme not in SERVER_SCHEMES:
        raise PipelineError(
            f"the sweep needs an MLflow server every node reaches (--tracking-uri or MLFLOW_TRACKING_URI "
            f"http://host:port), not {redact(uri) if uri else 'nothing'}: a file store is one machine's; "
            "see docs/tracking.md for a team server on PostgreSQL"
        )
    check_store(uri)
    return uri


def _check_names_free(planned, remote: str) -> None:
    result = subprocess.run(["dvc", "exp", "list", "--name-only", remote], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(
            f"cannot list the experiments on the git remote {redact(remote)} (`dvc exp list`): "
            f"{result.stderr.strip()[-300:]}"
        )
    taken = {name for name in result.stdout.split()} & {trial.name for trial in planned}
    if taken:
        raise PipelineError(
            f"the git remote already holds experiments {', '.join(sorted(taken))}: name the arms otherwise "
            "(each trial is the DVC experiment <arm>-<seed>)"
        )


def _author() -> dict[str, str]:
    author = {}
    for key, field in (("NAME", "user.name"), ("EMAIL", "user.email")):
        value = subprocess.run(["git", "config", field], capture_output=True, text=True).stdout.strip()
        if value:
            author[f"GIT_AUTHOR_{key}"] = author[f"GIT_COMMITTER_{key}"] = value
    return author


if __name__ == "__main__":
    sys.exit(main())
