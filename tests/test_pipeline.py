"""End to end: the real `dvc` CLI on a real git repository, tracked in a real SQLite store."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from conftest import TINY_EVALUATOR, run, set_params, tiny_pipeline, tiny_training

pytestmark = pytest.mark.slow


def runs_by_stage(client, experiment="cifar10-dcgan"):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    by_stage = {}
    for r in runs:
        if "stage" in r.data.tags:  # not the parent run of a DVC experiment
            by_stage.setdefault(r.data.tags["stage"], []).append(r)
    return by_stage


def test_pipeline_gate_training_tracking_and_an_experiment(project, archive, http_server):
    path, md5 = archive
    shutil.copy(path, http_server.directory / path.name)
    set_params(
        project,
        prepare={"url": f"{http_server.url}/{path.name}", "md5": md5, "limit": 64},
        train_discriminator_sanity={"iterations": 1, "batch_size": 32, "min_accuracy": 1.0},
        train_evaluator=TINY_EVALUATOR,
        train_gan=tiny_training(),
    )

    # 1. an untrained discriminator cannot pass a gate of 100%: dvc repro stops before the GAN
    failed = run(["dvc", "repro"], project, check=False)
    assert failed.returncode != 0
    assert "discriminator sanity check failed" in failed.stdout + failed.stderr
    assert not (project / "models" / "snapshots").exists()
    assert (project / "data" / "prepared" / "train_images.npy").exists()

    # 2. a sane gate: prepare is not redone, the GAN trains
    set_params(project, train_discriminator_sanity={"iterations": 20})
    set_params(project, train_discriminator_sanity={"min_accuracy": 0.9})
    run(["dvc", "repro"], project)
    snapshots = sorted(p.name for p in (project / "models" / "snapshots").iterdir())
    assert snapshots == ["epoch_001.keras", "epoch_002.keras"]
    assert sorted(p.name for p in (project / "reports" / "train_gan" / "grids").iterdir()) == [
        "epoch_000.png",
        "epoch_001.png",
        "epoch_002.png",
    ]
    run(["dvc", "plots", "show", "-o", "plots_html"], project)
    page = (project / "plots_html" / "index.html").read_text()
    assert all(
        name in page
        for name in (
            "GAN losses",
            "Image quality at snapshots",
            "quality.png",
            "epoch_002.png",
            "contact_sheet.png",
        )
    )
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    (workspace,) = [value["data"] for value in metrics.values()]
    # dvc metrics: numbers only, from train-gan, train-evaluator and select-generator
    assert sorted(workspace) == [
        f"reports/{s}/metrics.json" for s in ("select_generator", "train_evaluator", "train_gan")
    ]
    for shown in workspace.values():
        assert all(isinstance(v, int | float) for v in shown["data"].values()), shown
    assert json.loads((project / "reports" / "train_gan" / "run.json").read_text())["iterations"] == 8
    assert workspace["reports/train_gan/metrics.json"]["data"]["s_per_iter"] > 0
    assert json.loads((project / "reports" / "sanity" / "metrics.json").read_text())["acc_real"] >= 0.9
    assert json.loads((project / "reports" / "prepare" / "summary.json").read_text())["train_images"] == 64
    assert 0.0 <= workspace["reports/train_evaluator/metrics.json"]["data"]["test_accuracy"] <= 1.0
    with open(project / "reports" / "train_gan" / "snapshots.csv") as file:
        scored = {int(row["epoch"]): float(row["fcd"]) for row in csv.DictReader(file)}
    best = min(scored, key=lambda epoch: (scored[epoch], -epoch))
    assert workspace["reports/train_gan/metrics.json"]["data"]["best_fcd_epoch"] == best

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    stages = runs_by_stage(client)
    assert len(stages["prepare"]) == 1
    assert [r.info.status for r in stages["train-discriminator-sanity"]] == ["FAILED", "FINISHED"]
    (train,) = stages["train-gan"]
    run_id = train.info.run_id
    assert train.data.tags["mlflow.note.content"].startswith("train_gan.loss = bce: D outputs P(real); d1")
    for key in ("d1", "d2", "g"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, 9))
    for key in ("acc_real", "acc_fake", "fcd", "kid", "class_score", "class_entropy", "diversity"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2]
    assert [m.value for m in client.get_metric_history(run_id, "fcd")] == [scored[1], scored[2]]
    assert [m.step for m in client.get_metric_history(run_id, "fcd_real_images")] == [0]
    (judge,) = stages["train-evaluator"]
    assert judge.info.status == "FINISHED" and "test_accuracy" in judge.data.metrics
    # precision: float32 (the default) stays float32; `auto` would say what it became here
    assert train.data.tags["precision_resolved"] == judge.data.tags["precision_resolved"] == "float32"
    # TensorFlow's oneDNN kernels (1.9x on an AVX2-only CPU) ran both: the stages load the package first
    assert train.data.tags["onednn"] == judge.data.tags["onednn"] == "on"
    # the machine, so that timings from different ones are not compared as one
    assert train.data.tags["cpu"] == judge.data.tags["cpu"] and train.data.tags["cpu"].endswith(" cores")
    assert train.data.tags["gpu"] == "none"
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert sum(p.endswith(".png") and "+step+0+" in p for p in images) == 1  # before training
    assert sum(p.endswith(".png") and "+step+1+" in p for p in images) == 1
    assert sum(p.endswith(".png") and "+step+2+" in p for p in images) == 1
    assert train.data.params["train_gan.label_smoothing"] == "0.0"
    assert len(train.data.tags["git_commit"]) == 40
    artifact_root = client.get_experiment_by_name("cifar10-dcgan").artifact_location
    assert artifact_root == (project / "mlartifacts").as_uri()
    selection = json.loads((project / "reports" / "select_generator" / "selection.json").read_text())
    assert selection["epoch"] == best and selection["training_run_id"] == run_id
    assert selection["rule"].startswith("criterion fcd: the lowest FCD")
    select_run = stages["select-generator"][-1]
    if selection["fid"] is None:  # offline: said in one line, in the report and on the run
        assert selection["fid_note"].startswith("true FID skipped: the InceptionV3 ImageNet weights")
        assert select_run.data.tags["fid_skipped"] == selection["fid_note"]
    else:
        assert select_run.data.metrics["fid"] == selection["fid"]
    champion = client.get_model_version_by_alias("cifar10-dcgan-generator", "champion")
    assert str(champion.version) == "1" and f"epoch {best} " in champion.description

    # 3. an experiment changing one GAN param reruns only train-gan, as a second MLflow run
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny run"], project)
    result = run(["dvc", "exp", "run", "-n", "smooth", "-S", "train_gan.label_smoothing=0.1"], project)
    assert "Running stage 'train-gan'" in result.stdout
    assert "Running stage 'prepare'" not in result.stdout
    assert "Running stage 'train-discriminator-sanity'" not in result.stdout
    assert "Running stage 'train-evaluator'" not in result.stdout
    stages = runs_by_stage(client)
    assert len(stages["prepare"]) == 1 and len(stages["train-discriminator-sanity"]) == 2
    first, second = stages["train-gan"]
    assert second.data.params["train_gan.label_smoothing"] == "0.1"
    assert second.data.tags["dvc_exp_name"] == "smooth"
    assert yaml.safe_load((project / "params.yaml").read_text())["train_gan"]["label_smoothing"] == 0.1
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "smooth" in json.dumps(shown)

    # 4. a manual cherry-pick reruns only select-generator and moves the alias
    result = run(["dvc", "exp", "run", "-n", "pick-1", "-S", "select_generator.epoch=1"], project)
    ran = [line for line in result.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'select-generator':"]
    champion = client.get_model_version_by_alias("cifar10-dcgan-generator", "champion")
    assert str(champion.version) == "3" and "epoch 1 of training run" in champion.description
    assert champion.run_id == runs_by_stage(client)["select-generator"][-1].info.run_id
    bad = run(["dvc", "exp", "run", "-S", "select_generator.epoch=5"], project, check=False)
    assert bad.returncode != 0 and "available epochs: [1, 2]" in bad.stdout + bad.stderr

    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    generator = mlflow.pyfunc.load_model("models:/cifar10-dcgan-generator@champion")
    images = generator.predict(np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32))
    assert images.shape == (3, 32, 32, 3) and -1.0 <= images.min() and images.max() <= 1.0


def test_pipeline_against_a_real_tracking_server(project, archive, tmp_path):
    """`mlflow server` (SQLite backend, proxied artifacts) on loopback; the whole pipeline
    tracked there; everything read back through the server's REST API."""
    import requests

    from conftest import free_port, project_env, start_server, stop_server

    tiny_pipeline(project, *archive)
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = start_server(server_dir, port)
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        env = {**project_env(project), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert not (project / "mlflow.db").exists()  # nothing went to the local default store

        experiment = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": "cifar10-dcgan"}
        ).json()["experiment"]
        runs = requests.post(
            f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]]}
        ).json()
        by_stage = {}
        for r in runs["runs"]:
            tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
            by_stage[tags["stage"]] = r["info"]
        assert sorted(by_stage) == [
            "prepare",
            "select-generator",
            "train-discriminator-sanity",
            "train-evaluator",
            "train-gan",
        ]
        assert {info["status"] for info in by_stage.values()} == {"FINISHED"}
        train_id = by_stage["train-gan"]["run_id"]
        history = requests.get(
            f"{api}/metrics/get-history", params={"run_id": train_id, "metric_key": "d1"}
        ).json()
        assert sorted(m["step"] for m in history["metrics"]) == list(range(1, 9))
        listed = requests.get(f"{api}/artifacts/list", params={"run_id": train_id, "path": "images"}).json()
        assert sum(f["path"].endswith(".png") for f in listed["files"]) == 3  # before training + 2 snapshots
        alias = requests.get(
            f"{api}/registered-models/alias", params={"name": "cifar10-dcgan-generator", "alias": "champion"}
        ).json()
        assert alias["model_version"]["run_id"] == by_stage["select-generator"]["run_id"]
        # artifacts went through the server's proxy into its own store, not to a local path
        assert experiment["artifact_location"].startswith("mlflow-artifacts:")
        assert list((server_dir / "mlartifacts").rglob("model.keras"))
    finally:
        stop_server(server)
