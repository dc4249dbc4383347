"""Issue 14: the settings search's work budget (a count, not a clock) and the yearly calendar
terms used only from two years of history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.demand import DemandPanel
from features.demand_features import YEARLY, feature_names
from models.forecast import LightGBMForecaster
from models.forecast.tuning import choose_settings

N_P, H = 6, 7


def _panel(n_days: int, seed: int = 0) -> DemandPanel:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-03", periods=n_days)
    u = rng.poisson(3.0, (N_P, n_days)).astype(float)
    ids = np.array([f"p{i}" for i in range(N_P)], dtype=object)
    cats = np.array(["a", "b"] * (N_P // 2), dtype=object)
    price = np.full(u.shape, 5.0)
    return DemandPanel(ids, cats, dates, u, price, np.ones(n_days, bool), (), None)


FAST = {"min_child_samples": 5, "origin_step": 14}


def test_work_budget_stops_the_search_after_the_trial_that_reaches_it_the_same_way_each_time():
    panel = _panel(70)
    full = choose_settings(panel, H, n_trials=3, seed=0, base=FAST, work_budget=None)
    assert len(full.trials) == 3 and not full.capped
    # the budget reached by the second trial: the search stops there, with the same two trials
    rows = full.work / sum(t["n_estimators"] for t in full.trials)  # rows (M) are the same
    budget = rows * (full.trials[0]["n_estimators"] + full.trials[1]["n_estimators"]) * 0.999
    capped = choose_settings(panel, H, n_trials=4, seed=0, base=FAST, work_budget=budget)
    again = choose_settings(panel, H, n_trials=4, seed=0, base=FAST, work_budget=budget)
    assert capped.capped and len(capped.trials) == 2
    assert [t["wape"] for t in capped.trials] == [t["wape"] for t in full.trials[:2]]
    assert capped.params == again.params and capped.work == again.work
    # the defaults (trial 0) always run, however small the budget
    tiny = choose_settings(panel, H, n_trials=4, seed=0, base=FAST, work_budget=1e-9)
    assert len(tiny.trials) == 1 and tiny.params["n_estimators"] == 120


def test_yearly_terms_only_from_two_years_of_history_and_kept_by_the_saved_model(tmp_path):
    cols = [feature_names().index(n) for n in YEARLY]
    short = LightGBMForecaster(horizon=H, n_estimators=5, **FAST).fit(_panel(400))
    assert short.yearly_ is False
    X = short._state(short.panel_).rows(399, H, short.panel_.future_dates(H)[0])
    assert np.isnan(X[:, cols]).all()
    long = LightGBMForecaster(horizon=H, n_estimators=5, **FAST).fit(_panel(760))
    X = long._state(long.panel_).rows(759, H, long.panel_.future_dates(H)[0])
    assert long.yearly_ is True and np.isfinite(X[:, cols]).all()
    loaded = LightGBMForecaster.load(short.save(tmp_path / "m"))
    assert loaded.yearly_ is False
    pd.testing.assert_frame_equal(loaded.predict(H), short.predict(H))
