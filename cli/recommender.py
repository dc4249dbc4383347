"""Recommendation commands: `shopml train recommender`, `shopml bench recs-movielens`,
`shopml bench recs-online-retail` and `shopml recommend export`."""

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


def recommend_export_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write part-NNNNN.parquet files into."),
    k: int = typer.Option(20, "--k", min=1, max=1000, help="Products per customer."),
    model: str = typer.Option(
        "champion", "--model", help="Registered version or alias of shopml-recommender."
    ),
    exclude_seen: bool = typer.Option(
        False, "--exclude-seen", help="Hide every product the customer interacted with."
    ),
    include_purchased: bool = typer.Option(
        False, "--include-purchased", help="Keep products the customer already bought."
    ),
    category: list[str] = typer.Option(
        [], "--category", help="Only products of this category (repeatable)."
    ),
    only_available: bool = typer.Option(
        False, "--only-available", help="Only products the catalog marks available."
    ),
    exclude_id: list[str] = typer.Option(
        [], "--exclude-id", help="Never recommend this product (repeatable)."
    ),
    block_customers: int = typer.Option(
        50_000, "--block-customers", min=1, help="Customers per Parquet file."
    ),
    engine: str = typer.Option("local", "--engine", help="local | dask"),
    workers: int = typer.Option(2, "--workers", min=1, help="LocalCluster workers (dask)."),
    memory_limit: str = typer.Option("6GB", "--memory-limit", help="Per LocalCluster worker."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Address of a running Dask scheduler (SHOPML_DASK_SCHEDULER)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Every known customer's top-k of the registered recommender, filtered, as Parquet (for
    e-mail and push campaigns); the same files on the local engine and on Dask."""
    # on use: training, registry (mlflow) and models: ~1.3 s
    from models.recommenders.selection import RecommendFilters
    from registry.store import configure, fetch
    from shopml.compute import ComputeConfig, open_compute
    from shopml.config import parse_config
    from shopml.errors import ShopmlError
    from training.export import export_recommendations

    if out.exists() and not force:  # before the registry is read
        raise ShopmlError(f"--out {out} exists; pass --force to replace it")
    settings = configure()
    compute_cfg = parse_config(
        {
            "engine": engine,
            "n_workers": workers,
            "memory_limit": memory_limit,
            "scheduler": scheduler,
        },
        ComputeConfig,
        source="shopml recommend export",
    )
    filters = RecommendFilters(
        exclude_purchased=not include_purchased,
        exclude_seen=exclude_seen,
        exclude_ids=tuple(exclude_id),
        categories=tuple(category) or None,
        only_available=only_available,
    )
    fetched = fetch("recommender", model, settings)
    recommender = fetched.load()
    ref = {"name": fetched.name, "version": fetched.version, "kind": fetched.kind}
    with open_compute(compute_cfg, settings.dask_scheduler) as compute:
        result = export_recommendations(
            recommender,
            out,
            k=k,
            filters=filters,
            compute=compute,
            block_customers=block_customers,
            force=force,
            model_ref=ref,
        )
    typer.echo(
        f"exported {result.rows:,} recommendations for {result.customers:,} customers of "
        f"{fetched.name} v{fetched.version} into {result.files} files under {result.out} "
        f"in {result.seconds:.1f}s ({result.engine})"
    )


def register_commands(app: typer.Typer) -> None:
    """Add the `shopml recommend` group (`recommend export`)."""
    recommend_app = typer.Typer(
        help="Batch recommendations of the registered recommender.", no_args_is_help=True
    )
    recommend_app.command("export")(recommend_export_cmd)
    app.add_typer(recommend_app, name="recommend")


def register(train_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the recommender commands: `train recommender`, `bench recs-movielens/-online-retail`."""
    train_app.command("recommender")(train_recommender_cmd)
    bench_app.command("recs-movielens")(bench_recs_movielens_cmd)
    bench_app.command("recs-online-retail")(bench_recs_online_retail_cmd)
