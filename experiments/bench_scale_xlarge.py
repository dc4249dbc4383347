"""The `xlarge` section of `shopml bench scale`: every stage on a LocalCluster of 2 workers x
6 GB, then what the local engine needs on `large` and `xlarge` under the same 12 GB in all.

Cluster stages, in order (each timed, with the peak RSS of every process while it ran, and the
JSON rewritten as soon as it ends, so a late failure still leaves the earlier figures):

- `generate`: the store simulated a customer chunk at a time (`generate_partitioned`), in this
  process, before the cluster starts (the generator is single-process on either engine);
- `validate`: every partition checked against the contract on the workers (`validate_store`);
- `fraud`: `shopml train fraud` on the cluster over the partitioned store (features and
  `lightgbm.dask` training on the workers);
- `recommender`: the interaction matrix aggregated on the workers, EASE's refusal, ALS on one
  worker, every customer's top-k exported on the cluster.

Local engine (`local_engine`): the same stages, each in a child process (`python -m
experiments.bench_scale_xlarge local-stage ...`) watched by an RSS watchdog that kills it when
its process tree passes the cap: the stage's peak RSS, or the stage and the RSS it was stopped
at. A watchdog rather than RLIMIT_AS: NumPy, OpenBLAS and LightGBM reserve far more address
space than they touch, so an address-space limit fails jobs that fit.

Peak RSS (`ProcessPeaks`): a thread samples this process and every descendant every 0.5 s, and
each process's VmHWM (reset at every stage start through /proc/PID/clear_refs) catches what
happens between samples. A LocalCluster runs its scheduler and nannies inside the process that
starts it, so `client` is the client, the scheduler and the two nannies together; `worker-N`
is worker N's process (all its incarnations, when the nanny restarted it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

MB = 1 << 20
SAMPLE_SECONDS = 0.5
EXPORT_K = 20
LOCAL_STAGES = ("generate", "validate", "fraud", "recommender")
# pieces the cluster cuts a table into: ~1.3M of xlarge's 21M payments each (the default, two
# per worker thread, makes 5M-row pieces whose 78 features alone are 3 GB of a 6 GB worker)
XLARGE_PARTITIONS = 16
# a capped child is also stopped when the machine has less than this left: on a shared machine
# the kernel's out-of-memory killer would otherwise pick a process, maybe another's
MACHINE_RESERVE_MB = 400


def log(msg: str) -> None:
    """A progress line on stderr with the UTC time (the benchmark runs for an hour)."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ---- peak RSS of every process ----------------------------------------------------------------
