"""The one recommender interface: what training, evaluation and the storefront may call.

Every kind (popularity, ALS, BPR, item-kNN, EASE, blend, fallback chain) is an `Estimator` with
these methods. Contract: an unknown customer gets the popularity list (its `source` says so),
never an error; unknown products are ignored by fold-in and by the session blend and named
(`UnknownEntity`) by `similar_items`; an unknown category in the filters is named
(`UnknownEntity`); `k` must be a positive integer. Fitted models expose their id mappings
(`customer_ids_`, `product_ids_`, `customer_index_`, `product_index_`), the seen-products
matrix `user_items_`, its purchase cells `purchased_` and the catalog (`category_codes_`,
`categories_`, `available_`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from features.interactions import InteractionMatrix
from models.base import Estimator, check_is_fitted, load_kind
from models.recommenders.selection import (
    DEFAULT_FILTERS,
    NO_FILTERS,
    SESSION_WEIGHT,
    Recommendations,
    RecommendFilters,
)


class Recommender(Estimator, ABC):
    """Base of every recommender (see the module docstring for the contract)."""

    fitted_attribute = "product_ids_"
    meta_file = "meta.json"
    arrays_file = "arrays.npz"

    @property
    def name(self) -> str:
        """The `source` of this model's own answers (the fallback chain answers as its primary)."""
        return self.kind

    @abstractmethod
    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Self:
        """Learn from the interaction matrix; `products` adds categories and availability."""

    @abstractmethod
    def recommend_one(
        self, customer_id: str, k: int = 10, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> Recommendations:
        """Top-k for one customer (the hot path); an unknown customer gets the popular list."""

    @abstractmethod
    def recommend(
        self, customer_ids, k: int = 10, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> list[Recommendations]:
        """Top-k for many customers, equal to `recommend_one` for each."""

    @abstractmethod
    def top_k_block(
        self, rows: np.ndarray, k: int, filters: RecommendFilters = DEFAULT_FILTERS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Product indices and scores (n, k) of known customer rows; -inf marks missing slots."""

    @abstractmethod
    def recommend_for_items(
        self,
        recent_product_ids,
        k: int = 10,
        filters: RecommendFilters = DEFAULT_FILTERS,
        weights=None,
    ) -> Recommendations:
        """Fold-in: recommend for a customer the model never saw, from products they just used."""

    @abstractmethod
    def recommend_session(
        self,
        customer_id: str,
        recent_product_ids,
        k: int = 10,
        filters: RecommendFilters = DEFAULT_FILTERS,
        session_weight: float = SESSION_WEIGHT,
    ) -> Recommendations:
        """A known customer's top-k with the products they just used blended in."""

    @abstractmethod
    def similar_items(
        self, product_ids, k: int = 10, filters: RecommendFilters = NO_FILTERS
    ) -> list[Recommendations]:
        """The k products most similar to each given product (itself excluded), filtered."""

    @abstractmethod
    def popular(self, k: int = 10, filters: RecommendFilters = NO_FILTERS) -> Recommendations:
        """The list an unknown customer gets."""

    @abstractmethod
    def precompute(self, n: int = 100) -> Self:
        """Cache each known customer's top-n so that requests are answered from it."""

    def recommend_with_context(
        self,
        customer_id: str | None,
        k: int = 10,
        filters: RecommendFilters | None = None,
        recent_product_ids=(),
        category: str | None = None,
        session_weight: float = SESSION_WEIGHT,
    ) -> Recommendations:
        """What a storefront asks: a known customer gets `recommend_one` (with recent products,
        `recommend_session`), a new one with recent products the fold-in, anyone else the
        popular list. The fallback chain adds the category hint; other kinds ignore it."""
        check_is_fitted(self)
        filters = filters or DEFAULT_FILTERS
        if customer_id is not None and customer_id in self.customer_index_:
            if len(recent_product_ids):
                return self.recommend_session(
                    customer_id, recent_product_ids, k, filters, session_weight
                )
            return self.recommend_one(customer_id, k, filters)
        if len(recent_product_ids):
            return self.recommend_for_items(recent_product_ids, k, filters)
        return self.recommend_one(customer_id or "", k, filters)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a saved recommender; on `Recommender` itself, of the kind the folder records."""
        if cls is not Recommender:
            return super().load(path)
        # deferred import: the table of kinds lists the subclasses of this class (import cycle)
        from models.recommenders.kinds import RECOMMENDERS

        return load_kind(RECOMMENDERS, path, cls.meta_file)
