"""CLI commands for experiments: runs, compare, promote, rollback, retrain, reproduce.

Exit codes (for cron jobs and CI): 0 success / promoted, 3 the gate refused (trained or checked
but not promoted, a `promote --dry-run` that would refuse, or `compare --strict` on different
data or a different test), 2 error (bad input, missing run or model, unreachable tracking
server).
"""

from __future__ import annotations

import functools
import sys
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shopml.errors import ConfigError, RegistryError, ShopmlError

# The names of `models.family.FAMILY_NAMES`, written out because importing models.family costs
# 0.85 s on every `shopml --help`; tests/test_cli.py fails when a family is missing here.
FAMILY_HELP = "Model family: recommender, fraud or forecast."
EXIT_GATE_FAILED = 3
FORMATS = ("table", "csv", "markdown")


def _console() -> Console:
    """A rich console; wide when piped (a file or a pager should get whole cells, not ellipses)."""
    return Console() if sys.stdout.isatty() else Console(width=400)


def _mlflow_errors(fn):
    """Turn MLflow's errors (server down, bad request) into a RegistryError: message, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # on use: mlflow: 0.9 s
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            raise RegistryError(f"MLflow: {err.message}") from None

    return wrapper


@_mlflow_errors
def runs_cmd(
    family: str = typer.Argument(..., help=FAMILY_HELP),
    sort: str | None = typer.Option(
        None,
        "--sort",
        help="Metric to sort by (direction from the family: 'wape' ascends), or -METRIC / 'METRIC ASC'.",
    ),
    filter_string: str | None = typer.Option(
        None, "--filter", help='MLflow search filter, e.g. "metrics.average_precision > 0.7".'
    ),
    fmt: str = typer.Option("table", "--format", help="table | csv | markdown"),
    limit: int = typer.Option(20, "--limit", help="At most this many runs."),
    nested: bool = typer.Option(False, "--nested", help="Include child runs (search trials)."),
) -> None:
    """List a family's runs with key metrics, differing parameters, data fingerprint and model version."""
    # on use: training (mlflow): 1.0 s
    from training.families import family_spec
    from training.runs import list_runs, render_csv, render_markdown, table_rows

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be table, csv or markdown, got {fmt!r}")
    runs = list_runs(family, sort=sort, filter_string=filter_string, limit=limit, nested=nested)
    header, rows = table_rows(runs, family_spec(family))
    if fmt == "csv":
        typer.echo(render_csv(header, rows), nl=False)
    elif fmt == "markdown":
        typer.echo(render_markdown(header, rows), nl=False)
    else:
        table = Table(title=f"shopml-{family}: {len(rows)} run(s)")
        for i, col in enumerate(header):
            left = i < header.index("model") + 1
            table.add_column(col, justify="left" if left else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*row)
        _console().print(table)


@_mlflow_errors
def compare_cmd(
    runs: list[str] | None = typer.Argument(
        None, help="Two or more run ids (or unique id prefixes / run names)."
    ),
    live: str | None = typer.Option(
        None,
        "--live",
        metavar="FAMILY",
        help="Instead of runs: the served model and its shadow on the same payments, once "
        "their labels matured (fraud), per week and the gate's live verdict.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="HTML report path (default compare-<ids>.html)."
    ),
    log: bool = typer.Option(
        True, "--log/--no-log", help="Log the report to MLflow (experiment shopml-comparisons)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 3 unless the runs were evaluated on the same data with the same test.",
    ),
) -> None:
    """Metric deltas side by side, whether the runs saw the same data and test, the gate's
    verdict, and overlaid plots in HTML."""
    if live is not None:
        if runs:
            raise ConfigError(
                "compare --live takes a family, not runs: shopml compare --live fraud"
            )
        _compare_live(live, strict)
        return
    # on use: training (mlflow): 1.0 s
    from training.compare import compare_runs, log_comparison
    from training.report_html import write_report
    from training.runs import format_number

    comparison = compare_runs(list(runs or []))
    console = _console()
    table = Table(title=f"{comparison.family}: deltas against {comparison.baseline.short_id}")
    table.add_column("metric")
    for r in comparison.runs:
        table.add_column(r.short_id, justify="right")
    for r in comparison.runs[1:]:
        table.add_column(f"Δ {r.short_id}", justify="right")
    for m in comparison.metric_names():
        cells = [format_number(r.metrics.get(m)) for r in comparison.runs]
        for r in comparison.runs[1:]:
            d, better = comparison.delta(r, m), comparison.better(r, m)
            text = "" if d is None else f"{d:+.4g}"
            if better is not None and text:
                text = f"[green]{text}[/green]" if better else f"[red]{text}[/red]"
            cells.append(text)
        table.add_row(m, *cells)
    console.print(table)
    _print_comparability(comparison, console)
    path = out or Path("compare-" + "-".join(r.short_id for r in comparison.runs) + ".html")
    write_report(comparison, path)
    typer.echo(f"report written to {path}")
    if log:
        run_id = log_comparison(comparison, path)
        typer.echo(f"report logged to MLflow run {run_id} (experiment shopml-comparisons)")
    if strict and not comparison.comparable:
        raise typer.Exit(EXIT_GATE_FAILED)


