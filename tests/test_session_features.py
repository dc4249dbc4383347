"""A session's ranking features (issue 17): the shortcut for a profile used all today (0 days
since its products and categories, no per-category maximum) writes what the general
definition computes for the same products and days, to the last bit."""

from __future__ import annotations

import dataclasses

import numpy as np
from test_ranker_serving import _sessions, served  # noqa: F401  (the fitted ranker fixture)

from features.ranking import CustomerProfile, feature_names, rank_features
from models.recommenders.candidates import candidates


def test_a_session_s_features_are_the_general_definition_s(served):  # noqa: F811
    ranker = served.primary
    state, now = ranker.state_, ranker.state_.as_of_days
    names = feature_names(ranker.generator_names_)
    since = [names.index("pair_days_since"), names.index("pair_days_since_category")]
    own_seen = 0
    for items, weights in _sessions(ranker, 25, seed=7):
        gens = [np.asarray(g._score_weights(items, weights), np.float32) for g in ranker.generators]
        c = candidates(gens, ranker.n_candidates, None)  # its own products may be among them
        session = CustomerProfile.session(items, weights, now)
        assert session.used_on == now
        general = dataclasses.replace(session, used_on=None)  # the same history, not marked
        got = rank_features(state, session, c.items, c.scores, c.ranks, now)
        want = rank_features(state, general, c.items, c.scores, c.ranks, now)
        np.testing.assert_array_equal(got, want)  # NaN where NaN, every other bit equal
        own = np.isin(c.items, items)
        own_seen += int(own.sum())
        assert (got[own, since[0]] == 0).all() and np.isnan(got[~own, since[0]]).all()
        # a product of a category the session used is 0 days from it, any other NaN
        codes = state.category_codes
        used = np.isin(codes[c.items], codes[items][codes[items] >= 0])
        assert (got[used, since[1]] == 0).all() and np.isnan(got[~used, since[1]]).all()
    assert own_seen  # the session's own products were ranked too
