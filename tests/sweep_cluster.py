"""The sweep on a real cluster, run by test_sweep.py inside new network and PID namespaces
(`unshare --net --pid`): every service listens on this namespace's loopback only and dies
with it. PostgreSQL behind `mlflow server`, a Ray head and two worker nodes, a bare git
remote and a folder as the DVC remote; 2 arms x 2 seeds of tiny training. One worker node
is powered off once a trial on it has reported an epoch checkpoint. Prints one JSON line of
what it found; the test asserts on it.

    unshare --net --pid --fork --mount-proc python tests/sweep_cluster.py FOLDER
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlflow import MlflowClient

import postgres
import ray_cluster
from conftest import (
    free_port,
    make_project,
    official_members,
    project_env,
    run,
    tiny_pipeline,
    write_archive,
)

ARMS = [["classic"], ["lsq", "train_gan.loss=least_squares"]]
SEEDS = [1, 2]
EPOCHS = 6


def main(folder: Path) -> dict:
    ray_cluster.loopback_up()
    archive = folder / "cifar-10-python.tar.gz"
    md5 = write_archive(archive, official_members())
    project = make_project(folder / "project")
    tiny_pipeline(project, archive, md5, epochs=EPOCHS)
    run(["git", "commit", "-qam", "tiny sweep"], project)
    remote = folder / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    run(["git", "remote", "add", "origin", str(remote)], project)
    run(["git", "push", "-q", "origin", "HEAD:main"], project)
    cluster = ray_cluster.Cluster(folder / "cluster", free_port())
    with postgres.tracking_server(folder) as uri:
        try:
            started = time.monotonic()
            cluster.start(workers=2)
            found = {"cluster_seconds": time.monotonic() - started}
            found |= sweep(project, folder, cluster, uri)
            found |= tracked(uri)
            found["remote_experiments"] = run(
                ["dvc", "exp", "list", "--name-only", str(remote)], project
            ).stdout.split()
            env = {**project_env(project), "MLFLOW_TRACKING_URI": uri}
            compared = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cifar_dcgan.compare",
                    "--no-track",
                    "--out",
                    str(folder / "compare"),
                    "--baseline",
                    "train_gan.loss=bce",
                ],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
            )
            found["compare"] = {
                "code": compared.returncode,
                "stderr": compared.stderr[-2000:],
                "report": json.loads((folder / "compare" / "comparison.json").read_text())
                if compared.returncode == 0
                else None,
            }
        finally:
            cluster.stop()
    return found


def sweep(project: Path, folder: Path, cluster: ray_cluster.Cluster, uri: str) -> dict:
    storage = folder / "ray-storage"
    env = {
        **project_env(project),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": cluster.token,
        "RAY_ADDRESS": cluster.address,
        "MLFLOW_TRACKING_URI": uri,
    }
    arms = [arg for arm in ARMS for arg in ("--arm", *arm)]
    command = [
        sys.executable,
        "-m",
        "cifar_dcgan.sweep",
        *arms,
        "--seeds",
        *map(str, SEEDS),
        "--dvc-remote",
        str(folder / "dvc-remote"),
        "--storage",
        str(storage),
        "--name",
        "tiny",
    ]
    killed = {}
    stop = threading.Event()
    killer = threading.Thread(target=power_cut_after_a_checkpoint, args=(cluster, storage, killed, stop))
    killer.start()
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        stop.set()
        killer.join()
    return {
        "sweep_code": result.returncode,
        "sweep_out": result.stdout[-6000:],
        "sweep_err": result.stderr[-6000:],
        "sweep_seconds": time.monotonic() - started,
        "killed": killed,
    }


def power_cut_after_a_checkpoint(cluster, storage: Path, killed: dict, stop: threading.Event) -> None:
    """Once a trial has reported an epoch checkpoint, power off the worker node training it."""
    while not stop.is_set():
        for result in storage.glob("*/*/result.json"):
            reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
            checkpointed = [r for r in reports if r.get("epoch", 0) >= 1 and not r.get("finished")]
            if not checkpointed or reports[-1].get("finished"):
                continue
            name = checkpointed[-1]["config"]["trial"]["name"]
            for worker in cluster.workers:
                if training_in(cluster.namespace_root(worker), name):
                    killed.update(trial=name, epoch=checkpointed[-1]["epoch"], at=time.time())
                    cluster.power_cut(worker)
                    return
        time.sleep(0.2)


def training_in(root: int, name: str) -> bool:
    """Whether train-gan of trial `name` runs in the PID namespace whose first process is `root`."""
    namespace = os.readlink(f"/proc/{root}/ns/pid")
    for process in Path("/proc").iterdir():
        try:
            if not process.name.isdigit() or os.readlink(process / "ns/pid") != namespace:
                continue
            if b"train_gan.py" in (
                process / "cmdline"
            ).read_bytes() and f"cifar-dcgan-{name}-" in os.readlink(process / "cwd"):
                return True
        except OSError:
            continue
    return False


def tracked(uri: str) -> dict:
    """Per stage, the runs on the server: status, experiment name, and per metric whether any
    step was logged twice."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_id: r.info.run_name for r in runs if "stage" not in r.data.tags}
    found = []
    for r in runs:
        if "stage" not in r.data.tags:
            continue
        row = {
            "stage": r.data.tags["stage"],
            "status": r.info.status,
            "experiment": parents.get(r.data.tags.get("mlflow.parentRunId")),
        }
        if row["stage"] == "train-gan":
            steps = {
                key: [m.step for m in client.get_metric_history(r.info.run_id, key)] for key in ("g", "fcd")
            }
            row["twice"] = {key: len(s) - len(set(s)) for key, s in steps.items()}
            row["steps"] = {key: len(s) for key, s in steps.items()}
            row["resumed"] = r.data.tags.get("resumed")
        found.append(row)
    return {"runs": found}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