def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    """VmHWM of a process (its peak RSS since start or the last reset), MB; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_hwm(pid: int) -> bool:
    """Set a process's VmHWM back to its current RSS (`5` into /proc/PID/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class ProcessPeaks:
    """Peak RSS (MB) of this process and of every descendant, per stage and over the run.

    `labels` maps a pid to its name (`worker-0`, ...; see `worker_labels`); this process is
    `client`, any other descendant `helper-PID`. Peaks are kept per pid and named when read, so
    a worker sampled before its nanny reported its pid is still counted as that worker."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.labels: Callable[[], dict[int, str]] = dict
        self.overall: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.hwm_resets = True
        self._stage: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _processes(self) -> list[psutil.Process]:
        me = psutil.Process()
        try:
            return [me, *me.children(recursive=True)]
        except psutil.Error:
            return [me]

    def sample(self) -> None:
        """One reading of every process: max(RSS now, VmHWM since the stage began)."""
        try:
            labels = self.labels()
        except Exception:  # a cluster closing under the sampler: label by pid this time
            labels = {}
        me = os.getpid()
        for proc in self._processes():
            try:
                mb = proc.memory_info().rss / MB
            except psutil.Error:
                continue
            if self.hwm_resets:
                mb = max(mb, _vm_hwm_mb(proc.pid) or 0.0)
            pid = proc.pid
            with self._lock:
                if pid == me:
                    self.names[pid] = "client"
                elif pid in labels:
                    self.names[pid] = labels[pid]
                elif pid not in self.names:
                    self.names[pid] = _helper_label(proc)
                self._stage[pid] = max(self._stage.get(pid, 0.0), mb)
                self.overall[pid] = max(self.overall.get(pid, 0.0), mb)

    def begin_stage(self) -> None:
        """Start a stage's own peaks: every process's VmHWM back to its current RSS."""
        self.sample()
        with self._lock:
            self._stage = {}
        for proc in self._processes():
            self.hwm_resets &= _reset_hwm(proc.pid)
        self.sample()

    def end_stage(self) -> dict[str, float]:
        """The peaks of every process since `begin_stage` (MB)."""
        self.sample()
        with self._lock:
            return self._named(self._stage)

    def peaks(self) -> dict[str, float]:
        with self._lock:
            return self._named(self.overall)

    def incarnations(self) -> dict[str, int]:
        """Processes seen per worker (a worker restarted by its nanny counts twice)."""
        with self._lock:
            names = [n for n in self.names.values() if n.startswith("worker")]
        return {n: names.count(n) for n in sorted(set(names))}

    def _named(self, by_pid: dict[int, float]) -> dict[str, float]:
        """Peaks per name (MB): the largest of a name's processes (a restarted worker's)."""
        out: dict[str, float] = {}
        for pid, mb in by_pid.items():
            name = self.names.get(pid, f"helper-{pid}")
            out[name] = max(out.get(name, 0.0), mb)
        return {k: round(v, 1) for k, v in sorted(out.items())}


def worker_labels(client) -> Callable[[], dict[int, str]]:
    """pid -> `worker-NAME` of a LocalCluster's worker processes, read from its nannies (in this
    process: no call to the cluster, so it works while the workers are busy or restarting);
    a pid once seen keeps its name after the cluster closes."""
    known: dict[int, str] = {}

    def labels() -> dict[int, str]:
        for name, nanny in dict(getattr(client.cluster, "workers", {})).items():
            pid = getattr(getattr(nanny, "process", None), "pid", None)
            if pid is not None:
                known[pid] = f"worker-{name}"
        return known

    return labels


def _helper_label(proc: psutil.Process) -> str:
    """A descendant that is no worker: multiprocessing's resource tracker, or its pid."""
    with contextlib.suppress(psutil.Error):
        if "resource_tracker" in " ".join(proc.cmdline()):
            return "resource-tracker"
    return f"helper-{proc.pid}"


# ---- stages -----------------------------------------------------------------------------------
def run_stage(name: str, fn: Callable[..., Any], args: tuple, peaks: ProcessPeaks, deadline: float):
    """Run `fn(*args)` as stage `name`: its figures (a dict fn returns), `seconds` and the
    `peak_rss_mb` of every process; the error that stopped it instead (`error`, its first
    line), or `stopped at the deadline` when `deadline` (epoch seconds) came first."""
    left = deadline - time.time()
    if left <= 0:
        return {"not_run": "no time left before the deadline"}
    log(f"stage {name}: start ({left / 60:.0f} min before the deadline)")
    peaks.begin_stage()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as err:  # recorded, never lost: the JSON names the stage's error
            box["error"] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"

    t0 = time.perf_counter()
    thread = threading.Thread(target=target, name=f"stage-{name}", daemon=True)
    thread.start()
    thread.join(timeout=left)
    rec: dict[str, Any] = {}
    if thread.is_alive():
        rec["error"] = f"stopped at the deadline after {time.perf_counter() - t0:.0f} s"
    elif "error" in box:
        rec["error"] = box["error"]
    elif isinstance(box.get("result"), dict):
        rec.update(box["result"])
        if isinstance(rec.get("seconds"), dict):  # a stage's own steps: kept beside its wall time
            rec["seconds_by_step"] = rec.pop("seconds")
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    rec["peak_rss_mb"] = peaks.end_stage()
    log(
        f"stage {name}: {'error: ' + rec['error'] if 'error' in rec else 'done'} ({rec['seconds']} s)"
    )
    return rec


