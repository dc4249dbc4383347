"""Store commands: `shopml generate`, `validate`, `profile`, `bench generator`, `bench loaders`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal, get_args

import typer

from shopml.errors import ConfigError, ShopmlError

# Written out (importing features costs 0.3 s on every --help); tests/test_cli.py checks them
# against features.generator.Scale and features.sources.Kind.
Scale = Literal["tiny", "small", "medium", "large", "xlarge"]
SCALES = get_args(Scale)
# every source kind but sql, whose URL and queries only a config file can give
ProfileSource = Literal[
    "generated", "store", "files", "online_retail", "movielens", "fraud_handbook"
]


def generate_cmd(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write the store into (<table>.parquet)."
    ),
    scale: Scale = typer.Option("tiny", help="Size preset of the store."),
    seed: int = typer.Option(0, min=0, help="Seed: the same seed gives the same tables."),
    days: int | None = typer.Option(
        None, min=14, max=3650, help="Simulated days (default: the scale's)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    quiet: bool = typer.Option(
        False, "--quiet", help="No progress bar (none is drawn off a terminal either)."
    ),
) -> None:
    """Generate the built-in simulated store (customers, catalog, sessions, orders, payments)."""
    # on use: pandas: 0.3 s; pydantic: 0.06 s
    from features.generator import GeneratorConfig, generate
    from features.store import folder_mb
    from shopml.config import parse_config

    if out.exists() and not force:
        raise ShopmlError(f"{out} exists; pass --force to replace it")
    _check_writable(out)  # before minutes of generation, not after
    data = {"scale": scale, "seed": seed} | ({"days": days} if days is not None else {})
    cfg = parse_config(data, GeneratorConfig, source="shopml generate")
    t0 = time.perf_counter()
    if cfg.spec().chunks > 1:
        _generate_partitioned(cfg, out, force, quiet)
        return
    store = generate(cfg, progress=not quiet)
    t_gen = time.perf_counter() - t0
    try:  # atomic: a failed write leaves the old folder in place
        store.write(out, overwrite=force)
    except OSError as err:
        raise ShopmlError(f"--out {out}: cannot write the store ({err.strerror or err})") from None
    t_all = time.perf_counter() - t0
    for table, rows in store.row_counts().items():
        typer.echo(f"{table:<13} {rows:>12,} rows")
    frauds = int(store.payments["is_fraud"].sum())
    typer.echo(f"fraud         {frauds:>12,} payments ({frauds / max(len(store.payments), 1):.2%})")
    typer.echo(
        f"wrote {out} ({folder_mb(out):.1f} MB) in {t_all:.1f}s "
        f"(generate {t_gen:.1f}s, validate + write {t_all - t_gen:.1f}s)"
    )


def _generate_partitioned(cfg, out: Path, force: bool, quiet: bool) -> None:
    """A scale too big for memory: simulated a customer chunk at a time, written as
    `<table>/part-*.parquet` (validated per partition)."""
    from features.generator import generate_partitioned
    from features.store import folder_mb

    t0 = time.perf_counter()
    try:
        counts = generate_partitioned(cfg, out, progress=not quiet, overwrite=force)
    except OSError as err:
        raise ShopmlError(f"--out {out}: cannot write the store ({err.strerror or err})") from None
    for table, rows in counts.items():
        typer.echo(f"{table:<13} {rows:>12,} rows")
    typer.echo(
        f"wrote {out} ({folder_mb(out):.1f} MB, {cfg.spec().chunks} customer chunks, "
        f"partitioned Parquet) in {time.perf_counter() - t0:.1f}s"
    )


def _check_writable(out: Path) -> None:
    """A `ShopmlError` naming `--out` when its nearest existing parent is no writable folder."""
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ShopmlError(f"--out {out}: {parent} is not a writable folder")


def validate_cmd(
    path: Path = typer.Argument(
        ..., help="Store folder of <table>.parquet, .csv or .csv.gz files, or one such file."
    ),
) -> None:
    """Check a store folder (or one table file) against the data contract and print its tables.

    Every broken table is reported, each with its file, column and rows.
    """
    if path.is_dir() and any(p.is_dir() and any(p.glob("part-*.parquet")) for p in path.iterdir()):
        _validate_partitioned(path)
        return
    # on use: pandas: 0.3 s
    from features.loaders import files

    store = files.load(path)
    for table, rows in store.row_counts().items():
        typer.echo(f"{table:<12} {rows:>12,} rows  ok")
    typer.echo(f"fingerprint {store.fingerprint_id()}")


def _validate_partitioned(path: Path) -> None:
    """A partitioned store (`<table>/part-*.parquet`): every partition validated on its own,
    never a whole table in memory; the first bad partition is named."""
    from features.frames import read_store, validate_store

    counts = validate_store(path)
    for table, rows in counts.items():
        typer.echo(f"{table:<12} {rows:>12,} rows  ok")
    parts = {t: f.npartitions for t, f in read_store(path).tables.items()}
    typer.echo(f"{sum(parts.values())} partitions checked one by one")


def profile_cmd(
    source: ProfileSource = typer.Option("generated", help="Where the data comes from."),
    path: Path | None = typer.Option(None, help="Folder or file for store/files/real sources."),
    scale: Scale = typer.Option("small", help="Scale, for the generated source."),
    seed: int = typer.Option(0, min=0, help="Seed, for the generated source."),
) -> None:
    """Load a data source, validate it and log its data profile as an MLflow run."""
    # on use: pandas: 0.3 s; mlflow: 1.0 s
    from features.sources import SourceConfig, load_source
    from shopml.config import parse_config
    from training.profile_job import log_profile

    options: dict[str, object] = {"kind": source}
    if source == "generated":
        options.update(scale=scale, seed=seed)
    elif path is not None:
        options["path"] = str(path)
    source_cfg = parse_config(options, SourceConfig, source="--source")
    store = load_source(source_cfg)
    run_id, profile = log_profile(store, source_cfg)
    for table, info in profile["tables"].items():
        typer.echo(f"{table:<12} {info['rows']:>12,} rows")
    typer.echo(f"profile logged to MLflow run {run_id}")


def bench_generator_cmd(
    out: Path | None = typer.Option(None, help="Write the numbers as JSON here."),
    scales: str = typer.Option(
        ",".join(SCALES), help=f"Comma-separated scales among {', '.join(SCALES)}."
    ),
) -> None:
    """Time and size of the built-in store generator at each scale."""
    chosen = tuple(s.strip() for s in scales.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCALES]
    if unknown or not chosen:
        raise ConfigError(f"--scales: unknown scale(s) {unknown}; choose among {list(SCALES)}")
    # on use: pandas: 0.3 s
    from experiments.bench_generator import run

    run(out, scales=chosen)


def bench_loaders_cmd(
    out: Path | None = typer.Option(None, help="Write the numbers as JSON here."),
    repeat: int = typer.Option(3, min=1, help="Runs per loader (the median is reported)."),
) -> None:
    """Time each real-data loader on the files of SHOPML_DATASETS."""
    # on use: pandas: 0.3 s
    from experiments.bench_loaders import run

    run(out, repeat)


def bench_scale_cmd(
    out: Path = typer.Option(Path("bench-scale.json"), "--out", help="Where to write the JSON."),
    parity_scale: Scale = typer.Option("medium", help="Store of the engine-parity checks."),
    speed_scale: Scale = typer.Option("large", help="Store of the 2-vs-1-worker timings."),
    xlarge: bool = typer.Option(True, help="Run the xlarge end-to-end section."),
    xlarge_path: Path | None = typer.Option(
        None, help="An xlarge store folder already generated (else one is generated)."
    ),
    only: str | None = typer.Option(None, help="Only one section: parity, speed or xlarge."),
    xlarge_minutes: float = typer.Option(
        180.0, min=1, help="Stop the xlarge section this long after it starts (figures kept)."
    ),
    local_cap_mb: float = typer.Option(
        12_000, min=100, help="RSS cap of the local-engine stages of the xlarge section (MB)."
    ),
) -> None:
    """Local engine vs Dask: identical results, 2-vs-1-worker speed-up, memory (JSON)."""
    # on use: features, models, training and distributed: ~2 s
    import json

    from experiments.bench_scale import run

    if only not in (None, "parity", "speed", "xlarge"):
        raise ConfigError(f"--only: {only!r} is not one of parity, speed, xlarge")
    report = run(
        out, parity_scale, speed_scale, xlarge, xlarge_path, only, xlarge_minutes, local_cap_mb
    )
    typer.echo(json.dumps({k: v for k, v in report.items() if not k.endswith("_detail")}, indent=2))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the store commands to the `shopml` app and its `bench` group."""
    app.command("generate")(generate_cmd)
    app.command("validate")(validate_cmd)
    app.command("profile")(profile_cmd)
    bench_app.command("generator")(bench_generator_cmd)
    bench_app.command("loaders")(bench_loaders_cmd)
    bench_app.command("scale")(bench_scale_cmd)
