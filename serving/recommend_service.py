"""BentoML service of the storefront: recommendations, similar products and demand forecasts.

Models come only from the BentoML store (imported from the MLflow champions by `shopml build`):
`shopml-recommender` (required) and `shopml-forecast` (optional: without it `/forecast`
answers 503 saying which model to train). Stateless, so it may run several workers.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import bentoml  # noqa: E402

from serving import metrics  # noqa: E402
from serving.fastpath import FastRoutes, Unavailable, json_handler  # noqa: E402
from serving.model_store import load_native, stored_model  # noqa: E402
from serving.schemas import (  # noqa: E402
    ForecastRequest,
    ForecastResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from serving.service_common import api_errors, optional_model, service_config  # noqa: E402
from shopml.log import get_logger  # noqa: E402

log = get_logger("serving.recommend")


class StorefrontRoutes(FastRoutes):
    routes = {}


@bentoml.service(name="shopml-recommend", **service_config("SHOPML_RECOMMEND_WORKERS"))
class RecommendService:
    """Recommendations for a customer or a session, similar products, and forecasts."""

    recommender_ref = optional_model("recommender")
    forecast_ref = optional_model("forecast")

    def __init__(self) -> None:
        # heavy imports here, not at module level: the BentoML supervisor process imports
        # this module only to read the service definition (faster cold start)
        from serving.storefront import Recommendations

        self.ready = False
        loaded = load_native(stored_model(type(self).recommender_ref, "recommender"), "recommender")
        self.recs = Recommendations(loaded.obj, loaded.version_label)
        metrics.model_loaded("recommender", loaded.version_label, loaded.mlflow_run_id)
        self.forecasts = None
        forecast_ref = type(self).forecast_ref
        if forecast_ref is not None and forecast_ref.stored is not None:
            stored = forecast_ref.stored
            fc = load_forecast_table(stored)
            if fc is not None:
                self.forecasts = fc
                metrics.model_loaded(
                    "forecast", fc.model_version, str(stored.info.labels.get("mlflow_run_id", ""))
                )
        StorefrontRoutes.register("/recommend", json_handler(RecommendRequest, self.recs.recommend))
        StorefrontRoutes.register("/similar", json_handler(SimilarRequest, self.recs.similar))
        StorefrontRoutes.register("/forecast", json_handler(ForecastRequest, self._forecast))
        gc.freeze()  # models and start-up objects never need collecting: shorter GC pauses
        self.ready = True
        log.info(
            "storefront ready",
            extra={"recommender": loaded.version_label, "forecast": bool(self.forecasts)},
        )

    async def __is_ready__(self) -> bool:  # async: no thread hop per probe
        return self.ready

    def _forecast(self, request: ForecastRequest) -> dict:
        if self.forecasts is None:
            raise Unavailable(
                "this Bento has no forecast model (`shopml build` said why): train one with "
                "`shopml train forecast` or promote one with `shopml promote`, then `shopml build`"
            )
        return self.forecasts.forecast(request)

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k products for a customer (or a session's recent products), with filters."""
        with api_errors():
            return RecommendResponse.model_validate(self.recs.recommend(request))

    @bentoml.api(route="/similar")
    async def similar(self, request: SimilarRequest, /) -> SimilarResponse:
        """Products similar to the one on a product page (404 naming an unknown product)."""
        with api_errors():
            return SimilarResponse.model_validate(self.recs.similar(request))

    @bentoml.api(route="/forecast")
    async def forecast(self, request: ForecastRequest, /) -> ForecastResponse:
        """The latest P10/P50/P90 daily demand forecast of one or more products."""
        with api_errors():
            return ForecastResponse.model_validate(self._forecast(request))


def load_forecast_table(stored):
    """The served forecast arrays of a stored forecast model, or None when it has none."""
    from pathlib import Path

    from serving.storefront import FORECAST_FILE, Forecasts

    if not (Path(stored.path) / FORECAST_FILE).is_file():
        log.warning("forecast model has no forecast table; /forecast disabled")
        return None
    version = f"shopml-forecast/{stored.info.labels.get('mlflow_version', '?')}"
    return Forecasts(Path(stored.path), version)


RecommendService.add_asgi_middleware(StorefrontRoutes)
