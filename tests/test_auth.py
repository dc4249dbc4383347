"""Bearer-token protection and the request checks of `FastRoutes`, on an ASGI app in-process.

Which routes need the token (settings), 401 without it or with a wrong one on both paths (fast
path and BentoML's IO layer), the token compared in constant time, the open probes, a service
that binds beyond loopback refusing to start without a token for /labels, and the 413 / 415
checks that run before any body is parsed.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import replace

import pytest
from pydantic import BaseModel, ConfigDict

from serving import endpoints
from serving.endpoints import FastRoutes, endpoint, protected_routes
from shopml.errors import ConfigError
from shopml.settings import load_settings

TOKEN = "s3cret-token"


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class Answer(BaseModel):
    n: int


class Service:
    """A service with the fraud service's route names (one reads its own token)."""

    @endpoint("/score", answers=Answer)
    def score(self, request: Ask, /) -> dict:
        return {"n": request.n}

    @endpoint("/labels", answers=Answer, batch=True)
    def labels(self, request: Ask, /) -> dict:
        return {"n": -request.n}

    @endpoint("/rules/reload", answers=Answer, headers=True)
    def reload(self, request: Ask, /, headers: dict[str, str]) -> dict:
        return {"n": 0}


class Storefront:
    @endpoint("/recommend", answers=Answer)
    def recommend(self, request: Ask, /) -> dict:
        return {"n": request.n}


def settings(**fields):
    return replace(load_settings({"SHOPML_HOME": "/tmp/shopml-auth-test"}), **fields)


