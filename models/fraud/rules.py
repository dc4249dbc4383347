"""Rules on top of the model that change without retraining: block lists (card, customer,
terminal), amount limits per currency and review rules on the payment's features.

They come from a TOML rules file (see experiments/configs/fraud_rules.toml), validated with
errors naming the field, and are versioned by content: `rules_version` is the file's declared
`version` (if any) and a hash of the validated rules, so a reformatted file keeps its version
and any changed rule gets a new one. A rule that hits sets the decision when it is at least as
strict as the model's, and the decision then names the rule (`decided_by = "rule:<name>"`).
"""

from __future__ import annotations

import hashlib
import json
import operator
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from features.contract import CURRENCIES
from models.fraud.policy import DECLINE, REVIEW, severity
from models.fraud.reasons import RULE, Reason
from shopml.config import ConfigModel, parse_config
from shopml.errors import ConfigError

MODEL_DECIDED = "model"
PROBABILITY = "probability"  # a review rule may test the calibrated probability too
BUILT_IN = ("blocked_card", "blocked_customer", "blocked_terminal", "amount_decline")
BUILT_IN += ("amount_review",)
Currency = Literal[CURRENCIES]  # type: ignore[valid-type]
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_OPS |= {"==": operator.eq, "!=": operator.ne}


class BlockLists(ConfigModel):
    """Ids whose payments are always declined."""

    cards: list[str] = Field(default_factory=list)
    customers: list[str] = Field(default_factory=list)
    terminals: list[str] = Field(default_factory=list)

    @field_validator("cards", "customers", "terminals")
    @classmethod
    def _ids(cls, ids: list[str]) -> list[str]:
        if any(not i.strip() for i in ids):
            raise ValueError("ids must not be empty")
        return sorted(set(ids))


class AmountLimit(ConfigModel):
    """Above `review` a payment is at least reviewed; above `decline` it is declined."""

    review: float | None = Field(None, gt=0, allow_inf_nan=False)
    decline: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _order(self) -> AmountLimit:
        if self.review is not None and self.decline is not None and self.review > self.decline:
            raise ValueError(f"review limit {self.review} is above decline limit {self.decline}")
        return self


class Condition(ConfigModel):
    feature: str = Field(min_length=1, description="a feature name, or 'probability'")
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float = Field(allow_inf_nan=False)


