"""Where a job computes: in this process (`local`) or on a Dask cluster (`dask`).

Every job config has a `[compute]` section (`ComputeConfig`). `engine = "dask"` connects to the
scheduler named by `SHOPML_DASK_SCHEDULER` or `scheduler`, else starts a LocalCluster of
`n_workers` processes with `memory_limit` each, for the length of the job (`open_compute`).
Jobs ask the `Compute` they are handed, never a global: `compute.client` is None locally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from shopml.config import ConfigModel
from shopml.errors import ConfigError


class ComputeConfig(ConfigModel):
    """The `[compute]` section of a job config."""

    engine: Literal["local", "dask"] = "local"
    scheduler: str | None = Field(
        None, description="address of a running Dask scheduler (SHOPML_DASK_SCHEDULER wins)"
    )
    n_workers: int = Field(2, ge=1, le=512, description="LocalCluster worker processes")
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = Field("6GB", description="LocalCluster memory limit per worker")
    partitions: int | None = Field(
        None, ge=1, description="partitions of the data (default: two per worker thread)"
    )


@dataclass
class Compute:
    """The engine a job runs on; `client` is a `distributed.Client` on Dask, None locally."""

    config: ComputeConfig = field(default_factory=ComputeConfig)
    client: Any = None
    scheduler: str | None = None

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def is_dask(self) -> bool:
        return self.client is not None

    @property
    def n_workers(self) -> int:
        """Workers of the cluster (1 for the local engine)."""
        if self.client is None:
            return 1
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {})) or 1

    @property
    def n_partitions(self) -> int:
        """How many pieces to cut a table into: the config's, else two per worker thread."""
        if self.config.partitions:
            return self.config.partitions
        if self.client is None:
            return 1
        threads = sum(self.client.nthreads().values()) or 1
        return 2 * threads

    def describe(self) -> dict[str, object]:
        """What a run records about its engine (MLflow params `compute.*`)."""
        out: dict[str, object] = {"engine": self.engine, "n_workers": self.n_workers}
        if self.client is not None:
            out["scheduler"] = self.scheduler or "LocalCluster"
            out["memory_limit"] = self.config.memory_limit if self.scheduler is None else "cluster"
        return out


LOCAL = Compute()

# Distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536; any fixed glibc threshold
# turns off the adaptive mmap threshold, so every NumPy temporary over 128 KB is mapped and
# page-faulted anew: the fraud kernels ran 1.5-2x slower in a worker than in this process.
# LocalClusters started here keep glibc's defaults (memory still returned past 32 MB blocks).
WORKER_MALLOC = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@contextlib.contextmanager
def open_compute(config: ComputeConfig | None, scheduler: str | None = None) -> Iterator[Compute]:
    """The engine of `config` for the length of a job; `scheduler` (SHOPML_DASK_SCHEDULER) wins.

    A LocalCluster started here is closed on the way out; a named scheduler is only connected to.
    """
    config = config or ComputeConfig()
    if config.engine == "local":
        yield Compute(config)
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise ConfigError(
            "compute.engine: 'dask' needs the dask and distributed packages"
        ) from None
    address = scheduler or config.scheduler
    if address:
        try:
            client = Client(address, timeout="20s")
        except OSError as err:
            raise ConfigError(
                f"compute.scheduler: cannot reach the Dask scheduler at {address}: {err}"
            ) from None
        try:
            yield Compute(config, client, address)
        finally:
            client.close()
        return
    import dask

    with dask.config.set({WORKER_MALLOC: None}):  # see WORKER_MALLOC
        cluster = LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
    client = Client(cluster)
    try:
        yield Compute(config, client, None)
    finally:
        client.close()
        cluster.close()
