"""The product catalog as a recommender sees it: each product's category code and availability,
aligned to the model's product ids (what the category and availability filters read)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def align_catalog(
    product_ids: np.ndarray, products: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(category code per product, category names, available per product); without a products
    table every product has code -1 (no category) and is available."""
    n = len(product_ids)
    codes = np.full(n, -1, dtype=np.int32)
    categories = np.array([], dtype=str)
    available = np.ones(n, dtype=bool)
    if products is None or len(products) == 0:
        return codes, categories, available
    unique = products.drop_duplicates("product_id")
    aligned = unique.set_index(unique["product_id"].astype(str)).reindex(product_ids)
    if "category" in aligned:
        names = aligned["category"].fillna("unknown").astype(str).to_numpy()
        categories, inverse = np.unique(names, return_inverse=True)
        categories = categories.astype(str)
        codes = inverse.astype(np.int32)
    if "available" in aligned:
        available = aligned["available"].fillna(True).astype(bool).to_numpy()
    return codes, categories, available
