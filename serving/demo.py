"""The serving steps of the README's main job: build, serve, call every endpoint once, stop.

`build_serve_and_call(store, settings, step)` is called by `cli/main_job.py` after the three
families are trained and registered. It prints each request and its answer, so a newcomer sees
what the storefront and the checkout get back.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import httpx
import pandas as pd

from serving import runner
from serving.build import build
from shopml.settings import Settings, load_settings


def example_requests(store) -> dict[str, list[tuple[str, dict]]]:
    """One request per endpoint, with ids taken from the store."""
    inter = store.interactions
    customer = str(inter["customer_id"].iloc[0])
    product = str(inter["product_id"].iloc[0])
    if store.order_lines is not None and len(store.order_lines):
        # the best seller: it is among the products the forecaster covers
        units = store.order_lines.groupby("product_id")["quantity"].sum()
        product = str(units.idxmax())
    recent = inter["product_id"].astype(str).drop_duplicates().head(3).tolist()
    calls: dict[str, list[tuple[str, dict]]] = {
        "recommend": [
            ("/recommend", {"customer_id": customer, "k": 5, "only_available": True}),
            ("/recommend", {"customer_id": "new-visitor", "recent_product_ids": recent, "k": 5}),
            ("/similar", {"product_id": product, "k": 5}),
            ("/forecast", {"product_ids": [product], "days": 7}),
        ]
    }
    if store.payments is not None and len(store.payments):
        p = store.payments.iloc[-1]
        payment = {
            "transaction_id": "demo-1",
            # a minute after the store's last payment, as the replayed online state expects
            "timestamp": (p["timestamp"] + pd.Timedelta(minutes=1)).isoformat(timespec="seconds"),
            "customer_id": str(p["customer_id"]),
            "card_id": str(p["card_id"]),
            "terminal_id": str(p["terminal_id"]),
            "amount": float(p["amount"]),
            "currency": str(p.get("currency", "EUR")),
        }
        calls["fraud"] = [
            ("/score", payment),
            ("/labels", {"labels": [{"transaction_id": "demo-1", "is_fraud": False}]}),
        ]
    return calls


def build_serve_and_call(
    store, settings: Settings | None = None, step=None, history: Path | None = None
) -> dict:
    """Build the Bentos, start them on free loopback ports, call each endpoint once, stop.

    `history` (a store folder) warms the fraud service's online features from recent payments.
    """
    settings = settings or load_settings()
    step = step or (lambda title: nullcontext())
    with step("Build: import the MLflow champions into BentoML and build the Bentos"):
        report = build(settings)
        for family, text in report.models.items():
            print(f"    model {family:<12} {text}")
        for svc, tag in report.bentos.items():
            print(f"    bento {svc:<12} {tag}")
    answers: dict = {}
    for service, calls in example_requests(store).items():
        if service not in report.bentos:
            continue
        with step(f"Serve {service} on 127.0.0.1 and call each endpoint once"):
            env = _fraud_env(store, history) if service == "fraud" else None
            server = runner.start(service, settings=settings, env=env)
            try:
                seconds = server.wait_ready(120)
                print(f"    {service} ready on {server.url} in {seconds:.1f} s")
                with httpx.Client(timeout=10) as client:
                    for path, payload in calls:
                        r = client.post(server.url + path, json=payload)
                        answers[path] = r.json()
                        print(f"    POST {path} {json.dumps(payload)}")
                        print(f"      -> {r.status_code} {_short(r.json())}")
            finally:
                server.stop()
    return answers


def _fraud_env(store, history: Path | None) -> dict[str, str]:
    """The demo fraud server's settings: warmed from `history`, and a time guard reaching back
    to the simulated store's last payment (the guard is relative to the server's clock, and a
    generated store lies in the past), so the demo payment is scored, not refused."""
    env = {"SHOPML_FRAUD_HISTORY": str(history)} if history else {}
    if store.payments is not None and len(store.payments):
        last = pd.Timestamp(store.payments["timestamp"].max())
        behind = pd.Timestamp.now(tz="UTC").tz_localize(None) - last + pd.Timedelta(days=1)
        env["SHOPML_FRAUD_MAX_BEHIND_S"] = str(max(int(behind.total_seconds()), 1))
    return env


def _short(answer, limit: int = 600) -> str:
    text = json.dumps(answer)
    return text if len(text) <= limit else text[: limit - 3] + "..."
