"""Shared inference of matrix-factorisation models: one dot product per customer."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.recommenders.scoring import ScoringRecommender


class FactorRecommender(ScoringRecommender):
    """Scores are user_factors_ @ item_factors_.T (contiguous float32)."""

    def _scores_known(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors_[rows] @ self.item_factors_.T

    def _score_one(self, row: int) -> np.ndarray:
        return self.item_factors_ @ self.user_factors_[row]

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return self._fold_in(X) @ self.item_factors_.T

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return self.item_factors_ @ self._fold_in_one(items, weights)

    def _fold_in(self, X: sp.csr_matrix) -> np.ndarray:
        """The customer vectors of interaction rows the model never saw."""
        out = np.zeros((X.shape[0], self.item_factors_.shape[1]), np.float32)
        for r in range(X.shape[0]):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            out[r] = self._fold_in_one(X.indices[lo:hi], X.data[lo:hi])
        return out

    def _fold_in_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """One customer vector (float32) from their product indices and weights."""
        raise NotImplementedError

    def _prepare(self) -> None:
        super()._prepare()
        norms = np.linalg.norm(self.item_factors_, axis=1)
        self._unit_items = self.item_factors_ / np.maximum(norms, 1e-12)[:, None]

    def _similar_scores(self, item: int) -> np.ndarray:
        return self._unit_items @ self._unit_items[item]

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
