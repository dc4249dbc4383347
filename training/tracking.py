"""The one MLflow helper every job uses: where runs go, what each run records, how models register.

Every run records its parameters (the flattened config and `config.json`), the seed, a data
fingerprint (content hash and rows per table), the git commit and the versions of the packages
that shape results. Models are logged as a thin pyfunc wrapper around the family's own native
save folder (artifact `native`), so that serving loads native objects while MLflow still offers
a generic interface.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from features.store import Store
from shopml.config import flatten
from shopml.settings import REPO_ROOT, Settings, load_settings

FAMILIES = ("recommender", "fraud", "forecast")
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
TRACKED_PACKAGES = (
    "shopml",
    "numpy",
    "pandas",
    "scikit-learn",
    "implicit",
    "lightgbm",
    "mlflow",
    "bentoml",
)


@dataclass
class TrainResult:
    """What a training job hands back: enough for the CLI, retraining and promotion."""

    family: str
    run_id: str
    metrics: dict[str, float]
    model_version: str | None = None
    data_fingerprint: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)


def experiment_name(family: str) -> str:
    return f"shopml-{family}"


def registered_model_name(family: str) -> str:
    return f"shopml-{family}"


def configure(settings: Settings | None = None) -> Settings:
    """Point MLflow at the shopml tracking store (SQLite under SHOPML_HOME unless overridden)."""
    settings = (settings or load_settings()).ensure_dirs()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings


def ensure_experiment(family: str, settings: Settings) -> str:
    """Create the family's experiment with its artifacts beside the store, or reuse it."""
    name = experiment_name(family)
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if settings.tracking_uri.startswith("sqlite:") or "://" not in settings.tracking_uri:
        artifact_location = (settings.artifact_root / name).as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _config_dict(config: BaseModel | dict | None) -> dict[str, Any]:
    if config is None:
        return {}
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    return _mask_urls(data)


def _mask_urls(data: Any) -> Any:
    """Database URLs lose their password before a config is logged."""
    from features.loaders.sql import safe_url

    if isinstance(data, dict):
        return {
            k: safe_url(v) if k == "url" and isinstance(v, str) else _mask_urls(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_mask_urls(v) for v in data]
    return data


@contextmanager
def start_run(
    family: str,
    *,
    config: BaseModel | dict | None = None,
    store: Store | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run for `family` that records config, seed, data fingerprint and versions."""
    if family not in FAMILIES and family != "data":
        raise ValueError(f"family must be one of {FAMILIES + ('data',)}, got {family!r}")
    settings = configure(settings)
    experiment_id = ensure_experiment(family, settings)
    config_data = _config_dict(config)
    all_tags = {"shopml.family": family, "git.commit": git_commit(), **(tags or {})}
    all_tags.update({f"version.{k}": v for k, v in package_versions().items()})
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=nested, tags=all_tags
    ) as run:
        if config_data:
            params = {k: _param_value(v) for k, v in flatten(config_data).items()}
            for chunk in _chunks(params, 100):
                mlflow.log_params(chunk)
            mlflow.log_dict(config_data, "config.json")
            if "seed" in config_data:
                mlflow.set_tag("seed", str(config_data["seed"]))
        if store is not None:
            log_data_fingerprint(store)
        yield run


def log_data_fingerprint(store: Store) -> str:
    """Tag the active run with the store's fingerprint id and log rows/hash per table."""
    fingerprint = store.fingerprint()
    fingerprint_id = store.fingerprint_id()
    mlflow.set_tag("data.fingerprint", fingerprint_id)
    mlflow.set_tag("data.name", store.name)
    mlflow.log_params({f"data.rows.{t}": v["rows"] for t, v in fingerprint.items()})
    mlflow.log_dict({"id": fingerprint_id, "tables": fingerprint}, "data_fingerprint.json")
    return fingerprint_id


def log_figure(fig, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG and close it (jobs make many; open figures leak memory)."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


def log_curve(name: str, x, y, **series) -> None:
    """Log the data behind a plot as `curves/<name>.json` so comparisons can overlay runs."""
    payload = {"x": [float(v) for v in x], "y": [float(v) for v in y]}
    for key, values in series.items():
        payload[key] = [float(v) for v in values]
    mlflow.log_dict(payload, f"curves/{name}.json")


def log_native_model(
    model_dir: str | Path,
    *,
    family: str,
    loader: str,
    metadata_extra: dict[str, Any] | None = None,
) -> str:
    """Log a native model folder inside a pyfunc wrapper; returns the logged model URI.

    `loader` is `"module:attr"` or `"module:Class.method"`: a callable taking the folder path and
    returning the native model. Serving resolves the same loader on the `native` artifact.
    """
    from training.pyfunc_wrapper import NativeModel

    _resolve_loader(loader)  # fail now, not at serving time
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(tmp) / "native"  # MLflow names the artifact after the folder
        shutil.copytree(model_dir, native)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=NativeModel(loader=loader),
            artifacts={"native": str(native)},
            pip_requirements=[f"shopml=={package_versions()['shopml']}"],
            metadata={"shopml.family": family, "shopml.loader": loader, **(metadata_extra or {})},
        )
    mlflow.set_tag("shopml.model_uri", info.model_uri)
    return info.model_uri


def _resolve_loader(loader: str):
    module_name, _, attr_path = loader.partition(":")
    if not attr_path:
        raise ValueError(f"loader must look like 'module:attr', got {loader!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def register_model(model_uri: str, *, family: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model as a new version of `shopml-<family>`; the first version becomes champion."""
    name = registered_model_name(family)
    run = mlflow.active_run()
    version = mlflow.register_model(model_uri, name)
    client = MlflowClient()
    run_tags = {}
    if run is not None:
        run_tags = {
            "run_id": run.info.run_id,
            "data.fingerprint": run.data.tags.get("data.fingerprint", "")
            or (mlflow.get_run(run.info.run_id).data.tags.get("data.fingerprint", "")),
        }
    for key, value in {**run_tags, **(tags or {})}.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    if champion_version(family) is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    if run is not None:
        mlflow.set_tag("shopml.model_version", version.version)
    return str(version.version)


def champion_version(family: str) -> str | None:
    """The version the `champion` alias points at, or None when the family has none yet."""
    client = MlflowClient()
    try:
        return str(
            client.get_model_version_by_alias(registered_model_name(family), CHAMPION).version
        )
    except mlflow.exceptions.MlflowException:
        return None


def download_native(family: str, alias: str = CHAMPION, dst: str | Path | None = None) -> Path:
    """Download the native folder of `shopml-<family>@alias` (used by build and tests)."""
    dst = Path(dst or tempfile.mkdtemp(prefix=f"shopml-{family}-"))
    uri = f"models:/{registered_model_name(family)}@{alias}"
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return Path(local) / "artifacts" / "native"


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _chunks(mapping: dict, size: int) -> Iterator[dict]:
    items = list(mapping.items())
    for i in range(0, len(items), size):
        yield dict(items[i : i + size])
