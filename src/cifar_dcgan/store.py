"""The tracking store: where runs go, how its address is shown, and opening it safely.

Where runs go: `MLFLOW_TRACKING_URI` when set; otherwise `sqlite:///<repo root>/mlflow.db`
with artifacts in `<repo root>/mlartifacts`, where the repo root is `DVC_ROOT` when DVC
runs the stage in a temporary copy (`dvc exp run --queue` / `--temp`), so that queued
experiments land in the same store as `dvc repro`. Addresses are shown redacted (no user
name or password); a SQLite store is created and migrated under a file lock.
"""

import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from cifar_dcgan.errors import PipelineError

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's model-training view


def redact(uri: str) -> str:
    """`uri` without a password or user name (`http://user:secret@host` -> `http://***@host`)."""
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.username and not parsed.password:
        return uri
    host = parsed.hostname or ""
    netloc = f"***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def repo_root(env: Mapping[str, str] | None = None) -> Path:
    """The repository the stage belongs to, even when DVC runs it in a temporary copy."""
    env = os.environ if env is None else env
    return Path(env.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(env: Mapping[str, str] | None = None) -> str:
    """MLFLOW_TRACKING_URI, or the repository's `mlflow.db`. A relative SQLite path
    (`sqlite:///rel.db`, as `mlflow ui` takes it) is taken relative to the repository, never
    to DVC's temporary copy of it, where the runs would be deleted with the copy."""
    env = os.environ if env is None else env
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root(env) / 'mlflow.db'}"
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not path.startswith(("/", ":memory:")):
        uri = f"sqlite:///{repo_root(env) / path}"
    return uri


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, when the tracking store cannot be reached."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        import requests

        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            raise PipelineError(
                f"the MLflow tracking server {redact(uri)} is unreachable ({type(error).__name__}); "
                "start it, correct MLFLOW_TRACKING_URI, or unset it to track into ./mlflow.db"
            ) from None
        if answer.status_code != 200 or answer.text.strip() != "OK":
            raise PipelineError(
                f"the MLflow tracking server {redact(uri)} is not healthy: /health answered HTTP "
                f"{answer.status_code}, not 200 OK; check the server's log, or unset MLFLOW_TRACKING_URI "
                "to track into ./mlflow.db"
            )
    elif parsed.scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise PipelineError(
                f"tracking store {redact(uri)}: folder {folder} does not exist; "
                "create it or fix MLFLOW_TRACKING_URI"
            )


@contextlib.contextmanager
def store_lock(uri: str, timeout: float = 600.0) -> Iterator[None]:
    """Hold `<database>.lock` while creating or migrating a SQLite store, or creating an
    experiment in it: two workers that start at once on a new store (`dvc queue start -j 2`)
    would otherwise both run MLflow's schema migrations and leave the database unusable.
    A tracking server serialises this itself; nothing to lock then."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock, Timeout

    path = f"{uri.removeprefix('sqlite:///')}.lock"
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise PipelineError(
            f"the tracking store {redact(uri)} stayed locked for {timeout:.0f} s ({path}); "
            "if no other stage is running, delete that file"
        ) from None


# MLflow retries a failing request 7 times over ~250 s (and waits 120 s for an answer): each
# call of a stage would wait that long for a dead server. Bounded here, unless set by the user.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def open_store(uri: str):
    """An `MlflowClient` on `uri` whose database exists and is migrated (done once, locked);
    on a tracking server, with MLflow's retries of a failing request bounded (`HTTP_RETRIES`)."""
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_RETRIES.items():
            os.environ.setdefault(key, value)

    try:
        with store_lock(uri):  # constructing the client creates and migrates the tables
            return MlflowClient(tracking_uri=uri)
    except Exception as error:  # SQLAlchemy's OperationalError, raised through MLflow
        if "database is locked" not in str(error):
            raise
        raise PipelineError(
            f"the tracking store {redact(uri)} is locked by another process that holds a write open "
            "(SQLite waited for it, then gave up); let that process finish or stop it, then run again"
        ) from None


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id (created if new), tagged to open in MLflow's model-training view."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # beside a SQLite store, never relative to the working folder: under `dvc exp run
        # --queue` that is a temporary copy, deleted with the artifacts in it
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException as error:
            # on a shared server no lock orders the machines: another one created it first
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":  # its name stays taken until `mlflow gc` removes it
        raise PipelineError(
            f"the MLflow experiment '{name}' (id {experiment.experiment_id}) in {redact(uri)} was "
            f"deleted; restore it with `MLFLOW_TRACKING_URI={redact(uri)} mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`, or set tracking.experiment in params.yaml to "
            "another name"
        )
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def tag_condition(key: str, value: str) -> str | None:
    """MLflow's filter for tag `key` equal to `value`, or None where its syntax cannot quote
    them (a backtick in the key, both quote marks in the value): callers compare the tag themselves then."""
    if "`" in key or ("'" in value and '"' in value):
        return None
    quote = '"' if "'" in value else "'"  # the filter syntax has no escape inside a string
    return f"tags.`{key}` = {quote}{value}{quote}"
