"""The README's main job: every step shopml offers, end to end on the built-in generated store.

Each step prints what it did and how long it took, so a newcomer sees the whole product work
once; it grows with each capability.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import typer

from cli.headline import headline
from features.sources import SourceConfig, generated_dir, load_source
from models.family import FAMILY_NAMES
from registry.store import champion_version
from serving.demo import build_serve_and_call
from shopml.config import parse_config
from shopml.settings import Settings, load_settings
from training.profile_job import log_profile
from training.retrain import load_job_config

# a tiny store spans 90 days: one 14-day backtest fold instead of three of 28
SCALE_OVERRIDES = {"tiny": {"forecast": {"horizon": 14, "n_folds": 1}}}


@contextmanager
def step(title: str):
    """Print a step's title, run it, then print how long it took."""
    typer.secho(f"==> {title}", bold=True)
    started = time.perf_counter()
    yield
    typer.echo(f"    done in {time.perf_counter() - started:.1f} s")


def run_main_job(scale: str = "small", seed: int = 0, serve: bool = True) -> None:
    """Generate and profile the default store, train every family on it, then build and serve."""
    settings = load_settings().ensure_dirs()
    typer.echo(f"shopml home: {settings.home}   tracking: {settings.tracking_uri}")
    source = parse_config(
        {"kind": "generated", "scale": scale, "seed": seed}, SourceConfig, source="shopml run"
    )
    with step(f"Generate and validate the default store (scale={scale}, seed={seed})"):
        store = load_source(source)
        for table, rows in store.row_counts().items():
            typer.echo(f"    {table:<12} {rows:>12,} rows")
    with step("Log the data profile to MLflow"):
        run_id, _ = log_profile(store, source, settings)
        typer.echo(f"    run {run_id} in experiment shopml-data")
    for family in FAMILY_NAMES:
        with step(f"Train {family} (experiments/configs/{family}.toml on this store), register it"):
            result = train_family(family, source, settings)
            typer.echo(f"    run {result.run_id}  {headline(family, result.metrics)}")
            typer.echo(
                f"    registered shopml-{family} version {result.model_version} "
                f"(champion: version {champion_version(family)})"
            )
    if serve:
        history = generated_dir(source.scale, source.seed, settings)
        build_serve_and_call(store, settings, step, history=history if history.is_dir() else None)
    _next_steps()


def train_family(family: str, source: SourceConfig, settings: Settings):
    """Train one family with its default config, reading the main job's store."""
    module, config = load_job_config(family)
    config.source = source
    for key, value in SCALE_OVERRIDES.get(source.scale, {}).get(family, {}).items():
        setattr(config, key, value)
    return module.train(config, settings)


def _next_steps() -> None:
    typer.echo("\nNext:")
    typer.echo("  shopml ui                      # browse runs in the MLflow UI on 127.0.0.1:5000")
    typer.echo("  shopml runs fraud              # list runs with their key metrics")
    typer.echo(
        "  shopml retrain fraud           # retrain, compare with the champion, promote if better"
    )
    typer.echo("  shopml serve all               # serve the champions on 127.0.0.1")
    typer.echo("  shopml --help                  # every command")
