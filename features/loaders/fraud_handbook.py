"""The Fraud Detection Handbook's simulated card transactions as the `payments` table.

One card per customer in this simulation, so card_id = customer_id; amounts in EUR. The data
has no label times: label_time is NaT and jobs apply their configured label delay. The fraud
scenario (0 genuine, 1 large amount, 2 compromised terminal, 3 compromised card) is kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.loaders._paths import resolve_file
from features.store import Store
from shopml.errors import DataError

DEFAULT = "fraud-handbook-simulated/transactions.parquet"
COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
N_PAYMENTS, N_FRAUDS = 1_754_155, 14_681


def load(path: str | Path | None = None) -> Store:
    """Load the handbook's `transactions.parquet` (default under `<datasets>/fraud-handbook-simulated`)."""
    file = resolve_file(path, DEFAULT, "fraud_handbook")
    try:
        names = pq.read_schema(file).names
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"fraud_handbook: cannot read {file} as Parquet: {err}") from err
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"fraud_handbook: {file} lacks column(s) {missing}")
    raw = pq.read_table(file, columns=list(COLUMNS)).to_pandas()
    for column in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_FRAUD", "TX_FRAUD_SCENARIO"):
        if not pd.api.types.is_integer_dtype(raw[column]):
            raise DataError(
                f"fraud_handbook: column {column} must be integers, got {raw[column].dtype}"
            )
    payments = pd.DataFrame(
        {
            "transaction_id": raw["TRANSACTION_ID"],
            "timestamp": raw["TX_DATETIME"],
            "customer_id": raw["CUSTOMER_ID"],
            "card_id": raw["CUSTOMER_ID"],
            "terminal_id": raw["TERMINAL_ID"],
            "amount": raw["TX_AMOUNT"].to_numpy(dtype="float64"),
            "currency": "EUR",
            "is_fraud": raw["TX_FRAUD"].to_numpy() == 1,
            "label_time": pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]"),
            "fraud_scenario": raw["TX_FRAUD_SCENARIO"].to_numpy(dtype="int64"),
        }
    )
    # int ids go in as ints: `validate` turns them into strings faster than from objects
    return Store(payments=payments, name="fraud_handbook").validated()
