"""Split-conformal calibration of forecast means into P10 / P50 / P90.

Held-out days give, per bin of forecast level and spikiness (`fit_ratio_calibration`), after a
level correction: the dispersion and conformal band levels of a count distribution around each
mean (`negbin`: P10 / P90) and quantiles of actual / forecast mean (the median or unbiased P50,
and the band of models saved before issue 11); `apply_ratio_calibration` turns raw means into the
three quantiles. Calibrations are plain JSON values (saved in forecaster.json).

Daily units are counts, mostly 0 for slow sellers: a plain sample quantile is then 0 for every
level up to the share of zero days, so P90 would sit at or below the mean. The count band uses
mid-quantiles (the inverse of F(v-) + P(v)/2, linear between counts; Parzen 2004), whose levels
each bin's held-out days set so that 10% of them fall below P10 and 10% above P90 (`negbin`).
`band_quantile` (ratio quantiles and the moving-average band of short series) takes the plain or
the mid-quantile, whichever lies further out: never more than 10% of the days beyond P10 or P90.
"""

from __future__ import annotations

import numpy as np

from models.forecast import negbin
from models.forecast.point import choose_point, count_quantile

TAUS = tuple(np.round(np.arange(0.05, 0.951, 0.025), 3).tolist())
BAND = (0.1, 0.9)  # the quantile levels of P10 and P90
TOP_LEVELS = (0.95, 0.99)  # extra level bins at the top (`_level_edges`)
BOTTOM_LEVELS = (0.05,)  # and at the bottom


def default_calibration() -> dict:
    """The calibration of a model too short to hold days out: ratios 0..2 of the mean."""
    return {
        "taus": list(TAUS),
        "mean_edges": [],
        "spread_edges": [],
        "point": "mean",
        "point_tau": None,
        "bias": 1.0,
        "band": [0.1, 0.9],
        "ratios": [[list(np.linspace(0.0, 2.0, len(TAUS)))]],
    }


