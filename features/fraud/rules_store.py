"""The history of the fraud rules versions a service loaded: which rules decided when.

One row per version (its content hash, the validated rules as JSON, the file it came from, when
it was first and last loaded and how often) in a table of the fraud database: the label store's
SQLAlchemy URL (`Settings.label_store_url`: a SQLite file under SHOPML_HOME by default, the
PostgreSQL URL of `SHOPML_LABELS_URL` in production), so an answer's `rules_version` can always
be traced back to the rules themselves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from features.fraud.database import FraudDatabase
from shopml.clock import from_epoch_ms, now_ms
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

_META = sa.MetaData()
VERSIONS = sa.Table(
    "fraud_rules_versions",
    _META,
    sa.Column("version", sa.String(96), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False),  # the validated rules, canonical JSON
    sa.Column("source", sa.String(1000), nullable=True),
    sa.Column("first_loaded_at", sa.DateTime, nullable=False),  # naive UTC
    sa.Column("last_loaded_at", sa.DateTime, nullable=False),
    sa.Column("loads", sa.Integer, nullable=False),
)


class RulesStoreError(ShopmlError):
    """The rules history cannot be read or written (the message hides any password)."""


@dataclass(frozen=True)
class RulesVersion:
    version: str
    content_hash: str
    content: dict
    source: str | None
    first_loaded_at: datetime
    last_loaded_at: datetime
    loads: int


class RulesStore(FraudDatabase):
    """The rules versions table behind a SQLAlchemy engine (created on first use)."""

    what = "rules store"
    error = RulesStoreError

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._guard(lambda: _META.create_all(self.engine))

    @classmethod
    def open(cls, settings: Settings | None = None) -> RulesStore:
        """The store in the fraud database named by the settings (`label_store_url`)."""
        return cls((settings or load_settings()).label_store_url)

    def record(self, version: str, content: str, source: str | None) -> bool:
        """Note that `version` (rules `content`, canonical JSON) was loaded now; True when this
        version is new to the store."""
        now = from_epoch_ms(now_ms())
        digest = hashlib.sha256(content.encode()).hexdigest()

        def write() -> bool:
            with self.engine.begin() as conn:
                bumped = conn.execute(
                    VERSIONS.update()
                    .where(VERSIONS.c.version == version)
                    .values(last_loaded_at=now, loads=VERSIONS.c.loads + 1)
                ).rowcount
                if bumped:
                    return False
                row = {"version": version, "content_hash": digest, "content": content}
                row |= {"source": source, "first_loaded_at": now, "last_loaded_at": now}
                conn.execute(VERSIONS.insert().values(**row, loads=1))
                return True

        def write_once_more() -> bool:
            try:
                return write()
            except IntegrityError:  # another worker inserted this version first: bump it
                return write()

        return self._guard(write_once_more)

    def versions(self) -> list[RulesVersion]:
        """Every version loaded so far, the most recently loaded first."""
        q = sa.select(VERSIONS).order_by(VERSIONS.c.last_loaded_at.desc())

        def read() -> list[RulesVersion]:
            with self.engine.connect() as conn:
                rows = conn.execute(q).mappings().all()
            return [RulesVersion(**{**r, "content": json.loads(r["content"])}) for r in rows]

        return self._guard(read)

    def dispose(self) -> None:
        self.engine.dispose()
