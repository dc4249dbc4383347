"""The one recommender interface: fit, recommend, fold-in, similar items, save/load.

Every model implements a few scoring hooks (`_fit`, `_scores_known`, `_scores_items`,
`_similar_scores`, `_state`/`_set_state`); this base class owns the id mappings, filtering,
top-k selection, unknown-customer fallback and the on-disk format (np.savez + JSON, no pickle).
The single-customer path (`recommend_one`) touches only NumPy arrays: no pandas, no sparse
slicing, a cached mask per filter combination and `np.argpartition` on one score vector.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionMatrix
from shopml.errors import DataError, NotFittedError, UnknownEntity

FORMAT_VERSION = 1
BLOCK = 1024
_REGISTRY: dict[str, type[Recommender]] = {}


@dataclass(frozen=True)
class RecommendFilters:
    """What a caller may exclude or restrict; the default only hides already-bought products."""

    exclude_purchased: bool = True
    exclude_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] | None = None
    only_available: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_ids", tuple(str(i) for i in self.exclude_ids))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))


NO_FILTERS = RecommendFilters(exclude_purchased=False)
DEFAULT_FILTERS = RecommendFilters()


@dataclass
class Recommendations:
    """One ranked list: product ids, their scores (higher is better) and which model made it."""

    product_ids: np.ndarray
    scores: np.ndarray
    source: str
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.product_ids)


def check_k(k: int) -> int:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores, best first (fewer when fewer are finite)."""
    n = scores.shape[0]
    idx = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx[scores[idx] > -np.inf]


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top k indices of a 2-D score block, best first."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class Recommender:
    """Base class. Parameters are stored by `__init__` as given; learned state ends with `_`."""

    name: ClassVar[str] = "base"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.name] = cls

    # ---- parameters -------------------------------------------------------------------------
    def get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Recommender:
        """Learn from the interaction matrix; `products` adds categories and availability."""
        if not isinstance(matrix, InteractionMatrix):
            raise TypeError(f"fit expects an InteractionMatrix, got {type(matrix).__name__}")
        X = matrix.matrix
        if X.nnz == 0:
            raise DataError("cannot fit a recommender on an empty interaction matrix (0 events)")
        if X.shape[1] < 2:
            raise DataError(
                f"cannot fit a recommender on {X.shape[1]} product(s); at least 2 are needed"
            )
        self.customer_ids_ = np.asarray(matrix.customer_ids).astype(str)
        self.product_ids_ = np.asarray(matrix.product_ids).astype(str)
        self.user_items_ = sp.csr_matrix(X, dtype=np.float32)
        self.user_items_.sort_indices()
        self.popularity_ = np.diff(self.user_items_.tocsc().indptr).astype(np.float32)
        self._set_catalog(products)
        self.candidates_ = None
        self._fit(self.user_items_, matrix)
        self._prepare()
        return self

    def _set_catalog(self, products: pd.DataFrame | None) -> None:
        n = len(self.product_ids_)
        self.category_codes_ = np.full(n, -1, dtype=np.int32)
        self.categories_ = np.array([], dtype=str)
        self.available_ = np.ones(n, dtype=bool)
        if products is None or len(products) == 0:
            return
        cat = products.drop_duplicates("product_id").set_index(
            products.drop_duplicates("product_id")["product_id"].astype(str)
        )
        aligned = cat.reindex(self.product_ids_)
        if "category" in aligned:
            names = aligned["category"].fillna("unknown").astype(str).to_numpy()
            self.categories_, codes = np.unique(names, return_inverse=True)
            self.categories_ = self.categories_.astype(str)
            self.category_codes_ = codes.astype(np.int32)
        if "available" in aligned:
            self.available_ = aligned["available"].fillna(True).astype(bool).to_numpy()

    def _prepare(self) -> None:
        """Build lookup structures used at inference (after fit and after load)."""
        self.customer_index_ = {c: i for i, c in enumerate(self.customer_ids_.tolist())}
        self.product_index_ = {p: i for i, p in enumerate(self.product_ids_.tolist())}
        self.category_index_ = {c: i for i, c in enumerate(self.categories_.tolist())}
        self._seen_indptr = self.user_items_.indptr
        self._seen_indices = self.user_items_.indices
        self._mask_cache: dict = {}
        self._global_order = np.argsort(-self.popularity_, kind="stable")

    def _check_fitted(self) -> None:
        if not hasattr(self, "product_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load()")

    @property
    def n_items(self) -> int:
        return len(self.product_ids_)

    # ---- hooks for subclasses ---------------------------------------------------------------
    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        raise NotImplementedError

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        """Dense (len(rows), n_items) float32 scores for known customers."""
        return self._scores_items(self.user_items_[rows])

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        """Dense scores for interaction rows the model may never have seen (fold-in)."""
        raise NotImplementedError

    def _score_one(self, row: int) -> np.ndarray:
        """Fresh 1-D float32 score vector of one known customer (hot path)."""
        return np.array(self._scores_known(np.array([row]))[0], dtype=np.float32)

    def _similar_scores(self, item: int) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # ---- filtering --------------------------------------------------------------------------
    def _blocked(self, filters: RecommendFilters) -> np.ndarray | None:
        """Boolean mask of products hidden by the static filters (cached), or None."""
        key = (filters.categories, filters.only_available, filters.exclude_ids)
        if key in self._mask_cache:
            return self._mask_cache[key]
        blocked = None
        if filters.categories is not None:
            codes = [
                self.category_index_[c] for c in filters.categories if c in self.category_index_
            ]
            blocked = ~np.isin(self.category_codes_, np.array(codes, dtype=np.int32))
        if filters.only_available:
            na = ~self.available_
            blocked = na if blocked is None else (blocked | na)
        if filters.exclude_ids:
            ids = [self.product_index_[p] for p in filters.exclude_ids if p in self.product_index_]
            if ids:
                blocked = np.zeros(self.n_items, bool) if blocked is None else blocked.copy()
                blocked[ids] = True
        if len(self._mask_cache) > 512:
            self._mask_cache.clear()
        self._mask_cache[key] = blocked
        return blocked

    def _finish(self, scores: np.ndarray, k: int, source: str) -> Recommendations:
        idx = top_k(scores, k)
        return Recommendations(self.product_ids_[idx], scores[idx], source)

    # ---- inference --------------------------------------------------------------------------
    def recommend_one(
        self, customer_id: str, k: int = 10, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> Recommendations:
        """Top-k for one customer (hot path). An unknown customer gets the fallback list."""
        self._check_fitted()
        k = check_k(k)
        row = self.customer_index_.get(customer_id)
        if row is None:
            return self._unknown_customer(k, filters)
        if self.candidates_ is not None and filters.exclude_purchased:
            rec = self._from_candidates(row, k, filters)
            if rec is not None:
                return rec
        scores = self._score_one(row)
        if filters.exclude_purchased:
            scores[
                self._seen_indices[self._seen_indptr[row] : self._seen_indptr[row + 1]]
            ] = -np.inf
        blocked = self._blocked(filters)
        if blocked is not None:
            scores[blocked] = -np.inf
        return self._finish(scores, k, self.name)

    # ---- candidate cache --------------------------------------------------------------------
    def precompute(self, n: int = 100, block: int = BLOCK) -> Recommender:
        """Keep each known customer's top-n (purchased products excluded), best first.

        Requests with `exclude_purchased` are then answered from this list (other filters are
        applied to it); when fewer than k candidates survive the filters, the model scores the
        customer in full as before. Answers equal the uncached ones for k <= n.
        """
        self._check_fitted()
        self.candidates_ = None
        n = min(check_k(n), self.n_items)
        rows = np.arange(len(self.customer_ids_))
        idx = np.zeros((len(rows), n), np.int32)
        scores = np.full((len(rows), n), -np.inf, np.float32)
        for start in range(0, len(rows), block):
            i, sc = self.top_k_block(rows[start : start + block], n, DEFAULT_FILTERS)
            idx[start : start + len(i), : i.shape[1]] = i
            scores[start : start + len(i), : i.shape[1]] = sc
        self.candidate_scores_ = scores
        self.candidate_counts_ = (scores > -np.inf).sum(axis=1).astype(np.int32)
        self.candidates_ = np.where(scores > -np.inf, idx, 0).astype(np.int32)
        return self

    def _from_candidates(self, row: int, k: int, filters: RecommendFilters):
        cand = self.candidates_[row]
        count = self.candidate_counts_[row]
        blocked = self._blocked(filters)
        if blocked is None:
            if count < k:
                return None
            return Recommendations(
                self.product_ids_[cand[:k]], self.candidate_scores_[row, :k], self.name
            )
        keep = np.flatnonzero(~blocked[cand[:count]])[:k]
        if len(keep) < k:
            return None
        top = cand[keep]
        return Recommendations(self.product_ids_[top], self.candidate_scores_[row, keep], self.name)

    def _block_from_candidates(self, rows: np.ndarray, k: int, filters: RecommendFilters):
        cand = self.candidates_[rows]
        scores = self.candidate_scores_[rows]
        blocked = self._blocked(filters)
        bad = scores == -np.inf
        if blocked is not None:
            bad = bad | blocked[cand]
        order = np.argsort(bad, axis=1, kind="stable")[:, :k]
        idx = np.take_along_axis(cand, order, axis=1)
        sc = np.where(
            np.take_along_axis(bad, order, axis=1),
            -np.inf,
            np.take_along_axis(scores, order, axis=1),
        )
        short = np.flatnonzero((~bad).sum(axis=1) < k)
        return idx.astype(np.int64), sc.astype(np.float32), short

    def recommend(
        self, customer_ids, k: int = 10, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> list[Recommendations]:
        """Top-k for many customers, scored in blocks; unknown customers get the fallback list."""
        self._check_fitted()
        k = check_k(k)
        ids = [str(c) for c in customer_ids]
        rows = np.array([self.customer_index_.get(c, -1) for c in ids], dtype=np.int64)
        out: list[Recommendations | None] = [None] * len(ids)
        known = np.flatnonzero(rows >= 0)
        for start in range(0, len(known), BLOCK):
            pos = known[start : start + BLOCK]
            idx, scores = self.top_k_block(rows[pos], k, filters)
            for j, p in enumerate(pos):
                s = scores[j]
                ok = s > -np.inf
                out[p] = Recommendations(self.product_ids_[idx[j][ok]], s[ok], self.name)
        for p in np.flatnonzero(rows < 0):
            out[p] = self._unknown_customer(k, filters)
        return out  # type: ignore[return-value]

    def top_k_block(
        self, rows: np.ndarray, k: int, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and scores (n, k) of known customer rows; -inf marks missing slots."""
        if (
            self.candidates_ is not None
            and filters.exclude_purchased
            and k <= self.candidates_.shape[1]
        ):
            idx, sc, short = self._block_from_candidates(rows, k, filters)
            if len(short):
                self_cands, self.candidates_ = self.candidates_, None
                try:
                    idx[short], sc[short] = self.top_k_block(rows[short], k, filters)
                finally:
                    self.candidates_ = self_cands
            return idx, sc
        scores = np.asarray(self._scores_known(rows), dtype=np.float32)
        if not scores.flags.writeable or not scores.flags.c_contiguous:
            scores = np.ascontiguousarray(scores).copy()
        if filters.exclude_purchased:
            seen = self.user_items_[rows]
            r = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
            scores[r, seen.indices] = -np.inf
        blocked = self._blocked(filters)
        if blocked is not None:
            scores[:, blocked] = -np.inf
        kk = min(k, self.n_items)
        idx = top_k_rows(scores, kk)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def recommend_for_items(
        self,
        recent_product_ids,
        k: int = 10,
        filters: RecommendFilters = DEFAULT_FILTERS,
        weights=None,
    ) -> Recommendations:
        """Fold-in: recommend for a customer the model never saw, from products they just used.

        Unknown products are ignored; with none known the fallback list is returned. With
        `exclude_purchased` the given products themselves are not recommended.
        """
        self._check_fitted()
        k = check_k(k)
        ids = [str(p) for p in recent_product_ids]
        w = np.ones(len(ids), np.float32) if weights is None else np.asarray(weights, np.float32)
        pairs = [
            (self.product_index_[p], wi)
            for p, wi in zip(ids, w, strict=True)
            if p in self.product_index_
        ]
        if not pairs:
            return self._unknown_customer(k, filters)
        cols = np.array([c for c, _ in pairs], dtype=np.int32)
        vals = np.array([v for _, v in pairs], dtype=np.float32)
        row = sp.csr_matrix((vals, (np.zeros(len(cols), np.int32), cols)), shape=(1, self.n_items))
        row.sum_duplicates()
        scores = np.array(self._scores_items(row)[0], dtype=np.float32)
        if filters.exclude_purchased:
            scores[cols] = -np.inf
        blocked = self._blocked(filters)
        if blocked is not None:
            scores[blocked] = -np.inf
        return self._finish(scores, k, f"{self.name}:fold-in")

    def similar_items(self, product_ids, k: int = 10) -> list[Recommendations]:
        """The k products most similar to each given product (itself excluded)."""
        self._check_fitted()
        k = check_k(k)
        ids = [str(p) for p in product_ids]
        unknown = [p for p in ids if p not in self.product_index_]
        if unknown:
            raise UnknownEntity("product", unknown)
        out = []
        for p in ids:
            i = self.product_index_[p]
            scores = np.array(self._similar_scores(i), dtype=np.float32)
            scores[i] = -np.inf
            out.append(self._finish(scores, k, self.name))
        return out

    def popular(self, k: int = 10, filters: RecommendFilters = NO_FILTERS) -> Recommendations:
        """Most popular products (by number of customers) that pass the static filters."""
        self._check_fitted()
        return self._unknown_customer(check_k(k), filters)

    def _unknown_customer(self, k: int, filters: RecommendFilters) -> Recommendations:
        blocked = self._blocked(filters)
        order = self._global_order
        if blocked is not None:
            order = order[~blocked[order]]
        idx = order[:k]
        return Recommendations(self.product_ids_[idx], self.popularity_[idx], "popularity")

    # ---- persistence ------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write `meta.json` (class, params) and `arrays.npz` (ids, seen matrix, model state)."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        X = self.user_items_
        arrays = {
            "customer_ids": self.customer_ids_,
            "product_ids": self.product_ids_,
            "ui_data": X.data,
            "ui_indices": X.indices,
            "ui_indptr": X.indptr,
            "popularity": self.popularity_,
            "category_codes": self.category_codes_,
            "categories": self.categories_.astype(str),
            "available": self.available_,
        }
        if getattr(self, "candidates_", None) is not None:
            arrays.update(candidates=self.candidates_, candidate_scores=self.candidate_scores_)
        arrays.update({f"m_{k}": v for k, v in self._state().items()})
        np.savez(folder / "arrays.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "class": self.name, "params": self._json_params()}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._save_children(folder)
        return folder

    def _json_params(self) -> dict:
        return self.get_params()

    def _save_children(self, folder: Path) -> None:
        pass

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        """Load any saved recommender (the class is read from meta.json)."""
        folder = Path(folder)
        meta_file = folder / "meta.json"
        if not meta_file.is_file():
            raise DataError(f"{folder} is not a saved recommender (no meta.json)")
        meta = json.loads(meta_file.read_text())
        klass = _REGISTRY.get(meta.get("class"))
        if klass is None:
            raise DataError(f"{folder}: unknown recommender class {meta.get('class')!r}")
        model = klass._from_params(meta["params"], folder)
        with np.load(folder / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        model.customer_ids_ = arrays["customer_ids"].astype(str)
        model.product_ids_ = arrays["product_ids"].astype(str)
        shape = (len(model.customer_ids_), len(model.product_ids_))
        model.user_items_ = sp.csr_matrix(
            (arrays["ui_data"], arrays["ui_indices"], arrays["ui_indptr"]), shape=shape
        )
        model.popularity_ = arrays["popularity"]
        model.category_codes_ = arrays["category_codes"]
        model.categories_ = arrays["categories"].astype(str)
        model.available_ = arrays["available"]
        model._set_state({k[2:]: v for k, v in arrays.items() if k.startswith("m_")})
        model.candidates_ = arrays.get("candidates")
        if model.candidates_ is not None:
            model.candidate_scores_ = arrays["candidate_scores"]
            model.candidate_counts_ = (
                (model.candidate_scores_ > -np.inf).sum(axis=1).astype(np.int32)
            )
        model._prepare()
        return model

    @classmethod
    def _from_params(cls, params: dict, folder: Path) -> Recommender:
        return cls(**params)


def row_normalize(scores: np.ndarray) -> np.ndarray:
    """Per-row z-score, so that differently scaled models can be blended."""
    mean = scores.mean(axis=-1, keepdims=True)
    std = scores.std(axis=-1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-12)
