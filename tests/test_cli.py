"""The command line: every command has working --help; bad input gives one message and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pandas as pd
import typer.main
from typer.testing import CliRunner

from cli.main import app


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


def test_every_command_has_help():
    root = typer.main.get_command(app)
    runner = CliRunner()
    paths = list(all_commands(root))
    assert ("run",) in paths and ("validate",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def shopml(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_validate_reports_contract_errors_without_traceback(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    pd.DataFrame(
        {"product_id": ["a", "a"], "category": ["x", "y"], "price": [1.0, -2.0]}
    ).to_parquet(folder / "products.parquet")
    result = shopml("validate", str(folder))
    assert result.returncode == 2
    assert "products.product_id: duplicate id in 1 row" in result.stderr
    assert "products.price: negative value in 1 row" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_prints_tables_of_a_good_store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    pd.DataFrame(
        {"product_id": ["a", "b"], "category": ["x", "y"], "price": [1.0, 2.0]}
    ).to_parquet(folder / "products.parquet")
    result = shopml("validate", str(folder))
    assert result.returncode == 0, result.stderr
    assert "products" in result.stdout and "2 rows" in result.stdout


def test_unknown_option_is_a_usage_error():
    result = shopml("validate", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_family_help_names_every_family():
    from cli.experiments import FAMILY_HELP
    from models.family import FAMILY_NAMES

    assert all(name in FAMILY_HELP for name in FAMILY_NAMES), (FAMILY_HELP, FAMILY_NAMES)


def test_help_stays_light():
    """`shopml --help` imports no job: training, models, experiments, pandas load on use."""
    code = "import json, sys, cli.main; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    heavy = {"training", "experiments", "models", "numpy", "pandas", "mlflow", "bentoml"}
    assert not heavy & set(json.loads(loaded.stdout)), loaded.stdout


def test_train_commands_print_the_metrics_the_promotion_spec_declares(capsys):
    from types import SimpleNamespace

    from cli.headline import echo_training
    from models.family import FAMILY_NAMES
    from training.families import family_spec

    for family in FAMILY_NAMES:
        shown = family_spec(family).shown_metrics()
        metrics = dict.fromkeys(shown, 0.5) | {"not_declared": 1.0}
        echo_training(family, SimpleNamespace(run_id="r1", metrics=metrics, model_version="3"))
        out = capsys.readouterr().out
        assert out.startswith(f"{family} run r1: ") and "model version 3" in out
        assert all(f"{name}=0.5" in out for name in shown) and "not_declared" not in out
