"""Faults an unlucky user meets: a relative or locked tracking store, a tracking server that
answers errors, a full disk under the checkpoint, data that changed under a checkpoint, and
TensorFlow's start-up notices. Each is reproduced as it was found: real stores, real HTTP
servers, real files, a real tmpfs where the test runs as root."""

import contextlib
import http.server
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from cifar_dcgan import checkpoint
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.tracking import stage_run
from conftest import REPO, SMALL_MODEL, synthetic_images, tiny_training

STAGE = """
from cifar_dcgan.errors import run_stage
from cifar_dcgan.tracking import stage_run

def main():
    with stage_run("prepare", "faults", {"a": 1}) as tracker:
        tracker.log_metrics({"x": 1.0}, step=0)

run_stage(main)
"""


def stage_process(cwd: Path, uri: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO / "src")}
    env.pop("DVC_ROOT", None)
    return subprocess.run(
        [sys.executable, "-c", STAGE], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_relative_sqlite_uri_tracks_into_the_repository(tmp_path):
    """`sqlite:///rel.db` as `mlflow ui` takes it: a new store there, not a ValueError."""
    result = stage_process(tmp_path, "sqlite:///rel.db")
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'rel.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics == {"x": 1.0}
    assert (tmp_path / "mlartifacts").is_dir() or not list(tmp_path.glob("**/mlruns"))


@contextlib.contextmanager
def http_server(status: int, body: bytes = b"error"):
    """A server on 127.0.0.1 that answers every request with `status`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_tracking_server_that_answers_errors_is_refused_in_seconds(tmp_path, monkeypatch):
    with http_server(500) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.monotonic()
        with pytest.raises(PipelineError, match="not healthy: /health answered HTTP 500"):
            with stage_run("prepare", "faults", {}):
                pass
        assert time.monotonic() - started < 10  # MLflow's own retries took ~250 s here


@pytest.mark.slow
def test_a_locked_sqlite_store_at_stage_start_is_one_clear_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert stage_process(tmp_path, uri).returncode == 0  # the store exists
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-write
    try:
        result = stage_process(tmp_path, uri)
    finally:
        holder.close()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "is locked by another process" in line and "mlflow.db" in line


def test_any_change_to_the_data_is_another_fingerprint(make_params):
    """Replacing most training images while keeping every 7th (what a sample of one image in
    len / 64 missed) must change what a checkpoint is valid for."""
    model, params = make_params("model", **SMALL_MODEL), make_params("train_gan")
    images = synthetic_images(500).astype(np.float32)
    changed = images.copy()
    keep = np.arange(len(images)) % 7 == 0
    changed[~keep] = np.random.default_rng(0).uniform(0, 255, changed[~keep].shape)
    one_pixel = images.copy()
    one_pixel[123, 4, 5, 1] += 1.0
    prints = {checkpoint.fingerprint(model, params, x, "judge") for x in (images, changed, one_pixel)}
    assert len(prints) == 3


@contextlib.contextmanager
def tmpfs(folder: Path, size: int):
    """A real tmpfs of `size` bytes mounted at `folder` (root only; skipped otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path):
    values = [np.zeros((512, 1024), np.float32)]  # 2 MiB, on a 1 MiB disk
    progress = checkpoint.Progress(epochs_done=1, losses=np.zeros((4, 3), np.float32))
    state = checkpoint.Checkpoint("print", "run", values, [["w", [512, 1024]]], progress)
    with tmpfs(tmp_path / "disk", 1 << 20) as disk:
        with pytest.raises(PipelineError) as raised:
            checkpoint.save(disk, state)
        assert list(disk.iterdir()) == []  # no .state.npz.tmp left behind
    message = str(raised.value)
    assert "\n" not in message and str(disk) in message and "needs about 2 MiB" in message


@pytest.mark.slow
def test_an_epoch_redone_after_a_full_disk_logs_each_step_once(tmp_path, make_params, monkeypatch):
    """The checkpoint of epoch 2 fails for space after epoch 2 was logged; the resume redoes
    epoch 2 and logs none of its steps twice."""
    from cifar_dcgan.training import train_gan

    model = make_params("model", **SMALL_MODEL)
    params = make_params("train_gan", **tiny_training(epochs=3))
    images = (synthetic_images(64).astype(np.float32) - 127.5) / 127.5
    monkeypatch.chdir(tmp_path)

    def train(name: str, folder: Path, resume=None) -> str:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / name}.db")
        out = tmp_path / f"{name}-out"
        with stage_run("train-gan", "faults", {}, resume_run_id=resume.run_id if resume else None) as tracker:
            train_gan(images, model, params, out / "snap", out / "rep", tracker, folder, resume)
            return tracker.run_id

    train("measure", tmp_path / "measure")  # the size of one checkpoint of this training
    size = (tmp_path / "measure" / checkpoint.FILE).stat().st_size
    expected = checkpoint.fingerprint(model, params, images)
    with tmpfs(tmp_path / "disk", int(size * 1.5)) as disk:  # one checkpoint fits, not two
        with pytest.raises(PipelineError, match="cannot write the checkpoint"):
            train("full", disk)
        kept = tmp_path / "kept"
        kept.mkdir()
        (kept / checkpoint.FILE).write_bytes((disk / checkpoint.FILE).read_bytes())
    resume = checkpoint.load(kept, expected, params.epochs)
    assert resume.progress.epochs_done == 1
    assert train("full", kept, resume) == resume.run_id
    client = MlflowClient(f"sqlite:///{tmp_path / 'full'}.db")
    for key in ("d1", "g", "epoch_seconds", "acc_real"):
        steps = [m.step for m in client.get_metric_history(resume.run_id, key)]
        assert steps and len(steps) == len(set(steps)), (key, steps)
    assert sorted(m.step for m in client.get_metric_history(resume.run_id, "d1")) == list(range(1, 13))
    assert client.get_run(resume.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    "stage", ["train_gan", "train_evaluator", "train_discriminator_sanity", "select_generator"]
)
def test_stages_start_without_tensorflow_start_up_notices(stage):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py"), "--help"],
        env={**env, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr, result.stderr


FAILING_STAGE = """
import sys, time
from pathlib import Path
import numpy as np
from cifar_dcgan.errors import run_stage
from cifar_dcgan.tracking import stage_run

def main():
    with stage_run("train-gan", "faults", {"a": 1}) as tracker:
        tracker.log_metrics({"x": 1.0}, step=0)
        tracker.flush(final=False)
        Path("break").touch()  # the test turns the server's answers to HTTP 500 now
        while not Path("broken").exists():
            time.sleep(0.1)
        for i in range(5):
            tracker.log_history("d1", [float(i)] * 100, 1 + 100 * i)
        tracker.log_image(np.zeros((8, 8, 3), np.uint8), "generated", 1)
        for name in ("losses.csv", "snapshots.csv", "metrics.json", "run.json"):
            Path(name).write_text("1")
            tracker.log_artifact(Path(name), "reports")
        tracker.set_tags({"done": "yes"})

run_stage(main)
"""


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `target` until `broken`, then answers HTTP 500."""

    def __init__(self, target: str):
        self.target, self.broken = target, False

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self):
                import urllib.error
                import urllib.request

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.server.broken:
                    self.send_response(500)
                    self.end_headers()
                    return
                request = urllib.request.Request(
                    self.server.target + self.path, data=body or None, method=self.command
                )
                for key in ("Content-Type", "Authorization"):
                    if self.headers.get(key):
                        request.add_header(key, self.headers[key])
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, payload, kind = (
                            answer.status,
                            answer.read(),
                            answer.headers.get("Content-Type"),
                        )
                except urllib.error.HTTPError as error:
                    status, payload, kind = error.code, error.read(), error.headers.get("Content-Type")
                self.send_response(status)
                if kind:
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward  # noqa: N815

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.slow
def test_a_tracking_server_that_fails_mid_run_holds_the_stage_end_for_a_bounded_time(tmp_path):
    """A real `mlflow server` behind a proxy that turns to HTTP 500 mid-run: the stage ends
    in a bounded time (it was still uploading after 20 minutes), keeps the metric values it
    could not send, and says so in one line."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    proxy = FaultyProxy(f"http://127.0.0.1:{port}")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        import requests

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            time.sleep(0.5)
        work = tmp_path / "work"
        work.mkdir()
        uri = f"http://127.0.0.1:{proxy.server_address[1]}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO / "src")}
        stage = subprocess.Popen(
            [sys.executable, "-c", FAILING_STAGE], cwd=work, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        while not (work / "break").exists():
            assert stage.poll() is None, stage.stdout.read()
            time.sleep(0.1)
        proxy.broken = True
        (work / "broken").touch()
        started = time.monotonic()
        output, _ = stage.communicate(timeout=600)
        took = time.monotonic() - started
    finally:
        proxy.shutdown()
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    assert stage.returncode == 0, output[-3000:]  # tracking never fails the stage
    assert took < 120, (took, output[-3000:])
    spilled = (work / "mlflow-unlogged.jsonl").read_text().splitlines()
    assert len(spilled) == 500  # every d1 value the store did not take is kept
    assert output.count("warning: tracking call failed") == 1, output
    assert "warning: the tracking store" in output and "Traceback" not in output
