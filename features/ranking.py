"""The features of the recommendation ranker: one definition, used to train it and to serve it.

A `RankingState` holds what is known at a time `as_of` (the customer x product weights and days
of last interaction, item popularity and trend, prices, availability, launch days, categories);
`CustomerProfile` is one customer's history (a known customer's row, or a session's products);
`rank_features` turns a profile, its candidate products and the candidate generators' scores and
ranks into the feature matrix (`feature_names` names its columns). Training computes the state
from the history before the ranker's cut and its labels from after it (`split_events_at`, or
`split_cells` when only a matrix is at hand), never the other way round; serving computes the state from the whole training period.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionMatrix

DAY_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
ITEM_FEATURES = (
    "item_log_customers",
    "item_log_customers_7d",
    "item_log_customers_30d",
    "item_recent_share_30d",
    "item_log_price",
    "item_available",
    "item_age_days",
)
CUSTOMER_FEATURES = (
    "customer_log_products",
    "customer_log_weight",
    "customer_days_since_last",
    "customer_log_usual_price",
    "customer_category_entropy",
)
PAIR_FEATURES = (
    "pair_weight",
    "pair_days_since",
    "pair_category_share",
    "pair_days_since_category",
    "pair_log_price_ratio",
    # the product's customers in the 7 / 30 days up to the customer's own last interaction
    # (a session's: now), and that 30-day count's share of all its customers: what was bought
    # when the customer was active, which the collaborative scores do not see
    "pair_log_customers_7d_at_last",
    "pair_log_customers_30d_at_last",
    "pair_recent_share_30d_at_last",
)
CONTEXT_FEATURES = ("context_weekday", "context_season_sin", "context_season_cos")


def feature_names(generators: list[str]) -> list[str]:
    """Column names: each generator's score and rank, then pair, item, customer, context."""
    gen = [f"{g}_{what}" for g in generators for what in ("score", "rank")]
    return gen + [*PAIR_FEATURES, *ITEM_FEATURES, *CUSTOMER_FEATURES, *CONTEXT_FEATURES]


