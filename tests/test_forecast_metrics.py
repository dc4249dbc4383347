"""Forecast metrics against hand-computed values, and the rolling-origin backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.demand import DemandPanel
from models.forecast import MovingAverage, SeasonalNaive
from shopml.errors import DataError
from training.backtest import backtest, rolling_origins
from training.forecast_metrics import (
    band_ordered_share,
    bias,
    coverage,
    coverage_report,
    evaluate,
    evaluation_frame,
    level_deciles,
    pinball,
    seasonal_scales,
    summarize,
    wape,
)


def test_point_metrics_by_hand():
    y, f = [2, 0, 4], [1, 1, 4]
    assert wape(y, f) == pytest.approx(2 / 6)
    assert bias(y, f) == pytest.approx(0.0)
    assert bias([2, 2], [1, 1]) == pytest.approx(-0.5)
    assert np.isnan(wape([0, 0], [1, 1]))


def test_pinball_and_coverage_by_hand():
    # y above q: tau * (y - q); y below q: (1 - tau) * (q - y)
    assert pinball([2], [1], 0.1) == pytest.approx(0.1)
    assert pinball([0], [1], 0.1) == pytest.approx(0.9)
    assert pinball([2, 0], [1, 1], 0.9) == pytest.approx((0.9 + 0.1) / 2)
    assert coverage([1, 5, 3], [0, 0, 3], [2, 4, 3]) == pytest.approx(2 / 3)


def _panel(units, start="2024-01-01", ids=("a",)):
    units = np.atleast_2d(np.asarray(units, float))
    dates = pd.date_range(start, periods=units.shape[1])
    return DemandPanel(
        np.array(ids, dtype=object),
        np.array(["c"] * len(ids), dtype=object),
        dates,
        units,
        np.full(units.shape, np.nan),
        np.ones(len(dates), bool),
    )


def test_seasonal_scales_by_hand():
    hist = _panel([1, 2, 3, 4, 5, 6, 7, 8, np.nan, 12])
    s = seasonal_scales(hist).iloc[0]
    # pairs (t, t-7): (8,1) -> 7, (nan,2) skipped, (12,3) -> 9
    assert s["mase_scale"] == pytest.approx(8.0)
    assert s["rmsse_scale"] == pytest.approx((49 + 81) / 2)


def test_evaluation_frame_mase_rmsse_and_breakdowns():
    full = _panel([[1, 2, 3, 4, 5, 6, 7, 8, 2, 4, np.nan, 0]])
    hist = full.cut(full.dates[7])  # scale: |8 - 1| = 7
    fc = pd.DataFrame(
        {
            "product_id": "a",
            "date": full.dates[8:12],
            "p10": [0.0] * 4,
            "p50": [1.0, 1.0, 1.0, 1.0],
            "p90": [3.0] * 4,
        }
    )
    df = evaluation_frame(fc, full, hist)
    assert list(df["horizon"]) == [1, 2, 4]  # day 3 was not observed: not scored
    m = summarize(df)
    assert m["wape"] == pytest.approx((1 + 3 + 1) / 6)
    assert m["bias"] == pytest.approx((3 - 6) / 6)
    assert m["mase"] == pytest.approx((5 / 3) / 7)
    assert m["rmsse"] == pytest.approx(np.sqrt(((1 + 9 + 1) / 3) / 49))
    assert m["coverage_p10_p90"] == pytest.approx(2 / 3)
    expected_pinball = np.mean(
        [
            np.mean([0.1 * 2, 0.1 * 4, 0.9 * 0]),
            np.mean([0.5 * 1, 0.5 * 3, 0.5 * 1]),
            np.mean([0.1 * 1, 0.9 * 1, 0.1 * 3]),
        ]
    )
    assert m["pinball_loss"] == pytest.approx(expected_pinball)
    out = evaluate(df)
    assert set(out["by_week"]) == {1}
    assert set(out["by_category"]) == {"c"}


def test_rolling_origins():
    dates = pd.date_range("2024-01-01", periods=100)
    origins = rolling_origins(dates, 3, 14)
    assert origins == [dates[-1] - pd.Timedelta(days=d) for d in (42, 28, 14)]
    with pytest.raises(DataError, match="folds"):
        rolling_origins(dates, 10, 14)


def test_backtest_rebuilds_history_per_fold_and_scores_every_model():
    rng = np.random.default_rng(0)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for day in range(70):
        ts = start + pd.Timedelta(days=day, hours=12)
        if ts.dayofweek == 5:
            continue
        for p in ("x", "y", "z"):
            q = int(rng.poisson(3 if ts.dayofweek else 9))
            if q:
                rows.append(
                    {
                        "order_id": f"o{day}{p}",
                        "customer_id": "c",
                        "product_id": p,
                        "timestamp": ts,
                        "quantity": q,
                        "unit_price": 1.0,
                    }
                )
    lines = pd.DataFrame(rows)
    models = {"seasonal_naive": SeasonalNaive, "moving_average": MovingAverage}
    result = backtest(lines, None, models, n_folds=2, horizon=7)
    assert len(result.folds) == 2
    assert result.folds[0].origin == pd.Timestamp("2024-02-25")
    summary = result.summary()
    assert set(summary) == set(models)
    for m in summary.values():
        assert 0 < m["wape"] < 2 and 0 <= m["coverage_p10_p90"] <= 1
    frame = result.folds[0].frames["moving_average"]
    assert frame["horizon"].between(1, 7).all()
    assert (pd.to_datetime(frame["date"]).dt.dayofweek != 5).all()  # closed days never scored
    assert set(result.breakdown("moving_average", "week")) == {"1"}


def _band_frame() -> pd.DataFrame:
    """20 forecasts with P50 = 1..20 (deciles of two), band P50 -/+ 0.5, weeks of ten days."""
    p50 = np.arange(1.0, 21.0)
    y = p50.copy()
    y[1] = 0.0  # decile 1: one day below P10
    y[18:] = 25.0  # decile 10: both days above P90
    df = pd.DataFrame({"y": y, "p10": p50 - 0.5, "p50": p50, "p90": p50 + 0.5})
    df["week"] = np.repeat([1, 2], 10)
    df["has_demand"] = True
    df.loc[4, "p90"] = 5.0  # a degenerate band (P90 == P50) of a series with demand
    df.loc[5, ["p90", "has_demand"]] = [6.0, False]  # another, of a series without demand
    return df


def test_band_coverage_by_level_decile_and_week_by_hand():
    df = _band_frame()
    assert list(level_deciles(df["p50"][::-1])) == list(np.repeat(np.arange(10, 0, -1), 2))
    report = coverage_report(df)
    dec = report["by_decile"]
    assert sorted(dec) == list(range(1, 11))
    assert dec[1]["coverage_p10_p90"] == 0.5 and dec[1]["below_p10"] == 0.5
    assert dec[10]["coverage_p10_p90"] == 0.0 and dec[10]["above_p90"] == 1.0
    assert all(dec[d]["coverage_p10_p90"] == 1.0 for d in range(2, 10))
    assert dec[3]["band_ordered_share"] == 0.0  # P50 5 and 6: only the first has demand
    assert report["by_week"][1]["coverage_p10_p90"] == pytest.approx(9 / 10)
    assert report["by_week"][2]["coverage_p10_p90"] == pytest.approx(8 / 10)
    assert report["overall"]["coverage_p10_p90"] == pytest.approx(17 / 20)
    assert report["overall"]["band_ordered_share"] == pytest.approx(18 / 19)
    assert report["decile_min_coverage"] == 0.0 and report["decile_max_above_p90"] == 1.0
    assert summarize(df.assign(product_id="a", mase_scale=1.0, rmsse_scale=1.0))[
        "band_ordered_share"
    ] == pytest.approx(18 / 19)
    # every forecast counts when no series is marked
    assert band_ordered_share(df["p10"], df["p50"], df["p90"]) == pytest.approx(18 / 20)


def test_evaluation_frame_marks_series_with_recent_demand():
    full = _panel([[0.0] * 20 + [1.0] + [0.0] * 19, [1.0] + [0.0] * 39], ids=("a", "b"))
    hist = full.cut(full.dates[33])  # a sold 13 days before the origin, b 33 days before
    fc = pd.DataFrame(
        {
            "product_id": ["a", "b"],
            "date": [full.dates[34]] * 2,
            "p10": 0.0,
            "p50": 0.1,
            "p90": 0.2,
        }
    )
    df = evaluation_frame(fc, full, hist).set_index("product_id")
    assert df.loc["a", "has_demand"] and not df.loc["b", "has_demand"]
