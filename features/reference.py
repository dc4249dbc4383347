"""The one definition of a data profile and of drift between two profiles (pure numpy + scipy).

A profile summarises one column of data as counts in fixed bins, so that a reference built at
training and a live profile kept by a service (or one built from a batch of new data) can be
compared bin by bin without keeping the raw values:

* numeric columns: bins from the reference's quantiles (`quantile_edges`, 10 by default;
  repeated quantiles of point masses such as 0 or 1 are merged), plus one bin below the first
  edge, one above the last and a last bin for missing values (NaN);
* categorical columns: the reference's categories (the most frequent ones, at most
  `max_categories`), one bin `other` for every category the reference did not hold, and one for
  missing values.

A value `v` falls in numeric bin `searchsorted(edges, v, side="right")`: bin i holds
`edges[i-1] <= v < edges[i]`, so a point mass at an edge lands in one bin, never split.

Drift of one column (`compare`):

* PSI, the population stability index, `sum((a - e) * ln(a / e))` over bins with `e` the
  reference's and `a` the new data's bin shares; an empty bin would make it infinite, so both
  shares are floored at `PSI_EPSILON` (1e-4, i.e. 0.01 %) before the sum;
* a chi-square test of homogeneity on the 2 x bins table of counts (bins empty on both sides
  dropped), with its p-value;
* for numeric columns, the KS statistic of the two binned distributions (the largest gap of
  their CDFs at the bin edges) and its asymptotic p-value with the effective sample size
  n*m/(n+m); binning can only lower the statistic, so this p-value is conservative.

Why not Evidently: it would add about 25 packages to the pins (litestar, nltk, plotly, faker,
and iterative-telemetry, which sends usage telemetry) for what is here about 200 lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from shopml.errors import DataError

PSI_EPSILON = 1e-4  # floor of a bin share in PSI: an empty bin counts as 0.01 %
DEFAULT_BINS = 10
OTHER = "other"  # categorical bin of categories the reference never saw
MISSING = "missing"  # the last bin of every column: NaN / None
# how a recommendation request counts (recommender profiles): a customer the model knows, one
# who sends recent products of a session, a new visitor
REQUEST_KINDS = ("known", "new", "session")

Kind = Literal["numeric", "categorical"]


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles 1/bins .. (bins-1)/bins, duplicates
    merged (a column that is mostly 0 gets fewer, wider bins); NaN ignored."""
    if bins < 2:
        raise DataError(f"bins: at least 2 needed, got {bins}")
    x = np.asarray(values, dtype="float64")
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.empty(0, dtype="float64")
    return np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))


