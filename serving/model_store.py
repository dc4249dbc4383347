"""The BentoML model store side: import an MLflow champion, and load native models from the store.

Services load models only from here (a BentoML model the Bento references), never from paths
given at run time. Each BentoML model carries labels and metadata naming its MLflow origin
(registered name, version, run id) and the `shopml.loader` that rebuilds the native object.
"""

from __future__ import annotations

import inspect
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from serving.registry import Champion, missing_champion_message, registered_name, resolve_loader
from shopml.errors import RegistryError
from shopml.settings import Settings, load_settings

NATIVE = "native"


def use_bentoml_home(settings: Settings | None = None) -> Path:
    """Point BentoML at `<SHOPML_HOME>/bentoml` (call before bentoml first touches its store)."""
    settings = settings or load_settings()
    home = Path(os.environ.get("BENTOML_HOME") or settings.bentoml_home)
    os.environ["BENTOML_HOME"] = str(home)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_tag(family: str) -> str:
    return f"{registered_name(family)}:latest"


def find_imported(family: str, version: str, run_id: str):
    """The BentoML model already imported from this MLflow version and run, or None."""
    import bentoml

    try:
        models = bentoml.models.list(registered_name(family))
    except bentoml.exceptions.NotFound:
        return None
    for model in models:
        labels = model.info.labels
        if labels.get("mlflow_version") == version and labels.get("mlflow_run_id") == run_id:
            return model
    return None


def import_champion(champion: Champion, extra_files: dict[str, Path] | None = None):
    """Copy the champion's native folder (+ extra files) into a new BentoML model; reuse a match."""
    import bentoml

    found = find_imported(champion.family, champion.version, champion.run_id)
    if found is not None and not extra_files:
        return found
    labels = {
        "family": champion.family,
        "mlflow_model": champion.name,
        "mlflow_version": champion.version,
        "mlflow_run_id": champion.run_id,
    }
    metadata = {
        "shopml.loader": champion.loader,
        "mlflow.model_name": champion.name,
        "mlflow.version": champion.version,
        "mlflow.run_id": champion.run_id,
        **{k: v for k, v in champion.metadata.items() if isinstance(v, str | int | float | bool)},
    }
    with bentoml.models.create(
        name=champion.name, labels=labels, metadata=metadata, module="shopml"
    ) as model:
        shutil.copytree(champion.native_dir, Path(model.path) / NATIVE)
        for name, path in (extra_files or {}).items():
            shutil.copy2(path, Path(model.path) / name)
    return bentoml.models.get(model.tag)


@dataclass
class LoadedModel:
    """A native model object with where it came from (for answers, labels and logs)."""

    family: str
    obj: object
    path: Path
    tag: str
    mlflow_version: str
    mlflow_run_id: str

    @property
    def version_label(self) -> str:
        return f"{registered_name(self.family)}/{self.mlflow_version}"


def stored_model(ref, family: str):
    """The StoredModel behind a `bentoml.models.BentoModel` reference; RegistryError if absent."""
    stored = ref.stored if ref is not None else None
    if stored is None:
        raise RegistryError(
            f"the BentoML store has no {registered_name(family)} model: run `shopml build` "
            f"first; if it says so, {missing_champion_message(family)}"
        )
    return stored


def load_native(stored, family: str, **kwargs) -> LoadedModel:
    """Rebuild the native object of a stored BentoML model with its recorded shopml loader.

    `kwargs` go to the loader when it accepts them (e.g. the fraud engine's state store).
    """
    loader = stored.info.metadata.get("shopml.loader")
    if not loader:
        raise RegistryError(f"BentoML model {stored.tag} has no shopml.loader metadata")
    path = Path(stored.path)
    fn = resolve_loader(loader)
    accepted = inspect.signature(fn).parameters
    obj = fn(path / NATIVE, **{k: v for k, v in kwargs.items() if k in accepted})
    labels = stored.info.labels
    return LoadedModel(
        family=family,
        obj=obj,
        path=path,
        tag=str(stored.tag),
        mlflow_version=str(labels.get("mlflow_version", "?")),
        mlflow_run_id=str(labels.get("mlflow_run_id", "")),
    )
