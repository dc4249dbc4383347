"""What both services share: BentoML service options, model references, logs.

Logs: BentoML's access log is off (it records client addresses) and its exception log is
filtered so that a refused request never writes the request body (payments carry customer and
card ids) into the server log: client errors become one line naming the fields.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bentoml
import yaml
from pydantic import ValidationError

from serving.model_store import challenger_tag, model_tag
from shopml.log import redact, setup_logging
from shopml.settings import VARIABLES, load_settings

SETTINGS = load_settings()
if SETTINGS.serving_process:  # not when `shopml build` imports us
    setup_logging(SETTINGS.log_level or "INFO")


def service_config(workers_env: str, default_workers: int = 1) -> dict:
    """Options of `@bentoml.service`: workers from the settings (`workers_env`, e.g.
    SHOPML_FRAUD_WORKERS, else SHOPML_WORKERS), one thread, no access log, and the address
    plain `bentoml serve` binds to (SHOPML_HOST, loopback by default)."""
    field = {env: name for name, env in VARIABLES.items()}[workers_env]
    workers = getattr(SETTINGS, field) or SETTINGS.workers or default_workers
    return {
        "workers": workers,
        "threads": 1,
        "traffic": {"timeout": 10},
        "http": {"host": SETTINGS.host},
        "logging": {"access": {"enabled": False}},
        "metrics": {"enabled": True, "namespace": "bentoml_service"},
    }


def bento_model_tags() -> dict[str, str] | None:
    """Model name -> exact tag recorded in the Bento this code is served from (None: not a Bento).

    BentoML resolves a `BentoModel("name:latest")` against the store at start-up; pinning the
    tags the Bento was built with keeps a Bento serving exactly the models it was built with.
    """
    manifest = Path(__file__).resolve().parents[2] / "bento.yaml"
    if not manifest.is_file():
        return None
    info = yaml.safe_load(manifest.read_text()) or {}
    tags = {}
    for svc in info.get("services") or []:
        for model in svc.get("models") or []:
            tag = str(model["tag"])
            tags[tag.split(":")[0]] = tag
    return tags


def optional_model(family: str, alias: str | None = None):
    """A `BentoModel` reference to the family's model, or None when there is none to serve.

    In a built Bento: the exact model it was built with. At build time: the newest imported
    model, unless `shopml build` skipped the family (`SHOPML_BUILD_FAMILIES`). A missing model
    must not make BentoML try to download it (it would look for a cloud); the service then
    stops start-up with a message naming the command to run. `alias="challenger"`: the
    family's challenger (`challenger_model`).
    """
    wanted = model_tag(family) if alias is None else challenger_tag(family)
    pinned = bento_model_tags()
    if pinned is not None:
        tag = pinned.get(wanted.split(":")[0])
        return bentoml.models.BentoModel(tag) if tag else None
    allowed = load_settings().build_families  # read again: `shopml build` sets it per build
    if allowed is not None and (family if alias is None else f"{family}@{alias}") not in allowed:
        return None
    if alias is not None and allowed is None:  # only a build says which challenger is current
        return None
    try:
        stored = bentoml.models.get(wanted)
    except bentoml.exceptions.NotFound:
        return None
    return bentoml.models.BentoModel(str(stored.tag))


def challenger_model(family: str):
    """A `BentoModel` reference to the family's `challenger` when the Bento carries one (for a
    shadow or an A/B split; load it with `serving.model_store.load_challenger`), else None."""
    return optional_model(family, alias="challenger")


def logged_fields(exc: ValidationError) -> str:
    """The bad fields of a refused request as a log may show them: declared fields by name,
    unknown ones only counted (a client's stray key could be a card number or an e-mail)."""
    errors = exc.errors(include_input=False, include_url=False)
    unknown = sum(e["type"] == "extra_forbidden" for e in errors)
    fields = sorted(
        {".".join(str(p) for p in e["loc"]) for e in errors if e["type"] != "extra_forbidden"}
    )
    return f"invalid request fields {fields}" + (f", {unknown} unknown field(s)" if unknown else "")


class _NoPayloadInLogs(logging.Filter):
    """Turn BentoML's traceback of a refused request into one redacted line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if isinstance(exc, ValidationError):
            record.msg = f"{record.getMessage()}: {logged_fields(exc)}"
        elif isinstance(exc, bentoml.exceptions.BentoMLException) and exc.error_code < 500:
            record.msg = f"{record.getMessage()}: {redact(str(exc))}"
        else:
            return True
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoPayloadInLogs())
