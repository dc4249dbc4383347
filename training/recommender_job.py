"""`shopml train recommender`: load data, build the interaction matrix, split, fit, evaluate,
log to MLflow (config, metrics, recall@k/coverage plots, the native model with its id mappings)
and register the model. With `search.trials > 0`, hyperparameters are drawn at random from
`search.space`, each trial is a nested run scored on a validation split cut from the training
part (never the test part), and the best trial's parameters are used for the final model.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from features.feedback import with_feedback
from features.interactions import InteractionConfig, InteractionMatrix, build_matrix, events_frame
from features.reference import Profile
from features.sources import SourceConfig, load_source
from features.store import Store
from models.recommenders import (
    RECOMMENDERS,
    SINGLE_KINDS,
    BlendRecommender,
    FallbackRecommender,
    PopularityRecommender,
    RankerRecommender,
    Recommender,
    make_model,
)
from models.recommenders.ease import check_catalog_size
from registry.store import load_logged
from shopml.compute import Compute, ComputeConfig, open_compute
from shopml.config import ConfigModel
from shopml.errors import ConfigError, DataError
from shopml.progress import progress
from shopml.settings import Settings, load_settings
from training import tracking
from training.params import check_kind_params
from training.recommender_eval import EVAL_FILTERS, Truth, candidate_recall, truth_from_events
from training.recommender_eval import evaluate as evaluate_model
from training.reference_profiles import recommender_reference_for, store_reference
from training.splits import Split, stratified_split, temporal_split
from training.tracking import TrainResult

FAMILY = "recommender"
CURVE_KS = (1, 5, 10, 20, 50, 100)


class ModelConfig(ConfigModel):
    """One model: `kind` (popularity, als, bpr, item_knn, ease) and its constructor parameters
    (those left out keep the model's defaults)."""

    kind: Literal[SINGLE_KINDS] = "ease"
    params: dict = Field(default_factory=dict)
    weight: float = 1.0  # used inside a blend

    @model_validator(mode="after")
    def _known_params(self) -> ModelConfig:
        check_kind_params(RECOMMENDERS, self.kind, self.params)
        return self


class RankerConfig(ConfigModel):
    """The second stage: a LightGBM LambdaRank model over the candidates of the configured
    model, each `blend_with` model and (with `popular`) trending and category-popular products;
    `params` are `RankerRecommender`'s own (n_candidates, label_days, n_estimators, ...)."""

    popular: bool = True
    params: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_params(self) -> RankerConfig:
        check_kind_params(RECOMMENDERS, "ranker", self.params)
        return self


class SplitConfig(ConfigModel):
    """temporal: train before `cutoff` (default: `test_days` before the last event), test on
    new products bought after it. stratified: each `by` group's events split `ratio` at random."""

    kind: Literal["temporal", "stratified"] = "temporal"
    cutoff: datetime | None = None
    test_days: float = Field(default=14.0, gt=0)
    ratio: float = Field(default=0.75, gt=0, lt=1)
    by: Literal["product_id", "customer_id"] = "product_id"
    seed: int = 42


class SearchConfig(ConfigModel):
    """Random search over `space` (parameter -> list of choices; `model.` / `interactions.`)."""

    trials: int = Field(default=0, ge=0)
    space: dict[str, list] = Field(default_factory=dict)
    seed: int = 0


class RecommenderJobConfig(ConfigModel):
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(kind="generated"))
    interactions: InteractionConfig = Field(default_factory=InteractionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    blend_with: list[ModelConfig] = Field(default_factory=list)
    ranker: RankerConfig | None = None  # re-rank the models' candidates (they are not blended)
    fallback: bool = True
    split: SplitConfig = Field(default_factory=SplitConfig)
    k: int = Field(default=20, gt=0)
    search: SearchConfig = Field(default_factory=SearchConfig)
    precompute_top_n: int = Field(default=100, ge=0)  # served candidates per customer; 0 = off
    seed: int = 0
    register_model: bool = True


# ---- data ------------------------------------------------------------------------------------
def split_events(events: pd.DataFrame, cfg: SplitConfig) -> tuple[Split, pd.Timestamp | None]:
    """The job's split, and the cut-off (decay reference) when temporal."""
    if len(events) == 0:
        raise DataError("no interaction events to train a recommender on")
    if cfg.kind == "stratified":
        return stratified_split(events, cfg.ratio, cfg.by, cfg.seed), None
    cutoff = (
        pd.Timestamp(cfg.cutoff)
        if cfg.cutoff
        else (events["timestamp"].max() - pd.Timedelta(days=cfg.test_days))
    )
    return temporal_split(events, cutoff, only_new=True), cutoff


def evaluation_protocol(config: RecommenderJobConfig) -> dict:
    """How `train` and `evaluate` test (split, k, event filters, what evaluation hides), which
    the promotion gate requires equal (`training.tracking.log_protocol`)."""
    used = {"temporal": {"cutoff", "test_days"}, "stratified": {"ratio", "by", "seed"}}
    split = config.split.model_dump(mode="json", include={"kind", *used[config.split.kind]})
    events = config.interactions.model_dump(include={"purchases_from", "exclude_products"})
    return {"split": split, "k": config.k, "events": events, "hidden": EVAL_FILTERS}


def _matrix(
    events: pd.DataFrame, cfg: InteractionConfig, as_of, compute: Compute | None = None
) -> InteractionMatrix:
    if cfg.half_life_days is not None and as_of is not None and cfg.as_of is None:
        cfg = cfg.model_copy(update={"as_of": pd.Timestamp(as_of).to_pydatetime()})
    return build_matrix(events, cfg, compute=compute)


def _fit_on(compute: Compute | None, model: Recommender, matrix: InteractionMatrix, products):
    """`model` fitted on the aggregated matrix: here, or on one Dask worker (the same code and
    seeds, so the same model; the matrix travels once, the fitted model comes back)."""
    if compute is None or not compute.is_dask:
        return model.fit(matrix, products)
    return compute.client.submit(_fit_model, model, matrix, products, pure=False).result()


def _fit_model(model: Recommender, matrix: InteractionMatrix, products) -> Recommender:
    return model.fit(matrix, products)


def build_model(config: RecommenderJobConfig) -> Recommender:
    """The configured model: one kind, a blend, or the ranker over the models' candidates,
    wrapped in the fallback chain if asked."""
    model = make_model(config.model.kind, **config.model.params)
    if config.ranker is not None:
        gens = [model] + [make_model(m.kind, **m.params) for m in config.blend_with]
        if config.ranker.popular:
            gens += [PopularityRecommender(mode="trending"), PopularityRecommender(mode="category")]
        model = RankerRecommender(gens, **config.ranker.params)
    elif config.blend_with:
        parts = [model] + [make_model(m.kind, **m.params) for m in config.blend_with]
        weights = [config.model.weight] + [m.weight for m in config.blend_with]
        model = BlendRecommender(parts, weights=weights)
    if config.fallback:
        model = FallbackRecommender(model, PopularityRecommender(mode="trending"))
    return model


def _with_overrides(config: RecommenderJobConfig, overrides: dict) -> RecommenderJobConfig:
    data = config.model_dump(mode="json", exclude_unset=True)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "model":
            data.setdefault("model", {}).setdefault("params", {})[name] = value
        elif section == "interactions":
            data.setdefault("interactions", {})[name] = value
        else:
            raise ConfigError(f"search.space: {key!r} must start with 'model.' or 'interactions.'")
    return RecommenderJobConfig.model_validate(data)


# ---- job -------------------------------------------------------------------------------------
def train(
    config: RecommenderJobConfig, settings: Settings | None = None, store: Store | None = None
) -> TrainResult:
    """Run the whole job and return its TrainResult (run id, metrics, registered version)."""
    settings = settings or load_settings()
    with open_compute(config.compute, settings.dask_scheduler) as compute:
        return _train(config, settings, store, compute)


def _train(
    config: RecommenderJobConfig, settings: Settings, store: Store | None, compute: Compute
) -> TrainResult:
    store = store if store is not None else load_source(config.source, settings)
    events = events_frame(store, config.interactions)
    split, cutoff = split_events(events, config.split)
    if config.interactions.include_feedback:  # the storefront's feedback trains, never tests
        lines = store.order_lines is not None and len(store.order_lines) > 0
        bought = config.interactions.purchases_from == "interactions" or not lines
        split.train = with_feedback(split.train, cutoff, bought, settings)
    with tracking.start_run(FAMILY, config=config, store=store, settings=settings) as run:
        mlflow.log_params(
            {"split.train_events": len(split.train), "split.test_events": len(split.test)}
        )
        mlflow.log_params({f"compute.cluster.{k}": v for k, v in compute.describe().items()})
        tracking.log_protocol(evaluation_protocol(config))
        if config.search.trials > 0:
            config = _searched(config, split.train, store.products, compute)
        model, metrics = _fit_and_evaluate(config, split, cutoff, store.products, compute)
        if config.precompute_top_n:
            model.precompute(config.precompute_top_n)
        reference = recommender_reference_for(store, split.train, cutoff, model, config.k)
        uri = _log_model(model, config, reference)
        version = tracking.register_model(uri, family=FAMILY) if config.register_model else None
        return TrainResult.of_run(run, store, metrics, version, model_uri=uri)


def _searched(
    config: RecommenderJobConfig, train_events, products, compute: Compute | None = None
) -> RecommenderJobConfig:
    """`config` with the parameters of the best search trial, logged as the run's best."""
    best = _search(config, train_events, products, compute)
    mlflow.log_dict({"best": best}, "search/best.json")
    mlflow.log_params({f"best.{k}": v for k, v in best.items()})
    return _with_overrides(config, best)


def _fit_and_evaluate(
    config: RecommenderJobConfig, split: Split, cutoff, products, compute: Compute | None = None
):
    """Fit the configured model on the training part, evaluate and log it on the test part."""
    matrix = _matrix(split.train, config.interactions, cutoff, compute)
    if "ease" in {config.model.kind, *(m.kind for m in config.blend_with)}:
        check_catalog_size(matrix.shape[1])  # before any part is fitted
    truth = truth_from_events(split.test, matrix)
    model = build_model(config)
    ranker = _ranker_of(model)
    if ranker is not None:  # its own time split cuts these events, not the matrix's cells
        ranker.use_events(split.train, _as_of(config.interactions, cutoff))
    start = time.perf_counter()
    model = _fit_on(compute, model, matrix, products)
    fit_seconds = time.perf_counter() - start
    ranker = _ranker_of(model)  # the fitted one (a model fitted on a worker is a copy)
    metrics = _evaluate_and_log(model, truth, config.k)
    if ranker is not None:
        metrics |= _log_ranker(ranker, truth, config.k)
    metrics["train_seconds"] = fit_seconds
    mlflow.log_metric("train_seconds", fit_seconds)
    mlflow.log_params({"matrix.customers": matrix.shape[0], "matrix.products": matrix.shape[1]})
    return model, metrics


def _ranker_of(model: Recommender) -> RankerRecommender | None:
    """The ranker inside the configured model (alone or as the fallback chain's primary)."""
    model = model.primary if isinstance(model, FallbackRecommender) else model
    return model if isinstance(model, RankerRecommender) else None


def _as_of(cfg: InteractionConfig, as_of) -> InteractionConfig:
    if cfg.half_life_days is not None and as_of is not None and cfg.as_of is None:
        return cfg.model_copy(update={"as_of": pd.Timestamp(as_of).to_pydatetime()})
    return cfg


def _log_ranker(ranker: RankerRecommender, truth: Truth, k: int) -> dict[str, float]:
    """Log the ranker's candidate recall (its validation and the test part), feature
    importance, lift in nDCG@k over the best single generator on the test part, and its gate
    (closed: it serves the generator that beat it on its validation window)."""
    alone = {
        name: evaluate_model(g, truth, k)[f"ndcg@{k}"]
        for name, g in zip(ranker.generator_names_, ranker.generators, strict=True)
    }
    best = max(alone, key=alone.get)
    ndcg = evaluate_model(ranker, truth, k)[f"ndcg@{k}"]
    test_recall = candidate_recall(ranker, truth)
    report = {
        "candidate_recall_validation": ranker.candidate_recall_,
        "candidate_recall_test": test_recall,
        "validation": ranker.validation_,
        "rounds": ranker.rounds_,
        "generators_test_ndcg": alone,
        "best_generator": best,
        "feature_importance": ranker.feature_importance_,
    }
    mlflow.log_dict(report, "ranker/report.json")
    metrics = {f"candidate_recall_{name}": v for name, v in test_recall.items()}
    metrics[f"best_generator_ndcg_at_{k}"] = alone[best]
    metrics[f"ranker_lift_ndcg_at_{k}"] = ndcg / alone[best] - 1.0 if alone[best] > 0 else 0.0
    if ranker.validation_.get("lift") is not None:
        metrics["ranker_validation_lift"] = ranker.validation_["lift"]
    mlflow.log_metrics(metrics)
    mlflow.set_tag("ranker.best_generator", best)
    mlflow.set_tag("ranker.source", ranker.name)  # `ranker:<generator>` when the gate closed
    mlflow.log_metric("ranker_gate_open", float(ranker.fallback_ is None))
    return metrics


def _log_model(
    model: Recommender, config: RecommenderJobConfig, reference: Profile | None = None
) -> str:
    """Log the fitted model with the interaction settings serving needs and its reference
    profile; its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(tmp) / "native"
        model.save(native)
        if reference is not None:
            store_reference(native, reference)
        (native / "interactions.json").write_text(
            json.dumps(config.interactions.model_dump(mode="json"), indent=2)
        )
        return tracking.log_native_model(native, family=FAMILY, metadata_extra={"k": config.k})


def evaluate(
    config: RecommenderJobConfig, model_uri: str, settings: Settings | None = None
) -> TrainResult:
    """Metrics of an existing (registered) model on the data and split `config` describes."""
    store = load_source(config.source, settings)
    events = events_frame(store, config.interactions)
    split, _ = split_events(events, config.split)
    with tracking.evaluation_run(
        FAMILY, model_uri, config=config, store=store, settings=settings
    ) as run:
        tracking.log_protocol(evaluation_protocol(config))
        model: Recommender = load_logged(model_uri, FAMILY)
        ids = InteractionMatrix(model.user_items_, model.customer_ids_, model.product_ids_)
        metrics = _evaluate_and_log(model, truth_from_events(split.test, ids), config.k)
        return TrainResult.of_run(run, store, metrics)


def _metric_name(key: str) -> str:
    return key.replace("@", "_at_")


def _evaluate_and_log(model: Recommender, truth: Truth, k: int) -> dict[str, float]:
    if truth.matrix.nnz == 0:
        raise DataError("the test part has no purchases of customers known in training")
    metrics = {_metric_name(key): v for key, v in evaluate_model(model, truth, k).items()}
    metrics["test_customers"] = metrics.pop("users")
    mlflow.log_metrics(metrics)
    curve = {kk: evaluate_model(model, truth, kk) for kk in CURVE_KS}
    ks = list(curve)
    for name in ("recall", "coverage", "ndcg"):
        values = [curve[kk][f"{name}@{kk}"] for kk in ks]
        tracking.log_curve(f"{name}_at_k", ks, values)
    _plot(ks, curve)
    return metrics


def _plot(ks, curve) -> None:
    plt = tracking.pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ks, [curve[k][f"recall@{k}"] for k in ks], marker="o")
    ax[0].set(xlabel="k", ylabel="recall@k", title="Recall at k", xscale="log")
    ax[1].plot(ks, [curve[k][f"coverage@{k}"] for k in ks], marker="o", color="tab:orange")
    ax[1].set(xlabel="k", ylabel="catalog coverage@k", title="Coverage at k", xscale="log")
    fig.tight_layout()
    tracking.log_figure(fig, "plots/recall_coverage_at_k.png")


def _search(
    config: RecommenderJobConfig,
    train_events: pd.DataFrame,
    products,
    compute: Compute | None = None,
) -> dict:
    """Random search on a validation split of the training part; one nested run per trial."""
    if not config.search.space:
        raise ConfigError("search.trials > 0 needs search.space (parameter -> list of choices)")
    inner, inner_cut = split_events(train_events, config.split)
    rng = np.random.default_rng(config.search.seed)
    keys = sorted(config.search.space)
    seen, best, best_score = set(), None, -np.inf
    key_metric = f"ndcg_at_{config.k}"
    experiment_id = mlflow.active_run().info.experiment_id
    for trial in progress(range(config.search.trials), "search trials", unit="trial"):
        choice = {
            k: config.search.space[k][rng.integers(len(config.search.space[k]))] for k in keys
        }
        marker = json.dumps(choice, sort_keys=True, default=str)
        if marker in seen and len(seen) < _space_size(config.search.space):
            continue
        seen.add(marker)
        trial_cfg = _with_overrides(config, choice)
        with mlflow.start_run(run_name=f"trial-{trial}", nested=True, experiment_id=experiment_id):
            mlflow.log_params({f"trial.{k}": v for k, v in choice.items()})
            matrix = _matrix(inner.train, trial_cfg.interactions, inner_cut, compute)
            truth = truth_from_events(inner.test, matrix)
            if truth.matrix.nnz == 0:
                raise DataError("validation part of the training data has no test purchases")
            model = _fit_on(compute, build_model(trial_cfg), matrix, products)
            metrics = {
                _metric_name(k): v for k, v in evaluate_model(model, truth, config.k).items()
            }
            mlflow.log_metrics({f"val_{k}": v for k, v in metrics.items()})
            if metrics[key_metric] > best_score:
                best, best_score = choice, metrics[key_metric]
    mlflow.log_metric(f"best_val_{key_metric}", best_score)
    return best or {}


def _space_size(space: dict[str, list]) -> int:
    size = 1
    for values in space.values():
        size *= max(len(values), 1)
    return size
