"""shopml's Prometheus counters, exported beside BentoML's own on `/metrics`.

Every counter carries the model version as a label, so a dashboard can split decisions,
fallbacks and degraded answers by the model that produced them. Label children are cached:
an increment on the hot path is one dict lookup and one `inc()`.
"""

from __future__ import annotations

import bentoml

_counters: dict[str, object] = {}
_children: dict[tuple, object] = {}


def _counter(name: str, doc: str, labels: list[str]):
    if name not in _counters:
        _counters[name] = bentoml.metrics.Counter(name=name, documentation=doc, labelnames=labels)
    return _counters[name]


def _gauge(name: str, doc: str, labels: list[str]):
    if name not in _counters:
        _counters[name] = bentoml.metrics.Gauge(name=name, documentation=doc, labelnames=labels)
    return _counters[name]


FAMILY_DOC = "Models loaded by this server (value 1), by family, MLflow version and run."


def model_loaded(family: str, model_version: str, run_id: str) -> None:
    gauge = _gauge("shopml_model_info", FAMILY_DOC, ["family", "model_version", "run_id"])
    gauge.labels(family=family, model_version=model_version, run_id=run_id).set(1)


def _inc(name: str, doc: str, amount: float = 1.0, **labels: str) -> None:
    key = (name, *labels.values())
    child = _children.get(key)
    if child is None:
        child = _counter(name, doc, list(labels)).labels(**labels)
        _children[key] = child
    child.inc(amount)


def fraud_decision(decision: str, model_version: str, rules_version: str, decided_by: str) -> None:
    """One fraud answer: by decision, model and rules version; and by rule when one decided."""
    _inc(
        "shopml_fraud_decisions_total",
        "Fraud decisions by decision, model version and rules version.",
        decision=decision,
        model_version=model_version,
        rules_version=rules_version,
    )
    if decided_by != "model":
        _inc(
            "shopml_fraud_rule_decisions_total",
            "Fraud decisions set by a rule, by rule, decision and rules version.",
            rule=decided_by.removeprefix("rule:"),
            decision=decision,
            rules_version=rules_version,
        )


RULES_DOC = "Fraud rules in force on this server (value 1; 0 once replaced), by rules version."


def fraud_rules_loaded(rules_version: str, previous: str | None = None) -> None:
    gauge = _gauge("shopml_fraud_rules_info", RULES_DOC, ["rules_version"])
    if previous is not None and previous != rules_version:
        gauge.labels(rules_version=previous).set(0)
    gauge.labels(rules_version=rules_version).set(1)


def fraud_rules_reload(outcome: str, rules_version: str) -> None:
    """A reload: outcome loaded, unchanged or refused (the version in force afterwards)."""
    _inc(
        "shopml_fraud_rules_reloads_total",
        "Fraud rules reloads by outcome (loaded, unchanged, refused) and resulting rules version.",
        outcome=outcome,
        rules_version=rules_version,
    )


def fraud_degraded(reason: str, model_version: str) -> None:
    _inc(
        "shopml_fraud_degraded_total",
        "Fraud answers scored without full online features (e.g. Redis unreachable).",
        reason=reason,
        model_version=model_version,
    )


def fraud_labels(count: int, model_version: str) -> None:
    _inc(
        "shopml_fraud_labels_total",
        "Late fraud labels received.",
        amount=float(count),
        model_version=model_version,
    )


def fraud_retry(model_version: str) -> None:
    _inc(
        "shopml_fraud_retries_total",
        "Retried /score requests answered with the first answer (not recorded again).",
        model_version=model_version,
    )


def fraud_decision_log(outcome: str, count: int, model_version: str) -> None:
    """Served decisions the decision log `written`, `dropped` (queue full, the database
    down too long, or held by a log process that died), `forced` (worked while requests were
    in flight, its backlog past a bound) or had `shadow_scored` (model_version: the shadow's);
    counted off the answer's path, by the background writer."""
    _inc(
        "shopml_fraud_decision_log_total",
        "Fraud decisions written to the decision log, dropped from it, or scored in shadow.",
        amount=float(count),
        outcome=outcome,
        model_version=model_version,
    )


def fraud_decision_log_backlog(rows: int, lag_s: float, model_version: str) -> None:
    """What the decision log process holds, not yet written (it waits for a quiet moment
    between requests), and the age of the oldest of it, as it last reported."""
    for name, doc, value in (
        ("shopml_fraud_decision_log_backlog_rows", "Served decisions the decision log "
         "process holds, not yet written.", rows),
        ("shopml_fraud_decision_log_lag_seconds", "Age of the oldest decision the decision "
         "log process holds, not yet written.", lag_s),
    ):  # fmt: skip
        key = (name, model_version)
        child = _children.get(key)
        if child is None:
            child = _gauge(name, doc, ["model_version"]).labels(model_version=model_version)
            _children[key] = child
        child.set(value)


def fraud_state_reset(outcome: str) -> None:
    """The shared online state store was found empty or replaced (e.g. Redis lost its data):
    outcome `detected`, then `rewarmed` once this worker sees the store warmed again."""
    _inc(
        "shopml_fraud_state_resets_total",
        "Online state store losses detected (outcome detected), and the store warmed again"
        " (rewarmed).",
        outcome=outcome,
    )


def fraud_state_degraded(reason: str | None) -> None:
    """1 while answers are degraded by a state store loss (until re-warmed), else 0."""
    _gauge(
        "shopml_fraud_state_degraded",
        "1 while fraud answers are degraded by a lost online state store (re-warming).",
        [],
    ).set(0 if reason is None else 1)


def recommendation(endpoint: str, source: str, fallback: bool, model_version: str) -> None:
    _inc(
        "shopml_recommendations_total",
        "Recommendation answers by endpoint and the model or fallback that produced them.",
        endpoint=endpoint,
        source=source,
        model_version=model_version,
    )
    if fallback:
        _inc(
            "shopml_recommendation_fallbacks_total",
            "Recommendation answers produced by a fallback (cold customer, fold-in, popularity).",
            source=source,
            model_version=model_version,
        )


def forecast_request(model_version: str) -> None:
    _inc(
        "shopml_forecast_requests_total",
        "Forecast requests answered.",
        model_version=model_version,
    )


_psi_children: dict[tuple, object] = {}
PSI_DOC = (
    "Population stability index of a live column against the model's reference profile (the "
    "worst live worker), by family, column and model version; > 0.2 is a common drift alarm."
)


def live_psi(family: str, column: str, model_version: str, value: float) -> None:
    """Set the PSI gauge of one column of a live profile (serving.live_profile)."""
    key = (family, column, model_version)
    child = _psi_children.get(key)
    if child is None:
        if "shopml_live_psi" not in _counters:
            _counters["shopml_live_psi"] = bentoml.metrics.Gauge(
                name="shopml_live_psi",
                documentation=PSI_DOC,
                labelnames=["family", "column", "model_version"],
                multiprocess_mode="livemax",
            )
        child = _counters["shopml_live_psi"].labels(*key)
        _psi_children[key] = child
    child.set(value)


def feedback_events(outcome: str, count: int) -> None:
    """Feedback events of POST /feedback by outcome: `stored`, `duplicate` (an event_id stored
    before) or `failed` (the store was down: a 503, nothing written)."""
    if count:
        _inc(
            "shopml_feedback_events_total",
            "Recommendation feedback events by outcome (stored, duplicate, failed).",
            amount=float(count),
            outcome=outcome,
        )
