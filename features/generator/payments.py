"""Card payments and fraud, after the Fraud Detection Handbook's simulator.

Customers hold one or two cards and pay at a handful of usual terminals (merchants, devices)
near their "home" terminal: for their shop orders and for other card purchases. Fraud:
(1) any amount above a threshold; (2) every day a few terminals are compromised and all their
payments in the next `terminal_compromise_days` are fraud; (3) every day a few cards are
compromised and fraudsters add payments worth 3-5x the owner's usual amount at terminals the
owner never uses during the next `card_compromise_days`. Labels become known after a delay.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class Wallets:
    """Each customer's cards, spending profile and usual terminals (near a "home" terminal)."""

    n_cards: np.ndarray  # cards per customer, 1 or 2
    card_owner: np.ndarray  # customer of each card
    first_card: np.ndarray  # card index of each customer's first card
    mean_amount: np.ndarray
    tx_rate: np.ndarray  # other card purchases per active day
    home: np.ndarray
    usual: np.ndarray  # (customers x USUAL_TERMINALS) terminal indices

    def pick_card(self, rng: np.random.Generator, cust: np.ndarray) -> np.ndarray:
        """The card each payment of `cust` uses: mostly the first, sometimes the second."""
        second = (self.n_cards[cust] == 2) & (rng.random(cust.size) > PRIMARY_CARD_USE)
        return self.first_card[cust] + second

    def usual_terminal(self, rng: np.random.Generator, cust: np.ndarray) -> np.ndarray:
        """One of the customer's usual terminals per payment."""
        return self.usual[cust, rng.integers(0, USUAL_TERMINALS, cust.size)]


@dataclass
class Stream:
    """Payments as parallel arrays: customer, time (ns), amount, card, terminal, fraud scenario."""

    cust: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    card: np.ndarray
    terminal: np.ndarray
    scenario: np.ndarray

    def __add__(self, other: Stream) -> Stream:
        return Stream(
            *(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays(), strict=True))
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.cust, self.ts, self.amount, self.card, self.terminal, self.scenario)

    def sorted_by_time(self) -> Stream:
        order = np.argsort(self.ts)
        return Stream(*(a[order] for a in self.arrays()))


def make_payments(
    rng: np.random.Generator,
    cfg: GeneratorConfig,
    spec: ScaleSpec,
    customers: Customers,
    orders: Orders,
    t0_ns: int,
    bad_terminal_days: np.ndarray | None = None,
    offsets: tuple[int, int] = (0, 0),
) -> pd.DataFrame:
    """Every card payment of the simulated period, in time order, with its fraud label.

    The steps draw from `rng` in a fixed order (the same seed gives the same table). A chunk of
    a partitioned store passes the compromised terminal-days of the whole shop (terminals are
    shared by every chunk) and the (card, transaction) numbers its ids start from.
    """
    wallets = make_wallets(rng, spec, customers.n)
    g_cust, g_ts, g_amt = other_purchases(rng, spec, customers, wallets, t0_ns)
    o_cust, o_ts, o_amt = order_payments(rng, orders)
    cust = np.concatenate([g_cust, o_cust])
    ts = np.concatenate([g_ts, o_ts])
    amount = np.round(np.concatenate([g_amt, o_amt]), 2)
    card = wallets.pick_card(rng, cust)
    terminal = wallets.usual_terminal(rng, cust)
    day = (ts - t0_ns) // NS_PER_DAY
    scenario = np.where(amount > cfg.large_amount_threshold, 1, 0)  # scenario 1: large amounts
    bad = bad_terminal_days
    if bad is None:
        bad = compromised_terminal_days(rng, cfg, spec.days, spec.terminals)
    scenario = np.where(np.isin(terminal * spec.days + day, bad), 2, scenario)
    genuine = Stream(cust, ts, amount, card, terminal, scenario)
    fraud = card_fraud(rng, cfg, spec, customers, wallets, genuine, day, t0_ns)
    stream = (genuine + fraud).sorted_by_time()
    label = label_times(rng, cfg, stream.ts, stream.scenario > 0)
    n_card = wallets.card_owner.size
    return payments_frame(stream, label, customers, n_card, spec.terminals, offsets)


