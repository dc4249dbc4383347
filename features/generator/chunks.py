"""One customer chunk of a store simulated in pieces (the `xlarge` scale).

Chunks share what the whole shop shares: the catalog, promotions and prices (drawn from the
shop's own streams, once) and the compromised terminal-days (terminals serve every customer).
Each chunk draws its customers, sessions, orders and payments from its own streams and numbers
its ids on from the chunks before it, so chunks are independent and the same seed gives the
same chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class IdOffsets:
    """Where a chunk's ids start (or, as `Chunk.counts`, how many it used) per kind of id."""

    customer: int = 0
    card: int = 0
    transaction: int = 0
    session: int = 0
    order: int = 0

    def __add__(self, other: IdOffsets) -> IdOffsets:
        return IdOffsets(
            self.customer + other.customer,
            self.card + other.card,
            self.transaction + other.transaction,
            self.session + other.session,
            self.order + other.order,
        )


@dataclass
class Chunk:
    """Chunk `index` of a partitioned simulation: its customer count, the id offsets it starts
    from, the shop's shared streams and compromised terminal-days; `counts` is set once it ran."""

    index: int
    customers: int
    ids: IdOffsets
    shared: dict[str, np.random.Generator]
    bad_terminal_days: np.ndarray
    counts: IdOffsets = field(default_factory=IdOffsets)
