"""The storefront's A/B split and its live evaluation (issue 15): stable per customer, near the
configured share, the challenger's lists to its customers, Wilson intervals and the
two-proportion test against hand-computed values, and the gate's live check."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.feedback import FeedbackEvent, FeedbackStore, new_request_id, request_id_suffix
from models.family import FamilySpec, LiveABRule
from serving.ab_split import ABSplit, ABSplitConfig
from shopml.errors import ConfigError
from shopml.settings import load_settings
from training.live_recommender import (
    Rate,
    ab_results,
    live_check,
    live_rows,
    two_proportion_test,
    wilson,
)

REPO = Path(__file__).resolve().parents[1]
CUSTOMERS = [f"C{i:06d}" for i in range(20_000)]


# ------------------------------------------------------------------------------ the split
def test_each_customer_keeps_their_variant_across_instances_and_processes():
    split = ABSplit(ABSplitConfig(share=0.3, salt="exp-1"))
    here = [split.variant(c) for c in CUSTOMERS[:2000]]
    assert here == [
        ABSplit(ABSplitConfig(share=0.3, salt="exp-1")).variant(c) for c in CUSTOMERS[:2000]
    ]
    assert here == [split.variant(c) for c in CUSTOMERS[:2000]]  # and call after call
    code = (
        "from serving.ab_split import ABSplit, ABSplitConfig\n"
        "s = ABSplit(ABSplitConfig(share=0.3, salt='exp-1'))\n"
        "print(''.join('x' if s.variant(f'C{i:06d}') == 'challenger' else '.' for i in range(2000)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "".join("x" if v == "challenger" else "." for v in here)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.9])
def test_the_challenger_gets_near_the_configured_share(share):
    split = ABSplit(ABSplitConfig(share=share))
    got = sum(split.variant(c) == "challenger" for c in CUSTOMERS) / len(CUSTOMERS)
    sigma = math.sqrt(share * (1 - share) / len(CUSTOMERS))
    assert abs(got - share) < 4 * sigma, (share, got)


def test_a_new_salt_draws_other_customers_and_edges_are_exact():
    one = {
        c
        for c in CUSTOMERS
        if ABSplit(ABSplitConfig(share=0.5, salt="a")).variant(c) == "challenger"
    }
    two = {
        c
        for c in CUSTOMERS
        if ABSplit(ABSplitConfig(share=0.5, salt="b")).variant(c) == "challenger"
    }
    overlap = len(one & two) / len(CUSTOMERS)
    assert abs(overlap - 0.25) < 0.02  # independent draws: 0.5 x 0.5
    none, every = ABSplit(ABSplitConfig(share=0.0)), ABSplit(ABSplitConfig(share=1.0))
    assert {none.variant(c) for c in CUSTOMERS[:500]} == {"champion"}
    assert {every.variant(c) for c in CUSTOMERS[:500]} == {"challenger"}
    assert every.variant(None) == "champion"  # a visitor cannot be followed: champion
    half = ABSplit(ABSplitConfig(share=0.5, salt="a"))
    grown = ABSplit(ABSplitConfig(share=0.6, salt="a"))  # widening keeps everyone already in
    assert {c for c in CUSTOMERS if half.variant(c) == "challenger"} <= {
        c for c in CUSTOMERS if grown.variant(c) == "challenger"
    }


def test_a_bad_share_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="SHOPML_AB_SHARE"):
        load_settings({"SHOPML_AB_SHARE": "1.5"})
    with pytest.raises(ConfigError, match="SHOPML_AB_SHARE"):
        load_settings({"SHOPML_AB_SHARE": "half"})
    assert ABSplitConfig.of(load_settings({"SHOPML_AB_SHARE": "0.25"})).share == 0.25


# ------------------------------------------------------------------ the storefront's answers
def test_the_challenger_answers_its_customers_and_says_so():
    from recommender_blocks import PRODUCTS, block_events

    from features.feedback import parse_request_id
    from features.interactions import InteractionConfig, build_matrix
    from models.recommenders import EASERecommender, FallbackRecommender, PopularityRecommender
    from serving.schemas import RecommendRequest, RecommendResponse, SimilarRequest
    from serving.storefront import Storefront

    matrix = build_matrix(block_events(), InteractionConfig(event_weights={"purchase": 1.0}))
    champion = FallbackRecommender(EASERecommender(l2=1.0)).fit(matrix, PRODUCTS)
    challenger = PopularityRecommender(mode="global").fit(matrix, PRODUCTS)
    config = ABSplitConfig(share=0.5, salt="t")
    front = Storefront(champion, "shopml-recommender/1", challenger, "shopml-recommender/2", config)
    split = ABSplit(config)
    seen = set()
    for c in [f"c{i}" for i in range(12)]:
        answer = front.recommend(RecommendRequest(customer_id=c, k=2))
        RecommendResponse.model_validate(answer)
        want = split.variant(c)
        version = "shopml-recommender/2" if want == "challenger" else "shopml-recommender/1"
        assert (answer["variant"], answer["model_version"]) == (want, version)
        assert parse_request_id(answer["request_id"]) == ("recommend", want, version)
        assert answer["model"] == ("popularity" if want == "challenger" else "ease")
        seen.add(want)
    assert seen == {"champion", "challenger"}
    visitor = front.recommend(RecommendRequest(k=2))
    assert visitor["variant"] == "champion"
    similar = front.similar(SimilarRequest(product_id="a1", k=2))
    assert parse_request_id(similar["request_id"])[:2] == ("similar", "champion")
    alone = Storefront(champion, "shopml-recommender/1", split=ABSplitConfig(share=1.0))
    assert alone.recommend(RecommendRequest(customer_id="c1", k=2))["variant"] == "champion"


# ------------------------------------------------------------------------------ statistics
def test_wilson_interval_and_two_proportion_test_match_hand_computed_values():
    low, high = wilson(10, 100)  # p 0.1, z 1.96: centre 0.114798, half-width 0.059569
    assert low == pytest.approx(0.055229, abs=1e-5) and high == pytest.approx(0.174367, abs=1e-5)
    assert wilson(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and wilson(0, 50)[1] == pytest.approx(
        0.071348, abs=1e-5
    )
    assert wilson(0, 0) == (0.0, 1.0)
    # 100/1000 vs 130/1000: pooled 0.115, se 0.0142671, z 2.10274, one-sided p 0.017742
    z, p = two_proportion_test(Rate(100, 1000), Rate(130, 1000))
    assert z == pytest.approx(2.10274, abs=1e-4) and p == pytest.approx(0.017742, abs=1e-4)
    z, p = two_proportion_test(Rate(130, 1000), Rate(100, 1000))
    assert z < 0 and p > 0.9


# ------------------------------------------------------------------ live rates from feedback
ONE = request_id_suffix("recommend", "champion", "shopml-recommender/1")
TWO = request_id_suffix("recommend", "challenger", "shopml-recommender/2")


def shown_lists(suffix: str, n: int, clicked: int, bought: int, click_at: int = 1) -> list:
    """`n` lists of 3 impressions; the first `clicked` get a click at `click_at` (no position:
    looked up from the impression), the first `bought` a purchase of the product at 1."""
    events = []
    for i in range(n):
        rid = new_request_id(suffix)
        events += [
            FeedbackEvent.of(rid, "impression", f"P{j}", "C1", position=j + 1) for j in range(3)
        ]
        if i < clicked:
            events.append(FeedbackEvent.of(rid, "click", f"P{click_at - 1}", "C1"))
        if i < bought:
            events.append(FeedbackEvent.of(rid, "purchase", "P0", "C1", position=1))
    return events


def frame(events) -> pd.DataFrame:
    rows = [{**e.__dict__, "received_at": pd.Timestamp("2026-12-01")} for e in events]
    out = pd.DataFrame(rows)
    out["position"] = out["position"].astype("Int64")
    return out


def test_click_through_and_conversion_at_k_per_version_and_variant():
    events = shown_lists(ONE, 10, clicked=4, bought=1) + shown_lists(
        TWO, 5, clicked=2, bought=0, click_at=3
    )
    stray = FeedbackEvent.of(new_request_id(ONE), "click", "P0", "C1")  # no list impressed
    rows = {r.variant: r for r in live_rows(frame([*events, stray]), k=2)}
    one, two = rows["champion"], rows["challenger"]
    assert (one.model_version, one.lists, one.impressions) == ("shopml-recommender/1", 10, 30)
    assert (one.ctr.successes, one.ctr.trials, one.conversion.successes) == (4, 10, 1)
    assert (two.lists, two.ctr.successes) == (5, 0)  # clicks at position 3: not within k=2
    assert {r.variant: r.ctr.successes for r in live_rows(frame(events), k=3)}["challenger"] == 2


def test_the_gate_requires_a_significant_win_with_enough_lists(tmp_path):
    rule = LiveABRule(required=True, metric="ctr", k=3, alpha=0.05, min_lists=100)
    win = frame(
        shown_lists(ONE, 400, clicked=40, bought=0) + shown_lists(TWO, 400, clicked=70, bought=0)
    )
    assert live_check(rule, "2", win, "recommender").passed
    (ab,) = ab_results(win, k=3)
    assert ab.challenger_version == "shopml-recommender/2" and ab.lift == pytest.approx(0.75)
    tie = frame(
        shown_lists(ONE, 400, clicked=40, bought=0) + shown_lists(TWO, 400, clicked=44, bought=0)
    )
    outcome = live_check(rule, "2", tie, "recommender")
    assert not outcome.passed and "not a significant win" in outcome.detail
    small = frame(
        shown_lists(ONE, 50, clicked=5, bought=0) + shown_lists(TWO, 50, clicked=30, bought=0)
    )
    outcome = live_check(rule, "2", small, "recommender")
    assert not outcome.passed and "at least 100 lists" in outcome.detail
    outcome = live_check(rule, "3", win, "recommender")
    assert not outcome.passed and "no feedback on lists of shopml-recommender/3" in outcome.detail
    # through the gate's check, from a real store named by the settings
    from training.promotion import live_ab_check

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    FeedbackStore(url).write(shown_lists(ONE, 300, 30, 0) + shown_lists(TWO, 300, 60, 0))
    spec = FamilySpec(family="recommender", primary="ndcg_at_20", direction="higher", live_ab=rule)
    settings = load_settings({"SHOPML_HOME": str(tmp_path), "SHOPML_FEEDBACK_URL": url})
    check = live_ab_check(spec, "2", settings)
    assert check.passed and check.name == "live ctr@3", check.detail
    with pytest.raises(ValueError, match="only the recommender"):
        FamilySpec(family="fraud", primary="average_precision", direction="higher", live_ab=rule)


def test_the_monitor_table_shows_both_variants_and_alarms_on_a_worse_challenger(tmp_path):
    from training.live_performance import MonitorContext, live_tables

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    FeedbackStore(url).write(shown_lists(ONE, 300, 60, 6) + shown_lists(TWO, 300, 15, 0))
    settings = load_settings({"SHOPML_HOME": str(tmp_path), "SHOPML_FEEDBACK_URL": url})
    ctx = MonitorContext(
        "recommender", settings, "1", "run", {"ndcg_at_20": 0.31, "hit_rate_at_20": 0.5, "map": 0.1}
    )
    tables, notes = live_tables(ctx)
    assert notes == []
    live, ab = tables
    rows = {r[1]: r for r in live.rows}
    assert rows["champion"][:4] == ["shopml-recommender/1", "champion", 300, 900]
    assert (
        rows["champion"][4].startswith("20.00% [")
        and rows["champion"][6] == "hit_rate@20 0.5, ndcg@20 0.31"
    )
    assert rows["challenger"][4].startswith("5.00% [")
    assert any("significantly lower" in a for a in ab.alarms)
