"""Benchmark: the same jobs on the local engine and on Dask (`shopml bench scale --out F.json`).

    .venv/bin/python -m experiments.bench_scale --out scale.json [--parity-scale medium]
        [--speed-scale large] [--no-xlarge] [--only parity|speed|xlarge]
        [--xlarge-path DIR] [--xlarge-minutes 180] [--local-cap-mb 12000]

Sections of the JSON (every figure measured in this run; a part that cannot run is null, with
the reason under `notes`):
- `parity` (on `--parity-scale`): fraud features of every payment, local vs a 2-worker
  LocalCluster (`features_identical`: every column equal, bit for bit); the recommender
  (interaction matrix, then the same model fitted and scored) and the forecaster (backtest of
  the LightGBM forecaster, folds as Dask tasks) metrics of both engines (`metrics_max_abs_diff`:
  the largest gap over all of them); the batch export of the same model (`export_identical`:
  the same files, byte for byte).
- `speedup_2_vs_1` / `dask1_vs_local` (on `--speed-scale`): fraud features and batch export
  timed on the local engine, on 1 and on 2 workers, in one run, after a warm-up task on each
  cluster (cluster start-up is not timed). Ratios only: the machine is shared. `fraud_features`
  is the fraud job's path (the workers read the partitioned Parquet, validate and featurise it,
  the features stay on them) against the local engine reading the same files;
  `fraud_features_gathered_into_client` the features of an in-memory table gathered into the
  client. `speed_detail.spilled_mb`: what each worker spilled to disk.
- `factor_model`: the recommender's aggregated matrix of `--speed-scale` (customers, products,
  nnz, MB) and ALS fitted on one worker (seconds, the worker's peak RSS).
- `xlarge` (`experiments/bench_scale_xlarge.py`): end to end on a LocalCluster of 2 workers x
  6 GB (generate, validate, fraud features + training, recommender + export), each stage's wall
  time and peak RSS of every process, written as each stage ends; then the local engine's
  stages on `xlarge` and `large`, each in a child process killed past `--local-cap-mb` (12 GB:
  the cluster's total), with its peak RSS or the stage and RSS where it was stopped.
- `local_handbook_features_s`: every handbook payment featurised by the local engine (best of 2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shopml.compute import Compute, ComputeConfig, open_compute

EXPORT_K = 20


def _rss_mb() -> float:
    """Peak RSS of the calling process in MB: VmHWM of /proc/self/status (per address space;
    ru_maxrss would carry a spawned worker's parent's peak over the exec), else ru_maxrss."""
    from experiments.bench_scale_xlarge import _vm_hwm_mb

    mb = _vm_hwm_mb()
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if mb is None else mb, 1)


def peak_rss(compute: Compute | None) -> dict[str, float]:
    """Peak RSS of the client process and of every Dask worker (MB)."""
    out = {"client": _rss_mb()}
    if compute is not None and compute.is_dask:
        per_worker = compute.client.run(_rss_mb)
        for i, (_, mb) in enumerate(sorted(per_worker.items())):
            out[f"worker-{i}"] = mb
    return out


def spilled_mb(compute: Compute) -> dict[str, float]:
    """MB each Dask worker has written to its spill directory since it started (0: the data
    it held always fitted its memory target)."""

    def written(dask_worker) -> float:
        metrics = getattr(dask_worker.data, "cumulative_metrics", {})
        return round(metrics.get(("disk-write", "bytes"), 0.0) / 1e6, 1)

    per_worker = compute.client.run(written)
    return {f"worker-{i}": mb for i, (_, mb) in enumerate(sorted(per_worker.items()))}


def _cluster(n_workers: int, memory_limit: str = "6GB"):
    cfg = ComputeConfig(
        engine="dask", n_workers=n_workers, memory_limit=memory_limit, partitions=2 * n_workers
    )
    return open_compute(cfg)


def _warm(compute: Compute) -> None:
    """Import the libraries on every worker before anything is timed."""

    def imports() -> bool:
        import features.fraud.batch  # noqa: F401
        import models.recommenders  # noqa: F401

        return True

    compute.client.run(imports)


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ---- the pieces ------------------------------------------------------------------------------
def fraud_columns(payments, compute: Compute | None):
    from features.fraud.batch import compute_columns

    return compute_columns(payments, compute=compute)


def write_partitioned(payments, store: Path, n_files: int = 16) -> Path:
    """`payments` as `n_files` Parquet row ranges of a store folder's `payments/`: the
    partitioned source a cluster job reads (each worker its own files, none through the client)."""
    folder = store / "payments"
    folder.mkdir(parents=True, exist_ok=True)
    edges = np.linspace(0, len(payments), n_files + 1).astype("int64")
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        payments.iloc[a:b].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return store


def fraud_frame_on_cluster(store: Path, n_rows: int) -> int:
    """The fraud job's own path on the cluster (`training/fraud_dask.py`): payments read by the
    workers from partitioned Parquet (validated per partition), features computed and persisted
    in the workers' memory (what `lightgbm.dask` trains from), not gathered into the client.
    Returns the rows held."""
    from distributed import get_client

    from features.frames import read_parquet_table
    from features.fraud.batch_dask import feature_frame, with_row_numbers

    payments = with_row_numbers(read_parquet_table(store, "payments"))
    frame = feature_frame(payments, npartitions=payments.npartitions, n_rows=n_rows)
    held = int(get_client().compute(frame.map_partitions(len).sum()).result())
    del frame
    if held != n_rows:
        raise RuntimeError(f"fraud features held on the cluster for {held} of {n_rows} payments")
    return held


def fraud_columns_local_from(store: Path) -> dict:
    """The local engine on the same source as `fraud_frame_on_cluster`: the partitioned
    payments read whole and validated (`Store.read`), then featurised in this process."""
    from features.fraud.batch import compute_columns
    from features.store import Store

    return compute_columns(Store.read(store, tables=("payments",)).payments)


def same_columns(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def recommender_parts(store, compute: Compute | None):
    """(matrix, fitted model, metrics) of the recommender on `store`'s temporal split: EASE
    blended with ALS as in experiments/configs/recommender.toml, fitted where `compute` fits."""
    from features.interactions import InteractionConfig, events_frame
    from training import recommender_job as job
    from training.recommender_eval import evaluate, truth_from_events

    config = job.RecommenderJobConfig.model_validate(
        {
            "interactions": {"quantity_weighting": "log", "half_life_days": 120.0},
            "model": {"kind": "ease", "params": {"l2": 400.0}},
            "blend_with": [{"kind": "als", "params": {"factors": 32, "iterations": 10}}],
        }
    )
    cfg: InteractionConfig = config.interactions
    events = events_frame(store, cfg)
    split, cutoff = job.split_events(events, config.split)
    matrix = job._matrix(split.train, cfg, cutoff, compute)
    model = job._fit_on(compute, job.build_model(config), matrix, store.products)
    metrics = evaluate(model, truth_from_events(split.test, matrix), config.k)
    return matrix, model, {k: float(v) for k, v in metrics.items()}


def forecast_metrics(store, compute: Compute | None) -> tuple[dict[str, float], Any]:
    """Backtest summary of the LightGBM forecaster (top 200 products, 2 folds of 28 days) and
    its scored forecasts (every fold's quantiles beside the actuals, one frame)."""
    from features.demand import PanelConfig, store_country
    from features.demand_dask import build_panel_on
    from features.known_future import KnownFuture
    from models.forecast import make_forecaster
    from training.backtest import backtest

    lines = store.order_lines
    cfg = PanelConfig(top_n=200, country=store_country(lines, store.customers))
    panel = build_panel_on(compute, lines, store.products, cfg, KnownFuture.from_store(store))

    def lightgbm():
        return make_forecaster("lightgbm", horizon=28, seed=0)

    result = backtest(
        lines,
        store.products,
        {"lightgbm": lightgbm},
        n_folds=2,
        horizon=28,
        panel_config=cfg,
        full_panel=panel,
        known=panel.known,
        compute=compute,
    )
    summary = result.summary()["lightgbm"]
    keys = ("wape", "mase", "bias", "pinball_loss", "coverage_p10_p90")
    return {k: float(summary[k]) for k in keys if k in summary}, result.pooled("lightgbm")


def export_files(model, folder: Path, compute: Compute | None, block_customers: int) -> dict:
    from training.export import export_recommendations

    export_recommendations(
        model, folder, k=EXPORT_K, compute=compute, block_customers=block_customers, force=True
    )
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- the sections ----------------------------------------------------------------------------
def parity(scale: str, tmp: Path) -> dict:
    """Features, metrics and export of both engines on the generated `scale` store."""
    from features.generator import GeneratorConfig, generate

    store = generate(GeneratorConfig(scale=scale, seed=0))
    out: dict[str, Any] = {"scale": scale, "seconds": {}}
    local_cols, out["seconds"]["fraud_features_local"] = _timed(fraud_columns, store.payments, None)
    local_m, local_model, local_rec = recommender_parts(store, None)
    (local_fc, local_fcast), out["seconds"]["forecast_backtest_local"] = _timed(
        forecast_metrics, store, None
    )
    local_files = export_files(local_model, tmp / "export-local", None, 5_000)
    with _cluster(2, "6GB") as compute:
        _warm(compute)
        dask_cols, out["seconds"]["fraud_features_dask2"] = _timed(
            fraud_columns, store.payments, compute
        )
        dask_m, dask_model, dask_rec = recommender_parts(store, compute)
        (dask_fc, dask_fcast), out["seconds"]["forecast_backtest_dask2"] = _timed(
            forecast_metrics, store, compute
        )
        # each engine's own model, exported by that engine: the whole path compared
        dask_files = export_files(dask_model, tmp / "export-dask", compute, 5_000)
        out["peak_rss_mb"] = peak_rss(compute)
    diffs = {f"recommender.{k}": abs(local_rec[k] - dask_rec[k]) for k in local_rec}
    diffs |= {f"forecast.{k}": abs(local_fc[k] - dask_fc[k]) for k in local_fc}
    out |= {
        "features_identical": same_columns(local_cols, dask_cols),
        "feature_columns": len(local_cols),
        "payments": len(store.payments),
        "matrix_identical": bool(
            (local_m.matrix != dask_m.matrix).nnz == 0
            and np.array_equal(local_m.customer_ids, dask_m.customer_ids)
        ),
        "metrics_max_abs_diff": max(diffs.values()),
        "metrics_abs_diff": diffs,
        "recommender_metrics": {"local": local_rec, "dask": dask_rec},
        "forecast_metrics": {"local": local_fc, "dask": dask_fc},
        "forecasts_identical": bool(local_fcast.equals(dask_fcast)),
        "forecast_rows": len(local_fcast),
        "export_identical": local_files == dask_files,
        "export_files": len(local_files),
    }
    return out


def speed(scale: str, tmp: Path) -> dict:
    """Fraud features and batch export on `scale`: local, 1 worker, 2 workers (one run)."""
    from features.interactions import InteractionConfig, build_matrix, events_frame
    from features.sources import SourceConfig, load_source
    from models.recommenders import ALSRecommender

    store = load_source(SourceConfig(kind="generated", scale=scale, seed=0))
    payments = store.payments
    seconds: dict[str, float] = {}
    _, seconds["fraud_features_local"] = _timed(fraud_columns, payments, None)
    matrix, seconds["matrix_local"] = _timed(
        build_matrix, events_frame(store, InteractionConfig()), InteractionConfig()
    )
    als = ALSRecommender(factors=64, iterations=5)
    rss_before = _rss_mb()
    model, seconds["als_fit_local"] = _timed(als.fit, matrix, store.products)
    block = max(len(model.customer_ids_) // 16, 1)  # 16 files: enough blocks for 2 workers
    _, seconds["export_local"] = _timed(export_files, model, tmp / "x-local", None, block)
    factor = {
        "customers": int(matrix.shape[0]),
        "products": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "matrix_mb": round((matrix.matrix.data.nbytes + matrix.matrix.indices.nbytes) / 1e6, 1),
        "factors_mb": round((model.user_factors_.nbytes + model.item_factors_.nbytes) / 1e6, 1),
        "fit_seconds_local": round(seconds["als_fit_local"], 2),
        "client_peak_rss_mb_before_fit": rss_before,
    }
    rss: dict[str, dict] = {"local": peak_rss(None)}
    spilled: dict[str, dict] = {}
    source = write_partitioned(payments, tmp / "partitioned-store")
    _, seconds["fraud_features_local_from_parquet"] = _timed(fraud_columns_local_from, source)
    for n in (1, 2):
        with _cluster(n) as compute:
            _warm(compute)
            # the fraud job's path first, on the fresh cluster a job starts
            _, seconds[f"fraud_features_on_cluster_dask{n}"] = _timed(
                fraud_frame_on_cluster, source, len(payments)
            )
            spilled[f"dask{n}_after_on_cluster"] = spilled_mb(compute)
            _, seconds[f"fraud_features_dask{n}"] = _timed(fraud_columns, payments, compute)
            _, seconds[f"export_dask{n}"] = _timed(
                export_files, model, tmp / f"x-dask{n}", compute, block
            )
            if n == 1:
                _, seconds["als_fit_worker"] = _timed(
                    _fit_on_worker,
                    compute,
                    ALSRecommender(factors=64, iterations=5),
                    matrix,
                    store.products,
                )
                factor["fit_seconds_one_worker"] = round(seconds["als_fit_worker"], 2)
            rss[f"dask{n}"] = peak_rss(compute)
            spilled[f"dask{n}"] = spilled_mb(compute)
    factor["worker_peak_rss_mb"] = rss["dask1"].get("worker-0")
    s = seconds
    return {
        "scale": scale,
        "payments": len(payments),
        "interactions": len(store.interactions),
        "seconds": {k: round(v, 2) for k, v in s.items()},
        # `fraud_features`: the fraud job's path (`fraud_frame_on_cluster`) against the local
        # engine on the same partitioned Parquet; the features gathered into the client from an
        # in-memory table (`compute_columns(payments, compute)`) kept beside it, named so
        "speedup_2_vs_1": {
            "fraud_features": round(
                s["fraud_features_on_cluster_dask1"] / s["fraud_features_on_cluster_dask2"], 3
            ),
            "fraud_features_gathered_into_client": round(
                s["fraud_features_dask1"] / s["fraud_features_dask2"], 3
            ),
            "export": round(s["export_dask1"] / s["export_dask2"], 3),
        },
        "dask1_vs_local": {
            # both engines read and validate the same partitioned Parquet before featurising
            "fraud_features": round(
                s["fraud_features_on_cluster_dask1"] / s["fraud_features_local_from_parquet"], 3
            ),
            "fraud_features_gathered_into_client": round(
                s["fraud_features_dask1"] / s["fraud_features_local"], 3
            ),
            "export": round(s["export_dask1"] / s["export_local"], 3),
        },
        "factor_model": factor,
        "peak_rss_mb": rss,
        "spilled_mb": spilled,
    }


def _fit_on_worker(compute: Compute, model, matrix, products):
    return compute.client.submit(model.fit, matrix, products, pure=False).result()


def handbook_features_seconds() -> float | None:
    """Best of 2: every handbook payment featurised by the local engine (None without data)."""
    from features.loaders import fraud_handbook
    from shopml.errors import ShopmlError

    try:
        payments = fraud_handbook.load().payments
    except (ShopmlError, OSError):
        return None
    return round(min(_timed(fraud_columns, payments, None)[1] for _ in range(2)), 3)


def recommender_from_frames(path: Path, tmp: Path, compute: Compute) -> dict:
    """The recommender stage of a partitioned store: the matrix aggregated on the cluster
    (`build_matrix_frames`: no table whole in one process), EASE's refusal when the catalog is
    past its limit, ALS fitted on one worker, every customer's top-k exported on the cluster."""
    import pandas as pd

    from features.frames import read_parquet_table, table_parts
    from features.interactions import InteractionConfig, build_matrix_frames
    from models.recommenders import ALSRecommender
    from models.recommenders.ease import check_catalog_size
    from shopml.errors import ConfigError

    inter = read_parquet_table(path, "interactions")  # each part validated as it is read
    lines = read_parquet_table(path, "order_lines")
    products = pd.concat(pd.read_parquet(f) for f in table_parts(path, "products"))
    seconds: dict[str, float] = {}
    matrix, seconds["matrix"] = _timed(
        build_matrix_frames, inter, lines, InteractionConfig(), compute
    )
    try:
        check_catalog_size(matrix.shape[1])
        ease = "accepted"
    except ConfigError as err:
        ease = f"refused: {err}"
    model, seconds["als_fit_one_worker"] = _timed(
        _fit_on_worker, compute, ALSRecommender(factors=64, iterations=5), matrix, products
    )
    block = max(len(model.customer_ids_) // 32, 1)
    result, seconds["export"] = _timed(_export, model, tmp / "xlarge-export", compute, block)
    return {
        "customers": int(matrix.shape[0]),
        "products": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "ease": ease,
        "export_rows": result.rows,
        "export_files": result.files,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _export(model, folder: Path, compute: Compute, block_customers: int):
    from training.export import export_recommendations

    return export_recommendations(
        model, folder, k=EXPORT_K, compute=compute, block_customers=block_customers, force=True
    )


# Every fraud and this share of the genuine training payments train the xlarge booster: the
# features of all ~20M training payments would be ~13 GB, more than the cluster's 12 GB. The
# local engine's stages of the xlarge section use the same config (`fraud_job_config`).
XLARGE_NEG_SAMPLE_RATE = 0.05


def fraud_job_config(path: Path, compute: dict, neg_sample_rate: float = XLARGE_NEG_SAMPLE_RATE):
    """`shopml train fraud`'s config (experiments/configs/fraud.toml) on the store folder
    `path`, nothing registered, genuine training payments sampled at `neg_sample_rate`."""
    from shopml.config import load_config
    from shopml.settings import CONFIG_DIR
    from training.fraud_job import FraudJobConfig

    cfg = load_config(CONFIG_DIR / "fraud.toml", FraudJobConfig)
    data = cfg.model_dump(mode="json", exclude_unset=True)
    data["source"] = {"kind": "store", "path": str(path)}
    data["register_model"] = False
    data["compute"] = compute
    data.setdefault("model", {})["neg_sample_rate"] = neg_sample_rate
    return FraudJobConfig.model_validate(data)


FRAUD_KEEP = ("auc_roc", "average_precision", "card_precision_at_100")
FRAUD_KEEP += ("feature_seconds", "train_seconds", "n_train")


def fraud_from_frames(path: Path, compute: Compute) -> dict:
    """`shopml train fraud` on the store folder `path` with this cluster (nothing registered)."""
    from training.fraud_job import train

    cfg = fraud_job_config(path, {"engine": "dask", "partitions": compute.n_partitions})
    result, seconds = _timed(train, cfg, None, compute)
    return {
        "seconds": round(seconds, 1),
        "neg_sample_rate": cfg.model.neg_sample_rate,
        "metrics": {k: round(float(v), 4) for k, v in result.metrics.items() if k in FRAUD_KEEP},
        "run_id": result.run_id,
    }


def run(
    out: Path | None = None,
    parity_scale: str = "medium",
    speed_scale: str = "large",
    xlarge: bool = True,
    xlarge_path: Path | None = None,
    only: str | None = None,
    xlarge_minutes: float = 180.0,
    local_cap_mb: float = 12_000,
) -> dict:
    """Every section (see the module docstring), or `only` one of parity / speed / xlarge
    (the others are then null); written to `out` as JSON when given, again after every section
    and every xlarge stage (a late failure still leaves the figures before it). The xlarge
    section stops what is still running `xlarge_minutes` after it starts."""
    tmp = Path(tempfile.mkdtemp(prefix="shopml-bench-scale-"))
    notes: list[str] = []
    report: dict[str, Any] = {
        "machine": {"note": "shared 2-core machine; compare ratios only"},
        "code": code_version(),
        "parity": None,
        "xlarge": None,
        "speedup_2_vs_1": None,
        "dask1_vs_local": None,
        "local_handbook_features_s": None,
    }

    def save(xl: dict | None = None) -> None:
        if xl is not None:
            report["xlarge"] = xl
        if out is not None:
            _write_json(Path(out), report | {"notes": notes})

    try:
        if only in (None, "parity"):
            par = parity(parity_scale, tmp)
            keys = ("features_identical", "metrics_max_abs_diff", "export_identical")
            keys += ("forecasts_identical", "matrix_identical")
            report["parity"] = {k: par[k] for k in keys}
            report["parity_detail"] = par
            save()
        if only in (None, "speed"):
            spd = speed(speed_scale, tmp)
            report["speedup_2_vs_1"] = spd["speedup_2_vs_1"]
            report["dask1_vs_local"] = spd["dask1_vs_local"]
            report["factor_model"] = spd["factor_model"]
            report["speed_detail"] = spd
            report["local_handbook_features_s"] = handbook_features_seconds()
            if report["local_handbook_features_s"] is None:
                notes.append("fraud handbook data not found: local_handbook_features_s is null")
            save()
        if only in (None, "xlarge") and xlarge:
            from experiments.bench_scale_xlarge import xlarge_end_to_end

            deadline = time.time() + 60 * xlarge_minutes
            report["xlarge"] = xlarge_end_to_end(tmp, xlarge_path, save, deadline, local_cap_mb)
            if not report["xlarge"]["completed"]:
                notes.append("xlarge did not complete: see xlarge.stages for the stage and error")
        report["notes"] = notes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save()
    return report


def code_version() -> dict:
    """The commit the benchmark ran from and the files changed beside it: workers import
    modules when a task first needs them, so a file edited during a run in a shared checkout
    would put two versions of the code into one comparison. Run from a clean tree or an exported
    snapshot (`git archive HEAD | tar -x -C DIR; git rev-parse HEAD > DIR/.snapshot-commit`)."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    mark = here / ".snapshot-commit"
    if mark.is_file():
        return {"path": str(here), "commit": mark.read_text().strip(), "snapshot": True}
    with tempfile.TemporaryDirectory() as tmp:  # the working tree against HEAD, not the index
        env = os.environ | {"GIT_INDEX_FILE": str(Path(tmp) / "index")}

        def git(*args: str) -> str | None:
            try:
                done = subprocess.run(
                    ["git", *args], cwd=here, env=env, capture_output=True, text=True, timeout=30
                )
            except (OSError, subprocess.SubprocessError):
                return None
            return done.stdout.strip() if done.returncode == 0 else None

        commit = git("rev-parse", "HEAD")
        if commit is None or git("read-tree", "HEAD") is None:
            return {"path": str(here), "commit": None, "note": "not a git checkout"}
        changed = (git("diff", "--name-only") or "").splitlines()
    return {"path": str(here), "commit": commit, "changed_files": changed}


def _write_json(path: Path, report: dict) -> None:
    """Replace `path` whole (written beside it, then renamed): never a half-written file."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(report, indent=2))
    os.replace(part, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--parity-scale", default="medium")
    parser.add_argument("--speed-scale", default="large")
    parser.add_argument("--no-xlarge", action="store_true")
    parser.add_argument("--xlarge-path", type=Path, default=None)
    parser.add_argument("--only", choices=["parity", "speed", "xlarge"], default=None)
    parser.add_argument(
        "--xlarge-minutes", type=float, default=180.0, help="stop the xlarge section after this"
    )
    parser.add_argument(
        "--local-cap-mb", type=float, default=12_000, help="RSS cap of the local-engine runs"
    )
    args = parser.parse_args(argv)
    report = run(
        args.out,
        args.parity_scale,
        args.speed_scale,
        not args.no_xlarge,
        args.xlarge_path,
        args.only,
        args.xlarge_minutes,
        args.local_cap_mb,
    )
    print(json.dumps({k: v for k, v in report.items() if not k.endswith("_detail")}, indent=2))


if __name__ == "__main__":
    main()
