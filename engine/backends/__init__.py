"""Inference backends and the choice of model file, backend and precision.

The backends are those of :mod:`unetrt.backends.registry` (one module and one registration line each). A path's
suffix picks the backend: ``.plan`` TensorRT, ``.onnx`` ONNX Runtime (or OpenVINO when asked), ``.xml``
OpenVINO, ``.pt`` PyTorch. The precision that runs is the file's own, read from its content
(:mod:`unetrt.model_file`), unless a backend's hint is asked; :func:`choose_model` hands it to the backend. A
bundled model name on a
CPU picks the fastest installed engine and precision that keeps the model's
accuracy (``CPU_PREFERENCE``, measured by ``unet-bench``; from FP32 on for a model whose statement says INT8
loses a figure, :func:`unetrt.bundled.bundled_cpu_precision`); ``precision`` and
``backend`` choose another. On a CUDA machine with TensorRT (its bindings import, a
GPU is present) a bundled name or an ``.onnx`` file runs as a TensorRT engine built on
first use and cached (:mod:`unetrt.plan_cache`), then ONNX Runtime's CUDA provider,
then the CPU list; a choice that cannot open (pycuda missing, a failed build) gives
way to the next after a one-line note.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

from ..build_watch import tell_note
from ..bundled import bundled_cpu_precision, bundled_model_names, bundled_model_path, bundled_precision_path
from ..cpu import check_threads
from ..cuda import NoSuchDeviceError, one_device_count
from ..model_file import file_precision
from ..paths import check_file, check_utf8_name
from .base import Backend, DeviceBackend, check_batch
from .registry import BackendSpec, OpenRequest, backend_spec, native_backend, registered_backends

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
# Fastest first on a CPU, from one interleaved unet-bench run on 2 AVX-512 VNNI cores
# (benchmarks/results/bench_*_cpu_camvid_int8*.md); every entry keeps the bundled models'
# accuracy (INT8 within 1 mIoU point / 0.005 pixel error of FP32, engine/models/NAME.json).
CPU_PREFERENCE = (("openvino", "int8"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("onnxruntime", "fp32"))
# The precisions a TensorRT engine is built at from an ONNX model ('auto': FP16, or INT8 for a QDQ graph).
TENSORRT_PRECISIONS = ("auto", *backend_spec("tensorrt").hint_precisions)

__all__ = ["PRECISIONS", "Backend", "DeviceBackend", "ModelChoice", "check_batch", "choose_model", "model_choices",
           "onnxruntime_gpu_available", "open_backend", "resolve_model", "tensorrt_gpu_available"]


class ModelChoice(NamedTuple):
    """What runs: the model file, the backend and the precision handed to it.

    The precision is the file's own (read from its content by :mod:`unetrt.model_file`) or the backend hint that
    was asked ('bf16' on OpenVINO). For backend 'tensorrt' with an ``.onnx`` file, it is the one the engine is
    built at (:mod:`unetrt.plan_cache` builds it on first use and caches it).
    """

    path: Path
    backend: str
    precision: str


def tensorrt_gpu_available() -> bool:
    """Whether TensorRT's bindings are installed and a CUDA GPU is present, or the NVIDIA driver is installed but CUDA
    does not start on it (no context is created).

    pycuda is not asked for here: on a machine with TensorRT and a GPU but no pycuda (a Jetson whose JetPack
    has TensorRT, before ``pip install pycuda``) TensorRT is still the first choice, and opening it fails with
    pycuda's install line, which the fallback prints before the next choice runs: never a silent CPU run. So too
    where the driver cannot start CUDA (a laptop whose hybrid graphics switched the NVIDIA GPU off), and where the
    ``tensorrt`` package is installed but does not import (its libraries' wheel missing): opening TensorRT names the
    failure and what to check.

    Example:
        >>> tensorrt_gpu_available()  # doctest: +SKIP
        True
    """
    from ..cuda import cuda_device_count, cuda_init_error
    from .tensorrt import tensorrt_available, tensorrt_installed

    # A TensorRT installed but not importing (its libraries missing) is tried too: opening it says why.
    return (tensorrt_available() or tensorrt_installed()) and (cuda_device_count() > 0 or cuda_init_error() is not None)


def onnxruntime_gpu_available() -> bool:
    """Whether the installed onnxruntime has the CUDA provider (onnxruntime-gpu) and the driver sees a CUDA GPU.

    The provider is listed by what the build has, not by what runs: on a machine without a GPU a session asking for
    it falls back to the CPU, where the CPU list is the faster choice. Whether it starts (its CUDA's and cuDNN's
    libraries, a driver new enough for its CUDA) is known once a session asks for it.

    Example:
        >>> onnxruntime_gpu_available()  # doctest: +SKIP
        True
    """
    import onnxruntime as ort

    from ..cuda import cuda_device_count

    return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


def _choose_file(path: Path, backend: str, precision: str, device: str) -> list[ModelChoice]:
    check_file(path, "model file")
    # ONNX Runtime refuses such a name with a TypeError listing its constructors, OpenCV crashes on it.
    check_utf8_name(path, "model file")
    native = native_backend(path.suffix)
    assert native is not None  # model_choices sends only registered suffixes here
    runs_on = [spec.name for spec in registered_backends() if spec.runs(path.suffix)]
    if backend == "auto" and path.suffix == ".onnx" and device != "cpu" and tensorrt_gpu_available():
        # On a GPU with TensorRT an ONNX model runs as a TensorRT engine built on first use (FP16 unless the
        # graph is QDQ INT8); ONNX Runtime is the fallback when the engine cannot be had.
        chosen = [_file_choice(path, "tensorrt", precision)]
        return chosen + ([_file_choice(path, native.name, "auto")] if precision == "auto" else [])
    chosen_backend = native.name if backend == "auto" else backend
    if chosen_backend not in runs_on:
        raise ValueError(f"backend {backend!r} cannot run {path.name}: a {path.suffix} file runs on "
                         f"{' or '.join(repr(b) for b in runs_on)}")
    return [_file_choice(path, chosen_backend, precision)]


def _file_choice(path: Path, backend: str, precision: str) -> ModelChoice:
    """A given file on a backend: at the precision asked when it is one of the backend's hints, else the file's own,
    which may be asked by name too (``unet-eval --model best.pt --precision fp32``)."""
    if precision in backend_spec(backend).hint_precisions:
        return ModelChoice(path, backend, precision)
    own = file_precision(path)
    if backend == "tensorrt" and path.suffix == ".onnx":
        # Every build precision was taken above: what is left is no precision of an engine, not the file's.
        _check_tensorrt_precision(precision)
        # An engine is built from the model: INT8 from a QDQ graph, FP16 from a float one (plan_cache's 'auto').
        own = "int8" if own == "int8" else "fp16"
    if precision == "bf16" and backend_spec("openvino").runs(path.suffix):
        raise ValueError("precision 'bf16' is OpenVINO's inference-precision hint; use backend 'openvino'")
    if precision not in ("auto", own) and path.suffix == ".pt":
        # A checkpoint holds FP32 weights and was exported by nothing: another precision is a file unet-export writes.
        name = path.name.removesuffix(".pt")
        export = {"fp16": f" --precision fp16, then run {name}.fp16.onnx",
                  "int8": f" --precision int8 --calibration FRAMES --check-labels LABELS, then run {name}.int8.onnx"}
        then = export.get(precision, f", then run {name}.onnx on backend 'openvino' at precision {precision!r}")
        raise ValueError(f"{path.name} is a checkpoint and runs at {own} on backend {backend!r}: pass precision "
                         f"'auto' or {own!r}, or export it (unet-export {path} -o {path.with_suffix('.onnx')}{then})")
    if precision not in ("auto", own):
        sibling = _export_sibling(path, precision)
        raise ValueError(f"precision {precision!r} picks among a bundled model's files; {path.name} runs at the "
                         f"precision it was exported with ({own} on backend {backend!r}): pass precision 'auto' or "
                         f"{own!r}, or the file of that precision"
                         f"{f' ({sibling.name}, beside it)' if sibling is not None else ''}")
    return ModelChoice(path, backend, own)


def _export_sibling(path: Path, precision: str) -> Path | None:
    """The file of ``precision`` that ``unet-export`` writes beside ``path`` (NAME.onnx, NAME.fp16.onnx,
    NAME.int8.onnx), when it is there and runs at that precision: the file a refusal of ``precision`` can name."""
    if path.suffix != ".onnx" or precision not in ("fp32", "fp16", "int8"):
        return None
    stem = path.name.removesuffix(".onnx").removesuffix(".fp16").removesuffix(".int8")
    sibling = path.with_name(f"{stem}.onnx" if precision == "fp32" else f"{stem}.{precision}.onnx")
    try:
        return sibling if sibling != path and file_precision(sibling) == precision else None
    except (OSError, ValueError):  # absent, or not a model a refusal should point at
        return None


def _check_tensorrt_precision(precision: str) -> None:
    if precision not in TENSORRT_PRECISIONS:
        raise ValueError(f"a TensorRT engine is built at {', '.join(TENSORRT_PRECISIONS)}; precision {precision!r} "
                         "is OpenVINO's hint")


def _tensorrt_bundled(name: str, precision: str) -> ModelChoice:
    _check_tensorrt_precision(precision)
    # INT8 comes from the shipped QDQ model in TensorRT's layout; FP16 and FP32 from the FP32 graph (FP16 by builder
    # flag or by conversion, per TensorRT version: unetrt.plan_build).
    wanted = "int8" if precision == "int8" else "fp32"
    # A model shipped without the TensorRT layout offers its CPU INT8 file: the build refuses it in one line naming
    # the export that makes one, and an automatic choice goes on to ONNX Runtime INT8.
    file = bundled_precision_path(name, wanted, "tensorrt") or bundled_precision_path(name, wanted)
    if file is None:
        raise ValueError(f"bundled model {name!r} ships no {wanted} ONNX file to build a TensorRT engine from")
    return ModelChoice(file, "tensorrt", "fp16" if precision == "auto" else precision)


def _candidates(backend: str, precision: str, gpu: bool, cpu_precision: str) -> list[tuple[str, str]]:
    if precision == "auto":
        if gpu:
            return [(backend if backend != "auto" else "onnxruntime", "fp32")]
        # From the first entry at the model's CPU precision: a model stated FP32 skips the INT8 ones.
        first = next(i for i, c in enumerate(CPU_PREFERENCE) if c[1] == cpu_precision)
        preference = [c for c in CPU_PREFERENCE[first:] if backend in ("auto", c[0])]
        return preference or [(backend, "fp32")]
    if backend != "auto":
        return [(backend, precision)]
    if precision == "bf16":
        return [("openvino", "bf16")]
    return [("onnxruntime", precision)] if gpu else [("openvino", precision), ("onnxruntime", precision)]


def model_choices(model: str | Path, backend: str = "auto", precision: str = "auto",
                  device: str = "auto") -> list[ModelChoice]:
    """What runs ``model``, best first: the first that opens runs, the others are fallbacks.

    With backend 'auto' on a CUDA machine with TensorRT, a bundled model or an ``.onnx`` file runs as a TensorRT
    engine (built on first use, cached), then ONNX Runtime; any other request has one choice. See
    :func:`choose_model`.

    Raises:
        ValueError, FileNotFoundError: as :func:`choose_model`.

    Example:
        >>> [c.backend for c in model_choices("camvid", device="cpu")]  # doctest: +SKIP
        ['openvino']
    """
    from .openvino import openvino_available

    if backend != "auto":
        backend_spec(backend)  # raises on an unknown name, listing the registered ones
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}; choose one of auto, cpu, cuda, cuda:N")
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be a model file's path or a bundled model's name such as 'camvid', got "
                         f"{model!r}")
    path = Path(model)
    if native_backend(path.suffix) is not None:
        return _choose_file(path, backend, precision, device)
    if path.is_dir() and not (len(path.parts) == 1 and str(model) in bundled_model_names()):
        # unet-train's run folder, given for its checkpoint: "no bundled model" would send the user after a typo.
        found = sorted(f.name for f in path.iterdir() if f.is_file() and native_backend(f.suffix) is not None)
        raise ValueError(f"model {str(model)!r} is a folder; give the model file in it"
                         f"{' (' + ', '.join(found[:6]) + ')' if found else ' (a .onnx, .pt or .plan file)'}")
    if path.suffix or len(path.parts) > 1:
        suffixes = ", ".join(s for spec in registered_backends() for s in spec.suffixes)
        raise ValueError(f"cannot tell the backend of {str(model)!r}: use a {suffixes} file or a bundled model "
                         "name")
    name = str(model)
    if name not in bundled_model_names():
        bundled_model_path(name)  # raises, listing the bundled names
    if backend == "tensorrt":
        return [_tensorrt_bundled(name, precision)]
    if backend == "torch":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"the bundled {name}.pt runs in fp32 on torch; pass precision 'auto' or 'fp32', or "
                             "another backend for the other precisions")
        return [ModelChoice(bundled_model_path(name, ".pt"), "torch", "fp32")]
    if precision == "bf16" and backend not in ("auto", "openvino"):
        raise ValueError("precision 'bf16' is OpenVINO's inference-precision hint; use backend 'openvino'")
    choices: list[ModelChoice] = []
    if backend == "auto" and precision != "bf16" and device != "cpu" and tensorrt_gpu_available():
        choices.append(_tensorrt_bundled(name, precision))
    # After TensorRT: ONNX Runtime's CUDA provider where it is installed (or the device is forced), else the
    # CPU list.
    gpu = device.startswith("cuda") or (device == "auto" and onnxruntime_gpu_available())
    candidates = _candidates(backend, precision, gpu, bundled_cpu_precision(name))
    for chosen, wanted in candidates:
        # An uninstalled OpenVINO is passed over when something else can serve; alone (bf16), opening it
        # says how to install it.
        if backend == "auto" and chosen == "openvino" and len(candidates) > 1 and not openvino_available():
            continue
        file = bundled_precision_path(name, "fp32" if wanted == "bf16" else wanted)
        if file is not None:
            return [*choices, ModelChoice(file, chosen, wanted)]
    if choices:
        return choices
    raise ValueError(f"bundled model {name!r} ships no {precision} file for backend {backend!r}; "
                     "bundled precisions are those of tools/state_bundled_model.py (fp32, fp16, int8)")


def choose_model(model: str | Path, backend: str = "auto", precision: str = "auto",
                 device: str = "auto") -> ModelChoice:
    """Map a path or bundled name, a backend and a precision request to the file, backend and precision that run.

    A bundled name with backend and precision 'auto' takes, on a CPU, the first of ``CPU_PREFERENCE`` that is
    installed and shipped (OpenVINO INT8, then ONNX Runtime INT8, ...; from OpenVINO FP32 on for a model stated
    FP32 on CPUs, such as ``isbi``). On a CUDA machine with TensorRT (its bindings import, a GPU is present:
    :func:`tensorrt_gpu_available`) a bundled name or an ``.onnx`` file runs as a TensorRT engine built from the
    ONNX model on first use and cached (FP16; with precision 'int8', INT8 from the shipped QDQ model in TensorRT's
    symmetric layout, ``NAME.int8.tensorrt.onnx``, while the CPU backends run ``NAME.int8.onnx``); without
    TensorRT, the FP32 model on ONNX Runtime's CUDA provider.

    Args:
        model: a .plan, .onnx, .xml or .pt path, or a bundled model name.
        backend: 'auto' or a registered backend ('onnxruntime', 'openvino', 'torch', 'tensorrt', ...).
        precision: 'auto', 'fp32', 'fp16', 'int8' (bundled files, or a TensorRT engine's build precision),
            or 'bf16' (OpenVINO's hint on the FP32 file).
        device: 'auto', 'cpu' or 'cuda'.

    Returns:
        The first choice (:func:`model_choices` lists the fallbacks); for a path given with precision 'auto',
        the file's own precision (read from its content).

    Raises:
        ValueError: on an unknown backend or precision, a file the backend cannot run or whose name is not
            valid UTF-8, an unknown bundled name, or a precision the bundled model does not ship.
        FileNotFoundError: when a path does not exist.

    Example:
        >>> choose_model("camvid", "onnxruntime", "fp32").path.name
        'camvid.onnx'
    """
    return model_choices(model, backend, precision, device)[0]


def resolve_model(model: str | Path, backend: str = "auto", precision: str = "auto",
                  device: str = "auto") -> tuple[Path, str]:
    """The (file, backend name) :func:`choose_model` picks.

    Raises:
        ValueError, FileNotFoundError: as :func:`choose_model`.

    Example:
        >>> resolve_model("camvid", "onnxruntime", "fp32")[1]
        'onnxruntime'
    """
    choice = choose_model(model, backend, precision, device)
    return choice.path, choice.backend


def open_backend(model: str | Path, backend: str = "auto", device: str = "auto", precision: str = "auto",
                 build: bool = True, working_size: tuple[int, int] | None = None, **options: Any) -> Backend:
    """Open the backend that runs ``model``.

    An ``.onnx`` file or bundled model chosen for TensorRT (:func:`choose_model`) opens as the TensorRT engine of
    :mod:`unetrt.plan_cache`: loaded from the engine cache, or built and cached on first use with a progress
    line. When TensorRT was chosen automatically and that engine cannot be had (no cached one with
    ``build=False``, a failed build, a missing package), the next choice opens instead after a one-line note.

    Args:
        model: a .plan, .onnx, .xml or .pt path, or a bundled model name.
        backend: 'auto' or a registered backend (see :func:`choose_model`).
        device: 'auto', 'cpu' or 'cuda'.
        precision: 'auto', 'fp32', 'fp16', 'bf16' or 'int8' (see :func:`choose_model`).
        build: whether a TensorRT engine may be built (False: use a cached one or fall back).
        working_size: (width, height) a TensorRT engine built here is fixed at (None: the model's own).
        **options: passed to the backend's opener (e.g. ``threads``).

    Returns:
        An open backend; close it, or use it as a context manager.

    Raises:
        ValueError: when the model or backend request cannot be served.
        FileNotFoundError: when the model file does not exist.
        ImportError: when the backend's library is not installed (the message says how to install it).
        LookupError: (``unetrt.plan_cache.PlanNotCachedError``) with ``build=False``, backend 'tensorrt' and no
            cached engine.

    Example:
        >>> with open_backend("camvid", precision="int8") as net:  # doctest: +SKIP
        ...     logits = net.infer(batch)
    """
    check_threads(options.get("threads"))  # before any backend is tried: past the cap PyTorch crashes
    # The choice and the backend it opens each ask whether there is a GPU: the driver is asked once.
    with one_device_count():
        return _open_backend(model, backend, device, precision, build, working_size, options)


def _open_backend(model: str | Path, backend: str, device: str, precision: str, build: bool,
                  working_size: tuple[int, int] | None, options: dict[str, Any]) -> Backend:
    choices = model_choices(model, backend, precision, device)
    _check_options(options, [backend_spec(choice.backend) for choice in choices], automatic=backend == "auto")
    *preferred, last = choices
    # Only an automatic TensorRT choice has fallbacks after it.
    failed: Exception | None = None
    for choice in preferred:
        try:
            return _open_choice(choice, device, build, working_size, options)
        except NoSuchDeviceError:
            raise  # 'cuda:1' on a one-GPU machine: the next backend has no such device either
        except (ImportError, LookupError, ValueError) as exc:
            failed = exc
            note = f"no TensorRT engine ({exc}); running {last.backend} instead"
            print(f"unetrt: {note}", file=sys.stderr, flush=True)
            tell_note(note)  # a live view's page said the build was still going while the fallback opened
    try:
        return _open_choice(last, device, build, working_size, options)
    except NoSuchDeviceError:
        raise
    except (ImportError, ValueError) as exc:
        if failed is None:
            raise
        # The fallback's failure alone named its own fix ('cuda:1' without pycuda: "install onnxruntime-gpu", which
        # no Jetson has) where TensorRT's is what runs the model here: the line names both, TensorRT's first.
        both = f"no TensorRT engine ({failed}), and {last.backend} cannot run it instead: {exc}"
        raise (ImportError(both) if isinstance(exc, ImportError) else ValueError(both)) from exc


def _open_choice(choice: ModelChoice, device: str, build: bool, working_size: tuple[int, int] | None,
                 options: dict[str, Any]) -> Backend:
    spec = backend_spec(choice.backend)
    # An automatic choice may pass options meant for its fallback (threads, lanes): each backend gets its own.
    taken = options if spec.options is None else {key: value for key, value in options.items() if key in spec.options}
    return spec.load_opener()(OpenRequest(choice.path, choice.precision, device, build, working_size, taken))


def _check_options(options: dict[str, Any], specs: list[BackendSpec], automatic: bool) -> None:
    """Refuse options that none of the backends that may open the model takes (a typo would be a TypeError deep in
    the opener, or silently dropped). An automatic choice takes the options of every backend: robot code written
    for every machine sets OpenVINO's ``lanes`` also where the choice is TensorRT and OpenVINO is not installed."""
    if automatic:
        specs = list(registered_backends())
    if any(spec.options is None for spec in specs):
        return
    known = sorted({option for spec in specs for option in spec.options or ()})
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = "any backend" if automatic else " or ".join(spec.name for spec in specs)
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for {names}; "
                         f"{'the options are ' + ', '.join(known) if known else 'it takes none'}")
