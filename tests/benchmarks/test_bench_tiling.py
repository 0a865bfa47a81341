"""bench_tiling: the bytes and rates it reports, the options reaching the kernel, bad input one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from unetrt.benchmarks import bench_tiling
from unetrt.benchmarks.stats import summarize
from unetrt.cpu import usable_cores
from unetrt.tiling import plan_tiles


def test_a_pass_moves_uint8_in_and_fp16_out() -> None:
    grid = plan_tiles((64, 64), 32)
    # 4 tiles of 32 x 32 x 3: 1 byte read and 2 bytes written per value, 4 * 3072 * 3 = 36864 bytes.
    assert bench_tiling.tile_bytes(grid) == 36864


def test_rates_are_taken_at_the_median_in_seconds() -> None:
    grid = plan_tiles((64, 64), 32)
    # Trial medians 2 and 3 ms: 2.5 ms median; 4 tiles / 0.0025 s = 1600 tiles/s, 36864 B / 0.0025 s = 0.0147456 GB/s.
    figures = bench_tiling.figures(summarize([[2.0], [3.0]]), grid)
    assert figures["tiles_per_s"] == pytest.approx(1600)
    assert figures["effective_gb_s"] == pytest.approx(0.0147456)


def record_kernel_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread counts the native extract kernel is called with, from here on."""
    seen: list[int] = []
    native = bench_tiling._tiling

    def extract_tiles(*args: Any, threads: int, **kwargs: Any) -> Any:
        seen.append(threads)
        return native.extract_tiles(*args, threads=threads, **kwargs)

    monkeypatch.setattr(bench_tiling, "_tiling", SimpleNamespace(extract_tiles=extract_tiles))
    return seen


def test_the_thread_count_reaches_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_kernel_threads(monkeypatch)
    grid = plan_tiles((64, 64), 32)
    frame = np.zeros((64, 64, 3), np.uint8)
    bench_tiling.kernel_extract(frame, grid, np.empty((grid.count, 3, 32, 32), np.float16), 3)
    assert seen == [3]


def test_zero_threads_asks_the_kernel_for_the_cores_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A process that may use one core (taskset, a container): the report named 1 thread while the kernel, given 0,
    # counted the machine's cores itself.
    seen = record_kernel_threads(monkeypatch)
    monkeypatch.setattr(bench_tiling, "usable_cores", lambda: 1)
    assert bench_tiling.main(["--size", "64", "--tile", "32", "--overlap", "8", "--trials", "1", "--iterations", "1",
                              "--threads", "0", "--no-gpu", "--results-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "tiling_cpu.json").read_text())["cpu"]["threads"] == 1
    assert seen and set(seen) == {1}


def test_the_thread_counts_the_kernels_run_are_taken_up_to_their_cap() -> None:
    # The native kernels run at most 256 threads (cpp_ext/bindings.cpp): 256 is a count they run, 257 is not.
    assert bench_tiling.kernel_threads(bench_tiling.KERNEL_MAX_THREADS) == 256
    with pytest.raises(ValueError, match=r"--threads must be from 0 .* to 256, got 257"):
        bench_tiling.kernel_threads(257)


@pytest.mark.parametrize("threads", [1, 0])
def test_a_short_cpu_run_reports_its_grid_threads_and_speedup(tmp_path: Path, threads: int) -> None:
    assert bench_tiling.main(["--size", "64", "--tile", "32", "--overlap", "8", "--trials", "2", "--iterations", "2",
                              "--threads", str(threads), "--no-gpu", "--results-dir", str(tmp_path)]) == 0
    # Without a GPU part the files are the CPU ones.
    result = json.loads((tmp_path / "tiling_cpu.json").read_text())
    assert not (tmp_path / "tiling_gpu.json").exists() and result["gpu"] is None
    # 64 px with 32 px tiles 8 px apart in overlap: tiles start at 0, 24 and 32 (the last at the edge), 3 x 3.
    assert (result["tiles"], result["overlap"]) == (9, 8)
    cpu = result["cpu"]
    # 0 asks for one thread per core, and the report names that count.
    assert cpu["threads"] == (threads or usable_cores())
    assert cpu["cpu_kernel"]["latency_ms"]["iterations"] == 4
    assert cpu["cpu_speedup"] == pytest.approx(cpu["cpu_reference"]["latency_ms"]["median"]
                                               / cpu["cpu_kernel"]["latency_ms"]["median"])


def test_a_zero_size_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_tiling.main(["--size", "0", "--no-gpu", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--size, --trials and --iterations must be positive" in err and err.count("\n") == 1
