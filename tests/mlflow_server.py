"""A real MLflow tracking server for the experiment tests, started once per test session.

Load it from a test module with `pytest_plugins = ["mlflow_server"]`. The server process is one
per session (a module-level singleton), listens on a free loopback port with a SQLite backend under
a temporary folder, and stops at the end of the session. `mlflow_env` points shopml at it and
starts each test without shopml models or experiments. Helpers that log runs the way the
jobs do live in `experiment_runs.py`.
"""

from __future__ import annotations

import atexit
import contextlib
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
        # a throwaway server: kill its whole process group (uvicorn and any workers it forked)
        # at once, without waiting for a graceful shutdown
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
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
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
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
    """shopml pointed at the server, with no shopml registered model or experiment left."""
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
        if exp.name.startswith("shopml-"):  # one request instead of deleting run by run
            client.rename_experiment(exp.experiment_id, f"old-{exp.experiment_id}-{exp.name}")
    return mlflow_server
