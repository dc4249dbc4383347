"""A LocalCluster of two worker processes for the Dask tests, started once per test session.

Import the fixture into a test module (`from dask_cluster import dask_client, dask_compute`)
and ask for `dask_client` (a `distributed.Client`) or `dask_compute` (a `shopml.compute.Compute`
on that client, what jobs take). Workers are processes, as on a real cluster, so whatever a task
needs must pickle; each has 1 thread and a 2 GB limit (the tests run on `tiny`).
"""

from __future__ import annotations

import logging

import pytest

from shopml.compute import Compute, ComputeConfig

N_WORKERS = 2


@pytest.fixture(scope="session")
def dask_client():
    """A `distributed.Client` on a LocalCluster of 2 worker processes (closed after the session)."""
    distributed = pytest.importorskip("distributed")
    # p2p shuffles log every start and end at WARNING: noise in a test log
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    cluster = distributed.LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        memory_limit="2GB",
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def dask_compute(dask_client) -> Compute:
    """The engine a job is handed on that cluster (`engine = "dask"`, 4 partitions)."""
    config = ComputeConfig(engine="dask", n_workers=N_WORKERS, memory_limit="2GB", partitions=4)
    return Compute(config, dask_client, None)
