"""Live fraud performance: the decision log joined with the late labels, once labels matured.

A payment's label has matured when its feature set's label delay has passed since it was paid
(`label_delay_s`, logged with each decision): by then its fraud label is known if it ever
will be, so a matured payment without a fraud label known by now counts as genuine, and one
not matured yet counts nowhere. On the matured payments, per model version and per week:
precision and recall of the decline and of the review decisions (and of both together,
"flagged"), average precision and calibration error of the probabilities, review and decline
rates, and the fraud amount declined, sent to review and let through (approved), in the base
currency. The served model and the shadow are measured the same way; `compare_live` puts them
side by side on the same payments (those the shadow scored) and `live_gate_checks` applies the
promotion gate's own checks (evidence, primary metric by margin, guards) to these live numbers
(`shopml compare --live fraud`, `shopml promote fraud RUN --live`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from features.fraud.decision_log import DecisionLog
from features.fraud.labels import LabelStore
from models.family import FamilySpec
from shopml.clock import from_epoch_ms, now_ms
from shopml.errors import ConfigError
from shopml.settings import Settings
from training.fraud_metrics import average_precision, expected_calibration_error

SERVED, SHADOW = "served", "shadow"
EVIDENCE = "test_frauds"  # the gate's evidence count, measured live as matured frauds
# the metrics a table shows, in order (rates and precisions as fractions, amounts in base units)
SHOWN = (
    "payments",
    "frauds",
    "average_precision",
    "decline_precision",
    "decline_recall",
    "review_precision",
    "review_recall",
    "flagged_precision",
    "flagged_recall",
    "review_rate",
    "decline_rate",
    "calibration_error",
    "fraud_amount",
    "fraud_amount_declined",
    "fraud_amount_reviewed",
    "fraud_amount_approved",
)


def matured(decisions: pd.DataFrame, labels: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """The logged decisions whose label has matured by `now` (naive UTC), with `is_fraud` (a
    fraud label known by `now`) and `week` (the Monday of the payment's week)."""
    due = decisions["payment_time"] + pd.to_timedelta(decisions["label_delay_s"], unit="s")
    out = decisions.loc[due <= pd.Timestamp(now)].copy()
    known = labels.loc[labels["label_time"] <= pd.Timestamp(now)]
    fraud = set(known.loc[known["is_fraud"].astype(bool), "transaction_id"].astype(str))
    out["is_fraud"] = out["transaction_id"].astype(str).isin(fraud).to_numpy()
    day = out["payment_time"].dt.normalize()
    out["week"] = (day - pd.to_timedelta(day.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")
    return out.reset_index(drop=True)


def load_matured(settings: Settings, now: datetime | None = None) -> pd.DataFrame:
    """`matured` of the fraud database the settings name (decision log and label store)."""
    now = now or from_epoch_ms(now_ms())
    decisions = DecisionLog.open(settings).read()
    labels = LabelStore.open(settings).read()
    return matured(decisions, labels, now)


def _share(hit: np.ndarray, of: np.ndarray) -> float:
    n = int(of.sum())
    return float((hit & of).sum() / n) if n else float("nan")


def decision_metrics(y, p, decisions, amount) -> dict[str, float]:
    """The live metrics of one model on some matured payments (see the module doc)."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype="float64")
    d = np.asarray(decisions, dtype=object)
    amount = np.asarray(amount, dtype="float64")
    decline, review = d == "decline", d == "review"
    flagged = decline | review
    n = len(y)
    return {
        "payments": float(n),
        "frauds": float(y.sum()),
        "average_precision": average_precision(y, p) if n else float("nan"),
        "decline_precision": _share(y, decline),
        "decline_recall": _share(decline, y),
        "review_precision": _share(y, review),
        "review_recall": _share(review, y),
        "flagged_precision": _share(y, flagged),
        "flagged_recall": _share(flagged, y),
        "review_rate": float(review.mean()) if n else float("nan"),
        "decline_rate": float(decline.mean()) if n else float("nan"),
        "calibration_error": expected_calibration_error(y, p) if n else float("nan"),
        "fraud_amount": float(amount[y].sum()),
        "fraud_amount_declined": float(amount[y & decline].sum()),
        "fraud_amount_reviewed": float(amount[y & review].sum()),
        "fraud_amount_approved": float(amount[y & ~flagged].sum()),
    }


def _role_frame(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    """The (version, probability, decision) of `role` on the payments it scored."""
    if role == SERVED:
        cols = {"model_version": "version", "probability": "p", "decision": "d"}
        part = frame
    else:
        cols = {"shadow_version": "version", "shadow_probability": "p", "shadow_decision": "d"}
        part = frame.loc[frame["shadow_version"].notna()]
    part = part.rename(columns=cols)
    return part[["transaction_id", "version", "p", "d", "amount", "is_fraud", "week"]]


def live_performance(frame: pd.DataFrame, weekly: bool = True) -> pd.DataFrame:
    """One row per role (served, shadow), model version and week (`weekly=False`: over all
    matured payments, week "all"), with the `SHOWN` metrics."""
    rows = []
    for role in (SERVED, SHADOW):
        part = _role_frame(frame, role)
        keys = ["version", "week"] if weekly else ["version"]
        for key, group in part.groupby(keys, sort=True):
            version, week = key if weekly else (key[0] if isinstance(key, tuple) else key, "all")
            m = decision_metrics(group["is_fraud"], group["p"], group["d"], group["amount"])
            rows.append({"role": role, "model_version": version, "week": week, **m})
    return pd.DataFrame(rows, columns=["role", "model_version", "week", *SHOWN])


@dataclass
class LiveComparison:
    """The served model and the shadow on the same matured payments (those the shadow
    scored): their metrics over all of them and per week."""

    served_version: str
    shadow_version: str
    served: dict[str, float]
    shadow: dict[str, float]
    weeks: pd.DataFrame  # week, metric, served, shadow

    @property
    def payments(self) -> int:
        return int(self.served["payments"])

    def delta(self, metric: str) -> float:
        return self.shadow[metric] - self.served[metric]


def compare_live(
    frame: pd.DataFrame, served_version: str | None = None, shadow_version: str | None = None
) -> LiveComparison:
    """The two models side by side on the payments both scored; the versions default to the
    pair with the most matured payments. ConfigError when there are none."""
    both = frame.loc[frame["shadow_version"].notna()]
    if served_version is not None:
        both = both.loc[both["model_version"] == served_version]
    if shadow_version is not None:
        both = both.loc[both["shadow_version"] == shadow_version]
    if both.empty:
        wanted = " and ".join(
            f"{who} {v}"
            for who, v in (("served", served_version), ("shadow", shadow_version))
            if v is not None
        )
        raise ConfigError(
            "no matured payments scored in shadow"
            + (f" by {wanted}" if wanted else "")
            + ": serve a Bento carrying a @challenger (shopml build) and wait for the labels "
            "to mature (the feature set's label delay after each payment)"
        )
    pair = both.groupby(["model_version", "shadow_version"]).size().idxmax()
    both = both.loc[(both["model_version"] == pair[0]) & (both["shadow_version"] == pair[1])]

    def metrics_of(part: pd.DataFrame, role: str) -> dict[str, float]:
        r = _role_frame(part, role)
        return decision_metrics(r["is_fraud"], r["p"], r["d"], r["amount"])

    weeks = []
    for week, group in both.groupby("week", sort=True):
        a, b = metrics_of(group, SERVED), metrics_of(group, SHADOW)
        weeks += [{"week": week, "metric": m, SERVED: a[m], SHADOW: b[m]} for m in SHOWN]
    return LiveComparison(
        str(pair[0]),
        str(pair[1]),
        metrics_of(both, SERVED),
        metrics_of(both, SHADOW),
        pd.DataFrame(weeks, columns=["week", "metric", SERVED, SHADOW]),
    )


def gate_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Live metrics under the names the promotion gate reads (the evidence count is the
    matured frauds)."""
    out = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    out[EVIDENCE] = metrics["frauds"]
    return out


def live_gate_checks(spec: FamilySpec, comparison: LiveComparison) -> list:
    """The gate's checks on live evidence: enough matured frauds, the primary metric by the
    family's margin, the guards; names prefixed `live` (shadow = the challenger)."""
    from training.promotion import Check, Tested, evidence_checks, guard_check, primary_check

    new = gate_metrics(comparison.shadow)
    old = gate_metrics(comparison.served)
    checks = [
        Check(
            "live same payments",
            True,
            f"{comparison.shadow_version} scored in shadow on the {comparison.payments} matured "
            f"payments {comparison.served_version} decided",
        )
    ]
    checks += evidence_checks(spec, Tested("shadow", {}, new), Tested("served", {}, old))
    checks.append(primary_check(spec, new, old))
    checks += [guard_check(g, new, old) for g in spec.guards]
    for c in checks[1:]:
        c.name = f"live {c.name}"
    return checks


# columns of the monitor's table: metric key -> header
_TABLE = {
    "payments": "payments",
    "frauds": "frauds",
    "average_precision": "AP",
    "decline_precision": "decline P",
    "decline_recall": "decline R",
    "review_precision": "review P",
    "review_recall": "review R",
    "review_rate": "review rate",
    "decline_rate": "decline rate",
    "fraud_amount_declined": "fraud declined",
    "fraud_amount_reviewed": "fraud reviewed",
    "fraud_amount_approved": "fraud let through",
}


def _cell(value) -> object:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def fraud_live_tables(ctx) -> list:
    """`shopml monitor fraud`'s live section (a `training.live_performance` provider): per
    role, model version and week on matured payments, the champion's offline test metrics on
    the row above its live weeks, and the shadow beside the served model when there is one."""
    from shopml.settings import load_settings
    from training.live_performance import PerformanceTable

    settings = ctx.settings or load_settings()
    frame = load_matured(settings)
    columns = ["role", "model version", "week", *_TABLE.values()]
    if frame.empty:
        note = (
            "no matured decisions yet: the decision log fills as the service scores, a payment "
            "counts once its label delay has passed"
        )
        return [PerformanceTable("fraud live performance (matured labels)", columns, [], note)]
    rows = []
    if ctx.champion_version and ctx.offline_metrics:
        name = f"shopml-fraud/{ctx.champion_version}"
        offline = dict(ctx.offline_metrics)
        offline.setdefault("payments", offline.get("n_payments", float("nan")))
        offline.setdefault("frauds", offline.get("test_frauds", float("nan")))
        rows.append(
            [
                "offline test",
                name,
                "test period",
                *(_cell(offline.get(k, float("nan"))) for k in _TABLE),
            ]
        )
    perf = live_performance(frame)
    for r in perf.itertuples(index=False):
        values = r._asdict()
        rows.append([r.role, r.model_version, r.week, *(_cell(values[k]) for k in _TABLE)])
    tables = [
        PerformanceTable(
            "fraud live performance (matured labels)",
            columns,
            rows,
            "per payment week (Monday); fraud amounts in the base currency; a payment counts "
            "once its label delay has passed",
        )
    ]
    if frame["shadow_version"].notna().any():
        c = compare_live(frame)
        shown = [[m, _cell(c.served[m]), _cell(c.shadow[m]), _cell(c.delta(m))] for m in SHOWN]
        tables.append(
            PerformanceTable(
                f"shadow {c.shadow_version} vs served {c.served_version} on the same payments",
                ["metric", "served", "shadow", "delta"],
                shown,
                "shopml compare --live fraud: per week and the gate's live checks",
            )
        )
    return tables
