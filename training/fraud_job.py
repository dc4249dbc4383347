"""`shopml train fraud`: time-based train / calibration / delay / test split, LightGBM scorer
with calibrated probabilities, metrics and plots in MLflow (beside them the logistic-regression
baseline's, `baseline_*`), model + feature version + thresholds registered together as
`shopml-fraud`.

Timeline (whole days, counted back from the last payment day):
  [history ... train ...) [calibration) [label delay) [test]
The booster learns on `train`, the calibrator on the later `calibration` period, the label
delay leaves a gap whose labels would not be known yet, and `test` measures everything.

Late labels held by the label store (`shopml fraud ingest-labels`, the service's `/labels`)
override the source's `is_fraud`; each counts in the fraud features from its label time on.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import mlflow
import numpy as np
from pydantic import Field, model_validator
from sklearn.metrics import precision_recall_curve, roc_curve

from features.fraud.batch import compute_columns, to_matrix
from features.fraud.definition import DAY, HANDBOOK_BASELINE, FeatureSet
from features.fraud.labels import LabelStore, apply_labels
from features.reference import Profile
from features.sources import SourceConfig, load_source
from features.store import Store
from models.fraud import DecisionPolicy, FraudEngine, FraudScorer, LogisticBaseline, RuleSet
from registry.store import configure, load_logged
from shopml.compute import Compute, ComputeConfig, open_compute
from shopml.config import ConfigModel
from shopml.errors import DataError
from shopml.settings import CONFIG_DIR, Settings, load_settings
from training import fraud_dask, tracking
from training.fraud_metrics import (
    auc_roc,
    average_precision,
    calibration_curve,
    card_precision_at_k,
    fraud_metrics,
)
from training.params import params_config
from training.reference_profiles import fraud_reference_for, store_reference
from training.tracking import TrainResult

FAMILY = "fraud"


class FeaturesConfig(ConfigModel):
    label_delay_days: float = Field(7.0, ge=0)
    spike_ratio: float = Field(3.0, gt=0)
    base_currency: str = Field(
        FeatureSet.base_currency, pattern="^[A-Z]{3}$", description="amounts are converted to it"
    )
    rates: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: dict(FeatureSet.rates),
        description="value of one unit of each currency in the base currency; a payment in "
        "a currency not listed is refused",
    )

    def feature_set(self) -> FeatureSet:
        """The feature definition of this config (a bad rates table: a ConfigError)."""
        return FeatureSet(
            label_delay=int(self.label_delay_days * DAY),
            spike_ratio=self.spike_ratio,
            base_currency=self.base_currency,
            rates=tuple(self.rates.items()),
        )


class SplitConfig(ConfigModel):
    warmup_days: int = Field(
        7, ge=0, description="first days left out of training (windows fill up)"
    )
    train_days: int | None = Field(None, ge=1, description="None: all history after warm-up")
    calibration_days: int = Field(7, ge=1)
    delay_days: int = Field(7, ge=0)
    test_days: int = Field(7, ge=1)


# the scorer's own parameters and defaults; the job sets feature names, version and seed itself
ModelConfig = params_config(
    FraudScorer,
    exclude=("feature_names", "feature_version", "random_state"),
    checks={
        "num_boost_round": Field(ge=1),
        "learning_rate": Field(gt=0),
        "num_leaves": Field(ge=2),
        "min_data_in_leaf": Field(ge=1),
        "feature_fraction": Field(gt=0, le=1),
        "bagging_fraction": Field(gt=0, le=1),
        "lambda_l2": Field(ge=0),
        "neg_sample_rate": Field(gt=0, le=1),
        "calibration": Field(pattern="^(platt|isotonic|none)$"),
        "num_threads": Field(ge=0),
    },
    name="ModelConfig",
)
_DecisionParams = params_config(
    DecisionPolicy,
    checks={
        "mode": Field(pattern="^(threshold|cost)$"),
        "review_threshold": Field(ge=0, le=1),
        "decline_threshold": Field(ge=0, le=1),
        "review_cost": Field(ge=0),
        "review_recall": Field(ge=0, le=1),
        "decline_cost_ratio": Field(ge=0),
    },
)
_MOVED_TO_RULES = ("blocked_cards", "blocked_customers", "blocked_terminals")
_MOVED_TO_RULES += ("max_amount", "review_amount")


class PolicyConfig(_DecisionParams):
    """The decision policy's parameters (defaults are the model's) and the rules file whose
    block lists, amount limits and review rules the test metrics count."""

    rules_file: str | None = Field(
        None,
        description="TOML rules file (relative: to the working directory, else to"
        " experiments/configs); the service may load newer rules without retraining",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data):
        moved = [k for k in _MOVED_TO_RULES if isinstance(data, dict) and k in data]
        if moved:
            raise ValueError(
                f"{', '.join(moved)}: block lists and amount limits live in a rules file now;"
                " set policy.rules_file (see experiments/configs/fraud_rules.toml)"
            )
        return data

    def policy(self) -> DecisionPolicy:
        return DecisionPolicy(**self.model_dump(include=set(_DecisionParams.model_fields)))

    def rules(self) -> RuleSet:
        """The rules of `rules_file` (none when it is not set); ConfigError naming the field."""
        if self.rules_file is None:
            return RuleSet()
        path = Path(self.rules_file).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = CONFIG_DIR / path
        return RuleSet.load(path)


class FraudJobConfig(ConfigModel):
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    seed: int = 0
    source: SourceConfig = Field(
        default_factory=lambda: SourceConfig(kind="generated", scale="small", seed=0)
    )
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    register_model: bool = True
    card_precision_k: int = Field(100, ge=1)
    apply_labels: bool = Field(
        True, description="override is_fraud with the labels of the label store"
    )


def time_split(day: np.ndarray, split: SplitConfig) -> dict[str, np.ndarray]:
    """Row indices of train / calibration / test from each payment's day number."""
    bounds = split_days(int(day.min()), int(day.max()), split)
    return {name: np.flatnonzero((day >= lo) & (day < hi)) for name, (lo, hi) in bounds.items()}


