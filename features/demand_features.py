"""Origin-anchored demand features for direct multi-horizon forecasting.

A row describes (product p, forecast origin t, horizon h): every history feature is computed from
days <= t only (the origin), calendar features describe the target day t + h. Rolling statistics
run over *observed* days (closed days and days before the first sale are skipped, never read as
zeros). Names are deterministic and readable, e.g. `rolling_mean_window28`, `same_weekday_mean_weeks4`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

from features.demand import DemandPanel
from features.known_future import KnownFuture

WINDOWS = (7, 14, 28, 56, 112)
SAME_WEEKDAY_WEEKS = 4
PRICE_LONG_WINDOW = 364
YEAR = 364  # same weekday one year back
LAST_YEAR_HALF_WINDOW = 3  # last-year level: the 7 days centred on the same day a year back
CATEGORICAL = ("product", "category")
SEASONAL = (
    "last_year_mean_window7",
    "last_year_ratio_to_origin",
    "target_year_sin",
    "target_year_cos",
    "target_year_sin2",
    "target_year_cos2",
)
# Yearly calendar terms of the target day: a tree reads them as "which part of the year", but
# from less than two years of history each part was seen once at most, at one point of the
# shop's trend, so they mark time rather than season (issue 14: on the generated `small` store,
# one year, they took a forecast from Aug 2024 down to the level of the two August days seen,
# -43% in that fold). The forecaster turns them off (NaN, never split on) below two years.
YEARLY = (
    "target_month",
    "target_year_sin",
    "target_year_cos",
    "target_year_sin2",
    "target_year_cos2",
)
KNOWN_FUTURE = (
    "target_promotion",
    "target_discount",
    "target_price_ratio",
    "promotion_share_window28",
)


def feature_names(windows: tuple[int, ...] = WINDOWS) -> list[str]:
    """All feature names in column order."""
    names = ["product", "category", "horizon"]
    names += [f"rolling_mean_window{w}" for w in windows]
    names += ["rolling_std_window28", "rolling_zero_share_window28", "rolling_max_window28"]
    names += [
        "same_weekday_last",
        f"same_weekday_mean_weeks{SAME_WEEKDAY_WEEKS}",
        "trend_mean7_over_mean28",
        "trend_mean28_over_mean112",
        "days_since_last_sale",
        "age_days",
        "observed_days",
        "price_mean_window364",
        "price_ratio_window28",
        "orders_mean_window7",
        "orders_mean_window28",
        "units_per_order_window28",
        "shop_mean_window7",
        "shop_trend_mean7_over_mean28",
        "target_day_of_week",
        "target_day_of_month",
        "target_month",
        "target_is_holiday",
    ]
    return names + list(SEASONAL) + list(KNOWN_FUTURE)


@lru_cache(maxsize=32)
def _holiday_set(country: str | None, first_year: int, last_year: int) -> frozenset:
    if not country:
        return frozenset()
    try:
        days = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except (KeyError, NotImplementedError, AttributeError):
        return frozenset()
    return frozenset(pd.Timestamp(d) for d in days)


def holiday_flags(dates: pd.DatetimeIndex, country: str | None) -> np.ndarray:
    """1.0 on public holidays of `country` (ISO code), 0.0 otherwise or when country unknown."""
    if len(dates) == 0:
        return np.zeros(0)
    hs = _holiday_set(country, int(dates.year.min()), int(dates.year.max()))
    return np.array([d in hs for d in dates], dtype=np.float64)


def _cum(x: np.ndarray) -> np.ndarray:
    """Cumulative sums along days with a leading zero column: window (a, b] = C[b+1] - C[a+1]."""
    out = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=out[:, 1:])
    return out


@dataclass
class FeatureState:
    """Precomputed cumulative arrays of a panel so features at any origin cost O(products)."""

    panel: DemandPanel
    product_codes: np.ndarray  # integer code of each panel row for the `product` feature
    category_codes: np.ndarray
    use_known: bool = True  # read the panel's planned promotions/prices (off: as if none)
    use_yearly: bool = True  # yearly calendar terms (off: constant, see `YEARLY`)
    history_cap: float | None = None  # robust history (`robust_history`); None: units as sold

    def __post_init__(self) -> None:
        u = self.panel.units
        obs = ~np.isnan(u)
        x = np.where(obs, u, 0.0)
        if self.history_cap:
            x = robust_history(x, obs, self.history_cap)
        self.cs = _cum(x)
        self.cs2 = _cum(x * x)
        self.cn = _cum(obs.astype(np.float64))
        self.cz = _cum((obs & (x == 0)).astype(np.float64))
        pr = self.panel.price
        pobs = ~np.isnan(pr)
        self.cp = _cum(np.where(pobs, pr, 0.0))
        self.cpn = _cum(pobs.astype(np.float64))
        n_d = u.shape[1]
        day = np.arange(n_d)
        self.first = self.panel.first_observed()
        last_sale = np.where(x > 0, day[None, :], -1)
        self.last_sale = np.maximum.accumulate(last_sale, axis=1)
        # same weekday mean over the last k weeks ending at each day (observed days only)
        sw_sum = np.zeros_like(x)
        sw_n = np.zeros_like(x)
        for k in range(SAME_WEEKDAY_WEEKS):
            s = 7 * k
            if s >= n_d:
                break
            sw_sum[:, s:] += x[:, : n_d - s]
            sw_n[:, s:] += obs[:, : n_d - s]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.same_wd_mean = np.where(sw_n > 0, sw_sum / np.maximum(sw_n, 1), np.nan)
        self.x = np.where(obs, x, np.nan)
        orders = self.panel.orders
        self.co = None if orders is None else _cum(np.where(obs, np.nan_to_num(orders), 0.0))
        shop = x.sum(axis=0)
        shop_open = self.panel.open_days.astype(np.float64)
        self.shop_cs = np.concatenate([[0.0], np.cumsum(shop * shop_open)])
        self.shop_cn = np.concatenate([[0.0], np.cumsum(shop_open)])
        # rolling max over 28 days, computed lazily per origin (cheap: products x 28)

    def _window(self, c: np.ndarray, t: int, w: int) -> np.ndarray:
        return c[:, t + 1] - c[:, max(t + 1 - w, 0)]

    def _mean(self, t: int, w: int) -> np.ndarray:
        n = self._window(self.cn, t, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self._window(self.cs, t, w) / np.maximum(n, 1), np.nan)

    def origin_block(self, t: int) -> tuple[list[str], np.ndarray]:
        """Per-product features known at origin day index t: (names, array[products, k])."""
        cols = self._rolling(t)
        last = self.last_sale[:, t]
        cols["days_since_last_sale"] = np.where(last >= 0, t - last, np.nan).astype(np.float64)
        cols["age_days"] = (t - self.first).astype(np.float64)
        cols["observed_days"] = self.cn[:, t + 1]
        cols.update(self._prices(t))
        cols.update(self._orders(t))
        cols.update(self._shop(t))
        names = list(cols)
        return names, np.column_stack([cols[n] for n in names])

    def _rolling(self, t: int) -> dict[str, np.ndarray]:
        """Rolling means, the 28-day std, zero share and max, and two trend ratios."""
        cols: dict[str, np.ndarray] = {}
        for w in WINDOWS:
            cols[f"rolling_mean_window{w}"] = self._mean(t, w)
        n28 = self._window(self.cn, t, 28)
        m28 = cols["rolling_mean_window28"]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self._window(self.cs2, t, 28) / np.maximum(n28, 1) - m28**2
            cols["rolling_std_window28"] = np.where(n28 > 1, np.sqrt(np.maximum(var, 0)), np.nan)
            cols["rolling_zero_share_window28"] = np.where(
                n28 > 0, self._window(self.cz, t, 28) / np.maximum(n28, 1), np.nan
            )
        seg = self.x[:, max(t - 27, 0) : t + 1]
        has = ~np.isnan(seg).all(axis=1)
        cols["rolling_max_window28"] = np.where(
            has, np.nanmax(np.where(np.isnan(seg), -1, seg), axis=1), np.nan
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["trend_mean7_over_mean28"] = (cols["rolling_mean_window7"] + 0.1) / (m28 + 0.1)
            cols["trend_mean28_over_mean112"] = (m28 + 0.1) / (cols["rolling_mean_window112"] + 0.1)
        return cols

    def _prices(self, t: int) -> dict[str, np.ndarray]:
        """The mean paid price over a year and the last 28 days relative to it."""
        pn = self._window(self.cpn, t, PRICE_LONG_WINDOW)
        pn28 = self._window(self.cpn, t, 28)
        with np.errstate(invalid="ignore", divide="ignore"):
            p_long = np.where(pn > 0, self._window(self.cp, t, PRICE_LONG_WINDOW) / pn, np.nan)
            p28 = np.where(pn28 > 0, self._window(self.cp, t, 28) / pn28, np.nan)
        return {"price_mean_window364": p_long, "price_ratio_window28": p28 / p_long}

    def _orders(self, t: int) -> dict[str, np.ndarray]:
        """Sale lines per observed day (7 and 28 days) and units per line (NaN without orders)."""
        n7 = self._window(self.cn, t, 7)
        n28 = self._window(self.cn, t, 28)
        if self.co is None:
            nan = np.full(len(n28), np.nan)
            o7 = o28 = upo = nan
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                o7 = np.where(n7 > 0, self._window(self.co, t, 7) / np.maximum(n7, 1), np.nan)
                o_sum = self._window(self.co, t, 28)
                o28 = np.where(n28 > 0, o_sum / np.maximum(n28, 1), np.nan)
                upo = np.where(
                    o_sum > 0, self._window(self.cs, t, 28) / np.maximum(o_sum, 1), np.nan
                )
        return {
            "orders_mean_window7": o7,
            "orders_mean_window28": o28,
            "units_per_order_window28": upo,
        }

    def _shop(self, t: int) -> dict[str, np.ndarray]:
        """Shop-wide mean units per open day over 7 days and its trend against 28 days."""
        sn7 = self.shop_cn[t + 1] - self.shop_cn[max(t - 6, 0)]
        sn28 = self.shop_cn[t + 1] - self.shop_cn[max(t - 27, 0)]
        s7 = (self.shop_cs[t + 1] - self.shop_cs[max(t - 6, 0)]) / max(sn7, 1)
        s28 = (self.shop_cs[t + 1] - self.shop_cs[max(t - 27, 0)]) / max(sn28, 1)
        n_p = self.x.shape[0]
        return {
            "shop_mean_window7": np.full(n_p, s7),
            "shop_trend_mean7_over_mean28": np.full(n_p, (s7 + 1) / (s28 + 1)),
        }

    def rows(self, t: int, horizon: int, target_dates: pd.DatetimeIndex) -> np.ndarray:
        """Feature matrix for every product x horizon 1..H at origin t (row = p * H + h - 1).

        `target_dates` are the H calendar days after the origin (may lie past the panel end).
        """
        n_p = self.x.shape[0]
        o_names, o_block = self.origin_block(t)
        hs = np.arange(1, horizon + 1)
        cols = {n: o_block[:, i, None] for i, n in enumerate(o_names)}
        cols["product"] = self.product_codes[:, None]
        cols["category"] = self.category_codes[:, None]
        cols["horizon"] = hs[None, :]
        cols.update(self._same_weekday(t, hs))
        cols.update(_calendar(target_dates, self.panel.country))
        if not self.use_yearly:
            cols.update({k: np.full((1, horizon), np.nan) for k in YEARLY})
        cols.update(self._last_year(t, hs))
        cols.update(self._planned(t, horizon))
        names = feature_names()
        out = np.empty((n_p, horizon, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            out[:, :, j] = cols[name]
        return out.reshape(n_p * horizon, -1)

    def _same_weekday(self, t: int, hs: np.ndarray) -> dict[str, np.ndarray]:
        """Last observed same weekday at or before the origin, and its 4-week mean."""
        n_p, horizon = self.x.shape[0], len(hs)
        ref = t + hs - 7 * np.ceil(hs / 7).astype(int)  # same weekday, last week at or before t
        ok = ref >= 0
        sw_last = np.full((n_p, horizon), np.nan)
        sw_mean = np.full((n_p, horizon), np.nan)
        sw_last[:, ok] = self.x[:, ref[ok]]
        sw_mean[:, ok] = self.same_wd_mean[:, ref[ok]]
        return {
            "same_weekday_last": sw_last,
            f"same_weekday_mean_weeks{SAME_WEEKDAY_WEEKS}": sw_mean,
        }

    def _last_year(self, t: int, hs: np.ndarray) -> dict[str, np.ndarray]:
        """Same period last year: the mean of the 7 observed days around each target day 364
        days back, and its ratio to the 28 days before the origin last year (the seasonal swing
        from origin to target). NaN where the history does not reach back a year."""
        k = LAST_YEAR_HALF_WINDOW
        centre = t + hs - YEAR
        lo = np.clip(centre - k, 0, t + 1)
        hi = np.clip(centre + k + 1, 0, t + 1)
        n = self.cn[:, hi] - self.cn[:, lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            ly = np.where(n > 0, (self.cs[:, hi] - self.cs[:, lo]) / np.maximum(n, 1), np.nan)
        o = t - YEAR
        base = np.full(self.x.shape[0], np.nan) if o < 27 else self._mean(o, 28)
        return {
            "last_year_mean_window7": ly,
            "last_year_ratio_to_origin": (ly + 0.1) / (base[:, None] + 0.1),
        }

    def _planned(self, t: int, horizon: int) -> dict[str, np.ndarray]:
        """Known-future inputs as planned at origin t (`DemandPanel.known_future`): promotion
        flag and discount on each target day, the planned price (after the discount) over the
        price in effect at the origin, and the share of the last 28 days under promotion.
        Zeros and ratio 1 when the shop publishes no plans (the columns are then constant)."""
        n_p = self.x.shape[0]
        if self.panel.known is None or not self.use_known:
            return {
                "target_promotion": np.zeros((n_p, horizon)),
                "target_discount": np.zeros((n_p, horizon)),
                "target_price_ratio": np.ones((n_p, horizon)),
                "promotion_share_window28": np.zeros((n_p, 1)),
            }
        promo, discount, ratio, past = known_at(self.panel, t, horizon)
        return {
            "target_promotion": promo,
            "target_discount": discount,
            "target_price_ratio": ratio * (1.0 - discount),
            "promotion_share_window28": past[:, None],
        }


ROBUST_WINDOW = 112  # days of a series' own history its cap is set from


def robust_history(x: np.ndarray, obs: np.ndarray, k: float) -> np.ndarray:
    """Daily units with one-off bulk orders capped, for the history features only: each day at
    most k x (the series' mean over its previous `ROBUST_WINDOW` observed days + 1). Causal (a
    day's cap reads only earlier days, so a feature at origin t still reads days <= t only);
    days without earlier history are kept. A wholesale order of 50x a product's usual day then
    moves its rolling means and maxima by k x its level at most, instead of dominating them for
    weeks; the targets stay as sold."""
    cs, cn = _cum(x), _cum(obs.astype(np.float64))
    day = np.arange(x.shape[1])
    lo = np.maximum(day - ROBUST_WINDOW, 0)
    n = cn[:, day] - cn[:, lo]  # observed days in [d - W, d - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (cs[:, day] - cs[:, lo]) / n
    cap = np.where(n > 0, k * (mean + 1.0), np.inf)
    return np.minimum(x, cap)


def _calendar(dates: pd.DatetimeIndex, country: str | None) -> dict[str, np.ndarray]:
    """Target-day calendar: weekday, day of month, month, holiday and two yearly harmonics."""
    doy = 2 * np.pi * (dates.dayofyear.to_numpy(np.float64) - 1) / 365.25
    cols = {
        "target_day_of_week": dates.dayofweek,
        "target_day_of_month": dates.day,
        "target_month": dates.month,
        "target_is_holiday": holiday_flags(dates, country),
        "target_year_sin": np.sin(doy),
        "target_year_cos": np.cos(doy),
        "target_year_sin2": np.sin(2 * doy),
        "target_year_cos2": np.cos(2 * doy),
    }
    return {k: np.asarray(v, dtype=np.float64)[None, :] for k, v in cols.items()}


def known_at(panel: DemandPanel, t: int, horizon: int):
    """(promotion flag, discount, planned price ratio) on the H days after day index t, each
    [p, H], and the promotion share of the 28 days up to t [p], as planned at the end of day t:
    nothing planned later is read (`KnownFuture.grid` at origin day t, as
    `DemandPanel.known_future` reads it).

    The plan is laid out on the 28 + H days read only, not on the whole panel: a grid over every
    day at each of the training origins cost days^2 (issue 14: 3.7 of the 5.4 CPU s of a 5-year,
    500-series panel's training rows; the cells are the same, `tests/test_forecast_features`)."""
    lo = max(t - 27, 0)
    dates = panel.dates[lo : t + 1 + horizon]
    extra = t + 1 + horizon - lo - len(dates)  # target days past the panel's end
    if extra > 0:
        dates = dates.append(pd.date_range(panel.end + pd.Timedelta(days=1), periods=extra))
    planned = panel.known or KnownFuture.from_tables()
    ids = panel.product_ids
    plan = planned.grid(ids, panel.categories, panel.locations, dates, panel.dates[t])
    days = slice(t + 1 - lo, t + 1 - lo + horizon)
    promo = plan.promo[:, days].astype(np.float64)
    past = plan.promo[:, : t + 1 - lo].mean(axis=1)
    return promo, plan.discount[:, days], plan.price_ratio[:, days], past


def training_rows(
    state: FeatureState,
    horizon: int,
    origins: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack features and targets of several origins: (X, y, origin_index, horizon).

    Only rows whose target day is observed (shop open, product on sale) and whose product has at
    least one observed day by the origin are kept.
    """
    panel = state.panel
    n_d = len(panel.dates)
    h_eff = {t: min(horizon, n_d - 1 - t) for t in origins if n_d - 1 - t > 0}
    size = panel.n_products * sum(h_eff.values())
    X = np.empty((size, len(feature_names())))  # filled in place: no stacking copy
    ys, os_, hs_ = [], [], []
    n = 0
    for t, h in h_eff.items():
        y = panel.units[:, t + 1 : t + 1 + h].reshape(-1)
        keep = ~np.isnan(y) & np.repeat(state.first <= t, h)
        k = int(keep.sum())
        X[n : n + k] = state.rows(t, h, panel.dates[t + 1 : t + 1 + h])[keep]
        n += k
        ys.append(y[keep])
        os_.append(np.full(k, t))
        hs_.append(np.tile(np.arange(1, h + 1), panel.n_products)[keep])
    if not ys:
        return X[:0], np.empty(0), np.empty(0, int), np.empty(0, int)
    return X[:n], np.concatenate(ys), np.concatenate(os_), np.concatenate(hs_)