class Downstream:
    """Stands for BentoML's app: answers 200 with the body it was handed (the slow path)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        message = await receive()
        body = message.get("body", b"")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"bentoml":' + body + b"}"})


def routes_for(service, **fields):
    class Routes(FastRoutes):
        routes = {}

    Routes.serve(service, settings(**fields))
    return Routes(Downstream())


def call(app, path, body=b'{"n": 3}', headers=(), chunks=None, method="POST", server=None):
    """(status, body, chunks the app read) of one request to the ASGI `app`."""
    parts = list(chunks) if chunks is not None else [body]
    read = {"n": 0}
    sent = []

    async def receive():
        read["n"] += 1
        if read["n"] > len(parts):
            return {"type": "http.disconnect"}
        return {
            "type": "http.request",
            "body": parts[read["n"] - 1],
            "more_body": read["n"] < len(parts),
        }

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "server": server or ("127.0.0.1", 3002),
    }
    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, payload, read["n"]


BEARER = ("Authorization", f"Bearer {TOKEN}")


# --------------------------------------------------------------------------- which routes need it
def test_no_token_on_loopback_protects_nothing():
    declared = endpoints.declared_endpoints(Service)
    assert protected_routes(declared, settings()) == set()


def test_a_token_protects_every_endpoint_without_its_own_token():
    declared = endpoints.declared_endpoints(Service)
    assert protected_routes(declared, settings(api_token=TOKEN)) == {"/score", "/labels"}


def test_auth_routes_choose_the_routes():
    declared = endpoints.declared_endpoints(Service)
    chosen = settings(api_token=TOKEN, auth_routes=("/labels",))
    assert protected_routes(declared, chosen) == {"/labels"}
    with pytest.raises(ConfigError, match="SHOPML_API_TOKEN"):
        protected_routes(declared, settings(auth_routes=("/score",)))


def test_beyond_loopback_labels_need_a_token_or_the_service_refuses_to_start():
    declared = endpoints.declared_endpoints(Service)
    with pytest.raises(ConfigError, match="SHOPML_API_TOKEN") as err:
        protected_routes(declared, settings(host="0.0.0.0"))
    assert "0.0.0.0" in str(err.value)
    only_score = settings(host="10.0.0.5", api_token=TOKEN, auth_routes=("/score",))
    assert protected_routes(declared, only_score) == {"/score", "/labels"}
    # a service without /labels may bind beyond loopback without a token
    storefront = endpoints.declared_endpoints(Storefront)
    assert protected_routes(storefront, settings(host="0.0.0.0")) == set()


def test_settings_read_the_auth_variables():
    s = load_settings(
        {"SHOPML_API_TOKEN": TOKEN, "SHOPML_AUTH_ROUTES": "/score, /labels", "SHOPML_HOST": "::"}
    )
    assert s.api_token == TOKEN and s.auth_routes == ("/score", "/labels")
    assert not s.loopback and TOKEN not in repr(s)
    with pytest.raises(ConfigError, match="SHOPML_AUTH_ROUTES"):
        load_settings({"SHOPML_AUTH_ROUTES": "score"})


# ------------------------------------------------------------------------------ on both paths
@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "bentoml"])
def test_401_without_the_token_and_200_with_it(fast):
    app = routes_for(Service(), api_token=TOKEN, fastpath=fast)
    for headers in ((), (("Authorization", "Bearer wrong"),), (("Authorization", TOKEN),)):
        status, body, _ = call(app, "/score", headers=headers)
        assert status == 401 and b"Authorization: Bearer" in body
    status, body, _ = call(app, "/score", headers=(BEARER,))
    assert status == 200
    assert body == (b'{"n":3}' if fast else b'{"bentoml":{"n": 3}}')
    assert app.app.calls == (0 if fast else 1)


def test_the_token_is_compared_in_constant_time(monkeypatch):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(endpoints.hmac, "compare_digest", spy)
    app = routes_for(Service(), api_token=TOKEN)
    assert call(app, "/labels", headers=(("authorization", "bearer nope"),))[0] == 401
    assert seen == [(b"nope", TOKEN.encode())]


def test_probes_and_routes_with_their_own_token_stay_open_to_the_middleware():
    app = routes_for(Service(), api_token=TOKEN)
    for path in ("/livez", "/readyz", "/metrics"):
        status, _, _ = call(app, path, body=b"", method="GET")
        assert status == 200  # handed on to BentoML, never asked for the API token
    assert call(app, "/rules/reload")[0] == 200  # checks SHOPML_RULES_TOKEN itself


# ----------------------------------------------------------------------------- body checks
@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "bentoml"])
def test_an_oversized_body_is_a_413_without_reading_the_rest(fast):
    app = routes_for(Service(), max_body_bytes=1000, fastpath=fast)
    chunks = [b"x" * 300] * 10_000  # 3 MB offered in small pieces
    status, body, read = call(app, "/score", chunks=chunks)
    assert status == 413 and b"1000" in body
    assert read == 4  # the fourth chunk passed the limit: nothing after it was read
    assert app.app.calls == 0
    declared = ("Content-Length", "3000000")  # a declared length over the limit: nothing read
    status, _, read = call(app, "/score", chunks=chunks, headers=(declared,))
    assert (status, read) == (413, 0)


def test_batch_routes_take_the_batch_limit():
    app = routes_for(Service(), max_body_bytes=10, max_batch_body_bytes=100)
    assert call(app, "/score", body=b'{"n": 100000}')[0] == 413
    assert call(app, "/labels", body=b'{"n": 100000}')[:2] == (200, b'{"n":-100000}')


@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "bentoml"])
def test_media_type_and_validation_are_the_same_on_both_paths(fast):
    app = routes_for(Service(), fastpath=fast)
    for media in ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain"):
        status, body, _ = call(app, "/score", headers=(("Content-Type", media),))
        assert status == 415 and media.encode() in body
    for media in ("application/json", "application/json; charset=utf-8", "application/x+json"):
        assert call(app, "/score", headers=(("Content-Type", media),))[0] == 200
    handed_on = app.app.calls
    status, body, _ = call(app, "/score", body=b'{"n": "x", "card": "4111 1111 1111 1111"}')
    assert status == 400
    assert body.startswith(b'{"error":"invalid request: n: Input should be a valid integer')
    assert b"4111" not in body  # the detail names fields, never echoes values
    assert app.app.calls == handed_on  # BentoML never sees an invalid body


def test_shopml_serve_beyond_loopback_needs_a_token_and_warns_for_every_interface(capsys):
    from cli.serving import _bind_host
    from shopml.errors import ShopmlError

    with pytest.raises(ShopmlError, match="SHOPML_API_TOKEN"):
        _bind_host("0.0.0.0", ("recommend", "fraud"), settings())
    assert _bind_host("127.0.0.1", ("fraud",), settings()) == "127.0.0.1"
    assert capsys.readouterr().err == ""
    assert _bind_host("0.0.0.0", ("fraud",), settings(api_token=TOKEN)) == "0.0.0.0"
    assert "every network interface" in capsys.readouterr().err
    assert _bind_host("0.0.0.0", ("recommend",), settings()) == "0.0.0.0"  # no /labels there


def test_labels_reached_beyond_loopback_without_a_token_are_refused():
    """A plain `bentoml serve --host 0.0.0.0` (no SHOPML_HOST, no token) still never takes
    labels from the network: the address a request arrived on decides."""
    app = routes_for(Service())
    assert call(app, "/labels", server=("127.0.0.1", 3002))[0] == 200
    status, body, _ = call(app, "/labels", server=("10.0.0.5", 3002))
    assert status == 403 and b"SHOPML_API_TOKEN" in body
    assert call(app, "/score", server=("10.0.0.5", 3002))[0] == 200  # only /labels
    guarded = routes_for(Service(), api_token=TOKEN)
    assert call(guarded, "/labels", server=("10.0.0.5", 3002))[0] == 401
    assert call(guarded, "/labels", server=("10.0.0.5", 3002), headers=(BEARER,))[0] == 200
