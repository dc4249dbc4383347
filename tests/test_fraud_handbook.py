"""The fraud-handbook benchmark on payments of another calendar: every window is an offset from
the data's first day, and the handbook's own first day gives the handbook's dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from experiments import fraud_handbook
from features.loaders.fraud_handbook import DEFAULT
from shopml.errors import DataError
from shopml.settings import load_settings

HANDBOOK_FILE = load_settings().datasets_dir / DEFAULT


def _payments_file(path, first_day: str, days: int = 140, per_day: int = 30, seed: int = 0):
    """A tiny file in the handbook's format: 60 customers, 40 terminals, frauds are the large
    amounts (the handbook's scenario 1)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    start = pd.Timestamp(first_day)
    when = start + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    amount = np.round(rng.gamma(2.0, 40.0, n), 2)
    fraud = (amount > 220).astype("int64")
    pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype="int64"),
            "TX_DATETIME": when,
            "CUSTOMER_ID": rng.integers(0, 60, n),
            "TERMINAL_ID": rng.integers(0, 40, n),
            "TX_AMOUNT": amount,
            "TX_FRAUD": fraud,
            "TX_FRAUD_SCENARIO": fraud,
        }
    ).to_parquet(path)
    return path


def test_protocol_windows_are_offsets_from_the_first_day(tmp_path, capsys):
    file = _payments_file(tmp_path / "transactions.parquet", "2021-03-15")
    result = fraud_handbook.run(tmp_path / "out.json", path=file)
    assert result["calendar"] == {
        "first_day": ["2021-03-15"],
        "history": ["2021-04-21", "2021-07-07"],
        "train": ["2021-07-08", "2021-07-14"],
        "test": ["2021-07-22", "2021-07-28"],
        "validation_train": ["2021-06-24", "2021-06-30"],
        "validation_test": ["2021-07-08", "2021-07-14"],
    }
    assert result["variants"][0]["auc_roc"] > 0.9  # large amounts are the frauds: easy
    assert (tmp_path / "out.json").is_file()


def test_the_handbook_calendar_keeps_its_dates():
    """Offsets from the handbook's first day give exactly the dates the protocol always had."""
    data = fraud_handbook.Handbook(*[None] * 6, first_day=fraud_handbook.HANDBOOK_FIRST_DAY)
    calendar = data.calendar(fraud_handbook.TRAIN_OFFSET_DAYS)
    assert calendar["first_day"] == ["2018-04-01"]
    assert calendar["train"] == ["2018-07-25", "2018-07-31"]
    assert calendar["test"] == ["2018-08-08", "2018-08-14"]
    assert calendar["validation_test"] == ["2018-07-25", "2018-07-31"]


@pytest.mark.skipif(not HANDBOOK_FILE.is_file(), reason=f"{HANDBOOK_FILE} absent")
def test_the_handbook_data_starts_on_the_handbook_first_day():
    stamps = pq.read_table(HANDBOOK_FILE, columns=["TX_DATETIME"])["TX_DATETIME"]
    first = pd.Timestamp(pc.min(stamps).as_py()).normalize()
    assert first == fraud_handbook.HANDBOOK_FIRST_DAY


def test_too_short_data_is_a_data_error_naming_the_span(tmp_path):
    file = _payments_file(tmp_path / "transactions.parquet", "2021-03-15", days=100, per_day=5)
    with pytest.raises(DataError, match="needs 136 days of payments from the first day 2021-03-15"):
        fraud_handbook.run(None, path=file)


def test_validation_choice_does_not_depend_on_measured_time(tmp_path, monkeypatch):
    """Candidates within 0.002 of the best are told apart by a deterministic cost, so a run
    where the fits seem to take 1, 5, 9 s and one where they take 9, 5, 1 s choose alike."""
    file = _payments_file(tmp_path / "transactions.parquet", "2021-03-15")
    data, _, _ = fraud_handbook._load(file)
    fit = fraud_handbook._fit_full
    s_val = fraud_handbook.TRAIN_OFFSET_DAYS - fraud_handbook.VALIDATION_SHIFT_DAYS
    choices = []
    for seconds in ([1.0, 5.0, 9.0], [9.0, 5.0, 1.0]):
        timing = iter(seconds)

        def timed_fit(*args, _timing=timing):
            scorer, hist, _ = fit(*args)
            return scorer, hist, next(_timing)

        monkeypatch.setattr(fraud_handbook, "_fit_full", timed_fit)
        best, val = fraud_handbook._choose_on_validation(data, s_val)
        choices.append(best)
    scores = [fraud_handbook._score(v) for v in val.values()]
    assert max(scores) - min(scores) <= 0.002, val  # a tie: the cost decides
    assert choices[0] == choices[1] == "lgb-b-filtered", (choices, val)
