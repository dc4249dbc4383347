"""Item-kNN recommenders over implicit's nearest-neighbour similarities (cosine or BM25).

Scores are the customer's weights times the K-nearest-neighbour similarity matrix; the
single-customer path gathers the neighbour lists of the customer's products with NumPy only.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

from features.interactions import InteractionMatrix
from models.recommenders.scoring import ScoringRecommender


class ItemKNNRecommender(ScoringRecommender):
    """similarity="cosine" or "bm25" (with K1, B); K neighbours kept per product."""

    kind = "item_knn"

    def __init__(
        self,
        similarity: Literal["cosine", "bm25"] = "bm25",
        K: int = 100,
        K1: float = 1.2,
        B: float = 0.75,
    ):
        self.similarity = similarity
        self.K = K
        self.K1 = K1
        self.B = B

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        if self.similarity == "cosine":
            model = CosineRecommender(K=self.K, num_threads=1)
        elif self.similarity == "bm25":
            model = BM25Recommender(K=self.K, K1=self.K1, B=self.B, num_threads=1)
        else:
            raise ValueError(f"similarity must be 'cosine' or 'bm25', got {self.similarity!r}")
        with warnings.catch_warnings():  # implicit converts its own internal COO copy
            warnings.simplefilter("ignore")
            model.fit(X, show_progress=False)
        S = sp.csr_matrix(model.similarity, dtype=np.float32)
        S.sort_indices()
        self.sim_ = S

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return np.asarray((X @ self.sim_).toarray(), dtype=np.float32)

    def _score_one(self, row: int) -> np.ndarray:
        lo, hi = self.user_items_.indptr[row], self.user_items_.indptr[row + 1]
        return self._score_weights(self.user_items_.indices[lo:hi], self.user_items_.data[lo:hi])

    def _score_weights(self, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The weights times the neighbour lists of `items`, gathered with NumPy only."""
        S = self.sim_
        starts, ends = S.indptr[items], S.indptr[items + 1]
        lens = ends - starts
        pos = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        pos += np.arange(lens.sum())
        weights = S.data[pos] * np.repeat(w, lens)
        return np.bincount(S.indices[pos], weights=weights, minlength=self.n_items).astype(
            np.float32
        )

    def _similar_scores(self, item: int) -> np.ndarray:
        out = np.zeros(self.n_items, np.float32)
        lo, hi = self.sim_.indptr[item], self.sim_.indptr[item + 1]
        out[self.sim_.indices[lo:hi]] = self.sim_.data[lo:hi] + 1.0  # neighbours first
        return out

    def _model_arrays(self) -> dict[str, np.ndarray]:
        S = self.sim_
        return {"sim_data": S.data, "sim_indices": S.indices, "sim_indptr": S.indptr}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["sim_indptr"]) - 1
        self.sim_ = sp.csr_matrix(
            (arrays["sim_data"], arrays["sim_indices"], arrays["sim_indptr"]), shape=(n, n)
        )
