"""Train/test splits of interaction events.

- `stratified_split`: the microsoft/recommenders `python_stratified_split` protocol: within each
  group (product by default) events are ordered by a seeded uniform draw and the first
  round(ratio * count) go to train (numpy's round, half to even), the rest to test.
- `temporal_split`: events before a cut-off train; the test is what each customer known in
  training interacts with from the cut-off on (optionally only products new to them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from shopml.errors import DataError


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame


def stratified_split(
    events: pd.DataFrame, ratio: float = 0.75, by: str = "product_id", seed: int = 42
) -> Split:
    """Per-`by` random split keeping `ratio` of each group's events in train (order preserved)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if by not in events.columns:
        raise DataError(f"cannot split by {by!r}: no such column")
    if len(events) == 0:
        raise DataError("cannot split an empty event table")
    np.random.seed(seed)  # the protocol's exact draw (legacy global generator)
    draw = np.random.rand(len(events))
    frame = pd.DataFrame({"g": events[by].to_numpy(), "r": draw, "pos": np.arange(len(events))})
    frame = frame.sort_values(["g", "r"])
    groups = frame.groupby("g", sort=False)
    count = groups["g"].transform("count").to_numpy()
    rank = groups.cumcount().to_numpy() + 1
    in_train = rank <= np.round(ratio * count)
    train_pos = np.sort(frame["pos"].to_numpy()[in_train])
    test_pos = np.sort(frame["pos"].to_numpy()[~in_train])
    return Split(events.iloc[train_pos], events.iloc[test_pos])


def temporal_split(
    events: pd.DataFrame,
    cutoff: datetime | str | pd.Timestamp,
    *,
    only_new: bool = True,
    known_customers_only: bool = True,
    end: datetime | str | pd.Timestamp | None = None,
) -> Split:
    """Train on events strictly before `cutoff`; test on events at or after it (before `end`)."""
    cut = pd.Timestamp(cutoff)
    ts = events["timestamp"]
    train = events[ts < cut]
    test = events[ts >= cut] if end is None else events[(ts >= cut) & (ts < pd.Timestamp(end))]
    if len(train) == 0:
        raise DataError(f"temporal split: no events before the cut-off {cut}")
    if known_customers_only:
        test = test[test["customer_id"].isin(train["customer_id"].unique())]
    if only_new:
        seen = pd.MultiIndex.from_frame(train[["customer_id", "product_id"]])
        pairs = pd.MultiIndex.from_frame(test[["customer_id", "product_id"]])
        test = test[~pairs.isin(seen)]
    return Split(train, test)


def relevant_sets(test: pd.DataFrame) -> dict[str, set]:
    """customer_id -> set of product_ids in the test part."""
    return {c: set(g) for c, g in test.groupby("customer_id")["product_id"]}
