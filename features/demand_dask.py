"""The daily demand panel built on a Dask cluster, one product partition per task.

`build_panel` (features.demand) is line-level work (netting cancellations against the sale they
undo, summing units, revenue and lines per product and day) followed by panel-level work on the
products x days matrices. A cancellation is matched within its customer and product, so every
product's lines can be netted and summed without the others: `build_panel_dask` cuts the order
lines into product partitions (a stable hash of the product id), runs the same functions of
features.demand on each partition on the cluster and stacks the returned rows in the panel's
sorted product order. What needs the whole shop stays on the caller, as in `build_panel`: the
calendar and closed days (from the shop's line count per day), the `top_n` cut (from every
product's total) and the per-location and per-series closures on the assembled panel. The panel
is the one `build_panel` returns; tests/test_dask_jobs.py checks it, array for array.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.demand import (
    DemandPanel,
    PanelConfig,
    _assemble,
    _calendar,
    _daily_sales,
    _kept_products,
    _matrices,
    _net_cancellations,
    _sale_lines,
    build_panel,
)
from features.known_future import KnownFuture
from shopml.compute import Compute


def product_partition(product_ids: pd.Series, n_partitions: int) -> np.ndarray:
    """The partition (0..n-1) of each product id: a stable hash, the same in every process."""
    hashed = pd.util.hash_pandas_object(product_ids.astype(str), index=False).to_numpy()
    return (hashed % np.uint64(n_partitions)).astype(np.int64)


def build_panel_on(
    compute: Compute | None,
    order_lines: pd.DataFrame,
    products: pd.DataFrame | None = None,
    config: PanelConfig | None = None,
    known: KnownFuture | None = None,
) -> DemandPanel:
    """`build_panel` on the engine of `compute`: here locally, per product partition on Dask."""
    if compute is None or not compute.is_dask:
        return build_panel(order_lines, products, config, known)
    return build_panel_dask(order_lines, products, config, known, compute)


def build_panel_dask(
    order_lines: pd.DataFrame,
    products: pd.DataFrame | None,
    config: PanelConfig | None,
    known: KnownFuture | None,
    compute: Compute,
) -> DemandPanel:
    """The demand panel of `order_lines`, its line-level work per product partition on the
    cluster of `compute` (see the module docstring)."""
    config = config or PanelConfig()
    lines = _sale_lines(order_lines, config)
    dates, closed_wd, closed = _calendar(lines, config)

    client = compute.client
    n = max(compute.n_partitions, 1)
    part = product_partition(lines["product_id"], n)
    pieces = [lines[part == i] for i in range(n)]
    futures = client.map(_partition_sales, [p for p in pieces if len(p)], pure=False)
    totals = pd.concat([f.result()[1] for f in futures]).sort_index()
    ids = _kept_products(totals, config)
    blocks = client.map(
        _partition_matrices, futures, keep=ids, dates=dates, closed=closed, pure=False
    )
    units, price, orders = _stack(ids, client.gather(blocks), len(dates))
    return _assemble(ids, dates, units, price, orders, closed, closed_wd, products, known, config)


def _partition_sales(lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One partition's net daily sales per (product, day) and each product's net units."""
    agg = _daily_sales(_net_cancellations(lines))
    return agg, agg.groupby(level=0)["units"].sum()


def _partition_matrices(sales, keep: np.ndarray, dates: pd.DatetimeIndex, closed: np.ndarray):
    """(ids, units, price, orders) of the partition's products that the panel keeps (`keep`:
    the panel's sorted product ids)."""
    agg, _ = sales
    ids = np.asarray(agg.index.get_level_values(0).unique(), dtype=object)
    ids = np.sort(ids[np.isin(ids, keep)])
    units, price, orders = _matrices(agg, ids, dates, closed)
    return ids, units, price, orders


def _stack(ids: np.ndarray, blocks, n_days: int):
    """The partitions' rows placed in the panel's sorted product order."""
    index = pd.Index(ids)
    units = np.empty((len(ids), n_days))
    price = np.empty((len(ids), n_days))
    orders = np.empty((len(ids), n_days))
    for part_ids, u, p, o in blocks:
        if not len(part_ids):
            continue
        rows = index.get_indexer(part_ids)
        units[rows], price[rows], orders[rows] = u, p, o
    return units, price, orders
