"""What a command prints after a training run: the metrics the family's promotion spec declares."""

from __future__ import annotations

from collections.abc import Mapping

import typer

from training.families import family_spec


def headline(family: str, metrics: Mapping[str, float]) -> str:
    """The primary, guard and key metrics of `family` (promotion.toml overrides applied) as
    `name=value`, leaving out those the run did not log."""
    names = family_spec(family).shown_metrics()
    return "  ".join(f"{name}={metrics[name]:.4g}" for name in names if name in metrics)


def echo_training(family: str, result) -> None:
    """Print a training job's result: its run, headline metrics and registered model version."""
    typer.echo(f"{family} run {result.run_id}: {headline(family, result.metrics)}")
    typer.echo(f"model version {result.model_version}")