@dataclass
class RankingState:
    """What the ranker may know at `as_of_days` (days since 1970-01-01): nothing after it."""

    weights: sp.csr_matrix  # customers x products
    last_days: sp.csr_matrix  # same pattern: day of the last interaction
    category_codes: np.ndarray  # -1: no category
    n_categories: int
    item_arrays: np.ndarray  # (n_products, len(ITEM_FEATURES)) float32, independent of now
    launch_days: np.ndarray  # first day on sale (or of the earliest interaction)
    log_price: np.ndarray  # NaN: unknown price
    as_of_days: float
    # (product, day of last interaction) of every cell as one sorted key, product x span + day
    # - origin, so one searchsorted counts a product's customers in any window (derived)
    day_keys: np.ndarray | None = None
    day_origin: float = 0.0
    day_span: float = 1.0

    def __post_init__(self) -> None:
        if self.day_keys is None:
            last = sp.csc_matrix(self.last_days)
            days = last.data.astype(np.float64)
            self.day_origin = float(days.min()) if len(days) else 0.0
            newest = max(float(days.max()) if len(days) else 0.0, self.as_of_days)
            self.day_span = newest - self.day_origin + 64.0  # > any window reaching back
            items = np.repeat(np.arange(last.shape[1]), np.diff(last.indptr))
            self.day_keys = np.sort(items * self.day_span + (days - self.day_origin))
        self._now_windows: dict[float, np.ndarray] = {}  # window start -> catalog's counts

    def customers_between(self, products: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Per product, its customers whose last interaction fell in [lo, hi] (days).

        A window ending at `as_of_days` (every session's: its products are all used now) is
        counted once for the whole catalog and then looked up: the same counts (each product's
        search does not depend on the others), without a request's ~1,200 binary searches over
        all the cells (a quarter of a session's feature time)."""
        if hi == self.as_of_days:
            whole = self._now_windows.get(lo)
            if whole is None:
                whole = self._count_between(np.arange(self.weights.shape[1]), lo, hi)
                if len(self._now_windows) >= 8:  # a few window lengths are ever asked
                    self._now_windows.clear()
                self._now_windows[lo] = whole
            return whole[products]
        return self._count_between(products, lo, hi)

    def windows_up_to(self, then: float, products: np.ndarray, out: np.ndarray) -> None:
        """The PRODUCT_WINDOWS features of `products` for a customer last active on day
        `then`, written into `out` (m, 3): log1p of the product's customers in the 7 and 30
        days up to `then`, and that 30-day count's share of all its customers."""
        month = self.customers_between(products, then - 30, then)
        out[:, 0] = np.log1p(self.customers_between(products, then - 7, then))
        out[:, 1] = np.log1p(month)
        out[:, 2] = month / np.maximum(np.expm1(self.item_arrays[products, 0]), 1.0)

    def category_slots(self) -> np.ndarray:
        """Each product's category code, `n_categories` (at least 1) where it has none: the
        row of a per-category table holding the no-category values (computed once)."""
        slots = getattr(self, "_category_slots", None)
        if slots is None:
            n_cat = max(self.n_categories, 1)
            codes = self.category_codes
            slots = np.where(codes >= 0, codes, n_cat).astype(np.intp)
            self._category_slots = slots
        return slots

    def products_now(self) -> np.ndarray:
        """(n_products, len(PRODUCT_WINDOWS) + len(ITEM_FEATURES)) float32: every product's
        own columns for a customer last active now (`windows_up_to(as_of_days)`, then the item
        features, whose age is as of now), computed once (elementwise: the same values as
        per request)."""
        block = getattr(self, "_products_now", None)
        if block is None:
            n = self.weights.shape[1]
            block = np.empty((n, len(PRODUCT_WINDOWS) + self.item_arrays.shape[1]), np.float32)
            self.windows_up_to(self.as_of_days, np.arange(n), block[:, : len(PRODUCT_WINDOWS)])
            block[:, len(PRODUCT_WINDOWS) :] = self.item_arrays
            self._products_now = block  # one array assigned: a racing request computes the same
        return block

    def _count_between(self, products: np.ndarray, lo: float, hi: float) -> np.ndarray:
        base = products * self.day_span  # the keys' own arithmetic: equal days compare equal
        top = np.searchsorted(self.day_keys, base + (hi - self.day_origin), "right")
        return top - np.searchsorted(self.day_keys, base + (lo - self.day_origin), "left")

    @classmethod
    def from_matrix(
        cls,
        matrix: InteractionMatrix,
        category_codes: np.ndarray,
        available: np.ndarray,
        products: pd.DataFrame | None = None,
    ) -> RankingState:
        """The state of a matrix (its `as_of`, else its newest event) and catalog."""
        weights = sp.csr_matrix(matrix.matrix, dtype=np.float32)
        last = matrix.last_seen_days
        if last is None:  # a hand-built matrix: every event on day 0
            last = weights.copy()
            last.data = np.zeros(len(last.data), np.float32)
        last = sp.csr_matrix(last, dtype=np.float64)
        last.sort_indices()
        if matrix.as_of is not None:
            as_of = float(np.datetime64(matrix.as_of, "s").astype("float64") / 86400.0)
        else:
            as_of = float(last.data.max()) if last.nnz else 0.0
        price, launch = _catalog(matrix.product_ids, products)
        n = weights.shape[1]
        first_seen = np.full(n, as_of)
        np.minimum.at(first_seen, last.indices, last.data)
        launch = np.where(np.isnan(launch), first_seen, launch)
        pop = np.bincount(last.indices, minlength=n).astype(np.float64)
        recent7 = np.bincount(last.indices[last.data >= as_of - 7], minlength=n)
        recent30 = np.bincount(last.indices[last.data >= as_of - 30], minlength=n)
        log_price = np.log1p(price)
        items = np.column_stack(
            [
                np.log1p(pop),
                np.log1p(recent7),
                np.log1p(recent30),
                recent30 / np.maximum(pop, 1.0),
                log_price,
                np.asarray(available, np.float64),
                as_of - launch,
            ]
        ).astype(np.float32)
        codes = np.asarray(category_codes, np.int32)
        n_cat = int(codes.max()) + 1 if len(codes) and codes.max() >= 0 else 0
        return cls(weights, last, codes, n_cat, items, launch, log_price, as_of)

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays (saved with the model)."""
        return {
            "w_data": self.weights.data,
            "w_indices": self.weights.indices,
            "w_indptr": self.weights.indptr,
            "last_data": self.last_days.data,
            "shape": np.array(self.weights.shape),
            "codes": self.category_codes,
            "items": self.item_arrays,
            "launch": self.launch_days,
            "log_price": self.log_price,
            "as_of": np.array([self.as_of_days, self.n_categories], np.float64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> RankingState:
        shape = tuple(int(s) for s in a["shape"])
        weights = sp.csr_matrix((a["w_data"], a["w_indices"], a["w_indptr"]), shape=shape)
        last = sp.csr_matrix((a["last_data"], a["w_indices"], a["w_indptr"]), shape=shape)
        as_of, n_cat = a["as_of"].tolist()
        return cls(
            weights, last, a["codes"], int(n_cat), a["items"], a["launch"], a["log_price"], as_of
        )

    def profile(self, row: int) -> CustomerProfile:
        """A known customer's history (row of the state's matrix)."""
        lo, hi = self.weights.indptr[row], self.weights.indptr[row + 1]
        return CustomerProfile(
            self.weights.indices[lo:hi], self.weights.data[lo:hi], self.last_days.data[lo:hi]
        )


@dataclass
class CustomerProfile:
    """One customer's products (sorted indices), their weights and days of last interaction
    (`used_on`: the one day all of them were last used, a session's now; None: not known to
    be one day, as for a known customer)."""

    items: np.ndarray
    weights: np.ndarray
    last_days: np.ndarray
    used_on: float | None = None

    @classmethod
    def session(cls, items: np.ndarray, weights: np.ndarray, now_days: float) -> CustomerProfile:
        """A visitor known only by the products they just used (all used `now`)."""
        order = np.argsort(items, kind="stable")
        return cls(
            np.asarray(items)[order],
            np.asarray(weights, np.float32)[order],
            np.full(len(items), now_days),
            float(now_days),
        )


N_FIXED = len(PAIR_FEATURES) + len(ITEM_FEATURES) + len(CUSTOMER_FEATURES) + len(CONTEXT_FEATURES)
_AGE = ITEM_FEATURES.index("item_age_days")
# the product's own columns when a customer's last interaction is the state's now (every
# session's): its customer windows (PRODUCT_WINDOWS) and its item features, one block per state
PRODUCT_WINDOWS = (  # contiguous in PAIR_FEATURES, in this order (`windows_up_to` writes them)
    "pair_log_customers_7d_at_last",
    "pair_log_customers_30d_at_last",
    "pair_recent_share_30d_at_last",
)
_WINDOWS_AT = PAIR_FEATURES.index(PRODUCT_WINDOWS[0])
_FIXED = (*PAIR_FEATURES, *ITEM_FEATURES, *CUSTOMER_FEATURES, *CONTEXT_FEATURES)
_NOW_COLUMNS = np.array([_FIXED.index(f) for f in (*PRODUCT_WINDOWS, *ITEM_FEATURES)])
_NOW_CONTIGUOUS = bool((np.diff(_NOW_COLUMNS) == 1).all())  # one slice, else a column list


def zscore_rows(a: np.ndarray) -> np.ndarray:
    """(a - a.mean(axis=1)) / max(a.std(axis=1), 1e-9) row by row, float32, the same bits as
    those NumPy calls (the same reductions and divisions, without their Python-level checks
    and the mean computed twice: this runs on every request)."""
    n = np.intp(a.shape[1])
    mean = np.add.reduce(a, axis=1, keepdims=True)
    np.true_divide(mean, n, out=mean, casting="unsafe")
    z = a - mean
    var = np.add.reduce(np.multiply(z, z), axis=1, keepdims=True)
    np.true_divide(var, n, out=var, casting="unsafe")
    np.sqrt(var, out=var)
    z /= np.maximum(var, 1e-9)
    return z


def rank_features(
    state: RankingState,
    profile: CustomerProfile,
    candidates: np.ndarray,
    gen_scores: np.ndarray,
    gen_ranks: np.ndarray,
    now_days: float,
) -> np.ndarray:
    """(len(candidates), n_features) float32 in `feature_names` order; NaN where unknown.

    `gen_scores` / `gen_ranks` are (n_generators, len(candidates)): each generator's score
    z-scored over the candidates and its rank (1 = its best; beyond its own list, its list
    length + 1). Every block is written in place into one matrix (no per-block arrays
    stacked): serving computes this per request. When the customer's last interaction and
    `now_days` are the state's now (a session), the product's own columns are one row of the
    state's `products_now` block (the same values, computed once per state)."""
    m, n_gen = len(candidates), len(gen_scores)
    X = np.empty((m, 2 * n_gen + N_FIXED), np.float32)
    X[:, 0 : 2 * n_gen : 2] = zscore_rows(gen_scores).T
    X[:, 1 : 2 * n_gen : 2] = gen_ranks.T
    at = 2 * n_gen
    fixed = X[:, at:]
    customer, then = _pair_and_customer(state, profile, candidates, now_days, fixed)
    if then == state.as_of_days and now_days == state.as_of_days:
        block = state.products_now().take(candidates, axis=0)
        if _NOW_CONTIGUOUS:
            fixed[:, _NOW_COLUMNS[0] : _NOW_COLUMNS[-1] + 1] = block
        else:
            fixed[:, _NOW_COLUMNS] = block
    else:
        w0 = _WINDOWS_AT
        state.windows_up_to(then, candidates, fixed[:, w0 : w0 + len(PRODUCT_WINDOWS)])
        lo = len(PAIR_FEATURES)
        fixed[:, lo : lo + len(ITEM_FEATURES)] = state.item_arrays[candidates]
        fixed[:, lo + _AGE] = now_days - state.launch_days[candidates]
    at = len(PAIR_FEATURES) + len(ITEM_FEATURES)
    fixed[:, at : at + len(CUSTOMER_FEATURES)] = customer
    at += len(CUSTOMER_FEATURES)
    fixed[:, at:] = _context(now_days)
    return X


@functools.lru_cache(maxsize=64)  # a served state has one now: its row is computed once
def _context(now_days: float) -> np.ndarray:
    """The context features of a day (weekday, season), float32 (read-only: it is cached)."""
    row = _context_of(now_days)
    row.flags.writeable = False
    return row


def _context_of(now_days: float) -> np.ndarray:
    weekday = (np.floor(now_days) + DAY_EPOCH_WEEKDAY) % 7
    angle = 2 * np.pi * (now_days % 365.25) / 365.25
    return np.array([weekday, np.sin(angle), np.cos(angle)], np.float32)


def _pair_and_customer(state, profile, candidates, now_days, fixed):
    """The customer x item features before the product windows written into the first
    columns of `fixed` (m, N_FIXED, float32); returns the customer features (5,) and the day
    of the customer's last interaction (`now_days` without any). Each column is written once
    (a lookup with NaN or 0 where the customer has nothing), not filled then overwritten.
    A profile used all on `now_days` (a session) has 0 days since each of its products and
    categories (now - now), written without the per-category maximum."""
    items, w, last = profile.items, profile.weights.astype(np.float64), profile.last_days
    today = profile.used_on == now_days
    if len(items):
        pos = np.minimum(np.searchsorted(items, candidates), len(items) - 1)
        hit = items[pos] == candidates
        fixed[:, 0] = np.where(hit, w[pos], 0.0)
        fixed[:, 1] = np.where(hit, 0.0 if today else now_days - last[pos], np.nan)
    else:
        fixed[:, 0] = 0.0
        fixed[:, 1] = np.nan
    codes = state.category_codes
    n_cat = max(state.n_categories, 1)
    own_codes = codes[items] if len(items) else np.zeros(0, np.int32)
    has = own_codes >= 0
    # per category slot (the last: no category): the customer's share, days since its use
    table = np.full((n_cat + 1, 2), np.nan)
    share = table[:, 0]
    share[:n_cat] = np.bincount(own_codes[has], w[has], minlength=n_cat)
    total = max(float(share[:n_cat].sum()), 1e-12)  # the sum of the categories alone
    share[:n_cat] /= total
    nz = share[:n_cat][share[:n_cat] > 0]
    if today:
        table[own_codes[has], 1] = 0.0
    else:
        cat_last = np.full(n_cat, -np.inf)
        np.maximum.at(cat_last, own_codes[has], last[has])
        seen = np.isfinite(cat_last)
        table[:n_cat, 1][seen] = now_days - cat_last[seen]  # NaN: never used
    fixed[:, 2:4] = table.take(state.category_slots().take(candidates), axis=0)
    prices = state.log_price[items] if len(items) else np.zeros(0)
    priced = np.isfinite(prices)
    usual = np.nan
    if priced.any():  # np.average's weighted mean, without its checks
        wp = w[priced]
        usual = float(np.multiply(prices[priced], wp).sum() / wp.sum())
    fixed[:, 4] = state.log_price[candidates] - usual
    then = float(last.max()) if len(items) else now_days
    customer = np.array(
        [
            np.log1p(len(items)),
            np.log1p(float(w.sum())),
            now_days - then if len(items) else np.nan,
            usual,
            float(-(nz * np.log(nz)).sum()) if len(nz) else 0.0,
        ],
        np.float32,
    )
    return customer, then


def split_cells(
    matrix: InteractionMatrix, cut_days: float, end_days: float | None = None
) -> tuple[InteractionMatrix, sp.csr_matrix]:
    """(history, labels) of a matrix at day `cut_days`: history keeps the cells whose last
    interaction is before the cut (as of the cut), labels are the other cells (binary) whose
    last interaction is before `end_days` (the window's end; None: no end). A cell with events
    on both sides counts as a label, so nothing after the cut reaches history."""
    last = matrix.last_seen_days
    if last is None:
        raise ValueError("split_cells needs the matrix's last_seen_days (build_matrix sets them)")
    before = last.data < cut_days
    history = _cells(matrix.matrix, before)
    days = _cells(last, before)
    bought = matrix.purchased.multiply(history > 0).tocsr()
    window = ~before if end_days is None else ~before & (last.data < end_days)
    labels = _cells(matrix.matrix, window)
    labels.data = np.ones(len(labels.data), np.float32)
    as_of = np.datetime64(int(round(cut_days * 86400)), "s").astype("datetime64[ns]")
    hist = InteractionMatrix(
        history,
        matrix.customer_ids,
        matrix.product_ids,
        as_of=as_of,
        last_seen_days=days,
        purchases=bought,
    )
    return hist, labels


def split_events_at(
    events: pd.DataFrame, cut: pd.Timestamp, end: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, labels) of an events frame at `cut`: the events before it, and the
    (customer, product) pairs first used in [cut, end) (`end` None: from the cut on) by
    customers of the history (new products only, as the test protocol). Nothing at or after
    the cut is in history."""
    ts = events["timestamp"]
    history = events[ts < cut]
    window = ts >= cut if end is None else (ts >= cut) & (ts < end)
    after = events[window][["customer_id", "product_id"]].drop_duplicates()
    seen = pd.MultiIndex.from_frame(history[["customer_id", "product_id"]])
    pairs = pd.MultiIndex.from_frame(after)
    keep = ~pairs.isin(seen) & after["customer_id"].isin(history["customer_id"]).to_numpy()
    return history, after[keep]


def label_matrix(pairs: pd.DataFrame, history: InteractionMatrix) -> sp.csr_matrix:
    """Binary customers x products (of `history`) of the label pairs it knows."""
    rows = pd.Index(history.customer_ids).get_indexer(pairs["customer_id"].astype(str))
    cols = pd.Index(history.product_ids).get_indexer(pairs["product_id"].astype(str))
    ok = (rows >= 0) & (cols >= 0)
    ones = np.ones(int(ok.sum()), np.float32)
    return sp.csr_matrix((ones, (rows[ok], cols[ok])), shape=history.shape)


def _cells(m: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The cells of `m` (sorted CSR) where `keep` (aligned with `m.data`) holds."""
    m = sp.csr_matrix(m)
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def _catalog(product_ids: np.ndarray, products: pd.DataFrame | None):
    """(price, launch day) per product; NaN where the catalog does not say."""
    n = len(product_ids)
    price, launch = np.full(n, np.nan), np.full(n, np.nan)
    if products is None or len(products) == 0:
        return price, launch
    unique = products.drop_duplicates("product_id")
    aligned = unique.set_index(unique["product_id"].astype(str)).reindex(product_ids)
    if "price" in aligned:
        price = pd.to_numeric(aligned["price"], errors="coerce").to_numpy(np.float64)
    if "launched_at" in aligned:
        ts = pd.to_datetime(aligned["launched_at"], errors="coerce")
        days = ts.to_numpy("datetime64[s]").astype("float64") / 86400.0
        launch = np.where(ts.isna().to_numpy(), np.nan, days)
    return price, launch
