"""Fraud scoring: LightGBM scorer with calibration and reasons, a logistic baseline, decision
policy, rules (block lists, amount limits, review rules) and the one-call `FraudEngine` used at
checkout; `FRAUD_SCORERS` is the table of scorer kinds."""

from models.fraud.baseline import LogisticBaseline
from models.fraud.calibration import Calibrator
from models.fraud.engine import (
    FraudDecision,
    FraudEngine,
    LabelReport,
    ingest_labels,
    validate_payment,
)
from models.fraud.kinds import FRAUD_SCORERS
from models.fraud.policy import DecisionPolicy
from models.fraud.reasons import Reason, describe
from models.fraud.rules import RuleSet
from models.fraud.scorer import FraudScorer

__all__ = [
    "FRAUD_SCORERS",
    "Calibrator",
    "DecisionPolicy",
    "FraudDecision",
    "FraudEngine",
    "FraudScorer",
    "LabelReport",
    "LogisticBaseline",
    "Reason",
    "RuleSet",
    "describe",
    "ingest_labels",
    "validate_payment",
]
