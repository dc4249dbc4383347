"""LightGBM fraud scorer: class-imbalance handling, calibrated probabilities, reason codes.

Training rows are the point-in-time features of labelled payments. Genuine payments can be
subsampled (`neg_sample_rate`) and frauds up-weighted (`scale_pos_weight`); both distort raw
scores, so a `Calibrator` fitted on a later period maps them back to probabilities. One payment
is scored through LightGBM's single-row C API (`FastPredictor`) on a preallocated buffer.
Saved as LightGBM model text + JSON (no pickles).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

from features.fraud.definition import FeatureSet
from models.base import Estimator, check_is_fitted
from models.fraud.calibration import Calibrator
from models.fraud.reasons import Reason, describe
from shopml.errors import DataError
from shopml.progress import RoundsBar

_PREDICT_RAW, _PREDICT_CONTRIB, _FLOAT64 = 1, 3, 1
MODEL_FILE, META_FILE = "booster.txt", "scorer.json"


class FastPredictor:
    """LightGBM's `PredictForMatSingleRowFast` bound to one booster (raw score or contributions)."""

    def __init__(self, booster: lgb.Booster, n_features: int, contrib: bool = False):
        self._lib, self._safe_call = _LIB, _safe_call
        self._booster = booster  # keep the booster alive as long as the handle
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_CONTRIB if contrib else _PREDICT_RAW),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self.n_out = n_features + 1 if contrib else 1
        self._result = (ctypes.c_double * self.n_out)()
        self._out_len = ctypes.c_int64()
        self._fn = _LIB.LGBM_BoosterPredictForMatSingleRowFast

    def __call__(self, data_ptr: ctypes.c_void_p):
        """Predict the row at `data_ptr` (n_features contiguous float64); returns the result array."""
        if self._fn(self._handle, data_ptr, ctypes.byref(self._out_len), self._result) != 0:
            self._safe_call(-1)
        return self._result

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self._lib.LGBM_FastConfigFree(self._handle)


