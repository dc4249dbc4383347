"""The built-in store generator: a coherent simulated shop, so shopml runs anywhere without downloads.

    from features.generator import GeneratorConfig, generate
    store = generate(GeneratorConfig(scale="tiny", seed=0))

Customers in taste segments browse a long-tail catalog with weekly and yearly seasonality and
promotions; sessions turn views into carts into orders (with returns and guest checkouts); card
payments carry fraud from compromised terminals, compromised cards and unusually large amounts,
labelled after an investigation delay. The promotion calendar and the list prices are published
as the known-future tables `promotions` and `prices`, each row with the time it was planned.
Same config, same tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from features.generator.calendar import NS_PER_DAY, day_intensity
from features.generator.catalog import make_catalog, prices_frame
from features.generator.config import SCALES, GeneratorConfig, Scale, ScaleSpec
from features.generator.customers import make_customers, make_segments
from features.generator.ids import make_ids
from features.generator.orders import make_orders, order_lines_frame
from features.generator.payments import make_payments
from features.generator.promotions import make_markdowns, make_promotions, promotions_frame
from features.generator.sessions import ProductSampler, simulate_sessions
from features.store import Store
from shopml.progress import progress_bar

__all__ = ["GENERATOR_VERSION", "SCALES", "GeneratorConfig", "Scale", "ScaleSpec", "generate"]

# Bumped whenever the same config would give different tables (caches of generated stores
# should key on it together with the config).
GENERATOR_VERSION = 2  # 2: promotions and prices tables

EVENT_NAMES = np.array(["view", "add_to_cart", "purchase"], dtype=object)
# New streams go last: SeedSequence children depend on their position only, so the existing
# streams (and the tables drawn from them) stay the same.
_STREAMS = (
    "catalog",
    "customers",
    "promotions",
    "sessions",
    "orders",
    "returns",
    "payments",
    "plans",
    "markdowns",
)


class _Stages:
    """The generator's progress: a bar over its stages, naming the one running (drawn only on
    a terminal, see `shopml.progress`)."""

    NAMES = ("catalog", "customers", "sessions", "orders", "payments", "tables")

    def __init__(self, enabled: bool, scale: str):
        self.bar = progress_bar(f"generate {scale}", len(self.NAMES), "stage", enabled)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        yield
        self.bar.update(1)
        if self.bar.n == self.bar.total:
            self.bar.close()


def generate(cfg: GeneratorConfig | None = None, progress: bool = False) -> Store:
    """Simulate a shop described by `cfg` and return its canonical tables (the five behavioural
    ones plus the planned `promotions` and `prices`).

    One timed stage per part, in the order the simulation needs them; kept as one function
    (a screen and a bit) so the whole pipeline reads top to bottom.
    """
    cfg = cfg or GeneratorConfig()
    spec = cfg.spec()
    days = spec.days
    rngs = _streams(cfg.seed)
    t0_ns = int(np.datetime64(cfg.start, "ns").astype("int64"))
    end_ns = t0_ns + days * NS_PER_DAY
    stages = _Stages(progress, cfg.scale)

    with stages.stage("catalog"):
        catalog = make_catalog(
            rngs["catalog"], spec.products, spec.categories, days, cfg.zipf_exponent
        )
        markdowns = make_markdowns(rngs["markdowns"], catalog, days, cfg.markdown_share)
        promos = make_promotions(
            rngs["promotions"], catalog, days, cfg.promo_share, cfg.promo_elasticity, markdowns
        )
        base = day_intensity(cfg.start, days, cfg.yearly_growth)
        day_weights = base * (1.0 + promos.mass)  # promotions bring extra traffic
        day_weights /= base.mean()
    with stages.stage("customers"):
        segments = make_segments(rngs["customers"], catalog, spec.segments)
        customers = make_customers(
            rngs["customers"], catalog, segments, spec.customers, cfg.start, days, base
        )
    with stages.stage("sessions"):
        sampler = ProductSampler(catalog, customers, segments, promos)
        events = simulate_sessions(
            rngs["sessions"], t0_ns, days, spec.sessions_per_customer_day, day_weights, sampler
        )
    with stages.stage("orders"):
        orders = make_orders(
            rngs["orders"], events, sampler, t0_ns, days, day_weights, cfg.guest_order_share
        )
        order_lines = order_lines_frame(
            rngs["returns"],
            orders,
            customers.ids,
            customers.country,
            catalog.ids,
            end_ns,
            cfg.return_rate,
        )
    with stages.stage("payments"):
        payments = make_payments(rngs["payments"], cfg, spec, customers, orders, t0_ns)
    with stages.stage("tables"):
        store = Store(
            products=catalog.to_frame(cfg.start),
            customers=customers.to_frame(segments),
            interactions=interactions_frame(events, customers.ids, catalog.ids),
            order_lines=order_lines,
            payments=payments,
            promotions=promotions_frame(rngs["plans"], promos, catalog, cfg.start),
            prices=prices_frame(rngs["plans"], catalog, cfg.start, markdowns),
            name=f"generated-{cfg.scale}-seed{cfg.seed}",
        )
    return store


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent stream per part, so changing one part leaves the others' draws unchanged."""
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in seeds), strict=True))


def interactions_frame(events, customer_ids: np.ndarray, product_ids: np.ndarray) -> pd.DataFrame:
    """The interactions table of the data contract from the simulated events."""
    session_ids = make_ids("S", events.n_sessions, 8)
    return pd.DataFrame(
        {
            "customer_id": customer_ids[events.customer],
            "product_id": product_ids[events.product],
            "timestamp": events.ts.astype("datetime64[ns]"),
            "event": EVENT_NAMES[events.event],
            "quantity": events.quantity.astype(np.int64),
            "session_id": session_ids[events.session],
        }
    )
