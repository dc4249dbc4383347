"""Run built Bentos locally: start, wait for `/readyz`, stop.

Used by `shopml serve`, the main job, the load benchmark and the end-to-end test. A server binds
to loopback unless told otherwise (`host`, SHOPML_HOST). Each server has its own Prometheus
multiprocess folder, `<SHOPML_HOME>/metrics/<service>-<port>-<pid>` (BentoML would share and wipe
one per BentoML home), so `/metrics` of one reports only its own series; its log appends.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serving.model_store import use_bentoml_home
from serving.services import service as service_spec
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

HOST = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")
# `bentoml serve` with this server's own Prometheus folder (argv[1]); imports nothing of shopml,
# so a Bento's own code is the only shopml code its server loads
LAUNCHER = (
    "import sys\n"
    "from bentoml._internal.configuration.containers import BentoMLContainer\n"
    "BentoMLContainer.prometheus_multiproc_dir.set(sys.argv.pop(1))\n"
    "from bentoml_cli.cli import cli\n"
    "sys.argv[0] = 'bentoml'\n"
    "sys.exit(cli())\n"
)


def free_port() -> int:
    """A free TCP port on loopback, below the kernel's ephemeral range: a port the kernel hands
    out for `bind(0)` can be taken by another starting server's own sockets between this pick
    and the server's bind (seen in CI: 'Address already in use', a non-HTTP answer on /readyz)."""
    lo = _ephemeral_low()
    candidates = list(range(max(1024, lo - 16_384), lo))
    random.SystemRandom().shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """The lowest port of Linux's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bentoml_executable() -> str:
    path = Path(sys.executable).with_name("bentoml")
    return str(path) if path.exists() else "bentoml"


def server_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["BENTOML_HOME"] = str(use_bentoml_home(settings))
    env["SHOPML_HOME"] = str(settings.home)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env["SHOPML_SERVING_PROCESS"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Server:
    """One `bentoml serve` process bound to host:port."""

    service: str
    port: int
    process: subprocess.Popen
    log_path: Path
    metrics_dir: Path | None = None
    host: str = HOST
    started: float = field(default_factory=time.perf_counter)
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        host = HOST if self.host in WILDCARDS else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll `/readyz` until 200; returns seconds from process start. Raises if it dies."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise ShopmlError(
                    f"the {self.service} server stopped during start-up (exit "
                    f"{self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        self.ready_seconds = time.perf_counter() - self.started
                        return self.ready_seconds
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ShopmlError(
            f"the {self.service} server was not ready within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its workers (its own process group only); drop its metrics."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def bento_exists(service: str, settings: Settings) -> bool:
    bento = service_spec(service).bento
    return (Path(use_bentoml_home(settings)) / "bentos" / bento / "latest").exists()


def start(
    service: str,
    port: int | None = None,
    settings: Settings | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    from_source: bool = False,
    host: str | None = None,
) -> Server:
    """Start the built Bento of `service` on `host` (default SHOPML_HOST, loopback); not yet
    ready: call `wait_ready`."""
    spec = service_spec(service)
    settings = settings or load_settings()
    if not from_source and not bento_exists(service, settings):
        raise ShopmlError(
            f"no Bento {spec.bento} in {settings.bentoml_home}: run `shopml build` first"
        )
    host = host or settings.host
    port = port or free_port()
    target = spec.source if from_source else f"{spec.bento}:latest"
    log_dir = Path(log_dir or settings.home / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{service}-{port}.log"
    metrics_dir = settings.home / "metrics" / f"{service}-{port}-{os.getpid()}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", LAUNCHER, str(metrics_dir), "serve", target]
    cmd += ["--host", host, "--port", str(port)]
    extra = {"SHOPML_HOST": host, "SHOPML_METRICS_DIR": str(metrics_dir), **(env or {})}
    with open(log_path, "ab") as log_file:  # appends: a restart keeps the last run's log
        log_file.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd[3:])}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            cmd,
            env=server_env(settings, extra),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(service, port, process, log_path, metrics_dir, host)
