"""Where shopml keeps its state, resolved once from the environment into a typed object.

`SHOPML_HOME` (default `~/.shopml`) holds the MLflow SQLite store, MLflow artifacts, generated
data, the BentoML home and the fraud label store (SQLite; `SHOPML_LABELS_URL` names another
database, e.g. PostgreSQL). `MLFLOW_TRACKING_URI` wins over the default tracking store.
`SHOPML_DATASETS` points at the public benchmark data (default `../shared/datasets`
beside the repository root).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shopml.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "experiments" / "configs"  # default job configs, one per family


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    artifact_root: Path
    datasets_dir: Path
    redis_url: str | None = None
    labels_url: str | None = None  # SHOPML_LABELS_URL: the fraud label store (PostgreSQL)
    # SHOPML_FEEDBACK_URL: the recommendation feedback store (PostgreSQL in production)
    feedback_url: str | None = None
    # SHOPML_AB_SHARE: share of customers served the recommender challenger's lists (0: none)
    ab_share: float = 0.0
    ab_salt: str = "shopml-ab"  # SHOPML_AB_SALT: a new salt reshuffles who is in the A/B split
    fraud_rules: Path | None = None  # SHOPML_FRAUD_RULES: the rules file the service loads
    # SHOPML_RULES_TOKEN: bearer token of POST /rules/reload (kept out of any repr or log)
    rules_token: str | None = field(default=None, repr=False)
    # SHOPML_STATE_TOKEN: bearer token of the fraud service's /state operator view (off without)
    state_token: str | None = field(default=None, repr=False)
    # SHOPML_FRAUD_RETRY_TTL_S: how long a /score answer is kept to answer a retry of its id
    fraud_retry_ttl_s: int = 86400
    # SHOPML_FRAUD_MAX_AHEAD_S / _BEHIND_S: a payment's timestamp must lie in [now - behind,
    # now + ahead] of the server clock; behind defaults to the feature set's label delay
    fraud_max_ahead_s: int = 300
    fraud_max_behind_s: int | None = None
    # SHOPML_FRAUD_DECISION_SAMPLE: share of served fraud decisions kept in the decision log
    fraud_decision_sample: float = 1.0
    fraud_shadow: bool = True  # SHOPML_FRAUD_SHADOW: score the Bento's challenger in shadow
    # SHOPML_FRAUD_DECISION_QUIET_MS: the decision log process scores and writes only after
    # this long without a /score in flight (0: at once; unset: DecisionLogConfig's default)
    fraud_decision_quiet_ms: int | None = None
    # serving (serving.endpoints, serving.runner, serving.service_common)
    host: str = "127.0.0.1"  # SHOPML_HOST: where the services bind (beyond loopback: a token)
    # SHOPML_API_TOKEN: bearer token of the endpoints (`auth_routes`); kept out of any repr
    api_token: str | None = field(default=None, repr=False)
    # SHOPML_AUTH_ROUTES: comma-separated routes that need the token (None: every endpoint
    # without its own token when `api_token` is set; /labels always beyond loopback)
    auth_routes: tuple[str, ...] | None = None
    max_body_bytes: int = 64 * 1024  # SHOPML_MAX_BODY_BYTES: larger bodies get a 413
    max_batch_body_bytes: int = 4 << 20  # SHOPML_MAX_BATCH_BODY_BYTES: the same for /labels
    fastpath: bool = True  # SHOPML_FASTPATH: 0 lets BentoML's IO layer serve every route
    workers: int | None = None  # SHOPML_WORKERS: worker processes of each service (default 1)
    fraud_workers: int | None = None  # SHOPML_FRAUD_WORKERS: the same, fraud only
    recommend_workers: int | None = None  # SHOPML_RECOMMEND_WORKERS: the same, storefront only
    fraud_history: Path | None = None  # SHOPML_FRAUD_HISTORY: store folder warming the features
    metrics_dir: Path | None = None  # SHOPML_METRICS_DIR: Prometheus folder of this server
    serving_process: bool = False  # SHOPML_SERVING_PROCESS: set by serving.runner in servers
    build_families: tuple[str, ...] | None = None  # SHOPML_BUILD_FAMILIES: set by shopml build
    log_level: str | None = None  # SHOPML_LOG_LEVEL (CLI: WARNING, servers: INFO)
    progress: bool | None = None  # SHOPML_PROGRESS: 1/0 forces progress bars on/off
    # SHOPML_DASK_SCHEDULER: address of a running Dask scheduler; wins over a job's [compute]
    dask_scheduler: str | None = None

    @property
    def data_dir(self) -> Path:
        """Default folder for generated stores."""
        return self.home / "data"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def label_store_url(self) -> str:
        """SQLAlchemy URL of the fraud label store: `labels_url`, else a SQLite file in home."""
        return self.labels_url or f"sqlite:///{self.home / 'fraud' / 'labels.db'}"

    @property
    def feedback_store_url(self) -> str:
        """SQLAlchemy URL of the feedback store: `feedback_url`, else a SQLite file in home."""
        return self.feedback_url or f"sqlite:///{self.home / 'feedback' / 'feedback.db'}"

    @property
    def registry_uri(self) -> str:
        return self.tracking_uri

    @property
    def loopback(self) -> bool:
        """True when the services bind to this machine only."""
        return is_loopback(self.host)

    def ensure_dirs(self) -> Settings:
        for path in (self.home, self.artifact_root, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self


# every field read from the environment -> its variable (README "Configuration" lists them all;
# tests/test_serving.py checks both against this map and the tree)
VARIABLES = {
    "home": "SHOPML_HOME",
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "datasets_dir": "SHOPML_DATASETS",
    "redis_url": "SHOPML_REDIS_URL",
    "labels_url": "SHOPML_LABELS_URL",
    "feedback_url": "SHOPML_FEEDBACK_URL",
    "ab_share": "SHOPML_AB_SHARE",
    "ab_salt": "SHOPML_AB_SALT",
    "fraud_rules": "SHOPML_FRAUD_RULES",
    "rules_token": "SHOPML_RULES_TOKEN",
    "state_token": "SHOPML_STATE_TOKEN",
    "fraud_retry_ttl_s": "SHOPML_FRAUD_RETRY_TTL_S",
    "fraud_max_ahead_s": "SHOPML_FRAUD_MAX_AHEAD_S",
    "fraud_max_behind_s": "SHOPML_FRAUD_MAX_BEHIND_S",
    "fraud_decision_sample": "SHOPML_FRAUD_DECISION_SAMPLE",
    "fraud_shadow": "SHOPML_FRAUD_SHADOW",
    "fraud_decision_quiet_ms": "SHOPML_FRAUD_DECISION_QUIET_MS",
    "host": "SHOPML_HOST",
    "api_token": "SHOPML_API_TOKEN",
    "auth_routes": "SHOPML_AUTH_ROUTES",
    "max_body_bytes": "SHOPML_MAX_BODY_BYTES",
    "max_batch_body_bytes": "SHOPML_MAX_BATCH_BODY_BYTES",
    "fastpath": "SHOPML_FASTPATH",
    "workers": "SHOPML_WORKERS",
    "fraud_workers": "SHOPML_FRAUD_WORKERS",
    "recommend_workers": "SHOPML_RECOMMEND_WORKERS",
    "fraud_history": "SHOPML_FRAUD_HISTORY",
    "metrics_dir": "SHOPML_METRICS_DIR",
    "serving_process": "SHOPML_SERVING_PROCESS",
    "build_families": "SHOPML_BUILD_FAMILIES",
    "log_level": "SHOPML_LOG_LEVEL",
    "progress": "SHOPML_PROGRESS",
    "dask_scheduler": "SHOPML_DASK_SCHEDULER",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """True for an address of this machine only (127.x, ::1, localhost)."""
    return host in LOOPBACK or host.startswith("127.") or host.startswith("::ffff:127.")


def default_datasets_dir() -> Path:
    """`../shared/datasets` seen from the repository root, or from the working directory."""
    for base in (REPO_ROOT, Path.cwd()):
        candidate = (base / ".." / "shared" / "datasets").resolve()
        if candidate.is_dir():
            return candidate
    return (REPO_ROOT / ".." / "shared" / "datasets").resolve()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (or the mapping given, for tests)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("SHOPML_HOME") or Path.home() / ".shopml").expanduser().resolve()
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    datasets = env.get("SHOPML_DATASETS")
    datasets_dir = Path(datasets).expanduser().resolve() if datasets else default_datasets_dir()
    return Settings(
        home=home,
        tracking_uri=tracking_uri,
        artifact_root=home / "mlartifacts",
        datasets_dir=datasets_dir,
        redis_url=env.get("SHOPML_REDIS_URL") or None,
        labels_url=env.get("SHOPML_LABELS_URL") or None,
        feedback_url=env.get("SHOPML_FEEDBACK_URL") or None,
        ab_share=_share(env, "SHOPML_AB_SHARE"),
        ab_salt=_text(env, "SHOPML_AB_SALT") or "shopml-ab",
        fraud_rules=Path(env["SHOPML_FRAUD_RULES"]).expanduser().resolve()
        if env.get("SHOPML_FRAUD_RULES")
        else None,
        rules_token=env.get("SHOPML_RULES_TOKEN") or None,
        state_token=env.get("SHOPML_STATE_TOKEN") or None,
        fraud_retry_ttl_s=_seconds(env, "SHOPML_FRAUD_RETRY_TTL_S", 86400),
        fraud_max_ahead_s=_seconds(env, "SHOPML_FRAUD_MAX_AHEAD_S", 300),
        fraud_max_behind_s=_seconds(env, "SHOPML_FRAUD_MAX_BEHIND_S", None),
        fraud_decision_sample=_fraction(env, "SHOPML_FRAUD_DECISION_SAMPLE", 1.0),
        fraud_shadow=_flag(env, "SHOPML_FRAUD_SHADOW", True),
        fraud_decision_quiet_ms=_count(env, "SHOPML_FRAUD_DECISION_QUIET_MS", None, minimum=0),
        **_serving_settings(env),
    )


def _serving_settings(env: dict[str, str]) -> dict:
    """The serving fields of `Settings` from the environment (ConfigError naming a bad one)."""
    routes = _text(env, "SHOPML_AUTH_ROUTES")
    families = env.get("SHOPML_BUILD_FAMILIES")
    return {
        "host": _text(env, "SHOPML_HOST") or "127.0.0.1",
        "api_token": _text(env, "SHOPML_API_TOKEN"),
        "auth_routes": None if routes is None else _routes(routes),
        "max_body_bytes": _count(env, "SHOPML_MAX_BODY_BYTES", 64 * 1024),
        "max_batch_body_bytes": _count(env, "SHOPML_MAX_BATCH_BODY_BYTES", 4 << 20),
        "fastpath": _flag(env, "SHOPML_FASTPATH", True),
        "workers": _count(env, "SHOPML_WORKERS", None, minimum=1),
        "fraud_workers": _count(env, "SHOPML_FRAUD_WORKERS", None, minimum=1),
        "recommend_workers": _count(env, "SHOPML_RECOMMEND_WORKERS", None, minimum=1),
        "fraud_history": _path(env, "SHOPML_FRAUD_HISTORY"),
        "metrics_dir": _path(env, "SHOPML_METRICS_DIR"),
        "serving_process": _flag(env, "SHOPML_SERVING_PROCESS", False),
        "build_families": None if families is None else tuple(_split(families)),
        "log_level": (_text(env, "SHOPML_LOG_LEVEL") or "").upper() or None,
        "progress": _flag(env, "SHOPML_PROGRESS", None),
        "dask_scheduler": _text(env, "SHOPML_DASK_SCHEDULER"),
    }


def _text(env: dict[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip()
    return value or None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _routes(text: str) -> tuple[str, ...]:
    routes = tuple(_split(text))
    bad = [r for r in routes if not r.startswith("/")]
    if bad:
        raise ConfigError(f"SHOPML_AUTH_ROUTES: routes start with '/', got {bad}")
    return routes


def _path(env: dict[str, str], name: str) -> Path | None:
    value = _text(env, name)
    return Path(value).expanduser().resolve() if value else None


def _flag(env: dict[str, str], name: str, default: bool | None) -> bool | None:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected 1/0 (true/false), got {raw!r}")


def _count(env: dict[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    """A whole number >= `minimum` from `env[name]`, else a ConfigError naming it."""
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}: must be a whole number >= {minimum}, got {raw!r}")
    return value


def _share(env: dict[str, str], name: str) -> float:
    """A fraction in [0, 1] from `env[name]` (default 0), else a ConfigError naming it."""
    raw = _text(env, name)
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: must be a fraction between 0 and 1, got {raw!r}")
    return value


def _fraction(env: dict[str, str], name: str, default: float) -> float:
    """A number in [0, 1] from `env[name]`, else a ConfigError naming it."""
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: must be a number between 0 and 1, got {raw!r}")
    return value


def _seconds(env: dict[str, str], name: str, default: int | None) -> int | None:
    """A whole number of seconds >= 0 from `env[name]`, else a ConfigError naming it."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}: must be a whole number of seconds >= 0, got {raw!r}")
    return value
