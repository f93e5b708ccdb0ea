"""`cifar-dcgan-sweep`: the plan it makes of arms x seeds, what it refuses before any machine
starts, and (slow) a whole sweep on a real Ray cluster with a worker node powered off."""

import getpass
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import postgres
import ray_cluster
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.sweep.plan import trials
from cifar_dcgan.sweep.workspace import check_environment, environment, shown, tail
from cifar_dcgan.tracking import end_orphaned_runs
from conftest import REPO, project_env, run

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_arm_runs_every_seed_under_its_own_name():
    planned = trials([["classic"], ["lsq", "train_gan.loss=least_squares"]], [1, 2], PARAMS)
    assert [t.name for t in planned] == ["classic-1", "classic-2", "lsq-1", "lsq-2"]
    assert planned[3].overrides == ("train_gan.loss=least_squares", "train_gan.seed=2")
    assert planned[0].overrides == ("train_gan.seed=1",)


@pytest.mark.parametrize(
    "arms, seeds, named",
    [
        ([["a", "train_gan.precision=auto"]], [1], "train_gan.precision = auto"),
        ([["a", "train_gan.no_such_key=1"]], [1], "no key 'train_gan.no_such_key'"),
        ([["a", "train_gan.loss"]], [1], "is not KEY=VALUE"),
        ([["a", "train_gan.seed=3"]], [1], "the seed comes from --seeds"),
        ([["a"], ["a", "train_gan.loss=hinge"]], [1], "two arms share a name"),
        ([["a-b"]], [1], "not usable in a DVC experiment name"),
        ([["a..b"]], [1], "not usable in a DVC experiment name"),
        ([["a", "train_evaluator.epochs=2"]], [1], "changes train_evaluator.epochs: the data and the judge"),
        ([["a"]], [1, 1], "distinct seeds"),
    ],
)
def test_a_sweep_that_cannot_run_as_asked_is_refused_naming_why(arms, seeds, named):
    with pytest.raises(PipelineError, match=named.replace("(", r"\(").replace("[", r"\[")):
        trials(arms, seeds, PARAMS)


def test_a_node_with_other_library_versions_is_refused_naming_them():
    theirs = {**environment(), "tensorflow": "0.0.1"}
    with pytest.raises(PipelineError, match=r"tensorflow .* here, 0\.0\.1 there"):
        check_environment(theirs)
    check_environment(environment())  # the same install passes


def test_a_failed_command_quotes_its_log_without_the_credentials_in_urls(tmp_path):
    """A trial's error (printed by the driver, kept in Ray's storage) quotes its log's end."""
    log = tmp_path / "trial.log"
    log.write_text(
        "$ git clone https://ann:ghp_secret@git.example.com/gan.git repo\n"
        "fatal: unable to access 'https://ann:ghp_secret@git.example.com/gan.git/'\n"
        "API request to http://bob:pw@tracking:5000/api/2.0/mlflow/runs/get failed\n"
    )
    quoted = tail(log)
    assert "ghp_secret" not in quoted and "ann" not in quoted and "pw@" not in quoted
    assert "https://***@git.example.com/gan.git" in quoted and "http://***@tracking:5000" in quoted
    assert shown(["git", "clone", "https://ann:ghp_secret@h/g.git"]) == "git clone https://***@h/g.git"


