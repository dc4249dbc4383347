"""Pinned requirements of shopml's artifacts, taken from `constraints.txt`.

A Bento and an MLflow model must install everything their code imports, at the versions shopml
was tested with. The third-party imports of the shopml packages an artifact carries are read
from their source (`ast`, every import at any depth, so a lazily imported package counts too),
their dependencies are followed through the installed distributions' metadata (no network) and
every package is pinned to its line in `constraints.txt`.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from shopml.errors import ShopmlError
from shopml.settings import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "constraints.txt"
# the shopml packages an artifact carries as source (a Bento adds `serving`)
CODE_PACKAGES = ("shopml", "features", "models", "registry")
SHOPML_PACKAGES = frozenset({*CODE_PACKAGES, "serving", "training", "experiments", "cli"})
# loaded without an import statement: SQLAlchemy's PostgreSQL driver (from a URL)
DRIVERS = ("psycopg[binary]",)
# picked up by uvicorn inside BentoML: +25% requests/s and -0.2 ms p50 on the services
SERVER_SPEEDUPS = ("uvloop", "httptools")
# imported only to build Bentos and log models (registry.store, registry.pyfunc), never by a
# running service: a Bento does without it (the fresh-environment test proves it)
BUILD_ONLY = frozenset({"mlflow"})


def imported_distributions(packages: tuple[str, ...], root: Path = REPO_ROOT) -> set[str]:
    """The distributions the source of `packages` imports (standard library and shopml aside)."""
    owners = _owners()
    found = set()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for module in _imports(path):
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in SHOPML_PACKAGES:
                    continue
                dists = owners.get(top)
                if not dists:
                    raise ShopmlError(f"{path.relative_to(root)} imports {top}, not installed")
                found.add(top if _canonical(top) in map(_canonical, dists) else dists[0])
    return found


@functools.cache
def _owners() -> dict[str, list[str]]:
    """Top-level module -> distributions (one scan of the installed metadata: ~1 s)."""
    return metadata.packages_distributions()


def _imports(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def serving_requirements() -> list[str]:
    """What a Bento installs: its code's imports (build-only ones aside), drivers, speed-ups."""
    imported = imported_distributions(("serving", *CODE_PACKAGES)) - BUILD_ONLY
    lines = pinned((*sorted(imported), *DRIVERS, *SERVER_SPEEDUPS))
    return [line for line in lines if not line.startswith("bentoml==")]  # BentoML adds its own


def pyfunc_requirements() -> list[str]:
    """What a logged MLflow model installs: its code's imports (MLflow among them), drivers."""
    return pinned((*sorted(imported_distributions(CODE_PACKAGES) | {"mlflow"}), *DRIVERS))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """Canonical package name -> pinned version, from `constraints.txt`."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_canonical(Requirement(name).name)] = version.strip()
    return pins


def pinned(packages: tuple[str, ...], path: Path = CONSTRAINTS) -> list[str]:
    """`name==version` for `packages` and all their dependencies, pinned as in `path`.

    ShopmlError naming the package when one is not installed or not in the constraints.
    """
    pins = constraints(path)
    seen: dict[str, set[str]] = {}
    todo = [Requirement(p) for p in packages]
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        extras = set(req.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            raise ShopmlError(
                f"{req.name} is needed by a shopml artifact but not installed"
            ) from None
        for text in requires:
            dep = Requirement(text)
            env = [{"extra": e} for e in seen[name]] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(e) for e in env):
                todo.append(dep)
    missing = sorted(n for n in seen if n not in pins)
    if missing:
        raise ShopmlError(f"{path.name} pins no version of {', '.join(missing)}")
    return [f"{n}{_extras(seen[n])}=={pins[n]}" for n in sorted(seen)]


def _extras(extras: set[str]) -> str:
    return f"[{','.join(sorted(extras))}]" if extras else ""


def code_paths() -> list[str]:
    """The folders of the shopml packages an artifact carries."""
    return [str(REPO_ROOT / name) for name in CODE_PACKAGES]
