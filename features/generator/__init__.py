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
from features.generator.chunks import Chunk, IdOffsets
from features.generator.config import SCALES, GeneratorConfig, Scale, ScaleSpec
from features.generator.customers import make_customers, make_segments
from features.generator.ids import make_ids
from features.generator.orders import make_orders, order_lines_frame
from features.generator.payments import make_payments
from features.generator.promotions import make_markdowns, make_promotions, promotions_frame
from features.generator.sessions import ProductSampler, simulate_sessions
from features.store import Store
from shopml.errors import DataError
from shopml.progress import progress_bar

__all__ = [
    "GENERATOR_VERSION",
    "SCALES",
    "GeneratorConfig",
    "Scale",
    "ScaleSpec",
    "generate",
    "generate_partitioned",
]

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

    A scale simulated in chunks (`xlarge`) does not fit one process: `generate_partitioned`
    writes it to disk a chunk at a time.
    """
    cfg = cfg or GeneratorConfig()
    if cfg.spec().chunks > 1:
        raise DataError(
            f"scale {cfg.scale}: {cfg.spec().chunks} chunks, too big for one table in memory; "
            "write it with `generate_partitioned(cfg, out)` (`shopml generate --scale "
            f"{cfg.scale}`) and read it as partitioned Parquet"
        )
    return _simulate(cfg, _streams(cfg.seed), None, progress)


def _simulate(
    cfg: GeneratorConfig,
    rngs: dict[str, np.random.Generator],
    chunk: Chunk | None,
    progress: bool = False,
) -> Store:
    """The tables of a whole shop (`chunk` None), or of one customer chunk of a partitioned
    one: its customers, their sessions, orders and payments, over the shared catalog.

    One timed stage per part, in the order the simulation needs them; kept as one function
    (a screen and a bit) so the whole pipeline reads top to bottom.
    """
    spec = cfg.spec()
    days = spec.days
    t0_ns = int(np.datetime64(cfg.start, "ns").astype("int64"))
    end_ns = t0_ns + days * NS_PER_DAY
    stages = _Stages(progress, cfg.scale if chunk is None else f"{cfg.scale} chunk {chunk.index}")
    shared = rngs if chunk is None else chunk.shared

    with stages.stage("catalog"):
        catalog = make_catalog(
            shared["catalog"], spec.products, spec.categories, days, cfg.zipf_exponent
        )
        markdowns = make_markdowns(shared["markdowns"], catalog, days, cfg.markdown_share)
        promos = make_promotions(
            shared["promotions"], catalog, days, cfg.promo_share, cfg.promo_elasticity, markdowns
        )
        base = day_intensity(cfg.start, days, cfg.yearly_growth)
        day_weights = base * (1.0 + promos.mass)  # promotions bring extra traffic
        day_weights /= base.mean()
    with stages.stage("customers"):
        segments = make_segments(shared["customers"], catalog, spec.segments)
        n_customers, ids = spec.customers, chunk.ids if chunk else IdOffsets()
        if chunk is not None:
            n_customers = chunk.customers
        customers = make_customers(
            rngs["customers"], catalog, segments, n_customers, cfg.start, days, base, ids.customer
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
            ids.order,
        )
    with stages.stage("payments"):
        bad = None if chunk is None else chunk.bad_terminal_days
        payments = make_payments(
            rngs["payments"], cfg, spec, customers, orders, t0_ns, bad, (ids.card, ids.transaction)
        )
    with stages.stage("tables"):
        interactions = interactions_frame(events, customers.ids, catalog.ids, ids.session)
        store = Store(
            customers=customers.to_frame(segments),
            interactions=interactions,
            order_lines=order_lines,
            payments=payments,
            name=f"generated-{cfg.scale}-seed{cfg.seed}",
        )
        if chunk is None or chunk.index == 0:  # the shared tables, once
            store.products = catalog.to_frame(cfg.start)
            store.promotions = promotions_frame(shared["plans"], promos, catalog, cfg.start)
            store.prices = prices_frame(shared["plans"], catalog, cfg.start, markdowns)
        if chunk is not None:
            chunk.counts = IdOffsets(
                customer=n_customers,
                card=2 * n_customers,
                transaction=len(payments),
                session=int(events.n_sessions),
                order=int(orders.n_orders),
            )
    return store


def _streams(seed: int, chunk: int | None = None) -> dict[str, np.random.Generator]:
    """One independent stream per part, so changing one part leaves the others' draws unchanged;
    chunk k of a partitioned store has its own (the root's child 1000 + k)."""
    root = np.random.SeedSequence(seed)
    if chunk is not None:
        root = np.random.SeedSequence(seed, spawn_key=(1000 + chunk,))
    seeds = root.spawn(len(_STREAMS))
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in seeds), strict=True))


def streams(seed: int) -> dict[str, np.random.Generator]:
    """The named random streams `generate` draws a whole shop from (fresh generators, in the
    state `generate` starts them in). A read-only hook for studies that rebuild the simulated
    world and redraw only its demand (`experiments.forecast_bound`); it changes no table."""
    return _streams(seed)


def generate_partitioned(
    cfg: GeneratorConfig, out, progress: bool = False, overwrite: bool = False
):
    """Simulate `cfg` a customer chunk at a time and write it as a partitioned Parquet store
    (`features.generator.partitioned.write`); returns its row counts per table."""
    from features.generator import partitioned

    return partitioned.write(cfg, out, progress=progress, overwrite=overwrite)


def interactions_frame(
    events, customer_ids: np.ndarray, product_ids: np.ndarray, session_offset: int = 0
) -> pd.DataFrame:
    """The interactions table of the data contract from the simulated events."""
    session_ids = make_ids("S", events.n_sessions, 8, session_offset)
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
