"""The forecast promotion gate refuses a degenerate P10-P90 band (issue 11), whatever the champion
logged: against a real MLflow server, as `shopml promote` runs it."""

from __future__ import annotations

from experiment_runs import log_run

from models.family import FAMILIES
from training.promotion import guard_check, promote

pytest_plugins = ["mlflow_server"]  # the real MLflow server fixtures

# the main job's figures on the `small` store before issue 11: P90 == P50 nearly everywhere and
# 29% of the top level decile's days above "P90", yet a pooled coverage of 0.91
DEGENERATE = {
    "wape": 1.20,
    "bias": 0.0,
    "coverage_p10_p90": 0.91,
    "band_ordered_share": 0.003,
    "coverage_p10_p90.decile_min": 0.71,
    "above_p90.decile_max": 0.29,
    "test_series": 500,
    "test_points": 41972,
}
HONEST = {
    **DEGENERATE,
    "coverage_p10_p90": 0.91,
    "band_ordered_share": 1.0,
    "coverage_p10_p90.decile_min": 0.87,
    "above_p90.decile_max": 0.13,
}
BAND_GUARDS = ["band_ordered_share", "coverage_p10_p90.decile_min", "above_p90.decile_max"]


def test_forecast_spec_fails_a_degenerate_band_on_its_own():
    guards = {g.metric: g for g in FAMILIES["forecast"].promotion.guards}
    assert set(BAND_GUARDS) <= set(guards)
    for name in BAND_GUARDS:  # a champion with the same degenerate band does not excuse it
        assert not guard_check(guards[name], DEGENERATE, DEGENERATE).passed, name
        assert guard_check(guards[name], HONEST, DEGENERATE).passed, name
    check = guard_check(guards["band_ordered_share"], DEGENERATE, {})
    assert "below the minimum 0.95" in check.detail


def test_promote_takes_an_honest_band_over_a_degenerate_champion_and_refuses_the_reverse(
    mlflow_env,
):
    # the old model's pooled coverage (0.81, tuned on pooled days) is no reason to refuse the
    # honest band's 0.91: zero days of slow sellers sit inside any band from 0
    log_run("forecast", {**DEGENERATE, "coverage_p10_p90": 0.81})
    assert promote("forecast", log_run("forecast", {**HONEST, "wape": 1.1})).promoted
    decision = promote("forecast", log_run("forecast", {**DEGENERATE, "wape": 1.0}))
    assert not decision.promoted
    assert [c.name for c in decision.failed] == [f"guard {g}" for g in BAND_GUARDS]
