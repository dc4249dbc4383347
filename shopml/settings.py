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
    def registry_uri(self) -> str:
        return self.tracking_uri

    def ensure_dirs(self) -> Settings:
        for path in (self.home, self.artifact_root, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self


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
        fraud_rules=Path(env["SHOPML_FRAUD_RULES"]).expanduser().resolve()
        if env.get("SHOPML_FRAUD_RULES")
        else None,
        rules_token=env.get("SHOPML_RULES_TOKEN") or None,
        state_token=env.get("SHOPML_STATE_TOKEN") or None,
        fraud_retry_ttl_s=_seconds(env, "SHOPML_FRAUD_RETRY_TTL_S", 86400),
        fraud_max_ahead_s=_seconds(env, "SHOPML_FRAUD_MAX_AHEAD_S", 300),
        fraud_max_behind_s=_seconds(env, "SHOPML_FRAUD_MAX_BEHIND_S", None),
    )


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
