"""dvc.yaml stays true to the code: each stage depends on exactly the library modules it
runs, so that an edit reruns what it should and nothing more, and a training checkpoint is
fingerprinted over the same training code."""

from pathlib import Path

import yaml

from cifar_dcgan import checkpoint, codebase
from conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def code_deps(stage: dict) -> set[str]:
    return {dep for dep in stage["deps"] if dep.endswith(".py")}


def needed(stage: dict) -> set[str]:
    script = REPO / stage["cmd"].split()[1]
    files = [script, *codebase.closure(script, REPO / "src")]
    return {str(Path(path).resolve().relative_to(REPO)) for path in files}


def test_every_stage_lists_the_library_modules_it_runs_and_no_other():
    for name, stage in STAGES.items():
        missing = needed(stage) - code_deps(stage)
        stale = code_deps(stage) - needed(stage)
        assert not missing, f"stage {name} runs {sorted(missing)} but does not list them in deps"
        assert not stale, f"stage {name} lists {sorted(stale)} in deps but does not run them"


def test_the_checkpoint_fingerprints_the_training_code_that_train_gan_depends_on():
    code = {
        str(path.relative_to(REPO))
        for path in checkpoint.training_code(REPO / "src" / "cifar_dcgan" / "training.py")
    }
    assert code <= code_deps(STAGES["train-gan"])
    assert "src/cifar_dcgan/training.py" in code and "src/cifar_dcgan/gan.py" in code


def test_plots_messages_and_the_registry_are_not_training_code():
    """Restyling a comparison plot or rewording a promotion message must not rerun training."""
    deps = code_deps(STAGES["train-gan"])
    for module in ("registry.py", "compare", "selection.py", "generate.py", "config/select.py"):
        assert not any(dep.startswith(f"src/cifar_dcgan/{module}") for dep in deps), module
