"""Champion / challenger promotion, rollback and retraining against a real MLflow server."""

from __future__ import annotations

import mlflow
import pytest
from experiment_runs import PROTOCOL, log_run, run_cli, tiny_store
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from shopml.errors import ConfigError, RegistryError

pytest_plugins = ["mlflow_server"]  # the real MLflow server fixtures

GOOD = {
    "average_precision": 0.70,
    "calibration_error": 0.020,
    "review_rate": 0.010,
    "test_frauds": 40,
}


def aliases(family: str = "fraud") -> dict[str, str]:
    model = MlflowClient().get_registered_model(f"shopml-{family}")
    return {alias: str(version) for alias, version in model.aliases.items()}


def version_tags(version: str, family: str = "fraud") -> dict[str, str]:
    return MlflowClient().get_model_version(f"shopml-{family}", version).tags


def test_first_model_becomes_champion_even_if_registered_by_promote(mlflow_env):
    from training.promotion import promote

    run = log_run("fraud", GOOD, native_model=True, register=False)  # a model, not registered
    decision = promote("fraud", run[:10])  # an id prefix is enough
    assert decision.first and decision.promoted
    assert aliases() == {"champion": decision.version}
    assert "first model" in decision.explain()


def test_better_challenger_moves_the_alias_and_keeps_previous(mlflow_env, monkeypatch, capsys):
    log_run("fraud", GOOD)
    challenger = log_run("fraud", {**GOOD, "average_precision": 0.75})
    code, out = run_cli(["promote", "fraud", challenger], monkeypatch, capsys)
    assert code == 0, out
    assert aliases() == {"champion": "2", "previous-champion": "1"}
    assert "promoted" in out and "[pass] primary average_precision" in out
    tags = version_tags("2")
    assert tags["promotion.kind"] == "gate" and tags["promotion.previous_version"] == "1"


def test_worse_challenger_small_gain_or_guard_regression_is_refused_and_says_why(
    mlflow_env, monkeypatch, capsys
):
    from training.promotion import promote

    log_run("fraud", GOOD)
    worse = log_run("fraud", {**GOOD, "average_precision": 0.65})
    code, out = run_cli(["promote", "fraud", worse], monkeypatch, capsys)
    assert code == 3
    assert "NOT promoted" in out
    assert "[FAIL] primary average_precision" in out and "0.65 vs champion 0.7" in out
    small = log_run("fraud", {**GOOD, "average_precision": 0.702})  # margin is 0.005
    decision = promote("fraud", small)
    assert not decision.promoted
    assert [c.name for c in decision.failed] == ["primary average_precision"]
    assert "margin 0.005" in decision.failed[0].detail
    # a better primary metric does not excuse a worse calibration
    worse_calibrated = {**GOOD, "average_precision": 0.80, "calibration_error": 0.05}
    decision = promote("fraud", log_run("fraud", worse_calibrated))
    assert not decision.promoted
    assert [c.name for c in decision.failed] == ["guard calibration_error"]
    assert "rise 0.03" in decision.failed[0].detail
    assert aliases() == {"champion": "1", "challenger": "4"}  # the last one gated


def test_lower_is_better_family_and_target_guards(mlflow_env):
    from training.promotion import promote

    base = {
        "wape": 0.50,
        "coverage_p10_p90": 0.80,
        "bias": 0.01,
        "test_series": 50,
        "test_points": 4200,
    }
    log_run("forecast", base)
    off_band = log_run("forecast", {**base, "wape": 0.40, "coverage_p10_p90": 0.60})
    decision = promote("forecast", off_band)
    assert [c.name for c in decision.failed] == ["guard coverage_p10_p90"]
    better = log_run("forecast", {**base, "wape": 0.45, "bias": -0.02})
    assert promote("forecast", better).promoted


