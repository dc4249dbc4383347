"""Recommendation commands: `shopml train recommender`, `shopml bench recs-movielens`
and `shopml bench recs-online-retail`."""

from __future__ import annotations

from pathlib import Path

import typer

from shopml.settings import CONFIG_DIR

DEFAULT_CONFIG = CONFIG_DIR / "recommender.toml"
QUICK_HELP = "First candidate of each model only."


def train_recommender_cmd(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", help="Recommender job config (TOML)."),
    search: int = typer.Option(
        0, "--search", min=0, help="Random-search trials (nested runs, scored on validation)."
    ),
) -> None:
    """Fit, evaluate, log and register the recommender described by the config."""
    # on use: training (mlflow): 1.0 s
    from cli.headline import echo_training
    from shopml.config import load_config
    from training.recommender_job import RecommenderJobConfig, train

    cfg = load_config(config, RecommenderJobConfig)
    if search:
        cfg.search.trials = search
    echo_training("recommender", train(cfg))


def bench_recs_movielens_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
) -> None:
    """MovieLens-100k, microsoft/recommenders protocol, every model beside published numbers."""
    # on use: models and features: 0.45 s
    from experiments.recs_movielens import run

    run(out, quick=quick)


def bench_recs_online_retail_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
) -> None:
    """UCI Online Retail, temporal split at 2011-11-09, k=20, every model."""
    # on use: models and features: 0.45 s
    from experiments.recs_online_retail import run

    run(out, quick=quick)


def register(train_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the recommender commands: `train recommender`, `bench recs-movielens/-online-retail`."""
    train_app.command("recommender")(train_recommender_cmd)
    bench_app.command("recs-movielens")(bench_recs_movielens_cmd)
    bench_app.command("recs-online-retail")(bench_recs_online_retail_cmd)
