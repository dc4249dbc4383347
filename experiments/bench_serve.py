"""`shopml bench serve`: latency and throughput of the built services, against `/livez`.

Starts each built Bento on a free loopback port (one at a time, so they do not compete),
records the cold start (process start to `/readyz`), warms it, then a separate client process
(`experiments.bench_client`) measures p50/p99 latency at concurrency 1 and throughput at
concurrency 8 for `/score` or `/recommend` and for `/livez` of the same server. The runs are
interleaved in rounds so that a busy machine slows every endpoint alike. Request counts and
durations are bounded. JSON:
`{"livez": {p50_ms, p99_ms, rps_c8}, "fraud": {p50_ms, p99_ms, rps_c8, errors, ...},
"recommend": {p50_ms, p99_ms, rps_c8, errors, ...}, "feedback": {rps_c8, events_per_s_c8,
errors, accepted, stored_after_restart, ...}, "recommend_session": {p50_ms, p99_ms, errors,
livez_p50_ms, livez_p99_ms}}` (`livez` is the fraud server's; the recommend entries also carry
their own server's livez figures). `recommend_session` is an anonymous visitor's `/recommend`
with five recent products (the fold-in: with a ranker, its candidates and the ranker run per
request), measured at concurrency 1 in the same rounds as the known customers'. The
feedback run posts batches of `FEEDBACK_EVENTS` events (a list's impressions, a click, an
add-to-cart) at concurrency 8 to a storefront writing into a throw-away feedback store, kills
the server (SIGKILL), starts it again and counts which of the accepted events the store holds.
`--redis` benchmarks the fraud service alone with its online state in a redis-server started
on a free port. The payments replay a generated stream moved to end now; the server is started
with the stream's span as its time guard's `SHOPML_FRAUD_MAX_BEHIND_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from features.feedback import FeedbackStore, new_request_id, request_id_suffix
from features.generator import GeneratorConfig, generate
from serving import runner
from serving.model_store import load_native, use_bentoml_home
from shopml.clock import now_ms
from shopml.errors import ShopmlError
from shopml.settings import Settings, load_settings

ROUNDS = 4
SHADOW_SLOWDOWN = 0.05  # /score with a shadow model: p50 and p99 at most 5% above without
# --shadow: with/without rounds interleaved in one client run (which server goes first
# alternates), requests per server and round; the p99 of 8 x 1000 c=1 answers rests on 80
SHADOW_ROUNDS = 8
SHADOW_C1 = 1000
SHADOW_C8 = 2000
SHADOW_LOG_WAIT_S = 10.0  # after the load, how long the log may go without a new row
C1_REQUESTS = 2000  # per endpoint, split over the rounds
C8_REQUESTS = 8000
WARMUP = 400
MAX_SECONDS = 25.0  # per scenario chunk
TARGETS = {
    "fraud": {"p50": 1.3, "p99": 2.0, "rps": 0.8, "rps_min": 800.0},
    "recommend": {"p50": 1.5, "p99": 2.0, "rps": 0.7, "rps_min": 0.0},
    "recommend_session": {"p50": 2.0, "p99": 3.0},  # issue 17: candidates + ranker per request
    "cold_start_s": 10.0,
    "feedback_events_per_s": 2000.0,
}
FEEDBACK_EVENTS = 20  # per POST /feedback: 18 impressions of a list, a click, an add-to-cart
FEEDBACK_REQUESTS = 3000  # at concurrency 8 (bounded by MAX_SECONDS)


def payment_bodies(n: int, seed: int = 1) -> tuple[list[str], int]:
    """`n` checkout requests replaying a generated shop's payment stream in time order, and
    the stream's span in seconds (the time guard's `behind` the server needs to take them).

    Realistic traffic matters: reasons (LightGBM contributions, ~1-5 ms) are computed only for
    review/decline answers, about 1% of real payments. Ids get a `bench-` prefix and are unique;
    each payment updates the online features, as at a real checkout. The stream is moved to end
    a minute before now, so that the server's time guard sees a replay of the recent past.
    """
    pay = generate(GeneratorConfig(scale="tiny", seed=seed)).payments
    pay = pay.sort_values("timestamp", kind="stable")
    rows = list(pay.itertuples(index=False))
    base = pay["timestamp"].to_numpy().astype("datetime64[ms]")
    # later laps shift time forward by 400 days, keeping order
    times = [base[i % len(rows)] + np.timedelta64(i // len(rows) * 400, "D") for i in range(n)]
    shift = np.datetime64(now_ms() - 60_000, "ms") - times[-1]
    out = []
    for i, when in enumerate(times):
        r = rows[i % len(rows)]
        body = {
            "transaction_id": f"bench-{seed}-{i}",
            "timestamp": str(when + shift),
            "customer_id": str(r.customer_id),
            "card_id": str(r.card_id),
            "terminal_id": str(r.terminal_id),
            "amount": float(r.amount),
            "currency": str(r.currency),
        }
        out.append(json.dumps(body))
    return out, int((times[-1] - times[0]) / np.timedelta64(1, "s"))


def _served_recommender(settings: Settings):
    use_bentoml_home(settings)
    import bentoml  # after use_bentoml_home: bentoml reads BENTOML_HOME on import

    return load_native(bentoml.models.get("shopml-recommender:latest"), "recommender").obj


def recommend_bodies(settings: Settings, n: int = 500, seed: int = 0) -> list[str]:
    """k=20 with filters on (purchased hidden, only available, two excluded products)."""
    model = _served_recommender(settings)
    rng = np.random.default_rng(seed)
    customers = np.asarray(model.customer_ids_)
    products = np.asarray(model.product_ids_)
    out = []
    for _ in range(n):
        body = {
            "customer_id": str(customers[rng.integers(len(customers))]),
            **_list_filters(products, rng),
        }
        out.append(json.dumps(body))
    return out


def _list_filters(products: np.ndarray, rng: np.random.Generator) -> dict:
    """k=20, two random products excluded, available and not yet purchased only: the business
    filters every benchmarked list request carries."""
    return {
        "k": 20,
        "exclude": [str(p) for p in products[rng.integers(len(products), size=2)]],
        "only_available": True,
        "exclude_purchased": True,
    }


def session_bodies(settings: Settings, n: int = 500, seed: int = 1, recent: int = 5) -> list[str]:
    """Anonymous visitors (no customer_id) with `recent` products just used, k=20 and the
    filters of `recommend_bodies`: the fold-in path (candidates + ranker with a ranker)."""
    model = _served_recommender(settings)
    rng = np.random.default_rng(seed)
    products = np.asarray(model.product_ids_)
    out = []
    for _ in range(n):
        body = {
            "recent_product_ids": [
                str(p) for p in products[rng.integers(len(products), size=recent)]
            ],
            **_list_filters(products, rng),
        }
        out.append(json.dumps(body))
    return out


def feedback_bodies(n: int, run: str) -> tuple[list[str], list[list[str]]]:
    """`n` POST /feedback bodies of FEEDBACK_EVENTS events each, and each body's event ids
    (unique: `fb-<run>-<body>-<event>`, so the store can be checked event by event)."""
    suffix = request_id_suffix("recommend", "champion", "shopml-recommender/bench")
    bodies, ids = [], []
    for i in range(n):
        rid = new_request_id(suffix)
        mine = [f"fb-{run}-{i}-{j}" for j in range(FEEDBACK_EVENTS)]
        events = [
            {
                "event": "impression",
                "request_id": rid,
                "product_id": f"P{j:06d}",
                "customer_id": f"C{i % 997:06d}",
                "position": j + 1,
                "event_id": mine[j],
            }
            for j in range(FEEDBACK_EVENTS - 2)
        ]
        for kind, j in (("click", FEEDBACK_EVENTS - 2), ("add_to_cart", FEEDBACK_EVENTS - 1)):
            events.append(
                {
                    "event": kind,
                    "request_id": rid,
                    "product_id": "P000001",
                    "customer_id": f"C{i % 997:06d}",
                    "event_id": mine[j],
                }
            )
        bodies.append(json.dumps({"events": events}))
        ids.append(mine)
    return bodies, ids


def bench_feedback(settings: Settings) -> dict:
    """POST /feedback at concurrency 8 into a throw-away store, then a killed and restarted
    server: events/s, errors, events accepted, and how many of those the store holds."""
    warm_n = 100
    bodies, ids = feedback_bodies(warm_n + FEEDBACK_REQUESTS, run=str(now_ms()))
    with tempfile.TemporaryDirectory(prefix="shopml-bench-feedback-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'feedback.db'}"
        env = {"SHOPML_FEEDBACK_URL": url}
        scenarios = [
            {
                "name": "warm",
                "path": "/feedback",
                "method": "POST",
                "bodies": bodies,
                "concurrency": 4,
                "requests": warm_n,
                "max_seconds": MAX_SECONDS,
                "record_ok": True,
            },
            {
                "name": "c8",
                "path": "/feedback",
                "method": "POST",
                "bodies": bodies,
                "concurrency": 8,
                "requests": FEEDBACK_REQUESTS,
                "offset": warm_n,
                "max_seconds": MAX_SECONDS,
                "record_ok": True,
            },
        ]
        server = runner.start("recommend", settings=settings, env=env)
        try:
            server.wait_ready(timeout=120)
            results = _client(server.port, scenarios)
        finally:
            _crash(server.process.pid)
            server.stop()
        accepted = [e for r in results for i in r["ok"] for e in ids[i]]
        again = runner.start("recommend", settings=settings, env=env)  # the restart
        try:
            again.wait_ready(timeout=120)
            store = FeedbackStore(url)
            stored = len(store.stored_ids(accepted))
            store.dispose()
        finally:
            again.stop()
    c8 = _summary(results, "c8")
    return {
        "rps_c8": c8["rps"],
        "events_per_request": FEEDBACK_EVENTS,
        "events_per_s_c8": round(c8["rps"] * FEEDBACK_EVENTS, 1),
        "p50_ms_c8": c8["p50_ms"],
        "p99_ms_c8": c8["p99_ms"],
        "errors": c8["errors"] + _summary(results, "warm")["errors"],
        "accepted": len(accepted),
        "stored_after_restart": stored,
        "lost": len(accepted) - stored,
        "error_samples": c8["samples"],
    }


def _plan(
    port: int, path: str, bodies: list[str], offset: int, extra: dict[str, list[str]] | None = None
) -> list[dict]:
    """Interleaved rounds: livez c1, endpoint c1, each `extra` body set c1 (`<name>_c1`, on
    the same path), livez c8, endpoint c8."""
    scenarios = []
    c1 = C1_REQUESTS // ROUNDS
    more = [(f"{name}_c1", path, b, 1, c1) for name, b in (extra or {}).items()]
    for _ in range(ROUNDS):
        for name, p, b, conc, n in (
            ("livez_c1", "/livez", None, 1, c1),
            ("ep_c1", path, bodies, 1, c1),
            *more,
            ("livez_c8", "/livez", None, 8, C8_REQUESTS // ROUNDS),
            ("ep_c8", path, bodies, 8, C8_REQUESTS // ROUNDS),
        ):
            sc = {
                "name": name,
                "path": p,
                "method": "GET" if b is None else "POST",
                "concurrency": conc,
                "requests": n,
                "max_seconds": MAX_SECONDS,
            }
            if b is not None:
                sc["bodies"] = b
                sc["offset"] = offset
                offset += n
            scenarios.append(sc)
    return scenarios


def _client(port: int, scenarios: list[dict]) -> list[dict]:
    plan = json.dumps({"host": runner.HOST, "port": port, "scenarios": scenarios})
    out = subprocess.run(
        [sys.executable, "-m", "experiments.bench_client"],
        input=plan,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise ShopmlError(f"bench client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _summary(results: list[dict], name: str) -> dict:
    chunks = [r for r in results if r["name"] == name]
    lat = np.array([x for r in chunks for x in r["latencies_ms"]])
    done = sum(r["completed"] for r in chunks)
    secs = sum(r["elapsed_s"] for r in chunks)
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "rps": round(done / secs, 1) if secs else 0.0,
        "errors": sum(r["errors"] for r in chunks),
        "samples": [s for r in chunks for s in r["error_samples"]][:3],
    }


def _crash(pid: int) -> None:
    """SIGKILL a server and every process under it, as a machine crash would: BentoML's worker
    runs in a process group of its own, which a kill of the server's group leaves running."""
    import psutil

    tree: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = psutil.Process(pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def bench_service(
    service: str,
    settings: Settings,
    bodies: list[str],
    path: str,
    env: dict | None = None,
    extra: dict[str, list[str]] | None = None,
) -> dict:
    """Start one built service, warm it, measure it and its own /livez; stop it. `extra`:
    more body sets for the same path, each measured at concurrency 1 in the same rounds
    (their figures under `extra`)."""
    env, scratch = _scratch_fraud_db(service, env)
    server = runner.start(service, settings=settings, env=env)
    try:
        cold = server.wait_ready(timeout=120)
        warm = [
            {
                "name": "warm",
                "path": path,
                "method": "POST",
                "bodies": b,
                "concurrency": 4,
                "requests": WARMUP,
                "max_seconds": MAX_SECONDS,
            }
            for b in [bodies, *(extra or {}).values()]
        ] + [
            {
                "name": "warm",
                "path": "/livez",
                "concurrency": 4,
                "requests": WARMUP,
                "max_seconds": MAX_SECONDS,
            },
        ]
        results = _client(server.port, warm + _plan(server.port, path, bodies, WARMUP, extra))
    finally:
        server.stop()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    lz1, lz8 = _summary(results, "livez_c1"), _summary(results, "livez_c8")
    ep1, ep8 = _summary(results, "ep_c1"), _summary(results, "ep_c8")
    warm_errors = _summary(results, "warm")["errors"]
    return {
        "livez": {
            "p50_ms": lz1["p50_ms"],
            "p99_ms": lz1["p99_ms"],
            "rps_c8": lz8["rps"],
            "errors": lz1["errors"] + lz8["errors"],
        },
        "endpoint": {
            "p50_ms": ep1["p50_ms"],
            "p99_ms": ep1["p99_ms"],
            "rps_c8": ep8["rps"],
            "errors": ep1["errors"] + ep8["errors"] + warm_errors,
            "cold_start_s": round(cold, 2),
            "error_samples": ep1["samples"] + ep8["samples"],
        },
        "extra": {
            name: {
                "p50_ms": (e := _summary(results, f"{name}_c1"))["p50_ms"],
                "p99_ms": e["p99_ms"],
                "errors": e["errors"],
                "error_samples": e["samples"],
            }
            for name in extra or {}
        },
    }


def _scratch_fraud_db(service: str, env: dict | None) -> tuple[dict | None, str | None]:
    """A throw-away fraud database (decision log, labels, rules history) for a benchmarked
    fraud server, so that bench payments never enter the real decision log; (env, its folder)."""
    if service != "fraud" or (env or {}).get("SHOPML_LABELS_URL"):
        return env, None
    scratch = tempfile.mkdtemp(prefix="shopml-bench-fraud-")
    return {**(env or {}), "SHOPML_LABELS_URL": f"sqlite:///{Path(scratch) / 'fraud.db'}"}, scratch


def _shadow_plan(ports: dict[str, int], bodies: list[str], offset: int) -> list[dict]:
    """SHADOW_ROUNDS interleaved rounds over both fraud servers (which goes first alternates by
    round); both get the same payments in the same order, each into its own online state.
    Scenario names carry the round (`shadow_c1_r3`) for the per-round ratios. A `/livez` lull
    follows each server's turn: the decision log processes, which wait for a quiet moment,
    catch up there rather than during the other server's measured turn."""
    scenarios = []
    for i in range(SHADOW_ROUNDS):
        order = ("plain", "shadow") if i % 2 == 0 else ("shadow", "plain")
        for conc, n in ((1, SHADOW_C1), (8, SHADOW_C8)):
            lull = {
                "name": f"livez_c{conc}",
                "port": ports["plain"],
                "path": "/livez",
                "method": "GET",
                "concurrency": conc,
                "requests": n // 4,
                "max_seconds": MAX_SECONDS,
            }
            scenarios.append(lull)
            for who in order:
                if who != order[0]:
                    scenarios.append(lull)
                scenarios.append(
                    {
                        "name": f"{who}_c{conc}_r{i}",
                        "port": ports[who],
                        "path": "/score",
                        "method": "POST",
                        "bodies": bodies,
                        "offset": offset,
                        "concurrency": conc,
                        "requests": n,
                        "max_seconds": MAX_SECONDS,
                    }
                )
            offset += n
    return scenarios


def shadow_bodies_needed() -> int:
    """Distinct payments the --shadow run sends each server (warm-up and every round)."""
    return WARMUP + SHADOW_ROUNDS * (SHADOW_C1 + SHADOW_C8)


def _shadow_rounds(results: list[dict]) -> tuple[list[dict], dict]:
    """Each round's shadow / shadow-less ratios (p50 and p99 at c=1, rps at c=8) and their
    medians: every round compares two servers under the same moment's machine load."""
    rounds = []
    for i in range(SHADOW_ROUNDS):
        s1, p1 = _summary(results, f"shadow_c1_r{i}"), _summary(results, f"plain_c1_r{i}")
        s8, p8 = _summary(results, f"shadow_c8_r{i}"), _summary(results, f"plain_c8_r{i}")
        if not (s1["p50_ms"] and p1["p50_ms"] and p8["rps"]):
            continue
        rounds.append(
            {
                "round": i,
                "first": "plain" if i % 2 == 0 else "shadow",
                "p50_ratio": round(s1["p50_ms"] / p1["p50_ms"], 3),
                "p99_ratio": round(s1["p99_ms"] / p1["p99_ms"], 3),
                "rps_ratio": round(s8["rps"] / p8["rps"], 3),
                "plain_p50_ms": p1["p50_ms"],
                "plain_p99_ms": p1["p99_ms"],
                "shadow_p50_ms": s1["p50_ms"],
                "shadow_p99_ms": s1["p99_ms"],
            }
        )
    median = {
        k: round(float(np.median([r[f"{k}_ratio"] for r in rounds])), 3) if rounds else None
        for k in ("p50", "p99", "rps")
    }
    return rounds, median


def _pooled(results: list[dict], prefix: str) -> dict:
    """One summary over every round's scenarios named `prefix_r*`."""
    merged = [dict(r, name=prefix) for r in results if r["name"].startswith(f"{prefix}_r")]
    return _summary(merged, prefix)


def _wait_for_log(path: Path, answered: int) -> tuple[int, float]:
    """Wait until the decision log at `path` holds `answered` rows, or has not grown for
    SHADOW_LOG_WAIT_S; (rows, seconds waited)."""
    from features.fraud.decision_log import DecisionLog

    log = DecisionLog(f"sqlite:///{path}")
    started = last_change = time.monotonic()
    rows = len(log)
    while rows < answered and time.monotonic() - last_change < SHADOW_LOG_WAIT_S:
        time.sleep(0.1)
        now = len(log)
        if now != rows:
            rows, last_change = now, time.monotonic()
    log.dispose()
    return rows, time.monotonic() - started


def _carries_challenger(settings: Settings) -> bool:
    """Whether the newest fraud Bento was built with a `challenger` (its bento.yaml's models)."""
    import yaml

    from serving.model_store import challenger_name

    home = Path(use_bentoml_home(settings)) / "bentos" / runner.service_spec("fraud").bento
    manifest = home / (home / "latest").read_text().strip() / "bento.yaml"
    info = yaml.safe_load(manifest.read_text()) or {}
    tags = [str(m["tag"]) for s in info.get("services") or [] for m in s.get("models") or []]
    return any(t.startswith(challenger_name("fraud") + ":") for t in tags)


def bench_shadow(
    settings: Settings,
    bodies: list[str],
    env: dict,
    plain_env: dict | None = None,
    shadow_env: dict | None = None,
) -> tuple[dict, dict, dict]:
    """The fraud Bento twice at once, without (`SHOPML_FRAUD_SHADOW=0`) and with its challenger
    scoring in shadow, measured in SHADOW_ROUNDS interleaved rounds of one client run: (livez,
    fraud, fraud_shadow). p50/p99/rps of both entries pool every round; the shadow's entry also
    carries each round's shadow / shadow-less ratios (`rounds`) and their medians
    (`median_round_ratio`). Each server logs into its own throw-away fraud database; the
    shadow's entry counts the payments it answered, logged while running (the log may lag the
    load at idle priority; waited for until it stops growing), and logged, with and without a
    shadow score, once the server has stopped (its log process writes what it holds at exit). `plain_env`
    and `shadow_env` add to (or override) each server's environment, e.g. an A/A run with the
    shadow off on both to see the noise of the machine."""
    from features.fraud.decision_log import DecisionLog

    servers, scratch = {}, {}
    try:
        for who, extra in (("plain", plain_env or {}), ("shadow", shadow_env or {})):
            flag = {"SHOPML_FRAUD_SHADOW": "0" if who == "plain" else "1"}
            own, scratch[who] = _scratch_fraud_db("fraud", {**env, **flag, **extra})
            servers[who] = runner.start("fraud", settings=settings, env=own)
        cold = {who: s.wait_ready(timeout=120) for who, s in servers.items()}
        ports = {who: s.port for who, s in servers.items()}
        warm = [
            {
                "name": f"warm_{who}",
                "port": port,
                "path": "/score",
                "method": "POST",
                "bodies": bodies,
                "concurrency": 4,
                "requests": WARMUP,
                "max_seconds": MAX_SECONDS,
            }
            for who, port in ports.items()
        ]
        if len(bodies) < shadow_bodies_needed():
            raise ShopmlError(
                f"--shadow needs {shadow_bodies_needed()} payments, got {len(bodies)}"
            )
        results = _client(ports["plain"], warm + _shadow_plan(ports, bodies, WARMUP))
        mine = [r for r in results if r["name"].startswith(("shadow_", "warm_shadow"))]
        answered = sum(r["completed"] - r["errors"] for r in mine)
        db = Path(scratch["shadow"]) / "fraud.db"
        logged_running, waited = _wait_for_log(db, answered)  # it catches up once load ends
        servers.pop("shadow").stop()  # at shutdown the log process writes what it still holds
        log = DecisionLog(f"sqlite:///{db}")
        logged = log.read()
        log.dispose()
    finally:
        for s in servers.values():
            s.stop()
        for folder in scratch.values():
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    entries = {}
    for who in ("plain", "shadow"):
        c1, c8 = _pooled(results, f"{who}_c1"), _pooled(results, f"{who}_c8")
        entries[who] = {
            "p50_ms": c1["p50_ms"],
            "p99_ms": c1["p99_ms"],
            "rps_c8": c8["rps"],
            "errors": c1["errors"] + c8["errors"] + _summary(results, f"warm_{who}")["errors"],
            "cold_start_s": round(cold[who], 2),
            "error_samples": c1["samples"] + c8["samples"],
        }
    lz1, lz8 = _summary(results, "livez_c1"), _summary(results, "livez_c8")
    livez = {"p50_ms": lz1["p50_ms"], "p99_ms": lz1["p99_ms"], "rps_c8": lz8["rps"]}
    versions = logged["shadow_version"].dropna()
    rounds, median = _shadow_rounds(results)
    entries["shadow"] |= {
        "median_round_ratio": median,
        "rounds": rounds,
        "answered": int(answered),
        "logged_while_running": int(logged_running),
        "log_caught_up_s": round(waited, 2),
        "logged": int(len(logged)),
        "shadow_scored": int(len(versions)),
        "shadow_version": str(versions.iloc[0]) if len(versions) else None,
    }
    return livez, entries["plain"], entries["shadow"]


def check_targets(result: dict) -> dict[str, bool]:
    """Which targets the run met (ratios against the same server's /livez)."""
    checks = {}
    for name, livez in (("fraud", result["livez"]), ("recommend", result.get("recommend"))):
        if livez is None:
            continue
        t, ep = TARGETS[name], result[name]
        if name == "recommend":
            livez = {k: ep[f"livez_{k}"] for k in ("p50_ms", "p99_ms", "rps_c8")}
        checks[f"{name} p50 <= {t['p50']}x livez"] = ep["p50_ms"] <= t["p50"] * livez["p50_ms"]
        checks[f"{name} p99 <= {t['p99']}x livez"] = ep["p99_ms"] <= t["p99"] * livez["p99_ms"]
        checks[f"{name} rps_c8 >= {t['rps']}x livez"] = ep["rps_c8"] >= t["rps"] * livez["rps_c8"]
        if t["rps_min"]:
            checks[f"{name} rps_c8 >= {t['rps_min']:.0f}"] = ep["rps_c8"] >= t["rps_min"]
        checks[f"{name} 0 errors"] = ep["errors"] == 0
        checks[f"{name} cold start < {TARGETS['cold_start_s']:.0f} s"] = (
            ep["cold_start_s"] < TARGETS["cold_start_s"]
        )
    ses = result.get("recommend_session")
    if ses is not None:
        t = TARGETS["recommend_session"]
        for q in ("p50", "p99"):
            most = t[q] * ses[f"livez_{q}_ms"]
            checks[f"recommend_session {q} <= {t[q]}x livez"] = ses[f"{q}_ms"] <= most
        checks["recommend_session 0 errors"] = ses["errors"] == 0
    fb = result.get("feedback")
    if fb is not None:
        least = TARGETS["feedback_events_per_s"]
        checks[f"feedback >= {least:.0f} events/s at c=8"] = fb["events_per_s_c8"] >= least
        checks["feedback 0 errors"] = fb["errors"] == 0
        checks["feedback 0 lost after a restart"] = fb["accepted"] == fb["stored_after_restart"]
    sh = result.get("fraud_shadow")
    if sh is not None:
        fr, most = result["fraud"], 1.0 + SHADOW_SLOWDOWN
        checks[f"fraud_shadow p50 <= {most:.2f}x fraud"] = sh["p50_ms"] <= most * fr["p50_ms"]
        checks[f"fraud_shadow p99 <= {most:.2f}x fraud"] = sh["p99_ms"] <= most * fr["p99_ms"]
        checks["fraud_shadow 0 errors"] = sh["errors"] == 0
        checks["every answered payment logged with a shadow score"] = (
            sh["answered"] == sh["logged"] == sh["shadow_scored"] > 0
        )
    return checks


def run(
    out: str | Path | None = None,
    settings: Settings | None = None,
    redis: bool = False,
    shadow: bool = False,
) -> dict:
    """Benchmark both built services (with `redis`: only the fraud service, its online state
    in a redis-server started on a free port; with `shadow`: the fraud Bento without and with
    its challenger in shadow, side by side); writes the JSON to `out` and returns it."""
    settings = settings or load_settings()
    services = ("fraud",) if redis else ("fraud", "recommend")
    for service in services:
        if not runner.bento_exists(service, settings):
            raise ShopmlError(f"no built {service} service: run `shopml build` first")
    if shadow and not _carries_challenger(settings):
        raise ShopmlError(
            "--shadow: the fraud Bento carries no challenger; give a registered version the "
            "@challenger alias (`shopml promote fraud RUN` marks the version it gates) and run "
            "`shopml build fraud`"
        )
    needed = WARMUP + C1_REQUESTS + C8_REQUESTS
    bodies, span_s = payment_bodies(max(needed, shadow_bodies_needed()) if shadow else needed)
    env = {"SHOPML_FRAUD_MAX_BEHIND_S": str(span_s + 86400)}  # the replayed stream's span
    with redis_server() if redis else contextlib.nullcontext() as url:
        if url:
            env["SHOPML_REDIS_URL"] = url
        if shadow:
            livez, plain, shadowed = bench_shadow(settings, bodies, env)
            fraud = {"livez": livez, "endpoint": plain}
        else:
            fraud = bench_service("fraud", settings, bodies, "/score", env)
    result = {
        "state_store": "redis" if redis else "memory",
        "livez": {k: fraud["livez"][k] for k in ("p50_ms", "p99_ms", "rps_c8")},
        "fraud": fraud["endpoint"],
    }
    if shadow:
        result["fraud_shadow"] = shadowed
    if not redis:
        sessions = {"session": session_bodies(settings)}
        rec = bench_service(
            "recommend", settings, recommend_bodies(settings), "/recommend", extra=sessions
        )
        result["recommend"] = {
            **rec["endpoint"],
            **{f"livez_{k}": rec["livez"][k] for k in ("p50_ms", "p99_ms", "rps_c8")},
        }
        result["recommend_session"] = {
            **rec["extra"]["session"],
            **{f"livez_{k}": rec["livez"][k] for k in ("p50_ms", "p99_ms")},
        }
        result["feedback"] = bench_feedback(settings)
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2))
    return result


