"""The pipeline around training: `prepare` on the full archive, a no-op `dvc repro`."""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MIRROR_TOOL = REPO.parent / "shared" / "tools" / "cifar10-mirror"


def peak_run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of `python command...` run in a child that reports its own
    peak resident memory (VmHWM) on exit; ru_maxrss would not do: Linux carries it over from
    this big parent across fork + exec."""
    wrapper = (
        "import re, runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n"
        "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "    print('MAXRSS', hwm, file=sys.stderr)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start, int(done.stderr.split("MAXRSS")[-1].split()[0]) / 1024


def prepare_full(workdir: Path) -> dict[str, float] | None:
    if not MIRROR_TOOL.exists():
        return None
    archive = workdir / "cifar-10-python.tar.gz"
    built = subprocess.run(
        [sys.executable, str(MIRROR_TOOL), str(archive)], capture_output=True, text=True, check=True
    )
    md5 = built.stdout.split()[0]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(url=str(archive), md5=md5)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    command = [str(REPO / "stages" / "prepare.py"), "--out", "data", "--reports", "rep"]
    seconds, peak_mb = peak_run(command, workdir, env)
    output_mb = sum(p.stat().st_size for p in (workdir / "data").iterdir()) / 2**20
    return {"seconds": seconds, "peak_mb": peak_mb, "output_mb": output_mb}


def dvc_noop(workdir: Path) -> float | None:
    """Median seconds of `dvc repro` with nothing to do, on a pipeline that has run once (tiny data)."""
    project = workdir / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    for folder in ("stages", "src", ".dvc"):
        shutil.copytree(
            REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
        )
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import official_members, tiny_training, write_archive

    md5 = write_archive(workdir / "a.tar.gz", official_members())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"].update(url=str(workdir / "a.tar.gz"), md5=md5, limit=64)
    params["train_gan"].update(tiny_training())
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(project / "src"),
    }
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
        ["dvc", "repro", "-q"],
    ):
        done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q"], cwd=project, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
