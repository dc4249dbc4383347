"""Per-key online state for fraud features, behind a small store interface (like Feast's online store).

A key (customer `cu:`, card `ca:`, terminal `te:`) holds time tiles of its payments
(`features.fraud.tiles.KeyState`). Every change is one atomic, idempotent operation per payment:
`record` adds a payment to all its keys at once and only the first time its `transaction_id` is
seen; `file_label` adds or removes a fraud label by label id. `InMemoryStateStore` does this under
a lock in one process (bounded: max keys, oldest first, and expiry); `RedisStateStore` in one
server-side Lua script (EVALSHA), so concurrent workers never lose or double an update, with
keys expiring past the longest window. Both also offer the small primitives a service needs
(`put_if_absent`, `get`, a generation marker, `acquire_once`, `read_key`). `CircuitBreaker`
wraps either so that an unreachable store fails fast, and `open_store` builds what the fraud
service uses.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.fraud.definition import ENTITIES, FeatureSet
from features.fraud.tiles import KeyState, describe
from shopml.clock import now_ms
from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("features.fraud.state_store")

REDIS_TIMEOUT_S = 0.05
WARM_TIMEOUT_S = 30.0  # warm-up writes thousands of payments: it may wait, a checkout may not
PAYMENT_TTL_S = 90 * 86400  # how long a transaction id is remembered (retries, late labels)
# exceptions that mean "the state store is unreachable" (not a bug in the request)
STORE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    redis.exceptions.RedisError,
)


class StoreUnavailable(ConnectionError):
    """The online state store is down (or was a moment ago); answers are degraded."""


def entity_key(entity: str, entity_id: str) -> str:
    """The state key of a customer, card or terminal: `cu:<id>`, `ca:<id>`, `te:<id>`."""
    if entity not in ENTITIES:
        raise DataError(f"entity: expected one of {ENTITIES}, got {entity!r}")
    return f"{entity[:2]}:{entity_id}"


@dataclass(slots=True)
class Recording:
    """One payment to add to the state of its keys (built by `OnlineFeatures`).

    `spikes[j]` (0/1) and `pairs[j]` (track the terminal) are per key; `plan` is
    (tile size, keep) in ms per tile size; `ttl_s` how long an idle key lives."""

    t_ms: int
    amount: float
    keys: tuple[str, ...]
    spikes: tuple[int, ...]
    pairs: tuple[bool, ...]
    terminal: str
    customer: str
    plan: tuple[tuple[int, int], ...]
    ttl_s: int
    transaction_id: str | None = None


class StateStore(Protocol):
    """Where online feature state lives. Every method is safe with concurrent callers."""

    def read(
        self, keys: Sequence[str], n_levels: int, tiles: Sequence[Sequence[int]] | None = None
    ) -> list[KeyState | None]:
        """The state of each key (None: never seen or expired); read-only for the caller.
        `tiles[level]` (ascending tile ids) limits what a store with `wants_tiles` fetches."""
        ...

    def record(self, rec: Recording) -> bool:
        """Add a payment to all its keys atomically; False (nothing changed) when its
        `transaction_id` was recorded before."""
        ...

    def file_label(
        self,
        keys: Sequence[str],
        label_id: str,
        known_ms: int,
        tx_ms: int,
        is_fraud: bool,
        keep_ms: int | None = None,
    ) -> bool:
        """Set (is_fraud) or remove (a correction to genuine) the fraud label `label_id` on
        `keys`; repeating it is a no-op. True when some key changed. With `keep_ms`, labels
        known more than that before min(tx_ms, clock) are dropped from those keys."""
        ...

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        """(customer, terminal, time ms) of a recorded payment, for a late label."""
        ...

    def seed(self, key: str, terminals: Sequence[str], last_ms: int) -> None:
        """Warm-up: merge terminals used and a latest payment time into a key."""
        ...

    def put_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None: ...

    def get(self, key: str) -> bytes | None: ...

    def generation(self) -> str | None: ...

    def set_generation(self, generation: str) -> None: ...

    def acquire_once(self, name: str, ttl_seconds: float) -> bool: ...

    def read_key(self, entity: str, entity_id: str, fs: FeatureSet | None = None) -> dict: ...

    def clear(self) -> None: ...


class _Primitives:
    """Docstrings of the service primitives shared by both stores."""

    def put_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None:
        """Store `value` under `key` for `ttl_seconds` unless the key holds a live value; returns
        that existing value (and stores nothing), or None when `value` was stored. Atomic: of
        concurrent callers with one key exactly one gets None. Keys live apart from feature
        state (`clear` removes them too)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        """The live value `put_if_absent` stored under `key`, or None."""
        raise NotImplementedError

    def generation(self) -> str | None:
        """The store's generation marker, or None when it was never set or the store lost its
        data (a Redis restarted empty or flushed): a service sets one after warm-up and
        compares it with the one it knows to notice the loss."""
        raise NotImplementedError

    def set_generation(self, generation: str) -> None:
        """Set the generation marker (no expiry)."""
        raise NotImplementedError

    def acquire_once(self, name: str, ttl_seconds: float) -> bool:
        """True for exactly one caller per `name` until `ttl_seconds` pass (or the store loses
        its data): e.g. only one worker warms a shared store up from history."""
        raise NotImplementedError

    def read_key(self, entity: str, entity_id: str, fs: FeatureSet | None = None) -> dict:
        """What the store holds for one customer/card/terminal, as JSON-able values:
        `{"found": False}` or `{"found": True, "last_payment_ms", "windows_end_ms", "windows":
        {"1h": {"count", "sum", "max"}, ...}, "terminals", "known_frauds": [{"label_id",
        "known_ms", "payment_ms"}]}`; windows of `fs` (default FeatureSet()) end at the key's
        latest payment."""
        fs = fs or FeatureSet()
        (st,) = self.read([entity_key(entity, entity_id)], len(fs.tile_plan))
        return {"entity": entity, "id": entity_id, **describe(st, fs)}


