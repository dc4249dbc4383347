"""Demand forecasting commands: `shopml train forecast` and `shopml bench forecast-online-retail`."""

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
    # on use: training (mlflow): 1.0 s
    from cli.headline import echo_training
    from shopml.config import load_config
    from training.forecast_job import ForecastJobConfig, train

    result = train(load_config(config, ForecastJobConfig))
    echo_training("forecast", result)
    typer.echo(f"forecast {result.artifacts.get('forecast')}")


def bench_forecast_online_retail_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
) -> None:
    """Online Retail demand benchmark: 500 products, h=28, 3 folds, every model + mlforecast."""
    # on use: models and features: 0.9 s
    from experiments.forecast_online_retail import run

    result = run(out)
    typer.echo(json.dumps(result, indent=2))


def bench_forecast_generated_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
) -> None:
    """Generated medium store with planned promotions and prices: h=28, 3 folds, shopml with and
    without known-future inputs beside mlforecast, AutoETS and the baselines."""
    # on use: generator, models and peers: ~1 s
    from experiments.forecast_generated import run

    result = run(out)
    typer.echo(json.dumps(result, indent=2))


def register(train_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the forecast commands: `train forecast`, `bench forecast-online-retail`,
    `bench forecast-generated`."""
    train_app.command("forecast")(train_forecast_cmd)
    bench_app.command("forecast-online-retail")(bench_forecast_online_retail_cmd)
    bench_app.command("forecast-generated")(bench_forecast_generated_cmd)
