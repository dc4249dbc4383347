"""Known-future inputs in the demand panel: only what was planned at an origin is visible, and
closed days (given or detected per series) are neither targets nor scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import validate
from features.demand import DemandPanel, PanelConfig, build_panel, panel_from_store
from features.generator import GeneratorConfig, generate
from features.known_future import KnownFuture
from shopml.errors import DataError

START = pd.Timestamp("2024-01-01")
N_DAYS = 28
IDS = ["p0", "p1", "p2"]
CATS = ["a", "a", "b"]


def _panel(known: KnownFuture | None = None, units: np.ndarray | None = None, **kw) -> DemandPanel:
    dates = pd.date_range(START, periods=N_DAYS, freq="D")
    u = np.ones((len(IDS), N_DAYS)) if units is None else units
    return DemandPanel(
        np.array(IDS, dtype=object),
        np.array(CATS, dtype=object),
        dates,
        u,
        np.full(u.shape, 2.0),
        np.ones(N_DAYS, dtype=bool),
        known=known,
        **kw,
    )


def _day(offset: int, hours: int = 0) -> pd.Timestamp:
    return START + pd.Timedelta(days=offset, hours=hours)


promotion_rows = st.lists(
    st.tuples(
        st.sampled_from(IDS + ["cat:a", "cat:b"]),
        st.integers(-5, 40),  # start
        st.integers(1, 10),  # length
        st.one_of(st.none(), st.sampled_from([0.05, 0.1, 0.25, 0.5])),
        st.integers(-3, 45),  # lead in days (negative: entered after it started)
        st.integers(0, 23),  # hour of the planning
    ),
    max_size=12,
)
price_rows = st.lists(
    st.tuples(
        st.sampled_from(IDS),
        st.integers(-10, 40),  # valid_from
        st.sampled_from([1.0, 1.5, 2.0, 3.0]),
        st.integers(-3, 45),
        st.integers(0, 23),
    ),
    max_size=10,
    unique_by=lambda r: (r[0], r[1]),
)


def _tables(promos, prices):
    p = pd.DataFrame(
        {
            "product_id": [None if r[0].startswith("cat:") else r[0] for r in promos],
            "category": [r[0][4:] if r[0].startswith("cat:") else None for r in promos],
            "start": pd.to_datetime([_day(r[1]) for r in promos]),
            "end": pd.to_datetime([_day(r[1] + r[2] - 1) for r in promos]),
            "discount": pd.Series([r[3] for r in promos], dtype=float),
            "planned_at": pd.to_datetime([_day(r[1] - r[4], r[5]) for r in promos]),
        }
    )
    q = pd.DataFrame(
        {
            "product_id": [r[0] for r in prices],
            "valid_from": pd.to_datetime([_day(r[1]) for r in prices]),
            "price": pd.Series([r[2] for r in prices], dtype=float),
            "planned_at": pd.to_datetime([_day(r[1] - r[3], r[4]) for r in prices]),
        }
    )
    return validate("promotions", p), validate("prices", q)


def _reference(promos, prices, origin: pd.Timestamp, dates: pd.DatetimeIndex):
    """The known inputs cell by cell, from the rows planned before the end of the origin day."""
    cutoff = origin + pd.Timedelta(days=1)
    n = len(dates)
    promo = np.zeros((len(IDS), n), dtype=bool)
    discount = np.zeros((len(IDS), n))
    price = np.full((len(IDS), n), np.nan)
    for target, start, length, disc, lead, hour in promos:
        if _day(start - lead, hour) >= cutoff:
            continue
        for p, pid in enumerate(IDS):
            if target not in (pid, f"cat:{CATS[p]}"):
                continue
            for d, day in enumerate(dates):
                if _day(start) <= day <= _day(start + length - 1):
                    promo[p, d] = True
                    discount[p, d] = max(discount[p, d], disc or 0.0)

    def price_on(pid, day):
        rows = [r for r in prices if r[0] == pid and _day(r[1] - r[3], r[4]) < cutoff]
        rows = [r for r in rows if _day(r[1]) <= day]
        return max(rows, key=lambda r: r[1])[2] if rows else np.nan

    ratio = np.ones_like(price)
    for p, pid in enumerate(IDS):
        ref = price_on(pid, origin)
        for d, day in enumerate(dates):
            price[p, d] = price_on(pid, day)
            if np.isfinite(price[p, d]) and np.isfinite(ref):
                ratio[p, d] = price[p, d] / ref
    return promo, discount, price, ratio


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(promos=promotion_rows, prices=price_rows, origin=st.integers(0, N_DAYS - 1))
def test_nothing_planned_after_the_origin_is_visible_at_it(promos, prices, origin):
    promotions, price_table = _tables(promos, prices)
    panel = _panel(KnownFuture.from_tables(promotions, price_table))
    at = _day(origin)
    seen = panel.known_future(at, horizon=14)
    promo, discount, price, ratio = _reference(promos, prices, at, seen.dates)
    np.testing.assert_array_equal(seen.promo, promo)
    np.testing.assert_allclose(seen.discount, discount)
    np.testing.assert_allclose(seen.price, price)
    np.testing.assert_allclose(seen.price_ratio, ratio)
    assert (seen.promo_known_from[seen.promo] < at + pd.Timedelta(days=1)).all()
    # the rows planned later change nothing at this origin, whatever they say
    cutoff = at + pd.Timedelta(days=1)
    early = KnownFuture.from_tables(
        promotions[promotions["planned_at"] < cutoff],
        price_table[price_table["planned_at"] < cutoff],
    )
    again = _panel(early).known_future(at, horizon=14)
    np.testing.assert_array_equal(again.promo, seen.promo)
    np.testing.assert_allclose(again.price_ratio, seen.price_ratio)


def test_a_backtest_fold_sees_the_same_plan_from_its_cut_history():
    promos = [("p0", 20, 5, 0.3, 3, 10), ("cat:a", 12, 4, 0.1, 30, 8), ("p2", 15, 2, None, 10, 9)]
    promotions, prices = _tables(promos, [("p1", 16, 3.0, 5, 0), ("p1", -5, 2.0, 40, 0)])
    panel = _panel(KnownFuture.from_tables(promotions, prices))
    origin = _day(13)
    fold = panel.cut(origin).known_future(horizon=14)
    full = panel.known_future(origin)
    n = len(fold.dates)
    np.testing.assert_array_equal(fold.promo, full.promo[:, :n])
    np.testing.assert_allclose(fold.price_ratio, full.price_ratio[:, :n])
    # p0's own promotion (days 20-24) was planned on day 17, after the origin; only its
    # category's campaign (days 12-15) is known
    assert np.flatnonzero(fold.promo[0]).tolist() == [12, 13, 14, 15]
    assert fold.promo[1, fold.day(_day(12))] and fold.promo[2, fold.day(_day(15))]
    assert fold.price_ratio[1, fold.day(_day(16))] == pytest.approx(1.5)
    assert panel.known_future(_day(17)).promo[0, 20]


def test_without_plans_the_grid_is_neutral_and_future_closed_weekdays_stay_closed():
    panel = _panel(closed_weekdays=(6,))
    seen = panel.known_future(horizon=7)
    assert not seen.promo.any() and (seen.discount == 0).all() and (seen.price_ratio == 1).all()
    future_sunday = seen.day(panel.end + pd.Timedelta(days=(6 - panel.end.dayofweek) % 7 or 7))
    assert seen.closed[:, future_sunday].all() and seen.closed[:, -7:].sum() == len(IDS)


def test_given_closures_close_only_their_series_and_only_without_sales():
    units = np.ones((len(IDS), N_DAYS))
    units[:, 5] = 0.0
    units[0, 6] = 0.0
    closures = pd.DataFrame(
        {
            "date": [_day(5), _day(6), _day(6), _day(20)],
            "product_id": [None, "p0", "p1", None],  # p1 sold on day 6: the data wins
            "location": [None, None, None, "south"],
            "planned_at": [None, None, None, _day(15)],
        }
    )
    known = KnownFuture.from_tables(closures=validate("closures", closures), lead_days=7)
    products = np.array(["north", "north", "south"], dtype=object)
    lines = _lines_from_units(units)
    panel = build_panel(lines, _products(products), known=known)
    assert panel.closed[:, 5].all() and np.isnan(panel.units[:, 5]).all()
    assert panel.closed[0, 6] and not panel.closed[1, 6] and panel.units[1, 6] == 1
    assert panel.closed[:, 20].tolist() == [False, False, False]  # south's p2 sold that day
    # the south closure on day 20 was planned on day 15: a fold at day 14 does not know it
    future = _panel(known, locations=products)
    assert future.known_future(_day(14)).closed[:, 20].tolist() == [False, False, False]
    assert future.known_future(_day(15)).closed[:, 20].tolist() == [False, False, True]


def _products(locations) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": IDS[: len(locations)],
            "category": CATS[: len(locations)],
            "price": 2.0,
            "location": locations,
        }
    )


def _lines_from_units(units: np.ndarray, ids=IDS, lines_per_unit: int = 1) -> pd.DataFrame:
    """One order line per unit sold (`lines_per_unit` lines of one unit each)."""
    p, d = np.nonzero(np.nan_to_num(units) > 0)
    reps = (units[p, d] * lines_per_unit).astype(int)
    p, d = np.repeat(p, reps), np.repeat(d, reps)
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(p.size)],
            "customer_id": None,
            "product_id": np.array(ids, dtype=object)[p],
            "timestamp": START + pd.to_timedelta(d, unit="D") + pd.Timedelta(hours=12),
            "quantity": 1,
            "unit_price": 2.0,
        }
    )


def test_closures_are_detected_per_location_and_per_series_weekday_conservatively():
    rng = np.random.default_rng(0)
    ids = ["north1", "north2", "south1", "sunday_off", "slow", "stockout", "south_slow"]
    n_days = 84  # 12 weeks from a Monday
    dates = pd.date_range(START, periods=n_days, freq="D")
    units = np.full((len(ids), n_days), 8.0)
    units[2] = 12.0  # the south site: about 10 lines on an average day
    units[3, dates.dayofweek == 6] = 0.0  # a product never sold on Sundays
    units[4] = (rng.random(n_days) < 0.2) * 1.0  # a slow seller ...
    units[4, dates.dayofweek == 6] = 0.0  # ... that also never sold on a Sunday
    units[5, 40:46] = 0.0  # a stock-out: six days without sales
    units[6] = (rng.random(n_days) < 0.2) * 1.0  # a slow seller of a site ...
    units[np.ix_([2, 6], np.flatnonzero(dates.dayofweek == 2))] = 0.0  # ... closed on Wednesdays
    units[[2, 6], 31] = 0.0  # the south site sells nothing on day 31 (a Thursday)
    lines = _lines_from_units(units, ids)
    products = pd.DataFrame(
        {
            "product_id": ids,
            "category": "c",
            "price": 2.0,
            "location": ["north", "north", "south", "north", "north", "north", "south"],
        }
    )
    panel = build_panel(lines, products)
    north1, north2, south1, sunday_off, slow, stockout, south_slow = panel.positions(ids)
    assert panel.closed[south1, 31] and np.isnan(panel.units[south1, 31])
    assert not panel.closed[[north1, north2, sunday_off, stockout], 31].any()
    assert panel.series_closed_weekdays[sunday_off].tolist() == [False] * 6 + [True]
    assert np.isnan(panel.units[sunday_off, dates.dayofweek == 6]).all()
    others = [north1, north2, slow, stockout]
    assert not panel.series_closed_weekdays[others].any()  # the slow seller's Sundays: chance
    wednesday = [False, False, True, False, False, False, False]
    assert panel.series_closed_weekdays[[south1, south_slow]].tolist() == [wednesday] * 2
    assert (panel.units[stockout, 40:46] == 0).all() and not panel.closed[stockout, 40:46].any()
    future = panel.known_future(horizon=7)
    sunday = future.day(dates[-1] + pd.Timedelta(days=7))
    assert np.flatnonzero(future.closed[:, sunday]).tolist() == [sunday_off]
    assert sorted(np.flatnonzero(future.closed[:, sunday - 4])) == sorted([south1, south_slow])
    off = build_panel(lines, products, PanelConfig(detect_series_closures=False))
    assert not off.closed.any() and off.units[off.positions(["sunday_off"])[0], 6] == 0


def test_the_generated_store_publishes_the_promotions_it_simulated():
    store = generate(GeneratorConfig(scale="tiny", seed=0))
    lead = store.promotions["start"] - store.promotions["planned_at"]
    assert lead.min() >= pd.Timedelta(days=6) and lead.max() <= pd.Timedelta(days=92)
    panel = panel_from_store(store)
    seen = panel.known_future()
    list_price = store.products.set_index("product_id")["price"].reindex(panel.product_ids)
    expected = np.round(list_price.to_numpy()[:, None] * (1 - seen.discount), 2)
    sold = ~np.isnan(panel.price)
    assert sold[seen.promo].sum() > 100
    np.testing.assert_allclose(panel.price[sold], expected[sold], atol=0.006)
    half = panel.dates[len(panel.dates) // 2]
    assert panel.known_future(half).promo.sum() < seen.promo.sum()  # later plans hidden at half


def test_bad_lead_time_and_shapes_are_named():
    with pytest.raises(DataError, match="lead time"):
        KnownFuture.from_tables(lead_days=-1)
    with pytest.raises(DataError, match="closed must have shape"):
        _panel(closed=np.zeros((1, 2), dtype=bool))
