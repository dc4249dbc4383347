"""The ranker's compiled trees (issue 17): the same scores as LightGBM to the last bit on the
ranker's own feature rows (NaN among them), kept with a saved model and reused only when their
key is this process's, and compiled anew otherwise."""

from __future__ import annotations

import json
import pickle

import lleaves.compiler
import numpy as np
import pytest
from test_ranker_serving import _sessions, served  # noqa: F401  (the fitted ranker fixture)

from features.ranking import CustomerProfile, rank_features
from models.recommenders import FallbackRecommender, compiled_trees
from models.recommenders.candidates import candidates
from models.recommenders.compiled_trees import KEY_FILE, OBJECT_FILE, CompiledForest


def _feature_rows(ranker, n: int = 30) -> np.ndarray:
    state, now = ranker.state_, ranker.state_.as_of_days
    blocks = []
    for items, weights in _sessions(ranker, n, seed=5):
        gens = [np.asarray(g._score_weights(items, weights), np.float32) for g in ranker.generators]
        c = candidates(gens, ranker.n_candidates, items)
        profile = CustomerProfile.session(items, weights, now)
        blocks.append(rank_features(state, profile, c.items, c.scores, c.ranks, now))
    for row in range(0, len(ranker.customer_ids_), 11):  # known customers: other windows
        gens = [np.asarray(g._score_one(row), np.float32) for g in ranker.generators]
        c = candidates(gens, ranker.n_candidates, None)
        blocks.append(rank_features(state, state.profile(row), c.items, c.scores, c.ranks, now))
    return np.vstack(blocks)


def test_compiled_trees_score_what_lightgbm_scores_to_the_last_bit(served, monkeypatch):  # noqa: F811
    ranker = served.primary
    X = _feature_rows(ranker)
    assert np.isnan(X).any()  # missing values take the trees' default branches
    trees = ranker._compiled_trees()
    assert isinstance(trees, CompiledForest)
    got = ranker._predict(X)
    np.testing.assert_array_equal(got, ranker._predict_lightgbm(X))
    np.testing.assert_array_equal(got, ranker.booster_.predict(X, num_threads=1))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(trees)).predict(X), got)
    assert trees.predict(X[:0]).shape == (0,)
    monkeypatch.setattr(compiled_trees, "CHUNK_ROWS", 7)  # a batch promoted in short chunks
    np.testing.assert_array_equal(trees.predict(X), got)
    with pytest.raises(ValueError, match="features"):
        trees.predict(X[:, :-1])


def test_a_saved_model_brings_its_compiled_trees_and_a_foreign_key_recompiles(
    served,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    folder = served.save(tmp_path / "model")
    ranker_dirs = [p.parent for p in folder.rglob(OBJECT_FILE)]
    assert len(ranker_dirs) == 1
    kept = ranker_dirs[0]
    X = _feature_rows(served.primary, 5)
    want = served.primary._predict_lightgbm(X)

    def no_compiling(*args, **kwargs):
        raise AssertionError("the trees were compiled although the model brought them")

    with monkeypatch.context() as m:  # the kept object is loaded, not compiled again
        m.setattr(lleaves.compiler, "compile_to_module", no_compiling)
        loaded = FallbackRecommender.load(folder)
    np.testing.assert_array_equal(loaded.primary._predict(X), want)
    assert loaded.primary.trees_ is not None

    key = json.loads((kept / KEY_FILE).read_text())
    (kept / KEY_FILE).write_text(json.dumps(key | {"cpu": "another-cpu"}))
    (kept / OBJECT_FILE).write_bytes(b"not for this machine")  # never loaded under that key
    calls = []
    real = lleaves.compiler.compile_to_module
    monkeypatch.setattr(
        lleaves.compiler, "compile_to_module", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = FallbackRecommender.load(folder)
    assert calls == [1]
    np.testing.assert_array_equal(again.primary._predict(X), want)
