"""Fraud features: known answers, brute-force windows, point-in-time and label-delay rules,
and parity of the online path (in-memory and Redis) with the batch path."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.fraud.batch import compute_batch
from features.fraud.definition import FeatureSet
from features.fraud.online import OnlineFeatures, bootstrap_online, replay_frame
from features.fraud.state_store import (
    CircuitBreaker,
    InMemoryStateStore,
    RedisStateStore,
    StoreUnavailable,
)
from shopml.errors import ConfigError, DataError

pytest_plugins = ["fraud_helpers"]

DAY = 86400


def _frame(rows) -> pd.DataFrame:
    """rows: (time string, customer, terminal, amount, is_fraud[, label_time])"""
    out = []
    for i, r in enumerate(rows):
        out.append(
            {
                "transaction_id": f"t{i}",
                "timestamp": pd.Timestamp(r[0]),
                "customer_id": r[1],
                "card_id": r[1],
                "terminal_id": r[2],
                "amount": float(r[3]),
                "currency": "EUR",
                "is_fraud": bool(r[4]),
                "label_time": pd.Timestamp(r[5]) if len(r) > 5 else pd.NaT,
            }
        )
    return pd.DataFrame(out)


def test_hand_made_stream_known_answers():
    df = _frame(
        [
            ("2024-01-01 10:00", "a", "m1", 10, False),
            ("2024-01-01 10:30", "a", "m2", 30, False),
            ("2024-01-01 12:00", "a", "m1", 200, False),
            ("2024-01-03 02:00", "b", "m1", 5, False),  # Wednesday, night
            ("2024-01-06 12:00", "a", "m1", 50, False),  # Saturday
        ]
    )
    X = compute_batch(df)
    assert X["customer_count_1h"].tolist() == [1, 2, 1, 1, 1]
    assert X["customer_count_1d"].tolist() == [1, 2, 3, 1, 1]
    assert X["customer_amount_mean_1d"].iloc[2] == pytest.approx(80.0)
    assert X["customer_amount_max_7d"].tolist() == [10, 30, 200, 5, 200]
    assert X["terminal_count_7d"].tolist() == [1, 1, 2, 3, 4]
    assert X["customer_secs_since_prev"].iloc[1] == 1800
    assert math.isnan(X["customer_secs_since_prev"].iloc[0])
    assert X["customer_new_terminal"].tolist() == [1, 1, 0, 1, 0]
    assert X["customer_terminals_ever"].tolist() == [1, 2, 2, 1, 2]
    # usual amount = mean of the customer's previous payments in 30 days
    assert X["customer_amount_to_usual"].iloc[2] == pytest.approx(200 / 20)
    assert X["customer_amount_to_prev_max"].iloc[2] == pytest.approx(200 / 30)
    assert X["customer_spikes_7d"].tolist() == [0, 0, 1, 0, 1]
    assert X["is_night"].tolist() == [0, 0, 0, 1, 0]
    assert X["is_weekend"].tolist() == [0, 0, 0, 0, 1]
    assert X["hour"].tolist() == [10, 10, 12, 2, 12]


def test_simultaneous_payments_see_only_earlier_rows_of_the_stream():
    df = _frame([("2024-01-01 10:00", "a", "m", 1, False)] * 3)
    X = compute_batch(df)
    assert X["customer_count_1h"].tolist() == [1, 2, 3]


def test_fraud_label_counts_only_once_known():
    fs = FeatureSet(label_delay=7 * DAY)
    df = _frame(
        [
            ("2024-01-01 10:00", "a", "m", 10, True),  # known at 01-08 10:00
            ("2024-01-05 10:00", "b", "m", 10, False),  # not yet known
            ("2024-01-08 10:00", "c", "m", 10, False),  # known exactly now
            ("2024-01-09 09:00", "d", "n", 10, True, "2024-01-09 12:00"),  # label_time given
            ("2024-01-09 11:00", "e", "n", 10, False),
            ("2024-01-09 13:00", "f", "n", 10, False),
        ]
    )
    X = compute_batch(df, fs)
    assert X["terminal_known_frauds_7d"].tolist() == [0, 0, 1, 0, 0, 1]
    # a payment's own label never feeds its features, even if known at once
    assert X["customer_known_frauds_30d"].iloc[0] == 0
    # delayed count: payments of the terminal in [T - 7d - 1d, T - 7d), T = the start of the
    # payment's hour tile: at 01-08 10:00 the payment of 01-01 10:00 is in the next tile
    assert X["terminal_delayed_count_1d"].iloc[2] == 0
    assert X["terminal_fraud_rate_1d"].iloc[2] == 0.0
    late = compute_batch(_frame([*_rows_a_c(), ("2024-01-08 11:00", "g", "m", 10, False)]), fs)
    assert late["terminal_delayed_count_1d"].iloc[-1] == 1
    assert late["terminal_fraud_rate_1d"].iloc[-1] == pytest.approx(1.0)


def _rows_a_c():
    return [
        ("2024-01-01 10:00", "a", "m", 10, True),
        ("2024-01-05 10:00", "b", "m", 10, False),
        ("2024-01-08 10:00", "c", "m", 10, False),
    ]


def test_no_leak_future_rows_do_not_change_past_features(make_payments):
    df = make_payments(800, seed=3)
    X_all = compute_batch(df)
    cut = df["timestamp"].quantile(0.6)
    past = df[df["timestamp"] < cut]
    X_past = compute_batch(past)
    # labels: past rows whose labels are known only later must not matter for past features
    np.testing.assert_allclose(
        X_past.to_numpy(), X_all.loc[past.index].to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True
    )


def _window_start(ts: np.ndarray, w: int) -> np.ndarray:
    """Start of each payment's window: the start of its tile of `w` minus `w` (definition.py)."""
    g = np.timedelta64(FeatureSet().window_tile(w), "s")
    epoch = np.datetime64("1970-01-01T00:00:00", "ns")
    return epoch + ((ts - epoch) // g) * g - np.timedelta64(w, "s")


def _brute_counts(df: pd.DataFrame, w: int) -> list[int]:
    order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    rank = np.empty(len(df), dtype=int)
    rank[order] = np.arange(len(df))
    out = []
    ts = df["timestamp"].to_numpy()
    cust = df["customer_id"].to_numpy()
    for i in range(len(df)):
        same = (cust == cust[i]) & (rank <= rank[i])
        inwin = ts >= _window_start(ts[i : i + 1], w)[0]
        out.append(int((same & inwin).sum()))
    return out


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20 * 24),
            st.sampled_from("abc"),
            st.sampled_from("xyz"),
            st.floats(0, 500, allow_nan=False),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_window_counts_sums_and_max_equal_brute_force(rows):
    df = pd.DataFrame(
        {
            "transaction_id": [str(i) for i in range(len(rows))],
            "timestamp": [pd.Timestamp("2024-01-01") + pd.Timedelta(hours=r[0]) for r in rows],
            "customer_id": [r[1] for r in rows],
            "card_id": [r[1] for r in rows],
            "terminal_id": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "currency": "EUR",
            "is_fraud": False,
            "label_time": pd.NaT,
        }
    )
    X = compute_batch(df)
    for w, lab in ((3600, "1h"), (DAY, "1d"), (7 * DAY, "7d")):
        assert X[f"customer_count_{lab}"].astype(int).tolist() == _brute_counts(df, w)
    ts = df["timestamp"].to_numpy()
    order = np.argsort(ts, kind="stable")
    rank = np.empty(len(df), dtype=int)
    rank[order] = np.arange(len(df))
    for i in range(len(df)):
        m = (df["customer_id"] == df["customer_id"][i]).to_numpy() & (rank <= rank[i])
        m &= ts >= _window_start(ts[i : i + 1], 7 * DAY)[0]
        amounts = df["amount"].to_numpy()[m]
        assert X["customer_amount_max_7d"][i] == pytest.approx(amounts.max())
        assert X["customer_amount_mean_7d"][i] == pytest.approx(amounts.mean(), rel=1e-9, abs=1e-9)


