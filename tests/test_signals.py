"""A stage stopped from outside (`dvc queue kill`, a CI timeout: SIGTERM) ends its MLflow run
KILLED and leaves no half-written output, whatever phase it was in."""

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import REPO, TINY_EVALUATOR, project_env, set_params

pytestmark = pytest.mark.slow


def stage(root: Path, script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "stages" / script), *args],
        cwd=root,
        env={**project_env(root), "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def runs(root: Path, stage_name: str) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    return (
        client.search_runs([experiment.experiment_id], f"tags.stage = '{stage_name}'") if experiment else []
    )


def wait_for_running(root: Path, stage_name: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        if (root / "mlflow.db").exists() and any(r.info.status == "RUNNING" for r in runs(root, stage_name)):
            return
        time.sleep(0.5)
    raise AssertionError(f"no RUNNING {stage_name} run within {timeout} s")


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def test_prepare_terminated_mid_download_ends_killed_and_keeps_no_partial_file(root):
    """The server sends the first bytes of a large archive, then stalls; SIGTERM arrives."""
    sent = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(170_000_000))
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\0" * 65536)
            self.wfile.flush()
            sent.set()
            time.sleep(60)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
        set_params(root, prepare={"url": url, "md5": "0" * 32, "retries": 0})
        process = stage(root, "prepare.py", "--out", "data/prepared", "--reports", "reports/prepare")
        assert sent.wait(240), "the stage never asked for the archive"
        time.sleep(1.0)  # inside the download loop
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    finally:
        server.shutdown()
        server.server_close()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "interrupted: stopped by SIGTERM" in output
    (run,) = runs(root, "prepare")
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert not (root / "data" / "prepared").exists()
    assert not [p for p in (root / "data").rglob("*") if p.is_file()], "a partial download was kept"


def test_train_evaluator_terminated_mid_training_ends_killed_and_writes_no_model(root, archive):
    path, md5 = archive
    set_params(
        root,
        prepare={"url": str(path), "md5": md5, "limit": None},
        train_evaluator={**TINY_EVALUATOR, "epochs": 500},
    )
    prepare = stage(root, "prepare.py", "--out", "data/prepared", "--reports", "reports/prepare")
    assert prepare.wait(timeout=300) == 0, prepare.stdout.read()
    process = stage(
        root,
        "train_evaluator.py",
        "--data",
        "data/prepared",
        "--out",
        "models/evaluator",
        "--reports",
        "reports/e",
    )
    for line in process.stdout:
        if line.startswith("Epoch 3/"):
            break
    wait_for_running(root, "train-evaluator", process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    (run,) = runs(root, "train-evaluator")
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert (
        not (root / "models" / "evaluator").exists()
        and not (root / "reports" / "e" / "metrics.json").exists()
    )
    assert os.path.exists(root / "data" / "prepared" / "train_images.npy")  # the earlier stage's output stays
