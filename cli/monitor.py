"""`shopml monitor FAMILY`: drift of the champion's inputs and score, and its live performance.

One section per family: the drift table (PSI, chi-square p-value, KS per feature and for the
score, against the reference profile the champion was trained with) and, under it, the live
performance tables of `training.live_performance.PROVIDERS` (feedback click-through, late-label
precision / recall, A/B and shadow comparisons: each engineer adds one provider line there,
nothing here). The new data is a live snapshot (`--live URL` asks a running service's
`/profile`, `--snapshot FILE` reads a saved one) or a batch (`--data FOLDER`, a store as
`shopml generate` writes it; default: the source of the family's job config).

Exit codes (for schedulers): 0 no threshold crossed, 4 drift or a live alarm, 2 error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

FAMILY_HELP = "Model family: recommender, fraud or forecast."
EXIT_DRIFT = 4


def monitor_cmd(
    family: str = typer.Argument(..., help=FAMILY_HELP),
    live: str | None = typer.Option(
        None, "--live", help="Base URL of a running service; its POST /profile is compared."
    ),
    snapshot: Path | None = typer.Option(
        None, "--snapshot", help="A saved /profile answer (JSON) to compare."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="A store folder (as `shopml generate` writes) as the new batch."
    ),
    job_config: Path | None = typer.Option(
        None, "--job-config", help="Job config whose source is the new batch (default: shipped)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Thresholds (default experiments/configs/monitor.toml)."
    ),
    version: str | None = typer.Option(
        None, "--version", help="Registered version to watch (default: @champion)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="HTML report path (default monitor-<family>.html)."
    ),
    log: bool = typer.Option(True, "--log/--no-log", help="Log report and metrics to MLflow."),
) -> None:
    """Compare live traffic or a batch of new data with the champion's reference profile
    (PSI, chi-square, KS), show live performance, write an HTML report; exit 4 on drift."""
    # on use: training (mlflow, scipy): 1.0 s
    from training.monitor import load_monitor_config, run_monitor

    settings_config = load_monitor_config(config)
    outcome = run_monitor(
        family,
        settings_config,
        live_url=live,
        snapshot=snapshot,
        data=data,
        job_config=job_config,
        version=version,
        out=out or Path(f"monitor-{family}.html"),
        log=log,
    )
    print_outcome(outcome)
    if outcome.alarmed:
        raise typer.Exit(EXIT_DRIFT)


def print_outcome(outcome) -> None:
    """The family's section: what was compared, the drift table, then the live tables."""
    console = Console() if sys.stdout.isatty() else Console(width=400)
    console.rule(f"{outcome.family}: v{outcome.version or '?'} ({outcome.source})")
    table = Table(title=f"drift against the reference ({outcome.rule_text})")
    for col, justify in (
        ("column", "left"),
        ("PSI", "right"),
        ("chi2 p", "right"),
        ("KS", "right"),
        ("n new", "right"),
        ("bin grown most (Cohen's h, exact p)", "left"),
        ("drift", "left"),
    ):
        table.add_column(col, justify=justify)
    for d in outcome.drift:
        ks = "" if d.ks is None else f"{d.ks:.3f}"
        flag = "[red]DRIFT[/red]" if d.drifted else ""
        grown = f"{d.bin_label} ({d.bin_effect:.2f}, {d.bin_p_value:.2g})" if d.bin_label else ""
        table.add_row(d.name, f"{d.psi:.3f}", f"{d.p_value:.2g}", ks, f"{d.n_new:.0f}", grown, flag)
    console.print(table)
    for t in outcome.tables:
        live = Table(title=t.title)
        for c in t.columns:
            live.add_column(str(c))
        for row in t.rows:
            live.add_row(*[_cell(v) for v in row])
        console.print(live)
        if t.note:
            console.print(t.note, markup=False, highlight=False)
    for note in outcome.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    for alarm in outcome.alarms:
        console.print(f"[red]alarm[/red]: {alarm}", highlight=False)
    typer.echo(f"report written to {outcome.report_path}")
    if outcome.mlflow_run_id:
        typer.echo(f"report logged to MLflow run {outcome.mlflow_run_id}")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def bench_drift_cmd(
    out: Path | None = typer.Option(None, "--out", help="Write the numbers as JSON here."),
    seeds: int = typer.Option(20, min=1, help="Generated stores (seeds 0..N-1)."),
    scale: str = typer.Option("small", help="Scale of the generated stores."),
) -> None:
    """Drift detection on generated stores: the no-shift control's false-alarm rate and the
    detection of injected shifts (fraud scenario, price change, new segment) per family."""
    # on use: features, training (scipy, pandas)
    from experiments.bench_drift import run

    run(seeds, scale, out)


def register(app: typer.Typer, bench_app: typer.Typer | None = None) -> None:
    """Add `shopml monitor` (and `shopml bench drift`) to the app."""
    app.command("monitor")(monitor_cmd)
    if bench_app is not None:
        bench_app.command("drift")(bench_drift_cmd)
