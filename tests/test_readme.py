"""The documentation's commands, taken from README.md and the docs/ pages and run as written
in a new shell: no `.venv/bin` on PATH, no PYTHONPATH, nothing but what the pages' own lines
set up."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run, set_params, tiny_pipeline, tiny_training

PROJECT_COMMANDS = ("dvc", "mlflow", "python", "cifar-dcgan-generate", "cifar-dcgan-compare")
ACTIVATE = "source .venv/bin/activate"


def pages() -> list[Path]:
    """README.md, then every Markdown page under docs/: wherever a command is shown."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def doc_blocks() -> list[tuple[str, str, str]]:
    """(the page, the heading above it, the block's text) for every ```sh block of every page."""
    blocks = []
    for page in pages():
        heading = ""
        for part in re.split(r"(^#+ [^\n]*$|```sh\n.*?```)", page.read_text(), flags=re.M | re.S):
            if part.startswith("#"):
                heading = part.lstrip("#").strip()
            elif part.startswith("```sh"):
                blocks.append((str(page.relative_to(REPO)), heading, part[6:-3]))
    return blocks


def python_snippets() -> list[str]:
    """Every ```python block of every page."""
    return [s for page in pages() for s in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        line.split("  #")[0].strip()
        for line in joined.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def block_under(heading: str) -> str:
    """The first block under `heading`, README.md first, then the docs/ pages."""
    (block,) = [text for _, title, text in doc_blocks() if title == heading][:1]
    return block


def test_every_documented_block_activates_the_environment_before_a_project_command():
    for page, heading, block in doc_blocks():
        lines = command_lines(block)
        for i, line in enumerate(lines):
            if line.split()[0] in PROJECT_COMMANDS:
                assert ACTIVATE in lines[:i], (
                    f"{page}, section '{heading}': `{line}` runs before `{ACTIVATE}`"
                )


def test_the_commands_the_slow_tests_run_are_still_shown():
    """A page edit that drops or renames what the end-to-end tests below run fails here, fast."""
    for heading in ("Without internet", "A seed sweep", "The comparison", "`dvc exp show` for a sweep"):
        assert command_lines(block_under(heading))[0] == ACTIVATE, heading
    (snippet,) = python_snippets()
    assert "import" in snippet


def fresh_shell(project: Path) -> dict[str, str]:
    """A new login's environment: system PATH only, the project's .venv not activated."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment: no .venv to activate")
    (project / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    keep = ("HOME", "LANG", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return env | {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_COMMITTER_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def shell(lines: list[str], project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "set -e\n" + "\n".join(lines) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{script}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_offline_command_runs_the_pipeline_in_a_new_shell_and_tracks_one_run_per_stage(project, archive):
    from mlflow import MlflowClient

    path, md5 = archive
    tiny_pipeline(project, path, md5)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny"], project)
    env = fresh_shell(project)
    lines = [
        line for line in command_lines(block_under("Without internet")) if "md5" in line or line == ACTIVATE
    ]
    assert lines[0] == ACTIVATE and lines[1].startswith("dvc exp run -S prepare.url=file:///data/")
    lines = [line.replace("file:///data/cifar-10-python.tar.gz", path.as_uri()) for line in lines]
    lines = [re.sub(r"<md5[^>]*>", md5, line) for line in lines]
    shell(lines, project, env)

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiments = {e.name: e for e in client.search_experiments()}
    assert experiments["cifar10-dcgan"].tags["mlflow.experimentKind"] == "custom_model_development"
    if "Default" in experiments:  # nothing may start a run behind the stages' backs
        assert client.search_runs([experiments["Default"].experiment_id]) == []
    runs = client.search_runs([experiments["cifar10-dcgan"].experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("dvc_experiment") == "true"]
    stages = sorted(r.data.tags["stage"] for r in runs if r is not parent)
    assert stages == sorted(
        ["prepare", "train-discriminator-sanity", "train-evaluator", "train-gan", "select-generator"]
    )
    name = parent.info.run_name
    for r in runs:
        if r is not parent:
            assert r.info.run_name == f"{name}/{r.data.tags['stage']}"
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert r.data.tags["mlflow.source.git.commit"] == r.data.tags["git_commit"]
            assert r.info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    train = next(r for r in runs if r.data.tags.get("stage") == "train-gan")
    (dataset,) = train.inputs.dataset_inputs
    assert (dataset.dataset.digest, dataset.dataset.name) == (md5, "cifar-10[:64]")
    assert json.loads(dataset.dataset.profile) == {"train_images": 64, "test_images": 20}
    assert any(key.startswith("system/") for key in train.data.metrics)  # the System metrics tab
    # the image chart shows the grid as large as the PNG on disk
    from PIL import Image

    logged = [a.path for a in client.list_artifacts(train.info.run_id, "images") if "+step+2+" in a.path]
    local = client.download_artifacts(
        train.info.run_id, [p for p in logged if p.endswith(".png")][0], str(project)
    )
    on_disk = project / "reports" / "train_gan" / "grids" / "epoch_002.png"
    assert Image.open(local).size == Image.open(on_disk).size
    # the registered model asks for the TensorFlow that trained it
    from importlib import metadata

    champion = client.get_model_version_by_alias("cifar10-dcgan-generator", "champion")
    requirements = Path(
        client.download_artifacts(champion.run_id, "generator/requirements.txt", str(project))
    )
    installed = []
    for name in ("tensorflow-cpu", "tensorflow"):  # the CPU build here, the GPU one on GPU machines
        try:
            installed.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    assert installed[0] in requirements.read_text().split()
    # the documented safe way to load the champion from Python, run as written
    (snippet,) = python_snippets()
    prelude = (
        "import numpy as np\nz = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)\n"
    )
    check = "\nassert images.shape == (3, 32, 32, 3) and -1 <= images.min() and images.max() <= 1\n"
    shell([ACTIVATE, f"python - <<'EOF'\n{prelude}{snippet}{check}EOF"], project, env)


def wait_for_queue(project: Path, env: dict[str, str], minutes: float) -> str:
    deadline = time.monotonic() + 60 * minutes
    while time.monotonic() < deadline:
        status = shell([ACTIVATE, "dvc queue status"], project, env).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {minutes} minutes:\n{status}")


@pytest.mark.slow
def test_the_readme_sweep_queues_seeds_trains_the_evaluator_once_and_compares(project, archive):
    """The documented sweep (2 seeds a side instead of 3, tiny params instead of PROFILE), then
    its comparison and its compact `dvc exp show`."""
    from mlflow import MlflowClient

    path, md5 = archive
    tiny_pipeline(project, path, md5)
    set_params(project, train_gan=tiny_training(epochs=2))
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny"], project)
    env = fresh_shell(project)
    sweep = command_lines(block_under("A seed sweep"))
    assert any(line.startswith("PROFILE=") for line in sweep)
    # the evaluator's params differ from the committed (never run) baseline: the first
    # experiment trains it, the others must take it from DVC's run cache
    lines = [
        'PROFILE="-S train_evaluator.seed=2"' if line.startswith("PROFILE=") else line.replace("1,2,3", "1,2")
        for line in sweep
    ]
    shell(lines, project, env)
    status = wait_for_queue(project, env, minutes=15)
    assert status.count("Success") == 4, status

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-dcgan").experiment_id
    trained = client.search_runs([experiment], "tags.stage = 'train-gan'")
    assert sorted(r.info.run_name for r in trained) == [
        f"{arm}-{i}/train-gan" for arm in ("base", "smooth") for i in (1, 2)
    ]
    assert len(client.search_runs([experiment], "tags.stage = 'train-evaluator'")) == 1

    compare = command_lines(block_under("The comparison"))
    shell([ACTIVATE, compare[1]], project, env)
    result = json.loads((project / "reports" / "compare" / "comparison.json").read_text())
    base, smooth = result["groups"]
    assert base["baseline"] and base["params"] == {
        "train_gan.label_noise": "0.0",
        "train_gan.label_smoothing": "0.0",
    }
    assert base["seeds"] == smooth["seeds"] == ["1", "2"]
    assert smooth["verdict"].startswith("label_noise=0.05, label_smoothing=0.1: best FCD")
    report = (project / "reports" / "compare" / "report.md").read_text()
    assert "| label_noise=0.0, label_smoothing=0.0 (baseline) | 2 |" in report
    for picture in ("fcd_curves.png", "grids.png"):
        assert (project / "reports" / "compare" / picture).stat().st_size > 5_000
    (logged,) = client.search_runs([experiment], "tags.stage = 'compare'")
    assert logged.info.status == "FINISHED"

    (show,) = command_lines(block_under("`dvc exp show` for a sweep"))[1:]
    table = shell([ACTIVATE, show], project, env).stdout
    header = table.splitlines()[0]
    assert "best_fcd" in header and "train_gan.seed" in header and "train_gan.label_smoothing" in header
    widest = max(len(line) for line in table.splitlines())
    assert widest <= 160, table
