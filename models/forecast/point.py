"""The point forecast (P50) chosen on the held-out days: the mean, or a count quantile.

WAPE, the accuracy every forecast here is scored on, is minimised cell by cell by the median,
which for daily counts of slow sellers is far below the mean (a series selling one unit on 30%
of its days has median 0: the mean 0.3 scores E|y - 0.3| / 0.3 = 1.4, the zero 1.0), so a
WAPE-only choice forecasts low. Held to a total level, though, the forecast that minimises the
summed absolute error is the quantile at one common level tau in every cell (Lagrange: the
derivative of E|y - f| is 2 F(f) - 1, equal everywhere at the optimum): slow sellers get whole
counts (0 or 1 on most days), best sellers a value near their mean, and the level tau sets the
total. So the candidates are the mean and, for each tau of `TAUS`, the plain quantile of each
held-out day's own count distribution (`negbin`: the forecast mean with its bin's dispersion);
the one kept has the lowest held-out WAPE among those whose held-out bias is within
max(`BIAS_TOLERANCE`, the mean's own |bias|): never more biased than the mean, unless both are
within the tolerance. Which one wins is the data's: on Online Retail, whose units are half one-off
wholesale orders the count model does not describe, the mean won on every fold; on the generated
`medium` store, most of whose units come from steady slow sellers, tau 0.72-0.73 (issue 14).

Measured there (`LightGBMForecaster(point="auto")`, 3 folds, the bench's settings fixed): WAPE
1.033 -> 0.979 at bias -7.8% -> -7.2%, 0.86 x the best peer's 1.141, Online Retail unchanged
(0.928, the mean). Not the default: P50 is then 0 on 70% of that store's test days, where P10 is
0 too, so only ~30% of the forecasts of series with demand have P10 < P50 < P90 and the promotion
gate's band guard (`band_ordered_share` >= 0.95, issue 11) would refuse the model; P50 clipped
into the band keeps the gain (0.979) and the band's coverage, not the strict order. A fractional
point inside the band does not keep it either: the cost of a forecast f in (0, 1) on a day that
sells 0 or 1 is linear in f, so only the zero gains. Measured: the negative binomial's
mid-quantile at one common level (above 0 for levels >= 0.5, so strictly inside the band) on
the first `medium` fold's held-out days gave WAPE 0.883 / 0.965 / 1.052 at levels 0.5 / 0.55 /
0.6, bias -26% / -7.8% / +10%, against the mean's 0.962 at -5.8%: along its level it trades
bias for WAPE as scaling the mean does, so within the bias limit it never won (the benches
kept the mean on every fold; 2026-12-03, issue 14).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import nbinom

TAUS = tuple(np.round(np.arange(0.5, 0.951, 0.01), 3).tolist())
# held-out |bias| any point may have (the benchmarks hold the forecast to 10%: half of it); on
# the generated `medium` store's folds 0.03 / 0.05 / 0.08 gave WAPE 0.983 / 0.979 / 0.968 at
# bias -6.5% / -7.2% / -9.4% (the mean: 1.033 at -7.8%), Online Retail kept the mean with each
BIAS_TOLERANCE = 0.05


def count_quantile(mu: np.ndarray, phi: np.ndarray, tau: float) -> np.ndarray:
    """The plain quantile at level `tau` of NB(mean mu, dispersion phi), elementwise: the smallest
    count whose CDF reaches tau (a whole number of units, as sold)."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    n = 1.0 / np.broadcast_to(np.asarray(phi, dtype=np.float64), mu.shape)
    return nbinom.ppf(tau, n, n / (n + mu))


def choose_point(
    mu: np.ndarray,
    y: np.ndarray,
    phi: np.ndarray,
    band: tuple[np.ndarray, np.ndarray],
    tolerance: float = BIAS_TOLERANCE,
) -> dict:
    """The point of the held-out days (`mu` the corrected means, `y` the actual units, `phi` each
    day's dispersion, `band` their (P10, P90), inside which a quantile point is kept):
    {"point": "mean" | "count_quantile", "point_tau", and the held-out "point_wape" /
    "point_bias" of the choice and "mean_wape" / "mean_bias" of the mean} (module docstring)."""
    total = float(y.sum())
    if total <= 0:
        return {"point": "mean", "point_tau": None}

    def score(f: np.ndarray) -> tuple[float, float]:
        return float(np.abs(y - f).sum() / total), float(f.sum() / total - 1.0)

    mean_wape, mean_bias = score(mu)
    limit = max(tolerance, abs(mean_bias))
    best = (mean_wape, mean_bias, None)
    for tau in TAUS:
        wape, bias = score(np.clip(count_quantile(mu, phi, tau), *band))
        if abs(bias) <= limit and wape < best[0]:
            best = (wape, bias, tau)
    return {
        "point": "mean" if best[2] is None else "count_quantile",
        "point_tau": best[2],
        "point_wape": best[0],
        "point_bias": best[1],
        "mean_wape": mean_wape,
        "mean_bias": mean_bias,
    }
