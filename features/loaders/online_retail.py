"""UCI Online Retail (a UK gift shop, 2010-12 to 2011-12) as order_lines, interactions and products.

Mapping (see ../shared/DATASETS.md):
- `order_lines`: every one of the 541,909 lines, cancellations (InvoiceNo "C...") included with
  their negative quantity, guest lines with a null customer_id, the country kept. CustomerID
  "17850.0" becomes "17850"; InvoiceDate is the shop's local time, kept as is (naive).
- The file has 2 "Adjust bad debt" lines (StockCode "B") with a negative UnitPrice. The contract
  needs unit_price >= 0, so such a line becomes quantity -q at price |p|: the row count and the
  line's value quantity * unit_price stay exactly as in the file (`NEGATIVE_PRICE_LINES` = 2).
- `interactions`: one event="purchase" per line with a positive quantity and a known customer,
  the quantity kept and the invoice number as session_id (one basket).
- `products`: one row per StockCode; name = most common Description, price = median unit price of
  its positive sales, launched_at = first sale, category "non_product" for postage, fees,
  discounts, manual adjustments and vouchers (`is_non_product_code`), else a keyword rule on the
  name (`category_of`), else "general".
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from features.loaders._paths import resolve_file
from features.store import Store
from shopml.errors import DataError

DEFAULT = "online-retail/online_retail.csv.gz"
COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
N_LINES = 541_909
NEGATIVE_PRICE_LINES = 2
NON_PRODUCT = "non_product"

# Stock codes that are not goods: postage, carriage, fees, discounts, manual/bad-debt adjustments,
# samples, a charity commission and cushion pads sold at 0.001.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "C2", "D", "M", "m", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}
)
_VOUCHER = re.compile(r"^gift_\d+_\d+$")

# First match wins; matched on whole words of the upper-cased product name.
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "NATIVITY")),
    ("jewellery", ("NECKLACE", "EARRINGS", "BRACELET", "RING", "BROOCH", "HAIR", "JEWEL")),
    (
        "toys_party",
        (
            "TOY",
            "TOYS",
            "GAME",
            "DOLL",
            "PARTY",
            "BALLOON",
            "BALLOONS",
            "JIGSAW",
            "PLAYING",
            "CHILDRENS",
            "SPACEBOY",
            "CRAYONS",
            "STICKERS",
        ),
    ),
    ("bags", ("BAG", "BAGS", "PURSE", "SHOPPER", "TOTE", "BACKPACK")),
    (
        "lighting",
        (
            "CANDLE",
            "CANDLES",
            "T-LIGHT",
            "T-LIGHTS",
            "LANTERN",
            "LIGHT",
            "LIGHTS",
            "TEALIGHT",
            "LAMP",
        ),
    ),
    (
        "kitchen",
        (
            "MUG",
            "MUGS",
            "CUP",
            "CUPS",
            "SAUCER",
            "PLATE",
            "PLATES",
            "BOWL",
            "BOWLS",
            "TEA",
            "TEAPOT",
            "CAKE",
            "CAKESTAND",
            "BAKING",
            "KITCHEN",
            "LUNCH",
            "JAM",
            "SPOON",
            "NAPKINS",
            "CUTTERS",
            "CASES",
            "TIN",
            "TINS",
            "BOTTLE",
            "GLASS",
            "JUG",
            "APRON",
            "TRAY",
            "COASTER",
            "COASTERS",
            "DOILY",
            "DOILIES",
        ),
    ),
    (
        "stationery",
        (
            "CARD",
            "CARDS",
            "WRAP",
            "PAPER",
            "NOTEBOOK",
            "PEN",
            "PENS",
            "PENCIL",
            "PENCILS",
            "ENVELOPE",
            "JOURNAL",
            "TISSUES",
            "RIBBON",
            "RIBBONS",
            "TAPE",
        ),
    ),
    ("garden", ("GARDEN", "PLANT", "PLANTER", "BIRD", "FLOWER", "WATERING", "HERB", "SEED")),
    (
        "home_decor",
        (
            "HEART",
            "HEARTS",
            "SIGN",
            "FRAME",
            "CLOCK",
            "CUSHION",
            "DOORMAT",
            "DECORATION",
            "BUNTING",
            "GARLAND",
            "HOOK",
            "HOOKS",
            "HOLDER",
            "MIRROR",
            "VASE",
            "DOORSTOP",
            "CHALKBOARD",
            "WREATH",
            "ORNAMENT",
            "DRAWER",
            "KNOB",
            "BOX",
            "BASKET",
            "CABINET",
            "SHELF",
            "PHOTO",
            "STORAGE",
        ),
    ),
)
_WORD = re.compile(r"[A-Z][A-Z\-']*")


def is_non_product_code(code: str) -> bool:
    """True for stock codes that are not goods (postage, fees, adjustments, vouchers, ...)."""
    return code in NON_PRODUCT_CODES or bool(_VOUCHER.match(code))


def non_product_codes(products: pd.DataFrame | None = None) -> list[str]:
    """Stock codes to exclude from recommendations and demand series.

    With a loaded `products` table: its ids of category "non_product" (vouchers included);
    without: the fixed list `NON_PRODUCT_CODES`.
    """
    if products is None:
        return sorted(NON_PRODUCT_CODES)
    mask = products["category"].to_numpy() == NON_PRODUCT
    return sorted(products["product_id"].to_numpy()[mask].tolist())


def category_of(code: str, name: str | None) -> str:
    """The category of one stock code: "non_product", a keyword category, or "general"."""
    if is_non_product_code(code):
        return NON_PRODUCT
    words = set(_WORD.findall((name or "").upper()))
    for category, keywords in CATEGORY_KEYWORDS:
        if words.intersection(keywords):
            return category
    return "general"


def _read(file: Path) -> pa.Table:
    """The eight columns, numbers and times parsed by Arrow (errors name the column)."""
    types = {c: pa.string() for c in COLUMNS}
    types.update(Quantity=pa.int64(), UnitPrice=pa.float64(), InvoiceDate=pa.timestamp("s"))
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rt", encoding="utf-8", errors="replace") as f:
            header = next(csv.reader([f.readline()]), [])
    except OSError as err:
        raise DataError(f"online_retail: cannot read {file}: {err}") from err
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"online_retail: {file} lacks column(s) {missing}; expected header {list(COLUMNS)}"
        )
    try:
        return pcsv.read_csv(
            file,
            convert_options=pcsv.ConvertOptions(
                column_types=types,
                include_columns=list(COLUMNS),
                strings_can_be_null=True,
                timestamp_parsers=["%Y-%m-%d %H:%M:%S", pcsv.ISO8601],
            ),
        )
    except pa.ArrowInvalid as err:
        found = re.search(r"column #(\d+)", str(err))
        index = int(found.group(1)) if found else -1
        column = header[index] if 0 <= index < len(header) else "?"
        raise DataError(f"online_retail: {file}: column {column}: {err}") from err


def load(path: str | Path | None = None) -> Store:
    """Load the Online Retail CSV (default `<datasets>/online-retail/online_retail.csv.gz`)."""
    file = resolve_file(path, DEFAULT, "online_retail")
    table = _read(file)
    customer = pc.replace_substring_regex(table["CustomerID"], pattern=r"\.0+$", replacement="")
    lines = pd.DataFrame(
        {
            "order_id": table["InvoiceNo"].to_pandas(),
            "customer_id": customer.to_pandas(),
            "product_id": table["StockCode"].to_pandas(),
            "timestamp": table["InvoiceDate"].to_pandas().astype("datetime64[ns]"),
            "quantity": table["Quantity"].to_numpy(),
            "unit_price": table["UnitPrice"].to_numpy(),
            "country": table["Country"].to_pandas(),
        }
    )
    negative = lines["unit_price"].to_numpy() < 0
    if negative.any():  # bad-debt adjustments: same line value, contract-valid sign convention
        lines.loc[negative, "quantity"] = -lines.loc[negative, "quantity"]
        lines.loc[negative, "unit_price"] = -lines.loc[negative, "unit_price"]
    products = _products(lines, table["Description"].to_pandas())
    bought = (lines["quantity"].to_numpy() > 0) & lines["customer_id"].notna().to_numpy()
    interactions = pd.DataFrame(
        {
            "customer_id": lines["customer_id"].to_numpy()[bought],
            "product_id": lines["product_id"].to_numpy()[bought],
            "timestamp": lines["timestamp"].to_numpy()[bought],
            "event": "purchase",
            "quantity": lines["quantity"].to_numpy()[bought],
            "session_id": lines["order_id"].to_numpy()[bought],
        }
    )
    store = Store(
        products=products, interactions=interactions, order_lines=lines, name="online_retail"
    )
    return store.validated()


def _products(lines: pd.DataFrame, description: pd.Series) -> pd.DataFrame:
    code = lines["product_id"]
    names = (
        pd.DataFrame({"product_id": code, "name": description})
        .dropna()
        .value_counts(sort=False)
        .reset_index(name="n")
        .sort_values(["n", "name"], ascending=[False, True], kind="stable")
        .drop_duplicates("product_id")
        .set_index("product_id")["name"]
    )
    sold = (lines["quantity"].to_numpy() > 0) & (lines["unit_price"].to_numpy() > 0)
    price = lines.loc[sold].groupby("product_id")["unit_price"].median()
    first = lines.groupby("product_id")["timestamp"].min()
    products = pd.DataFrame({"launched_at": first})
    products["price"] = price.reindex(products.index).fillna(0.0)
    products["name"] = names.reindex(products.index)
    products = products.rename_axis("product_id").reset_index()
    products["category"] = [
        category_of(c, n)
        for c, n in zip(products["product_id"], products["name"].fillna(""), strict=True)
    ]
    return products[["product_id", "category", "price", "name", "launched_at"]].assign(
        available=True
    )


__all__ = [
    "CATEGORY_KEYWORDS",
    "DEFAULT",
    "N_LINES",
    "NEGATIVE_PRICE_LINES",
    "NON_PRODUCT",
    "NON_PRODUCT_CODES",
    "category_of",
    "is_non_product_code",
    "load",
    "non_product_codes",
]
