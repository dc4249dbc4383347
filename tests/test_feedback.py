"""Recommendation feedback (issue 15): the durable store, its group commit, `POST /feedback`'s
request type, durability across a killed process, live click-through and conversion, and the
hook that feeds the next training's interactions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError
from test_loaders import postgres_url  # noqa: F401 - the real PostgreSQL fixture

from features.feedback import (
    FeedbackEvent,
    FeedbackStore,
    FeedbackStoreError,
    GroupCommitter,
    feedback_events,
    new_request_id,
    parse_request_id,
    request_id_suffix,
    with_feedback,
)
from serving.schemas import FeedbackRequest

REPO = Path(__file__).resolve().parents[1]
CHAMPION = request_id_suffix("recommend", "champion", "shopml-recommender/1")
CHALLENGER = request_id_suffix("recommend", "challenger", "shopml-recommender/2")


def event(request_id: str, kind: str = "impression", product: str = "P1", **kw) -> FeedbackEvent:
    kw.setdefault("position", 1 if kind == "impression" else None)
    return FeedbackEvent.of(request_id, kind, product, customer_id=kw.pop("customer", "C1"), **kw)


# ------------------------------------------------------------------------------ request ids
def test_a_request_id_says_endpoint_variant_and_version():
    rid = new_request_id(CHALLENGER)
    assert parse_request_id(rid) == ("recommend", "challenger", "shopml-recommender/2")
    assert new_request_id(CHALLENGER) != rid
    assert parse_request_id("made-up") is None
    with pytest.raises(ValueError, match="not one of a shopml answer"):
        FeedbackEvent.of("made-up", "click", "P1")


# ------------------------------------------------------------------------------ the request
def test_the_request_names_each_bad_field():
    rid = new_request_id(CHAMPION)
    ok = {"event": "impression", "request_id": rid, "product_id": "P1", "position": 3}
    FeedbackRequest.model_validate({"events": [ok]})
    cases = {
        "events.0.event": {**ok, "event": "like"},
        "events.0.request_id": {**ok, "request_id": "abc"},
        "events.0.position": {**ok, "position": 0},
        "events.0.quantity": {**ok, "quantity": 0},
        "events.0.surprise": {**ok, "surprise": 1},
        "events.0": {k: v for k, v in ok.items() if k != "position"},  # impression: position
    }
    for field, bad in cases.items():
        with pytest.raises(ValidationError) as err:
            FeedbackRequest.model_validate({"events": [bad]})
        locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
        assert field in locs, (field, locs)
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate({"events": []})


# ------------------------------------------------------------------------------ the store
def _store_semantics(store: FeedbackStore) -> None:
    rid = new_request_id(CHAMPION)
    first = store.write([event(rid, event_id="e1"), event(rid, "click", event_id="e2")])
    assert (first.stored, first.duplicates) == (2, 0)
    again = store.write([event(rid, event_id="e1"), event(rid, "purchase", event_id="e3")] * 2)
    assert (again.stored, again.duplicates) == (1, 3)  # e1 before, e3 twice in the batch
    anonymous = store.write([event(rid, customer=None), event(rid, customer=None)])
    assert anonymous.stored == 2  # no client id: each is its own event
    assert len(store) == 5
    # all or nothing: a row the database refuses (NULL quantity) rolls the whole batch back
    broken = FeedbackEvent(**{**event(rid, event_id="x9").__dict__, "quantity": None})
    with pytest.raises(FeedbackStoreError, match="feedback store"):
        store.write([event(rid, event_id="x1"), broken])
    assert len(store) == 5 and not store.stored_ids(["x1", "x9"])
    df = store.read()
    assert set(df["event_id"]) >= {"e1", "e2", "e3"} and len(df) == 5
    row = df.set_index("event_id").loc["e2"]
    assert (row["event"], row["variant"], row["model_version"]) == (
        "click",
        "champion",
        "shopml-recommender/1",
    )
    assert pd.isna(row["position"]) and row["customer_id"] == "C1"


def test_store_semantics_sqlite(tmp_path):
    _store_semantics(FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}"))


def test_store_semantics_postgresql(postgres_url):  # noqa: F811
    store = FeedbackStore(postgres_url)
    store._ensure_table()
    with store.engine.begin() as conn:  # the fixture's database is shared within the module
        conn.exec_driver_sql("DELETE FROM recommendation_feedback")
    _store_semantics(store)
    store.dispose()


def test_a_store_that_is_down_is_an_error_naming_it_without_its_password():
    store = FeedbackStore("postgresql+psycopg://shop:s3cret@127.0.0.1:9/nowhere")
    with pytest.raises(FeedbackStoreError) as err:
        store.write([event(new_request_id(CHAMPION))])
    assert "s3cret" not in str(err.value) and "127.0.0.1:9" in str(err.value)


# ------------------------------------------------------------------------------ group commit
def test_concurrent_batches_share_commits_and_each_hears_of_its_own(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    commits = []
    real = store.write_batches

    def counted(batches):
        commits.append(len(batches))
        return real(batches)

    store.write_batches = counted
    committer = GroupCommitter(store)
    results, lock = {}, threading.Lock()
    done = threading.Event()

    def submit(i: int) -> None:
        rid = new_request_id(CHAMPION)
        batch = [event(rid, event_id=f"b{i}-{j}", position=j + 1) for j in range(5)]
        if i % 10 == 0:
            batch.append(event(rid, event_id="shared"))  # the same id in several requests

        def answered(result, i=i):
            with lock:
                results[i] = result
                if len(results) == 200:
                    done.set()

        committer.submit(batch, answered)

    threads = [
        threading.Thread(target=lambda t=t: [submit(t * 50 + i) for i in range(50)])
        for t in range(4)
    ]
    for t in threads:
        t.start()
    assert done.wait(30)
    committer.close()
    assert sum(commits) == 200 and len(commits) < 200  # batches were grouped
    assert sum(r.stored for r in results.values()) == len(store) == 200 * 5 + 1
    assert sum(r.duplicates for r in results.values()) == 19
    assert all(r.accepted == (6 if i % 10 == 0 else 5) for i, r in results.items())


def test_the_writer_survives_a_callback_that_fails(tmp_path):
    committer = GroupCommitter(FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}"))
    got, done = [], threading.Event()

    def broken(_result):
        raise RuntimeError("event loop is closed")

    committer.submit([event(new_request_id(CHAMPION))], broken)
    committer.submit([event(new_request_id(CHAMPION))], lambda r: (got.append(r), done.set()))
    assert done.wait(30) and got[0].stored == 1
    committer.close()


def test_a_failed_group_commit_tells_every_batch(tmp_path):
    store = FeedbackStore("postgresql+psycopg://shop@127.0.0.1:9/nowhere")
    committer = GroupCommitter(store)
    got, done = [], threading.Event()
    committer.submit([event(new_request_id(CHAMPION))], lambda r: (got.append(r), done.set()))
    assert done.wait(30)
    committer.close()
    assert isinstance(got[0], FeedbackStoreError)


# --------------------------------------------------------------------- durability across a kill
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from features.feedback import FeedbackStore, new_request_id, request_id_suffix
    from serving.feedback import FeedbackIntake
    from serving.schemas import FeedbackRequest

    SUFFIX = request_id_suffix("recommend", "champion", "shopml-recommender/1")

    async def client(intake, c):
        i = 0
        while True:
            rid = new_request_id(SUFFIX)
            ids = [f"c{c}-{i}-{j}" for j in range(10)]
            body = {"events": [{"event": "impression", "request_id": rid, "product_id": "P1",
                                "position": j + 1, "event_id": e} for j, e in enumerate(ids)]}
            answer = await intake.submit(FeedbackRequest.model_validate(body))
            assert answer["accepted"] == 10
            sys.stdout.write(" ".join(ids) + "\\n")
            sys.stdout.flush()
            i += 1

    async def main():
        intake = FeedbackIntake(FeedbackStore(sys.argv[1]))
        await asyncio.gather(*(client(intake, c) for c in range(8)))

    asyncio.run(main())
    """
)


