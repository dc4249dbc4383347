"""The xlarge section's measuring parts: peak RSS per process and stage, the capped local-engine
child, a stage's error or deadline recorded instead of lost (experiments/bench_scale_xlarge.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from experiments.bench_scale_xlarge import ProcessPeaks, run_capped, run_stage
from shopml.errors import DataError

# a child that holds `MB` megabytes of touched memory, then sleeps
HOLD = "import sys, time; b = bytearray({mb} << 20); b[::4096] = b'x' * len(b[::4096]); "
HOLD += "print('ready', flush=True); time.sleep({sleep})"


def test_peaks_name_each_process_and_start_again_per_stage():
    with ProcessPeaks(interval=0.05) as peaks:
        peaks.begin_stage()
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD.format(mb=200, sleep=30)], stdout=subprocess.PIPE
        )
        try:
            assert child.stdout.readline().strip() == b"ready"
            time.sleep(0.3)
            first = peaks.end_stage()
        finally:
            child.kill()
            child.wait()
        helper = f"helper-{child.pid}"
        assert first[helper] >= 190  # the child's 200 MB, under its own name
        assert first["client"] > 0
        peaks.begin_stage()
        second = peaks.end_stage()
    assert helper not in second  # gone before the second stage began: not in its peaks
    assert peaks.peaks()[helper] >= 190  # but kept in the run's


def test_capped_child_is_killed_past_the_cap_and_the_reason_recorded(tmp_path):
    rec = run_capped(
        [sys.executable, "-c", HOLD.format(mb=400, sleep=30)],
        cap_mb=150,
        deadline=time.time() + 20,
        result=tmp_path / "r.json",
    )
    assert "killed by the watchdog" in rec["error"]
    assert rec["peak_rss_mb"] > 150
    assert rec["seconds"] < 15


def test_capped_child_figures_and_own_peak_come_back(tmp_path):
    out = tmp_path / "r.json"
    code = HOLD.format(mb=100, sleep=0) + f"; open({str(out)!r}, 'w').write("
    code += '\'{"rows": 3, "vm_hwm_mb": 5000.0}\')'
    rec = run_capped([sys.executable, "-c", code], 1e6, time.time() + 20, out)
    assert "error" not in rec
    assert rec["rows"] == 3
    assert rec["peak_rss_mb"] == 5000.0  # the child's own VmHWM wins over coarser samples


def test_capped_child_failing_reports_its_exit_code(tmp_path):
    rec = run_capped(
        [sys.executable, "-c", "raise SystemExit(3)"], 1e6, time.time() + 20, tmp_path / "r.json"
    )
    assert rec["error"] == "exit code 3"


def _fails():
    raise DataError("payments.amount: 3 rows are negative")


@pytest.mark.parametrize(
    ("fn", "deadline_s", "expected"),
    [
        (_fails, 20, "DataError: payments.amount: 3 rows are negative"),
        (lambda: time.sleep(5), 0.3, "stopped at the deadline"),
    ],
)
def test_stage_error_or_deadline_is_recorded_not_raised(fn, deadline_s, expected):
    with ProcessPeaks(interval=0.05) as peaks:
        rec = run_stage("x", fn, (), peaks, time.time() + deadline_s)
    assert rec["error"].startswith(expected)


def test_stage_past_the_deadline_is_not_run():
    with ProcessPeaks(interval=0.05) as peaks:
        rec = run_stage("x", lambda: None, (), peaks, time.time() - 1)
    assert rec == {"not_run": "no time left before the deadline"}


def test_a_process_named_after_it_was_first_sampled_keeps_its_peak_under_that_name():
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(mb=100, sleep=30)], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout.readline().strip() == b"ready"
        with ProcessPeaks(interval=0.05) as peaks:
            peaks.begin_stage()
            time.sleep(0.2)
            peaks.labels = lambda: {child.pid: "worker-0"}
            stage = peaks.end_stage()
    finally:
        child.kill()
        child.wait()
    assert stage["worker-0"] >= 95
    assert f"helper-{child.pid}" not in stage and f"helper-{child.pid}" not in peaks.peaks()
    assert peaks.incarnations() == {"worker-0": 1}


def test_stage_figures_time_and_peaks():
    with ProcessPeaks(interval=0.05) as peaks:
        rec = run_stage("x", lambda n: {"rows": n}, (7,), peaks, time.time() + 20)
    assert rec["rows"] == 7
    assert rec["seconds"] >= 0
    assert rec["peak_rss_mb"]["client"] > 0


def test_given_store_carries_its_generate_figures_or_refuses_another_generator(tmp_path):
    import json

    from experiments.bench_scale_xlarge import generate_record, given_store
    from features.generator import GENERATOR_VERSION

    store = tmp_path / "xlarge"
    assert "made elsewhere" in given_store(store)["skipped"]
    generate_record(store).write_text(
        json.dumps({"generator_version": GENERATOR_VERSION, "seconds": 9})
    )
    assert given_store(store)["when_generated"]["seconds"] == 9
    generate_record(store).write_text(json.dumps({"generator_version": -1}))
    assert "generate it again" in given_store(store)["error"]
