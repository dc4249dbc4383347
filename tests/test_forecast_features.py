"""Demand panel and features: cancellations, zero-fill, closed days, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.demand import DemandPanel, PanelConfig, build_panel, store_country
from features.demand_features import FeatureState, feature_names, holiday_flags, robust_history
from shopml.errors import DataError

D = pd.Timestamp("2024-01-01")  # a Monday


def _line(day, product, qty, customer="c1", price=2.0, hour=10, order="o"):
    return {
        "order_id": order,
        "customer_id": customer,
        "product_id": product,
        "timestamp": D + pd.Timedelta(days=day, hours=hour),
        "quantity": qty,
        "unit_price": price,
    }


@pytest.fixture
def lines() -> pd.DataFrame:
    rows = []
    for day in range(21):  # B sells one unit every day but Saturdays and Wednesday Jan 10
        if (D + pd.Timedelta(days=day)).dayofweek != 5 and day != 9:
            rows.append(_line(day, "B", 1, customer="cb"))
    rows += [
        _line(0, "A", 5, customer="c1"),
        _line(1, "A", 3, customer="c2"),
        _line(2, "A", -2, customer="c1"),  # cancels 2 of Monday's sale: netted on Monday
        _line(2, "A", -4, customer=None),  # guest return with no sale to match: dropped
        _line(3, "A", 2, customer="c3"),
        _line(4, "A", -5, customer="c3"),  # cancels more than bought: Thursday clipped at 0
        _line(3, "A", 7, price=0.0),  # free sample / adjustment: not demand
        _line(7, "C", 4, customer="c4"),  # C starts selling on the second Monday
    ]
    return pd.DataFrame(rows)


def test_panel_nets_cancellations_zero_fills_and_marks_closed_days(lines):
    panel = build_panel(lines)
    assert panel.closed_weekdays == (5,)
    assert list(panel.product_ids) == ["A", "B", "C"]
    assert len(panel.dates) == 21
    closed = [d.date() for d in panel.dates[~panel.open_days]]
    assert closed == [
        pd.Timestamp(x).date() for x in ("2024-01-06", "2024-01-10", "2024-01-13", "2024-01-20")
    ]
    a = panel.units[0]
    assert a[0] == 3 and a[1] == 3 and a[2] == 0 and a[3] == 0 and a[4] == 0
    assert np.isnan(a[5])  # Saturday: closed, not zero demand
    assert a[6] == 0 and np.isnan(a[9])  # zero-filled; Jan 10 closed
    c = panel.units[2]
    assert np.isnan(c[:7]).all() and c[7] == 4 and c[8] == 0  # selling life starts at first sale
    assert panel.price[0, 0] == pytest.approx(2.0)


def test_panel_future_days_skip_closed_weekdays(lines):
    panel = build_panel(lines)
    dates, open_ = panel.future_dates(7)
    assert dates[0] == pd.Timestamp("2024-01-22")
    assert list(open_) == [d.dayofweek != 5 for d in dates]


def test_top_n_and_end(lines):
    panel = build_panel(lines, config=PanelConfig(top_n=1, end=pd.Timestamp("2024-01-14")))
    assert list(panel.product_ids) == ["B"]
    assert panel.end == pd.Timestamp("2024-01-14")


def test_categories_from_products(lines):
    products = pd.DataFrame({"product_id": ["A", "B"], "category": ["toys", "home"], "price": 1.0})
    panel = build_panel(lines, products)
    assert list(panel.categories) == ["toys", "home", "unknown"]


def test_long_table_round_trip_and_duplicates(lines):
    panel = build_panel(lines)
    frame = panel.to_frame()
    back = DemandPanel.from_frame(frame, closed_weekdays=panel.closed_weekdays)
    np.testing.assert_array_equal(np.isnan(back.units), np.isnan(panel.units))
    np.testing.assert_allclose(np.nan_to_num(back.units), np.nan_to_num(panel.units))
    dup = pd.concat([frame, frame.head(1)])
    with pytest.raises(DataError, match="duplicated \\(product_id, date\\)"):
        DemandPanel.from_frame(dup)


def test_missing_columns_error():
    with pytest.raises(DataError, match="unit_price"):
        build_panel(pd.DataFrame({"product_id": ["a"], "timestamp": [D], "quantity": [1]}))


def test_store_country_and_holidays():
    ol = pd.DataFrame({"country": ["United Kingdom"] * 9 + ["France"]})
    assert store_country(ol) == "GB"
    flags = holiday_flags(pd.date_range("2011-12-24", periods=4), "GB")
    assert list(flags) == [0.0, 1.0, 1.0, 1.0]  # Christmas, Boxing Day, substitute day
    assert holiday_flags(pd.date_range("2011-12-24", periods=2), None).sum() == 0


def test_feature_names_are_readable_and_unique():
    names = feature_names()
    assert len(names) == len(set(names))
    assert "rolling_mean_window28" in names and "same_weekday_mean_weeks4" in names


def _random_panel(seed: int, n_products: int, n_days: int) -> DemandPanel:
    rng = np.random.default_rng(seed)
    units = rng.poisson(rng.uniform(0.2, 5, (n_products, 1)), (n_products, n_days)).astype(float)
    units[:, 0] = 1.0  # every product observed from the first day
    dates = pd.date_range("2024-01-01", periods=n_days)
    open_ = dates.dayofweek != 5
    open_[0] = True
    units[:, ~open_] = np.nan
    price = np.where(np.isnan(units) | (units == 0), np.nan, rng.uniform(1, 3, units.shape))
    ids = np.array([f"p{i}" for i in range(n_products)], dtype=object)
    return DemandPanel(
        ids, np.array(["x"] * n_products, dtype=object), dates, units, price, open_, (5,), "GB"
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_days=st.integers(20, 150), data=st.data())
def test_features_at_origin_ignore_future_data(seed, n_days, data):
    """Features at origin t are identical whether or not days after t are in the panel, with
    the history as sold or with bulk orders capped (`robust_history`)."""
    full = _random_panel(seed, 4, n_days)
    t = data.draw(st.integers(1, n_days - 2))
    cap = data.draw(st.sampled_from([None, 2.0]))
    codes = np.arange(4, dtype=float)
    dates = pd.date_range(full.dates[t] + pd.Timedelta(days=1), periods=14)
    with_future = FeatureState(full, codes, np.zeros(4), history_cap=cap).rows(t, 14, dates)
    past = full.cut(full.dates[t])
    without = FeatureState(past, codes, np.zeros(4), history_cap=cap).rows(t, 14, dates)
    np.testing.assert_array_equal(with_future, without)


def test_robust_history_caps_a_bulk_order_at_k_times_the_series_earlier_level():
    """A one-off order of 100 after days of 2 (and a closed day, skipped) is capped at
    k x (mean of the earlier observed days + 1); the first day (no history) and ordinary
    days are kept, and the cap only reads earlier days."""
    u = np.array([[2.0, 2.0, np.nan, 2.0, 100.0, 2.0]])
    obs = ~np.isnan(u)
    x = np.where(obs, u, 0.0)
    out = robust_history(x, obs, 3.0)
    assert out[0, 4] == pytest.approx(3.0 * (2.0 + 1.0))  # mean of days 0, 1, 3 = 2
    np.testing.assert_array_equal(out[0, [0, 1, 3]], [2.0, 2.0, 2.0])
    assert out[0, 5] == 2.0  # below its cap (the mean now includes the 100, uncapped)
    state = FeatureState(_random_panel(0, 2, 40), np.arange(2.0), np.zeros(2))
    capped = FeatureState(state.panel, np.arange(2.0), np.zeros(2), history_cap=1.0)
    assert capped.cs[:, -1].sum() < state.cs[:, -1].sum()  # the features read capped units


@pytest.mark.realdata
def test_online_retail_panel_closed_days(datasets_dir):
    from features.loaders.online_retail import load, non_product_codes

    store = load(datasets_dir / "online-retail" / "online_retail.csv.gz")
    lines = store.order_lines
    lines = lines[~lines["product_id"].isin(set(non_product_codes(store.products)))]
    panel = build_panel(lines, store.products, PanelConfig(top_n=50, country="GB"))
    assert panel.closed_weekdays == (5,)  # the shop sells nothing on Saturdays
    assert panel.dates[0] == pd.Timestamp("2010-12-01") and panel.end == pd.Timestamp("2011-12-09")
    closed = set(panel.dates[~panel.open_days].date)
    assert pd.Timestamp("2010-12-28").date() in closed  # Christmas break
    assert pd.Timestamp("2011-12-08").date() not in closed
    observed = panel.units[~np.isnan(panel.units)]
    assert (observed >= 0).all() and observed.sum() > 100_000
