"""The `shopml` command line. Commands stay thin: parse options, call a job, print the outcome.

Errors shopml raises on purpose (`ShopmlError`) are printed as one message and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from shopml.errors import ShopmlError

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# MLflow sets its own log level on import and draws progress bars; keep the jobs' output readable
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

app = typer.Typer(
    name="shopml",
    help="Recommendations, fraud scores and demand forecasts for online stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(
    help="Train a model family, track it in MLflow and register it.", no_args_is_help=True
)
bench_app = typer.Typer(help="Run a benchmark and write its numbers as JSON.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

from shopml.cli_experiments import register as _register_experiments  # noqa: E402

_register_experiments(app)  # runs, compare, promote, rollback, retrain, reproduce

from shopml.cli_serving import register as _register_serving  # noqa: E402

_register_serving(app, bench_app)  # build, serve, bench serve

from shopml.cli_generate import generate_cmd  # noqa: E402

app.command("generate")(generate_cmd)

from shopml.cli_forecast import register as _register_forecast  # noqa: E402

_register_forecast(train_app, bench_app)  # train forecast, bench forecast-online-retail

from shopml.cli_fraud import register as _register_fraud  # noqa: E402

_register_fraud(app, train_app, bench_app)  # train fraud, bench fraud-handbook, fraud ingest-labels

from shopml.cli_recommender import register as _register_recommender  # noqa: E402

_register_recommender(
    train_app, bench_app
)  # train recommender, bench recs-movielens/-online-retail


@app.command("run")
def run_cmd(
    scale: str = typer.Option("small", help="Size of the generated default store."),
    seed: int = typer.Option(0, help="Seed of the generated store."),
    serve: bool = typer.Option(True, help="Build, serve and call the endpoints after training."),
) -> None:
    """The main job: generate, validate, profile, train and register all families, build, serve, call."""
    from shopml.main_job import run_main_job

    run_main_job(scale=scale, seed=seed, serve=serve)


@bench_app.command("generator")
def bench_generator_cmd(
    out: Path | None = typer.Option(None, help="Write the numbers as JSON here."),
    scales: str = typer.Option("tiny,small,medium,large", help="Comma-separated scales."),
) -> None:
    """Time and size of the built-in store generator at each scale."""
    from experiments.bench_generator import run

    run(out, scales=tuple(s.strip() for s in scales.split(",") if s.strip()))


@bench_app.command("loaders")
def bench_loaders_cmd(
    out: Path | None = typer.Option(None, help="Write the numbers as JSON here."),
    repeat: int = typer.Option(3, min=1, help="Runs per loader (the median is reported)."),
) -> None:
    """Time each real-data loader on the files of SHOPML_DATASETS."""
    from experiments.bench_loaders import run

    run(out, repeat)


@app.command("validate")
def validate_cmd(
    path: Path = typer.Argument(..., help="Store folder of <table>.parquet files."),
) -> None:
    """Check a store folder against the data contract and print its tables."""
    from features.store import Store

    store = Store.read(path)
    for table, rows in store.row_counts().items():
        typer.echo(f"{table:<12} {rows:>12,} rows  ok")
    typer.echo(f"fingerprint {store.fingerprint_id()}")


@app.command("profile")
def profile_cmd(
    source: str = typer.Option(
        "generated", help="generated | store | files | online_retail | movielens | fraud_handbook"
    ),
    path: Path | None = typer.Option(None, help="Folder or file for store/files/real sources."),
    scale: str = typer.Option("small", help="Scale, for the generated source."),
    seed: int = typer.Option(0, help="Seed, for the generated source."),
) -> None:
    """Load a data source, validate it and log its data profile as an MLflow run."""
    from features.sources import load_source
    from training.profile_job import log_profile

    source_cfg = _source_config(source, path, scale, seed)
    store = load_source(source_cfg)
    run_id, profile = log_profile(store, source_cfg)
    for table, info in profile["tables"].items():
        typer.echo(f"{table:<12} {info['rows']:>12,} rows")
    typer.echo(f"profile logged to MLflow run {run_id}")


@app.command("ui")
def ui_cmd(port: int = typer.Option(5000, help="Port on 127.0.0.1.")) -> None:
    """Start the MLflow UI on 127.0.0.1 over shopml's tracking store."""
    from shopml.settings import load_settings

    settings = load_settings().ensure_dirs()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        settings.tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    typer.echo(f"MLflow UI on http://127.0.0.1:{port} (tracking store {settings.tracking_uri})")
    os.execv(sys.executable, cmd)


def _source_config(kind: str, path: Path | None, scale: str, seed: int):
    """Build a validated `SourceConfig` from command-line options."""
    from pydantic import TypeAdapter, ValidationError

    from features.sources import SourceConfig
    from shopml.config import describe_validation_error
    from shopml.errors import ConfigError

    data: dict[str, object] = {"kind": kind}
    if kind == "generated":
        data.update(scale=scale, seed=seed)
    elif path is not None:
        data["path"] = str(path)
    try:
        return TypeAdapter(SourceConfig).validate_python(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, "--source")) from None


def main() -> None:
    """Console entry point: run the Typer app, turning ShopmlError into a clean message."""
    from shopml.log import setup_logging

    setup_logging(os.environ.get("SHOPML_LOG_LEVEL", "WARNING"))
    try:
        app()  # standalone: usage errors print click's message and exit 2
    except (ShopmlError, FileExistsError) as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
