"""Tables read from a database with SQLAlchemy: one SQL query (or one database table) per table.

Any SQLAlchemy URL works (`sqlite:///shop.db`, `postgresql+psycopg://user@host/db`, ...). Query
results are renamed by an optional column mapping and validated by the contract; errors name
the table and never show the URL's password.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from features.contract import TableErrors, validate
from features.loaders._columns import ColumnMap, check_tables, rename
from features.store import Store
from shopml.errors import DataError


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def load(
    url: str,
    queries: Mapping[str, str] | None = None,
    tables: Mapping[str, str] | None = None,
    columns: ColumnMap | None = None,
    name: str = "sql",
) -> Store:
    """Run `queries[table]` (or `SELECT * FROM tables[table]`) for each table and validate the result."""
    queries = dict(queries or {})
    tables = dict(tables or {})
    both = sorted(set(queries) & set(tables))
    if both:
        raise DataError(f"sql: table(s) {both} given both a query and a database table; pick one")
    check_tables([*queries, *tables], "sql")
    check_tables(columns or {}, "sql: columns")
    if not queries and not tables:
        raise DataError("sql: give at least one query or database table per contract table")
    shown = safe_url(url)
    try:
        engine = sa.create_engine(url)
    except (ArgumentError, ImportError, SQLAlchemyError) as err:
        raise DataError(f"sql: cannot use database URL {shown}: {err}") from err
    for table, source in tables.items():
        schema, _, bare = source.rpartition(".")
        queries[table] = sa.select(sa.text("*")).select_from(sa.table(bare, schema=schema or None))
    try:
        with engine.connect() as conn:
            found, errors = {}, TableErrors()  # every broken table is named, not only the first
            for table, query in queries.items():
                with errors.collect():
                    found[table] = _read_table(conn, table, query, columns, shown)
            errors.raise_if_any()
    except SQLAlchemyError as err:
        raise DataError(
            f"sql: cannot connect to {shown}: {getattr(err, 'orig', None) or err}"
        ) from err
    finally:
        engine.dispose()
    return Store(**found, name=name)


def _read_table(conn, table: str, query, columns: ColumnMap | None, shown: str) -> pd.DataFrame:
    """Run one table's query, rename its columns and validate it (DataError naming the table)."""
    statement = sa.text(query) if isinstance(query, str) else query
    try:
        df = pd.read_sql(statement, conn)
    except SQLAlchemyError as err:
        raise DataError(
            f"sql: query for table '{table}' failed on {shown}: {getattr(err, 'orig', None) or err}"
        ) from err
    df = rename(df, table, columns, f"sql: {shown}")
    try:
        return validate(table, df)
    except DataError as err:
        raise DataError(f"sql query for '{table}' on {shown}: {err}") from err
