"""The one MLflow helper every job uses: where runs go, what each run records, how models register.

Every run records its parameters (the flattened config and `config.json`), the seed, a data
fingerprint (content hash and rows per table), the git commit and the versions of the packages
that shape results. Models are logged as a thin pyfunc wrapper around the family's own native
save folder (artifact `native`), so that serving loads native objects while MLflow still offers
a generic interface. A logged model is self-contained: it carries its signature and an input
example, the shopml packages it imports (`code_paths`) and pip requirements pinned as in
`constraints.txt` (`registry.requirements`), so it loads where no shopml is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from features.loaders.sql import safe_url
from features.store import Store
from models.family import FAMILY_NAMES, NATIVE_ARTIFACT
from registry.metadata import model_metadata
from registry.requirements import code_paths, pyfunc_requirements
from registry.store import configure, register
from shopml.config import flatten
from shopml.errors import ConfigError, ShopmlError
from shopml.log import get_logger
from shopml.settings import REPO_ROOT, Settings

log = get_logger("training.tracking")
PROTOCOL_TAG = "protocol.signature"
PROTOCOL_ARTIFACT = "protocol.json"
RUN_FAMILIES = (*FAMILY_NAMES, "data")  # "data": the profile runs of `shopml profile`
TRACKED_PACKAGES = (
    "shopml",
    "numpy",
    "pandas",
    "scikit-learn",
    "implicit",
    "lightgbm",
    "mlflow",
    "bentoml",
)


@dataclass
class TrainResult:
    """What a training job hands back: enough for the CLI, retraining and promotion."""

    family: str
    run_id: str
    metrics: dict[str, float]
    model_version: str | None = None
    data_fingerprint: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_run(
        cls,
        run: mlflow.ActiveRun,
        store: Store,
        metrics: dict[str, float],
        model_version: str | None = None,
        **artifacts: str,
    ) -> TrainResult:
        """The result of a job's `run` on `store` (family from the run's tag)."""
        return cls(
            family=run.data.tags["shopml.family"],
            run_id=run.info.run_id,
            metrics=metrics,
            model_version=model_version,
            data_fingerprint=store.fingerprint_id(),
            artifacts=artifacts,
        )


def experiment_name(family: str) -> str:
    """The MLflow experiment of a family's runs (or of "data" / "comparisons")."""
    return f"shopml-{family}"


def ensure_experiment(family: str, settings: Settings) -> str:
    """Create the family's experiment with its artifacts beside the store, or reuse it."""
    name = experiment_name(family)
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifact_location = None
    if settings.tracking_uri.startswith("sqlite:") or "://" not in settings.tracking_uri:
        artifact_location = (settings.artifact_root / name).as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _config_dict(config: BaseModel | dict | None) -> dict[str, Any]:
    if config is None:
        return {}
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    return _mask_urls(data)


