"""Per-key online state for fraud features, behind a small store interface (like Feast's online store).

`EntityState` holds one customer's, card's or terminal's recent payments (times, amounts, flags),
its known-fraud label times, last payment time and (customers, cards) the terminals ever used.
`InMemoryStateStore` keeps live objects in a dict (one process); `RedisStateStore` keeps each key
as one compact binary value (struct + raw arrays, no pickle) so several workers share it; one
MGET reads a payment's keys and one pipelined write stores them back. `CircuitBreaker` wraps
either so that an unreachable store fails fast instead of costing a timeout per payment, and
`open_store` builds what the fraud service uses (Redis with short timeouts, or memory).
"""

from __future__ import annotations

import struct
import time
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("features.fraud.state_store")

REDIS_TIMEOUT_S = 0.05
# exceptions that mean "the state store is unreachable" (not a bug in the request)
STORE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    redis.exceptions.RedisError,
)


class StoreUnavailable(ConnectionError):
    """The online state store is down (or was a moment ago); answers are degraded."""


class EntityState:
    """Recent history of one key, trimmed to the feature horizon as new payments arrive."""

    __slots__ = (
        "times",
        "amounts",
        "spikes",
        "newpair",
        "frauds",
        "fraud_tx",
        "terminals",
        "last_ms",
    )

    def __init__(self) -> None:
        self.times: list[int] = []  # payment times (ms), ascending
        self.amounts: list[float] = []
        self.spikes: list[int] = []  # customer: 1 where amount > spike_ratio x usual amount
        self.newpair: list[int] = []  # customer/card: 1 where the terminal was used the first time
        self.frauds: list[int] = []  # times (ms) at which fraud labels became known, ascending
        self.fraud_tx: list[int] = []  # payment time (ms) of each of those frauds
        self.terminals: set[str] = set()  # customer/card: terminals ever used
        self.last_ms: int = -1

    def add_fraud(self, known_ms: int, tx_ms: int) -> None:
        """File a fraud label known from `known_ms` about a payment made at `tx_ms`."""
        i = bisect_right(self.frauds, known_ms)
        self.frauds.insert(i, known_ms)
        self.fraud_tx.insert(i, tx_ms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EntityState) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )

    # ---------------------------------------------------------------- binary
    _HEAD = struct.Struct("<BqIIIII")  # version, last_ms, n, n_spikes, n_newpair, n_frauds, n_term
    VERSION = 2

    def to_bytes(self) -> bytes:
        terms = "\x1f".join(self.terminals).encode() if self.terminals else b""
        head = self._HEAD.pack(
            self.VERSION,
            self.last_ms,
            len(self.times),
            len(self.spikes),
            len(self.newpair),
            len(self.frauds),
            len(terms),
        )
        return b"".join(
            (
                head,
                array("q", self.times).tobytes(),
                array("d", self.amounts).tobytes(),
                bytes(self.spikes),
                bytes(self.newpair),
                array("q", self.frauds).tobytes(),
                array("q", self.fraud_tx).tobytes(),
                terms,
            )
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> EntityState:
        h = cls._HEAD
        try:
            version, last_ms, n, ns, nn, nf, nt = h.unpack_from(blob, 0)
        except struct.error as err:
            raise DataError(f"fraud state: corrupt value ({len(blob)} bytes): {err}") from None
        if version != cls.VERSION:
            raise DataError(f"fraud state: unknown encoding version {version}")
        st = cls()
        st.last_ms = last_ms
        st.times, o = _unpack(blob, h.size, "q", n)
        st.amounts, o = _unpack(blob, o, "d", n)
        st.spikes, o = list(blob[o : o + ns]), o + ns
        st.newpair, o = list(blob[o : o + nn]), o + nn
        st.frauds, o = _unpack(blob, o, "q", nf)
        st.fraud_tx, o = _unpack(blob, o, "q", nf)
        if nt:
            st.terminals = set(blob[o : o + nt].decode().split("\x1f"))
        return st


def _unpack(blob: bytes, offset: int, code: str, n: int) -> tuple[list, int]:
    """`n` raw values of array type `code` at `offset`, and the offset after them."""
    values = array(code)
    end = offset + values.itemsize * n
    values.frombytes(blob[offset:end])
    return values.tolist(), end


class StateStore(Protocol):
    """Where online feature state lives: read a payment's keys, write them back (with, optionally,
    the payment's (customer, terminal, time) under its id so that a late label can find them)."""

    def online_read(self, keys: Sequence[str]) -> list[EntityState | None]: ...

    def online_write_batch(
        self, items: Mapping[str, EntityState], payment: tuple[str, str, str, int] | None = None
    ) -> None: ...

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None: ...


class InMemoryStateStore:
    """Default store: live `EntityState` objects in a dict (mutated in place, nothing encoded)."""

    def __init__(self, max_payments: int = 2_000_000) -> None:
        self._data: dict[str, EntityState] = {}
        self._payments: dict[str, tuple[str, str, int]] = {}  # insertion-ordered, oldest first
        self.max_payments = max_payments

    def online_read(self, keys: Sequence[str]) -> list[EntityState | None]:
        get = self._data.get
        return [get(k) for k in keys]

    def online_write_batch(
        self, items: Mapping[str, EntityState], payment: tuple[str, str, str, int] | None = None
    ) -> None:
        self._data.update(items)
        if payment is not None:
            pays = self._payments
            pays[payment[0]] = payment[1:]
            if len(pays) > self.max_payments:
                del pays[next(iter(pays))]

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        return self._payments.get(transaction_id)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


class RedisStateStore:
    """Shared store: one binary value per key in Redis (redis-py), one round trip per read or write.

    `ttl_seconds` expires keys nobody paid with for that long (default 400 days) so that state
    cannot grow without bound; concurrent writers of the same key follow last-writer-wins.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "shopml:fraud:",
        ttl_seconds: int | None = 400 * 86400,
        client=None,
    ):
        if client is None:
            client = redis.Redis.from_url(url)
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    def online_read(self, keys: Sequence[str]) -> list[EntityState | None]:
        p = self.prefix
        blobs = self.client.mget([p + k for k in keys])
        return [None if b is None else EntityState.from_bytes(b) for b in blobs]

    def online_write_batch(
        self, items: Mapping[str, EntityState], payment: tuple[str, str, str, int] | None = None
    ) -> None:
        if not items and payment is None:
            return
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        for k, st in items.items():
            pipe.set(p + k, st.to_bytes(), ex=self.ttl_seconds)
        if payment is not None:
            tx, customer, terminal, t_ms = payment
            pipe.set(f"{p}tx:{tx}", f"{customer}\x1f{terminal}\x1f{t_ms}", ex=self.ttl_seconds)
        pipe.execute()

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        blob = self.client.get(f"{self.prefix}tx:{transaction_id}")
        if blob is None:
            return None
        customer, terminal, t_ms = blob.decode().split("\x1f")
        return customer, terminal, int(t_ms)

    def clear(self) -> None:
        """Delete every key under this store's prefix."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])


class CircuitBreaker:
    """StateStore wrapper: after a failure, fail fast for `retry_after` s, then try again.

    Every failure is raised as `StoreUnavailable`, so callers catch one type; an outage is
    logged once when it starts and once when the store answers again.
    """

    def __init__(self, store: StateStore, retry_after: float = 0.5) -> None:
        self.store = store
        self.retry_after = retry_after
        self._down_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._down_until > 0.0

    def _call(self, fn, *args):
        if self._down_until and time.monotonic() < self._down_until:
            raise StoreUnavailable("online feature store unavailable (retrying shortly)")
        try:
            out = fn(*args)
        except STORE_ERRORS as exc:
            if not self._down_until:
                log.warning(
                    "online feature store unreachable: fraud answers are degraded",
                    extra={"error_type": type(exc).__name__},
                )
            self._down_until = time.monotonic() + self.retry_after
            raise StoreUnavailable(
                f"online feature store unreachable ({type(exc).__name__})"
            ) from None
        if self._down_until:
            log.warning("online feature store reachable again")
            self._down_until = 0.0
        return out

    def online_read(self, keys: Sequence[str]) -> list[EntityState | None]:
        return self._call(self.store.online_read, keys)

    def online_write_batch(
        self, items: Mapping[str, EntityState], payment: tuple[str, str, str, int] | None = None
    ) -> None:
        self._call(self.store.online_write_batch, items, payment)

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        return self._call(self.store.lookup_payment, transaction_id)

    def clear(self) -> None:
        self._call(self.store.clear)


def open_store(redis_url: str | None) -> tuple[CircuitBreaker, str]:
    """The service's state store behind a breaker, and its kind ("redis" or "memory").

    Redis gets short timeouts and no retries: a checkout cannot wait for a slow store.
    """
    if not redis_url:
        return CircuitBreaker(InMemoryStateStore()), "memory"
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return CircuitBreaker(RedisStateStore(redis_url, client=client)), "redis"
