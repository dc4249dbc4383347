"""Finding and listing the MLflow runs of a model family (what `shopml runs` shows).

Runs are referred to by full id, by a unique id prefix (as printed by `shopml runs`) or by a
unique run name, so that people can copy what they see in the table.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import models.family as families
from models.family import FAMILY_NAMES, FamilySpec
from registry.store import client
from shopml.errors import ConfigError, UnknownEntity
from shopml.settings import Settings
from training.families import family_spec
from training.tracking import PROTOCOL_TAG, experiment_name

FINGERPRINT_TAG = "data.fingerprint"
_PROTOCOL_PREFIX = "protocol."
RUN_KIND_TAG = "shopml.run_kind"  # absent for training runs; "evaluation" / "comparison" otherwise
_FULL_ID = re.compile(r"^[0-9a-f]{32}$")
_SEARCH_CAP = 5000
_ATTRIBUTES = ("start_time", "end_time", "run_name", "status")
MAX_PARAM_COLUMNS = 6


@dataclass
class RunInfo:
    """One run as shopml shows it: identity, data, metrics, params and registry state."""

    run_id: str
    name: str
    family: str
    status: str
    start_time: datetime | None
    fingerprint: str | None
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    model_version: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.run_id[:8]

    @property
    def kind(self) -> str:
        return self.tags.get(RUN_KIND_TAG, "training")

    @property
    def signature(self) -> str | None:
        """The run's evaluation-protocol signature (None for runs that logged no protocol)."""
        return self.tags.get(PROTOCOL_TAG)


def protocol_differences(
    a: dict[str, str], b: dict[str, str], names: tuple[str, str] = ("challenger", "champion")
) -> list[str]:
    """What differs between the evaluation protocols recorded in two runs' tags, in words."""
    keys = sorted(k for k in {*a, *b} if k.startswith(_PROTOCOL_PREFIX) and k != PROTOCOL_TAG)
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if va != vb:
            shown = key.removeprefix(_PROTOCOL_PREFIX)
            out.append(f"{shown}: {names[0]} {va or '(none)'}, {names[1]} {vb or '(none)'}")
    if not out and a.get(PROTOCOL_TAG) != b.get(PROTOCOL_TAG):
        out.append(
            f"signature: {names[0]} {a.get(PROTOCOL_TAG) or '(none)'}, "
            f"{names[1]} {b.get(PROTOCOL_TAG) or '(none)'} (see each run's protocol.json)"
        )
    return out


def family_experiment_id(family: str, mlflow_client: MlflowClient) -> str | None:
    found = mlflow_client.get_experiment_by_name(experiment_name(families.family(family).name))
    return None if found is None else found.experiment_id


def family_of_run(run: Run, mlflow_client: MlflowClient) -> str | None:
    """The family a run belongs to: its `shopml.family` tag, else its experiment's name."""
    tagged = run.data.tags.get("shopml.family")
    if tagged in FAMILY_NAMES:
        return tagged
    exp = mlflow_client.get_experiment(run.info.experiment_id)
    for family in FAMILY_NAMES:
        if exp.name == experiment_name(family):
            return family
    return None


def resolve_run(
    ref: str, family: str | None = None, mlflow_client: MlflowClient | None = None
) -> Run:
    """Find a run by full id, unique id prefix or unique run name (within `family` if given)."""
    mlflow_client = mlflow_client or client()
    ref = ref.strip()
    if _FULL_ID.match(ref):
        try:
            return mlflow_client.get_run(ref)
        except MlflowException:
            raise UnknownEntity("run", [ref]) from None
    names = [families.family(family).name] if family else list(FAMILY_NAMES)
    exp_ids = [e for e in (family_experiment_id(f, mlflow_client) for f in names) if e]
    if not exp_ids:
        raise UnknownEntity("run", [ref])
    runs = mlflow_client.search_runs(exp_ids, max_results=_SEARCH_CAP)
    matches = [r for r in runs if r.info.run_id.startswith(ref.lower())]
    if not matches:
        matches = [r for r in runs if r.info.run_name == ref]
    if not matches:
        raise UnknownEntity("run", [ref])
    if len(matches) > 1:
        shown = ", ".join(r.info.run_id[:12] for r in matches[:5])
        raise ConfigError(
            f"run reference {ref!r} is ambiguous: it matches {shown}; give more characters"
        )
    return matches[0]


def run_versions(family: str, mlflow_client: MlflowClient) -> dict[str, tuple[str, list[str]]]:
    """run id -> (model version, aliases) for every registered version of the family's model."""
    name = families.family(family).registered_model
    try:
        versions = mlflow_client.search_model_versions(f"name='{name}'")
        alias_map = mlflow_client.get_registered_model(name).aliases  # search omits aliases
    except MlflowException:
        return {}
    by_version: dict[str, list[str]] = {}
    for alias, version in alias_map.items():
        by_version.setdefault(str(version), []).append(alias)
    out: dict[str, tuple[str, list[str]]] = {}
    for mv in versions:
        run_id = mv.run_id or (mv.tags or {}).get("run_id")
        # keep the newest version if a run was registered twice
        if run_id and (run_id not in out or int(mv.version) > int(out[run_id][0])):
            out[run_id] = (str(mv.version), sorted(by_version.get(str(mv.version), [])))
    return out