@dataclass
class ColumnProfile:
    """Counts of one column in fixed bins: numeric (inner `edges`) or categorical (`categories`).

    `counts` has `n_bins` entries: numeric `len(edges) + 2` value bins then missing;
    categorical one per category, then `other`, then missing.
    """

    name: str
    kind: Kind
    counts: np.ndarray
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype="float64")
        self.edges = np.asarray(self.edges, dtype="float64")
        self.categories = tuple(str(c) for c in self.categories)
        if self.kind not in ("numeric", "categorical"):
            raise DataError(f"profile {self.name}: kind must be numeric or categorical")
        if len(self.counts) != self.n_bins:
            raise DataError(
                f"profile {self.name}: {len(self.counts)} counts for {self.n_bins} bins"
            )
        if self.kind == "numeric" and np.any(np.diff(self.edges) <= 0):
            raise DataError(f"profile {self.name}: edges must increase strictly")

    @property
    def n_bins(self) -> int:
        if self.kind == "numeric":
            return len(self.edges) + 2
        return len(self.categories) + 2

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def labels(self) -> list[str]:
        """A readable name per bin (for reports): `[a, b)` ranges or categories."""
        if self.kind == "categorical":
            return [*self.categories, OTHER, MISSING]
        e = [f"{v:.4g}" for v in self.edges]
        if not e:
            return ["all", MISSING]
        inner = [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:], strict=True)]
        return [f"< {e[0]}", *inner, f">= {e[-1]}", MISSING]

    def empty_like(self) -> ColumnProfile:
        """The same bins with zero counts (what a live profile starts from)."""
        return ColumnProfile(
            self.name, self.kind, np.zeros(self.n_bins), self.edges, self.categories
        )

    def bin_numeric(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each numeric value (NaN: the missing bin)."""
        x = np.asarray(values, dtype="float64")
        idx = np.searchsorted(self.edges, x, side="right")
        idx[np.isnan(x)] = self.n_bins - 1
        return idx

    def bin_categorical(self, values: Iterable) -> np.ndarray:
        """Bin index of each category (unknown: `other`, None/NaN: missing)."""
        index = {c: i for i, c in enumerate(self.categories)}
        other, missing = len(self.categories), len(self.categories) + 1
        out = []
        for v in values:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.append(missing)
            else:
                out.append(index.get(str(v), other))
        return np.asarray(out, dtype="int64")

    def counts_of(self, values) -> np.ndarray:
        """Counts of `values` in this profile's bins."""
        idx = self.bin_numeric(values) if self.kind == "numeric" else self.bin_categorical(values)
        return np.bincount(idx, minlength=self.n_bins).astype("float64")

    def with_values(self, values) -> ColumnProfile:
        """A profile with these bins holding `values` (a batch of new data)."""
        return ColumnProfile(
            self.name, self.kind, self.counts_of(values), self.edges, self.categories
        )

    def with_counts(self, counts) -> ColumnProfile:
        """A profile with these bins and the given counts (e.g. a live snapshot's)."""
        return ColumnProfile(self.name, self.kind, np.asarray(counts), self.edges, self.categories)

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "counts": [float(c) for c in self.counts]}
        if self.kind == "numeric":
            out["edges"] = [float(e) for e in self.edges]
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> ColumnProfile:
        try:
            return cls(
                name,
                data["kind"],
                np.asarray(data["counts"], dtype="float64"),
                np.asarray(data.get("edges", []), dtype="float64"),
                tuple(data.get("categories", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"profile {name}: not a column profile ({err})") from None


def numeric_profile(name: str, values, bins: int = DEFAULT_BINS) -> ColumnProfile:
    """The reference profile of a numeric column: quantile edges of `values`, their counts."""
    edges = quantile_edges(values, bins)
    empty = ColumnProfile(name, "numeric", np.zeros(len(edges) + 2), edges)
    return empty.with_values(values)


def categorical_profile(name: str, values, max_categories: int = 50) -> ColumnProfile:
    """The reference profile of a categorical column: its `max_categories` most frequent
    categories (ties by name), the rest counted as `other`."""
    seen: dict[str, int] = {}
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        seen[str(v)] = seen.get(str(v), 0) + 1
    top = sorted(seen, key=lambda c: (-seen[c], c))[:max_categories]
    empty = ColumnProfile(
        name, "categorical", np.zeros(len(top) + 2), categories=tuple(sorted(top))
    )
    return empty.with_values(values)


# ------------------------------------------------------------------------ drift of one column
def shares(counts: np.ndarray, epsilon: float = PSI_EPSILON) -> np.ndarray:
    """Bin shares of `counts`, floored at `epsilon` (an empty bin would make PSI infinite)."""
    c = np.asarray(counts, dtype="float64")
    total = c.sum()
    p = c / total if total > 0 else np.zeros_like(c)
    return np.maximum(p, epsilon)


def psi(reference_counts, new_counts, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `new_counts` against `reference_counts` (same bins)."""
    e, a = shares(reference_counts, epsilon), shares(new_counts, epsilon)
    if len(e) != len(a):
        raise DataError(f"psi: {len(e)} reference bins but {len(a)} new bins")
    return float(np.sum((a - e) * np.log(a / e)))


def chi_square(reference_counts, new_counts) -> tuple[float, float]:
    """Chi-square test of homogeneity of two count vectors: (statistic, p-value).

    Bins empty on both sides are dropped; with fewer than two bins left, or an empty side,
    there is nothing to test: (0.0, 1.0).
    """
    r = np.asarray(reference_counts, dtype="float64")
    n = np.asarray(new_counts, dtype="float64")
    keep = (r + n) > 0
    r, n = r[keep], n[keep]
    if len(r) < 2 or r.sum() == 0 or n.sum() == 0:
        return 0.0, 1.0
    table = np.vstack([r, n])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, df=len(r) - 1))


def ks_binned(reference_counts, new_counts) -> tuple[float, float]:
    """KS statistic of two binned distributions (largest CDF gap at the bin edges) and its
    asymptotic p-value with effective size n*m/(n+m); (0.0, 1.0) when a side is empty."""
    r = np.asarray(reference_counts, dtype="float64")
    n = np.asarray(new_counts, dtype="float64")
    if r.sum() == 0 or n.sum() == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(r) / r.sum() - np.cumsum(n) / n.sum())))
    m_eff = r.sum() * n.sum() / (r.sum() + n.sum())
    return d, float(stats.kstwobign.sf(d * math.sqrt(m_eff)))


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: PSI, the test used and its p-value, and whether it is flagged."""

    name: str
    kind: Kind
    psi: float
    test: str  # "chi2"
    statistic: float
    p_value: float
    ks: float | None
    ks_p_value: float | None
    n_reference: float
    n_new: float
    drifted: bool
    reason: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DriftRule:
    """When a column counts as drifted: PSI above `psi_threshold` AND the chi-square p-value
    below `alpha` divided by the number of columns compared (Bonferroni), with at least
    `min_count` new observations (30, the usual least sample; forecast price columns count
    products, a few dozen per category). PSI alone alarms on small samples (its noise grows as
    bins/n), a test alone on tiny effects in large ones; requiring both keeps the control quiet."""

    psi_threshold: float = 0.2
    alpha: float = 0.01
    min_count: int = 30
    bonferroni: bool = True


def compare(
    reference: ColumnProfile, new: ColumnProfile, rule: DriftRule, n_tests: int = 1
) -> ColumnDrift:
    """Drift of `new` against `reference` (same bins) under `rule`, one of `n_tests` tests."""
    if reference.n_bins != new.n_bins:
        raise DataError(
            f"profile {reference.name}: the new data has {new.n_bins} bins, the reference "
            f"{reference.n_bins}; compare profiles built on the reference's bins"
        )
    value = psi(reference.counts, new.counts)
    statistic, p = chi_square(reference.counts, new.counts)
    ks, ks_p = (
        ks_binned(reference.counts, new.counts) if reference.kind == "numeric" else (None, None)
    )
    alpha = rule.alpha / max(1, n_tests) if rule.bonferroni else rule.alpha
    if new.total < rule.min_count:
        drifted, reason = False, f"too few new values ({new.total:.0f} < {rule.min_count})"
    else:
        drifted = value > rule.psi_threshold and p < alpha
        reason = (
            f"PSI {value:.3f} {'>' if value > rule.psi_threshold else '<='} "
            f"{rule.psi_threshold:g}, chi2 p {p:.2g} {'<' if p < alpha else '>='} {alpha:.2g}"
        )
    return ColumnDrift(
        reference.name,
        reference.kind,
        value,
        "chi2",
        statistic,
        p,
        ks,
        ks_p,
        reference.total,
        new.total,
        drifted,
        reason,
    )


# ------------------------------------------------------------------------ a profile of a table
@dataclass
class Profile:
    """Column profiles of one family's data, with what they describe (JSON-ready)."""

    columns: dict[str, ColumnProfile]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"meta": self.meta, "columns": {n: c.to_dict() for n, c in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> Profile:
        if not isinstance(data, Mapping) or not isinstance(data.get("columns"), Mapping):
            raise DataError("a profile needs a 'columns' mapping")
        cols = {str(n): ColumnProfile.from_dict(str(n), c) for n, c in data["columns"].items()}
        return cls(cols, dict(data.get("meta") or {}))

    def empty_like(self) -> Profile:
        return Profile({n: c.empty_like() for n, c in self.columns.items()}, dict(self.meta))


def compare_profiles(
    reference: Profile, new: Profile, rule: DriftRule | None = None
) -> list[ColumnDrift]:
    """Drift of every column the two profiles share (the reference's order); the number of
    columns compared is the Bonferroni divisor."""
    rule = rule or DriftRule()
    shared = [n for n in reference.columns if n in new.columns]
    if not shared:
        raise DataError("the new profile shares no column with the reference")
    return [compare(reference.columns[n], new.columns[n], rule, len(shared)) for n in shared]


# ------------------------------------------------------------------------ stored with a model
REFERENCE_FILE = "reference_profile.json"  # in a model's native folder (travels into the Bento)


def save_profile(folder: str | Path, profile: Profile) -> Path:
    """Write `profile` as `REFERENCE_FILE` in a model's native folder."""
    path = Path(folder) / REFERENCE_FILE
    path.write_text(json.dumps(profile.to_dict()))
    return path


def load_profile(folder: str | Path) -> Profile | None:
    """The reference profile stored in a model's native folder; None when it has none (a
    model trained before profiles existed)."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return Profile.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
