"""`POST /feedback` of the storefront: validated events into the durable feedback store.

The request's events become `features.feedback.FeedbackEvent`s and go to the service's one
`GroupCommitter`; the handler awaits the commit of the group that holds them without blocking
the event loop (other requests are answered meanwhile, and queue into the next group). The
answer comes only after that commit, so an accepted event is in the store whatever happens to
the process next; a store that is down is a 503 and nothing of the batch was written.
"""

from __future__ import annotations

import asyncio

from features.feedback import FeedbackEvent, FeedbackStore, FeedbackWrite, GroupCommitter
from serving import metrics
from serving.endpoints import Unavailable
from serving.schemas import FeedbackRequest
from shopml.errors import ShopmlError


class FeedbackIntake:
    """The feedback store behind one writer thread, answered through asyncio futures."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.committer = GroupCommitter(store)

    async def submit(self, request: FeedbackRequest) -> dict:
        """Store the request's events (all or nothing); the answer once they are committed."""
        events = [
            FeedbackEvent.of(
                e.request_id,
                e.event,
                e.product_id,
                customer_id=e.customer_id,
                position=e.position,
                quantity=e.quantity,
                event_id=e.event_id,
            )
            for e in request.events
        ]
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self.committer.submit(
            events, lambda result: loop.call_soon_threadsafe(_settle, done, result)
        )
        result = await done
        if isinstance(result, ShopmlError):
            metrics.feedback_events("failed", len(events))
            raise Unavailable(f"{result}; nothing of this batch was stored, send it again")
        metrics.feedback_events("stored", result.stored)
        metrics.feedback_events("duplicate", result.duplicates)
        return {
            "accepted": result.accepted,
            "stored": result.stored,
            "duplicates": result.duplicates,
        }

    def close(self) -> None:
        self.committer.close()
        self.store.dispose()


def _settle(future: asyncio.Future, result: FeedbackWrite | ShopmlError) -> None:
    if not future.done():  # the client may have gone (cancelled): the events are stored anyway
        future.set_result(result)
