"""Forecast accuracy metrics, pooled and broken down by horizon week, category and level decile.

All metrics are computed on observed days only (shop open, product on sale): a closed day is
neither a zero-demand day nor an error. Definitions (y actual, f the P50 point forecast):
- WAPE = sum|y - f| / sum y; bias = sum(f - y) / sum y (negative = under-forecast).
- MASE = mean over products of MAE / mean|y_t - y_{t-7}| on that product's history (weekly
  seasonal-naive scale); RMSSE likewise with squared errors, square-rooted per product.
- pinball_loss = mean pinball loss over the P10, P50 and P90 quantiles (units), pinball_scaled = pinball /
  mean y; coverage_p10_p90 = share of days with P10 <= y <= P90 (nominal 0.8); above_p90 /
  below_p10 = share of days with y > P90 / y < P10 (nominal 0.1 each).
- band_ordered_share = share of forecasts with P90 > P50 > P10 among the series with demand (a
  sale in the `RECENT_DAYS` days before the origin): ~1 for a real band, 0 for a degenerate one.
- Pooled coverage is dominated by slow sellers' zero days (any band from 0 covers them), so
  `coverage_report` also gives it per decile of the forecast level (P50) and per horizon week.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.demand import DemandPanel

QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
NOMINAL_COVERAGE = 0.8
RECENT_DAYS = 28  # a series "has demand" when it sold in these days before the origin


def wape(y, f) -> float:
    y, f = np.asarray(y, float), np.asarray(f, float)
    total = y.sum()
    return float(np.abs(y - f).sum() / total) if total > 0 else float("nan")


def bias(y, f) -> float:
    y, f = np.asarray(y, float), np.asarray(f, float)
    total = y.sum()
    return float((f - y).sum() / total) if total > 0 else float("nan")


def pinball(y, q, tau: float) -> float:
    """Mean pinball (quantile) loss of quantile forecasts `q` at level `tau`."""
    y, q = np.asarray(y, float), np.asarray(q, float)
    d = y - q
    return float(np.mean(np.maximum(tau * d, (tau - 1) * d))) if len(y) else float("nan")


def coverage(y, lo, hi) -> float:
    y = np.asarray(y, float)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi)))) if len(y) else float("nan")


def band_ordered_share(p10, p50, p90, has_demand=None) -> float:
    """Share of forecasts with P90 > P50 > P10, among those of series with demand (all if None)."""
    p10, p50, p90 = (np.asarray(a, float) for a in (p10, p50, p90))
    keep = np.ones(len(p50), bool) if has_demand is None else np.asarray(has_demand, bool)
    ordered = (p90 > p50) & (p50 > p10)
    return float(ordered[keep].mean()) if keep.any() else float("nan")


def level_deciles(p50) -> np.ndarray:
    """Decile 1..10 of each forecast's level (P50), equal counts (ties broken by position)."""
    p50 = pd.Series(np.asarray(p50, float))
    if len(p50) == 0:
        return np.zeros(0, dtype=int)
    ranks = p50.rank(method="first").to_numpy()
    return np.ceil(ranks * 10 / len(p50)).astype(int)


def band_metrics(df: pd.DataFrame) -> dict[str, float]:
    """Coverage, both tail shares, the ordered-band share and the count of a frame's rows."""
    y = df["y"].to_numpy(float)
    lo, hi = df["p10"].to_numpy(float), df["p90"].to_numpy(float)
    n = len(y)
    return {
        "coverage_p10_p90": coverage(y, lo, hi),
        "above_p90": float(np.mean(y > hi)) if n else float("nan"),
        "below_p10": float(np.mean(y < lo)) if n else float("nan"),
        "band_ordered_share": band_ordered_share(
            df["p10"], df["p50"], df["p90"], df.get("has_demand")
        ),
        "n_points": float(n),
    }


def coverage_report(df: pd.DataFrame) -> dict:
    """Band metrics overall, per level decile of P50 (1 = lowest) and per horizon week, with the
    worst decile coverage and upper-tail share (what a degenerate band gets wrong)."""
    deciles = level_deciles(df["p50"])
    by_decile = {int(d): band_metrics(g) for d, g in df.groupby(deciles, sort=True)}
    by_week = {int(w): band_metrics(g) for w, g in df.groupby("week", sort=True)}
    covs = [m["coverage_p10_p90"] for m in by_decile.values()]
    tails = [m["above_p90"] for m in by_decile.values()]
    return {
        "overall": band_metrics(df),
        "by_decile": by_decile,
        "by_week": by_week,
        "decile_min_coverage": float(min(covs)) if covs else float("nan"),
        "decile_max_above_p90": float(max(tails)) if tails else float("nan"),
    }


