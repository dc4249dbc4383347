"""The hook through which live performance (click-through, conversion, late-label precision and
recall, A/B and shadow comparisons) appears in `shopml monitor FAMILY`, beside the drift section.

A provider is a function `provider(ctx: MonitorContext) -> list[PerformanceTable]`: it reads
what it needs (its store, MLflow) for `ctx.family` and hands back tables; `shopml monitor`
prints each as a table under the family's section and puts it into the HTML report. A table
whose `alarms` is not empty (e.g. "challenger CTR significantly lower") makes the command exit
non-zero like a crossed drift threshold does. A provider that raises a ShopmlError is shown as a
one-line note (its store may be down), never a traceback; any other error is a bug and
propagates.

To add one: write the function in your own module (it may import this one) and add one line to
`PROVIDERS` below, e.g. `"recommender": [feedback_tables]`. Imported only when `shopml monitor`
runs, so providers may import MLflow or SQLAlchemy freely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shopml.settings import Settings


@dataclass
class MonitorContext:
    """What a provider gets: the family, settings, and the champion it is watching (version,
    the MLflow run that trained it and that run's offline test metrics, for the side by side)."""

    family: str
    settings: Settings | None = None
    champion_version: str | None = None
    champion_run_id: str | None = None
    offline_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PerformanceTable:
    """One table of live numbers: a title, column names, rows of cells (str or numbers), an
    optional note under it, and alarms (reasons to exit non-zero)."""

    title: str
    columns: list[str]
    rows: list[list[object]]
    note: str = ""
    alarms: list[str] = field(default_factory=list)


Provider = Callable[[MonitorContext], list[PerformanceTable]]

from training.live_fraud import fraud_live_tables  # noqa: E402 - it imports this module lazily
from training.live_recommender import feedback_tables  # noqa: E402 - it imports this module lazily

# family -> its providers, in display order (agents add their one line here)
PROVIDERS: dict[str, list[Provider]] = {
    "fraud": [fraud_live_tables],
    "recommender": [feedback_tables],
    "forecast": [],
}


def live_tables(ctx: MonitorContext) -> tuple[list[PerformanceTable], list[str]]:
    """Every provider's tables for `ctx.family`, and notes of providers that could not answer."""
    from shopml.errors import ShopmlError

    tables: list[PerformanceTable] = []
    notes: list[str] = []
    for provider in PROVIDERS.get(ctx.family, []):
        try:
            tables.extend(provider(ctx))
        except ShopmlError as err:
            notes.append(f"{getattr(provider, '__name__', 'provider')}: {err}")
    return tables, notes
