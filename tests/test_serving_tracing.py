"""The fast routes stay out of BentoML's request tracing unless traces are exported.

BentoML records a span per request and per body message even when no exporter is configured
(its sampler is "record always"); those spans cost about 0.3 ms of a /score and nobody can read
them. `FastRoutes.install` leaves the fast routes out of tracing then, and only then.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import bentoml
from opentelemetry.util.http import ExcludeList
from pydantic import BaseModel

from serving import endpoints
from serving.endpoints import FastRoutes, endpoint
from shopml.settings import load_settings

CHECK = """
import json, serving.fraud_service as f
from bentoml._internal.configuration.containers import BentoMLContainer as B
f.FraudService.inject_config()  # what `to_asgi` does in a worker before building the app
urls = B.tracing_excluded_urls.get()
print(json.dumps({p: urls.url_disabled("http://127.0.0.1:3002" + p)
                  for p in ("/score", "/labels", "/livez", "/scores", "/readyz")}))
"""


class Answer(BaseModel):
    ok: bool


class Ask(BaseModel):
    n: int


def _service():
    class Tiny:
        @endpoint("/ask", answers=Answer)
        def ask(self, request: Ask, /) -> dict:
            return {"ok": request.n > 0}

        @endpoint("/ask/again", answers=Answer)
        def again(self, request: Ask, /) -> dict:
            return {"ok": True}

    return bentoml.service(name="tiny-tracing")(Tiny)


def test_fast_routes_are_left_out_of_tracing_without_an_exporter(monkeypatch):
    monkeypatch.setattr(endpoints, "traces_exported", lambda: False)
    svc = _service()

    class Routes(FastRoutes):
        routes = {}

    Routes.install(svc, load_settings())
    assert Routes in [m for m, _ in svc.middlewares]
    patterns = svc.config["tracing"]["excluded_urls"]
    assert patterns == ["/ask$", "/ask/again$"]
    urls = ExcludeList(patterns)  # what BentoML's container builds from a list
    assert urls.url_disabled("http://127.0.0.1:3000/ask")
    assert urls.url_disabled("http://127.0.0.1:3000/ask/again")
    assert not urls.url_disabled("http://127.0.0.1:3000/livez")
    assert not urls.url_disabled("http://127.0.0.1:3000/asks")


def test_fast_routes_stay_traced_with_an_exporter_the_io_layer_or_own_exclusions(monkeypatch):
    class Routes(FastRoutes):
        routes = {}

    monkeypatch.setattr(endpoints, "traces_exported", lambda: True)
    svc = _service()
    Routes.install(svc, load_settings())
    assert "tracing" not in svc.config  # an operator's exporter sees every request

    monkeypatch.setattr(endpoints, "traces_exported", lambda: False)
    svc = _service()  # BentoML's IO layer answers (and sets its request-id header): traced
    Routes.install(svc, dataclasses.replace(load_settings(), fastpath=False))
    assert "tracing" not in svc.config

    svc = _service()
    svc.config["tracing"] = {"excluded_urls": ["/metrics"]}  # the operator's own list wins
    Routes.install(svc, load_settings())
    assert svc.config["tracing"]["excluded_urls"] == ["/metrics"]


def _run(code: str, env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "BENTOML_CONFIG_OPTIONS"}
    env.update({"BENTOML_DO_NOT_TRACK": "true", **env_extra})
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_fraud_service_config_reaches_bentomls_tracing_middleware():
    """In the fraud service as a worker loads it: its fast routes are skipped, the probes and
    other paths are not."""
    assert json.loads(_run(CHECK, {})) == {
        "/score": True,
        "/labels": True,
        "/livez": False,
        "/scores": False,
        "/readyz": False,
    }


def test_an_exporter_in_bentomls_configuration_counts_as_exported():
    code = "from serving.endpoints import traces_exported; print(traces_exported())"
    assert _run(code, {}) == "False"
    assert _run(code, {"BENTOML_CONFIG_OPTIONS": "tracing.exporter_type=zipkin"}) == "True"
