"""The fraud label store: one table in a real database (SQLite here, PostgreSQL started by the
test), written by the CLI and the service, all or nothing per batch, repeats are no-ops and
corrections override; applied over a payments table with each label's time."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fraud_helpers import synthetic_payments
from test_loaders import postgres_url  # noqa: F401 - the real PostgreSQL fixture
from typer.testing import CliRunner

from cli.main import app
from features.fraud.batch import compute_batch
from features.fraud.definition import DAY, FeatureSet
from features.fraud.labels import Label, LabelStore, LabelStoreError, apply_labels
from models.fraud import FraudEngine, FraudScorer
from serving.checkout import Checkout
from serving.endpoints import Unavailable, error_response
from serving.fraud_schemas import LabelsRequest
from shopml.errors import DataError
from shopml.settings import load_settings

T1, T2, T3 = datetime(2024, 3, 1, 12), datetime(2024, 3, 5), datetime(2024, 2, 20)


def _semantics(store: LabelStore) -> None:
    """Add, repeat (no-op), correct, stale, and a failing batch that leaves nothing behind."""
    first = store.write([Label("a", True, T1), Label("b", False, T1)], "cli")
    assert (first.added, first.corrected, first.unchanged) == (2, 0, 0)
    again = store.write([Label("a", True, T2)], "service")  # same label later: known since T1
    assert (again.added, again.corrected, again.unchanged, again.changed) == (0, 0, 1, [])
    fix = store.write([Label("a", False, T2), Label("b", True, T3)], "service")
    assert (fix.corrected, fix.stale) == (1, 1)  # b's label from before T1 is stale
    df = store.read().set_index("transaction_id")
    assert df.loc["a", "is_fraud"] == False and df.loc["a", "label_time"] == T2  # noqa: E712
    assert df.loc["a", "source"] == "service" and df.loc["b", "source"] == "cli"
    assert df.loc["b", "is_fraud"] == False and df["received_at"].notna().all()  # noqa: E712
    assert len(store) == 2
    with pytest.raises(LabelStoreError, match="label store"):  # NOT NULL fails on the 2nd row
        store.write([Label("c", True, T1), Label("d", True, None), Label("b", True, T2)], "x")
    after = store.read().set_index("transaction_id")
    assert sorted(after.index) == ["a", "b"] and after.loc["b", "is_fraud"] == False  # noqa: E712


def test_label_store_semantics_sqlite(tmp_path):
    _semantics(LabelStore(f"sqlite:///{tmp_path / 'deep' / 'labels.db'}"))


def test_label_store_semantics_postgresql(postgres_url):  # noqa: F811
    store = LabelStore(postgres_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS fraud_labels")
    _semantics(store)
    assert "postgresql" in store.where
    store.dispose()


def test_unreachable_store_is_a_named_error_without_password_and_a_503(tmp_path):
    store = LabelStore("postgresql+psycopg://me:s3cret@127.0.0.1:1/db")
    with pytest.raises(LabelStoreError) as err:
        store.write([Label("a", True, T1)], "cli")
    assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
    engine = FraudEngine.load(_saved_engine(tmp_path), label_store=store)
    req = LabelsRequest.model_validate({"labels": [{"transaction_id": "a", "is_fraud": True}]})
    with pytest.raises(Unavailable) as down:
        Checkout(engine, "v1").labels(req)
    status, body = error_response(down.value)
    assert status == 503 and b"label store" in body and b"s3cret" not in body


def test_cli_and_service_write_the_one_store(tmp_shopml_home, tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text(
        "transaction_id,is_fraud,label_time,customer_id,terminal_id\n"
        "t1,true,2024-01-02T00:00:00,c1,m1\nt2,false,,c2,m2\n"
    )
    res = CliRunner().invoke(app, ["fraud", "ingest-labels", str(f)])
    assert res.exit_code == 0, res.output
    assert "2 labels stored" in res.output and "2 new" in res.output
    res = CliRunner().invoke(app, ["fraud", "ingest-labels", str(f)])
    assert "0 new, 0 corrected, 2 unchanged" in res.output, res.output

    engine = _saved_engine(tmp_path)  # loaded as the service loads it, with the store
    engine = FraudEngine.load(engine, label_store=LabelStore.open(load_settings()))
    req = LabelsRequest.model_validate({"labels": [{"transaction_id": "t2", "is_fraud": True}]})
    answer = Checkout(engine, "v1").labels(req)
    assert answer["accepted"] == 1
    stored = LabelStore.open(load_settings()).read().set_index("transaction_id")
    assert stored["source"].to_dict() == {"t1": "cli", "t2": "service"}
    assert bool(stored.loc["t2", "is_fraud"]) is True


def _saved_engine(tmp_path) -> Path:
    """A small fraud engine saved to a folder (a 2-round scorer on synthetic payments)."""
    fs = FeatureSet()
    df = synthetic_payments(400, seed=3)
    X = compute_batch(df, fs).to_numpy()
    scorer = FraudScorer(
        list(fs.names), feature_version=fs.version, num_boost_round=2, num_threads=1
    )
    scorer.fit(X, df["is_fraud"].to_numpy())
    return FraudEngine(scorer, fs).save(tmp_path / "engine")


def test_cli_bad_labels_file_is_one_line_exit_2(tmp_shopml_home, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("transaction_id,is_fraud\nt1,true\nt2,maybe\n")
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "fraud", "ingest-labels", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: label.is_fraud: must be true or false, got 'maybe'"
    ]
    f.write_text("tx,fraud\nt1,true\n")
    res = CliRunner().invoke(app, ["fraud", "ingest-labels", str(f)])
    assert isinstance(res.exception, DataError) and "transaction_id" in str(res.exception)
    assert len(LabelStore.open()) == 0  # nothing of the bad batches was stored


def test_applied_labels_count_in_features_from_their_label_time():
    t0 = pd.Timestamp("2024-01-01")
    pay = pd.DataFrame(
        {
            "transaction_id": [f"p{i}" for i in range(6)],
            "timestamp": [t0 + pd.Timedelta(days=d) for d in (0, 1, 2, 3, 4, 5)],
            "customer_id": "c",
            "card_id": "c",
            "terminal_id": "m",
            "amount": 10.0,
            "currency": "EUR",
            "is_fraud": [False, False, False, False, False, True],
            "label_time": pd.Series([pd.NaT] * 6, dtype="datetime64[ns]"),
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ["p0", "p5", "zz"],
            "is_fraud": [True, False, True],
            "label_time": [t0 + pd.Timedelta(days=2, hours=12), t0, t0],
        }
    )
    done = apply_labels(pay, labels)
    assert (done.applied, done.flipped) == (2, 2)
    assert done.payments["is_fraud"].tolist() == [True, False, False, False, False, False]
    known = compute_batch(done.payments, FeatureSet(label_delay=DAY))["customer_known_frauds_7d"]
    assert known.tolist() == [0, 0, 0, 1, 1, 1]  # p0's fraud is known from day 2, 12:00 on
    assert np.array_equal(pay["is_fraud"], [False] * 5 + [True])  # the input is left alone