class ReviewRule(ConfigModel):
    """When every condition holds, at least `action` (review or decline), said with `text`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    text: str = Field(min_length=3, max_length=300, description="the sentence a reviewer reads")
    action: Literal["review", "decline"] = REVIEW
    when: list[Condition] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _not_built_in(cls, name: str) -> str:
        if name in BUILT_IN:
            raise ValueError(f"'{name}' is a built-in rule name")
        return name


class RulesSpec(ConfigModel):
    """The rules file: optional declared version, block lists, limits and review rules."""

    version: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    block: BlockLists = Field(default_factory=BlockLists)
    amount_limits: dict[Currency, AmountLimit] = Field(default_factory=dict)
    review: list[ReviewRule] = Field(default_factory=list)

    @field_validator("review")
    @classmethod
    def _unique(cls, rules: list[ReviewRule]) -> list[ReviewRule]:
        names = [r.name for r in rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(twice)}")
        return rules


@dataclass(frozen=True)
class RuleHit:
    name: str
    action: str
    reason: Reason


@dataclass(frozen=True)
class _Compiled:
    """A review rule bound to feature positions (-1: the probability)."""

    rule: ReviewRule
    tests: tuple[tuple[int, object, float], ...]


@dataclass(frozen=True)
class RuleSet:
    """Validated rules with their version; `bind(feature_names)` before `check`."""

    spec: RulesSpec = field(default_factory=RulesSpec)
    source: str | None = None
    _compiled: tuple[_Compiled, ...] | None = None
    _sets: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)
    _version: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        block = self.spec.block
        sets = {w: frozenset(getattr(block, f"{w}s")) for w in ("card", "customer", "terminal")}
        object.__setattr__(self, "_sets", sets)
        object.__setattr__(self, "_version", self._content_version())

    # ---------------------------------------------------------------- reading
    @classmethod
    def parse(cls, data: dict, source: str = "rules") -> RuleSet:
        """Rules from a mapping; ConfigError naming each bad field (`source: field: why`)."""
        return cls(parse_config(data, RulesSpec, source), source)

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        """Rules from a TOML file; ConfigError naming the file and the bad field."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"rules file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        return cls.parse(data, str(path))

    def bind(self, feature_names: Sequence[str]) -> RuleSet:
        """These rules with each condition bound to its feature's position in `feature_names`;
        ConfigError naming the condition whose feature is unknown."""
        names = list(feature_names)
        compiled = []
        for i, rule in enumerate(self.spec.review):
            tests = []
            for j, cond in enumerate(rule.when):
                if cond.feature != PROBABILITY and cond.feature not in names:
                    raise ConfigError(
                        f"{self.source or 'rules'}: review.{i}.when.{j}.feature: unknown feature"
                        f" '{cond.feature}' (rule '{rule.name}'); use 'probability' or a feature"
                        " of the model's feature set"
                    )
                at = -1 if cond.feature == PROBABILITY else names.index(cond.feature)
                tests.append((at, _OPS[cond.op], cond.value))
            compiled.append(_Compiled(rule, tuple(tests)))
        return replace(self, _compiled=tuple(compiled))

    # ---------------------------------------------------------------- identity
    def content(self) -> str:
        """The validated rules as canonical JSON (what the version hashes)."""
        return json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)

    @property
    def version(self) -> str:
        """`<declared version or 'rules'>@<12 hex of the content hash>`; 'none' without rules."""
        return self._version

    def _content_version(self) -> str:
        digest = hashlib.sha256(self.content().encode()).hexdigest()[:12]
        if self.spec.version is None and self.spec == RulesSpec():
            return "none"
        return f"{self.spec.version or 'rules'}@{digest}"

    def to_dict(self) -> dict:
        return {"version": self.version, "source": self.source, "spec": json.loads(self.content())}

    @classmethod
    def from_dict(cls, d: dict) -> RuleSet:
        """Back from `to_dict`; also reads the rule layer saved by older engines
        (blocked_cards..., max_amount, review_amount for any currency)."""
        if "spec" in d:
            return cls.parse(d["spec"], d.get("source") or "rules")
        limit = {"review": d.get("review_amount"), "decline": d.get("max_amount")}
        limits = {c: limit for c in CURRENCIES} if any(limit.values()) else {}
        block = {k: d.get(f"blocked_{k}", []) for k in ("cards", "customers", "terminals")}
        return cls.parse({"block": block, "amount_limits": limits}, "saved rule layer")

    # ---------------------------------------------------------------- checking
    def check(
        self,
        customer: str,
        card: str,
        terminal: str,
        amount: float,
        currency: str,
        x: np.ndarray,
        p: float,
    ) -> list[RuleHit]:
        """The rules this payment hits, in file order (block lists, amount limits, review)."""
        block, hits = self.spec.block, []
        for name, ids, key, what in (
            ("blocked_card", block.cards, card, "card"),
            ("blocked_customer", block.customers, customer, "customer"),
            ("blocked_terminal", block.terminals, terminal, "terminal"),
        ):
            if ids and key in self._sets[what]:
                text = f"The {what} is on the block list."
                hits.append(RuleHit(name, DECLINE, _reason(name, text, f"{what}_id")))
        limit = self.spec.amount_limits.get(currency)
        if limit is not None:
            hit = _amount_hit(limit, amount, currency)
            if hit is not None:
                hits.append(hit)
        for c in self._rules():
            if all(op(p if at < 0 else x[at], value) for at, op, value in c.tests):
                at = c.tests[0][0]
                feature = c.rule.when[0].feature
                value = float(p if at < 0 else x[at])
                reason = _reason(c.rule.name, c.rule.text, feature, value)
                hits.append(RuleHit(c.rule.name, c.rule.action, reason))
        return hits

    def _rules(self) -> tuple[_Compiled, ...]:
        if self._compiled is None:
            if self.spec.review:
                raise ConfigError("RuleSet.bind(feature_names) must come before check")
            return ()
        return self._compiled

    def decide(self, model_decision: str, hits: list[RuleHit]) -> tuple[str, RuleHit | None]:
        """The final decision and the rule that set it (None: the model's decision stands).

        The strictest hit wins, the first in file order among equals, and a rule as strict as
        the model's decision takes it over (the rule is the stated reason)."""
        decision, by = model_decision, None
        for hit in hits:
            if severity(hit.action) > severity(decision) or (
                by is None and severity(hit.action) == severity(decision)
            ):
                decision, by = hit.action, hit
        return decision, by

    def apply_many(
        self,
        decisions: np.ndarray,
        p: np.ndarray,
        X: np.ndarray,
        payments: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised `check` + `decide` over many payments: (decisions, decided_by) arrays.

        `payments` holds customer_id, card_id, terminal_id, amount and currency arrays; X the
        feature columns in the bound order and p the probabilities."""
        out = np.asarray(decisions, dtype=object).copy()
        by = np.full(len(out), MODEL_DECIDED, dtype=object)
        sev = np.array([severity(d) for d in out], dtype="int8")
        for name, action, mask in self._masks(np.asarray(p), np.asarray(X), payments):
            s = severity(action)
            take = mask & ((s > sev) | ((s == sev) & (by == MODEL_DECIDED)))
            out[take], by[take], sev[take] = action, f"rule:{name}", s
        return out, by

    def _masks(self, p: np.ndarray, X: np.ndarray, payments: dict[str, np.ndarray]):
        """(rule name, action, hit mask) of every rule, in `check` order."""
        for name, what in (
            ("blocked_card", "card"),
            ("blocked_customer", "customer"),
            ("blocked_terminal", "terminal"),
        ):
            ids = getattr(self.spec.block, f"{what}s")
            if ids:
                yield name, DECLINE, np.isin(payments[f"{what}_id"].astype(str), ids)
        amount, currency = payments["amount"], payments["currency"].astype(str)
        for cur, limit in self.spec.amount_limits.items():
            here = currency == cur
            declined = here & (amount > limit.decline) if limit.decline else np.zeros_like(here)
            if limit.decline:
                yield "amount_decline", DECLINE, declined
            if limit.review:
                yield "amount_review", REVIEW, here & (amount > limit.review) & ~declined
        for c in self._rules():
            mask = np.ones(len(p), dtype=bool)
            for at, op, value in c.tests:
                mask &= op(p if at < 0 else X[:, at], value)
            yield c.rule.name, c.rule.action, mask


def _reason(name: str, text: str, feature: str | None, value: float | None = None) -> Reason:
    return Reason(f"rule:{name}", text, RULE, feature, value)


def _amount_hit(limit: AmountLimit, amount: float, currency: str) -> RuleHit | None:
    """The amount rule a payment hits: decline above `decline`, else review above `review`."""
    for name, action, cap in (
        ("amount_decline", DECLINE, limit.decline),
        ("amount_review", REVIEW, limit.review),
    ):
        if cap is not None and amount > cap:
            text = f"The amount {amount:,.2f} {currency} is above the {action} limit of"
            text += f" {cap:,.2f} {currency}."
            return RuleHit(name, action, _reason(name, text, "amount", amount))
    return None
