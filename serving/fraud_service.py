"""BentoML service of the checkout: score one payment (`/score`) and take late labels (`/labels`).

The model comes only from the BentoML store (`shopml-fraud`, imported from the MLflow champion
by `shopml build`). Online features live in the process by default (one worker); set
`SHOPML_REDIS_URL` to keep them in Redis, which several workers need. If Redis is unreachable
the payment is still scored, flagged `degraded`, and counted in the metrics; never a 500.
The rules (block lists, amount limits, review rules) come from `SHOPML_FRAUD_RULES` and are
reloaded without a restart by `/rules/reload` or SIGHUP (serving/fraud_rules.py).
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import bentoml  # noqa: E402

from features.fraud.labels import LabelStore  # noqa: E402
from features.fraud.rules_store import RulesStore  # noqa: E402
from features.fraud.state_store import open_store  # noqa: E402
from serving import metrics  # noqa: E402
from serving.checkout import Checkout  # noqa: E402
from serving.endpoints import FastRoutes, endpoint  # noqa: E402
from serving.fraud_rules import RulesControl  # noqa: E402
from serving.fraud_schemas import (  # noqa: E402
    LabelsRequest,
    LabelsResponse,
    PaymentRequest,
    RulesReloadRequest,
    RulesReloadResponse,
    ScoreResponse,
)
from serving.history import warm_state  # noqa: E402
from serving.model_store import load_native, stored_model  # noqa: E402
from serving.service_common import optional_model, service_config  # noqa: E402
from shopml.errors import ConfigError  # noqa: E402
from shopml.log import get_logger  # noqa: E402
from shopml.settings import load_settings  # noqa: E402

log = get_logger("serving.fraud")


class CheckoutRoutes(FastRoutes):
    routes = {}


@bentoml.service(name="shopml-fraud", **service_config("SHOPML_FRAUD_WORKERS"))
class FraudService:
    """Fraud scores at checkout, from a calibrated LightGBM model and online features."""

    fraud_ref = optional_model("fraud")

    def __init__(self) -> None:
        self.ready = False
        settings = load_settings()
        workers = int(
            os.environ.get("SHOPML_FRAUD_WORKERS") or os.environ.get("SHOPML_WORKERS") or 1
        )
        if workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"{workers} fraud workers need shared online features: set SHOPML_REDIS_URL"
            )
        store, kind = open_store(settings.redis_url)
        labels = LabelStore.open(settings)  # the one label store, also read by `train fraud`
        loaded = load_native(
            stored_model(type(self).fraud_ref, "fraud"), "fraud", store=store, label_store=labels
        )
        engine = loaded.obj
        history = os.environ.get("SHOPML_FRAUD_HISTORY")
        if history:
            warm_state(engine, history)
        self.checkout = Checkout(engine, loaded.version_label)
        self.rules = RulesControl(
            engine, settings.fraud_rules, settings.rules_token, RulesStore.open(settings)
        )
        self.rules.on_sighup()
        engine.warm_up()
        metrics.model_loaded("fraud", loaded.version_label, loaded.mlflow_run_id)
        CheckoutRoutes.serve(self)
        gc.freeze()  # models and start-up objects never need collecting: shorter GC pauses
        self.ready = True
        log.info(
            "fraud service ready",
            extra={
                "model": loaded.version_label,
                "state_store": kind,
                "rules_version": self.rules.version,
            },
        )

    async def __is_ready__(self) -> bool:  # async: no thread hop per probe
        return self.ready

    @endpoint("/score", answers=ScoreResponse)
    def score(self, payment: PaymentRequest, /) -> dict:
        """Score one payment: probability, risk score, decision, reasons; records it online."""
        return self.checkout.score(payment)

    @endpoint("/labels", answers=LabelsResponse)
    def labels(self, request: LabelsRequest, /) -> dict:
        """Late fraud labels: update the online risk features and keep them for training."""
        return self.checkout.labels(request)

    @endpoint("/rules/reload", answers=RulesReloadResponse, headers=True)
    def reload_rules(self, request: RulesReloadRequest, /, headers: dict[str, str]) -> dict:
        """Read the rules file again (bearer token SHOPML_RULES_TOKEN); a bad file is a 422
        naming the field and the old rules stay in force."""
        self.rules.authorize(headers)
        return self.rules.reload()


FraudService.add_asgi_middleware(CheckoutRoutes)
