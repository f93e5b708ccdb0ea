"""A node's working copy for the sweep: a fresh clone of the git remote at the baseline
commit, the sweep's DVC remote set in it (`.dvc/config.local`), commands run with the sweep's
environment, and a check that this node runs the libraries the sweep was started with."""

import dataclasses
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

from cifar_dcgan.errors import PipelineError
from cifar_dcgan.store import redact

# a checkpoint resumes only under the same code and libraries (its fingerprint says so)
PACKAGES = ("tensorflow", "keras", "numpy", "mlflow", "dvc", "ray")
LOG_LINES = 25  # of a failed command's output, quoted in its error


@dataclasses.dataclass(frozen=True)
class Source:
    """Where every trial of a sweep starts, and what it reports to."""

    git_remote: str
    commit: str  # the baseline: every trial's clone checks it out
    dvc_remote: str
    tracking_uri: str
    sweep: str  # CIFAR_DCGAN_SWEEP: keeps this sweep's MLflow parent runs apart from another's
    environment: dict  # Python and library versions of the machine that started the sweep
    author: dict  # GIT_AUTHOR_NAME/EMAIL for the experiments' commits


def environment() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def check_environment(expected: dict[str, str]) -> None:
    """Fail, naming each difference, when this node's Python or libraries differ from those of
    the machine that started the sweep."""
    here = environment()
    differing = [
        f"{name} {here.get(name)} here, {version} there"
        for name, version in expected.items()
        if here.get(name) != version
    ]
    if differing:
        raise PipelineError(
            f"node {socket.gethostname()} runs other versions than the machine that started the sweep: "
            f"{'; '.join(differing)}. Install the same ones on every node (`make cluster` in a clone of "
            "the same commit): a training resumed elsewhere continues only under the same code and libraries"
        )


LOGIN = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)  # a node's own login to the server


CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def env(source: Source, repo: Path) -> dict[str, str]:
    """The environment of a trial's commands: the clone's own code first on the path, the
    sweep's tracking server and name, this interpreter's `dvc` and `python`."""
    values = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "DVC_")) or key.startswith(LOGIN)
    }
    values.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{values.get('PATH', '')}",
        PYTHONPATH=str(repo / "src"),
        MLFLOW_TRACKING_URI=source.tracking_uri,
        CIFAR_DCGAN_SWEEP=source.sweep,
        DVC_NO_ANALYTICS="1",
    )
    for key, value in source.author.items():
        values.setdefault(key, value)
    return values


def command(args: list[str], repo: Path, source: Source, log: Path, check: bool = True) -> int:
    """Run `args` in `repo`, its output appended to `log`; a failure raises, quoting the end of it."""
    with open(log, "a") as out:
        out.write(f"$ {shown(args)}\n")
        out.flush()
        code = subprocess.run(
            args, cwd=repo, env=env(source, repo), stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if check and code != 0:
        raise PipelineError(f"`{shown(args)}` failed (exit {code}) on {socket.gethostname()}:\n{tail(log)}")
    return code


def shown(args: list[str]) -> str:
    """A command as logs and messages show it: URLs without their credentials."""
    return " ".join(redact(arg) if "://" in arg else arg for arg in args)


def tail(log: Path) -> str:
    """The end of a trial's log, any credentials in URLs (`scheme://user:secret@`) hidden."""
    lines = log.read_text(errors="replace").splitlines()[-LOG_LINES:]
    return CREDENTIALS.sub(r"\1***@", "\n".join(lines))


def clone(source: Source, folder: Path, log: Path) -> Path:
    """A fresh clone of the baseline commit in `folder`, pulling from the sweep's DVC remote."""
    folder.mkdir(parents=True, exist_ok=True)
    repo = folder / "repo"
    command(["git", "clone", "--quiet", "--no-checkout", source.git_remote, str(repo)], folder, source, log)
    if command(["git", "checkout", "--quiet", source.commit], repo, source, log, check=False) != 0:
        raise PipelineError(
            f"commit {source.commit} is not on the git remote {redact(source.git_remote)}: push it there "
            "(`git push`), then start the sweep again"
        )
    command(
        ["dvc", "remote", "add", "--local", "--default", "--force", "sweep", source.dvc_remote],
        repo,
        source,
        log,
    )
    return repo
