"""The durable log of the fraud decisions a service served, and of its shadow model's scores.

One row per scored payment in the fraud database (`FraudDatabase`: the label store's URL, a
SQLite file under SHOPML_HOME by default, PostgreSQL in production): the transaction id, when
it was paid and scored (epoch milliseconds, UTC), the amount in the base currency, the served model's version,
probability, decision and what set it, whether it was degraded, the feature set's label delay
(when the payment's label has matured), and the shadow model's version, probability and
decision when one scored it. No customer, card or terminal id is kept: joined with the late
labels by transaction id, this is all live performance needs (`training.live_fraud`).

The service writes it from a background thread (`serving.shadow`), a batch at a time: a batch
is one transaction (all of it or none), and a transaction id already logged keeps its first
row (a retried payment or a second worker never counts twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from features.fraud.database import FraudDatabase
from shopml.clock import epoch_ms
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

_META = sa.MetaData()
DECISIONS = sa.Table(
    "fraud_decisions",
    _META,
    sa.Column("transaction_id", sa.String(128), primary_key=True),
    sa.Column("payment_ms", sa.BigInteger, nullable=False, index=True),  # epoch ms, UTC
    sa.Column("served_ms", sa.BigInteger, nullable=False),  # epoch ms, the server clock
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
ROW = tuple(c.name for c in DECISIONS.columns)  # the order of a row tuple (`write_rows`)
_CONFLICT_FREE = ("sqlite", "postgresql")  # dialects that take INSERT ... ON CONFLICT


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

    def row(self) -> tuple:
        """The table row (`ROW` order, times in epoch ms)."""
        return (
            self.transaction_id,
            epoch_ms(self.payment_time),
            epoch_ms(self.served_at),
            *(getattr(self, name) for name in ROW[3:]),
        )


COLUMNS = tuple(f.name for f in fields(LoggedDecision))  # what `read` returns


class DecisionLog(FraudDatabase):
    """The decisions table behind a SQLAlchemy engine, created on first use."""

    what = "decision log"
    error = DecisionLogError

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._created = False
        self._insert: str | None = None

    @classmethod
    def open(cls, settings: Settings | None = None) -> DecisionLog:
        """The log in the fraud database named by the settings (`label_store_url`)."""
        return cls((settings or load_settings()).label_store_url)

    def _ensure_table(self) -> None:
        if not self._created:
            _META.create_all(self.engine)
            self._created = True

    def write(self, decisions: Sequence[LoggedDecision]) -> int:
        """Add `decisions` in one transaction (all or none); see `write_rows`."""
        return self.write_rows([d.row() for d in decisions])

    def write_rows(self, rows: Sequence[tuple]) -> int:
        """Add rows (tuples in `ROW` order, as the service's writer builds them) in one
        transaction, all or none; returns how many were new (a transaction id already logged,
        or repeated in the batch, keeps its first row). SQLite and PostgreSQL take the rows in
        one `INSERT ... ON CONFLICT DO NOTHING` executed many times, without SQLAlchemy's
        per-row processing (the writer runs beside the checkout)."""
        if not rows:
            return 0
        try:
            self._ensure_table()
            if self.engine.dialect.name in _CONFLICT_FREE:
                with self.engine.begin() as conn:
                    return max(conn.exec_driver_sql(self._insert_sql(), list(rows)).rowcount, 0)
            try:
                return self._write_checked(rows)
            except IntegrityError:  # another worker logged one of these ids meanwhile: again
                return self._write_checked(rows)
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def _insert_sql(self) -> str:
        """The dialect's positional INSERT ... ON CONFLICT (transaction_id) DO NOTHING."""
        if self._insert is None:
            name = self.engine.dialect.name
            insert = sqlite_insert if name == "sqlite" else postgresql_insert
            stmt = insert(DECISIONS).on_conflict_do_nothing(index_elements=["transaction_id"])
            compiled = stmt.compile(dialect=self.engine.dialect, column_keys=list(ROW))
            sql = str(compiled)
            if name == "postgresql":  # psycopg takes %s placeholders with a tuple
                for col in ROW:
                    sql = sql.replace(f"%({col})s", "%s")
            self._insert = sql
        return self._insert

    def _write_checked(self, rows: Sequence[tuple]) -> int:
        """Any other database: the new ids found first, then one INSERT."""
        batch: dict[str, dict] = {}
        for row in rows:
            batch.setdefault(row[0], dict(zip(ROW, row, strict=True)))
        ids = list(batch)
        with self.engine.begin() as conn:
            known: set[str] = set()
            for i in range(0, len(ids), 500):
                q = sa.select(DECISIONS.c.transaction_id)
                q = q.where(DECISIONS.c.transaction_id.in_(ids[i : i + 500]))
                known.update(conn.scalars(q))
            new = [row for tx, row in batch.items() if tx not in known]
            if new:
                conn.execute(sa.insert(DECISIONS), new)
        return len(new)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """The logged decisions paid in [since, until) (naive UTC; None: unbounded), columns
        `COLUMNS`, times as naive-UTC datetime64[ns]."""
        q = sa.select(*DECISIONS.columns)
        if since is not None:
            q = q.where(DECISIONS.c.payment_ms >= epoch_ms(since))
        if until is not None:
            q = q.where(DECISIONS.c.payment_ms < epoch_ms(until))

        def _read() -> pd.DataFrame:
            self._ensure_table()
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(DECISIONS.c.payment_ms)).all()
            return pd.DataFrame(rows, columns=list(ROW))

        df = self._guard(_read)
        for ms, col in (("payment_ms", "payment_time"), ("served_ms", "served_at")):
            df[col] = pd.to_datetime(df.pop(ms).astype("int64"), unit="ms").astype("datetime64[ns]")
        for col in ("amount", "probability", "shadow_probability"):
            df[col] = pd.to_numeric(df[col]).astype("float64")
        df["degraded"] = df["degraded"].astype(bool)
        df["label_delay_s"] = df["label_delay_s"].astype("int64")
        return df[list(COLUMNS)]

    def __len__(self) -> int:
        def _count() -> int:
            self._ensure_table()
            with self.engine.connect() as conn:
                q = sa.select(sa.func.count()).select_from(DECISIONS)
                return int(conn.execute(q).scalar_one())

        return self._guard(_count)

    def dispose(self) -> None:
        self.engine.dispose()
