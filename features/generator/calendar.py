"""Time: how busy each day is (weekly and yearly seasonality, trend) and at which hours people shop."""

from __future__ import annotations

from datetime import date

import numpy as np

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND

# Monday .. Sunday: busiest on Sunday evening and Monday, quietest on Saturday.
WEEKDAY_FACTOR = np.array([1.15, 1.0, 0.95, 0.95, 0.88, 0.78, 1.3])

# Share of sessions starting in each hour (UTC): low at night, lunch bump, evening peak.
HOUR_WEIGHTS = np.array(
    [
        0.8,
        0.5,
        0.3,
        0.2,
        0.2,
        0.3,
        0.6,
        1.2,
        2.0,
        2.6,
        3.0,
        3.3,
        3.8,
        3.6,
        3.2,
        3.1,
        3.2,
        3.6,
        4.2,
        5.0,
        5.6,
        5.4,
        4.0,
        2.0,
    ]
)
HOUR_WEIGHTS = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()


def day_of_year(start: date, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Weekday (Mon=0) and day of year (1..366) of each simulated day."""
    dates = np.datetime64(start, "D") + np.arange(days)
    weekday = (dates.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday
    years = dates.astype("datetime64[Y]")
    doy = (dates - years.astype("datetime64[D]")).astype("int64") + 1
    return weekday, doy


def yearly_factor(doy: np.ndarray) -> np.ndarray:
    """Q4 peak (Black Friday, Christmas shopping), summer dip, quiet Christmas days."""
    doy = doy.astype(float)
    f = 1.0 + 0.22 * np.cos(2 * np.pi * (doy - 350) / 365.25)
    f += 0.55 * np.exp(-0.5 * ((doy - 332) / 5.0) ** 2)  # Black Friday / Cyber Monday
    f += 0.35 * np.exp(-0.5 * ((doy - 348) / 5.0) ** 2)  # last shipping days before Christmas
    f -= 0.12 * np.exp(-0.5 * ((doy - 215) / 18.0) ** 2)  # August holidays
    f = np.where((doy >= 359) & (doy <= 360), f * 0.55, f)  # 25-26 December (non-leap)
    return f


def day_intensity(start: date, days: int, yearly_growth: float) -> np.ndarray:
    """Relative traffic of each day (mean 1): weekday x season x trend."""
    weekday, doy = day_of_year(start, days)
    trend = (1.0 + yearly_growth) ** (np.arange(days) / 365.25)
    lam = WEEKDAY_FACTOR[weekday] * yearly_factor(doy) * trend
    return lam / lam.mean()


def sample_days(rng: np.random.Generator, weights: np.ndarray, first: np.ndarray) -> np.ndarray:
    """One day per row, drawn proportionally to `weights` among days >= `first[row]`."""
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    lo = cum[first]
    u = lo + rng.random(first.size) * (cum[-1] - lo)
    day = np.searchsorted(cum, u, side="right") - 1
    return np.clip(day, first, weights.size - 1)


def sample_seconds_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds after midnight following the shopping hour profile."""
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS)
    return hour * 3600 + rng.integers(0, 3600, size=n)
