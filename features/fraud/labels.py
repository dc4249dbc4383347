"""The one store of late fraud labels (chargebacks, confirmed frauds, cleared payments).

A table in a real database (SQLAlchemy: a SQLite file under SHOPML_HOME by default, the
PostgreSQL URL of `SHOPML_LABELS_URL` in production), one row per transaction: is_fraud, the
time the label became known, its source and when it was received. The CLI and the service
write to it, `shopml train fraud` reads it. A batch is written in one transaction. A label with
the value already stored is a no-op (the label stays known from its first label time); one with
the other value, known at or after the stored one, is a correction that overrides it; one known
before the stored label is stale and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from features.fraud.database import FraudDatabase
from shopml.clock import from_epoch_ms, now_ms
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

COLUMNS = ("transaction_id", "is_fraud", "label_time", "source", "received_at")
_CHUNK = 500  # ids per IN (...) query: below SQLite's bound-parameter limit

_META = sa.MetaData()
LABELS = sa.Table(
    "fraud_labels",
    _META,
    sa.Column("transaction_id", sa.String(128), primary_key=True),
    sa.Column("is_fraud", sa.Boolean, nullable=False),
    sa.Column("label_time", sa.DateTime, nullable=False),  # naive UTC: known from then on
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
)


class LabelStoreError(ShopmlError):
    """The label store cannot be reached or written (the message hides any password)."""


@dataclass(frozen=True)
class Label:
    """One label: the payment, whether it was a fraud, and when that became known (naive UTC)."""

    transaction_id: str
    is_fraud: bool
    label_time: datetime


@dataclass
class LabelWrite:
    """What a batch did to the store; `changed` are the labels added or corrected."""

    added: int = 0
    corrected: int = 0
    unchanged: int = 0
    stale: int = 0
    changed: list[Label] = field(default_factory=list)

    @property
    def received(self) -> int:
        return self.added + self.corrected + self.unchanged + self.stale


class LabelStore(FraudDatabase):
    """The labels table behind a SQLAlchemy engine, created on first use (so that a service
    starts, and scores, while the database is down)."""

    what = "label store"
    error = LabelStoreError

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._created = False

    def _ensure_table(self) -> None:
        if not self._created:
            _META.create_all(self.engine)
            self._created = True

    @classmethod
    def open(cls, settings: Settings | None = None) -> LabelStore:
        """The store named by the settings (`label_store_url`)."""
        return cls((settings or load_settings()).label_store_url)

    def write(self, labels: Iterable[Label], source: str) -> LabelWrite:
        """Add or correct `labels` in one transaction (all or nothing); see the module doc."""
        batch: dict[str, Label] = {}
        for lab in labels:  # within a batch too: the latest known wins, the later row on a tie
            old = batch.get(lab.transaction_id)
            if old is None or lab.label_time >= old.label_time:
                batch[lab.transaction_id] = lab
        try:
            try:
                return self._write(batch, source)
            except IntegrityError:  # a concurrent writer added one of these ids first: again
                return self._write(batch, source)
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def _write(self, batch: dict[str, Label], source: str) -> LabelWrite:
        out = LabelWrite()
        if not batch:
            return out
        self._ensure_table()
        received = from_epoch_ms(now_ms())
        ids = list(batch)
        with self.engine.begin() as conn:
            stored = {}
            for i in range(0, len(ids), _CHUNK):
                q = sa.select(LABELS.c.transaction_id, LABELS.c.is_fraud, LABELS.c.label_time)
                rows = conn.execute(q.where(LABELS.c.transaction_id.in_(ids[i : i + _CHUNK])))
                stored.update({r[0]: (bool(r[1]), r[2]) for r in rows})
            inserts, updates = [], []
            for tx, lab in batch.items():
                row = {"is_fraud": lab.is_fraud, "label_time": lab.label_time}
                row |= {"source": source, "received_at": received}
                if tx not in stored:
                    inserts.append({"transaction_id": tx, **row})
                    out.added += 1
                elif stored[tx][0] == lab.is_fraud:  # sent again: known since the first time
                    out.unchanged += 1
                    continue
                elif stored[tx][1] > lab.label_time:
                    out.stale += 1
                    continue
                else:
                    updates.append({"tx": tx, **row})
                    out.corrected += 1
                out.changed.append(lab)
            if inserts:
                conn.execute(sa.insert(LABELS), inserts)
            if updates:
                where = LABELS.c.transaction_id == sa.bindparam("tx")
                conn.execute(sa.update(LABELS).where(where), updates)
        return out

    def read(self) -> pd.DataFrame:
        """Every stored label (one per transaction), columns `COLUMNS`."""

        def _read() -> pd.DataFrame:
            self._ensure_table()
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(*(LABELS.c[c] for c in COLUMNS))).all()
            return pd.DataFrame(rows, columns=list(COLUMNS))

        df = self._guard(_read)
        df["transaction_id"] = df["transaction_id"].astype(object)
        df["is_fraud"] = df["is_fraud"].astype(bool)
        for col in ("label_time", "received_at"):
            df[col] = pd.to_datetime(df[col]).astype("datetime64[ns]")
        return df

    def __len__(self) -> int:
        q = sa.select(sa.func.count()).select_from(LABELS)
        return int(self._guard(lambda: self._scalar(q)))

    def _scalar(self, q):
        self._ensure_table()
        with self.engine.connect() as conn:
            return conn.execute(q).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class Applied:
    """Payments with the stored labels applied: how many matched a payment and changed its flag."""

    payments: pd.DataFrame
    applied: int
    flipped: int


def apply_labels(payments: pd.DataFrame, labels: pd.DataFrame) -> Applied:
    """A copy of `payments` whose `is_fraud` and `label_time` are the stored labels' where one
    exists (the label counts in fraud features from its label time on)."""
    out = payments.copy()
    if "label_time" not in out:
        out["label_time"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
    lab = labels.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    idx = out["transaction_id"].astype(str)
    hit = idx.isin(lab.index).to_numpy()
    flipped = 0
    if hit.any():
        rows = lab.loc[idx[hit]]
        new = rows["is_fraud"].to_numpy(dtype=bool)
        flipped = int((out["is_fraud"].to_numpy(dtype=bool)[hit] != new).sum())
        out.loc[hit, "is_fraud"] = new
        out.loc[hit, "label_time"] = rows["label_time"].to_numpy(dtype="datetime64[ns]")
    return Applied(out, int(hit.sum()), flipped)
