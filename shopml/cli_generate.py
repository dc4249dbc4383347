"""`shopml generate`: write the built-in simulated store as Parquet, printing sizes and time."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from shopml.errors import ShopmlError


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def generate_cmd(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the store into (<table>.parquet)."
    ),
    scale: str = typer.Option("tiny", help="tiny | small | medium | large."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same tables."),
    days: int | None = typer.Option(None, help="Simulated days (default: the scale's)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-stage progress lines."),
) -> None:
    """Generate the built-in simulated store (customers, catalog, sessions, orders, payments)."""
    from features.generator import GeneratorConfig, generate
    from shopml.config import parse_config

    if out.exists() and not force:
        raise ShopmlError(f"{out} exists; pass --force to replace it")
    data = {"scale": scale, "seed": seed} | ({"days": days} if days is not None else {})
    cfg = parse_config(data, GeneratorConfig, source="shopml generate")
    t0 = time.perf_counter()
    store = generate(cfg, progress=not quiet)
    t_gen = time.perf_counter() - t0
    store.write(out, overwrite=force)  # atomic: a failed write leaves the old folder in place
    t_all = time.perf_counter() - t0
    for table, rows in store.row_counts().items():
        typer.echo(f"{table:<13} {rows:>12,} rows")
    frauds = int(store.payments["is_fraud"].sum())
    typer.echo(f"fraud         {frauds:>12,} payments ({frauds / max(len(store.payments), 1):.2%})")
    typer.echo(
        f"wrote {out} ({_folder_mb(out):.1f} MB) in {t_all:.1f}s "
        f"(generate {t_gen:.1f}s, validate + write {t_all - t_gen:.1f}s)"
    )
