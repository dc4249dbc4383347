"""`shopml build`: champions from the MLflow registry into the BentoML store, then the Bentos.

Each family's `champion` is downloaded (`registry.store.fetch`), its native folder copied into
a BentoML model labelled with the MLflow name, version and run id and carrying its family and
kind (reused when that version was imported before); its `challenger`, when the alias is set,
goes in beside it as `<name>-challenger` (the fraud service scores it in shadow, the storefront
may split traffic to it); and the two Bentos are built:
`shopml-recommend` (recommender + optional forecast) and `shopml-fraud`. Each Bento is
self-contained: it carries the shopml packages it imports as source and pins every Python
package they import (and their dependencies) as in `constraints.txt` (`registry.requirements`),
so `bentoml serve` and `bentoml containerize` need nothing from this checkout. Building needs
no network: the pins come from the constraints, not from a resolver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import bentoml
import pandas as pd

from models.family import CHALLENGER, FAMILY_NAMES, NATIVE_ARTIFACT
from registry.metadata import FAMILY_KEY, KIND_KEY
from registry.requirements import CODE_PACKAGES, serving_requirements
from registry.store import FetchedModel, fetch, run_artifact, run_artifact_paths
from serving.model_store import challenger_name, use_bentoml_home
from serving.services import SERVICES
from serving.storefront import write_forecast_table
from shopml.errors import RegistryError
from shopml.log import get_logger
from shopml.settings import REPO_ROOT, Settings, load_settings

log = get_logger("serving.build")

INCLUDE = [f"{package}/**/*.py" for package in ("serving", *CODE_PACKAGES)]
EXCLUDE = ["**/__pycache__", "**/*.pyc"]
FORECAST_HORIZON = 28
KEEP_BENTOS = 3  # older builds of a service are deleted (models stay in the store)


@dataclass
class BuildReport:
    models: dict[str, str] = field(default_factory=dict)  # family -> "bentoml tag (MLflow vN, run)"
    missing: dict[str, str] = field(default_factory=dict)  # family -> what to do
    bentos: dict[str, str] = field(default_factory=dict)  # service -> bento tag
    skipped: dict[str, str] = field(default_factory=dict)  # service -> why
    challengers: dict[str, str] = field(default_factory=dict)  # family -> "tag (MLflow vN)"
    no_challenger: dict[str, str] = field(default_factory=dict)  # family -> why none is carried


def build(
    settings: Settings | None = None,
    services: tuple[str, ...] = ("recommend", "fraud"),
) -> BuildReport:
    """Import every available champion and build the requested Bentos; RegistryError if none."""
    settings = (settings or load_settings()).ensure_dirs()
    use_bentoml_home(settings)  # before BentoML first reads its store (it reads BENTOML_HOME then)
    report = BuildReport()
    with tempfile.TemporaryDirectory(prefix="shopml-build-") as tmp:
        for family in FAMILY_NAMES:
            try:
                champion = fetch(family, settings=settings, dst=Path(tmp) / family)
            except RegistryError as err:
                report.missing[family] = str(err)
                continue
            problem = _load_problem(champion)
            if problem:
                report.missing[family] = problem
                continue
            extra = _forecast_table(champion, Path(tmp)) if family == "forecast" else None
            model = import_champion(champion, extra)
            report.models[family] = (
                f"{model.tag} (MLflow {champion.name} v{champion.version}, run {champion.run_id[:8]})"
            )
            _import_challenger(family, champion, settings, Path(tmp), report)
    carried = [*report.models, *(f"{f}@{CHALLENGER}" for f in report.challengers)]
    os.environ["SHOPML_BUILD_FAMILIES"] = ",".join(carried)  # what the Bentos may use
    try:
        for service in services:
            _build_bento(service, report)
    finally:
        os.environ.pop("SHOPML_BUILD_FAMILIES", None)
    if not report.bentos:
        reasons = "; ".join(report.skipped.values()) or "no service requested"
        raise RegistryError(f"no Bento could be built: {reasons}")
    return report


def _build_bento(service: str, report: BuildReport) -> None:
    """Build one service's Bento when its families' models were imported, else say why not."""
    if service not in SERVICES:
        raise RegistryError(f"unknown service {service!r}; expected one of {sorted(SERVICES)}")
    spec = SERVICES[service]
    target, name, needs = spec.source, spec.bento, spec.requires
    lacking = [f for f in needs if f not in report.models]
    if lacking:
        report.skipped[service] = report.missing[lacking[0]]
        return
    bento = bentoml.bentos.build(
        target,
        name=name,
        include=INCLUDE,
        exclude=EXCLUDE,
        build_ctx=str(REPO_ROOT),
        labels={"project": "shopml", "service": service},
        description=f"shopml {service} service",
        python=python_options(),
    )
    report.bentos[service] = str(bento.tag)
    _prune(name, keep=KEEP_BENTOS)


def python_options() -> dict:
    """The Bento's Python packages: pinned from the constraints, installed as listed (no lock)."""
    return {"packages": serving_requirements(), "lock_packages": False}