def _assert_parity(df: pd.DataFrame, store) -> None:
    fs = FeatureSet(label_delay=3 * DAY)
    B = compute_batch(df, fs).to_numpy()
    X, order = replay_frame(df, fs, store)
    Bo = B[order]
    bad = ~np.isclose(Bo, X, rtol=1e-9, atol=1e-9, equal_nan=True)
    wrong = [fs.names[j] for j in np.flatnonzero(bad.any(axis=0))]
    assert not wrong, f"online differs from batch for {wrong}"


def test_online_equals_batch_in_memory(make_payments):
    _assert_parity(make_payments(2000, seed=1), InMemoryStateStore())


def test_online_equals_batch_redis(redis_url, make_payments):
    store = RedisStateStore(redis_url, prefix="test:parity:")
    store.clear()
    _assert_parity(make_payments(600, seed=2), store)


def test_online_equals_batch_on_generated_store():
    from features.generator import GeneratorConfig, generate

    pay = generate(GeneratorConfig(scale="tiny", seed=0)).payments.iloc[:4000]
    _assert_parity(pay, InMemoryStateStore())


def test_record_false_leaves_state_unchanged():
    online = OnlineFeatures(FeatureSet())
    out = online.new_vector()
    online.compute(1_000_000, 10.0, "a", "a", "m", out)
    store = online.store
    before = [store.read_key(e, i) for e, i in (("customer", "a"), ("terminal", "m"))]
    online.compute(2_000_000, 99.0, "a", "a", "n", out, record=False)
    after = [store.read_key(e, i) for e, i in (("customer", "a"), ("terminal", "m"))]
    assert before == after and before[0]["windows"]["1h"]["count"] == 1
    assert store.read_key("terminal", "n") == {"entity": "terminal", "id": "n", "found": False}


