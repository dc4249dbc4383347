"""The data contract: the canonical tables a store provides, and their validation.

Every loader and the store generator produce these tables; every job reads them. `validate`
checks a frame against its schema, converts what is safely convertible (int ids to strings,
timestamp strings to datetimes, UTC-aware times to naive UTC) and raises one `DataError` that
lists every problem with its table, column, row count and a few example row positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shopml.errors import DataError

Kind = Literal["id", "string", "int", "float", "timestamp", "bool"]

EVENTS = ("view", "add_to_cart", "purchase")
CURRENCIES = (
    "EUR",
    "GBP",
    "USD",
    "CHF",
    "SEK",
    "NOK",
    "DKK",
    "PLN",
    "CZK",
    "CAD",
    "AUD",
    "JPY",
)


@dataclass(frozen=True)
class Column:
    """One column of a canonical table."""

    name: str
    kind: Kind
    doc: str
    required: bool = True
    nullable: bool = False
    non_negative: bool = False
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableSchema:
    """A canonical table: its columns and the columns whose values must be unique."""

    name: str
    doc: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = field(default=())

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


PRODUCTS = TableSchema(
    "products",
    "The catalog: one row per product.",
    (
        Column("product_id", "id", "Stable product id (SKU, stock code)."),
        Column("category", "string", "Category used by filters and per-category popularity."),
        Column("price", "float", "Current list price in the store currency.", non_negative=True),
        Column("name", "string", "Human-readable title.", required=False, nullable=True),
        Column("available", "bool", "In stock and sellable now (default true).", required=False),
        Column("launched_at", "timestamp", "First day on sale.", required=False, nullable=True),
        Column(
            "location",
            "string",
            "Store or site selling this series (matches `closures.location`).",
            required=False,
            nullable=True,
        ),
    ),
    unique=("product_id",),
)

CUSTOMERS = TableSchema(
    "customers",
    "Registered customers: one row per customer.",
    (
        Column("customer_id", "id", "Stable customer id (never an email)."),
        Column("signup_at", "timestamp", "When the account was created."),
        Column("country", "string", "ISO country code or name.", nullable=True),
        Column("segment", "string", "Taste segment (simulated data only).", required=False),
    ),
    unique=("customer_id",),
)

INTERACTIONS = TableSchema(
    "interactions",
    "Behavioural events: views, add-to-carts and purchases of a product by a customer.",
    (
        Column("customer_id", "id", "Who interacted."),
        Column("product_id", "id", "With which product."),
        Column("timestamp", "timestamp", "When (UTC)."),
        Column("event", "string", "One of view, add_to_cart, purchase.", allowed=EVENTS),
        Column("quantity", "int", "Units (1 for views).", non_negative=True),
        Column("session_id", "id", "Browsing session.", required=False, nullable=True),
        Column(
            "rating",
            "float",
            "Explicit rating when the source has one.",
            required=False,
            nullable=True,
        ),
    ),
)

ORDER_LINES = TableSchema(
    "order_lines",
    "Sold units. Returns and cancellations are lines with a negative quantity.",
    (
        Column("order_id", "id", "Order or invoice number."),
        Column("customer_id", "id", "Buyer; empty for guest checkouts.", nullable=True),
        Column("product_id", "id", "Product sold."),
        Column("timestamp", "timestamp", "When the order was placed (UTC)."),
        Column("quantity", "int", "Units; negative for returns and cancellations."),
        Column("unit_price", "float", "Price paid per unit.", non_negative=True),
        Column("country", "string", "Shipping country.", required=False, nullable=True),
    ),
)

PAYMENTS = TableSchema(
    "payments",
    "Card payments with their fraud label and the time that label became known.",
    (
        Column("transaction_id", "id", "Unique payment id."),
        Column("timestamp", "timestamp", "Authorisation time (UTC)."),
        Column("customer_id", "id", "Paying customer."),
        Column("card_id", "id", "Payment instrument (a token, never the card number)."),
        Column("terminal_id", "id", "Terminal, merchant or device that took the payment."),
        Column("amount", "float", "Amount in `currency`.", non_negative=True),
        Column("currency", "string", "ISO 4217 code.", allowed=CURRENCIES),
        Column("is_fraud", "bool", "Confirmed fraud (false until proven otherwise)."),
        Column(
            "label_time",
            "timestamp",
            "When the fraud label became known; empty if never reported.",
            nullable=True,
        ),
        Column(
            "fraud_scenario",
            "int",
            "Simulated fraud mechanism, 0 for genuine.",
            required=False,
            non_negative=True,
        ),
    ),
    unique=("transaction_id",),
)

PROMOTIONS = TableSchema(
    "promotions",
    "Planned promotions (known-future input): a product or a whole category on promotion from "
    "`start` to `end` (inclusive days), with the time the plan became known.",
    (
        Column(
            "product_id",
            "id",
            "Promoted product (or empty with `category`).",
            required=False,
            nullable=True,
        ),
        Column(
            "category",
            "string",
            "Promoted category (when `product_id` is empty).",
            required=False,
            nullable=True,
        ),
        Column("start", "timestamp", "First promotion day."),
        Column("end", "timestamp", "Last promotion day (inclusive)."),
        Column(
            "discount",
            "float",
            "Fraction off the price, in [0, 1) (empty: a promotion without a known discount).",
            required=False,
            nullable=True,
            non_negative=True,
        ),
        Column(
            "promo",
            "bool",
            "Promotion flag (default true; false: the row is ignored, e.g. a cancelled plan).",
            required=False,
        ),
        Column(
            "planned_at",
            "timestamp",
            "When the promotion became known; empty: a default lead time before `start`.",
            required=False,
            nullable=True,
        ),
    ),
)

PRICES = TableSchema(
    "prices",
    "Planned list prices (known-future input): the price of a product from `valid_from` on, "
    "until its next row.",
    (
        Column("product_id", "id", "Priced product."),
        Column("valid_from", "timestamp", "First day the price applies."),
        Column("price", "float", "List price in the store currency.", non_negative=True),
        Column(
            "planned_at",
            "timestamp",
            "When the price became known; empty: a default lead time before `valid_from`.",
            required=False,
            nullable=True,
        ),
    ),
)

CLOSURES = TableSchema(
    "closures",
    "Closed days (known-future input): a product, a location or (both empty) the whole shop "
    "does not sell on `date`.",
    (
        Column("date", "timestamp", "The closed day."),
        Column(
            "product_id",
            "id",
            "Closed product (empty: every product).",
            required=False,
            nullable=True,
        ),
        Column(
            "location",
            "string",
            "Closed location (matches `products.location`; empty: every location).",
            required=False,
            nullable=True,
        ),
        Column(
            "planned_at",
            "timestamp",
            "When the closure became known; empty: a default lead time before `date`.",
            required=False,
            nullable=True,
        ),
    ),
)

SCHEMAS: dict[str, TableSchema] = {
    s.name: s
    for s in (
        PRODUCTS,
        CUSTOMERS,
        INTERACTIONS,
        ORDER_LINES,
        PAYMENTS,
        PROMOTIONS,
        PRICES,
        CLOSURES,
    )
}
TABLES = tuple(SCHEMAS)
# The optional known-future tables (promotions, prices and closures planned in advance).
KNOWN_FUTURE_TABLES = ("promotions", "prices", "closures")

_MAX_EXAMPLES = 5


def _positions(mask: np.ndarray) -> tuple[int, list[int]]:
    idx = np.flatnonzero(mask)
    return int(idx.size), idx[:_MAX_EXAMPLES].tolist()


class _Problems:
    """Collects problems so that one error can report all of them."""

    def __init__(self, table: str):
        self.table = table
        self.items: list[str] = []

    def add(self, column: str, problem: str, mask: np.ndarray | None = None) -> None:
        if mask is None:
            self.items.append(f"{self.table}.{column}: {problem}")
            return
        count, examples = _positions(mask)
        if count:
            rows = "row" if count == 1 else "rows"
            self.items.append(
                f"{self.table}.{column}: {problem} in {count} {rows} (e.g. rows {examples})"
            )

    def raise_if_any(self) -> None:
        if self.items:
            head = f"table '{self.table}' breaks the data contract ({len(self.items)} problem"
            head += "s):" if len(self.items) > 1 else "):"
            raise DataError("\n  - ".join([head, *self.items]))


def _int_strings(values: np.ndarray) -> np.ndarray:
    """Decimal strings (object array) of int64 ids; repeated ids are converted only once."""
    n = len(values)
    if n == 0:
        return values.astype(object)
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < n // 2:  # dense, repeated ids: a lookup table over the range, no hashing
        labels = np.arange(lo, hi + 1, dtype="int64").astype(str).astype(object)
        return labels[values - lo]
    if hi - lo < n:  # dense and mostly distinct
        return values.astype(str).astype(object)
    codes, uniques = pd.factorize(values)
    if 2 * len(uniques) > n:
        return values.astype(str).astype(object)
    return uniques.astype(str).astype(object)[codes]


def _as_str_objects(s: pd.Series, null: np.ndarray) -> pd.Series:
    """Object series of `str` (None where null); skips the per-value pass when all are str."""
    out = s.astype(object).where(~null, None)
    if pd.api.types.infer_dtype(out, skipna=True) not in ("string", "empty"):
        out = out.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return out


def _blank(out: pd.Series) -> np.ndarray:
    """True where a str value is empty or only whitespace (Arrow's vectorised trim when possible)."""
    try:
        trimmed = pc.utf8_trim_whitespace(pa.array(out, type=pa.string(), from_pandas=True))
        return pc.equal(trimmed, "").fill_null(False).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError, ValueError):  # e.g. lone surrogates
        return (out.str.strip() == "").to_numpy(dtype=bool)


