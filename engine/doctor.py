"""``python -m unetrt.doctor``: what this install runs, and on which device, before a stream starts.

Prints the versions that matter (Python, NumPy, OpenCV and its GStreamer support, TensorRT, pycuda, the GPU),
whether the CUDA kernels are built, the engine cache folder, and the backend, precision and device that
``unet-stream --model MODEL`` opens here: it opens that backend, exactly as a stream does. With ``--build`` a
missing TensorRT engine is built and cached now (minutes on a Jetson), so the first stream starts at once;
without it nothing is built and the line says what runs until an engine is cached.

Example::

    python -m unetrt.doctor                 # quick: what runs now
    python -m unetrt.doctor --build         # build the camvid engine now (scripts/setup_jetson.sh does)
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from importlib import metadata

from .backends import PRECISIONS, open_backend, tensorrt_gpu_available
from .backends.registry import backend_help
from .cli import HelpFormatter, run_cli
from .plan_cache import ENGINE_CACHE_ENV, engine_cache_dir


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m unetrt.doctor``."""
    parser = argparse.ArgumentParser(prog="python -m unetrt.doctor", formatter_class=HelpFormatter,
                                     description="Report what this unetrt install runs, and where.")
    parser.add_argument("--model", default="camvid", help="model file or bundled name, as unet-stream --model")
    parser.add_argument("--backend", default="auto", help=backend_help())
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="as unet-stream --precision")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--build", action="store_true",
                        help="build and cache the TensorRT engine now when none is cached (minutes on a Jetson)")
    return parser


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _opencv_line() -> str:
    from .opencv import OpenCVImportError, import_cv2

    try:
        cv2 = import_cv2()
    except OpenCVImportError as exc:
        return f"OpenCV: {exc}"
    gstreamer = next((line.split(":", 1)[1].split()[0] for line in cv2.getBuildInformation().splitlines()
                      if line.strip().startswith("GStreamer:")), "unknown")
    return f"OpenCV {cv2.__version__} from {cv2.__file__} (GStreamer: {gstreamer}; csi:// needs YES)"


def _gpu_line() -> str:
    from .backends.tensorrt import MISSING_PYCUDA, gpu_identity, tensorrt_available

    if not tensorrt_available():
        return "TensorRT: not installed (on a Jetson: JetPack 6's python3-libnvinfer; see docs/jetson.md)"
    import tensorrt as trt

    pycuda = _version("pycuda")
    if not tensorrt_gpu_available():
        return f"TensorRT {trt.__version__}: no CUDA GPU is visible"
    if pycuda is None:
        return f"TensorRT {trt.__version__}: a GPU is present, but TensorRT cannot run: {MISSING_PYCUDA}"
    return f"TensorRT {trt.__version__}, pycuda {pycuda}, GPU 0: {gpu_identity(0).describe()}"


def _kernels_line() -> str:
    from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub

    if getattr(_tiling, "cuda_built", False):
        return "CUDA kernels: built (unetrt._tiling)"
    return "CUDA kernels: not built (CPU kernels only; reinstall with UNETRT_CUDA=1 where nvcc is)"


def report(args: argparse.Namespace) -> list[str]:
    """The report's lines; the last says what a stream of ``args.model`` runs.

    Raises:
        ValueError, FileNotFoundError, ImportError: when the model cannot be opened (as unet-stream would).
    """
    numpy = _version("numpy")
    lines = [f"unetrt {_version('unetrt')}, Python {platform.python_version()} ({platform.machine()}), "
             f"NumPy {numpy}", _opencv_line(), _gpu_line(), _kernels_line(),
             f"engine cache: {engine_cache_dir()} (set {ENGINE_CACHE_ENV} to move it)"]
    backend = open_backend(args.model, args.backend, args.device, args.precision, build=args.build)
    try:
        parts = (backend.name, backend.precision, backend.device)
        what = " ".join(str(part) for part in parts if part)
    finally:
        backend.close()
    lines.append(f"unet-stream --model {args.model} runs on: {what}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; returns the exit code (2 with one line when the model cannot be opened)."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: print("\n".join(report(args)), flush=True))


if __name__ == "__main__":
    sys.exit(main())
