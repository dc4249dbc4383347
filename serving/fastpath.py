"""A lean ASGI path for the hot endpoints (`/score`, `/recommend`), inside the BentoML server.

Why: BentoML's generic IO layer (request descriptors, context, background tasks, streamed
response) costs about as much again as the whole `/livez` round trip, which is more than a
checkout can spare. This middleware answers the same routes with the same pydantic request
models and the same service methods the `@bentoml.api` declarations use (those still give the
OpenAPI description and serve every other route), so behaviour is identical and only the
plumbing is shorter. BentoML's Prometheus and tracing middlewares still wrap it.
Set `SHOPML_FASTPATH=0` to let BentoML's own IO layer serve every route instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from pydantic_core import to_json  # ~6x faster than json.dumps for an answer of 20 items

from shopml.errors import ShopmlError, UnknownEntity
from shopml.log import get_logger

log = get_logger("serving")

# route -> async handler(body: bytes) -> (status, json bytes); filled by the service at start-up
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
_JSON = [(b"content-type", b"application/json")]


class Unavailable(ShopmlError):
    """The service cannot answer this route (e.g. its model was not built): a 503 with why."""


def enabled() -> bool:
    return os.environ.get("SHOPML_FASTPATH", "1") not in ("0", "false", "no")


def validation_error_body(exc: ValidationError) -> dict:
    """The same 400 body BentoML gives, plus a one-line message naming each bad field."""
    details = exc.errors(include_context=False, include_input=False, include_url=False)
    fields = "; ".join(
        f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details
    )
    return {"error": f"invalid request: {fields}", "detail": details}


def error_response(exc: Exception) -> tuple[int, bytes]:
    """Map shopml's named errors to 4xx; anything else is a logged 500 without the payload."""
    if isinstance(exc, ValidationError):
        return 400, json.dumps(validation_error_body(exc)).encode()
    if isinstance(exc, Unavailable):
        return 503, json.dumps({"error": str(exc)}).encode()
    if isinstance(exc, UnknownEntity):
        return 404, json.dumps({"error": str(exc), "kind": exc.kind, "ids": exc.ids}).encode()
    if isinstance(exc, ShopmlError | ValueError):
        return 422, json.dumps({"error": str(exc)}).encode()
    log.error("unexpected error in a hot endpoint", extra={"error_type": type(exc).__name__})
    return 500, b'{"error":"unexpected error; see the server log"}'


def json_handler(request_model, answer: Callable) -> Handler:
    """A route handler: validate the body as `request_model`, answer with `answer(req)` as JSON."""
    validate = request_model.model_validate_json

    async def handle(body: bytes) -> tuple[int, bytes]:
        return 200, to_json(answer(validate(body)))

    return handle


class FastRoutes:
    """ASGI middleware: POST to a registered route is answered directly; the rest passes on."""

    routes: dict[str, Handler] = {}

    def __init__(self, app) -> None:
        self.app = app

    @classmethod
    def register(cls, path: str, handler: Handler) -> None:
        if enabled():
            cls.routes[path] = handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        handler = self.routes.get(scope["path"])
        if handler is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        try:
            status, payload = await handler(body)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a crash
            status, payload = error_response(exc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
