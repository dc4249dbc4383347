"""What a recommendation may contain and how the best products are picked: request filters,
the ranked answer, top-k selection on score vectors and blocks, and the per-customer candidate
cache. NumPy only: this is the single-customer hot path."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shopml.errors import UnknownEntity

# filter combinations whose masks a model keeps; the cache is cleared when it grows past this
MASK_CACHE_SIZE = 512


@dataclass(frozen=True)
class RecommendFilters:
    """What a caller may exclude or restrict; the default only hides already-bought products.

    `exclude_purchased` hides the customer's purchases; `exclude_seen` every product they
    interacted with (viewed, carted or bought), so viewed and abandoned-cart products are shown
    only when it is off. A category the model does not know is an error (`UnknownEntity`).
    """

    exclude_purchased: bool = True
    exclude_seen: bool = False
    exclude_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] | None = None
    only_available: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_ids", tuple(str(i) for i in self.exclude_ids))
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))


# How much a known customer's session (their recent products, folded in) weighs against their
# history when both are blended: scores = (1 - w) * z(history) + w * z(session), each z-scored
# over the catalog. 0.5 gives the session and the history an equal say; 0 ignores the session.
SESSION_WEIGHT = 0.5

NO_FILTERS = RecommendFilters(exclude_purchased=False)
DEFAULT_FILTERS = RecommendFilters()
UNSEEN = RecommendFilters(exclude_seen=True)  # offline evaluation: every training interaction


@dataclass
class Recommendations:
    """One ranked list: product ids, their scores (higher is better) and which model made it."""

    product_ids: np.ndarray
    scores: np.ndarray
    source: str
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.product_ids)


def row_normalize(scores: np.ndarray) -> np.ndarray:
    """Per-row z-score (a 1-D vector is one row), so that differently scaled scores can be
    blended."""
    mean = scores.mean(axis=-1, keepdims=True)
    std = scores.std(axis=-1, keepdims=True)
    return (scores - mean) / np.maximum(std, 1e-12)


def check_k(k: int) -> int:
    """`k` as an int; ValueError naming it unless it is a positive integer."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest finite scores, best first (fewer when fewer are finite)."""
    n = scores.shape[0]
    idx = np.argpartition(scores, n - k)[n - k :] if k < n else np.arange(n)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx[scores[idx] > -np.inf]


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top k indices of a 2-D score block, best first."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class FilterMasks:
    """Boolean masks of the products a filter hides (categories, availability, excluded ids),
    computed once per filter combination and cached."""

    def __init__(
        self,
        product_index: dict[str, int],
        category_index: dict[str, int],
        category_codes: np.ndarray,
        available: np.ndarray,
    ):
        self._product_index = product_index
        self._category_index = category_index
        self._category_codes = category_codes
        self._available = available
        self._cache: dict = {}

    def blocked(self, filters: RecommendFilters) -> np.ndarray | None:
        """The mask of hidden products, or None when the filters hide none statically.

        Raises `UnknownEntity` naming the categories the model does not know."""
        key = (filters.categories, filters.only_available, filters.exclude_ids)
        if key in self._cache:
            return self._cache[key]
        blocked = None
        if filters.categories is not None:
            index = self._category_index
            unknown = [c for c in filters.categories if c not in index]
            if unknown:
                raise UnknownEntity("category", unknown)
            codes = [index[c] for c in filters.categories]
            blocked = ~np.isin(self._category_codes, np.array(codes, dtype=np.int32))
        if filters.only_available:
            unavailable = ~self._available
            blocked = unavailable if blocked is None else (blocked | unavailable)
        if filters.exclude_ids:
            index = self._product_index
            ids = [index[p] for p in filters.exclude_ids if p in index]
            if ids:
                n = len(self._available)
                blocked = np.zeros(n, bool) if blocked is None else blocked.copy()
                blocked[ids] = True
        if len(self._cache) > MASK_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = blocked
        return blocked


def block_from_candidates(
    candidates: np.ndarray,
    scores: np.ndarray,
    blocked: np.ndarray | None,
    k: int,
    hidden: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise top k of cached candidates that pass `blocked` and the per-row `hidden` mask
    (-inf marks missing slots), and the rows with fewer than k survivors, which need full
    scoring."""
    bad = scores == -np.inf
    if blocked is not None:
        bad = bad | blocked[candidates]
    if hidden is not None:
        bad = bad | hidden
    order = np.argsort(bad, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(candidates, order, axis=1)
    sc = np.where(
        np.take_along_axis(bad, order, axis=1),
        -np.inf,
        np.take_along_axis(scores, order, axis=1),
    )
    short = np.flatnonzero((~bad).sum(axis=1) < k)
    return idx.astype(np.int64), sc.astype(np.float32), short
