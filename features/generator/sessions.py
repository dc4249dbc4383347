"""Browsing sessions: which products a customer looks at, and the view -> cart -> purchase funnel.

Each session starts from an anchor product (a personal favourite, the segment's taste, the
global best-sellers or today's promotions) and continues with products bought together with
it (its bundle) or more of the customer's taste. All sampling is vectorised over sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.generator.calendar import (
    NS_PER_DAY,
    NS_PER_SECOND,
    sample_days,
    sample_seconds_of_day,
)
from features.generator.catalog import Catalog
from features.generator.customers import N_FAVOURITES, Customers, Segments
from features.generator.promotions import Promotions

VIEW, CART, PURCHASE = 0, 1, 2
# where a session's anchor comes from (when it is not a promotion)
P_FAVOURITE, P_SEGMENT = 0.4, 0.5  # the rest: global best-sellers
# where the other products of a session come from
P_BUNDLE, P_MORE_SEGMENT = 0.5, 0.3  # the rest: personal favourites
MEAN_EXTRA_ITEMS = 2.3
P_CART_BASE, P_CART_ANCHOR, P_CART_FAVOURITE, PROMO_CART_BOOST = 0.07, 0.22, 0.15, 1.6
P_CART_WITH_ANCHOR = 0.3  # a bundle mate of a carted anchor is often bought with it
P_BUY_GIVEN_CART = 0.55
MAX_RESAMPLE = 6


@dataclass
class Events:
    """Interactions (sorted by time) and the purchased items that become order lines."""

    customer: np.ndarray
    product: np.ndarray
    ts: np.ndarray  # int64 ns
    event: np.ndarray  # VIEW, CART or PURCHASE
    quantity: np.ndarray
    session: np.ndarray  # session number, dense 0..n_sessions-1
    n_sessions: int
    # purchases, one row per bought item
    buy_session: np.ndarray
    buy_customer: np.ndarray
    buy_product: np.ndarray
    buy_ts: np.ndarray
    buy_qty: np.ndarray


class ProductSampler:
    """The ways of picking a product, each vectorised over rows."""

    def __init__(
        self, catalog: Catalog, customers: Customers, segments: Segments, promos: Promotions
    ):
        self.catalog = catalog
        self.customers = customers
        self.segments = segments
        self.promos = promos
        self.pop_cum = np.cumsum(catalog.popularity)

    def favourite(self, rng, customer, day=None):
        rank = (N_FAVOURITES * rng.random(customer.size) ** 2).astype(np.int64)
        return self.customers.favourites[customer, rank]

    def segment(self, rng, customer, day=None):
        return self.segments.sample(rng, self.customers.segment[customer], self.catalog.n)

    def best_seller(self, rng, customer, day=None):
        pick = np.searchsorted(self.pop_cum, rng.random(customer.size) * self.pop_cum[-1])
        return pick.clip(0, self.catalog.n - 1)

    def promoted(self, rng, customer, day):
        return self.promos.sample(rng, day)

    def bundle_mate(self, rng, anchor):
        c = self.catalog
        b = c.bundle_of[anchor]
        k = (rng.random(anchor.size) * c.bundle_size[b]).astype(np.int64)
        return c.bundle_members[c.bundle_start[b] + k]


def pick_products(
    rng,
    sampler: ProductSampler,
    source: np.ndarray,
    customer: np.ndarray,
    day: np.ndarray,
    anchor: np.ndarray | None = None,
) -> np.ndarray:
    """Product per row from its source (0 favourite, 1 segment, 2 best-seller, 3 promo, 4 bundle).

    Products not on sale that day are redrawn a few times; rows still invalid get -1.
    """
    fns = (sampler.favourite, sampler.segment, sampler.best_seller, sampler.promoted)
    out = np.full(source.size, -1, dtype=np.int64)
    todo = np.arange(source.size)
    for _ in range(MAX_RESAMPLE):
        if todo.size == 0:
            break
        src = source[todo]
        for code in np.unique(src):
            rows = todo[src == code]
            if code == 4:
                out[rows] = sampler.bundle_mate(rng, anchor[rows])
            else:
                out[rows] = fns[code](rng, customer[rows], day[rows])
        bad = ~sampler.catalog.on_sale(out[todo], day[todo])
        todo = todo[bad]
    out[todo] = -1
    return out


@dataclass
class Sessions:
    """Who browses when: one row per session."""

    customer: np.ndarray
    day: np.ndarray
    start: np.ndarray  # int64 ns

    @property
    def n(self) -> int:
        return int(self.customer.size)


@dataclass
class Items:
    """The products looked at in the sessions: one row per (session, position), 0 the anchor."""

    session: np.ndarray
    pos: np.ndarray
    source: np.ndarray  # the `pick_products` source code of the product
    product: np.ndarray
    customer: np.ndarray
    day: np.ndarray


@dataclass
class Funnel:
    """What happened to each item: views, cart, purchase and quantity."""

    n_views: np.ndarray
    carted: np.ndarray
    bought: np.ndarray
    qty: np.ndarray


@dataclass
class Times:
    """When each item was first viewed, carted and bought (int64 ns)."""

    view: np.ndarray
    cart: np.ndarray
    buy: np.ndarray  # the session's checkout
    sessions: np.ndarray  # numbers of the sessions that kept an item, ascending


VIEW_STEP = 20 * NS_PER_SECOND  # between repeated views of one product


def simulate_sessions(
    rng: np.random.Generator,
    t0_ns: int,
    days: int,
    sessions_per_customer_day: float,
    day_weights: np.ndarray,
    sampler: ProductSampler,
) -> Events:
    """Sessions of every customer and their view -> cart -> purchase events, sorted by time.

    The steps draw from `rng` in a fixed order (the same seed gives the same events).
    """
    sessions = draw_sessions(
        rng, t0_ns, days, sessions_per_customer_day, day_weights, sampler.customers
    )
    source, anchor = draw_anchors(rng, sampler, sessions)
    items = draw_items(rng, sampler, sessions, source, anchor)
    funnel = draw_funnel(rng, sampler, items, sessions.n)
    times = draw_times(rng, items, sessions, funnel.n_views)
    return events_of(sessions, items, funnel, times)


def draw_sessions(
    rng: np.random.Generator,
    t0_ns: int,
    days: int,
    sessions_per_customer_day: float,
    day_weights: np.ndarray,
    cust: Customers,
) -> Sessions:
    """How many sessions each customer has, on which days and when they start (after signup)."""
    cum = np.concatenate([[0.0], np.cumsum(day_weights)])
    mass = cum[days] - cum[cust.first_day]
    n_sess = rng.poisson(cust.activity * sessions_per_customer_day * mass)
    s_cust = np.repeat(np.arange(cust.n), n_sess)
    s_day = sample_days(rng, day_weights, cust.first_day[s_cust])
    s_start = t0_ns + s_day * NS_PER_DAY + sample_seconds_of_day(rng, s_cust.size) * NS_PER_SECOND
    s_start = np.maximum(s_start, cust.signup_ns[s_cust] + 60 * NS_PER_SECOND)
    s_day = (s_start - t0_ns) // NS_PER_DAY
    ok = s_day < days
    return Sessions(s_cust[ok], s_day[ok], s_start[ok])


def draw_anchors(
    rng: np.random.Generator, sampler: ProductSampler, sessions: Sessions
) -> tuple[np.ndarray, np.ndarray]:
    """The anchor product of each session and where it came from (-1: none on sale)."""
    n_s = sessions.n
    promo_p = sampler.promos.mass / (1.0 + sampler.promos.mass)
    u = rng.random(n_s)
    src = np.where(u < P_FAVOURITE, 0, np.where(u < P_FAVOURITE + P_SEGMENT, 1, 2))
    src = np.where(rng.random(n_s) < promo_p[sessions.day], 3, src)
    return src, pick_products(rng, sampler, src, sessions.customer, sessions.day)


def draw_items(
    rng: np.random.Generator,
    sampler: ProductSampler,
    sessions: Sessions,
    src: np.ndarray,
    anchor: np.ndarray,
) -> Items:
    """The anchor and the other products of each session (bundle mates, taste, favourites)."""
    length = 1 + rng.poisson(MEAN_EXTRA_ITEMS, sessions.n)
    i_sess = np.repeat(np.arange(sessions.n), length)
    pos = np.arange(i_sess.size) - np.repeat(np.cumsum(length) - length, length)
    u = rng.random(i_sess.size)
    i_src = np.where(u < P_BUNDLE, 4, np.where(u < P_BUNDLE + P_MORE_SEGMENT, 1, 0))
    i_src[pos == 0] = src
    extra = pos > 0
    i_prod = np.empty(i_sess.size, dtype=np.int64)
    i_prod[~extra] = anchor
    i_prod[extra] = pick_products(
        rng,
        sampler,
        i_src[extra],
        sessions.customer[i_sess[extra]],
        sessions.day[i_sess[extra]],
        anchor=np.maximum(anchor[i_sess[extra]], 0),
    )
    keep = i_prod >= 0
    if extra.any():  # a bundle of an anchor that was dropped has no meaning
        keep &= anchor[i_sess] >= 0
    i_sess = i_sess[keep]
    return Items(
        session=i_sess,
        pos=pos[keep],
        source=i_src[keep],
        product=i_prod[keep],
        customer=sessions.customer[i_sess],
        day=sessions.day[i_sess],
    )


def draw_funnel(
    rng: np.random.Generator, sampler: ProductSampler, items: Items, n_sessions: int
) -> Funnel:
    """Views, then some carts (anchors, favourites, promotions and mates of a carted anchor
    more often), then some purchases; quantities larger for staples."""
    i_sess, pos, i_src = items.session, items.pos, items.source
    discounted = sampler.promos.discount_of(items.product, items.day) > 0
    p_cart = P_CART_BASE + P_CART_ANCHOR * (pos == 0) + P_CART_FAVOURITE * (i_src == 0)
    p_cart = np.minimum(np.where(discounted, p_cart * PROMO_CART_BOOST, p_cart), 0.9)
    u = rng.random(i_sess.size)
    anchor_carted = np.zeros(n_sessions, dtype=bool)
    anchor_carted[i_sess[pos == 0]] = u[pos == 0] < p_cart[pos == 0]
    p_cart = p_cart + P_CART_WITH_ANCHOR * ((i_src == 4) & anchor_carted[i_sess])
    carted = u < p_cart
    bought = carted & (rng.random(i_sess.size) < P_BUY_GIVEN_CART)
    n_views = 1 + rng.poisson(0.35, i_sess.size)
    qty = 1 + rng.poisson(np.where(sampler.catalog.staple[items.product], 0.7, 0.2))
    return Funnel(n_views=n_views, carted=carted, bought=bought, qty=qty)


def draw_times(
    rng: np.random.Generator, items: Items, sessions: Sessions, n_views: np.ndarray
) -> Times:
    """Products are looked at one after the other; checkout closes the session."""
    i_sess = items.session
    gaps = rng.exponential(40.0, i_sess.size)
    csum = np.cumsum(gaps)
    sess_ids, first_item = np.unique(i_sess, return_index=True)
    first_of = np.empty(sessions.n, dtype=np.int64)
    first_of[sess_ids] = first_item
    offset = csum - csum[first_of[i_sess]]  # seconds since the session's first view
    view_t = sessions.start[i_sess] + offset.astype(np.int64) * NS_PER_SECOND
    cart_t = (
        view_t
        + n_views * VIEW_STEP
        + rng.exponential(15.0, i_sess.size).astype(np.int64) * NS_PER_SECOND
    )
    last_cart = np.maximum.reduceat(cart_t, first_item)
    checkout = np.empty(sessions.n, dtype=np.int64)
    checkout[sess_ids] = (
        last_cart + (30 + rng.exponential(60.0, sess_ids.size)).astype(np.int64) * NS_PER_SECOND
    )
    return Times(view=view_t, cart=cart_t, buy=checkout[i_sess], sessions=sess_ids)


def events_of(sessions: Sessions, items: Items, funnel: Funnel, times: Times) -> Events:
    """The interactions (one row per view, cart and purchase) sorted by time, sessions
    renumbered densely in order of their start, and the purchased items."""
    n_views, qty = funnel.n_views, funnel.qty
    v_rows = np.repeat(np.arange(items.session.size), n_views)
    v_k = np.arange(v_rows.size) - np.repeat(np.cumsum(n_views) - n_views, n_views)
    c_rows = np.flatnonzero(funnel.carted)
    b_rows = np.flatnonzero(funnel.bought)
    rows = np.concatenate([v_rows, c_rows, b_rows])
    ts = np.concatenate(
        [times.view[v_rows] + v_k * VIEW_STEP, times.cart[c_rows], times.buy[b_rows]]
    )
    event = np.concatenate(
        [
            np.full(v_rows.size, VIEW, np.int8),
            np.full(c_rows.size, CART, np.int8),
            np.full(b_rows.size, PURCHASE, np.int8),
        ]
    )
    quantity = np.concatenate([np.ones(v_rows.size, np.int64), qty[c_rows], qty[b_rows]])
    order = np.argsort(ts)
    rows, ts, event, quantity = rows[order], ts[order], event[order], quantity[order]
    sess_rank = np.full(sessions.n, -1, dtype=np.int64)
    used = times.sessions[np.argsort(sessions.start[times.sessions], kind="stable")]
    sess_rank[used] = np.arange(used.size)
    return Events(
        customer=items.customer[rows],
        product=items.product[rows],
        ts=ts,
        event=event,
        quantity=quantity,
        session=sess_rank[items.session[rows]],
        n_sessions=int(used.size),
        buy_session=sess_rank[items.session[b_rows]],
        buy_customer=items.customer[b_rows],
        buy_product=items.product[b_rows],
        buy_ts=times.buy[b_rows],
        buy_qty=qty[b_rows],
    )
