"""Time as the feature code counts it: integer milliseconds since the Unix epoch, naive UTC.

Every conversion between datetimes and epoch milliseconds goes through here: batch features
(arrays), the fraud engine (one raw payment or label), the checkout (a validated request) and
the label store (back to datetimes).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from shopml.errors import DataError

EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def epoch_ms(value, what: str = "payment.timestamp") -> int:
    """datetime / pandas Timestamp / ISO string / numpy datetime64 / None (now) -> epoch ms.

    Aware times are converted to UTC, naive ones taken as UTC; milliseconds are floored.
    Anything else is a `DataError` naming `what` and the value.
    """
    if type(value) is datetime and value.tzinfo is None:  # the checkout's case, first
        return (value - EPOCH) // ONE_MS
    if value is None:
        return now_ms()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataError(f"{what}: unparseable timestamp {value!r}") from None
    if isinstance(value, pd.Timestamp):
        if value is pd.NaT:
            raise DataError(f"{what}: missing timestamp")
        if value.tzinfo is not None:
            value = value.tz_convert("UTC").tz_localize(None)
        return value.value // 1_000_000
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return (value - EPOCH) // ONE_MS
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise DataError(f"{what}: missing timestamp")
        return int(value.astype("datetime64[ms]").astype("int64"))
    raise DataError(f"{what}: unparseable timestamp {value!r}")


def epoch_ms_array(values) -> np.ndarray:
    """Naive-UTC datetimes (a Series or array) -> int64 epoch milliseconds (floored).

    NaT becomes the int64 minimum floored to ms; callers that allow NaT mask it first.
    """
    return np.asarray(values, dtype="datetime64[ns]").view("int64") // 1_000_000


def from_epoch_ms(ms: int) -> datetime:
    """Epoch milliseconds -> naive-UTC datetime."""
    return EPOCH + ms * ONE_MS
