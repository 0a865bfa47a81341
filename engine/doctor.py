"""``python -m unetrt.doctor``: what this install runs, and on which device, before a stream starts.

Prints the versions that matter (Python, NumPy, OpenCV and its GStreamer support, TensorRT, pycuda, the GPU),
whether the CUDA kernels are built, the engine cache folder, and the backend, precision and device that
``unet-stream --model MODEL`` opens here: it opens that backend, exactly as a stream does. With ``--build`` a
missing TensorRT engine is built and cached now (minutes on a Jetson), so the first stream starts at once;
without it nothing is built and the line says what runs until an engine is cached. With ``--prune`` it lists the
engine cache's files that cannot run here, with why (:mod:`unetrt.plan_prune`), and ``--prune --yes`` removes them.

Example::

    python -m unetrt.doctor                 # quick: what runs now
    python -m unetrt.doctor --build         # build the camvid engine now (scripts/setup_jetson.sh does)
    python -m unetrt.doctor --prune --yes   # free the engines that cannot run here (an SD card's space)
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .backends import PRECISIONS, ModelChoice, model_choices, open_backend, tensorrt_gpu_available
from .backends.registry import backend_help
from .backends.tensorrt import machine_gpus, parse_device
from .cli import run_cli
from .cli_options import CommandParser, add_device, add_size
from .cuda import check_device_exists
from .jetson import jetson_state
from .plan_cache import (
    ENGINE_CACHE_ENV,
    CacheLookup,
    NoCacheFolderError,
    cache_usage,
    cache_write_problem,
    engine_cache_dir,
    kept_for_later_starts,
    look_up,
    plan_key,
)
from .plan_metadata import GpuIdentity


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m unetrt.doctor``."""
    parser = CommandParser(prog="python -m unetrt.doctor",
                           description="Report what this unetrt install runs, and where.")
    parser.add_argument("--model", default="camvid", help="model file or bundled name, as unet-stream --model")
    parser.add_argument("--backend", default="auto", help=backend_help())
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="as unet-stream --precision")
    add_device(parser, help="as unet-stream --device: where the model would run")
    add_size(parser, help="as unet-stream --size: the engine of that size is the one opened (and built)")
    parser.add_argument("--build", action="store_true",
                        help="build and cache the TensorRT engine now when none is cached (minutes on a Jetson)")
    parser.add_argument("--prune", action="store_true",
                        help="list the engine cache's files that cannot run here (an older TensorRT, a GPU this "
                             "machine lacks, an earlier model file, damaged), each with why; removes nothing "
                             "without --yes")
    parser.add_argument("--yes", action="store_true", help="with --prune: remove them, and say what was freed")
    parser.add_finisher(_check_prune)
    return parser


def _check_prune(args: argparse.Namespace) -> None:
    """--yes needs --prune, and --prune, which judges the whole cache for every model and GPU, takes no option that
    names one model, device or build."""
    if args.yes and not args.prune:
        raise ValueError("--yes removes what --prune lists: python -m unetrt.doctor --prune --yes")
    if not args.prune:
        return
    given = [flag for flag, value, default in [
        ("--model", args.model, "camvid"), ("--backend", args.backend, "auto"), ("--precision", args.precision, "auto"),
        ("--device", args.device, "auto"), ("--size", args.working_size, None), ("--build", args.build, False)]
        if value != default]
    if given:
        raise ValueError(f"--prune judges the whole engine cache, every model and GPU of this machine: drop "
                         f"{' and '.join(given)}")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _opencv_line() -> tuple[str, bool]:
    """The OpenCV line, and whether cv2 imports."""
    from .opencv import OpenCVImportError, import_cv2

    try:
        cv2 = import_cv2()
    except OpenCVImportError as exc:
        return f"OpenCV: {exc}", False
    gstreamer = next((line.split(":", 1)[1].split()[0] for line in cv2.getBuildInformation().splitlines()
                      if line.strip().startswith("GStreamer:")), "unknown")
    return f"OpenCV {cv2.__version__} from {cv2.__file__} (GStreamer: {gstreamer}; csi:// needs YES)", True