def test_late_label_raises_terminal_risk_online():
    online = OnlineFeatures(FeatureSet(label_delay=0))
    out = online.new_vector()
    i = online.fs.index("terminal_known_frauds_1d")
    online.compute(0, 10.0, "a", "a", "m", out, transaction_id="t1")
    online.compute(1000, 10.0, "b", "b", "m", out)
    assert out[i] == 0
    online.add_fraud_label("a", "m", 1500)
    online.compute(2000, 10.0, "c", "c", "m", out)
    assert out[i] == 1
    assert online.store.lookup_payment("t1") == ("a", "m", 0)


def test_missing_columns_are_named():
    with pytest.raises(DataError, match="terminal_id"):
        compute_batch(
            pd.DataFrame(
                {
                    "timestamp": [pd.Timestamp("2024-01-01")],
                    "amount": [1.0],
                    "customer_id": ["a"],
                    "card_id": ["a"],
                }
            )
        )


def test_feature_set_round_trip_and_version():
    fs = FeatureSet(label_delay=3 * DAY)
    again = FeatureSet.from_dict(fs.to_dict())
    assert again == fs and again.version == fs.version
    assert FeatureSet().version != fs.version


def test_bootstrap_then_replay_of_the_horizon_matches_batch(make_payments):
    fs = FeatureSet(label_delay=3 * DAY)
    df = make_payments(3000, days=80, seed=5).sort_values("timestamp", kind="stable")
    df = df.reset_index(drop=True)
    day = (df["timestamp"] - df["timestamp"].min()).dt.days.to_numpy()
    B = compute_batch(df, fs).to_numpy()
    online = OnlineFeatures(fs)
    bootstrap_online(online, df[day < 20])
    rest = df[day >= 20]
    X, order = replay_frame(rest, fs, online.store)
    check = day[rest.index[order]] >= 20 + fs.replay_days + 1
    got, want = X[check], B[rest.index[order]][check]
    bad = ~np.isclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert check.sum() > 500
    assert not bad.any(), [fs.names[j] for j in np.flatnonzero(bad.any(axis=0))]


