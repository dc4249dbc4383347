"""The batch fraud features on Dask: the same kernels as `batch.py`, one shuffle per entity key.

Every feature depends on the payments of one entity only (`batch.feature_groups`): the
customer's, the card's or the terminal's, in stream order. So the payments are shuffled by each
key in turn, every partition (all the payments of its keys) runs `batch.compute_prepared` for
that entity's group, and the groups are joined back on the payment's row number `_row`.

Bit-identical to the local engine: a partition is put back in input order (`_row`) before the
stable time sort, so every key sees its payments in the same order, and every kernel is
per key (cumulative sums restart per key, window bounds are integer searches, maxima exact).
Nothing is gathered in the client: the result is a Dask dataframe of `_row` and the features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.fraud.batch import compute_prepared, feature_groups, prepare
from features.fraud.definition import ID_COLUMNS, FeatureSet

ROW = "_row"
# what the kernels read of a payment (currency, card, label time when present)
_INPUTS = ("timestamp", "amount", "currency", "customer_id", "card_id", "terminal_id")
_INPUTS += ("is_fraud", "label_time")


def with_row_numbers(payments):
    """`payments` with `_row`, its 0-based row number in input order (partition after
    partition): the tie order of equal timestamps and the key the feature groups join on."""
    if ROW in payments.columns:
        return payments
    one = payments.map_partitions(
        lambda d: pd.Series(np.ones(len(d), dtype="int64"), index=d.index), meta=(ROW, "int64")
    )
    return payments.assign(**{ROW: one.cumsum() - 1})


def _group_kernel(
    part: pd.DataFrame,
    fs: FeatureSet,
    group: str,
    keep: str | None,
    names: tuple[str, ...],
    carry: tuple[str, ...] = (),
) -> pd.DataFrame:
    """One partition (all the payments of its keys of `group`'s entity): the group's features,
    with `_row` and the `carry` columns; only the rows flagged in `keep` when given."""
    part = part.sort_values(ROW, kind="stable")  # input order: ties as the local engine has them
    if len(part):
        p = prepare(part, fs)
        cols = compute_prepared(p, fs, target=p.order, groups=(group,))
    else:
        cols = {n: np.empty(0) for n in names}
    out = pd.DataFrame(cols, columns=list(names), copy=False)
    out.insert(0, ROW, part[ROW].to_numpy(dtype="int64"))
    for c in carry:
        out[c] = part[c].to_numpy()
    if keep is not None:
        out = out[part[keep].to_numpy(dtype=bool)]
    return out.reset_index(drop=True)


def group_frames(
    payments,
    fs: FeatureSet | None = None,
    npartitions: int | None = None,
    keep: str | None = None,
    carry: tuple[str, ...] = (),
) -> dict[str, object]:
    """Per entity group (`batch.feature_groups`): a Dask dataframe of `_row` and that group's
    features (the first group also the `carry` columns of `payments`), partitioned by the
    entity's key. `keep` names a boolean column: only those rows come back (every payment still
    counts in the windows of the others)."""
    fs = fs or FeatureSet()
    payments = with_row_numbers(payments)
    inputs = [c for c in (ROW, *_INPUTS, keep, *carry) if c and c in payments.columns]
    base = payments[list(dict.fromkeys(inputs))]
    n = int(npartitions or payments.npartitions)
    out: dict[str, object] = {}
    for group, names in feature_groups(fs).items():
        shuffled = base.shuffle(on=ID_COLUMNS[group], npartitions=n)
        extra = tuple(carry) if not out else ()  # carried once, by the first group
        meta = pd.DataFrame({ROW: np.empty(0, "int64"), **{c: np.empty(0) for c in names}})
        for c in extra:
            meta[c] = base._meta[c]
        out[group] = shuffled.map_partitions(
            _group_kernel, fs, group, keep, names, extra, meta=meta, align_dataframes=False
        )
    return out


def feature_frame(
    payments,
    fs: FeatureSet | None = None,
    npartitions: int | None = None,
    keep: str | None = None,
    carry: tuple[str, ...] = (),
):
    """Fraud features of a Dask dataframe of payments: a Dask dataframe of `_row` (input row
    number, see `with_row_numbers`), `fs.names` and the `carry` columns of `payments`, in no
    particular row order (the groups of `group_frames` joined on `_row`; pass `keep` to join
    only the rows needed)."""
    fs = fs or FeatureSet()
    n = int(npartitions or payments.npartitions)
    joined = None
    for part in group_frames(payments, fs, n, keep, carry).values():
        joined = part if joined is None else joined.merge(part, on=ROW, how="inner", npartitions=n)
    return joined[[ROW, *fs.names, *carry]]


def gather_columns(payments, fs: FeatureSet, n_rows: int, npartitions: int | None = None):
    """Every payment's features in the client, in input row order (name -> float64 column):
    each group's partitions are gathered one by one (never concatenated on a worker) and put in
    place by `_row`, no join on the cluster."""
    import dask

    frames = group_frames(payments, fs, npartitions)
    cols: dict[str, np.ndarray] = {}
    for frame in frames.values():
        seen = 0
        for df in dask.compute(*frame.to_delayed()):
            rows = df[ROW].to_numpy()
            seen += len(rows)
            for c in df.columns:
                if c != ROW:
                    cols.setdefault(c, np.empty(n_rows, dtype="float64"))[rows] = df[c].to_numpy(
                        dtype="float64"
                    )
        if seen != n_rows:
            raise RuntimeError(f"fraud features came back for {seen} of {n_rows} payments")
    return {name: cols[name] for name in fs.names}