class InMemoryStateStore(_Primitives):
    """Default store: live `KeyState` objects in one process, changed under a lock.

    At most `max_keys` keys (the least recently paid-with go first) and `max_payments`
    remembered transaction ids; a key nobody paid with for the key's `ttl_s` expires."""

    def __init__(
        self, max_keys: int = 1_000_000, max_payments: int = 1_000_000, max_values: int = 100_000
    ) -> None:
        self._data: OrderedDict[str, KeyState] = OrderedDict()
        self._touched: dict[str, float] = {}  # key -> monotonic expiry time
        self._payments: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._generation: str | None = None
        self.max_keys, self.max_payments, self.max_values = max_keys, max_payments, max_values
        self._lock = threading.Lock()

    wants_tiles = False  # live objects: reading every tile costs nothing

    def read(
        self, keys: Sequence[str], n_levels: int, tiles: Sequence[Sequence[int]] | None = None
    ) -> list[KeyState | None]:
        get = self._data.get
        return [get(k) for k in keys]

    def record(self, rec: Recording) -> bool:
        with self._lock:
            pays = self._payments
            tx = rec.transaction_id
            if tx is not None:
                if tx in pays:
                    return False
                pays[tx] = (rec.customer, rec.terminal, rec.t_ms)
                if len(pays) > self.max_payments:
                    pays.popitem(last=False)
            t, amount, terminal, plan = rec.t_ms, rec.amount, rec.terminal, rec.plan
            ref = min(t, now_ms())
            data, touched = self._data, self._touched
            expiry = time.monotonic() + rec.ttl_s
            for key, spike, pair in zip(rec.keys, rec.spikes, rec.pairs, strict=True):
                st = data.get(key)  # `_touch`, inlined: three keys per payment
                if st is None:
                    st = data[key] = KeyState(len(plan))
                else:
                    data.move_to_end(key)
                touched[key] = expiry
                st.add(t, amount, spike, terminal if pair else None, plan)
                st.trim(ref, plan)
            self._evict()
            return True

    def _touch(self, key: str, n_levels: int, ttl_s: float) -> KeyState:
        """The key's state (new if absent), marked most recently used for `ttl_s`."""
        data = self._data
        st = data.get(key)
        if st is None:
            st = data[key] = KeyState(n_levels)
        else:
            data.move_to_end(key)
        self._touched[key] = time.monotonic() + ttl_s
        return st

    def _evict(self) -> None:
        """Drop expired keys and, above `max_keys`, the least recently used ones."""
        data, touched = self._data, self._touched
        now = time.monotonic()
        while data:
            key = next(iter(data))
            if len(data) <= self.max_keys and touched[key] > now:
                break
            del data[key], touched[key]

    def file_label(
        self,
        keys: Sequence[str],
        label_id: str,
        known_ms: int,
        tx_ms: int,
        is_fraud: bool,
        keep_ms: int | None = None,
    ) -> bool:
        changed = False
        cut = None if keep_ms is None else min(tx_ms, now_ms()) - keep_ms
        with self._lock:
            for key in keys:
                st = self._data.get(key)
                if is_fraud:
                    if st is None:
                        st = self._touch(key, 0, PAYMENT_TTL_S)
                    changed |= st.frauds.get(label_id) != (known_ms, tx_ms)
                    st.frauds[label_id] = (known_ms, tx_ms)
                elif st is not None and st.frauds.pop(label_id, None) is not None:
                    changed = True
                if cut is not None and st is not None:
                    old = [k for k, (known, _) in st.frauds.items() if known <= cut]
                    for k in old:
                        del st.frauds[k]
            self._evict()
        return changed

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        return self._payments.get(transaction_id)

    def seed(self, key: str, terminals: Sequence[str], last_ms: int) -> None:
        with self._lock:
            st = self._touch(key, 0, PAYMENT_TTL_S)
            st.terminals = {*st.terminals, *terminals}
            st.last_ms = max(st.last_ms, int(last_ms))
            self._evict()

    def put_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None:
        with self._lock:
            now = time.monotonic()
            old = self._values.get(key)
            if old is not None and old[1] > now:
                return old[0]
            self._values[key] = (bytes(value), now + ttl_seconds)
            self._values.move_to_end(key)
            while len(self._values) > self.max_values:
                self._values.popitem(last=False)
            return None

    def get(self, key: str) -> bytes | None:
        old = self._values.get(key)
        return old[0] if old is not None and old[1] > time.monotonic() else None

    def generation(self) -> str | None:
        return self._generation

    def set_generation(self, generation: str) -> None:
        self._generation = generation

    def acquire_once(self, name: str, ttl_seconds: float) -> bool:
        return self.put_if_absent(f"once:{name}", b"1", ttl_seconds) is None

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._touched.clear()
            self._payments.clear()
            self._values.clear()
            self._generation = None


