"""What "better" means per model family: the primary metric, its direction, the margin and guards.

The promotion gate and the comparison report read these specs. Defaults live here; the file
`experiments/configs/promotion.toml` overrides any field per family (metric names, margin,
guards), so the gate can follow the metric names the training jobs actually log.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shopml.config import ConfigModel, parse_config
from shopml.errors import ConfigError
from shopml.settings import CONFIG_DIR

FAMILY_NAMES = ("recommender", "fraud", "forecast")
PROMOTION_CONFIG = CONFIG_DIR / "promotion.toml"


class Guard(ConfigModel):
    """A metric the challenger must not make worse than the champion by more than `tolerance`.

    `direction` says which way is better: "higher", "lower", or "target" (closer to `target`
    is better, e.g. a P10-P90 coverage near 0.8 or a bias near 0). `min` / `max` are optional
    absolute limits the challenger must also respect.
    """

    metric: str
    direction: Literal["higher", "lower", "target"]
    tolerance: float = Field(0.0, ge=0)
    target: float | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _target_given(self) -> Guard:
        if self.direction == "target" and self.target is None:
            raise ValueError(f"guard {self.metric!r}: direction 'target' needs a `target` value")
        return self


class FamilySpec(ConfigModel):
    """The promotion rule of one family."""

    family: str
    primary: str
    direction: Literal["higher", "lower"]
    margin: float = Field(0.0, ge=0)
    margin_kind: Literal["absolute", "relative"] = "absolute"
    guards: list[Guard] = Field(default_factory=list)
    curves: list[str] = Field(default_factory=list)
    key_metrics: list[str] = Field(default_factory=list)

    def improvement(self, challenger: float, champion: float) -> float:
        """How much better the challenger is, in the margin's unit (positive = better)."""
        gain = challenger - champion if self.direction == "higher" else champion - challenger
        if self.margin_kind == "relative":
            return gain / abs(champion) if champion else (float("inf") if gain > 0 else 0.0)
        return gain

    def shown_metrics(self) -> list[str]:
        """Primary, guards and key metrics, in that order, without repeats."""
        names = [self.primary, *(g.metric for g in self.guards), *self.key_metrics]
        return list(dict.fromkeys(names))


DEFAULT_SPECS: dict[str, FamilySpec] = {
    "recommender": FamilySpec(
        family="recommender",
        primary="ndcg_at_20",
        direction="higher",
        margin=0.002,
        guards=[Guard(metric="coverage_at_20", direction="higher", tolerance=0.05)],
        curves=["recall_at_k", "coverage_at_k", "ndcg_at_k"],
        key_metrics=["recall_at_20", "map_at_20", "hit_rate_at_20"],
    ),
    "fraud": FamilySpec(
        family="fraud",
        primary="average_precision",
        direction="higher",
        margin=0.005,
        guards=[
            Guard(metric="calibration_error", direction="lower", tolerance=0.01),
            Guard(metric="review_rate", direction="lower", tolerance=0.005),
        ],
        curves=["pr_curve", "calibration", "roc_curve"],
        key_metrics=["auc_roc", "card_precision_at_100", "brier_score"],
    ),
    "forecast": FamilySpec(
        family="forecast",
        primary="wape",
        direction="lower",
        margin=0.005,
        guards=[
            Guard(metric="coverage_p10_p90", direction="target", target=0.8, tolerance=0.03),
            Guard(metric="bias", direction="target", target=0.0, tolerance=0.02),
        ],
        curves=["error_by_horizon", "wape_by_horizon"],
        key_metrics=["mase", "rmsse", "pinball_loss"],
    ),
}


class _PromotionFile(ConfigModel):
    """Shape of promotion.toml: one optional table per family, each field optional."""

    recommender: dict | None = None
    fraud: dict | None = None
    forecast: dict | None = None


def check_family(family: str) -> str:
    """Return `family` if known, else raise a ConfigError listing the known ones."""
    if family not in FAMILY_NAMES:
        raise ConfigError(
            f"unknown model family {family!r}; expected one of {', '.join(FAMILY_NAMES)}"
        )
    return family


def load_specs(path: str | Path | None = None) -> dict[str, FamilySpec]:
    """Default specs with the overrides of `path` (default promotion.toml) applied field by field."""
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
    for family, default in DEFAULT_SPECS.items():
        data = default.model_dump()
        data.update(overrides.get(family, {}))
        data["family"] = family
        specs[family] = parse_config(data, FamilySpec, source=f"{path} [{family}]")
    return specs


def family_spec(family: str, path: str | Path | None = None) -> FamilySpec:
    """The promotion rule of `family` (defaults overridden by promotion.toml)."""
    return load_specs(path)[check_family(family)]
