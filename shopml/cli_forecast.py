"""CLI commands of demand forecasting: `shopml train forecast` and `shopml bench forecast-online-retail`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shopml.settings import CONFIG_DIR

DEFAULT_CONFIG = CONFIG_DIR / "forecast.toml"


def train_forecast_cmd(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", help="Forecast job config (TOML)."),
) -> None:
    """Backtest, refit and register the demand forecaster; write the next-H-days forecast."""
    from shopml.config import load_config
    from training.forecast_job import ForecastJobConfig, train

    cfg = load_config(config, ForecastJobConfig)
    result = train(cfg)
    m = result.metrics
    typer.echo(
        f"forecast run {result.run_id}: backtest WAPE {m.get('wape', float('nan')):.3f}, "
        f"MASE {m.get('mase', float('nan')):.3f}, bias {m.get('bias', float('nan')):+.3f}, "
        f"P10-P90 coverage {m.get('coverage_p10_p90', float('nan')):.3f}"
    )
    typer.echo(f"model version {result.model_version}; forecast {result.artifacts.get('forecast')}")


def bench_forecast_online_retail_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
) -> None:
    """Online Retail demand benchmark: 500 products, h=28, 3 folds, every model + mlforecast."""
    from experiments.forecast_online_retail import run

    result = run(out)
    typer.echo(json.dumps(result, indent=2))


def register(train_app: typer.Typer, bench_app: typer.Typer) -> None:
    train_app.command("forecast")(train_forecast_cmd)
    bench_app.command("forecast-online-retail")(bench_forecast_online_retail_cmd)
