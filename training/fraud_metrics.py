"""Fraud metrics: ranking (AUC, AP, Card Precision@k as in the fraud-detection handbook),
operating point (precision/recall at threshold, review rate, expected cost and savings) and
calibration (Brier score, expected calibration error)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from shopml.errors import DataError


def _check(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype="float64")
    if y.shape != s.shape:
        raise DataError(f"labels have shape {y.shape} but scores {s.shape}")
    return y, s


def auc_roc(y, s) -> float:
    y, s = _check(y, s)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def average_precision(y, s) -> float:
    y, s = _check(y, s)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def card_precision_at_k(day, card, y, s, k: int = 100, remove_detected: bool = True) -> float:
    """Handbook CP@k: each day, score each card by its highest-scored payment that day, take the
    k highest cards and count those with a fraud that day / k; cards detected (true positives) on
    an earlier day are left out of later days; averaged over days."""
    y, s = _check(y, s)
    df = pd.DataFrame({"day": np.asarray(day), "card": np.asarray(card), "s": s, "y": y})
    per = df.groupby(["day", "card"], sort=True).agg(s=("s", "max"), y=("y", "max")).reset_index()
    detected: set = set()
    values = []
    for _, g in per.groupby("day", sort=True):
        if remove_detected and detected:
            g = g[~g["card"].isin(detected)]
        top = g.sort_values("s", ascending=False, kind="stable").head(k)
        values.append(float(top["y"].sum()) / k)
        if remove_detected:
            detected.update(top.loc[top["y"], "card"].tolist())
    return float(np.mean(values)) if values else float("nan")


def precision_recall_at(y, p, threshold: float) -> tuple[float, float]:
    y, p = _check(y, p)
    flagged = p >= threshold
    tp = float((flagged & y).sum())
    precision = tp / flagged.sum() if flagged.any() else float("nan")
    recall = tp / y.sum() if y.any() else float("nan")
    return precision, recall


def brier_score(y, p) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(y, p, bins: int = 15) -> float:
    """Mean |observed fraud rate - mean probability| over equal-count bins, weighted by size.

    Equal-count bins (not equal-width) because nearly all probabilities are close to 0."""
    y, p = _check(y, p)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    err = 0.0
    for chunk in np.array_split(order, min(bins, len(p))):
        if chunk.size:
            err += chunk.size * abs(float(y[chunk].mean()) - float(p[chunk].mean()))
    return err / len(p)


def calibration_curve(y, p, bins: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed rate) per equal-count bin."""
    y, p = _check(y, p)
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, max(len(p), 1))) if c.size]
    return (np.array([p[c].mean() for c in chunks]), np.array([y[c].mean() for c in chunks]))


def decision_costs(
    y, amount, decisions, review_cost: float, review_recall: float, decline_cost_ratio: float
) -> dict[str, float]:
    """Cost of the decisions against approving everything (fraud losses only)."""
    y = np.asarray(y).astype(bool)
    amount = np.asarray(amount, dtype="float64")
    d = np.asarray(decisions, dtype=object)
    approve, review, decline = d == "approve", d == "review", d == "decline"
    cost = (
        float(amount[approve & y].sum())
        + float(review.sum()) * review_cost
        + float(amount[review & y].sum()) * (1.0 - review_recall)
        + float(amount[decline & ~y].sum()) * decline_cost_ratio
    )
    baseline = float(amount[y].sum())
    return {
        "expected_cost": cost,
        "baseline_cost": baseline,
        "savings": baseline - cost,
        "savings_rate": (baseline - cost) / baseline if baseline > 0 else float("nan"),
        "review_rate": float(review.mean()) if len(d) else float("nan"),
        "decline_rate": float(decline.mean()) if len(d) else float("nan"),
    }


def fraud_metrics(
    y,
    p,
    *,
    day=None,
    card=None,
    amount=None,
    decisions=None,
    threshold: float = 0.5,
    policy=None,
    k: int = 100,
) -> dict[str, float]:
    """Every fraud metric the job logs, by name."""
    y, p = _check(y, p)
    m = {
        "auc_roc": auc_roc(y, p),
        "average_precision": average_precision(y, p),
        "brier_score": brier_score(y, p),
        "calibration_error": expected_calibration_error(y, p),
        "fraud_rate": float(y.mean()) if len(y) else float("nan"),
        "n_payments": float(len(y)),
    }
    if day is not None and card is not None:
        m[f"card_precision_at_{k}"] = card_precision_at_k(day, card, y, p, k)
    prec, rec = precision_recall_at(y, p, threshold)
    m["precision_at_threshold"], m["recall_at_threshold"] = prec, rec
    if decisions is not None and amount is not None and policy is not None:
        m |= decision_costs(
            y,
            amount,
            decisions,
            policy.review_cost,
            policy.review_recall,
            policy.decline_cost_ratio,
        )
    return m
