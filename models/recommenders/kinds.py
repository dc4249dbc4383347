"""The recommender kinds: the one table from a kind name (as saved in a model folder and
written in job configs) to its class."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.recommenders.als import ALSRecommender
from models.recommenders.bpr import BPRRecommender
from models.recommenders.composite import BlendRecommender, FallbackRecommender
from models.recommenders.ease import EASERecommender
from models.recommenders.interface import Recommender
from models.recommenders.item_knn import ItemKNNRecommender
from models.recommenders.popularity import PopularityRecommender
from models.recommenders.ranker import RankerRecommender

RECOMMENDERS: Mapping[str, type[Recommender]] = MappingProxyType(
    {
        m.kind: m
        for m in (
            PopularityRecommender,
            ALSRecommender,
            BPRRecommender,
            ItemKNNRecommender,
            EASERecommender,
            BlendRecommender,
            FallbackRecommender,
            RankerRecommender,
        )
    }
)
# kinds that are one model (a blend, the fallback chain and the ranker are built from these)
SINGLE_KINDS = ("popularity", "als", "bpr", "item_knn", "ease")
