"""The production setup agrees with the code, and training registers on a real tracking server.

`deploy/compose.yaml` and `deploy/k8s/*.yaml` are parsed: each service runs its Bento's image on
its port with readiness on /readyz and liveness on /livez, every shopml variable they set is one
the settings read, Redis persists and MLflow runs on PostgreSQL. Then a fraud model is trained
and registered against `mlflow server` on a PostgreSQL the test starts, and the README's client
example runs as written against a running service.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from test_loaders import _free_port, postgres_url  # noqa: F401 - the PostgreSQL fixture

from serving.services import SERVICES
from shopml.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# variables the containers set that are not shopml settings: BentoML's CLI and BLAS
NOT_SETTINGS = {"BENTOML_HOST", "BENTOML_PORT", "OPENBLAS_NUM_THREADS"}


def _k8s() -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, from every file in deploy/k8s."""
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _is_a_setting(name: str, value: str) -> bool:
    """True when the settings change with `name` set (a variable they do not read changes none)."""
    return load_settings({name: value}) != load_settings({})


def test_each_kubernetes_service_runs_its_bento_on_its_port_with_probes():
    manifests = _k8s()
    for name, spec in SERVICES.items():
        deployment = manifests[("Deployment", name)]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        image = container["image"].rsplit("/", 1)[-1]
        assert image.split(":")[0] == spec.bento, image
        (port,) = container["ports"]
        assert port["containerPort"] == spec.port
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["BENTOML_PORT"] == str(spec.port) and env["BENTOML_HOST"] == "0.0.0.0"
        # beyond loopback the settings must know it, and the endpoints take a bearer token
        assert not load_settings({"SHOPML_HOST": env["SHOPML_HOST"]}).loopback
        assert "SHOPML_API_TOKEN" in env
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        service = manifests[("Service", name)]
        assert service["spec"]["ports"][0]["port"] == spec.port
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        hpa = manifests[("HorizontalPodAutoscaler", name)]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_kubernetes_environment_names_only_settings_and_reaches_redis_and_mlflow():
    manifests = _k8s()
    secret = manifests[("Secret", "shopml-secrets")]["stringData"]
    for name in SERVICES:
        (container,) = manifests[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        for var in container["env"]:
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            value = secret[ref["key"]] if ref else var["value"]
            if ref:
                assert ref["name"] == "shopml-secrets"
            assert var["name"] in NOT_SETTINGS or _is_a_setting(var["name"], value), var["name"]
    fraud_env = manifests[("Deployment", "fraud")]["spec"]["template"]["spec"]["containers"][0]
    redis_url = {e["name"]: e.get("value") for e in fraud_env["env"]}["SHOPML_REDIS_URL"]
    assert load_settings({"SHOPML_REDIS_URL": redis_url}).redis_url == "redis://redis:6379/0"
    assert manifests[("Service", "redis")]["spec"]["ports"][0]["port"] == 6379
    assert manifests[("Service", "mlflow")]["spec"]["ports"][0]["port"] == 5000
    redis = manifests[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]
    assert redis["args"][:2] == ["--appendonly", "yes"]
    assert secret["mlflow-db-url"].startswith("postgresql+psycopg://")


def test_compose_runs_mlflow_on_postgresql_redis_with_aof_and_both_services():
    services = _compose()["services"]
    assert "--backend-store-uri postgresql+psycopg://" in " ".join(services["mlflow"]["command"])
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )
    for name, spec in SERVICES.items():
        service = services[name]
        assert re.fullmatch(rf"\$\{{SHOPML_IMAGE_PREFIX:-\}}{spec.bento}:.*", service["image"])
        assert service["ports"] == [f"{spec.port}:{spec.port}"]
        assert f"http://127.0.0.1:{spec.port}/readyz" in " ".join(service["healthcheck"]["test"])
        for var, value in service["environment"].items():
            value = re.sub(r"\$\{[^}]*\}", "x", str(value))
            assert var in NOT_SETTINGS or _is_a_setting(var, value), var
        assert service["environment"]["BENTOML_PORT"] == str(spec.port)
        assert service["environment"]["SHOPML_HOST"] == "0.0.0.0"
        assert "SHOPML_API_TOKEN" in service["environment"]


# ------------------------------------------------------------ MLflow on a real PostgreSQL
@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, folder: Path, timeout: float = 120):
    """`mlflow server` on `backend_store_uri`, artifacts proxied from `folder`; yields its URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri]
    cmd += ["--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=1) as resp,
            ):
                if resp.status == 200:
                    break
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def tracking_on_postgres(postgres_url, tmp_path, monkeypatch):  # noqa: F811
    """A tracking server on its own PostgreSQL database; yields (server URL, database URL)."""
    import mlflow

    database = f"mlflow_{os.getpid()}_{int(time.time())}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    admin.dispose()
    db_url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
    with mlflow_server(db_url, tmp_path) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("SHOPML_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
        yield url, db_url
    mlflow.set_tracking_uri(None)


def test_training_registers_on_a_tracking_server_backed_by_postgresql(tracking_on_postgres):
    import mlflow
    import serving_models

    from features.generator import GeneratorConfig, generate
    from registry.store import champion_version, fetch

    url, db_url = tracking_on_postgres
    result = serving_models.train_fraud(generate(GeneratorConfig(scale="tiny", seed=0)))
    assert result.model_version == "1" and champion_version("fraud") == "1"
    assert mlflow.get_tracking_uri() == url
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM registered_models")).scalars().all()
        aliases = conn.execute(sa.text("SELECT alias FROM registered_model_aliases")).scalars()
        assert "shopml-fraud" in names and "champion" in list(aliases)
    engine.dispose()
    champion = fetch("fraud")  # the artifacts come back through the server
    assert champion.version == "1" and champion.load() is not None
    info = mlflow.models.get_model_info("models:/shopml-fraud@champion")
    assert info.signature is not None and info.saved_input_example_info is not None