def report_lines(result: dict) -> list[str]:
    """A printable table: every figure beside its target."""
    lv, fr, rc = result["livez"], result["fraud"], result.get("recommend")
    score = f"/score ({result.get('state_store', 'memory')})"
    lines = [
        f"{'endpoint':<22}{'p50 ms':>9}{'p99 ms':>9}{'rps c=8':>10}{'errors':>8}{'cold s':>8}",
        f"{'fraud server /livez':<22}{lv['p50_ms']:>9}{lv['p99_ms']:>9}{lv['rps_c8']:>10}",
        f"{score:<22}{fr['p50_ms']:>9}{fr['p99_ms']:>9}{fr['rps_c8']:>10}{fr['errors']:>8}"
        f"{fr['cold_start_s']:>8}",
    ]
    if rc is not None:
        lines += [
            f"{'storefront /livez':<22}{rc['livez_p50_ms']:>9}{rc['livez_p99_ms']:>9}"
            f"{rc['livez_rps_c8']:>10}",
            f"{'/recommend':<22}{rc['p50_ms']:>9}{rc['p99_ms']:>9}{rc['rps_c8']:>10}"
            f"{rc['errors']:>8}{rc['cold_start_s']:>8}",
        ]
    ses = result.get("recommend_session")
    if ses is not None:
        lines.append(
            f"{'/recommend (session)':<22}{ses['p50_ms']:>9}{ses['p99_ms']:>9}{'-':>10}"
            f"{ses['errors']:>8}   anonymous visitor, 5 recent products (fold-in)"
        )
    fb = result.get("feedback")
    if fb is not None:
        lines.append(
            f"{'/feedback (c=8)':<22}{fb['p50_ms_c8']:>9}{fb['p99_ms_c8']:>9}{fb['rps_c8']:>10}"
            f"{fb['errors']:>8}   {fb['events_per_s_c8']} events/s ({fb['events_per_request']}"
            f" a request); accepted {fb['accepted']}, in the store after a restart "
            f"{fb['stored_after_restart']}"
        )
    sh = result.get("fraud_shadow")
    if sh is not None:
        lines.append(
            f"{'/score + shadow':<22}{sh['p50_ms']:>9}{sh['p99_ms']:>9}{sh['rps_c8']:>10}"
            f"{sh['errors']:>8}{sh['cold_start_s']:>8}   {sh['shadow_version']}: "
            f"{sh['shadow_scored']} of {sh['answered']} answered payments logged with its score"
        )
        med = sh["median_round_ratio"]
        lines.append(
            f"  shadow / shadow-less, median of {len(sh['rounds'])} rounds: p50 {med['p50']}x, "
            f"p99 {med['p99']}x, rps {med['rps']}x; rounds (p50 / p99 / rps): "
            + ", ".join(f"{r['p50_ratio']}/{r['p99_ratio']}/{r['rps_ratio']}" for r in sh["rounds"])
        )
    lines.append("")
    for check, ok in check_targets(result).items():
        lines.append(f"  [{'met' if ok else 'MISSED'}] {check}")
    return lines


@contextlib.contextmanager
def redis_server():
    """A throw-away redis-server on a free loopback port (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ShopmlError("--redis needs redis-server on the PATH (apt-get install redis-server)")
    port = runner.free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", runner.HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://{runner.HOST}:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