def fit_ratio_calibration(mu, y, spread, bins, point, bias_correction, bias_clip) -> dict:
    """Conformal calibration on held-out days per bin of (forecast level, spikiness), after a bias
    factor (sum actual / sum forecast)**bias_correction: the count band of `negbin.fit_band` and
    `band_quantile`s of actual / forecast mean. Each tail is checked on its own: a band searched
    to cover 80% of the pooled days (as before issue 11) collapses to P10 = P50 = P90 when most
    days sell 0, since any band from 0 covers them.
    `point="mean"`: P50 is the bias-corrected mean; `"median"`: the calibrated median;
    `"unbiased"`: the common quantile level at which the held-out days are unbiased; `"auto"`:
    the mean or a count quantile at one level, whichever the held-out days score best within a
    bias tolerance (`models.forecast.point.choose_point`; the calibration then says which).
    """
    bias = 1.0
    if bias_correction and mu.sum() > 0 and y.sum() > 0:
        bias = float(np.clip((y.sum() / mu.sum()) ** float(bias_correction), *bias_clip))
    mu = np.maximum(mu * bias, 1e-6)
    n_mu = max(1, min(bins, len(mu) // 300))
    n_sp = 3 if len(mu) >= 900 * n_mu else 1
    mean_edges = _level_edges(mu, n_mu, n_sp)
    n_mu = len(mean_edges) + 1
    spread_edges = np.quantile(spread, [1 / 3, 2 / 3]) if n_sp > 1 else np.array([])
    bm = np.searchsorted(mean_edges, mu)
    bs = np.searchsorted(spread_edges, spread)
    taus = np.asarray(TAUS)
    glob = band_quantile(y / mu, taus)
    ratios = np.empty((n_mu, n_sp, len(taus)))
    for i in range(n_mu):
        for j in range(n_sp):
            sel = (bm == i) & (bs == j)
            ratios[i, j] = band_quantile(y[sel] / mu[sel], taus) if sel.sum() >= 30 else glob
    cal = {
        "taus": taus.tolist(),
        "mean_edges": mean_edges.tolist(),
        "spread_edges": spread_edges.tolist(),
        "ratios": ratios.tolist(),
        "bias": bias,
        "point": point,
        "point_tau": None,
        "band": list(BAND),
        "negbin": negbin.fit_band(mu, y, bm * n_sp + bs, n_mu * n_sp, n_mu),
    }
    if point == "auto":
        bins = bm * n_sp + bs
        phi = np.asarray(cal["negbin"]["dispersion"])[bins]
        cal.update(choose_point(mu, y, phi, negbin.apply_band(cal["negbin"], mu, bins)))
    elif point == "unbiased":
        q = mu[:, None] * ratios[bm, bs]  # held-out points x taus
        k = int(np.clip(np.searchsorted(q.sum(axis=0), y.sum()), 0, len(taus) - 1))
        cal["point_tau"] = float(taus[k])
    return cal


def _level_edges(mu: np.ndarray, n_mu: int, n_sp: int) -> np.ndarray:
    """Edges of `n_mu` equal-count level bins, plus the top 5% and 1% and the bottom 5% as bins
    of their own when they hold enough days: the best sellers are a few series among many slow
    ones, and in the lowest bin the band's lower tail fell on its higher means' zero days (the
    lowest decile of the generated `medium` store's test days covered 0.87, 0.83 with the bin)."""
    probs = list(np.linspace(0, 1, n_mu + 1)[1:-1])
    if n_mu > 1:
        probs += [q for q in TOP_LEVELS if len(mu) * (1 - q) >= 3 * negbin.MIN_POINTS * n_sp]
        probs += [q for q in BOTTOM_LEVELS if len(mu) * q >= 3 * negbin.MIN_POINTS * n_sp]
    return np.quantile(mu, sorted(set(probs))) if probs else np.array([])


def mid_quantile(values, taus) -> np.ndarray:
    """Mid-quantiles of `values` at levels `taus`: the inverse of the mid-distribution function
    (share below v plus half the share at v), linear between distinct values, clamped to their
    range. For samples with many ties (0 units) it rises strictly with tau, unlike np.quantile."""
    u, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    if len(u) == 0:
        return np.full(len(np.atleast_1d(taus)), np.nan)
    f_mid = (np.cumsum(counts) - counts / 2.0) / counts.sum()
    return np.interp(taus, f_mid, u)


def band_quantile(values, taus) -> np.ndarray:
    """Quantiles for a band: below the median the lower, above it the higher of the plain
    quantile (inverted CDF) and the mid-quantile (module docstring); the median is the latter."""
    values = np.asarray(values, dtype=np.float64)
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if len(values) == 0:
        return np.full(len(taus), np.nan)
    mid = mid_quantile(values, taus)
    plain = np.quantile(values, taus, method="inverted_cdf")
    return np.where(
        taus < 0.5, np.minimum(mid, plain), np.where(taus > 0.5, np.maximum(mid, plain), mid)
    )


def _quantile(cal: dict, mu, spread, tau: float) -> np.ndarray:
    taus = np.asarray(cal["taus"])
    ratios = np.asarray(cal["ratios"], dtype=np.float64)
    bm = np.searchsorted(np.asarray(cal["mean_edges"]), mu)
    bs = np.searchsorted(np.asarray(cal["spread_edges"]), spread)
    k = int(np.argmin(np.abs(taus - tau)))
    return mu * ratios[bm, bs, k]


def apply_ratio_calibration(cal: dict, mu, spread) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P10, P50, P90) from raw forecast means `mu` with a fitted calibration."""
    mu = np.maximum(mu * cal.get("bias", 1.0), 1e-6)
    bins = None
    if "negbin" in cal:
        n_sp = len(cal["spread_edges"]) + 1
        bm = np.searchsorted(np.asarray(cal["mean_edges"]), mu)
        bs = np.searchsorted(np.asarray(cal["spread_edges"]), spread)
        bins = bm * n_sp + bs
        p10, p90 = negbin.apply_band(cal["negbin"], mu, bins)
    else:  # models saved before issue 11, and the default calibration: ratio quantiles
        lo, hi = cal.get("band", [0.1, 0.9])
        p10 = _quantile(cal, mu, spread, lo)
        p90 = _quantile(cal, mu, spread, hi)
    point = cal.get("point", "mean")
    if point == "median":
        p50 = _quantile(cal, mu, spread, 0.5)
    elif point == "unbiased" and cal.get("point_tau") is not None:
        p50 = _quantile(cal, mu, spread, cal["point_tau"])
    elif point == "count_quantile" and bins is not None:
        phi = np.asarray(cal["negbin"]["dispersion"], dtype=np.float64)[bins]
        # inside the band, which stays the count distribution's (`assemble` would widen it)
        p50 = np.clip(count_quantile(mu, phi, cal["point_tau"]), p10, p90)
    else:
        p50 = mu
    return p10, p50, p90
