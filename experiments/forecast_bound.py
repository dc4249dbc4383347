"""How much can known-future inputs gain on the generated store? Oracle forecasts from the
generator's own demand process, scored exactly like `bench forecast-generated` (issue 14).

    .venv/bin/python -m experiments.forecast_bound --out F.json [--draws 200] [--bench BENCH.json]

The generated store's units are one random draw of a known process. Rebuilding the simulated
world (catalog, customers with their tastes, favourites and activity, the promotion calendar,
season and trend: every stream but the demand ones) and redrawing only the demand (sessions,
orders, returns) `draws` times gives, per product-day, the distribution of the units the
benchmark scores. Each oracle forecasts a cell by the mean of its draws (the expected units)
or their median (WAPE is minimised by the median: the lowest WAPE a forecaster can expect);
they differ in what they know of the promotion calendar, everything else being the world's:

- `with_plan`: the whole calendar as generated (perfect foresight of every promotion);
- `with_plan_at_origin`: what the benchmark's known-future inputs can see: every window
  planned by the fold's origin (`planned_at` < origin + 1 day) as planned; the windows not yet
  planned are drawn afresh from the generator's promotion process, each kept with the chance
  that its lead time (the table's own leads) was too short to be planned by the origin;
- `without_plan`: every window drawn afresh from the generator's promotion process (its
  share, lengths, discounts, elasticity): the expectation over what the promotion status and
  discount of each product-day could be;
- `without_plan_seen`: what a forecaster without the plan could know from its history: the
  windows started by the origin as they ran (a running one's discount is in the order lines'
  prices; its end is drawn from the process's lengths given how long it has run), every
  later window drawn afresh.

Ratios: `ratio` = with_plan / without_plan (the most a plan could gain), `ratio_seen` =
with_plan / without_plan_seen, `ratio_at_origin` = with_plan_at_origin / without_plan_seen
(the bound for what the benchmark measures). Scored on the benchmark's series (its 500 best
sellers), folds, horizon and observed cells (`training.backtest.rolling_origins`,
`training.forecast_metrics.evaluation_frame`: closed and not yet observed cells are left out
the same way). Only the days from the first scored one on are redrawn: sessions are a Poisson
process per customer and day, so the later days' distribution is unchanged (guest orders are
drawn on the same days, their share rescaled to the window's expected registered orders).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.reports import write_report
from features.demand import DemandPanel, PanelConfig, build_panel
from features.generator import GeneratorConfig, streams
from features.generator.calendar import NS_PER_DAY, day_intensity
from features.generator.catalog import Catalog, make_catalog
from features.generator.customers import Customers, Segments, make_customers, make_segments
from features.generator.orders import make_orders, order_lines_frame
from features.generator.promotions import (
    Promotions,
    make_markdowns,
    make_promotions,
    promotions_of,
)
from features.generator.sessions import ProductSampler, simulate_sessions
from shopml.errors import ConfigError
from training.backtest import rolling_origins
from training.forecast_metrics import evaluation_frame, summarize

# with the whole plan; without it (every window redrawn); without it but with the history
# (windows started by the origin as they ran, a running one's end redrawn, later ones redrawn);
# with the plan as published at the origin (the rest redrawn as not planned yet)
ORACLES = ("with_plan", "without_plan", "without_plan_seen", "with_plan_at_origin")
POINTS = ("median", "mean")  # the oracle's P50: the cell's median or its expected units


@dataclass
class DemandWorld:
    """Everything the generator fixes before it draws demand: the catalog, its markdowns and
    promotion calendar, the customers (segments, favourites, activity) and the daily traffic."""

    cfg: GeneratorConfig
    catalog: Catalog
    markdowns: tuple
    promos: Promotions
    segments: Segments
    customers: Customers
    base: np.ndarray  # weekday x season x trend per day, mean 1
    t0_ns: int
    days: int


def demand_world(cfg: GeneratorConfig) -> DemandWorld:
    """The world of `generate(cfg)`, drawn from the same streams in the same order (checked by
    `tests/test_forecast_bound.py`: `draw_order_lines` with the generator's own demand streams
    gives the generated store's order lines exactly)."""
    if cfg.spec().chunks > 1:
        raise ConfigError(f"scale {cfg.scale} is simulated in chunks; use a single-table scale")
    rngs = streams(cfg.seed)
    spec = cfg.spec()
    days = spec.days
    catalog = make_catalog(rngs["catalog"], spec.products, spec.categories, days, cfg.zipf_exponent)
    markdowns = make_markdowns(rngs["markdowns"], catalog, days, cfg.markdown_share)
    promos = make_promotions(
        rngs["promotions"], catalog, days, cfg.promo_share, cfg.promo_elasticity, markdowns
    )
    base = day_intensity(cfg.start, days, cfg.yearly_growth)
    segments = make_segments(rngs["customers"], catalog, spec.segments)
    customers = make_customers(
        rngs["customers"], catalog, segments, spec.customers, cfg.start, days, base
    )
    t0_ns = int(np.datetime64(cfg.start, "ns").astype("int64"))
    return DemandWorld(cfg, catalog, markdowns, promos, segments, customers, base, t0_ns, days)


def redrawn_promotions(world: DemandWorld, rng: np.random.Generator) -> Promotions:
    """A promotion calendar drawn afresh from the generator's promotion process (the world's
    markdowns, permanent list-price cuts, kept)."""
    cfg = world.cfg
    return make_promotions(
        rng, world.catalog, world.days, cfg.promo_share, cfg.promo_elasticity, world.markdowns
    )


def draw_order_lines(
    world: DemandWorld,
    promos: Promotions,
    rngs: dict[str, np.random.Generator],
    first_day: int = 0,
) -> pd.DataFrame:
    """One draw of the shop's order lines from day `first_day` on, given the world and a
    promotion calendar; `rngs` holds the "sessions", "orders" and "returns" streams."""
    cfg, spec = world.cfg, world.cfg.spec()
    day_weights = world.base * (1.0 + promos.mass) / world.base.mean()
    customers, guest_weights, guest_share = world.customers, day_weights, cfg.guest_order_share
    if first_day > 0:  # customers browse from `first_day`; guests buy on the same days
        customers = dataclasses.replace(
            customers, first_day=np.maximum(customers.first_day, first_day)
        )
        guest_weights = np.where(np.arange(world.days) >= first_day, day_weights, 0.0)
        guest_share = _window_guest_share(world, day_weights, customers, first_day)
    sampler = ProductSampler(world.catalog, customers, world.segments, promos)
    events = simulate_sessions(
        rngs["sessions"],
        world.t0_ns,
        world.days,
        spec.sessions_per_customer_day,
        day_weights,
        sampler,
    )
    orders = make_orders(
        rngs["orders"], events, sampler, world.t0_ns, world.days, guest_weights, guest_share
    )
    end_ns = world.t0_ns + world.days * NS_PER_DAY
    return order_lines_frame(
        rngs["returns"],
        orders,
        customers.ids,
        customers.country,
        world.catalog.ids,
        end_ns,
        cfg.return_rate,
    )


def _window_guest_share(
    world: DemandWorld, day_weights: np.ndarray, window: Customers, first_day: int
) -> float:
    """The guest share that gives the window its expected guest orders.

    The generator draws Poisson(share / (1 - share) x registered orders) guest orders over the
    whole period in proportion to the daily traffic; registered orders grow faster than the
    traffic (customers keep joining), so the window's own registered orders would give it too
    many guests. The share is rescaled by (registered sessions of the whole period / of the
    window) x (the window's share of the traffic), from the sessions' expected counts."""
    cum = np.concatenate([[0.0], np.cumsum(day_weights)])
    end = cum[world.days]
    act = world.customers.activity
    whole = float((act * (end - cum[world.customers.first_day])).sum())
    inside = float((act * (end - cum[window.first_day])).sum())
    share = world.cfg.guest_order_share
    odds = share / (1.0 - share) * whole / inside * (end - cum[first_day]) / end
    return odds / (1.0 + odds)


def units_grid(lines: pd.DataFrame, product_ids, dates: pd.DatetimeIndex) -> np.ndarray:
    """(products x dates) units of the demand panel built from `lines` (netting and clipping
    of `features.demand.build_panel`); a product-day without sales is 0."""
    product_ids = np.asarray(product_ids, dtype=object)
    lines = lines[lines["product_id"].isin(set(product_ids))]
    out = np.zeros((product_ids.size, dates.size))
    if lines.empty:
        return out
    panel = build_panel(lines, None, PanelConfig(detect_series_closures=False))
    rows = pd.Index(product_ids).get_indexer(panel.product_ids)
    cols = dates.get_indexer(panel.dates)
    keep_c = cols >= 0
    block = np.nan_to_num(panel.units[:, keep_c], nan=0.0)
    out[np.ix_(rows, cols[keep_c])] = block
    return out


def draw_units(
    world: DemandWorld,
    product_ids,
    dates: pd.DatetimeIndex,
    draws: int,
    calendar: Callable[[np.random.Generator], Promotions] | None = None,
    tag: int = 0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """(draws x products x dates) units: independent demand draws of the world from the first
    of `dates` on, each under the world's promotion calendar or, given `calendar`, under one it
    draws. Draw r of oracle `tag` always has the same streams."""
    start = pd.Timestamp(world.cfg.start)
    first_day = int((dates[0] - start).days)
    out = np.empty((draws, len(product_ids), dates.size))
    for r in range(draws):
        kids = np.random.SeedSequence([seed, 14, tag, r]).spawn(4)
        rngs = dict(
            zip(
                ("sessions", "orders", "returns", "promotions"),
                map(np.random.default_rng, kids),
                strict=True,
            )
        )
        promos = world.promos if calendar is None else calendar(rngs["promotions"])
        out[r] = units_grid(draw_order_lines(world, promos, rngs, first_day), product_ids, dates)
        if log and (r + 1) % 25 == 0:
            log(f"oracle {tag}: {r + 1}/{draws} draws")
    return out


def calendar_seen_at(world: DemandWorld, origin_day: int, rng: np.random.Generator) -> Promotions:
    """A promotion calendar as a forecaster reading the history up to `origin_day` (but no plan)
    could know it: the windows that started by then as they were (a running one's discount is
    in the order lines' prices), except that a window still running gets an end drawn from the
    generator's own window lengths given how long it has run; every window starting later is
    drawn afresh from the generator's promotion process."""
    prior = redrawn_promotions(world, rng)
    parts = []
    for seen, fresh in (
        (world.promos.windows, prior.windows),
        (world.promos.campaigns, prior.campaigns),
    ):
        who, length, first, disc = (np.asarray(a) for a in seen)
        started = first <= origin_day
        length = length.copy()
        elapsed = origin_day - first + 1
        running = np.flatnonzero(started & (length >= elapsed))
        pool = np.sort(np.asarray(fresh[1]))  # the process's lengths, one fresh sample
        lo = np.searchsorted(pool, elapsed[running])
        if pool.size == 0:  # no fresh window to take a length from: the running ones keep theirs
            running, lo, pool = running[:0], lo[:0], length[:1]
        pick = lo + (rng.random(running.size) * (pool.size - lo)).astype(np.int64)
        length[running] = np.where(
            lo < pool.size, pool[np.minimum(pick, pool.size - 1)], length[running]
        )
        later = np.asarray(fresh[2]) > origin_day
        parts.append(
            tuple(
                np.concatenate([np.asarray(a)[started], np.asarray(b)[later]])
                for a, b in zip((who, length, first, disc), fresh, strict=True)
            )
        )
    cfg = world.cfg
    return promotions_of(
        world.catalog, world.days, cfg.promo_elasticity, parts[0], parts[1], world.markdowns
    )


@dataclass(frozen=True)
class PublishedPlan:
    """The store's `promotions` table as windows of the generator's calendar: product rows as
    (product, length, first day, discount), category rows as (category, ...), each with the
    day it was planned, plus the lead times (first day - planned day) of each kind."""

    windows: tuple
    campaigns: tuple
    windows_planned: np.ndarray  # day index planned (fractional: the hour counts)
    campaigns_planned: np.ndarray
    window_leads: np.ndarray  # sorted, days
    campaign_leads: np.ndarray


def published_plan(world: DemandWorld, promotions: pd.DataFrame) -> PublishedPlan:
    """The `promotions` table (as `generate` writes it) in calendar terms."""
    start = pd.Timestamp(world.cfg.start)
    first = (promotions["start"] - start).dt.days.to_numpy()
    length = (promotions["end"] - promotions["start"]).dt.days.to_numpy() + 1
    planned = ((promotions["planned_at"] - start) / pd.Timedelta(days=1)).to_numpy(float)
    disc = promotions["discount"].to_numpy(float)
    is_cat = promotions["product_id"].isna().to_numpy()
    prod = pd.Index(world.catalog.ids).get_indexer(promotions["product_id"][~is_cat])
    cat = pd.Index(world.catalog.category_names).get_indexer(promotions["category"][is_cat])
    if (prod < 0).any() or (cat < 0).any():
        raise ConfigError("promotions table names products or categories not in the world")
    pick = (~is_cat, is_cat)
    windows, campaigns = (
        (who.astype(np.int64), length[m], first[m], disc[m])
        for who, m in zip((prod, cat), pick, strict=True)
    )
    leads = [np.sort(first[m] - np.floor(planned[m])) for m in pick]
    return PublishedPlan(windows, campaigns, planned[~is_cat], planned[is_cat], *leads)


def calendar_planned_at(
    world: DemandWorld, plan: PublishedPlan, origin_day: int, rng: np.random.Generator
) -> Promotions:
    """A promotion calendar as a forecaster WITH the plan knows it at the end of `origin_day`:
    every window planned by then (`planned_at` < origin + 1 day, the rule of
    `features.known_future`; this includes every window already started) as planned, plus the
    windows not yet planned, drawn afresh from the generator's promotion process: a fresh
    window starting on day s > origin is kept with the chance that its lead time (drawn from
    the table's own leads of its kind) is too short to have been planned by the origin."""
    prior = redrawn_promotions(world, rng)
    parts = []
    for known, planned, fresh, leads in (
        (plan.windows, plan.windows_planned, prior.windows, plan.window_leads),
        (plan.campaigns, plan.campaigns_planned, prior.campaigns, plan.campaign_leads),
    ):
        visible = planned < origin_day + 1
        first = np.asarray(fresh[2])
        # unplanned at the origin <=> first - lead >= origin + 1 <=> lead <= first - origin - 1
        room = first - origin_day - 1
        p_unplanned = np.searchsorted(leads, room, side="right") / max(leads.size, 1)
        later = (first > origin_day) & (rng.random(first.size) < p_unplanned)
        parts.append(
            tuple(
                np.concatenate([np.asarray(a)[visible], np.asarray(b)[later]])
                for a, b in zip(known, fresh, strict=True)
            )
        )
    cfg = world.cfg
    return promotions_of(
        world.catalog, world.days, cfg.promo_elasticity, parts[0], parts[1], world.markdowns
    )


def oracle_quantiles(units: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell of the draws: mean, median, P10 and P90."""
    p10, p50, p90 = np.quantile(units, [0.1, 0.5, 0.9], axis=0)
    return {"mean": units.mean(axis=0), "median": p50, "p10": p10, "p90": p90}


def forecast_frame(
    oracle: dict[str, np.ndarray], point: str, product_ids, dates: pd.DatetimeIndex, window
) -> pd.DataFrame:
    """The oracle as a forecast table (product_id, date, p10, p50, p90) on `window` dates."""
    cols = dates.get_indexer(window)
    n_p = len(product_ids)
    return pd.DataFrame(
        {
            "product_id": np.repeat(np.asarray(product_ids, dtype=str), cols.size),
            "date": np.tile(window.to_numpy(), n_p),
            "p10": oracle["p10"][:, cols].ravel(),
            "p50": oracle[point][:, cols].ravel(),
            "p90": oracle["p90"][:, cols].ravel(),
        }
    )


def promoted(world: DemandWorld, frame: pd.DataFrame) -> np.ndarray:
    """Whether each scored (product, date) of `frame` was discounted in the world's calendar."""
    index = pd.Index(world.catalog.ids)
    prod = index.get_indexer(frame["product_id"])
    day = (frame["date"] - pd.Timestamp(world.cfg.start)).dt.days.to_numpy()
    return world.promos.discount_of(prod, day) > 0


def score_folds(
    world: DemandWorld,
    full: DemandPanel,
    oracles: dict[str, dict[str, np.ndarray]],
    dates: pd.DatetimeIndex,
    origins,
    horizon: int,
) -> dict:
    """WAPE, bias and P10-P90 coverage of each oracle and point per fold (the benchmark's
    scored cells), on promotion days and the others, and WITH / WITHOUT ratios."""
    folds = []
    for i, origin in enumerate(origins, start=1):
        window = pd.date_range(origin + pd.Timedelta(days=1), periods=horizon, freq="D")
        history = full.cut(origin)
        fold: dict = {"fold": i, "origin": str(origin.date())}
        for name, oracle in oracles.items():
            for point in POINTS:
                fc = forecast_frame(oracle, point, full.product_ids, dates, window)
                frame = evaluation_frame(fc, full, history)
                promo = promoted(world, frame)
                m = summarize(frame)
                fold[f"{name}_{point}"] = {
                    "wape": round(m["wape"], 4),
                    "bias": round(m["bias"], 4),
                    "coverage_p10_p90": round(m["coverage_p10_p90"], 4),
                    "wape_promo_days": round(_wape(frame[promo]), 4),
                    "wape_other_days": round(_wape(frame[~promo]), 4),
                }
        fold["cells"] = int(len(frame))
        fold["units"] = float(frame["y"].sum())
        fold["promo_cell_share"] = round(float(promo.mean()), 4)
        fold["promo_unit_share"] = round(float(frame["y"][promo].sum() / frame["y"].sum()), 4)
        fold.update(_ratios(fold, oracles))
        folds.append(fold)
    overall = {}
    for key in [f"{n}_{p}" for n in oracles for p in POINTS]:
        overall[key] = {
            k: round(float(np.mean([f[key][k] for f in folds])), 4) for k in folds[0][key]
        }
    overall.update(_ratios(overall, oracles))
    return {"overall": overall, "folds": folds}


# (name, WITH oracle, WITHOUT oracle) of the WAPE ratios reported
RATIOS = (
    ("ratio", "with_plan", "without_plan"),  # the most favourable to the plan
    ("ratio_seen", "with_plan", "without_plan_seen"),
    ("ratio_at_origin", "with_plan_at_origin", "without_plan_seen"),  # what the bench can use
)


def _ratios(scores: dict, oracles) -> dict[str, float]:
    """WITH / WITHOUT WAPE per point for each pair of `RATIOS` whose oracles were run."""
    out = {}
    for label, with_, without in RATIOS:
        if with_ in oracles and without in oracles:
            for point in POINTS:
                out[f"{label}_{point}"] = round(
                    scores[f"{with_}_{point}"]["wape"] / scores[f"{without}_{point}"]["wape"], 4
                )
    return out


def _wape(frame: pd.DataFrame) -> float:
    y = frame["y"].to_numpy(float)
    return float(np.abs(y - frame["p50"].to_numpy(float)).sum() / y.sum()) if y.sum() else np.nan


def shopml_beside(bench: dict, oracle_overall: dict) -> dict:
    """The measured models of a `bench forecast-generated` JSON beside the oracles: shopml's
    WITH / WITHOUT ratio, each model's WAPE over the floors of the oracle with the plan as
    published at the origins (`with_plan` when that one was not run), expected units and
    medians, and that oracle's WAPE over the best peer's."""
    rows = bench.get("models") if isinstance(bench, dict) else None
    if not isinstance(rows, list) or not all("model" in r and "wape" in r for r in rows):
        raise ConfigError("bench JSON: `models` must be a list of rows with `model` and `wape`")
    wape = {row["model"]: row["wape"] for row in rows}
    oracle = "with_plan_at_origin" if "with_plan_at_origin_mean" in oracle_overall else "with_plan"
    floors = {p: oracle_overall[f"{oracle}_{p}"]["wape"] for p in POINTS}
    out: dict = {"oracle": oracle, "models_wape": wape}
    for point, floor in floors.items():
        out[f"wape_over_oracle_{point}"] = {m: round(w / floor, 4) for m, w in wape.items()}
    if "lightgbm" in wape and "lightgbm_no_known_future" in wape:
        out["shopml_ratio"] = round(wape["lightgbm"] / wape["lightgbm_no_known_future"], 4)
    peers = {m: w for m, w in wape.items() if m.startswith(("mlforecast", "AutoETS"))}
    if peers:
        best = min(peers, key=peers.get)
        out["best_peer"] = best
        for point, floor in floors.items():
            out[f"oracle_{point}_over_best_peer"] = round(floor / peers[best], 4)
    return out


# placeholder floors to check a --bench file before the draws
_CHECK_ONLY = {f"with_plan_{p}": {"wape": 1.0} for p in POINTS}


def _fold_oracle(world, calendar_at, full, dates, origins, horizon, draws, tag, seed, log):
    """An oracle whose calendar depends on the origin: each fold's days drawn under the
    calendars `calendar_at(origin_day, rng)` gives, put together over `dates` (the folds tile
    them)."""
    parts: dict[str, np.ndarray] = {}
    start = pd.Timestamp(world.cfg.start)
    for i, origin in enumerate(origins):
        window = pd.date_range(origin + pd.Timedelta(days=1), periods=horizon, freq="D")
        calendar = partial(calendar_at, int((origin - start).days))
        units = draw_units(world, full.product_ids, window, draws, calendar, tag + i, seed, log)
        cols = dates.get_indexer(window)
        for key, value in oracle_quantiles(units).items():
            parts.setdefault(key, np.full((len(full.product_ids), dates.size), np.nan))
            parts[key][:, cols] = value
    return parts


def run(
    out: Path | None = None,
    draws: int = 200,
    seed: int = 0,
    bench: Path | None = None,
    log=print,
    draw_seed: int | None = None,
) -> dict:
    """The oracle WAPEs on the benchmark's folds; writes and returns the JSON. `draw_seed`
    (default: the store's seed) keys the demand draws: another one repeats the Monte Carlo."""
    from experiments.forecast_generated import FOLDS, HORIZON, SCALE, TOP_N  # heavy imports
    from features.generator import generate
    from features.known_future import KnownFuture

    if draws < 1:
        raise ConfigError(f"draws must be >= 1, got {draws}")
    t0 = time.perf_counter()
    cfg = GeneratorConfig(scale=SCALE, seed=seed)
    store = generate(cfg)
    full = build_panel(
        store.order_lines, store.products, PanelConfig(top_n=TOP_N), KnownFuture.from_store(store)
    )
    origins = rolling_origins(full.dates, FOLDS, HORIZON)
    dates = pd.date_range(origins[0] + pd.Timedelta(days=1), full.dates[-1], freq="D")
    world = demand_world(cfg)
    setup = time.perf_counter() - t0
    draw_seed = seed if draw_seed is None else draw_seed
    timings, oracles = {}, {}
    for tag, (name, calendar) in enumerate(
        (("with_plan", None), ("without_plan", partial(redrawn_promotions, world)))
    ):
        t = time.perf_counter()
        units = draw_units(world, full.product_ids, dates, draws, calendar, tag, draw_seed, log)
        oracles[name] = oracle_quantiles(units)
        timings[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
    plan = published_plan(world, store.promotions)
    per_fold = (
        ("without_plan_seen", partial(calendar_seen_at, world), 2),
        ("with_plan_at_origin", partial(calendar_planned_at, world, plan), 2 + FOLDS),
    )
    for name, calendar_at, tag in per_fold:
        t = time.perf_counter()
        oracles[name] = _fold_oracle(
            world, calendar_at, full, dates, origins, HORIZON, draws, tag, draw_seed, log
        )
        timings[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
    result = score_folds(world, full, oracles, dates, origins, HORIZON)
    payload = {
        "setup": {
            "scale": SCALE,
            "seed": seed,
            "series": int(full.n_products),
            "horizon": HORIZON,
            "folds": FOLDS,
            "draws": draws,
            "draw_seed": draw_seed,
            "redrawn_days": f"{dates[0].date()}..{dates[-1].date()}",
            "setup_seconds": round(setup, 1),
            **timings,
        },
        **result,
    }
    if bench is not None:
        payload["measured"] = shopml_beside(json.loads(Path(bench).read_text()), result["overall"])
    write_report(payload, out)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--draws", type=int, default=200, help="demand draws per oracle")
    parser.add_argument("--seed", type=int, default=0, help="the generated store's seed")
    parser.add_argument(
        "--draw-seed", type=int, default=None, help="seed of the demand draws (default: --seed)"
    )
    parser.add_argument(
        "--bench", type=Path, default=None, help="a `bench forecast-generated` JSON to compare"
    )
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be >= 1, got {args.draws}")
    if args.bench is not None and not args.bench.is_file():
        parser.error(f"--bench {args.bench}: no such file")
    try:
        if args.bench is not None:
            shopml_beside(json.loads(args.bench.read_text()), _CHECK_ONLY)
    except (ValueError, TypeError, ConfigError) as exc:  # before the draws, not after
        parser.error(f"--bench {args.bench}: {exc}")
    if args.draw_seed is not None and args.draw_seed < 0:
        parser.error(f"--draw-seed must be >= 0, got {args.draw_seed}")
    payload = run(args.out, args.draws, args.seed, args.bench, draw_seed=args.draw_seed)
    print(json.dumps(payload["overall"], indent=2))


if __name__ == "__main__":
    main()
