"""Layering rules of STYLE.md, checked on the source: an import across a boundary fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shopml.settings import REPO_ROOT

FORBIDDEN = {
    "features": {
        "mlflow",
        "bentoml",
        "training",
        "serving",
        "experiments",
        "models",
        "shopml.cli",
        "shopml.main_job",
    },
    "models": {
        "mlflow",
        "bentoml",
        "training",
        "serving",
        "experiments",
        "shopml.cli",
        "shopml.main_job",
    },
    "training": {"serving", "experiments", "bentoml", "shopml.cli", "shopml.main_job"},
    "serving": {"training", "experiments", "shopml.cli", "shopml.main_job"},
    "experiments": {"shopml.cli", "shopml.main_job"},
}
# the shared core of the `shopml` package (everything but the command line) stays light
CORE_FORBIDDEN = {"mlflow", "bentoml", "training", "serving", "experiments", "models", "features"}
COMMAND_LINE = ("cli", "main_job")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violates(module: str, forbidden: set[str]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


def source_files(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_boundary(package):
    bad = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for path in source_files(package)
        for module in sorted(imported_modules(path))
        if violates(module, FORBIDDEN[package])
    ]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_shopml_core_stays_light():
    bad = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for path in source_files("shopml")
        if not path.stem.startswith(COMMAND_LINE)
        for module in sorted(imported_modules(path))
        if violates(module, CORE_FORBIDDEN)
    ]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_only_the_command_line_imports_experiments():
    users = [
        str(path.relative_to(REPO_ROOT))
        for package in ("features", "models", "training", "serving", "shopml")
        for path in source_files(package)
        if not (package == "shopml" and path.stem.startswith(COMMAND_LINE))
        if any(violates(m, {"experiments"}) for m in imported_modules(path))
    ]
    assert not users


def test_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import mlflow\nfrom training.tracking import start_run\n")
    modules = imported_modules(bad)
    assert violates("training.tracking", FORBIDDEN["models"])
    assert {"mlflow", "training.tracking"} <= modules