def test_different_data_is_refused_and_force_needs_a_reason_that_is_recorded(
    mlflow_env, monkeypatch, capsys
):
    log_run("fraud", GOOD, data=0)
    challenger = log_run("fraud", {**GOOD, "average_precision": 0.9}, data=1)
    code, out = run_cli(["promote", "fraud", challenger], monkeypatch, capsys)
    assert code == 3
    assert "[FAIL] same data" in out and "not comparable" in out
    assert tiny_store(1).fingerprint_id() in out
    assert aliases() == {"champion": "1", "challenger": "2"}
    code, out = run_cli(["promote", "fraud", challenger, "--force"], monkeypatch, capsys)
    assert code == 2 and "--reason" in out
    assert aliases() == {"champion": "1", "challenger": "2"}
    reason = "new data source; old champion cannot be evaluated on it"
    code, out = run_cli(
        ["promote", "fraud", challenger, "--force", "--reason", reason], monkeypatch, capsys
    )
    assert code == 0, out
    assert aliases() == {"champion": "2", "previous-champion": "1"}
    tags = version_tags("2")
    assert tags["promotion.reason"] == reason and tags["promotion.forced"] == "true"


def test_rollback_restores_previous_versions_step_by_step(mlflow_env, monkeypatch, capsys):
    from training.promotion import promote, rollback

    log_run("fraud", GOOD)
    for ap in (0.75, 0.80):
        assert promote("fraud", log_run("fraud", {**GOOD, "average_precision": ap})).promoted
    assert aliases() == {"champion": "3", "previous-champion": "2"}
    code, out = run_cli(["rollback", "fraud", "--reason", "bad canary"], monkeypatch, capsys)
    assert code == 0, out
    assert aliases() == {"champion": "2", "previous-champion": "1"}
    assert version_tags("3")["rollback.reason"] == "bad canary"
    rollback("fraud")
    assert aliases() == {"champion": "1"}
    with pytest.raises(RegistryError, match="no @previous-champion"):
        rollback("fraud")
    code, out = run_cli(["rollback", "fraud"], monkeypatch, capsys)
    assert code == 2 and "previous-champion" in out


def test_promote_rejects_runs_of_another_family_and_unknown_runs(mlflow_env, monkeypatch, capsys):
    from training.promotion import promote

    run = log_run("recommender", {"ndcg_at_20": 0.1, "test_customers": 300})
    with pytest.raises(ConfigError, match="belongs to family 'recommender'"):
        promote("fraud", run)
    code, out = run_cli(
        ["promote", "fraud", "0123456789abcdef0123456789abcdef"], monkeypatch, capsys
    )
    assert code == 2 and "unknown run" in out
    code, out = run_cli(["promote", "weather", run], monkeypatch, capsys)
    assert code == 2 and "unknown model family" in out


# --- retrain and reproduce, with a stand-in job module -----------------------------------------


class FraudJobConfig(BaseModel):
    seed: int = 0
    quality: float
    data_variant: int = 0
    frauds: int = 40  # frauds in the test period
    test_days: int = 14


def _fake_fraud_job():
    """A fraud job with the real interface whose metrics come from its config."""
    from training.jobs import Job
    from training.tracking import TrainResult

    def protocol(config):
        return {**PROTOCOL, "split": {"kind": "time", "test_days": config.test_days}}

    def train(config, settings=None):
        metrics = {**GOOD, "average_precision": config.quality, "test_frauds": config.frauds}
        run_id = log_run(
            "fraud",
            metrics,
            data=config.data_variant,
            config=config.model_dump(),
            protocol=protocol(config),
        )
        version = MlflowClient().get_run(run_id).data.tags.get("shopml.model_version")
        return TrainResult(family="fraud", run_id=run_id, metrics=metrics, model_version=version)

    def evaluate(config, model_uri, settings=None):
        from training.tracking import log_protocol, start_run

        name, version = model_uri.removeprefix("models:/").split("/")
        source = MlflowClient().get_model_version(name, version).tags["run_id"]
        metrics = MlflowClient().get_run(source).data.metrics  # "scores" the same on any data
        metrics = {**metrics, "test_frauds": config.frauds}
        with start_run("fraud", config=config, store=tiny_store(config.data_variant)) as run:
            mlflow.log_metrics(metrics)
            log_protocol(protocol(config))
        return TrainResult(family="fraud", run_id=run.info.run_id, metrics=metrics)

    return Job("fraud", FraudJobConfig, train, evaluate)


