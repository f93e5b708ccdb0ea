"""Where runs are stored and how they are tagged."""

import os
import socket
import subprocess
import sys
import time

import pytest

from cifar_dcgan.store import repo_root, tracking_uri
from cifar_dcgan.tracking import run_tags
from conftest import REPO, start_server, stop_server


def test_default_store_is_an_absolute_sqlite_file_in_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking_uri({}) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_dvc_temporary_copies_use_the_original_repo(tmp_path):
    env = {"DVC_ROOT": str(tmp_path / "repo")}
    assert repo_root(env) == (tmp_path / "repo").resolve()
    assert tracking_uri(env) == f"sqlite:///{(tmp_path / 'repo').resolve()}/mlflow.db"


def test_explicit_tracking_uri_wins():
    assert (
        tracking_uri({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "DVC_ROOT": "/x"})
        == "http://127.0.0.1:5000"
    )


def test_tags_name_stage_and_dvc_experiment():
    tags = run_tags("train-gan", {"DVC_EXP_NAME": "dizzy-duck", "DVC_EXP_BASELINE_REV": "abc123"})
    assert tags["stage"] == "train-gan"
    assert tags["dvc_exp_name"] == "dizzy-duck" and tags["dvc_exp_baseline_rev"] == "abc123"
    assert len(tags["git_commit"]) == 40  # the tests run inside the project's git checkout


def test_an_explicit_sqlite_store_keeps_artifacts_beside_it_not_in_a_temporary_copy(tmp_path, monkeypatch):
    """A queued experiment runs in a copy DVC deletes afterwards: artifacts must not go there."""
    from mlflow import MlflowClient

    from cifar_dcgan.tracking import stage_run

    store = tmp_path / "sweeps"
    store.mkdir()
    copy = tmp_path / "copy"
    copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    (copy / "grid.png").write_bytes(b"png")
    with stage_run("compare", "shared", {"x": 1}) as tracker:
        tracker.log_artifact(copy / "grid.png", "grids")
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert client.get_experiment_by_name("shared").artifact_location == (store / "mlartifacts").as_uri()
    assert list((store / "mlartifacts").rglob("grid.png")) and not list(copy.rglob("mlruns"))
    (run,) = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert run.info.run_name.endswith("/compare") and run.data.params == {"x": "1"}


def test_redacted_uris_hide_passwords():
    from cifar_dcgan.store import redact

    assert redact("http://user:secret@host:5000/x") == "http://***@host:5000/x"
    assert redact("sqlite:////a/mlflow.db") == "sqlite:////a/mlflow.db"


def test_unreachable_tracking_server_fails_fast_before_any_work(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py"), "--out", "data", "--reports", "reports"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert time.monotonic() - start < 10
    assert result.returncode == 2
    assert f"the MLflow tracking server {uri} is unreachable" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was downloaded or written


@pytest.mark.slow
def test_a_tracking_server_down_mid_training_loses_no_value(tmp_path, make_params, monkeypatch):
    """The server dies before training logs anything and comes back only after training:
    the training finishes unchanged, every value reaches the store, the run says what happened."""
    import threading

    from mlflow import MlflowClient

    from cifar_dcgan.tracker import NullTracker
    from cifar_dcgan.tracking import MlflowTracker
    from cifar_dcgan.training import train_gan
    from conftest import SMALL_MODEL, synthetic_images, tiny_training

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("t"))
    stop_server(server)

    revived = []
    threading.Thread(target=lambda: (time.sleep(30), revived.append(start_server(tmp_path, port)))).start()
    tracker = MlflowTracker(
        client, run.info.run_id, uri, spill_path=tmp_path / "spill.jsonl", retries=60, retry_delay=1.0
    )
    model = make_params("model", **SMALL_MODEL)
    params = make_params("train_gan", **tiny_training(epochs=3))
    images = (synthetic_images(64).astype("float32") - 127.5) / 127.5
    try:
        train_gan(images, model, params, tmp_path / "snap", tmp_path / "rep", tracker)
        assert not revived, "the server came back before training ended; the test proves nothing"
        tracker.flush()
        history = client.get_metric_history(run.info.run_id, "d1")
        assert sorted(m.step for m in history) == list(range(1, 13))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "acc_real")] == [1, 2, 3]
        assert "tracking error" in client.get_run(run.info.run_id).data.tags["tracking_errors"]
        assert not (tmp_path / "spill.jsonl").exists()
    finally:
        while not revived:
            time.sleep(1)
        stop_server(revived[0])
    train_gan(images, model, params, tmp_path / "snap2", tmp_path / "rep2", NullTracker())
    assert (tmp_path / "rep" / "losses.csv").read_text() == (tmp_path / "rep2" / "losses.csv").read_text()


def test_stages_starting_at_one_instant_on_a_new_store_all_succeed(tmp_path):
    """`dvc queue start -j N` on a fresh clone: N workers create mlflow.db at the same time."""
    import sqlite3

    store, ready, workers = tmp_path / "store", tmp_path / "ready", 4
    store.mkdir()
    ready.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "stage_process.py"), str(ready), str(workers), f"w{i}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * workers, "\n".join(outputs)
    with sqlite3.connect(store / "mlflow.db") as db:
        assert db.execute("pragma integrity_check").fetchall() == [("ok",)]
        assert db.execute("select name from experiments where name = 'parallel'").fetchall() == [
            ("parallel",)
        ]
        statuses = db.execute("select status from runs").fetchall()
    assert statuses == [("FINISHED",)] * workers
    from mlflow import MlflowClient  # and a later single process can use it

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("parallel")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.params["worker"] for run in runs) == [f"w{i}" for i in range(workers)]
    assert all(run.data.metrics["done"] == 1.0 for run in runs)


def test_a_run_the_store_refuses_to_set_up_ends_failed_not_running(tmp_path, monkeypatch):
    """The params are logged after the run exists: when the store refuses one, the run ends FAILED."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from cifar_dcgan.tracking import stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(MlflowException), stage_run("prepare", "refused", {"not a key?": 1}):
        pass
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("refused").experiment_id])
    assert run.info.status == "FAILED" and run.info.end_time is not None


def test_a_stage_shorter_than_one_sampling_interval_still_fills_the_system_metrics_tab(tmp_path, monkeypatch):
    """MLflow's sampler logs every 10 s: a stage that ends sooner would show an empty tab."""
    from mlflow import MlflowClient

    from cifar_dcgan.tracking import stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_run("prepare", "short", {"x": 1}, system_metrics=True):
        pass
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("short").experiment_id])
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0


def test_a_deleted_experiment_says_so_and_how_to_restore_it(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from cifar_dcgan.errors import PipelineError
    from cifar_dcgan.tracking import stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_run("prepare", "gone", {}):
        pass
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gone").experiment_id
    client.delete_experiment(experiment)
    with pytest.raises(PipelineError) as error:
        with stage_run("prepare", "gone", {}):
            pass
    message = str(error.value)
    assert f"the MLflow experiment 'gone' (id {experiment}) in {uri} was deleted" in message
    assert f"mlflow experiments restore --experiment-id {experiment}" in message
    assert "set tracking.experiment in params.yaml to another name" in message
    assert "check MLFLOW_TRACKING_URI" not in message
    assert len(client.search_runs([experiment], run_view_type=ViewType.ALL)) == 1  # no run was added
