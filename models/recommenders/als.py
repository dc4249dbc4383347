"""Implicit-feedback ALS (Hu, Koren & Volinsky) trained by `implicit`, with exact fold-in."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from features.interactions import InteractionMatrix
from models.recommenders.factors import FactorRecommender

try:  # the gufunc `np.linalg.solve` calls for one right-hand side, without its checks
    from numpy.linalg._umath_linalg import solve1 as _solve1
except ImportError:  # another NumPy layout: np.linalg.solve itself
    _solve1 = None


class ALSRecommender(FactorRecommender):
    """Confidence = alpha * weight; a new customer's vector is solved from their products."""

    kind = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        random_state: int = 42,
        num_threads: int = 1,
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        model = AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
            calculate_training_loss=False,
        )
        model.fit(X, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _prepare(self) -> None:
        super()._prepare()
        self._YtY = None

    def _fold_in_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The exact ALS solve of one customer vector with the item factors fixed."""
        if getattr(self, "_YtY", None) is None:  # cached: the same for every new customer
            Y = self.item_factors_.astype(np.float64)
            self._YtY = Y.T @ Y + self.regularization * np.eye(Y.shape[1])
        if len(items) == 0:
            return np.zeros(self._YtY.shape[0], np.float32)
        Yi = self.item_factors_[items].astype(np.float64)
        c = self.alpha * np.asarray(weights, dtype=np.float64)
        A = self._YtY + (Yi.T * (c - 1.0)) @ Yi
        b = Yi.T @ c
        if _solve1 is not None:  # the same LAPACK call as np.linalg.solve (same bits), ~8 us less
            with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
                u = _solve1(A, b, signature="dd->d")
            if np.isfinite(u).all():
                return u.astype(np.float32)
        return np.linalg.solve(A, b).astype(np.float32)  # raises as before on a singular A
