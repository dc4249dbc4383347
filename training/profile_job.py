"""Log a store's data profile as an MLflow run (experiment `shopml-data`)."""

from __future__ import annotations

import mlflow
from pydantic import BaseModel

from features.profile import flat_metrics
from features.profile import profile as build_profile
from features.store import Store
from shopml.settings import Settings
from training.tracking import start_run


def log_profile(
    store: Store, source: BaseModel | dict | None = None, settings: Settings | None = None
) -> tuple[str, dict]:
    """Profile `store`, log it (profile.json, rows and key rates as metrics); return (run_id, profile)."""
    profile = build_profile(store)
    config = {"source": source.model_dump(mode="json") if isinstance(source, BaseModel) else source}
    with start_run(
        "data", config=config, store=store, run_name=f"profile-{store.name}", settings=settings
    ) as run:
        mlflow.log_dict(profile, "profile.json")
        mlflow.log_metrics(flat_metrics(profile))
    return run.info.run_id, profile
