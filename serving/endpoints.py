"""Each endpoint declared once: `@endpoint(route, answers=Schema)` on a service method.

The decorated method (validated request in, plain dict out) is the one handler of its route:
`@endpoint` makes it the `@bentoml.api` method (OpenAPI description from its request type and
`answers`), and `FastRoutes` answers the same route with the same method, skipping BentoML's
generic IO layer (request descriptors, context, background tasks, streamed response), which
costs about as much again as a whole `/livez` round trip. Both paths serialise the answer the
same way and map errors with one table (`error_response`); BentoML's Prometheus and tracing
middlewares still wrap the fast path. `SHOPML_FASTPATH=0` lets BentoML's IO layer serve every
route (it then also validates the request, with its own 400 body).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import bentoml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json  # ~6x faster than json.dumps for an answer of 20 items
from starlette.responses import Response

from shopml.errors import ShopmlError, UnknownEntity
from shopml.log import get_logger

log = get_logger("serving")

# a fast route: async handler(body: bytes) -> (status, json bytes)
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
_JSON = [(b"content-type", b"application/json")]
_UNEXPECTED = b'{"error":"unexpected error; see the server log"}'


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


# the one error map: exception type -> (status, body); first match wins, anything else is a 500
ERRORS: tuple[tuple[type[Exception], int, Callable[[Exception], dict]], ...] = (
    (ValidationError, 400, validation_error_body),
    (Unavailable, 503, lambda exc: {"error": str(exc)}),
    (UnknownEntity, 404, lambda exc: {"error": str(exc), "kind": exc.kind, "ids": exc.ids}),
    (ShopmlError, 422, lambda exc: {"error": str(exc)}),
    (ValueError, 422, lambda exc: {"error": str(exc)}),
)


def error_response(exc: Exception) -> tuple[int, bytes]:
    """Status and JSON body of an error: named errors are 4xx/503 saying what was wrong;
    anything else is a logged 500 without the payload."""
    for kind, status, body in ERRORS:
        if isinstance(exc, kind):
            return status, json.dumps(body(exc)).encode()
    log.error("unexpected error in an endpoint", extra={"error_type": type(exc).__name__})
    return 500, _UNEXPECTED


@dataclass(frozen=True)
class Endpoint:
    """A declared endpoint: its route, request type and handler `handler(service, request)`."""

    route: str
    request: type[BaseModel]
    handler: Callable[[object, BaseModel], dict]

    def fast_handler(self, service) -> Handler:
        """The fast route of this endpoint on a started service: validate, call, serialise."""
        validate = self.request.model_validate_json
        answer = self.handler.__get__(service)

        async def handle(body: bytes) -> tuple[int, bytes]:
            return 200, to_json(answer(validate(body)))

        return handle


def endpoint(route: str, answers: type[BaseModel]):
    """Declare `method(self, request: RequestSchema, /) -> dict` as the endpoint of `route`.

    Returns the `@bentoml.api` method (so BentoML documents it with `answers` as the response
    schema and serves it when the fast path is off) and records it for `FastRoutes.serve`.
    """

    def declare(method: Callable) -> Callable:
        request = next(
            hint
            for name, hint in typing.get_type_hints(method).items()
            if name not in ("self", "return")
        )
        declared = Endpoint(route, request, method)

        @functools.wraps(method)
        async def api(self, request, /):
            try:
                status, body = 200, to_json(method(self, request))
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a crash
                status, body = error_response(exc)
            return Response(body, status_code=status, media_type="application/json")

        signature = inspect.signature(method)
        api.__signature__ = signature.replace(return_annotation=answers)
        api.endpoint = declared
        return bentoml.api(route=route)(api)

    return declare


class FastRoutes:
    """ASGI middleware: POST to a served endpoint is answered directly; the rest passes on.

    Subclass it once per service (each has its own `routes`)."""

    routes: dict[str, Handler] = {}

    def __init__(self, app) -> None:
        self.app = app

    @classmethod
    def serve(cls, service) -> None:
        """Answer every `@endpoint` of a started `service` here (unless SHOPML_FASTPATH=0)."""
        if not enabled():
            return
        for attr in vars(type(service)).values():
            declared = getattr(getattr(attr, "func", None), "endpoint", None)
            if isinstance(declared, Endpoint):
                cls.routes[declared.route] = declared.fast_handler(service)

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
