"""Serving pieces without a server: request schemas, the hot path's error mapping, loaders
and the forecast table (the registry's messages: tests/test_registry.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from models.family import FAMILY_NAMES
from serving.endpoints import (
    FastRoutes,
    Forbidden,
    Unauthorized,
    Unavailable,
    endpoint,
    error_response,
)
from serving.fraud_schemas import LabelsRequest, PaymentRequest
from serving.schemas import ForecastRequest, RecommendRequest
from serving.services import SERVICE_OF_FAMILY, SERVICES
from serving.storefront import Forecasts, write_forecast_table
from shopml.errors import ConfigError, UnknownEntity
from shopml.settings import VARIABLES, Settings, load_settings

PAYMENT = {
    "transaction_id": "t1",
    "customer_id": "c1",
    "terminal_id": "x1",
    "amount": 12.5,
    "timestamp": "2024-03-01T10:00:00+01:00",
}


def fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"amount": "a lot"}, "amount"),
        ({"amount": None}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_payment_names_the_field(change, field):
    with pytest.raises(ValidationError) as err:
        PaymentRequest.model_validate_json(json.dumps({**PAYMENT, **change}))
    assert field in fields(err.value)


def test_missing_payment_field_is_named():
    body = {k: v for k, v in PAYMENT.items() if k != "customer_id"}
    with pytest.raises(ValidationError) as err:
        PaymentRequest.model_validate(body)
    assert fields(err.value) == {"customer_id"}


def test_payment_timestamp_with_a_zone_becomes_naive_utc():
    p = PaymentRequest.model_validate_json(json.dumps(PAYMENT))
    assert p.timestamp == pd.Timestamp("2024-03-01 09:00:00").to_pydatetime()
    assert p.card_id is None and p.currency == "EUR"


def test_labels_request_bounds():
    assert (
        len(
            LabelsRequest.model_validate(
                {"labels": [{"transaction_id": "t", "is_fraud": True}]}
            ).labels
        )
        == 1
    )
    with pytest.raises(ValidationError):
        LabelsRequest.model_validate({"labels": []})


@pytest.mark.parametrize(
    ("payload", "field"), [({"k": 0}, "k"), ({"k": 201}, "k"), ({"exclude": "x"}, "exclude")]
)
def test_recommend_request_bounds(payload, field):
    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate(payload)
    assert fields(err.value) == {field}


def test_error_mapping_gives_4xx_with_the_name_and_a_quiet_500():
    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate_json(b'{"k": 999}')
    status, body = error_response(err.value)
    assert status == 400 and "k:" in json.loads(body)["error"]
    status, body = error_response(UnknownEntity("product", ["P9"]))
    assert status == 404 and json.loads(body)["ids"] == ["P9"]
    assert error_response(Unavailable("no forecast"))[0] == 503
    assert error_response(ValueError("bad k"))[0] == 422
    status, body = error_response(RuntimeError("secret card 4111 1111 1111 1111"))
    assert status == 500 and b"4111" not in body


class EchoAnswer(BaseModel):
    n: int


class Echo:
    """A service with one declared endpoint, as the real services declare theirs."""

    @endpoint("/echo", answers=EchoAnswer)
    def echo(self, request: ForecastRequest, /) -> dict:
        """How many products were asked for."""
        if request.product_ids == ["gone"]:
            raise UnknownEntity("product", ["gone"])
        return {"n": len(request.product_ids)}


def test_fast_route_answers_and_passes_other_routes_on():
    class Routes(FastRoutes):
        routes = {}

    Routes.serve(Echo())
    passed = []

    async def inner(scope, receive, send):
        passed.append(scope["path"])

    app = Routes(inner)
    sent = []

    async def call(path, body):
        msgs = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return msgs.pop(0)

        async def send(m):
            sent.append(m)

        await app({"type": "http", "method": "POST", "path": path}, receive, send)

    asyncio.run(call("/echo", b'{"product_ids": ["a", "b"]}'))
    asyncio.run(call("/other", b"{}"))
    asyncio.run(call("/echo", b'{"product_ids": []}'))
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"n": 2}
    assert passed == ["/other"]
    assert sent[2]["status"] == 400 and "product_ids" in json.loads(sent[3]["body"])["error"]


def test_an_endpoint_is_one_handler_on_both_paths():
    """BentoML's API method and the fast route run the same method and map errors alike."""
    method = Echo.echo
    assert method.route == "/echo" and "How many products" in method.doc
    assert method.output_spec.model_json_schema()["properties"].keys() == {"n"}

    class Routes(FastRoutes):
        routes = {}

    Routes.serve(Echo())
    fast = asyncio.run(Routes.routes["/echo"](b'{"product_ids": ["a"]}'))
    bento = asyncio.run(method.func(Echo(), ForecastRequest(product_ids=["a"])))
    assert (bento.status_code, bento.body) == fast == (200, b'{"n":1}')
    with pytest.raises(UnknownEntity) as err:  # FastRoutes maps it with error_response
        asyncio.run(Routes.routes["/echo"](b'{"product_ids": ["gone"]}'))
    bento = asyncio.run(method.func(Echo(), ForecastRequest(product_ids=["gone"])))
    assert (bento.status_code, bento.body) == error_response(err.value)
    assert json.loads(bento.body)["ids"] == ["gone"]


