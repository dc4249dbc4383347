"""Side-by-side comparison of runs of one family: metric deltas, data and test equality, the
promotion gate's verdict, curve data.

"Same data, same test" needs both equal data fingerprints and equal evaluation-protocol
signatures; the verdict applies the gate's own checks (`training.promotion.gate_checks`) to
each challenger against the incumbent (the run holding @champion, else the first run).

Curves are read from each run's `curves/<name>.json` artifacts (`{"x": [...], "y": [...], ...}`,
written by `training.tracking.log_curve`), so that the report can overlay runs; runs that logged
only PNGs are compared on metrics alone.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.family import CHALLENGER, CHAMPION, FamilySpec
from registry.store import client, configure
from shopml.errors import ConfigError
from shopml.settings import Settings
from training.families import family_spec
from training.promotion import Check, Tested, gate_checks
from training.runs import (
    RunInfo,
    differing_params,
    family_of_run,
    protocol_differences,
    resolve_run,
    run_versions,
    to_info,
)
from training.tracking import ensure_experiment

CURVES_DIR = "curves"
COMPARISONS = "comparisons"  # experiment shopml-comparisons holds the logged reports


@dataclass
class Curve:
    """The data behind one plot of one run."""

    name: str
    x: list[float]
    y: list[float]
    extra: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Verdict:
    """The gate's answer for one challenger against the incumbent, with its checks."""

    challenger: RunInfo
    incumbent: RunInfo
    checks: list[Check]

    @property
    def promote(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def line(self) -> str:
        """One sentence: promote or refuse, and why."""
        who = f"{self.challenger.short_id} over {self.incumbent.short_id}"
        if self.promote:
            return f"PROMOTE {who}: every gate check passes"
        return f"REFUSE {who}: " + "; ".join(f"{c.name}: {c.detail}" for c in self.failed)


@dataclass
class Comparison:
    """Runs of one family side by side; `runs[0]` is the baseline the deltas refer to."""

    family: str
    spec: FamilySpec
    runs: list[RunInfo]
    curves: dict[str, dict[str, Curve]]  # run id -> curve name -> curve

    @property
    def baseline(self) -> RunInfo:
        return self.runs[0]

    @property
    def fingerprints(self) -> list[str | None]:
        return [r.fingerprint for r in self.runs]

    @property
    def same_data(self) -> bool:
        """True when every run carries the same data fingerprint (so deltas are meaningful)."""
        fps = self.fingerprints
        return all(fps) and len(set(fps)) == 1

    @property
    def signatures(self) -> list[str | None]:
        return [r.signature for r in self.runs]

    @property
    def same_test(self) -> bool:
        """True when every run logged the same evaluation-protocol signature."""
        sigs = self.signatures
        return all(sigs) and len(set(sigs)) == 1

    @property
    def comparable(self) -> bool:
        """Same data and same test: the only case in which deltas mean something."""
        return self.same_data and self.same_test

    def test_differences(self) -> list[str]:
        """What differs between each run's protocol and the baseline's, in words."""
        base = self.baseline
        out = []
        for r in self.runs[1:]:
            names = (r.short_id, base.short_id)
            out += protocol_differences(r.tags, base.tags, names)
        return list(dict.fromkeys(out))

    def incumbent(self) -> RunInfo:
        """The run the others are judged against: the one holding @champion, else the first."""
        return next((r for r in self.runs if CHAMPION in r.aliases), self.baseline)

    def verdicts(self) -> list[Verdict]:
        """The gate's checks for every other run (the @challenger first) against the incumbent."""
        inc = self.incumbent()
        others = sorted(
            (r for r in self.runs if r is not inc), key=lambda r: CHALLENGER not in r.aliases
        )
        return [
            Verdict(r, inc, gate_checks(self.spec, Tested.of(r), [Tested.of(inc)])) for r in others
        ]

    def small_tests(self) -> list[str]:
        """Warnings for runs whose test holds less than the family's `min_evidence`."""
        out = []
        for r in self.runs:
            for metric, least in self.spec.min_evidence.items():
                n = r.metrics.get(metric)
                if n is None:
                    out.append(
                        f"{r.short_id} did not log {metric}: the size of its test is unknown"
                    )
                elif not n >= least:
                    out.append(
                        f"{r.short_id}: its test holds {metric} = {n:g}, fewer than the "
                        f"{least:g} needed to decide"
                    )
        return out

    def metric_names(self) -> list[str]:
        """Family metrics first (primary, guards, key metrics), then every other logged metric."""
        logged = {m for r in self.runs for m in r.metrics}
        first = [m for m in self.spec.shown_metrics() if m in logged]
        return first + sorted(logged - set(first))

    def delta(self, run: RunInfo, metric: str) -> float | None:
        base, value = self.baseline.metrics.get(metric), run.metrics.get(metric)
        if base is None or value is None:
            return None
        return value - base

    def better(self, run: RunInfo, metric: str) -> bool | None:
        """Whether `run` is better than the baseline on `metric`, when the family says which way is better."""
        d = self.delta(run, metric)
        if d is None or d == 0:
            return None
        if metric == self.spec.primary:
            return d > 0 if self.spec.direction == "higher" else d < 0
        for g in self.spec.guards:
            if g.metric == metric:
                if g.direction == "higher":
                    return d > 0
                if g.direction == "lower":
                    return d < 0
                base = self.baseline.metrics[metric]
                return abs(run.metrics[metric] - g.target) < abs(base - g.target)
        return None

    def curve_names(self) -> list[str]:
        """Curves logged by at least one run, the family's preferred ones first."""
        names = {n for per_run in self.curves.values() for n in per_run}
        first = [n for n in self.spec.curves if n in names]
        return first + sorted(names - set(first))

    def param_differences(self) -> list[str]:
        return differing_params(self.runs)


def load_curves(run_id: str, mlflow_client: MlflowClient) -> dict[str, Curve]:
    """Every `curves/*.json` artifact of a run (malformed files are skipped, not fatal)."""
    try:
        listed = mlflow_client.list_artifacts(run_id, CURVES_DIR)
    except (MlflowException, OSError):
        return {}
    files = [a.path for a in listed if not a.is_dir and a.path.endswith(".json")]
    if not files:
        return {}
    out: dict[str, Curve] = {}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow_client.download_artifacts(run_id, CURVES_DIR, tmp))
        for path in sorted(local.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                x, y = [float(v) for v in data["x"]], [float(v) for v in data["y"]]
            except (ValueError, KeyError, TypeError):
                continue
            if len(x) != len(y):
                continue
            extra = {
                k: [float(v) for v in vals]
                for k, vals in data.items()
                if k not in ("x", "y") and isinstance(vals, list) and len(vals) == len(x)
            }
            out[path.stem] = Curve(name=path.stem, x=x, y=y, extra=extra)
    return out


def compare_runs(
    run_refs: list[str],
    *,
    family: str | None = None,
    with_curves: bool = True,
    settings: Settings | None = None,
) -> Comparison:
    """Collect two or more runs of one family (ids, id prefixes or names) for comparison."""
    if len(run_refs) < 2:
        raise ConfigError(f"compare needs at least two runs, got {len(run_refs)}")
    mlflow_client = client(settings)
    runs = [resolve_run(ref, family, mlflow_client) for ref in run_refs]
    ids = [r.info.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ConfigError("compare got the same run twice: " + ", ".join(i[:8] for i in ids))
    families = {family_of_run(r, mlflow_client) for r in runs}
    if len(families) != 1 or None in families:
        shown = ", ".join(f"{r.info.run_id[:8]}={family_of_run(r, mlflow_client)}" for r in runs)
        raise ConfigError(f"compare needs runs of one model family, got {shown}")
    fam = families.pop()
    versions = run_versions(fam, mlflow_client)
    infos = [to_info(r, fam, versions) for r in runs]
    curves = {r.run_id: load_curves(r.run_id, mlflow_client) if with_curves else {} for r in infos}
    return Comparison(family=fam, spec=family_spec(fam), runs=infos, curves=curves)


def log_comparison(
    comparison: Comparison, report_path: str | Path, *, settings: Settings | None = None
) -> str:
    """Log the HTML report as a run of experiment `shopml-comparisons`; returns that run's id."""
    settings = configure(settings)
    exp_id = ensure_experiment(COMPARISONS, settings)
    ids = [r.run_id for r in comparison.runs]
    tags = {
        "compare.family": comparison.family,
        "shopml.run_kind": "comparison",
        "compare.runs": ",".join(ids),
        "compare.baseline": ids[0],
        "compare.same_data": str(comparison.same_data).lower(),
        "compare.same_test": str(comparison.same_test).lower(),
    }
    name = "compare " + " vs ".join(i[:8] for i in ids)
    with mlflow.start_run(experiment_id=exp_id, run_name=name[:250], tags=tags) as run:
        mlflow.log_artifact(str(report_path))
        rows = []
        for r in comparison.runs:
            for m in comparison.metric_names():
                rows.append(
                    {
                        "run_id": r.run_id,
                        "metric": m,
                        "value": r.metrics.get(m),
                        "delta": comparison.delta(r, m),
                    }
                )
        verdicts = [
            {"challenger": v.challenger.run_id, "incumbent": v.incumbent.run_id}
            | {"promote": v.promote, "why": v.line()}
            for v in comparison.verdicts()
        ]
        mlflow.log_dict(
            {
                "runs": ids,
                "same_data": comparison.same_data,
                "same_test": comparison.same_test,
                "verdicts": verdicts,
                "metrics": rows,
            },
            "comparison.json",
        )
        return run.info.run_id
