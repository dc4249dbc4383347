"""Fraud scoring commands: `shopml train fraud`, `shopml bench fraud-handbook`,
`shopml fraud ingest-labels FILE` and `shopml fraud state customer|card|terminal ID`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shopml.errors import DataError
from shopml.settings import CONFIG_DIR, load_settings

DEFAULT_CONFIG = CONFIG_DIR / "fraud.toml"

fraud_app = typer.Typer(
    help="Fraud scoring utilities (late labels, online state).", no_args_is_help=True
)


def train_fraud_cmd(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", help="Fraud job config (TOML)."),
) -> None:
    """Build point-in-time features, train + calibrate the fraud scorer, evaluate, register."""
    # on use: training (mlflow): 1.0 s
    from cli.headline import echo_training
    from shopml.config import load_config
    from training.fraud_job import FraudJobConfig, train

    echo_training("fraud", train(load_config(config, FraudJobConfig)))


def bench_fraud_handbook_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
    path: Path | None = typer.Option(
        None, "--path", help="transactions.parquet (default: datasets)."
    ),
) -> None:
    """Fraud handbook chapter-3 protocol: baselines vs LightGBM, feature and latency timings."""
    # on use: models and features: 0.8 s
    from experiments.fraud_handbook import run

    result = run(out, path=path)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "variants"}, indent=2))


def bench_online_state_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result here."),
) -> None:
    """Online fraud state: record cost for keys with 10 / 1,000 / 100,000 payments, and exact
    counts of 8 concurrent processes on one card and terminal against a real Redis."""
    # on use: the fraud features: 0.5 s
    from experiments.bench_online_state import run

    typer.echo(json.dumps(run(out), indent=2))


def ingest_labels_cmd(
    file: Path = typer.Argument(
        ...,
        help="CSV or Parquet: transaction_id, is_fraud, [label_time], [customer_id, terminal_id].",
    ),
    labels_url: str | None = typer.Option(
        None,
        help="Label store (SQLAlchemy URL; default: settings labels_url, else the SQLite file "
        "$SHOPML_HOME/fraud/labels.db).",
    ),
    redis_url: str | None = typer.Option(
        None,
        help="Online state in Redis (default: settings "
        "redis_url; without one only the label store is updated).",
    ),
) -> None:
    """Store late fraud labels for the next `train fraud` and update the online risk state."""
    # on use: pandas and the fraud engine: 0.8 s
    from features.fraud.labels import LabelStore
    from features.fraud.online import OnlineFeatures
    from features.fraud.state_store import InMemoryStateStore, RedisStateStore
    from models.fraud.engine import ingest_labels

    df = _read_labels_file(file)
    settings = load_settings()
    store = LabelStore(labels_url) if labels_url else LabelStore.open(settings)
    url = redis_url or settings.redis_url
    online = RedisStateStore(url) if url else InMemoryStateStore()
    report = ingest_labels(df, OnlineFeatures(store=online), store, source="cli")
    typer.echo(
        f"{report.accepted} labels stored in {report.stored_at} ({report.added} new, "
        f"{report.corrected} corrected, {report.unchanged} unchanged); online state "
        f"{'updated in ' + url if url else 'not configured (no redis_url)'}; "
        f"{len(report.unknown_transactions)} frauds without a known payment"
    )


def _read_labels_file(file: Path):
    """The labels file as a frame; a missing or unreadable file is a `DataError` naming it."""
    import pandas as pd

    if not file.is_file():
        raise DataError(f"labels file {file} does not exist")
    try:
        df = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    except Exception as err:  # noqa: BLE001 - any parse failure is the file's fault
        raise DataError(f"labels file {file}: unreadable ({type(err).__name__})") from None
    missing = [c for c in ("transaction_id", "is_fraud") if c not in df.columns]
    if missing:
        raise DataError(f"labels file {file}: missing column(s) {missing}")
    return df


ENTITIES = ("customer", "card", "terminal")


def state_cmd(
    entity: str = typer.Argument(..., help="customer, card or terminal."),
    key_id: str = typer.Argument(..., metavar="ID", help="The customer, card or terminal id."),
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Read the Redis online store (default: settings redis_url)."
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        help="Ask a running fraud service instead (e.g. http://127.0.0.1:3001): its in-process "
        "store, through POST /state with the bearer token SHOPML_STATE_TOKEN.",
    ),
) -> None:
    """Print what the online store holds for one key as JSON: counts and sums per window,
    known frauds, last payment time (for support, investigators and checks)."""
    if entity not in ENTITIES:
        raise DataError(f"entity: must be one of {', '.join(ENTITIES)}, got {entity!r}")
    settings = load_settings()
    if url:
        answer = _service_state(url, settings.state_token, entity, key_id)
    else:
        target = redis_url or settings.redis_url
        if not target:
            raise DataError(
                "no online store to read: pass --redis-url URL (or SHOPML_REDIS_URL), or --url "
                "of a running fraud service for its in-process store"
            )
        answer = _redis_state(target, entity, key_id)
    typer.echo(json.dumps(answer, indent=2))


def _redis_state(url: str, entity: str, key_id: str) -> dict:
    """The key's state in the Redis at `url`; an unreachable Redis is a DataError naming it."""
    # on use: the state store (redis client): 0.1 s
    from features.fraud.state_store import STORE_ERRORS, RedisStateStore

    try:
        return RedisStateStore(url).read_key(entity, key_id)
    except STORE_ERRORS as err:
        raise DataError(f"--redis-url {url}: unreachable ({type(err).__name__})") from None


def _service_state(url: str, token: str | None, entity: str, key_id: str) -> dict:
    """POST /state of a running fraud service; its refusal is a DataError with its message."""
    # on use: httpx: 0.1 s
    import httpx

    if not token:
        raise DataError("--url needs the service's state token: set SHOPML_STATE_TOKEN")
    try:
        r = httpx.post(
            url.rstrip("/") + "/state",
            json={"entity": entity, "id": key_id},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    except httpx.HTTPError as err:
        raise DataError(f"--url {url}: unreachable ({type(err).__name__})") from None
    if r.status_code != 200:
        try:
            detail = r.json().get("error", r.text)
        except ValueError:
            detail = r.text[:200]
        raise DataError(f"--url {url}: HTTP {r.status_code}: {detail}")
    return r.json()


def register(app: typer.Typer, train_app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the fraud commands: `train fraud`, `bench fraud-handbook`, `fraud ingest-labels`."""
    train_app.command("fraud")(train_fraud_cmd)
    bench_app.command("fraud-handbook")(bench_fraud_handbook_cmd)
    bench_app.command("online-state")(bench_online_state_cmd)
    fraud_app.command("ingest-labels")(ingest_labels_cmd)
    fraud_app.command("state")(state_cmd)
    app.add_typer(fraud_app, name="fraud")
