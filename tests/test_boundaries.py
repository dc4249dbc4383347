"""The layers of ARCHITECTURE.md ("Layers"), checked on the source by package.

A package imports only the packages of lower layers (and itself); the two packages of one layer,
`training` and `serving`, never import each other. Some layers also keep a framework out:
mlflow and bentoml stay out of the ground, features and models, bentoml out of training.
A package not written yet (say `registry/`) has no files and so nothing to check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shopml.settings import REPO_ROOT

# lowest first; the packages of one layer are side by side and must not import each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("shopml",),
    ("features",),
    ("models",),
    ("registry",),
    ("training", "serving"),
    ("experiments",),
    ("cli",),
)
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
PACKAGES = tuple(RANK)
FRAMEWORKS_KEPT_OUT = {
    "shopml": {"mlflow", "bentoml"},
    "features": {"mlflow", "bentoml"},
    "models": {"mlflow", "bentoml"},
    "training": {"bentoml"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a source file imports, at any depth (inside functions too).

    Relative imports are left out: they cannot leave their top-level package.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def allowed(package: str, module: str) -> bool:
    """Whether code of `package` may import `module`."""
    top = module.split(".")[0]
    if top in FRAMEWORKS_KEPT_OUT.get(package, ()):
        return False
    if top not in RANK or top == package:
        return True  # the standard library, third-party packages, and itself
    return RANK[top] < RANK[package]


def violations(root: Path, package: str) -> list[str]:
    """Every import of `root/package` that crosses its boundary, as `file imports module`."""
    return [
        f"{path.relative_to(root)} imports {module}"
        for path in sorted((root / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if not allowed(package, module)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_lower_layers(package):
    bad = violations(REPO_ROOT, package)
    assert not bad, f"{package} is layer {RANK[package]} of {LAYERS}:\n" + "\n".join(bad)


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(PACKAGES), f"not in LAYERS: {sorted(packages - set(PACKAGES))}"


def test_checker_catches_a_violation(tmp_path):
    files = {
        "features/uses_mlflow.py": "import mlflow\nfrom features.store import Store\n",
        "models/uses_features.py": "from features.store import Store\nfrom . import base\n",
        "training/uses_serving.py": "def f():\n    from serving import runner\n",
        "serving/uses_registry.py": "import bentoml\nfrom registry import store\n",
        "shopml/uses_cli.py": "from cli.main import app\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = [v for package in PACKAGES for v in violations(tmp_path, package)]
    assert found == [
        "shopml/uses_cli.py imports cli.main",
        "features/uses_mlflow.py imports mlflow",
        "training/uses_serving.py imports serving",
    ]