def _import_challenger(
    family: str, champion: FetchedModel, settings: Settings, tmp: Path, report: BuildReport
) -> None:
    """Carry the family's `challenger` too (its own BentoML name, so the champion stays
    `:latest`), for a shadow or an A/B split; none when the alias is unset, points at the
    champion, or names a version this code cannot load (said in the report)."""
    try:
        challenger = fetch(family, CHALLENGER, settings=settings, dst=tmp / f"{family}-challenger")
    except RegistryError:
        report.no_challenger[family] = f"{champion.name} has no @{CHALLENGER}"
        return
    if challenger.version == champion.version:
        report.no_challenger[family] = f"@{CHALLENGER} is the champion (v{champion.version})"
        return
    problem = _load_problem(challenger)
    if problem:
        report.no_challenger[family] = problem
        return
    model = import_champion(challenger, name=challenger_name(family))
    report.challengers[family] = (
        f"{model.tag} (MLflow {challenger.name} v{challenger.version}, run {challenger.run_id[:8]})"
    )


def find_imported(champion: FetchedModel, name: str | None = None):
    """The BentoML model `name` (default the registered name) already imported from this
    MLflow version and run (and recording the same kind), or None."""
    try:
        models = bentoml.models.list(name or champion.name)
    except bentoml.exceptions.NotFound:
        return None
    for model in models:
        labels = model.info.labels
        if (
            labels.get("mlflow_version") == champion.version
            and labels.get("mlflow_run_id") == champion.run_id
            and model.info.metadata.get(KIND_KEY) == champion.kind
        ):
            return model
    return None


def import_champion(
    champion: FetchedModel, extra_files: dict[str, Path] | None = None, name: str | None = None
):
    """Copy the champion's native folder (+ extra files) into a new BentoML model (named `name`,
    default the registered name; the challenger has its own); reuse a match."""
    found = find_imported(champion, name)
    if found is not None and not extra_files:
        return found
    labels = {
        "family": champion.family,
        "mlflow_model": champion.name,
        "mlflow_version": champion.version,
        "mlflow_run_id": champion.run_id,
    }
    metadata = {
        **{k: v for k, v in champion.metadata.items() if isinstance(v, str | int | float | bool)},
        "mlflow.model_name": champion.name,
        "mlflow.version": champion.version,
        "mlflow.run_id": champion.run_id,
        FAMILY_KEY: champion.family,
        KIND_KEY: champion.kind,
    }
    with bentoml.models.create(
        name=name or champion.name, labels=labels, metadata=metadata, module="shopml"
    ) as model:
        shutil.copytree(champion.native_dir, Path(model.path) / NATIVE_ARTIFACT)
        for name, path in (extra_files or {}).items():
            shutil.copy2(path, Path(model.path) / name)
    return bentoml.models.get(model.tag)


def _prune(name: str, keep: int) -> None:
    """Delete all but the `keep` newest Bentos of `name`."""
    bentos = sorted(bentoml.bentos.list(name), key=lambda b: b.info.creation_time, reverse=True)
    for old in bentos[keep:]:
        bentoml.bentos.delete(str(old.tag))


def _load_problem(champion: FetchedModel) -> str | None:
    """Why this code cannot load the champion (e.g. a changed feature set), or None.

    Checked at build time so that a stale model stops `shopml build`, not a server start-up.
    """
    try:
        champion.load()
    except Exception as err:  # noqa: BLE001 - any failure means "cannot serve this model"
        return (
            f"{champion.name} v{champion.version} cannot be loaded by this code "
            f"({type(err).__name__}: {err}); retrain it with `shopml train {champion.family}` "
            "or promote a compatible version with `shopml promote`"
        )
    return None


def _forecast_table(champion: FetchedModel, tmp: Path) -> dict[str, Path]:
    """The served forecast arrays: from the run's Parquet forecast, else predicted once here."""
    out = tmp / "forecast-table"
    out.mkdir(exist_ok=True)
    frame = None
    for path in _parquet_artifacts(champion.run_id):
        local = run_artifact(champion.run_id, path, tmp / "forecast-artifact")
        if local is not None:
            candidate = pd.read_parquet(local)
            if {"product_id", "date", "p10", "p50", "p90"} <= set(candidate.columns):
                frame = candidate
                break
    if frame is None:
        model = champion.load()
        horizon = int(getattr(model, "horizon", None) or FORECAST_HORIZON)
        frame = model.predict(horizon)
    generated = str(pd.Timestamp(frame["date"].min()).date() - pd.Timedelta(days=1))
    write_forecast_table(frame, out, generated_at=generated)
    return {"forecast.npz": out / "forecast.npz"}


def _parquet_artifacts(run_id: str, folder: str | None = None) -> list[str]:
    """The run's forecast Parquet files, searched two folders deep."""
    found = []
    for path in run_artifact_paths(run_id, folder):
        if path.endswith(".parquet") and "forecast" in path:
            found.append(path)
        elif "." not in Path(path).name and path.count("/") < 3:
            found += _parquet_artifacts(run_id, path)
    return found
