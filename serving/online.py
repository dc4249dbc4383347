"""Online fraud state for the service: which store, and a breaker for when it is unreachable.

The in-process store is the default (one worker). With `SHOPML_REDIS_URL` the state lives in
Redis, so several workers (and several servers) share it. The fraud engine already scores a
payment whose state cannot be read as if its keys were new and flags it `degraded`; the
`Breaker` makes an outage cheap: after a failure the store is not tried again for
`retry_after` seconds (calls fail at once), so a dead Redis costs no timeout per checkout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from features.fraud.state_store import InMemoryStateStore, RedisStateStore
from shopml.log import get_logger

log = get_logger("serving.fraud.online")

REDIS_TIMEOUT_S = 0.05


class StoreUnavailable(ConnectionError):
    """The online state store is down (or was a moment ago); the answer is degraded."""


def make_store(redis_url: str | None):
    """The configured state store and its kind: Redis (short timeouts, no retries) or memory."""
    if not redis_url:
        return InMemoryStateStore(), "memory"
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return RedisStateStore(redis_url, client=client), "redis"


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the state store is unreachable" (not a bug in the request)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError]
    try:
        import redis

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(errors)


class Breaker:
    """StateStore wrapper: after a failure, fail fast for `retry_after` s, then try again."""

    def __init__(self, store, retry_after: float = 0.5) -> None:
        self.store = store
        self.retry_after = retry_after
        self._down_until = 0.0
        self._errors = store_errors()

    @property
    def is_open(self) -> bool:
        return self._down_until > 0.0

    def _call(self, fn, *args):
        if self._down_until and time.monotonic() < self._down_until:
            raise StoreUnavailable("online feature store unavailable (retrying shortly)")
        try:
            out = fn(*args)
        except self._errors as exc:
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

    def online_read(self, keys: Sequence[str]):
        return self._call(self.store.online_read, keys)

    def online_write_batch(self, items: Mapping, payment=None) -> None:
        self._call(self.store.online_write_batch, items, payment)

    def lookup_payment(self, transaction_id: str):
        return self._call(self.store.lookup_payment, transaction_id)

    def clear(self) -> None:
        self._call(self.store.clear)
