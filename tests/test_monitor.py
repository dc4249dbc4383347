"""`shopml monitor` and `shopml retrain --when`: the champion's reference against a live snapshot
or a batch, exit codes, the report and its MLflow run, clear errors, the live-performance hook."""

from __future__ import annotations

import json
import types

import mlflow
import numpy as np
import pytest
from experiment_runs import log_run, run_cli
from mlflow.tracking import MlflowClient

from features.reference import Profile, numeric_profile
from training.reference_profiles import REFERENCE_ARTIFACT

NAMES = [f"f{j}" for j in range(5)]


def fraud_reference(rng) -> Profile:
    X = rng.normal(size=(20_000, 5))
    cols = {n: numeric_profile(n, X[:, j]) for j, n in enumerate(NAMES)}
    return Profile({**cols, "score": numeric_profile("score", rng.random(20_000))})


def champion_with(family: str, reference: Profile | None) -> str:
    """A registered @champion of `family` whose training run carries `reference`."""
    run_id = log_run(family, {"average_precision": 0.5})
    if reference is not None:
        MlflowClient().log_dict(run_id, reference.to_dict(), REFERENCE_ARTIFACT)
    return run_id


def snapshot_file(tmp_path, reference: Profile, shift: float, rng, name: str):
    """A `/profile` answer of a FraudLive fed 3,000 payments (feature f1 shifted by `shift`)."""
    from serving import live_profile

    live = live_profile.FraudLive(reference, NAMES, "shopml-fraud/1")
    X = rng.normal(size=(3_000, 5))
    X[:, 1] += shift
    for i in range(3_000):
        live.observe(X[i], rng.random())
    path = tmp_path / name
    path.write_text(json.dumps(live_profile.snapshot_answer(live)))
    return path


@pytest.fixture
def quiet_gauges(monkeypatch):
    from serving import live_profile

    monkeypatch.setattr(live_profile.metrics, "live_psi", lambda *a: None)


def test_monitor_exits_4_on_drift_writes_the_report_and_logs_a_run(
    tmp_shopml_home, tmp_path, monkeypatch, capsys, quiet_gauges
):
    from training import live_performance
    from training.live_performance import PerformanceTable

    monkeypatch.setitem(live_performance.PROVIDERS, "fraud", [])
    rng = np.random.default_rng(0)
    reference = fraud_reference(rng)
    champion_with("fraud", reference)
    calm = snapshot_file(tmp_path, reference, 0.0, rng, "calm.json")
    code, out = run_cli(
        ["monitor", "fraud", "--snapshot", str(calm), "--out", str(tmp_path / "calm.html")],
        monkeypatch,
        capsys,
    )
    assert code == 0, out
    assert "DRIFT" not in out and "3000 observations of shopml-fraud/1" in out
    shifted = snapshot_file(tmp_path, reference, 1.0, rng, "shifted.json")
    report = tmp_path / "shifted.html"
    code, out = run_cli(
        ["monitor", "fraud", "--snapshot", str(shifted), "--out", str(report)], monkeypatch, capsys
    )
    assert code == 4, out
    assert "DRIFT" in out and f"report written to {report}" in out
    html = report.read_text()
    assert "DRIFT: 1 column(s) crossed the thresholds: f1" in html
    exp = MlflowClient().get_experiment_by_name("shopml-monitoring")
    runs = MlflowClient().search_runs([exp.experiment_id], order_by=["attributes.start_time"])
    assert [r.data.tags["monitor.drifted"] for r in runs] == ["", "f1"]
    assert runs[1].data.metrics["psi.f1"] > 0.2 and runs[1].data.metrics["drifted_columns"] == 1
    logged = MlflowClient().list_artifacts(runs[1].info.run_id, "monitor")
    assert "monitor/shifted.html" in [f.path for f in logged]

    # the live-performance hook: a provider's table shows under the drift table, its alarm
    # makes the command exit 4 even without drift
    seen = []

    def provider(ctx):
        seen.append((ctx.family, ctx.champion_version, ctx.offline_metrics["average_precision"]))
        table = PerformanceTable("live CTR", ["week", "ctr"], [["W1", 0.25]], alarms=["CTR fell"])
        return [table]

    monkeypatch.setitem(live_performance.PROVIDERS, "fraud", [provider])
    args = ["monitor", "fraud", "--snapshot", str(calm), "--no-log", "--out", str(report)]
    code, out = run_cli(args, monkeypatch, capsys)
    assert seen == [("fraud", "1", 0.5)]
    assert code == 4 and "live CTR" in out and "W1" in out and "alarm: CTR fell" in out


