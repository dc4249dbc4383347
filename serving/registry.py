"""Read the champion of a model family from the MLflow registry (serving's own small reader).

Serving never imports `training/`: this module resolves `models:/shopml-<family>@champion`,
downloads the model, reads the `shopml.loader` from the MLmodel metadata and records the MLflow
version and run, so that `shopml build` can copy the native folder into the BentoML store.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shopml.errors import RegistryError
from shopml.settings import Settings, load_settings

FAMILIES = ("recommender", "fraud", "forecast")
CHAMPION = "champion"
# loaders may only come from shopml's own model and feature packages (never arbitrary code)
ALLOWED_LOADER_PACKAGES = ("models", "features")


def registered_name(family: str) -> str:
    return f"shopml-{family}"


def missing_champion_message(family: str) -> str:
    """What to do when a family has no champion: the exact commands."""
    return (
        f"no champion model for {registered_name(family)} in the MLflow registry: "
        f"train one with `shopml train {family}` (the first version becomes champion) "
        f"or promote a version with `shopml promote`"
    )


@dataclass
class Champion:
    """One registered champion, downloaded: where its native folder is and where it came from."""

    family: str
    name: str
    version: str
    run_id: str
    loader: str
    native_dir: Path
    model_dir: Path
    metadata: dict = field(default_factory=dict)
    run_artifacts: Path | None = None


def configure_mlflow(settings: Settings):
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow


def champion_version(family: str, settings: Settings | None = None):
    """The MLflow ModelVersion the `champion` alias points at, or None."""
    settings = settings or load_settings()
    mlflow = configure_mlflow(settings)
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(registered_name(family), CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def fetch_champion(
    family: str, settings: Settings | None = None, dst: str | Path | None = None
) -> Champion:
    """Download the champion of `family`; RegistryError naming the command to run when absent."""
    if family not in FAMILIES:
        raise RegistryError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    settings = settings or load_settings()
    mlflow = configure_mlflow(settings)
    version = champion_version(family, settings)
    if version is None:
        raise RegistryError(missing_champion_message(family))
    dst = Path(dst or tempfile.mkdtemp(prefix=f"shopml-{family}-"))
    uri = f"models:/{registered_name(family)}/{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst / "model")))
    meta = read_mlmodel_metadata(local)
    loader = meta.get("shopml.loader")
    if not loader:
        raise RegistryError(
            f"{registered_name(family)} v{version.version} has no shopml.loader in its MLmodel "
            "metadata: it was not logged by shopml's log_native_model; retrain it"
        )
    check_loader(loader)
    native = local / "artifacts" / "native"
    if not native.is_dir():
        raise RegistryError(
            f"{registered_name(family)} v{version.version} has no `native` artifact folder"
        )
    return Champion(
        family=family,
        name=registered_name(family),
        version=str(version.version),
        run_id=version.run_id or "",
        loader=loader,
        native_dir=native,
        model_dir=local,
        metadata=meta,
    )


def download_run_artifact(run_id: str, path: str, dst: Path, settings: Settings) -> Path | None:
    """One artifact (file or folder) of a run, or None when the run has no such artifact."""
    mlflow = configure_mlflow(settings)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst)
            )
        )
    except Exception:  # noqa: BLE001 - MLflow raises several kinds for "not there"
        return None


def list_run_artifacts(run_id: str, settings: Settings, path: str | None = None) -> list[str]:
    mlflow = configure_mlflow(settings)
    try:
        return [f.path for f in mlflow.MlflowClient().list_artifacts(run_id, path)]
    except Exception:  # noqa: BLE001
        return []


def read_mlmodel_metadata(model_dir: Path) -> dict:
    """The `metadata` mapping of an MLmodel file (YAML), without loading the model."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{model_dir} holds no MLmodel file")
    data = yaml.safe_load(mlmodel.read_text()) or {}
    return dict(data.get("metadata") or {})


def check_loader(loader: str) -> str:
    """Allow only `models.*` / `features.*` loaders written as `module:attr[.attr]`."""
    module, _, attr = loader.partition(":")
    if not attr or module.split(".")[0] not in ALLOWED_LOADER_PACKAGES:
        raise RegistryError(
            f"model loader {loader!r} is not allowed: it must be 'module:Class.load' inside "
            f"one of the packages {ALLOWED_LOADER_PACKAGES}"
        )
    return loader


def resolve_loader(loader: str):
    """The callable a loader string names (checked against the allowed packages first)."""
    module_name, _, attr_path = check_loader(loader).partition(":")
    obj = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj
