"""Recommenders behind one interface (`Recommender`): popularity, ALS, BPR, item-kNN, EASE,
blends and the cold-start fallback chain."""

from models.recommenders.als import ALSRecommender
from models.recommenders.base import (
    Recommendations,
    Recommender,
    RecommendFilters,
    check_k,
)
from models.recommenders.bpr import BPRRecommender
from models.recommenders.composite import BlendRecommender, FallbackRecommender
from models.recommenders.ease import EASERecommender
from models.recommenders.item_knn import ItemKNNRecommender
from models.recommenders.popularity import PopularityRecommender

MODELS: dict[str, type[Recommender]] = {
    m.name: m
    for m in (
        PopularityRecommender,
        ALSRecommender,
        BPRRecommender,
        ItemKNNRecommender,
        EASERecommender,
    )
}


def make_model(kind: str, **params) -> Recommender:
    """A recommender by name (`popularity`, `als`, `bpr`, `item_knn`, `ease`) with params."""
    if kind not in MODELS:
        raise ValueError(f"unknown recommender {kind!r}; choose one of {sorted(MODELS)}")
    return MODELS[kind](**params)


__all__ = [
    "ALSRecommender",
    "BPRRecommender",
    "BlendRecommender",
    "EASERecommender",
    "FallbackRecommender",
    "ItemKNNRecommender",
    "MODELS",
    "PopularityRecommender",
    "Recommendations",
    "RecommendFilters",
    "Recommender",
    "check_k",
    "make_model",
]
