"""StreamStats keeps its windows of samples in memory allocated up front: resident memory does not grow as the
windows fill (a soak read the old deques of floats, 3.2 MB over the first 10,000 frames, as a leak)."""

from __future__ import annotations

import pytest

from unetrt.benchmarks.stats import current_rss_bytes
from unetrt.stream import stats as stream_stats
from unetrt.stream.stats import LATENCIES, STAGES, StreamStats, format_summary


def test_window_keeps_the_latest_samples() -> None:
    window = stream_stats.SampleWindow(3)
    assert window.values().size == 0
    for value in range(1, 3):
        window.add(float(value))
    assert sorted(window.values().tolist()) == [1.0, 2.0]
    for value in range(3, 6):
        window.add(float(value))
    assert sorted(window.values().tolist()) == [3.0, 4.0, 5.0]


def test_filling_the_windows_does_not_grow_resident_memory() -> None:
    if current_rss_bytes() is None:
        pytest.skip("resident memory cannot be read here")
    stats = StreamStats(window=100_000)
    before = current_rss_bytes()
    for sample in range(100_000):
        for stage in STAGES + LATENCIES:
            stats.add(stage, float(sample % 97))
    grown = current_rss_bytes() - before  # type: ignore[operator]
    # Deques of floats grew 32 MB here (10 stages x 100,000 samples x 32 bytes); the rings grow nothing.
    assert grown < 8_000_000, f"{grown / 1e6:.1f} MB"
    assert stats.summary()["stages_ms"]["inference"]["count"] == 100_000


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
