"""Popularity recommenders: global, per category (weighted by the customer's own categories)
and trending (customers in a recent window). They are baselines and the cold-start fallback."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from features.interactions import InteractionMatrix
from models.recommenders.scoring import ScoringRecommender
from models.recommenders.selection import Recommendations, RecommendFilters


class PopularityRecommender(ScoringRecommender):
    """Scores every product by how many customers chose it (optionally recently / per category).

    mode="global": same list for everyone. mode="category": popularity within each category,
    weighted by the share of the customer's interactions in that category. mode="trending":
    customers whose last interaction is within `window_days` of the newest one.
    """

    kind = "popularity"

    def __init__(
        self, mode: Literal["global", "category", "trending"] = "global", window_days: float = 30.0
    ):
        self.mode = mode
        self.window_days = window_days

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        if self.mode not in ("global", "category", "trending"):
            raise ValueError(f"mode must be global, category or trending, got {self.mode!r}")
        pop = self.popularity_.astype(np.float64)
        if self.mode == "trending":
            last = matrix.last_seen_days
            if last is None or last.nnz == 0:
                raise ValueError("mode='trending' needs the matrix's last_seen_days")
            recent = last.data >= last.data.max() - self.window_days
            counts = np.bincount(last.indices[recent], minlength=X.shape[1]).astype(np.float64)
            pop = counts + pop / (pop.max() + 1.0)  # ties broken by all-time popularity
        self.scores_ = (pop / max(pop.max(), 1e-12)).astype(np.float32)

    def _prepare(self) -> None:
        super()._prepare()
        n_cat = max(len(self.categories_), 1)
        codes = np.where(self.category_codes_ >= 0, self.category_codes_, 0)
        self._codes = codes
        self._n_cat = n_cat
        # popularity normalised within its category
        cat_max = np.zeros(n_cat, np.float32)
        np.maximum.at(cat_max, codes, self.scores_)
        self._within = (self.scores_ / np.maximum(cat_max[codes], 1e-12)).astype(np.float32)
        self._tie_break = 1e-3 * self.scores_  # float32, as computed per request before
        if self.mode == "trending":  # ranked, and answered, by the trending score
            self._global_order = np.argsort(-self.scores_, kind="stable")
            self._popular_scores = self.scores_

    def _category_scores(self, X: sp.csr_matrix) -> np.ndarray:
        share = np.zeros((X.shape[0], self._n_cat), np.float32)
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        np.add.at(share, (rows, self._codes[X.indices]), X.data)
        share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-12)
        return share[:, self._codes] * self._within[None, :] + 1e-3 * self.scores_[None, :]

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        if self.mode == "category":
            return self._category_scores(X)
        return np.tile(self.scores_, (X.shape[0], 1))

    def _score_one(self, row: int) -> np.ndarray:
        if self.mode == "category":
            return self._category_scores(self.user_items_[row])[0]
        return self.scores_.copy()

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if self.mode != "category":
            return self.scores_.copy()
        share = np.bincount(self._codes[items], weights=weights, minlength=self._n_cat)
        share /= max(share.sum(), 1e-12)
        within = share.take(self._codes)  # float64, then in place: the same operations
        np.multiply(within, self._within, out=within)
        np.add(within, self._tie_break, out=within)
        return within.astype(np.float32)

    def _similar_scores(self, item: int) -> np.ndarray:
        same = self._codes == self._codes[item]
        return np.where(same, self.scores_ + 1.0, self.scores_).astype(np.float32)

    def _unknown_customer(self, k: int, filters: RecommendFilters) -> Recommendations:
        source = f"popularity:{self.mode}" if self.mode != "category" else "popularity:global"
        return self._by_popularity(k, filters, source)

    def for_category(self, category: str, k: int, filters: RecommendFilters) -> Recommendations:
        """Most popular products of one category (cold start with a category hint)."""
        narrowed = RecommendFilters(
            exclude_purchased=False,
            exclude_ids=filters.exclude_ids,
            categories=(category,),
            only_available=filters.only_available,
        )
        return self._by_popularity(k, narrowed, "popularity:category")

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores_ = arrays["scores"]
