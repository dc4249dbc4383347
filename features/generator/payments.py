"""Card payments and fraud, after the Fraud Detection Handbook's simulator.

Customers hold one or two cards and pay at a handful of usual terminals (merchants, devices)
near their "home" terminal: for their shop orders and for other card purchases. Fraud:
(1) any amount above a threshold; (2) every day a few terminals are compromised and all their
payments in the next `terminal_compromise_days` are fraud; (3) every day a few cards are
compromised and fraudsters add payments worth 3-5x the owner's usual amount at terminals the
owner never uses during the next `card_compromise_days`. Labels become known after a delay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.generator.calendar import NS_PER_DAY, NS_PER_SECOND
from features.generator.config import GeneratorConfig, ScaleSpec
from features.generator.customers import CURRENCY_OF, Customers
from features.generator.ids import make_ids
from features.generator.orders import Orders

USUAL_TERMINALS = 10
NEIGHBOURHOOD = 25  # usual terminals lie within +-25 of the home terminal (on a ring)
SECOND_CARD_SHARE = 0.3
PRIMARY_CARD_USE = 0.8


def _delays_ns(rng: np.random.Generator, n: int, mean_days: float, max_days: int) -> np.ndarray:
    """Investigation delays: at least a day, mean about `mean_days`, at most `max_days`."""
    shape = 1.5
    days = 1.0 + rng.gamma(shape, (mean_days - 1.0) / shape, n)
    days = np.minimum(days, max_days)
    return (days * 86_400).astype(np.int64) * NS_PER_SECOND


def make_payments(
    rng: np.random.Generator,
    cfg: GeneratorConfig,
    spec: ScaleSpec,
    customers: Customers,
    orders: Orders,
    t0_ns: int,
) -> pd.DataFrame:
    days, n_term, n_c = spec.days, spec.terminals, customers.n
    end_ns = t0_ns + days * NS_PER_DAY

    # Cards, spending profile and usual terminals of each customer.
    n_cards = 1 + (rng.random(n_c) < SECOND_CARD_SHARE)
    card_owner = np.repeat(np.arange(n_c), n_cards)
    first_card = np.cumsum(n_cards) - n_cards
    mean_amount = rng.uniform(5.0, 100.0, n_c)
    tx_rate = rng.uniform(0.0, 2.0 * spec.card_tx_per_customer_day, n_c)
    home = rng.integers(0, n_term, n_c)
    usual = (
        home[:, None] + rng.integers(-NEIGHBOURHOOD, NEIGHBOURHOOD + 1, (n_c, USUAL_TERMINALS))
    ) % n_term

    def pick_card(cust: np.ndarray) -> np.ndarray:
        second = (n_cards[cust] == 2) & (rng.random(cust.size) > PRIMARY_CARD_USE)
        return first_card[cust] + second

    def usual_terminal(cust: np.ndarray) -> np.ndarray:
        return usual[cust, rng.integers(0, USUAL_TERMINALS, cust.size)]

    # Other card purchases: Poisson per active day, normal amounts, daytime hours.
    active_days = days - customers.first_day
    n_tx = rng.poisson(tx_rate * active_days)
    g_cust = np.repeat(np.arange(n_c), n_tx)
    g_day = customers.first_day[g_cust] + (rng.random(g_cust.size) * active_days[g_cust]).astype(
        np.int64
    )
    secs = np.clip(rng.normal(43_200, 18_000, g_cust.size), 0, 86_399).astype(np.int64)
    g_ts = np.maximum(
        t0_ns + g_day * NS_PER_DAY + secs * NS_PER_SECOND,
        customers.signup_ns[g_cust] + NS_PER_SECOND,
    )
    m = mean_amount[g_cust]
    g_amt = rng.normal(m, m / 2.0)
    g_amt = np.where(g_amt < 0, rng.uniform(0, 2 * m), g_amt)

    # Shop orders of registered customers, paid at checkout.
    reg = orders.customer >= 0
    line_value = np.where(reg, orders.unit_price * orders.quantity, 0.0)
    value = np.bincount(orders.order, weights=line_value, minlength=orders.n_orders)
    o_cust = np.full(orders.n_orders, -1, dtype=np.int64)
    o_ts = np.zeros(orders.n_orders, dtype=np.int64)
    o_cust[orders.order[reg]] = orders.customer[reg]
    o_ts[orders.order[reg]] = orders.ts[reg]
    paid = o_cust >= 0
    o_cust, o_ts, o_amt = o_cust[paid], o_ts[paid], value[paid]
    o_ts = o_ts + rng.integers(2, 30, o_cust.size) * NS_PER_SECOND

    cust = np.concatenate([g_cust, o_cust])
    ts = np.concatenate([g_ts, o_ts])
    amount = np.round(np.concatenate([g_amt, o_amt]), 2)
    card = pick_card(cust)
    terminal = usual_terminal(cust)
    day = (ts - t0_ns) // NS_PER_DAY
    scenario = np.where(amount > cfg.large_amount_threshold, 1, 0)

    # Scenario 2: compromised terminals.
    n_comp = rng.poisson(cfg.terminal_compromise_rate * n_term, days)
    if n_comp.sum() == 0 and days > cfg.terminal_compromise_days:
        n_comp[rng.integers(0, days - cfg.terminal_compromise_days)] = 1
    comp_day = np.repeat(np.arange(days), n_comp)
    comp_term = rng.integers(0, n_term, comp_day.size)
    span = np.arange(cfg.terminal_compromise_days)
    bad_keys = np.unique((comp_term[:, None] * days + comp_day[:, None] + span).ravel())
    scenario = np.where(np.isin(terminal * days + day, bad_keys), 2, scenario)

    # Scenario 3: compromised cards get extra payments with 3-5x amounts at new terminals.
    n_card = card_owner.size
    n_ccomp = rng.poisson(cfg.card_compromise_rate * n_card, days)
    if n_ccomp.sum() == 0 and days > cfg.card_compromise_days:
        n_ccomp[rng.integers(0, days - cfg.card_compromise_days)] = 1
    cc_day = np.repeat(np.arange(days), n_ccomp)
    cc_card = rng.integers(0, n_card, cc_day.size)
    owner = card_owner[cc_card]
    cc_day = np.maximum(cc_day, customers.first_day[owner])
    window = np.minimum(cfg.card_compromise_days, days - cc_day)
    sort = np.lexsort((ts, card))
    key_sorted = card[sort] * np.int64(days + 1) + day[sort]
    lo = np.searchsorted(key_sorted, cc_card * np.int64(days + 1) + cc_day)
    hi = np.searchsorted(key_sorted, cc_card * np.int64(days + 1) + cc_day + window)
    n_fraud = 1 + rng.binomial(hi - lo, cfg.card_fraud_share)
    f_src = np.repeat(np.arange(cc_card.size), n_fraud)
    f_cust = owner[f_src]
    f_card = cc_card[f_src]
    f_start = np.maximum(t0_ns + cc_day[f_src] * NS_PER_DAY, customers.signup_ns[f_cust])
    f_ts = (
        f_start + (rng.random(f_src.size) * window[f_src] * 86_400).astype(np.int64) * NS_PER_SECOND
    )
    f_ts = np.minimum(f_ts, end_ns - NS_PER_SECOND)
    fm = mean_amount[f_cust]
    f_amt = np.round(np.abs(rng.normal(fm, fm / 2.0)) * rng.uniform(3.0, 5.0, f_src.size) + 1.0, 2)
    away = rng.integers(NEIGHBOURHOOD + 1, n_term - NEIGHBOURHOOD, f_src.size)
    f_term = (home[f_cust] + away) % n_term

    cust = np.concatenate([cust, f_cust])
    ts = np.concatenate([ts, f_ts])
    amount = np.concatenate([amount, f_amt])
    card = np.concatenate([card, f_card])
    terminal = np.concatenate([terminal, f_term])
    scenario = np.concatenate([scenario, np.full(f_src.size, 3)])
    order = np.argsort(ts)
    cust, ts, amount, card, terminal, scenario = (
        a[order] for a in (cust, ts, amount, card, terminal, scenario)
    )
    is_fraud = scenario > 0
    label = np.full(ts.size, np.datetime64("NaT"), dtype="datetime64[ns]")
    delay = _delays_ns(
        rng, int(is_fraud.sum()), cfg.label_delay_mean_days, cfg.label_delay_max_days
    )
    label[is_fraud] = (ts[is_fraud] + delay).astype("datetime64[ns]")

    currency_of_country = np.array(
        [CURRENCY_OF.get(c, "EUR") for c in customers.country], dtype=object
    )
    n = ts.size
    tx_ids = make_ids("T", n, 10)
    card_ids = make_ids("card_", n_card, 6)
    term_ids = make_ids("term_", n_term, 5)
    return pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "timestamp": ts.astype("datetime64[ns]"),
            "customer_id": customers.ids[cust],
            "card_id": card_ids[card],
            "terminal_id": term_ids[terminal],
            "amount": amount,
            "currency": currency_of_country[cust],
            "is_fraud": is_fraud,
            "label_time": label,
            "fraud_scenario": scenario.astype(np.int64),
        }
    )
