"""The README's main job: every step shopml offers, end to end on the built-in generated store.

Each step prints what it did and how long it took, so a newcomer sees the whole product work
once; it grows with each capability.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import typer


@contextmanager
def step(title: str):
    typer.secho(f"==> {title}", bold=True)
    started = time.perf_counter()
    yield
    typer.echo(f"    done in {time.perf_counter() - started:.1f} s")


def run_main_job(scale: str = "small", seed: int = 0) -> None:
    from features.sources import load_source

    from shopml.settings import load_settings
    from training.profile_job import log_profile

    settings = load_settings().ensure_dirs()
    typer.echo(f"shopml home: {settings.home}   tracking: {settings.tracking_uri}")
    source = source_config({"kind": "generated", "scale": scale, "seed": seed})
    with step(f"Generate and validate the default store (scale={scale}, seed={seed})"):
        store = load_source(source)
        for table, rows in store.row_counts().items():
            typer.echo(f"    {table:<12} {rows:>12,} rows")
    with step("Log the data profile to MLflow"):
        run_id, _ = log_profile(store, source, settings)
        typer.echo(f"    run {run_id} in experiment shopml-data")
    _next_steps()


def source_config(data: dict):
    """Validate a mapping into a `SourceConfig` (a class or a tagged union of classes)."""
    from features.sources import SourceConfig
    from pydantic import TypeAdapter

    return TypeAdapter(SourceConfig).validate_python(data)


def _next_steps() -> None:
    typer.echo("\nNext:")
    typer.echo("  shopml ui                      # browse runs in the MLflow UI on 127.0.0.1:5000")
    typer.echo("  shopml --help                  # every command")
