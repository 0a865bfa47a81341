"""The one small protocol every inference backend implements."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ..geometry import check_input_size, output_margin
from ..model_info import ModelInfo


@runtime_checkable
class Backend(Protocol):
    """Runs the network on normalised batches; owns its resources until :meth:`close`.

    Attributes:
        name: short backend name, as registered (:mod:`unetrt.backends.registry`).
        device: where it runs, in words (e.g. 'cpu', 'cuda:0 (NVIDIA H100)').
        info: the model's description.
        precision: what the network runs at: 'fp32', 'fp16', 'bf16' or 'int8'.
        path: the model file it runs (for a TensorRT engine built from an ONNX model: the cached plan).
        threads: the CPU threads it was asked to use, or None for its library's default.
        max_input_hw: largest (height, width) the backend accepts, or None for no limit.
        min_input_hw: (optional) smallest (height, width) it accepts (a TensorRT profile's minimum); the
            :class:`~unetrt.segmenter.Segmenter` mirror-pads smaller images up to it. Absent or None: any legal size.
        max_batch: largest batch it accepts, or None for no limit.
    """

    name: str
    device: str
    info: ModelInfo
    precision: str
    path: Path
    threads: int | None
    max_input_hw: tuple[int, int] | None
    max_batch: int | None

    def infer(self, batch: NDArray[Any]) -> NDArray[Any]:
        """N x C x H x W float32 (normalised, legal H and W) -> N x K x h x w float32 logits."""
        ...

    def close(self) -> None:
        """Release sessions, contexts and device memory; idempotent."""
        ...


def check_batch(batch: NDArray[Any], info: ModelInfo) -> NDArray[Any]:
    """Validate a network batch and return it as contiguous float32.

    Raises:
        ValueError: on a wrong rank, channel count or dtype.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        shape = getattr(batch, "shape", None)
        raise ValueError(f"batch must be a 4-D N x C x H x W numpy array, got shape {shape}")
    if batch.shape[1] != info.in_channels:
        raise ValueError(f"batch has {batch.shape[1]} channels; the model expects {info.in_channels}")
    if batch.dtype not in (np.float32, np.float16):
        raise ValueError(f"batch dtype must be float32, got {batch.dtype}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def check_precision(asked: str, runs_at: str, backend: str, path: Path) -> str:
    """The precision a backend runs a file at, checked against the one it was asked for.

    Args:
        asked: the precision :func:`unetrt.backends.choose_model` chose, or 'auto'.
        runs_at: the precision the backend runs this file at (read from the file: :mod:`unetrt.model_file`).
        backend: the backend's name, for the message.
        path: the model file, for the message.

    Returns:
        ``runs_at``.

    Raises:
        ValueError: when ``asked`` is neither 'auto' nor ``runs_at``.

    Example:
        >>> check_precision("auto", "int8", "onnxruntime", Path("camvid.int8.onnx"))
        'int8'
    """
    if asked not in ("auto", runs_at):
        raise ValueError(f"{path.name} runs at {runs_at} on backend {backend!r}, not {asked!r}: pass precision "
                         f"'auto', or the file of that precision")
    return runs_at


def check_one_input_and_output(inputs: int, outputs: int, path: str | Path) -> None:
    """Refuse a network of more than one input or output: a backend would feed the first and read the first,
    whatever the others are.

    Raises:
        ValueError: in one line naming the counts and the fix.

    Example:
        >>> check_one_input_and_output(1, 1, "camvid.onnx")
    """
    if inputs != 1 or outputs != 1:
        raise ValueError(f"{str(path)!r} has {inputs} inputs and {outputs} outputs; a unetrt U-Net has one of each: "
                         "export the network with the image as its only input and the logits as its only output")


def network_run_error(runtime: str, path: str | Path, shape: tuple[int, ...], reason: str) -> ValueError:
    """The one error for a network its runtime cannot run on a batch of legal shape: most often a network from
    elsewhere whose description states too small a depth (its pooling needs sides of larger multiples).

    Example:
        >>> str(network_run_error("ONNX Runtime", "m.onnx", (1, 3, 41, 49), "Concat: mismatched dimensions"))[:59]
        'ONNX Runtime cannot run m.onnx on a 1 x 3 x 41 x 49 batch ('
    """
    return ValueError(f"{runtime} cannot run {Path(path).name} on a {' x '.join(map(str, shape))} batch "
                      f"({' '.join(reason.split())}); if the network takes only sides that are multiples of 2 ** k, "
                      "describe it with depth k + 1, whose padding makes them so "
                      "(docs/models.md#a-network-from-elsewhere)")


def invalid_model_file(path: str | Path, expected: str, problem: str) -> ValueError:
    """The one error every backend raises for a model file that exists but cannot be used.

    Library errors about a damaged file run to many lines and name neither the file nor
    what it should have been; this names both, and the problem in one line.

    Args:
        path: the model file.
        expected: what the file should be, e.g. 'ONNX model written by unet-export'.
        problem: what is wrong with it, e.g. 'the file is truncated or not ONNX'.

    Returns:
        The ValueError to raise (``raise invalid_model_file(...) from exc``).

    Example:
        >>> str(invalid_model_file("m.onnx", "ONNX model written by unet-export", "it is empty"))
        "model file 'm.onnx' is not a valid ONNX model written by unet-export: it is empty"
    """
    return ValueError(f"model file {str(path)!r} is not a valid {expected}: {' '.join(problem.split())}")
@runtime_checkable
class DeviceBackend(Backend, Protocol):
    """A backend that also runs on device buffers: the entry of the GPU-resident path.

    Everything is asynchronous on the stream that :meth:`device_session` yields; nothing waits on the host.

    Attributes:
        input_dtype: the network input's dtype on the device (float32, or float16 for FP16 engine inputs).
        output_dtype: the logits' dtype on the device.
        capturable: whether :meth:`enqueue` may be recorded into a CUDA graph and replayed.
    """

    input_dtype: np.dtype[Any]
    output_dtype: np.dtype[Any]
    capturable: bool

    def device_session(self) -> AbstractContextManager[int]:
        """Make the backend's CUDA context current on this thread (and hold its lock); yields the stream handle
        all device work of the path goes on."""
        ...

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """N x K x h x w logits shape for an N x C x H x W input (inside :meth:`device_session`).

        Raises:
            ValueError: when the backend does not take that shape.
        """
        ...

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        """Queue the network on ``stream``: contiguous input at ``input_ptr`` -> contiguous logits at
        ``output_ptr`` (inside :meth:`device_session`).

        Raises:
            ValueError: on a shape the backend does not take.
            RuntimeError: when the runtime refuses to queue the work.
        """
        ...


class ResidentBatch(Protocol):
    """A batch copied once into a backend's device memory, with an output buffer beside it, run there again and
    again: what unet-bench's device mode (``--no-data-transfers``, trtexec's ``--noDataTransfers``) times. Made by a
    backend's ``resident(batch)``; its memory goes with the backend's :meth:`Backend.close`.

    Attributes:
        shape: the batch's N x C x H x W shape.
    """

    shape: tuple[int, ...]

    def run(self) -> None:
        """Run the network from the device batch into the device output; returns when the run is done (so a host
        clock times it).

        Raises:
            ValueError: as the backend's ``infer`` for a failed run, or after the backend's ``close``.
        """
        ...

    def logits(self) -> NDArray[np.float32]:
        """The last run's logits, copied to the host as float32 (as the backend's ``infer`` returns them).

        Raises:
            ValueError: before the first :meth:`run`, or after the backend's ``close``.
        """
        ...


class ResidentBackend(Backend, Protocol):
    """A backend that keeps a batch in its device memory for repeated runs (:class:`ResidentBatch`)."""

    def resident(self, batch: NDArray[Any]) -> ResidentBatch:
        """``batch`` (N x C x H x W, as ``infer`` takes it) checked as ``infer`` checks it, cast to the network's
        input type and copied once into the backend's device memory.

        Raises:
            ValueError: as ``infer`` for a malformed batch or a shape the network does not take, or after ``close``.
        """
        ...


def network_output_shape(info: ModelInfo, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """N x K x h x w logits shape of the model for an N x C x H x W input ('valid' networks lose their margin).

    Raises:
        ValueError: on a rank other than 4 or a side the network does not take.

    Example:
        >>> network_output_shape(info, (1, 3, 192, 256))  # doctest: +SKIP
        (1, 11, 192, 256)
    """
    if len(input_shape) != 4:
        raise ValueError(f"input shape must be N x C x H x W, got {input_shape}")
    batch, _, height, width = (int(d) for d in input_shape)
    check_input_size(height, width, info.padding, info.depth)
    sides = [side - 2 * output_margin(side, info.padding, info.depth) for side in (height, width)]
    return batch, info.num_classes, sides[0], sides[1]
