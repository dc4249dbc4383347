"""Settings chosen on the shop's own history: an Optuna search on one inner validation fold.

The inner fold is the last `horizon` days of the panel it is given: the caller passes the history
that ends at (or before) the first test origin, so the search never sees a test fold. Searched:
recency weighting (off or a half-life), learning rate, rounds, leaves and the tweedie power. TPE
with a fixed seed and a trial cap (not wall time) makes the choice reproducible; `timeout` is only
a guard. The search's work is also capped: `work_budget` bounds the sum over trials of training
rows x boosting rounds (the cost of a LightGBM training, known exactly after each trial), and the
search stops after the trial that reaches it. It is a count, not a clock, so the same data and
seed give the same trials and the same choice on any machine. The default
(`DEFAULT_WORK_BUDGET`, 450) lets the benchmarks' 500-series panels run all their trials (10
trials spent 245 M on the generated `medium` store's inner fold and 181 M on Online Retail's with
training origins 27 days apart, 22% fewer rows than 21 days apart) and stops the main job's
`small` store (1,866 series) after a few trials. Each trial is one LightGBM training (no
calibration, no refit), scored by WAPE + the bias beyond `BIAS_TOLERANCE` (`trial_score`):
WAPE alone is minimised by the median, which for daily counts of slow sellers sits far below the
mean (a zero forecast scores WAPE 1.0), so a WAPE-only search chose settings that under-forecast
(issue 14: bias -34% on the generated `small` store against -11% with the defaults).
The |bias| term, one 28-day fold's level, can outweigh the skill: on Online Retail the search
chose the trial with the worst WAPE of ten (0.987 against 0.919, bias -14%). Scoring instead the
WAPE of each forecast rescaled to the units sold (the level left to the forecaster's own level
correction) chose 80 rounds / 83 leaves there; its first test fold scored WAPE 0.928, bias -17%
against 0.955, -12%: tried on that one fold only, not adopted.
Penalising every point of bias made the search trade skill for level even where the level was
already within what the forecast is held to (|bias| < 10%, issue 14), and the trial's bias is
the raw model's, before the level correction the fitted forecaster applies (about half of it
goes, `bias_correction` 0.5). So only the bias beyond `BIAS_TOLERANCE` counts, point for point
with WAPE: inside it the most accurate trial wins, outside it under-forecasting still loses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna

from features.demand import DemandPanel
from models.forecast.lgbm import LightGBMForecaster
from shopml.errors import DataError

HALF_LIVES = (0.0, 90.0, 180.0, 365.0)  # 0 = recency weighting off
# training rows x boosting rounds summed over trials (millions): see the module docstring
DEFAULT_WORK_BUDGET = 450.0
BIAS_TOLERANCE = 0.10  # |bias| on the inner fold that costs nothing (`trial_score`)


def trial_score(wape: float, bias: float, tolerance: float = BIAS_TOLERANCE) -> float:
    """A trial's score (lower wins): its WAPE plus the part of |bias| beyond `tolerance`."""
    return wape + max(0.0, abs(bias) - tolerance)


@dataclass
class TuningResult:
    """The chosen settings, their inner-fold WAPE, every trial and the inner fold's dates."""

    params: dict
    wape: float
    default_wape: float
    bias: float = 0.0
    trials: list[dict] = field(default_factory=list)
    inner_origin: str = ""
    inner_end: str = ""
    seconds: float = 0.0
    work: float = 0.0  # millions of training rows x rounds spent (`work_budget`)
    capped: bool = False  # True when the work budget stopped the search before `n_trials`


def _space(trial: optuna.Trial) -> dict:
    half = trial.suggest_categorical("recency_half_life", HALF_LIVES)
    return {
        "recency_half_life": half or None,
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.2, log=True),
        "n_estimators": trial.suggest_int("n_estimators", 60, 400, step=20),
        "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
        "tweedie_variance_power": trial.suggest_float("tweedie_variance_power", 1.05, 1.8),
    }


def inner_scores(panel: DemandPanel, horizon: int, params: dict) -> tuple[float, float, float]:
    """(WAPE, bias, work) of a LightGBM with `params` fitted on all but the last `horizon` days
    of `panel` and scored on those days (observed cells only: closed days are not scored); work
    is millions of training rows x boosting rounds."""
    origin = panel.dates[-1 - horizon]
    train = panel.cut(origin)
    # every row, not the fit's `row_share` sample: the trials are ranked on one 28-day fold,
    # and a sample adds its own noise to that ranking (issue 14: with half samples the search
    # chose other settings, WAPE 1.054 / 0.935 on the two benchmarks against 1.027 / 0.925)
    model = LightGBMForecaster(horizon=horizon, refit=False, **{"row_share": 1.0, **params})
    model.fit(train, calibrate=False)
    fc = model.predict(horizon)
    actual = panel.subset(train.product_ids).units[:, -horizon:]
    pred = fc["p50"].to_numpy().reshape(train.n_products, horizon)
    ok = ~np.isnan(actual)
    total = actual[ok].sum()
    if total <= 0:
        raise DataError("the inner validation fold has no sales to choose settings on")
    wape = float(np.abs(actual[ok] - pred[ok]).sum() / total)
    work = model.train_rows_ * model.n_estimators / 1e6
    return wape, float(pred[ok].sum() / total - 1.0), work


def choose_settings(
    panel: DemandPanel,
    horizon: int,
    n_trials: int = 12,
    seed: int = 0,
    base: dict | None = None,
    timeout: float | None = None,
    on_trial: Callable[[int, dict, float], None] | None = None,
    work_budget: float | None = DEFAULT_WORK_BUDGET,
) -> TuningResult:
    """Search settings on the inner fold of `panel` (see module doc); trial 0 is the defaults
    and always runs. `work_budget` (millions of rows x rounds, None or 0: no cap) stops the
    search after the trial that reaches it."""
    t0 = time.perf_counter()
    base = dict(base or {})
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(6, n_trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(
        {
            "recency_half_life": 0.0,
            "learning_rate": 0.1,
            "n_estimators": 120,
            "num_leaves": 31,
            "tweedie_variance_power": 1.5,
        }
    )
    trials: list[dict] = []
    spent = [0.0]

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **_space(trial)}
        wape, bias, work = inner_scores(panel, horizon, params)
        spent[0] += work
        trials.append({"number": trial.number, **params, "wape": wape, "bias": bias})
        if on_trial:
            on_trial(trial.number, params, wape)
        if work_budget and spent[0] >= work_budget:
            trial.study.stop()  # finishes this trial; deterministic (a count, not a clock)
        return trial_score(wape, bias)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials, timeout=timeout)
    best = {**base, **_space_of(study.best_params)}
    chosen = next(t for t in trials if t["number"] == study.best_trial.number)
    return TuningResult(
        params=best,
        wape=chosen["wape"],
        bias=chosen["bias"],
        default_wape=trials[0]["wape"],
        trials=trials,
        inner_origin=str(panel.dates[-1 - horizon].date()),
        inner_end=str(panel.dates[-1].date()),
        seconds=time.perf_counter() - t0,
        work=spent[0],
        capped=len(trials) < n_trials,
    )


def _space_of(best: dict) -> dict:
    out = dict(best)
    out["recency_half_life"] = out.get("recency_half_life") or None
    return out