def seasonal_scales(history: DemandPanel, season: int = 7) -> pd.DataFrame:
    """Per product: mean |y_t - y_{t-season}| and mean (y_t - y_{t-season})^2 over observed pairs."""
    u = history.units
    short = u.shape[1] <= season
    d = np.full((u.shape[0], 1), np.nan) if short else u[:, season:] - u[:, :-season]
    ok = ~np.isnan(d)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(n > 0, np.nansum(np.abs(d), axis=1) / np.maximum(n, 1), np.nan)
        mse = np.where(n > 0, np.nansum(d * d, axis=1) / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"product_id": history.product_ids, "mase_scale": mae, "rmsse_scale": mse})


def _per_product_scaled(df: pd.DataFrame) -> tuple[float, float]:
    err = df["p50"].to_numpy() - df["y"].to_numpy()
    g = pd.DataFrame(
        {
            "product_id": df["product_id"].to_numpy(),
            "ae": np.abs(err),
            "se": err**2,
            "s1": df["mase_scale"].to_numpy(),
            "s2": df["rmsse_scale"].to_numpy(),
        }
    )
    per = g.groupby("product_id", sort=False).agg(
        ae=("ae", "mean"), se=("se", "mean"), s1=("s1", "first"), s2=("s2", "first")
    )
    ok = (per["s1"] > 0) & (per["s2"] > 0)
    if not ok.any():
        return float("nan"), float("nan")
    per = per[ok]
    return float((per["ae"] / per["s1"]).mean()), float(np.sqrt(per["se"] / per["s2"]).mean())


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """Pooled metrics of an evaluation frame (y, p10, p50, p90, product_id, scales)."""
    y = df["y"].to_numpy(float)
    band = band_metrics(df)
    out = {
        "wape": wape(y, df["p50"]),
        "bias": bias(y, df["p50"]),
        **{k: band[k] for k in ("coverage_p10_p90", "above_p90", "below_p10")},
        "band_ordered_share": band["band_ordered_share"],
    }
    losses = [pinball(y, df[c], tau) for c, tau in QUANTILES.items()]
    out["pinball_loss"] = float(np.mean(losses)) if len(y) else float("nan")
    mean_y = float(y.mean()) if len(y) else float("nan")
    out["pinball_loss_scaled"] = (
        out["pinball_loss"] / mean_y if mean_y and mean_y > 0 else float("nan")
    )
    out["mase"], out["rmsse"] = _per_product_scaled(df) if len(y) else (float("nan"),) * 2
    out["n_points"] = float(len(y))
    out["actual_units"] = float(y.sum())
    return out


def evaluation_frame(
    forecast: pd.DataFrame, actuals: DemandPanel, history: DemandPanel
) -> pd.DataFrame:
    """Join a forecast table with observed actuals, horizon (days after the history end),
    category, the products' seasonal scales from `history` and `has_demand` (a sale in its last
    `RECENT_DAYS` days)."""
    origin = history.end
    fc = forecast[["product_id", "date", "p10", "p50", "p90"]].copy()
    fc["product_id"] = fc["product_id"].astype(str)
    fc["date"] = pd.to_datetime(fc["date"])
    act = actuals.to_frame(observed_only=True)
    act = act[(act["date"] > origin) & (act["date"] <= fc["date"].max())]
    act = act.dropna(subset=["units"])[["product_id", "date", "units", "category"]]
    df = act.merge(fc, on=["product_id", "date"], how="inner").rename(columns={"units": "y"})
    df["horizon"] = (df["date"] - origin).dt.days.astype(int)
    df["week"] = (df["horizon"] - 1) // 7 + 1
    df = df.merge(seasonal_scales(history), on="product_id", how="left")
    recent = np.nansum(history.units[:, -RECENT_DAYS:], axis=1) > 0
    demand = pd.Series(recent, index=[str(p) for p in history.product_ids])
    df["has_demand"] = df["product_id"].map(demand).fillna(False).astype(bool).to_numpy()
    return df


def evaluate(df: pd.DataFrame) -> dict:
    """{"overall": {...}, "by_week": {week: {...}}, "by_category": {category: {...}}}."""
    return {
        "overall": summarize(df),
        "by_week": {int(w): summarize(g) for w, g in df.groupby("week", sort=True)},
        "by_category": {str(c): summarize(g) for c, g in df.groupby("category", sort=True)},
    }
