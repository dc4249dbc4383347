"""Progress bars: drawn on a terminal, silent in pipes, logs and CI (issue 11)."""

from __future__ import annotations

import io

from features.generator import GeneratorConfig, generate
from shopml import progress as progress_module
from shopml.progress import progress, progress_bar, progress_enabled


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal and keeps what is drawn on it."""

    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> FakeTerminal:
    """stderr is a terminal, outside CI, with no SHOPML_PROGRESS override (set in the test
    body: pytest puts its own stderr back between a fixture and the test)."""
    screen = FakeTerminal()
    monkeypatch.setattr(progress_module.sys, "stderr", screen)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SHOPML_PROGRESS", raising=False)
    return screen


def test_bars_draw_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    assert progress_enabled()
    assert list(progress(range(3), "counting")) == [0, 1, 2]
    assert "counting:" in terminal.getvalue() and "/3" in terminal.getvalue()


def test_bars_are_silent_in_ci_off_a_terminal_and_when_disabled(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with progress_bar("asked off", 2, enabled=False) as bar:
        bar.update(2)
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    assert list(progress(range(3), "in ci")) == [0, 1, 2]
    monkeypatch.delenv("CI")
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())  # a pipe or a log file
    assert not progress_enabled()
    assert terminal.getvalue() == ""


def test_shopml_progress_overrides_the_terminal_test(monkeypatch):
    on_terminal(monkeypatch)
    monkeypatch.setenv("SHOPML_PROGRESS", "0")
    assert not progress_enabled()
    monkeypatch.setenv("SHOPML_PROGRESS", "1")
    monkeypatch.setenv("CI", "1")
    monkeypatch.setattr(progress_module.sys, "stderr", io.StringIO())
    assert progress_enabled()


def test_generator_progress_is_quiet_off_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("SHOPML_PROGRESS", raising=False)
    generate(GeneratorConfig(scale="tiny", days=14, customers=30, products=30), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_generator_draws_its_stages_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    generate(GeneratorConfig(scale="tiny", days=14, customers=30, products=30), progress=True)
    drawn = terminal.getvalue()
    assert "generate tiny:" in drawn and "/6" in drawn and "catalog" in drawn


def test_training_rounds_show_on_a_terminal(monkeypatch):
    import numpy as np

    from models.fraud import FraudScorer

    terminal = on_terminal(monkeypatch)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] + rng.normal(scale=0.5, size=400) > 1.0
    FraudScorer(num_boost_round=7, min_data_in_leaf=5, calibration="none").fit(X, y)
    assert "fraud scorer:" in terminal.getvalue() and "/7 " in terminal.getvalue()
