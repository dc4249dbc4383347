"""Late fraud labels (chargebacks, confirmed frauds, cleared payments) kept for the next training.

Each ingestion appends one Parquet part file to a folder (append-only, no read-modify-write);
`apply_labels` folds the latest label per payment into a payments table before training.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd

from shopml.errors import DataError

COLUMNS = ("transaction_id", "is_fraud", "label_time")


def append_labels(labels: pd.DataFrame, folder: str | Path) -> Path:
    """Write `labels` (transaction_id, is_fraud, label_time) as a new part file in `folder`."""
    missing = [c for c in COLUMNS if c not in labels.columns]
    if missing:
        raise DataError(f"labels: missing column(s) {missing}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame(
        {
            "transaction_id": labels["transaction_id"].astype(str),
            "is_fraud": labels["is_fraud"].astype(bool),
            "label_time": pd.to_datetime(labels["label_time"]).astype("datetime64[ns]"),
            "ingested_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
        }
    )
    path = folder / f"labels-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = path.with_suffix(".tmp")
    out.to_parquet(tmp, index=False)
    tmp.rename(path)
    return path


def read_labels(folder: str | Path) -> pd.DataFrame:
    """All stored labels, the latest per transaction (by label_time, then ingestion)."""
    parts = sorted(Path(folder).glob("labels-*.parquet"))
    if not parts:
        return pd.DataFrame(
            {
                "transaction_id": pd.Series(dtype=object),
                "is_fraud": pd.Series(dtype=bool),
                "label_time": pd.Series(dtype="datetime64[ns]"),
            }
        )
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    df = df.sort_values(["label_time", "ingested_at"], kind="stable")
    return df.drop_duplicates("transaction_id", keep="last")[list(COLUMNS)].reset_index(drop=True)


def apply_labels(payments: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """A copy of `payments` with `is_fraud` and `label_time` overridden by the given labels."""
    out = payments.copy()
    lab = labels.set_index("transaction_id")
    idx = out["transaction_id"].astype(str)
    hit = idx.isin(lab.index).to_numpy()
    if hit.any():
        rows = lab.loc[idx[hit]]
        out.loc[hit, "is_fraud"] = rows["is_fraud"].to_numpy()
        out.loc[hit, "label_time"] = rows["label_time"].to_numpy()
    return out
