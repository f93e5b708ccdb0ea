"""train_gan.distribute: the same global batch on one device, on two mirrored devices and on
two workers gives the same losses (each run in its own process: tests/distributed_run.py)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from conftest import REPO, free_port, make_project, project_env, run, set_params, tiny_pipeline

# every random draw of the step in use (label noise and flips, smoothing, D's dropout) and
# batch norm in both networks (synchronized across replicas)
VARIANT = {
    "model": {"d_batch_norm": True, "g_batch_norm": True},
    "train_gan": {"label_smoothing": 0.1, "label_noise": 0.05, "label_flip": 0.05},
}
# float32 sums in another order: measured, the losses agree to 1e-6 (the CSV's precision)
# over these 8 iterations; without dropout, training once amplified such rounding
# differences to 2e-4, hence the margin
TOLERANCE = 1e-3


def start(out: Path, distribute: str, cpus: int | None = 2, changes=None, tf_config=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    env.pop("TF_CONFIG", None)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, str(REPO / "tests" / "distributed_run.py"), str(out), distribute]
    command += [str(cpus or 1), json.dumps(changes or {})]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=600) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def results(out: Path) -> tuple[np.ndarray, list[dict], list[np.ndarray]]:
    """(losses (iterations, 4), snapshot rows, the last snapshot generator's weights)."""
    losses = np.loadtxt(out / "reports" / "losses.csv", delimiter=",", skiprows=1)
    with open(out / "reports" / "snapshots.csv") as file:
        rows = list(csv.DictReader(file))
    weights = keras.models.load_model(out / "snapshots" / "epoch_002.keras").get_weights()
    return losses, rows, weights


def assert_same_training(a: Path, b: Path) -> None:
    (losses_a, rows_a, weights_a), (losses_b, rows_b, weights_b) = results(a), results(b)
    assert losses_a.shape == losses_b.shape == (8, 4)  # 2 epochs x 64 // 16 iterations
    assert np.abs(losses_a[0] - losses_b[0]).max() < 1e-5
    assert np.abs(losses_a - losses_b).max() < TOLERANCE
    for row_a, row_b in zip(rows_a, rows_b, strict=True):  # at most one of 16 images judged otherwise
        for key in ("acc_real", "acc_fake"):
            assert abs(float(row_a[key]) - float(row_b[key])) <= 1 / 16
    for x, y in zip(weights_a, weights_b, strict=True):
        np.testing.assert_allclose(x, y, atol=TOLERANCE)


def test_mirrored_on_two_devices_trains_like_one_device(tmp_path):
    one = finish(start(tmp_path / "one", "none"))
    two = finish(start(tmp_path / "two", "mirrored"))
    assert one == {"chief": True, "replicas": 1} and two == {"chief": True, "replicas": 2}
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_the_generator_ema_is_the_same_on_two_devices(tmp_path):
    """train_gan.g_ema: the averaged weights (what the snapshots hold) agree across replicas."""
    finish(start(tmp_path / "one", "none", changes={"g_ema": 0.9}))
    finish(start(tmp_path / "two", "mirrored", changes={"g_ema": 0.9}))
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_the_stabilizers_train_the_same_on_two_devices(tmp_path):
    """Spectral norm's vectors, DiffAugment's per-image draws and the D steps' half-batches
    are the same on two replicas as on one device."""
    changes = {
        "loss": "least_squares",
        "d_steps": 2,
        "diff_augment": ["color", "translation", "cutout"],
        "model": {"d_spectral_norm": True},
    }
    finish(start(tmp_path / "one", "none", changes=changes))
    finish(start(tmp_path / "two", "mirrored", changes=changes))
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_a_half_batch_the_replicas_cannot_share_is_refused(tmp_path):
    result = finish(start(tmp_path / "odd", "mirrored", changes={"batch_size": 18}))
    assert result["error"] == (
        "train_gan.batch_size = 18: half of it must divide evenly among the 2 replicas of "
        "train_gan.distribute = mirrored; use a multiple of 4"
    )
    assert not (tmp_path / "odd").exists()


@pytest.mark.slow
def test_two_workers_on_loopback_train_like_one_device(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = [
        start(
            tmp_path / "cluster",
            "multi_worker",
            cpus=None,
            tf_config={"cluster": cluster, "task": {"type": "worker", "index": i}},
        )
        for i in range(2)
    ]
    reference = start(tmp_path / "one", "none")
    assert [finish(w) for w in workers] == [{"chief": True, "replicas": 2}, {"chief": False, "replicas": 2}]
    finish(reference)
    assert_same_training(tmp_path / "one", tmp_path / "cluster")


@pytest.mark.slow
def test_the_stage_on_two_workers_writes_and_tracks_once(tmp_path, archive):
    """`stages/train_gan.py` started on both workers of a cluster: the chief writes the
    outputs and the one MLflow run; the other worker only computes its share."""
    from mlflow import MlflowClient

    root = make_project(tmp_path / "project")
    tiny_pipeline(root, *archive)
    run(["dvc", "repro", "train-evaluator"], root)
    set_params(root, train_gan={"distribute": "multi_worker"})
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    command = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train-gan"]["cmd"].split()
    workers = [
        subprocess.Popen(
            command,
            cwd=root,
            env={
                **project_env(root),
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "training on 2 replicas (multi_worker)" in outputs[0]
    assert sorted(p.name for p in (root / "models" / "snapshots").iterdir()) == [
        "epoch_001.keras",
        "epoch_002.keras",
    ]
    assert len((root / "reports" / "train_gan" / "losses.csv").read_text().splitlines()) == 1 + 8
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    (train,) = client.search_runs([experiment.experiment_id], "tags.stage = 'train-gan'")
    assert train.info.status == "FINISHED" and train.data.params["train_gan.distribute"] == "multi_worker"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "d1")] == list(range(1, 9))