def use_jobs(monkeypatch, **jobs) -> None:
    """Replace entries of the jobs table (a value None removes the family's job)."""
    import training.jobs

    table = {**training.jobs.JOBS, **jobs}
    monkeypatch.setattr(training.jobs, "JOBS", {k: v for k, v in table.items() if v is not None})


def test_retrain_exit_codes_promote_refuse_and_evaluate_champion_on_fresh_data(
    mlflow_env, monkeypatch, capsys, tmp_path
):
    use_jobs(monkeypatch, fraud=_fake_fraud_job())

    def config(quality: float, variant: int):
        path = tmp_path / f"fraud-{quality}-{variant}.toml"
        path.write_text(f"seed = 3\nquality = {quality}\ndata_variant = {variant}\n")
        return str(path)

    code, out = run_cli(["retrain", "fraud", "--config", config(0.70, 0)], monkeypatch, capsys)
    assert code == 0 and "first model" in out, out
    # fresh data: the champion is evaluated on it first, then the worse challenger is refused
    code, out = run_cli(["retrain", "fraud", "--config", config(0.60, 1)], monkeypatch, capsys)
    assert code == 3, out
    assert "evaluated champion v1 on the same data" in out and "[pass] same data" in out
    code, out = run_cli(["retrain", "fraud", "--config", config(0.80, 1)], monkeypatch, capsys)
    assert code == 0, out
    assert aliases() == {"champion": "3", "previous-champion": "1"}
    # a bad config is an error (2), naming the field
    bad = tmp_path / "bad.toml"
    bad.write_text('quality = "high"\n')
    code, out = run_cli(["retrain", "fraud", "--config", str(bad)], monkeypatch, capsys)
    assert code == 2 and "quality" in out


def test_retrain_without_a_job_is_an_error(mlflow_env, monkeypatch, capsys):
    use_jobs(monkeypatch, forecast=None)
    code, out = run_cli(["retrain", "forecast"], monkeypatch, capsys)
    assert code == 2
    assert "forecast training job is not available" in out


def test_reproduce_reruns_from_logged_config_and_checks_data(mlflow_env, monkeypatch, capsys):
    job = _fake_fraud_job()
    use_jobs(monkeypatch, fraud=job)
    original = job.train(FraudJobConfig(seed=5, quality=0.7, data_variant=1)).run_id
    code, out = run_cli(["reproduce", original], monkeypatch, capsys)
    assert code == 0, out
    assert "same data" in out
    reruns = mlflow.search_runs(
        experiment_names=["shopml-fraud"], filter_string=f"tags.`shopml.reproduces` = '{original}'"
    )
    assert len(reruns) == 1 and reruns["params.seed"].iloc[0] == "5"


# --- configuration (no server needed) ----------------------------------------------------------


def test_promotion_config_overrides_fields_and_names_bad_ones(tmp_path):
    from training.families import family_spec, load_specs

    path = tmp_path / "promotion.toml"
    path.write_text('[fraud]\nmargin = 0.02\nprimary = "auc_roc"\n')
    specs = load_specs(path)
    assert specs["fraud"].margin == 0.02 and specs["fraud"].primary == "auc_roc"
    assert [g.metric for g in specs["fraud"].guards] == ["calibration_error", "review_rate"]
    assert specs["forecast"].direction == "lower"  # untouched families keep their defaults
    path.write_text('[forecast]\ndirection = "down"\n')
    with pytest.raises(ConfigError, match=r"\[forecast\].*direction"):
        load_specs(path)
    path.write_text('[fraud]\nguards = [{ metric = "bias", direction = "target" }]\n')
    with pytest.raises(ConfigError, match="needs a `target`"):
        load_specs(path)
    with pytest.raises(ConfigError, match="unknown model family 'weather'"):
        family_spec("weather")
    # the shipped file parses and matches what the jobs log
    shipped = load_specs()
    assert shipped["recommender"].primary == "ndcg_at_20"
    assert shipped["fraud"].primary == "average_precision"
    assert shipped["forecast"].primary == "wape"


