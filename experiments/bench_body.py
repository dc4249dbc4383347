"""`shopml bench serve-body`: what one oversized request body costs the fraud server.

Starts the built fraud Bento on loopback, measures `/score` latency at concurrency 1 on its own
(baseline, `window` seconds), then again while another process streams large bodies (default
100 MB) to `/score` back to back for `window` seconds, in 1 MB chunks, watching for an early
answer between chunks (a 413 arrives while streaming). Reports the first big request's time to
its answer, its status and the bytes it could send, and the `/score` p50/p99 of both phases.
Bounded: a big request gives up after `timeout` seconds.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import select
import socket
import time

import numpy as np

from serving import runner
from shopml.settings import Settings, load_settings

CHUNK = 1 << 20


def _payment(i: int) -> str:
    return json.dumps(
        {
            "transaction_id": f"bench-body-{i}",
            "timestamp": "2026-11-23T12:00:00",
            "customer_id": f"C{i % 500:06d}",
            "terminal_id": f"T{i % 50:05d}",
            "amount": 10.0 + i % 90,
        }
    )


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        more = sock.recv(4096)
        if not more:
            break
        data += more
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def one_big_request(port: int, size: int, timeout: float) -> tuple[float, int, int]:
    """Stream `size` bytes of JSON to /score: (seconds to the answer, status, bytes sent)."""
    started = time.perf_counter()
    sent, status = 0, 0
    with socket.create_connection((runner.HOST, port), timeout=timeout) as sock:
        head = (
            f"POST /score HTTP/1.1\r\nHost: {runner.HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b'{"transaction_id": "' + b"x" * (CHUNK - 20)
        try:
            while sent < size and time.perf_counter() - started < timeout:
                if select.select([sock], [], [], 0)[0]:  # answered before the end: stop sending
                    break
                piece = chunk[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
            status = _read_status(sock)
        except (BrokenPipeError, ConnectionResetError):
            status = _read_status(sock) if select.select([sock], [], [], 1)[0] else -1
    return time.perf_counter() - started, status, sent


def big_requests(port: int, size: int, window: float, timeout: float, out, sending) -> None:
    """Send big bodies one after another for `window` seconds (at least one); put the first
    one's (seconds, status, bytes sent) and the number sent on `out`."""
    sending.set()
    deadline = time.perf_counter() + window
    first, count = None, 0
    while first is None or time.perf_counter() < deadline:
        result = one_big_request(port, size, timeout)
        first = first or result
        count += 1
    out.put((*first, count))


def score_latencies(port: int, seconds: float, start: int, stop_when=None) -> list[float]:
    """`/score` round trips (ms) at concurrency 1 for `seconds` (or until `stop_when()`)."""
    conn = http.client.HTTPConnection(runner.HOST, port, timeout=30)
    times, i = [], start
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and not (stop_when and stop_when()):
        t0 = time.perf_counter()
        conn.request("POST", "/score", _payment(i), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
    conn.close()
    return times


def _stats(times: list[float]) -> dict:
    if not times:
        return {"n": 0}
    a = np.asarray(times)
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
    }


def run(
    size_mb: int = 100,
    window: float = 10.0,
    timeout: float = 60.0,
    settings: Settings | None = None,
) -> dict:
    """Baseline `/score` latency, then latency while `size_mb` MB bodies are sent back to back
    for `window` seconds, on one fraud server."""
    settings = settings or load_settings()
    server = runner.start("fraud", settings=settings)
    try:
        server.wait_ready(120)
        score_latencies(server.port, 2.0, 0)  # warm up
        baseline = score_latencies(server.port, window, 100_000)
        spawn = multiprocessing.get_context("spawn")
        out, sending = spawn.Queue(), spawn.Event()
        args = (server.port, size_mb << 20, window, timeout, out, sending)
        big = spawn.Process(target=big_requests, args=args)
        big.start()
        sending.wait(60)  # measure from the moment the big bodies start until the last answer
        during = score_latencies(server.port, window + timeout, 200_000, lambda: not out.empty())
        seconds, status, sent, count = out.get(timeout=timeout + 10)
        big.join(10)
    finally:
        server.stop()
    return {
        "body_mb": size_mb,
        "big_request": {"seconds": round(seconds, 3), "status": status, "sent_bytes": sent},
        "big_requests_sent": count,
        "score_baseline": _stats(baseline),
        "score_during_big_bodies": _stats(during),
    }
