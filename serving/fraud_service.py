"""BentoML service of the checkout: score one payment (`/score`) and take late labels (`/labels`).

The model comes only from the BentoML store (`shopml-fraud`, imported from the MLflow champion
by `shopml build`). Online features live in the process by default (one worker); set
`SHOPML_REDIS_URL` to keep them in Redis, which several workers need. If Redis is unreachable
the payment is still scored, flagged `degraded`, and counted in the metrics; never a 500.
The rules (block lists, amount limits, review rules) come from `SHOPML_FRAUD_RULES` and are
reloaded without a restart by `/rules/reload` or SIGHUP (serving/fraud_rules.py). Every served
decision goes to the decision log (`SHOPML_FRAUD_DECISION_SAMPLE` of them, all by default) off
the answer's path, and the Bento's `challenger`, when it carries one, scores each logged payment
in shadow (serving/shadow.py; off with `SHOPML_FRAUD_SHADOW=0`).
"""

from __future__ import annotations

import gc
import hmac
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import bentoml  # noqa: E402
from pydantic_core import to_json  # noqa: E402

from features.fraud.labels import LabelStore  # noqa: E402
from features.fraud.rules_store import RulesStore  # noqa: E402
from features.fraud.state_store import open_store  # noqa: E402
from models.family import NATIVE_ARTIFACT  # noqa: E402
from registry.metadata import model_kind  # noqa: E402
from serving import metrics  # noqa: E402
from serving.checkout import Checkout, TimeGuard  # noqa: E402
from serving.endpoints import FastRoutes, Forbidden, Unauthorized, endpoint  # noqa: E402
from serving.fraud_rules import RulesControl  # noqa: E402
from serving.fraud_schemas import (  # noqa: E402
    LabelsRequest,
    LabelsResponse,
    PaymentRequest,
    RulesReloadRequest,
    RulesReloadResponse,
    ScoreResponse,
    StateRequest,
    StateResponse,
)
from serving.history import StoreHealth, warm_once, warm_state  # noqa: E402
from serving.live_profile import (  # noqa: E402
    ProfileRequest,
    ProfileResponse,
    fraud_live,
    snapshot_answer,
)
from serving.model_store import load_challenger, load_native, stored_model  # noqa: E402
from serving.service_common import (  # noqa: E402
    challenger_model,
    optional_model,
    service_config,
)
from serving.shadow import (  # noqa: E402
    DecisionLogConfig,
    DecisionRecorder,
    RecordingEngine,
    ShadowModel,
)
from shopml.errors import ConfigError  # noqa: E402
from shopml.log import get_logger  # noqa: E402
from shopml.settings import load_settings  # noqa: E402

log = get_logger("serving.fraud")