def _to_id(s: pd.Series, col: Column, problems: _Problems) -> pd.Series:
    null = s.isna().to_numpy()
    if pd.api.types.is_bool_dtype(s):
        problems.add(col.name, f"ids must be integers or strings, got {s.dtype}")
        return s
    if pd.api.types.is_integer_dtype(s):
        out = pd.Series(_int_strings(s.to_numpy(dtype="int64")), index=s.index, dtype=object)
    elif pd.api.types.is_float_dtype(s):
        values = s.to_numpy(dtype="float64")
        frac = ~null & (values != np.floor(np.where(null, 0.0, values)))
        if frac.any():
            problems.add(col.name, "ids must be integers or strings, got fractional numbers", frac)
            return s
        out = pd.Series(
            np.where(null, None, _int_strings(s.fillna(0).to_numpy(dtype="int64"))),
            index=s.index,
            dtype=object,
        )
    else:
        out = _as_str_objects(s, null)
        if not null.all():
            empty = _blank(out) & ~null
            if empty.any():
                null = null | empty
                out = out.str.strip().where(~empty, None)
    if not col.nullable:
        problems.add(col.name, "null or empty id", null)
    return out.astype(object)


def _to_timestamp(s: pd.Series, col: Column, problems: _Problems) -> pd.Series:
    null = s.isna().to_numpy()
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(s):
        out = s
    elif pd.api.types.is_numeric_dtype(s):
        problems.add(col.name, f"timestamps must be datetimes or ISO strings, got {s.dtype}")
        return s
    else:
        out = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
        out = out.dt.tz_localize(None)
        bad = out.isna().to_numpy() & ~null
        problems.add(col.name, "unparseable timestamp", bad)
    out = out.astype("datetime64[ns]")
    if not col.nullable:
        problems.add(col.name, "missing timestamp", null)
    return out