def _compare_live(family: str, strict: bool) -> None:
    """`compare --live FAMILY`: served vs shadow on the same matured payments, overall and
    per week, and the gate's checks on them (with --strict: exit 3 unless they pass)."""
    if family != "fraud":
        raise ConfigError(
            f"compare --live compares the fraud service's shadow; {family!r} has none "
            "(the recommender's A/B split is in `shopml monitor recommender`)"
        )
    # on use: training (mlflow, sqlalchemy): 1.0 s
    from shopml.settings import load_settings
    from training.families import family_spec
    from training.live_fraud import SHOWN, compare_live, live_gate_checks, load_matured
    from training.runs import format_number

    c = compare_live(load_matured(load_settings()))
    console = _console()
    table = Table(title=f"fraud live: {c.payments} matured payments scored by both")
    for col in ("metric", f"served {c.served_version}", f"shadow {c.shadow_version}", "Δ"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m in SHOWN:
        table.add_row(
            m, format_number(c.served[m]), format_number(c.shadow[m]), f"{c.delta(m):+.4g}"
        )
    console.print(table)
    weekly = Table(title="per week (payment week, Monday)")
    for col in (
        "week",
        "payments",
        "frauds",
        "AP served",
        "AP shadow",
        "fraud let through served",
        "fraud let through shadow",
    ):
        weekly.add_column(col, justify="left" if col == "week" else "right")
    for week, part in c.weeks.groupby("week", sort=True):
        v = part.set_index("metric")
        weekly.add_row(
            week,
            format_number(v.loc["payments", "served"]),
            format_number(v.loc["frauds", "served"]),
            format_number(v.loc["average_precision", "served"]),
            format_number(v.loc["average_precision", "shadow"]),
            format_number(v.loc["fraud_amount_approved", "served"]),
            format_number(v.loc["fraud_amount_approved", "shadow"]),
        )
    console.print(weekly)
    checks = live_gate_checks(family_spec(family), c)
    for check in checks:
        console.print(f"  {check.line()}", markup=False, highlight=False)
    passed = all(check.passed for check in checks)
    verdict = "would pass" if passed else "would NOT pass"
    typer.echo(f"verdict: the shadow {c.shadow_version} {verdict} the gate on live evidence")
    if strict and not passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_comparability(comparison, console: Console) -> None:
    """Same data and same test (or what differs), small tests, and the gate's verdict."""
    c = comparison
    if c.comparable:
        console.print(
            f"same data, same test: every run saw data fingerprint {c.fingerprints[0]} "
            f"and test protocol {c.signatures[0]}"
        )
    elif c.same_data:
        diffs = "; ".join(c.test_differences()) or "some run logged no evaluation protocol"
        console.print(
            f"same data, [red]DIFFERENT test[/red] ({diffs}): deltas are not comparable",
            markup=True,
            highlight=False,
        )
    else:
        shown = ", ".join(f"{r.short_id}={r.fingerprint or 'none'}" for r in c.runs)
        console.print(f"[red]DIFFERENT data[/red] ({shown}): deltas are not comparable")
    for warning in c.small_tests():
        console.print(f"[yellow]small test[/yellow]: {warning}")
    for verdict in c.verdicts():
        console.print(f"verdict: {verdict.line()}", markup=False, highlight=False)


@_mlflow_errors
def promote_cmd(
    family: str = typer.Argument(..., help=FAMILY_HELP),
    run: str = typer.Argument(..., help="Challenger run id (or unique prefix / run name)."),
    force: bool = typer.Option(
        False, "--force", help="Promote even if the gate fails (needs --reason)."
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="Why the gate is overridden; recorded as a tag."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only run the gate and print it."),
    live: bool = typer.Option(
        False,
        "--live",
        help="The gate must pass on live evidence too (fraud: the run's version scored in "
        "shadow beside the champion, on payments whose labels matured).",
    ),
) -> None:
    """Make a run's model the family's @champion if it beats the champion on the same data (exit 3 if not)."""
    # on use: training (mlflow): 1.0 s
    from training.promotion import evaluate_gate, promote

    if dry_run:  # a dry run that would refuse exits as the refusal does
        decision = evaluate_gate(family, run, dry_run=True, live=live)
        typer.echo(decision.explain())
        if not (decision.gate_passed or decision.first or decision.already_champion):
            raise typer.Exit(EXIT_GATE_FAILED)
        return
    decision = promote(family, run, force=force, reason=reason, live=live)
    typer.echo(decision.explain())
    if not (decision.promoted or decision.already_champion):
        raise typer.Exit(EXIT_GATE_FAILED)


@_mlflow_errors
def rollback_cmd(
    family: str = typer.Argument(..., help=FAMILY_HELP),
    reason: str | None = typer.Option(
        None, "--reason", help="Why; recorded on the demoted version."
    ),
) -> None:
    """Point @champion back at @previous-champion."""
    # on use: training (mlflow): 1.0 s
    from training.promotion import rollback

    typer.echo(rollback(family, reason=reason).explain())


def retrain_cmd(
    family: str = typer.Argument(..., help=FAMILY_HELP),
    config: Path | None = typer.Option(
        None, "--config", help="Job config (default experiments/configs/<family>.toml)."
    ),
    when: str | None = typer.Option(
        None,
        "--when",
        help="Only if due: 'drift' (shopml monitor on the config's source crosses a threshold)"
        " or 'schedule' (the champion is older than [schedule] max_champion_age_days).",
    ),
    monitor_config: Path | None = typer.Option(
        None, "--monitor-config", help="Thresholds (default experiments/configs/monitor.toml)."
    ),
) -> None:
    """Train on fresh data, compare with the champion, promote if the gate passes.

    Exit codes: 0 promoted (or first model, or --when not due: nothing trained), 3 trained but
    not promoted (gate failed), 2 error.
    """
    # on use: training (mlflow): 1.0 s
    from training.retrain import EXIT_ERROR, retrain

    if when is not None:  # issue 15: retrain when the monitor or the calendar says so
        from shopml.settings import load_settings
        from training.monitor import load_monitor_config, retrain_due

        report = load_settings().home / "monitor" / f"retrain-{family}.html"
        check = retrain_due(
            family, when, load_monitor_config(monitor_config), job_config=config, report=report
        )
        typer.echo(f"--when {when}: {'due' if check.due else 'not due'}: {check.reason}")
        if not check.due:
            raise typer.Exit(0)
    try:
        outcome = retrain(family, config_path=config)
    except ShopmlError:
        raise
    except Exception as err:  # a cron job needs exit code 2 for every failure, with the traceback
        traceback.print_exc(file=sys.stderr)
        typer.secho(f"error: retrain {family} failed: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(outcome.explain())
    raise typer.Exit(outcome.exit_code)


@_mlflow_errors
def reproduce_cmd(
    run: str = typer.Argument(..., help="Run id (or unique prefix / run name) to re-run."),
    tolerance: float = typer.Option(
        1e-6, help="Largest metric difference still called reproduced."
    ),
) -> None:
    """Re-run a run from its logged config and seed; exit 3 if the data or the metrics differ."""
    # on use: training (mlflow): 1.0 s
    from training.retrain import reproduce

    rep = reproduce(run)
    typer.echo(rep.explain())
    if not rep.same_data or rep.max_abs_diff() > tolerance:
        raise typer.Exit(EXIT_GATE_FAILED)


def register(app: typer.Typer) -> None:
    """Add the experiment commands to the `shopml` app."""
    app.command("runs")(runs_cmd)
    app.command("compare")(compare_cmd)
    app.command("promote")(promote_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("retrain")(retrain_cmd)
    app.command("reproduce")(reproduce_cmd)
