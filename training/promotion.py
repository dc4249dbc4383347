"""Champion / challenger: move the registry alias `champion` only when the challenger is better.

The gate compares a challenger run with the current champion's metrics *on the same data*
(equal `data.fingerprint`): the champion's own training run, or an evaluation run of the
champion model on newer data (tagged `shopml.evaluated_model_version`, as `shopml retrain`
logs them). The challenger must beat the primary metric by the family's margin and must not
regress a guard metric beyond its tolerance. `previous-champion` keeps the replaced version so
that `rollback` can restore it.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import models.family as families
from models.family import CHAMPION, FamilySpec, Guard
from registry.store import PREVIOUS_CHAMPION, alias_version, client
from shopml.errors import ConfigError, RegistryError
from shopml.settings import Settings
from training.families import family_spec
from training.runs import FINGERPRINT_TAG, RUN_KIND_TAG, family_of_run, resolve_run
from training.tracking import experiment_name, register_model

EVALUATED_VERSION_TAG = "shopml.evaluated_model_version"


@dataclass
class Check:
    """One gate check and its outcome, in words."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"[{'pass' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


@dataclass
class Decision:
    """What `promote` decided and why."""

    family: str
    run_id: str
    version: str
    champion_version: str | None
    champion_run_id: str | None = None
    checks: list[Check] = field(default_factory=list)
    promoted: bool = False
    forced: bool = False
    reason: str | None = None
    first: bool = False
    already_champion: bool = False

    @property
    def gate_passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def explain(self) -> str:
        """A few lines a person (or a cron mail) can act on."""
        name = families.family(self.family).registered_model
        who = f"run {self.run_id[:8]} ({name} v{self.version})"
        if self.first:
            head = f"{who} is the first model of {self.family}: now @{CHAMPION}"
        elif self.already_champion:
            head = f"{who} is already @{CHAMPION}; nothing to do"
        elif self.promoted and self.forced:
            head = f"{who} promoted to @{CHAMPION} by force (reason: {self.reason}); replaced v{self.champion_version}"
        elif self.promoted:
            head = f"{who} promoted to @{CHAMPION}; v{self.champion_version} is now @{PREVIOUS_CHAMPION}"
        else:
            failed = ", ".join(c.name for c in self.failed)
            head = (
                f"{who} NOT promoted: {failed} failed; @{CHAMPION} stays v{self.champion_version}"
            )
        return "\n".join([head, *(f"  {c.line()}" for c in self.checks)])


@dataclass
class Rollback:
    family: str
    from_version: str
    to_version: str
    previous_version: str | None

    def explain(self) -> str:
        name = families.family(self.family).registered_model
        prev = f"v{self.previous_version}" if self.previous_version else "none"
        return (
            f"{name}: @{CHAMPION} rolled back from v{self.from_version} to v{self.to_version}; "
            f"@{PREVIOUS_CHAMPION} is now {prev}"
        )


# --- registry helpers -------------------------------------------------------------------------


def version_run_id(mv: ModelVersion) -> str | None:
    return mv.run_id or (mv.tags or {}).get("run_id") or None


def find_run_version(family: str, run_id: str, mlflow_client: MlflowClient) -> ModelVersion | None:
    """The newest registered version of the family's model that came from `run_id`."""
    name = families.family(family).registered_model
    try:
        versions = mlflow_client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    mine = [mv for mv in versions if version_run_id(mv) == run_id]
    return max(mine, key=lambda mv: int(mv.version)) if mine else None


def run_model_uri(run: Run, mlflow_client: MlflowClient) -> str | None:
    """The model a run logged: its `shopml.model_uri` tag, else the logged model whose source it is."""
    tagged = run.data.tags.get("shopml.model_uri")
    if tagged:
        return tagged
    try:
        models = mlflow_client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
    except MlflowException:
        models = []
    if models:
        return f"models:/{models[0].model_id}"
    return None


def ensure_version(family: str, run: Run, mlflow_client: MlflowClient) -> str:
    """The run's registered version, registering the run's logged model if needed."""
    found = find_run_version(family, run.info.run_id, mlflow_client)
    if found is not None:
        return str(found.version)
    uri = run_model_uri(run, mlflow_client)
    if uri is None:
        raise RegistryError(
            f"run {run.info.run_id[:8]} logged no model (no `shopml.model_uri` tag, no logged model): "
            f"nothing to register as {families.family(family).registered_model}"
        )
    tags = {"run_id": run.info.run_id, FINGERPRINT_TAG: run.data.tags.get(FINGERPRINT_TAG, "")}
    return register_model(uri, family=family, tags=tags)


def champion_evidence(
    family: str, champion: ModelVersion, fingerprint: str | None, mlflow_client: MlflowClient
) -> tuple[Run | None, list[str]]:
    """The champion's run on data `fingerprint` (training or evaluation run) and all fingerprints seen."""
    candidates: list[Run] = []
    source = version_run_id(champion)
    if source:
        with contextlib.suppress(MlflowException):
            candidates.append(mlflow_client.get_run(source))
    exp = mlflow_client.get_experiment_by_name(experiment_name(family))
    if exp is not None:
        candidates += mlflow_client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{EVALUATED_VERSION_TAG}` = '{champion.version}'",
            order_by=["attributes.start_time DESC"],
        )
    seen = [r.data.tags.get(FINGERPRINT_TAG) or "(none)" for r in candidates]
    for run in candidates:
        if fingerprint and run.data.tags.get(FINGERPRINT_TAG) == fingerprint:
            return run, seen
    return None, seen


# --- the gate ---------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def primary_check(spec: FamilySpec, challenger: dict, champion: dict) -> Check:
    name = spec.primary
    if name not in challenger or name not in champion:
        where = "challenger" if name not in challenger else "champion"
        return Check(f"primary {name}", False, f"metric {name!r} missing from the {where} run")
    new, old = challenger[name], champion[name]
    if math.isnan(new) or math.isnan(old):
        return Check(f"primary {name}", False, f"{name} is NaN (challenger {new}, champion {old})")
    gain = spec.improvement(new, old)
    unit = "" if spec.margin_kind == "absolute" else " (relative)"
    better = "higher" if spec.direction == "higher" else "lower"
    detail = (
        f"challenger {_fmt(new)} vs champion {_fmt(old)} ({better} is better): "
        f"improvement {_fmt(gain)}{unit}, needed > 0 and >= margin {_fmt(spec.margin)}"
    )
    return Check(f"primary {name}", gain > 0 and gain >= spec.margin, detail)


def guard_check(guard: Guard, challenger: dict, champion: dict) -> Check:
    name = guard.metric
    label = f"guard {name}"
    if name not in challenger:
        if name not in champion:
            return Check(label, True, "not logged by either run (skipped)")
        return Check(
            label, False, f"challenger did not log {name!r}; champion has {_fmt(champion[name])}"
        )
    new = challenger[name]
    if math.isnan(new):
        return Check(label, False, f"challenger {name} is NaN")
    problems = []
    if guard.min is not None and new < guard.min:
        problems.append(f"{_fmt(new)} below the minimum {_fmt(guard.min)}")
    if guard.max is not None and new > guard.max:
        problems.append(f"{_fmt(new)} above the maximum {_fmt(guard.max)}")
    if name in champion and not math.isnan(champion[name]):
        old = champion[name]
        if guard.direction == "higher":
            worse, how = old - new, "drop"
        elif guard.direction == "lower":
            worse, how = new - old, "rise"
        else:
            worse = abs(new - guard.target) - abs(old - guard.target)
            how = f"move away from {_fmt(guard.target)}"
        detail = f"challenger {_fmt(new)} vs champion {_fmt(old)}, {how} {_fmt(max(worse, 0.0))} (tolerance {_fmt(guard.tolerance)})"
        if worse > guard.tolerance + 1e-12:
            problems.append(detail)
            return Check(label, False, "; ".join(problems))
        return Check(label, not problems, "; ".join([detail, *problems]))
    detail = f"challenger {_fmt(new)}; champion did not log it"
    return Check(label, not problems, "; ".join([detail, *problems]))


def gate_checks(
    spec: FamilySpec, challenger: Run, champion_run: Run | None, seen: list[str]
) -> list[Check]:
    """Same data, primary metric by margin, guards: the checks promote applies."""
    fp = challenger.data.tags.get(FINGERPRINT_TAG)
    if not fp:
        return [Check("same data", False, f"challenger run has no {FINGERPRINT_TAG} tag")]
    if champion_run is None:
        shown = ", ".join(sorted(set(seen))) or "none"
        return [
            Check(
                "same data",
                False,
                f"challenger was evaluated on data {fp}, the champion only on {shown}: "
                "the metrics are not comparable (evaluate the champion on the same data, "
                "e.g. with `shopml retrain`, or use --force --reason)",
            )
        ]
    checks = [Check("same data", True, f"both evaluated on data {fp}")]
    new, old = dict(challenger.data.metrics), dict(champion_run.data.metrics)
    checks.append(primary_check(spec, new, old))
    checks += [guard_check(g, new, old) for g in spec.guards]
    return checks


def evaluate_gate(
    family: str, run_ref: str, *, spec: FamilySpec | None = None, settings: Settings | None = None
) -> Decision:
    """Run the gate for `run_ref` against the current champion without moving any alias.

    Registers the run's model if it is not registered yet (a run needs a version to be promoted).
    """
    family = families.family(family).name
    spec = spec or family_spec(family)
    mlflow_client = client(settings)
    run = resolve_run(run_ref, family, mlflow_client)
    run_family = family_of_run(run, mlflow_client)
    if run_family != family:
        raise ConfigError(
            f"run {run.info.run_id[:8]} belongs to family {run_family!r}, not {family!r}"
        )
    kind = run.data.tags.get(RUN_KIND_TAG)
    if kind in ("evaluation", "comparison"):
        raise ConfigError(f"run {run.info.run_id[:8]} is a {kind} run, not a training run")
    champion = alias_version(family, CHAMPION, mlflow_client)
    version = ensure_version(family, run, mlflow_client)
    decision = Decision(
        family=family, run_id=run.info.run_id, version=version, champion_version=None
    )
    if champion is None:
        # register_model made the first version champion; confirm it is ours
        now = alias_version(family, CHAMPION, mlflow_client)
        decision.champion_version = None if now is None else str(now.version)
        decision.first = True
        return decision
    decision.champion_version = str(champion.version)
    decision.champion_run_id = version_run_id(champion)
    if str(champion.version) == version:
        decision.already_champion = True
        return decision
    evidence, seen = champion_evidence(
        family, champion, run.data.tags.get(FINGERPRINT_TAG), mlflow_client
    )
    if evidence is not None:
        decision.champion_run_id = evidence.info.run_id
    decision.checks = gate_checks(spec, run, evidence, seen)
    return decision


def promote(
    family: str,
    run_ref: str,
    *,
    force: bool = False,
    reason: str | None = None,
    spec: FamilySpec | None = None,
    settings: Settings | None = None,
) -> Decision:
    """Make `run_ref`'s model the champion if the gate passes (or `force` with a `reason`)."""
    if force and not (reason and reason.strip()):
        raise ConfigError("--force needs --reason: say why the gate is overridden (it is recorded)")
    decision = evaluate_gate(family, run_ref, spec=spec, settings=settings)
    mlflow_client = client(settings)
    name = families.family(decision.family).registered_model
    now = _now()
    if decision.first:
        mlflow_client.set_registered_model_alias(name, CHAMPION, decision.version)
        _tag(
            mlflow_client, name, decision.version, {"promotion.at": now, "promotion.kind": "first"}
        )
        decision.promoted = True
        return decision
    if decision.already_champion:
        return decision
    if not decision.gate_passed and not force:
        return decision
    old = decision.champion_version
    mlflow_client.set_registered_model_alias(name, PREVIOUS_CHAMPION, old)
    mlflow_client.set_registered_model_alias(name, CHAMPION, decision.version)
    tags = {
        "promotion.at": now,
        "promotion.kind": "forced" if force else "gate",
        "promotion.previous_version": old,
        "promotion.checks": json.dumps([[c.name, c.passed] for c in decision.checks])[:4900],
    }
    if force:
        tags.update({"promotion.forced": "true", "promotion.reason": reason.strip()})
    _tag(mlflow_client, name, decision.version, tags)
    decision.promoted = True
    decision.forced = force
    decision.reason = reason.strip() if force else None
    return decision


def rollback(
    family: str, *, reason: str | None = None, settings: Settings | None = None
) -> Rollback:
    """Point `champion` back at `previous-champion`; the one before that becomes previous."""
    family = families.family(family).name
    mlflow_client = client(settings)
    name = families.family(family).registered_model
    current = alias_version(family, CHAMPION, mlflow_client)
    previous = alias_version(family, PREVIOUS_CHAMPION, mlflow_client)
    if current is None:
        raise RegistryError(f"{name} has no @{CHAMPION}: nothing to roll back")
    if previous is None:
        raise RegistryError(
            f"{name} has no @{PREVIOUS_CHAMPION} to roll back to (v{current.version} stays champion)"
        )
    cur_v, prev_v = str(current.version), str(previous.version)
    mlflow_client.set_registered_model_alias(name, CHAMPION, prev_v)
    before = (previous.tags or {}).get("promotion.previous_version")
    if before and before not in (cur_v, prev_v) and _version_exists(mlflow_client, name, before):
        mlflow_client.set_registered_model_alias(name, PREVIOUS_CHAMPION, before)
    else:
        before = None
        mlflow_client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    now = _now()
    demoted = {"rollback.demoted_at": now, "rollback.restored_version": prev_v}
    if reason:
        demoted["rollback.reason"] = reason
    _tag(mlflow_client, name, cur_v, demoted)
    _tag(
        mlflow_client,
        name,
        prev_v,
        {"rollback.restored_at": now, "rollback.replaced_version": cur_v},
    )
    return Rollback(family=family, from_version=cur_v, to_version=prev_v, previous_version=before)


def _version_exists(mlflow_client: MlflowClient, name: str, version: str) -> bool:
    try:
        mlflow_client.get_model_version(name, version)
        return True
    except MlflowException:
        return False


def _tag(mlflow_client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
