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

# a fast route: async handler(body: bytes, ASGI headers) -> (status, json bytes)
Handler = Callable[[bytes, list], Awaitable[tuple[int, bytes]]]
_JSON = [(b"content-type", b"application/json")]
_UNEXPECTED = b'{"error":"unexpected error; see the server log"}'


class Unavailable(ShopmlError):
    """The service cannot answer this route (e.g. its model was not built): a 503 with why."""


class Unauthorized(ShopmlError):
    """The request lacks the credentials this route needs (e.g. a bearer token): a 401."""


class Forbidden(ShopmlError):
    """This route is switched off on this server (e.g. no token configured): a 403."""


class Conflict(ShopmlError):
    """The request contradicts an earlier one with the same id (a retried payment whose body
    differs): a 409 naming the field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


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
    (Unauthorized, 401, lambda exc: {"error": str(exc)}),
    (Forbidden, 403, lambda exc: {"error": str(exc)}),
    (Conflict, 409, lambda exc: {"error": str(exc), "field": exc.field}),
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
    """A declared endpoint: its route, request type and handler `handler(service, request)`
    (`handler(service, request, headers)` when it reads the request headers)."""

    route: str
    request: type[BaseModel]
    handler: Callable[..., dict]
    headers: bool = False

    def fast_handler(self, service) -> Handler:
        """The fast route of this endpoint on a started service: validate, call, serialise."""
        validate = self.request.model_validate_json
        answer = self.handler.__get__(service)
        if self.headers:

            async def handle_with_headers(body: bytes, headers=()) -> tuple[int, bytes]:
                return 200, to_json(answer(validate(body), asgi_headers(headers)))

            return handle_with_headers

        async def handle(body: bytes, headers=()) -> tuple[int, bytes]:
            return 200, to_json(answer(validate(body)))

        return handle


def asgi_headers(raw) -> dict[str, str]:
    """ASGI `[(b"name", b"value")]` headers as `{"name": "value"}` (names lower case)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def endpoint(route: str, answers: type[BaseModel], headers: bool = False):
    """Declare `method(self, request: RequestSchema, /) -> dict` as the endpoint of `route`
    (with `headers=True`: `method(self, request, /, headers: dict[str, str])`, names lower case).

    Returns the `@bentoml.api` method (so BentoML documents it with `answers` as the response
    schema and serves it when the fast path is off) and records it for `FastRoutes.serve`.
    """

    def declare(method: Callable) -> Callable:
        first = list(inspect.signature(method).parameters)[1]  # the one after self
        request = typing.get_type_hints(method)[first]
        declared = Endpoint(route, request, method, headers)

        @functools.wraps(method)
        async def api(self, request, /, ctx=None):
            try:
                extra = (dict(ctx.request.headers),) if headers else ()
                status, body = 200, to_json(method(self, request, *extra))
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a crash
                status, body = error_response(exc)
            return Response(body, status_code=status, media_type="application/json")

        signature = inspect.signature(method)
        params = list(signature.parameters.values())[:2]
        if headers:  # BentoML passes its request context as `ctx`
            params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY))
            params[-1] = params[-1].replace(annotation=bentoml.Context)
        api.__signature__ = signature.replace(parameters=params, return_annotation=answers)
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
            status, payload = await handler(body, scope.get("headers", ()))
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
