"""Nothing lost: Ctrl-C during `dvc repro` checkpoints, and the rerun resumes to the same result."""

import json
import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import make_project, project_env, run, set_params, tiny_pipeline

pytestmark = pytest.mark.slow


def configure(root, archive_path, md5):
    tiny_pipeline(root, archive_path, md5, limit=None, epochs=4, snapshot_every=2)


def interrupt_during_epoch(root, epoch: int, after: str = "Epoch {epoch}/") -> subprocess.CompletedProcess:
    """Run `dvc repro` and press Ctrl-C (SIGINT to its process group) during `epoch` (0.3 s
    after the line that starts with `after`)."""
    env = {**project_env(root), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith(after.format(epoch=epoch)):
            time.sleep(0.3)
            os.killpg(process.pid, signal.SIGINT)
            break
    output.append(process.stdout.read())
    return subprocess.CompletedProcess(process.args, process.wait(timeout=300), "".join(output), "")


def train_runs(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'train-gan'")
    return client, runs


def test_interrupted_training_resumes_to_the_same_result(tmp_path, archive):
    path, md5 = archive
    interrupted, straight = make_project(tmp_path / "interrupted"), make_project(tmp_path / "straight")
    for root in (interrupted, straight):
        configure(root, path, md5)

    stopped = interrupt_during_epoch(interrupted, epoch=3)
    assert stopped.returncode != 0, stopped.stdout[-3000:]
    assert "checkpoint saved in models/checkpoint" in stopped.stdout
    client, (killed,) = train_runs(interrupted)
    assert killed.info.status == "KILLED"
    assert (interrupted / "models" / "checkpoint" / "state.npz").is_file()

    resumed = run(["dvc", "repro"], interrupted)
    assert "resuming at iteration" in resumed.stdout
    run(["dvc", "repro"], straight)

    # the same MLflow run, finished, with every iteration logged exactly once
    client, (finished,) = train_runs(interrupted)
    assert finished.info.run_id == killed.info.run_id and finished.info.status == "FINISHED"
    assert finished.data.tags["resumed"] == "true"
    other_client, (reference,) = train_runs(straight)
    for key in ("d1", "d2", "g"):
        got = client.get_metric_history(finished.info.run_id, key)
        want = other_client.get_metric_history(reference.info.run_id, key)
        assert sorted(m.step for m in got) == list(range(1, 4 * 6 + 1))  # 4 epochs x 100 // 16
        assert [m.value for m in sorted(got, key=lambda m: m.step)] == [
            m.value for m in sorted(want, key=lambda m: m.step)
        ]
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "acc_real")] == [2, 4]

    # identical files: losses, snapshot metrics, and the generators' weights
    for name in ("losses.csv", "snapshots.csv"):
        assert (interrupted / "reports" / "train_gan" / name).read_text() == (
            straight / "reports" / "train_gan" / name
        ).read_text()
    for epoch in ("epoch_002.keras", "epoch_004.keras"):
        a, b = (
            keras.models.load_model(root / "models" / "snapshots" / epoch) for root in (interrupted, straight)
        )
        assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_changed_params_never_resume_an_old_checkpoint(tmp_path, archive):
    path, md5 = archive
    root = make_project(tmp_path / "p")
    configure(root, path, md5)
    stopped = interrupt_during_epoch(root, epoch=2)
    assert stopped.returncode != 0
    set_params(root, train_gan={"label_smoothing": 0.1})
    result = run(["dvc", "repro"], root)
    assert "not used: it was made with other params, data, evaluator or training code" in result.stdout
    assert (root / "models" / "checkpoint" / "state.npz.rejected").is_file()  # set aside, not lost
    assert "resuming" not in result.stdout
    _, runs = train_runs(root)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]


def test_more_epochs_continue_the_finished_run(tmp_path, archive):
    root = make_project(tmp_path / "p")
    tiny_pipeline(root, *archive)  # 2 epochs of 4 iterations
    run(["dvc", "repro"], root)
    set_params(root, train_gan={"epochs": 3})
    result = run(["dvc", "repro"], root)
    assert "resuming at iteration 8 (epoch 3)" in result.stdout
    client, (train,) = train_runs(root)
    assert train.info.status == "FINISHED" and train.data.tags["resumed"] == "true"
    assert train.data.params["train_gan.epochs"] == "2"  # MLflow params never change; the tag says it
    assert train.data.tags["changed_params"] == "train_gan.epochs: 2 -> 3"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "d1")] == list(range(1, 13))
    assert [m.step for m in client.get_metric_history(train.info.run_id, "fcd")] == [1, 2, 3]
    # run again with nothing changed but the stage script (training code would change the
    # checkpoint's fingerprint): a finished training starts over, in a new run
    script = root / "stages" / "train_gan.py"
    script.write_text(script.read_text() + "\n# a change of the stage script\n")
    result = run(["dvc", "repro"], root)
    assert "finished training of 3 epochs" in result.stdout and "resuming" not in result.stdout
    _, runs = train_runs(root)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert (root / "reports" / "train_gan" / "metrics.json").is_file()


def test_ctrl_c_after_the_last_epoch_keeps_the_training_and_the_rerun_only_reports(tmp_path, archive):
    """Ctrl-C while the finished training writes its reports (plots, uploads): the training is
    done once its last checkpoint is saved; the rerun writes the reports and trains nothing."""
    root = make_project(tmp_path / "p")
    tiny_pipeline(root, *archive)  # 2 epochs of 4 iterations
    stopped = interrupt_during_epoch(root, epoch=2, after="snapshot epoch {epoch}:")
    rerun = run(["dvc", "repro"], root)
    assert "training from scratch" not in rerun.stdout and "Epoch 1/" not in rerun.stdout, rerun.stdout
    client, (train,) = train_runs(root)  # one training run, not a second one
    assert train.info.status == "FINISHED", stopped.stdout[-3000:]
    for key in ("d1", "fcd", "fcd_real_images"):
        steps = [m.step for m in client.get_metric_history(train.info.run_id, key)]
        assert steps == sorted(set(steps)), f"{key} logged twice: {steps}"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "d1")] == list(range(1, 9))
    assert (root / "reports" / "train_gan" / "metrics.json").is_file()
    assert (root / "models" / "generator.keras").is_file()

    # restyling a comparison plot or rewording a registry message reruns no training
    for name in ("compare/plots.py", "registry.py"):
        with open(root / "src" / "cifar_dcgan" / name, "a") as file:
            file.write("\n# an edit of a plot or a message\n")
    status = run(["dvc", "status", "--json"], root).stdout
    changed = set(json.loads(status))
    assert changed == {"select-generator"}, status  # the registry's stage, and nothing upstream
