"""A data profile of a store: sizes, types, nulls, id cardinalities, time ranges, domain numbers.

`profile(store)` returns a JSON-ready dict (the `shopml profile` job logs it as an artifact);
`flat_metrics(p)` flattens its numbers to `table.name` keys, for metric logging. Pure pandas.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.contract import SCHEMAS
from features.store import Store

_TOP = 10


def _num(x) -> float | None:
    """A float for JSON (None for NaN)."""
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _iso(t) -> str | None:
    return None if pd.isna(t) else pd.Timestamp(t).isoformat()


def _counts(s: pd.Series, top: int = _TOP) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.value_counts().head(top).items()}


def _generic(table: str, df: pd.DataFrame) -> dict:
    schema = SCHEMAS[table]
    kinds = {c.name: c.kind for c in schema.columns}
    out: dict = {
        "rows": int(len(df)),
        "columns": {str(c): str(df[c].dtype) for c in df.columns},
        "nulls": {str(c): int(n) for c, n in df.isna().sum().items() if n},
        "distinct": {
            # validated tables hold unique keys once each: no need to hash them again
            c: int(df[c].notna().sum()) if c in schema.unique else int(df[c].nunique())
            for c in df.columns
            if kinds.get(c) == "id"
        },
        "time_range": {},
    }
    for c in df.columns:
        if kinds.get(c) == "timestamp" and df[c].notna().any():
            out["time_range"][c] = [_iso(df[c].min()), _iso(df[c].max())]
    return out


def _products(df: pd.DataFrame) -> dict:
    out = {
        "categories": int(df["category"].nunique()),
        "top_categories": _counts(df["category"]),
        "price_median": _num(df["price"].median()) if len(df) else None,
    }
    if "available" in df.columns:
        out["available_share"] = _num(df["available"].mean()) if len(df) else None
    return out


def _customers(df: pd.DataFrame) -> dict:
    out = {"countries": int(df["country"].nunique()), "top_countries": _counts(df["country"])}
    if "segment" in df.columns:
        out["segments"] = _counts(df["segment"], top=50)
    return out


def _interactions(df: pd.DataFrame) -> dict:
    events = _counts(df["event"])
    per_customer = df.groupby("customer_id", sort=False).size()
    out = {
        "events": events,
        "purchase_share": _num(events.get("purchase", 0) / len(df)) if len(df) else None,
        "per_customer_median": _num(per_customer.median()) if len(df) else None,
        "density": _num(
            df[["customer_id", "product_id"]].drop_duplicates().shape[0]
            / max(1, df["customer_id"].nunique() * df["product_id"].nunique())
        ),
    }
    views = events.get("view", 0)
    if views:
        out["view_to_purchase"] = _num(events.get("purchase", 0) / views)
    if "rating" in df.columns and df["rating"].notna().any():
        out["rating_mean"] = _num(df["rating"].mean())
        out["ratings"] = _counts(df["rating"], top=20)
    return out


def _order_lines(df: pd.DataFrame) -> dict:
    q = df["quantity"].to_numpy()
    value = q * df["unit_price"].to_numpy()
    n = max(1, len(df))
    out = {
        "orders": int(df["order_id"].nunique()),
        "return_share": _num((q < 0).sum() / n),
        "guest_share": _num(df["customer_id"].isna().sum() / n),
        "units_sold": int(q[q > 0].sum()),
        "units_returned": int(-q[q < 0].sum()),
        "revenue": _num(value.sum()),
    }
    if "country" in df.columns:
        out["countries"] = int(df["country"].nunique())
    return out


def _payments(df: pd.DataFrame) -> dict:
    fraud = df["is_fraud"].to_numpy(dtype=bool)
    known = df["label_time"].notna().to_numpy()
    delay = (df["label_time"] - df["timestamp"])[fraud & known].dt.total_seconds() / 3600.0
    out = {
        "frauds": int(fraud.sum()),
        "fraud_rate": _num(fraud.mean()) if len(df) else None,
        "fraud_amount_share": _num(df["amount"].to_numpy()[fraud].sum() / df["amount"].sum())
        if len(df) and df["amount"].sum() > 0
        else None,
        "amount_median": _num(df["amount"].median()) if len(df) else None,
        "currencies": _counts(df["currency"]),
        "frauds_with_label_time": int((fraud & known).sum()),
        "label_delay_hours_median": _num(delay.median()) if len(delay) else None,
        "label_delay_hours_p90": _num(np.quantile(delay, 0.9)) if len(delay) else None,
    }
    if "fraud_scenario" in df.columns:
        out["fraud_scenarios"] = _counts(df["fraud_scenario"], top=20)
    return out


def _lead_days(df: pd.DataFrame, anchor: str) -> float | None:
    """Median days between a plan's `planned_at` and its `anchor` day (None without)."""
    if "planned_at" not in df.columns or df["planned_at"].isna().all():
        return None
    return _num(((df[anchor] - df["planned_at"]).dt.total_seconds() / 86_400).median())


def _promotions(df: pd.DataFrame) -> dict:
    by_category = df["category"].notna() if "category" in df.columns else pd.Series(False)
    days = (df["end"] - df["start"]).dt.days + 1
    return {
        "category_share": _num(by_category.mean()) if len(df) else None,
        "mean_days": _num(days.mean()),
        "mean_discount": _num(df["discount"].mean()) if "discount" in df.columns else None,
        "median_lead_days": _lead_days(df, "start"),
    }


def _prices(df: pd.DataFrame) -> dict:
    return {
        "changes": int(df["product_id"].duplicated().sum()),
        "median_lead_days": _lead_days(df, "valid_from"),
    }


def _closures(df: pd.DataFrame) -> dict:
    named = pd.Series(False, index=df.index)
    for col in ("product_id", "location"):
        if col in df.columns:
            named |= df[col].notna()
    return {
        "shop_wide": int((~named).sum()),
        "median_lead_days": _lead_days(df, "date"),
    }


_DOMAIN = {
    "products": _products,
    "customers": _customers,
    "interactions": _interactions,
    "order_lines": _order_lines,
    "payments": _payments,
    "promotions": _promotions,
    "prices": _prices,
    "closures": _closures,
}


def profile(store: Store) -> dict:
    """Per table: rows, column dtypes, null counts, distinct ids, time ranges, domain numbers.

    Expects validated tables (as every loader and `Store.read` return). Holds counts and rates
    only, never values of personal columns.
    """
    tables = {}
    for table, df in store.tables().items():
        entry = _generic(table, df)
        entry["domain"] = _DOMAIN[table](df)
        tables[table] = entry
    return {
        "name": store.name,
        "rows": store.row_counts(),
        "tables": tables,
    }


def flat_metrics(p: dict) -> dict[str, float]:
    """The profile's scalar numbers as `table.key` -> float (for MLflow metrics)."""
    out: dict[str, float] = {}
    for table, entry in p["tables"].items():
        out[f"{table}.rows"] = float(entry["rows"])
        for col, n in entry["distinct"].items():
            out[f"{table}.distinct.{col}"] = float(n)
        for key, value in entry["domain"].items():
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                out[f"{table}.{key}"] = float(value)
    return out
