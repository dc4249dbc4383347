"""The fraud job's data and training on Dask (`[compute] engine = "dask"`).

The payments stay on the workers as a Dask dataframe: labels from the label store are applied
per partition, the time split is decided from the first and last payment day, the features come
from `features.fraud.batch_dask` (the local kernels, bit-identical values), and the booster is
trained by `lightgbm.dask` on the training rows where they lie; it is the same native
`lightgbm.Booster` the local engine makes (saved as `booster.txt`, loaded by serving).

Only the calibration and test periods (a few weeks) and the logistic baseline's handbook
features of the training rows come to the client, to calibrate and to score exactly as
`fraud_job` does locally. With `model.neg_sample_rate < 1` the genuine training payments are
sampled on the workers by a hash of their row number and the seed (the same sample on any
partitioning; the local engine draws its own, so the two boosters differ within tolerance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.frames import check_unique_ids, repeated_id_hashes
from features.fraud import batch_dask
from features.fraud.definition import HANDBOOK_BASELINE, FeatureSet
from features.fraud.labels import LabelStore, apply_labels
from features.sources import load_frames
from features.store import Store
from models.fraud import FraudScorer
from shopml.compute import Compute
from shopml.errors import DataError
from shopml.settings import Settings

ROW = batch_dask.ROW
PART = "_period"  # 1 train, 2 calibration, 3 test, 0 neither (warm-up, the label delay gap)
KEEP = "_keep"
PERIODS = {"train": 1, "calibration": 2, "test": 3}


@dataclass
class DaskData:
    """What the Dask engine leaves on the cluster for training: the training rows' features
    (a persisted Dask dataframe) and their counts."""

    train: object
    n_train: int
    n_frauds: int
    baseline: tuple[np.ndarray, np.ndarray]  # handbook features and labels of the train rows


def _labelled(part: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return apply_labels(part, labels).payments


def _label_counts(part: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    done = apply_labels(part, labels)
    return pd.DataFrame({"applied": [done.applied], "flipped": [done.flipped]})


def _periods(part: pd.DataFrame, day0, bounds: dict, rate: float, seed: int) -> pd.DataFrame:
    """Day number, period and the rows to keep (every row of calibration and test; frauds and a
    hash-sampled share `rate` of the genuine training rows)."""
    day = ((part["timestamp"] - day0).dt.days).to_numpy()
    period = np.zeros(len(part), dtype="int8")
    for name, code in PERIODS.items():
        lo, hi = bounds[name]
        period[(day >= lo) & (day < hi)] = code
    sampled = _hash_unit(part[ROW].to_numpy(dtype="int64"), seed) < rate
    fraud = part["is_fraud"].to_numpy(dtype=bool)
    keep = (period >= 2) | ((period == 1) & (fraud | sampled))
    return part.assign(**{PART: period, KEEP: keep})


def _hash_unit(rows: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row number and seed (splitmix64): the same on any worker."""
    z = rows.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype("float64") / float(1 << 53)


