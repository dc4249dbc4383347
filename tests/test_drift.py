"""Drift statistics against hand-computed values, the drift rule on injected shifts and on
no-shift controls, the live profile against the batch profile of the same values, and the
monitor's HTML report in a real browser."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from features.reference import (
    PSI_EPSILON,
    TAIL_QUANTILES,
    ColumnProfile,
    DriftRule,
    Profile,
    bin_tests,
    categorical_profile,
    chi_square,
    cohens_h,
    compare_profiles,
    ks_binned,
    numeric_profile,
    psi,
    quantile_edges,
)
from shopml.errors import DataError

REF, NEW = [50, 30, 20], [40, 30, 30]


def test_psi_is_the_hand_computed_sum():
    # shares .5/.3/.2 -> .4/.3/.3: (.4-.5) ln(.4/.5) + 0 + (.3-.2) ln(.3/.2)
    expected = -0.1 * math.log(0.8) + 0.1 * math.log(1.5)
    assert psi(REF, NEW) == pytest.approx(expected, abs=1e-12)
    assert psi(REF, REF) == 0.0


def test_psi_floors_an_empty_bin_at_epsilon():
    # reference shares 1 and 0 (floored to 1e-4), new shares .5 and .5
    expected = (0.5 - 1) * math.log(0.5) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert PSI_EPSILON == 1e-4
    assert psi([100, 0], [50, 50]) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DataError, match="bins"):
        psi([1, 2], [1, 2, 3])


def test_chi_square_is_the_hand_computed_homogeneity_test():
    # column sums 90/60/50 over two rows of 100: expected 45/30/25 in each row
    statistic = 2 * (5**2 / 45 + 0 + 5**2 / 25)
    assert chi_square(REF, NEW)[0] == pytest.approx(statistic)
    # two degrees of freedom: the survival function is exp(-x/2)
    assert chi_square(REF, NEW)[1] == pytest.approx(math.exp(-statistic / 2))
    # bins empty on both sides do not count as degrees of freedom
    assert chi_square([*REF, 0], [*NEW, 0]) == pytest.approx(chi_square(REF, NEW))
    assert chi_square([10, 0], [0, 0]) == (0.0, 1.0)


def test_binned_ks_is_the_largest_cdf_gap_with_its_asymptotic_p_value():
    d, p = ks_binned(REF, NEW)  # CDFs .5/.8/1 and .4/.7/1
    assert d == pytest.approx(0.1)
    lam = 0.1 * math.sqrt(100 * 100 / 200)
    series = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 50))
    assert p == pytest.approx(series, rel=1e-9)


def test_bins_come_from_reference_quantiles_and_hold_nan_and_unknown_categories():
    assert quantile_edges(np.arange(100.0)).tolist() == pytest.approx(
        [9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1]
    )
    prof = numeric_profile("x", np.arange(100.0))
    assert prof.counts.tolist() == [10] * 10 + [0]
    # an edge value goes up (bin i holds edges[i-1] <= v < edges[i]); NaN to the last bin
    assert prof.bin_numeric(np.array([9.9, -5.0, 1e9, np.nan])).tolist() == [1, 0, 9, 10]
    mass = numeric_profile("flag", np.array([0.0] * 95 + [1.0] * 5))
    assert mass.counts.sum() == 100 and mass.with_values([0.0] * 7).counts.max() == 7
    cats = categorical_profile("c", ["a", "b", "a", None])
    assert cats.categories == ("a", "b") and cats.counts.tolist() == [2, 1, 0, 1]
    assert cats.with_values(["z", "a", None]).counts.tolist() == [1, 0, 1, 1]  # z: other
    restored = Profile.from_dict(Profile({"x": prof, "c": cats}).to_dict())
    assert restored.columns["x"].edges.tolist() == prof.edges.tolist()
    with pytest.raises(DataError, match="counts"):
        ColumnProfile("bad", "numeric", [1, 2], np.array([0.0, 1.0]))


def _synthetic(rng, n, shifted=()):
    """30 columns: 20 normal, 10 categorical; `shifted` columns moved (+0.8 sd: PSI about 0.6 /
    the category shares reversed)."""
    cols = {}
    for j in range(20):
        cols[f"n{j}"] = rng.normal(0.8 if f"n{j}" in shifted else 0.0, 1.0, n)
    for j in range(10):
        p = [0.4, 0.3, 0.2, 0.1] if f"c{j}" in shifted else [0.1, 0.2, 0.3, 0.4]
        cols[f"c{j}"] = rng.choice(list("abcd"), size=n, p=p)
    return cols


def _profile(cols, reference=None):
    if reference is None:
        return Profile(
            {
                n: numeric_profile(n, v) if n[0] == "n" else categorical_profile(n, v)
                for n, v in cols.items()
            }
        )
    return Profile({n: reference.columns[n].with_values(v) for n, v in cols.items()})


def test_no_shift_controls_rarely_alarm_and_injected_shifts_are_flagged_where_injected():
    rng = np.random.default_rng(7)
    reference = _profile(_synthetic(rng, 20_000))
    rule = DriftRule()
    false_alarms = 0
    for _ in range(20):
        control = compare_profiles(reference, _profile(_synthetic(rng, 3_000), reference), rule)
        false_alarms += any(d.drifted for d in control)
        shifted = {"n3", "n11", "c2"}
        drift = compare_profiles(
            reference, _profile(_synthetic(rng, 3_000, shifted), reference), rule
        )
        assert {d.name for d in drift if d.drifted} == shifted
    assert false_alarms <= 1  # family-wise alpha 0.01 over 30 columns (Bonferroni)


def test_psi_alone_would_alarm_on_a_small_sample_but_the_rule_does_not():
    rng = np.random.default_rng(3)
    ref = numeric_profile("x", rng.normal(size=50_000))
    small = ref.with_values(rng.normal(size=120))  # same distribution, 12 values per bin
    rule = DriftRule(psi_threshold=0.05)
    verdict = compare_profiles(Profile({"x": ref}), Profile({"x": small}), rule)[0]
    assert verdict.psi > 0.05 and not verdict.drifted
    # 20 values of the same distribution: too few for PSI, and nothing for the exact bin test
    few = ref.with_values(rng.normal(size=20))
    tiny = compare_profiles(Profile({"x": ref}), Profile({"x": few}))[0]
    assert not tiny.drifted and "too few" in tiny.reason
    # 20 values all beyond the top decile: too few for PSI, but the exact test of that bin
    # (10 % of the reference, 100 % of the new values: p about 0.1 ** 20) is evidence enough
    far = compare_profiles(Profile({"x": ref}), Profile({"x": ref.with_values([5.0] * 20)}))[0]
    assert (
        far.psi > 1 and far.drifted and far.bin_label.startswith(">=") and far.bin_p_value < 1e-15
    )


def test_bin_tests_are_cohens_h_and_the_exact_hypergeometric_test():
    # bin 0: 3 of 10 reference values, 8 of 10 new ones; pooled 11 of 20, 10 drawn
    h, p = bin_tests([3, 7], [8, 2])
    assert h[0] == pytest.approx(abs(2 * math.asin(math.sqrt(0.8)) - 2 * math.asin(math.sqrt(0.3))))
    upper = sum(math.comb(11, k) * math.comb(9, 10 - k) for k in range(8, 11)) / math.comb(20, 10)
    assert p[0] == pytest.approx(2 * upper, rel=1e-9)  # two-sided: the smaller tail doubled
    assert p[1] == pytest.approx(p[0]) and h[1] == pytest.approx(h[0])  # the same 2x2 table
    assert cohens_h(0.01, 0.04) == pytest.approx(0.2, abs=0.005)  # a 1 % tail grown to 4 %
    h0, p0 = bin_tests([5, 0, 5], [5, 0, 5])
    assert h0.tolist() == [0, 0, 0] and p0[1] == 1.0
    assert bin_tests([1, 2], [0, 0])[1].tolist() == [1.0, 1.0]  # an empty side tests nothing


def test_a_concentrated_small_share_shift_is_flagged_though_its_psi_is_small():
    """5 % of the new values in the reference's lowest 1 % (card testing: many tiny payments)
    moves PSI by about 0.03, far below 0.2; the tail bin's exact test flags it, on that
    column only, while the same-distribution controls stay quiet."""
    rng = np.random.default_rng(11)

    def draw(n):
        return {f"x{j}": rng.lognormal(3.5, 1.0, n) for j in range(10)}

    ref_cols = draw(10_000)
    edges = {n: numeric_profile(n, v, tails=TAIL_QUANTILES) for n, v in ref_cols.items()}
    reference = Profile(edges)
    assert len(edges["x0"].edges) == 11  # 9 deciles and the 1 % and 99 % quantiles
    rule = DriftRule()
    alarms = 0
    for _ in range(10):
        control = _profile(draw(5_000), reference)
        alarms += any(d.drifted for d in compare_profiles(reference, control, rule))
        attacked = draw(5_000)
        low = np.quantile(ref_cols["x4"], 0.01)
        attacked["x4"] = np.concatenate([attacked["x4"], rng.uniform(0.2, 0.9, 250) * low])
        drift = compare_profiles(reference, _profile(attacked, reference), rule)
        hit = [d for d in drift if d.drifted]
        assert [d.name for d in hit] == ["x4"]
        assert hit[0].psi < 0.2 and hit[0].bin_label.startswith("<") and hit[0].bin_effect > 0.2
    assert alarms == 0
    # without the concentrated shape (bin_effect 0) the broad rule alone misses it
    assert not any(
        d.drifted
        for d in compare_profiles(reference, _profile(attacked, reference), DriftRule(bin_effect=0))
    )


def test_a_category_share_moving_is_left_to_psi_but_an_unseen_category_is_concentrated():
    ref = categorical_profile("c", ["a"] * 500 + ["b"] * 300 + ["c"] * 200)
    moved = ref.with_values(["a"] * 380 + ["b"] * 420 + ["c"] * 200)  # h 0.24 on b, PSI 0.07
    verdict = compare_profiles(Profile({"c": ref}), Profile({"c": moved}))[0]
    assert not verdict.drifted and verdict.psi < 0.2
    unseen = ref.with_values(["a"] * 490 + ["b"] * 294 + ["c"] * 196 + ["z"] * 20)
    verdict = compare_profiles(Profile({"c": ref}), Profile({"c": unseen}))[0]
    assert verdict.drifted and verdict.bin_label == "other" and verdict.psi < 0.2


def test_card_testing_on_the_generated_store_is_flagged_on_the_features_it_touches():
    from experiments.bench_drift import card_testing, fraud_touched
    from features.fraud.batch import compute_columns, to_matrix
    from features.fraud.definition import FeatureSet
    from features.sources import SourceConfig, load_source
    from training.reference_profiles import fraud_batch, fraud_reference

    pay = load_source(SourceConfig(kind="generated", scale="tiny", seed=0)).payments
    fs, day = FeatureSet(), np.timedelta64(1, "D")
    end = pay["timestamp"].max().normalize() + day
    attacked = card_testing(pay, end - 7 * day, np.random.default_rng(0), share=0.3)
    flagged = {}
    reference = None
    for case, frame in (("control", pay), ("attack", attacked)):
        cols, t = compute_columns(frame, fs), frame["timestamp"]
        if reference is None:
            rows = np.flatnonzero(((t >= end - 20 * day) & (t < end - 13 * day)).to_numpy())
            reference = fraud_reference(to_matrix(cols, fs.names, rows), fs.names, np.zeros(1))
        rows = np.flatnonzero((t >= end - 7 * day).to_numpy())
        new = fraud_batch(reference, to_matrix(cols, fs.names, rows), fs.names, None)
        flagged[case] = {d.name for d in compare_profiles(reference, new) if d.drifted}
    # the control flags no feature the attack touches; on this 90-day store with few terminals
    # the label-derived time since a customer's or terminal's first fraud creeps from week to
    # week (one terminal's first fraud moves all its payments into one thin bin): those two
    # may flag, with or without the attack (on the small store's 20 seeds: never)
    label_derived = {"customer_secs_since_first_fraud", "terminal_secs_since_first_fraud"}
    assert flagged["control"] <= label_derived
    assert "amount" in flagged["attack"] and len(flagged["attack"]) >= 3
    assert all(fraud_touched(name) for name in flagged["attack"] - flagged["control"])


def test_the_live_fraud_profile_counts_what_the_batch_profile_counts(monkeypatch):
    from serving import live_profile

    monkeypatch.setattr(live_profile.metrics, "live_psi", lambda *a: None)
    rng = np.random.default_rng(0)
    names = [f"f{j}" for j in range(12)]
    X = rng.normal(size=(5_000, 12))
    X[:, 3] = rng.integers(0, 3, 5_000)
    cols = {n: numeric_profile(n, X[:, j]) for j, n in enumerate(names)}
    reference = Profile({**cols, "score": numeric_profile("score", rng.random(5_000))})
    live = live_profile.FraudLive(reference, names, "shopml-fraud/1", window=10**6)
    Y, s = rng.normal(size=(1_000, 12)), rng.random(1_000)
    Y[::5, 4] = np.nan
    for i in range(1_000):
        live.observe(Y[i], s[i])
    snap = live.snapshot()
    got = Profile.from_dict(snap["profile"])
    assert snap["observations"] == 1_000 and snap["model_version"] == "shopml-fraud/1"
    for j, n in enumerate(names):
        assert got.columns[n].counts.tolist() == reference.columns[n].counts_of(Y[:, j]).tolist()
    assert got.columns["score"].counts.tolist() == reference.columns["score"].counts_of(s).tolist()
    # the window rolls: 5 blocks of 1,000 (filled 256 payments at a time); after 12,000
    # payments only the newest 4 to 5 blocks are kept
    rolling = live_profile.FraudLive(reference, names, "v", window=5_000, blocks=5)
    for i in range(12_000):
        rolling.observe(Y[i % 1_000], 0.5)
    assert 4_000 <= rolling.snapshot()["observations"] <= 5_000 + 5 * live_profile.FLUSH_ROWS


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_monitor_report_renders_in_a_real_browser(tmp_path):
    from training.monitor import MonitorOutcome
    from training.monitor_report import write_report

    rng = np.random.default_rng(1)
    reference = _profile(_synthetic(rng, 5_000))
    new = _profile(_synthetic(rng, 2_000, {"n1", "c0"}), reference)
    drift = compare_profiles(reference, new, DriftRule())
    outcome = MonitorOutcome("fraud", "3", "a test batch", "PSI > 0.2", drift)
    path = write_report(outcome, reference, new, tmp_path / "monitor.html")
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'id="verdict"' in dom and "DRIFT: 2 column(s)" in dom
    assert 'id="dist-n1"' in dom and dom.count("<rect") >= 2 * 30
    assert dom.index('id="dist-n1"') < dom.index('id="dist-n0"')  # drifted columns first


def test_the_storefront_live_profiles_count_request_kinds_categories_and_lookups(monkeypatch):
    import types

    import pandas as pd

    from serving import live_profile
    from training.reference_profiles import recommender_reference

    monkeypatch.setattr(live_profile.metrics, "live_psi", lambda *a: None)
    products = pd.DataFrame({"product_id": ["p1", "p2", "p3"], "category": ["a", "b", "b"]})
    inter = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "new"],
            "product_id": ["p1", "p2", "p3", "p1"],
            "timestamp": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:01"] * 2),
            "session_id": ["s1", "s1", "s2", "s3"],
        }
    )
    reference = recommender_reference(inter, products, {"c1", "c2"}, ["p1", "p2", "p3"])
    # sessions: c1 with two events (session), c2 one (known), an unknown visitor (new)
    assert reference.columns["request_kind"].counts.tolist() == [1, 1, 1, 0, 0]
    assert reference.columns["category"].counts.tolist() == [2, 2, 0, 0]
    model = types.SimpleNamespace(
        customer_index_={"c1": 0, "c2": 1},
        product_ids_=np.array(["p1", "p2", "p3"]),
        category_codes_=np.array([0, 1, 1]),
        categories_=np.array(["a", "b"]),
    )
    live = live_profile.RecommenderLive(reference, model, "shopml-recommender/2")
    for customer, recent in (("c1", []), ("c1", ["p2"]), ("stranger", ["p1", "p9"])):
        request = types.SimpleNamespace(customer_id=customer, recent_product_ids=recent)
        live.observe_answer(request, {"items": [{"product_id": "p3"}, {"product_id": "p1"}]})
    got = Profile.from_dict(live.snapshot()["profile"])
    assert got.columns["request_kind"].counts.tolist() == [1, 1, 1, 0, 0]  # known, new, session
    assert got.columns["category"].counts.tolist() == [1, 1, 0, 0]  # p2 (b), p1 (a); p9 unknown
    assert got.columns["served_category"].counts.tolist() == [3, 3, 0, 0]
    forecast_ref = Profile({"forecast_level": numeric_profile("forecast_level", np.arange(100.0))})
    p50 = np.array([[5.0, 5.0], [50.0, 52.0]])
    lookups = live_profile.ForecastLive(forecast_ref, ["p1", "p2"], p50, "shopml-forecast/1")
    lookups.observe(["p1", "p2", "p2", "unknown"])
    counts = Profile.from_dict(lookups.snapshot()["profile"]).columns["forecast_level"].counts
    assert counts[0] == 1 and counts[5] == 2 and counts.sum() == 3  # levels 5 and 51


def test_a_promotion_covers_its_last_day_in_the_price_index():
    """`end` is a promotion's last day, inclusive (as the contract and the known-future inputs
    read it): a line sold that afternoon is promoted and stays out of the price index."""
    import pandas as pd

    from training.reference_profiles import promoted

    products = pd.DataFrame({"product_id": ["p1", "p2"], "category": ["a", "b"]})
    promotions = pd.DataFrame(
        {
            "product_id": ["p1", None],
            "category": [None, "b"],
            "start": pd.to_datetime(["2024-03-01", "2024-03-05"]),
            "end": pd.to_datetime(["2024-03-03", "2024-03-05"]),
        }
    )
    lines = pd.DataFrame(
        {
            "product_id": ["p1", "p1", "p1", "p2", "p2"],
            "timestamp": pd.to_datetime(
                [
                    "2024-02-29 23:00",
                    "2024-03-03 15:00",  # the last day of p1's promotion
                    "2024-03-04 00:30",
                    "2024-03-05 20:00",  # a one-day category promotion
                    "2024-03-06 08:00",
                ]
            ),
        }
    )
    assert promoted(lines, products, promotions).tolist() == [False, True, False, True, False]
