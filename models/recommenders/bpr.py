"""Bayesian Personalised Ranking trained by `implicit`; fold-in averages the product vectors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.bpr import BayesianPersonalizedRanking

from features.interactions import InteractionMatrix
from models.recommenders.factors import FactorRecommender


class BPRRecommender(FactorRecommender):
    """Pairwise ranking factors; the last factor column is the product bias."""

    kind = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 42,
        num_threads: int = 1,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _fit(self, X: sp.csr_matrix, matrix: InteractionMatrix) -> None:
        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )
        model.fit(X, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _fold_in_one(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The weighted mean of the products' vectors, with the bias column set to 1."""
        V = self.item_factors_
        out = np.zeros(V.shape[1], np.float32)
        out[-1] = 1.0  # bias column
        if len(items):
            w = weights / weights.sum()
            out[:-1] = w @ V[items, :-1]
        return out
