"""`shopml bench serve-body`: what one oversized request body costs the fraud server.

Starts the built fraud Bento on loopback, measures `/score` latency at concurrency 1 on its own
(baseline), then again while another process streams a large body (default 100 MB) to `/score`
in 1 MB chunks, watching for an early answer between chunks (a 413 arrives while streaming).
Reports the big request's time to its answer, its status, the bytes it could send, and the
`/score` p50/p99 of both phases. Bounded: the big request gives up after `timeout` seconds.
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


def big_request(port: int, size: int, timeout: float, out) -> None:
    """Stream `size` bytes of JSON to /score; put (seconds, status, bytes sent) on `out`."""
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
    out.put((time.perf_counter() - started, status, sent))


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


def run(size_mb: int = 100, timeout: float = 60.0, settings: Settings | None = None) -> dict:
    """Baseline `/score` latency, then latency during one `size_mb` MB body, on one server."""
    settings = settings or load_settings()
    server = runner.start("fraud", settings=settings)
    try:
        server.wait_ready(120)
        score_latencies(server.port, 2.0, 0)  # warm up
        baseline = score_latencies(server.port, 5.0, 100_000)
        out = multiprocessing.get_context("spawn").Queue()
        big = multiprocessing.get_context("spawn").Process(
            target=big_request, args=(server.port, size_mb << 20, timeout, out)
        )
        big.start()
        during = score_latencies(server.port, timeout, 200_000, lambda: not big.is_alive())
        seconds, status, sent = out.get(timeout=timeout + 10)
        big.join(10)
    finally:
        server.stop()
    return {
        "body_mb": size_mb,
        "big_request": {"seconds": round(seconds, 3), "status": status, "sent_bytes": sent},
        "score_baseline": _stats(baseline),
        "score_during_big_body": _stats(during),
    }