def test_a_rerun_ends_the_runs_its_dead_attempt_left_running_and_no_one_elses(tmp_path):
    """A machine that died mid-stage left its run RUNNING; the trial's rerun ends it as KILLED,
    but not the run its checkpoint continues, nor the same-named experiment of another sweep."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cifar10-dcgan")

    def parent(sweep: str) -> str:
        identity = {"dvc_exp_name": "base-1", "dvc_exp_baseline_rev": "abc", "sweep": sweep}
        tags = {"dvc_experiment": "true", "mlflow.user": getpass.getuser(), **identity}
        return client.create_run(experiment, run_name="base-1", tags=tags).info.run_id

    def child(parent_id: str, name: str) -> str:
        return client.create_run(
            experiment, run_name=name, tags={"mlflow.parentRunId": parent_id}
        ).info.run_id

    mine, theirs = parent("s1"), parent("s2")
    dead, continued = child(mine, "base-1/select-generator"), child(mine, "base-1/train-gan")
    other = child(theirs, "base-1/train-gan")
    env = {"MLFLOW_TRACKING_URI": uri, "DVC_EXP_NAME": "base-1", "DVC_EXP_BASELINE_REV": "abc"}
    ended = end_orphaned_runs({**env, "CIFAR_DCGAN_SWEEP": "s1"}, "cifar10-dcgan", continued, "a rerun")
    assert ended == ["base-1/select-generator"]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags["ended_by"] == "a rerun"
    assert client.get_run(continued).info.status == "RUNNING"
    assert client.get_run(other).info.status == "RUNNING"


def test_the_sweep_refuses_a_file_store_and_an_unpushed_commit_before_starting_anything(project, tmp_path):
    env = {**project_env(project), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    command = [
        sys.executable,
        "-m",
        "cifar_dcgan.sweep",
        "--arm",
        "classic",
        "--seeds",
        "1",
        "--storage",
        "s",
    ]
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    run(["git", "remote", "add", "origin", str(remote)], project)
    unpushed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert unpushed.returncode == 2 and "is not on the git remote" in unpushed.stderr
    assert "Traceback" not in unpushed.stderr
    run(["git", "push", "-q", "origin", "HEAD:main"], project)
    no_remote = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert no_remote.returncode == 2 and "no DVC remote: name one" in no_remote.stderr
    # the project's default DVC remote is the sweep's; then the store is checked
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-store")], project)
    run(["git", "commit", "-qam", "a DVC remote"], project)
    run(["git", "push", "-q", "origin", "HEAD:main"], project)
    filed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert filed.returncode == 2 and "needs an MLflow server every node reaches" in filed.stderr
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
    dirty = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert dirty.returncode == 2 and "uncommitted changes (params.yaml)" in dirty.stderr
    assert not (project / "s").exists()


def _cluster_unavailable() -> str | None:
    if postgres.available():
        return postgres.available()
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed: pip install -e '.[cluster]'"
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "the cluster test needs root and unshare (network and PID namespaces)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_cluster_unavailable() is not None, reason=str(_cluster_unavailable()))
def test_a_sweep_on_a_cluster_survives_a_node_powered_off_mid_training(tmp_path):
    """2 arms x 2 seeds on a Ray head and two worker nodes, PostgreSQL behind `mlflow server`,
    a bare git remote and a DVC remote folder, all in a private network namespace. One worker
    is powered off once a trial on it has reported an epoch checkpoint."""
    done = subprocess.run(
        [
            *ray_cluster.ISOLATED,
            sys.executable,
            str(Path(__file__).with_name("sweep_cluster.py")),
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO / "src")])},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = ["classic-1", "classic-2", "lsq-1", "lsq-2"]
    assert found["sweep_code"] == 0, found["sweep_out"] + found["sweep_err"]
    killed = found["killed"]
    assert killed.get("trial") in names, "no worker node was powered off while a trial trained on it"
    # every trial finished; the one whose node died resumed from an epoch it had reported
    for name in names:
        assert f"  {name}: finished" in found["sweep_out"]
    # and says where each one's time went
    assert found["sweep_out"].count(" s, save and push ") == len(names), found["sweep_out"]
    assert f"  {killed['trial']}: finished, resumed from epoch" in found["sweep_out"]
    resumed = int(
        found["sweep_out"].split(f"  {killed['trial']}: finished, resumed from epoch ")[1].split()[0]
    )
    assert 1 <= resumed
    # one train-gan run per experiment, FINISHED, each step logged once; one judge for all
    train_gan = [r for r in found["runs"] if r["stage"] == "train-gan"]
    assert sorted(r["experiment"] for r in train_gan) == names, train_gan
    for r in train_gan:
        assert r["status"] == "FINISHED" and r["twice"] == {"g": 0, "fcd": 0}, r
        assert r["steps"]["fcd"] == 6, r
    assert next(r for r in train_gan if r["experiment"] == killed["trial"])["resumed"] == "true"
    assert [r["stage"] for r in found["runs"]].count("train-evaluator") == 1
    assert all(r["status"] == "FINISHED" for r in found["runs"])
    # every experiment on the git remote; compare sees both arms with 2 seeds each
    assert sorted(found["remote_experiments"]) == names
    assert found["compare"]["code"] == 0, found["compare"]["stderr"]
    groups = found["compare"]["report"]["groups"]
    assert sorted(len(group["runs"]) for group in groups) == [2, 2], groups