def test_logged_config_dumps_parse_back_even_with_unset_optional_fields():
    from pydantic import model_validator

    from shopml.config import ConfigModel
    from training.retrain import is_timing, logged_config

    class Source(ConfigModel):
        kind: str = "generated"
        path: str | None = None
        queries: dict[str, str] = {}

        @model_validator(mode="after")
        def _only_own_fields(self):
            if self.kind == "generated" and {"path", "queries"} & self.model_fields_set:
                raise ValueError("generated takes no path or queries")
            return self

    class Job(ConfigModel):
        source: Source = Source()
        seed: int = 0

    dumped = Job(seed=4).model_dump(mode="json")  # what start_run logs as config.json
    assert dumped["source"]["path"] is None
    assert logged_config(dumped, Job, "config.json") == Job(seed=4)
    assert is_timing("train_seconds") and is_timing("predict_p50_ms") and not is_timing("wape")


def test_every_family_has_a_job_whose_shipped_config_parses():
    from models.family import FAMILIES
    from training.jobs import JOBS
    from training.retrain import load_job_config

    assert set(JOBS) == set(FAMILIES), "a family without a job, or a job without a family"
    for name in FAMILIES:
        job, config = load_job_config(name)
        assert job.family == name and isinstance(config, job.config)
        assert callable(job.train) and callable(job.evaluate)


# --- issue 11: same test, enough evidence, honest dry runs, the challenger alias ---------------

WINDOW_14 = {"split": {"kind": "temporal", "test_days": 14.0}, "k": 20}
WINDOW_30 = {"split": {"kind": "temporal", "test_days": 30.0}, "k": 20}
REC = {"ndcg_at_20": 0.10, "coverage_at_20": 0.50, "test_customers": 230}


def test_gate_refuses_a_challenger_tested_on_another_window_and_names_it(
    mlflow_env, monkeypatch, capsys
):
    log_run("recommender", REC, protocol=WINDOW_14)
    better = {**REC, "ndcg_at_20": 0.13, "test_customers": 249}  # same data, 30-day test
    challenger = log_run("recommender", better, protocol=WINDOW_30)
    code, out = run_cli(["promote", "recommender", challenger], monkeypatch, capsys)
    assert code == 3, out
    assert "[pass] same data" in out and "[FAIL] same test" in out
    assert "split.test_days: challenger 30.0, champion 14.0" in out
    assert aliases("recommender") == {"champion": "1", "challenger": "2"}
    # the same challenger against a champion tested the same way is judged on its metrics
    same = log_run("recommender", better, protocol=WINDOW_14)
    code, out = run_cli(["promote", "recommender", same], monkeypatch, capsys)
    assert code == 0 and "[pass] same test" in out, out


def test_gate_refuses_a_test_with_too_few_frauds_naming_the_count(mlflow_env):
    from training.promotion import promote

    log_run("fraud", GOOD)
    lucky = log_run("fraud", {**GOOD, "average_precision": 0.80, "test_frauds": 8})
    decision = promote("fraud", lucky)
    assert not decision.promoted
    assert [c.name for c in decision.failed] == ["evidence test_frauds"]
    assert (
        "challenger 8" in decision.failed[0].detail and "at least 30" in decision.failed[0].detail
    )
    no_count = {k: v for k, v in GOOD.items() if k != "test_frauds"}
    unknown = log_run("fraud", {**no_count, "average_precision": 0.80})
    assert [c.name for c in promote("fraud", unknown).failed] == ["evidence test_frauds"]
    assert aliases()["champion"] == "1"


