"""The storefront's answers (recommendations, similar products, forecasts) from loaded models.

Pure logic with no BentoML in it: requests are already-validated pydantic objects, answers
are plain dicts shaped like the response schemas (serialised directly on the hot path). The
recommender is used only through its interface: `recommend_with_context`, `similar_items` and
`name` (the primary model's name, which a fallback chain answers as). An answer is a fallback
unless the primary model made it (alone, or with the customer's session blended in; the ranker
also when it ranks a session's candidates per request, `source: "ranker:fold-in"`).

With a challenger and an A/B split (`serving.ab_split`), a customer in the split's share gets
the challenger's list; every answer says its `variant` and carries a `request_id` naming the
endpoint, variant and model version, which `POST /feedback` events send back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.feedback import new_request_id, request_id_suffix
from models.recommenders import Recommender, RecommendFilters
from serving import metrics
from serving.ab_split import CHALLENGER, CHAMPION, ABSplit, ABSplitConfig
from serving.schemas import ForecastRequest, RecommendRequest, SimilarRequest
from shopml.errors import UnknownEntity

FORECAST_FILE = "forecast.npz"


def _items(rec) -> list[dict]:
    ids = rec.product_ids.tolist()
    scores = np.asarray(rec.scores, dtype=np.float64).tolist()
    return [{"product_id": p, "score": s} for p, s in zip(ids, scores, strict=True)]


@dataclass
class Variant:
    """One served recommender of the split: the model, its version and what its answers say."""

    name: str  # champion / challenger
    model: Recommender
    model_version: str
    primary_name: str = ""
    own_sources: set[str] = field(default_factory=set)
    recommend_suffix: str = ""
    similar_suffix: str = ""

    def __post_init__(self) -> None:
        self.primary_name = self.model.name
        self.own_sources = {self.model.name, f"{self.model.name}:session"}
        if self.model.name == "ranker":  # a session or new visitor is ranked per request
            self.own_sources.add("ranker:fold-in")
        self.recommend_suffix = request_id_suffix("recommend", self.name, self.model_version)
        self.similar_suffix = request_id_suffix("similar", self.name, self.model_version)


class Storefront:
    """Recommendations and similar products from the champion recommender, and from the
    challenger for the customers the A/B split gives it."""

    def __init__(
        self,
        model: Recommender,
        model_version: str,
        challenger: Recommender | None = None,
        challenger_version: str | None = None,
        split: ABSplitConfig | None = None,
    ) -> None:
        self.champion = Variant(CHAMPION, model, model_version)
        self.challenger = (
            Variant(CHALLENGER, challenger, challenger_version or "?")
            if challenger is not None
            else None
        )
        self.split = ABSplit(split or ABSplitConfig())
        self.model = model
        self.model_version = model_version
        self.primary_name = model.name

    @property
    def ab_active(self) -> bool:
        """True when some customers are served the challenger."""
        return self.challenger is not None and self.split.active

    def variant_of(self, customer_id: str | None) -> Variant:
        """The variant that answers this customer."""
        if self.challenger is not None and self.split.variant(customer_id) == CHALLENGER:
            return self.challenger
        return self.champion

    def recommend(self, req: RecommendRequest) -> dict:
        filters = RecommendFilters(
            exclude_purchased=req.exclude_purchased,
            exclude_seen=req.exclude_seen,
            exclude_ids=tuple(req.exclude),
            categories=tuple(req.categories) if req.categories is not None else None,
            only_available=req.only_available,
        )
        customer = req.customer_id
        served = self.variant_of(customer)
        hint = req.categories[0] if req.categories and len(req.categories) == 1 else None
        rec = served.model.recommend_with_context(
            customer or "",
            req.k,
            filters,
            recent_product_ids=req.recent_product_ids,
            category=hint,
            session_weight=req.session_weight,
        )  # an unknown category: UnknownEntity -> 404 naming it
        source = rec.source
        fallback = source not in served.own_sources
        metrics.recommendation("recommend", source, fallback, served.model_version)
        return {
            "customer_id": customer,
            "items": _items(rec),
            "model": served.primary_name,
            "source": source,
            "fallback": fallback,
            "model_version": served.model_version,
            "variant": served.name,
            "request_id": new_request_id(served.recommend_suffix),
        }

    def similar(self, req: SimilarRequest) -> dict:
        filters = RecommendFilters(
            exclude_purchased=False,
            exclude_ids=tuple(req.exclude),
            categories=tuple(req.categories) if req.categories is not None else None,
            only_available=req.only_available,
        )
        served = self.champion  # a product page has no customer to split on
        # an unknown product or category: UnknownEntity -> 404 naming it
        rec = served.model.similar_items([req.product_id], req.k, filters)[0]
        metrics.recommendation("similar", rec.source, False, served.model_version)
        return {
            "product_id": req.product_id,
            "items": _items(rec),
            "model": served.primary_name,
            "source": rec.source,
            "model_version": served.model_version,
            "variant": served.name,
            "request_id": new_request_id(served.similar_suffix),
        }


class Forecasts:
    """The latest P10/P50/P90 forecast table, kept as arrays indexed by product."""

    def __init__(self, folder: Path, model_version: str) -> None:
        with np.load(Path(folder) / FORECAST_FILE, allow_pickle=False) as z:
            self.product_ids = z["product_ids"].astype(str)
            self.dates = z["dates"].astype(str).tolist()
            self.p10 = z["p10"]
            self.p50 = z["p50"]
            self.p90 = z["p90"]
            self.flags = z["flags"].astype(str)
            self.generated_at = str(z["generated_at"]) if "generated_at" in z.files else ""
        self.index = {p: i for i, p in enumerate(self.product_ids.tolist())}
        self.model_version = model_version

    def forecast(self, req: ForecastRequest) -> dict:
        unknown = [p for p in req.product_ids if p not in self.index]
        if unknown:
            raise UnknownEntity("product (no forecast)", unknown)
        days = req.days or len(self.dates)
        out = []
        for p in req.product_ids:
            i = self.index[p]
            out.append(
                {
                    "product_id": p,
                    "dates": self.dates[:days],
                    "p10": self.p10[i, :days].tolist(),
                    "p50": self.p50[i, :days].tolist(),
                    "p90": self.p90[i, :days].tolist(),
                    "flags": self.flags[i, :days].tolist(),
                }
            )
        metrics.forecast_request(self.model_version)
        return {
            "forecasts": out,
            "model_version": self.model_version,
            "generated_at": self.generated_at,
        }


def write_forecast_table(frame, folder: Path, generated_at: str = "") -> Path:
    """Save a forecast table (product_id, date, p10, p50, p90[, flag]) as the served arrays.

    Used by `shopml build`, never per request. Products x dates must form a full grid.
    """
    frame = frame.sort_values(["product_id", "date"])
    products = frame["product_id"].astype(str).unique()
    dates = np.sort(frame["date"].unique())
    n, h = len(products), len(dates)
    if len(frame) != n * h:
        raise ValueError(f"forecast table is not a full grid: {len(frame)} rows for {n}x{h}")
    flags = (
        frame["flag"].astype(str).to_numpy() if "flag" in frame else np.full(len(frame), "model")
    )
    day_strings = np.datetime_as_string(np.asarray(dates, dtype="datetime64[D]"))
    path = Path(folder) / FORECAST_FILE
    np.savez(
        path,
        product_ids=products.astype(str),
        dates=day_strings.astype(str),
        p10=frame["p10"].to_numpy(float).reshape(n, h),
        p50=frame["p50"].to_numpy(float).reshape(n, h),
        p90=frame["p90"].to_numpy(float).reshape(n, h),
        flags=flags.reshape(n, h).astype(str),
        generated_at=np.array(generated_at),
    )
    return path
