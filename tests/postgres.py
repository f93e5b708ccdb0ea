"""A real PostgreSQL on 127.0.0.1 for the tests of a shared tracking store: a throwaway
cluster (initdb as the `postgres` user when the tests run as root: initdb refuses root),
trust authentication on loopback only, stopped and deleted afterwards."""

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> str | None:
    """Why PostgreSQL cannot run here, or None."""
    if not (BIN / "initdb").is_file():
        return f"PostgreSQL 15 is not installed ({BIN / 'initdb'} missing)"
    try:
        import psycopg2  # noqa: F401  (mlflow server's PostgreSQL driver)
    except ImportError:
        return "psycopg2 is not installed: pip install -e '.[cluster]'"
    return None


@contextlib.contextmanager
def database(port: int, name: str = "mlflow") -> Iterator[str]:
    """A new PostgreSQL cluster listening on 127.0.0.1:`port` with database `name`; yields
    its SQLAlchemy URI."""
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        folder.chmod(0o755)
        shutil.chown(folder, "postgres")
    data = folder / "data"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    try:
        subprocess.run([*as_postgres, BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust"], **quiet)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [*as_postgres, BIN / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"],
            **quiet,
        )
        subprocess.run(
            [BIN / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name], **quiet
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"  # SQLAlchemy 2.1 would pick psycopg 3
    finally:
        subprocess.run(
            [*as_postgres, BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def tracking_server(folder: Path, workers: int = 1) -> Iterator[str]:
    """`mlflow server` with `workers` processes on a new PostgreSQL on loopback, its artifacts
    proxied into `folder`/artifacts; yields the server's URI."""
    from conftest import free_port, start_server, stop_server

    with database(free_port()) as backend:
        port = free_port()
        process = start_server(
            folder,
            port,
            [
                "server",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                (folder / "artifacts").as_uri(),
            ],
            workers,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_server(process)
