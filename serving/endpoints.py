"""Each endpoint declared once: `@endpoint(route, answers=Schema)` on a service method.

The decorated method (validated request in, plain dict out) is the one handler of its route:
`@endpoint` makes it the `@bentoml.api` method, and `FastRoutes` answers the same route with the
same method, skipping BentoML's generic IO layer (request descriptors, context, background
tasks, streamed response), which costs about as much again as a whole `/livez` round trip.

One request path, one contract: `FastRoutes` checks every POST to an endpoint on both paths,
in this order: the bearer token (401), the `Content-Type` (415, JSON only), the body size while
it streams in (413, the rest is never read), the body against the request type (400 naming each
field); then the fast path answers, or with `SHOPML_FASTPATH=0` the body is handed on to
BentoML's IO layer. Both paths serialise the answer the same way and map errors with one table
(`ERRORS`); `/docs.json` is BentoML's document rewritten by `serving.openapi`.
`FastRoutes.install` also keeps the fast routes out of BentoML's request tracing while it exports
no traces (it records spans nobody reads, ~0.3 ms of a `/score`).
"""

from __future__ import annotations

import functools
import hmac
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import bentoml
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json  # ~6x faster than json.dumps for an answer of 20 items
from starlette.responses import Response

from serving.openapi import openapi_document
from shopml.errors import ConfigError, ShopmlError, UnknownEntity
from shopml.log import get_logger
from shopml.settings import Settings, is_loopback, load_settings

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


class PayloadTooLarge(ShopmlError):
    """The body is larger than this server accepts (SHOPML_MAX_BODY_BYTES): a 413."""


class UnsupportedMediaType(ShopmlError):
    """The body is not declared as JSON: a 415."""


def enabled() -> bool:
    """Whether the fast path answers the endpoints (SHOPML_FASTPATH, default on)."""
    return load_settings().fastpath


def validation_error_body(exc: ValidationError) -> dict:
    """A one-line message naming each bad field, and the fields as a list (type, loc, msg)."""
    details = exc.errors(include_context=False, include_input=False, include_url=False)
    fields = "; ".join(
        f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details
    )
    return {"error": f"invalid request: {fields}", "detail": details}


def _message(exc: Exception) -> dict:
    return {"error": str(exc)}


# the one error map: exception type -> (status, body); first match wins, anything else is a 500
ERRORS: tuple[tuple[type[Exception], int, Callable[[Exception], dict]], ...] = (
    (ValidationError, 400, validation_error_body),
    (Unavailable, 503, _message),
    (Unauthorized, 401, _message),
    (Forbidden, 403, _message),
    (PayloadTooLarge, 413, _message),
    (UnsupportedMediaType, 415, _message),
    (Conflict, 409, lambda exc: {"error": str(exc), "field": exc.field}),
    (UnknownEntity, 404, lambda exc: {"error": str(exc), "kind": exc.kind, "ids": exc.ids}),
    (ShopmlError, 422, _message),
    (ValueError, 422, _message),
)


def error_response(exc: Exception) -> tuple[int, bytes]:
    """Status and JSON body of an error: named errors are 4xx/503 saying what was wrong;
    anything else is a logged 500 without the payload."""
    for kind, status, body in ERRORS:
        if isinstance(exc, kind):
            return status, to_json(body(exc))
    log.error("unexpected error in an endpoint", extra={"error_type": type(exc).__name__})
    return 500, _UNEXPECTED


@dataclass(frozen=True)
class Endpoint:
    """A declared endpoint: its route, request and answer types and handler
    `handler(service, request)` (`handler(service, request, headers)` when it reads the
    request headers, i.e. checks a token of its own); `batch` routes take larger bodies."""

    route: str
    request: type[BaseModel]
    answers: type[BaseModel]
    handler: Callable[..., dict]
    headers: bool = False
    batch: bool = False

    def fast_handler(self, service) -> Handler:
        """The fast route of this endpoint on a started service: validate, call, serialise."""
        validate = self.request.model_validate_json
        answer = self.handler.__get__(service)
        if inspect.iscoroutinefunction(self.handler):  # e.g. /feedback awaits its commit

            async def handle_awaited(body: bytes, headers=()) -> tuple[int, bytes]:
                extra = (asgi_headers(headers),) if self.headers else ()
                return 200, to_json(await answer(validate(body), *extra))

            return handle_awaited
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


