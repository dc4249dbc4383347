"""The durable log of the fraud decisions a service served, and of its shadow model's scores.

One row per scored payment in the fraud database (`FraudDatabase`: the label store's URL, a
SQLite file under SHOPML_HOME by default, PostgreSQL in production): the transaction id, when
it was paid and scored, the amount in the base currency, the served model's version,
probability, decision and what set it, whether it was degraded, the feature set's label delay
(when the payment's label has matured), and the shadow model's version, probability and
decision when one scored it. No customer, card or terminal id is kept: joined with the late
labels by transaction id, this is all live performance needs (`training.live_fraud`).

The service writes it from a background thread (`serving.shadow`), a batch at a time: a batch
is one transaction (all of it or none), and a transaction id already logged keeps its first
row (a retried payment or a second worker never counts twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from features.fraud.database import FraudDatabase
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

_CHUNK = 500  # ids per IN (...) query: below SQLite's bound-parameter limit

_META = sa.MetaData()
DECISIONS = sa.Table(
    "fraud_decisions",
    _META,
    sa.Column("transaction_id", sa.String(128), primary_key=True),
    sa.Column("payment_time", sa.DateTime, nullable=False, index=True),  # naive UTC
    sa.Column("served_at", sa.DateTime, nullable=False),  # naive UTC, the server clock
    sa.Column("amount", sa.Float, nullable=False),  # in the base currency
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(160), nullable=False),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("label_delay_s", sa.Integer, nullable=False),
    sa.Column("shadow_version", sa.String(128), nullable=True),
    sa.Column("shadow_probability", sa.Float, nullable=True),
    sa.Column("shadow_decision", sa.String(16), nullable=True),
)


class DecisionLogError(ShopmlError):
    """The decision log cannot be reached or written (the message hides any password)."""


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One served decision (times naive UTC); the shadow fields are None without a shadow."""

    transaction_id: str
    payment_time: datetime
    served_at: datetime
    amount: float
    model_version: str
    probability: float
    decision: str
    decided_by: str
    degraded: bool
    label_delay_s: int
    shadow_version: str | None = None
    shadow_probability: float | None = None
    shadow_decision: str | None = None


COLUMNS = tuple(f.name for f in fields(LoggedDecision))


class DecisionLog(FraudDatabase):
    """The decisions table behind a SQLAlchemy engine, created on first use."""

    what = "decision log"
    error = DecisionLogError

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._created = False

    @classmethod
    def open(cls, settings: Settings | None = None) -> DecisionLog:
        """The log in the fraud database named by the settings (`label_store_url`)."""
        return cls((settings or load_settings()).label_store_url)

    def _ensure_table(self) -> None:
        if not self._created:
            _META.create_all(self.engine)
            self._created = True

    def write(self, decisions: Sequence[LoggedDecision | Mapping]) -> int:
        """Add `decisions` (LoggedDecisions, or mappings of `COLUMNS` as the service's writer
        builds them) in one transaction (all or none); returns how many were new (a
        transaction id already logged, or repeated in the batch, keeps its first row)."""
        batch: dict[str, dict] = {}
        for d in decisions:
            row = d if isinstance(d, Mapping) else asdict(d)
            batch.setdefault(row["transaction_id"], row)
        if not batch:
            return 0
        try:
            try:
                return self._write(batch)
            except IntegrityError:  # another worker logged one of these ids meanwhile: again
                return self._write(batch)
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def _write(self, batch: dict[str, dict]) -> int:
        self._ensure_table()
        ids = list(batch)
        with self.engine.begin() as conn:
            known: set[str] = set()
            for i in range(0, len(ids), _CHUNK):
                q = sa.select(DECISIONS.c.transaction_id)
                known.update(
                    conn.scalars(q.where(DECISIONS.c.transaction_id.in_(ids[i : i + _CHUNK])))
                )
            rows = [row for tx, row in batch.items() if tx not in known]
            if rows:
                conn.execute(sa.insert(DECISIONS), rows)
        return len(rows)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """The logged decisions paid in [since, until) (naive UTC; None: unbounded), columns
        `COLUMNS`, times as datetime64[ns]."""
        q = sa.select(*(DECISIONS.c[c] for c in COLUMNS))
        if since is not None:
            q = q.where(DECISIONS.c.payment_time >= since)
        if until is not None:
            q = q.where(DECISIONS.c.payment_time < until)

        def _read() -> pd.DataFrame:
            self._ensure_table()
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(DECISIONS.c.payment_time)).all()
            return pd.DataFrame(rows, columns=list(COLUMNS))

        df = self._guard(_read)
        for col in ("payment_time", "served_at"):
            df[col] = pd.to_datetime(df[col]).astype("datetime64[ns]")
        for col in ("amount", "probability", "shadow_probability"):
            df[col] = pd.to_numeric(df[col]).astype("float64")
        df["degraded"] = df["degraded"].astype(bool)
        df["label_delay_s"] = df["label_delay_s"].astype("int64")
        return df

    def __len__(self) -> int:
        def _count() -> int:
            self._ensure_table()
            with self.engine.connect() as conn:
                q = sa.select(sa.func.count()).select_from(DECISIONS)
                return int(conn.execute(q).scalar_one())

        return self._guard(_count)

    def dispose(self) -> None:
        self.engine.dispose()
