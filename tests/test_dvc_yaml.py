"""dvc.yaml stays true to the code: every stage depends on each library module it imports."""

import ast
from pathlib import Path

import yaml

from conftest import REPO


def imported_modules(path: Path, seen: set[str]) -> set[str]:
    """Files of src/cifar_dcgan/ that `path` imports, directly or through each other."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cifar_dcgan"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("cifar_dcgan")]
        for name in names:
            parts = name.split(".")
            for candidate in (
                (REPO / "src" / Path(*parts)).with_suffix(".py"),
                REPO / "src" / Path(*parts) / "__init__.py",
            ):
                relative = str(candidate.relative_to(REPO))
                if candidate.is_file() and relative not in seen:
                    seen.add(relative)
                    imported_modules(candidate, seen)
    return seen


def test_every_stage_lists_the_library_modules_it_imports():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = REPO / stage["cmd"].split()[1]
        needed = imported_modules(script, {"src/cifar_dcgan/__init__.py"}) | {str(script.relative_to(REPO))}
        missing = needed - set(stage["deps"])
        assert not missing, f"stage {name} imports {sorted(missing)} but does not list them in deps"
