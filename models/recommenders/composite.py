"""Composite recommenders: a weighted blend of models, and the cold-start fallback chain.

Both score through their parts (`_combine`), so filtering, top-k and the candidate cache are the
shared ones of `ScoringRecommender`. Parts are saved in sub-folders `part<i>` of the composite's
folder, each recording its own kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionMatrix
from models.base import check_is_fitted
from models.recommenders.interface import Recommender
from models.recommenders.popularity import PopularityRecommender
from models.recommenders.scoring import ScoringRecommender
from models.recommenders.selection import (
    DEFAULT_FILTERS,
    SESSION_WEIGHT,
    Recommendations,
    RecommendFilters,
    row_normalize,
)

PART_PARAMS = ("models", "primary", "popularity")  # parameters saved as sub-folders


class _Composite(ScoringRecommender):
    """Scores are `_combine` of the scores of `_scorers`; `parts` are saved beside the model."""

    @property
    def parts(self) -> list[Recommender]:
        raise NotImplementedError

    @property
    def _scorers(self) -> list[Recommender]:
        return self.parts

    def _combine(self, scores: Iterable[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        return self._combine(m._scores_known(rows) for m in self._scorers)

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return self._combine(m._scores_items(X) for m in self._scorers)

    def _score_one(self, row: int) -> np.ndarray:
        return self._combine(m._score_one(row) for m in self._scorers)

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self._combine(m._score_weights(items, weights) for m in self._scorers)

    def _similar_scores(self, item: int) -> np.ndarray:
        return self._combine(m._similar_scores(item) for m in self._scorers)

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        pass  # the parts were fitted by `fit`

    def _json_params(self) -> dict[str, Any]:
        params = {k: v for k, v in super()._json_params().items() if k not in PART_PARAMS}
        return params | {"n_parts": len(self.parts)}

    def _save_files(self, path: Path) -> None:
        for i, part in enumerate(self.parts):
            part.save(path / f"part{i}")

    @staticmethod
    def _load_parts(params: dict[str, Any], path: Path) -> list[Recommender]:
        return [Recommender.load(path / f"part{i}") for i in range(params["n_parts"])]


class BlendRecommender(_Composite):
    """Weighted sum of per-customer z-scored scores of several models fitted on the same data.
    Parts that are already fitted are used as they are."""

    kind = "blend"

    def __init__(self, models: list[Recommender], weights: list[float] | None = None):
        self.models = models
        self.weights = weights

    @property
    def parts(self) -> list[Recommender]:
        return self.models

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Self:
        if not self.models:
            raise ValueError("a blend needs at least one model")
        if len(self._weights()) != len(self.models):
            raise ValueError(f"{len(self._weights())} weights for {len(self.models)} models")
        for m in self.models:
            if not m.is_fitted:
                m.fit(matrix, products)
        return super().fit(matrix, products)

    def _weights(self) -> list[float]:
        return self.weights if self.weights is not None else [1.0] * len(self.models)

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        self.weights_ = np.asarray(self._weights(), dtype=np.float32)

    def _combine(self, scores: Iterable[np.ndarray]) -> np.ndarray:
        out = None
        for w, s in zip(self.weights_, scores, strict=True):
            if w == 0:
                continue
            z = row_normalize(np.asarray(s, dtype=np.float32)) * w
            out = z if out is None else out + z
        return out.astype(np.float32)

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights"]

    @classmethod
    def _init_params(cls, params: dict[str, Any], path: Path) -> dict[str, Any]:
        return {"models": cls._load_parts(params, path), "weights": params.get("weights")}


class FallbackRecommender(_Composite):
    """The chain a storefront needs: the primary model for a known customer (with their session
    blended in when they send recent products) -> its fold-in from recent products -> the category's popular products -> trending -> every product by
    popularity. The first link that can answer does, and the answer's `source` names it.

    `popularity` defaults to trending popularity; a known customer's answer is the primary's
    (same scores, filters and candidate cache), with the primary's name as source.
    """

    kind = "fallback"

    def __init__(self, primary: Recommender, popularity: PopularityRecommender | None = None):
        self.primary = primary
        self.popularity = popularity

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def parts(self) -> list[Recommender]:
        return [self.primary, self.popularity_model_]

    @property
    def _scorers(self) -> list[Recommender]:
        return [self.primary]

    def _combine(self, scores: Iterable[np.ndarray]) -> np.ndarray:
        return next(iter(scores))  # the primary's scores as they are

    def fit(self, matrix: InteractionMatrix, products: pd.DataFrame | None = None) -> Self:
        self.popularity_model_ = self.popularity
        if self.popularity_model_ is None:
            self.popularity_model_ = PopularityRecommender(mode="trending")
        self.primary.fit(matrix, products)
        self.popularity_model_.fit(matrix, products)
        return super().fit(matrix, products)

    def recommend_with_context(
        self,
        customer_id: str | None,
        k: int = 10,
        filters: RecommendFilters | None = None,
        recent_product_ids=(),
        category: str | None = None,
        session_weight: float = SESSION_WEIGHT,
    ) -> Recommendations:
        """Walk the chain (see the class docstring) for one storefront request."""
        check_is_fitted(self)
        filters = filters or DEFAULT_FILTERS
        if customer_id in self.customer_index_:
            if len(recent_product_ids):
                return self.recommend_session(
                    customer_id, recent_product_ids, k, filters, session_weight
                )
            return self.recommend_one(customer_id, k, filters)
        if any(str(p) in self.product_index_ for p in recent_product_ids):
            return self.recommend_for_items(recent_product_ids, k, filters)
        if category is not None and category in self.category_index_:
            rec = self.popularity_model_.for_category(category, k, filters)
            if len(rec):
                return rec
        return self._unknown_customer(k, filters)

    def _unknown_customer(self, k: int, filters: RecommendFilters) -> Recommendations:
        """The end of the chain: trending products, else every product by popularity."""
        rec = self.popularity_model_.popular(k, filters)
        if len(rec):
            return rec
        return self._by_popularity(k, filters, "popularity:global")

    @classmethod
    def _init_params(cls, params: dict[str, Any], path: Path) -> dict[str, Any]:
        primary, popularity = cls._load_parts(params, path)
        return {"primary": primary, "popularity": popularity}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self.popularity_model_ = self.popularity
        super()._restore(meta, arrays, path)
