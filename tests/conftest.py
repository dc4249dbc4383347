"""Shared fixtures: an isolated shopml home with its own MLflow store, and the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_shopml_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SHOPML_HOME and the MLflow tracking store inside tmp_path, so tests never touch ~/.shopml."""
    home = tmp_path / "shopml-home"
    monkeypatch.setenv("SHOPML_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    home.mkdir()
    return home


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The public datasets folder (SHOPML_DATASETS or ../shared/datasets); skips when absent."""
    from shopml.settings import load_settings

    path = load_settings().datasets_dir
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set SHOPML_DATASETS)")
    return path
