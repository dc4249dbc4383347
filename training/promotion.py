"""Champion / challenger: move the registry alias `champion` only when the challenger is better.

The gate compares a challenger run with the current champion's metrics *on the same data and
the same test* (equal `data.fingerprint` and `protocol.signature`, the hash of the evaluation
protocol a job logs with `training.tracking.log_protocol`): the champion's own training run, or
an evaluation run of the champion model on newer data (tagged `shopml.evaluated_model_version`,
as `shopml retrain` logs them). The test must hold enough evidence (the family's
`min_evidence`, e.g. 30 frauds); the challenger must beat the primary metric by the family's
margin and must not regress a guard metric beyond its tolerance; with the recommender's
`live_ab.required`, its lists must also beat the champion's in the live A/B split
(`training.live_recommender`). The gated version holds the
alias `challenger` until it is promoted; `previous-champion` keeps the replaced version so that
`rollback` can restore it.
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
from models.family import CHALLENGER, CHAMPION, FamilySpec, Guard
from registry.store import PREVIOUS_CHAMPION, alias_version, clear_alias, client, set_alias
from shopml.errors import ConfigError, RegistryError, ShopmlError
from shopml.settings import Settings
from training.families import family_spec
from training.live_recommender import live_check, read_feedback
from training.runs import (
    FINGERPRINT_TAG,
    RUN_KIND_TAG,
    RunInfo,
    family_of_run,
    protocol_differences,
    resolve_run,
)
from training.tracking import PROTOCOL_TAG, experiment_name, register_model

EVALUATED_VERSION_TAG = "shopml.evaluated_model_version"
# the version shown for a run a dry run did not register
UNREGISTERED = "(not registered)"


@dataclass
class Check:
    """One gate check and its outcome, in words."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"[{'pass' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


@dataclass(frozen=True)
class Tested:
    """What the gate reads of one run: its id, tags (data fingerprint, protocol) and metrics."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]

    @classmethod
    def of(cls, run: Run | RunInfo) -> Tested:
        if isinstance(run, RunInfo):
            return cls(run.run_id, dict(run.tags), dict(run.metrics))
        return cls(run.info.run_id, dict(run.data.tags), dict(run.data.metrics))

    @property
    def fingerprint(self) -> str | None:
        return self.tags.get(FINGERPRINT_TAG) or None

    @property
    def signature(self) -> str | None:
        return self.tags.get(PROTOCOL_TAG) or None


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
    dry_run: bool = False

    @property
    def gate_passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def explain(self) -> str:
        """A few lines a person (or a cron mail) can act on."""
        name = families.family(self.family).registered_model
        held = (
            ""
            if self.promoted or self.first or self.already_champion or self.dry_run
            else f" @{CHALLENGER}"
        )
        shown = self.version if self.version == UNREGISTERED else f"v{self.version}"
        who = f"run {self.run_id[:8]} ({name} {shown}{held})"
        failed = ", ".join(c.name for c in self.failed)
        if self.dry_run and not (self.first or self.already_champion):
            head = (
                f"{who} would be promoted to @{CHAMPION} over v{self.champion_version} "
                "(dry run: no alias moved)"
                if self.gate_passed
                else f"{who} would NOT be promoted (dry run): {failed} failed; "
                f"@{CHAMPION} stays v{self.champion_version}"
            )
        elif self.first and self.dry_run:
            head = f"{who} would be the first model of {self.family} (dry run: nothing registered)"
        elif self.first:
            head = f"{who} is the first model of {self.family}: now @{CHAMPION}"
        elif self.already_champion:
            head = f"{who} is already @{CHAMPION}; nothing to do"
        elif self.promoted and self.forced:
            head = f"{who} promoted to @{CHAMPION} by force (reason: {self.reason}); replaced v{self.champion_version}"
        elif self.promoted:
            head = f"{who} promoted to @{CHAMPION}; v{self.champion_version} is now @{PREVIOUS_CHAMPION}"
        else:
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


def champion_runs(family: str, champion: ModelVersion, mlflow_client: MlflowClient) -> list[Run]:
    """The champion's training run and its evaluation runs (newest first): its evidence."""
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
    return candidates


def comparable(
    candidates: list[Tested], fingerprint: str | None, signature: str | None
) -> Tested | None:
    """The first candidate on data `fingerprint` tested with protocol `signature` (or None)."""
    for tested in candidates:
        if fingerprint and tested.fingerprint == fingerprint and tested.signature == signature:
            return tested
    return None


def champion_evidence(
    family: str,
    champion: ModelVersion,
    fingerprint: str | None,
    mlflow_client: MlflowClient,
    signature: str | None = None,
) -> tuple[Tested | None, list[Tested]]:
    """The champion's run on the same data and test (None if it has none) and all its runs."""
    candidates = [Tested.of(r) for r in champion_runs(family, champion, mlflow_client)]
    return comparable(candidates, fingerprint, signature), candidates


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


def evidence_checks(spec: FamilySpec, challenger: Tested, champion: Tested | None) -> list[Check]:
    """One check per `min_evidence` count: the test must hold enough to decide on."""
    checks = []
    for metric, least in spec.min_evidence.items():
        label = f"evidence {metric}"
        counts = {"challenger": challenger.metrics.get(metric)}
        if champion is not None and metric in champion.metrics:
            counts["champion"] = champion.metrics[metric]
        if counts["challenger"] is None:
            detail = f"challenger did not log {metric!r}: the size of its test is unknown"
            checks.append(Check(label, False, detail))
            continue
        shown = ", ".join(f"{who} {_fmt(n)}" for who, n in counts.items())
        small = [who for who, n in counts.items() if not n >= least]
        verdict = "too little to decide" if small else "enough to decide"
        detail = f"the test holds {metric} {shown}; at least {_fmt(least)} needed: {verdict}"
        checks.append(Check(label, not small, detail))
    return checks


def gate_checks(spec: FamilySpec, challenger: Tested, candidates: list[Tested]) -> list[Check]:
    """Same data, same test, enough evidence, primary metric by margin, guards: the checks
    promote applies to `challenger` against the champion's runs `candidates`."""
    fp, sig = challenger.fingerprint, challenger.signature
    if not fp:
        check = Check("same data", False, f"challenger run has no {FINGERPRINT_TAG} tag")
        return [check, *evidence_checks(spec, challenger, None)]
    same_data = [c for c in candidates if c.fingerprint == fp]
    if not same_data:
        shown = ", ".join(sorted({c.fingerprint or "(none)" for c in candidates})) or "none"
        check = Check(
            "same data",
            False,
            f"challenger was evaluated on data {fp}, the champion only on {shown}: "
            "the metrics are not comparable (evaluate the champion on the same data, "
            "e.g. with `shopml retrain`, or use --force --reason)",
        )
        return [check, *evidence_checks(spec, challenger, None)]
    checks = [Check("same data", True, f"both evaluated on data {fp}")]
    champion = comparable(same_data, fp, sig)
    if champion is None:
        checks.append(_different_test(challenger, same_data[0]))
        return checks + evidence_checks(spec, challenger, None)
    checks.append(Check("same test", True, f"both tested with protocol {sig}"))
    checks += evidence_checks(spec, challenger, champion)
    new, old = challenger.metrics, champion.metrics
    checks.append(primary_check(spec, new, old))
    checks += [guard_check(g, new, old) for g in spec.guards]
    return checks


def _different_test(challenger: Tested, champion: Tested) -> Check:
    """The failed "same test" check, naming what differs between the two protocols."""
    if not challenger.signature:
        why = f"challenger run has no {PROTOCOL_TAG} tag (its job logged no evaluation protocol)"
    else:
        diffs = protocol_differences(challenger.tags, champion.tags)
        why = (
            f"challenger tested with protocol {challenger.signature}, the champion on this data "
            f"only with {champion.signature or '(none)'}; they differ in " + "; ".join(diffs)
        )
    return Check(
        "same test",
        False,
        why + ": the metrics measure different tests (evaluate the champion with the "
        "challenger's protocol, e.g. with `shopml retrain`, or use --force --reason)",
    )


def evaluate_gate(
    family: str,
    run_ref: str,
    *,
    spec: FamilySpec | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    live: bool = False,
) -> Decision:
    """Run the gate for `run_ref` against the current champion without moving `champion`
    (`live`: and on live evidence too, `live_evidence_checks`).

    Registers the run's model if it is not registered yet (a run needs a version to be promoted)
    and marks that version `challenger`, the version under comparison.
    """
    family = families.family(family).name
    spec = spec or family_spec(family)
    mlflow_client = client(settings)
    run = _training_run(run_ref, family, mlflow_client)
    champion = alias_version(family, CHAMPION, mlflow_client)
    if dry_run:  # a dry run changes nothing: no new version, no alias
        found = find_run_version(family, run.info.run_id, mlflow_client)
        version = str(found.version) if found is not None else UNREGISTERED
    else:
        version = ensure_version(family, run, mlflow_client)
    decision = Decision(family, run.info.run_id, version, None, dry_run=dry_run)
    if champion is None:
        # register_model made the first version champion (not in a dry run); confirm it is ours
        now = alias_version(family, CHAMPION, mlflow_client)
        decision.champion_version = None if now is None else str(now.version)
        decision.first = True
        return decision
    decision.champion_version = str(champion.version)
    decision.champion_run_id = version_run_id(champion)
    if str(champion.version) == version:
        decision.already_champion = True
        return decision
    if not dry_run:
        set_alias(family, CHALLENGER, version, mlflow_client)
    challenger = Tested.of(run)
    evidence, candidates = champion_evidence(
        family, champion, challenger.fingerprint, mlflow_client, challenger.signature
    )
    if evidence is not None:
        decision.champion_run_id = evidence.run_id
    decision.checks = gate_checks(spec, challenger, candidates)
    if live:
        decision.checks += live_evidence_checks(
            family, spec, decision.champion_version, version, settings
        )
    if spec.live_ab is not None and spec.live_ab.required:
        decision.checks.append(live_ab_check(spec, version, settings))
    return decision


def live_ab_check(spec: FamilySpec, version: str, settings: Settings | None) -> Check:
    """The required live A/B win of `spec.live_ab`: the challenger version's lists against the
    champion's of the same period, from the feedback store (`training.live_recommender`)."""
    rule = spec.live_ab
    name = f"live {rule.metric}@{rule.k}"
    try:
        feedback = read_feedback(settings)
    except ShopmlError as err:
        return Check(name, False, f"no live evidence: {err}")
    outcome = live_check(rule, version, feedback, spec.family)
    return Check(name, outcome.passed, outcome.detail)


def live_evidence_checks(
    family: str,
    spec: FamilySpec,
    champion_version: str,
    version: str,
    settings: Settings | None,
) -> list[Check]:
    """The gate's checks on live evidence (`promote --live`). Fraud: the version scored in
    shadow beside the champion, on the same payments once their labels matured
    (`training.live_fraud`); without such payments, one failed check saying why."""
    if family != "fraud":
        return [
            Check(
                "live evidence",
                False,
                f"--live reads the fraud shadow log; {family} has no shadow "
                "(the recommender's live evidence is its A/B split: live_ab.required)",
            )
        ]
    from shopml.settings import load_settings
    from training.live_fraud import compare_live, live_gate_checks, load_matured

    name = families.family(family).registered_model
    try:
        frame = load_matured(settings or load_settings())
        comparison = compare_live(frame, f"{name}/{champion_version}", f"{name}/{version}")
    except ShopmlError as err:
        return [Check("live evidence", False, str(err))]
    return live_gate_checks(spec, comparison)


def _training_run(run_ref: str, family: str, mlflow_client: MlflowClient) -> Run:
    """The training run `run_ref` of `family`; ConfigError for another family's or a non-training run."""
    run = resolve_run(run_ref, family, mlflow_client)
    run_family = family_of_run(run, mlflow_client)
    if run_family != family:
        raise ConfigError(
            f"run {run.info.run_id[:8]} belongs to family {run_family!r}, not {family!r}"
        )
    kind = run.data.tags.get(RUN_KIND_TAG)
    if kind in ("evaluation", "comparison"):
        raise ConfigError(f"run {run.info.run_id[:8]} is a {kind} run, not a training run")
    return run


def promote(
    family: str,
    run_ref: str,
    *,
    force: bool = False,
    reason: str | None = None,
    spec: FamilySpec | None = None,
    settings: Settings | None = None,
    live: bool = False,
) -> Decision:
    """Make `run_ref`'s model the champion if the gate passes (or `force` with a `reason`);
    `live`: the gate's checks must pass on live evidence too."""
    if force and not (reason and reason.strip()):
        raise ConfigError("--force needs --reason: say why the gate is overridden (it is recorded)")
    decision = evaluate_gate(family, run_ref, spec=spec, settings=settings, live=live)
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
    clear_alias(decision.family, CHALLENGER, mlflow_client)  # no longer under comparison
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
