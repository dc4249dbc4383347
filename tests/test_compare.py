"""`shopml runs` and `shopml compare` against a real MLflow server."""

from __future__ import annotations

import base64
import csv
import io
import shutil
import subprocess

import mlflow
import pytest
from experiment_runs import log_run, run_cli, tiny_store
from mlflow.tracking import MlflowClient

from shopml.errors import ConfigError

pytest_plugins = ["mlflow_server"]  # the real MLflow server fixtures

PR_A = ([0.0, 0.5, 1.0], [1.0, 0.8, 0.1])
PR_B = ([0.0, 0.5, 1.0], [1.0, 0.9, 0.2])
CAL = ([0.1, 0.5, 0.9], [0.12, 0.45, 0.88])


def fraud_runs(data_b: int = 0) -> tuple[str, str]:
    a = log_run(
        "fraud",
        {"average_precision": 0.70, "calibration_error": 0.02, "auc_roc": 0.90, "test_frauds": 40},
        name="baseline",
        config={"seed": 0, "model": {"num_leaves": 31}},
        curves={"pr_curve": PR_A, "calibration": CAL},
    )
    b = log_run(
        "fraud",
        {"average_precision": 0.75, "calibration_error": 0.03, "auc_roc": 0.91, "test_frauds": 40},
        name="more-leaves",
        data=data_b,
        config={"seed": 0, "model": {"num_leaves": 63}},
        curves={"pr_curve": PR_B, "calibration": CAL},
    )
    return a, b


def test_compare_writes_a_self_contained_report_listing_both_runs_and_logs_it(
    mlflow_env, monkeypatch, capsys, tmp_path
):
    a, b = fraud_runs()
    out = tmp_path / "report.html"
    code, text = run_cli(["compare", a, b[:8], "--out", str(out)], monkeypatch, capsys)
    assert code == 0, text
    assert "same data, same test" in text and "+0.05" in text  # average_precision delta
    html = out.read_text()
    assert a in html and b in html
    assert "Same data" in html and tiny_store(0).fingerprint_id() in html
    assert "num_leaves" in html  # the differing parameter
    # plots are embedded PNGs (no external files): PR curve and calibration overlays
    images = html.count("src='data:image/png;base64,")
    assert images == 2
    first = html.split("base64,")[1].split("'")[0]
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html
    # logged to MLflow, in the comparisons experiment, with the report as an artifact
    logged = mlflow.search_runs(experiment_names=["shopml-comparisons"], output_format="list")
    mine = [r for r in logged if r.data.tags.get("compare.runs") == f"{a},{b}"]
    assert len(mine) == 1 and mine[0].data.tags["compare.same_data"] == "true"
    artifacts = [f.path for f in MlflowClient().list_artifacts(mine[0].info.run_id)]
    assert "report.html" in artifacts


def test_compare_flags_different_data_and_strict_refuses(mlflow_env, monkeypatch, capsys, tmp_path):
    from training.compare import compare_runs
    from training.report_html import render_report

    a, b = fraud_runs(data_b=1)
    comparison = compare_runs([a, b])
    assert not comparison.same_data
    assert "Different data" in render_report(comparison)
    code, text = run_cli(
        ["compare", a, b, "--strict", "--no-log", "--out", str(tmp_path / "r.html")],
        monkeypatch,
        capsys,
    )
    assert code == 3 and "DIFFERENT data" in text


def test_compare_without_curves_falls_back_to_metrics_and_lower_is_better_sorts_up(
    mlflow_env, tmp_path
):
    from training.compare import compare_runs
    from training.report_html import write_report
    from training.runs import list_runs

    a = log_run("forecast", {"wape": 0.50, "bias": 0.05}, register=False)
    b = log_run("forecast", {"wape": 0.30, "bias": 0.01}, register=False)
    log_run("forecast", {"wape": 0.40, "bias": 0.0}, register=False)
    comparison = compare_runs([a, b])
    assert comparison.metric_names()[:2] == ["wape", "bias"]  # primary first, then guards
    assert comparison.better(comparison.runs[1], "wape") is True  # lower is better
    assert comparison.better(comparison.runs[1], "bias") is True  # closer to 0 is better
    html = write_report(comparison, tmp_path / "f.html").read_text()
    assert "comparing metrics only" in html and html.count("data:image/png;base64,") == 1
    assert [r.metrics["wape"] for r in list_runs("forecast", sort="wape")] == [0.3, 0.4, 0.5]
    assert [r.metrics["wape"] for r in list_runs("forecast", sort="wape DESC")] == [0.5, 0.4, 0.3]


def test_compare_refuses_runs_of_different_families(mlflow_env):
    from training.compare import compare_runs

    a = log_run("fraud", {"average_precision": 0.7}, register=False)
    b = log_run("recommender", {"ndcg_at_20": 0.1}, register=False)
    with pytest.raises(ConfigError, match="one model family"):
        compare_runs([a, b])
    with pytest.raises(ConfigError, match="at least two runs"):
        compare_runs([a])