def prepare(
    config,
    fs: FeatureSet,
    settings: Settings | None,
    compute: Compute,
    split_days,
    labelled=("train", "calibration", "test"),
):
    """The Dask side of `fraud_job.prepare`: a `Prepared` of the calibration and test periods
    (in the client) and the training rows left on the cluster (`DaskData`)."""
    import dask

    from training.fraud_job import Prepared

    n = compute.n_partitions
    frames = load_frames(config.source, settings, n, tables=("payments",))
    frames.require("payments")
    raw = frames.payments
    labels = _read_labels(config, settings)
    pay = raw.map_partitions(_labelled, labels, meta=raw._meta) if len(labels) else raw
    frames.tables["payments"] = pay  # what the run's data fingerprint covers
    pay = batch_dask.with_row_numbers(pay)
    has_ids = "transaction_id" in raw.columns
    t_min, t_max, counts, n_rows, repeated = dask.compute(
        pay["timestamp"].min(),
        pay["timestamp"].max(),
        raw.map_partitions(_label_counts, labels).sum() if len(labels) else None,
        raw.map_partitions(len, meta=(None, "int64")).sum(),
        repeated_id_hashes(raw, "transaction_id") if has_ids else None,
    )
    if has_ids:  # each partition was validated alone: no payment may be counted twice
        check_unique_ids(raw, "payments", "transaction_id", repeated)
    day0 = pd.Timestamp(t_min).normalize()
    last = int((pd.Timestamp(t_max) - day0).days)
    bounds = split_days(0, last, config.split)
    rate = float(config.model.neg_sample_rate)
    meta = pay._meta.assign(**{PART: np.int8(0), KEEP: False})
    pay = pay.map_partitions(_periods, day0, bounds, rate, config.seed, meta=meta)
    t0 = time.perf_counter()
    feats = batch_dask.feature_frame(
        pay, fs, n, keep=KEEP, carry=(PART, "is_fraud"), n_rows=int(n_rows)
    )  # persisted on the workers
    feature_seconds = time.perf_counter() - t0
    train = feats[feats[PART] == PERIODS["train"]]
    local, later, base, n_frauds = dask.compute(
        feats[feats[PART] >= PERIODS["calibration"]],
        pay[pay[PART] >= PERIODS["calibration"]],
        train[[*(c for c in HANDBOOK_BASELINE if c in fs.names), "is_fraud"]],
        train["is_fraud"].sum(),
    )
    local = local.sort_values(ROW, kind="stable")
    later = later.sort_values(ROW, kind="stable").reset_index(drop=True)
    if not np.array_equal(local[ROW].to_numpy(), later[ROW].to_numpy()):
        raise RuntimeError("fraud features and payments of the test periods do not line up")
    period = later[PART].to_numpy()
    day = ((later["timestamp"] - day0).dt.days).to_numpy()
    y = later["is_fraud"].to_numpy(dtype=bool)
    parts = {
        "train": np.empty(0, dtype="int64"),
        "calibration": np.flatnonzero(period == PERIODS["calibration"]),
        "test": np.flatnonzero(period == PERIODS["test"]),
    }
    n_train = int(len(base))
    if "train" in labelled and not int(n_frauds):
        raise DataError("the train period has no fraud labels; use a longer or larger store")
    for name in (p for p in labelled if p != "train"):
        if not y[parts[name]].any():
            raise DataError(f"the {name} period has no fraud labels; use a longer or larger store")
    cols = {c: local[c].to_numpy(dtype="float64") for c in fs.names}
    store = Store(payments=later.drop(columns=[ROW, PART, KEEP]), name=frames.name)
    label_counts = {"labels_applied": 0.0, "labels_flipped": 0.0}
    if counts is not None:
        label_counts = {
            "labels_applied": float(counts["applied"]),
            "labels_flipped": float(counts["flipped"]),
        }
    base_names = [c for c in HANDBOOK_BASELINE if c in fs.names]
    dask_data = DaskData(
        train=train[list(fs.names) + ["is_fraud"]],
        n_train=n_train,
        n_frauds=int(n_frauds),
        baseline=(base[base_names].to_numpy(dtype="float64"), base["is_fraud"].to_numpy(bool)),
    )
    data = Prepared(store, cols, day, y, parts, feature_seconds, label_counts)
    data.frames = frames  # the fingerprint of the run: every payment, streamed on the workers
    return data, dask_data


def _read_labels(config, settings: Settings | None) -> pd.DataFrame:
    """The label store's labels (small: one row per late label), empty when not applied."""
    if not config.apply_labels:
        return pd.DataFrame()
    labels = LabelStore.open(settings)
    try:
        return labels.read()
    finally:
        labels.dispose()


def fit(scorer: FraudScorer, fs: FeatureSet, data, dask_data: DaskData, compute: Compute) -> dict:
    """Train the booster with `lightgbm.dask` on the training rows where they lie, then
    calibrate on the calibration period in the client (`FraudScorer.calibrate`)."""
    import lightgbm.dask as lgbd

    params = scorer.lgb_params(dask_data.n_train, dask_data.n_frauds)
    params.pop("num_threads", None)  # lightgbm.dask runs as many threads as each worker has
    params.pop("verbose", None)
    train = dask_data.train
    t0 = time.perf_counter()
    model = lgbd.DaskLGBMClassifier(
        client=compute.client,
        n_estimators=scorer.num_boost_round,
        verbose=-1,
        **params,
    )
    model.fit(train[list(fs.names)], train["is_fraud"].astype("int8"))
    booster = model.booster_
    cal = data.parts["calibration"]
    X_cal = np.column_stack([data.cols[c][cal] for c in fs.names])
    scorer.calibrate(booster, len(fs.names), X_cal, data.y[cal])
    return {
        "train_seconds": time.perf_counter() - t0,
        "n_train": float(dask_data.n_train),
        "n_calibration": float(len(cal)),
    }