def endpoint(route: str, answers: type[BaseModel], headers: bool = False, batch: bool = False):
    """Declare `method(self, request: RequestSchema, /) -> dict` as the endpoint of `route`
    (with `headers=True`: `method(self, request, /, headers: dict[str, str])`, names lower case;
    `batch=True`: bodies up to SHOPML_MAX_BATCH_BODY_BYTES; an `async def` method is awaited,
    on the event loop: e.g. /feedback waiting for its database commit).

    Returns the `@bentoml.api` method (served by BentoML when the fast path is off) and records
    it for `FastRoutes.serve`.
    """

    def declare(method: Callable) -> Callable:
        first = list(inspect.signature(method).parameters)[1]  # the one after self
        request = typing.get_type_hints(method)[first]
        declared = Endpoint(route, request, answers, method, headers, batch)

        @functools.wraps(method)
        async def api(self, request, /, ctx=None):
            try:
                extra = (dict(ctx.request.headers),) if headers else ()
                answer = method(self, request, *extra)
                if inspect.isawaitable(answer):
                    answer = await answer
                status, body = 200, to_json(answer)
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never a crash
                status, body = error_response(exc)
            if ctx is not None:  # BentoML sets the answer's status from its context
                ctx.response.status_code = status
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


def declared_endpoints(service_class: type) -> list[Endpoint]:
    """The `@endpoint`s of a service class, in declaration order."""
    found = []
    for attr in vars(service_class).values():
        declared = getattr(getattr(attr, "func", None), "endpoint", None)
        if isinstance(declared, Endpoint):
            found.append(declared)
    return found


def protected_routes(endpoints: list[Endpoint], settings: Settings) -> set[str]:
    """Routes that need `Authorization: Bearer <SHOPML_API_TOKEN>`; ConfigError when this
    server binds beyond loopback with `/labels` and no token (anyone could write labels)."""
    own = {e.route for e in endpoints if e.headers}  # they check a token of their own
    routes = {e.route for e in endpoints} - own
    if settings.auth_routes is not None:
        wanted = set(settings.auth_routes) & routes
    else:
        wanted = routes if settings.api_token else set()
    if not settings.loopback and "/labels" in routes:
        if not settings.api_token:
            raise ConfigError(
                f"this server binds to {settings.host} (beyond loopback) and takes /labels: "
                "set SHOPML_API_TOKEN (clients send 'Authorization: Bearer <token>') or bind "
                "to 127.0.0.1"
            )
        wanted.add("/labels")
    if wanted and not settings.api_token:
        raise ConfigError(
            f"SHOPML_AUTH_ROUTES names {sorted(wanted)} but SHOPML_API_TOKEN is unset"
        )
    return wanted


