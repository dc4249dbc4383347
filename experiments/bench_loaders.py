"""Benchmark: time each real-data loader on the files of SHOPML_DATASETS (median of N runs).

    .venv/bin/python -m experiments.bench_loaders [--repeat 3]

Prints one line per loader: rows per table, the median / min wall time and the median CPU
time (all threads) in seconds; on a busy machine CPU time is the steadier number. Loaders
whose files are absent are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from features.loaders import fraud_handbook, movielens, online_retail
from features.profile import profile
from shopml.errors import DataError
from shopml.progress import progress

LOADERS = {
    "online_retail": online_retail.load,
    "movielens": movielens.load,
    "fraud_handbook": fraud_handbook.load,
}


def run(out: Path | None = None, repeat: int = 3) -> dict:
    """Time every loader `repeat` times; print one line each and return (and save) the numbers."""
    results = {}
    for name, load in LOADERS.items():
        times, cpu = [], []
        try:
            for _ in progress(range(repeat), f"load {name}", unit="run"):
                t, c = time.perf_counter(), time.process_time()
                store = load()
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
        except DataError as err:
            print(f"{name:15s} skipped: {err}")
            continue
        t = time.perf_counter()
        profile(store)
        prof = time.perf_counter() - t
        results[name] = {
            "rows": store.row_counts(),
            "load_median_s": statistics.median(times),
            "load_min_s": min(times),
            "cpu_median_s": statistics.median(cpu),
            "profile_s": prof,
            "repeat": len(times),
        }
        rows = ", ".join(f"{k}={v:,}" for k, v in store.row_counts().items())
        print(
            f"{name:15s} load median {statistics.median(times):6.2f} s  min {min(times):6.2f} s "
            f"cpu median {statistics.median(cpu):6.2f} s (n={len(times)})  profile {prof:5.2f} s  rows: {rows}",
            flush=True,
        )
    if out is not None:
        Path(out).write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    run(args.out, args.repeat)


if __name__ == "__main__":
    main()
