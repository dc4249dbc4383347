"""Serving commands: `shopml build`, `shopml serve`, `shopml bench serve`."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import typer

from serving.services import SERVICES
from shopml.errors import ShopmlError
from shopml.settings import load_settings

SERVICE_NAMES = " | ".join([*SERVICES, "all"])


def build_cmd(
    service: str = typer.Argument(
        "all", help=f"{SERVICE_NAMES}: which Bentos to build after importing the champions."
    ),
) -> None:
    """Import each family's MLflow champion into the BentoML store and build the Bentos."""
    settings = load_settings()
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    # after BENTOML_HOME is set: bentoml reads it on import
    from serving.build import build

    services = tuple(SERVICES) if service == "all" else (service,)
    report = build(settings, services)
    for family, text in report.models.items():
        typer.echo(f"model   {family:<12} {text}")
    for family, text in report.challengers.items():
        typer.echo(f"challenger {family:<9} {text} (fraud: scored in shadow)")
    for family, why in report.missing.items():
        typer.echo(f"missing {family:<12} {why}")
    for svc, tag in report.bentos.items():
        typer.echo(f"bento   {svc:<12} {tag}")
    for svc, why in report.skipped.items():
        typer.secho(f"skipped {svc:<12} {why}", fg=typer.colors.YELLOW)
    typer.echo(f"BentoML home: {os.environ['BENTOML_HOME']}")


def serve_cmd(
    service: str = typer.Argument("all", help=SERVICE_NAMES),
    port: int = typer.Option(
        3001,
        min=1,
        max=65534,
        help="Port of the first service (fraud: +1 with all).",
    ),
    host: str | None = typer.Option(
        None,
        "--host",
        help="Address to bind (default SHOPML_HOST, else 127.0.0.1). Beyond loopback the "
        "fraud service needs SHOPML_API_TOKEN (its /labels are never open to the network).",
    ),
    redis_url: str | None = typer.Option(
        None,
        "--redis-url",
        help="Online fraud features in Redis (default: SHOPML_REDIS_URL or in-process).",
    ),
    workers: int | None = typer.Option(
        None, min=1, help="Worker processes per service (more than 1 for fraud needs Redis)."
    ),
    history: Path | None = typer.Option(
        None, "--history", help="Store folder whose recent payments warm the online fraud features."
    ),
    rules: Path | None = typer.Option(
        None,
        "--rules",
        help="Fraud rules file (TOML, checked first; default SHOPML_FRAUD_RULES, else the rules "
        "saved with the model); reload it with SIGHUP or POST /rules/reload.",
    ),
) -> None:
    """Run the built services (on 127.0.0.1 unless --host) until Ctrl-C."""
    # on use: reaches the model registry (mlflow: 0.9 s)
    from serving import runner

    settings = load_settings()
    names = tuple(SERVICES) if service == "all" else (service,)
    env = _service_env(names, redis_url, workers, history, settings.redis_url)
    host = _bind_host(host or settings.host, names, settings)
    if rules is not None:
        from models.fraud import RuleSet  # on use: lightgbm, pandas (1.3 s)

        RuleSet.load(rules)  # a bad file: one line naming the field, before any server starts
        env["SHOPML_FRAUD_RULES"] = str(rules.resolve())
    servers = []
    try:
        for i, name in enumerate(names):
            server = runner.start(name, port + i, settings=settings, env=env, host=host)
            servers.append(server)
        for server in servers:
            seconds = server.wait_ready(timeout=120)
            typer.echo(
                f"{server.service:<10} ready on {server.url} in {seconds:.1f} s "
                f"(logs: {server.log_path})"
            )
        typer.echo("Ctrl-C to stop")
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        while not stop["now"] and all(s.process.poll() is None for s in servers):
            time.sleep(0.5)
        for server in servers:
            if server.process.poll() is not None:
                typer.secho(f"{server.service} stopped:\n{server.log_tail()}", fg=typer.colors.RED)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan a server
        for server in servers:
            server.stop()


