"""Latency statistics and host-memory readings of unet-bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unetrt.benchmarks import stats
from unetrt.benchmarks.stats import (
    current_rss_bytes,
    describe_cpu,
    machine_description,
    peak_rss_bytes,
    summarize,
    write_results,
)


def test_headline_is_the_median_of_trial_medians_not_of_pooled_samples() -> None:
    # The long middle trial dominates the pooled samples (pooled median 10); the trial medians 1, 10, 2 give 2.
    trials = [[1.0, 1.0, 1.0], [10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0], [2.0, 2.0, 2.0]]
    stats = summarize(trials)
    assert stats.median == 2.0
    assert stats.p50 == 10.0
    assert stats.trial_medians == (1.0, 10.0, 2.0)
    assert stats.spread_pct == pytest.approx((10.0 - 1.0) / 2.0 * 100)
    assert stats.iterations == 13


def test_percentiles_mean_min_max_pool_every_iteration() -> None:
    rng = np.random.default_rng(0)
    trials = [rng.uniform(1, 3, 50).tolist() for _ in range(4)]
    pooled = np.concatenate(trials)
    stats = summarize(trials)
    assert stats.mean == pytest.approx(pooled.mean())
    assert stats.p90 == pytest.approx(np.percentile(pooled, 90))
    assert stats.p99 == pytest.approx(np.percentile(pooled, 99))
    assert (stats.min, stats.max) == (pooled.min(), pooled.max())
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p99 <= stats.max
    assert set(stats.to_dict()) >= {"median", "mean", "p50", "p90", "p99", "min", "max", "trial_medians", "spread_pct"}


@pytest.mark.parametrize("trials", [[], [[1.0], []]])
def test_trials_without_iterations_are_refused(trials: list[list[float]]) -> None:
    with pytest.raises(ValueError, match="trial"):
        summarize(trials)


# In a fresh interpreter: inside the suite's process, threads left by earlier tests (Ray, thread pools) may
# allocate between the reset and the reading, and the mark then counts their memory, not the block's.
PEAK_RSS_TRIAL = """
import json
import numpy as np
from unetrt.benchmarks.stats import current_rss_bytes, peak_rss_bytes, reset_peak_rss
reset_peak_rss()
before = peak_rss_bytes()
block = np.ones(64 * 1024 * 1024 // 8)
with_block = peak_rss_bytes()
del block
reset = reset_peak_rss()
print(json.dumps({"before": before, "with_block": with_block, "reset": reset,
                  "after_reset": peak_rss_bytes(), "now": current_rss_bytes()}))
"""


def test_peak_rss_follows_a_large_allocation_and_can_be_reset() -> None:
    ran = subprocess.run([sys.executable, "-c", PEAK_RSS_TRIAL], capture_output=True, text=True, check=True)
    reading = json.loads(ran.stdout)
    mib_48 = 48 * 1024 * 1024
    assert reading["with_block"] >= reading["before"] + mib_48  # the touched 64 MiB block
    if reading["reset"]:
        assert reading["now"] is not None
        assert reading["after_reset"] < reading["before"] + mib_48


def test_machine_description_names_cpu_cores_and_load() -> None:
    machine = machine_description()
    assert machine["cpu_model"]
    assert machine["usable_cores"] >= 1
    assert "load_average" in machine


def test_cpu_features_and_their_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    monkeypatch.setattr(stats, "CPUINFO", cpuinfo)
    monkeypatch.setattr(stats, "amx_denied", lambda: False)
    machine = machine_description()
    assert machine["cpu_features"] == {"avx512_vnni": True, "avx_vnni": False, "avx512_bf16": True,
                                       "amx_int8": False, "amx_bf16": False}
    assert describe_cpu(machine) == "AMD EPYC (AVX-512 VNNI, AVX-512 BF16; no AMX)"
    cpuinfo.write_text("model name\t: Xeon\nflags\t\t: avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile\n")
    assert describe_cpu(machine_description()) == "Xeon (AVX-512 VNNI, AVX-512 BF16, AMX INT8, AMX BF16)"
    monkeypatch.setattr(stats, "amx_denied", lambda: True)  # run under unetrt.benchmarks.without_amx
    assert machine_description()["amx_denied"] is True
    assert describe_cpu(machine_description()) == "Xeon (AVX-512 VNNI, AVX-512 BF16; AMX denied to this process)"
    monkeypatch.setattr(stats, "amx_denied", lambda: False)
    cpuinfo.write_text("model name\t: Old\nflags\t\t: sse2\n")
    assert describe_cpu(machine_description()) == "Old (no VNNI or BF16; no AMX)"
    monkeypatch.setattr(stats, "CPUINFO", tmp_path / "absent")
    assert machine_description()["cpu_features"] is None
    assert describe_cpu({"cpu_model": "Apple M2", "cpu_features": None}) == "Apple M2"


def test_nominal_clock_from_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC\ncpu MHz\t\t: 2596.142\ncpu MHz\t\t: 3700.000\n")
    monkeypatch.setattr(stats, "CPUINFO", cpuinfo)
    assert stats.cpu_nominal_mhz() == pytest.approx(2596.142)  # the first CPU's
    cpuinfo.write_text("model name\t: Apple M2\n")
    assert stats.cpu_nominal_mhz() is None
    cpuinfo.write_text("cpu MHz\t\t: unknown\n")
    assert stats.cpu_nominal_mhz() is None
    monkeypatch.setattr(stats, "CPUINFO", tmp_path / "absent")
    assert stats.cpu_nominal_mhz() is None


def test_rss_is_read_from_proc_in_kib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t    3000 kB\nVmRSS:\t    1000 kB\n")
    monkeypatch.setattr(stats, "PROC_STATUS", status)
    # /proc/self/status counts in KiB: 1000 KiB now, 3000 KiB at the high-water mark.
    assert current_rss_bytes() == 1000 * 1024
    assert peak_rss_bytes() == 3000 * 1024
    monkeypatch.setattr(stats, "PROC_STATUS", tmp_path / "absent")
    assert current_rss_bytes() is None


def test_the_cores_named_are_those_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # A container or taskset limit: the report must not claim every core of the machine.
    monkeypatch.setattr(stats, "usable_cores", lambda: 1)
    assert machine_description()["usable_cores"] == 1


def test_results_replace_an_earlier_result_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A second name for the earlier files' bytes: written over in place (a disk that filled halfway left half a
    # result), they change; replaced by a new file, they stay as they were.
    for suffix in ("json", "md"):
        (tmp_path / f"run.{suffix}").write_text("earlier\n")
        os.link(tmp_path / f"run.{suffix}", tmp_path / f"earlier.{suffix}")
    write_results(tmp_path, "run", {"figure": 1}, "# new\n")
    assert json.loads((tmp_path / "run.json").read_text()) == {"figure": 1}
    assert (tmp_path / "run.md").read_text() == "# new\n" and capsys.readouterr().out == "# new\n\n"
    assert [(tmp_path / f"earlier.{suffix}").read_text() for suffix in ("json", "md")] == ["earlier\n"] * 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier.json", "earlier.md", "run.json", "run.md"]
