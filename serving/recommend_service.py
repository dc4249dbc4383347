"""BentoML service of the storefront: recommendations, similar products and demand forecasts.

Models come only from the BentoML store (imported from the MLflow champions by `shopml build`):
`shopml-recommender` (required) and `shopml-forecast` (optional: without it `/forecast`
answers 503 saying which model to train). `POST /feedback` stores what the storefront saw and
did with the lists in the feedback store (SQLite under SHOPML_HOME, or SHOPML_FEEDBACK_URL),
answering once the events are committed (`serving.feedback`). The answers hold no state, so it
may run several workers (each with its own writer into the one store).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS

import bentoml  # noqa: E402

from features.feedback import FeedbackStore  # noqa: E402
from serving import metrics  # noqa: E402
from serving.ab_split import ABSplitConfig  # noqa: E402
from serving.endpoints import FastRoutes, Unavailable, endpoint  # noqa: E402
from serving.feedback import FeedbackIntake  # noqa: E402
from serving.live_profile import (  # noqa: E402
    ProfileRequest,
    ProfileResponse,
    forecast_live,
    recommender_live,
    snapshot_answer,
)
from serving.model_store import load_challenger, load_native, stored_model  # noqa: E402
from serving.schemas import (  # noqa: E402
    FeedbackRequest,
    FeedbackResponse,
    ForecastRequest,
    ForecastResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from serving.service_common import challenger_model, optional_model, service_config  # noqa: E402
from serving.storefront import FORECAST_FILE, Forecasts, Storefront  # noqa: E402
from shopml.log import get_logger  # noqa: E402
from shopml.settings import load_settings  # noqa: E402

log = get_logger("serving.recommend")


class StorefrontRoutes(FastRoutes):
    routes = {}


@bentoml.service(name="shopml-recommend", **service_config("SHOPML_RECOMMEND_WORKERS"))
class RecommendService:
    """Recommendations for a customer or a session, similar products, and forecasts."""

    recommender_ref = optional_model("recommender")
    challenger_ref = challenger_model("recommender")  # the A/B split's, when the Bento has one
    forecast_ref = optional_model("forecast")

    def __init__(self) -> None:
        self.ready = False
        settings = load_settings()
        loaded = load_native(stored_model(type(self).recommender_ref, "recommender"), "recommender")
        split = ABSplitConfig.of(settings)
        challenger = load_challenger(type(self).challenger_ref, "recommender")
        self.storefront = Storefront(
            loaded.obj,
            loaded.version_label,
            challenger=challenger.obj if challenger is not None else None,
            challenger_version=challenger.version_label if challenger is not None else None,
            split=split,
        )
        metrics.model_loaded("recommender", loaded.version_label, loaded.mlflow_run_id)
        if challenger is not None:
            metrics.model_loaded("recommender", challenger.version_label, challenger.mlflow_run_id)
        elif split.share > 0:
            log.warning("SHOPML_AB_SHARE is set but the Bento carries no recommender challenger")
        self.feedback_intake = FeedbackIntake(FeedbackStore.open(settings))
        self.forecasts = None
        forecast_ref = type(self).forecast_ref
        if forecast_ref is not None and forecast_ref.stored is not None:
            stored = forecast_ref.stored
            self.forecasts = load_forecast_table(stored)
            if self.forecasts is not None:
                run_id = str(stored.info.labels.get("mlflow_run_id", ""))
                metrics.model_loaded("forecast", self.forecasts.model_version, run_id)
        self.live = recommender_live(loaded.path, loaded.obj, loaded.version_label)
        self.live_forecast = None  # live profiles (issue 15): None without a reference
        if self.forecasts is not None:
            self.live_forecast = forecast_live(type(self).forecast_ref.stored.path, self.forecasts)
        StorefrontRoutes.serve(self)
        gc.freeze()  # models and start-up objects never need collecting: shorter GC pauses
        self.ready = True
        log.info(
            "storefront ready",
            extra={
                "recommender": loaded.version_label,
                "forecast": bool(self.forecasts),
                "challenger": challenger.version_label if challenger is not None else None,
                "ab_share": split.share if self.storefront.ab_active else 0.0,
            },
        )

    async def __is_ready__(self) -> bool:  # async: no thread hop per probe
        return self.ready

    @endpoint("/recommend", answers=RecommendResponse)
    def recommend(self, request: RecommendRequest, /) -> dict:
        """Top-k products for a customer (their session blended in) or a new visitor's recent
        products, with filters (404 naming an unknown category)."""
        answer = self.storefront.recommend(request)
        if self.live is not None:
            self.live.observe_answer(request, answer)
        return answer

    @endpoint("/similar", answers=SimilarResponse)
    def similar(self, request: SimilarRequest, /) -> dict:
        """Products similar to the one on a product page, available ones by default, with the
        category and exclusion filters of /recommend (404 naming an unknown product/category)."""
        return self.storefront.similar(request)

    @endpoint("/feedback", answers=FeedbackResponse, batch=True)
    async def feedback(self, request: FeedbackRequest, /) -> dict:
        """Impressions, clicks, add-to-carts and purchases of the products shown (each naming
        the `request_id` of its answer), stored all or nothing before the answer."""
        return await self.feedback_intake.submit(request)

    @endpoint("/profile", answers=ProfileResponse)
    def profile(self, request: ProfileRequest, /) -> dict:
        """This worker's live profiles (recommendation requests and answers, forecast
        lookups, on each model's reference bins), which `shopml monitor --live URL` compares."""
        return snapshot_answer(self.live, self.live_forecast)

    @endpoint("/forecast", answers=ForecastResponse)
    def forecast(self, request: ForecastRequest, /) -> dict:
        """The latest P10/P50/P90 daily demand forecast of one or more products."""
        if self.forecasts is None:
            raise Unavailable(
                "this Bento has no forecast model (`shopml build` said why): train one with "
                "`shopml train forecast` or promote one with `shopml promote`, then `shopml build`"
            )
        answer = self.forecasts.forecast(request)
        if self.live_forecast is not None:
            self.live_forecast.observe(request.product_ids)
        return answer


def load_forecast_table(stored):
    """The served forecast arrays of a stored forecast model, or None when it has none."""
    if not (Path(stored.path) / FORECAST_FILE).is_file():
        log.warning("forecast model has no forecast table; /forecast disabled")
        return None
    version = f"shopml-forecast/{stored.info.labels.get('mlflow_version', '?')}"
    return Forecasts(Path(stored.path), version)


RecommendService.add_asgi_middleware(StorefrontRoutes)
