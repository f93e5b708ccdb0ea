"""Where runs are stored and how they are tagged."""

import os
import socket
import subprocess
import sys
import time

from cifar_dcgan.tracking import repo_root, run_tags, tracking_uri
from conftest import REPO


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
