"""The training job of each model family, in one table keyed by family.

A job is its config class (read from `experiments/configs/<family>.toml`), `train(config,
settings=None) -> TrainResult` and `evaluate(config, model_uri, settings=None) -> TrainResult`
(metrics of an existing model on the data and split `config` describes, nothing registered).
`shopml retrain`, `reproduce` and the main job find a family's job here; a test checks that
every family of `models.family` has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from models.family import family
from shopml.config import ConfigModel
from shopml.errors import ConfigError
from shopml.settings import CONFIG_DIR
from training import forecast_job, fraud_job, recommender_job
from training.tracking import TrainResult


@dataclass(frozen=True)
class Job:
    """One family's training job: its config class, `train` and (optionally) `evaluate`."""

    family: str
    config: type[ConfigModel]
    train: Callable[..., TrainResult]
    evaluate: Callable[..., TrainResult] | None = None

    @property
    def default_config(self) -> Path:
        """The job's shipped config file, `experiments/configs/<family>.toml`."""
        return CONFIG_DIR / f"{self.family}.toml"

    @property
    def name(self) -> str:
        """The job as people call it in messages: the module its `train` lives in."""
        return getattr(self.train, "__module__", None) or f"the {self.family} job"


JOBS: Mapping[str, Job] = MappingProxyType(
    {
        "recommender": Job(
            "recommender",
            recommender_job.RecommenderJobConfig,
            recommender_job.train,
            recommender_job.evaluate,
        ),
        "fraud": Job("fraud", fraud_job.FraudJobConfig, fraud_job.train, fraud_job.evaluate),
        "forecast": Job(
            "forecast", forecast_job.ForecastJobConfig, forecast_job.train, forecast_job.evaluate
        ),
    }
)


def job(family_name: str) -> Job:
    """The job of `family_name`; ConfigError for an unknown family or one without a job."""
    name = family(family_name).name
    try:
        return JOBS[name]
    except KeyError:
        raise ConfigError(
            f"the {name} training job is not available: training.jobs.JOBS has no {name!r} entry"
        ) from None
