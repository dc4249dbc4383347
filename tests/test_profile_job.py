"""The data profile job logs the profile and its key numbers to the `shopml-data` experiment."""

from __future__ import annotations

import mlflow

from features.sources import SourceConfig, load_source


def test_profile_run_is_logged(tmp_shopml_home):
    from pydantic import TypeAdapter

    from training.profile_job import log_profile

    source = TypeAdapter(SourceConfig).validate_python({"kind": "generated", "scale": "tiny"})
    store = load_source(source)
    run_id, profile = log_profile(store, source)
    run = mlflow.get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "shopml-data"
    assert run.data.tags["data.fingerprint"] == store.fingerprint_id()
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/profile.json")
    assert logged["tables"]["payments"]["rows"] == len(store.payments)
    assert any(k.startswith("payments.") for k in run.data.metrics)
