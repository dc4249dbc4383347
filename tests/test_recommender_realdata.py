"""Quick checks on the public datasets (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

import pytest

from features.interactions import InteractionConfig, build_matrix, events_frame
from models.recommenders import EASERecommender
from training.recommender_eval import evaluate, truth_from_events
from training.splits import stratified_split

pytestmark = pytest.mark.realdata


def test_movielens_protocol_split_and_ease_level(datasets_dir):
    from features.loaders import movielens

    store = movielens.load(datasets_dir / "movielens-100k")
    cfg = InteractionConfig(event_weights={"purchase": 1.0}, binary=True)
    events = events_frame(store, cfg)
    split = stratified_split(events, ratio=0.75, by="product_id", seed=42)
    assert (len(split.train), len(split.test)) == (75_066, 24_934)
    train = build_matrix(split.train, cfg)
    model = EASERecommender(l2=500.0, dropout=0.25).fit(train, store.products)
    metrics = evaluate(model, truth_from_events(split.test, train), k=10)
    assert metrics["users"] == 943
    assert metrics["ndcg@10"] > 0.48  # the benchmark measures 0.485 (blend 0.492)