def to_info(
    run: Run, family: str, versions: dict[str, tuple[str, list[str]]] | None = None
) -> RunInfo:
    version, aliases = (versions or {}).get(run.info.run_id, (None, []))
    start = run.info.start_time
    return RunInfo(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        family=family,
        status=run.info.status,
        start_time=datetime.fromtimestamp(start / 1000, tz=UTC) if start else None,
        fingerprint=run.data.tags.get(FINGERPRINT_TAG),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        model_version=version,
        aliases=aliases,
    )


def _order_by(sort: str | None, spec: FamilySpec) -> list[str]:
    """`--sort` to MLflow order_by: `ndcg_at_20`, `-wape`, `metrics.x ASC`, `start_time`."""
    if not sort:
        return ["attributes.start_time DESC"]
    sort = sort.strip()
    explicit = None
    if sort.startswith(("-", "+")):
        explicit = "DESC" if sort[0] == "-" else "ASC"
        sort = sort[1:]
    parts = sort.split()
    if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
        sort, explicit = parts[0], parts[1].upper()
    elif len(parts) != 1:
        raise ConfigError(f"--sort {sort!r}: expected METRIC, -METRIC or 'METRIC ASC|DESC'")
    key = sort
    if key.split(".", 1)[0] not in ("metrics", "params", "tags", "attributes"):
        key = f"attributes.{key}" if key in _ATTRIBUTES else f"metrics.{key}"
    if explicit is None:
        metric = key.removeprefix("metrics.")
        lower_better = (metric == spec.primary and spec.direction == "lower") or any(
            g.metric == metric and g.direction == "lower" for g in spec.guards
        )
        explicit = "ASC" if lower_better or key == "attributes.run_name" else "DESC"
    return [f"{_quote_key(key)} {explicit}"]


def _quote_key(key: str) -> str:
    prefix, _, name = key.partition(".")
    if re.fullmatch(r"[A-Za-z0-9_]+", name):
        return key
    return f"{prefix}.`{name}`"


def list_runs(
    family: str,
    *,
    sort: str | None = None,
    filter_string: str | None = None,
    limit: int = 50,
    nested: bool = False,
    settings: Settings | None = None,
) -> list[RunInfo]:
    """The family's runs, newest first unless `sort` says otherwise, filtered with MLflow syntax.

    Child runs (hyperparameter-search trials) are left out unless `nested`.
    """
    spec = family_spec(family)
    if limit <= 0:
        raise ConfigError(f"--limit must be positive, got {limit}")
    mlflow_client = client(settings)
    exp_id = family_experiment_id(family, mlflow_client)
    if exp_id is None:
        return []
    try:
        runs = mlflow_client.search_runs(
            [exp_id],
            filter_string=filter_string or "",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=limit if nested else min(_SEARCH_CAP, limit * 10),
            order_by=_order_by(sort, spec),
        )
    except MlflowException as err:
        what = f"--filter {filter_string!r}" if filter_string else f"--sort {sort!r}"
        raise ConfigError(f"{what} is not a valid MLflow search: {err.message}") from None
    if not nested:
        runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][:limit]
    versions = run_versions(family, mlflow_client)
    return [to_info(r, family, versions) for r in runs]


def table_rows(runs: list[RunInfo], spec: FamilySpec) -> tuple[list[str], list[list[str]]]:
    """Columns and text cells for a runs table: identity, data, key metrics, differing params."""
    metric_cols = [m for m in spec.shown_metrics() if any(m in r.metrics for r in runs)]
    if not metric_cols:  # the jobs log other names: show what is there
        seen: dict[str, None] = {}
        for r in runs:
            seen.update(dict.fromkeys(sorted(r.metrics)))
        metric_cols = list(seen)[:6]
    param_cols = differing_params(runs)[:MAX_PARAM_COLUMNS]
    show_kind = any(r.kind != "training" for r in runs)
    header = ["run", "name", "started", "status", "data", "test", "model"]
    header += [*metric_cols, *param_cols]
    if show_kind:
        header.insert(2, "kind")
    rows = []
    for r in runs:
        model = ""
        if r.model_version:
            model = f"v{r.model_version}" + (f" @{','.join(r.aliases)}" if r.aliases else "")
        row = [
            r.short_id,
            r.name,
            r.start_time.strftime("%Y-%m-%d %H:%M") if r.start_time else "",
            r.status.lower(),
            (r.fingerprint or "")[:12],
            (r.signature or "")[:8],
            model,
            *(format_number(r.metrics.get(m)) for m in metric_cols),
            *(r.params.get(p, "") for p in param_cols),
        ]
        if show_kind:
            row.insert(2, r.kind)
        rows.append(row)
    return header, rows


def differing_params(runs: list[RunInfo]) -> list[str]:
    """Parameters whose values differ between the runs (the ones worth a column)."""
    names = sorted({p for r in runs for p in r.params if not p.startswith("data.rows.")})
    return [p for p in names if len({r.params.get(p) for r in runs}) > 1]


def format_number(value: float | None) -> str:
    if value is None:
        return ""
    if value != value:  # NaN
        return "nan"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def render_csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
