"""Typed requests and answers of the storefront service (recommendations and forecasts).

Field constraints live here, so that a bad request is refused with a 4xx naming the field
before any model runs. Unknown fields are refused too (a misspelt filter would otherwise be
silently ignored).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.feedback import REQUEST_ID
from models.recommenders.selection import SESSION_WEIGHT

MAX_K = 200
Id = str


def _id(description: str):
    return Field(..., min_length=1, max_length=128, description=description)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(Strict):
    """Products for a customer at page render."""

    customer_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Customer id; omit for an anonymous session (recent products or popularity)",
    )
    k: int = Field(20, ge=1, le=MAX_K, description=f"How many products (1..{MAX_K})")
    exclude: list[str] = Field(
        default_factory=list, max_length=1000, description="Product ids never to show"
    )
    categories: list[str] | None = Field(
        None,
        max_length=200,
        description="Only products of these categories (404 naming any unknown)",
    )
    only_available: bool = Field(True, description="Only products currently available")
    exclude_purchased: bool = Field(True, description="Hide products the customer already bought")
    exclude_seen: bool = Field(
        False, description="Hide every product the customer viewed, carted or bought"
    )
    recent_product_ids: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="Products the visitor just interacted with: the fold-in of a new customer, "
        "blended into a known customer's answer",
    )
    session_weight: float = Field(
        SESSION_WEIGHT,
        ge=0.0,
        le=1.0,
        description="A known customer's recent products against their history "
        "(0 = history only, 1 = session only)",
    )


class Item(BaseModel):
    product_id: str
    score: float


class RecommendResponse(BaseModel):
    customer_id: str | None
    items: list[Item]
    model: str = Field(description="The primary model of the served recommender (e.g. als)")
    source: str = Field(description="Which model or fallback produced this list")
    fallback: bool = Field(description="True when the primary model could not answer itself")
    model_version: str = Field(description="MLflow registered model and version")
    variant: Literal["champion", "challenger"] = Field(
        description="Which model of the A/B split made the list (challenger: SHOPML_AB_SHARE)"
    )
    request_id: str = Field(description="Id of this answer: send it back with POST /feedback")


class SimilarRequest(Strict):
    """Products similar to the one on a product page."""

    product_id: str = _id("The product on the page")
    k: int = Field(20, ge=1, le=MAX_K, description=f"How many products (1..{MAX_K})")
    exclude: list[str] = Field(
        default_factory=list, max_length=1000, description="Product ids never to show"
    )
    categories: list[str] | None = Field(
        None,
        max_length=200,
        description="Only products of these categories (404 naming any unknown)",
    )
    only_available: bool = Field(True, description="Only products currently available")


class SimilarResponse(BaseModel):
    product_id: str
    items: list[Item]
    model: str
    source: str
    model_version: str
    variant: Literal["champion", "challenger"] = Field(
        description="Always champion: a product page has no customer to split on"
    )
    request_id: str = Field(description="Id of this answer: send it back with POST /feedback")


MAX_FEEDBACK_EVENTS = 1000


class FeedbackEventIn(Strict):
    """What happened to one product of a list shown: seen, clicked, carted or bought."""

    event: Literal["impression", "click", "add_to_cart", "purchase"]
    request_id: str = Field(
        ...,
        max_length=160,
        pattern=REQUEST_ID.pattern,
        description="The `request_id` of the /recommend or /similar answer that showed it",
    )
    product_id: str = _id("The product")
    customer_id: str | None = Field(
        None, min_length=1, max_length=128, description="The customer; omit for a visitor"
    )
    position: int | None = Field(
        None,
        ge=1,
        le=MAX_K,
        description="1-based rank of the product in that answer (required for an impression)",
    )
    quantity: int = Field(1, ge=1, le=10_000, description="Units (add_to_cart, purchase)")
    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\s]+$",
        description="The client's id of this event: a retry with the same id is stored once",
    )

    @model_validator(mode="after")
    def _impression_has_a_position(self) -> FeedbackEventIn:
        if self.event == "impression" and self.position is None:
            raise ValueError("an impression needs its position (1-based rank in the list)")
        if self.event_id is not None and self.event_id.startswith("g-"):
            raise ValueError("event_id: ids starting with 'g-' are the server's own")
        return self


class FeedbackRequest(Strict):
    """A batch of feedback events, stored all or nothing."""

    events: list[FeedbackEventIn] = Field(..., min_length=1, max_length=MAX_FEEDBACK_EVENTS)


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="Events in the batch, all in the store when this answers")
    stored: int = Field(description="Events stored by this request")
    duplicates: int = Field(description="Events whose event_id was stored before (not again)")


class ForecastRequest(Strict):
    """The latest demand forecast of one or more products."""

    product_ids: list[str] = Field(..., min_length=1, max_length=500)
    days: int | None = Field(
        None, ge=1, le=366, description="Only the first N forecast days (default: all)"
    )


class ProductForecast(BaseModel):
    product_id: str
    dates: list[str]
    p10: list[float]
    p50: list[float]
    p90: list[float]
    flags: list[str]


class ForecastResponse(BaseModel):
    forecasts: list[ProductForecast]
    model_version: str
    generated_at: str = Field(description="Last day of the data the forecast was made from")
