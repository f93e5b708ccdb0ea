"""Shared fixtures: small archives in the official CIFAR-10 layout, a loopback HTTP server,
the project's own params, and a scratch copy of the project for end-to-end runs."""

import copy
import functools
import hashlib
import http.server
import io
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from cifar_dcgan.config import load_params, parse_section
from cifar_dcgan.config.sections import SECTIONS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8 smooth colour gradients: image-like, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    start, end = rng.uniform(0, 255, (2, n, 1, 1, 3))
    vertical = ramp[None, :, None, None] * (end - start) + start  # (n, 32, 1, 3)
    images = np.broadcast_to(vertical, (n, 32, 32, 3)) * (0.75 + 0.25 * ramp[None, None, :, None])
    return images.astype(np.uint8)


def batch_dict(images: np.ndarray, labels: list[int]) -> dict:
    return {
        b"batch_label": b"batch",
        b"labels": labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072).copy(),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }


def official_members(per_batch: int = 20, seed: int = 0) -> dict[str, object]:
    """Member name -> unpickled content, in the layout of cifar-10-python.tar.gz."""
    members = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = synthetic_images(per_batch, seed + i)
        members[name] = batch_dict(images, [j % 10 for j in range(per_batch)])
    members["batches.meta"] = {b"label_names": [f"class{k}".encode() for k in range(10)]}
    return members


def write_archive(path: Path, members: dict[str, object], raw: dict[str, bytes] | None = None) -> str:
    """Write a .tar.gz of pickled members (plus raw byte members); return its md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        payloads = {name: pickle.dumps(obj, protocol=2) for name, obj in members.items()}
        payloads.update(raw or {})
        for name, data in payloads.items():
            info = tarfile.TarInfo(name if "/" in name else f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path) -> tuple[Path, str]:
    """A valid small archive: 5 x 20 training and 20 test images."""
    path = tmp_path / "src" / "cifar-10-python.tar.gz"
    return path, write_archive(path, official_members())


class _Server:
    def __init__(self, directory: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, *args):
                server.requests.append(self.path)

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/'served' on 127.0.0.1; `.requests` lists the paths asked for."""
    served = tmp_path / "served"
    served.mkdir()
    server = _Server(served)
    server.directory = served
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="session")
def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def make_params(repo_params):
    """make_params("train_gan", epochs=1) -> that section as a validated dataclass."""

    def make(section: str, **changes):
        values = copy.deepcopy(repo_params[section])
        values.update(changes)
        return parse_section(section, values, SECTIONS[section])

    return make


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC repository holding a copy of the project's pipeline and code."""
    return make_project(tmp_path / "project")


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / "images").mkdir()
    shutil.copy(REPO / "images" / "README.md", root / "images" / "README.md")
    for folder in ("stages", "src", ".dvc"):
        shutil.copytree(
            REPO / folder,
            root / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"),
        )
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    return root


def project_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(root / "src")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def set_params(root: Path, **sections) -> None:
    """set_params(root, prepare={"limit": 10}) edits the project's params.yaml."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, changes in sections.items():
        params[section].update(changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(path, *(SECTIONS[name] for name in params))  # the edit itself must be valid


SHAPE = (32, 32, 3)  # CIFAR-10's image shape, what the synthetic archives hold
SMALL_MODEL = {"d_filters": [8, 16, 16, 16], "g_seed_filters": 16, "g_filters": [16, 16, 16]}
TINY_EVALUATOR = {"filters": [8, 16], "features": 16, "epochs": 1, "batch_size": 32}


def tiny_pipeline(root: Path, archive_path: Path, md5: str, limit: int | None = 64, **train_gan) -> None:
    """Point a project at a local test archive and make every stage take seconds."""
    set_params(
        root,
        prepare={"url": str(archive_path), "md5": md5, "limit": limit},
        train_discriminator_sanity={"batch_size": 32},
        train_evaluator=TINY_EVALUATOR,
        train_gan=tiny_training(**train_gan),
        select_generator={"fid_samples": 0},
    )


def tiny_training(**changes) -> dict:
    """train_gan values for a run of seconds: 64 images, batch 16, 2 epochs."""
    return {
        "epochs": 2,
        "batch_size": 16,
        "snapshot_every": 1,
        "eval_samples": 16,
        "fcd_samples": 64,
        **changes,
    }


@pytest.fixture(scope="session")
def full_mirror(tmp_path_factory):
    """The full CIFAR-10 mirror archive built from ../shared and prepared once:
    (archive path, its md5, the prepared folder, prepare's summary)."""
    from cifar_dcgan import cifar, download

    if not (SHARED / "tools" / "cifar10-mirror").exists():
        pytest.skip("../shared is absent: no CIFAR-10 mirror to build")
    folder = tmp_path_factory.mktemp("mirror")
    archive_path = folder / "cifar-10-python.tar.gz"
    built = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "cifar10-mirror"), str(archive_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    md5 = built.stdout.split()[0]
    out = folder / "prepared"
    summary = cifar.prepare(
        download.fetch_archive(str(archive_path), md5, folder, 0), md5, out, folder / "reports", None
    )
    return archive_path, md5, out, summary


def start_server(folder, port, command=None, workers: int = 1):
    """A real `mlflow server` (or the `command` given, e.g. `ui ...`) on loopback, with
    `workers` request-handling processes; returns the process once /health answers."""
    command = command or ["server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            *command,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("mlflow server did not start")


def stop_server(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


USER_STATE = ("mlflow.db", "mlartifacts", "mlflow-unlogged.jsonl", "data", "models", "reports", "dvc.lock")


def _state(root: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the user's own state in `root`."""
    seen = {}
    for name in USER_STATE:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            stat = file.stat()
            seen[str(file.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return seen


@pytest.fixture(scope="session", autouse=True)
def users_state_is_untouched():
    """The suite never writes into the repository's own tracking store, data or models."""
    before = _state(REPO)
    yield
    after = _state(REPO)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the tests changed the repository's own state: {changed[:10]}"
