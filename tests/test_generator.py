"""The built-in store generator: deterministic, valid, and with the structure later models learn."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.contract import TABLES, validate
from features.generator import SCALES, GeneratorConfig, generate
from features.generator.ids import make_ids
from features.store import Store


@pytest.fixture(scope="module")
def store() -> Store:
    return generate(GeneratorConfig(scale="tiny", seed=0))


@pytest.fixture(scope="module")
def purchases(store: Store) -> pd.DataFrame:
    it = store.interactions
    return it[it.event == "purchase"]


def test_same_seed_same_tables_and_other_seed_differs(store: Store) -> None:
    again = generate(GeneratorConfig(scale="tiny", seed=0))
    assert set(again.tables()) == set(store.tables())
    for table in store.tables():
        pd.testing.assert_frame_equal(getattr(store, table), getattr(again, table))
    other = generate(GeneratorConfig(scale="tiny", seed=1))
    assert other.fingerprint_id() != store.fingerprint_id()


def test_every_table_already_conforms_to_the_contract(store: Store) -> None:
    assert set(store.tables()) == set(TABLES) - {"closures"}  # the simulated shop never closes
    for table, df in store.tables().items():
        pd.testing.assert_frame_equal(validate(table, df), df, check_like=False)
    store.validated()
    assert isinstance(store.interactions.customer_id.iloc[0], str)
    assert store.payments.card_id.str.fullmatch(r"card_\d{6}").all()


def test_tiny_is_small_but_has_enough_of_everything(store: Store) -> None:
    rows = store.row_counts()
    assert rows["customers"] == SCALES["tiny"].customers
    assert rows["products"] == SCALES["tiny"].products
    assert 20_000 <= rows["interactions"] <= 50_000
    assert 2_000 <= rows["payments"] <= 20_000
    assert store.payments.is_fraud.sum() >= 50
    days = (store.interactions.timestamp.max() - store.interactions.timestamp.min()).days
    assert days >= SCALES["tiny"].days - 2


def test_config_rejects_unknown_fields_and_applies_overrides() -> None:
    with pytest.raises(ValidationError):
        GeneratorConfig(scale="tiny", sead=1)
    with pytest.raises(ValidationError):
        GeneratorConfig(scale="huge")
    cfg = GeneratorConfig(scale="tiny", days=30, customers=50, products=40, start=date(2024, 1, 1))
    s = generate(cfg)
    assert len(s.customers) == 50 and len(s.products) == 40
    ts = s.interactions.timestamp
    assert ts.min() >= pd.Timestamp("2024-01-01") and ts.max() < pd.Timestamp("2024-01-31")
    assert s.payments.timestamp.max() < pd.Timestamp("2024-01-31")


def test_ids_are_zero_padded_strings() -> None:
    assert make_ids("card_", 3, 6).tolist() == ["card_000000", "card_000001", "card_000002"]
    assert make_ids("T", 12, 1)[-1] == "T11"
    assert make_ids("x", 0).size == 0


# --- catalog, customers, browsing -------------------------------------------------------------


def test_popularity_has_a_long_tail(purchases: pd.DataFrame, store: Store) -> None:
    counts = purchases.product_id.value_counts()
    share = counts.cumsum() / counts.sum()
    n = len(store.products)
    # tiny's 200 products: top 10% > 30%, top 20% > 50% (the small scale: top 10% > 50%)
    assert share.iloc[n // 10 - 1] > 0.3
    assert share.iloc[n // 5 - 1] > 0.5


def test_funnel_views_then_carts_then_purchases(store: Store) -> None:
    events = store.interactions.event.value_counts()
    assert events["view"] > 3 * events["add_to_cart"] > 3 * events["purchase"] / 2
    assert events["add_to_cart"] > events["purchase"] > 0
    # every purchase was carted in the same session before
    it = store.interactions
    carts = it[it.event == "add_to_cart"].groupby(["session_id", "product_id"]).timestamp.min()
    buys = it[it.event == "purchase"].groupby(["session_id", "product_id"]).timestamp.min()
    assert (carts.reindex(buys.index) < buys).all()


def test_interactions_happen_after_signup_and_launch_and_within_the_period(store: Store) -> None:
    it = store.interactions.merge(store.customers[["customer_id", "signup_at"]], on="customer_id")
    assert (it.timestamp >= it.signup_at).all()
    it = it.merge(store.products[["product_id", "launched_at"]], on="product_id")
    assert (it.timestamp >= it.launched_at).all()
    start = pd.Timestamp(GeneratorConfig().start)
    assert it.timestamp.min() >= start
    assert it.timestamp.max() < start + pd.Timedelta(days=SCALES["tiny"].days + 1)


def test_segments_buy_their_preferred_categories(store: Store, purchases: pd.DataFrame) -> None:
    m = purchases.merge(store.customers[["customer_id", "segment"]], on="customer_id")
    m = m.merge(store.products[["product_id", "category"]], on="product_id")
    share = pd.crosstab(m.segment, m.category, normalize="index")
    for segment, row in share.iterrows():
        favourite = row.idxmax()
        elsewhere = share.loc[share.index != segment, favourite].median()
        assert row[favourite] > 2 * elsewhere, (segment, favourite, row[favourite], elsewhere)


def test_taste_beats_global_popularity_on_a_temporal_split(
    store: Store, purchases: pd.DataFrame
) -> None:
    """A recommender that knows a customer's segment and history beats the global best-sellers."""
    cut = purchases.timestamp.max() - pd.Timedelta(days=21)
    train, test = purchases[purchases.timestamp < cut], purchases[purchases.timestamp >= cut]
    seg = store.customers.set_index("customer_id").segment
    top_global = train.product_id.value_counts().index[:10]
    seg_top = (
        train.assign(segment=train.customer_id.map(seg))
        .groupby("segment")
        .product_id.value_counts()
        .groupby(level=0)
        .head(10)
    )
    seg_top = seg_top.reset_index().groupby("segment").product_id.apply(set)
    own = train.groupby("customer_id").product_id.apply(set)
    hit_pop, hit_taste, n = 0, 0, 0
    for customer, bought in test.groupby("customer_id").product_id:
        wanted = set(bought)
        mine = own.get(customer, set())
        taste = list(mine)[:5] + [p for p in seg_top.get(seg[customer], set()) if p not in mine]
        hit_pop += bool(wanted & set(top_global))
        hit_taste += bool(wanted & set(taste[:10]))
        n += 1
    assert n > 50
    assert hit_taste / n > 1.15 * hit_pop / n