class FastRoutes:
    """ASGI middleware: every POST to an endpoint is checked here (token, media type, size,
    schema) and answered directly on the fast path; `/docs.json` is rewritten; the rest passes.

    Subclass it once per service (each has its own `routes`)."""

    routes: dict[str, Handler] = {}  # route -> fast handler (empty when the fast path is off)
    endpoints: dict[str, Endpoint] = {}
    protected: frozenset[str] = frozenset()
    limits: dict[str, int] = {}
    token: bytes | None = None
    fast: bool = True
    document: bytes | None = None

    def __init__(self, app) -> None:
        self.app = app

    @classmethod
    def install(cls, service, settings: Settings | None = None) -> None:
        """Answer the `@endpoint`s of the BentoML `service` here (its ASGI middleware), and,
        while the fast path is on and BentoML exports no traces, keep them out of its request
        tracing: BentoML records a span per request and per body message even with no exporter
        (about 0.3 ms of a 0.5 ms `/score`), which nobody can read, and the fast path answers
        without BentoML's request-id header, the one other trace of them. With an exporter
        configured (`tracing.exporter_type`) or `tracing.excluded_urls` set, they are traced as
        before."""
        service.add_asgi_middleware(cls)
        settings = settings or load_settings()
        if settings.fastpath and not traces_exported():
            routes = [re.escape(e.route) + "$" for e in declared_endpoints(service.inner)]
            service.config.setdefault("tracing", {}).setdefault("excluded_urls", routes)

    @classmethod
    def serve(cls, service, settings: Settings | None = None) -> None:
        """Check and answer every `@endpoint` of a started `service` here (ConfigError when the
        authentication settings cannot work)."""
        settings = settings or load_settings()
        declared = declared_endpoints(type(service))
        cls.protected = frozenset(protected_routes(declared, settings))
        cls.token = settings.api_token.encode() if settings.api_token else None
        cls.fast = settings.fastpath
        cls.endpoints = {e.route: e for e in declared}
        cls.limits = {
            e.route: settings.max_batch_body_bytes if e.batch else settings.max_body_bytes
            for e in declared
        }
        cls.routes = {e.route: e.fast_handler(service) for e in declared} if cls.fast else {}
        cls.document = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = self.endpoints.get(scope["path"])
        if declared is not None and scope["method"] == "POST":
            await self._endpoint(declared, scope, receive, send)
        elif scope["path"] == "/docs.json" and scope["method"] == "GET":
            await self._document(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _endpoint(self, declared: Endpoint, scope, receive, send) -> None:
        headers = scope.get("headers", ())
        try:
            if declared.route == "/labels" and "/labels" not in self.protected:
                _loopback_only(scope)
            self._check(declared.route, headers)
            body = await read_body(receive, headers, self.limits[declared.route])
        except ShopmlError as exc:
            await _respond(send, *error_response(exc), close=isinstance(exc, PayloadTooLarge))
            return
        handler = self.routes.get(declared.route)
        try:
            if handler is not None:
                status, payload = await handler(body, headers)
            else:  # BentoML's IO layer answers, from a body known to be valid
                declared.request.model_validate_json(body)
                await self.app(scope, _replay(body, receive), send)
                return
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a crash
            status, payload = error_response(exc)
        await _respond(send, status, payload)

    def _check(self, route: str, headers) -> None:
        """Unauthorized without the bearer token; UnsupportedMediaType for a non-JSON body."""
        auth = media = None
        for name, value in headers:
            if name == b"authorization":
                auth = value
            elif name == b"content-type":
                media = value
        if route in self.protected:
            scheme, _, given = (auth or b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                raise Unauthorized(f"{route} needs the header 'Authorization: Bearer <token>'")
        if media is not None and not is_json(media):
            raise UnsupportedMediaType(
                f"Content-Type {media.decode('latin-1')[:60]!r} is not supported: send "
                "application/json"
            )

    async def _document(self, scope, receive, send) -> None:
        """BentoML's `/docs.json`, rewritten once into a valid OpenAPI 3.0 document."""
        cls = type(self)
        if cls.document is None:
            status, raw = await _capture(self.app, scope, receive)
            if status != 200:
                await _respond(send, status, raw)
                return
            doc = openapi_document(json.loads(raw), list(self.endpoints.values()), self.protected)
            cls.document = to_json(doc)
        await _respond(send, 200, cls.document)


def traces_exported() -> bool:
    """Whether BentoML's configuration (its config file or BENTOML_CONFIG_OPTIONS) names a
    trace exporter: without one, its spans are recorded and dropped."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return BentoMLContainer.tracing.exporter_type.get() is not None


def _loopback_only(scope) -> None:
    """Forbidden when the request reached this server on an address beyond loopback (a plain
    `bentoml serve --host 0.0.0.0` of the fraud Bento without SHOPML_HOST or a token)."""
    host, port = scope.get("server") or ("127.0.0.1", 0)
    if port is not None and not is_loopback(host or "127.0.0.1"):  # port None: a Unix socket
        raise Forbidden(
            "/labels is not open beyond loopback: set SHOPML_API_TOKEN on this server (clients "
            "send 'Authorization: Bearer <token>')"
        )


def is_json(media: bytes) -> bool:
    """`application/json` or `application/<x>+json`, any parameters (charset)."""
    kind = media.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


async def read_body(receive, headers, limit: int) -> bytes:
    """The request body, PayloadTooLarge as soon as it passes `limit` bytes (by its declared
    length, or while it streams in: the rest is never read)."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"the body is {int(value)} bytes; this server takes {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this server takes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive):
    """An ASGI `receive` that gives `body` once, then the client's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _capture(app, scope, receive) -> tuple[int, bytes]:
    """Status and body of `app`'s answer to this request."""
    status, parts = 500, []

    async def send(message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(parts)


async def _respond(send, status: int, payload: bytes, close: bool = False) -> None:
    headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if close:  # the client may still be sending a body nobody reads
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
