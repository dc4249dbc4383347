"""Orders: purchases become order lines at the promotional price, plus guest orders and returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.generator.calendar import (
    NS_PER_DAY,
    NS_PER_SECOND,
    sample_days,
    sample_seconds_of_day,
)
from features.generator.customers import COUNTRIES, COUNTRY_P
from features.generator.ids import make_ids
from features.generator.sessions import Events, ProductSampler, pick_products

CANCEL_SHARE = 0.3  # of returned lines: cancelled within a day; the rest returned within a month


@dataclass
class Orders:
    """Order lines (positive quantities) sorted by time; `customer` is -1 for guests."""

    order: np.ndarray  # dense order number in time order
    customer: np.ndarray
    product: np.ndarray
    ts: np.ndarray
    quantity: np.ndarray
    unit_price: np.ndarray
    n_orders: int


def make_orders(
    rng: np.random.Generator,
    events: Events,
    sampler: ProductSampler,
    t0_ns: int,
    days: int,
    day_weights: np.ndarray,
    guest_share: float,
) -> Orders:
    """Registered customers' orders (one per session with purchases) and guest orders, as
    order lines numbered in time order, at the day's (discounted) price."""
    reg_order = events.buy_session
    n_reg = int(np.unique(reg_order).size)
    gl_order, gl_ts, gl_prod, gl_qty = guest_orders(
        rng, sampler, t0_ns, day_weights, guest_share, n_reg
    )
    offset = int(reg_order.max()) + 1 if reg_order.size else 0
    order_key = np.concatenate([reg_order, offset + gl_order])
    customer = np.concatenate([events.buy_customer, np.full(gl_order.size, -1)])
    product = np.concatenate([events.buy_product, gl_prod])
    ts = np.concatenate([events.buy_ts, gl_ts])
    qty = np.concatenate([events.buy_qty, gl_qty])
    order = np.lexsort((order_key, ts))
    order_key, customer, product, ts, qty = (
        a[order] for a in (order_key, customer, product, ts, qty)
    )
    number, n_orders = _number_in_time_order(order_key)
    day = (ts - t0_ns) // NS_PER_DAY
    discount = sampler.promos.discount_of(product, np.clip(day, 0, days - 1))
    unit_price = np.round(sampler.catalog.price[product] * (1.0 - discount), 2)
    return Orders(number, customer, product, ts, qty, unit_price, n_orders)


def guest_orders(
    rng: np.random.Generator,
    sampler: ProductSampler,
    t0_ns: int,
    day_weights: np.ndarray,
    guest_share: float,
    n_reg: int,
):
    """Guests: like registered orders in time, products from best-sellers, promotions and
    bundles. Returns (guest order, time ns, product, quantity) per order line."""
    n_guest = rng.poisson(guest_share / (1.0 - guest_share) * n_reg) if n_reg else 0
    g_day = sample_days(rng, day_weights, np.zeros(n_guest, dtype=np.int64))
    g_ts = t0_ns + g_day * NS_PER_DAY + sample_seconds_of_day(rng, n_guest) * NS_PER_SECOND
    g_lines = 1 + rng.poisson(0.6, n_guest)
    gl_order = np.repeat(np.arange(n_guest), g_lines)
    first = np.arange(gl_order.size) == np.repeat(np.cumsum(g_lines) - g_lines, g_lines)
    promo_p = sampler.promos.mass / (1.0 + sampler.promos.mass)
    gl_day = g_day[gl_order]
    src = np.where(rng.random(gl_order.size) < promo_p[gl_day], 3, 2)
    nobody = np.zeros(gl_order.size, dtype=np.int64)
    head = pick_products(rng, sampler, src, nobody, gl_day)
    head_of_order = head[np.repeat(np.cumsum(g_lines) - g_lines, g_lines)]
    mate = pick_products(
        rng, sampler, np.full(gl_order.size, 4), nobody, gl_day, anchor=np.maximum(head_of_order, 0)
    )
    gl_prod = np.where(first | (rng.random(gl_order.size) < 0.5), head, mate)
    ok = gl_prod >= 0
    gl_order, gl_prod = gl_order[ok], gl_prod[ok]
    gl_qty = 1 + rng.poisson(np.where(sampler.catalog.staple[gl_prod], 0.7, 0.2))
    return gl_order, g_ts[gl_order], gl_prod, gl_qty


def _number_in_time_order(order_key: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense order numbers of time-sorted lines, in order of each order's first line."""
    _, dense = np.unique(order_key, return_inverse=True)
    first_seen = np.full(dense.max() + 1 if dense.size else 0, np.iinfo(np.int64).max)
    np.minimum.at(first_seen, dense, np.arange(dense.size))
    rank = np.empty_like(first_seen)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(first_seen.size)
    return rank[dense], int(first_seen.size)


def order_lines_frame(
    rng: np.random.Generator,
    orders: Orders,
    customer_ids: np.ndarray,
    customer_country: np.ndarray,
    product_ids: np.ndarray,
    end_ns: int,
    return_rate: float,
    order_offset: int = 0,
) -> pd.DataFrame:
    """The order_lines table: sales plus cancellations and returns as negative lines (order
    ids numbered from `order_offset`)."""
    n = orders.order.size
    back = np.flatnonzero(rng.random(n) < return_rate)
    cancel = rng.random(back.size) < CANCEL_SHARE
    delay_s = np.where(
        cancel,
        rng.integers(600, 86_400, back.size),
        rng.integers(3 * 86_400, 30 * 86_400, back.size),
    )
    r_ts = orders.ts[back] + delay_s * NS_PER_SECOND
    back, r_ts = back[r_ts < end_ns], r_ts[r_ts < end_ns]

    rows = np.concatenate([np.arange(n), back])
    ts = np.concatenate([orders.ts, r_ts])
    qty = np.concatenate([orders.quantity, -orders.quantity[back]])
    sort = np.argsort(ts)
    rows, ts, qty = rows[sort], ts[sort], qty[sort]

    order_ids = make_ids("O", orders.n_orders, 7, order_offset)
    cust = orders.customer[rows]
    guest = cust < 0
    guest_country = COUNTRIES[rng.choice(COUNTRIES.size, orders.n_orders, p=COUNTRY_P)]
    country = np.where(
        guest, guest_country[orders.order[rows]], customer_country[np.maximum(cust, 0)]
    )
    cust_id = customer_ids[np.maximum(cust, 0)]
    cust_id[guest] = None
    return pd.DataFrame(
        {
            "order_id": order_ids[orders.order[rows]],
            "customer_id": cust_id,
            "product_id": product_ids[orders.product[rows]],
            "timestamp": ts.astype("datetime64[ns]"),
            "quantity": qty.astype(np.int64),
            "unit_price": orders.unit_price[rows],
            "country": country,
        }
    )
