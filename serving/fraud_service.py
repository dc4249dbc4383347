"""BentoML service of the checkout: score one payment (`/score`) and take late labels (`/labels`).

The model comes only from the BentoML store (`shopml-fraud`, imported from the MLflow champion
by `shopml build`). Online features live in the process by default (one worker); set
`SHOPML_REDIS_URL` to keep them in Redis, which several workers need. If Redis is unreachable
the payment is still scored, flagged `degraded`, and counted in the metrics; never a 500.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import bentoml  # noqa: E402

from serving import metrics  # noqa: E402
from serving.fastpath import FastRoutes, json_handler  # noqa: E402
from serving.fraud_schemas import (  # noqa: E402
    LabelsRequest,
    LabelsResponse,
    PaymentRequest,
    ScoreResponse,
)
from serving.model_store import load_native, stored_model  # noqa: E402
from serving.service_common import api_errors, optional_model, service_config  # noqa: E402
from shopml.errors import ConfigError  # noqa: E402
from shopml.log import get_logger  # noqa: E402

log = get_logger("serving.fraud")


class CheckoutRoutes(FastRoutes):
    routes = {}


@bentoml.service(name="shopml-fraud", **service_config("SHOPML_FRAUD_WORKERS"))
class FraudService:
    """Fraud scores at checkout, from a calibrated LightGBM model and online features."""

    fraud_ref = optional_model("fraud")

    def __init__(self) -> None:
        from serving.checkout import Checkout
        from serving.online import Breaker, make_store
        from shopml.settings import load_settings

        self.ready = False
        settings = load_settings()
        workers = int(
            os.environ.get("SHOPML_FRAUD_WORKERS") or os.environ.get("SHOPML_WORKERS") or 1
        )
        if workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"{workers} fraud workers need shared online features: set SHOPML_REDIS_URL"
            )
        store, kind = make_store(settings.redis_url)
        labels_dir = settings.home / "labels" / "fraud"
        loaded = load_native(
            stored_model(type(self).fraud_ref, "fraud"),
            "fraud",
            store=Breaker(store),
            labels_dir=labels_dir,
        )
        engine = loaded.obj
        if not hasattr(engine, "score_fields"):  # a bare scorer: wrap it in the engine
            from models.fraud import FraudEngine

            engine = FraudEngine(engine, store=Breaker(store), labels_dir=labels_dir)
        history = os.environ.get("SHOPML_FRAUD_HISTORY")
        if history:
            from serving.history import warm_state

            warm_state(engine, history)
        self.checkout = Checkout(engine, loaded.version_label, labels_dir)
        self._warm(engine)
        metrics.model_loaded("fraud", loaded.version_label, loaded.mlflow_run_id)
        CheckoutRoutes.register("/score", json_handler(PaymentRequest, self.checkout.score))
        CheckoutRoutes.register("/labels", json_handler(LabelsRequest, self.checkout.labels))
        gc.freeze()  # models and start-up objects never need collecting: shorter GC pauses
        self.ready = True
        log.info("fraud service ready", extra={"model": loaded.version_label, "state_store": kind})

    @staticmethod
    def _warm(engine) -> None:
        """Build LightGBM's single-row predictors now, not on the first checkout."""
        from serving.checkout import epoch_ms

        for _ in range(2):
            engine.score_fields(
                "warm-up", epoch_ms(None), 1.0, "warm-up", "warm-up", "warm-up", record=False
            )
        engine.scorer.explain(engine.features.new_vector())

    async def __is_ready__(self) -> bool:  # async: no thread hop per probe
        return self.ready

    @bentoml.api(route="/score")
    async def score(self, payment: PaymentRequest, /) -> ScoreResponse:
        """Score one payment: probability, risk score, decision, reasons; records it online."""
        with api_errors():
            return ScoreResponse.model_validate(self.checkout.score(payment))

    @bentoml.api(route="/labels")
    async def labels(self, request: LabelsRequest, /) -> LabelsResponse:
        """Late fraud labels: update the online risk features and keep them for training."""
        with api_errors():
            return LabelsResponse.model_validate(self.checkout.labels(request))


FraudService.add_asgi_middleware(CheckoutRoutes)
