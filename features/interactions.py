"""The customer x product interaction matrix that every recommender trains on.

Events come from `interactions` (views, add-to-carts, purchases) and `order_lines` (sold units;
returns and cancellations, i.e. negative quantities, and guest lines are dropped: they are not
interest). Each event gets a weight (event kind x quantity factor x time decay); exact duplicate
events count once; cells are summed or maxed. Beside the weights the matrix keeps which cells
hold a purchase (`purchases`), so that a recommender can hide bought products and still show
viewed or carted ones. Id mappings are sorted, so the same data gives the same matrix, and they
are saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, field_validator

from features.store import Store
from shopml.compute import Compute
from shopml.config import ConfigModel
from shopml.errors import DataError

EVENT_COLUMNS = ["customer_id", "product_id", "timestamp", "event", "quantity"]


class InteractionConfig(ConfigModel):
    """How raw events become matrix weights."""

    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    )
    quantity_weighting: Literal["none", "log", "linear"] = "none"
    half_life_days: float | None = Field(default=None, gt=0)
    aggregate: Literal["sum", "max"] = "sum"
    binary: bool = False
    min_customer_products: int = Field(default=1, ge=1)
    min_product_customers: int = Field(default=1, ge=1)
    as_of: datetime | None = None
    purchases_from: Literal["auto", "interactions", "order_lines"] = "auto"
    exclude_products: list[str] = Field(default_factory=list)
    # train also on the storefront's feedback (POST /feedback: clicks as views, add-to-carts,
    # purchases unless order lines hold them), before the test period (features.feedback)
    include_feedback: bool = False

    @field_validator("event_weights")
    @classmethod
    def _known_events(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"view", "add_to_cart", "purchase"})
        if unknown:
            raise ValueError(f"unknown event(s) {unknown}; use view, add_to_cart, purchase")
        if any(w < 0 for w in value.values()):
            raise ValueError("event weights must be >= 0")
        return value


@dataclass
class InteractionMatrix:
    """CSR customer x product weights (float32) with the id mappings of its rows and columns.

    `purchases` is the binary CSR of the cells with at least one purchase event; None (a matrix
    built by hand) means every interaction counts as a purchase.
    """

    matrix: sp.csr_matrix
    customer_ids: np.ndarray
    product_ids: np.ndarray
    as_of: np.datetime64 | None = None
    last_seen_days: sp.csr_matrix | None = None  # same pattern: days since epoch of last event
    purchases: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        self.matrix.sort_indices()
        self.customer_ids = np.asarray(self.customer_ids).astype(str)
        self.product_ids = np.asarray(self.product_ids).astype(str)
        if self.matrix.shape != (len(self.customer_ids), len(self.product_ids)):
            raise DataError(
                f"matrix shape {self.matrix.shape} does not match "
                f"{len(self.customer_ids)} customers x {len(self.product_ids)} products"
            )
        if self.purchases is not None:
            self.purchases = sp.csr_matrix(self.purchases, dtype=np.float32)
            self.purchases.sort_indices()
            if self.purchases.shape != self.matrix.shape:
                raise DataError(
                    f"purchases shape {self.purchases.shape} does not match the matrix "
                    f"{self.matrix.shape}"
                )
        self.customer_index = {c: i for i, c in enumerate(self.customer_ids.tolist())}
        self.product_index = {p: i for i, p in enumerate(self.product_ids.tolist())}

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def purchased(self) -> sp.csr_matrix:
        """The purchase cells; every interaction when the matrix does not say."""
        return self.matrix if self.purchases is None else self.purchases

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.matrix
        bought = {}
        if self.purchases is not None:
            bought = {"p_indices": self.purchases.indices, "p_indptr": self.purchases.indptr}
        np.savez(
            folder / "interactions.npz",
            data=m.data,
            indices=m.indices,
            indptr=m.indptr,
            shape=np.array(m.shape),
            customer_ids=self.customer_ids,
            product_ids=self.product_ids,
            **bought,
        )

    @classmethod
    def load(cls, folder: str | Path) -> InteractionMatrix:
        with np.load(Path(folder) / "interactions.npz", allow_pickle=False) as z:
            shape = tuple(z["shape"])
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            bought = None
            if "p_indices" in z.files:
                ones = np.ones(len(z["p_indices"]), np.float32)
                bought = sp.csr_matrix((ones, z["p_indices"], z["p_indptr"]), shape=shape)
            return cls(m, z["customer_ids"], z["product_ids"], purchases=bought)


def events_frame(
    source: Store | pd.DataFrame, cfg: InteractionConfig | None = None
) -> pd.DataFrame:
    """All interest events as one frame (customer_id, product_id, timestamp, event, quantity).

    Purchases come from order_lines when the store has them (`purchases_from="auto"`), else from
    purchase interactions; negative-quantity lines and guest lines are dropped; duplicates once.
    """
    cfg = cfg or InteractionConfig()
    if isinstance(source, pd.DataFrame):
        frames = [_interaction_events(source, purchases=True)]
    else:
        has_lines = source.order_lines is not None and len(source.order_lines) > 0
        use_lines = cfg.purchases_from == "order_lines" or (
            cfg.purchases_from == "auto" and has_lines
        )
        if cfg.purchases_from == "order_lines" and not has_lines:
            raise DataError("purchases_from='order_lines' but the store has no order_lines")
        frames = []
        if source.interactions is not None:
            frames.append(_interaction_events(source.interactions, purchases=not use_lines))
        if use_lines:
            frames.append(_order_line_events(source.order_lines))
        if not frames:
            raise DataError("the store has neither interactions nor order_lines to recommend from")
    events = pd.concat(frames, ignore_index=True)
    if cfg.exclude_products:
        events = events[~events["product_id"].isin(cfg.exclude_products)]
    if cfg.as_of is not None:
        events = events[events["timestamp"] < pd.Timestamp(cfg.as_of)]
    return events.drop_duplicates(EVENT_COLUMNS).reset_index(drop=True)


def _interaction_events(df: pd.DataFrame, purchases: bool) -> pd.DataFrame:
    missing = [c for c in ("customer_id", "product_id") if c not in df.columns]
    if missing:
        raise DataError(f"interactions: missing column(s) {missing}")
    out = pd.DataFrame(
        {
            "customer_id": df["customer_id"].astype(str).to_numpy(),
            "product_id": df["product_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(df["timestamp"]).to_numpy()
            if "timestamp" in df
            else np.datetime64("1970-01-01", "ns"),
            "event": df["event"].to_numpy() if "event" in df else "purchase",
            "quantity": df["quantity"].to_numpy(dtype="int64") if "quantity" in df else 1,
        }
    )
    if not purchases:
        out = out[out["event"] != "purchase"]
    return out[df["customer_id"].notna().to_numpy()[out.index]]


def _order_line_events(df: pd.DataFrame) -> pd.DataFrame:
    keep = (df["quantity"].to_numpy() > 0) & df["customer_id"].notna().to_numpy()
    lines = df[keep]
    return pd.DataFrame(
        {
            "customer_id": lines["customer_id"].astype(str).to_numpy(),
            "product_id": lines["product_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(lines["timestamp"]).to_numpy(),
            "event": "purchase",
            "quantity": lines["quantity"].to_numpy(dtype="int64"),
        }
    )


def event_weights(events: pd.DataFrame, cfg: InteractionConfig, as_of=None) -> np.ndarray:
    """One weight per event: event kind x quantity factor x 0.5 ** (age / half-life)."""
    kinds = events["event"].to_numpy()
    w = np.zeros(len(events), dtype=np.float64)
    for kind, weight in cfg.event_weights.items():
        w[kinds == kind] = weight
    qty = np.maximum(events["quantity"].to_numpy(dtype="float64"), 1.0)
    if cfg.quantity_weighting == "log":
        w *= 1.0 + np.log(qty)
    elif cfg.quantity_weighting == "linear":
        w *= qty
    if cfg.half_life_days is not None and len(events):
        ts = events["timestamp"].to_numpy(dtype="datetime64[ns]")
        ref = np.datetime64(as_of, "ns") if as_of is not None else ts.max()
        age_days = (ref - ts).astype("timedelta64[s]").astype("float64") / 86400.0
        w *= np.power(0.5, np.maximum(age_days, 0.0) / cfg.half_life_days)
    return w


def build_matrix(
    source: Store | pd.DataFrame,
    cfg: InteractionConfig | None = None,
    *,
    customer_ids=None,
    product_ids=None,
    compute: Compute | None = None,
) -> InteractionMatrix:
    """Build the weighted customer x product matrix.

    `source` is a Store or an events frame (as from `events_frame`, e.g. a split's train part).
    Fixed `customer_ids` / `product_ids` pin the id mappings (events outside them are dropped);
    otherwise they are the sorted ids that pass the minimum-count filters. On a Dask `compute`
    the cells are aggregated on the cluster, per customer partition (`_cells_on_dask`); the
    matrix is the same, bit for bit.
    """
    cfg = cfg or InteractionConfig()
    events = events_frame(source, cfg) if isinstance(source, Store) else source
    if cfg.as_of is not None and not isinstance(source, Store):
        events = events[events["timestamp"] < pd.Timestamp(cfg.as_of)]
    if compute is not None and compute.is_dask:
        cells = _cells_on_dask(events, cfg, compute)
        return _matrix_from_cells(cells, cfg, customer_ids, product_ids)
    w = event_weights(events, cfg, as_of=cfg.as_of)
    events = events.assign(_w=w)[w > 0]
    if customer_ids is None and product_ids is None:
        events = _min_count_filter(events, cfg)
    customers = np.sort(events["customer_id"].unique()) if customer_ids is None else customer_ids
    products = np.sort(events["product_id"].unique()) if product_ids is None else product_ids
    customers = np.asarray(customers).astype(str)
    products = np.asarray(products).astype(str)
    rows = pd.Index(customers).get_indexer(events["customer_id"])
    cols = pd.Index(products).get_indexer(events["product_id"])
    keep = (rows >= 0) & (cols >= 0)
    rows, cols, vals = rows[keep], cols[keep], events["_w"].to_numpy()[keep]
    shape = (len(customers), len(products))
    ts = events["timestamp"].to_numpy(dtype="datetime64[ns]")[keep]
    days = ts.astype("datetime64[s]").astype("float64") / 86400.0
    bought = events["event"].to_numpy()[keep] == "purchase"
    cells = pd.DataFrame({"r": rows, "c": cols, "v": vals, "d": days, "p": bought})
    agg = cells.groupby(["r", "c"], sort=True).agg(
        v=("v", cfg.aggregate), d=("d", "max"), p=("p", "any")
    )
    r = agg.index.get_level_values(0).to_numpy()
    c = agg.index.get_level_values(1).to_numpy()
    v = np.ones(len(agg)) if cfg.binary else np.maximum(agg["v"].to_numpy(), 1e-30)
    m = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=shape, dtype=np.float32)
    last = sp.csr_matrix((agg["d"].to_numpy(), (r, c)), shape=shape, dtype=np.float64)
    p = agg["p"].to_numpy(bool)
    ones = np.ones(int(p.sum()), np.float32)
    purchases = sp.csr_matrix((ones, (r[p], c[p])), shape=shape, dtype=np.float32)
    as_of = np.datetime64(cfg.as_of, "ns") if cfg.as_of is not None else None
    return InteractionMatrix(
        m, customers, products, as_of=as_of, last_seen_days=last, purchases=purchases
    )


def _min_count_filter(events: pd.DataFrame, cfg: InteractionConfig) -> pd.DataFrame:
    """Drop rare products and customers (a few passes, as one removal can expose another)."""
    if cfg.min_customer_products <= 1 and cfg.min_product_customers <= 1:
        return events
    for _ in range(5):
        pairs = events[["customer_id", "product_id"]].drop_duplicates()
        per_product = pairs["product_id"].value_counts()
        per_customer = pairs["customer_id"].value_counts()
        ok_p = per_product.index[per_product >= cfg.min_product_customers]
        ok_c = per_customer.index[per_customer >= cfg.min_customer_products]
        before = len(events)
        events = events[events["product_id"].isin(ok_p) & events["customer_id"].isin(ok_c)]
        if len(events) == before:
            break
    return events


# ---- the Dask path ---------------------------------------------------------------------------
CELL_COLUMNS = ["customer_id", "product_id", "v", "d", "p"]


def _cells_on_dask(events: pd.DataFrame, cfg: InteractionConfig, compute: Compute) -> pd.DataFrame:
    """One row per (customer, product) cell with the aggregated weight `v`, the last event day
    `d` and whether a purchase is among its events `p`, aggregated on the Dask cluster.

    Events are shuffled by customer, so each cell lives in one partition; every partition
    re-sorts its events by their position in `events`, so a cell's weights are summed in the
    local engine's order (the same float bits). The decay reference is the global last event,
    as in `event_weights`.
    """
    import dask.dataframe as dd

    ref = cfg.as_of
    if ref is None and cfg.half_life_days is not None and len(events):
        ref = events["timestamp"].max()
    frame = events[EVENT_COLUMNS].reset_index(drop=True)
    frame = frame.assign(_i=np.arange(len(frame), dtype=np.int64))
    n = max(compute.n_partitions, 1)
    ddf = dd.from_pandas(frame, npartitions=n, sort=False)
    if n > 1:
        ddf = ddf.shuffle(on="customer_id", npartitions=n)
    meta = pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "product_id": pd.Series(dtype=object),
            "v": pd.Series(dtype="float64"),
            "d": pd.Series(dtype="float64"),
            "p": pd.Series(dtype=bool),
        }
    )
    cells = ddf.map_partitions(_partition_cells, cfg, ref, meta=meta).compute()
    return cells.reset_index(drop=True)


def _partition_cells(part: pd.DataFrame, cfg: InteractionConfig, ref) -> pd.DataFrame:
    """The cells of one customer partition (see `_cells_on_dask`)."""
    part = part.sort_values("_i", kind="stable")
    w = event_weights(part, cfg, as_of=ref)
    keep = w > 0
    part = part[keep]
    ts = part["timestamp"].to_numpy(dtype="datetime64[ns]")
    cells = pd.DataFrame(
        {
            "customer_id": part["customer_id"].to_numpy(dtype=object),
            "product_id": part["product_id"].to_numpy(dtype=object),
            "v": w[keep],
            "d": ts.astype("datetime64[s]").astype("float64") / 86400.0,
            "p": part["event"].to_numpy() == "purchase",
        }
    )
    agg = cells.groupby(["customer_id", "product_id"], sort=True).agg(
        v=("v", cfg.aggregate), d=("d", "max"), p=("p", "any")
    )
    return agg.reset_index()[CELL_COLUMNS]


def _matrix_from_cells(
    cells: pd.DataFrame, cfg: InteractionConfig, customer_ids=None, product_ids=None
) -> InteractionMatrix:
    """The matrix of aggregated cells: the minimum-count filters (a cell is a distinct
    customer-product pair, so counting cells counts what `_min_count_filter` counts), the sorted
    or pinned id mappings, and the weight, last-seen and purchase matrices."""
    if customer_ids is None and product_ids is None:
        cells = _min_count_cells(cells, cfg)
    customers = np.sort(cells["customer_id"].unique()) if customer_ids is None else customer_ids
    products = np.sort(cells["product_id"].unique()) if product_ids is None else product_ids
    customers = np.asarray(customers).astype(str)
    products = np.asarray(products).astype(str)
    r = pd.Index(customers).get_indexer(cells["customer_id"])
    c = pd.Index(products).get_indexer(cells["product_id"])
    keep = (r >= 0) & (c >= 0)
    v, d, p = (cells[k].to_numpy()[keep] for k in ("v", "d", "p"))
    return _assemble(r[keep], c[keep], v, d, p, customers, products, cfg)


def _assemble(r, c, v, days, p, customers, products, cfg: InteractionConfig) -> InteractionMatrix:
    """The weight, last-seen and purchase matrices of aggregated cells (row and column codes
    into the sorted `customers` and `products`)."""
    shape = (len(customers), len(products))
    v = np.ones(len(r)) if cfg.binary else np.maximum(v, 1e-30)
    m = sp.csr_matrix((v.astype(np.float32), (r, c)), shape=shape, dtype=np.float32)
    last = sp.csr_matrix((days, (r, c)), shape=shape, dtype=np.float64)
    p = p.astype(bool)
    ones = np.ones(int(p.sum()), np.float32)
    purchases = sp.csr_matrix((ones, (r[p], c[p])), shape=shape, dtype=np.float32)
    as_of = np.datetime64(cfg.as_of, "ns") if cfg.as_of is not None else None
    return InteractionMatrix(
        m, customers, products, as_of=as_of, last_seen_days=last, purchases=purchases
    )


def _min_count_cells(cells: pd.DataFrame, cfg: InteractionConfig) -> pd.DataFrame:
    """`_min_count_filter` on aggregated cells (the same passes, the same result)."""
    if cfg.min_customer_products <= 1 and cfg.min_product_customers <= 1:
        return cells
    for _ in range(5):
        per_product = cells["product_id"].value_counts()
        per_customer = cells["customer_id"].value_counts()
        ok_p = per_product.index[per_product >= cfg.min_product_customers]
        ok_c = per_customer.index[per_customer >= cfg.min_customer_products]
        before = len(cells)
        cells = cells[cells["product_id"].isin(ok_p) & cells["customer_id"].isin(ok_c)]
        if len(cells) == before:
            break
    return cells


# ---- from Dask dataframes (tables too big for one process) -----------------------------------
def build_matrix_frames(
    interactions, order_lines, cfg: InteractionConfig | None, compute: Compute
) -> InteractionMatrix:
    """The matrix of a store whose `interactions` / `order_lines` are Dask dataframes (e.g.
    `features.frames.read_store` of a partitioned Parquet store; either may be None), with no
    table ever whole in one process: each partition turns its rows into events (as
    `events_frame`), the events are numbered in table order and shuffled by customer, and each
    customer partition drops exact duplicates, weighs and aggregates its cells; the ids are
    mapped to the sorted id codes on the workers, so only the cells' codes and values reach the
    caller. The same matrix as `build_matrix(store)` of the same tables in memory."""
    import dask.dataframe as dd

    cfg = cfg or InteractionConfig()
    has_lines = order_lines is not None
    use_lines = cfg.purchases_from == "order_lines" or (cfg.purchases_from == "auto" and has_lines)
    if cfg.purchases_from == "order_lines" and not has_lines:
        raise DataError("purchases_from='order_lines' but the store has no order_lines")
    meta = _events_meta()
    frames = []
    if interactions is not None:
        frames.append(
            interactions.map_partitions(_interaction_events, purchases=not use_lines, meta=meta)
        )
    if use_lines:
        frames.append(order_lines.map_partitions(_order_line_events, meta=meta))
    if not frames:
        raise DataError("the store has neither interactions nor order_lines to recommend from")
    events = dd.concat(frames) if len(frames) > 1 else frames[0]
    if cfg.exclude_products:
        events = events[~events["product_id"].isin(cfg.exclude_products)]
    if cfg.as_of is not None:
        events = events[events["timestamp"] < pd.Timestamp(cfg.as_of)]
    one = events.map_partitions(
        lambda d: pd.Series(np.ones(len(d), dtype="int64"), index=d.index), meta=("_i", "int64")
    )
    events = events.assign(_i=one.cumsum() - 1)  # table order: the local engine's row order
    ref = cfg.as_of
    if ref is None and cfg.half_life_days is not None:
        ref = events["timestamp"].max().compute()
    n = max(compute.n_partitions, events.npartitions)
    events = events.shuffle(on="customer_id", npartitions=n)
    cells = events.map_partitions(_deduplicated_cells, cfg, ref, meta=_cells_meta()).persist()
    customers = np.sort(cells["customer_id"].unique().compute().to_numpy().astype(str))
    products = np.sort(cells["product_id"].unique().compute().to_numpy().astype(str))
    codes = cells.map_partitions(
        _cell_codes,
        compute.client.scatter(customers, broadcast=True),
        compute.client.scatter(products, broadcast=True),
        meta=pd.DataFrame(
            {
                "r": pd.Series(dtype="int32"),
                "c": pd.Series(dtype="int32"),
                "v": pd.Series(dtype="float64"),
                "d": pd.Series(dtype="float64"),
                "p": pd.Series(dtype=bool),
            }
        ),
    ).compute()
    del cells
    return _matrix_from_codes(codes, customers, products, cfg)


def _events_meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "product_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns]"),
            "event": pd.Series(dtype=object),
            "quantity": pd.Series(dtype="int64"),
        }
    )


def _cells_meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "product_id": pd.Series(dtype=object),
            "v": pd.Series(dtype="float64"),
            "d": pd.Series(dtype="float64"),
            "p": pd.Series(dtype=bool),
        }
    )


def _deduplicated_cells(part: pd.DataFrame, cfg: InteractionConfig, ref) -> pd.DataFrame:
    """A customer partition's cells after dropping exact duplicate events (first kept, as
    `events_frame` does: duplicates share a customer, so they share a partition)."""
    part = part.sort_values("_i", kind="stable").drop_duplicates(EVENT_COLUMNS)
    return _partition_cells(part, cfg, ref)


def _cell_codes(cells: pd.DataFrame, customers: np.ndarray, products: np.ndarray):
    """Cells with their row and column codes in the sorted id lists instead of the ids."""
    return pd.DataFrame(
        {
            "r": pd.Index(customers).get_indexer(cells["customer_id"]).astype(np.int32),
            "c": pd.Index(products).get_indexer(cells["product_id"]).astype(np.int32),
            "v": cells["v"].to_numpy(),
            "d": cells["d"].to_numpy(),
            "p": cells["p"].to_numpy(bool),
        }
    )


def _matrix_from_codes(
    codes: pd.DataFrame, customers: np.ndarray, products: np.ndarray, cfg: InteractionConfig
) -> InteractionMatrix:
    """`_matrix_from_cells` on coded cells: the minimum-count filters on codes, then the
    surviving ids (still sorted) renumbered."""
    r, c = codes["r"].to_numpy(), codes["c"].to_numpy()
    keep = np.ones(len(r), bool)
    if cfg.min_customer_products > 1 or cfg.min_product_customers > 1:
        for _ in range(5):
            per_c = np.bincount(r[keep], minlength=len(customers))
            per_p = np.bincount(c[keep], minlength=len(products))
            ok = keep & (per_c[r] >= cfg.min_customer_products)
            ok &= per_p[c] >= cfg.min_product_customers
            if ok.sum() == keep.sum():
                break
            keep = ok
    used_c = np.zeros(len(customers), bool)
    used_p = np.zeros(len(products), bool)
    used_c[r[keep]] = True
    used_p[c[keep]] = True
    rows = (np.cumsum(used_c) - 1)[r[keep]]
    cols = (np.cumsum(used_p) - 1)[c[keep]]
    v, d, p = (codes[k].to_numpy()[keep] for k in ("v", "d", "p"))
    return _assemble(rows, cols, v, d, p, customers[used_c], products[used_p], cfg)
