"""The artifacts run outside this checkout: a built Bento and a registered MLflow model.

One module-scoped pipeline: train the three families on tiny generated data, `shopml build`,
`bentoml export` both Bentos into a folder outside the repository, and create one fresh
virtual environment from the Bento's own `env/python/requirements.txt` (no shopml installed,
nothing from the repository). The copied Bentos are imported into a new BentoML home and
served from there (cwd outside the repo, no PYTHONPATH); they must answer as the in-repo
servers do. Then the MLflow model's own requirements are added to that environment and
`mlflow.pyfunc.load_model("models:/shopml-fraud@champion")` must predict the native engine's
probabilities. The slow part is the environment (`uv pip install`, as the Bento's Dockerfile does:
seconds from its cache).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest

from features.feedback import parse_request_id
from serving import runner
from serving.services import SERVICES

REPO = Path(__file__).resolve().parents[1]
SCORE_KEYS_THAT_VARY = {"latency_ms", "request_id"}  # request ids are random per answer
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import serving_models

    yield from serving_models.isolated_home(tmp_path_factory, "artifacts")


@pytest.fixture(scope="module")
def store():
    from features.generator import GeneratorConfig, generate

    return generate(GeneratorConfig(scale="tiny", seed=0))


@pytest.fixture(scope="module")
def built(home, store):
    import serving_models

    serving_models.train_recommender(store)
    serving_models.train_fraud(store)
    serving_models.train_forecast(store)
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "build"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return home / "bentoml" / "bentos"


def bento_dir(bentos: Path, name: str) -> Path:
    """The newest built Bento of `name` (the store's `latest` file names its version)."""
    return bentos / name / (bentos / name / "latest").read_text().strip()


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside the repository: the operator's machine."""
    folder = tmp_path_factory.mktemp("elsewhere")
    assert REPO not in folder.resolve().parents
    return folder


@pytest.fixture(scope="module")
def exported(built, outside) -> dict[str, Path]:
    """Each Bento as a `bentoml export` archive outside the checkout."""
    archives = {}
    for name, spec in SERVICES.items():
        archives[name] = outside / f"{spec.bento}.bento"
        subprocess.run(
            [runner.bentoml_executable(), "export", f"{spec.bento}:latest", str(archives[name])],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return archives


@pytest.fixture(scope="module")
def fresh_venv(built, outside) -> tuple[Path, float]:
    """A virtual environment made from the Bento's requirements alone, installed the way its
    Dockerfile does (`uv pip install -r env/python/requirements.txt`); (folder, seconds)."""
    started = time.perf_counter()
    reqs = [
        bento_dir(built, s.bento) / "env" / "python" / "requirements.txt" for s in SERVICES.values()
    ]
    assert reqs[0].read_text() == reqs[1].read_text()
    venv = outside / "venv"
    uv = str(Path(sys.executable).with_name("uv"))  # BentoML's own installer, as in its Dockerfile
    python = str(Path(sys._base_executable).resolve())
    subprocess.run([uv, "venv", "-q", "--python", python, str(venv)], check=True, timeout=120)
    install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r"]
    out = subprocess.run(
        [*install, str(reqs[0])],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=outside,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return venv, time.perf_counter() - started


def _clean_env(**extra: str) -> dict[str, str]:
    """An environment with nothing that points back into the repository (the machine's own
    installer, certificate, proxy and BLAS settings kept: an operator has them too; without the
    machine's `OPENBLAS_CORETYPE` OpenBLAS picks another kernel, whose float32 sums differ from
    the in-repo server's in the last bit)."""
    machine = re.compile(
        r"^(PATH|HOME|LANG|TMPDIR)$|^(PIP|UV|OPENBLAS)_|SSL_CERT|CA_BUNDLE|_PROXY$", re.I
    )
    env = {k: v for k, v in os.environ.items() if machine.search(k)}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    return {**env, "OPENBLAS_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "true", **extra}


@pytest.fixture(scope="module")
def copied_servers(exported, fresh_venv, outside, repo_booting):
    """Both Bentos imported into a new BentoML home and served from the fresh environment
    (while the in-repo servers boot too)."""
    venv, _ = fresh_venv
    env = _clean_env(
        BENTOML_HOME=str(outside / "bentoml"), SHOPML_HOME=str(outside / "shopml-home")
    )
    bentoml_cli = str(venv / "bin" / "bentoml")
    urls: dict[str, str] = {}
    for archive in exported.values():
        subprocess.run(
            [bentoml_cli, "import", str(archive)],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            cwd=outside,
        )
    procs: list[subprocess.Popen] = []
    try:
        for name in exported:
            urls[name], proc = _copied_server(bentoml_cli, name, outside, env)
            procs.append(proc)
        for i, name in enumerate(exported):
            log = outside / f"{name}.log"
            for _ in range(2):  # another process may take the free port before the server binds
                if _wait_ready(urls[name], procs[i], log, port_taken_ok=True):
                    break
                urls[name], procs[i] = _copied_server(bentoml_cli, name, outside, env)
            else:
                _wait_ready(urls[name], procs[i], log)
        yield urls
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            proc.wait(20)


def _copied_server(bentoml_cli: str, name: str, outside: Path, env: dict):
    """`bentoml serve` of the copied Bento `name` on a free port: (its URL, the process)."""
    port = runner.free_port()
    log = open(outside / f"{name}.log", "wb")  # noqa: SIM115 - open while the server runs
    cmd = [
        bentoml_cli,
        "serve",
        f"{SERVICES[name].bento}:latest",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return f"http://127.0.0.1:{port}", proc


def _wait_ready(
    url: str, proc: subprocess.Popen, log: Path, timeout: float = 180, port_taken_ok: bool = False
) -> bool:
    """True once `url` is ready; False when `port_taken_ok` and the server found its port taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if port_taken_ok and "Address already in use" in log.read_text():
                return False
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url}/readyz did not answer 200 within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def repo_booting(built, home):
    """The in-repo servers (`shopml serve`'s way), started but not yet waited for."""
    started = [runner.start(name, log_dir=home / "logs") for name in SERVICES]
    try:
        yield dict(zip(SERVICES, started, strict=True))
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def repo_servers(repo_booting):
    for server in repo_booting.values():
        server.wait_ready(180)
    return {name: server.url for name, server in repo_booting.items()}


def _requests(store) -> list[tuple[str, str, dict]]:
    from test_serving_e2e import payments

    customers = store.payments["customer_id"].astype(str).unique()[:3].tolist()
    products = store.products["product_id"].astype(str).tolist()[:2]
    calls = [("recommend", "/recommend", {"customer_id": c, "k": 5}) for c in customers]
    calls += [("recommend", "/recommend", {"customer_id": "nobody-knows-me", "k": 5})]
    calls += [("recommend", "/similar", {"product_id": p, "k": 5}) for p in products]
    calls += [("recommend", "/similar", {"product_id": "no-such-product"})]
    calls += [("recommend", "/forecast", {"product_ids": products})]
    calls += [("fraud", "/score", p) for p in payments(store, n=6, prefix="copied")]
    calls += [("fraud", "/score", {"transaction_id": "x", "amount": -1})]
    return calls


def _body(response: httpx.Response):
    body = response.json()
    if isinstance(body, dict):
        if "request_id" in body:  # random, but one the feedback endpoint takes back
            assert parse_request_id(body["request_id"]) is not None, body["request_id"]
        return {k: v for k, v in body.items() if k not in SCORE_KEYS_THAT_VARY}
    return body


def test_a_copied_bento_serves_from_its_own_requirements(
    copied_servers, repo_servers, store, fresh_venv
):
    """/readyz, /recommend, /similar, /forecast and /score answer as the in-repo servers do."""
    venv, seconds = fresh_venv
    print(f"\nfresh venv from the Bento's requirements.txt: {seconds:.1f} s")
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import shopml.settings"],
        capture_output=True,
        env=_clean_env(),
        cwd=venv.parent,
        check=False,
    )
    assert probe.returncode != 0, "the fresh environment must not see the repository's shopml"
    for name in SERVICES:
        assert httpx.get(f"{copied_servers[name]}/readyz").status_code == 200
    with httpx.Client(timeout=10) as client:
        for service, path, payload in _requests(store):
            ours = client.post(copied_servers[service] + path, json=payload)
            theirs = client.post(repo_servers[service] + path, json=payload)
            assert ours.status_code == theirs.status_code, (path, payload, ours.text)
            assert _body(ours) == _body(theirs), (path, payload)


def test_the_bento_pins_every_package_as_the_constraints_and_carries_the_code(built):
    from registry.requirements import constraints

    pins = constraints()
    for spec in SERVICES.values():
        bento = bento_dir(built, spec.bento)
        lines = [
            line
            for line in (bento / "env/python/requirements.txt").read_text().splitlines()
            if line and not line.startswith(("#", "-"))
        ]
        names = {line.split("==")[0].split("[")[0].lower(): line.split("==")[1] for line in lines}
        for package in (
            "bentoml",
            "lightgbm",
            "implicit",
            "numpy",
            "scipy",
            "pandas",
            "pyarrow",
            "pydantic",
            "redis",
            "sqlalchemy",
            "psycopg",
            "uvloop",
            "httptools",
        ):
            assert names[package] == pins[package], package
        assert all(names[n] == pins[n] for n in names), "every line pinned as in constraints.txt"
        assert "mlflow" not in names  # a service never imports it
        for package in ("shopml", "features", "models", "registry", "serving"):
            assert (bento / "src" / package / "__init__.py").is_file(), package
        dockerfile = (bento / "env/docker/Dockerfile").read_text()
        assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile


def test_the_registered_fraud_model_loads_and_predicts_outside_the_checkout(
    copied_servers, fresh_venv, outside, home, store
):
    """`models:/shopml-fraud@champion` in a fresh process, with only its own requirements."""
    from test_serving_e2e import payments

    from features.fraud.state_store import InMemoryStateStore
    from models.fraud import FraudEngine
    from registry.store import fetch

    venv, _ = fresh_venv
    uri = "models:/shopml-fraud@champion"
    reqs = mlflow.pyfunc.get_model_dependencies(uri)
    assert "shopml==" not in Path(reqs).read_text()
    uv = str(Path(sys.executable).with_name("uv"))
    out = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r", reqs],
        capture_output=True,
        text=True,
        timeout=900,
        env=_clean_env(),
        cwd=outside,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    frame = outside / "payments.json"
    rows = payments(store, n=8, prefix="pyfunc")
    frame.write_text(json.dumps(rows))
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "assert not any('/work/main' in p for p in sys.path), sys.path\n"
        f"m = mlflow.pyfunc.load_model({uri!r})\n"
        "assert m.metadata.signature is not None\n"
        "out = m.predict(pd.DataFrame(json.load(open(sys.argv[1]))))\n"
        "print(json.dumps(out['probability'].tolist()))\n"
    )
    env = _clean_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script.replace("/work/main", str(REPO)), str(frame)],
        capture_output=True,
        text=True,
        env=env,
        cwd=outside,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    engine = FraudEngine.load(fetch("fraud").native_dir, store=InMemoryStateStore())
    expected = [engine.score(p, record=False).probability for p in rows]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-9)


def test_the_readme_client_example_runs_as_written(repo_servers):
    """The README's `bentoml.SyncHTTPClient` example, only the addresses pointed at the test's."""
    readme = (REPO / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") :]
    snippet = deploy[deploy.index("```python\n") + 10 :]
    snippet = snippet[: snippet.index("```")]
    assert "bentoml.SyncHTTPClient" in snippet
    for name, spec in SERVICES.items():
        address = f"http://127.0.0.1:{spec.port}"
        assert address in snippet, address
        snippet = snippet.replace(address, repo_servers[name])
    out = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    decision_line, products_line = out.stdout.strip().splitlines()[-2:]
    assert decision_line.split()[0] in ("approve", "review", "decline")
    assert len(ast.literal_eval(products_line)) == 5


def test_every_registered_model_has_a_signature_and_answers_its_example(built):
    """Each family's pyfunc: signature and example logged, and its answer is the native model's."""
    from models.recommenders import Recommender
    from registry.store import fetch

    answers = {}
    for family in ("fraud", "recommender", "forecast"):
        uri = f"models:/shopml-{family}@champion"
        info = mlflow.models.get_model_info(uri)
        assert info.signature is not None and info.signature.outputs is not None, family
        model = mlflow.pyfunc.load_model(uri)
        example = model.input_example
        assert example is not None and len(example), family
        answers[family] = (example, model.predict(example))
    example, answer = answers["recommender"]
    native = Recommender.load(fetch("recommender").native_dir)
    expected = native.recommend(example["customer_id"].tolist(), k=int(example["k"].iloc[0]))
    assert [list(p) for p in answer["product_ids"]] == [r.product_ids.tolist() for r in expected]
    example, answer = answers["forecast"]
    champion = fetch("forecast")
    native = champion.load().predict(
        int(example["horizon"].iloc[0]), example["product_id"].tolist()
    )
    assert answer["p50"].tolist() == pytest.approx(native["p50"].tolist())
    assert set(answer["product_id"]) == set(example["product_id"])
    example, answer = answers["fraud"]
    assert {"probability", "decision", "risk_score"} <= set(answer.columns)


def test_requirements_follow_the_code_s_imports_and_the_constraints(tmp_path):
    """Every import counts (lazy ones too); dependencies are pinned; a gap is a clear error."""
    from registry.requirements import constraints, imported_distributions, pinned
    from shopml.errors import ShopmlError

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("import json\nimport lightgbm\n\ndef f():\n    import yaml\n")
    assert imported_distributions(("pkg",), root=tmp_path) == {"lightgbm", "PyYAML"}
    pins = constraints()
    lines = pinned(("lightgbm",))
    assert f"numpy=={pins['numpy']}" in lines and f"scipy=={pins['scipy']}" in lines
    partial = tmp_path / "constraints.txt"
    partial.write_text("\n".join(f"{n}=={v}" for n, v in pins.items() if n != "numpy"))
    with pytest.raises(ShopmlError, match="numpy"):
        pinned(("lightgbm",), path=partial)
    (package / "b.py").write_text("import no_such_package_anywhere\n")
    with pytest.raises(ShopmlError, match="no_such_package_anywhere"):
        imported_distributions(("pkg",), root=tmp_path)
