"""StreamStats keeps its windows of samples in memory allocated up front: resident memory does not grow as the
windows fill (a soak read the old deques of floats, 3.2 MB over the first 10,000 frames, as a leak)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from unetrt.benchmarks.stats import current_rss_bytes
from unetrt.stream import stats as stream_stats
from unetrt.stream.stats import StreamStats, describe_runtime, describe_runtime_line, format_summary


def test_window_keeps_the_latest_samples() -> None:
    window = stream_stats.SampleWindow(3)
    assert window.values().size == 0
    for value in range(1, 3):
        window.add(float(value))
    assert sorted(window.values().tolist()) == [1.0, 2.0]
    for value in range(3, 6):
        window.add(float(value))
    assert sorted(window.values().tolist()) == [3.0, 4.0, 5.0]


# In a fresh interpreter: inside the suite's process, threads left by earlier tests may allocate while the windows
# fill, and the reading then counts their memory.
FILL_THE_WINDOWS = """
from unetrt.benchmarks.stats import current_rss_bytes
from unetrt.stream.stats import LATENCIES, STAGES, StreamStats
stats = StreamStats(window=100_000)
before = current_rss_bytes()
for sample in range(100_000):
    for stage in STAGES + LATENCIES:
        stats.add(stage, float(sample % 97))
assert stats.summary()["stages_ms"]["inference"]["count"] == 100_000
print(current_rss_bytes() - before)
"""


def test_filling_the_windows_does_not_grow_resident_memory() -> None:
    if current_rss_bytes() is None:
        pytest.skip("resident memory cannot be read here")
    ran = subprocess.run([sys.executable, "-c", FILL_THE_WINDOWS], capture_output=True, text=True, check=True)
    grown = int(ran.stdout)
    # Deques of floats grew 32 MB here (10 stages x 100,000 samples x 32 bytes); the rings grow nothing.
    assert grown < 8_000_000, f"{grown / 1e6:.1f} MB"


def test_steady_fps_counts_the_intervals_between_results() -> None:
    # 3 results 0.5 s apart are 2 frame intervals in 1 s: 2 FPS (counting results, not intervals, said 3).
    stats = StreamStats()
    for now in (stats.started_at + 1.0, stats.started_at + 1.5, stats.started_at + 2.0):
        stats.mark_result(now)
    summary = stats.summary()
    assert summary["processed"] == 3 and summary["steady_fps"] == 2.0 and summary["fps"] == 1.5


def test_steady_fps_is_not_stated_from_results_that_left_together() -> None:
    # Two workers' results leave in capture order, so the two of `unet-stream sample --max-frames 2` came 0.1 ms
    # apart and the summary said 9409 FPS steady. Results spanning less than FPS_SETTLE_S state no steady rate (0,
    # as for one result), the rule the live FPS follows.
    stats = StreamStats()
    for now in (stats.started_at + 1.0, stats.started_at + 1.0001):
        stats.mark_result(now)
    summary = stats.summary()
    assert summary["processed"] == 2 and summary["steady_fps"] == 0.0
    # The printed line says why there is no rate; "0.00 FPS steady" would read as a stalled stream.
    assert "no steady rate (results over less than 1 s)" in format_summary(summary)


def test_each_figure_of_a_stage_is_its_own() -> None:
    # Samples 1..100 ms. numpy's linear percentile of sorted values v[0..99] at q is v[k] + f * (v[k+1] - v[k])
    # with k + f = 99 q: p50 at 49.5 is 50.5, p95 at 94.05 is 95.05, p99 at 98.01 is 99.01.
    stats = StreamStats()
    for value in range(1, 101):
        stats.add("inference", float(value))
    assert stats.summary()["stages_ms"]["inference"] == {"count": 100, "mean": 50.5, "p50": 50.5, "p95": 95.05,
                                                         "p99": 99.01, "max": 100.0}


def test_the_printed_summary_shows_each_counter_and_the_latencies() -> None:
    # Every counter a different number, so one shown in another's place is seen.
    stats = StreamStats()
    for counter, amount in (("captured", 9), ("dropped", 3), ("corrupt", 2), ("reconnects", 1), ("written", 4)):
        stats.count(counter, amount)
    for _ in range(5):
        stats.mark_result()
    stats.add("latency", 40.0)
    text = format_summary(stats.summary())
    assert "frames 5 processed, 9 captured, 3 dropped, 2 corrupt, 1 reconnects, 4 written" in text
    assert any(line.split() == ["latency", "40.00", "40.00", "40.00", "40.00"] for line in text.splitlines()), text


def test_the_runtime_line_says_what_ran() -> None:
    backend = SimpleNamespace(name="onnxruntime", precision="fp32", path="m.onnx", device="cpu", threads=None)
    runtime = describe_runtime(SimpleNamespace(backend=backend))
    # None threads: the library's own default, said as such rather than 'None'.
    assert runtime["threads"] == "default"
    assert describe_runtime_line({**runtime, "workers": 1}) == "model m.onnx on onnxruntime, fp32, cpu, default threads"
    # One worker is not announced as '1 workers x ...'; two are.
    assert describe_runtime_line({**runtime, "threads": 2, "workers": 1}).endswith("cpu, 2 threads")
    assert describe_runtime_line({**runtime, "threads": 1, "workers": 2}).endswith("cpu, 2 workers x 1 thread")
