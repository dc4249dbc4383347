"""The HTTP contract of both services, on both request paths, against real servers.

Tiny models are trained, registered and built once; then the fraud and storefront Bentos run
twice each under one SHOPML_HOME, with the fast path on and with `SHOPML_FASTPATH=0`, all four
with an API token. Checked: `/docs.json` is a valid OpenAPI document documenting every status;
the two paths answer every awkward input with the same status and body; an oversized body is a
413 before it is sent; the token is needed (the probes stay open); schemathesis finds no server
error, schema violation or undocumented status (bounded examples per operation); each server
reports only its own metrics and a new server wipes nobody's; logs append and never carry
request bodies or unknown field names.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import hypothesis
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from features.feedback import parse_request_id
from serving import runner

REPO = Path(__file__).resolve().parents[1]
TOKEN = "contract-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATHS = ("fast", "bentoml")  # SHOPML_FASTPATH=1 / 0
FUZZ_EXAMPLES = 15  # per operation and generation mode: the whole fuzz stays well under 60 s
DOCUMENTED = {"200", "400", "401", "403", "404", "409", "413", "415", "422", "503"}
PAYMENT = {"transaction_id": "c-1", "customer_id": "C1", "terminal_id": "T1", "amount": 12.5}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import serving_models

    yield from serving_models.isolated_home(
        tmp_path_factory,
        "api-contract",
        unset=("SHOPML_REDIS_URL", "SHOPML_FASTPATH", "SHOPML_API_TOKEN", "SHOPML_HOST"),
    )


@pytest.fixture(scope="module")
def built(home):
    import serving_models

    from features.generator import GeneratorConfig, generate

    store = generate(GeneratorConfig(scale="tiny", seed=0))
    serving_models.train_recommender(store)
    serving_models.train_fraud(store)
    serving_models.train_forecast(store)
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "build"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def servers(built, home):
    started = {}
    try:
        for service in ("fraud", "recommend"):
            for path in PATHS:
                env = {"SHOPML_FASTPATH": "1" if path == "fast" else "0"}
                env["SHOPML_API_TOKEN"] = TOKEN
                # one at a time: a port picked free while another server is still starting
                # can be taken by that server's own sockets before this one binds it
                started[service, path] = runner.start(service, env=env, log_dir=home / "logs")
                started[service, path].wait_ready(120)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=20) as c:
        yield c


def documents(servers, client):
    return {key: client.get(s.url + "/docs.json").json() for key, s in servers.items()}


# ------------------------------------------------------------------------------ the document
def test_docs_are_valid_openapi_documenting_every_status(servers, client):
    for (service, path), doc in documents(servers, client).items():
        validate(doc)  # openapi-spec-validator: raises naming the first violation
        text = str(doc)
        assert "root_input" not in text and "'type': 'null'" not in text
        endpoints = {
            "fraud": ["/score", "/labels"],
            "recommend": ["/recommend", "/similar", "/feedback"],
        }
        for route in endpoints[service]:
            operation = doc["paths"][route]["post"]
            assert set(operation["responses"]) >= DOCUMENTED, (service, path, route)
            assert operation["security"] == [{"bearer": []}]  # this server has a token
            assert list(operation["requestBody"]["content"]) == ["application/json"]
    score = documents(servers, client)["fraud", "fast"]["components"]["schemas"]
    assert "degraded_reason" not in score["ScoreResponse"]["required"]
    assert score["InvalidRequest"]["properties"]["detail"]["type"] == "array"


# ----------------------------------------------------------------------- one contract, two paths
AWKWARD = {
    "empty": {"content": b"", "headers": {"content-type": "application/json"}},
    "no content type": {"content": b'{"k": 3}'},
    "form": {"data": {"k": "3"}},
    "multipart without boundary": {
        "content": b"--x\r\n",
        "headers": {"content-type": "multipart/form-data"},
    },
    "text": {"content": b"{}", "headers": {"content-type": "text/plain"}},
    "invalid json": {"content": b"{nope", "headers": {"content-type": "application/json"}},
    "array": {"json": [1, 2]},
    "wrong types": {"json": {"k": "many", "amount": "x", "transaction_id": 7}},
    "unknown field": {"json": {**PAYMENT, "k": 3, "surprise": 1}},
    "year 1 with an offset": {"json": {**PAYMENT, "timestamp": "0001-01-01T00:00:00+01:00"}},
    "year 9999 with an offset": {"json": {**PAYMENT, "timestamp": "9999-12-31T23:59:59-01:00"}},
    "nan": {"content": b'{"amount": NaN}', "headers": {"content-type": "application/json"}},
}
ROUTES = {
    "fraud": ["/score", "/labels", "/rules/reload"],
    "recommend": ["/recommend", "/similar", "/feedback"],
}


def comparable(body):
    """An answer without its random `request_id` (checked to be one a service makes)."""
    if isinstance(body, dict) and "request_id" in body:
        assert parse_request_id(body["request_id"]) is not None, body["request_id"]
        return {k: v for k, v in body.items() if k != "request_id"}
    return body


def test_both_paths_answer_every_awkward_input_alike(servers, client):
    for service, routes in ROUTES.items():
        for route in routes:
            for name, request in AWKWARD.items():
                answers = []
                for path in PATHS:
                    headers = {**AUTH, **request.get("headers", {})}
                    kwargs = {k: v for k, v in request.items() if k != "headers"}
                    r = client.post(servers[service, path].url + route, headers=headers, **kwargs)
                    assert r.status_code < 500, (service, route, name, path, r.text)
                    assert r.headers["content-type"] == "application/json"
                    answers.append((r.status_code, comparable(r.json())))
                assert answers[0] == answers[1], (service, route, name)
                status, body = answers[0]
                assert status in (200, 400, 403, 415), (service, route, name, body)
                if status == 400:
                    assert isinstance(body["detail"], list) and body["error"]


def test_answers_have_the_same_shape_on_both_paths(servers, client):
    found = {}
    for path in PATHS:
        url = servers["fraud", path].url
        body = client.post(
            url + "/score", json={**PAYMENT, "transaction_id": f"s-{path}"}, headers=AUTH
        )
        similar = client.post(
            servers["recommend", path].url + "/similar", json={"product_id": "nope"}, headers=AUTH
        )
        assert body.status_code == 200 and similar.status_code == 404
        answer = body.json()
        assert "degraded_reason" not in answer or isinstance(answer["degraded_reason"], str)
        found[path] = (sorted(answer), similar.json())
    assert found["fast"] == found["bentoml"]
    assert set(found["fast"][1]) == {"error", "kind", "ids"}


def test_feedback_on_an_answer_is_stored_once_on_both_paths(servers, client):
    for path in PATHS:
        url = servers["recommend", path].url
        shown = client.post(url + "/recommend", json={"k": 3}, headers=AUTH).json()
        rid, first = shown["request_id"], shown["items"][0]["product_id"]
        assert shown["variant"] == "champion" and parse_request_id(rid)[0] == "recommend"
        events = [
            {
                "event": "impression",
                "request_id": rid,
                "product_id": first,
                "position": 1,
                "event_id": f"contract-{path}-1",
            },
            {
                "event": "click",
                "request_id": rid,
                "product_id": first,
                "event_id": f"contract-{path}-2",
            },
        ]
        r = client.post(url + "/feedback", json={"events": events}, headers=AUTH)
        assert (r.status_code, r.json()) == (200, {"accepted": 2, "stored": 2, "duplicates": 0})
        r = client.post(url + "/feedback", json={"events": events}, headers=AUTH)
        assert r.json() == {"accepted": 2, "stored": 0, "duplicates": 2}  # a retry: once
        bad = [{**events[0], "request_id": "not-an-answer"}]
        r = client.post(url + "/feedback", json={"events": bad}, headers=AUTH)
        assert r.status_code == 400 and "events.0.request_id" in r.json()["error"]


def stream_oversized(url: str, size: int) -> tuple[int, int, float]:
    """(status, bytes sent, seconds) of a POST /score streaming `size` bytes in 256 KiB chunks,
    stopping as soon as the server answers."""
    host, port = url.removeprefix("http://").split(":")
    started, sent, chunk = time.perf_counter(), 0, b"x" * (256 << 10)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /score HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        try:
            while sent < size and not select.select([sock], [], [], 0.001)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(4096)
    return int(reply.split(b" ", 2)[1]), sent, time.perf_counter() - started


def test_an_oversized_body_is_refused_while_it_streams(servers):
    for path in PATHS:
        status, sent, seconds = stream_oversized(servers["fraud", path].url, 200 << 20)
        assert status == 413, path
        assert sent < 50 << 20, (path, sent)  # answered long before the 200 MB were sent
        assert seconds < 10


# ------------------------------------------------------------------------------------ auth
def test_the_endpoints_need_the_token_and_the_probes_do_not(servers, client):
    for (service, path), server in servers.items():
        for route in ROUTES[service][:2] + (["/forecast"] if service == "recommend" else []):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = client.post(server.url + route, json={}, headers=headers)
                assert r.status_code == 401, (service, path, route)
                assert r.headers["www-authenticate"] == "Bearer"
        for probe in ("/livez", "/readyz", "/metrics", "/docs.json"):
            assert client.get(server.url + probe).status_code == 200, (service, path, probe)


# ------------------------------------------------------------------------------------ fuzzing
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(url: str) -> tuple[list[str], int]:
    """Schemathesis on every operation of `url`'s document (valid and invalid data): the
    failures found and the number of requests made."""
    schema = schemathesis.openapi.from_url(url + "/docs.json")
    failures, calls = [], [0]
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def check(case):
                calls[0] += 1
                try:
                    case.call_and_validate(base_url=url, headers=AUTH, checks=CHECKS)
                except Exception as exc:  # noqa: BLE001 - collected, reported below
                    failures.append(f"{case.operation.label}: {str(exc)[:800]}")

            with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # nothing invalid to send
                check()
    return failures, calls[0]


@pytest.mark.parametrize("service", ["fraud", "recommend"])
def test_schemathesis_finds_nothing_on_either_path(servers, service):
    for path in PATHS:
        failures, calls = fuzz(servers[service, path].url)
        assert calls > 50, (service, path, calls)
        assert failures == [], "\n".join(failures[:5])


# ------------------------------------------------------------------------- metrics and logs
def fraud_decisions(client, server) -> float:
    text = client.get(server.url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shopml_fraud_decisions_total{")
    )


def test_each_server_reports_only_its_own_metrics_and_none_is_wiped(servers, client, home):
    fast, slow = servers["fraud", "fast"], servers["fraud", "bentoml"]
    assert fast.metrics_dir != slow.metrics_dir and fast.metrics_dir.parent == home / "metrics"
    before = fraud_decisions(client, fast), fraud_decisions(client, slow)
    for i in range(5):
        payment = {**PAYMENT, "transaction_id": f"m-{i}"}
        assert client.post(fast.url + "/score", json=payment, headers=AUTH).status_code == 200
    assert fraud_decisions(client, fast) == before[0] + 5
    assert fraud_decisions(client, slow) == before[1]
    # a new server under the same home (and an existing log of its port) wipes nothing
    port = runner.free_port()
    log = home / "logs" / f"fraud-{port}.log"
    log.write_text("the last run's log\n")
    third = runner.start("fraud", port=port, env={"SHOPML_API_TOKEN": TOKEN}, log_dir=log.parent)
    try:
        third.wait_ready(120)
        assert fraud_decisions(client, third) == 0
        assert fraud_decisions(client, fast) == before[0] + 5
        assert fraud_decisions(client, slow) == before[1]
    finally:
        third.stop()
    assert log.read_text().startswith("the last run's log\n")
    assert not third.metrics_dir.exists()  # dropped with its server


def test_logs_never_hold_request_bodies_or_unknown_field_names(servers, client):
    secret = {"leaky_field_x": "jane.doe@example.com", "card_number": "4111 1111 1111 1111"}
    for (service, _), server in servers.items():
        route = ROUTES[service][0]
        r = client.post(server.url + route, json={**PAYMENT, **secret}, headers=AUTH)
        assert r.status_code == 400
    time.sleep(0.5)  # log lines are flushed by the worker processes
    for server in servers.values():
        text = server.log_path.read_text(errors="replace")
        for needle in ("leaky_field_x", "card_number", "jane.doe", "4111"):
            assert needle not in text, (server.service, needle)


def test_servers_bind_loopback_by_default(servers, home):
    for server in servers.values():
        assert server.host == "127.0.0.1"
    cmd = " ".join(os.fspath(a) for a in servers["fraud", "fast"].process.args)
    assert "--host 127.0.0.1" in cmd
    # a plain `bentoml serve` of the Bento, no --host: the Bento's own config binds loopback
    port = runner.free_port()
    env = runner.server_env(runner.load_settings())
    plain = subprocess.Popen(
        [runner.bentoml_executable(), "serve", "shopml-recommend:latest", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = runner.Server("recommend", port, plain, home / "logs" / "plain.log")
    try:
        server.wait_ready(120)
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
    finally:
        server.stop()
