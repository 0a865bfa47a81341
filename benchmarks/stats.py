"""Figures for unet-bench: latency statistics over repeated trials, host memory and the machine's description."""

from __future__ import annotations

import json
import os
import platform
import resource
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetrt.benchmarks.without_amx import amx_denied
from unetrt.cpu import usable_cores
from unetrt.paths import write_whole

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
CPUINFO = Path("/proc/cpuinfo")
LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one benchmark configuration, in milliseconds.

    ``median`` is the headline figure: the median of the per-trial medians, so no
    single trial decides it; ``spread_pct`` is (max - min) of the trial medians
    relative to that median. The percentiles, mean, min and max pool every timed
    iteration of every trial.

    Attributes:
        median: median of the trial medians.
        mean: mean over all iterations.
        p50: 50th percentile over all iterations.
        p90: 90th percentile over all iterations.
        p99: 99th percentile over all iterations.
        min: fastest iteration.
        max: slowest iteration.
        trial_medians: the median of each trial.
        spread_pct: range of the trial medians in percent of ``median``.
        iterations: timed iterations in all trials together.
    """

    median: float
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    trial_medians: tuple[float, ...]
    spread_pct: float
    iterations: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        data = asdict(self)
        data["trial_medians"] = list(self.trial_medians)
        return data


def summarize(trials: Sequence[Sequence[float]]) -> LatencyStats:
    """Summarise per-iteration latencies (ms) of several trials.

    Args:
        trials: one sequence of iteration latencies per trial; every trial needs at least one.

    Returns:
        The statistics; the headline ``median`` is the median of trial medians.

    Raises:
        ValueError: when there is no trial, or a trial without iterations.

    Example:
        >>> summarize([[1.0, 2.0, 3.0], [2.0, 2.0]]).median
        2.0
    """
    if not trials:
        raise ValueError("need at least one trial to summarise")
    if any(len(trial) == 0 for trial in trials):
        raise ValueError("every trial needs at least one timed iteration; raise --iterations or --duration")
    medians = np.array([float(np.median(trial)) for trial in trials])
    pooled = np.concatenate([np.asarray(trial, dtype=np.float64) for trial in trials])
    median = float(np.median(medians))
    p50, p90, p99 = (float(v) for v in np.percentile(pooled, [50, 90, 99]))
    spread = float((medians.max() - medians.min()) / median * 100) if median > 0 else 0.0
    return LatencyStats(median=median, mean=float(pooled.mean()), p50=p50, p90=p90, p99=p99,
                        min=float(pooled.min()), max=float(pooled.max()),
                        trial_medians=tuple(float(m) for m in medians), spread_pct=spread,
                        iterations=int(pooled.size))


def _status_kib(field: str) -> int | None:
    try:
        text = PROC_STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (``VmRSS``), or None where /proc is unavailable."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set size.

    Reads ``VmHWM`` from /proc (which :func:`reset_peak_rss` can lower); falls back
    to ``resource.getrusage``, which only ever grows.
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        # ru_maxrss is in KiB on Linux.
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Lower the RSS high-water mark to the current RSS (Linux ``clear_refs`` 5).

    Returns:
        True when the mark was reset; False where the kernel does not allow it, in
        which case later peaks include everything measured before.
    """
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _cpuinfo_field(name: str) -> str | None:
    """The first CPU's value of a /proc/cpuinfo field (None where there is none)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_nominal_mhz() -> float | None:
    """The clock /proc/cpuinfo states for the first CPU, in MHz (None where there is none; turbo runs above it).

    Example:
        >>> cpu_nominal_mhz()  # doctest: +SKIP
        2596.142
    """
    value = _cpuinfo_field("cpu MHz")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


# The /proc/cpuinfo flags that decide which CPU kernels run INT8 and BF16 (Linux names).
MATRIX_FEATURES = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16",
                   "amx_int8": "AMX INT8", "amx_bf16": "AMX BF16"}


def cpu_features() -> dict[str, bool] | None:
    """Which of :data:`MATRIX_FEATURES` the CPU has, from /proc/cpuinfo's flags (None where there is none).

    Example:
        >>> sorted(cpu_features() or {})  # doctest: +SKIP
        ['amx_bf16', 'amx_int8', 'avx512_bf16', 'avx512_vnni', 'avx_vnni']
    """
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                 None)
    return None if flags is None else {name: name in flags for name in MATRIX_FEATURES}


def describe_cpu(machine: dict[str, Any]) -> str:
    """The CPU's model and its INT8/BF16 matrix features in words, from :func:`machine_description`.

    Example:
        >>> describe_cpu({"cpu_model": "AMD EPYC", "cpu_features": {"avx512_vnni": True, "amx_int8": False}})
        'AMD EPYC (AVX-512 VNNI; no AMX)'
    """
    features = machine.get("cpu_features")
    if not features:
        return str(machine["cpu_model"])
    denied = bool(machine.get("amx_denied"))
    present = [MATRIX_FEATURES[name] for name, has in features.items()
               if has and not (denied and name.startswith("amx"))]
    has_amx = any(has for name, has in features.items() if name.startswith("amx"))
    amx = "; AMX denied to this process" if denied and has_amx else "" if has_amx else "; no AMX"
    return f"{machine['cpu_model']} ({', '.join(present) or 'no VNNI or BF16'}{amx})"


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_description() -> dict[str, Any]:
    """CPU model and its INT8/BF16 matrix features (and whether AMX is denied to this process:
    :mod:`unetrt.benchmarks.without_amx`), usable cores, total cores and load average, for every result file."""
    features = cpu_features()
    return {
        "cpu_model": cpu_model(),
        "cpu_features": features,
        "amx_denied": bool(features and features["amx_int8"]) and amx_denied(),
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_results(folder: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """Write a benchmark's ``NAME.json`` and ``NAME.md`` into ``folder`` (made if missing) and print the report.

    Example:
        >>> write_results(Path("benchmarks/results"), "finish_cpu", result, to_markdown(result))  # doctest: +SKIP
    """
    folder.mkdir(parents=True, exist_ok=True)
    # An earlier result of that name is replaced whole or not at all, never left half-written.
    write_whole(folder / f"{name}.json", json.dumps(result, indent=2) + "\n")
    write_whole(folder / f"{name}.md", markdown)
    print(markdown)
