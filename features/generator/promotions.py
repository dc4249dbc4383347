"""Promotions: product and category windows that cut the price and lift demand.

The windows are also published as the `promotions` table of the data contract, each with the
time it was planned: product promotions 1-8 weeks ahead, category campaigns 4-13 weeks ahead
(drawn from their own random stream, so publishing them changes no other table).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.generator.calendar import NS_PER_DAY
from features.generator.catalog import Catalog


@dataclass
class Promotions:
    """Discounted (product, day) pairs, sorted by key = product * days + day."""

    days: int
    key: np.ndarray
    product: np.ndarray
    day: np.ndarray
    discount: np.ndarray  # fraction off the list price
    lift: np.ndarray  # demand multiplier
    weight: np.ndarray  # extra demand: popularity x (lift - 1)
    day_start: (
        np.ndarray
    )  # rows of day d (in `by_day` order) are by_day[day_start[d]:day_start[d+1]]
    by_day: np.ndarray
    by_day_cum: np.ndarray  # cumulative weight in by_day order
    mass: np.ndarray  # total extra demand per day
    windows: tuple = ()  # (product, length, first, discount) of the product promotions
    campaigns: tuple = ()  # (category, length, first, discount) of the category promotions
    markdowns: tuple = ()  # (product, first day, cut) of the permanent list-price cuts

    def discount_of(self, product: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Discount applying to each (product, day); 0 when no promotion runs."""
        if self.key.size == 0:
            return np.zeros(product.size)
        k = product.astype(np.int64) * self.days + day
        pos = np.searchsorted(self.key, k).clip(0, self.key.size - 1)
        return np.where(self.key[pos] == k, self.discount[pos], 0.0)

    def sample(self, rng: np.random.Generator, day: np.ndarray) -> np.ndarray:
        """A promoted product for each given day (days must have mass > 0)."""
        lo = self.day_start[day]
        hi = self.day_start[day + 1]
        base = np.where(lo > 0, self.by_day_cum[np.maximum(lo - 1, 0)], 0.0)
        target = base + rng.random(day.size) * (self.by_day_cum[hi - 1] - base)
        pos = np.searchsorted(self.by_day_cum, target, side="right")
        pos = np.clip(pos, lo, hi - 1)
        return self.product[self.by_day[pos]]


def make_promotions(
    rng: np.random.Generator,
    catalog: Catalog,
    days: int,
    share: float,
    elasticity: float,
    markdowns: tuple = (),
) -> Promotions:
    """Discount windows of products and whole categories, as the best discount per
    (product, day) on sale, with the extra demand each brings; `markdowns` (from
    `make_markdowns`) are permanent cuts that act as a discount from their day to the end."""
    windows, campaigns = _windows(rng, catalog, days, share)
    return promotions_of(catalog, days, elasticity, windows, campaigns, markdowns)


def promotions_of(
    catalog: Catalog,
    days: int,
    elasticity: float,
    windows: tuple,
    campaigns: tuple,
    markdowns: tuple = (),
) -> Promotions:
    """The calendar of given product `windows` and category `campaigns` (as in
    `Promotions.windows` / `.campaigns`) and `markdowns`: what `make_promotions` builds from
    the windows it draws. Also a read-only hook for studies that swap some windows for others
    (`experiments.forecast_bound`); it draws nothing."""
    expanded = _expand(catalog, windows, campaigns)
    if markdowns and markdowns[0].size:
        md_prod, md_first, md_cut = markdowns
        extra = (md_prod, days - md_first, md_first, md_cut)
        expanded = tuple(np.concatenate([a, b]) for a, b in zip(expanded, extra, strict=True))
    key, p, d, x = _best_discounts(catalog, days, *expanded)
    lift = (1.0 - x) ** -elasticity
    weight = catalog.popularity[p] * (lift - 1.0)
    by_day = np.argsort(d, kind="stable")
    day_start = np.searchsorted(d[by_day], np.arange(days + 1))
    by_day_cum = np.cumsum(weight[by_day])
    mass = np.bincount(d, weights=weight, minlength=days)
    return Promotions(
        days,
        key,
        p,
        d,
        x,
        lift,
        weight,
        day_start,
        by_day,
        by_day_cum,
        mass,
        windows,
        campaigns,
        markdowns,
    )


