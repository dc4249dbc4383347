"""The load client of `shopml bench serve`: a separate process, asyncio, HTTP/1.1 keep-alive.

Reads a JSON plan on stdin and prints JSON results on stdout. Each scenario sends prepared
request bodies (cycled) over `concurrency` persistent connections until `requests` answers or
`max_seconds` elapse, whichever comes first, and records every latency and every non-2xx or
broken answer as an error (with `record_ok`, also the indices of the bodies answered 2xx, for
checking what the server accepted). Raw HTTP over asyncio streams keeps the client's own cost per
request (~30 us) well below the server's, so the numbers describe the server.
Only loopback targets are accepted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_request(host: str, port: int, method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by server")
    status = int(status_line.split(b" ", 2)[1])
    length = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return status, body
    return status, await reader.readexactly(length or 0)


async def _connection(host, port, requests, state, latencies, errors, deadline, ok=None) -> None:
    reader = writer = None
    n = len(requests)
    while state["left"] > 0 and time.perf_counter() < deadline:
        state["left"] -= 1
        i = state["next"]
        state["next"] = i + 1
        raw = requests[i % n]
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            t0 = time.perf_counter()
            writer.write(raw)
            status, body = await read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                errors.append(f"HTTP {status}: {body[:200].decode(errors='replace')}")
            elif ok is not None:
                ok.append(i)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_scenario(host: str, port: int, sc: dict) -> dict:
    method = sc.get("method", "GET")
    bodies = sc.get("bodies") or [None]
    requests = [
        build_request(host, port, method, sc["path"], None if b is None else b.encode())
        for b in bodies
    ]
    latencies: list[float] = []
    errors: list[str] = []
    state = {"left": int(sc["requests"]), "next": int(sc.get("offset", 0))}
    ok: list[int] | None = [] if sc.get("record_ok") else None  # indices answered 2xx
    started = time.perf_counter()
    deadline = started + float(sc.get("max_seconds", 30))
    await asyncio.gather(
        *(
            _connection(host, port, requests, state, latencies, errors, deadline, ok)
            for _ in range(int(sc.get("concurrency", 1)))
        )
    )
    elapsed = time.perf_counter() - started
    out = {
        "name": sc.get("name", sc["path"]),
        "latencies_ms": [round(x * 1000, 4) for x in latencies],
        "elapsed_s": elapsed,
        "completed": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
    }
    if ok is not None:
        out["ok"] = sorted(ok)
    return out


async def main_async(plan: dict) -> list[dict]:
    host, port = plan.get("host", "127.0.0.1"), int(plan["port"])
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load a non-loopback host {host!r}")
    results = []
    for sc in plan["scenarios"]:
        target_port = int(sc.get("port", port))
        results.append(await run_scenario(host, target_port, sc))
    return results


def main() -> None:
    plan = json.load(sys.stdin)
    json.dump(asyncio.run(main_async(plan)), sys.stdout)


if __name__ == "__main__":
    main()