class Guarded:
    """A service whose endpoint reads the request headers (as the fraud rules reload does)."""

    @endpoint("/guarded", answers=EchoAnswer, headers=True)
    def guarded(self, request: ForecastRequest, /, headers: dict[str, str]) -> dict:
        """How many products, for the holder of the token only."""
        if headers.get("authorization") != "Bearer t":
            raise Unauthorized("needs 'Authorization: Bearer <token>'")
        return {"n": len(request.product_ids)}


def test_an_endpoint_with_headers_gets_them_on_both_paths():
    from types import SimpleNamespace

    class Routes(FastRoutes):
        routes = {}

    Routes.serve(Guarded())
    fast = Routes.routes["/guarded"]
    body = b'{"product_ids": ["a"]}'
    assert asyncio.run(fast(body, [(b"Authorization", b"Bearer t")])) == (200, b'{"n":1}')
    with pytest.raises(Unauthorized) as err:
        asyncio.run(fast(body, []))
    assert error_response(err.value)[0] == 401
    assert error_response(Forbidden("off"))[0] == 403
    api = Guarded.guarded
    schema = api.input_spec.model_json_schema()["properties"]
    assert api.ctx_param == "ctx" and set(schema) == set(ForecastRequest.model_fields)
    for headers, status in (({"authorization": "Bearer t"}, 200), ({}, 401)):
        ctx = SimpleNamespace(
            request=SimpleNamespace(headers=headers), response=SimpleNamespace(status_code=200)
        )
        answer = asyncio.run(api.func(Guarded(), ForecastRequest(product_ids=["a"]), ctx=ctx))
        # BentoML answers with the context's status: it must be the error's, not 200
        assert answer.status_code == ctx.response.status_code == status


def test_forecast_table_round_trip(tmp_path):
    dates = pd.date_range("2024-01-01", periods=3)
    frame = pd.DataFrame(
        {
            "product_id": np.repeat(["b", "a"], 3),
            "date": np.tile(dates, 2),
            "p10": np.arange(6.0),
            "p50": np.arange(6.0) + 1,
            "p90": np.arange(6.0) + 2,
            "flag": "model",
        }
    )
    write_forecast_table(frame, tmp_path, generated_at="2023-12-31")
    fc = Forecasts(tmp_path, "shopml-forecast/1")
    out = fc.forecast(ForecastRequest(product_ids=["a"], days=2))
    assert out["forecasts"][0]["dates"] == ["2024-01-01", "2024-01-02"]
    assert out["forecasts"][0]["p50"] == [4.0, 5.0]
    assert out["generated_at"] == "2023-12-31"
    with pytest.raises(UnknownEntity, match="zzz"):
        fc.forecast(ForecastRequest(product_ids=["zzz"]))


def test_build_without_champions_stops_with_the_commands_to_run(tmp_shopml_home):
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "build"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "shopml train recommender" in out.stderr and "shopml train fraud" in out.stderr
    assert "Traceback" not in out.stderr


def test_history_warms_the_online_features(tmp_path):
    from features.fraud.batch import compute_batch
    from features.fraud.definition import FeatureSet
    from features.generator import GeneratorConfig, generate
    from features.store import Store
    from models.fraud import FraudEngine, FraudScorer
    from serving.history import warm_state

    pay = generate(GeneratorConfig(scale="tiny", seed=0)).payments.sort_values("timestamp")
    fs = FeatureSet()
    X, y = compute_batch(pay, fs).to_numpy(), pay["is_fraud"].to_numpy(bool)
    scorer = FraudScorer(list(fs.names), num_boost_round=5, min_data_in_leaf=20, num_threads=1)
    engine = FraudEngine(scorer.fit(X, y, X, y), fs)
    Store(payments=pay).write(tmp_path / "store")
    last = pay.iloc[-1]
    payment = {
        "transaction_id": "next",
        "timestamp": last["timestamp"],
        "amount": 10.0,
        "customer_id": last["customer_id"],
        "card_id": last["card_id"],
        "terminal_id": last["terminal_id"],
    }
    assert "unseen:customer" in [r.code for r in engine.score(payment, record=False).reasons]
    assert warm_state(engine, tmp_path / "store") > 0
    assert "unseen:customer" not in [r.code for r in engine.score(payment, record=False).reasons]


def test_every_family_is_served_by_one_service():
    assert sorted(SERVICE_OF_FAMILY) == sorted(FAMILY_NAMES)
    families = [f for s in SERVICES.values() for f in s.families]
    assert len(families) == len(set(families)), "a family is served twice"
    assert len({s.port for s in SERVICES.values()}) == len(SERVICES)