def make_markdowns(rng: np.random.Generator, catalog: Catalog, days: int, share: float):
    """Permanent list-price cuts of 10-30% for about `share` of the products, each from a day
    of the last three quarters of the period on which the product is on sale."""
    n = int(rng.binomial(catalog.n, share)) if share > 0 else 0
    prod = np.sort(rng.choice(catalog.n, n, replace=False)).astype(np.int64)
    first = rng.integers(days // 4, days, n).astype(np.int64)
    first = np.maximum(first, catalog.first_day[prod] + 1)
    cut = np.round(rng.uniform(0.1, 0.3, n), 2)
    keep = first <= catalog.last_day[prod]
    return prod[keep], first[keep], cut[keep]


def _windows(rng: np.random.Generator, catalog: Catalog, days: int, share: float):
    """Product windows (product, length in days, first day, discount) and category campaigns
    (category, length, first day, discount)."""
    n = catalog.n
    # Product promotions: on an average day about `share` of the products are discounted,
    # popular products more often.
    mean_len = 8.5
    n_promos = rng.poisson(share * n * days / mean_len)
    pick_p = np.sqrt(catalog.popularity)
    pick_p /= pick_p.sum()
    prod = rng.choice(n, n_promos, p=pick_p)
    length = rng.integers(3, 15, n_promos)
    first = rng.integers(-7, days, n_promos)
    disc = np.round(rng.uniform(0.1, 0.4, n_promos), 2)
    # Category promotions: about one a month, a few days, the whole category.
    n_cat = rng.poisson(days / 30)
    cats = rng.integers(0, catalog.category_names.size, n_cat)
    cat_len = rng.integers(3, 8, n_cat)
    cat_first = rng.integers(0, days, n_cat)
    cat_disc = np.round(rng.uniform(0.1, 0.25, n_cat), 2)
    return (prod, length, first, disc), (cats, cat_len, cat_first, cat_disc)


def _expand(catalog: Catalog, windows, campaigns):
    """Product windows followed by every member product's window of each category campaign."""
    prod, length, first, disc = windows
    cats, cat_len, cat_first, cat_disc = campaigns
    members = [np.flatnonzero(catalog.category == c) for c in cats]
    prod = np.concatenate([prod, *[np.full(m.size, 0) + m for m in members]]).astype(np.int64)
    length = np.concatenate(
        [length, *[np.full(m.size, ln) for m, ln in zip(members, cat_len, strict=True)]]
    )
    first = np.concatenate(
        [first, *[np.full(m.size, f) for m, f in zip(members, cat_first, strict=True)]]
    )
    disc = np.concatenate(
        [disc, *[np.full(m.size, d) for m, d in zip(members, cat_disc, strict=True)]]
    )
    return prod, length, first, disc


def _best_discounts(catalog: Catalog, days: int, prod, length, first, disc):
    """Windows expanded to (product, day) rows inside the period, the best discount per pair,
    products on sale only: (key product * days + day, product, day, discount)."""
    rows = np.repeat(np.arange(prod.size), length)
    offset = np.arange(rows.size) - np.repeat(np.cumsum(length) - length, length)
    p, d, x = prod[rows], first[rows] + offset, disc[rows]
    keep = (d >= 0) & (d < days)
    p, d, x = p[keep], d[keep], x[keep]
    key = p * days + d
    order = np.lexsort((-x, key))
    key, p, d, x = key[order], p[order], d[order], x[order]
    first_of_key = np.concatenate([[True], key[1:] != key[:-1]]) if key.size else key.astype(bool)
    key, p, d, x = key[first_of_key], p[first_of_key], d[first_of_key], x[first_of_key]
    on_sale = catalog.on_sale(p, d)
    return key[on_sale], p[on_sale], d[on_sale], x[on_sale]


def promotions_frame(
    rng: np.random.Generator, promos: Promotions, catalog: Catalog, start: date
) -> pd.DataFrame:
    """The promotions table: every window overlapping the period, with its planned time."""
    prod, length, first, disc = promos.windows
    cats, cat_len, cat_first, cat_disc = promos.campaigns
    lead = np.concatenate([rng.integers(7, 57, prod.size), rng.integers(28, 92, cats.size)])
    hour = rng.integers(8, 18, lead.size)
    first_day = np.concatenate([first, cat_first]).astype(np.int64)
    last_day = first_day + np.concatenate([length, cat_len]).astype(np.int64) - 1
    t0 = np.datetime64(start, "ns").astype("int64")

    def at(day):
        return (t0 + day * NS_PER_DAY).astype("datetime64[ns]")

    df = pd.DataFrame(
        {
            "product_id": np.concatenate(
                [catalog.ids[prod], np.full(cats.size, None, dtype=object)]
            ),
            "category": np.concatenate(
                [np.full(prod.size, None, dtype=object), catalog.category_names[cats]]
            ),
            "start": at(first_day),
            "end": at(last_day),
            "discount": np.concatenate([disc, cat_disc]).astype(float),
            "promo": True,
            "planned_at": at(first_day - lead) + (hour * 3_600 * 10**9).astype("timedelta64[ns]"),
        }
    )
    inside = (last_day >= 0) & (first_day < promos.days)
    return (
        df[inside]
        .sort_values(["start", "product_id", "category"], kind="mergesort")
        .reset_index(drop=True)
    )