def _mask_urls(data: Any) -> Any:
    """Database URLs lose their password before a config is logged."""
    if isinstance(data, dict):
        return {
            k: safe_url(v) if k == "url" and isinstance(v, str) else _mask_urls(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_mask_urls(v) for v in data]
    return data


@contextmanager
def start_run(
    family: str,
    *,
    config: BaseModel | dict | None = None,
    store: Store | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run for `family` that records config, seed, data fingerprint and versions."""
    if family not in RUN_FAMILIES:
        raise ValueError(f"family must be one of {RUN_FAMILIES}, got {family!r}")
    settings = configure(settings)
    experiment_id = ensure_experiment(family, settings)
    config_data = _config_dict(config)
    all_tags = {"shopml.family": family, "git.commit": git_commit(), **(tags or {})}
    all_tags.update({f"version.{k}": v for k, v in package_versions().items()})
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=nested, tags=all_tags
    ) as run:
        if config_data:
            params = {k: _param_value(v) for k, v in flatten(config_data).items()}
            for chunk in _chunks(params, 100):
                mlflow.log_params(chunk)
            mlflow.log_dict(config_data, "config.json")
            if "seed" in config_data:
                mlflow.set_tag("seed", str(config_data["seed"]))
        if store is not None:
            log_data_fingerprint(store)
        yield run


def evaluation_run(
    family: str,
    model_uri: str,
    *,
    config: BaseModel | dict | None,
    store: Store,
    settings: Settings | None = None,
) -> AbstractContextManager[mlflow.ActiveRun]:
    """The run in which a job's `evaluate` scores an existing model on new data: a `start_run`
    named "evaluate" and tagged with the model's URI."""
    return start_run(
        family,
        config=config,
        store=store,
        settings=settings,
        run_name="evaluate",
        tags={"evaluated.model_uri": model_uri},
    )


def log_data_fingerprint(store: Store) -> str:
    """Tag the active run with the store's fingerprint id and log rows/hash per table."""
    fingerprint = store.fingerprint()
    fingerprint_id = store.fingerprint_id()
    mlflow.set_tag("data.fingerprint", fingerprint_id)
    mlflow.set_tag("data.name", store.name)
    mlflow.log_params({f"data.rows.{t}": v["rows"] for t, v in fingerprint.items()})
    mlflow.log_dict({"id": fingerprint_id, "tables": fingerprint}, "data_fingerprint.json")
    return fingerprint_id


def _plain(value: Any) -> Any:
    """Config sections (pydantic), dataclasses, tuples and sets as plain JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def canonical_protocol(spec: dict[str, Any]) -> str:
    """The evaluation protocol as canonical JSON (sorted keys, no spaces): equal specs, equal text."""
    try:
        return json.dumps(_plain(spec), sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"evaluation protocol is not JSON-serialisable: {err}") from None


def protocol_signature(spec: dict[str, Any]) -> str:
    """A short hash of the protocol: two runs with equal signatures were tested the same way."""
    return hashlib.sha256(canonical_protocol(spec).encode()).hexdigest()[:16]


def log_protocol(spec: dict[str, Any], evidence: dict[str, float] | None = None) -> str:
    """Record how the active run was tested, so the gate compares only equal tests.

    `spec` is the evaluation protocol (split, test windows, filters, metric definitions such as
    k, horizon, folds; config sections and dataclasses may be given as they are): logged as `protocol.json`, one `protocol.<key>` tag per flattened entry
    (what the gate names when two protocols differ) and its hash as tag `protocol.signature`.
    `evidence` holds the sizes of the test (e.g. `test_frauds`, `test_customers`), logged as
    metrics, which the gate checks against the family's `min_evidence`. Returns the signature.
    """
    text = canonical_protocol(spec)
    signature = protocol_signature(spec)
    flat = flatten(json.loads(text))
    mlflow.set_tags({f"protocol.{k}": _param_value(v) for k, v in flat.items()})
    mlflow.set_tag(PROTOCOL_TAG, signature)
    mlflow.log_dict(json.loads(text), PROTOCOL_ARTIFACT)
    counts = {k: float(v) for k, v in (evidence or {}).items()}
    bad = [k for k, v in counts.items() if not math.isfinite(v) or v < 0]
    if bad:
        raise ConfigError(f"evidence counts must be finite and >= 0: {', '.join(bad)}")
    if counts:
        mlflow.log_metrics(counts)
    return signature


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, for the jobs' plots.

    Imported on first use: 0.4 s, which `shopml runs` / `promote` (no plots) should not pay.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log_figure(fig, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG and close it (jobs make many; open figures leak memory)."""
    mlflow.log_figure(fig, artifact_file)
    pyplot().close(fig)


def log_curve(name: str, x, y, **series) -> None:
    """Log the data behind a plot as `curves/<name>.json` so comparisons can overlay runs."""
    payload = {"x": [float(v) for v in x], "y": [float(v) for v in y]}
    for key, values in series.items():
        payload[key] = [float(v) for v in values]
    mlflow.log_dict(payload, f"curves/{name}.json")


def log_native_model(
    model_dir: str | Path,
    *,
    family: str,
    kind: str | None = None,
    metadata_extra: dict[str, Any] | None = None,
) -> str:
    """Log a native model folder inside a pyfunc wrapper; returns the logged model URI.

    The model records its family and `kind` (default: the kind the family's job registers),
    checked now against `models.family`, not at serving time; serving loads the kind's loader.
    """
    # here, not at the top: defining the wrapper makes MLflow print a type-hint warning, which
    # `shopml runs` / `promote` (no model logged) should not show
    from registry.pyfunc import NativeModel

    shopml_entries = model_metadata(family, kind)
    signature, example = _signature(family, shopml_entries, Path(model_dir))
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(tmp) / NATIVE_ARTIFACT  # MLflow names the artifact after the folder
        shutil.copytree(model_dir, native)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=NativeModel(shopml_entries),
            artifacts={NATIVE_ARTIFACT: str(native)},
            code_paths=code_paths(),
            pip_requirements=pyfunc_requirements(),
            signature=signature,
            input_example=example,
            metadata={**(metadata_extra or {}), **shopml_entries},
        )
    mlflow.set_tag("shopml.model_uri", info.model_uri)
    return info.model_uri


def _signature(family: str, entries: dict[str, str], model_dir: Path):
    """(signature, input example) of a real model folder; (None, None) for one that holds no
    loadable model (the registry's own tests log placeholder folders)."""
    from registry.pyfunc import signature_and_example

    try:
        return signature_and_example(family, entries, model_dir)
    except (ShopmlError, OSError, ValueError, KeyError) as err:
        log.warning("no signature for the %s model (%s: %s)", family, type(err).__name__, err)
        return None, None


def register_model(model_uri: str, *, family: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model of `family` with the active run's id and data fingerprint; the
    first version becomes champion (`registry.store.register`). Returns the version."""
    run = mlflow.active_run()
    run_tags = {}
    if run is not None:
        run_tags = {
            "run_id": run.info.run_id,
            "data.fingerprint": run.data.tags.get("data.fingerprint", "")
            or (mlflow.get_run(run.info.run_id).data.tags.get("data.fingerprint", "")),
        }
    version = register(model_uri, family, {**run_tags, **(tags or {})})
    if run is not None:
        mlflow.set_tag("shopml.model_version", version)
    return version


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def _chunks(mapping: dict, size: int) -> Iterator[dict]:
    items = list(mapping.items())
    for i in range(0, len(items), size):
        yield dict(items[i : i + size])
