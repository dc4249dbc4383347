"""Progress bars for long work (generation, benchmarks, training rounds), quiet off a terminal.

One helper for every caller: `progress(items, "what")` wraps an iterable, `progress_bar("what",
total)` is a bar updated by hand. Bars draw on stderr with tqdm, and only when stderr is a
terminal and `CI` is unset, so logs, pipes and test runs stay clean; `SHOPML_PROGRESS=1` forces
them on and `SHOPML_PROGRESS=0` off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether bars draw: `SHOPML_PROGRESS` if set, else stderr is a TTY and `CI` is unset."""
    forced = os.environ.get("SHOPML_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if os.environ.get("CI"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(desc: str, total: int | None = None, unit: str = "it", enabled: bool = True):
    """A tqdm bar on stderr (`.update(n)`, `.set_postfix_str(s)`, `.close()`, or use `with`);
    a silent one when `enabled` is false or `progress_enabled()` says no."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not (enabled and progress_enabled()),
        leave=False,
        dynamic_ncols=True,
    )


def progress(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
) -> Iterator[T]:
    """`items`, advancing a bar as each is taken (the total from `len(items)` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(desc, total, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update(1)


class RoundsBar:
    """A LightGBM training callback that advances a bar per boosting round (closed at the last).

    Plain callable, so the ground layer needs no LightGBM import: `lgb.train(...,
    callbacks=[RoundsBar("fraud scorer", rounds)])`.
    """

    order = 100  # after LightGBM's own callbacks (early stopping sets the final round)

    def __init__(self, desc: str, rounds: int) -> None:
        self._bar = progress_bar(desc, rounds, unit="round")

    def __call__(self, env) -> None:
        self._bar.update(1)
        if env.iteration + 1 >= env.end_iteration:
            self._bar.close()