def test_staples_are_bought_again(purchases: pd.DataFrame) -> None:
    pairs = purchases.groupby(["customer_id", "product_id"]).size()
    assert (pairs > 1).mean() > 0.05


# --- orders and demand --------------------------------------------------------------------------


def _daily_units(store: Store) -> pd.Series:
    ol = store.order_lines
    sold = ol[ol.quantity > 0]
    return sold.groupby(sold.timestamp.dt.normalize()).quantity.sum()


def test_daily_units_show_weekly_seasonality(store: Store) -> None:
    daily = _daily_units(store)
    by_weekday = daily.groupby(daily.index.dayofweek).mean()
    busy = by_weekday[[6, 0]].mean()  # Sunday, Monday
    quiet = by_weekday[[4, 5]].mean()  # Friday, Saturday
    assert busy > 1.2 * quiet


def test_black_friday_week_beats_september(store: Store) -> None:
    daily = _daily_units(store)
    september = daily[daily.index.month == 9].mean()
    black_friday = daily["2023-11-22":"2023-11-29"].mean()
    assert black_friday > 1.3 * september


def test_promotions_lower_the_price_and_lift_units(store: Store) -> None:
    ol = store.order_lines
    sold = ol[ol.quantity > 0].merge(store.products[["product_id", "price"]], on="product_id")
    assert (sold.unit_price <= sold.price + 1e-9).all()
    sold["promo"] = sold.unit_price < sold.price - 1e-9
    assert 0.02 < sold.promo.mean() < 0.5
    daily = sold.groupby(["product_id", sold.timestamp.dt.normalize(), "promo"]).quantity.sum()
    daily = daily.reset_index()
    # units per promotional day vs per normal day of the same products (days with a sale)
    promoted = daily[daily.promo].product_id.unique()
    d = daily[daily.product_id.isin(promoted)]
    per_day = d.groupby(["product_id", "promo"]).quantity.mean().unstack().dropna()
    n_days = d.groupby(["product_id", "promo"]).size().unstack().dropna()
    lift = (per_day[True] * n_days[True]).sum() / n_days[True].sum()
    base = (per_day[False] * n_days[True]).sum() / n_days[True].sum()
    assert lift > 1.2 * base