def test_runs_lists_sorts_filters_and_formats(mlflow_env, monkeypatch, capsys):
    ids = {
        ap: log_run("fraud", {"average_precision": ap, "calibration_error": 0.02}, name=f"ap{ap}")
        for ap in (0.70, 0.80, 0.75)
    }
    code, text = run_cli(
        ["runs", "fraud", "--sort", "average_precision", "--format", "csv"], monkeypatch, capsys
    )
    assert code == 0, text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in rows] == ["ap0.8", "ap0.75", "ap0.7"]  # higher is better: descending
    assert (
        rows[0]["run"] == ids[0.80][:8] and rows[0]["data"] == tiny_store(0).fingerprint_id()[:12]
    )
    assert rows[2]["model"] == "v1 @champion"  # the first run registered became champion
    assert "variant" in rows[0]  # the parameter that differs between runs gets a column

    code, text = run_cli(
        ["runs", "fraud", "--filter", "metrics.average_precision > 0.72", "--format", "markdown"],
        monkeypatch,
        capsys,
    )
    assert code == 0, text
    assert text.startswith("| run | name |") and "ap0.8" in text and "ap0.7 " not in text
    assert len(text.strip().splitlines()) == 2 + 2

    code, text = run_cli(
        ["runs", "fraud", "--sort", "-average_precision", "--limit", "1"], monkeypatch, capsys
    )
    assert (
        code == 0 and "ap0.8" in text and "ap0.75" not in text
    )  # rich table, newest... best first

    code, text = run_cli(
        ["runs", "fraud", "--filter", "metrics.average_precision >>"], monkeypatch, capsys
    )
    assert code == 2 and "--filter" in text


# --- issue 11: same test, the verdict, small tests, readable calibration, @challenger ----------

REC = {"ndcg_at_20": 0.10, "coverage_at_20": 0.50, "test_customers": 230}


def windows(days: float) -> dict:
    return {"split": {"kind": "temporal", "test_days": days}, "k": 20}


def test_compare_says_same_test_only_when_the_protocols_match(
    mlflow_env, monkeypatch, capsys, tmp_path
):
    a = log_run("recommender", REC, protocol=windows(14.0))
    b = log_run("recommender", {**REC, "ndcg_at_20": 0.13}, protocol=windows(30.0))
    args = ["--no-log", "--out", str(tmp_path / "r.html")]
    code, text = run_cli(["compare", a, b, *args], monkeypatch, capsys)
    assert code == 0, text
    assert "same data, same test" not in text
    assert "DIFFERENT test" in text and f"split.test_days: {b[:8]} 30.0, {a[:8]} 14.0" in text
    assert "REFUSE" in text and "same test" in text
    html = (tmp_path / "r.html").read_text()
    assert "Same data, different test" in html and "split.test_days" in html
    code, text = run_cli(["compare", a, b, "--strict", *args], monkeypatch, capsys)
    assert code == 3
    c = log_run("recommender", {**REC, "ndcg_at_20": 0.13}, protocol=windows(14.0))
    code, text = run_cli(["compare", a, c, "--strict", *args], monkeypatch, capsys)
    assert code == 0 and "same data, same test" in text, text
    assert f"PROMOTE {c[:8]} over {a[:8]}" in text


def small_test_comparison():
    """Champion (40 frauds) against a better-looking challenger on a test with 8 frauds,
    registered as @challenger by the gate (which refuses it)."""
    from training.compare import compare_runs
    from training.promotion import promote

    a, _ = fraud_runs()
    lucky = log_run(
        "fraud",
        {"average_precision": 0.80, "calibration_error": 0.02, "test_frauds": 8},
        name="lucky",
        curves={"calibration": ([0.001, 0.004, 0.02, 0.3], [0.0, 0.005, 0.03, 0.25])},
    )
    assert not promote("fraud", lucky).promoted
    return compare_runs([a, lucky]), lucky


def test_report_states_the_verdict_warns_on_small_tests_and_shows_the_challenger(mlflow_env):
    from training.report_html import render_report

    comparison, lucky = small_test_comparison()
    html = render_report(comparison)
    assert f"Verdict: REFUSE</b> {lucky[:8]} over" in html
    assert "evidence test_frauds" in html and "at least 30" in html
    assert "Small test" in html and "test_frauds = 8, fewer than the 30 needed" in html
    assert "v3 @challenger" in html and "v1 @champion" in html
    code_runs = [r for r in comparison.runs if "challenger" in r.aliases]
    assert [r.run_id for r in code_runs] == [lucky]


def test_calibration_plot_uses_log_axes(mlflow_env, monkeypatch):
    import training.report_html as report

    comparison, _ = small_test_comparison()
    figures = []
    monkeypatch.setattr(report, "_png", lambda fig: figures.append(fig) or "")
    report._curve_png(comparison, "calibration")
    ax = figures[0].axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "log" in ax.get_xlabel()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_verdict_renders_in_a_real_browser(mlflow_env, tmp_path):
    from training.report_html import write_report

    comparison, lucky = small_test_comparison()
    path = write_report(comparison, tmp_path / "report.html")
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert f'id="verdict-{lucky[:8]}"' in dom
    assert "Verdict: REFUSE" in dom and "evidence test_frauds" in dom and "Small test" in dom