class FraudScorer(Estimator):
    """LightGBM classifier of fraud with calibrated probabilities and reason codes.

    Parameters are stored as given (scikit-learn style); fitted state ends with `_`.
    `scale_pos_weight="auto"` uses sqrt(negatives / positives) of the training rows.
    Saved as `booster.txt` (LightGBM text) and `scorer.json` (params, calibration).
    """

    kind = "scorer"
    fitted_attribute = "booster_"
    meta_file = META_FILE

    def __init__(
        self,
        feature_names=None,
        *,
        feature_version: str = "",
        num_boost_round: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 100,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        scale_pos_weight: float | str = 1.0,
        neg_sample_rate: float = 1.0,
        calibration: str = "platt",
        num_threads: int = 0,
        random_state: int = 0,
    ):
        self.feature_names = feature_names
        self.feature_version = feature_version
        self.num_boost_round = num_boost_round
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.scale_pos_weight = scale_pos_weight
        self.neg_sample_rate = neg_sample_rate
        self.calibration = calibration
        self.num_threads = num_threads
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def _lgb_params(self, y: np.ndarray) -> dict:
        return self.lgb_params(len(y), int(np.sum(y)))

    def lgb_params(self, n_rows: int, n_frauds: int) -> dict:
        """LightGBM's parameters for a training set of `n_rows` with `n_frauds` (the Dask
        trainer of the fraud job passes the counts; its rows never meet in one process)."""
        spw = self.scale_pos_weight
        if spw == "auto":
            pos = max(float(n_frauds), 1.0)
            spw = math.sqrt(max(float(n_rows) - pos, 1.0) / pos)
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "scale_pos_weight": float(spw),
            "num_threads": self.num_threads,
            "seed": self.random_state,
            "deterministic": True,
            "verbose": -1,
        }

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_cal: np.ndarray | None = None,
        y_cal: np.ndarray | None = None,
    ) -> FraudScorer:
        """Train the booster on (X, y); fit the calibrator on the later (X_cal, y_cal)."""
        X = self._check_X(X, fitting=True)
        y = np.asarray(y).astype(bool)
        if y.shape[0] != X.shape[0]:
            raise DataError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
        if y.sum() == 0 or y.all():
            raise DataError("training labels hold a single class; need frauds and genuine payments")
        rows = np.arange(X.shape[0])
        if self.neg_sample_rate < 1.0:
            rng = np.random.default_rng(self.random_state)
            rows = rows[y | (rng.random(X.shape[0]) < self.neg_sample_rate)]
        names = list(self.feature_names) if self.feature_names else None
        ds = lgb.Dataset(
            X[rows], y[rows].astype("float64"), feature_name=names or "auto", free_raw_data=True
        )
        self.booster_ = lgb.train(
            self._lgb_params(y[rows]),
            ds,
            self.num_boost_round,
            callbacks=[RoundsBar("fraud scorer", self.num_boost_round)],
        )
        return self.calibrate(self.booster_, X.shape[1], X_cal, y_cal)

    def calibrate(
        self,
        booster: lgb.Booster,
        n_features: int,
        X_cal: np.ndarray | None = None,
        y_cal: np.ndarray | None = None,
    ) -> FraudScorer:
        """Take `booster` as the scorer's (trained by `fit`, or by LightGBM's Dask trainer: the
        same native model) and fit the calibrator on the later (X_cal, y_cal)."""
        self.booster_ = booster
        self.feature_names_ = list(self.booster_.feature_name())
        self.n_features_in_ = n_features
        method = self.calibration if X_cal is not None else "none"
        if X_cal is not None:
            raw = self.decision_function(X_cal)
            self.calibrator_ = Calibrator(method).fit(raw, np.asarray(y_cal).astype(bool))
        else:
            self.calibrator_ = Calibrator("none").fit(np.zeros(1), np.zeros(1))
        self._fast = self._fast_contrib = None
        return self

    # -------------------------------------------------------------- predict
    def _check_X(self, X, fitting: bool = False) -> np.ndarray:
        """X as 2-D float64; DataError when its feature count is not the expected one."""
        X = np.asarray(X, dtype="float64")
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (payments x features), got {X.ndim}-D")
        if fitting:
            expected = len(self.feature_names) if self.feature_names else None
        else:
            expected = self.n_features_in_
        if expected is not None and X.shape[1] != expected:
            raise DataError(f"X has {X.shape[1]} features, but the scorer expects {expected}")
        return X

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw log-odds scores (before calibration)."""
        check_is_fitted(self)
        return self.booster_.predict(self._check_X(X), raw_score=True)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probability of fraud for each row (1-D)."""
        raw = self.decision_function(X)
        return self.calibrator_.transform(raw)

    def fast_predictor(self, contrib: bool = False) -> FastPredictor:
        check_is_fitted(self)
        return FastPredictor(self.booster_, self.n_features_in_, contrib)

    def predict_one(self, x: np.ndarray) -> float:
        """Calibrated probability for one contiguous float64 vector (the serving hot path)."""
        if self._fast is None:
            self._fast = self.fast_predictor()
        return self.calibrator_.one(self._fast(ctypes.c_void_p(x.ctypes.data))[0])

    def contributions(self, x: np.ndarray) -> list[float]:
        """Per-feature log-odds contributions of one row (last item: the bias)."""
        if self._fast_contrib is None:
            self._fast_contrib = self.fast_predictor(contrib=True)
        x = np.ascontiguousarray(x, dtype="float64")
        return list(self._fast_contrib(ctypes.c_void_p(x.ctypes.data)))

    def explain(self, x: np.ndarray, top: int = 3, fs: FeatureSet | None = None) -> list[Reason]:
        """The `top` features that raise this payment's score most, as sentences (constants from
        `fs`); a feature that lowers the score is never a reason, so there may be none."""
        x = np.ascontiguousarray(x, dtype="float64").reshape(-1)
        contrib = self.contributions(x)[:-1]
        up = sorted((j for j in range(len(contrib)) if contrib[j] > 0), key=lambda j: -contrib[j])
        names = self.feature_names_
        return [
            Reason(
                names[j],
                describe(names[j], float(x[j]), fs),
                feature=names[j],
                value=float(x[j]),
                contribution=float(contrib[j]),
            )
            for j in up[:top]
        ]

    # ------------------------------------------------------------ save/load
    def _json_state(self) -> dict[str, Any]:
        return {
            "feature_names": self.feature_names_,
            "n_features": self.n_features_in_,
            "calibrator": self.calibrator_.to_dict(),
        }

    def _save_files(self, path: Path) -> None:
        self.booster_.save_model(str(path / MODEL_FILE))

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self.booster_ = lgb.Booster(model_file=str(path / MODEL_FILE))
        self.feature_names_ = list(meta["feature_names"])
        self.n_features_in_ = int(meta["n_features"])
        self.calibrator_ = Calibrator.from_dict(meta["calibrator"])
        self._fast = self._fast_contrib = None