class _FlakyStore(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.down, self.calls = True, 0

    def read(self, keys, n_levels, tiles=None):
        self.calls += 1
        if self.down:
            raise ConnectionError("redis down")
        return super().read(keys, n_levels, tiles)


def test_circuit_breaker_fails_fast_then_tries_again():
    flaky = _FlakyStore()
    breaker = CircuitBreaker(flaky, retry_after=0.05)
    with pytest.raises(StoreUnavailable, match="unreachable"):
        breaker.read(["cu:1"], 3)
    with pytest.raises(StoreUnavailable, match="retrying"):  # open: the store is not asked
        breaker.read(["cu:1"], 3)
    assert flaky.calls == 1 and breaker.is_open
    flaky.down = False
    time.sleep(0.06)
    assert breaker.read(["cu:1"], 3) == [None] and not breaker.is_open


# ---------------------------------------------------------------- currencies

RATES = {"EUR": 1.0, "GBP": 1.14, "SEK": 0.091}


def _mixed(make_payments, n: int = 600) -> pd.DataFrame:
    """A stream whose customers pay in EUR, GBP and SEK (no fraud: the online path is fed
    payments only), amounts of similar size in every currency."""
    df = make_payments(n, days=40, seed=7)
    df["is_fraud"] = False
    cur = np.array(list(RATES))[np.random.default_rng(7).integers(0, 3, len(df))]
    df["currency"] = cur
    return df


def test_amounts_are_converted_to_the_base_currency(make_payments):
    fs = FeatureSet(rates=RATES)
    df = _mixed(make_payments)
    X = compute_batch(df, fs)
    rate = df["currency"].map(RATES).to_numpy()
    np.testing.assert_allclose(X["amount"], df["amount"] * rate, rtol=0, atol=0)
    one = df[df["customer_id"] == df["customer_id"].iloc[0]].sort_values("timestamp")
    first = one.index[0]  # the customer's first payment: its 30-day mean is its own amount
    assert X.loc[first, "customer_amount_mean_30d"] == one.loc[first, "amount"] * rate[first]
    assert FeatureSet(rates=RATES).version != FeatureSet(rates={**RATES, "GBP": 1.2}).version


def test_online_engine_equals_batch_with_mixed_currencies(make_payments):
    """The checkout path (engine.score with each payment's currency) gives the batch vector."""
    from models.fraud import FraudEngine, FraudScorer

    fs = FeatureSet(label_delay=3 * DAY, rates=RATES)
    df = _mixed(make_payments)
    B = compute_batch(df, fs).to_numpy()
    y = np.arange(len(df)) % 7 == 0
    scorer = FraudScorer(
        list(fs.names), feature_version=fs.version, num_boost_round=2, num_threads=1
    ).fit(B, y)
    engine = FraudEngine(scorer, fs, explain="never")
    order = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    rows = df.to_dict("records")
    online = np.empty_like(B)
    for i in order:
        engine.score(rows[i])
        online[i] = engine._x
    bad = ~np.isclose(online, B, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert not bad.any(), [fs.names[j] for j in np.flatnonzero(bad.any(axis=0))]
    assert set(df["currency"]) == set(RATES)


def test_a_currency_without_a_rate_is_refused_naming_it(make_payments):
    from serving.endpoints import error_response

    fs = FeatureSet(rates={"EUR": 1.0, "GBP": 1.14})
    df = _mixed(make_payments, 50)
    with pytest.raises(DataError, match=r"currency.*'SEK'"):
        compute_batch(df, fs)
    with pytest.raises(DataError, match=r"currency.*'SEK'") as err:
        fs.to_base(10.0, "SEK")
    status, body = error_response(err.value)
    assert status == 422 and b"currency" in body and b"SEK" in body
    with pytest.raises(ConfigError, match="rates.EUR"):
        FeatureSet(rates={"EUR": 2.0})
    with pytest.raises(ConfigError, match="rates.GBP"):
        FeatureSet(rates={"GBP": -1.0})