def generate_stage(path: Path) -> dict:
    from features.generator import GeneratorConfig, generate_partitioned

    counts = generate_partitioned(GeneratorConfig(scale="xlarge", seed=0), path, overwrite=True)
    return {"rows": counts, "mb_on_disk": round(_folder_mb(path), 1)}


def generate_record(path: Path) -> Path:
    """Where `generate` leaves the generate stage's figures: beside the store folder."""
    return path.with_name(path.name + ".generate.json")


def given_store(path: Path) -> dict:
    """The generate stage of a store made earlier by `python -m experiments.bench_scale_xlarge
    generate` (its figures, marked as not of this run), or a note that it was made elsewhere;
    an error when it was made by another generator version (its tables would differ)."""
    from features.generator import GENERATOR_VERSION

    record = generate_record(path)
    if not record.is_file():
        return {"skipped": f"store given with --xlarge-path {path}, made elsewhere"}
    rec = json.loads(record.read_text())
    if rec.get("generator_version") != GENERATOR_VERSION:
        return {
            "error": f"{path} was made by generator version {rec.get('generator_version')}, "
            f"this build's is {GENERATOR_VERSION}: generate it again"
        }
    return {"skipped": f"store given with --xlarge-path {path}", "when_generated": rec}


def validate_stage(path: Path) -> dict:
    """Every partition of every table validated on the workers (`features.frames`)."""
    from features.frames import validate_store

    return {"rows": validate_store(path)}


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def xlarge_end_to_end(
    tmp: Path,
    path: Path | None,
    save: Callable[[dict], None],
    deadline: float,
    local_cap_mb: float = 12_000,
    local_scales: tuple[str, ...] = ("xlarge", "large"),
) -> dict:
    """The section (see the module docstring); `save(out)` is called after every stage."""
    from experiments import bench_scale as bs

    out: dict[str, Any] = {
        "completed": False,
        "cluster": {"n_workers": 2, "memory_limit": "6GB", "threads_per_worker": 1},
        "deadline_utc": datetime.fromtimestamp(deadline, UTC).isoformat(timespec="seconds"),
        "stages": {},
        "peak_rss_mb": {},
        "processes": "client = the client with the LocalCluster's scheduler and nannies "
        "(they run in its process); worker-N = worker N's process",
    }
    with ProcessPeaks() as peaks:
        if path is None:
            path = tmp / "xlarge"
            out["stages"]["generate"] = run_stage(
                "generate", generate_stage, (path,), peaks, deadline
            )
        else:
            out["stages"]["generate"] = given_store(path)
        out["path"] = str(path)
        out["peak_rss_mb"] = peaks.peaks()
        save(out)
        if "error" not in out["stages"]["generate"]:
            _cluster_stages(out, path, tmp, peaks, deadline, save, bs)
        done = [out["stages"].get(s, {}) for s in LOCAL_STAGES]
        out["completed"] = all(s and "error" not in s and "not_run" not in s for s in done)
        out["generated_in_this_run"] = "skipped" not in out["stages"]["generate"]
        out["peak_rss_mb"] = peaks.peaks()
        out["worker_processes"] = peaks.incarnations()
        out["hwm_reset_per_stage"] = peaks.hwm_resets
        save(out)
    out["local_engine"] = {}
    for scale in local_scales:
        store = path if scale == "xlarge" else None
        out["local_engine"][scale] = local_engine(
            scale, tmp, store, local_cap_mb, deadline, lambda: save(out)
        )
        save(out)
    return out