# KEYS: payment marker, then per key: tiles hash, tile expiry zset, terminals set.
# ARGV: has_tx, marker value, key ttl s, marker ttl s, t ms, amount, terminal, trim ref ms,
# n levels, per level (tile field, expiry score), per key (spike, track terminal).
_RECORD = """
if ARGV[1] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[4]) then return 0 end
end
local ttl, t, amt, term = ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local ref, nl = ARGV[8], tonumber(ARGV[9])
local nk = (#KEYS - 1) / 3
for k = 0, nk - 1 do
  local h, z, ts = KEYS[2 + 3 * k], KEYS[3 + 3 * k], KEYS[4 + 3 * k]
  local spike = tonumber(ARGV[10 + 2 * nl + 2 * k])
  local new = 0
  if ARGV[11 + 2 * nl + 2 * k] == '1' then
    new = redis.call('SADD', ts, term)
    redis.call('EXPIRE', ts, ttl)
  end
  for l = 0, nl - 1 do
    local f = ARGV[10 + 2 * l]
    local c, s, m, sp, np = 0, 0, amt, 0, 0
    local v = redis.call('HGET', h, f)
    if v then
      local a, b, x, d, e = string.match(v, '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
      c, s, m, sp, np = tonumber(a), tonumber(b), tonumber(x), tonumber(d), tonumber(e)
    else
      redis.call('ZADD', z, ARGV[11 + 2 * l], f)
    end
    c, s, sp, np = c + 1, s + amt, sp + spike, np + new
    if amt > m then m = amt end
    redis.call('HSET', h, f, string.format('%d,%.17g,%.17g,%d,%d', c, s, m, sp, np))
  end
  local last = tonumber(redis.call('HGET', h, 'l') or '-1')
  if t > last then redis.call('HSET', h, 'l', ARGV[5]) end
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', ref, 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('HDEL', h, unpack(old))
    redis.call('ZREM', z, unpack(old))
  end
  redis.call('EXPIRE', h, ttl)
  redis.call('EXPIRE', z, ttl)
end
return 1
"""

