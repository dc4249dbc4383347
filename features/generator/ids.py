"""String ids built with numpy digit arithmetic: millions of ids without a Python loop per id."""

from __future__ import annotations

import numpy as np


def make_ids(prefix: str, n: int, width: int | None = None, offset: int = 0) -> np.ndarray:
    """`prefix` + zero-padded offset..offset+n-1 as an object array of Python str (e.g.
    "card_000123"); a chunk of a partitioned store numbers on from the chunks before it."""
    width = max(width or 1, len(str(max(offset + n - 1, 0))))
    numbers = np.arange(offset, offset + n, dtype=np.int64)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    raw = np.empty((n, head.size + width), dtype=np.uint8)
    raw[:, : head.size] = head
    for k in range(width):
        raw[:, head.size + width - 1 - k] = numbers % 10 + ord("0")
        numbers //= 10
    fixed = raw.view(f"S{head.size + width}").ravel()
    return fixed.astype(f"U{head.size + width}").astype(object)
