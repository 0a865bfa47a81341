"""The main job as users run it, ``unet-stream sample OUT.mp4 --model camvid``, against other ways of running it.

Every way is a whole ``unet-stream`` process (model loading, decoding the bundled clip,
segmenting, drawing, encoding the video), timed by the summary it writes with ``--stats``:
frames per second overall (first frame read to last result) and steady (first result to last).
Repeats are interleaved (way 1, way 2, ..., way 1 again) so a change in the machine's load hits
every way alike; medians are reported, with the ratio of each way
to the baseline (the first ``--way`` given, else ONNX Runtime FP32 on one worker).

Built-in ways, all with this checkout's ``unet-stream``:

* ``default``: the main job exactly (the fastest installed CPU engine and precision, one
  inference worker per core);
* ``default, one worker``: the same on one worker with the engine's own threading;
* ``onnxruntime fp32, one worker``: the FP32 model on ONNX Runtime, the main job's path before
  the INT8 and worker work;
* ``default at WxH`` for every ``--working-size WxH``: the main job with frames resized to that size
  for the network in place of the model's own (what another working size costs or saves).

``--way "NAME=EXECUTABLE"`` adds another ``unet-stream`` (another checkout's, such as a previous
release's) that gets the same input, output and model arguments. ``--hide-ffmpeg`` runs every way
with the folders that hold an ``ffmpeg`` command left out of ``PATH``, as on a machine without it:
the .mp4 is then MPEG-4 Part 2 for every way (a release before H.264 output always wrote that).

Usage::

    python -m unetrt.benchmarks.bench_main_job --repeats 5 \\
        --way "previous release=/path/to/old/.venv/bin/unet-stream"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from unetrt import __version__
from unetrt.benchmarks import results_dir
from unetrt.benchmarks.stats import describe_cpu, machine_description, write_results
from unetrt.bundled import PRECISION_SUFFIXES, bundled_model_path
from unetrt.cli import format_size, parse_size, run_cli
from unetrt.model_file import file_precision

RESULTS_DIR = results_dir()
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Way:
    """One way of running the main job: a ``unet-stream`` executable and the options it adds."""

    name: str
    executable: str
    options: tuple[str, ...] = ()
    model: str | None = None  # a model of its own in place of the one benchmarked (the FP32 baseline's file)

    def command(self, model: str, output: Path, stats: Path, max_frames: int | None = None) -> list[str]:
        """The command line of one run (``max_frames``: stop after that many frames, for a quick check)."""
        limit = ["--max-frames", str(max_frames)] if max_frames is not None else []
        return [self.executable, "sample", str(output), "--model", self.model or model, *self.options, *limit,
                "--stats", str(stats)]


def this_checkouts_stream() -> str:
    """The ``unet-stream`` installed beside this interpreter.

    Raises:
        ValueError: when it is not there (unetrt not installed into this environment).
    """
    executable = Path(sys.executable).parent / "unet-stream"
    if not executable.is_file():
        raise ValueError(f"no unet-stream beside {sys.executable}; install unetrt into this environment "
                         "(scripts/setup_venv.sh) and run the benchmark with its python")
    return str(executable)


def parse_way(text: str) -> Way:
    """``NAME=EXECUTABLE`` -> a :class:`Way`.

    Raises:
        ValueError: when the text has no '=' or the executable does not exist.

    Example:
        >>> parse_way("old=/bin/true").name
        'old'
    """
    name, sep, executable = text.partition("=")
    if not sep or not name or not executable:
        raise ValueError(f"--way takes NAME=EXECUTABLE (a unet-stream of another checkout), got {text!r}")
    if not Path(executable).is_file():
        raise ValueError(f"--way {name!r}: {executable!r} does not exist")
    return Way(name, executable)


def fp32_baseline(model: str) -> tuple[str | None, tuple[str, ...]]:
    """The model file (None: the one benchmarked) and options of the ONNX Runtime FP32 baseline.

    A bundled name is asked for its FP32 file; a model file runs as it is when it is FP32, else its FP32
    twin beside it (``NAME.onnx`` of ``NAME.int8.onnx`` or ``NAME.fp16.onnx``) does.

    Raises:
        ValueError: when a model file is not FP32 and has no FP32 twin, or no model is bundled under the name.
    """
    path = Path(model)
    if not path.suffix:
        # A name no model is bundled under fails in every run: refused here in one line, not as a failed run.
        bundled_model_path(model, PRECISION_SUFFIXES["fp32"])
        return None, ("--precision", "fp32")
    if path.suffix == ".onnx" and file_precision(path) == "fp32":
        return None, ()
    for suffix in PRECISION_SUFFIXES.values():
        if path.name.endswith(suffix) and suffix != PRECISION_SUFFIXES["fp32"]:
            twin = path.with_name(path.name[: -len(suffix)] + PRECISION_SUFFIXES["fp32"])
            if twin.is_file():
                return str(twin), ()
    raise ValueError(f"the ONNX Runtime FP32 baseline needs an FP32 ONNX model: {model!r} is not one and has no "
                     "FP32 twin (NAME.onnx) beside it")


def built_in_ways(model: str = "camvid", working_sizes: Sequence[tuple[int, int]] = ()) -> list[Way]:
    """The ways of this checkout (module docstring) for ``model``, ONNX Runtime FP32 last.

    Raises:
        ValueError: as :func:`fp32_baseline`, or without this checkout's ``unet-stream``.
    """
    stream = this_checkouts_stream()
    baseline_model, precision = fp32_baseline(model)
    return [
        Way("default", stream),
        Way("default, one worker", stream, ("--workers", "1")),
        *(Way(f"default at {format_size(size)}", stream, ("--working-size", format_size(size)))
          for size in working_sizes),
        Way("onnxruntime fp32, one worker", stream, ("--backend", "onnxruntime", *precision, "--workers", "1"),
            baseline_model),
    ]


def path_without_ffmpeg(path: str) -> str:
    """``path`` (a ``PATH`` value) without the folders that hold an ``ffmpeg`` command.

    Example:
        >>> path_without_ffmpeg("/nonexistent/a:/nonexistent/b")
        '/nonexistent/a:/nonexistent/b'
    """
    return os.pathsep.join(folder for folder in path.split(os.pathsep)
                           if folder and not (Path(folder) / "ffmpeg").exists())


def run_once(way: Way, model: str, folder: Path, hide_ffmpeg: bool = False,
             max_frames: int | None = None) -> dict[str, Any]:
    """Run one way once; returns its ``--stats`` summary.

    Raises:
        RuntimeError: when the run fails (its stderr's last lines are in the message).
    """
    stats = folder / "stats.json"
    stats.unlink(missing_ok=True)
    # Removed rather than --overwrite: a previous release's unet-stream, timed beside this one, lacks the flag.
    (folder / "out.mp4").unlink(missing_ok=True)
    env = dict(os.environ)
    if hide_ffmpeg:
        env["PATH"] = path_without_ffmpeg(env.get("PATH", ""))
    done = subprocess.run(way.command(model, folder / "out.mp4", stats, max_frames), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False, env=env)
    if done.returncode != 0 or not stats.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{way.name!r} failed (exit {done.returncode}): {tail}")
    summary: dict[str, Any] = json.loads(stats.read_text())
    return summary


def benchmark(ways: Sequence[Way], model: str, repeats: int, hide_ffmpeg: bool = False,
              max_frames: int | None = None) -> dict[str, Any]:
    """Interleaved repeats of every way; returns the JSON-ready result (first way = baseline).

    Raises:
        ValueError: on fewer than 1 repeat, no ways or two ways of one name; RuntimeError when a run fails.
    """
    if repeats < 1 or not ways:
        raise ValueError(f"need at least 1 repeat and 1 way, got {repeats} and {len(ways)}")
    names = [way.name for way in ways]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        # The runs of ways that share a name would be pooled into one row's figures.
        raise ValueError(f"two ways are named {', '.join(map(repr, twice))}: give each --way a name of its own "
                         "(the built-in ones are 'default', 'default, one worker', 'default at WxH' and 'onnxruntime "
                         "fp32, one worker') and each --working-size once")
    load_before = machine_description()["load_average"]
    summaries: dict[str, list[dict[str, Any]]] = {way.name: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=repeats * len(ways), desc="bench_main_job",
                                                    unit="run") as progress:
        for _ in range(repeats):
            for way in ways:
                summaries[way.name].append(run_once(way, model, Path(tmp), hide_ffmpeg, max_frames))
                progress.update()
    rows = []
    for way in ways:
        runs = summaries[way.name]
        fps = [float(s["fps"]) for s in runs]
        steady = [float(s["steady_fps"]) for s in runs]
        command = " ".join(way.command(model, Path("OUT.mp4"), Path("S.json"), max_frames))
        rows.append({"way": way.name, "command": command,
                     "runtime": runs[-1].get("runtime"), "codec": runs[-1].get("output_codec"),
                     "frames": runs[-1]["processed"], "fps": statistics.median(fps), "fps_trials": fps,
                     "steady_fps": statistics.median(steady), "steady_fps_trials": steady})
    base = rows[0]
    for row in rows:
        row["x_baseline"] = row["fps"] / base["fps"]
        # A run of under a second of results states no steady rate (0): there is no ratio to give then.
        row["x_baseline_steady"] = row["steady_fps"] / base["steady_fps"] if base["steady_fps"] > 0 else None
    return {"benchmark": "bench_main_job", "unetrt": __version__, "machine": machine_description(),
            "load_average_before": load_before, "model": model, "repeats": repeats, "baseline": base["way"],
            "ffmpeg_hidden": hide_ffmpeg,
            "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown report."""
    machine = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in result["load_average_before"] or ())
    load_after = ", ".join(f"{v:.2f}" for v in machine["load_average"] or ())
    lines = [
        "# The main job, back to back with other ways of running it",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores; load average (1, 5, 15 min) "
        f"{load} before, {load_after} after. unetrt {result['unetrt']}; model `{result['model']}`; the bundled "
        f"clip through a whole `unet-stream` process per run; {result['repeats']} interleaved repeats, medians. "
        "Overall: first frame read to last result; steady: first result to last. Loading the model (and the "
        "warm-up run that compiles its engine) comes before the first frame and counts in neither."
        + (" `ffmpeg` was hidden from every run (no H.264 encoder: .mp4 files are MPEG-4 Part 2)."
           if result.get("ffmpeg_hidden") else ""),
        "",
        f"| way | what ran | frames | FPS overall | × {result['baseline']} | FPS steady | × {result['baseline']} "
        "(steady) | overall trials |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        runtime = row["runtime"] or {}
        if runtime.get("backend"):
            ran = (f"{runtime['backend']} {runtime.get('precision')}, {runtime.get('workers', 1)} worker(s) x "
                   f"{runtime.get('threads')} threads, {row['codec']}")
            if runtime.get("working_size"):
                ran += f", working size {runtime['working_size']}"
        else:
            ran = "not in its summary (a version before the runtime line)"
        trials = ", ".join(f"{v:.1f}" for v in row["fps_trials"])
        steady = "-" if row["x_baseline_steady"] is None else f"{row['x_baseline_steady']:.2f}×"
        lines.append(f"| {row['way']} | {ran} | {row['frames']} | {row['fps']:.1f} | {row['x_baseline']:.2f}× | "
                     f"{row['steady_fps']:.1f} | {steady} | {trials} |")
    lines += ["", "Commands:", ""] + [f"- {row['way']}: `{row['command']}`" for row in result["rows"]] + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write ``<results-dir>/<name>.json`` and ``.md``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description="The main job (unet-stream sample OUT --model camvid), timed "
                                                 "back to back with other ways of running it.")
    parser.add_argument("--way", action="append", default=[], metavar="NAME=EXECUTABLE",
                        help="another unet-stream to time (the first one given is the baseline)")
    parser.add_argument("--working-size", type=parse_size, action="append", default=[], metavar="WxH",
                        help="also time the main job at this working size in place of the model's own")
    parser.add_argument("--model", default="camvid", help="model file or bundled name")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop every run after this many frames (a quick check; default: the whole clip)")
    parser.add_argument("--hide-ffmpeg", action="store_true",
                        help="leave the folders holding ffmpeg out of PATH, as on a machine without it")
    parser.add_argument("--name", default="main_job_cpu", help="result file name without suffix")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)

    def action() -> None:
        args = parser.parse_args(argv)
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, got {args.max_frames}")
        ways = [parse_way(text) for text in args.way]
        built_in = built_in_ways(args.model, args.working_size)
        if not ways:
            built_in = [built_in[-1], *built_in[:-1]]  # ONNX Runtime FP32 first: the baseline
        result = benchmark([*ways, *built_in], args.model, args.repeats, args.hide_ffmpeg, args.max_frames)
        write_results(args.results_dir, args.name, result, to_markdown(result))

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
