"""PyTorch backend for ``.pt`` checkpoints (CPU or CUDA); torch is imported only here, lazily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from ..cpu import forked_after_torch
from ..cuda import DeviceArray, cuda_ordinal
from .base import check_batch, network_output_shape

if TYPE_CHECKING:
    from .registry import OpenRequest


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "the torch backend needs PyTorch: pip install 'unetrt[export]' (after installing the torch build you want)"
        ) from exc
    return torch


class TorchBackend:
    """Runs a ``.pt`` checkpoint written by ``unet-train`` in PyTorch.

    Args:
        path: the checkpoint.
        device: 'cpu', 'cuda' or 'auto' (CUDA when available).
        threads: torch intra-op CPU threads (None: leave torch's setting; 1 in a process forked from one that
            had imported torch, where torch's thread pool would hang).
        half: run in FP16 (CUDA only).
        channels_last: use the channels-last memory format.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a unetrt checkpoint, CUDA/FP16 is asked where it is not available, or more than
            one thread in a process forked from one that had imported torch.

    Example:
        >>> with TorchBackend("best.pt") as backend:  # doctest: +SKIP
        ...     logits = backend.infer(batch)
    """

    name = "torch"
    max_input_hw: tuple[int, int] | None = None
    max_batch: int | None = None

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 half: bool = False, channels_last: bool = False) -> None:
        torch = _import_torch()
        from unetrt.export.checkpoint import load_model

        self.path = Path(path)
        self.precision = "fp16" if half else "fp32"
        ordinal = None if device in ("auto", "cpu") else cuda_ordinal(device)
        if ordinal is not None and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked, but torch sees no CUDA GPU; use device 'cpu' or 'auto'")
        if ordinal is not None and ordinal >= torch.cuda.device_count():
            raise ValueError(f"CUDA device {ordinal} does not exist; torch sees {torch.cuda.device_count()} CUDA "
                             "device(s)")
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if half and not use_cuda:
            raise ValueError("FP16 (half=True) needs a CUDA device; use FP32 on the CPU")
        if forked_after_torch() and not use_cuda:
            if threads not in (None, 1):
                raise ValueError(f"threads={threads} cannot run in a process forked from one that had imported "
                                 "torch (its OpenMP threads did not come along, and torch would wait for them for "
                                 "ever); pass threads=1, or start processes with multiprocessing's 'spawn' or "
                                 "'forkserver' method")
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        self._device = torch.device("cpu" if not use_cuda else f"cuda:{ordinal or 0}")
        model, self.info = load_model(path, map_location=self._device)
        self._dtype = torch.float16 if half else torch.float32
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # cast: torch's stubs omit the memory_format keyword that Module.to accepts
        self._model: Any = cast(Any, model).to(self._device, self._dtype, memory_format=self._memory_format)
        self.device = f"cuda:{ordinal or 0} ({torch.cuda.get_device_name(self._device)})" if use_cuda else "cpu"
        self.threads = threads
        self._stream: Any = None

    def infer(self, batch: NDArray[Any]) -> NDArray[Any]:
        """N x C x H x W float32 -> N x K x h x w float32 logits.

        Raises:
            ValueError: on a malformed batch or an illegal size, or after :meth:`close`.
        """
        model = self._model  # one read: close() on another thread may drop the attribute meanwhile
        if model is None:
            raise ValueError("this backend is closed; open a new one")
        batch = check_batch(batch, self.info)
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self._device, self._dtype, memory_format=self._memory_format)
            logits = model(tensor)
            return cast(NDArray[Any], logits.float().cpu().numpy())

    # --- device entry (the GPU-resident frame path) -------------------------------------------------------

    capturable = False  # the caching allocator may allocate during a capture

    @property
    def input_dtype(self) -> np.dtype[Any]:
        """float16 with ``half=True``, else float32."""
        return np.dtype(np.float16 if self._dtype == self._torch.float16 else np.float32)

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """float32: the logits are cast into the caller's buffer."""
        return np.dtype(np.float32)

    @contextmanager
    def device_session(self) -> Iterator[int]:
        """Make this backend's GPU current (its primary context, which pycuda then allocates in) and yield the
        handle of the backend's own stream.

        Raises:
            ValueError: when the backend runs on the CPU, or after :meth:`close`.
        """
        if self._model is None:
            raise ValueError("this backend is closed; open a new one")
        if self._device.type != "cuda":
            raise ValueError("the device entry needs the torch backend on CUDA; open it with device='cuda'")
        torch = self._torch
        with torch.cuda.device(self._device):
            torch.cuda.init()
            if self._stream is None:
                self._stream = torch.cuda.Stream(self._device)
            yield int(self._stream.cuda_stream)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The logits' shape for an input shape.

        Raises:
            ValueError: on a side the network does not take.
        """
        return network_output_shape(self.info, input_shape)

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        """Run the model on ``stream`` from and into device buffers, without a host synchronisation.

        Raises:
            ValueError: on a side the network does not take, or after :meth:`close`.
        """
        model = self._model  # one read: close() on another thread may drop the attribute meanwhile
        if model is None:
            raise ValueError("this backend is closed; open a new one")
        torch = self._torch
        output_shape = self.output_shape(input_shape)
        with torch.inference_mode(), torch.cuda.stream(torch.cuda.ExternalStream(stream, device=self._device)):
            images = torch.as_tensor(DeviceArray(input_ptr, tuple(input_shape), self.input_dtype),
                                     device=self._device)
            logits = model(images.contiguous(memory_format=self._memory_format))
            out = torch.as_tensor(DeviceArray(output_ptr, output_shape, self.output_dtype), device=self._device)
            out.copy_(logits)

    def close(self) -> None:
        """Drop the model and return cached GPU memory (idempotent)."""
        self._model = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    def __enter__(self) -> TorchBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_model(request: OpenRequest) -> TorchBackend:
    """The registry's opener (:mod:`unetrt.backends.registry`): a :class:`TorchBackend` for the request, in FP16
    when the precision asked is 'fp16' or the option ``half`` says so (a checkpoint holds FP32 weights).

    Raises:
        ImportError, FileNotFoundError, ValueError: as :class:`TorchBackend`.
    """
    options = dict(request.options)
    half = bool(options.pop("half", False)) or request.precision == "fp16"
    return TorchBackend(request.path, device=request.device, half=half, **options)
