"""Structured JSON logs on stderr, with personal data masked before anything is written.

Card-number-like digit runs (13-19 digits, spaces or dashes allowed) and e-mail addresses are
replaced by `[redacted]` in every message and field, so a careless log call cannot leak them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_RESERVED = set(vars(logging.makeLogRecord({})))


def redact(text: str) -> str:
    """Mask e-mail addresses and card-number-like digit runs."""
    return _CARD.sub("[redacted]", _EMAIL.sub("[redacted]", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO") -> None:
    """Send shopml's logs as JSON lines to stderr (idempotent)."""
    root = logging.getLogger("shopml")
    if any(getattr(h, "_shopml", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._shopml = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"shopml.{name}")
