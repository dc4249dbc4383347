"""The tiny recommender case whose right answer is known: two disjoint co-purchase blocks
(A: a0-a3 bought by c0-c5, B: b0-b3 bought by c6-c11), every customer missing one product of
their own block, which a personal model must recommend first. Shared by the estimator contract
and the recommender tests, with small settings of every kind that find that answer."""

from __future__ import annotations

import pandas as pd

from models.recommenders import (
    ALSRecommender,
    BlendRecommender,
    BPRRecommender,
    EASERecommender,
    FallbackRecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RankerRecommender,
)

A = [f"a{i}" for i in range(4)]
B = [f"b{i}" for i in range(4)]
PRODUCTS = pd.DataFrame(
    {
        "product_id": A + B,
        "category": ["toys"] * 4 + ["books"] * 4,
        "price": 1.0,
        "available": [True, True, True, False, True, True, True, True],
    }
)


def block_events() -> pd.DataFrame:
    """The purchases of the two blocks (one a day per customer and product)."""
    rows = []
    t0 = pd.Timestamp("2024-01-01")
    for block, offset in ((A, 0), (B, 6)):
        for c in range(6):
            missing = block[c % 4]
            for j, p in enumerate(block):
                if p != missing:
                    rows.append((f"c{c + offset}", p, t0 + pd.Timedelta(days=c + j), "purchase", 1))
    return pd.DataFrame(
        rows, columns=["customer_id", "product_id", "timestamp", "event", "quantity"]
    )


# models that use the customer's own products (they find the missing one)
PERSONAL = {
    "als": lambda: ALSRecommender(factors=2, regularization=0.1, alpha=5.0, iterations=30),
    "bpr": lambda: BPRRecommender(factors=8, learning_rate=0.05, iterations=300),
    "knn_cosine": lambda: ItemKNNRecommender("cosine", K=10),
    "knn_bm25": lambda: ItemKNNRecommender("bm25", K=10),
    "ease": lambda: EASERecommender(l2=1.0),
    "ease_dropout": lambda: EASERecommender(l2=1.0, dropout=0.3),
    "category_popularity": lambda: PopularityRecommender(mode="category"),
    "blend": lambda: BlendRecommender(
        [EASERecommender(l2=1.0), ItemKNNRecommender("cosine")], weights=[1.0, 0.5]
    ),
    "fallback": lambda: FallbackRecommender(EASERecommender(l2=1.0)),
    "ranker": lambda: RankerRecommender(
        [EASERecommender(l2=1.0), PopularityRecommender(mode="category")], n_candidates=5
    ),
}
ALL = {
    **PERSONAL,
    "popularity": lambda: PopularityRecommender(),
    "trending": lambda: PopularityRecommender(mode="trending", window_days=3),
}