def test_monitor_errors_name_what_is_missing_or_wrong(
    tmp_shopml_home, tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"profiles": {}}))
    code, out = run_cli(["monitor", "fraud", "--snapshot", str(empty)], monkeypatch, capsys)
    assert code == 2 and "shopml-fraud has no version @champion" in out
    champion_with("fraud", None)
    code, out = run_cli(["monitor", "fraud", "--snapshot", str(empty)], monkeypatch, capsys)
    assert code == 2 and "no reference profile" in out and "shopml retrain fraud" in out
    assert "Traceback" not in out
    champion_with("fraud", fraud_reference(np.random.default_rng(1)))
    MlflowClient().set_registered_model_alias("shopml-fraud", "champion", "2")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"profiles": {"forecast": {"profile": {"columns": {}}}}}))
    code, out = run_cli(["monitor", "fraud", "--snapshot", str(empty)], monkeypatch, capsys)
    assert code == 2 and "no live profile of fraud (it holds ['forecast'])" in out
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, out = run_cli(["monitor", "fraud", "--snapshot", str(broken)], monkeypatch, capsys)
    assert code == 2 and "not a readable JSON file" in out
    code, out = run_cli(
        ["monitor", "fraud", "--live", "http://127.0.0.1:9", "--no-log"], monkeypatch, capsys
    )
    assert code == 2 and "cannot reach the service" in out
    code, out = run_cli(
        ["monitor", "fraud", "--snapshot", str(empty), "--data", str(tmp_path)],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "give one of --live, --snapshot and --data" in out


def test_retrain_when_schedule_or_drift_says_so(tmp_shopml_home, tmp_path, monkeypatch, capsys):
    from training.monitor import MonitorConfig, retrain_due

    champion_with("fraud", None)
    code, out = run_cli(["retrain", "fraud", "--when", "schedule"], monkeypatch, capsys)
    assert code == 0 and "--when schedule: not due: champion v1 is 0.00 days old" in out
    later = retrain_due("fraud", "schedule", MonitorConfig(), now_ms=int(9e15))
    assert later.due and "older than 7 days" in later.reason
    code, out = run_cli(["retrain", "fraud", "--when", "sometimes"], monkeypatch, capsys)
    assert code == 2 and "--when must be drift or schedule" in out

    # drift: the monitor on the job config's source (the tiny generated store)
    from features.sources import SourceConfig, load_source
    from training import live_performance
    from training.reference_profiles import forecast_reference

    monkeypatch.setitem(live_performance.PROVIDERS, "forecast", [])
    store = load_source(SourceConfig(kind="generated", scale="tiny", seed=0))
    lines = store.order_lines
    config = tmp_path / "forecast.toml"
    config.write_text('[source]\nkind = "generated"\nscale = "tiny"\nseed = 0\n')
    same = forecast_reference(lines, store.products, promotions=store.promotions)
    champion_with("forecast", same)
    calm = retrain_due("forecast", "drift", MonitorConfig(), job_config=config)
    assert not calm.due and "no drift" in calm.reason
    busier = lines.assign(quantity=lines["quantity"] * 5)  # the champion saw 5x the demand
    champion_with("forecast", forecast_reference(busier, store.products))
    client = MlflowClient()
    client.set_registered_model_alias("shopml-forecast", "champion", "2")
    due = retrain_due("forecast", "drift", MonitorConfig(), job_config=config)
    assert due.due and "demand_level" in due.reason


def test_a_job_stores_the_reference_in_the_native_folder_and_serving_finds_it(
    tmp_shopml_home, tmp_path, quiet_gauges
):
    from serving.live_profile import fraud_live
    from training.reference_profiles import store_reference
    from training.tracking import start_run

    reference = fraud_reference(np.random.default_rng(3))
    native = tmp_path / "bento-model" / "native"
    native.mkdir(parents=True)
    with start_run("fraud") as run:
        store_reference(native, reference)
    assert (native / "reference_profile.json").is_file()
    logged = MlflowClient().download_artifacts(run.info.run_id, REFERENCE_ARTIFACT, str(tmp_path))
    with open(logged) as fh:
        assert Profile.from_dict(json.load(fh)).columns.keys() == reference.columns.keys()
    engine = types.SimpleNamespace(feature_set=types.SimpleNamespace(names=tuple(NAMES)))
    live = fraud_live(native.parent, engine, "shopml-fraud/1")
    assert live is not None and live.names == [*NAMES, "score"]
    assert fraud_live(tmp_path / "no-profile", engine, "v") is None
    assert mlflow.active_run() is None