def test_retrain_reports_too_little_evidence_instead_of_promoting(
    mlflow_env, monkeypatch, capsys, tmp_path
):
    use_jobs(monkeypatch, fraud=_fake_fraud_job())
    first = tmp_path / "first.toml"
    first.write_text("quality = 0.70\n")
    assert run_cli(["retrain", "fraud", "--config", str(first)], monkeypatch, capsys)[0] == 0
    small = tmp_path / "small.toml"  # fresh data whose test period holds 8 frauds
    small.write_text("quality = 0.90\ndata_variant = 1\nfrauds = 8\n")
    code, out = run_cli(["retrain", "fraud", "--config", str(small)], monkeypatch, capsys)
    assert code == 3, out
    assert "NOT promoted: evidence test_frauds failed" in out
    assert "test_frauds challenger 8, champion 8; at least 30 needed" in out
    assert aliases() == {"champion": "1", "challenger": "2"}
    # a new test window: the champion is evaluated again, on the challenger's protocol
    window = tmp_path / "window.toml"
    window.write_text("quality = 0.90\ndata_variant = 1\ntest_days = 30\n")
    code, out = run_cli(["retrain", "fraud", "--config", str(window)], monkeypatch, capsys)
    assert code == 0, out
    assert "evaluated champion v1 on the same data and test" in out and "[pass] same test" in out


def test_dry_run_that_would_refuse_prints_the_failed_checks_and_exits_as_a_refusal(
    mlflow_env, monkeypatch, capsys
):
    log_run("fraud", GOOD)
    lucky = log_run("fraud", {**GOOD, "average_precision": 0.80, "test_frauds": 8})
    code, out = run_cli(["promote", "fraud", lucky, "--dry-run"], monkeypatch, capsys)
    assert code == 3, out
    assert "would NOT be promoted (dry run): evidence test_frauds failed" in out
    assert "[FAIL] evidence test_frauds" in out
    good = log_run("fraud", {**GOOD, "average_precision": 0.80})
    code, out = run_cli(["promote", "fraud", good, "--dry-run"], monkeypatch, capsys)
    assert code == 0, out
    assert "would be promoted to @champion over v1 (dry run" in out
    assert "NOT promoted" not in out
    assert aliases()["champion"] == "1"  # a dry run moves no champion


def test_the_gated_run_is_challenger_in_the_gate_and_runs_until_promoted(
    mlflow_env, monkeypatch, capsys
):
    from models.family import CHALLENGER
    from training.promotion import promote

    log_run("fraud", GOOD, name="old")
    worse = log_run("fraud", {**GOOD, "average_precision": 0.60}, name="worse")
    decision = promote("fraud", worse)
    assert f"(shopml-fraud v2 @{CHALLENGER}) NOT promoted" in decision.explain()
    assert aliases() == {"champion": "1", CHALLENGER: "2"}
    code, out = run_cli(["runs", "fraud", "--format", "csv"], monkeypatch, capsys)
    assert code == 0
    rows = {line.split(",")[1]: line for line in out.splitlines()[1:]}
    assert "v2 @challenger" in rows["worse"] and "v1 @champion" in rows["old"]
    better = log_run("fraud", {**GOOD, "average_precision": 0.80}, name="better")
    assert promote("fraud", better).promoted
    assert aliases() == {"champion": "3", "previous-champion": "1"}  # challenger cleared


def test_a_dry_run_registers_nothing_and_moves_no_alias(mlflow_env, monkeypatch, capsys):
    first = log_run("fraud", GOOD, register=False)
    code, out = run_cli(["promote", "fraud", first, "--dry-run"], monkeypatch, capsys)
    assert code == 0, out
    assert "would be the first model of fraud (dry run: nothing registered)" in out
    assert MlflowClient().search_model_versions("name='shopml-fraud'") == []
    log_run("fraud", GOOD)  # registered: the first version becomes champion
    better = log_run("fraud", {**GOOD, "average_precision": 0.80}, register=False)
    code, out = run_cli(["promote", "fraud", better, "--dry-run"], monkeypatch, capsys)
    assert code == 0, out
    assert "(not registered)" in out and "would be promoted" in out
    assert len(MlflowClient().search_model_versions("name='shopml-fraud'")) == 1
    assert aliases() == {"champion": "1"}
