"""Customers: taste segments over categories and products, signups, countries, personal favourites."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from features.generator.calendar import NS_PER_DAY, NS_PER_SECOND
from features.generator.catalog import Catalog
from features.generator.ids import make_ids

COUNTRIES = np.array(
    ["GB", "IE", "DE", "FR", "NL", "ES", "IT", "BE", "US", "CH", "SE"], dtype=object
)
COUNTRY_P = np.array([0.72, 0.05, 0.05, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01])
CURRENCY_OF = {"GB": "GBP", "US": "USD", "CH": "CHF", "SE": "SEK"}  # others pay in EUR
N_FAVOURITES = 12
FAVOURITES_PER_SEED = 3  # a favourite product and two of its bundle mates
PREFERRED_WEIGHT = 30.0  # how much more a segment likes its preferred categories
POPULARITY_EXPONENT = 0.7  # how much of the global popularity a segment shares
TASTE_SIGMA = 1.2  # spread of a segment's own liking of single products (log scale)


@dataclass
class Segments:
    """Taste segments: preferred categories and a product distribution per segment."""

    names: np.ndarray
    preferred: np.ndarray  # bool (segments x categories)
    cum: np.ndarray  # flattened per-segment cumulative product distribution, row s in [s, s+1]

    def sample(self, rng: np.random.Generator, segment: np.ndarray, n_products: int) -> np.ndarray:
        target = segment + rng.random(segment.size)
        idx = np.searchsorted(self.cum, target, side="right")
        idx = np.clip(idx, segment * n_products, segment * n_products + n_products - 1)
        return idx - segment * n_products


@dataclass
class Customers:
    ids: np.ndarray
    segment: np.ndarray
    country: np.ndarray  # object str
    signup_ns: np.ndarray  # int64 ns since epoch
    first_day: np.ndarray  # first day index with activity (0 if signed up before the start)
    activity: np.ndarray  # relative activity, mean 1
    favourites: np.ndarray  # (customers x N_FAVOURITES) product indices, most liked first

    @property
    def n(self) -> int:
        return int(self.ids.size)

    def to_frame(self, segments: Segments) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "customer_id": self.ids,
                "signup_at": self.signup_ns.astype("datetime64[ns]"),
                "country": self.country,
                "segment": segments.names[self.segment],
            }
        )


def make_segments(rng: np.random.Generator, catalog: Catalog, n_segments: int) -> Segments:
    n_cat = catalog.category_names.size
    # 2-3 preferred categories per segment, dealt round a shuffled list so that segments
    # overlap as little as the number of categories allows.
    preferred = np.zeros((n_segments, n_cat), dtype=bool)
    cycle = rng.permutation(n_cat)
    n_pref = 2 + (rng.random(n_segments) < 0.5)
    slot = np.concatenate([[0], np.cumsum(n_pref)])
    for s in range(n_segments):
        preferred[s, cycle[np.arange(slot[s], slot[s + 1]) % n_cat]] = True
    cat_w = np.where(preferred, PREFERRED_WEIGHT, 1.0)
    # segment x product: global popularity (flattened a little), category taste, product taste
    taste = np.exp(TASTE_SIGMA * rng.standard_normal((n_segments, catalog.n)))
    w = catalog.popularity[None, :] ** POPULARITY_EXPONENT * cat_w[:, catalog.category] * taste
    w /= w.sum(axis=1, keepdims=True)
    cum = (np.cumsum(w, axis=1) + np.arange(n_segments)[:, None]).ravel()
    names = np.array([f"segment_{s:02d}" for s in range(n_segments)], dtype=object)
    return Segments(names=names, preferred=preferred, cum=cum)


def make_customers(
    rng: np.random.Generator,
    catalog: Catalog,
    segments: Segments,
    n_customers: int,
    start: date,
    days: int,
    day_weights: np.ndarray,
    id_offset: int = 0,
) -> Customers:
    n_seg = segments.names.size
    seg_p = rng.dirichlet(np.full(n_seg, 6.0))
    segment = rng.choice(n_seg, n_customers, p=seg_p)
    country = COUNTRIES[rng.choice(COUNTRIES.size, n_customers, p=COUNTRY_P)]

    t0 = np.datetime64(start, "ns").astype("int64")
    before = rng.random(n_customers) < 0.8
    # Existing customers signed up in the two years before the start; new ones join over the
    # period, more when the shop is busy.
    cum = np.cumsum(day_weights)
    join_day = np.searchsorted(cum, rng.random(n_customers) * cum[-1]).clip(0, days - 1)
    old_ns = t0 - rng.integers(1, 730 * 86_400, n_customers) * NS_PER_SECOND
    new_ns = t0 + join_day * NS_PER_DAY + rng.integers(0, 86_400, n_customers) * NS_PER_SECOND
    signup_ns = np.where(before, old_ns, new_ns)
    first_day = np.where(before, 0, join_day)

    activity = rng.lognormal(0.0, 0.9, n_customers)
    activity /= activity.mean()

    # Personal favourites: a few products drawn from the segment's taste (staples twice as
    # likely), each with some of its bundle mates, so that people who like one product of a
    # bundle like the others too.
    n_seeds = N_FAVOURITES // FAVOURITES_PER_SEED
    draws = segments.sample(rng, np.repeat(segment, 3 * n_seeds), catalog.n)
    draws = draws.reshape(n_customers, 3 * n_seeds)
    score = rng.random(draws.shape) * np.where(catalog.staple[draws], 1.0, 0.5)
    best = np.argsort(-score, axis=1)[:, :n_seeds]
    seeds = np.take_along_axis(draws, best, axis=1)
    b = catalog.bundle_of[seeds][:, :, None]
    k = (rng.random((n_customers, n_seeds, FAVOURITES_PER_SEED)) * catalog.bundle_size[b]).astype(
        np.int64
    )
    mates = catalog.bundle_members[catalog.bundle_start[b] + k]
    mates[:, :, 0] = seeds
    favourites = mates.transpose(0, 2, 1).reshape(n_customers, N_FAVOURITES)  # seeds first

    ids = make_ids("C", n_customers, 6, id_offset)
    return Customers(ids, segment, country, signup_ns, first_day, activity, favourites)