_PUT_IF_ABSENT = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS: the frauds hash of each key. ARGV: label id, "known,tx" (empty: remove), ttl s, drop
# labels known at or before this ms ("-inf": none). Returns 1 when a label was added/changed/removed.
_LABEL = """
local changed = 0
local cut = tonumber(ARGV[4])
for _, f in ipairs(KEYS) do
  if ARGV[2] ~= '' then
    if redis.call('HGET', f, ARGV[1]) ~= ARGV[2] then changed = 1 end
    redis.call('HSET', f, ARGV[1], ARGV[2])
    redis.call('EXPIRE', f, ARGV[3])
  elseif redis.call('HDEL', f, ARGV[1]) == 1 then
    changed = 1
  end
  if cut > -math.huge then
    local all = redis.call('HGETALL', f)
    for i = 1, #all, 2 do
      local known = tonumber(string.match(all[i + 1], '^([^,]*),'))
      if known <= cut then redis.call('HDEL', f, all[i]) end
    end
  end
end
return changed
"""

_SEED = """
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or '-1')
if tonumber(ARGV[1]) > last then redis.call('HSET', KEYS[1], 'l', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 3, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
if #ARGV > 2 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


class RedisStateStore(_Primitives):
    """Shared store in Redis: per key a hash of tiles (`<level>:<tile id>` -> "count,sum,max,
    spikes,new terminals", and `l` the latest payment time), a sorted set of tile expiry times,
    a set of terminals and a hash of known frauds; per payment a marker `tx:<id>`.

    `record` is one Lua script (EVALSHA via redis-py), so updates from many workers are atomic
    and a transaction id is recorded once. Keys expire `Recording.ttl_s` after their latest
    change, payment markers after `payment_ttl_s`. (Redis Cluster: a payment's keys differ in
    hash slot; this store expects one Redis server or a primary with replicas.)"""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "shopml:fraud:",
        payment_ttl_s: int = PAYMENT_TTL_S,
        client=None,
    ):
        if client is None:
            client = redis.Redis.from_url(url)
        self.client = client
        self.prefix = prefix
        self.payment_ttl_s = payment_ttl_s
        self._record = client.register_script(_RECORD)
        self._put = client.register_script(_PUT_IF_ABSENT)
        self._seed = client.register_script(_SEED)
        self._label = client.register_script(_LABEL)

    wants_tiles = True  # fetch only the tiles the windows need: the same count for any history

    def with_timeout(self, seconds: float) -> RedisStateStore:
        """The same store (server, prefix) through its own client with `seconds` timeouts."""
        old = self.client.connection_pool
        kwargs = {**old.connection_kwargs, "socket_timeout": seconds}
        kwargs["socket_connect_timeout"] = seconds
        pool = type(old)(connection_class=old.connection_class, **kwargs)
        client = redis.Redis(connection_pool=pool)
        return RedisStateStore(prefix=self.prefix, payment_ttl_s=self.payment_ttl_s, client=client)

    def read(
        self, keys: Sequence[str], n_levels: int, tiles: Sequence[Sequence[int]] | None = None
    ) -> list[KeyState | None]:
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        fields = None
        if tiles is not None:
            fields = [b"l"]
            for level, ids in enumerate(tiles):
                fields += [b"%d:%d" % (level, tile) for tile in ids]
        for k in keys:
            if fields is None:
                pipe.hgetall(p + k)
            else:
                pipe.hmget(p + k, fields)
            pipe.smembers(f"{p}t:{k}")
            pipe.hgetall(f"{p}f:{k}")
        got = pipe.execute()
        if fields is not None:
            got = [_as_fields(g, fields) if i % 3 == 0 else g for i, g in enumerate(got)]
        return [_decode(*got[3 * j : 3 * j + 3], n_levels) for j in range(len(keys))]

    def record(self, rec: Recording) -> bool:
        p = self.prefix
        tx = rec.transaction_id
        keys = [f"{p}tx:{tx}" if tx is not None else f"{p}tx:"]
        for k in rec.keys:
            keys += [p + k, f"{p}z:{k}", f"{p}t:{k}"]
        t = rec.t_ms
        args = [
            "0" if tx is None else "1",
            f"{rec.customer}\x1f{rec.terminal}\x1f{t}",
            int(rec.ttl_s),
            int(self.payment_ttl_s),
            t,
            repr(float(rec.amount)),
            rec.terminal,
            min(t, now_ms()),
            len(rec.plan),
        ]
        for level, (g, keep) in enumerate(rec.plan):
            tile = t // g
            args += [f"{level}:{tile}", (tile + 1) * g + keep]
        for spike, pair in zip(rec.spikes, rec.pairs, strict=True):
            args += [int(spike), "1" if pair else "0"]
        return bool(self._record(keys=keys, args=args))

    def file_label(
        self,
        keys: Sequence[str],
        label_id: str,
        known_ms: int,
        tx_ms: int,
        is_fraud: bool,
        keep_ms: int | None = None,
    ) -> bool:
        p = self.prefix
        cut = "-inf" if keep_ms is None else min(tx_ms, now_ms()) - keep_ms
        value = f"{int(known_ms)},{int(tx_ms)}"
        args = [label_id, value if is_fraud else "", self.payment_ttl_s, cut]
        return bool(self._label(keys=[f"{p}f:{k}" for k in keys], args=args))

    def lookup_payment(self, transaction_id: str) -> tuple[str, str, int] | None:
        blob = self.client.get(f"{self.prefix}tx:{transaction_id}")
        if blob is None:
            return None
        customer, terminal, t_ms = blob.decode().split("\x1f")
        return customer, terminal, int(t_ms)

    def seed(self, key: str, terminals: Sequence[str], last_ms: int) -> None:
        p = self.prefix
        self._seed(keys=[p + key, f"{p}t:{key}"], args=[int(last_ms), PAYMENT_TTL_S, *terminals])

    def put_if_absent(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        return self._put(keys=[f"{self.prefix}kv:{key}"], args=[value, ttl_ms])

    def get(self, key: str) -> bytes | None:
        return self.client.get(f"{self.prefix}kv:{key}")

    def generation(self) -> str | None:
        g = self.client.get(f"{self.prefix}generation")
        return None if g is None else g.decode()

    def set_generation(self, generation: str) -> None:
        self.client.set(f"{self.prefix}generation", generation)

    def acquire_once(self, name: str, ttl_seconds: float) -> bool:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        return bool(self.client.set(f"{self.prefix}once:{name}", b"1", nx=True, px=ttl_ms))

    def clear(self) -> None:
        """Delete every key under this store's prefix."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])


def _as_fields(values: list, fields: list) -> dict:
    """An HMGET reply as the {field: value} of the fields present."""
    return {f: v for f, v in zip(fields, values, strict=True) if v is not None}


def _decode(tiles: dict, terminals: set, frauds: dict, n_levels: int) -> KeyState | None:
    """A `KeyState` from the replies of HGETALL (tiles), SMEMBERS and HGETALL (frauds)."""
    if not tiles and not terminals and not frauds:
        return None
    st = KeyState(n_levels)
    rows: list[list[tuple[int, bytes]]] = [[] for _ in range(n_levels)]
    try:
        for field, value in tiles.items():
            if field == b"l":
                st.last_ms = int(value)
                continue
            level, _, tile = field.partition(b":")
            rows[int(level)].append((int(tile), value))
        for level, found in zip(st.levels, rows, strict=True):
            found.sort()
            for tile, value in found:
                c, s, m, sp, np_ = value.split(b",")
                level.append(tile, (int(c), float(s), float(m), int(sp), int(np_)))
        st.terminals = {t.decode() for t in terminals}
        for label, value in frauds.items():
            known, tx = value.split(b",")
            st.frauds[label.decode()] = (int(known), int(tx))
    except (ValueError, IndexError) as err:
        raise DataError(f"fraud state: corrupt value in Redis: {err}") from None
    return st


class CircuitBreaker:
    """StateStore wrapper: after a failure, fail fast for `retry_after` s, then try again.

    Every failure is raised as `StoreUnavailable`, so callers catch one type; an outage is
    logged once when it starts and once when the store answers again. Any other attribute is
    the wrapped store's own, called through the breaker."""

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

    def read(
        self, keys: Sequence[str], n_levels: int, tiles: Sequence[Sequence[int]] | None = None
    ) -> list[KeyState | None]:
        if tiles is None:
            return self._call(self.store.read, keys, n_levels)
        return self._call(self.store.read, keys, n_levels, tiles)

    def record(self, rec: Recording) -> bool:
        return self._call(self.store.record, rec)

    def __getattr__(self, name: str):
        """The wrapped store's other methods, called through the breaker."""
        fn = getattr(self.store, name)
        if not callable(fn):
            return fn
        return lambda *args, **kwargs: self._call(lambda: fn(*args, **kwargs))


def warm_up_store(store) -> StateStore:
    """The store a warm-up writes through: for Redis its own client with `WARM_TIMEOUT_S`
    timeouts and no breaker (a replay under checkout load must not fail on the 50 ms
    checkout timeout); an in-process store as it is."""
    inner = store.store if isinstance(store, CircuitBreaker) else store
    if isinstance(inner, RedisStateStore):
        return inner.with_timeout(WARM_TIMEOUT_S)
    return inner


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