def _gpu_line(index: int) -> tuple[str, str | None, list[GpuIdentity] | None]:
    """The TensorRT line, which names GPU ``index``: the one the report's stream runs on (device 0 for 'auto' and
    'cpu'), how many this process sees, and ``CUDA_VISIBLE_DEVICES`` when it is set (it renumbers them); why
    TensorRT does not start on it (None where it starts, or was not tried: TensorRT, pycuda or a GPU missing); and
    the GPUs this process sees (:func:`unetrt.backends.tensorrt.machine_gpus`, asked once per report; None where
    TensorRT, pycuda or CUDA is missing)."""
    from .backends.tensorrt import MISSING_PYCUDA, require_tensorrt, tensorrt_installed

    try:
        require_tensorrt()
    except ImportError as exc:
        if tensorrt_installed():  # installed, and its import fails: the line says why and the reinstall
            return f"TensorRT: {exc}", None, None
        return "TensorRT: not installed (on a Jetson: JetPack's python3-libnvinfer; see docs/jetson.md)", None, None
    import tensorrt as trt

    if not tensorrt_gpu_available():
        return f"TensorRT {trt.__version__}: no CUDA GPU is visible", None, None
    installed = _version("pycuda")
    try:
        importlib.import_module("pycuda.driver")  # whether it imports, as a stream imports it
    except ImportError as exc:
        if installed is None:
            return (f"TensorRT {trt.__version__}: a GPU is present, but TensorRT cannot run: {MISSING_PYCUDA}", None,
                    None)
        # Built against another CUDA or Python, or libcuda missing in a container: say so, not "not installed".
        return (f"TensorRT {trt.__version__}: a GPU is present, but pycuda {installed} does not import "
                f"({exc}); rebuild it here: pip install --force-reinstall --no-binary pycuda pycuda"), None, None
    # One that imports without its distribution's record (put on PYTHONPATH, as tools/gpu_check_bundle.sh puts it)
    # runs TensorRT all the same: its module says its version.
    pycuda_version = installed or str(getattr(sys.modules["pycuda"], "VERSION_TEXT", "(version not recorded)"))
    try:
        gpus = machine_gpus()
    except ValueError as exc:  # the driver is installed and CUDA does not start on it (the GPU switched off)
        return f"TensorRT {trt.__version__}, pycuda {pycuda_version}: {exc}", None, None
    count = len(gpus)
    check_device_exists(index, count)  # a device the machine lacks is the user's mistake: one line, exit 2
    gpu = gpus[index]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    which = (f"GPU {index}{f' of {count}' if count > 1 else ''}"
             f"{'' if visible is None else f' (CUDA_VISIBLE_DEVICES={visible})'}")
    line = f"TensorRT {trt.__version__}, pycuda {pycuda_version}, {which}: {gpu.describe()}"
    failure = _tensorrt_start_failure()
    return (line if failure is None else f"{line}; TensorRT does not start: {failure}"), failure, gpus


def _driver_line() -> str:
    """The CUDA driver's version and, on a Jetson, the L4T release (what TensorRT's CUDA must not be newer than),
    the power mode and whether the clocks are locked (what its speed depends on)."""
    from .cuda import cuda_driver_version

    version = cuda_driver_version()
    if version is None:
        return "CUDA driver: none (no libcuda.so.1)"
    line = f"CUDA driver: supports CUDA {version[0]}.{version[1]}"
    state = jetson_state()
    return line if state is None else f"{line}; {state.describe()}"


def _kernels_line() -> str:
    from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub

    if getattr(_tiling, "cuda_built", False):
        return "CUDA kernels: built (unetrt._tiling)"
    return ("CUDA kernels: not built (CPU kernels only; on a Jetson bash scripts/setup_jetson.sh --no-engine "
            "rebuilds them)")


@dataclass
class Report:
    """The report's lines (the last says what a stream of the model runs) and what keeps a stream from its path:
    each problem is one line for the end, and makes the exit code 1."""

    lines: list[str]
    problems: list[str]


