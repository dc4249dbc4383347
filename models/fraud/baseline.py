"""Logistic-regression fraud baseline (standardised features, missing values filled with the
training median), the handbook's reference model. Saved as JSON numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from models.fraud.calibration import Calibrator
from shopml.errors import DataError, NotFittedError

META_FILE = "baseline.json"


class LogisticBaseline:
    """`StandardScaler` + `LogisticRegression` (scikit-learn defaults, as in the handbook)."""

    def __init__(
        self, feature_names=None, *, C: float = 1.0, max_iter: int = 1000, random_state: int = 0
    ):
        self.feature_names = feature_names
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, X_cal=None, y_cal=None) -> LogisticBaseline:
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
        self.calibrator_ = Calibrator("none").fit(np.zeros(1), np.zeros(1))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("LogisticBaseline is not fitted; call fit() first")
        X = (
            np.asarray(X, dtype="float64").reshape(-1, self.n_features_in_)
            if np.ndim(X) == 1
            else np.asarray(X, dtype="float64")
        )
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
        z = self.intercept_
        for v, f, m, s, c in zip(x, self.fill_, self.mean_, self.scale_, self.coef_, strict=True):
            z += ((f if v != v else v) - m) / s * c
        return 1.0 / (1.0 + math.exp(-z))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": "LogisticBaseline",
            "C": self.C,
            "max_iter": self.max_iter,
            "random_state": self.random_state,
            "feature_names": self.feature_names_,
            "fill": self.fill_.tolist(),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LogisticBaseline:
        meta = json.loads((Path(path) / META_FILE).read_text())
        m = cls(
            meta["feature_names"],
            C=meta["C"],
            max_iter=meta["max_iter"],
            random_state=meta["random_state"],
        )
        m.feature_names_ = meta["feature_names"]
        m.n_features_in_ = len(meta["coef"])
        for k in ("fill", "mean", "scale", "coef"):
            setattr(m, k + "_", np.asarray(meta[k], dtype="float64"))
        m.intercept_ = float(meta["intercept"])
        m.calibrator_ = Calibrator("none").fit(np.zeros(1), np.zeros(1))
        return m
