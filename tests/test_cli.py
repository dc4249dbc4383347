"""The command line: every command has working --help; bad input gives one message and exit 2."""

from __future__ import annotations

import json
import os
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


# --- bad input: one line naming the option or file, exit 2, never a traceback (issue 11) ---


def assert_clean_error(result: subprocess.CompletedProcess, *names: str) -> None:
    """Exit 2, no traceback, and the message names each of `names`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)


def wide_env(**extra: str) -> dict[str, str]:
    """The environment with a wide terminal, so help and errors are not wrapped mid-word."""
    return {**os.environ, "COLUMNS": "250", **extra}


def test_run_rejects_an_unknown_scale_before_any_work():
    result = shopml("run", "--scale", "huge", "--no-serve", env=wide_env())
    assert_clean_error(result, "'--scale'", "huge", "'tiny', 'small', 'medium', 'large'")
    assert "shopml home" not in result.stdout  # refused while parsing, before the job starts


def test_help_lists_the_allowed_values():
    runner = CliRunner()
    for path in (["run"], ["generate"], ["profile"]):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert "tiny|small|medium|large" in result.output, (path, result.output)
    profile = runner.invoke(app, ["profile", "--help"], env={"COLUMNS": "250"}).output
    assert "generated|store|files|online_retail|movielens|fraud_handbook" in profile
    generator = runner.invoke(app, ["bench", "generator", "--help"], env={"COLUMNS": "250"})
    assert "tiny, small, medium, large" in generator.output


def test_cli_choices_match_the_features_layer():
    from typing import get_args

    from cli.data import ProfileSource, Scale
    from features.generator import Scale as GeneratorScale
    from features.sources import Kind

    assert get_args(Scale) == get_args(GeneratorScale)
    assert set(get_args(ProfileSource)) == set(get_args(Kind)) - {"sql"}


def test_validate_names_a_corrupt_parquet_file(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "products.parquet").write_bytes(b"not parquet")
    result = shopml("validate", str(folder))
    assert_clean_error(result, str(folder / "products.parquet"))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_validate_reads_csv_folders_and_single_files(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "products.csv").write_text("product_id,category,price\n007,x,1.5\n8,y,2\n")
    result = shopml("validate", str(folder))
    assert result.returncode == 0, result.stderr
    assert "products" in result.stdout and "2 rows  ok" in result.stdout
    single = shopml("validate", str(folder / "products.csv"))
    assert single.returncode == 0, single.stderr
    assert "2 rows  ok" in single.stdout


def _two_broken_tables(folder):
    folder.mkdir()
    pd.DataFrame({"product_id": ["a", "a"], "category": ["x", "y"], "price": [1.0, 2.0]}).to_csv(
        folder / "products.csv", index=False
    )
    (folder / "customers.parquet").write_bytes(b"broken")
    pd.DataFrame(
        {
            "customer_id": ["c"],
            "product_id": ["a"],
            "timestamp": ["not a time"],
            "event": ["buy"],
            "quantity": [1],
        }
    ).to_parquet(folder / "interactions.parquet")


def test_validate_and_profile_report_every_broken_table(tmp_path):
    folder = tmp_path / "store"
    _two_broken_tables(folder)
    env = {**os.environ, "SHOPML_HOME": str(tmp_path / "home")}
    for args in (
        ["validate", str(folder)],
        ["profile", "--source", "files", "--path", str(folder)],
    ):
        result = shopml(*args, env=env)
        assert_clean_error(result, "3 tables break the data contract")
        assert "products.product_id: duplicate id" in result.stderr
        assert str(folder / "customers.parquet") in result.stderr
        assert "interactions.timestamp: unparseable timestamp" in result.stderr
        assert "interactions.event: value not in" in result.stderr


def test_bench_generator_rejects_an_unknown_scale():
    assert_clean_error(shopml("bench", "generator", "--scales", "tiny,huge"), "--scales", "huge")


def test_generate_into_an_unwritable_place_names_out(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = shopml("generate", "--out", str(tmp_path / "a_file" / "sub" / "store"))
    assert_clean_error(result, "--out", "not a writable folder")


def test_bad_paths_configs_and_families_are_clean_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("this is = not toml [")
    (tmp_path / "unknown.toml").write_text("no_such_key = 3\n")
    env = {**os.environ, "SHOPML_HOME": str(tmp_path / "home")}
    cases = [
        (["validate", str(tmp_path / "nowhere")], "nowhere"),
        (["profile", "--source", "store", "--path", str(tmp_path / "nowhere")], "nowhere"),
        (["profile", "--source", "store"], "path"),
        (["train", "fraud", "--config", str(tmp_path / "missing.toml")], "missing.toml"),
        (["train", "recommender", "--config", str(tmp_path / "bad.toml")], "not valid TOML"),
        (["train", "forecast", "--config", str(tmp_path / "unknown.toml")], "no_such_key"),
        (["runs", "nofamily"], "nofamily"),
        (["bench", "fraud-handbook", "--path", str(tmp_path / "nowhere.parquet")], "nowhere"),
    ]
    for args, name in cases:
        assert_clean_error(shopml(*args, env=env), name)


def test_out_of_range_numbers_are_refused_while_parsing(tmp_path):
    cases = [
        (["generate", "--out", str(tmp_path / "s"), "--seed", "-1"], "'--seed'"),
        (["generate", "--out", str(tmp_path / "s"), "--days", "5"], "'--days'"),
        (["ui", "--port", "99999"], "'--port'"),
        (["serve", "recommend", "--port", "0"], "'--port'"),
        (["serve", "recommend", "--workers", "0"], "'--workers'"),
    ]
    for args, name in cases:
        assert_clean_error(shopml(*args, env=wide_env()), name)