def report(args: argparse.Namespace) -> Report:
    """What this install runs, and what is wrong with it.

    Raises:
        ValueError: ``--build`` with a device or backend that runs no TensorRT.
        ValueError, FileNotFoundError, ImportError: when the model cannot be opened (as unet-stream would).
    """
    if args.build and (args.device == "cpu" or args.backend not in ("auto", "tensorrt")):
        asked = f"--device {args.device}" if args.device == "cpu" else f"--backend {args.backend}"
        raise ValueError(f"--build builds the TensorRT engine a stream runs on, and {asked} runs no TensorRT: "
                         f"drop --build or {asked}")
    numpy = _version("numpy")
    opencv, has_opencv = _opencv_line()
    uncached = None  # why no engine can be cached, so that every start builds it
    try:
        folder = engine_cache_dir()
        # A month of engines (other precisions, working sizes, modules, model files) fills a small SD card.
        usage = cache_usage(folder)
        cache = f"engine cache: {folder}: {usage} (set {ENGINE_CACHE_ENV} to move it)"
        # A read-only root file system: its prebuilt engines load, any other is built at every start (minutes).
        unwritable = cache_write_problem(folder)
        if unwritable is not None:
            cache = (f"engine cache: {folder}: {usage}; cannot be written ({unwritable}): an engine not cached "
                     f"there is built at every start; set {ENGINE_CACHE_ENV} to a writable folder")
            uncached = "the cache cannot be written"
    except NoCacheFolderError as exc:
        cache = f"engine cache: none: {exc}"
        uncached = "there is no folder for the engine cache"
    index = 0 if args.device == "cpu" else parse_device(args.device)
    gpu_line, tensorrt_failure, gpus = _gpu_line(index)
    lines = [f"unetrt {_version('unetrt')}, Python {platform.python_version()} ({platform.machine()}), "
             f"NumPy {numpy}", opencv, gpu_line, _driver_line(), _kernels_line(), cache]
    problems = []
    if not has_opencv:
        problems.append("unet-stream cannot run without OpenCV (the OpenCV line says how to get it)")
    unbuilt = None if args.build else _unbuilt_engine(args, tensorrt_failure, gpus)
    if unbuilt is not None:
        lines.append(_unbuilt_line(args, *unbuilt, uncached=uncached))
        return Report(lines, problems)
    backend = open_backend(args.model, args.backend, args.device, args.precision, build=args.build,
                           working_size=args.working_size)
    try:
        parts = (backend.name, backend.precision, backend.device)
        what = " ".join(str(part) for part in parts if part)
        on_tensorrt = backend.name == "tensorrt"
        plan = getattr(backend, "path", None)
    finally:
        backend.close()
    lines.append(f"unet-stream --model {args.model} runs on: {what}")
    if args.build and on_tensorrt and plan is not None and not kept_for_later_starts(plan):
        # setup_jetson.sh ends with --build to prepare the cache: an engine that could not be cached is built again
        # at every stream start (minutes), and a service started with --no-build runs without it.
        problems.append(f"--build: the TensorRT engine was built for this run only, not cached (the note above says "
                        f"why): every stream start builds it again and --no-build finds none; set {ENGINE_CACHE_ENV} "
                        "to a writable folder and run it again")
    if args.build and not on_tensorrt:
        # setup_jetson.sh ends with --build: a setup whose stream would run on the CPU must not say "done".
        why = ("the note above says why" if tensorrt_gpu_available() else
               "TensorRT with pycuda sees no GPU here (the TensorRT line says why)")
        problems.append(f"--build: no TensorRT engine was built ({why}); streams run on {what}")
    return Report(lines, problems)


def _unbuilt_engine(args: argparse.Namespace, tensorrt_failure: str | None,
                    gpus: list[GpuIdentity] | None) -> tuple[list[ModelChoice], CacheLookup] | None:
    """The model's choices, and what the cache holds instead (:func:`unetrt.plan_cache.look_up`), when a stream
    would start on a TensorRT engine built on first use that is not cached yet (the report builds nothing without
    ``--build``, so it would open the fallback and name it as what streams run on); None otherwise, and where
    TensorRT cannot run at all (``tensorrt_failure``, the TensorRT line's: opening it says why; ``gpus`` None, the
    TensorRT line's GPUs: TensorRT, pycuda or CUDA missing)."""
    choices = model_choices(args.model, args.backend, args.precision, args.device)
    first = choices[0]
    if first.backend != "tensorrt" or first.path.suffix != ".onnx" or gpus is None:
        return None
    index = parse_device(args.device)
    try:
        # The key hashes the ONNX file (tens of MB on an SD card) once, for the check and for the note alike.
        key = plan_key(first.path, first.precision, args.working_size, device_index=index)
        lookup = look_up(key, first.path, gpus=gpus)
    except NoCacheFolderError:
        # No home directory: every start builds into a private folder and runs on TensorRT, not on the fallback.
        lookup = CacheLookup(Path(f"{key.stem}.plan"), "not cached", True, [])
    except (ImportError, ValueError):
        return None
    if lookup.usable or tensorrt_failure is not None:
        # No start would build it (a driver older than TensorRT's CUDA): opening it says why, and what runs.
        return None
    return choices, lookup


