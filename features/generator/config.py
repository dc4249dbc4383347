"""What to simulate: the scale presets and every tunable of the built-in store generator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import Field

from shopml.config import ConfigModel

Scale = Literal["tiny", "small", "medium", "large", "xlarge"]


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of one scale preset; rates are per customer and per day of activity."""

    customers: int
    products: int
    categories: int
    segments: int
    days: int
    terminals: int
    sessions_per_customer_day: float
    card_tx_per_customer_day: float
    chunks: int = 1  # > 1: simulated and written in customer chunks (`generate_partitioned`)


SCALES: dict[str, ScaleSpec] = {
    # ~40k interactions, ~10k payments: generated in about a second, for tests.
    "tiny": ScaleSpec(300, 200, 10, 5, 90, 150, 0.23, 0.5),
    # ~500k interactions over a year.
    "small": ScaleSpec(5_000, 2_000, 16, 8, 365, 2_000, 0.048, 0.25),
    # ~2.5M interactions over a year.
    "medium": ScaleSpec(20_000, 5_000, 20, 12, 365, 5_000, 0.059, 0.2),
    # >= 10M interactions over two years.
    "large": ScaleSpec(60_000, 20_000, 30, 16, 730, 10_000, 0.042, 0.1),
    # 5x large (~55M interactions, ~23M payments): never whole in memory, written as a
    # partitioned Parquet dataset one chunk of 30k customers at a time.
    "xlarge": ScaleSpec(270_000, 40_000, 40, 16, 730, 50_000, 0.042, 0.1, chunks=9),
}


class GeneratorConfig(ConfigModel):
    """The simulated shop: a scale preset, a seed, the period and the behaviour knobs.

    Equal configs give identical tables. Sizes come from `SCALES[scale]`; `days`, `customers`
    and `products` override the preset when given.
    """

    scale: Scale = "small"
    seed: int = Field(default=0, ge=0)
    start: date = date(2023, 9, 1)
    days: int | None = Field(default=None, ge=14, le=3650)
    customers: int | None = Field(default=None, ge=20)
    products: int | None = Field(default=None, ge=20)

    # Demand
    yearly_growth: float = Field(default=0.1, ge=-0.9, le=5.0)
    zipf_exponent: float = Field(default=1.0, gt=0.0, le=3.0)
    promo_share: float = Field(default=0.02, ge=0.0, le=0.5)
    promo_elasticity: float = Field(default=2.0, ge=0.0, le=10.0)
    # share of products given one permanent list-price cut (markdown) during the period; 0 keeps
    # the generator's tables identical to version 1 (list prices then never change)
    markdown_share: float = Field(default=0.0, ge=0.0, le=1.0)
    # Orders
    guest_order_share: float = Field(default=0.08, ge=0.0, lt=1.0)
    return_rate: float = Field(default=0.03, ge=0.0, le=0.5)
    # Payments and fraud (the Fraud Detection Handbook's three scenarios)
    large_amount_threshold: float = Field(default=220.0, gt=0.0)
    terminal_compromise_rate: float = Field(default=1.5e-4, ge=0.0, le=0.1)
    terminal_compromise_days: int = Field(default=28, ge=1, le=365)
    card_compromise_rate: float = Field(default=4e-4, ge=0.0, le=0.1)
    card_compromise_days: int = Field(default=14, ge=1, le=365)
    card_fraud_share: float = Field(default=1 / 3, gt=0.0, le=1.0)
    label_delay_mean_days: float = Field(default=7.0, ge=1.0, le=60.0)
    label_delay_max_days: int = Field(default=30, ge=1, le=365)

    def spec(self) -> ScaleSpec:
        """The scale preset with this config's overrides applied."""
        base = SCALES[self.scale]
        return ScaleSpec(
            customers=self.customers or base.customers,
            products=self.products or base.products,
            categories=base.categories,
            segments=base.segments,
            days=self.days or base.days,
            terminals=base.terminals,
            sessions_per_customer_day=base.sessions_per_customer_day,
            card_tx_per_customer_day=base.card_tx_per_customer_day,
            chunks=base.chunks,
        )
