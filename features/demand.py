"""Daily demand panel: units sold per product and calendar day, built from `order_lines`.

Decisions (documented because every forecaster and metric relies on them):
- Demand is *ordered* units. A negative line (cancellation or return) is netted against the sale it
  undoes: the latest earlier sale line of the same customer and product (``merge_asof``); its units
  are taken off that sale's day, never off the day of the cancellation, so a cancellation does not
  create a fake dip. Negative lines with no matching earlier sale (guest, or sale before the data)
  are dropped. Day totals are clipped at zero. Lines with ``unit_price == 0`` are stock adjustments
  or free samples, not demand, and are dropped.
- The panel is a dense matrix over calendar days. A product enters on its first sale day and stays
  until the end of the panel (zero-filled). Before its first sale its cells are NaN (not observed).
- Closed days are detected from the data: a weekday on which the shop sells (almost) nothing over
  the whole history is a closed weekday (Online Retail: Saturday); any other day without a single
  order line is a closed day (Christmas break, some bank holidays). Closed days are NaN in `units`
  (neither zero demand for training and metrics nor a value in lags: rolling statistics skip them).
  Future days on a closed weekday are forecast as closed.
- Closures per series (`DemandPanel.closed[p, d]`, a superset of the shop-wide closed days):
  given ones (the `closures` table: a product, a location or the whole shop on a day) close a
  cell unless the series sold that day (the data wins); detected ones are conservative:
  * a location (`products.location`, when the products name two or more) is closed on a day
    without any sale line among its products, and on a weekday whose mean volume is below
    `closed_weekday_share` of its mean day (as the shop-wide rule), if it has at least
    `location_min_lines` lines on an average open day (a quiet day of a small site is no closure);
  * a product is closed on a weekday it never sold on over at least `series_min_weeks` weeks
    while it sells on other days often enough that so many empty weekdays would happen by
    chance with probability < `series_closed_p` (a recurring product or site closing day).
  A stock-out or a run of zero days is *not* a closure: it stays zero demand. Closed cells are
  NaN in `units` (neither training targets nor scored) and future days on a series' closed
  weekday are known closed.
- Known-future inputs (promotions, planned prices, planned closures) are carried as a
  `KnownFuture` and read with `panel.known_future(origin, horizon)`: only what was planned at
  the origin is visible (see `features.known_future`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.known_future import DEFAULT_LEAD_DAYS, KnownFuture, KnownInputs
from shopml.errors import DataError, UnknownEntity

PANEL_COLUMNS = ("product_id", "date", "units", "open", "price", "category")


@dataclass(frozen=True)
class PanelConfig:
    """How order lines become a daily panel."""

    closed_weekday_share: float = 0.05  # weekday closed when its mean volume < share x mean day
    end: pd.Timestamp | None = None  # last day of the panel (inclusive); default last order day
    top_n: int | None = None  # keep only the N best-selling products (by net units)
    country: str | None = None  # store country for holidays (ISO code like "GB")
    planned_lead_days: int = DEFAULT_LEAD_DAYS  # known-future rows without planned_at
    detect_series_closures: bool = True  # per location / per product (see module doc)
    location_min_lines: float = 7.0  # P(no line on an open day) ~ e^-7 < 0.1%
    series_min_weeks: int = 8
    series_closed_p: float = 1e-4


@dataclass
class DemandPanel:
    """Dense daily panel: `units[p, d]` for product `product_ids[p]` on day `dates[d]`.

    `units` is NaN where not observed (before a product's first sale, or the shop was closed);
    `price` is the mean paid unit price that day (NaN without sales); `open_days[d]` says whether the
    shop was open; `closed_weekdays` are the recurring closed weekdays (0=Monday) used for the future.

    Per series (optional, all default to "nothing more than the shop-wide calendar"):
    `locations[p]` the site selling product p (None when unknown); `closed[p, d]` the series was
    closed that day (always includes `~open_days`; `units` is NaN there: never a training
    target, never scored); `series_closed_weekdays[p, w]` the product alone is closed on weekday w
    (history and future; the shop-wide `closed_weekdays` come on top); `known` the planned promotions/prices/closures, read through
    `known_future(origin, horizon)`.
    """

    product_ids: np.ndarray
    categories: np.ndarray
    dates: pd.DatetimeIndex
    units: np.ndarray
    price: np.ndarray
    open_days: np.ndarray
    closed_weekdays: tuple[int, ...] = ()
    country: str | None = None
    orders: np.ndarray | None = None  # sale lines per product and day (NaN where units is NaN)
    locations: np.ndarray | None = None
    closed: np.ndarray | None = None
    series_closed_weekdays: np.ndarray | None = None
    known: KnownFuture | None = None
    _index: dict[str, int] = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.product_ids = np.asarray(self.product_ids, dtype=object)
        self.categories = np.asarray(self.categories, dtype=object)
        self.units = np.asarray(self.units, dtype=np.float64)
        self.price = np.asarray(self.price, dtype=np.float64)
        self.open_days = np.asarray(self.open_days, dtype=bool)
        self.closed_weekdays = tuple(int(w) for w in self.closed_weekdays)
        n_p, n_d = len(self.product_ids), len(self.dates)
        if self.units.shape != (n_p, n_d) or self.price.shape != (n_p, n_d):
            raise DataError(
                f"panel matrices must have shape ({n_p}, {n_d}), got {self.units.shape}"
            )
        if len(self.open_days) != n_d:
            raise DataError("panel open_days must have one flag per date")
        if self.orders is not None:
            self.orders = np.asarray(self.orders, dtype=np.float64)
            if self.orders.shape != (n_p, n_d):
                raise DataError(f"panel orders must have shape ({n_p}, {n_d})")
        self._check_series_closures(n_p, n_d)
        self._index = {str(p): i for i, p in enumerate(self.product_ids)}
        if len(self._index) != n_p:
            dup = pd.Series(self.product_ids).loc[lambda s: s.duplicated()].tolist()
            raise DataError(f"panel has duplicated product_id values: {dup[:5]}")

    def _check_series_closures(self, n_p: int, n_d: int) -> None:
        """Fill the per-series closure arrays and blank `units`/`orders` on closed cells."""
        if self.locations is not None:
            self.locations = np.asarray(self.locations, dtype=object)
            if self.locations.shape != (n_p,):
                raise DataError(f"panel locations must have one entry per product ({n_p})")
        wd = np.zeros((n_p, 7), dtype=bool)
        if self.series_closed_weekdays is not None:
            wd = np.asarray(self.series_closed_weekdays, dtype=bool)
            if wd.shape != (n_p, 7):
                raise DataError(f"panel series_closed_weekdays must have shape ({n_p}, 7)")
        self.series_closed_weekdays = wd  # the shop-wide `closed_weekdays` are not repeated here
        closed = np.zeros((n_p, n_d), dtype=bool)
        if self.closed is not None:
            closed = np.asarray(self.closed, dtype=bool)
            if closed.shape != (n_p, n_d):
                raise DataError(f"panel closed must have shape ({n_p}, {n_d})")
        closed = closed | ~self.open_days[None, :] | wd[:, self.dates.dayofweek]
        self.closed = closed
        if closed.any() and not np.isnan(self.units[closed]).all():
            self.units = np.where(closed, np.nan, self.units)
        if self.orders is not None and closed.any():
            self.orders = np.where(closed, np.nan, self.orders)

    # -- access -------------------------------------------------------------------------------
    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    @property
    def end(self) -> pd.Timestamp:
        return self.dates[-1]

    def positions(self, product_ids) -> np.ndarray:
        """Row positions of `product_ids`; raises UnknownEntity naming the unknown ones."""
        ids = [str(p) for p in product_ids]
        missing = [p for p in ids if p not in self._index]
        if missing:
            raise UnknownEntity("product", missing)
        return np.array([self._index[p] for p in ids], dtype=np.int64)

    def first_observed(self) -> np.ndarray:
        """Index of each product's first observed (non-NaN) day; n_days when never observed."""
        obs = ~np.isnan(self.units)
        first = obs.argmax(axis=1)
        first[~obs.any(axis=1)] = len(self.dates)
        return first

    def n_observed(self) -> np.ndarray:
        return (~np.isnan(self.units)).sum(axis=1)

    def cut(self, end) -> DemandPanel:
        """The panel up to and including day `end` (products first sold later are left out)."""
        end = pd.Timestamp(end).normalize()
        n = int(self.dates.searchsorted(end, side="right"))
        if n == 0:
            raise DataError(f"panel has no day on or before {end.date()}")
        keep = ~np.isnan(self.units[:, :n]).all(axis=1)
        return DemandPanel(
            self.product_ids[keep],
            self.categories[keep],
            self.dates[:n],
            self.units[keep, :n],
            self.price[keep, :n],
            self.open_days[:n],
            self.closed_weekdays,
            self.country,
            None if self.orders is None else self.orders[keep, :n],
            None if self.locations is None else self.locations[keep],
            self.closed[keep, :n],
            self.series_closed_weekdays[keep],
            self.known,
        )

    def subset(self, product_ids) -> DemandPanel:
        pos = self.positions(product_ids)
        return DemandPanel(
            self.product_ids[pos],
            self.categories[pos],
            self.dates,
            self.units[pos],
            self.price[pos],
            self.open_days,
            self.closed_weekdays,
            self.country,
            None if self.orders is None else self.orders[pos],
            None if self.locations is None else self.locations[pos],
            self.closed[pos],
            self.series_closed_weekdays[pos],
            self.known,
        )

    def future_dates(self, horizon: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
        """The next `horizon` calendar days after the panel and whether the shop opens on each."""
        dates = pd.date_range(self.end + pd.Timedelta(days=1), periods=horizon, freq="D")
        return dates, ~np.isin(dates.dayofweek, self.closed_weekdays)

    def known_future(self, origin=None, horizon: int = 0) -> KnownInputs:
        """What was known at the end of day `origin` (default: the panel's last day) for every
        product x day of the panel plus `horizon` days after its end.

        Promotions and prices: only rows planned by the origin (see `features.known_future`),
        on every day of the grid. Closed: on days up to the origin the observed `closed`
        (history); after it, the series' closed weekdays and the closures planned by then.
        """
        origin = self.end if origin is None else pd.Timestamp(origin).normalize()
        extra = pd.date_range(self.end + pd.Timedelta(days=1), periods=horizon, freq="D")
        dates = self.dates.append(extra)
        planned = self.known or KnownFuture.from_tables()
        grid = planned.grid(self.product_ids, self.categories, self.locations, dates, origin)
        after = dates > origin
        weekdays = self.series_closed_weekdays | np.isin(np.arange(7), self.closed_weekdays)
        closed = weekdays[:, dates.dayofweek] & after[None, :]
        closed |= grid.closed & after[None, :]
        n_past = int((~after[: len(self.dates)]).sum())
        closed[:, :n_past] = self.closed[:, :n_past]
        return KnownInputs(
            dates,
            origin,
            grid.promo,
            grid.discount,
            grid.price,
            grid.price_ratio,
            closed,
            grid.promo_known_from,
        )

    # -- conversion ---------------------------------------------------------------------------
    def to_frame(self, observed_only: bool = True) -> pd.DataFrame:
        """Long table with PANEL_COLUMNS (only observed cells unless `observed_only=False`)."""
        n_p, n_d = self.units.shape
        df = pd.DataFrame(
            {
                "product_id": np.repeat(self.product_ids, n_d),
                "date": np.tile(self.dates.values, n_p),
                "units": self.units.ravel(),
                "open": np.tile(self.open_days, n_p),
                "price": self.price.ravel(),
                "category": np.repeat(self.categories, n_d),
            }
        )
        if observed_only:
            first = np.repeat(self.first_observed(), n_d)
            day = np.tile(np.arange(n_d), n_p)
            df = df[day >= first].reset_index(drop=True)
        return df

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, closed_weekdays=None, country: str | None = None
    ) -> DemandPanel:
        """Build a panel from a long table (product_id, date, units, [open], [price], [category]).

        Raises DataError on missing columns, negative units or duplicated (product_id, date) rows.
        Days absent for a product after its first row are zero demand; `open=False` rows and
        closed weekdays are closed days.
        """
        df = _checked_long_frame(df)
        dates = pd.date_range(df["date"].min(), df["date"].max(), freq="D")
        if closed_weekdays is None:
            closed_weekdays = ()
        open_days = ~np.isin(dates.dayofweek, list(closed_weekdays))
        if "open" in df.columns:
            closed = set(df.loc[~df["open"].astype(bool), "date"])
            open_days &= ~dates.isin(list(closed))
        ids = np.array(sorted(df["product_id"].unique()), dtype=object)
        pi = pd.Index(ids).get_indexer(df["product_id"])
        di = dates.get_indexer(df["date"])
        u = np.full((len(ids), len(dates)), np.nan)
        pr = np.full_like(u, np.nan)
        u[pi, di] = df["units"].to_numpy(dtype=float)
        if "price" in df.columns:
            pr[pi, di] = pd.to_numeric(df["price"], errors="coerce").to_numpy(dtype=float)
        first = np.where(np.isnan(u), len(dates), np.arange(len(dates))[None, :]).min(axis=1)
        after = np.arange(len(dates))[None, :] >= first[:, None]
        u = np.where(np.isnan(u) & after, 0.0, u)
        u[:, ~open_days] = np.nan
        if "category" in df.columns:
            cat = df.groupby("product_id")["category"].first().reindex(ids).fillna("unknown")
            cats = cat.astype(str).to_numpy(dtype=object)
        else:
            cats = np.array(["unknown"] * len(ids), dtype=object)
        return cls(ids, cats, dates, u, pr, open_days, tuple(closed_weekdays), country)


def _checked_long_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a long demand table with string ids, normalized dates and numeric units;
    DataError on missing columns, duplicated (product_id, date) rows or negative units."""
    missing = [c for c in ("product_id", "date", "units") if c not in df.columns]
    if missing:
        raise DataError(f"demand panel is missing column(s) {missing}")
    df = df.copy()
    df["product_id"] = df["product_id"].astype(str)
    df["date"] = pd.to_datetime(df["date"]).dt.normalize()
    dup = df.duplicated(["product_id", "date"], keep=False)
    if dup.any():
        ex = df.loc[dup, ["product_id", "date"]].head(3)
        shown = [f"({p!r}, {d.date()})" for p, d in ex.itertuples(index=False)]
        raise DataError(
            f"demand panel has {int(dup.sum())} duplicated (product_id, date) rows, "
            f"e.g. {', '.join(shown)}; aggregate them first"
        )
    units = pd.to_numeric(df["units"], errors="coerce")
    if (units < 0).any():
        raise DataError("demand panel column 'units' has negative values")
    df["units"] = units
    return df


def _net_cancellations(lines: pd.DataFrame) -> pd.DataFrame:
    """Sale lines with returned/cancelled units taken off the sale they undo (see module doc)."""
    sales = lines[lines["quantity"] > 0].copy()
    sales["units"] = sales["quantity"].astype(float)
    neg = lines[(lines["quantity"] < 0) & lines["customer_id"].notna()]
    if neg.empty or sales.empty:
        return sales
    sales = sales.sort_values("timestamp", kind="stable").reset_index(drop=True)  # ties: as read
    sales["_row"] = np.arange(len(sales))
    neg = neg.sort_values("timestamp", kind="stable")
    keyed = sales[sales["customer_id"].notna()]
    matched = pd.merge_asof(
        neg[["timestamp", "customer_id", "product_id", "quantity"]],
        keyed[["timestamp", "customer_id", "product_id", "_row"]],
        on="timestamp",
        by=["customer_id", "product_id"],
        direction="backward",
    )
    matched = matched.dropna(subset=["_row"])
    take = matched.groupby(matched["_row"].astype(np.int64))["quantity"].sum()
    units = sales["units"].to_numpy()
    np.add.at(units, take.index.to_numpy(), take.to_numpy(dtype=float))
    sales["units"] = units  # may go negative per line; the day total is clipped at zero
    return sales.drop(columns="_row")


def detect_closed(day_volume: pd.Series, share: float = 0.05) -> tuple[tuple[int, ...], np.ndarray]:
    """Closed weekdays and a closed-day mask from shop-wide order lines per calendar day.

    A weekday is closed when its mean volume is below `share` of the mean over all days; any day
    with no order line at all is closed as well.
    """
    by_wd = day_volume.groupby(day_volume.index.dayofweek).mean().reindex(range(7), fill_value=0)
    overall = float(day_volume.mean()) if len(day_volume) else 0.0
    closed_wd = tuple(int(w) for w in by_wd.index[by_wd.to_numpy() < share * overall])
    closed = np.isin(day_volume.index.dayofweek, closed_wd) | (day_volume.to_numpy() <= 0)
    return closed_wd, closed


def panel_from_store(store, config: PanelConfig | None = None) -> DemandPanel:
    """The demand panel of a `Store`, with its promotions, prices and closures when it has them."""
    config = config or PanelConfig()
    store.require("order_lines")
    known = KnownFuture.from_store(store, config.planned_lead_days)
    return build_panel(store.order_lines, store.products, config, known)


def build_panel(
    order_lines: pd.DataFrame,
    products: pd.DataFrame | None = None,
    config: PanelConfig | None = None,
    known: KnownFuture | None = None,
) -> DemandPanel:
    """Daily demand panel from canonical `order_lines` (and `products` for categories and
    locations); `known` adds the planned promotions/prices/closures (given closures close cells)."""
    config = config or PanelConfig()
    lines = _sale_lines(order_lines, config)
    dates, closed_wd, closed = _calendar(lines, config)
    agg = _daily_sales(_net_cancellations(lines))
    ids = _kept_products(agg.groupby(level=0)["units"].sum(), config)
    units, price, orders = _matrices(agg, ids, dates, closed)
    return _assemble(ids, dates, units, price, orders, closed, closed_wd, products, known, config)


def _calendar(lines: pd.DataFrame, config: PanelConfig):
    """The panel's days and the shop-wide closed days and weekdays (both engines)."""
    day = lines["timestamp"].dt.normalize()
    start = day.min()
    end = pd.Timestamp(config.end).normalize() if config.end is not None else day.max()
    dates = pd.date_range(start, end, freq="D")
    volume = day.value_counts().reindex(dates, fill_value=0)
    closed_wd, closed = detect_closed(volume, config.closed_weekday_share)
    return dates, closed_wd, closed


def _kept_products(totals: pd.Series, config: PanelConfig) -> np.ndarray:
    """Sorted ids of the products with sales (the `top_n` best sellers when set)."""
    totals = totals[totals > 0]
    if config.top_n is not None:
        totals = totals.sort_values(ascending=False, kind="mergesort").head(config.top_n)
    return np.array(sorted(totals.index), dtype=object)


def _assemble(ids, dates, units, price, orders, closed, closed_wd, products, known, config):
    """The panel from its matrices, with categories, locations and per-series closures."""
    cats = _categories(products, ids)
    locations = _locations(products, ids)
    panel = DemandPanel(
        ids, cats, dates, units, price, ~closed, closed_wd, config.country, orders, locations
    )
    series_closed, series_wd = _series_closures(panel, known, config)
    return DemandPanel(
        ids,
        cats,
        dates,
        panel.units,
        price,
        ~closed,
        closed_wd,
        config.country,
        panel.orders,
        locations,
        series_closed,
        series_wd,
        known,
    )


def _series_closures(panel: DemandPanel, known: KnownFuture | None, config: PanelConfig):
    """(closed cells, closed weekdays per product): given closures plus, when configured, the
    detected ones (module doc)."""
    n_p, n_d = panel.units.shape
    closed = np.zeros((n_p, n_d), dtype=bool)
    weekdays = np.zeros((n_p, 7), dtype=bool)
    if known is not None:
        everything = pd.Timestamp.max.normalize() - pd.Timedelta(days=2)
        given = known.grid(
            panel.product_ids, panel.categories, panel.locations, panel.dates, everything
        ).closed
        closed |= given & ~(panel.units > 0)  # a series that sold that day was open
    if config.detect_series_closures:
        days, weekdays = _closed_locations(panel, config)
        closed |= days
        weekdays |= _closed_series_weekdays(np.where(closed, np.nan, panel.units), panel, config)
    return closed, weekdays


def _closed_locations(panel: DemandPanel, config: PanelConfig):
    """(cells, products x 7 weekdays) where a busy location is closed: open shop days on which
    it sold nothing at all, and its weekdays below `closed_weekday_share` of its mean day."""
    n_p, n_d = panel.units.shape
    closed = np.zeros((n_p, n_d), dtype=bool)
    weekdays = np.zeros((n_p, 7), dtype=bool)
    if panel.locations is None:
        return closed, weekdays
    names = pd.Series(panel.locations).dropna().unique()
    if len(names) < 2:
        return closed, weekdays
    lines = np.nan_to_num(panel.orders if panel.orders is not None else panel.units)
    alive = ~np.isnan(panel.units) | ~panel.open_days[None, :]
    for name in names:
        members = panel.locations == name
        volume = lines[members].sum(axis=0)
        started = alive[members].any(axis=0).cumsum() > 0
        days = started & panel.open_days
        if not days.any() or volume[days].mean() < config.location_min_lines:
            continue
        closed_wd, _ = detect_closed(
            pd.Series(volume[days], index=panel.dates[days]), config.closed_weekday_share
        )
        weekdays[np.ix_(members, list(closed_wd))] = True
        closed[np.ix_(members, days & (volume == 0))] = True
    return closed, weekdays


def _closed_series_weekdays(units: np.ndarray, panel: DemandPanel, config: PanelConfig):
    """(products x 7) weekdays a product never sold on in at least `series_min_weeks` observed
    weeks although its sale frequency on other days makes that chance < `series_closed_p`."""
    observed = ~np.isnan(units)
    sold = observed & (np.nan_to_num(units) > 0)
    dow = panel.dates.dayofweek.to_numpy()
    onehot = dow[:, None] == np.arange(7)[None, :]
    n_w = observed.astype(np.int64) @ onehot
    s_w = sold.astype(np.int64) @ onehot
    n_other = n_w.sum(axis=1, keepdims=True) - n_w
    f_other = (s_w.sum(axis=1, keepdims=True) - s_w) / np.maximum(n_other, 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # f = 1: log 0; n = 0: 0 x -inf
        log_chance = n_w * np.log1p(-np.clip(f_other, 0.0, 1.0))
    return (
        (s_w == 0)
        & (n_w >= config.series_min_weeks)
        & (log_chance < np.log(config.series_closed_p))
    )


def _sale_lines(order_lines: pd.DataFrame, config: PanelConfig) -> pd.DataFrame:
    """The priced lines up to `config.end`, with string product ids; DataError if none."""
    need = [
        c for c in ("product_id", "timestamp", "quantity", "unit_price") if c not in order_lines
    ]
    if need:
        raise DataError(f"order_lines is missing column(s) {need}")
    lines = order_lines[order_lines["unit_price"] > 0]
    if "customer_id" not in lines.columns:
        lines = lines.assign(customer_id=None)
    lines = lines.assign(product_id=lines["product_id"].astype(str))
    if config.end is not None:
        end = pd.Timestamp(config.end).normalize()
        lines = lines[lines["timestamp"] < end + pd.Timedelta(days=1)]
    if lines.empty:
        raise DataError(
            "order_lines has no sale line (positive quantity and price) to build demand"
        )
    return lines


def _daily_sales(sales: pd.DataFrame) -> pd.DataFrame:
    """Net units, quantity, revenue and line count per (product_id, day)."""
    sales = sales.assign(
        day=sales["timestamp"].dt.normalize(), revenue=sales["quantity"] * sales["unit_price"]
    )
    return sales.groupby(["product_id", "day"], sort=False).agg(
        units=("units", "sum"),
        qty=("quantity", "sum"),
        revenue=("revenue", "sum"),
        lines=("units", "size"),
    )


def _matrices(agg: pd.DataFrame, ids: np.ndarray, dates: pd.DatetimeIndex, closed: np.ndarray):
    """(units, price, orders) per product of `ids` and day; units NaN before a product's
    selling life starts (its first day of net positive demand) and on closed days."""
    agg = agg.reset_index()
    agg = agg[agg["product_id"].isin(set(ids))]
    pi = pd.Index(ids).get_indexer(agg["product_id"])
    di = dates.get_indexer(agg["day"])
    n_p, n_d = len(ids), len(dates)
    units = np.zeros((n_p, n_d))
    price = np.full((n_p, n_d), np.nan)
    units[pi, di] = np.clip(agg["units"].to_numpy(dtype=float), 0.0, None)
    price[pi, di] = agg["revenue"].to_numpy() / agg["qty"].to_numpy()
    orders = np.zeros((n_p, n_d))
    orders[pi, di] = agg["lines"].to_numpy(dtype=float)
    pos = units > 0
    first = np.where(pos.any(axis=1), pos.argmax(axis=1), n_d)
    units[np.arange(n_d)[None, :] < first[:, None]] = np.nan
    units[:, closed] = np.nan
    orders[np.isnan(units)] = np.nan
    return units, price, orders


def _locations(products: pd.DataFrame | None, ids: np.ndarray) -> np.ndarray | None:
    """The location of each product of `ids` (None when the catalog names none)."""
    if products is None or "location" not in products.columns:
        return None
    loc = products.assign(product_id=products["product_id"].astype(str))
    loc = loc.drop_duplicates("product_id").set_index("product_id")["location"]
    out = loc.reindex(ids).to_numpy(dtype=object)
    return None if pd.isna(out).all() else np.where(pd.isna(out), None, out)


def _categories(products: pd.DataFrame | None, ids: np.ndarray) -> np.ndarray:
    """The category of each product of `ids` ("unknown" when the catalog does not say)."""
    if products is not None and "category" in products.columns:
        cat = products.assign(product_id=products["product_id"].astype(str))
        cat = cat.drop_duplicates("product_id").set_index("product_id")["category"]
        return cat.reindex(ids).fillna("unknown").astype(str).to_numpy(dtype=object)
    return np.array(["unknown"] * len(ids), dtype=object)


def store_country(order_lines: pd.DataFrame, customers: pd.DataFrame | None = None) -> str | None:
    """The store's home country as an ISO code when the data names one clearly (else None)."""
    col = None
    if "country" in order_lines.columns:
        col = order_lines["country"]
    elif customers is not None and "country" in customers.columns:
        col = customers["country"]
    if col is None or col.dropna().empty:
        return None
    top = col.dropna().astype(str).value_counts(normalize=True)
    if top.iloc[0] < 0.5:
        return None
    name = top.index[0].strip()
    aliases = {
        "united kingdom": "GB",
        "uk": "GB",
        "great britain": "GB",
        "germany": "DE",
        "france": "FR",
        "netherlands": "NL",
        "spain": "ES",
        "italy": "IT",
        "united states": "US",
        "usa": "US",
        "eire": "IE",
        "ireland": "IE",
    }
    code = aliases.get(name.lower(), name.upper() if len(name) == 2 else None)
    return code
