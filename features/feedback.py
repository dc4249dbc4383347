"""The durable store of recommendation feedback: impressions, clicks, add-to-carts, purchases.

The storefront posts what happened to the lists it was shown (`POST /feedback`); each event
names the `request_id` of the `/recommend` or `/similar` answer that showed the product, which
says the endpoint, the A/B variant and the model version that made the list
(`request_id_for` / `parse_request_id`). Events live in one table of a real database
(SQLAlchemy: a SQLite file under SHOPML_HOME by default, the PostgreSQL URL of
`SHOPML_FEEDBACK_URL` in production), one row per event id. A client that sends an `event_id`
may retry: an id already stored is a no-op counted as a duplicate, so nothing is counted
twice. A batch is written in one transaction (all or nothing).

`GroupCommitter` is the write path of the service: batches from concurrent requests queue up
while the previous commit runs and go to the database together, in one transaction, and each
request is told only once its batch has committed ("accepted" means stored). Reading is for
the live metrics (`training.live_recommender`) and for the next training's interactions
(`feedback_events`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from shopml.clock import from_epoch_ms, now_ms
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

EVENTS = ("impression", "click", "add_to_cart", "purchase")
VARIANTS = ("champion", "challenger")
ENDPOINTS = ("recommend", "similar")
COLUMNS = (
    "event_id",
    "request_id",
    "event",
    "customer_id",
    "product_id",
    "position",
    "quantity",
    "endpoint",
    "variant",
    "model_version",
    "received_at",
)
_CHUNK = 500  # ids per IN (...) query: below SQLite's bound-parameter limit
# <16 hex>.<endpoint>.<variant>.<model version>, e.g. 3f9a...c1.recommend.champion.shopml-recommender/3
REQUEST_ID = re.compile(
    r"^[0-9a-f]{16}\.(recommend|similar)\.(champion|challenger)\.([A-Za-z0-9_\-/?]{1,100})$"
)

_META = sa.MetaData()
FEEDBACK = sa.Table(
    "recommendation_feedback",
    _META,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("request_id", sa.String(160), nullable=False, index=True),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=True),  # None: an anonymous visitor
    sa.Column("product_id", sa.String(128), nullable=False),
    sa.Column("position", sa.Integer, nullable=True),  # 1-based rank in the list shown
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("endpoint", sa.String(16), nullable=False),
    sa.Column("variant", sa.String(16), nullable=False),
    sa.Column("model_version", sa.String(128), nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),  # naive UTC
)


class FeedbackStoreError(ShopmlError):
    """The feedback store cannot be reached or written (the message hides any password)."""


def request_id_suffix(endpoint: str, variant: str, model_version: str) -> str:
    """The fixed part of the request ids of one endpoint, variant and model version (computed
    once per service; each answer adds 16 random hex digits in front)."""
    suffix = f".{endpoint}.{variant}.{model_version}"
    if not REQUEST_ID.match("0" * 16 + suffix):
        raise ValueError(
            f"cannot make request ids for {endpoint!r}, {variant!r}, {model_version!r}"
        )
    return suffix


def new_request_id(suffix: str) -> str:
    """A fresh request id: 64 random bits and the suffix of `request_id_suffix`."""
    return os.urandom(8).hex() + suffix


def parse_request_id(request_id: str) -> tuple[str, str, str] | None:
    """(endpoint, variant, model_version) of a request id this service made, else None."""
    found = REQUEST_ID.match(request_id)
    return (found.group(1), found.group(2), found.group(3)) if found else None


@dataclass(frozen=True)
class FeedbackEvent:
    """One validated event, as stored (the origin fields come from its request id)."""

    event_id: str
    request_id: str
    event: str
    customer_id: str | None
    product_id: str
    position: int | None
    quantity: int
    endpoint: str
    variant: str
    model_version: str

    @classmethod
    def of(
        cls,
        request_id: str,
        event: str,
        product_id: str,
        customer_id: str | None = None,
        position: int | None = None,
        quantity: int = 1,
        event_id: str | None = None,
    ) -> FeedbackEvent:
        """An event from its fields; ValueError naming a request id this service never made."""
        origin = parse_request_id(request_id)
        if origin is None:
            raise ValueError(f"request_id {request_id[:40]!r} is not one of a shopml answer")
        if event not in EVENTS:
            raise ValueError(f"event {event!r}: expected one of {', '.join(EVENTS)}")
        return cls(
            event_id or "g-" + os.urandom(12).hex(),
            request_id,
            event,
            customer_id,
            product_id,
            position,
            quantity,
            *origin,
        )


@dataclass
class FeedbackWrite:
    """What one batch did: events newly stored, and ids stored before (or twice in the batch)."""

    stored: int = 0
    duplicates: int = 0

    @property
    def accepted(self) -> int:
        return self.stored + self.duplicates


class FeedbackStore:
    """The feedback table behind a SQLAlchemy engine, created on first use (a service starts,
    and recommends, while the database is down; only /feedback answers 503 then)."""

    def __init__(self, url: str) -> None:
        self.url = sa.engine.make_url(url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        if self.sqlite and self.url.database:
            Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # a SQLite file needs no liveness ping per checkout (it costs a query per commit)
        self.engine = sa.create_engine(self.url, pool_pre_ping=not self.sqlite)
        if self.sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_durable)
        insert = (sqlite.insert if self.sqlite else postgresql.insert)(FEEDBACK)
        self._insert_new = insert.on_conflict_do_nothing(index_elements=["event_id"]).returning(
            FEEDBACK.c.event_id
        )
        self._created = False

    @classmethod
    def open(cls, settings: Settings | None = None) -> FeedbackStore:
        """The store named by the settings (`feedback_store_url`)."""
        return cls((settings or load_settings()).feedback_store_url)

    @property
    def where(self) -> str:
        """The store's URL without its password, for messages."""
        return self.url.render_as_string(hide_password=True)

    def _error(self, err: SQLAlchemyError) -> FeedbackStoreError:
        detail = str(getattr(err, "orig", None) or type(err).__name__).splitlines()[0]
        return FeedbackStoreError(f"feedback store {self.where}: {detail}")

    def _ensure_table(self) -> None:
        if not self._created:
            _META.create_all(self.engine)
            self._created = True

    def write(self, events: Iterable[FeedbackEvent]) -> FeedbackWrite:
        """Store one batch in one transaction (all or nothing); see the module doc."""
        return self.write_batches([list(events)])[0]

    def write_batches(self, batches: Sequence[Sequence[FeedbackEvent]]) -> list[FeedbackWrite]:
        """Store several batches in ONE transaction (all or nothing): what each batch did.

        An event id seen before (stored, or earlier in these batches) is a duplicate and is not
        written again: the database skips an id it holds (`ON CONFLICT DO NOTHING`, also one
        another writer adds at the same moment) and returns the ids it inserted, so an event is
        never stored twice and each batch learns what it added in one round trip.
        """
        try:
            return self._write(batches)
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def _write(self, batches: Sequence[Sequence[FeedbackEvent]]) -> list[FeedbackWrite]:
        out = [FeedbackWrite() for _ in batches]
        if not any(batches):
            return out
        self._ensure_table()
        received = from_epoch_ms(now_ms())
        rows: list[dict] = []
        owners: list[int] = []  # the batch of each row
        seen: set[str] = set()
        for b, batch in enumerate(batches):
            for e in batch:
                if e.event_id in seen:  # twice in these batches: the first one counts
                    out[b].duplicates += 1
                    continue
                seen.add(e.event_id)
                rows.append(_row(e, received))
                owners.append(b)
        with self.engine.begin() as conn:  # one round trip: the ids the database inserted
            inserted = set(conn.execute(self._insert_new, rows).scalars())
        for row, b in zip(rows, owners, strict=True):
            if row["event_id"] in inserted:
                out[b].stored += 1
            else:  # stored before (or by another writer just now)
                out[b].duplicates += 1
        return out

    @staticmethod
    def _stored_ids(conn, ids: list[str]) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), _CHUNK):
            q = sa.select(FEEDBACK.c.event_id).where(
                FEEDBACK.c.event_id.in_(unique[i : i + _CHUNK])
            )
            found.update(r[0] for r in conn.execute(q))
        return found

    def read(self, since: datetime | None = None) -> pd.DataFrame:
        """Every stored event (received at or after `since`, naive UTC), columns `COLUMNS`."""

        def _read() -> pd.DataFrame:
            self._ensure_table()
            q = sa.select(*(FEEDBACK.c[c] for c in COLUMNS))
            if since is not None:
                q = q.where(FEEDBACK.c.received_at >= since)
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
            return pd.DataFrame(rows, columns=list(COLUMNS))

        try:
            df = _read()
        except SQLAlchemyError as err:
            raise self._error(err) from None
        df["position"] = df["position"].astype("Int64")
        df["quantity"] = df["quantity"].astype("int64")
        df["received_at"] = pd.to_datetime(df["received_at"]).astype("datetime64[ns]")
        return df

    def stored_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` the store holds."""
        try:
            self._ensure_table()
            with self.engine.connect() as conn:
                return self._stored_ids(conn, list(ids))
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def __len__(self) -> int:
        try:
            self._ensure_table()
            with self.engine.connect() as conn:
                q = sa.select(sa.func.count()).select_from(FEEDBACK)
                return int(conn.execute(q).scalar_one())
        except SQLAlchemyError as err:
            raise self._error(err) from None

    def dispose(self) -> None:
        self.engine.dispose()


def _row(e: FeedbackEvent, received: datetime) -> dict:
    return {
        "event_id": e.event_id,
        "request_id": e.request_id,
        "event": e.event,
        "customer_id": e.customer_id,
        "product_id": e.product_id,
        "position": e.position,
        "quantity": e.quantity,
        "endpoint": e.endpoint,
        "variant": e.variant,
        "model_version": e.model_version,
        "received_at": received,
    }


def _sqlite_durable(dbapi_connection, _record) -> None:
    """WAL (readers never block the writer) with a sync at every commit: a committed event
    survives a crash of the process and of the machine."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


Done = Callable[[FeedbackWrite | ShopmlError], None]


class GroupCommitter:
    """A writer thread that commits queued batches together (group commit).

    `submit(events, done)` queues a batch; the thread takes every batch waiting (up to
    `max_events`), writes them in one transaction and calls each batch's `done` with its
    FeedbackWrite, or with the FeedbackStoreError when the transaction failed (nothing of
    the group was written). No timer: a group is whatever queued while the previous commit ran,
    so one request alone waits one commit and many requests share one.
    """

    def __init__(self, store: FeedbackStore, max_events: int = 20_000) -> None:
        self.store = store
        self.max_events = max_events
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[FeedbackEvent], done: Done) -> None:
        self._queue.put((events, done))

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, size, stop = [first], len(first[0]), False
            while size < self.max_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
                size += len(item[0])
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list) -> None:
        try:
            results: list = self.store.write_batches([events for events, _ in group])
        except ShopmlError as err:
            results = [err] * len(group)
        except Exception as err:  # noqa: BLE001 - a bug must not kill the writer thread
            results = [FeedbackStoreError(f"feedback store write failed: {type(err).__name__}")]
            results *= len(group)
        for (_, done), result in zip(group, results, strict=True):
            # a request whose event loop is gone (shutdown) must not stop the writer
            with contextlib.suppress(Exception):
                done(result)


# feedback event -> the interaction event it is for training (impressions are not interest)
TRAINING_EVENTS = {"click": "view", "add_to_cart": "add_to_cart", "purchase": "purchase"}


def feedback_events(store: FeedbackStore, purchases: bool = True) -> pd.DataFrame:
    """Stored feedback as interaction events (customer_id, product_id, timestamp, event,
    quantity) for the next training: clicks as views, add-to-carts, and purchases unless
    `purchases` is False (when the order lines already hold them); anonymous events and
    impressions left out."""
    df = store.read()
    keep = df["customer_id"].notna() & df["event"].isin(list(TRAINING_EVENTS))
    if not purchases:
        keep &= df["event"] != "purchase"
    df = df[keep]
    return pd.DataFrame(
        {
            "customer_id": df["customer_id"].astype(str).to_numpy(),
            "product_id": df["product_id"].astype(str).to_numpy(),
            "timestamp": df["received_at"].to_numpy(dtype="datetime64[ns]"),
            "event": df["event"].map(TRAINING_EVENTS).to_numpy(),
            "quantity": df["quantity"].to_numpy(dtype="int64"),
        }
    )


def with_feedback(
    train: pd.DataFrame,
    cutoff: pd.Timestamp | None,
    purchases: bool,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """A training part of interaction events with the stored feedback appended
    (`InteractionConfig.include_feedback`): only events before `cutoff` (a temporal split's
    test starts there: later feedback would leak the test into training), purchases only when
    `purchases` (not when the order lines already hold every purchase)."""
    store = FeedbackStore.open(settings)
    try:
        extra = feedback_events(store, purchases=purchases)
    finally:
        store.dispose()
    if cutoff is not None:
        extra = extra[extra["timestamp"] < pd.Timestamp(cutoff)]
    if extra.empty:
        return train
    return pd.concat([train, extra[list(train.columns)]], ignore_index=True)
