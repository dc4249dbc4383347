"""Scheduled retraining and reproduction, on top of each family's job (`training.jobs.JOBS`).

`retrain`: train the family with its current config on fresh data, mark the new version
`challenger`, make sure the champion has metrics on the same data and the same test (by
evaluating it with the job's `evaluate`), then run the promotion gate (which also refuses a
test too small to decide on). `reproduce`: re-run a run from its logged `config.json` (same seed) and check that it saw
the same data.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from models.family import CHALLENGER, CHAMPION, family
from registry.store import alias_version, client, set_alias
from shopml.config import load_config, parse_config
from shopml.errors import ConfigError, RegistryError
from shopml.settings import Settings
from training.jobs import Job, job
from training.promotion import (
    EVALUATED_VERSION_TAG,
    Decision,
    champion_evidence,
    ensure_version,
    promote,
)
from training.runs import FINGERPRINT_TAG, RUN_KIND_TAG, family_of_run, resolve_run
from training.tracking import PROTOCOL_TAG, TrainResult

# exit codes of `shopml retrain` (and `shopml promote`), for cron jobs
EXIT_PROMOTED = 0
EXIT_ERROR = 2
EXIT_NOT_PROMOTED = 3


@dataclass
class RetrainOutcome:
    """The new run, the champion evaluation (if one was needed) and the promotion decision."""

    family: str
    result: TrainResult
    decision: Decision
    champion_eval_run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        promoted = self.decision.promoted or self.decision.already_champion
        return EXIT_PROMOTED if promoted else EXIT_NOT_PROMOTED

    def explain(self) -> str:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.result.metrics.items())[:8])
        lines = [f"trained {self.family}: run {self.result.run_id[:8]} ({metrics})", *self.notes]
        lines.append(self.decision.explain())
        return "\n".join(lines)


def load_job_config(family_name: str, path: str | Path | None = None) -> tuple[Job, BaseModel]:
    """The family's job and its validated config from `path` (default
    experiments/configs/<family>.toml)."""
    found = job(family_name)
    return found, load_config(
        Path(path) if path is not None else found.default_config, found.config
    )


def retrain(
    family_name: str, *, config_path: str | Path | None = None, settings: Settings | None = None
) -> RetrainOutcome:
    """Train on fresh data, evaluate the champion on the same data if needed, promote if the
    gate passes."""
    name = family(family_name).name
    found, config = load_job_config(name, config_path)
    mlflow_client = client(settings)
    had_champion = alias_version(name, CHAMPION, mlflow_client) is not None
    result: TrainResult = found.train(config, settings=settings)
    run = mlflow_client.get_run(result.run_id)
    if result.model_version is None:
        result.model_version = ensure_version(name, run, mlflow_client)
    notes: list[str] = []
    champion = alias_version(name, CHAMPION, mlflow_client)
    eval_run_id = None
    fingerprint, signature = run.data.tags.get(FINGERPRINT_TAG), run.data.tags.get(PROTOCOL_TAG)
    if champion is not None and str(champion.version) != str(result.model_version):
        set_alias(name, CHALLENGER, str(result.model_version), mlflow_client)
        notes.append(f"v{result.model_version} is @{CHALLENGER}")
        evidence, _ = champion_evidence(name, champion, fingerprint, mlflow_client, signature)
        if evidence is None:
            eval_run_id = evaluate_champion(found, config, str(champion.version), settings, notes)
    decision = promote(name, result.run_id, settings=settings)
    if not had_champion and (decision.already_champion or decision.first):
        decision.first, decision.already_champion, decision.promoted = True, False, True
    return RetrainOutcome(name, result, decision, eval_run_id, notes)


def evaluate_champion(
    found: Job, config: BaseModel, version: str, settings: Settings | None, notes: list[str]
) -> str | None:
    """Score the champion on the challenger's data with the job's `evaluate` (if it has one)."""
    if found.evaluate is None:
        notes.append(
            f"champion v{version} has no metrics on this data and {found.name} offers no "
            "evaluate(config, model_uri) to compute them"
        )
        return None
    uri = f"models:/{family(found.family).registered_model}/{version}"
    out = found.evaluate(config, model_uri=uri, settings=settings)
    run_id = out.run_id if isinstance(out, TrainResult) else str(out)
    mlflow_client = client(settings)
    mlflow_client.set_tag(run_id, RUN_KIND_TAG, "evaluation")
    mlflow_client.set_tag(run_id, EVALUATED_VERSION_TAG, version)
    notes.append(f"evaluated champion v{version} on the same data and test: run {run_id[:8]}")
    return run_id


def logged_config(data: dict, cls: type, source: str):
    """Parse a logged config.json. A full dump also lists optional fields left at their empty
    default (null, {}, []), which some configs reject when set (e.g. `path` for a generated
    source); on failure those are dropped (only where they equal the default) and parsed again."""
    try:
        return parse_config(data, cls, source=source)
    except ConfigError:
        return parse_config(_drop_empty_defaults(data, cls), cls, source=source)


def _drop_empty_defaults(data: dict, model: type) -> dict:
    fields = getattr(model, "model_fields", {})
    out = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None:
            out[name] = value
            continue
        sub = _model_in(field.annotation)
        if isinstance(value, dict) and sub is not None:
            value = _drop_empty_defaults(value, sub)
        if value in (None, {}, []) and not field.is_required():
            default = field.get_default(call_default_factory=True)
            if default == value or (default is None and value is None):
                continue
        out[name] = value
    return out


def _model_in(annotation):
    """The pydantic model class inside an annotation (`Model`, `Model | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


@dataclass
class Reproduction:
    original_run_id: str
    result: TrainResult
    original_fingerprint: str | None
    fingerprint: str | None
    metric_diffs: dict[str, tuple[float | None, float | None]]

    @property
    def same_data(self) -> bool:
        return bool(self.fingerprint) and self.fingerprint == self.original_fingerprint

    def max_abs_diff(self) -> float:
        """Largest difference over the result metrics (timings are expected to differ)."""
        diffs = [
            abs(a - b)
            for m, (a, b) in self.metric_diffs.items()
            if a is not None and b is not None and not is_timing(m)
        ]
        return max(diffs, default=0.0)

    def explain(self) -> str:
        head = f"reproduced run {self.original_run_id[:8]} as run {self.result.run_id[:8]}: " + (
            "same data"
            if self.same_data
            else f"DIFFERENT data ({self.original_fingerprint} -> {self.fingerprint})"
        )
        head += f", largest metric difference {self.max_abs_diff():.3g}"
        lines = [head]
        for m, (a, b) in sorted(self.metric_diffs.items()):
            shown_a = "-" if a is None else f"{a:.6g}"
            shown_b = "-" if b is None else f"{b:.6g}"
            note = "  (timing, not compared)" if is_timing(m) else ""
            lines.append(f"  {m}: {shown_a} -> {shown_b}{note}")
        return "\n".join(lines)


_TIMING = re.compile(r"(seconds|latency|throughput|_ms$|_per_s$|_s$)")


def is_timing(metric: str) -> bool:
    """Metrics that measure time or speed, which no rerun reproduces exactly."""
    return bool(_TIMING.search(metric))


def reproduce(run_ref: str, *, settings: Settings | None = None) -> Reproduction:
    """Re-run a run from its logged config (same seed) and compare its data fingerprint and metrics."""
    mlflow_client = client(settings)
    run = resolve_run(run_ref, None, mlflow_client)
    family_name = family_of_run(run, mlflow_client)
    if family_name is None:
        raise ConfigError(f"run {run.info.run_id[:8]} belongs to no model family")
    found = job(family_name)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow_client.download_artifacts(run.info.run_id, "config.json", tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several kinds for a missing file
            raise RegistryError(
                f"run {run.info.run_id[:8]} has no config.json artifact: {err}"
            ) from None
        data = json.loads(Path(local).read_text())
    config = logged_config(data, found.config, f"run {run.info.run_id[:8]} config.json")
    if "register_model" in type(config).model_fields:  # a rerun is a check, not a new version
        config = config.model_copy(update={"register_model": False})
    result: TrainResult = found.train(config, settings=settings)
    mlflow_client.set_tag(result.run_id, "shopml.reproduces", run.info.run_id)
    new = mlflow_client.get_run(result.run_id)
    names = set(run.data.metrics) | set(new.data.metrics)
    diffs = {m: (run.data.metrics.get(m), new.data.metrics.get(m)) for m in names}
    return Reproduction(
        original_run_id=run.info.run_id,
        result=result,
        original_fingerprint=run.data.tags.get(FINGERPRINT_TAG),
        fingerprint=new.data.tags.get(FINGERPRINT_TAG),
        metric_diffs=diffs,
    )
