"""`shopml monitor FAMILY`: compare live traffic or a batch of new data with the reference
profile of the family's champion, with thresholds from `experiments/configs/monitor.toml`.

The reference is the profile the champion's training run stored (`training.reference_profiles`;
artifact `reference/profile.json`). The new data is a live snapshot (a service's `/profile`
answer, fetched or read from a file) or a batch: the last days of a store (fraud: the
champion's features and scores of its payments; recommender: request kinds and categories of
its sessions, known customers being the champion's; forecast: demand levels, category mix and
prices per category over the reference's window). Each shared column gets PSI, a chi-square
test and (numeric) a KS statistic (`features.reference`); a column drifts when PSI passes its
threshold and the test's p-value is below alpha over the number of columns (Bonferroni), or
when one bin's share moves by a small effect (Cohen's h) with an exact p-value below that level
over the number of bins (a concentrated shift, such as a small attack's tiny payments).

The outcome is printed by the CLI, written as an HTML report (`training.monitor_report`) and
logged with the PSI of every column as a run of experiment `shopml-monitoring`; `alarmed`
(drift or a live-performance alarm) makes the command exit non-zero.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import Field

from features.reference import ColumnDrift, DriftRule, Profile, compare_profiles
from features.store import Store
from models.family import CHAMPION, family
from registry.store import alias_version, client, configure, load_logged, run_artifact
from shopml.config import ConfigModel, load_config
from shopml.errors import ConfigError, DataError, RegistryError
from shopml.settings import CONFIG_DIR, Settings, load_settings
from training.live_performance import MonitorContext, PerformanceTable, live_tables
from training.reference_profiles import (
    REFERENCE_ARTIFACT,
    forecast_batch,
    fraud_batch,
    recommender_batch,
)

MONITORING = "monitoring"  # experiment shopml-monitoring


class DriftConfig(ConfigModel):
    """When a column counts as drifted (see `features.reference.DriftRule`)."""

    psi_threshold: float = Field(0.2, gt=0, description="PSI above this (0.2: common default)")
    alpha: float = Field(0.01, gt=0, lt=1, description="family-wise p-value of the chi2 test")
    bonferroni: bool = Field(True, description="divide alpha by the number of columns")
    min_count: int = Field(30, ge=1, description="fewer new values: PSI / chi2 never flag")
    bin_effect: float = Field(
        0.2, ge=0, description="Cohen's h of one bin's share (0.2: small effect); 0: off"
    )
    bin_ratio: float = Field(2.0, ge=1, description="a bin's share grew this many times")

    def rule(self) -> DriftRule:
        return DriftRule(
            self.psi_threshold,
            self.alpha,
            self.min_count,
            self.bonferroni,
            self.bin_effect,
            self.bin_ratio,
        )

    def text(self, n_columns: int) -> str:
        """The rule in words, for the CLI and the report."""
        level = f"{self.alpha:g}" + (f"/{n_columns}" if self.bonferroni else "")
        broad = (
            f"PSI > {self.psi_threshold:g} and chi2 p < {level}, at least {self.min_count} "
            "new values"
        )
        if self.bin_effect <= 0:
            return broad
        return (
            f"{broad}; or one bin's share x{self.bin_ratio:g} with Cohen's h >= "
            f"{self.bin_effect:g} and exact p < {level}/bins"
        )


class BatchConfig(ConfigModel):
    """How much of a batch of new data is compared (its newest days)."""

    fraud_days: int = Field(7, ge=1, description="the reference is a test week")
    recommender_days: int = Field(7, ge=1)
    # forecast: the reference's own window (training.reference_profiles.FORECAST_WINDOW_DAYS)


class ScheduleConfig(ConfigModel):
    """`shopml retrain FAMILY --when schedule`: retrain once the champion is this old."""

    max_champion_age_days: float = Field(7.0, gt=0)


class MonitorConfig(ConfigModel):
    drift: DriftConfig = Field(default_factory=DriftConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    live_timeout_s: float = Field(10.0, gt=0, description="how long to wait for /profile")


def load_monitor_config(path: str | Path | None = None) -> MonitorConfig:
    """The monitor config of `path` (default experiments/configs/monitor.toml)."""
    return load_config(
        Path(path) if path is not None else CONFIG_DIR / "monitor.toml", MonitorConfig
    )


@dataclass
class MonitorOutcome:
    """One family's monitor run: what was compared, the drift per column, live tables."""

    family: str
    version: str | None
    source: str
    rule_text: str
    drift: list[ColumnDrift]
    tables: list[PerformanceTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None
    mlflow_run_id: str | None = None

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [d for d in self.drift if d.drifted]

    @property
    def alarms(self) -> list[str]:
        return [a for t in self.tables for a in t.alarms]

    @property
    def alarmed(self) -> bool:
        return bool(self.drifted or self.alarms)

    def explain(self) -> str:
        if not self.alarmed:
            return f"{self.family}: no drift in {len(self.drift)} columns ({self.source})"
        names = ", ".join(f"{d.name} (PSI {d.psi:.2f})" for d in self.drifted)
        alarms = "; ".join(self.alarms)
        return f"{self.family}: drift in {names or 'no column'}{'; ' + alarms if alarms else ''}"


# ------------------------------------------------------------------------ the champion's side
@dataclass
class Champion:
    family: str
    version: str
    run_id: str
    model_uri: str
    reference: Profile
    metrics: dict[str, float]
    created_ms: int


def champion(
    family_name: str, version: str | None = None, settings: Settings | None = None
) -> Champion:
    """The watched version (default @champion) with its reference profile and test metrics;
    RegistryError when there is none or it was trained before reference profiles existed."""
    fam = family(family_name)
    mlflow_client = client(settings)
    mv = alias_version(fam.name, version or CHAMPION, mlflow_client)
    if mv is None:
        raise RegistryError(
            f"{fam.registered_model} has no version {version or '@' + CHAMPION}: "
            f"{fam.missing_champion()}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = run_artifact(mv.run_id, REFERENCE_ARTIFACT, Path(tmp))
        if path is None:
            raise RegistryError(
                f"{fam.registered_model} v{mv.version} (run {mv.run_id[:8]}) has no reference "
                f"profile ({REFERENCE_ARTIFACT}): it was trained before profiles were stored; "
                f"retrain it (`shopml retrain {fam.name}`)"
            )
        reference = Profile.from_dict(json.loads(path.read_text()))
    metrics = dict(mlflow_client.get_run(mv.run_id).data.metrics)
    uri = f"models:/{fam.registered_model}/{mv.version}"
    return Champion(
        fam.name,
        str(mv.version),
        mv.run_id,
        uri,
        reference,
        metrics,
        int(mv.creation_timestamp or 0),
    )


# ----------------------------------------------------------------------------- the new side
def batch_profile(ch: Champion, store: Store, config: MonitorConfig) -> tuple[Profile, str]:
    """The new batch on the champion's reference bins, and a description of it."""
    if ch.family == "fraud":
        return _fraud_batch(ch, store, config.batch.fraud_days)
    if ch.family == "recommender":
        return _recommender_batch(ch, store, config.batch.recommender_days)
    if ch.family == "forecast":
        store.require("order_lines")
        prof = forecast_batch(ch.reference, store.order_lines, store.products, store.promotions)
        days = prof.meta["window_days"]
        return prof, f"the last {days} days of {store.name}'s order lines"
    raise ConfigError(f"no batch profile for family {ch.family!r}")


def last_days(frame: pd.DataFrame, days: int, column: str = "timestamp") -> pd.Series:
    """Boolean mask of the rows in the last `days` days of `frame` (by `column`)."""
    end = frame[column].max()
    return frame[column] > end - pd.Timedelta(days=days)


def _fraud_batch(ch: Champion, store: Store, days: int) -> tuple[Profile, str]:
    from features.fraud.batch import compute_columns, to_matrix

    store.require("payments")
    engine = load_logged(ch.model_uri, "fraud")
    fs = engine.feature_set
    pay = store.payments
    cols = compute_columns(pay, fs)  # the whole history: windows reach back before the batch
    rows = last_days(pay, days).to_numpy().nonzero()[0]
    X = to_matrix(cols, fs.names, rows)
    prof = fraud_batch(ch.reference, X, fs.names, engine.scorer.predict_proba(X))
    return prof, f"the last {days} days of {store.name}'s payments ({len(rows)})"


def _recommender_batch(ch: Champion, store: Store, days: int) -> tuple[Profile, str]:
    store.require("interactions")
    model = load_logged(ch.model_uri, "recommender")
    known = list(getattr(model, "customer_index_", {}) or [])
    inter = store.interactions
    new = inter[last_days(inter, days)]
    prof = recommender_batch(ch.reference, new, store.products, known)
    return prof, f"the last {days} days of {store.name}'s interactions ({len(new)} events)"


def fetch_snapshot(url: str, settings: Settings | None, timeout_s: float) -> dict:
    """A running service's `POST /profile` answer (bearer token from SHOPML_API_TOKEN)."""
    settings = settings or load_settings()
    headers = {"content-type": "application/json"}
    if settings.api_token:
        headers["authorization"] = f"Bearer {settings.api_token}"
    req = urllib.request.Request(url.rstrip("/") + "/profile", b"{}", headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise DataError(f"--live {url}: /profile answered {err.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise DataError(f"--live {url}: cannot reach the service ({err})") from None


def snapshot_profile(snapshot: dict, family_name: str, where: str) -> tuple[Profile, str]:
    """The family's live profile in a `/profile` answer, and a description of it."""
    found = (
        (snapshot.get("profiles") or {}).get(family_name) if isinstance(snapshot, dict) else None
    )
    if not isinstance(found, dict) or "profile" not in found:
        have = sorted((snapshot.get("profiles") or {}) if isinstance(snapshot, dict) else [])
        raise DataError(f"{where}: no live profile of {family_name} (it holds {have or 'none'})")
    prof = Profile.from_dict(found["profile"])
    desc = (
        f"live {where}: {found.get('observations', 0)} observations of "
        f"{found.get('model_version', '?')} since {found.get('since', '?')}"
    )
    return prof, desc


# ------------------------------------------------------------------------------ the run
def run_monitor(
    family_name: str,
    config: MonitorConfig,
    *,
    live_url: str | None = None,
    snapshot: Path | None = None,
    data: Path | None = None,
    job_config: Path | None = None,
    version: str | None = None,
    out: Path | None = None,
    log: bool = True,
    settings: Settings | None = None,
    store: Store | None = None,
) -> MonitorOutcome:
    """Compare, show live performance, write the report and log it; see the module docstring."""
    name = family(family_name).name
    given = [x for x in (live_url, snapshot, data, store) if x is not None]
    if len(given) > 1:
        raise ConfigError("give one of --live, --snapshot and --data")
    settings = configure(settings)
    ch = champion(name, version, settings)
    notes: list[str] = []
    if live_url is not None:
        new, source = snapshot_profile(
            fetch_snapshot(live_url, settings, config.live_timeout_s), name, live_url
        )
    elif snapshot is not None:
        try:
            data_ = json.loads(Path(snapshot).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"--snapshot {snapshot}: not a readable JSON file ({err})") from None
        new, source = snapshot_profile(data_, name, str(snapshot))
    else:
        if store is None:
            store = _batch_store(name, data, job_config, settings)
        new, source = batch_profile(ch, store, config)
    drift = compare_profiles(ch.reference, new, config.drift.rule())
    missing = sorted(set(ch.reference.columns) - set(new.columns))
    if missing:
        notes.append(f"not in the new data, not compared: {', '.join(missing)}")
    ctx = MonitorContext(name, settings, ch.version, ch.run_id, ch.metrics)
    tables, live_notes = live_tables(ctx)
    rule_text = config.drift.text(len(drift))
    outcome = MonitorOutcome(name, ch.version, source, rule_text, drift, tables, notes + live_notes)
    if out is not None:
        from training.monitor_report import write_report

        outcome.report_path = write_report(outcome, ch.reference, new, out)
    if log:
        outcome.mlflow_run_id = log_monitor(outcome, settings)
    return outcome


def _batch_store(name: str, data: Path | None, job_config: Path | None, settings) -> Store:
    """The new batch: a store folder, else the source of the family's job config."""
    if data is not None:
        if not Path(data).is_dir():
            raise ConfigError(f"--data {data}: not a store folder")
        return Store.read(data)
    from features.sources import load_source
    from training.jobs import job

    found = job(name)
    cfg = load_config(Path(job_config) if job_config else found.default_config, found.config)
    return load_source(cfg.source, settings)


_METRIC_NAME = re.compile(r"[^\w.\- /]")


def log_monitor(outcome: MonitorOutcome, settings: Settings | None = None) -> str:
    """Log the report and the PSI / p-value of every column as a run of `shopml-monitoring`."""
    import mlflow

    from training.tracking import ensure_experiment

    settings = configure(settings)
    exp = ensure_experiment(MONITORING, settings)
    tags = {
        "shopml.run_kind": "monitor",
        "monitor.family": outcome.family,
        "monitor.version": str(outcome.version),
        "monitor.source": outcome.source[:500],
        "monitor.drifted": ",".join(d.name for d in outcome.drifted)[:500],
    }
    with mlflow.start_run(
        experiment_id=exp, run_name=f"monitor {outcome.family}", tags=tags
    ) as run:
        metrics = {
            "drifted_columns": float(len(outcome.drifted)),
            "alarms": float(len(outcome.alarms)),
        }
        for d in outcome.drift:
            key = _METRIC_NAME.sub("_", d.name)
            metrics[f"psi.{key}"] = d.psi
            metrics[f"chi2_p.{key}"] = d.p_value
        metrics["max_psi"] = max((d.psi for d in outcome.drift), default=0.0)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"drift": [d.to_dict() for d in outcome.drift]}, "monitor/drift.json")
        if outcome.report_path is not None:
            mlflow.log_artifact(str(outcome.report_path), "monitor")
    return run.info.run_id


# ------------------------------------------------------------------ shopml retrain --when
WHEN = ("drift", "schedule")


@dataclass
class RetrainDue:
    """Whether `shopml retrain FAMILY --when ...` should train now, and why."""

    due: bool
    reason: str
    outcome: MonitorOutcome | None = None


def retrain_due(
    family_name: str,
    when: str,
    config: MonitorConfig,
    *,
    settings: Settings | None = None,
    job_config: Path | None = None,
    report: Path | None = None,
    now_ms: int | None = None,
) -> RetrainDue:
    """`schedule`: due once the champion is older than `schedule.max_champion_age_days` (or
    there is none); `drift`: due when `shopml monitor` on the job config's source crosses a
    threshold (or the champion has no reference profile to compare with)."""
    if when not in WHEN:
        raise ConfigError(f"--when must be drift or schedule, got {when!r}")
    name = family(family_name).name
    settings = configure(settings)
    mv = alias_version(name, CHAMPION, client(settings))
    if mv is None:
        return RetrainDue(True, f"{name} has no @{CHAMPION} yet: the first model is due")
    if when == "schedule":
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        age = (now_ms - int(mv.creation_timestamp or 0)) / 86_400_000
        limit = config.schedule.max_champion_age_days
        verdict = "older than" if age > limit else "within"
        return RetrainDue(
            age > limit, f"champion v{mv.version} is {age:.2f} days old, {verdict} {limit:g} days"
        )
    try:
        outcome = run_monitor(name, config, job_config=job_config, out=report, settings=settings)
    except RegistryError as err:  # e.g. a champion trained before reference profiles
        return RetrainDue(True, f"cannot monitor the champion ({err}): retraining")
    return RetrainDue(outcome.alarmed, outcome.explain(), outcome)
