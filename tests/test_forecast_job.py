"""`shopml train forecast` on the tiny generated store, with MLflow in tmp_path."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from shopml.config import load_config, parse_config
from shopml.errors import ConfigError
from training.forecast_job import ForecastJobConfig, train


def test_default_config_file_parses():
    from cli.forecast import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG, ForecastJobConfig)
    assert cfg.model.kind == "lightgbm" and cfg.horizon == 28


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="horizon"):
        parse_config({"horizon": 0}, ForecastJobConfig)
    with pytest.raises(ConfigError, match="kind"):
        parse_config({"model": {"kind": "prophet"}}, ForecastJobConfig)


def test_train_forecast_job_end_to_end(tmp_shopml_home, tmp_path):
    cfg = parse_config(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": 0},
            "horizon": 14,
            "n_folds": 2,
            "top_n": 40,
            "tune_trials": 2,
            "plot_top_products": 2,
            "output": str(tmp_path / "forecast.parquet"),
            "model": {
                "kind": "lightgbm",
                "params": {"n_estimators": 30, "min_child_samples": 20, "min_origin_history": 14},
            },
        },
        ForecastJobConfig,
    )
    result = train(cfg)
    assert result.family == "forecast" and result.model_version == "1"
    for key in (
        "wape",
        "mase",
        "rmsse",
        "bias",
        "pinball_loss",
        "coverage_p10_p90",
        "seasonal_naive.wape",
        "moving_average.wape",
        "wape.week1",
        "wape.week2",
        "band_ordered_share",
        "coverage_p10_p90.decile_min",
        "coverage_p10_p90.decile1",
        "coverage_p10_p90.decile10",
        "above_p90.decile10",
        "above_p90.decile_max",
        "coverage_p10_p90.week2",
    ):
        assert key in result.metrics, key
    assert result.metrics["band_ordered_share"] > 0.95
    run_metrics = mlflow.get_run(result.run_id).data.metrics
    assert (
        run_metrics["coverage_p10_p90.decile_min"] == result.metrics["coverage_p10_p90.decile_min"]
    )
    fc = pd.read_parquet(tmp_path / "forecast.parquet")
    assert list(fc.columns) == ["product_id", "date", "p10", "p50", "p90", "flag"]
    assert fc["product_id"].nunique() == 40 and fc.groupby("product_id").size().eq(14).all()
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()

    run = mlflow.get_run(result.run_id)
    assert run.data.tags["data.fingerprint"] == result.data_fingerprint
    # settings chosen on the inner fold before the test folds: one nested run per trial
    trials = mlflow.search_runs(
        [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{result.run_id}'",
        output_format="list",
    )
    assert len(trials) == 2 and all("inner_wape" in t.data.metrics for t in trials)
    assert {"tuned.recency_half_life", "tuned.learning_rate", "tuned.num_leaves"} <= set(
        run.data.params
    )
    assert "tuned.n_estimators" not in run.data.params  # the config's explicit value wins
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/actual_vs_forecast_top_products.png", "plots/error_by_horizon.png"}
    from models.forecast import load_forecaster
    from registry.store import fetch

    model = load_forecaster(fetch("forecast", dst=tmp_path / "dl").native_dir)
    again = model.predict(14)
    pd.testing.assert_frame_equal(
        again.reset_index(drop=True), fc.reset_index(drop=True), check_dtype=False
    )


def _tiny_config(seed: int, tmp_path, kind: str = "lightgbm") -> ForecastJobConfig:
    params = {"n_estimators": 30, "min_child_samples": 20, "min_origin_history": 14}
    return parse_config(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": seed},
            "horizon": 14,
            "n_folds": 2,
            "top_n": 40,
            "tune_trials": 0,
            "plot_top_products": 0,
            "output": str(tmp_path / f"forecast-{seed}.parquet"),
            "model": {"kind": kind, "params": params if kind == "lightgbm" else {}},
        },
        ForecastJobConfig,
    )


def test_evaluate_scores_a_registered_model_on_other_data_without_registering(
    tmp_shopml_home, tmp_path
):
    from training.forecast_job import evaluate
    from training.retrain import is_timing

    # known answer: a seasonal naive model only remembers history, so scoring the registered one
    # on its own data and folds reproduces the training run's backtest exactly
    naive = train(_tiny_config(0, tmp_path, "seasonal_naive"))
    same = evaluate(_tiny_config(0, tmp_path, "seasonal_naive"), "models:/shopml-forecast/1")
    assert same.metrics.keys() == naive.metrics.keys() - {"forecast.products", "forecast.units_p50"}
    for key, value in same.metrics.items():
        if not is_timing(key):
            assert value == pytest.approx(naive.metrics[key]), key

    trained = train(_tiny_config(0, tmp_path))
    out = evaluate(_tiny_config(1, tmp_path), f"models:/shopml-forecast/{trained.model_version}")
    run = mlflow.get_run(out.run_id)
    for key in ("wape", "coverage_p10_p90", "bias", "seasonal_naive.wape", "wape.week2"):
        assert key in run.data.metrics, key
    assert out.metrics["wape"] == pytest.approx(run.data.metrics["wape"])
    assert run.data.tags["data.fingerprint"] == out.data_fingerprint != trained.data_fingerprint
    assert run.data.tags["evaluated.model_uri"] == "models:/shopml-forecast/2"
    assert out.model_version is None and "forecast" not in out.artifacts
    versions = mlflow.MlflowClient().search_model_versions("name='shopml-forecast'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]


def test_without_top_n_the_published_forecast_covers_every_catalog_product():
    from training.forecast_job import _unsold

    cfg = parse_config({"exclude_categories": ["non_product"]}, ForecastJobConfig)
    dates = pd.date_range("2024-03-01", periods=3)
    sold = pd.DataFrame({"product_id": ["a"] * 3, "date": dates, "p50": 1.0})
    products = pd.DataFrame(
        {"product_id": ["a", "b", "POST"], "category": ["toys", "toys", "non_product"]}
    )
    extra = _unsold(sold, products, cfg)
    assert extra["product_id"].unique().tolist() == ["b"] and len(extra) == 3
    assert (extra[["p10", "p50", "p90"]] == 0).all().all()
    assert (extra["flag"] == "short_history").all()
