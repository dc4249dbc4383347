"""The promotion rule the gate applies per family: `Family.promotion` (models/family.py) with
the overrides of `experiments/configs/promotion.toml` applied field by field.

The defaults exist once, in `models.family`; the file changes only what a deployment wants
different (metric names, margin, guards), so the gate can follow the names the jobs log.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import create_model

from models.family import FAMILIES, FamilySpec, family
from shopml.config import ConfigModel, parse_config
from shopml.errors import ConfigError
from shopml.settings import CONFIG_DIR

PROMOTION_CONFIG = CONFIG_DIR / "promotion.toml"

# shape of promotion.toml: one optional table per family (an unknown table is an error)
_PromotionFile = create_model(
    "PromotionFile", __base__=ConfigModel, **{name: (dict | None, None) for name in FAMILIES}
)


def load_specs(path: str | Path | None = None) -> dict[str, FamilySpec]:
    """Each family's promotion rule with the overrides of `path` (default promotion.toml)."""
    path = Path(path) if path is not None else PROMOTION_CONFIG
    overrides: dict[str, dict] = {}
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        parsed = parse_config(raw, _PromotionFile, source=str(path))
        overrides = {k: v for k, v in parsed.model_dump().items() if v is not None}
    specs = {}
    for name, fam in FAMILIES.items():
        data = {**fam.promotion.model_dump(), **overrides.get(name, {}), "family": name}
        specs[name] = parse_config(data, FamilySpec, source=f"{path} [{name}]")
    return specs


def family_spec(family_name: str, path: str | Path | None = None) -> FamilySpec:
    """The promotion rule of `family_name` (defaults overridden by promotion.toml)."""
    return load_specs(path)[family(family_name).name]
