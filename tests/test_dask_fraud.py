"""The fraud job on Dask (`[compute] engine = "dask"`) against the local engine, on `tiny`:
the same features bit for bit, metrics within tolerance, the same native booster format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dask_cluster import dask_client, dask_compute  # noqa: F401 (fixtures)

from features.fraud.batch import compute_columns
from features.fraud.definition import FeatureSet
from features.generator import GeneratorConfig, generate


@pytest.fixture(scope="module")
def tiny_payments():
    return generate(GeneratorConfig(scale="tiny", seed=3)).validated().payments


def test_dask_features_are_bit_identical_to_local(tiny_payments, dask_compute):  # noqa: F811
    fs = FeatureSet()
    local = compute_columns(tiny_payments, fs)
    dask = compute_columns(tiny_payments, fs, compute=dask_compute)
    assert list(dask) == list(local) == list(fs.names)
    differ = [n for n in fs.names if dask[n].tobytes() != local[n].tobytes()]
    assert not differ, f"features differ between engines: {differ}"
    assert np.isfinite(local["customer_count_1d"]).all()  # the comparison saw real values


def _job_config(engine: str):
    from training.fraud_job import FraudJobConfig

    cfg = FraudJobConfig()
    cfg.source.scale = "tiny"
    cfg.model.num_boost_round = 30
    cfg.compute.engine = engine
    cfg.register_model = engine == "dask"  # the registered model checked below is the Dask one
    return cfg


def test_fraud_job_on_dask_matches_local_and_registers_a_native_booster(
    tmp_shopml_home,
    dask_compute,  # noqa: F811
):
    import lightgbm as lgb
    import mlflow

    from registry.store import fetch
    from shopml.compute import Compute
    from training.fraud_job import train

    local = train(_job_config("local"), compute=Compute())
    dask = train(_job_config("dask"), compute=dask_compute)
    assert dask.data_fingerprint == local.data_fingerprint  # the same payments, seen whole
    # the same rows in each period, and the logistic baseline (same rows, same features) equal
    for name in ("n_train", "n_calibration", "labels_applied", "baseline_auc_roc"):
        assert dask.metrics[name] == local.metrics[name], name
    assert dask.metrics["baseline_average_precision"] == local.metrics["baseline_average_precision"]
    # the boosters differ (each worker bins its own rows, histograms are summed over workers):
    # on tiny's dozen test frauds that moves the ranking metrics by a few hundredths
    assert dask.metrics["auc_roc"] > 0.75
    assert abs(dask.metrics["auc_roc"] - local.metrics["auc_roc"]) <= 0.1
    params = mlflow.get_run(dask.run_id).data.params
    assert params["compute.cluster.engine"] == "dask"
    assert params["compute.cluster.n_workers"] == "2"
    assert mlflow.get_run(local.run_id).data.params["compute.cluster.engine"] == "local"
    native = fetch("fraud").native_dir  # the newest version: the Dask run's, as serving loads it
    booster = lgb.Booster(model_file=str(native / "booster.txt"))
    assert booster.num_trees() == 30


def test_negative_sampling_on_the_workers_depends_on_row_and_seed_only():
    from training.fraud_dask import _hash_unit

    rows = np.arange(200_000)
    u = _hash_unit(rows, seed=3)
    assert abs((u < 0.05).mean() - 0.05) < 0.003  # the configured share of genuine rows
    assert np.array_equal(_hash_unit(rows[5000:6000], 3), u[5000:6000])  # any partitioning
    assert not np.array_equal(_hash_unit(rows, 4), u)  # another seed, another sample


def test_a_card_shared_by_customers_of_two_buckets_still_gives_local_features(
    tiny_payments,
    dask_compute,  # noqa: F811
):
    """The card group is computed in the customers' buckets only while every card stays in one
    of them: a card used by two customers of different buckets sends it to buckets of its own."""
    from features.frames import from_pandas
    from features.fraud import batch_dask

    pay = tiny_payments.copy()
    n = batch_dask.bucket_count(len(pay), len(FeatureSet().names), dask_compute.n_partitions)
    customers = pay["customer_id"].drop_duplicates().to_numpy()
    bucket = batch_dask._key_buckets(customers, n)
    a, b = customers[0], customers[np.flatnonzero(bucket != bucket[0])[0]]
    card_of_a = pay.loc[pay["customer_id"] == a, "card_id"].iloc[0]
    rows_of_b = np.flatnonzero(pay["customer_id"].to_numpy() == b)[:3]
    pay.loc[pay.index[rows_of_b], "card_id"] = card_of_a  # one card, two customers' buckets
    fs = FeatureSet()
    local = compute_columns(pay, fs)
    gathered = compute_columns(pay, fs, compute=dask_compute)
    assert [n for n in fs.names if gathered[n].tobytes() != local[n].tobytes()] == []
    frame = batch_dask.feature_frame(from_pandas(pay, 3), fs, 4).compute()
    frame = frame.sort_values(batch_dask.ROW)
    assert np.array_equal(frame[batch_dask.ROW].to_numpy(), np.arange(len(pay)))
    differ = [n for n in fs.names if frame[n].to_numpy().tobytes() != local[n].tobytes()]
    assert not differ, f"the frame's features differ from local: {differ}"


def test_a_payment_id_in_two_partitions_is_a_named_contract_error(tiny_payments, dask_client):  # noqa: F811
    from features.frames import check_unique_ids, from_pandas, repeated_id_hashes
    from shopml.errors import DataError

    clean = from_pandas(tiny_payments, 3)
    assert not len(repeated_id_hashes(clean, "transaction_id").compute())
    check_unique_ids(
        clean, "payments", "transaction_id", repeated_id_hashes(clean, "transaction_id")
    )
    twice = pd.concat([tiny_payments, tiny_payments.iloc[[5]]], ignore_index=True)
    frame = from_pandas(twice, 3)  # the copy lands in the last partition, the first in the first
    repeated = repeated_id_hashes(frame, "transaction_id").compute()
    with pytest.raises(DataError) as err:
        check_unique_ids(frame, "payments", "transaction_id", repeated)
    text = str(err.value)
    assert "payments.transaction_id: duplicate id in 1 row across partitions" in text
    assert "partition 2 row" in text and "repeats partition 0 row 5" in text


def test_equal_hashes_of_distinct_ids_are_no_duplicate(tiny_payments, dask_client):  # noqa: F811
    """Only the ids themselves decide: rows sharing a hash are read back and compared."""
    from features.frames import check_unique_ids, from_pandas

    frame = from_pandas(tiny_payments, 3)
    ids = tiny_payments["transaction_id"].to_numpy(dtype=object)[[0, 7]]
    hashes = pd.util.hash_array(ids)  # as if these two distinct ids had collided
    check_unique_ids(frame, "payments", "transaction_id", pd.DataFrame({"h": hashes, "n": 2}))
