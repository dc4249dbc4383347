"""The MLflow model registry: registered names, champion/challenger aliases, registering a
logged model and downloading a version (or alias) with its native folder.

Registered-model names come from `models.family` (`shopml-<family>`); the first version of a
family becomes `champion`, later versions wait for `shopml promote`; the version under
comparison (gated by `shopml promote`, trained by `shopml retrain`) holds `challenger`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.family import CHAMPION, family, native_dir
from registry.metadata import model_kind
from shopml.errors import RegistryError
from shopml.settings import Settings, load_settings

PREVIOUS_CHAMPION = "previous-champion"


def configure(settings: Settings | None = None) -> Settings:
    """Point MLflow at the shopml tracking store (SQLite under SHOPML_HOME unless overridden)."""
    settings = (settings or load_settings()).ensure_dirs()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings


def client(settings: Settings | None = None) -> MlflowClient:
    """An MLflow client pointed at shopml's tracking store."""
    configure(settings)
    return MlflowClient()


def alias_version(
    family_name: str, alias: str, mlflow_client: MlflowClient | None = None
) -> ModelVersion | None:
    """The version `alias` (e.g. `champion`) of the family's model points at, or None."""
    return _version(family(family_name).registered_model, alias, mlflow_client or MlflowClient())


def set_alias(
    family_name: str, alias: str, version: str, mlflow_client: MlflowClient | None = None
) -> None:
    """Point `alias` (e.g. `challenger`) of the family's model at `version`."""
    mlflow_client = mlflow_client or MlflowClient()
    mlflow_client.set_registered_model_alias(family(family_name).registered_model, alias, version)


def clear_alias(family_name: str, alias: str, mlflow_client: MlflowClient | None = None) -> bool:
    """Remove `alias` from the family's model; False when it was not set."""
    mlflow_client = mlflow_client or MlflowClient()
    if alias_version(family_name, alias, mlflow_client) is None:
        return False
    mlflow_client.delete_registered_model_alias(family(family_name).registered_model, alias)
    return True


def champion_version(family_name: str) -> str | None:
    """The version number of the family's champion, or None when it has none yet."""
    found = alias_version(family_name, CHAMPION)
    return None if found is None else str(found.version)


def register(model_uri: str, family_name: str, tags: dict[str, Any] | None = None) -> str:
    """Register a logged model as a new version of the family's model, tag it, and make it
    champion when the family has none yet; returns the version number."""
    name = family(family_name).registered_model
    version = str(mlflow.register_model(model_uri, name).version)
    mlflow_client = MlflowClient()
    for key, value in (tags or {}).items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))
    if alias_version(family_name, CHAMPION, mlflow_client) is None:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    return version


@dataclass(frozen=True)
class FetchedModel:
    """One registered version, downloaded: its files, where it came from and how it loads."""

    family: str
    name: str
    version: str
    run_id: str
    kind: str
    model_dir: Path
    native_dir: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    def load(self, **kwargs: Any) -> Any:
        """The native model object (through the family's table of kinds)."""
        return family(self.family).load(self.kind, self.native_dir, **kwargs)


def fetch(
    family_name: str,
    ref: str = CHAMPION,
    settings: Settings | None = None,
    dst: str | Path | None = None,
) -> FetchedModel:
    """Download version or alias `ref` of the family's model; RegistryError naming the command
    to run when the alias is not set, or when the model cannot be loaded by kind."""
    fam = family(family_name)
    mlflow_client = client(settings)
    version = _version(fam.registered_model, ref, mlflow_client)
    if version is None:
        if ref == CHAMPION:
            raise RegistryError(fam.missing_champion())
        shown = f"version {ref}" if ref.isdigit() else f"@{ref}"
        raise RegistryError(f"{fam.registered_model} has no {shown}")
    where = f"{fam.registered_model} v{version.version}"
    dst = Path(dst or tempfile.mkdtemp(prefix=f"{fam.registered_model}-"))
    local = download(f"models:/{fam.registered_model}/{version.version}", dst / "model")
    meta = read_metadata(local)
    _, kind = model_kind(meta, where, expected=fam.name)
    native = native_dir(local)
    if native == local:
        raise RegistryError(f"{where} has no `native` artifact folder")
    return FetchedModel(
        fam.name,
        fam.registered_model,
        str(version.version),
        version.run_id or "",
        kind,
        local,
        native,
        meta,
    )


def _version(name: str, ref: str, mlflow_client: MlflowClient) -> ModelVersion | None:
    """Version `ref` of registered model `name`: a number or an alias; None when absent."""
    try:
        if ref.isdigit():
            return mlflow_client.get_model_version(name, ref)
        return mlflow_client.get_model_version_by_alias(name, ref)
    except MlflowException:
        return None


def download(model_uri: str, dst: str | Path) -> Path:
    """The folder of a logged or registered model (`runs:/...`, `models:/name/3`) under `dst`."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def load_logged(model_uri: str, family_name: str) -> Any:
    """The native model of a logged or registered model of `family_name`, loaded by its kind
    (downloaded to a temporary folder that is gone afterwards: loaders read everything)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = download(model_uri, tmp)
        fam, kind = model_kind(read_metadata(local), model_uri, expected=family_name)
        return fam.load(kind, native_dir(local))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The `metadata` mapping of a downloaded model's MLmodel file, without loading the model."""
    mlmodel = Path(model_dir) / "MLmodel"
    if not mlmodel.is_file():
        raise RegistryError(f"{model_dir} holds no MLmodel file")
    data = yaml.safe_load(mlmodel.read_text()) or {}
    return dict(data.get("metadata") or {})


def run_artifact(run_id: str, path: str, dst: Path) -> Path | None:
    """One artifact (file or folder) of a run, or None when the run has no such artifact."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst)
            )
        )
    except Exception:  # noqa: BLE001 - MLflow raises several kinds for "not there"
        return None


def run_artifact_paths(run_id: str, folder: str | None = None) -> list[str]:
    """The artifact paths directly inside `folder` of a run (its root when None)."""
    try:
        return [f.path for f in MlflowClient().list_artifacts(run_id, folder)]
    except Exception:  # noqa: BLE001 - as above
        return []
