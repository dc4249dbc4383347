"""`shopml train fraud`: time-based train / calibration / delay / test split, LightGBM scorer
with calibrated probabilities, metrics and plots in MLflow, model + feature version + thresholds
registered together as `shopml-fraud`.

Timeline (whole days, counted back from the last payment day):
  [history ... train ...) [calibration) [label delay) [test]
The booster learns on `train`, the calibrator on the later `calibration` period, the label
delay leaves a gap whose labels would not be known yet, and `test` measures everything.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from pydantic import Field

from features.fraud.batch import compute_columns, to_matrix
from features.fraud.definition import DAY, FeatureSet
from features.sources import SourceConfig, load_source
from features.store import Store
from models.fraud import DecisionPolicy, FraudEngine, FraudScorer, RuleLayer
from shopml.config import ConfigModel
from shopml.errors import DataError
from shopml.settings import Settings
from training.fraud_metrics import calibration_curve, fraud_metrics
from training.tracking import (
    TrainResult,
    configure,
    log_curve,
    log_figure,
    log_native_model,
    register_model,
    start_run,
)

LOADER = "models.fraud:FraudEngine.load"


class FeaturesConfig(ConfigModel):
    label_delay_days: float = Field(7.0, ge=0)
    spike_ratio: float = Field(3.0, gt=0)

    def feature_set(self) -> FeatureSet:
        return FeatureSet(
            label_delay=int(self.label_delay_days * DAY), spike_ratio=self.spike_ratio
        )


class SplitConfig(ConfigModel):
    warmup_days: int = Field(
        7, ge=0, description="first days left out of training (windows fill up)"
    )
    train_days: int | None = Field(None, ge=1, description="None: all history after warm-up")
    calibration_days: int = Field(7, ge=1)
    delay_days: int = Field(7, ge=0)
    test_days: int = Field(7, ge=1)


class ModelConfig(ConfigModel):
    num_boost_round: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: int = Field(50, ge=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    scale_pos_weight: float | str = "auto"
    neg_sample_rate: float = Field(1.0, gt=0, le=1)
    calibration: str = Field("platt", pattern="^(platt|isotonic|none)$")
    num_threads: int = Field(1, ge=0)


class PolicyConfig(ConfigModel):
    mode: str = Field("threshold", pattern="^(threshold|cost)$")
    review_threshold: float = Field(0.3, ge=0, le=1)
    decline_threshold: float = Field(0.9, ge=0, le=1)
    review_cost: float = Field(3.0, ge=0)
    review_recall: float = Field(0.95, ge=0, le=1)
    decline_cost_ratio: float = Field(0.3, ge=0)
    max_amount: float | None = None
    review_amount: float | None = None


class FraudJobConfig(ConfigModel):
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


def time_split(day: np.ndarray, split: SplitConfig) -> dict[str, np.ndarray]:
    """Row indices of train / calibration / test from each payment's day number."""
    last, first = int(day.max()), int(day.min())
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
        "train": np.flatnonzero((day >= train_start) & (day < cal_start)),
        "calibration": np.flatnonzero((day >= cal_start) & (day < cal_end)),
        "test": np.flatnonzero(day >= test_start),
    }