def _bind_host(host: str, names: tuple[str, ...], settings) -> str:
    """The address to bind, checked before any server starts: beyond loopback the fraud
    service's /labels need SHOPML_API_TOKEN; 0.0.0.0 gets a warning."""
    beyond = replace(settings, host=host)
    if not beyond.loopback and "fraud" in names and not settings.api_token:
        raise ShopmlError(
            f"--host {host} exposes the fraud service's /labels: set SHOPML_API_TOKEN (clients "
            "send 'Authorization: Bearer <token>') or bind to 127.0.0.1"
        )
    if host in ("0.0.0.0", "::"):
        typer.secho(
            f"warning: --host {host} listens on every network interface; anyone who can reach "
            "this machine can call the services",
            err=True,
            fg=typer.colors.YELLOW,
        )
    return host


def _service_env(
    names: tuple[str, ...],
    redis_url: str | None,
    workers: int | None,
    history: Path | None,
    configured_redis: str | None,
) -> dict[str, str]:
    """The environment the services start with, from the `serve` options (ShopmlError when
    they cannot work together)."""
    env: dict[str, str] = {}
    if redis_url:
        env["SHOPML_REDIS_URL"] = redis_url
    if history:
        if not history.is_dir():
            raise ShopmlError(f"--history {history}: not a store folder")
        env["SHOPML_FRAUD_HISTORY"] = str(history.resolve())
    if workers:
        env["SHOPML_WORKERS"] = str(workers)
        if workers > 1 and "fraud" in names and not (redis_url or configured_redis):
            raise ShopmlError(
                "several fraud workers need shared online features: set SHOPML_REDIS_URL "
                "or pass --redis-url"
            )
    return env


def bench_serve_cmd(
    out: Path = typer.Option(Path("bench-serve.json"), "--out", help="Where to write the JSON."),
    redis: bool = typer.Option(
        False, "--redis", help="Fraud service only, its online state in a redis-server it starts."
    ),
    shadow: bool = typer.Option(
        False,
        "--shadow",
        help="The fraud Bento also with its challenger scoring in shadow, both measured in one "
        "interleaved run: adds fraud_shadow beside fraud (the Bento must carry a @challenger).",
    ),
) -> None:
    """Load-test the built services on loopback: p50/p99 at c=1 and rps at c=8 vs /livez."""
    # on use: httpx and serving: 0.1 s
    from experiments.bench_serve import report_lines, run

    result = run(out, redis=redis, shadow=shadow)
    for line in report_lines(result):
        typer.echo(line)
    typer.echo(json.dumps(result))
    typer.echo(f"written to {out}")


def bench_serve_body_cmd(
    size_mb: int = typer.Option(100, "--size-mb", min=1, max=1024, help="Size of the big body."),
    out: Path = typer.Option(Path("bench-serve-body.json"), "--out", help="Where to write it."),
) -> None:
    """One oversized body against the built fraud service on loopback: its time to an answer
    and the concurrent /score p50/p99 during it, against /score alone."""
    # on use: serving (bentoml, 0.9 s)
    from experiments.bench_body import run

    result = run(size_mb=size_mb)
    big, base, during = (
        result["big_request"],
        result["score_baseline"],
        result["score_during_big_bodies"],
    )
    typer.echo(
        f"{size_mb} MB body: HTTP {big['status']} after {big['seconds']:.3f} s "
        f"({big['sent_bytes'] / 1e6:.1f} MB sent)"
    )
    typer.echo(
        f"/score alone      p50 {base['p50_ms']} ms  p99 {base['p99_ms']} ms  (n={base['n']})"
    )
    typer.echo(
        f"/score during it  p50 {during.get('p50_ms')} ms  p99 {during.get('p99_ms')} ms  "
        f"(n={during['n']})"
    )
    out.write_text(json.dumps(result, indent=2))
    typer.echo(f"written to {out}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the serving commands: `build`, `serve`, `bench serve`, `bench serve-body`."""
    app.command("build")(build_cmd)
    app.command("serve")(serve_cmd)
    bench_app.command("serve")(bench_serve_cmd)
    bench_app.command("serve-body")(bench_serve_body_cmd)
