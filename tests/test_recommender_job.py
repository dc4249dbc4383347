"""The training job on the tiny generated store, with MLflow in tmp_path."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from features.generator import GeneratorConfig, generate
from models.recommenders import Recommender
from registry.store import fetch
from shopml.config import load_config
from shopml.errors import ConfigError
from training.recommender_job import RecommenderJobConfig, evaluate, train

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "recommender.toml"


@pytest.fixture(scope="module")
def tiny_store():
    return generate(GeneratorConfig(scale="tiny", seed=0))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One MLflow store for the module (creating one costs tens of seconds on a busy machine)."""
    root = tmp_path_factory.mktemp("shopml-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOPML_HOME", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root


def _tiny_config(**updates) -> RecommenderJobConfig:
    cfg = load_config(CONFIG, RecommenderJobConfig)
    data = cfg.model_dump(mode="json", exclude_unset=True)
    data["source"] = {"kind": "generated", "scale": "tiny", "seed": 0}
    data["blend_with"][0]["params"]["factors"] = 8
    data.update(updates)
    return RecommenderJobConfig.model_validate(data)


def test_job_logs_metrics_plots_and_registers_a_loadable_model(home, tiny_store):
    result = train(_tiny_config(), store=tiny_store)
    assert result.model_version == "1"
    for key in ("ndcg_at_20", "recall_at_20", "map_at_20", "hit_rate_at_20", "coverage_at_20"):
        assert 0.0 <= result.metrics[key] <= 1.0
    run = MlflowClient().get_run(result.run_id)
    assert run.data.metrics["ndcg_at_20"] == pytest.approx(result.metrics["ndcg_at_20"])
    assert run.data.params["model.kind"] == "ease"
    assert run.data.tags["data.fingerprint"] == result.data_fingerprint
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "plots")}
    assert "plots/recall_coverage_at_k.png" in artifacts
    assert MlflowClient().list_artifacts(result.run_id, "curves")
    native = fetch("recommender", dst=home / "dl").native_dir
    model = Recommender.load(native)
    customer = model.customer_ids_[0]
    assert len(model.recommend_one(customer, k=5)) == 5
    assert model.recommend_one("a-new-customer", k=5).source.startswith("popularity")
    # the promotion hook: the registered model scored again on the same split
    again = evaluate(_tiny_config(), model_uri="models:/shopml-recommender/1")
    assert again.metrics["ndcg_at_20"] == pytest.approx(result.metrics["ndcg_at_20"], abs=1e-6)


def test_search_runs_nested_trials_on_validation(home, tiny_store):
    cfg = _tiny_config(blend_with=[], register_model=False)
    cfg.search.trials = 3
    cfg.search.space = {"model.l2": [10.0, 100.0], "interactions.half_life_days": [30.0, 90.0]}
    result = train(cfg, store=tiny_store)
    assert result.model_version is None
    runs = mlflow.search_runs(
        experiment_names=["shopml-recommender"],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    assert 1 <= len(runs) <= 3
    assert "metrics.val_ndcg_at_20" in runs.columns
    best = MlflowClient().get_run(result.run_id).data.params
    assert best["best.model.l2"] in ("10.0", "100.0")


def test_bad_config_names_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nkind = "deep-magic"\n')
    with pytest.raises(ConfigError, match="model.kind"):
        load_config(bad, RecommenderJobConfig)


def test_model_params_are_checked_against_the_constructor_and_defaults_left_to_it():
    from shopml.config import parse_config
    from training.forecast_job import ForecastJobConfig

    with pytest.raises(ConfigError, match="EASERecommender.*l3.*l2, dropout"):
        parse_config({"model": {"kind": "ease", "params": {"l3": 1.0}}}, RecommenderJobConfig)
    with pytest.raises(ConfigError, match="SeasonalNaive.*windows"):
        parse_config(
            {"model": {"kind": "seasonal_naive", "params": {"windows": 7}}}, ForecastJobConfig
        )
    assert RecommenderJobConfig().model.params == {}  # every default is the model's own


def test_the_ranker_is_trained_logged_and_registered_like_the_others(home, tiny_store):
    cfg = _tiny_config(
        ranker={"params": {"n_candidates": 30, "n_estimators": 40, "min_child_samples": 5}},
        precompute_top_n=20,
    )
    result = train(cfg, store=tiny_store)
    run = MlflowClient().get_run(result.run_id)
    for key in ("candidate_recall_union", "ranker_lift_ndcg_at_20", "best_generator_ndcg_at_20"):
        assert key in run.data.metrics
    assert run.data.metrics["candidate_recall_union"] >= run.data.metrics["candidate_recall_ease"]
    report = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/ranker/report.json")
    assert set(report["feature_importance"]) >= {"ease_score", "pair_log_price_ratio"}
    native = fetch("recommender", result.model_version, dst=home / "dl-ranker").native_dir
    model = Recommender.load(native)
    assert model.kind == "fallback" and model.primary.kind == "ranker"
    customer = model.customer_ids_[0]
    assert model.recommend_one(customer, k=5).source == "ranker"
    rec = model.recommend_with_context(None, k=5, recent_product_ids=[model.product_ids_[0]])
    assert rec.source == "ranker:fold-in" and len(rec) == 5
