"""The package's own source files that a module runs: its import closure, read from the code.

What DVC must list as a stage's code dependencies (`tests/test_dvc_yaml.py` holds dvc.yaml
to it) and what a training checkpoint's fingerprint covers (`checkpoint.code_digest`): an
edit outside a closure (a plot of compare, a registry message) changes neither.
"""

import ast
from pathlib import Path

PACKAGE = "cifar_dcgan"
SOURCE = Path(__file__).resolve().parent.parent  # the folder holding the package (src/)


def closure(path: Path, source: Path = SOURCE) -> list[Path]:
    """The package's files that `path` imports, directly or through each other (imports inside
    functions too: they run when called), with the `__init__.py` of every package on the way;
    sorted, `path` itself left out unless imported."""
    seen: set[Path] = set()
    pending = [Path(path)]
    while pending:
        for module in _imported(pending.pop(), source):
            if module not in seen:
                seen.add(module)
                pending.append(module)
    return sorted(seen)


def _imported(path: Path, source: Path) -> set[Path]:
    """The package's files one file imports: each module named, its parent packages, and the
    names taken `from` a package that are modules of their own."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        for depth in range(1, len(parts) + 1):
            folder = source.joinpath(*parts[:depth])
            for candidate in (folder / "__init__.py", folder.with_suffix(".py")):
                if candidate.is_file():
                    files.add(candidate.resolve())
    return files
