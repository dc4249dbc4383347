"""Composite recommenders: a weighted blend of models, and the cold-start fallback chain.

Children are saved in sub-folders `part<i>` of the composite's folder and loaded by class name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionMatrix
from models.recommenders.base import Recommendations, Recommender, RecommendFilters, row_normalize
from models.recommenders.popularity import PopularityRecommender


class _Composite(Recommender):
    parts: list[Recommender]

    def _json_params(self) -> dict:
        params = {
            k: v
            for k, v in self.get_params().items()
            if k not in ("models", "primary", "popularity")
        }
        params["n_parts"] = len(self.parts)
        return params

    def _save_children(self, folder: Path) -> None:
        for i, part in enumerate(self.parts):
            part.save(folder / f"part{i}")

    @staticmethod
    def _load_parts(params: dict, folder: Path) -> list[Recommender]:
        return [Recommender.load(folder / f"part{i}") for i in range(params.pop("n_parts"))]


class BlendRecommender(_Composite):
    """Weighted sum of per-customer z-scored scores of several models fitted on the same data."""

    name = "blend"

    def __init__(self, models: list[Recommender], weights: list[float] | None = None):
        self.models = models
        self.weights = weights

    @property
    def parts(self) -> list[Recommender]:
        return self.models

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        if not self.models:
            raise ValueError("a blend needs at least one model")
        w = self.weights if self.weights is not None else [1.0] * len(self.models)
        if len(w) != len(self.models):
            raise ValueError(f"{len(w)} weights for {len(self.models)} models")
        self.weights_ = np.asarray(w, dtype=np.float32)
        for m in self.models:
            if not hasattr(m, "product_ids_"):
                m.fit(matrix, self._products)

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None):
        self._products = products
        return super().fit(matrix, products)

    def _combine(self, blocks) -> np.ndarray:
        out = None
        for w, s in zip(self.weights_, blocks, strict=True):
            if w == 0:
                continue
            z = row_normalize(np.asarray(s, dtype=np.float32)) * w
            out = z if out is None else out + z
        return out.astype(np.float32)

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        return self._combine(m._scores_known(rows) for m in self.models)

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return self._combine(m._scores_items(X) for m in self.models)

    def _score_one(self, row: int) -> np.ndarray:
        return self._combine(m._score_one(row) for m in self.models)

    def _similar_scores(self, item: int) -> np.ndarray:
        return self._combine(m._similar_scores(item) for m in self.models)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights"]

    @classmethod
    def _from_params(cls, params: dict, folder: Path) -> BlendRecommender:
        params = dict(params)
        parts = cls._load_parts(params, folder)
        return cls(models=parts, weights=params.get("weights"))


class FallbackRecommender(_Composite):
    """The chain a storefront needs: personalised model -> fold-in from recent products ->
    category / trending popularity -> global popularity. Every answer names its source."""

    name = "fallback"

    def __init__(self, primary: Recommender, popularity: PopularityRecommender | None = None):
        self.primary = primary
        self.popularity = popularity

    @property
    def parts(self) -> list[Recommender]:
        return [self.primary, self.popularity]

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None):
        if self.popularity is None:
            self.popularity = PopularityRecommender(mode="trending")
        self.primary.fit(matrix, products)
        self.popularity.fit(matrix, products)
        return super().fit(matrix, products)

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        pass

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        return self.primary._scores_known(rows)

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return self.primary._scores_items(X)

    def _score_one(self, row: int) -> np.ndarray:
        return self.primary._score_one(row)

    def _similar_scores(self, item: int) -> np.ndarray:
        return self.primary._similar_scores(item)

    def recommend_one(self, customer_id, k=10, filters=None) -> Recommendations:
        rec = super().recommend_one(customer_id, k, filters or RecommendFilters())
        if rec.source == self.name:
            rec.source = self.primary.name
        return rec

    def recommend(self, customer_ids, k=10, filters=None) -> list[Recommendations]:
        recs = super().recommend(customer_ids, k, filters or RecommendFilters())
        for r in recs:
            if r.source == self.name:
                r.source = self.primary.name
        return recs

    def similar_items(self, product_ids, k: int = 10) -> list[Recommendations]:
        recs = super().similar_items(product_ids, k)
        for r in recs:
            r.source = self.primary.name
        return recs

    def recommend_with_context(
        self,
        customer_id: str,
        k: int = 10,
        filters: RecommendFilters | None = None,
        recent_product_ids=(),
        category: str | None = None,
    ) -> Recommendations:
        """Walk the chain: known customer, recent products, category hint, trending, global."""
        filters = filters or RecommendFilters()
        if customer_id in self.customer_index_:
            return self.recommend_one(customer_id, k, filters)
        if any(str(p) in self.product_index_ for p in recent_product_ids):
            rec = self.primary.recommend_for_items(recent_product_ids, k, filters)
            rec.source = f"{self.primary.name}:fold-in"
            return rec
        if category is not None and category in self.category_index_:
            rec = self.popularity.for_category(category, k, filters)
            if len(rec):
                return rec
        return self._unknown_customer(k, filters)

    def _unknown_customer(self, k: int, filters: RecommendFilters) -> Recommendations:
        rec = self.popularity._unknown_customer(k, filters)
        if len(rec) == 0:
            rec = Recommender._unknown_customer(self, k, filters)
            rec.source = "popularity:global"
        return rec

    @classmethod
    def _from_params(cls, params: dict, folder: Path) -> FallbackRecommender:
        params = dict(params)
        primary, popularity = cls._load_parts(params, folder)
        return cls(primary=primary, popularity=popularity)