def _cluster_stages(out, path, tmp, peaks, deadline, save, bs) -> None:
    from shopml.compute import ComputeConfig, open_compute

    cfg = ComputeConfig(
        engine="dask", n_workers=2, memory_limit="6GB", partitions=XLARGE_PARTITIONS
    )
    out["cluster"]["partitions"] = XLARGE_PARTITIONS
    with open_compute(cfg) as compute:
        peaks.labels = worker_labels(compute.client)
        bs._warm(compute)
        stages = (
            ("validate", validate_stage, (path,)),
            # the longest stage last: stopped at the deadline, it leaves the others' figures
            ("recommender", bs.recommender_from_frames, (path, tmp, compute)),
            ("fraud", bs.fraud_from_frames, (path, compute)),
        )
        for name, fn, args in stages:
            out["stages"][name] = run_stage(name, fn, args, peaks, deadline)
            out["peak_rss_mb"] = peaks.peaks()
            save(out)


# ---- the local engine under a memory cap -------------------------------------------------------
def run_capped(cmd: list[str], cap_mb: float, deadline: float, result: Path) -> dict:
    """Run `cmd` (which writes its figures as JSON to `result`) while a watchdog samples the RSS
    of its process tree every 0.2 s and kills the tree past `cap_mb`, when the machine runs
    out of memory (`MACHINE_RESERVE_MB`) or at `deadline`: the
    figures, `peak_rss_mb` (max of the samples and the child's own VmHWM) and `seconds`, or
    `error` naming why it stopped."""
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    peak, why = 0.0, None
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            mb = _tree_rss_mb(root)
            peak = max(peak, mb)
            if mb > cap_mb:
                why = f"killed by the watchdog at {mb:,.0f} MB RSS (cap {cap_mb:,.0f} MB)"
            elif psutil.virtual_memory().available < MACHINE_RESERVE_MB * MB:
                why = (
                    f"stopped at {mb:,.0f} MB RSS, under the cap: the machine had less than "
                    f"{MACHINE_RESERVE_MB} MB left (other processes)"
                )
            elif time.time() > deadline:
                why = "stopped at the deadline"
            if why:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    except psutil.Error:
        pass
    finally:
        rc = proc.wait()
    rec: dict[str, Any] = {}
    if result.is_file():
        rec = json.loads(result.read_text())
    peak = max(peak, float(rec.pop("vm_hwm_mb", 0.0)))
    if why:
        rec["error"] = why
    elif rc != 0:
        rec.setdefault("error", f"exit code {rc}" + (" (killed by the kernel?)" if rc < 0 else ""))
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    rec["peak_rss_mb"] = round(peak, 1)
    return rec


def _tree_rss_mb(root: psutil.Process) -> float:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / MB


def local_engine(
    scale: str, tmp: Path, store: Path | None, cap_mb: float, deadline: float, save: Callable
) -> dict:
    """Every stage of the local engine on `scale`, each in a capped child process (see
    `run_capped`); `store` is the xlarge store the cluster run generated (the generator writes
    xlarge in chunks on either engine, so its generate stage is that run's)."""
    out: dict[str, Any] = {"cap_mb": cap_mb, "stages": {}, "peak_rss_mb": None, "failed_at": None}
    folder = store or tmp / f"local-{scale}"
    for stage in LOCAL_STAGES:
        if stage == "generate" and store is not None:
            out["stages"][stage] = {"skipped": "the chunked writer of xlarge.stages.generate"}
            continue
        if time.time() >= deadline:
            out["stages"][stage] = {"not_run": "no time left before the deadline"}
            continue
        log(f"local {scale} {stage}: start")
        cmd = [sys.executable, "-m", "experiments.bench_scale_xlarge", "local-stage", stage]
        cmd += ["--scale", scale, "--store", str(folder), "--work", str(tmp)]
        result = tmp / f"local-{scale}-{stage}.json"
        rec = run_capped([*cmd, "--result", str(result)], cap_mb, deadline, result)
        log(f"local {scale} {stage}: {rec.get('error', 'done')} ({rec['seconds']} s)")
        out["stages"][stage] = rec
        save()
        if stage == "generate" and "error" in rec:
            break  # nothing to read
    ran = [s for s in out["stages"].values() if "peak_rss_mb" in s]
    out["peak_rss_mb"] = max((s["peak_rss_mb"] for s in ran), default=None)
    out["failed_at"] = next((k for k, s in out["stages"].items() if "error" in s), None)
    return out


