"""Logistic-regression fraud baseline (standardised features, missing values filled with the
training median), the handbook's reference model. Saved as JSON plus arrays."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from models.base import Estimator, check_is_fitted
from models.fraud.calibration import Calibrator
from shopml.errors import DataError

META_FILE = "baseline.json"
_ARRAYS = ("fill_", "mean_", "scale_", "coef_")


class LogisticBaseline(Estimator):
    """`StandardScaler` + `LogisticRegression` (scikit-learn defaults, as in the handbook)."""

    kind = "logistic_baseline"
    fitted_attribute = "coef_"
    meta_file = META_FILE

    def __init__(
        self, feature_names=None, *, C: float = 1.0, max_iter: int = 1000, random_state: int = 0
    ):
        self.feature_names = feature_names
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, X_cal=None, y_cal=None) -> LogisticBaseline:
        """Standardise X (NaN -> training median) and fit the regression; no calibration."""
        # scikit-learn: 0.4 s import, needed only to fit (serving loads fitted numbers)
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype="float64")
        self.n_features_in_ = X.shape[1]
        self.fill_ = np.nan_to_num(np.nanmedian(X, axis=0), nan=0.0)
        Z = np.where(np.isnan(X), self.fill_, X)
        self.mean_ = Z.mean(axis=0)
        self.scale_ = Z.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        lr.fit((Z - self.mean_) / self.scale_, np.asarray(y).astype(int))
        self.coef_ = lr.coef_[0].copy()
        self.intercept_ = float(lr.intercept_[0])
        self.feature_names_ = list(self.feature_names or [f"f{i}" for i in range(X.shape[1])])
        self.calibrator_ = _identity_calibrator()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-odds of fraud for each row."""
        check_is_fitted(self)
        X = np.asarray(X, dtype="float64")
        if X.ndim == 1:
            X = X.reshape(-1, self.n_features_in_)
        if X.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {X.shape[1]} features, but the model expects {self.n_features_in_}"
            )
        Z = np.where(np.isnan(X), self.fill_, X)
        return ((Z - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of fraud for each row (1-D)."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def predict_one(self, x) -> float:
        """Probability of fraud of one row, in plain Python (no array set-up)."""
        z = self.intercept_
        for v, f, m, s, c in zip(x, self.fill_, self.mean_, self.scale_, self.coef_, strict=True):
            z += ((f if v != v else v) - m) / s * c
        return 1.0 / (1.0 + math.exp(-z))

    def _json_state(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names_, "intercept": self.intercept_}

    def _array_state(self) -> dict[str, np.ndarray]:
        return {name.rstrip("_"): getattr(self, name) for name in _ARRAYS}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        for name in _ARRAYS:
            setattr(self, name, arrays[name.rstrip("_")])
        self.feature_names_ = list(meta["feature_names"])
        self.n_features_in_ = len(self.coef_)
        self.intercept_ = float(meta["intercept"])
        self.calibrator_ = _identity_calibrator()


def _identity_calibrator() -> Calibrator:
    """The baseline's probabilities are the logistic ones: a calibrator that changes nothing."""
    return Calibrator("none").fit(np.zeros(1), np.zeros(1))
