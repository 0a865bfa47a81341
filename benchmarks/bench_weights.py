"""How long a 512x512 weight map takes: the paper's distance map and the size map, on ISBI slices.

Writes ``benchmarks/results/weights_<host>.json`` and ``.md`` with the machine named.

Example:
    python -m unetrt.benchmarks.bench_weights --labels ../shared/data/isbi2012-em/labels
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from unetrt.benchmarks import results_dir
from unetrt.cli import run_cli
from unetrt.datasets import list_images, read_label
from unetrt.export.weights import label_objects, weight_map
from unetrt.paths import write_whole

from .stats import describe_cpu, machine_description, summarize

RESULTS = results_dir()


def bench(labels: str | Path, maps: int, trials: int) -> dict[str, object]:
    """Time each weight map kind over the first ``maps`` label files, ``trials`` times.

    Returns:
        A JSON-ready dictionary: machine, settings and per-kind latency statistics (ms per map).

    Raises:
        ValueError: when ``maps`` or ``trials`` is below 1 (nothing would be timed).
    """
    if maps < 1 or trials < 1:
        raise ValueError(f"--maps and --trials must be at least 1, got {maps} and {trials}")
    files = list_images(labels, "--labels folder")[:maps]
    masks = [read_label(path, binary=True) for path in files]
    results: dict[str, object] = {}
    for kind in ("distance", "size"):
        runs = []
        for _ in range(trials):
            times = []
            for mask in masks:
                start = time.perf_counter()
                weight_map(mask, kind, binary=True)
                times.append((time.perf_counter() - start) * 1e3)
            runs.append(times)
        results[kind] = summarize(runs).to_dict()
    objects = [int(label_objects(mask, binary=True).max()) for mask in masks]
    return {
        "benchmark": "weight maps (binary, w0=10, sigma=5)",
        "machine": machine_description(),
        "labels": str(labels),
        "size": f"{masks[0].shape[1]}x{masks[0].shape[0]}",
        "maps": len(masks),
        "objects_per_map": {"min": min(objects), "max": max(objects)},
        "ms_per_map": results,
    }


def write_results(data: dict[str, object], out: Path) -> tuple[Path, Path]:
    """Write the JSON and a short Markdown table next to it."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"weights_{socket.gethostname()}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_whole(json_path, json.dumps(data, indent=2))
    machine = data["machine"]
    assert isinstance(machine, dict)
    timing = data["ms_per_map"]
    assert isinstance(timing, dict)
    objects = data["objects_per_map"]
    assert isinstance(objects, dict)
    lines = [
        f"# Weight maps, {data['size']} ISBI labels ({data['maps']} maps, {objects['min']}-{objects['max']} objects)",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores, "
        f"load average {machine['load_average']} (shared machine).",
        "",
        "| map | median ms | p90 ms | min ms |",
        "|---|---|---|---|",
    ]
    for kind, stats in timing.items():
        lines.append(f"| {kind} | {stats['median']:.1f} | {stats['p90']:.1f} | {stats['min']:.1f} |")
    write_whole(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", default="../shared/data/isbi2012-em/labels", help="folder of 0/255 masks")
    parser.add_argument("--maps", type=int, default=10, help="label files to time")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    def work() -> None:
        data = bench(args.labels, args.maps, args.trials)
        for path in write_results(data, args.out):
            print(path)
        print(json.dumps(data["ms_per_map"], indent=2))

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