def _plots(y: np.ndarray, p: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if 0 < y.sum() < len(y):
        prec, rec, _ = precision_recall_curve(y, p)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(rec, prec)
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
        log_figure(fig, "plots/pr_curve.png")
        step = max(1, len(rec) // 500)
        log_curve("pr_curve", rec[::step], prec[::step])
        fpr, tpr, _ = roc_curve(y, p)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        log_figure(fig, "plots/roc_curve.png")
        step = max(1, len(fpr) // 500)
        log_curve("roc_curve", fpr[::step], tpr[::step])
    mp, obs = calibration_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(mp, obs, marker="o")
    hi = float(max(mp.max(initial=0), obs.max(initial=0), 1e-3))
    ax.plot([0, hi], [0, hi], ls=":", c="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration")
    log_figure(fig, "plots/calibration.png")
    log_curve("calibration", mp, obs)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(p[~y], bins=bins, alpha=0.6, density=True, label="genuine", log=True)
    ax.hist(p[y], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.set(xlabel="probability of fraud", ylabel="density (log)", title="Scores by class (test)")
    ax.legend()
    log_figure(fig, "plots/score_distribution.png")


@dataclass
class Prepared:
    """A store's payments with their feature columns, day numbers, labels and time split."""

    store: Store
    cols: dict
    day: np.ndarray
    y: np.ndarray
    parts: dict[str, np.ndarray]
    feature_seconds: float


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
    return Prepared(store, cols, day, y, parts, feature_seconds)


def score_test(
    scorer: FraudScorer, fs: FeatureSet, policy: DecisionPolicy, data: Prepared, k: int
) -> dict[str, float]:
    """Score the test period with `scorer` + `policy`, log every test metric and the plots."""
    te = data.parts["test"]
    pay = data.store.payments
    X = to_matrix(data.cols, fs.names, te)
    p = scorer.predict_proba(X)
    raw_p = 1.0 / (1.0 + np.exp(-scorer.decision_function(X)))
    amount = pay["amount"].to_numpy()[te]
    decisions = policy.decide_many(p, amount)
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
    metrics["feature_seconds"] = data.feature_seconds
    clean = {k: float(v) for k, v in metrics.items() if v == v}
    mlflow.log_metrics(clean)
    mlflow.set_tags(
        {
            "fraud.feature_version": fs.version,
            "fraud.review_threshold": str(policy.review_threshold),
            "fraud.decline_threshold": str(policy.decline_threshold),
        }
    )
    _plots(data.y[te], p)
    return clean


def train(config: FraudJobConfig | None = None, settings: Settings | None = None) -> TrainResult:
    """Build features, fit + calibrate the scorer, evaluate on the test period, log and register."""
    config = config or FraudJobConfig()
    fs = config.features.feature_set()
    data = prepare(config, fs, settings)
    m, pc = config.model, config.policy
    scorer = FraudScorer(
        list(fs.names),
        feature_version=fs.version,
        num_boost_round=m.num_boost_round,
        learning_rate=m.learning_rate,
        num_leaves=m.num_leaves,
        min_data_in_leaf=m.min_data_in_leaf,
        feature_fraction=m.feature_fraction,
        bagging_fraction=m.bagging_fraction,
        lambda_l2=m.lambda_l2,
        scale_pos_weight=m.scale_pos_weight,
        neg_sample_rate=m.neg_sample_rate,
        calibration=m.calibration,
        num_threads=m.num_threads,
        random_state=config.seed,
    )
    policy = DecisionPolicy(
        pc.mode,
        pc.review_threshold,
        pc.decline_threshold,
        pc.review_cost,
        pc.review_recall,
        pc.decline_cost_ratio,
    )
    rules = RuleLayer(max_amount=pc.max_amount, review_amount=pc.review_amount)
    parts, y = data.parts, data.y
    X = {k: to_matrix(data.cols, fs.names, parts[k]) for k in ("train", "calibration")}
    with start_run("fraud", config=config, store=data.store, settings=settings) as run:
        t0 = time.perf_counter()
        scorer.fit(X["train"], y[parts["train"]], X["calibration"], y[parts["calibration"]])
        train_seconds = time.perf_counter() - t0
        extra = {
            "train_seconds": train_seconds,
            "n_train": float(len(parts["train"])),
            "n_calibration": float(len(parts["calibration"])),
        }
        mlflow.log_metrics(extra)
        clean = score_test(scorer, fs, policy, data, config.card_precision_k) | extra
        version = None
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = FraudEngine(scorer, fs, policy=policy, rules=rules).save(Path(tmp) / "m")
            uri = log_native_model(
                model_dir,
                family="fraud",
                loader=LOADER,
                metadata_extra={"feature_version": fs.version, "policy": policy.to_dict()},
            )
            if config.register_model:
                version = register_model(
                    uri,
                    family="fraud",
                    tags={
                        "feature_version": fs.version,
                        "review_threshold": policy.review_threshold,
                        "decline_threshold": policy.decline_threshold,
                    },
                )
    return TrainResult(
        family="fraud",
        run_id=run.info.run_id,
        metrics=clean,
        model_version=version,
        data_fingerprint=data.store.fingerprint_id(),
        artifacts={"model_uri": uri},
    )


def evaluate(
    config: FraudJobConfig, model_uri: str, settings: Settings | None = None
) -> TrainResult:
    """Test-period metrics of an existing model (e.g. the champion) on the data and split of
    `config`, logged under the names `train` uses; nothing is trained or registered.

    The model is scored as it would be deployed: with its own feature set and decision policy
    (saved with it), so `config.features`, `config.model` and `config.policy` are not used.
    """
    configure(settings)
    engine = _load_engine(model_uri)
    fs = engine.feature_set
    data = prepare(config, fs, settings, labelled=("test",))
    with start_run(
        "fraud",
        config=config,
        store=data.store,
        settings=settings,
        run_name="evaluate",
        tags={"evaluated.model_uri": model_uri},
    ) as run:
        metrics = score_test(engine.scorer, fs, engine.policy, data, config.card_precision_k)
    return TrainResult(
        family="fraud",
        run_id=run.info.run_id,
        metrics=metrics,
        data_fingerprint=data.store.fingerprint_id(),
        artifacts={"model_uri": model_uri},
    )


def _load_engine(model_uri: str) -> FraudEngine:
    """The native FraudEngine inside a logged/registered model (`models:/shopml-fraud/3`)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        native = local / "artifacts" / "native" if (local / "artifacts").is_dir() else local
        return FraudEngine.load(native)  # the loader LOADER names