def _tensorrt_start_failure() -> str | None:
    """Why TensorRT does not start here (a runtime made and dropped at once: its CUDA must initialise under it, which
    a driver older than that CUDA fails); None where it starts."""
    import tensorrt as trt

    from .backends.tensorrt import start_tensorrt

    try:
        start_tensorrt(trt.Runtime)
    except ValueError as exc:
        return str(exc)
    return None


def _unbuilt_line(args: argparse.Namespace, choices: list[ModelChoice], cached: CacheLookup,
                  uncached: str | None = None) -> str:
    """The last line where the stream's TensorRT engine is not built yet: what runs once it is, how to build it, and
    what ``--no-build`` runs until then (the fallback is opened by name, so no note about a --no-build not given);
    with ``uncached`` (why no engine can be cached: a cache that cannot be written, no folder for one), that every
    start builds it."""
    asked = [f"--{name} {shlex.quote(str(value))}" for name, value, default in [
        ("model", args.model, "camvid"), ("backend", args.backend, "auto"), ("precision", args.precision, "auto"),
        ("device", args.device, "auto")] if value != default]
    if args.working_size is not None:
        asked.append("--size {}x{}".format(*args.working_size))
    if uncached is None:
        builds = (f"its {'first' if cached.empty else 'next'} start builds it (minutes on a Jetson; "
                  f"{' '.join(['python -m unetrt.doctor --build', *asked])} builds it now)")
        until = "until then, "
    else:  # --build would cache nothing either (it ends in an error there)
        builds, until = f"every start builds it (minutes on a Jetson, as {uncached})", ""
    line = (f"unet-stream --model {args.model} runs on: tensorrt {choices[0].precision} once its engine is built: "
            f"{cached.note()}, so {builds}")
    if len(choices) < 2:
        return f"{line}; {until}--no-build stops"
    try:
        fallback = open_backend(args.model, choices[-1].backend, args.device, args.precision, build=False,
                                working_size=args.working_size)
    except (ImportError, ValueError) as exc:
        # --device cuda on a Jetson: the fallback is ONNX Runtime's CUDA provider, which JetPack's pip has not.
        return f"{line}; {until}--no-build stops: {exc}"
    try:
        what = " ".join(str(part) for part in (fallback.name, fallback.precision, fallback.device) if part)
    finally:
        fallback.close()
    return f"{line}; {until}with --no-build: {what}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report.

    Returns:
        0; 1 after the report when something keeps a stream from running as asked (no OpenCV; ``--build`` that
        built no TensorRT engine, or one it could not cache), one ``error:`` line each; 2 with one line when the
        model cannot be opened.
    """
    args = build_parser().parse_args(argv)
    if args.prune:
        return _prune(args.yes)
    found: list[Report] = []

    def run() -> None:
        found.append(report(args))
        print("\n".join(found[0].lines), flush=True)

    code = run_cli(run)
    if code == 0 and found[0].problems:
        for problem in found[0].problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    return code


def _prune(remove: bool) -> int:
    """``--prune`` (and ``--yes``): 0; 1 after the lines when a file could not be removed; 2 with one line when the
    cache cannot be judged here (no TensorRT, pycuda or GPU to tell what runs)."""
    from .backends.tensorrt import require_tensorrt
    from .plan_prune import prune, report_lines, survey

    done: list[bool] = []

    def run() -> None:
        why = None
        try:
            require_tensorrt()
        except ImportError as exc:
            # Its line: a TensorRT installed that does not import (its libraries' wheel missing, the lean runtime
            # alone) was "not installed", sending the user to a pip that answers "already satisfied".
            why = str(exc)
        if why is None and not tensorrt_gpu_available():
            why = "no CUDA GPU is visible"
        if why is not None:
            raise ValueError(f"--prune keeps every engine that runs here, and cannot tell which do: {why}; run it "
                             "where the engines run (python -m unetrt.doctor's TensorRT line says what is missing)")
        import tensorrt as trt

        try:
            gpus = machine_gpus()
        except ImportError as exc:
            raise ValueError(f"--prune cannot tell which engines run here: {exc}") from exc
        found = survey(engine_cache_dir(), str(trt.__version__), gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        pruned = prune(found) if remove else None
        print("\n".join(report_lines(found, pruned)), flush=True)
        done.append(pruned is None or not pruned.failed)

    code = run_cli(run)
    return 1 if code == 0 and not done[0] else code


if __name__ == "__main__":
    sys.exit(main())
