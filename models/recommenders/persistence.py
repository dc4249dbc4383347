"""The arrays every scoring recommender saves besides its own model state: id mappings, the
seen-products matrix and its purchase cells, popularity, the catalog and the optional candidate
cache."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# prefix of the arrays a model kind adds (`_model_arrays`), so they never clash with these
MODEL_PREFIX = "m_"


def common_arrays(model) -> dict[str, np.ndarray]:
    """The fitted state shared by every scoring recommender, as named arrays."""
    seen = model.user_items_
    arrays = {
        "customer_ids": model.customer_ids_,
        "product_ids": model.product_ids_,
        "ui_data": seen.data,
        "ui_indices": seen.indices,
        "ui_indptr": seen.indptr,
        "bought_indices": model.purchased_.indices,
        "bought_indptr": model.purchased_.indptr,
        "popularity": model.popularity_,
        "category_codes": model.category_codes_,
        "categories": model.categories_.astype(str),
        "available": model.available_,
    }
    if model.candidates_ is not None:
        arrays.update(candidates=model.candidates_, candidate_scores=model.candidate_scores_)
    return arrays


def restore_common(model, arrays: dict[str, np.ndarray]) -> None:
    """Set the shared fitted state written by `common_arrays`."""
    model.customer_ids_ = arrays["customer_ids"].astype(str)
    model.product_ids_ = arrays["product_ids"].astype(str)
    shape = (len(model.customer_ids_), len(model.product_ids_))
    model.user_items_ = sp.csr_matrix(
        (arrays["ui_data"], arrays["ui_indices"], arrays["ui_indptr"]), shape=shape
    )
    model.purchased_ = model.user_items_  # saved before purchases were kept: as trained
    if "bought_indices" in arrays:
        indices = arrays["bought_indices"]
        ones = np.ones(len(indices), np.float32)
        model.purchased_ = sp.csr_matrix((ones, indices, arrays["bought_indptr"]), shape=shape)
    model.popularity_ = arrays["popularity"]
    model.category_codes_ = arrays["category_codes"]
    model.categories_ = arrays["categories"].astype(str)
    model.available_ = arrays["available"]
    model.candidates_ = arrays.get("candidates")
    model.candidate_scores_ = arrays.get("candidate_scores")
    model.candidate_counts_ = (
        None if model.candidates_ is None else candidate_counts(model.candidate_scores_)
    )


def candidate_counts(candidate_scores: np.ndarray) -> np.ndarray:
    """How many real (finite-score) candidates each customer has."""
    return (candidate_scores > -np.inf).sum(axis=1).astype(np.int32)


def model_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a model kind saved for itself, without their prefix."""
    n = len(MODEL_PREFIX)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}