def test_every_accepted_event_is_in_the_store_after_the_process_is_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, env=env, cwd=REPO, text=True
    )
    accepted: list[str] = []
    try:
        for line in child.stdout:
            accepted += line.split()
            if len(accepted) >= 1000:
                break
        child.send_signal(signal.SIGKILL)  # mid-stream: batches are queued and committing
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(accepted) >= 1000, child.returncode
    store = FeedbackStore(url)  # "after the restart": a new process's view of the file
    stored = store.stored_ids(accepted)
    assert len(stored) == len(accepted)  # 0 lost
    everything = set(store.read()["event_id"])
    batches = {}
    for e in everything:
        batches.setdefault(e.rsplit("-", 1)[0], set()).add(e)
    assert all(len(ids) == 10 for ids in batches.values())  # no half-written batch


def test_the_intake_answers_503_when_the_store_is_down():
    from serving.endpoints import Unavailable, error_response
    from serving.feedback import FeedbackIntake

    intake = FeedbackIntake(FeedbackStore("postgresql+psycopg://shop:pw@127.0.0.1:9/nowhere"))
    rid = new_request_id(CHAMPION)
    body = {"events": [{"event": "click", "request_id": rid, "product_id": "P1"}]}
    with pytest.raises(Unavailable) as err:
        asyncio.run(intake.submit(FeedbackRequest.model_validate(body)))
    status, payload = error_response(err.value)
    assert status == 503 and "nothing of this batch was stored" in json.loads(payload)["error"]
    intake.close()


# ------------------------------------------------------------------------------ training hook
def test_feedback_becomes_interaction_events_for_the_next_training(tmp_path, monkeypatch):
    from features.interactions import InteractionConfig

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(url)
    rid = new_request_id(CHAMPION)
    store.write(
        [
            event(rid, "impression", "P1"),
            event(rid, "click", "P1"),
            event(rid, "add_to_cart", "P2", quantity=2),
            event(rid, "purchase", "P2", quantity=2),
            event(rid, "click", "P3", customer=None),  # a visitor: not a customer to train on
        ]
    )
    got = feedback_events(store)
    assert sorted(zip(got["product_id"], got["event"], strict=True)) == [
        ("P1", "view"),
        ("P2", "add_to_cart"),
        ("P2", "purchase"),
    ]
    assert sorted(feedback_events(store, purchases=False)["event"]) == ["add_to_cart", "view"]
    monkeypatch.setenv("SHOPML_FEEDBACK_URL", url)
    train = pd.DataFrame(
        {
            "customer_id": ["C2"],
            "product_id": ["P9"],
            "timestamp": [pd.Timestamp("2026-01-01")],
            "event": ["view"],
            "quantity": [1],
        }
    )
    fed = with_feedback(train, None, purchases=True)
    assert len(fed) == 4 and list(fed.columns) == list(train.columns)
    assert set(fed.loc[fed["customer_id"] == "C1", "product_id"]) == {"P1", "P2"}
    assert len(with_feedback(train, None, purchases=False)) == 3
    # a temporal split's test starts at the cut-off: later feedback never trains
    assert len(with_feedback(train, pd.Timestamp("2020-01-01"), purchases=True)) == 1
    assert InteractionConfig(include_feedback=True).include_feedback