def test_purchases_become_order_lines(store: Store, purchases: pd.DataFrame) -> None:
    ol = store.order_lines
    registered = ol[(ol.quantity > 0) & ol.customer_id.notna()]
    assert len(registered) == len(purchases)
    assert registered.quantity.sum() == purchases.quantity.sum()
    assert set(registered.customer_id) <= set(store.customers.customer_id)


def test_returns_are_negative_lines_after_the_sale(store: Store) -> None:
    ol = store.order_lines
    back = ol[ol.quantity < 0]
    assert 0.005 < len(back) / len(ol) < 0.06
    sales = ol[ol.quantity > 0]
    m = back.reset_index().merge(sales, on=["order_id", "product_id"], suffixes=("", "_sale"))
    m = m[(m.quantity == -m.quantity_sale) & (m.timestamp > m.timestamp_sale)]
    assert m["index"].nunique() == len(back)  # each return undoes an earlier sale of the order


def test_guest_orders_have_no_customer(store: Store) -> None:
    ol = store.order_lines
    guest = ol.customer_id.isna()
    assert 0.03 < guest.mean() < 0.2
    per_order = ol.groupby("order_id").customer_id.apply(lambda s: s.isna().nunique())
    assert (per_order == 1).all()  # an order is either a guest order or not


# --- payments and fraud -------------------------------------------------------------------------


def test_fraud_rate_and_every_scenario(store: Store) -> None:
    pay = store.payments
    assert 0.005 <= pay.is_fraud.mean() <= 0.02
    assert set(pay.fraud_scenario.unique()) == {0, 1, 2, 3}
    assert (pay.is_fraud == (pay.fraud_scenario > 0)).all()
    assert pay.transaction_id.is_unique
    assert pay.currency.isin(["GBP", "EUR"]).mean() > 0.9


def test_large_amounts_are_fraud(store: Store) -> None:
    pay = store.payments
    threshold = GeneratorConfig().large_amount_threshold
    assert (pay[pay.fraud_scenario == 1].amount > threshold).all()
    assert not (pay[~pay.is_fraud].amount > threshold).any()


def test_compromised_terminals_concentrate_fraud(store: Store) -> None:
    pay = store.payments
    s2 = pay[pay.fraud_scenario == 2]
    terminals = s2.terminal_id.unique()
    assert 1 <= len(terminals) <= 0.1 * pay.terminal_id.nunique()
    days = GeneratorConfig().terminal_compromise_days
    for terminal in terminals:
        at = pay[pay.terminal_id == terminal]
        hit = at[at.fraud_scenario == 2].timestamp
        first, last = hit.min(), min(hit.max(), hit.min() + pd.Timedelta(days=days - 1))
        window = at[(at.timestamp >= first) & (at.timestamp <= last)]
        assert window.is_fraud.all()  # every payment there while compromised is fraud