def make_wallets(rng: np.random.Generator, spec: ScaleSpec, n_c: int) -> Wallets:
    """Cards, spending profile and usual terminals of each customer."""
    n_cards = 1 + (rng.random(n_c) < SECOND_CARD_SHARE)
    mean_amount = rng.uniform(5.0, 100.0, n_c)
    tx_rate = rng.uniform(0.0, 2.0 * spec.card_tx_per_customer_day, n_c)
    home = rng.integers(0, spec.terminals, n_c)
    near = rng.integers(-NEIGHBOURHOOD, NEIGHBOURHOOD + 1, (n_c, USUAL_TERMINALS))
    return Wallets(
        n_cards=n_cards,
        card_owner=np.repeat(np.arange(n_c), n_cards),
        first_card=np.cumsum(n_cards) - n_cards,
        mean_amount=mean_amount,
        tx_rate=tx_rate,
        home=home,
        usual=(home[:, None] + near) % spec.terminals,
    )


def other_purchases(
    rng: np.random.Generator,
    spec: ScaleSpec,
    customers: Customers,
    wallets: Wallets,
    t0_ns: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Card purchases outside the shop: Poisson per active day, normal amounts, daytime hours.

    Returns (customer, time ns, amount) per payment.
    """
    n_c = customers.n
    active_days = spec.days - customers.first_day
    n_tx = rng.poisson(wallets.tx_rate * active_days)
    cust = np.repeat(np.arange(n_c), n_tx)
    offset = (rng.random(cust.size) * active_days[cust]).astype(np.int64)
    day = customers.first_day[cust] + offset
    secs = np.clip(rng.normal(43_200, 18_000, cust.size), 0, 86_399).astype(np.int64)
    ts = np.maximum(
        t0_ns + day * NS_PER_DAY + secs * NS_PER_SECOND,
        customers.signup_ns[cust] + NS_PER_SECOND,
    )
    m = wallets.mean_amount[cust]
    amount = rng.normal(m, m / 2.0)
    amount = np.where(amount < 0, rng.uniform(0, 2 * m), amount)
    return cust, ts, amount


def order_payments(
    rng: np.random.Generator, orders: Orders
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shop orders of registered customers, paid at checkout a few seconds after the order.

    Returns (customer, time ns, order value) per paid order.
    """
    reg = orders.customer >= 0
    line_value = np.where(reg, orders.unit_price * orders.quantity, 0.0)
    value = np.bincount(orders.order, weights=line_value, minlength=orders.n_orders)
    cust = np.full(orders.n_orders, -1, dtype=np.int64)
    ts = np.zeros(orders.n_orders, dtype=np.int64)
    cust[orders.order[reg]] = orders.customer[reg]
    ts[orders.order[reg]] = orders.ts[reg]
    paid = cust >= 0
    cust, ts, amount = cust[paid], ts[paid], value[paid]
    ts = ts + rng.integers(2, 30, cust.size) * NS_PER_SECOND
    return cust, ts, amount


def _compromise_days(rng: np.random.Generator, rate_times_n: float, days: int, span: int):
    """Days on which each compromise starts: Poisson per day, at least one when the period
    is longer than a compromise."""
    n_comp = rng.poisson(rate_times_n, days)
    if n_comp.sum() == 0 and days > span:
        n_comp[rng.integers(0, days - span)] = 1
    return np.repeat(np.arange(days), n_comp)


def compromised_terminal_days(
    rng: np.random.Generator, cfg: GeneratorConfig, days: int, n_term: int
) -> np.ndarray:
    """Scenario 2: keys `terminal * days + day` of the terminal-days whose payments are fraud."""
    start = _compromise_days(
        rng, cfg.terminal_compromise_rate * n_term, days, cfg.terminal_compromise_days
    )
    term = rng.integers(0, n_term, start.size)
    span = np.arange(cfg.terminal_compromise_days)
    return np.unique((term[:, None] * days + start[:, None] + span).ravel())


def card_fraud(
    rng: np.random.Generator,
    cfg: GeneratorConfig,
    spec: ScaleSpec,
    customers: Customers,
    wallets: Wallets,
    genuine: Stream,
    day: np.ndarray,
    t0_ns: int,
) -> Stream:
    """Scenario 3: compromised cards get extra payments of 3-5x the owner's usual amount at
    terminals far from home, as many as a share of the owner's payments in the window."""
    days, n_term, n_card = spec.days, spec.terminals, wallets.card_owner.size
    cc_day = _compromise_days(
        rng, cfg.card_compromise_rate * n_card, days, cfg.card_compromise_days
    )
    cc_card = rng.integers(0, n_card, cc_day.size)
    owner = wallets.card_owner[cc_card]
    cc_day = np.maximum(cc_day, customers.first_day[owner])
    window = np.minimum(cfg.card_compromise_days, days - cc_day)
    card, ts = genuine.card, genuine.ts
    sort = np.lexsort((ts, card))
    key_sorted = card[sort] * np.int64(days + 1) + day[sort]
    lo = np.searchsorted(key_sorted, cc_card * np.int64(days + 1) + cc_day)
    hi = np.searchsorted(key_sorted, cc_card * np.int64(days + 1) + cc_day + window)
    n_fraud = 1 + rng.binomial(hi - lo, cfg.card_fraud_share)
    src = np.repeat(np.arange(cc_card.size), n_fraud)
    f_cust = owner[src]
    start = np.maximum(t0_ns + cc_day[src] * NS_PER_DAY, customers.signup_ns[f_cust])
    f_ts = start + (rng.random(src.size) * window[src] * 86_400).astype(np.int64) * NS_PER_SECOND
    f_ts = np.minimum(f_ts, t0_ns + days * NS_PER_DAY - NS_PER_SECOND)
    fm = wallets.mean_amount[f_cust]
    f_amt = np.round(np.abs(rng.normal(fm, fm / 2.0)) * rng.uniform(3.0, 5.0, src.size) + 1.0, 2)
    away = rng.integers(NEIGHBOURHOOD + 1, n_term - NEIGHBOURHOOD, src.size)
    f_term = (wallets.home[f_cust] + away) % n_term
    return Stream(f_cust, f_ts, f_amt, cc_card[src], f_term, np.full(src.size, 3))


def label_times(
    rng: np.random.Generator, cfg: GeneratorConfig, ts: np.ndarray, is_fraud: np.ndarray
) -> np.ndarray:
    """When each fraud becomes known (after an investigation delay); NaT for genuine payments."""
    label = np.full(ts.size, np.datetime64("NaT"), dtype="datetime64[ns]")
    delay = _delays_ns(
        rng, int(is_fraud.sum()), cfg.label_delay_mean_days, cfg.label_delay_max_days
    )
    label[is_fraud] = (ts[is_fraud] + delay).astype("datetime64[ns]")
    return label


def payments_frame(
    stream: Stream,
    label: np.ndarray,
    customers: Customers,
    n_card: int,
    n_term: int,
    offsets: tuple[int, int] = (0, 0),
) -> pd.DataFrame:
    """The payments table of the data contract, with ids in place of indices."""
    currency_of_country = np.array(
        [CURRENCY_OF.get(c, "EUR") for c in customers.country], dtype=object
    )
    return pd.DataFrame(
        {
            "transaction_id": make_ids("T", stream.ts.size, 10, offsets[1]),
            "timestamp": stream.ts.astype("datetime64[ns]"),
            "customer_id": customers.ids[stream.cust],
            "card_id": make_ids("card_", n_card, 6, offsets[0])[stream.card],
            "terminal_id": make_ids("term_", n_term, 5)[stream.terminal],
            "amount": stream.amount,
            "currency": currency_of_country[stream.cust],
            "is_fraud": stream.scenario > 0,
            "label_time": label,
            "fraud_scenario": stream.scenario.astype(np.int64),
        }
    )
