"""MovieLens 100K as purchase interactions (the rating kept) and products (the movies).

Every rating counts as a positive interaction (the benchmark protocol of DATASETS.md): event
"purchase", quantity 1, `rating` 1-5 kept, timestamp from unix seconds; ids as strings.
Products: title as name, the first listed genre as category ("unknown" when none), price 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.loaders._paths import resolve_dir
from features.store import Store
from shopml.errors import DataError

DEFAULT = "movielens-100k"
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
N_RATINGS, N_USERS, N_ITEMS = 100_000, 943, 1_682


def _str_ids(values: np.ndarray) -> np.ndarray:
    """Small non-negative int ids to Python strings through a lookup table (fast)."""
    labels = np.array([str(i) for i in range(int(values.max()) + 1)], dtype=object)
    return labels[values]


def _ratings(file: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(
            file, sep="\t", header=None, names=["user", "item", "rating", "time"], dtype="int64"
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(
            f"movielens: {file} must hold 4 tab-separated integers per line "
            f"(user_id item_id rating unix_time): {err}"
        ) from err
    if (raw[["user", "item"]].to_numpy() < 0).any():
        raise DataError(f"movielens: {file} has negative user or item ids")
    return pd.DataFrame(
        {
            "customer_id": _str_ids(raw["user"].to_numpy()),
            "product_id": _str_ids(raw["item"].to_numpy()),
            "timestamp": pd.to_datetime(raw["time"].to_numpy(), unit="s"),
            "event": "purchase",
            "quantity": 1,
            "rating": raw["rating"].to_numpy(dtype="float64"),
        }
    )


def _items(file: Path) -> pd.DataFrame:
    names = ["item", "title", "release", "video_release", "url", *GENRES]
    try:
        raw = pd.read_csv(
            file,
            sep="|",
            header=None,
            names=names,
            encoding="latin-1",
            dtype={"item": "int64", "title": str, **dict.fromkeys(GENRES, "int64")},
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(
            f"movielens: {file} is not the u.item format ({len(names)} '|' fields per line): {err}"
        ) from err
    flags = raw[list(GENRES)].to_numpy()
    first = np.where(flags.any(axis=1), flags.argmax(axis=1), 0)
    return pd.DataFrame(
        {
            "product_id": _str_ids(raw["item"].to_numpy()),
            "category": np.array(GENRES, dtype=object)[first],
            "price": 0.0,
            "name": raw["title"].to_numpy(),
            "launched_at": pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce"),
        }
    )


def load(path: str | Path | None = None) -> Store:
    """Load MovieLens 100K from a folder with `u.data` and `u.item` (default `<datasets>/movielens-100k`)."""
    folder = resolve_dir(path, DEFAULT, "movielens", needs=("u.data", "u.item"))
    store = Store(
        interactions=_ratings(folder / "u.data"),
        products=_items(folder / "u.item"),
        name="movielens-100k",
    )
    return store.validated()
