"""What a logged shopml model records about itself, and how that finds the code that loads it.

A model carries two metadata entries, `shopml.family` and `shopml.kind`; the kind is looked up
in the family's table of kinds (`models.family.Family.kinds`). No import string travels with a
model, so metadata can name only loaders this code declares. Imports no MLflow (services use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.family import FAMILIES, Family, family
from shopml.errors import RegistryError

FAMILY_KEY = "shopml.family"
KIND_KEY = "shopml.kind"
# what models logged before kinds recorded instead: an import string, no longer followed
OLD_LOADER_KEY = "shopml.loader"


def model_metadata(family_name: str, kind: str | None = None) -> dict[str, str]:
    """The entries a model of `family_name` is logged with; `kind` defaults to the one its job
    registers. An unknown family (ConfigError) or kind (RegistryError) fails at logging time."""
    fam = family(family_name)
    kind = fam.registered_kind if kind is None else kind
    fam.loader(kind)
    return {FAMILY_KEY: fam.name, KIND_KEY: kind}


def model_kind(
    metadata: Mapping[str, Any], where: str, expected: str | None = None
) -> tuple[Family, str]:
    """The family and kind `metadata` names (of the model `where` describes).

    RegistryError saying to retrain when the model predates kinds, names an unknown family or
    kind, or belongs to another family than `expected`.
    """
    name, kind = metadata.get(FAMILY_KEY), metadata.get(KIND_KEY)
    if kind is None:
        old = " (it names an import string, `shopml.loader`, which is no longer followed)"
        raise RegistryError(
            f"{where} records no {KIND_KEY}: it was logged by an older shopml"
            f"{old if OLD_LOADER_KEY in metadata else ''}; {_retrain(expected or name)}"
        )
    if name not in FAMILIES or (expected is not None and name != expected):
        raise RegistryError(
            f"{where} is a model of family {name!r}, expected {expected or 'a known family'}; "
            f"{_retrain(expected)}"
        )
    fam = FAMILIES[name]
    if kind not in fam.kinds:
        raise RegistryError(
            f"{where}: unknown model kind {kind!r} of {fam.registered_model} (this code knows "
            f"{', '.join(sorted(fam.kinds))}); {_retrain(name)}"
        )
    return fam, kind


def load_model(
    metadata: Mapping[str, Any],
    native_dir: str | Path,
    where: str,
    expected: str | None = None,
    **kwargs: Any,
) -> Any:
    """Rebuild the native model in `native_dir` with the loader its metadata's kind names."""
    fam, kind = model_kind(metadata, where, expected)
    return fam.load(kind, native_dir, **kwargs)


def _retrain(name: str | None) -> str:
    family_name = name if name in FAMILIES else "<family>"
    return f"retrain it with `shopml train {family_name}`, then rebuild with `shopml build`"
