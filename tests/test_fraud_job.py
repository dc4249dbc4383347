"""`shopml train fraud` on the tiny generated store, with MLflow in tmp_path."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.fraud.batch import to_matrix
from features.fraud.definition import HANDBOOK_BASELINE
from features.fraud.labels import LabelStore
from features.sources import load_source
from models.fraud import LogisticBaseline
from shopml.config import load_config
from shopml.errors import ConfigError, DataError
from training.fraud_job import FraudJobConfig, SplitConfig, prepare, time_split, train
from training.fraud_metrics import auc_roc, average_precision

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "fraud.toml"


def test_default_config_loads_and_rejects_unknown_keys(tmp_path):
    cfg = load_config(CONFIG, FraudJobConfig)
    assert cfg.source.kind == "generated" and cfg.features.label_delay_days == 7
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nnum_leafs = 3\n")
    with pytest.raises(ConfigError, match="num_leafs"):
        load_config(bad, FraudJobConfig)


def test_model_and_policy_sections_are_the_estimators_parameters_and_defaults(tmp_path):
    import inspect

    from models.fraud import DecisionPolicy, FraudScorer

    cfg = FraudJobConfig()
    scorer = {
        k: p.default
        for k, p in inspect.signature(FraudScorer.__init__).parameters.items()
        if k not in ("self", "feature_names", "feature_version", "random_state")
    }
    assert cfg.model.model_dump() == scorer  # the defaults exist once, in the scorer
    assert cfg.policy.policy() == DecisionPolicy()
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nnum_boost_round = 0\n")
    with pytest.raises(ConfigError, match="num_boost_round"):
        load_config(bad, FraudJobConfig)


def test_time_split_is_ordered_and_leaves_the_delay_gap():
    day = np.repeat(np.arange(60), 10)
    parts = time_split(
        day, SplitConfig(warmup_days=5, calibration_days=7, delay_days=7, test_days=7)
    )
    assert day[parts["train"]].min() == 5 and day[parts["train"]].max() == 38
    assert day[parts["calibration"]].min() == 39 and day[parts["calibration"]].max() == 45
    assert day[parts["test"]].min() == 53
    with pytest.raises(DataError, match="too few"):
        time_split(np.arange(20), SplitConfig())


def test_train_fraud_job_logs_metrics_plots_and_registers(tmp_shopml_home):
    import mlflow

    from training.fraud_job import train

    cfg = load_config(CONFIG, FraudJobConfig)
    cfg.source.scale = "tiny"
    cfg.model.num_boost_round = 30
    result = train(cfg)
    for name in (
        "auc_roc",
        "average_precision",
        "card_precision_at_100",
        "brier_score",
        "calibration_error",
        "review_rate",
        "savings",
        "precision_at_threshold",
    ):
        assert name in result.metrics
    assert result.model_version == "1"
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["fraud.feature_version"].startswith("shopml-fraud@")
    _check_baseline(cfg, result, run)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert {
        "plots/pr_curve.png",
        "plots/roc_curve.png",
        "plots/calibration.png",
        "plots/score_distribution.png",
    } <= arts

    from models.fraud import FraudEngine
    from registry.store import fetch

    engine = FraudEngine.load(fetch("fraud").native_dir)
    d = engine.score(
        {
            "transaction_id": "x",
            "timestamp": "2024-01-01T00:00:00",
            "customer_id": "c",
            "terminal_id": "t",
            "amount": 10.0,
        }
    )
    assert d.decision in ("approve", "review", "decline")


def _check_baseline(cfg: FraudJobConfig, result, run) -> None:
    """The logistic-regression baseline is logged beside the scorer: the handbook's features,
    fitted on the train period, the same numbers as fitting it here."""
    for name in (
        "baseline_average_precision",
        "baseline_auc_roc",
        "baseline_card_precision_at_100",
    ):
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])
    assert "logistic regression" in run.data.tags["fraud.baseline"]
    data = prepare(cfg, cfg.features.feature_set())
    tr, te = data.parts["train"], data.parts["test"]
    names = list(HANDBOOK_BASELINE)
    lr = LogisticBaseline(names).fit(to_matrix(data.cols, names, tr), data.y[tr])
    p = lr.predict_proba(to_matrix(data.cols, names, te))
    assert result.metrics["baseline_average_precision"] == pytest.approx(
        average_precision(data.y[te], p)
    )
    assert result.metrics["baseline_auc_roc"] == pytest.approx(auc_roc(data.y[te], p))
    assert result.metrics["baseline_auc_roc"] != result.metrics["auc_roc"]


def test_cli_ingest_labels_writes_the_label_store(tmp_shopml_home, tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text(
        "transaction_id,is_fraud,label_time,customer_id,terminal_id\n"
        "t1,true,2024-01-02T00:00:00,c1,m1\nt2,false,,c2,m2\n"
    )
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    res = CliRunner().invoke(app, ["fraud", "ingest-labels", str(f), "--labels-url", url])
    assert res.exit_code == 0, res.output
    assert "2 labels stored" in res.output
    assert sorted(LabelStore(url).read()["transaction_id"]) == ["t1", "t2"]


def test_train_applies_stored_labels_and_logs_how_many(tmp_shopml_home, tmp_path):
    """Labels ingested by the CLI reach training: the model changes and the count is logged."""
    cfg = load_config(_tiny(tmp_path, 0), FraudJobConfig)
    cfg.register_model = False
    before = train(cfg)
    assert before.metrics["labels_applied"] == 0
    pay = load_source(cfg.source).payments
    day = ((pay["timestamp"] - pay["timestamp"].min().normalize()).dt.days).to_numpy()
    train_rows = time_split(day, cfg.split)["train"]
    fraud = pay.iloc[train_rows].query("is_fraud")
    genuine = pay.iloc[train_rows].query("~is_fraud").sample(len(fraud), random_state=0)
    flips = pd.DataFrame(
        {
            "transaction_id": [*fraud["transaction_id"], *genuine["transaction_id"]],
            "is_fraud": [False] * len(fraud) + [True] * len(genuine),
            "label_time": [*fraud["timestamp"], *genuine["timestamp"]],
        }
    )
    flips["label_time"] += pd.Timedelta(days=2)
    f = tmp_path / "flips.csv"
    flips.to_csv(f, index=False)
    res = CliRunner().invoke(app, ["fraud", "ingest-labels", str(f)])
    assert res.exit_code == 0, res.output
    after = train(cfg)
    n = 2 * len(fraud)
    assert after.metrics["labels_applied"] == n == after.metrics["labels_flipped"]
    assert mlflow.get_run(after.run_id).data.metrics["labels_applied"] == n
    assert abs(after.metrics["average_precision"] - before.metrics["average_precision"]) > 0.05
    assert after.data_fingerprint != before.data_fingerprint  # other labels, other data


def _tiny(tmp_path, seed: int) -> Path:
    """A fraud config file on the tiny generated store with source seed `seed`, quick to train."""
    text = CONFIG.read_text().replace('scale = "small"\nseed = 0', f'scale = "tiny"\nseed = {seed}')
    text = text.replace("num_boost_round = 300", "num_boost_round = 30")
    path = tmp_path / f"fraud-{seed}.toml"
    path.write_text(text)
    return path


def test_evaluate_scores_a_registered_model_on_other_data_without_registering(
    tmp_shopml_home, tmp_path
):
    import mlflow

    from training.fraud_job import evaluate, train

    trained = train(load_config(_tiny(tmp_path, 0), FraudJobConfig))
    assert trained.model_version == "1"
    other = load_config(_tiny(tmp_path, 1), FraudJobConfig)
    out = evaluate(other, "models:/shopml-fraud/1")
    run = mlflow.get_run(out.run_id)
    assert "average_precision" in run.data.metrics and "calibration_error" in run.data.metrics
    assert out.metrics["average_precision"] == pytest.approx(run.data.metrics["average_precision"])
    fingerprint = run.data.tags["data.fingerprint"]
    assert fingerprint == out.data_fingerprint != trained.data_fingerprint
    assert out.model_version is None
    versions = mlflow.MlflowClient().search_model_versions("name='shopml-fraud'")
    assert [str(v.version) for v in versions] == ["1"]

    # `shopml retrain fraud` on the other seed: the champion gets evaluated by the hook, and the
    # gate decides (0 promoted, 3 kept); never an error or a note about a missing hook
    res = CliRunner().invoke(app, ["retrain", "fraud", "--config", str(_tiny(tmp_path, 1))])
    assert res.exit_code in (0, 3), res.output
    assert "evaluated champion v1 on the same data" in res.output
    assert "no evaluate" not in res.output