def local_stage(stage: str, scale: str, folder: Path, work: Path) -> dict:
    """One stage of the local engine, in this process (the child of `run_capped`)."""
    from features.store import Store

    if stage == "generate":  # `shopml generate --scale large`: simulated whole, then written
        from features.generator import GeneratorConfig, generate

        store = generate(GeneratorConfig(scale=scale, seed=0))
        store.write(folder, overwrite=True)
        return {"rows": store.row_counts()}
    if stage == "validate":  # `shopml validate` of a store read whole
        return {"rows": Store.read(folder).row_counts()}
    if stage == "fraud":  # the cluster's fraud config (bench_scale.fraud_job_config), locally
        from experiments.bench_scale import FRAUD_KEEP, fraud_job_config
        from training.fraud_job import train

        cfg = fraud_job_config(folder, {"engine": "local"})
        result = train(cfg)
        metrics = {k: round(float(v), 4) for k, v in result.metrics.items() if k in FRAUD_KEEP}
        return {"neg_sample_rate": cfg.model.neg_sample_rate, "metrics": metrics}
    if stage == "recommender":
        from features.interactions import InteractionConfig, build_matrix, events_frame
        from models.recommenders import ALSRecommender
        from training.export import export_recommendations

        store = Store.read(folder, ("products", "interactions", "order_lines"))
        seconds = {}
        t0 = time.perf_counter()
        matrix = build_matrix(events_frame(store, InteractionConfig()), InteractionConfig())
        seconds["matrix"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = ALSRecommender(factors=64, iterations=5).fit(matrix, store.products)
        seconds["als_fit"] = time.perf_counter() - t0
        block = max(len(model.customer_ids_) // 32, 1)
        t0 = time.perf_counter()
        done = export_recommendations(
            model, work / f"export-local-{scale}", k=EXPORT_K, block_customers=block, force=True
        )
        seconds["export"] = time.perf_counter() - t0
        return {
            "nnz": int(matrix.nnz),
            "export_rows": done.rows,
            "seconds_by_step": {k: round(v, 1) for k, v in seconds.items()},
        }
    raise ValueError(f"stage: {stage!r} is not one of {', '.join(LOCAL_STAGES)}")


def generate_only(path: Path) -> dict:
    """The generate stage alone (its figures also in `generate_record(path)`), for a later
    `bench scale --only xlarge --xlarge-path PATH` when one run cannot hold every stage."""
    from features.generator import GENERATOR_VERSION

    with ProcessPeaks() as peaks:
        rec = run_stage("generate", generate_stage, (path,), peaks, time.time() + 6 * 3600)
    rec |= {"generator_version": GENERATOR_VERSION, "scale": "xlarge", "seed": 0}
    rec["finished_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    generate_record(path).write_text(json.dumps(rec, indent=2))
    return rec


def main(argv: list[str] | None = None) -> None:
    """`generate --store DIR`: the generate stage alone (`generate_only`), its figures printed.
    `local-stage STAGE --scale S --store DIR --work DIR --result F.json` (a child of
    `run_capped`): the stage's figures and this process's VmHWM into F.json."""
    parser = argparse.ArgumentParser(description="stages of the xlarge section of bench scale")
    parser.add_argument("command", choices=["generate", "local-stage"])
    parser.add_argument("stage", nargs="?", choices=LOCAL_STAGES)
    parser.add_argument("--scale", default="xlarge")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args(argv)
    if args.command == "generate":
        print(json.dumps(generate_only(args.store), indent=2))
        return
    if args.stage is None or args.work is None or args.result is None:
        parser.error("local-stage needs STAGE, --work and --result")
    try:
        rec = local_stage(args.stage, args.scale, args.store, args.work)
    except Exception as err:  # the parent records it as the stage's error
        rec = {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"}
    rec["vm_hwm_mb"] = round(_vm_hwm_mb() or 0.0, 1)
    args.result.write_text(json.dumps(rec))
    if "error" in rec:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
