"""The fraud feature set, declared once as plain objects and shared by the batch and online paths.

A payment at time t sees (1) the payments of its customer, card and terminal in tile-aligned
windows [T - w, t] *including itself* (as in the fraud-detection handbook: its amount is known at
checkout) but never payments that follow it in the stream, where T is the start of t's time tile
of the window (`FeatureSet.window_tile`: 5 minutes for 1 h, 1 hour for 1 day, 1 day from 7
days), so that online state is a fixed number of tiles per window whatever a key's history
(delayed windows: [T - delay - w, T - delay); a fraud rate divides the frauds whose label became
known in [T - w, T) by those payments), and (2) fraud labels only once they
are known: at `label_time`, or at `timestamp + label_delay` when `label_time` is empty, and never
before the payment that carries the label plus one millisecond. Times are whole milliseconds.
Amounts are in the store's base currency: each payment's amount times the rate of its currency
(`FeatureSet.rates`, the same table in batch and online); a currency without a rate is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from shopml.errors import ConfigError, DataError

# Bump when the meaning of an existing feature changes (new features change the names anyway).
# 3: amounts converted to the base currency
# 4: payment windows aligned to time tiles (online state costs the same for any history length)
FEATURE_CODE_VERSION = 4
MIN_TILES = 6  # a window is at least this many tiles of its size (5 min, 1 h, 1 day)

HOUR = 3600
DAY = 86400

ENTITIES = ("customer", "card", "terminal")
ID_COLUMNS = {"customer": "customer_id", "card": "card_id", "terminal": "terminal_id"}
PAIR_ENTITIES = ("customer", "card")  # entities whose first-time terminals are tracked

# Value of one unit of each currency of the data contract in EUR (reference rates, late 2025).
# A job sets its own table (`[features]` base_currency and rates in the fraud config).
DEFAULT_RATES = (
    ("AUD", 0.565),
    ("CAD", 0.615),
    ("CHF", 1.07),
    ("CZK", 0.041),
    ("DKK", 0.134),
    ("EUR", 1.0),
    ("GBP", 1.14),
    ("JPY", 0.0056),
    ("NOK", 0.085),
    ("PLN", 0.236),
    ("SEK", 0.091),
    ("USD", 0.86),
)


def window_label(seconds: int) -> str:
    """`3600 -> '1h'`, `86400 -> '1d'`, `604800 -> '7d'`; readable and stable feature-name parts."""
    if seconds % DAY == 0:
        return f"{seconds // DAY}d"
    if seconds % HOUR == 0:
        return f"{seconds // HOUR}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class FeatureSet:
    """Windows, keys, aggregations and label delay of the fraud features (seconds everywhere)."""

    windows: tuple[int, ...] = (HOUR, DAY, 7 * DAY, 30 * DAY)
    entities: tuple[str, ...] = ENTITIES
    pair_windows: tuple[int, ...] = (7 * DAY, 30 * DAY)
    fraud_entities: tuple[str, ...] = ("customer", "terminal")
    fraud_windows: tuple[int, ...] = (DAY, 7 * DAY, 30 * DAY)
    label_delay: int = 7 * DAY
    usual_window: int = 30 * DAY
    spike_ratio: float = 3.0
    spike_windows: tuple[int, ...] = (DAY, 7 * DAY, 14 * DAY)
    night_last_hour: int = 6
    tile_sizes: tuple[int, ...] = (300, HOUR, DAY)  # time tiles of the windows (seconds)
    base_currency: str = "EUR"
    rates: tuple[tuple[str, float], ...] = DEFAULT_RATES  # (currency, base units per unit)
    name: str = "shopml-fraud"
    _names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _rate: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for attr in ("windows", "pair_windows", "fraud_windows", "spike_windows", "tile_sizes"):
            values = getattr(self, attr)
            object.__setattr__(self, attr, tuple(int(v) for v in values))
            if any(v <= 0 for v in getattr(self, attr)):
                raise ConfigError(
                    f"FeatureSet.{attr}: windows must be positive seconds, got {values}"
                )
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "fraud_entities", tuple(self.fraud_entities))
        for e in (*self.entities, *self.fraud_entities):
            if e not in ENTITIES:
                raise ConfigError(f"FeatureSet: unknown entity '{e}'; expected one of {ENTITIES}")
        if "customer" not in self.entities:
            raise ConfigError("FeatureSet.entities must include 'customer'")
        if self.usual_window not in self.windows:
            raise ConfigError(
                f"FeatureSet.usual_window={self.usual_window} must be one of windows {self.windows}"
            )
        if self.label_delay < 0:
            raise ConfigError(f"FeatureSet.label_delay must be >= 0, got {self.label_delay}")
        self._check_rates()
        object.__setattr__(self, "tile_sizes", tuple(sorted(set(self.tile_sizes))))
        for w, delay in self._tiled_windows():
            self.window_tile(w, delay)  # a ConfigError when no tile size fits
        object.__setattr__(self, "_names", tuple(self._build_names()))

    def _check_rates(self) -> None:
        """Rates as a sorted tuple of (code, positive finite rate); the base currency is 1."""
        pairs = self.rates.items() if isinstance(self.rates, dict) else self.rates
        rate = {}
        for code, value in pairs:
            value = float(value)
            if not (isinstance(code, str) and len(code) == 3 and code.isupper()):
                raise ConfigError(f"FeatureSet.rates: currency {code!r} is not an ISO 4217 code")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"FeatureSet.rates.{code}: must be a positive number, got {value}"
                )
            rate[code] = value
        base = self.base_currency
        if rate.setdefault(base, 1.0) != 1.0:
            raise ConfigError(
                f"FeatureSet.rates.{base}: the base currency's rate must be 1, got {rate[base]}"
            )
        object.__setattr__(self, "rates", tuple(sorted(rate.items())))
        object.__setattr__(self, "_rate", rate)

    # ------------------------------------------------------------- currency
    def _no_rate(self, currencies) -> DataError:
        shown = ", ".join(repr(c) for c in list(currencies)[:5])
        return DataError(
            f"payment.currency: no exchange rate to {self.base_currency} for {shown}; "
            f"rates known: {', '.join(sorted(self._rate))}"
        )

    def to_base(self, amount: float, currency: str | None) -> float:
        """One amount in the base currency (no currency: already in it)."""
        if currency is None or currency == self.base_currency:
            return amount
        rate = self._rate.get(currency)
        if rate is None:
            raise self._no_rate([currency])
        return amount * rate

    def amounts_in_base(self, payments: pd.DataFrame) -> np.ndarray:
        """The `amount` column in the base currency (float64); a table without `currency` is
        taken as in the base currency."""
        amount = payments["amount"].to_numpy(dtype="float64")
        if "currency" not in payments.columns:
            return amount
        cur = payments["currency"]
        rate = cur.map(self._rate).to_numpy(dtype="float64")
        bad = np.isnan(rate)
        if bad.any():
            raise self._no_rate(pd.unique(cur.to_numpy()[bad]))
        return amount * rate

    # ----------------------------------------------------------------- names
    def _build_names(self) -> list[str]:
        names = ["amount", "hour", "is_night", "is_weekend"]
        for e in self.entities:
            for w in self.windows:
                lab = window_label(w)
                names += [f"{e}_count_{lab}", f"{e}_amount_mean_{lab}", f"{e}_amount_max_{lab}"]
        for e in self.pair_entities:
            names += [f"{e}_secs_since_prev", f"{e}_new_terminal", f"{e}_terminals_ever"]
            names += [f"{e}_new_terminals_{window_label(w)}" for w in self.pair_windows]
        names += ["customer_amount_to_usual", "customer_amount_to_prev_max"]
        if "customer" in self.fraud_entities and self.fraud_windows:
            # amount vs the customer's mean before the label delay: a card compromised in the
            # last days has not yet inflated that mean
            names.append("customer_amount_to_delayed_mean")
        names += [f"customer_spikes_{window_label(w)}" for w in self.spike_windows]
        for e in self.fraud_entities:
            for w in self.fraud_windows:
                lab = window_label(w)
                names += [
                    f"{e}_delayed_count_{lab}",
                    f"{e}_known_frauds_{lab}",
                    f"{e}_fraud_rate_{lab}",
                ]
            if self.fraud_windows:
                # age of the newest / oldest fraud payment among labels known in the longest
                # window: tells an ongoing compromise from one that has ended
                names += [f"{e}_secs_since_last_fraud", f"{e}_secs_since_first_fraud"]
        return names

    @property
    def pair_entities(self) -> tuple[str, ...]:
        return tuple(e for e in PAIR_ENTITIES if e in self.entities)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in the order of every feature vector."""
        return self._names

    @property
    def n_features(self) -> int:
        return len(self._names)

    def index(self, name: str) -> int:
        try:
            return self._names.index(name)
        except ValueError:
            raise ConfigError(f"feature '{name}' is not in feature set {self.version}") from None

    # ----------------------------------------------------------------- tiles
    def window_tile(self, window: int, delay: int = 0) -> int:
        """Tile size (s) of a window: the largest of `tile_sizes` dividing the window (and its
        delay) at least `MIN_TILES` times, else the largest dividing it at all."""
        fits = [g for g in self.tile_sizes if window % g == 0 and delay % g == 0]
        if not fits:
            raise ConfigError(
                f"FeatureSet: window {window} s (delay {delay} s) is not a multiple of any "
                f"tile size {self.tile_sizes}"
            )
        many = [g for g in fits if window // g >= MIN_TILES]
        return max(many) if many else max(fits)

    def _tiled_windows(self) -> list[tuple[int, int]]:
        """(window, delay) of every windowed payment aggregate."""
        out = [(w, 0) for w in (*self.windows, *self.pair_windows, *self.spike_windows)]
        if self.fraud_entities and self.fraud_windows:
            d = self.label_delay
            out += [(w, d) for w in self.fraud_windows]
        return out

    @property
    def tile_plan(self) -> tuple[tuple[int, int], ...]:
        """(tile size, how long a tile is needed) in seconds per tile size in use, ascending."""
        keep: dict[int, int] = {}
        for w, delay in self._tiled_windows():
            g = self.window_tile(w, delay)
            keep[g] = max(keep.get(g, 0), w + delay + g)
        return tuple(sorted(keep.items()))

    @property
    def horizon(self) -> int:
        """How far back (seconds) any feature looks at past payments (tiles included)."""
        back = max(w + delay + self.window_tile(w, delay) for w, delay in self._tiled_windows())
        if self.fraud_entities:
            back = max(back, self.label_delay + max(self.fraud_windows))
        return back

    @property
    def replay_days(self) -> int:
        """Days of payments an online state must have seen for every feature to equal batch
        (spike flags look back at the usual amount before them)."""
        back = max(self.horizon, max(self.spike_windows, default=0) + self.usual_window)
        return -(-back // DAY)

    # ----------------------------------------------------------- round trip
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_names", None)
        d.pop("_rate", None)
        d["rates"] = dict(self.rates)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSet:
        allowed = set(cls().to_dict())
        unknown = set(d) - allowed
        if unknown:
            raise ConfigError(f"FeatureSet: unknown fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def version(self) -> str:
        """`name@hash` of the whole definition: logged with every model trained on it."""
        blob = json.dumps(
            {
                "definition": self.to_dict(),
                "features": list(self._names),
                "code": FEATURE_CODE_VERSION,
            },
            sort_keys=True,
        ).encode()
        return f"{self.name}@{hashlib.sha256(blob).hexdigest()[:10]}"


# The 15 baseline features of the handbook's chapter 3, in our names.
HANDBOOK_BASELINE = (
    "amount",
    "is_weekend",
    "is_night",
    "customer_count_1d",
    "customer_amount_mean_1d",
    "customer_count_7d",
    "customer_amount_mean_7d",
    "customer_count_30d",
    "customer_amount_mean_30d",
    "terminal_delayed_count_1d",
    "terminal_fraud_rate_1d",
    "terminal_delayed_count_7d",
    "terminal_fraud_rate_7d",
    "terminal_delayed_count_30d",
    "terminal_fraud_rate_30d",
)
