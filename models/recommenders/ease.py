"""EASE: a closed-form item-item linear autoencoder (Steck, 2019), with optional dropout
denoising (the DLAE variant: a per-item penalty p/(1-p) * diag(G)). Strong on dense data such as
MovieLens; one n_items x n_items inverse, so meant for catalogs up to ~20k products."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from features.interactions import InteractionMatrix
from models.recommenders.scoring import ScoringRecommender
from shopml.errors import ConfigError

MAX_ITEMS = 20_000
PEAK_BYTES_PER_CELL = 12  # float32 Gram matrix, its in-place inverse and B: 3 x 4 bytes per cell


def check_catalog_size(n_items: int, max_items: int | None = None) -> None:
    """Refuse a catalog past EASE's limit (`MAX_ITEMS`) before the dense n x n matrices are
    allocated: the closed form cannot be cut into partitions, so no cluster helps."""
    max_items = MAX_ITEMS if max_items is None else max_items
    if n_items > max_items:
        gb = PEAK_BYTES_PER_CELL * n_items * n_items / 1e9
        raise ConfigError(
            f"model.kind 'ease': the interaction matrix has {n_items:,} products, past EASE's "
            f"limit of {max_items:,} (its dense {n_items:,} x {n_items:,} item-item inverse "
            f"needs about {gb:.1f} GB on one machine); use 'als' or 'bpr' (memory grows with "
            "the interactions, not with products squared) or 'item_knn', or fewer products "
            "(interactions.min_product_customers, interactions.exclude_products)"
        )


def _spd_inverse(G: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix via Cholesky in float32 (about 4x
    faster than a float64 LU inverse; ranking needs no more precision), float64 LU if that fails."""
    c, info = lapack.spotrf(
        np.asfortranarray(G, dtype=np.float32), lower=False, overwrite_a=True, clean=False
    )
    if info == 0:
        inv, info = lapack.spotri(c, lower=False, overwrite_c=True)
        if info == 0:
            return np.triu(inv) + np.triu(inv, 1).T
    return np.linalg.inv(G.astype(np.float64))


class EASERecommender(ScoringRecommender):
    """B = argmin ||X - XB||^2 + l2 ||B||^2 (diag(B) = 0); scores are X_u @ B."""

    kind = "ease"

    def __init__(self, l2: float = 300.0, dropout: float = 0.0):
        self.l2 = l2
        self.dropout = dropout

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")
        n = X.shape[1]
        check_catalog_size(n)
        G = (X.T @ X).toarray().astype(np.float32)
        diag = np.diag(G).copy()
        G[np.diag_indices(n)] += self.l2 + self.dropout / (1.0 - self.dropout) * diag
        P = _spd_inverse(G)
        B = P / (-np.diag(P))[None, :]
        B[np.diag_indices(n)] = 0.0
        self.B_ = np.ascontiguousarray(B, dtype=np.float32)

    def _scores_items(self, X: sp.csr_matrix) -> np.ndarray:
        return np.asarray(X @ self.B_, dtype=np.float32)

    def _score_one(self, row: int) -> np.ndarray:
        lo, hi = self.user_items_.indptr[row], self.user_items_.indptr[row + 1]
        return self._score_weights(self.user_items_.indices[lo:hi], self.user_items_.data[lo:hi])

    def _score_weights(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return weights @ self.B_[items]

    def _similar_scores(self, item: int) -> np.ndarray:
        return self.B_[item].copy()

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"B": self.B_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.B_ = np.ascontiguousarray(arrays["B"], dtype=np.float32)
