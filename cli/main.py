"""The `shopml` console command: one Typer app, the commands of each area added by its module.

Errors shopml raises on purpose (`ShopmlError`) and those of the file system (`OSError`: a
folder that cannot be written, a file that vanished) are printed as one message and exit with
code 2; anything else is a bug and keeps its traceback. Commands import their jobs when they run, so
that `shopml --help` stays fast (0.14 s; importing training alone takes 1.0 s, mostly mlflow).
"""

from __future__ import annotations

import os
import sys

import typer

from cli import data, experiments, forecast, fraud, monitor, recommender, serving
from shopml.errors import ShopmlError
from shopml.log import setup_logging
from shopml.settings import load_settings

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

experiments.register(app)  # runs, compare, promote, rollback, retrain, reproduce
serving.register(app, bench_app)  # build, serve, bench serve
data.register(app, bench_app)  # generate, validate, profile, bench generator, bench loaders
forecast.register(train_app, bench_app)  # train forecast, bench forecast-online-retail
fraud.register(app, train_app, bench_app)  # train fraud, bench fraud-handbook, fraud ingest-labels
recommender.register(train_app, bench_app)  # train recommender, bench recs-movielens/-online-retail
recommender.register_commands(app)  # recommend export
monitor.register(app, bench_app)  # monitor (drift + live performance), bench drift


@app.command("run")
def run_cmd(
    scale: data.Scale = typer.Option("small", help="Size of the generated default store."),
    seed: int = typer.Option(0, min=0, help="Seed of the generated store."),
    serve: bool = typer.Option(True, help="Build, serve and call the endpoints after training."),
) -> None:
    """The main job: generate, validate, profile, train and register all families, build, serve, call."""
    # on use: training, serving and features: 1.3 s
    from cli.main_job import run_main_job

    run_main_job(scale=scale, seed=seed, serve=serve)


@app.command("ui")
def ui_cmd(port: int = typer.Option(5000, min=1, max=65535, help="Port on 127.0.0.1.")) -> None:
    """Start the MLflow UI on 127.0.0.1 over shopml's tracking store."""
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


def main() -> None:
    """Console entry point: run the Typer app, turning ShopmlError into a clean message."""
    try:
        setup_logging(load_settings().log_level or "WARNING")
        app()  # standalone: usage errors print click's message and exit 2
    except (ShopmlError, OSError) as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
