"""A real MLflow tracking server for the experiment tests, started once per test session.

Import the fixtures into a test module (`from mlflow_server import mlflow_env, log_run`); the
server process is shared by every module that does (a module-level singleton), listens on a free
loopback port with a SQLite backend under a temporary folder, and stops at the end of the session.
`mlflow_env` points shopml at it and empties the shopml registry and experiments before each test.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

_SERVER: dict = {}
STARTUP_TIMEOUT_S = 120
TEMPLATE_DB = (
    Path(tempfile.gettempdir()) / "shopml-test-mlflow" / f"mlflow-{metadata.version('mlflow')}.db"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop() -> None:
    _SERVER.pop("url", None)
    _SERVER.pop("url_pending", None)
    proc = _SERVER.pop("proc", None)
    if proc is not None:
        # the server forks uvicorn (and possibly job workers) into its own process group:
        # stop the whole group, or the children outlive the test session
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                time.sleep(0.2)
            except subprocess.TimeoutExpired:
                continue
            try:
                os.killpg(proc.pid, 0)  # anything left in the group?
            except ProcessLookupError:
                break
    folder = _SERVER.pop("dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _save_template(db: Path) -> None:
    """Keep a copy of the freshly migrated, still empty database for the next sessions."""
    if TEMPLATE_DB.is_file():
        return
    TEMPLATE_DB.parent.mkdir(parents=True, exist_ok=True)
    tmp = TEMPLATE_DB.with_suffix(f".{os.getpid()}.tmp")
    with sqlite3.connect(db) as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)
    os.replace(tmp, TEMPLATE_DB)


def launch() -> None:
    """Start `mlflow server` on a free loopback port without waiting (it boots in the background)."""
    if "proc" in _SERVER:
        return
    folder = Path(tempfile.mkdtemp(prefix="shopml-mlflow-server-"))
    if (
        TEMPLATE_DB.is_file()
    ):  # skip the schema migrations (~3-15 s) when a session already ran them
        shutil.copyfile(TEMPLATE_DB, folder / "mlflow.db")
    port = _free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - kept open for the process lifetime
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # start_new_session: its own process group, so stopping it never signals the test runner
    # no background job runner: it forks several huey workers the tests never use
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    _SERVER.update(proc=proc, dir=str(folder), url_pending=f"http://127.0.0.1:{port}")
    atexit.register(_stop)


def start_server() -> str:
    """The server's URL once `/health` answers (launching it first if needed)."""
    if "url" in _SERVER:
        return _SERVER["url"]
    launch()
    proc, folder, url = _SERVER["proc"], Path(_SERVER["dir"]), _SERVER["url_pending"]
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "server.log").read_text(errors="replace")[-2000:]
            _stop()
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    _SERVER["url"] = url
                    _save_template(folder / "mlflow.db")
                    return url
        except OSError:
            pass
        time.sleep(0.25)
    _stop()
    raise RuntimeError(f"mlflow server did not answer /health within {STARTUP_TIMEOUT_S} s")


# boot while pytest collects and imports the rest (the server takes several seconds to start)
launch()


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    url = start_server()
    yield url
    _stop()


@pytest.fixture
def mlflow_env(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """shopml pointed at the server, with the shopml registry and experiments emptied."""
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHOPML_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    client = MlflowClient(mlflow_server)
    for model in client.search_registered_models():
        if model.name.startswith("shopml-"):
            client.delete_registered_model(model.name)
    for exp in client.search_experiments():
        if exp.name.startswith("shopml-"):
            for run in client.search_runs([exp.experiment_id], max_results=5000):
                client.delete_run(run.info.run_id)
    return mlflow_server


def tiny_store(variant: int = 0):
    """A two-product store; a different `variant` gives different data (another fingerprint)."""
    from features.store import Store

    products = pd.DataFrame(
        {"product_id": ["p1", "p2"], "category": ["a", "b"], "price": [1.0, 2.0 + variant]}
    )
    return Store(products=products, name=f"tiny{variant}").validated()


def log_run(
    family: str,
    metrics: dict[str, float],
    *,
    data: int = 0,
    name: str | None = None,
    curves: dict[str, tuple[list[float], list[float]]] | None = None,
    config: dict | None = None,
    register: bool = True,
    native_model: bool = False,
) -> str:
    """A run the way the jobs log one: config, data fingerprint, metrics, curves and a model.

    By default the model is a tiny artifact registered directly (a handful of requests, like
    `training.tracking.register_model` does it: tags run_id and data.fingerprint, first version
    becomes champion); `native_model=True` logs it with the real `log_native_model` (slower).
    """
    import mlflow

    from training.tracking import log_curve, log_native_model, register_model, start_run

    store = tiny_store(data)
    config = config or {"seed": 0, "variant": name or "run"}
    with start_run(family, config=config, store=store, run_name=name) as run:
        mlflow.log_metrics(metrics)
        for curve, (x, y) in (curves or {}).items():
            log_curve(curve, x, y)
        if native_model:
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "weights.json").write_text(json.dumps(metrics))
                uri = log_native_model(tmp, family=family, loader="json:loads")
            if register:
                register_model(uri, family=family)
        else:
            mlflow.log_dict(metrics, "model/weights.json")
            if register:
                _register_tiny(family, run.info.run_id, store.fingerprint_id())
        return run.info.run_id


def _register_tiny(family: str, run_id: str, fingerprint: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = f"shopml-{family}"
    with contextlib.suppress(MlflowException):  # exists already
        client.create_registered_model(name)
    mv = client.create_model_version(
        name,
        source=f"runs:/{run_id}/model",
        run_id=run_id,
        tags={"run_id": run_id, "data.fingerprint": fingerprint},
    )
    try:
        client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        client.set_registered_model_alias(name, "champion", mv.version)
    client.set_tag(run_id, "shopml.model_version", mv.version)
    return str(mv.version)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    """Run `shopml ARGS` in-process the way the console script does; returns (exit code, output)."""
    from shopml.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["shopml", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out + captured.err
