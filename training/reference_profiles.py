"""Each family's reference profile, built at training and stored in the model's native folder
(`features.reference.REFERENCE_FILE`, so it travels into the Bento) and as run artifact
`reference/profile.json`; and the profile of a batch of new data on the same bins, which
`shopml monitor` compares with it.

* fraud: every feature of the feature set and the calibrated score, on the test period (the
  newest labelled week). Not the training period: features such as `card_terminals_ever` or
  `customer_new_terminals_30d` grow or shrink through a year of history by design (on the
  small generated store a train-period reference flags 6 of 78 features on the very next
  week, the test-week reference none), and live traffic continues from the newest week.
* recommender: the request mix (`request_kind`: known customer, known customer with a session,
  new visitor) and the `category` of the products they interacted with, both over the sessions
  of the test period; and `served_category`, the categories of what the model answers a sample
  of those requests with (what a live service counts).
* forecast: over the last `FORECAST_WINDOW_DAYS` days of sales, `demand_level` (mean daily
  units per catalog product), the `category` mix of units sold and `price:<category>` (each
  product's price index: its unit price over its reference median, one column per
  category, lines sold in a promotion left out, so a price change names its category); and
  `forecast_level` (mean P50 per product of the published forecast: what `/forecast` serves).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.reference import (
    DEFAULT_BINS,
    REQUEST_KINDS,
    TAIL_QUANTILES,
    ColumnProfile,
    Profile,
    categorical_profile,
    numeric_profile,
    save_profile,
)

FORECAST_WINDOW_DAYS = 28
REFERENCE_ARTIFACT = "reference/profile.json"
# bins of the price index (unit price / the product's reference price): +-1 % is unchanged
PRICE_INDEX_EDGES = np.array([0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01, 1.05, 1.1, 1.2, 1.5])
SERVED_SAMPLE = 500  # requests the recommender answers at training for `served_category`


# ------------------------------------------------------------------------------------ fraud
def fraud_reference(
    X: np.ndarray, names: Iterable[str], scores: np.ndarray, *, bins: int = DEFAULT_BINS, **meta
) -> Profile:
    """Quantile bins and counts of every feature column of `X` (in `names` order) and of the
    score; besides the deciles, edges at the 1 % and 99 % quantiles (`TAIL_QUANTILES`): fraud
    lives in the tails (a card-testing attack's tiny amounts, bursts of payments), where a
    decile would mix it with a tenth of all traffic."""
    names = list(names)
    cols = {n: numeric_profile(n, X[:, j], bins, TAIL_QUANTILES) for j, n in enumerate(names)}
    cols["score"] = numeric_profile("score", scores, bins, TAIL_QUANTILES)
    return Profile(cols, {"family": "fraud", "rows": int(len(X)), "bins": bins, **meta})


def fraud_batch(
    reference: Profile, X: np.ndarray, names: Iterable[str], scores: np.ndarray | None
) -> Profile:
    """New payments' features (and scores, when given) on the reference's bins."""
    cols = {}
    for j, n in enumerate(names):
        if n in reference.columns:
            cols[n] = reference.columns[n].with_values(X[:, j])
    if scores is not None and "score" in reference.columns:
        cols["score"] = reference.columns["score"].with_values(scores)
    return Profile(cols, {"family": "fraud", "rows": int(len(X))})


# ------------------------------------------------------------------------------ recommender
def request_kinds(interactions: pd.DataFrame, known_customers) -> pd.DataFrame:
    """One row per session (its customer, first product, kind): `new` when the customer is not
    in `known_customers`, `session` when a known customer's session holds more than one event
    (the storefront then sends recent products), else `known`."""
    if len(interactions) == 0:
        return pd.DataFrame({"customer_id": [], "kind": [], "product_id": []})
    key = "session_id" if "session_id" in interactions.columns else "customer_id"
    ordered = interactions.sort_values("timestamp", kind="stable")
    g = ordered.groupby(key, sort=False)
    sessions = pd.DataFrame(
        {
            "customer_id": g["customer_id"].first().astype(str),
            "product_id": g["product_id"].first().astype(str),
            "events": g.size(),
        }
    )
    known = sessions["customer_id"].isin(set(map(str, known_customers)))
    sessions["kind"] = np.where(known, np.where(sessions["events"] > 1, "session", "known"), "new")
    return sessions.reset_index(drop=True)


def _categories_of(product_ids, products: pd.DataFrame | None) -> list:
    if products is None or "category" not in products.columns:
        return [None] * len(product_ids)
    ids, cats = products["product_id"].astype(str), products["category"].astype(str)
    lookup = dict(zip(ids, cats, strict=True))
    return [lookup.get(str(p)) for p in product_ids]


def recommender_reference(
    interactions: pd.DataFrame,
    products: pd.DataFrame | None,
    known_customers,
    served_product_ids: Iterable[str] = (),
    **meta,
) -> Profile:
    """Request kinds and interacted categories of `interactions` (the test period), and the
    categories of `served_product_ids` (what the model answered for a sample of them)."""
    sessions = request_kinds(interactions, known_customers)
    kinds = ColumnProfile("request_kind", "categorical", np.zeros(5), categories=REQUEST_KINDS)
    cols = {
        "request_kind": kinds.with_values(sessions["kind"]),
        "category": categorical_profile(
            "category", _categories_of(interactions["product_id"], products)
        ),
    }
    served = list(served_product_ids)
    if served:
        cats = _categories_of(served, products)
        cols["served_category"] = categorical_profile("served_category", cats)
    meta = {"family": "recommender", "sessions": int(len(sessions)), **meta}
    return Profile(cols, meta)


def recommender_batch(
    reference: Profile,
    interactions: pd.DataFrame,
    products: pd.DataFrame | None,
    known_customers,
) -> Profile:
    """New interactions' request kinds and categories on the reference's bins."""
    sessions = request_kinds(interactions, known_customers)
    cols = {"request_kind": reference.columns["request_kind"].with_values(sessions["kind"])}
    if "category" in reference.columns:
        cats = _categories_of(interactions["product_id"], products)
        cols["category"] = reference.columns["category"].with_values(cats)
    return Profile(cols, {"family": "recommender", "sessions": int(len(sessions))})


def served_sample(model, sessions: pd.DataFrame, interactions: pd.DataFrame, k: int) -> list[str]:
    """The products the model answers the first `SERVED_SAMPLE` sessions with, each asked as
    the storefront would (known: the customer; new or session: with the session's products)."""
    from models.recommenders import RecommendFilters

    if len(sessions) == 0:
        return []
    step = max(1, len(sessions) // SERVED_SAMPLE)
    picked = sessions.iloc[::step].head(SERVED_SAMPLE)
    out: list[str] = []
    for row in picked.itertuples(index=False):
        recent = [row.product_id] if row.kind != "known" else []
        customer = row.customer_id if row.kind != "new" else ""
        rec = model.recommend_with_context(
            customer, k, RecommendFilters(), recent_product_ids=recent
        )
        out.extend(str(p) for p in rec.product_ids.tolist())
    return out


# --------------------------------------------------------------------------------- forecast
def _window(lines: pd.DataFrame, days: int) -> pd.DataFrame:
    end = lines["timestamp"].max()
    return lines[lines["timestamp"] > end - pd.Timedelta(days=days)]


def _forecast_columns(
    lines: pd.DataFrame, products: pd.DataFrame | None, days: int, prices, promotions=None
):
    """(demand level per product, category per unit sold, price index per product by
    category: the median unit price of its lines sold outside promotions (planned, known to the
    forecaster, they would make every window differ) over its reference price
    `prices[product]`)."""
    recent = _window(lines, days)
    units = recent.groupby(recent["product_id"].astype(str))["quantity"].sum()
    if products is not None:  # catalog products without a sale have a level of zero
        units = units.reindex(sorted(set(products["product_id"].astype(str))), fill_value=0)
    level = units.to_numpy(dtype="float64") / days
    cats = np.asarray(_categories_of(recent["product_id"], products), dtype=object)
    qty = recent["quantity"].clip(lower=0).to_numpy(dtype="int64")
    unit_cats = np.repeat(cats, qty)
    base = recent["product_id"].astype(str).map(prices).to_numpy(dtype="float64")
    index = recent["unit_price"].to_numpy(dtype="float64") / base
    known = ~np.isnan(index) & ~promoted(recent, products, promotions)
    per_product = (  # one value per product: a popular product's own change is one product
        pd.DataFrame({"p": recent["product_id"].astype(str).to_numpy(), "c": cats, "i": index})[
            known
        ]
        .groupby(["c", "p"])["i"]
        .median()
    )
    by_cat = {str(c): g.to_numpy() for c, g in per_product.groupby(level=0)}
    return level, unit_cats, by_cat


def promoted(lines: pd.DataFrame, products: pd.DataFrame | None, promotions) -> np.ndarray:
    """Which lines were sold during a promotion of their product or category (`promotions`:
    product_id or category, start, end), as a boolean array in `lines` order."""
    hit = np.zeros(len(lines), dtype=bool)
    if promotions is None or len(promotions) == 0 or len(lines) == 0:
        return hit
    frame = pd.DataFrame(
        {"row": np.arange(len(lines)), "product_id": lines["product_id"].astype(str).to_numpy()}
    )
    frame["t"] = lines["timestamp"].to_numpy()
    if products is not None and "category" in products.columns:
        cat = dict(zip(products["product_id"].astype(str), products["category"], strict=True))
        frame["category"] = frame["product_id"].map(cat)
    for key in ("product_id", "category"):
        promos = promotions[promotions[key].notna()][[key, "start", "end"]]
        if key not in frame.columns or len(promos) == 0:
            continue
        promos = promos.assign(**{key: promos[key].astype(str)})
        m = frame.merge(promos, on=key, how="inner")
        # `end` is the promotion's last day, inclusive (the contract's and known_future's
        # reading): a line of that day is promoted all day long
        last = m["end"].dt.normalize() + pd.Timedelta(days=1)
        inside = m["row"][(m["t"] >= m["start"]) & (m["t"] < last)]
        hit[inside.to_numpy()] = True
    return hit


def reference_prices(
    lines: pd.DataFrame, days: int, products=None, promotions=None
) -> dict[str, float]:
    """Each product's median unit price outside promotions over the last `days` of `lines`
    (the price index's base)."""
    recent = _window(lines, days)
    recent = recent[~promoted(recent, products, promotions)]
    med = recent.groupby(recent["product_id"].astype(str))["unit_price"].median()
    return {p: float(v) for p, v in med.items() if v > 0}


def forecast_reference(
    lines: pd.DataFrame,
    products: pd.DataFrame | None,
    forecast: pd.DataFrame | None = None,
    *,
    promotions: pd.DataFrame | None = None,
    days: int = FORECAST_WINDOW_DAYS,
    bins: int = DEFAULT_BINS,
    **meta,
) -> Profile:
    """Demand levels, category mix and the price index per category of the last `days` of
    `lines`; the published forecast's level per product when given.

    `price:<category>` is each product's price index: the median of its lines' unit prices
    over its median unit price in this window (kept in `meta["reference_prices"]`, the base of
    new data's index too), lines in a promotion left out, in the fixed bins `PRICE_INDEX_EDGES`
    around 1; one value per product sold. Raw prices per line would mostly measure which
    products happened to sell (on the generated store their PSI from one 28-day window to the
    next is above 1 for some categories without any price change), and per line one popular
    product's own price change would flag its whole category."""
    prices = reference_prices(lines, days, products, promotions)
    level, unit_cats, by_cat = _forecast_columns(lines, products, days, prices, promotions)
    cols = {
        "demand_level": numeric_profile("demand_level", level, bins),
        "category": categorical_profile("category", unit_cats),
    }
    for cat in sorted(by_cat):
        name = f"price:{cat}"
        empty = ColumnProfile(
            name, "numeric", np.zeros(len(PRICE_INDEX_EDGES) + 2), PRICE_INDEX_EDGES
        )
        cols[name] = empty.with_values(by_cat[cat])
    if forecast is not None and len(forecast):
        per_product = forecast.groupby("product_id")["p50"].mean().to_numpy(dtype="float64")
        cols["forecast_level"] = numeric_profile("forecast_level", per_product, bins)
    meta = {"family": "forecast", "window_days": days, "bins": bins, **meta}
    return Profile(cols, {**meta, "reference_prices": prices})


def forecast_batch(
    reference: Profile,
    lines: pd.DataFrame,
    products: pd.DataFrame | None,
    promotions: pd.DataFrame | None = None,
) -> Profile:
    """New sales on the reference's bins (its window length and reference prices)."""
    days = int(reference.meta.get("window_days", FORECAST_WINDOW_DAYS))
    prices = reference.meta.get("reference_prices") or {}
    level, unit_cats, by_cat = _forecast_columns(lines, products, days, prices, promotions)
    cols = {
        "demand_level": reference.columns["demand_level"].with_values(level),
        "category": reference.columns["category"].with_values(unit_cats),
    }
    for name, ref in reference.columns.items():
        if name.startswith("price:"):
            cols[name] = ref.with_values(by_cat.get(name.removeprefix("price:"), np.empty(0)))
    return Profile(cols, {"family": "forecast", "window_days": days})


# ------------------------------------------------------------------------ from the jobs' data
def fraud_reference_for(scorer, fs, data) -> Profile:
    """The fraud job's reference: features and calibrated scores of the test period of
    `data` (a `training.fraud_job.Prepared`)."""
    from features.fraud.batch import to_matrix

    te = data.parts["test"]
    X = to_matrix(data.cols, fs.names, te)
    pay = data.store.payments
    period = [str(pay["timestamp"].iloc[te].min()), str(pay["timestamp"].iloc[te].max())]
    return fraud_reference(
        X, fs.names, scorer.predict_proba(X), period=period, feature_version=fs.version
    )


def recommender_reference_for(store, train_events: pd.DataFrame, cutoff, model, k: int) -> Profile:
    """The recommender job's reference: the sessions after the split's cut-off (else the last
    7 days), customers known from the training events, and what `model` serves a sample."""
    inter = store.interactions
    if inter is None or len(inter) == 0:
        inter = train_events.iloc[0:0]
    start = cutoff if cutoff is not None else inter["timestamp"].max() - pd.Timedelta(days=7)
    test = inter[inter["timestamp"] > start] if len(inter) else inter
    known = set(train_events["customer_id"].astype(str))
    sessions = request_kinds(test, known)
    served = served_sample(model, sessions, test, k)
    return recommender_reference(
        test, store.products, known, served, since=str(start), known_customer_count=len(known)
    )


def store_reference(model_dir, profile: Profile) -> None:
    """Put `profile` in the model's native folder (it travels into the Bento) and log it as
    artifact `reference/profile.json` of the active run (what `shopml monitor` reads)."""
    import mlflow

    save_profile(model_dir, profile)
    if mlflow.active_run() is not None:
        mlflow.log_dict(profile.to_dict(), REFERENCE_ARTIFACT)


def forecast_reference_for(
    lines, products, forecast_path, exclude_categories=(), promotions=None
) -> Profile:
    """The forecast job's reference: the last window of the lines it trained on, the catalog
    without excluded categories, and the forecast it published (a Parquet file)."""
    if products is not None and exclude_categories:
        products = products[~products["category"].isin(list(exclude_categories))]
    forecast = pd.read_parquet(forecast_path) if forecast_path is not None else None
    until = str(lines["timestamp"].max())
    return forecast_reference(lines, products, forecast, promotions=promotions, until=until)
