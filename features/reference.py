"""The one definition of a data profile and of drift between two profiles (pure numpy + scipy).

A profile summarises one column of data as counts in fixed bins, so that a reference built at
training and a live profile kept by a service (or one built from a batch of new data) can be
compared bin by bin without keeping the raw values:

* numeric columns: bins from the reference's quantiles (`quantile_edges`, 10 by default;
  repeated quantiles of point masses such as 0 or 1 are merged; optionally extra edges at tail
  quantiles such as `TAIL_QUANTILES`, the 1 % and 99 % ones, so that mass moving into a tail,
  where fraud lives, lands in a bin that was thin), plus one bin below the first edge, one
  above the last and a last bin for missing values (NaN);
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
  n*m/(n+m); binning can only lower the statistic, so this p-value is conservative;
* per bin, the effect size of its share's change, Cohen's h `|2 asin sqrt(a) - 2 asin sqrt(e)|`,
  and an exact two-sample test of that bin against the rest (Fisher's, the hypergeometric
  distribution of the new data's count given both samples' sizes; two-sided by doubling the
  smaller tail), so a shift that moves a small share of the mass into a few bins is seen
  where PSI, a sum over all bins, stays small (`bin_shift`: the bin that grew most).

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
# extra edges of the fraud reference's numeric bins: deciles cannot tell a tail from its decile
TAIL_QUANTILES = (0.01, 0.99)
OTHER = "other"  # categorical bin of categories the reference never saw
MISSING = "missing"  # the last bin of every column: NaN / None
# how a recommendation request counts (recommender profiles): a customer the model knows, one
# who sends recent products of a session, a new visitor
REQUEST_KINDS = ("known", "new", "session")

Kind = Literal["numeric", "categorical"]


def quantile_edges(
    values: np.ndarray, bins: int = DEFAULT_BINS, tails: Iterable[float] = ()
) -> np.ndarray:
    """Inner bin edges at the reference's quantiles 1/bins .. (bins-1)/bins and at the `tails`
    quantiles, duplicates merged (a column that is mostly 0 gets fewer, wider bins); NaN
    ignored."""
    if bins < 2:
        raise DataError(f"bins: at least 2 needed, got {bins}")
    tails = [float(q) for q in tails]
    if any(not 0 < q < 1 for q in tails):
        raise DataError(f"tails: quantiles strictly between 0 and 1 needed, got {tails}")
    x = np.asarray(values, dtype="float64")
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.empty(0, dtype="float64")
    qs = np.union1d(np.linspace(0, 1, bins + 1)[1:-1], tails)
    return np.unique(np.quantile(x, qs))


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


def numeric_profile(
    name: str, values, bins: int = DEFAULT_BINS, tails: Iterable[float] = ()
) -> ColumnProfile:
    """The reference profile of a numeric column: quantile edges of `values` (`bins` equal
    shares, plus edges at the `tails` quantiles), their counts."""
    edges = quantile_edges(values, bins, tails)
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
class BinShift:
    """The bin whose share grew most significantly: its index, its reference and new shares,
    Cohen's h, and the exact test's two-sided p-value (of that bin against the rest); `tested`
    bins were compared."""

    index: int
    effect: float
    p_value: float
    tested: int
    reference_share: float = 0.0
    new_share: float = 0.0


def cohens_h(reference_share, new_share) -> np.ndarray:
    """Cohen's h of two proportions, `|2 asin sqrt(a) - 2 asin sqrt(e)|`: the difference on
    the arcsine scale, where a share's sampling variance no longer depends on the share, so
    one threshold fits a 1 % tail bin and a 50 % bin (Cohen's conventions: 0.2 small, 0.5
    medium, 0.8 large)."""
    e = np.clip(np.asarray(reference_share, dtype="float64"), 0.0, 1.0)
    a = np.clip(np.asarray(new_share, dtype="float64"), 0.0, 1.0)
    return np.abs(2 * np.arcsin(np.sqrt(a)) - 2 * np.arcsin(np.sqrt(e)))


def bin_tests(reference_counts, new_counts) -> tuple[np.ndarray, np.ndarray]:
    """Per bin, (Cohen's h of its share, the exact two-sided p-value of its count).

    The test is Fisher's on the 2 x 2 table (this bin, the rest) x (reference, new): given both
    samples' sizes and the bin's pooled count, the new count is hypergeometric under no drift,
    so the p-value is exact at any sample size (the reference's own sampling noise included);
    two-sided by doubling the smaller tail. Counts are rounded to whole observations; bins
    empty on both sides get h 0 and p 1."""
    r, n = _whole_counts(reference_counts, new_counts)
    return _bin_effects(r, n), _exact_p(r, n, np.arange(len(r)))


def _whole_counts(reference_counts, new_counts) -> tuple[np.ndarray, np.ndarray]:
    r = np.rint(np.asarray(reference_counts, dtype="float64"))
    n = np.rint(np.asarray(new_counts, dtype="float64"))
    if len(r) != len(n):
        raise DataError(f"bin tests: {len(r)} reference bins but {len(n)} new bins")
    return r, n


def _bin_effects(r: np.ndarray, n: np.ndarray) -> np.ndarray:
    if r.sum() == 0 or n.sum() == 0:
        return np.zeros(len(r))
    h = cohens_h(r / r.sum(), n / n.sum())
    h[(r + n) == 0] = 0.0
    return h


def _exact_p(r: np.ndarray, n: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Two-sided exact p-values of `bins` (indices): the hypergeometric law's smaller tail
    doubled (scipy's is about 1 ms a bin, so `bin_shift` asks only for candidate bins)."""
    p = np.ones(len(bins))
    big_r, big_n = r.sum(), n.sum()
    pooled = (r + n)[bins]
    todo = pooled > 0
    if big_r == 0 or big_n == 0 or not todo.any():
        return p
    k, pooled = n[bins][todo], pooled[todo]
    upper = stats.hypergeom.sf(k - 1, big_r + big_n, pooled, big_n)
    lower = stats.hypergeom.cdf(k, big_r + big_n, pooled, big_n)
    p[todo] = np.minimum(1.0, 2 * np.minimum(upper, lower))
    return p


def bin_shift(
    reference_counts,
    new_counts,
    min_effect: float,
    alpha: float,
    eligible=None,
    min_ratio: float = 1.0,
) -> BinShift:
    """Among the `eligible` bins (default all) not empty on both sides, the bins whose share
    grew, to at least `min_ratio` times the reference's, by Cohen's h >= `min_effect`, with an
    exact p-value below `alpha` over the number of bins tested (Bonferroni): of those the one
    of largest h; else the candidate of smallest p-value, or the growing bin of largest h when
    none qualifies (for the report). `index` -1 when no bin is tested."""
    r, n = _whole_counts(reference_counts, new_counts)
    h = _bin_effects(r, n)
    mask = (r + n) > 0
    if eligible is not None:
        mask &= np.asarray(eligible, dtype=bool)
    tested = int(mask.sum())
    if tested == 0 or r.sum() == 0 or n.sum() == 0:
        return BinShift(-1, 0.0, 1.0, tested)
    e, a = r / r.sum(), n / n.sum()
    growing = mask & (a > e)
    if not growing.any():
        return BinShift(-1, 0.0, 1.0, tested)
    # only bins large enough in effect can flag: test those, else the largest one (reported)
    candidates = np.flatnonzero(growing & (h >= min_effect) & (a >= min_ratio * e))
    if len(candidates) == 0:
        candidates = np.array([int(np.argmax(np.where(growing, h, -1.0)))])
    p = _exact_p(r, n, candidates)
    hit = p < alpha / tested
    j = int(np.argmax(np.where(hit, h[candidates], -1.0))) if hit.any() else int(np.argmin(p))
    i = int(candidates[j])
    return BinShift(i, float(h[i]), float(p[j]), tested, float(e[i]), float(a[i]))


def shift_bins(profile: ColumnProfile) -> np.ndarray:
    """The bins where a concentrated shift is looked for: every bin of a numeric column (slices
    of one population at its quantiles, the tails among them), but of a categorical column only
    `other` and `missing`. Its categories are populations of their own whose shares move with
    promotions and seasons by more than a small effect (on the generated store a category's
    share of units halves from one 28-day window to the next, Cohen's h 0.3, with nothing
    injected); a category the reference never saw still lands in `other`, thin by
    construction."""
    mask = np.ones(profile.n_bins, dtype=bool)
    if profile.kind == "categorical":
        mask[: len(profile.categories)] = False
    return mask


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
    bin_label: str = ""  # the bin of `bin_effect`: the most significant growth of one bin
    bin_effect: float = 0.0  # its Cohen's h
    bin_p_value: float = 1.0  # its exact p-value (before the Bonferroni over bins)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DriftRule:
    """When a column counts as drifted: a change both large (an effect size) and significant
    (a test at `alpha` divided by the number of columns compared, Bonferroni), in one of two
    shapes:

    * broad: PSI above `psi_threshold` AND the chi-square p-value below that level, with at
      least `min_count` new observations (30, the usual least sample of the chi-square
      approximation);
    * concentrated: one bin's share grew to at least `bin_ratio` times the reference's (2: it
      doubled) and by Cohen's h of at least `bin_effect` (0.2, Cohen's "small" effect) AND
      that bin's exact test is below the level divided again by the number of bins tested
      (`shift_bins`: every bin of a numeric column, `other` and `missing` of a categorical
      one). Exact, it needs no least sample. It sees a small share of the mass arriving in a
      thin bin (2 % of cards testing with tiny payments: the lowest 1 % of amounts grows to
      5 %, h 0.26, while PSI is 0.03), which PSI, a sum over every bin, cannot tell from
      noise; the doubling keeps it to arrivals, leaving a wide bin's re-weighting (a decile
      grown to 17 %, h 0.2, as a feature that counts time since an event creeps) to PSI.

    PSI alone alarms on small samples (its noise grows as bins/n), a test alone on tiny effects
    in large ones; requiring both keeps the control quiet. `bin_effect` 0 turns the
    concentrated shape off (the broad rule alone)."""

    psi_threshold: float = 0.2
    alpha: float = 0.01
    min_count: int = 30
    bonferroni: bool = True
    bin_effect: float = 0.2
    bin_ratio: float = 2.0


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
    shift = bin_shift(
        reference.counts,
        new.counts,
        max(rule.bin_effect, 0.0),
        alpha,
        shift_bins(reference),
        rule.bin_ratio,
    )
    concentrated = (
        rule.bin_effect > 0
        and shift.index >= 0
        and shift.effect >= rule.bin_effect
        and shift.new_share >= rule.bin_ratio * shift.reference_share
        and shift.p_value < alpha / shift.tested
    )
    label = reference.labels()[shift.index] if shift.index >= 0 else ""
    bin_text = (
        f"bin {label}: {shift.reference_share:.1%} -> {shift.new_share:.1%}, h "
        f"{shift.effect:.2f}, exact p {shift.p_value:.2g}"
    )
    if new.total < rule.min_count:
        broad = False
        reason = f"too few new values for PSI ({new.total:.0f} < {rule.min_count})"
    else:
        broad = value > rule.psi_threshold and p < alpha
        reason = (
            f"PSI {value:.3f} {'>' if value > rule.psi_threshold else '<='} "
            f"{rule.psi_threshold:g}, chi2 p {p:.2g} {'<' if p < alpha else '>='} {alpha:.2g}"
        )
    if concentrated:
        level = alpha / shift.tested
        reason = (
            f"{bin_text} (x{rule.bin_ratio:g}, h >= {rule.bin_effect:g}, p < {level:.2g}); {reason}"
        )
    elif rule.bin_effect > 0 and shift.index >= 0:
        reason = f"{reason}; {bin_text}"
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
        broad or concentrated,
        reason,
        label,
        shift.effect,
        shift.p_value,
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