class CheckoutRoutes(FastRoutes):
    """The fast routes, and `GET /readyz` answered here with the state store's health."""

    routes = {}
    service = None  # the started FraudService, once ready

    async def __call__(self, scope, receive, send) -> None:
        service = CheckoutRoutes.service
        if (
            service is None
            or scope["type"] != "http"
            or scope["path"] != "/readyz"
            or scope["method"] != "GET"
        ):
            await super().__call__(scope, receive, send)
            return
        body = to_json({"ready": service.ready, **service.health_status()})
        status = 200 if service.ready else 503
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@bentoml.service(name="shopml-fraud", **service_config("SHOPML_FRAUD_WORKERS"))
class FraudService:
    """Fraud scores at checkout, from a calibrated LightGBM model and online features."""

    fraud_ref = optional_model("fraud")
    challenger_ref = challenger_model("fraud")  # scored in shadow when the Bento carries one

    def __init__(self) -> None:
        self.ready = False
        settings = load_settings()
        workers = settings.fraud_workers or settings.workers or 1
        if workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"{workers} fraud workers need shared online features: set SHOPML_REDIS_URL"
            )
        store, kind = open_store(settings.redis_url)
        if kind == "memory":  # cannot be unreachable: no breaker (~6 us per store call)
            store = store.store
        labels = LabelStore.open(settings)  # the one label store, also read by `train fraud`
        loaded = load_native(
            stored_model(type(self).fraud_ref, "fraud"), "fraud", store=store, label_store=labels
        )
        engine = loaded.obj
        history = settings.fraud_history
        self.health = None
        if kind == "memory":
            if history:
                warm_state(engine, history)
        else:  # shared: warmed once per store, watched for loss
            self.health = StoreHealth(engine, history, warm_once(engine, history))
        behind = settings.fraud_max_behind_s
        guard = TimeGuard(
            settings.fraud_max_ahead_s * 1000,
            engine.feature_set.label_delay * 1000 if behind is None else behind * 1000,
        )
        self.recorder = self._recorder(engine, loaded.version_label, settings)
        self.checkout = Checkout(
            RecordingEngine(engine, self.recorder),
            loaded.version_label,
            guard,
            settings.fraud_retry_ttl_s,
            self.health,
        )
        self._state_token = settings.state_token.encode() if settings.state_token else None
        self.rules = RulesControl(
            engine, settings.fraud_rules, settings.rules_token, RulesStore.open(settings)
        )
        self.rules.on_sighup()
        engine.warm_up()
        self.live = fraud_live(loaded.path, engine, loaded.version_label)  # None: no reference
        self.checkout.profile = self.live
        self.recorder.start()
        metrics.model_loaded("fraud", loaded.version_label, loaded.mlflow_run_id)
        CheckoutRoutes.serve(self)
        CheckoutRoutes.service = self
        gc.freeze()  # models and start-up objects never need collecting: shorter GC pauses
        self.ready = True
        log.info(
            "fraud service ready",
            extra={
                "model": loaded.version_label,
                "state_store": kind,
                "rules_version": self.rules.version,
                "shadow": self.recorder.status()["shadow_version"],
                "decision_log_sample": self.recorder.config.sample_rate,
            },
        )

    def _recorder(self, engine, version: str, settings) -> DecisionRecorder:
        """The decision log's writer, with the Bento's challenger scoring in shadow when it
        carries one and SHOPML_FRAUD_SHADOW is on (its own scorer, no online state)."""
        quiet = settings.fraud_decision_quiet_ms
        config = DecisionLogConfig(  # scored and written in the log process, off the GIL
            sample_rate=settings.fraud_decision_sample,
            shadow=settings.fraud_shadow,
            process=True,
            **({} if quiet is None else {"quiet_ms": quiet}),
        )
        shadow = None
        if config.shadow:
            loaded = load_challenger(type(self).challenger_ref, "fraud")
            if loaded is not None:
                stored = type(self).challenger_ref.stored
                _, kind = model_kind(stored.info.metadata, f"BentoML model {stored.tag}", "fraud")
                native = str(loaded.path / NATIVE_ARTIFACT)  # the log process loads it there
                shadow = ShadowModel(loaded.obj, loaded.version_label, (kind, native))
                try:
                    shadow.check_features(engine)
                except ConfigError as err:  # serve without it, say why
                    log.warning("challenger not scored in shadow", extra={"reason": str(err)})
                    shadow = None
                else:
                    metrics.model_loaded("fraud-shadow", shadow.version, loaded.mlflow_run_id)
        return DecisionRecorder(None, engine, version, config, shadow)  # the process opens it

    async def __is_ready__(self) -> bool:  # async: no thread hop per probe
        return self.ready

    def health_status(self) -> dict:
        """The state store's health as `/readyz` reports it (degraded after a store loss)."""
        if self.health is None:
            return {"degraded": False, "degraded_reason": None, "state_resets": 0}
        self.health.check()
        return self.health.status()

    @endpoint("/score", answers=ScoreResponse)
    def score(self, payment: PaymentRequest, /) -> dict:
        """Score one payment: probability, risk score, decision, reasons; records it online."""
        traffic = self.recorder.traffic  # the decision log process waits out requests in flight
        traffic.begin()
        try:
            return self.checkout.score(payment)
        finally:
            traffic.end()

    @endpoint("/labels", answers=LabelsResponse, batch=True)
    def labels(self, request: LabelsRequest, /) -> dict:
        """Late fraud labels: update the online risk features and keep them for training."""
        return self.checkout.labels(request)

    @endpoint("/profile", answers=ProfileResponse)
    def profile(self, request: ProfileRequest, /) -> dict:
        """This worker's live profile (features and scores of the payments it scored, on the
        model's reference bins), which `shopml monitor fraud --live URL` compares."""
        return snapshot_answer(self.live)

    @endpoint("/rules/reload", answers=RulesReloadResponse, headers=True)
    def reload_rules(self, request: RulesReloadRequest, /, headers: dict[str, str]) -> dict:
        """Read the rules file again (bearer token SHOPML_RULES_TOKEN); a bad file is a 422
        naming the field and the old rules stay in force."""
        self.rules.authorize(headers)
        return self.rules.reload()

    @endpoint("/state", answers=StateResponse, headers=True)
    def state(self, request: StateRequest, /, headers: dict[str, str]) -> dict:
        """What the online store holds for one customer, card or terminal (bearer token
        SHOPML_STATE_TOKEN; 403 when none is set): counts and sums per window, known frauds,
        last payment time."""
        if self._state_token is None:
            raise Forbidden("the state view is disabled on this server: set SHOPML_STATE_TOKEN")
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._state_token
        ):
            raise Unauthorized("the state view needs the header 'Authorization: Bearer <token>'")
        return self.checkout.engine.store.read_key(request.entity, request.id)


CheckoutRoutes.install(FraudService)  # also: no dropped spans on its fast routes
