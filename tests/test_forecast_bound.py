"""The oracle machinery of `experiments.forecast_bound` on the `tiny` store: the rebuilt world is
the generator's, demand redraws leave it fixed, the window-only draws have the full period's
expected units, and the scoring reads the benchmark's cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import forecast_bound as fb
from features.demand import PanelConfig, build_panel
from features.generator import GeneratorConfig, generate, streams
from training.backtest import rolling_origins

CFG = GeneratorConfig(scale="tiny", seed=0)


@pytest.fixture(scope="module")
def store():
    return generate(CFG)


@pytest.fixture(scope="module")
def world():
    return fb.demand_world(CFG)


def _snapshot(world):
    return (
        world.catalog.popularity.copy(),
        world.customers.favourites.copy(),
        world.customers.first_day.copy(),
        world.promos.key.copy(),
        world.promos.discount.copy(),
    )


def _rngs(*key):
    kids = np.random.SeedSequence(list(key)).spawn(3)
    return dict(
        zip(("sessions", "orders", "returns"), map(np.random.default_rng, kids), strict=True)
    )


def test_world_is_the_generators_and_stays_fixed_across_draws(store, world):
    before = _snapshot(world)
    pd.testing.assert_frame_equal(
        fb.draw_order_lines(world, world.promos, streams(CFG.seed)), store.order_lines
    )
    other = fb.draw_order_lines(world, world.promos, _rngs(1, 2))
    assert not other[["product_id", "quantity"]].equals(
        store.order_lines[["product_id", "quantity"]]
    )
    redrawn = fb.redrawn_promotions(world, np.random.default_rng(3))
    assert not np.array_equal(redrawn.key, world.promos.key)
    fb.draw_order_lines(world, redrawn, _rngs(4, 5), first_day=60)
    for a, b in zip(before, _snapshot(world), strict=True):
        np.testing.assert_array_equal(a, b)


def test_window_draws_have_the_full_periods_expected_units(world):
    """Sessions drawn from day 62 only (and the guest share rescaled) give the same expected
    units on days >= 62 as whole-period draws, registered and guest orders alike."""
    first, n = 62, 30
    start = pd.Timestamp(CFG.start)
    sums = {0: [], first: []}
    for r in range(n):
        for from_day in sums:
            lines = fb.draw_order_lines(world, world.promos, _rngs(7, r, from_day), from_day)
            day = (lines["timestamp"] - start).dt.days
            sold = (day >= first) & (lines["quantity"] > 0)
            guest = sold & lines["customer_id"].isna()
            sums[from_day].append(
                (lines.loc[sold, "quantity"].sum(), lines.loc[guest, "quantity"].sum())
            )
    full, window = np.array(sums[0], float), np.array(sums[first], float)
    se = np.sqrt(full.var(axis=0, ddof=1) / n + window.var(axis=0, ddof=1) / n)
    # seeded draws, so no flakiness: the unscaled guest share is 3.9 standard errors off here
    assert np.all(np.abs(full.mean(axis=0) - window.mean(axis=0)) < 3 * se), (
        full.mean(axis=0),
        window.mean(axis=0),
        se,
    )


def test_scoring_reads_the_benchmarks_cells(store, world):
    """An oracle equal to the observed units scores WAPE 0 on every fold; shifted a day, not."""
    full = build_panel(store.order_lines, store.products, PanelConfig(top_n=40))
    origins = rolling_origins(full.dates, 2, 14)
    dates = pd.date_range(origins[0] + pd.Timedelta(days=1), full.dates[-1], freq="D")
    actual = np.nan_to_num(full.units[:, full.dates.get_indexer(dates)], nan=0.0)
    exact = {"mean": actual, "median": actual, "p10": actual - 1, "p90": actual + 1}
    shifted = {k: np.roll(v, 1, axis=1) for k, v in exact.items()}
    res = fb.score_folds(
        world, full, {"with_plan": exact, "without_plan": shifted}, dates, origins, 14
    )
    assert len(res["folds"]) == 2
    for fold, origin in zip(res["folds"], origins, strict=True):
        assert fold["with_plan_median"]["wape"] == 0.0
        assert fold["with_plan_mean"]["coverage_p10_p90"] == 1.0
        assert fold["without_plan_median"]["wape"] > 0.3
        days = (full.dates > origin) & (full.dates <= origin + pd.Timedelta(days=14))
        assert fold["cells"] == int(np.isfinite(full.units[:, days]).sum())
    assert res["overall"]["ratio_median"] == 0.0


def test_oracle_quantiles_per_cell():
    units = np.arange(11, dtype=float)[:, None, None] * np.ones((11, 2, 3))
    q = fb.oracle_quantiles(units)
    assert q["mean"].shape == (2, 3)
    np.testing.assert_allclose(q["mean"], 5.0)
    np.testing.assert_allclose(q["median"], 5.0)
    np.testing.assert_allclose(q["p10"], 1.0)
    np.testing.assert_allclose(q["p90"], 9.0)


def test_cli_rejects_bad_draws(capsys):
    with pytest.raises(SystemExit) as exc:
        fb.main(["--draws", "0"])
    assert exc.value.code != 0
    assert "--draws must be >= 1" in capsys.readouterr().err


def test_calendar_seen_at_the_origin_keeps_the_past_and_redraws_the_future(world):
    """No plan leaks in: up to the origin the calendar is the world's (what the history shows);
    the windows starting later are fresh draws, and running ones still cover the origin."""
    origin, days = 60, world.days
    seen = fb.calendar_seen_at(world, origin, np.random.default_rng(11))
    prod = np.repeat(np.arange(world.catalog.n), days)
    day = np.tile(np.arange(days), world.catalog.n)
    past = day <= origin
    np.testing.assert_array_equal(
        seen.discount_of(prod[past], day[past]), world.promos.discount_of(prod[past], day[past])
    )
    future = ~past
    assert not np.array_equal(
        seen.discount_of(prod[future], day[future]),
        world.promos.discount_of(prod[future], day[future]),
    )
    _, length, first, _ = seen.windows
    started = first <= origin
    np.testing.assert_array_equal(
        first[started], world.promos.windows[2][world.promos.windows[2] <= origin]
    )
    running = started & (first + length - 1 >= origin)
    assert (
        running.sum()
        == (
            (world.promos.windows[2] <= origin)
            & (world.promos.windows[2] + world.promos.windows[1] - 1 >= origin)
        ).sum()
    )


def test_calendar_planned_at_the_origin_is_the_published_plan(store, world):
    """With the plan as published at the origin: the past as it was, and once everything is
    planned (the last day) the whole calendar is the world's own."""
    plan = fb.published_plan(world, store.promotions)
    prod = np.repeat(np.arange(world.catalog.n), world.days)
    day = np.tile(np.arange(world.days), world.catalog.n)
    truth = world.promos.discount_of(prod, day)
    rng = np.random.default_rng(12)
    everything = fb.calendar_planned_at(world, plan, world.days - 1, rng)
    np.testing.assert_array_equal(everything.discount_of(prod, day), truth)
    early = fb.calendar_planned_at(world, plan, 40, rng)
    past = day <= 40
    np.testing.assert_array_equal(early.discount_of(prod[past], day[past]), truth[past])
    assert not np.array_equal(early.discount_of(prod[~past], day[~past]), truth[~past])