def test_compromised_cards_spend_more_at_new_terminals(store: Store) -> None:
    pay = store.payments
    genuine = pay[~pay.is_fraud]
    s3 = pay[pay.fraud_scenario == 3]
    usual = genuine.groupby("card_id").amount.median()
    ratio = (s3.amount / s3.card_id.map(usual)).dropna()
    assert ratio.median() > 2.5
    seen = set(zip(genuine.customer_id, genuine.terminal_id, strict=True))
    new = [(c, t) not in seen for c, t in zip(s3.customer_id, s3.terminal_id, strict=True)]
    assert np.mean(new) > 0.95


def test_labels_become_known_after_an_investigation_delay(store: Store) -> None:
    pay = store.payments
    fraud, genuine = pay[pay.is_fraud], pay[~pay.is_fraud]
    assert genuine.label_time.isna().all()
    delay = (fraud.label_time - fraud.timestamp).dt.total_seconds() / 86_400
    assert delay.notna().all()
    assert delay.min() >= 1.0 and delay.max() <= 30.0
    assert 4.0 < delay.mean() < 10.0


def test_order_payments_match_order_values(store: Store) -> None:
    ol = store.order_lines
    sold = ol[(ol.quantity > 0) & ol.customer_id.notna()]
    values = np.round((sold.quantity * sold.unit_price).groupby(sold.order_id).sum(), 2)
    amounts = set(np.round(store.payments.amount, 2))
    assert np.mean([v in amounts for v in values]) > 0.99


def test_write_and_read_round_trip(store: Store, tmp_path) -> None:
    path = store.write(tmp_path / "tiny")
    back = Store.read(path)
    assert back.fingerprint_id() == store.fingerprint_id()


def test_cli_generate_writes_a_store_and_refuses_to_overwrite(tmp_path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from shopml.errors import ShopmlError

    out = tmp_path / "store"
    runner = CliRunner()
    args = ["generate", "--scale", "tiny", "--days", "30", "--out", str(out), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "interactions" in result.output and "MB" in result.output
    assert len(Store.read(out).customers) == SCALES["tiny"].customers
    again = runner.invoke(app, args)
    assert isinstance(again.exception, ShopmlError) and "--force" in str(again.exception)
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_markdowns_are_published_as_planned_price_cuts() -> None:
    from features.demand import panel_from_store

    store = generate(GeneratorConfig(scale="tiny", seed=0, markdown_share=0.1))
    prices = store.prices
    cuts = prices[prices.duplicated("product_id", keep="first")]
    assert 10 <= len(cuts) <= 30
    launch = prices.drop_duplicates("product_id").set_index("product_id")["price"]
    assert (cuts.price.to_numpy() < launch.reindex(cuts.product_id).to_numpy()).all()
    panel = panel_from_store(store)
    seen = panel.known_future()
    new_price = seen.price[panel.positions(cuts.product_id)]
    day = panel.dates.searchsorted(cuts.valid_from.to_numpy())
    rows = np.arange(len(cuts))
    paid = panel.price[panel.positions(cuts.product_id)]
    after = (np.arange(len(panel.dates))[None, :] >= day[:, None]) & ~seen.promo[
        panel.positions(cuts.product_id)
    ]
    sold = after & ~np.isnan(paid)
    assert sold.sum() > 50  # the cut products keep selling, at the new list price
    np.testing.assert_allclose(paid[sold], new_price[sold], atol=0.006)
    assert (
        new_price[rows, day.clip(max=len(panel.dates) - 1)] < launch.reindex(cuts.product_id)
    ).all()
    # a fold before the cut was planned sees no price change; once planned, the ratio drops
    first = cuts[cuts.planned_at > panel.dates[1]].iloc[0]
    i = panel.positions([first.product_id])[0]
    d = panel.dates.searchsorted(first.valid_from)
    before_plan = panel.known_future(first.planned_at - pd.Timedelta(days=1))
    after_plan = panel.known_future(first.planned_at)
    assert before_plan.price_ratio[i, d] == 1.0
    assert after_plan.price_ratio[i, d] == pytest.approx(first.price / launch[first.product_id])
