"""Forecast combination (`models.forecast.combination`) and the count-quantile point
(`models.forecast.point`): chosen on the held-out days only, and helping where they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import models.forecast.lgbm as lgbm_module
from features.demand import DemandPanel
from models.forecast import LightGBMForecaster
from models.forecast.base import recent_mean
from models.forecast.calibration import apply_ratio_calibration, fit_ratio_calibration
from models.forecast.combination import MIN_DAYS, WINDOW, blend, choose_weights
from models.forecast.point import choose_point, count_quantile

H = 14


def _wape(y, f) -> float:
    return float(np.abs(y - f).sum() / y.sum())


def _two_forecasts(rng, n):
    """Truth around 20 units and two forecasts with independent errors of the same size."""
    truth = rng.uniform(10, 30, n)
    y = rng.poisson(truth).astype(float)
    return y, truth + rng.normal(0, 6, n), np.maximum(truth + rng.normal(0, 6, n), 0.0)


def test_blend_helps_where_two_forecasts_err_independently():
    """Known case: two unbiased forecasts with independent errors of equal size average to a
    better one; the weight chosen on held-out days is 0.5, and it wins on new days too."""
    rng = np.random.default_rng(0)
    n = 4000
    classes = np.full(n, "smooth", dtype=object)
    ok = np.ones(n, bool)
    y, model, alt = _two_forecasts(rng, n)
    weights = choose_weights(classes, model, alt, y, ok)
    assert weights == {"smooth": 0.5}
    y2, model2, alt2 = _two_forecasts(rng, n)  # new days, same weights
    blended = blend(classes, model2, alt2, weights)
    assert _wape(y2, blended) < 0.9 * min(_wape(y2, model2), _wape(y2, alt2))


def test_blend_weights_read_only_the_scored_held_out_days():
    """Days outside `ok` (unobserved, or before a product's launch) never change the weights;
    the held-out actuals do: where the recent mean is exact, it takes the whole weight."""
    rng = np.random.default_rng(1)
    n = 2 * MIN_DAYS
    classes = np.full(n, "erratic", dtype=object)
    y, model, alt = _two_forecasts(rng, n)
    ok = np.arange(n) < MIN_DAYS + 50
    base = choose_weights(classes, model, alt, y, ok)
    y_other = y.copy()
    y_other[~ok] = 1000.0
    alt_other = alt.copy()
    alt_other[~ok] = -5.0
    assert choose_weights(classes, model, alt_other, y_other, ok) == base
    assert choose_weights(classes, model, y.copy(), y, ok) == {"erratic": 0.0}
    assert choose_weights(classes, y.copy(), alt, y, ok) == {}  # the model alone: no entry
    few = np.arange(n) < MIN_DAYS - 1  # too few held-out days: the model alone
    assert choose_weights(classes, model, y.copy(), y, few) == {}


def test_blend_never_wins_by_forecasting_lower_than_the_model():
    """A recent mean at half the level scores a lower WAPE on counts of slow sellers (the
    median is below the mean) but is biased beyond the tolerance: it is not taken."""
    rng = np.random.default_rng(2)
    n = 3000
    classes = np.full(n, "intermittent", dtype=object)
    mean = np.full(n, 0.3)
    y = (rng.random(n) < 0.3).astype(float)
    low = np.full(n, 0.05)
    assert _wape(y, low) < _wape(y, mean)
    assert choose_weights(classes, mean, low, y, np.ones(n, bool)) == {}


def _level_shift_panel(n_products=40, n_days=168, seed=3) -> DemandPanel:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=n_days)
    level = rng.uniform(2, 8, (n_products, 1)) * np.where(np.arange(n_days) < n_days - 40, 1, 2)
    units = rng.poisson(level).astype(float)
    ids = np.array([f"p{i:02d}" for i in range(n_products)], dtype=object)
    cats = np.array(["a", "b"] * (n_products // 2), dtype=object)
    return DemandPanel(
        ids, cats, dates, units, np.full(units.shape, 2.0), np.ones(n_days, bool), (), "GB"
    )


def _small_lgbm(**kw) -> LightGBMForecaster:
    params = dict(
        horizon=H, n_estimators=30, min_child_samples=20, origin_step=7, min_origin_history=21
    )
    return LightGBMForecaster(**{**params, **kw})


def test_lightgbm_chooses_blend_weights_before_its_held_out_days(monkeypatch):
    """The recent mean the weights are chosen with is the one of the days before the held-out
    ones (never a held-out day, never a day after the panel), the actuals are the held-out days."""
    panel = _level_shift_panel()
    seen = {}

    def spy(classes, mu, alt, y, ok):
        seen.update(alt=alt, y=y, ok=ok)
        return {"smooth": 0.25}

    monkeypatch.setattr(lgbm_module, "choose_weights", spy)
    model = _small_lgbm().fit(panel)
    t = len(panel.dates) - 1 - H
    before = panel.cut(panel.dates[t])
    assert np.allclose(seen["alt"], np.repeat(recent_mean(before, WINDOW), H))
    assert not np.allclose(seen["alt"], np.repeat(recent_mean(panel, WINDOW), H))
    assert np.array_equal(seen["y"][seen["ok"]], panel.units[:, t + 1 :].ravel()[seen["ok"]])
    assert model.blend_weights_ == {"smooth": 0.25}


def test_lightgbm_applies_its_blend_weights_at_predict_and_keeps_them_saved(tmp_path):
    """Predict combines with the recent mean of the panel then, by the held-out weights: with
    w = 0 a smooth product's P50 is its 28-day mean times the level correction."""
    panel = _level_shift_panel()
    model = _small_lgbm(point="mean").fit(panel)
    model.blend_weights_ = {"smooth": 0.0}
    fc = model.predict(H)
    p50 = fc["p50"].to_numpy().reshape(panel.n_products, H)
    expected = recent_mean(panel, WINDOW) * model.calibration_["bias"]
    smooth = lgbm_module.demand_classes(panel) == "smooth"
    assert smooth.sum() >= 30
    assert np.allclose(p50[smooth], expected[smooth, None])
    model.save(tmp_path / "m")
    again = LightGBMForecaster.load(tmp_path / "m")
    assert again.blend_weights_ == {"smooth": 0.0}
    pd.testing.assert_frame_equal(again.predict(H), fc)


def test_count_quantile_by_hand():
    """NB with phi -> 0 is Poisson: mean 0.3 has P(0) = 0.741, so the quantile is 0 up to that
    level and 1 above it; mean 4 has median 4 and F(4) = 0.63 < 0.7 <= F(5) = 0.79."""
    phi = np.full(2, 1e-6)
    assert count_quantile(np.array([0.3, 4.0]), phi, 0.7).tolist() == [0.0, 5.0]  # F(4) 0.63
    assert count_quantile(np.array([0.3, 4.0]), phi, 0.5).tolist() == [0.0, 4.0]
    assert count_quantile(np.array([0.3, 4.0]), phi, 0.75).tolist() == [1.0, 5.0]


def test_point_is_the_count_quantile_only_where_the_held_out_days_score_it_better():
    """Steady slow sellers (one unit on 30% of days, Bernoulli): a whole-count P50 at a common
    level beats the mean's WAPE at a held-out bias no worse than the tolerance; for Poisson
    sellers of 20 a day the mean is kept (any quantile is no better within the bias limit)."""
    rng = np.random.default_rng(4)
    n = 6000
    p = rng.uniform(0.1, 0.6, n)
    y = (rng.random(n) < p).astype(float)
    phi = np.full(n, 1e-3)
    band = (np.zeros(n), np.full(n, 2.0))
    chosen = choose_point(p, y, phi, band)
    assert chosen["point"] == "count_quantile"
    assert chosen["point_wape"] < chosen["mean_wape"] - 0.1
    assert abs(chosen["point_bias"]) <= max(0.05, abs(chosen["mean_bias"]))
    mu = np.full(n, 20.0)
    y = rng.poisson(mu).astype(float)
    chosen = choose_point(mu, y, phi, (mu - 6, mu + 6))
    assert chosen["point"] == "mean"


@pytest.mark.parametrize("point", ["mean", "auto"])
def test_auto_point_keeps_p50_inside_the_band(point):
    """With `point="auto"` P50 stays inside the calibrated band (the band is the one the mean
    point gets: the point does not widen it)."""
    rng = np.random.default_rng(5)
    n = 6000
    mu = rng.uniform(0.05, 0.6, n)
    y = rng.poisson(mu).astype(float)
    spread = rng.uniform(0, 2, n)
    cal = fit_ratio_calibration(mu, y, spread, 10, point, 0.5, (0.8, 1.25))
    mean_cal = fit_ratio_calibration(mu, y, spread, 10, "mean", 0.5, (0.8, 1.25))
    p10, p50, p90 = apply_ratio_calibration(cal, mu, spread)
    q10, _, q90 = apply_ratio_calibration(mean_cal, mu, spread)
    assert np.all((p10 <= p50) & (p50 <= p90))
    assert np.allclose(p10, q10) and np.allclose(p90, q90)
    if point == "auto":
        assert cal["point"] in ("mean", "count_quantile")
