"""Split-conformal calibration of forecast means into P10 / P50 / P90.

Held-out days give quantiles of actual / forecast mean per bin of forecast level and spikiness
(`fit_ratio_calibration`), after a level correction; `apply_ratio_calibration` turns raw means
into the three quantiles. Calibrations are plain JSON values (saved in forecaster.json).
"""

from __future__ import annotations

import numpy as np

TAUS = tuple(np.round(np.arange(0.05, 0.951, 0.025), 3).tolist())


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
    """Conformal calibration on held-out days: quantiles of actual / forecast mean per bin of
    (forecast level, spikiness), after a bias factor (sum actual / sum forecast)**bias_correction.

    The P10-P90 band uses the quantile levels (0.5 -/+ s) with the smallest s whose coverage on the
    held-out days reaches 80% (ties at zero count as covered, so plain 0.1/0.9 would over-cover).
    `point="mean"`: P50 is the bias-corrected mean; `"median"`: the calibrated median;
    `"unbiased"`: the common quantile level at which the held-out days are unbiased.
    """
    bias = 1.0
    if bias_correction and mu.sum() > 0 and y.sum() > 0:
        bias = float(np.clip((y.sum() / mu.sum()) ** float(bias_correction), *bias_clip))
    mu = np.maximum(mu * bias, 1e-6)
    n_mu = max(1, min(bins, len(mu) // 300))
    n_sp = 3 if len(mu) >= 900 * n_mu else 1
    mean_edges = np.quantile(mu, np.linspace(0, 1, n_mu + 1)[1:-1]) if n_mu > 1 else np.array([])
    spread_edges = np.quantile(spread, [1 / 3, 2 / 3]) if n_sp > 1 else np.array([])
    bm = np.searchsorted(mean_edges, mu)
    bs = np.searchsorted(spread_edges, spread)
    taus = np.asarray(TAUS)
    glob = np.quantile(y / mu, taus)
    ratios = np.empty((n_mu, n_sp, len(taus)))
    for i in range(n_mu):
        for j in range(n_sp):
            sel = (bm == i) & (bs == j)
            ratios[i, j] = np.quantile(y[sel] / mu[sel], taus) if sel.sum() >= 30 else glob
    q = mu[:, None] * ratios[bm, bs]  # held-out points x taus
    band = _narrowest_band(taus, q, mu, y)
    cal = {
        "taus": taus.tolist(),
        "mean_edges": mean_edges.tolist(),
        "spread_edges": spread_edges.tolist(),
        "ratios": ratios.tolist(),
        "bias": bias,
        "point": point,
        "point_tau": None,
        "band": band,
    }
    if point == "unbiased":
        k = int(np.clip(np.searchsorted(q.sum(axis=0), y.sum()), 0, len(taus) - 1))
        cal["point_tau"] = float(taus[k])
    return cal


def _narrowest_band(taus: np.ndarray, q: np.ndarray, mu: np.ndarray, y: np.ndarray) -> list:
    """The quantile levels (0.5 -/+ s) with the smallest s covering 80% of the held-out days
    (plain [0.1, 0.9] when none does)."""
    for lo_k in range(len(taus) // 2, -1, -1):
        hi_k = len(taus) - 1 - lo_k
        if hi_k < lo_k:
            continue
        lo = np.minimum(q[:, lo_k], mu)
        hi = np.maximum(q[:, hi_k], mu)
        if np.mean((y >= lo) & (y <= hi)) >= 0.8:
            return [float(taus[lo_k]), float(taus[hi_k])]
    return [0.1, 0.9]


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
    lo, hi = cal.get("band", [0.1, 0.9])
    p10 = _quantile(cal, mu, spread, lo)
    p90 = _quantile(cal, mu, spread, hi)
    point = cal.get("point", "mean")
    if point == "median":
        p50 = _quantile(cal, mu, spread, 0.5)
    elif point == "unbiased" and cal.get("point_tau") is not None:
        p50 = _quantile(cal, mu, spread, cal["point_tau"])
    else:
        p50 = mu
    return p10, p50, p90
