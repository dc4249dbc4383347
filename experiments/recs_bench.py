"""The engine shared by the recommender benchmarks: tune every model on a validation split cut
from the training part, refit the chosen setting on the whole training part, evaluate once on
the test part, time it, and print a table beside published numbers.

A candidate is (interaction settings, model kind, model params). Validation picks, per model
kind, the best nDCG@k (optionally among candidates reaching a minimum catalog coverage); a
blend of up to `blend_max_parts` personalised kinds is then tuned on validation the same way.
Every choice reads validation metrics only, never a measured time, so the same data and seed
give the same choice on an idle machine and on a loaded one; times are reported, not used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.reports import write_report
from features.interactions import InteractionConfig, InteractionMatrix, build_matrix
from models.recommenders import BlendRecommender, RankerRecommender, Recommender, make_model
from models.recommenders.ranker import Window
from shopml.progress import progress
from training.recommender_eval import (
    Truth,
    candidate_recall,
    evaluate,
    measure_speed,
    truth_from_events,
)

SPLITS = ("temporal", "random")  # how a protocol's test split is drawn (see Protocol.split)
CANDIDATES = 100  # per-customer candidates precomputed for serving
METRIC_KEYS = (
    "map",
    "ndcg@{k}",
    "precision@{k}",
    "recall@{k}",
    "map@{k}",
    "hit_rate@{k}",
    "coverage@{k}",
)


@dataclass
class Candidate:
    kind: str
    params: dict
    interactions: dict = field(default_factory=dict)

    def label(self) -> str:
        bits = [f"{k}={v}" for k, v in {**self.interactions, **self.params}.items()]
        return f"{self.kind}({', '.join(bits)})"


@dataclass
class Protocol:
    """What differs between benchmarks: the data, the splits and the k."""

    name: str
    k: int
    base_interactions: InteractionConfig
    train: pd.DataFrame  # events of the training part
    test: pd.DataFrame
    fit: pd.DataFrame  # training part of the validation split
    val: pd.DataFrame
    products: pd.DataFrame | None
    as_of_test: object = None  # decay reference of the final model (the test cut-off)
    as_of_val: object = None
    min_coverage: float = 0.0
    blend_max_parts: int = 3  # a cap by count: a blend holds at most this many models
    blend_weights: tuple[float, ...] = (0.2, 0.35, 0.5, 0.7, 1.0)
    ranker: bool = True  # train the LambdaRank ranker over the chosen models' candidates
    # the split of a part's training events one window earlier, as the validation split cuts
    # the training part: (events, as_of, fold) -> (split with .train/.test, its as_of); None:
    # the ranker learns from the validation window alone
    earlier: Callable | None = None
    # how the benchmark's test split is drawn, and so the ranker's earlier windows: "temporal"
    # (each window cut before the next, from its training events: the protocol moves forward
    # in time) or "random" (each a fold of the validation split's training part, the same
    # random draw with its own seed: the test protocol's labels are random holdouts too)
    split: str = "temporal"
    ranker_windows: int = 2  # windows the ranker is trained on (the validation one and earlier)
    ranker_params: dict = field(default_factory=dict)  # RankerRecommender's, beside its defaults
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"protocol split must be one of {SPLITS}, got split={self.split!r}")

    @classmethod
    def from_splits(
        cls,
        name: str,
        k: int,
        base: InteractionConfig,
        outer,
        inner,
        products: pd.DataFrame | None,
        **options,
    ) -> Protocol:
        """A protocol from the test split (`outer`) and the validation split of its training
        part (`inner`), each with `.train` and `.test` events."""
        return cls(
            name=name,
            k=k,
            base_interactions=base,
            train=outer.train,
            test=outer.test,
            fit=inner.train,
            val=inner.test,
            products=products,
            **options,
        )


class _Data:
    """Matrices and truths per interaction setting, built once per part."""

    def __init__(self, proto: Protocol, events: pd.DataFrame, test: pd.DataFrame, as_of):
        self.proto, self.events, self.test, self.as_of = proto, events, test, as_of
        self._cache: dict[str, tuple[InteractionMatrix, Truth]] = {}

    def get(self, interactions: dict) -> tuple[InteractionMatrix, Truth]:
        key = json.dumps(interactions, sort_keys=True)
        if key not in self._cache:
            cfg = self.proto.base_interactions.model_copy(update=interactions)
            if cfg.half_life_days is not None and self.as_of is not None:
                cfg = cfg.model_copy(update={"as_of": self.as_of})
            m = build_matrix(self.events, cfg)
            self._cache[key] = (m, truth_from_events(self.test, m))
        return self._cache[key]


def _score(metrics: dict, k: int, min_coverage: float) -> tuple:
    ok = metrics.get(f"coverage@{k}", 1.0) >= min_coverage
    return (ok, metrics[f"ndcg@{k}"])


def run_protocol(proto: Protocol, grids: dict[str, list[Candidate]]) -> dict:
    """Tune, refit, evaluate and time every model kind; returns the JSON-ready report."""
    k = proto.k
    val_data = _Data(proto, proto.fit, proto.val, proto.as_of_val)
    test_data = _Data(proto, proto.train, proto.test, proto.as_of_test)
    chosen = {kind: _choose(proto, kind, cands, val_data) for kind, cands in grids.items()}
    blend = _tune_blend(proto, chosen, val_data)
    val_models = {kind: model for kind, (_, _, model) in chosen.items()}
    rows = []
    for kind, (cand, val_metrics, _) in progress(list(chosen.items()), f"{proto.name}: refit"):
        m, truth = test_data.get(cand.interactions)
        start, cpu = time.perf_counter(), time.process_time()
        model = make_model(cand.kind, **cand.params).fit(m, proto.products)
        fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append(_report_row(kind, cand.label(), model, truth, fit_s, val_metrics, k, fit_cpu))
        chosen[kind] = (cand, val_metrics, model)
    if blend is not None:
        rows.append(_refit_blend(proto, chosen, blend, test_data))
    best_row = max(rows, key=lambda r: _score(r["val"], k, proto.min_coverage))
    report = {"benchmark": proto.name, "k": k, "models": rows}
    if proto.ranker:
        ranker_row, ranking = _ranker(proto, chosen, val_models, val_data, test_data, rows, blend)
        rows.append(ranker_row)
        report["ranker"] = ranking
        if (ranking["validation"].get("lift") or 0.0) > 0:  # chosen on validation only
            best_row = ranker_row
    report["best"] = _best(best_row, k)
    return report


def session_latency(model: Recommender, k: int, n: int = 200, seed: int = 0) -> dict:
    """p50/p99 ms of a new visitor's request (5 recent products, purchases hidden) ranked per
    request: candidates, features and the ranker, as `/recommend` runs it for a session."""
    rng = np.random.default_rng(seed)
    sessions = [model.product_ids_[rng.integers(0, model.n_items, 5)].tolist() for _ in range(n)]
    for s in sessions[:10]:
        model.recommend_for_items(s, k)
    lat = np.empty(n)
    for i, s in enumerate(sessions):
        t0 = time.perf_counter()
        model.recommend_for_items(s, k)
        lat[i] = time.perf_counter() - t0
    p50, p99 = np.percentile(lat, [50, 99]) * 1e3
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "requests": n}


def _generators(chosen: dict, models: dict) -> list[str]:
    """The ranker's candidate generators: every chosen kind, the best personalised one by
    validation nDCG first (its order ranks products beyond the candidates)."""
    k_key = next(key for key in next(iter(chosen.values()))[1] if key.startswith("ndcg@"))
    order = sorted(
        chosen,
        key=lambda n: (n.startswith(("popularity", "trending", "category")), -chosen[n][1][k_key]),
    )
    lead = models[order[0]]
    return [
        n
        for n in order
        if np.array_equal(models[n].product_ids_, lead.product_ids_)
        and np.array_equal(models[n].customer_ids_, lead.customer_ids_)
    ]


def _generator_models(proto: Protocol, chosen, names, blend, data: _Data, models=None) -> list:
    """The ranker's generators on a part: the blend (when there is one) and the chosen models
    `names` (`models`, else each chosen setting fitted on the part's training events)."""
    history, _ = data.get({})
    if models is None:
        models = {}
        for n in {*names, *(blend[0] if blend is not None else ())}:
            cand = chosen[n][0]
            models[n] = make_model(cand.kind, **cand.params).fit(
                data.get(cand.interactions)[0], proto.products
            )
    gens = [models[n] for n in names]
    if blend is not None:
        parts, weights = blend[0], list(blend[1])
        gens.insert(0, BlendRecommender([models[n] for n in parts], weights).fit(history))
    return gens


def _window(proto: Protocol, chosen, names, blend, data: _Data, models=None) -> Window:
    """The ranker's window of a part: its generators, history and test labels."""
    history, truth = data.get({})
    gens = _generator_models(proto, chosen, names, blend, data, models)
    return Window(gens, history, truth.matrix[:, : truth.n_catalog])


def _ranker_windows(proto: Protocol, chosen, val_models, names, blend, val_data) -> list:
    """The validation window and up to `proto.ranker_windows - 1` earlier ones (oldest first),
    each split from the validation training part as validation is split from the training
    part (never the test part): a temporal protocol cuts each from the training events of
    the next, a random one draws each as a fold of the validation training part."""
    windows = [_window(proto, chosen, names, blend, val_data, val_models)]
    events, as_of = proto.fit, proto.as_of_val
    for fold in range(proto.ranker_windows - 1 if proto.earlier is not None else 0):
        split, cut = proto.earlier(events, as_of, fold)
        if len(split.train) == 0 or len(split.test) == 0:
            break
        data = _Data(proto, split.train, split.test, cut)
        windows.insert(0, _window(proto, chosen, names, blend, data))
        if proto.split == "temporal":  # the next window is cut before this one
            events, as_of = split.train, cut
    return windows


def _ranker(
    proto: Protocol, chosen, val_models, val_data: _Data, test_data: _Data, rows, blend=None
):
    """Train the ranker on validation windows (generators fitted on each one's training
    part, labels its test part), serve it with the generators refitted on the whole training
    part, evaluate it once on the test part; its report row and its candidate recall,
    importance and lift. The blend chosen on validation, when there is one, leads the
    generators (the ranker starts from its order)."""
    k = proto.k
    test_models = {kind: model for kind, (_, _, model) in chosen.items()}
    names = _generators(chosen, val_models)
    full, truth = test_data.get({})
    start, cpu = time.perf_counter(), time.process_time()
    windows = _ranker_windows(proto, chosen, val_models, names, blend, val_data)
    late = _generator_models(proto, chosen, names, blend, test_data, test_models)
    if blend is not None:
        names = ["blend", *names]
    # the protocol's coverage rule binds the ranker as it binds every setting
    own = {"eval_k": k, "seed": 0, "min_coverage": proto.min_coverage or None}
    model = RankerRecommender(late, **(own | proto.ranker_params))
    model.fit_stages(windows, full, proto.products)
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    metrics = evaluate(model, truth, k)
    pre = time.perf_counter()
    model.precompute(CANDIDATES)
    pre_s = time.perf_counter() - pre
    served = measure_speed(model, k, n_single=300)
    row = {"model": "ranker", "setting": f"lambdarank over {', '.join(names)}"}
    row.update({key.format(k=k): round(metrics[key.format(k=k)], 4) for key in METRIC_KEYS})
    row.update(users=int(metrics["users"]), train_seconds=round(fit_s, 3))
    row.update(train_cpu_seconds=round(fit_cpu, 3), precompute_seconds=round(pre_s, 3))
    row.update({key: round(v, 4) for key, v in served.items()})
    row.update({f"direct_{key}": round(v, 4) for key, v in served.items()})
    row["val"] = {f"ndcg@{k}": model.validation_.get("ndcg", 0.0)}
    singles = {r["model"]: r[f"ndcg@{k}"] for r in rows if r["model"] != "blend"}
    best_single = max(singles, key=singles.get)
    blend_ndcg = next((r[f"ndcg@{k}"] for r in rows if r["model"] == "blend"), None)
    ranking = {
        "session_latency": session_latency(model, k),
        "generators": names,
        "candidates_per_generator": model.n_candidates,
        "windows": len(windows),
        "gate_open": model.fallback_ is None,
        "candidate_recall_validation": model.candidate_recall_,
        "candidate_recall_test": candidate_recall(model, truth),
        "validation": model.validation_,
        "rounds": model.rounds_,
        "feature_importance": model.feature_importance_,
        "best_single_generator": best_single,
        f"test_lift_ndcg@{k}": round(metrics[f"ndcg@{k}"] / singles[best_single] - 1.0, 4),
        f"test_lift_over_blend_ndcg@{k}": (
            round(metrics[f"ndcg@{k}"] / blend_ndcg - 1.0, 4) if blend_ndcg else None
        ),
    }
    proto.log(
        f"ranker: test ndcg@{k}={metrics[f'ndcg@{k}']:.4f} vs {best_single} "
        f"{singles[best_single]:.4f} (lift {ranking[f'test_lift_ndcg@{k}']:+.1%}); session "
        f"request p50/p99 {ranking['session_latency']['p50_ms']:.2f}/"
        f"{ranking['session_latency']['p99_ms']:.2f} ms; "
        f"candidate recall {ranking['candidate_recall_test']}"
    )
    return row, ranking


def _choose(
    proto: Protocol, kind: str, candidates: list[Candidate], val_data: _Data
) -> tuple[Candidate, dict, Recommender]:
    """The candidate of `kind` with the best validation score, its metrics and fitted model."""
    k, log = proto.k, proto.log
    best = None
    for cand in progress(candidates, f"{proto.name}: tune {kind}", unit="candidate"):
        m, truth = val_data.get(cand.interactions)
        model = make_model(cand.kind, **cand.params).fit(m, proto.products)
        metrics = evaluate(model, truth, k)
        log(
            f"  val {cand.label():<70} ndcg@{k}={metrics[f'ndcg@{k}']:.4f} "
            f"cov={metrics[f'coverage@{k}']:.3f}"
        )
        if best is None or _score(metrics, k, proto.min_coverage) > _score(
            best[1], k, proto.min_coverage
        ):
            best = (cand, metrics, model)
    log(f"{kind}: chose {best[0].label()} (val ndcg@{k}={best[1][f'ndcg@{k}']:.4f})")
    return best


def _refit_blend(proto: Protocol, chosen: dict, blend: tuple, test_data: _Data) -> dict:
    """Refit the tuned blend's parts on the whole training part; its report row."""
    names, weights, val_metrics = blend
    m, truth = test_data.get(chosen[names[0]][0].interactions)
    start, cpu = time.perf_counter(), time.process_time()
    parts = []
    for n in names:  # each part on its own interaction setting (same id mappings)
        cand = chosen[n][0]
        parts.append(
            make_model(cand.kind, **cand.params).fit(
                test_data.get(cand.interactions)[0], proto.products
            )
        )
    model = BlendRecommender(parts, weights=list(weights)).fit(m, proto.products)
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    label = " + ".join(f"{w:g}*{chosen[n][0].label()}" for n, w in zip(names, weights, strict=True))
    return _report_row("blend", label, model, truth, fit_s, val_metrics, proto.k, fit_cpu)


@dataclass(frozen=True)
class Reference:
    """What a benchmark is read against: published rows, its targets, its protocol in words
    and the metric columns of its table."""

    published: list[dict]
    targets: dict
    protocol: str
    columns: list[str]


def run_benchmark(
    proto: Protocol,
    grids: dict[str, list[Candidate]],
    reference: Reference,
    quick: bool = False,
    out: Path | None = None,
) -> dict:
    """Run a benchmark (`quick`: the first candidate of each kind, a smoke run), print its
    table beside the published rows and write the JSON report to `out`."""
    if quick:
        grids = {kind: cands[:1] for kind, cands in grids.items()}
    report = run_protocol(proto, grids)
    report["published"] = reference.published
    report["targets"] = reference.targets
    report["protocol"] = reference.protocol
    report["note"] = "timings measured on a shared 2-core machine under load (pessimistic)"
    print_table(report, reference.published, reference.columns)
    write_report(report, out)
    return report


def _tune_blend(proto: Protocol, chosen: dict, val_data: _Data):
    """Greedy forward blend on validation: start from the best personalised model, add the
    model and weight that most improve validation nDCG, stop when nothing improves or the
    blend holds `proto.blend_max_parts` models."""
    k = proto.k
    personal = [n for n in chosen if not n.startswith("popularity")]
    ranked = sorted(personal, key=lambda n: chosen[n][1][f"ndcg@{k}"], reverse=True)
    if not ranked:
        return None
    lead = ranked[0]
    lead_model = chosen[lead][2]
    pool = [
        n
        for n in ranked[1:]
        if np.array_equal(chosen[n][2].product_ids_, lead_model.product_ids_)
        and np.array_equal(chosen[n][2].customer_ids_, lead_model.customer_ids_)
    ]
    m, truth = val_data.get(chosen[lead][0].interactions)
    names, weights, current = [lead], [1.0], chosen[lead][1]
    best = None
    while pool and len(names) < proto.blend_max_parts:
        step = _best_step(proto, chosen, names, weights, pool, m, truth)
        if step is None or _score(step[2], k, proto.min_coverage) <= _score(
            current, k, proto.min_coverage
        ):
            break
        names.append(step[0])
        weights.append(step[1])
        current = step[2]
        pool.remove(step[0])
        best = (tuple(names), tuple(weights), current)
    if best is None:
        proto.log("blend: no gain over the best single model on validation")
        return None
    return best


def _best_step(proto: Protocol, chosen: dict, names, weights, pool, m, truth):
    """The (partner, weight, validation metrics) that most improve the blend `names` on
    validation (the first in pool and weight order among equals); None without partners."""
    k = proto.k
    step = None
    for partner in progress(pool, f"{proto.name}: blend {len(names) + 1}", unit="partner"):
        for w in proto.blend_weights:
            parts = [chosen[n][2] for n in [*names, partner]]
            blend = BlendRecommender(parts, weights=[*weights, w])
            blend.fit(m, proto.products)  # parts are already fitted
            metrics = evaluate(blend, truth, k)
            proto.log(
                f"  val blend {' + '.join(names)} + {w:g}*{partner:<30} ndcg@{k}="
                f"{metrics[f'ndcg@{k}']:.4f} cov={metrics[f'coverage@{k}']:.3f}"
            )
            if step is None or _score(metrics, k, proto.min_coverage) > _score(
                step[2], k, proto.min_coverage
            ):
                step = (partner, w, metrics)
    return step


def _report_row(kind, label, model, truth, fit_s, val_metrics, k, fit_cpu=None) -> dict:
    """Test metrics, fit time, and speed both scoring in full ("direct_") and as served
    (each customer's top-100 precomputed after fit; filters applied to it)."""
    metrics = evaluate(model, truth, k)
    direct = measure_speed(model, k)
    start = time.perf_counter()
    model.precompute(CANDIDATES)
    pre_s = time.perf_counter() - start
    served = measure_speed(model, k)
    row = {"model": kind, "setting": label}
    row.update({key.format(k=k): round(metrics[key.format(k=k)], 4) for key in METRIC_KEYS})
    row["users"] = int(metrics["users"])
    row["train_seconds"] = round(fit_s, 3)
    if fit_cpu is not None:
        row["train_cpu_seconds"] = round(fit_cpu, 3)
    row["precompute_seconds"] = round(pre_s, 3)
    row.update({key: round(v, 4) for key, v in served.items()})
    row.update({f"direct_{key}": round(v, 4) for key, v in direct.items()})
    row["val"] = {key: round(v, 4) for key, v in val_metrics.items()}
    return row


def _best(row: dict, k: int) -> dict:
    keys = [
        "map",
        f"ndcg@{k}",
        f"precision@{k}",
        f"recall@{k}",
        f"map@{k}",
        f"hit_rate@{k}",
        f"coverage@{k}",
    ]
    return {"model": row["model"], "setting": row["setting"], **{key: row[key] for key in keys}}


def print_table(report: dict, published: list[dict], keys: list[str]) -> None:
    """Our rows (test part) beside the published rows; '-' where a number is not published."""
    head = f"{'model':<12}" + "".join(f"{key:>13}" for key in keys)
    head += f"{'train s':>9}{'cpu s':>7}{'batch/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
    head += f"{'direct batch/s':>15}{'p50 ms':>8}"
    print(head)
    print("-" * len(head))
    for row in report["models"]:
        line = f"{row['model']:<12}" + "".join(f"{row[key]:>13.4f}" for key in keys)
        line += f"{row['train_seconds']:>9.2f}{row.get('train_cpu_seconds', 0):>7.2f}"
        line += f"{row['batch_customers_per_s']:>10.0f}"
        line += f"{row['single_p50_ms']:>8.3f}{row['single_p99_ms']:>8.3f}"
        line += f"{row['direct_batch_customers_per_s']:>15.0f}{row['direct_single_p50_ms']:>8.3f}"
        print(line)
    if published:
        print("published:")
        for row in published:
            cells = "".join(f"{row[key]:>13.3f}" if key in row else f"{'-':>13}" for key in keys)
            print(f"{row['model']:<12}{cells}")
    best = report["best"]
    print(f"best: {best['model']} {best['setting']}")
    print(
        "speed: batch/s, p50/p99 as served (top-100 candidates precomputed after fit, filters "
        "applied to them); 'direct' scores every customer in full. Wall-clock on a shared, "
        "loaded 2-core machine: pessimistic."
    )
