"""What a sweep on a Ray cluster costs against one machine's `dvc queue`: the same 2 arms x 2
seeds of the quick profile (docs/comparing.md) on the real CIFAR-10 archive, run once
each way on this machine.

    python benchmarks/bench_sweep.py --archive cifar-10-python.tar.gz    (as root; ~30 min)

Both track into one `mlflow server` on PostgreSQL on 127.0.0.1 and both train the judge once.
- queue: `dvc exp run --queue` of the four experiments in the project, `dvc queue start -j 1`;
- cluster: a Ray head and one worker node with this machine's 2 CPUs, `cifar-dcgan-sweep
  --cpus-per-trial 2`, so that trials run one at a time, as the queue's. Each trial clones the
  pushed commit, restores the judge from a DVC remote folder, trains, pushes the experiment.
On one machine this shows the engine's overhead, never a speed-up. Everything runs in network
and PID namespaces of its own (`unshare`, hence root): Ray listens on every interface.
Prints a Markdown table per way, and one per trial of the cluster; nothing is asserted.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK = {
    "prepare.limit": 5000,
    "train_evaluator.epochs": 8,
    "train_gan.epochs": 4,
    "train_gan.snapshot_every": 1,
    "train_gan.fcd_samples": 2000,
    "select_generator.fid_samples": 0,
}
ARMS = {"classic": [], "lsq": ["train_gan.loss=least_squares"]}
SEEDS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", type=Path, required=True, help="CIFAR-10 python archive")
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(
            f"--archive {args.archive}: no such file; give the CIFAR-10 archive (cifar-10-python.tar.gz)"
        )
    sys.path.insert(0, str(REPO / "tests"))
    import ray_cluster

    if not args.inside:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            sys.exit("bench_sweep.py needs root and unshare (network and PID namespaces)")
        command = [*ray_cluster.ISOLATED, sys.executable, *sys.argv, "--inside"]
        os.execvp(command[0], command)  # a signal to this process reaches unshare, which passes it on
    from bench_step import cpu_name

    import postgres

    if postgres.available():
        sys.exit(postgres.available())
    ray_cluster.loopback_up()
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        project = _project(folder, args.archive.resolve())
        with postgres.tracking_server(folder, workers=4) as uri:
            found = {"cpu": cpu_name(), "queue": _queue(project, uri)}
            found["cluster"] = _cluster(project, folder, uri, ray_cluster)
            found["runs"] = _runs(uri)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _print(found)
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


def _project(folder: Path, archive: Path) -> Path:
    from dvc.utils.hydra import apply_overrides

    from conftest import make_project, run

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    project = make_project(folder / "project")
    overrides = [f"{key}={value}" for key, value in QUICK.items()]
    apply_overrides(project / "params.yaml", [*overrides, f"prepare.url={archive}", f"prepare.md5={md5}"])
    run(["dvc", "remote", "add", "-d", "shared", str(folder / "dvc-remote")], project)
    run(["git", "commit", "-qam", "quick profile"], project)
    subprocess.run(["git", "init", "-q", "--bare", str(folder / "remote.git")], check=True)
    run(["git", "remote", "add", "origin", str(folder / "remote.git")], project)
    run(["git", "push", "-q", "origin", "HEAD:main"], project)
    return project


def _env(project: Path, uri: str) -> dict[str, str]:
    from conftest import project_env

    return {**project_env(project), "MLFLOW_TRACKING_URI": uri}


def _queue(project: Path, uri: str) -> dict:
    """The four experiments queued in the project and run one at a time by `dvc queue`."""
    env = _env(project, uri)
    started = time.monotonic()
    for arm, overrides in ARMS.items():
        sets = [arg for override in overrides for arg in ("-S", override)]
        seeds = ",".join(map(str, SEEDS))
        command = ["dvc", "exp", "run", "--queue", "-n", f"q{arm}", *sets, "-S", f"train_gan.seed={seeds}"]
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    subprocess.run(
        ["dvc", "queue", "start", "-j", "1"], cwd=project, env=env, check=True, capture_output=True
    )
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        time.sleep(5)
        status = subprocess.run(
            ["dvc", "queue", "status"], cwd=project, env=env, capture_output=True, text=True
        ).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
    else:
        raise SystemExit(f"dvc queue did not finish within an hour:\n{status}")
    if re.search(r"\bFailed\b", status):
        raise SystemExit(f"an experiment of the queue failed (`dvc queue logs NAME`):\n{status}")
    return {"seconds": time.monotonic() - started, "status": status.strip().splitlines()}


def _cluster(project: Path, folder: Path, uri: str, ray_cluster) -> dict:
    """The same four experiments as a sweep on a head and one worker node of 2 CPUs."""
    from conftest import free_port

    cluster = ray_cluster.Cluster(folder / "cluster", free_port())
    try:
        started = time.monotonic()
        cluster.start(workers=1, cpus=2)
        up = time.monotonic() - started
        env = {**_env(project, uri), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
        arms = [arg for arm, overrides in ARMS.items() for arg in ("--arm", arm, *overrides)]
        command = [
            sys.executable,
            "-m",
            "cifar_dcgan.sweep",
            *arms,
            "--seeds",
            *map(str, SEEDS),
            "--storage",
            str(folder / "ray-storage"),
            "--ray-address",
            cluster.address,
            "--cpus-per-trial",
            "2",
            "--name",
            "bench",
        ]
        started = time.monotonic()
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
    finally:
        cluster.stop()
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    trials = {
        name: dict(zip(("setup_s", "repro_s", "push_s"), map(float, parts)))
        for name, *parts in re.findall(
            r"  (\w+-\d+): finished.*\(set-up (\d+) s, stages (\d+) s, save and push (\d+) s\)", done.stdout
        )
    }
    return {"cluster_up_s": up, "seconds": seconds, "trials": trials, "output": done.stdout.splitlines()}


def _runs(uri: str) -> list[dict]:
    """Each experiment's parent run (its wall-clock) and its train-gan run's training minutes."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    rows = []
    for run in runs:
        stage = run.data.tags.get("stage")
        rows.append(
            {
                "name": run.info.run_name,
                "stage": stage,
                "parent": run.data.tags.get("mlflow.parentRunId"),
                "id": run.info.run_id,
                "seconds": (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None,
                "train_min": run.data.metrics.get("train_minutes"),
            }
        )
    return rows


JUDGE = ("prepare", "train-discriminator-sanity", "train-evaluator")


def _print(found: dict) -> None:
    """Per way: its wall-clock, the judge's stages, the experiments' own stages, and the rest
    (process and tool start-up, clones, restores, pushes, scheduling)."""
    runs = [r for r in found["runs"] if r["seconds"] is not None]
    parents = {r["id"]: r["name"] for r in runs if r["stage"] is None}

    def way(
        run: dict,
    ) -> str:  # the queue's experiments are named q<arm>-<seed>; the sweep's judge has no parent
        return "queue" if parents.get(run["parent"], "").startswith("q") else "cluster"

    print(f"\n{found['cpu']}; 2 arms x 2 seeds of the quick profile, one at a time each way\n")
    print("| way | wall s | judge's stages s | experiments' stages s | of which train-gan s | the rest s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label in (("queue", "`dvc queue start -j 1`"), ("cluster", "Ray, one worker node")):
        stages = [r for r in runs if r["stage"] and way(r) == name]
        judge = sum(r["seconds"] for r in stages if r["stage"] in JUDGE)
        experiments = sum(r["seconds"] for r in stages if r["stage"] not in JUDGE)
        gan = sum(r["seconds"] for r in stages if r["stage"] == "train-gan")
        wall = found[name]["seconds"]
        print(
            f"| {label} | {wall:.0f} | {judge:.0f} | {experiments:.0f} | {gan:.0f} | "
            f"{wall - judge - experiments:.0f} |"
        )
    trials = found["cluster"]["trials"]
    print(f"\nThe Ray cluster came up in {found['cluster']['cluster_up_s']:.0f} s (not in its wall time)\n")
    print("| trial | set-up s | `dvc repro` s | save and push s | set-up and push, share of the trial |")
    print("|---|---:|---:|---:|---:|")
    for name, t in sorted(trials.items()):
        overhead = (t["setup_s"] + t["push_s"]) / (t["setup_s"] + t["repro_s"] + t["push_s"])
        print(f"| {name} | {t['setup_s']:.0f} | {t['repro_s']:.0f} | {t['push_s']:.0f} | {overhead:.0%} |")


if __name__ == "__main__":
    main()
