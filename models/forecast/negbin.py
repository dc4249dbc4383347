"""The P10-P90 band of a count forecast: a negative binomial around the forecast mean.

Daily units are counts, mostly 0 for slow sellers. A ratio actual / mean pooled over a bin of
forecast levels mixes the Poisson noise of slow sellers (wide in ratio terms) with the steadier
days of best sellers, so one bin gives a best seller selling every day P10 = 0 and P90 = 4 x its
mean. Here each forecast gets its own count distribution: mean mu, variance mu + phi mu^2, with the
dispersion phi fitted per bin of level and spikiness by moments on held-out days (the model's
error included).

Band levels, split conformal per bin (issue 14): each held-out day's score is the level at which
its count is reached, s = F(y - 1) + P(y) / 2 under its own mean (`mid_cdf`); P10 and P90 are the
`mid_quantile`s at the 10% and 90% ranks of the bin's scores. A count y lies below the
mid-quantile at tau exactly when s < tau and above it exactly when s > tau, so on the held-out
days 10% fall below P10 and 10% above P90, up to ties. Before, each level was the innermost of a
grid with at most 10% of the days beyond it, on the plain or mid-quantile whichever lay further
out: with counts at 0 neither tail reached 10%, and the band covered 0.88 of the generated
`medium` store's test days.

What a band edge between counts means: coverage counts whole units (P10 <= y <= P90), so P90 =
2.4 covers the days selling 0..2, as 2.0 would. The fraction is where the edge sits in the
mid-distribution between 2 and 3 units: it rises smoothly with the mean, so that across the many
forecasts of a bin the share of days above P90 is 10%, which no single count band per day can
promise for slow sellers (a day with mean 0.3 sells 0 with probability 0.74 and at most 1 with
0.96: a band from 0 covers either 74% or 96% of such days, never 80%).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import nbinom

PHI_RANGE = (1e-3, 100.0)
TAIL = 0.1  # nominal share of days below P10, and above P90
# P90's level is at least this: where more than 90% of a bin's days sell 0 the conformal level
# falls on a zero day's score (below 0.5), P90 would be 0, under the mean; every level up to 0.7
# covers the same counts there (mid-quantile < 1 while P(0) + P(1)/2 > 0.7), above 0 and the mean
UPPER_FLOOR = 0.7
MIN_POINTS = 30  # fewer held-out days in a bin: it takes the pooled fit


def dispersion(mu: np.ndarray, y: np.ndarray) -> float:
    """Moment estimate of phi in var = mu + phi mu^2 (clipped to `PHI_RANGE`)."""
    num = float(np.sum((y - mu) ** 2 - mu))
    den = float(np.sum(mu**2))
    return float(np.clip(num / den if den > 0 else PHI_RANGE[1], *PHI_RANGE))


def quantile(mu, phi, tau: float) -> np.ndarray:
    """Band quantile at level `tau` of NB(mean mu, dispersion phi), elementwise: below the median
    the lower, above it the higher of the plain quantile and the mid-quantile (the rule of bands
    fitted before issue 14's conformal levels, kept for the models saved with them)."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    n = 1.0 / np.broadcast_to(np.asarray(phi, dtype=np.float64), mu.shape)
    plain = nbinom.ppf(tau, n, n / (n + mu))
    mid = mid_quantile(mu, phi, tau)
    return np.minimum(plain, mid) if tau < 0.5 else np.maximum(plain, mid)


def mid_cdf(y, mu, phi) -> np.ndarray:
    """Mid-distribution F(y) - P(y)/2 of counts `y` under NB(mean mu, dispersion phi): the level
    at which `mid_quantile` reaches y (a day's conformal score)."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    n = 1.0 / np.broadcast_to(np.asarray(phi, dtype=np.float64), mu.shape)
    p = n / (n + mu)
    y = np.asarray(y, dtype=np.float64)
    return nbinom.cdf(y, n, p) - nbinom.pmf(y, n, p) / 2


def mid_quantile(mu, phi, tau: float) -> np.ndarray:
    """The mid-quantile at level `tau` of NB(mean mu, dispersion phi), elementwise: the inverse of
    the mid-distribution, linear between counts, 0 below its value at 0 (Parzen 2004). A count y
    lies below it exactly when mid_cdf(y) < tau and above it exactly when mid_cdf(y) > tau."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    n = 1.0 / np.broadcast_to(np.asarray(phi, dtype=np.float64), mu.shape)
    p = n / (n + mu)
    j = nbinom.ppf(tau, n, p)  # F(j - 1) < tau <= F(j), so f_mid(j - 1) < tau < f_mid(j + 1)
    f_mid = [nbinom.cdf(j + d, n, p) - nbinom.pmf(j + d, n, p) / 2 for d in (-1, 0, 1)]
    below = f_mid[1] > tau  # the bracket is [j - 1, j], else [j, j + 1]
    k = np.where(below, j - 1, j)
    lo = np.where(below, f_mid[0], f_mid[1])
    hi = np.where(below, f_mid[1], f_mid[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        q = k + np.clip((tau - lo) / (hi - lo), 0.0, 1.0)
    return np.where(k < 0, 0.0, np.nan_to_num(q, nan=j))


def fit_band(mu: np.ndarray, y: np.ndarray, bins: np.ndarray, n_bins: int, n_rows: int = 1) -> dict:
    """Dispersion and conformal band levels per bin (`bins` numbers each held-out day's bin).
    Bins are rows of `n_bins // n_rows` columns (a level bin's spikiness bins): a bin with fewer
    than `MIN_POINTS` days takes its row's fit, else the pooled one. The pooled days are mostly
    slow sellers' zeros: given to a best seller's bin, their levels left 54% of its days below
    P10."""
    pooled = _fit_one(mu, y)
    width = max(1, n_bins // max(1, n_rows))
    rows: dict[int, tuple[float, float, float]] = {}
    fits = []
    for b in range(n_bins):
        sel = bins == b
        if sel.sum() >= MIN_POINTS:
            fits.append(_fit_one(mu[sel], y[sel]))
            continue
        r = b // width
        if r not in rows:
            in_row = (bins // width) == r
            rows[r] = _fit_one(mu[in_row], y[in_row]) if in_row.sum() >= MIN_POINTS else pooled
        fits.append(rows[r])
    return {
        "dispersion": [f[0] for f in fits],
        "levels": [[f[1], f[2]] for f in fits],
        "quantile": "mid",
    }


def _fit_one(mu: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(phi, lower level, upper level) of one bin's held-out days: the conformal levels of their
    scores mid_cdf(y) (module docstring), TAIL of the days below the lower and above the upper,
    with the finite-sample rank of split conformal prediction."""
    phi = dispersion(mu, y)
    scores = np.sort(mid_cdf(y, mu, phi))
    n = len(scores)
    k = int(np.clip(np.floor(TAIL * (n + 1)), 1, n))  # rank of the lower level
    lower, upper = scores[k - 1], scores[n - k]
    if lower >= upper:  # one atom holds the middle 80% of the days: the band is that count
        lower = upper = float(np.median(scores))
    return phi, float(lower), float(max(upper, UPPER_FLOOR))


def apply_band(band: dict, mu: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P10, P90) of forecast means `mu` whose bins are `bins` (bands fitted before issue 14's
    conformal levels keep their outer quantile rule, `quantile`)."""
    q = mid_quantile if band.get("quantile") == "mid" else quantile
    phi = np.asarray(band["dispersion"], dtype=np.float64)[bins]
    levels = np.asarray(band["levels"], dtype=np.float64)[bins]
    p10, p90 = np.empty_like(mu), np.empty_like(mu)
    for k in np.unique(bins):  # one level pair per bin
        sel = bins == k
        lo, hi = levels[sel][0]
        p10[sel] = q(mu[sel], phi[sel], lo)
        p90[sel] = q(mu[sel], phi[sel], hi)
    return p10, p90
