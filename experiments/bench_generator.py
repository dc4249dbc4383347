"""Benchmark: generate the built-in store at each scale, then validate and write it as Parquet.

    .venv/bin/python -m experiments.bench_generator [--scales tiny,small,medium,large] [--out FILE.json]

Prints one line per scale: rows per table, frauds, generate seconds (wall and CPU), validate +
write seconds (wall and CPU: `Store.write` validates, fingerprints, then writes), the Parquet
size in MB and the process's peak RSS so far. CPU time is the steadier number on a busy machine.
The Parquet folder goes to a temporary directory and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import tempfile
import time
from pathlib import Path

from experiments.reports import write_report
from features.generator import SCALES, GeneratorConfig, generate
from features.store import folder_mb
from shopml.progress import progress


def bench_scale(scale: str, seed: int = 0, write: bool = True) -> dict:
    """Time one scale: generate, then validate + write Parquet (into a temporary folder)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    store = generate(GeneratorConfig(scale=scale, seed=seed), progress=True)  # on a terminal
    result: dict = {
        "scale": scale,
        "seed": seed,
        "rows": store.row_counts(),
        "frauds": int(store.payments["is_fraud"].sum()),
        "generate_seconds": round(time.perf_counter() - wall, 2),
        "generate_cpu_seconds": round(time.process_time() - cpu, 2),
    }
    result["fraud_rate"] = round(result["frauds"] / max(result["rows"]["payments"], 1), 4)
    if write:
        tmp = Path(tempfile.mkdtemp(prefix=f"shopml-bench-{scale}-"))
        try:
            t, c = time.perf_counter(), time.process_time()
            store.write(tmp / "store")
            result["write_seconds"] = round(time.perf_counter() - t, 2)
            result["write_cpu_seconds"] = round(time.process_time() - c, 2)
            result["parquet_mb"] = round(folder_mb(tmp / "store"), 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    return result


def run(
    out: Path | None = None,
    scales: tuple[str, ...] = tuple(SCALES),
    seed: int = 0,
    write: bool = True,
) -> dict:
    """Time every scale; print a table and return (and optionally save) the numbers as JSON."""
    results = []
    print(
        f"{'scale':<7} {'interactions':>12} {'order_lines':>11} {'payments':>10} {'frauds':>7} "
        f"{'gen s':>6} {'cpu s':>6} {'write s':>7} {'cpu s':>6} {'MB':>7} {'rss MB':>7}"
    )
    for scale in progress(scales, "bench generator", unit="scale"):
        r = bench_scale(scale, seed, write)
        results.append(r)
        rows = r["rows"]
        print(
            f"{scale:<7} {rows['interactions']:>12,} {rows['order_lines']:>11,} "
            f"{rows['payments']:>10,} {r['frauds']:>7,} {r['generate_seconds']:>6.1f} "
            f"{r['generate_cpu_seconds']:>6.1f} {r.get('write_seconds', float('nan')):>7.1f} "
            f"{r.get('write_cpu_seconds', float('nan')):>6.1f} "
            f"{r.get('parquet_mb', float('nan')):>7.1f} {r['peak_rss_mb']:>7.0f}",
            flush=True,
        )
    report = {"benchmark": "generator", "seed": seed, "scales": results}
    write_report(report, out)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=",".join(SCALES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true", help="Skip validation and Parquet.")
    args = parser.parse_args(argv)
    run(args.out, tuple(args.scales.split(",")), args.seed, not args.no_write)


if __name__ == "__main__":
    main()
