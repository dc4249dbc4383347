"""The fraud rules in force in one server, changed without a restart (no BentoML in here).

At start the service loads `SHOPML_FRAUD_RULES` (without it: the rules saved with the model).
`POST /rules/reload` (bearer token `SHOPML_RULES_TOKEN`; refused with 403 when no token is
configured, 401 without the right one) or SIGHUP reads the file again: a file that does not
validate is refused with the field named and the old rules keep deciding. Each version that
decides is first recorded in the rules history (`features/fraud/rules_store.py`). Each worker
process (`_bentoml_impl.worker.service`) reloads on its own: with several, send SIGHUP to each
(SIGHUP to the `bentoml serve` parent restarts the workers instead).
"""

from __future__ import annotations

import hmac
import signal
import threading
from pathlib import Path

from features.fraud.rules_store import RulesStore, RulesStoreError
from models.fraud import FraudEngine, RuleSet
from serving import metrics
from serving.endpoints import Forbidden, Unauthorized, Unavailable
from shopml.errors import ConfigError, ShopmlError
from shopml.log import get_logger

log = get_logger("serving.fraud")


class RulesControl:
    """Loads, reloads and records the rules of `engine` from `path`; guards the reload."""

    def __init__(
        self,
        engine: FraudEngine,
        path: Path | None,
        token: str | None,
        history: RulesStore | None,
    ) -> None:
        self.engine, self.path, self.history = engine, path, history
        self._token = token.encode() if token else None
        self._lock = threading.Lock()
        rules = engine.rules if path is None else RuleSet.load(path)
        self._record(rules)
        engine.set_rules(rules)
        metrics.fraud_rules_loaded(engine.rules.version)
        log.info("fraud rules loaded", extra={"rules_version": engine.rules.version})

    @property
    def version(self) -> str:
        return self.engine.rules.version

    def authorize(self, headers: dict[str, str]) -> None:
        """Forbidden when reloads are off (no token), Unauthorized without the right token."""
        if self._token is None:
            raise Forbidden("rules reload is disabled on this server: set SHOPML_RULES_TOKEN")
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            raise Unauthorized("rules reload needs the header 'Authorization: Bearer <token>'")

    def reload(self) -> dict:
        """Read the rules file again and put its rules in force; ConfigError (the old rules
        stay) when it does not validate."""
        if self.path is None:
            raise ShopmlError(
                "this server was started without a rules file (SHOPML_FRAUD_RULES): it decides "
                "with the rules saved with the model and has nothing to reload"
            )
        with self._lock:
            previous = self.version
            try:
                rules = RuleSet.load(self.path).bind(self.engine.feature_set.names)
                self._record(rules)
            except (ConfigError, Unavailable) as err:
                metrics.fraud_rules_reload("refused", previous)
                # the detail (which may quote ids) goes to the caller, not to the log
                log.warning(
                    "fraud rules reload refused; the old rules stay",
                    extra={"error_type": type(err).__name__, "rules_version": previous},
                )
                raise
            self.engine.set_rules(rules)
            changed = rules.version != previous
            metrics.fraud_rules_loaded(rules.version, previous)
            metrics.fraud_rules_reload("loaded" if changed else "unchanged", rules.version)
            log.info("fraud rules reloaded", extra={"rules_version": rules.version})
        return {
            "rules_version": rules.version,
            "previous_version": previous,
            "changed": changed,
            "source": str(self.path),
        }

    def _record(self, rules: RuleSet) -> None:
        """Keep the version in the rules history before it decides (503 if unreachable)."""
        if self.history is None:
            return
        try:
            self.history.record(rules.version, rules.content(), rules.source)
        except RulesStoreError as err:
            raise Unavailable(f"{err}; the rules in force stay") from None

    def on_sighup(self) -> bool:
        """Reload on SIGHUP (in a thread: the handler may interrupt a reload in progress);
        False where signals cannot be set (not the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("fraud rules: SIGHUP reload unavailable outside the main thread")
            return False
        signal.signal(
            signal.SIGHUP, lambda *_: threading.Thread(target=self.reload_quietly).start()
        )
        return True

    def reload_quietly(self) -> None:
        """`reload`, with a refusal logged instead of raised (the old rules stay)."""
        try:
            self.reload()
        except ShopmlError as err:
            log.warning("fraud rules not reloaded", extra={"error_type": type(err).__name__})
