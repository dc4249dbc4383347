"""Per-key fraud state as time tiles: the count, sum, max, spike and new-terminal counts of a key's
payments per tile, at each tile size of the feature set (`FeatureSet.tile_plan`).

A window is a fixed number of tiles (definition.py), so recording a payment updates one tile per
size and reading a window sums a bounded slice: the cost is the same for a key with 10 payments
as for one with 100,000. A payment goes into the tile of its own time (late ones too); tiles are
only dropped once they are older than every window of their size plus the allowed lateness,
measured from min(payment time, clock), so a payment dated far ahead cannot evict history.
Known frauds are kept per labelled transaction id (rare; counted exactly by label time).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from features.fraud.definition import FeatureSet, window_label

MS = 1000
STRIDE = 5  # values per tile in `Tiles.data`
_NONE: frozenset[str] = frozenset()  # shared "no terminals yet" (saves 200 B per key)


class Tiles:
    """The tiles of one size of one key: tile ids (time // size) ascending, and per tile five
    values in one flat list (`STRIDE` apart, to save memory): payment count, amount sum, amount
    max, spike count, first-time-terminal count. `span` gives positions in that list, so
    `data[a:b:5]` are the counts, `data[a + 1:b:5]` the sums and so on."""

    __slots__ = ("ids", "data")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.data: list = []

    def add(self, tile: int, amount: float, spike: int, newpair: int) -> None:
        """Add one payment to tile `tile` (created in id order if absent)."""
        ids = self.ids
        i = len(ids) - 1
        if i < 0 or ids[i] != tile:
            i = bisect_left(ids, tile)
            if i == len(ids) or ids[i] != tile:
                ids.insert(i, tile)
                self.data[STRIDE * i : STRIDE * i] = (0, 0.0, amount, 0, 0)
        d, at = self.data, STRIDE * i
        d[at] += 1
        d[at + 1] += amount
        if amount > d[at + 2]:
            d[at + 2] = amount
        d[at + 3] += spike
        d[at + 4] += newpair

    def append(self, tile: int, values) -> None:
        """Append a tile read from a store (ids must come ascending)."""
        self.ids.append(tile)
        self.data.extend(values)

    def drop_before(self, tile: int) -> None:
        """Forget the tiles with id < `tile`."""
        k = bisect_left(self.ids, tile)
        if k:
            del self.ids[:k], self.data[: STRIDE * k]

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Positions [a, b) in `data` of the tiles with first <= id <= last."""
        ids = self.ids
        return STRIDE * bisect_left(ids, first), STRIDE * bisect_right(ids, last)


class KeyState:
    """What the online store holds for one customer, card or terminal: tiles per tile size,
    the latest payment time, the terminals used (customers, cards) and known frauds
    (label id -> (time the label became known, payment time), both ms)."""

    __slots__ = ("levels", "last_ms", "terminals", "frauds")

    def __init__(self, n_levels: int) -> None:
        self.levels = [Tiles() for _ in range(n_levels)]
        self.last_ms = -1
        self.terminals: set[str] | frozenset[str] = _NONE  # a set once a terminal is added
        self.frauds: dict[str, tuple[int, int]] = {}

    def add(self, t_ms: int, amount: float, spike: int, terminal: str | None, plan) -> int:
        """Record one payment (in-process stores; Redis runs the same steps in its script);
        returns 1 when `terminal` is new for the key (0 otherwise or without a terminal)."""
        levels = self.levels
        if len(levels) < len(plan):  # a key first filed by a label or warm-up
            levels.extend(Tiles() for _ in range(len(plan) - len(levels)))
        new = 0
        if terminal is not None and terminal not in self.terminals:
            if self.terminals is _NONE:
                self.terminals = {terminal}
            else:
                self.terminals.add(terminal)
            new = 1
        for tiles, (g, _) in zip(levels, plan, strict=True):
            tile, ids = t_ms // g, tiles.ids  # the usual cases inlined: a new latest tile,
            if not ids or ids[-1] < tile:  # or the latest one (same values as `Tiles.add`)
                ids.append(tile)
                tiles.data += (1, 0.0 + amount, amount, 0 + spike, 0 + new)
            elif ids[-1] == tile:
                d = tiles.data
                at = len(d) - STRIDE
                d[at] += 1
                d[at + 1] += amount
                if amount > d[at + 2]:
                    d[at + 2] = amount
                d[at + 3] += spike
                d[at + 4] += new
            else:
                tiles.add(tile, amount, spike, new)
        if t_ms > self.last_ms:
            self.last_ms = t_ms
        return new

    def trim(self, ref_ms: int, plan) -> None:
        """Drop the tiles no window at or after `ref_ms` can see; `plan` = (size, keep) in ms."""
        for tiles, (g, keep) in zip(self.levels, plan, strict=False):
            if tiles.ids and (tiles.ids[0] + 1) * g + keep <= ref_ms:
                tiles.drop_before((ref_ms - keep) // g)


def plan_ms(fs: FeatureSet, late_s: int | None = None) -> tuple[tuple[int, int], ...]:
    """(tile size, keep) in ms per tile size; keep includes the allowed lateness (default the
    label delay) so that a late payment still finds the tiles its windows need."""
    late = fs.label_delay if late_s is None else late_s
    return tuple((g * MS, (keep + late) * MS) for g, keep in fs.tile_plan)


def describe(st: KeyState | None, fs: FeatureSet, at_ms: int | None = None) -> dict:
    """A key's state as plain JSON-able values: per window (ending at `at_ms`, default the key's
    latest payment) the payment count, amount sum and max, plus known frauds and terminals."""
    if st is None:
        return {"found": False}
    at = st.last_ms if at_ms is None else at_ms
    sizes = [g for g, _ in fs.tile_plan]
    windows = {}
    for w in fs.windows:
        g = fs.window_tile(w)
        lv = sizes.index(g)
        tiles = st.levels[lv] if lv < len(st.levels) else Tiles()  # label-only key: no tiles
        now = at // (g * MS)
        a, b = tiles.span(now - w // g, now)
        windows[window_label(w)] = {
            "count": sum(tiles.data[a:b:STRIDE]),
            "sum": sum(tiles.data[a + 1 : b : STRIDE]),
            "max": max(tiles.data[a + 2 : b : STRIDE], default=None),
        }
    frauds = sorted(st.frauds.items(), key=lambda kv: kv[1])
    return {
        "found": True,
        "last_payment_ms": st.last_ms,
        "windows_end_ms": at,
        "windows": windows,
        "terminals": len(st.terminals),
        "known_frauds": [
            {"label_id": k, "known_ms": known, "payment_ms": tx} for k, (known, tx) in frauds
        ],
    }
