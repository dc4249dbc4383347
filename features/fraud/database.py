"""The fraud database: one SQLAlchemy engine behind the label store and the rules history.

Its URL is `Settings.label_store_url` (a SQLite file under SHOPML_HOME by default, the
PostgreSQL URL of `SHOPML_LABELS_URL` in production). Errors name the store without its
password.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from shopml.errors import ShopmlError


class FraudDatabase:
    """An engine on `url` (a SQLite file's folder made on first use) and error naming."""

    what: ClassVar[str] = "fraud database"  # how messages name the store
    error: ClassVar[type[ShopmlError]] = ShopmlError

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url)
        if self.url.get_backend_name() == "sqlite" and self.url.database:
            Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)

    @property
    def where(self) -> str:
        """The store's URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    def _guard(self, fn):
        """`fn()`, with database errors as the store's error naming the store."""
        try:
            return fn()
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def _error(self, err: SQLAlchemyError) -> ShopmlError:
        detail = str(getattr(err, "orig", None) or type(err).__name__).splitlines()[0]
        return self.error(f"{self.what} {self.where}: {detail}")