def _to_number(s: pd.Series, col: Column, problems: _Problems) -> pd.Series:
    null = s.isna().to_numpy()
    unparsed = np.zeros(len(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("int64")
    if not pd.api.types.is_numeric_dtype(s):
        converted = pd.to_numeric(s, errors="coerce")
        unparsed = converted.isna().to_numpy() & ~null
        problems.add(col.name, "not a number", unparsed)
        s = converted
    if col.kind == "int":
        values = s.to_numpy(dtype="float64")
        frac = ~np.isnan(values) & (values != np.floor(np.nan_to_num(values)))
        problems.add(col.name, "not a whole number", frac)
        if frac.any():
            return s
        out = s.astype("Int64" if col.nullable else "float64")
    else:
        out = s.astype("float64")
    values = out.to_numpy(dtype="float64", na_value=np.nan)
    problems.add(col.name, "infinite value", np.isinf(values))
    if col.non_negative:
        problems.add(col.name, "negative value", values < 0)
    if not col.nullable:
        problems.add(col.name, "missing value", np.isnan(values) & ~unparsed)
        if col.kind == "int" and not np.isnan(values).any():
            out = out.astype("int64")
    return out


def _to_bool(s: pd.Series, col: Column, problems: _Problems) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype(bool)
    mapping = {
        "true": True,
        "false": False,
        "1": True,
        "0": False,
        "yes": True,
        "no": False,
        "t": True,
        "f": False,
        "1.0": True,
        "0.0": False,
    }
    text = s.astype(str).str.strip().str.lower()
    out = text.map(mapping)
    bad = out.isna().to_numpy()
    problems.add(col.name, "not a boolean (expected true/false or 1/0)", bad)
    return out.fillna(False).astype(bool)


def _to_string(s: pd.Series, col: Column, problems: _Problems) -> pd.Series:
    null = s.isna().to_numpy()
    out = _as_str_objects(s, null)
    if not col.nullable:
        problems.add(col.name, "missing value", null)
    if col.allowed is not None:
        bad = ~null & ~out.isin(col.allowed).to_numpy()
        if bad.any():
            seen = sorted(set(out[bad].astype(str).unique().tolist()))[:5]
            problems.add(col.name, f"value not in {list(col.allowed)} (saw {seen})", bad)
    return out


_CONVERTERS = {
    "id": _to_id,
    "timestamp": _to_timestamp,
    "int": _to_number,
    "float": _to_number,
    "bool": _to_bool,
    "string": _to_string,
}


def validate(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Check `df` against the schema of `table` and return a converted copy.

    Raises `DataError` listing every problem found (the frame passed in is never modified).
    Extra columns are kept as they are; optional columns may be absent.
    """
    if table not in SCHEMAS:
        raise DataError(f"unknown table '{table}'; the contract has {list(TABLES)}")
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"table '{table}' must be a pandas DataFrame, got {type(df).__name__}")
    schema = SCHEMAS[table]
    problems = _Problems(table)
    missing = [c for c in schema.required if c not in df.columns]
    for name in missing:
        problems.add(name, "required column is missing")
    duplicated_cols = df.columns[df.columns.duplicated()].tolist()
    if duplicated_cols:
        problems.add(str(duplicated_cols[0]), "column appears more than once")
    problems.raise_if_any()

    out = df.reset_index(drop=True).copy()
    for col in schema.columns:
        if col.name not in out.columns:
            continue
        out[col.name] = _CONVERTERS[col.kind](out[col.name], col, problems)
    for name in schema.unique:
        if name in out.columns:
            # int ids map one-to-one to their strings: checking the ints is much faster
            source = df[name] if pd.api.types.is_integer_dtype(df[name]) else out[name]
            dup = pd.Series(source.to_numpy()).duplicated(keep="first").to_numpy()
            dup &= out[name].notna().to_numpy()
            problems.add(name, "duplicate id", dup)
    if table in _ROW_CHECKS:
        _ROW_CHECKS[table](out, problems)
    problems.raise_if_any()
    if table == "products" and "available" not in out.columns:
        out["available"] = True
    if table == "promotions" and "promo" not in out.columns:
        out["promo"] = True
    return out


def _check_promotions(df: pd.DataFrame, problems: _Problems) -> None:
    """A promotion names a product or a category, ends on or after it starts, discount < 1."""
    none = np.zeros(len(df), dtype=bool)
    product = df["product_id"].notna().to_numpy() if "product_id" in df else none
    category = df["category"].notna().to_numpy() if "category" in df else none
    if "product_id" not in df and "category" not in df:
        problems.add("product_id", "required column is missing (give product_id or category)")
    else:
        problems.add("product_id", "neither product_id nor category given", ~product & ~category)
        problems.add("category", "both product_id and category given", product & category)
    if pd.api.types.is_datetime64_dtype(df["start"]) and pd.api.types.is_datetime64_dtype(
        df["end"]
    ):
        problems.add("end", "end before start", (df["end"] < df["start"]).to_numpy())
    if "discount" in df and pd.api.types.is_float_dtype(df["discount"]):
        problems.add("discount", "discount of 1 or more", (df["discount"] >= 1).to_numpy())


def _check_prices(df: pd.DataFrame, problems: _Problems) -> None:
    """One price per product and `valid_from` day."""
    if pd.api.types.is_datetime64_dtype(df["valid_from"]):
        day = df["valid_from"].dt.normalize()
        dup = pd.DataFrame({"p": df["product_id"], "d": day}).duplicated(keep="first")
        problems.add("valid_from", "two prices for the same product and day", dup.to_numpy())


_ROW_CHECKS = {"promotions": _check_promotions, "prices": _check_prices}


class TableErrors:
    """Collects the `DataError` of every broken table of a store, so that one error names all
    of them (a user fixes their export once, not once per table)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextmanager
    def collect(self, where: str = "") -> Iterator[None]:
        """Run one table's read and validation; a `DataError` is kept, prefixed by `where`."""
        try:
            yield
        except DataError as err:
            self.messages.append(f"{where}: {err}" if where else str(err))

    def raise_if_any(self) -> None:
        """Raise one `DataError` listing every collected problem (as is when there is one)."""
        if len(self.messages) == 1:
            raise DataError(self.messages[0])
        if self.messages:
            head = f"{len(self.messages)} tables break the data contract:"
            raise DataError("\n".join([head, *self.messages]))


def validate_tables(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """`validate` each table; one `DataError` naming every broken table."""
    errors = TableErrors()
    out: dict[str, pd.DataFrame] = {}
    for table, df in tables.items():
        with errors.collect():
            out[table] = validate(table, df)
    errors.raise_if_any()
    return out