def test_measured_models_beside_the_oracle():
    bench = {
        "models": [
            {"model": "lightgbm", "wape": 1.0},
            {"model": "lightgbm_no_known_future", "wape": 1.25},
            {"model": "mlforecast_lgbm", "wape": 1.1},
            {"model": "AutoETS", "wape": 1.3},
        ]
    }
    floors = {
        "with_plan_mean": {"wape": 0.9},
        "with_plan_median": {"wape": 0.7},
        "with_plan_at_origin_mean": {"wape": 1.0},
        "with_plan_at_origin_median": {"wape": 0.8},
    }
    out = fb.shopml_beside(bench, floors)
    assert out["oracle"] == "with_plan_at_origin"
    assert out["shopml_ratio"] == 0.8
    assert out["best_peer"] == "mlforecast_lgbm"
    assert out["oracle_median_over_best_peer"] == round(0.8 / 1.1, 4)
    assert out["wape_over_oracle_mean"]["lightgbm_no_known_future"] == 1.25
    with pytest.raises(fb.ConfigError, match="models"):
        fb.shopml_beside({"best": {}}, floors)


def test_cli_rejects_a_bench_file_without_models(tmp_path, capsys):
    bad = tmp_path / "bench.json"
    bad.write_text('{"best": {}}')
    with pytest.raises(SystemExit) as exc:
        fb.main(["--bench", str(bad)])
    assert exc.value.code != 0
    assert "must be a list of rows" in capsys.readouterr().err
