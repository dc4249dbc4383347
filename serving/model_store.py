"""The BentoML model store at run time: where it is, and loading native models from it.

Services load models only from here (a BentoML model the Bento references), never from paths
given at run time. Each BentoML model carries labels naming its MLflow origin (registered name,
version, run id) and the metadata `shopml.family` / `shopml.kind`, whose kind is looked up in
the family's table of loaders (`shopml build`, in `serving.build`, puts the models there).
Imports no MLflow: a service starts without it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from models.family import CHALLENGER, CHAMPION, NATIVE_ARTIFACT, family
from registry.metadata import model_kind
from shopml.errors import RegistryError
from shopml.settings import Settings, load_settings


def use_bentoml_home(settings: Settings | None = None) -> Path:
    """Point BentoML at `<SHOPML_HOME>/bentoml` (call before bentoml first touches its store)."""
    settings = settings or load_settings()
    home = Path(os.environ.get("BENTOML_HOME") or settings.bentoml_home)
    os.environ["BENTOML_HOME"] = str(home)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_tag(family_name: str) -> str:
    """The newest BentoML model of the family (`shopml-fraud:latest`)."""
    return f"{family(family_name).registered_model}:latest"


def challenger_name(family_name: str) -> str:
    """The BentoML model name of the family's `challenger` (`shopml-fraud-challenger`): a name
    of its own, so that `shopml-fraud:latest` always stays the champion."""
    return f"{family(family_name).registered_model}-{CHALLENGER}"


def challenger_tag(family_name: str) -> str:
    """The newest imported challenger of the family (`shopml-fraud-challenger:latest`)."""
    return f"{challenger_name(family_name)}:latest"


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
        return f"{family(self.family).registered_model}/{self.mlflow_version}"

    @property
    def alias(self) -> str:
        """The registry alias the model was imported as (`champion` or `challenger`)."""
        return CHALLENGER if self.tag.startswith(challenger_name(self.family) + ":") else CHAMPION


def stored_model(ref, family_name: str):
    """The StoredModel behind a `bentoml.models.BentoModel` reference; RegistryError if absent."""
    stored = ref.stored if ref is not None else None
    if stored is None:
        fam = family(family_name)
        raise RegistryError(
            f"the BentoML store has no {fam.registered_model} model: run `shopml build` "
            f"first; if it says so, {fam.missing_champion()}"
        )
    return stored


def load_native(stored, family_name: str, **kwargs) -> LoadedModel:
    """Rebuild the native object of a stored BentoML model with the loader of its recorded kind.

    `kwargs` go to the loader when it accepts them (e.g. the fraud engine's state store).
    """
    where = f"BentoML model {stored.tag}"
    fam, kind = model_kind(stored.info.metadata, where, expected=family_name)
    fn = fam.loader(kind)
    accepted = inspect.signature(fn).parameters
    path = Path(stored.path)
    obj = fn(path / NATIVE_ARTIFACT, **{k: v for k, v in kwargs.items() if k in accepted})
    labels = stored.info.labels
    return LoadedModel(
        family=family_name,
        obj=obj,
        path=path,
        tag=str(stored.tag),
        mlflow_version=str(labels.get("mlflow_version", "?")),
        mlflow_run_id=str(labels.get("mlflow_run_id", "")),
    )


def load_challenger(ref, family_name: str, **kwargs) -> LoadedModel | None:
    """The family's `challenger` from the Bento (`ref`: the service's `challenger_model(family)`
    reference), loaded like the champion; None when the Bento carries none (no challenger in
    the registry when it was built, or one this code could not load)."""
    stored = ref.stored if ref is not None else None
    if stored is None:
        return None
    return load_native(stored, family_name, **kwargs)
