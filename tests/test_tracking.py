"""Every run records config, seed, data fingerprint, commit and versions; models register."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from features.store import Store


@pytest.fixture
def store() -> Store:
    products = pd.DataFrame(
        {"product_id": ["p1", "p2"], "category": ["a", "b"], "price": [1.0, 2.0]}
    )
    return Store(products=products, name="unit").validated()


def test_run_records_config_seed_fingerprint_commit_and_versions(tmp_shopml_home, store):
    from training.tracking import start_run

    with start_run("fraud", config={"seed": 7, "model": {"lr": 0.1}}, store=store) as run:
        mlflow.log_metric("average_precision", 0.5)
    data = mlflow.get_run(run.info.run_id).data
    assert data.params["model.lr"] == "0.1"
    assert data.tags["seed"] == "7"
    assert data.tags["data.fingerprint"] == store.fingerprint_id()
    assert data.params["data.rows.products"] == "2"
    assert data.tags["git.commit"]
    assert data.tags["version.lightgbm"] != "absent"
    assert mlflow.get_experiment(run.info.experiment_id).name == "shopml-fraud"
    # the tracking store lives under SHOPML_HOME, not in the working directory
    assert (tmp_shopml_home / "mlflow.db").exists()
    config = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config.json")
    assert config == {"seed": 7, "model": {"lr": 0.1}}


def test_first_registered_version_becomes_champion_and_downloads_native(tmp_shopml_home, tmp_path):
    from registry.store import champion_version, fetch
    from training.tracking import log_native_model, register_model, start_run

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.json").write_text(json.dumps([1, 2, 3]))
    versions = []
    for _ in range(2):
        with start_run("recommender", config={"seed": 1}):
            uri = log_native_model(model_dir, family="recommender")
            versions.append(register_model(uri, family="recommender"))
    assert versions == ["1", "2"]
    assert champion_version("recommender") == "1"  # later versions wait for promotion
    fetched = fetch("recommender", dst=tmp_path / "dl")
    assert (fetched.version, fetched.kind) == ("1", "recommender")
    assert json.loads((fetched.native_dir / "weights.json").read_text()) == [1, 2, 3]
    assert fetch("recommender", "2", dst=tmp_path / "dl2").version == "2"


def test_unknown_family_is_rejected(tmp_shopml_home):
    from training.tracking import start_run

    with pytest.raises(ValueError, match="family must be one of"), start_run("weather"):
        pass


def test_unknown_kind_fails_when_logging_not_when_serving(tmp_shopml_home, tmp_path):
    from shopml.errors import RegistryError
    from training.tracking import log_native_model, start_run

    with start_run("forecast"), pytest.raises(RegistryError, match="unknown model kind"):
        log_native_model(tmp_path, family="forecast", kind="json:loads")


def test_model_metadata_cannot_override_family_and_kind(tmp_shopml_home, tmp_path):
    from registry.store import fetch, read_metadata
    from training.tracking import log_native_model, register_model, start_run

    (tmp_path / "weights.json").write_text("[]")
    extra = {"shopml.kind": "features.store:shutil.rmtree", "shopml.loader": "os:system"}
    with start_run("forecast"):
        register_model(
            log_native_model(tmp_path, family="forecast", metadata_extra=extra), family="forecast"
        )
    fetched = fetch("forecast", dst=tmp_path / "dl")
    assert read_metadata(fetched.model_dir)["shopml.kind"] == fetched.kind == "forecaster"


def test_logged_config_masks_database_passwords_and_loads_back(tmp_shopml_home):
    from pydantic import TypeAdapter

    from features.sources import SourceConfig
    from training.tracking import start_run

    source = TypeAdapter(SourceConfig).validate_python(
        {"kind": "sql", "url": "postgresql://shop:s3cret@db/shop", "tables": {"payments": "pay"}}
    )
    with start_run("fraud", config={"source": source.model_dump(mode="json")}) as run:
        pass
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config.json")
    assert "s3cret" not in json.dumps(logged)
    assert "s3cret" not in json.dumps(mlflow.get_run(run.info.run_id).data.params)
    generated = TypeAdapter(SourceConfig).validate_python({"kind": "generated", "scale": "tiny"})
    # every field is logged, defaults included; it must validate again as it was logged
    again = TypeAdapter(SourceConfig).validate_python(generated.model_dump(mode="json"))
    assert again == generated


def test_protocol_is_logged_canonically_with_its_signature_and_evidence(tmp_shopml_home):
    from training.jobs import JOBS
    from training.recommender_job import evaluation_protocol
    from training.tracking import PROTOCOL_TAG, log_protocol, protocol_signature, start_run

    spec = {"split": {"kind": "temporal", "test_days": 14.0}, "k": 20, "ks": (1, 5)}
    reordered = {"k": 20, "ks": [1, 5], "split": {"test_days": 14.0, "kind": "temporal"}}
    assert protocol_signature(spec) == protocol_signature(reordered)
    longer = {**spec, "split": {"kind": "temporal", "test_days": 30.0}}
    assert protocol_signature(longer) != protocol_signature(spec)
    with start_run("recommender") as run:
        signature = log_protocol(spec, {"test_customers": 249})
    data = mlflow.get_run(run.info.run_id).data
    assert data.tags[PROTOCOL_TAG] == signature == protocol_signature(spec)
    assert data.tags["protocol.split.test_days"] == "14.0" and data.tags["protocol.k"] == "20"
    assert data.metrics["test_customers"] == 249
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/protocol.json")
    assert logged == {"k": 20, "ks": [1, 5], "split": {"kind": "temporal", "test_days": 14.0}}
    # a job's protocol follows its test settings, not its model settings
    config = JOBS["recommender"].config()
    other_model = config.model_copy(update={"seed": 9})
    other_test = config.model_copy(update={"k": 10})
    assert protocol_signature(evaluation_protocol(other_model)) == protocol_signature(
        evaluation_protocol(config)
    )
    assert protocol_signature(evaluation_protocol(other_test)) != protocol_signature(
        evaluation_protocol(config)
    )
