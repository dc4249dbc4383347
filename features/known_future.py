"""Known-future inputs: promotions, list prices and closures as they were planned at an origin.

A forecast made at the end of day `origin` may use a planned row only if it was known by then:
a row is *visible at origin t* when `planned_at < t + 1 day` (planned on or before the origin
day). This one rule applies to every day of the grid, past or future, so a backtest fold sees
exactly what was planned at its origin and nothing planned later. Rows without `planned_at` are
taken as known `lead_days` before they start (`start`, `valid_from`, `date`).

Matching rows to series: a promotion names a product or a category; a price names a product; a
closure names a product, a location (`products.location`) or, with both empty, the whole shop.
When no product carries a location (a single-site shop), a location closure closes every product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopml.errors import DataError

DAY = np.timedelta64(1, "D")
DEFAULT_LEAD_DAYS = 28  # a promotion, price or closure is known four weeks ahead unless told


@dataclass(frozen=True)
class KnownInputs:
    """Per product x day arrays of what was known at `origin` (rows: the panel's products).

    - `promo[p, d]`: a visible promotion covers the day; `discount[p, d]`: its best discount
      (0 without promotion or when the promotion gives no discount);
    - `price[p, d]`: the planned list price (NaN when no visible price row applies yet);
      `price_ratio[p, d]`: `price` over the price in effect on the origin day (1.0 where either
      is unknown), so 0.9 is a planned 10% cut;
    - `closed[p, d]`: the series does not sell that day (see `DemandPanel.known_future`);
    - `promo_known_from[p, d]`: the earliest `planned_at` of a visible promotion covering the
      cell (NaT without), so `promo & (promo_known_from < t + 1 day)` is the flag as of t <= origin.
    """

    dates: pd.DatetimeIndex
    origin: pd.Timestamp
    promo: np.ndarray
    discount: np.ndarray
    price: np.ndarray
    price_ratio: np.ndarray
    closed: np.ndarray
    promo_known_from: np.ndarray

    def day(self, date) -> int:
        """Column index of `date` in the grid (DataError when outside it)."""
        i = int(self.dates.get_indexer([pd.Timestamp(date).normalize()])[0])
        if i < 0:
            raise DataError(f"known-future grid has no day {pd.Timestamp(date).date()}")
        return i


@dataclass
class KnownFuture:
    """The planned rows of a store, normalized (days at midnight, `planned_at` filled in)."""

    promotions: pd.DataFrame  # product_id|None, category|None, start, end, discount, planned_at
    prices: pd.DataFrame  # product_id, valid_from, price, planned_at
    closures: pd.DataFrame  # date, product_id|None, location|None, planned_at
    lead_days: int = DEFAULT_LEAD_DAYS

    @classmethod
    def from_tables(
        cls, promotions=None, prices=None, closures=None, lead_days: int = DEFAULT_LEAD_DAYS
    ) -> KnownFuture:
        """Normalize contract-validated tables (any may be None: nothing planned of that kind)."""
        if lead_days < 0:
            raise DataError(f"planned lead time must be >= 0 days, got {lead_days}")
        lead = np.timedelta64(int(lead_days), "D")
        return cls(
            _promotions(promotions, lead),
            _prices(prices, lead),
            _closures(closures, lead),
            lead_days,
        )

    @classmethod
    def from_store(cls, store, lead_days: int = DEFAULT_LEAD_DAYS) -> KnownFuture | None:
        """The store's planned rows; None when it has none of the three tables."""
        if store.promotions is None and store.prices is None and store.closures is None:
            return None
        return cls.from_tables(store.promotions, store.prices, store.closures, lead_days)

    def grid(self, product_ids, categories, locations, dates, origin) -> KnownInputs:
        """What was planned at `origin` for each product x day of `dates` (see module doc)."""
        dates = pd.DatetimeIndex(dates).normalize()
        origin = pd.Timestamp(origin).normalize()
        cutoff = np.datetime64(origin + pd.Timedelta(days=1), "ns")
        ids = pd.Index([str(p) for p in product_ids])
        promo, discount, known_from = self._promo_grid(ids, np.asarray(categories), dates, cutoff)
        price, ratio = self._price_grid(ids, dates, origin, cutoff)
        closed = self._closure_grid(ids, locations, dates, cutoff)
        return KnownInputs(dates, origin, promo, discount, price, ratio, closed, known_from)

    # -- the three kinds ----------------------------------------------------------------------
    def _promo_grid(self, ids: pd.Index, categories: np.ndarray, dates, cutoff):
        n_p, n_d = len(ids), len(dates)
        promo = np.zeros((n_p, n_d), dtype=bool)
        discount = np.zeros((n_p, n_d))
        known_from = np.full((n_p, n_d), np.datetime64("NaT", "ns"))
        rows = self.promotions[self.promotions["planned_at"].to_numpy() < cutoff]
        if rows.empty or n_d == 0:
            return promo, discount, known_from
        row, prod = _promo_targets(rows, ids, categories)
        first = dates.searchsorted(rows["start"].to_numpy()[row])
        last = dates.searchsorted(rows["end"].to_numpy()[row], side="right")
        length = np.maximum(last - first, 0)
        cell_row = np.repeat(row, length)
        p = np.repeat(prod, length)
        d = (
            np.repeat(first, length)
            + np.arange(length.sum())
            - np.repeat(np.cumsum(length) - length, length)
        )
        promo[p, d] = True
        np.maximum.at(discount, (p, d), rows["discount"].to_numpy()[cell_row])
        planned = rows["planned_at"].to_numpy().astype("datetime64[ns]").view("int64")[cell_row]
        best = np.full((n_p, n_d), np.iinfo(np.int64).max)
        np.minimum.at(best, (p, d), planned)
        known_from[promo] = best[promo].view("datetime64[ns]")
        return promo, discount, known_from

    def _price_grid(self, ids: pd.Index, dates, origin, cutoff):
        n_p, n_d = len(ids), len(dates)
        rows = self.prices[self.prices["planned_at"].to_numpy() < cutoff]
        p = ids.get_indexer(rows["product_id"])
        valid = rows["valid_from"].to_numpy()[p >= 0]
        value = rows["price"].to_numpy()[p >= 0]
        p = p[p >= 0]
        price = np.full((n_p, n_d), np.nan)
        ref = np.full(n_p, np.nan)
        if p.size and n_d:
            order = np.lexsort((valid, p))  # by product, then valid_from: the last row wins
            p, valid, value = p[order], valid[order], value[order]
            d = dates.searchsorted(valid)  # first grid day the row applies to
            inside = d < n_d
            last = _last_per_key(p[inside] * n_d + d[inside])
            price[p[inside][last], d[inside][last]] = value[inside][last]
            filled = np.where(np.isnan(price), 0, np.arange(n_d)[None, :])
            filled = np.maximum.accumulate(filled, axis=1)  # forward fill along the days
            price = np.take_along_axis(price, filled, axis=1)
            before = valid <= np.datetime64(origin, "ns")
            now = _last_per_key(p[before])
            ref[p[before][now]] = value[before][now]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = price / ref[:, None]
        ratio = np.where(np.isfinite(ratio), ratio, 1.0)
        return price, ratio

    def _closure_grid(self, ids: pd.Index, locations, dates, cutoff) -> np.ndarray:
        n_p, n_d = len(ids), len(dates)
        closed = np.zeros((n_p, n_d), dtype=bool)
        rows = self.closures[self.closures["planned_at"].to_numpy() < cutoff]
        d = dates.get_indexer(rows["date"]) if len(rows) else np.zeros(0, dtype=np.int64)
        rows, d = rows[d >= 0], d[d >= 0]
        if rows.empty:
            return closed
        prod = rows["product_id"].to_numpy()
        loc = rows["location"].to_numpy()
        shop = pd.isna(prod) & pd.isna(loc)
        closed[:, d[shop]] = True
        by_product = ~pd.isna(prod)
        pi = ids.get_indexer(prod[by_product].astype(str))
        closed[pi[pi >= 0], d[by_product][pi >= 0]] = True
        by_location = pd.isna(prod) & ~pd.isna(loc)
        has_locations = locations is not None and pd.notna(np.asarray(locations)).any()
        for where, day in zip(loc[by_location], d[by_location], strict=True):
            if has_locations:
                closed[np.asarray(locations) == where, day] = True
            else:  # a single-site shop: its location is every product
                closed[:, day] = True
        return closed


def _last_per_key(key: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each value of a sorted `key`."""
    if key.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.append(key[1:] != key[:-1], True))


def _promo_targets(rows: pd.DataFrame, ids: pd.Index, categories: np.ndarray):
    """(row position, product position) pairs: each promotion row and the products it covers."""
    prod = rows["product_id"].to_numpy()
    named = ~pd.isna(prod)
    pi = np.full(len(rows), -1, dtype=np.int64)
    pi[named] = ids.get_indexer(prod[named].astype(str))
    row_parts, prod_parts = [np.flatnonzero(pi >= 0)], [pi[pi >= 0]]
    cats = rows["category"].to_numpy()
    for r in np.flatnonzero(~named & ~pd.isna(cats)):
        members = np.flatnonzero(categories == cats[r])
        row_parts.append(np.full(members.size, r))
        prod_parts.append(members)
    return np.concatenate(row_parts), np.concatenate(prod_parts).astype(np.int64)


def _day(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s).astype("datetime64[ns]").dt.normalize()


def _planned(df: pd.DataFrame, anchor: pd.Series, lead: np.timedelta64) -> pd.Series:
    """`planned_at`, or `lead` before `anchor` where it is missing."""
    default = anchor - pd.Timedelta(lead)
    if "planned_at" not in df.columns:
        return default
    return pd.to_datetime(df["planned_at"]).astype("datetime64[ns]").fillna(default)


def _promotions(df: pd.DataFrame | None, lead) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame(
            {
                "product_id": pd.Series(dtype=object),
                "category": pd.Series(dtype=object),
                "start": pd.Series(dtype="datetime64[ns]"),
                "end": pd.Series(dtype="datetime64[ns]"),
                "discount": pd.Series(dtype=float),
                "planned_at": pd.Series(dtype="datetime64[ns]"),
            }
        )
    if "promo" in df.columns:
        df = df[df["promo"].astype(bool)]
    start = _day(df["start"])
    out = pd.DataFrame(
        {
            "product_id": df.get("product_id"),
            "category": df.get("category"),
            "start": start,
            "end": _day(df["end"]),
            "discount": df["discount"].astype(float).fillna(0.0) if "discount" in df else 0.0,
            "planned_at": _planned(df, start, lead),
        }
    )
    return out.reset_index(drop=True)


def _prices(df: pd.DataFrame | None, lead) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame(
            {
                "product_id": pd.Series(dtype=object),
                "valid_from": pd.Series(dtype="datetime64[ns]"),
                "price": pd.Series(dtype=float),
                "planned_at": pd.Series(dtype="datetime64[ns]"),
            }
        )
    start = _day(df["valid_from"])
    return pd.DataFrame(
        {
            "product_id": df["product_id"].astype(str),
            "valid_from": start,
            "price": df["price"].astype(float),
            "planned_at": _planned(df, start, lead),
        }
    ).reset_index(drop=True)


def _closures(df: pd.DataFrame | None, lead) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame(
            {
                "date": pd.Series(dtype="datetime64[ns]"),
                "product_id": pd.Series(dtype=object),
                "location": pd.Series(dtype=object),
                "planned_at": pd.Series(dtype="datetime64[ns]"),
            }
        )
    day = _day(df["date"])
    return pd.DataFrame(
        {
            "date": day,
            "product_id": df.get("product_id"),
            "location": df.get("location"),
            "planned_at": _planned(df, day, lead),
        }
    ).reset_index(drop=True)