def split_days(first: int, last: int, split: SplitConfig) -> dict[str, tuple[int, int]]:
    """Days [from, to) of train / calibration / test, from the first and last payment day."""
    test_start = last - split.test_days + 1
    cal_end = test_start - split.delay_days
    cal_start = cal_end - split.calibration_days
    train_start = first + split.warmup_days
    if split.train_days is not None:
        train_start = max(train_start, cal_start - split.train_days)
    if cal_start <= train_start:
        raise DataError(
            f"payments cover {last - first + 1} days: too few for warm-up {split.warmup_days} + "
            f"calibration {split.calibration_days} + delay {split.delay_days} + test "
            f"{split.test_days} days and some training days"
        )
    return {
        "train": (train_start, cal_start),
        "calibration": (cal_start, cal_end),
        "test": (test_start, last + 1),
    }


def _plots(y: np.ndarray, p: np.ndarray) -> None:
    """The test period's PR and ROC curves (when both classes occur), calibration and scores."""
    if 0 < y.sum() < len(y):
        _plot_ranking(y, p)
    plt = tracking.pyplot()
    mp, obs = calibration_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(mp, obs, marker="o")
    hi = float(max(mp.max(initial=0), obs.max(initial=0), 1e-3))
    ax.plot([0, hi], [0, hi], ls=":", c="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration")
    tracking.log_figure(fig, "plots/calibration.png")
    tracking.log_curve("calibration", mp, obs)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(p[~y], bins=bins, alpha=0.6, density=True, label="genuine", log=True)
    ax.hist(p[y], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.set(xlabel="probability of fraud", ylabel="density (log)", title="Scores by class (test)")
    ax.legend()
    tracking.log_figure(fig, "plots/score_distribution.png")


def _plot_ranking(y: np.ndarray, p: np.ndarray) -> None:
    """Precision-recall and ROC plots, and their curves thinned to about 500 points."""
    plt = tracking.pyplot()
    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rec, prec)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    tracking.log_figure(fig, "plots/pr_curve.png")
    step = max(1, len(rec) // 500)
    tracking.log_curve("pr_curve", rec[::step], prec[::step])
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    tracking.log_figure(fig, "plots/roc_curve.png")
    step = max(1, len(fpr) // 500)
    tracking.log_curve("roc_curve", fpr[::step], tpr[::step])


@dataclass
class Prepared:
    """A store's payments with their feature columns, day numbers, labels and time split."""

    store: Store
    cols: dict
    day: np.ndarray
    y: np.ndarray
    parts: dict[str, np.ndarray]
    feature_seconds: float
    labels: dict[str, float] = dataclasses.field(default_factory=dict)
    frames: object = None  # on Dask: the `FrameStore` the run's fingerprint is taken from


def prepare(
    config: FraudJobConfig,
    fs: FeatureSet,
    settings: Settings | None = None,
    labelled: tuple[str, ...] = ("train", "calibration", "test"),
) -> Prepared:
    """Load the configured source, compute `fs` features and split by time; each period in
    `labelled` must hold some fraud (metrics and training need both classes)."""
    store = load_source(config.source, settings)
    store.require("payments")
    store, labels = _with_stored_labels(store, config, settings)
    pay = store.payments
    t0 = time.perf_counter()
    cols = compute_columns(pay, fs)
    feature_seconds = time.perf_counter() - t0
    day = ((pay["timestamp"] - pay["timestamp"].min().normalize()).dt.days).to_numpy()
    parts = time_split(day, config.split)
    y = pay["is_fraud"].to_numpy(dtype=bool)
    for name in labelled:
        if not y[parts[name]].any():
            raise DataError(f"the {name} period has no fraud labels; use a longer or larger store")
    return Prepared(store, cols, day, y, parts, feature_seconds, labels)


def _with_stored_labels(
    store: Store, config: FraudJobConfig, settings: Settings | None
) -> tuple[Store, dict[str, float]]:
    """The store with the label store's labels applied to its payments (so its fingerprint
    tells the labels apart too), and the counts: applied (matched a payment), flipped."""
    if not config.apply_labels:
        return store, {"labels_applied": 0.0, "labels_flipped": 0.0}
    labels = LabelStore.open(settings)
    try:
        done = apply_labels(store.payments, labels.read())
    finally:
        labels.dispose()
    counts = {"labels_applied": float(done.applied), "labels_flipped": float(done.flipped)}
    return dataclasses.replace(store, payments=done.payments), counts


def score_test(
    scorer: FraudScorer,
    fs: FeatureSet,
    policy: DecisionPolicy,
    data: Prepared,
    k: int,
    rules: RuleSet | None = None,
) -> dict[str, float]:
    """Score the test period with `scorer` + `policy` + `rules` (the decisions the service would
    give), log every test metric and the plots."""
    te = data.parts["test"]
    pay = data.store.payments
    X = to_matrix(data.cols, fs.names, te)
    p = scorer.predict_proba(X)
    raw_p = 1.0 / (1.0 + np.exp(-scorer.decision_function(X)))
    amount = fs.amounts_in_base(pay)[te]  # savings and costs in the base currency
    rules = rules or RuleSet()
    engine = FraudEngine(scorer, fs, policy=policy, rules=rules)
    decisions, decided_by = engine.decide_many(p, X, pay.iloc[te])
    metrics = fraud_metrics(
        data.y[te],
        p,
        day=data.day[te],
        card=pay["card_id"].to_numpy()[te],
        amount=amount,
        decisions=decisions,
        threshold=policy.review_threshold,
        policy=policy,
        k=k,
    )
    metrics["brier_score_uncalibrated"] = float(np.mean((raw_p - data.y[te]) ** 2))
    metrics["rule_decided_rate"] = float(np.mean(decided_by != "model")) if len(te) else 0.0
    metrics["feature_seconds"] = data.feature_seconds
    metrics |= data.labels
    clean = {k: float(v) for k, v in metrics.items() if v == v}
    mlflow.log_metrics(clean)
    tracking.log_protocol(  # the test: its days (offsets from the data's first day) and k
        {"split": "time", "test_days": [int(data.day[te].min()), int(data.day.max())], "k": k},
        {"test_frauds": int(data.y[te].sum()), "test_payments": len(te)},
    )
    mlflow.set_tags(
        {
            "fraud.feature_version": fs.version,
            "fraud.rules_version": rules.version,
            "fraud.review_threshold": str(policy.review_threshold),
            "fraud.decline_threshold": str(policy.decline_threshold),
        }
    )
    _plots(data.y[te], p)
    return clean


def train(
    config: FraudJobConfig | None = None,
    settings: Settings | None = None,
    compute: Compute | None = None,
) -> TrainResult:
    """Build features, fit + calibrate the scorer, evaluate on the test period, log and register.

    On the engine of `config.compute` (or the `compute` handed in, e.g. a benchmark's cluster):
    on Dask the features and the booster are made on the workers (`training/fraud_dask.py`).
    """
    config = config or FraudJobConfig()
    if compute is None:
        scheduler = (settings or load_settings()).dask_scheduler
        with open_compute(config.compute, scheduler) as opened:
            return _train(config, settings, opened)
    return _train(config, settings, compute)


def _train(config: FraudJobConfig, settings: Settings | None, compute: Compute) -> TrainResult:
    fs = config.features.feature_set()
    dask_data = None
    if compute.is_dask:
        data, dask_data = fraud_dask.prepare(config, fs, settings, compute, split_days)
    else:
        data = prepare(config, fs, settings)
    scorer = FraudScorer(
        list(fs.names),
        feature_version=fs.version,
        random_state=config.seed,
        **config.model.model_dump(),
    )
    policy, rules = config.policy.policy(), config.policy.rules()
    store = data.frames or data.store
    with tracking.start_run(FAMILY, config=config, store=store, settings=settings) as run:
        mlflow.log_params({f"compute.cluster.{k}": v for k, v in compute.describe().items()})
        if dask_data is not None:
            extra = fraud_dask.fit(scorer, fs, data, dask_data, compute)
            mlflow.log_metrics(extra)
        else:
            extra = _fit(scorer, fs, data)
        metrics = score_test(scorer, fs, policy, data, config.card_precision_k, rules) | extra
        metrics |= _baseline(fs, data, config, dask_data.baseline if dask_data else None)
        engine = FraudEngine(scorer, fs, policy=policy, rules=rules)
        reference = fraud_reference_for(scorer, fs, data)  # what `shopml monitor` compares with
        uri, version = _log_engine(engine, config.register_model, reference)
    return TrainResult.of_run(run, store, metrics, version, model_uri=uri)


def _baseline(
    fs: FeatureSet, data: Prepared, config: FraudJobConfig, train: tuple | None = None
) -> dict[str, float]:
    """The benchmark's reference beside the scorer: logistic regression on the handbook's
    baseline features, fitted on `train` (on Dask: the training rows' features gathered), its
    test ranking metrics logged as `baseline_*`."""
    names = [n for n in HANDBOOK_BASELINE if n in fs.names]
    tr, te = data.parts["train"], data.parts["test"]
    lr = LogisticBaseline(names, random_state=config.seed)
    X_tr, y_tr = train if train is not None else (to_matrix(data.cols, names, tr), data.y[tr])
    lr.fit(X_tr, y_tr)
    p = lr.predict_proba(to_matrix(data.cols, names, te))
    y, k = data.y[te], config.card_precision_k
    card = data.store.payments["card_id"].to_numpy()[te]
    metrics = {
        "baseline_average_precision": average_precision(y, p),
        "baseline_auc_roc": auc_roc(y, p),
        f"baseline_card_precision_at_{k}": card_precision_at_k(data.day[te], card, y, p, k),
    }
    metrics = {name: v for name, v in metrics.items() if v == v}
    mlflow.log_metrics(metrics)
    mlflow.set_tag("fraud.baseline", f"logistic regression, {len(names)} handbook features")
    return metrics


def _fit(scorer: FraudScorer, fs: FeatureSet, data: Prepared) -> dict[str, float]:
    """Fit the booster on `train` and the calibrator on `calibration`; log size and time."""
    parts, y = data.parts, data.y
    X = {k: to_matrix(data.cols, fs.names, parts[k]) for k in ("train", "calibration")}
    t0 = time.perf_counter()
    scorer.fit(X["train"], y[parts["train"]], X["calibration"], y[parts["calibration"]])
    extra = {
        "train_seconds": time.perf_counter() - t0,
        "n_train": float(len(parts["train"])),
        "n_calibration": float(len(parts["calibration"])),
    }
    mlflow.log_metrics(extra)
    return extra


def _log_engine(
    engine: FraudEngine, register: bool, reference: Profile | None = None
) -> tuple[str, str | None]:
    """Log the engine (scorer, feature set, policy, rules) and its reference profile as the
    run's model; register it."""
    fs, policy = engine.feature_set, engine.policy
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = engine.save(Path(tmp) / "m")
        if reference is not None:
            store_reference(model_dir, reference)
        uri = tracking.log_native_model(
            model_dir,
            family=FAMILY,
            metadata_extra={"feature_version": fs.version, "policy": policy.to_dict()},
        )
    if not register:
        return uri, None
    tags = {
        "feature_version": fs.version,
        "review_threshold": policy.review_threshold,
        "decline_threshold": policy.decline_threshold,
        "rules_version": engine.rules.version,
    }
    return uri, tracking.register_model(uri, family=FAMILY, tags=tags)


def evaluate(
    config: FraudJobConfig, model_uri: str, settings: Settings | None = None
) -> TrainResult:
    """Test-period metrics of an existing model (e.g. the champion) on the data and split of
    `config`, logged under the names `train` uses; nothing is trained or registered.

    The model is scored as it would be deployed: with its own feature set and decision policy
    (saved with it), so `config.features`, `config.model` and `config.policy` are not used, but
    for `policy.rules_file`: when set, its rules (those a challenger trained with the same config
    is measured with) replace the rules saved with the model.
    """
    configure(settings)
    engine: FraudEngine = load_logged(model_uri, FAMILY)
    fs = engine.feature_set
    rules = config.policy.rules() if config.policy.rules_file else engine.rules
    scheduler = (settings or load_settings()).dask_scheduler
    with open_compute(config.compute, scheduler) as compute:
        if compute.is_dask:
            data, _ = fraud_dask.prepare(
                config, fs, settings, compute, split_days, labelled=("test",)
            )
        else:
            data = prepare(config, fs, settings, labelled=("test",))
        store = data.frames or data.store
        with tracking.evaluation_run(
            FAMILY, model_uri, config=config, store=store, settings=settings
        ) as run:
            mlflow.log_params({f"compute.cluster.{k}": v for k, v in compute.describe().items()})
            k = config.card_precision_k
            metrics = score_test(engine.scorer, fs, engine.policy, data, k, rules)
    return TrainResult.of_run(run, store, metrics, model_uri=model_uri)
