"""Recommenders behind one interface (`Recommender`): popularity, ALS, BPR, item-kNN, EASE,
blends, the LightGBM ranker over their candidates and the cold-start fallback chain; `RECOMMENDERS` is the table of kinds."""

from models.base import make
from models.recommenders.als import ALSRecommender
from models.recommenders.bpr import BPRRecommender
from models.recommenders.composite import BlendRecommender, FallbackRecommender
from models.recommenders.ease import EASERecommender
from models.recommenders.interface import Recommender
from models.recommenders.item_knn import ItemKNNRecommender
from models.recommenders.kinds import RECOMMENDERS, SINGLE_KINDS
from models.recommenders.popularity import PopularityRecommender
from models.recommenders.ranker import RankerRecommender
from models.recommenders.selection import Recommendations, RecommendFilters, check_k


def make_model(kind: str, **params) -> Recommender:
    """A recommender by kind name (`popularity`, `als`, `bpr`, `item_knn`, `ease`, ...)."""
    return make(RECOMMENDERS, kind, **params)


__all__ = [
    "ALSRecommender",
    "BPRRecommender",
    "BlendRecommender",
    "EASERecommender",
    "FallbackRecommender",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "RankerRecommender",
    "RECOMMENDERS",
    "Recommendations",
    "RecommendFilters",
    "Recommender",
    "SINGLE_KINDS",
    "check_k",
    "make_model",
]