# ---- the storefront's recommendation answers (issue 11) ----------------------------------------
@pytest.fixture(scope="module")
def storefront():
    from recommender_blocks import PRODUCTS, block_events

    from features.interactions import InteractionConfig, build_matrix
    from models.recommenders import EASERecommender, FallbackRecommender
    from serving.storefront import Storefront

    matrix = build_matrix(block_events(), InteractionConfig(event_weights={"purchase": 1.0}))
    model = FallbackRecommender(EASERecommender(l2=1.0)).fit(matrix, PRODUCTS).precompute(4)
    return Storefront(model, "shopml-recommender/1")


def _ids(answer: dict) -> list[str]:
    return [item["product_id"] for item in answer["items"]]


def test_similar_serves_available_products_and_takes_the_filters(storefront):
    from serving.schemas import SimilarRequest

    assert set(_ids(storefront.similar(SimilarRequest(product_id="a1", k=2)))) == {"a0", "a2"}
    every = storefront.similar(SimilarRequest(product_id="a1", k=3, only_available=False))
    assert "a3" in _ids(every)  # a3 is discontinued
    books = SimilarRequest(product_id="a1", k=7, categories=["books"], exclude=["b0"])
    assert set(_ids(storefront.similar(books))) == {"b1", "b2", "b3"}


def test_an_unknown_category_is_a_404_naming_it(storefront):
    from serving.schemas import SimilarRequest

    for call in (
        lambda: storefront.recommend(RecommendRequest(customer_id="c0", categories=["toyz"])),
        lambda: storefront.recommend(RecommendRequest(categories=["toyz"])),
        lambda: storefront.similar(SimilarRequest(product_id="a0", categories=["books", "toyz"])),
    ):
        with pytest.raises(UnknownEntity) as err:
            call()
        status, body = error_response(err.value)
        assert status == 404 and json.loads(body) == {
            "error": "unknown category: 'toyz'",
            "kind": "category",
            "ids": ["toyz"],
        }


def test_a_known_customer_s_session_is_part_of_the_answer(storefront):
    plain = storefront.recommend(RecommendRequest(customer_id="c1", k=3))
    session = storefront.recommend(
        RecommendRequest(customer_id="c1", k=3, recent_product_ids=["b0", "b1"])
    )
    assert session["source"] == "ease:session" and session["fallback"] is False
    assert not {"b0", "b1"} & set(_ids(session)) and _ids(session) != _ids(plain)
    only = RecommendRequest(customer_id="c1", k=2, recent_product_ids=["b0"], session_weight=1)
    assert set(_ids(storefront.recommend(only))) <= {"b1", "b2", "b3"}
    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate({"session_weight": 1.5})
    assert fields(err.value) == {"session_weight"}


# --------------------------------------------------------------------- configuration in one place
REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("7", "0", "1", "/score,/labels", "10.0.0.1", "redis://h:1/0", "debug", "/tmp/x")


def _readme_table() -> dict[str, str]:
    """variable -> default cell of the README's "Configuration" table."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.+?) \|", section, flags=re.MULTILINE)
    return dict(rows)


def test_every_variable_is_a_setting_listed_once_in_the_readme_with_its_default():
    table = _readme_table()
    assert set(table) == set(VARIABLES.values())
    assert {f.name for f in dataclasses.fields(Settings)} - {"artifact_root"} == set(VARIABLES)
    used = set()
    for path in REPO.rglob("*.py"):
        if not {".venv", "tests"} & set(path.relative_to(REPO).parts):
            # quoted or `$`-prefixed: a variable, not a constant such as SHOPML_PACKAGES
            used |= set(re.findall(r"[\"'`$](SHOPML_[A-Z_]*[A-Z])\b", path.read_text()))
    assert used <= set(VARIABLES.values()), used - set(VARIABLES.values())
    for field in dataclasses.fields(Settings):
        if isinstance(field.default, (int, str)) and not isinstance(field.default, bool):
            assert f"`{field.default}`" in table[VARIABLES[field.name]], field.name


def test_every_variable_is_read_into_its_setting():
    base = load_settings({"SHOPML_HOME": "/tmp/shopml-settings"})
    for name, variable in VARIABLES.items():
        changed = []
        for sample in SAMPLES:
            try:
                value = getattr(load_settings({"SHOPML_HOME": "/tmp/y", variable: sample}), name)
            except ConfigError:
                continue
            changed.append(value != getattr(base, name))
        assert any(changed), f"{variable} does not set Settings.{name}"
    with pytest.raises(ConfigError, match="SHOPML_MAX_BODY_BYTES"):
        load_settings({"SHOPML_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="SHOPML_FASTPATH"):
        load_settings({"SHOPML_FASTPATH": "maybe"})
