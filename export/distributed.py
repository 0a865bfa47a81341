"""Data-parallel training across processes started by ``torchrun``: setup, agreement checks, teardown.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them training runs as a single process. The process
group uses NCCL with one GPU per process on CUDA, gloo on CPU.

Example:
    torchrun --nproc-per-node 2 -m unetrt.export.train --dataset isbi --data ../shared/data/isbi2012-em ...
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes and its device.

    Example:
        >>> DistributedContext(0, 1, 0, torch.device("cpu")).is_main
        True
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and figures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``; under torchrun each process gets GPU ``LOCAL_RANK``.

    Raises:
        ValueError: when CUDA is asked for but not available, or the name is unknown.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group when the environment says so, else a one-process context.

    Raises:
        ValueError: on a malformed torchrun environment.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ValueError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from exc
    device = pick_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        _import_collectives_before_the_group_exists()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def _import_collectives_before_the_group_exists() -> None:
    """Import ``torch.distributed.nn`` now, while no process group exists.

    Its functions default to ``group=group.WORLD``, a default evaluated once, at import.
    DistributedDataParallel imports it on first use; after ``init_process_group`` that
    binds the live default group into ten default arguments for the life of the process,
    so ``destroy_process_group`` cannot free it: gloo's worker and socket threads outlive
    :func:`shutdown` and are still running while the interpreter exits. When the other
    rank closes its sockets at that moment, the exiting process aborts ("terminate called
    without an active exception", SIGABRT). Imported first, the defaults are None (the
    default group looked up per call) and the group dies in :func:`shutdown`.
    """
    import torch.distributed.nn  # noqa: F401


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """The model wrapped in DistributedDataParallel when several processes take part (weights synced from rank 0)."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_value(value: Any, context: DistributedContext) -> Any:
    """Rank 0's ``value`` on every rank (so decisions such as early stopping agree)."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], context: DistributedContext) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every learned parameter, bit for bit (equal digests = identical weights).

    Buffers are left out: batch-norm running statistics differ between ranks after the
    last step until DDP's next buffer broadcast, and only rank 0's are saved.
    """
    digest = hashlib.sha256()
    for name, tensor in unwrap_model(model).named_parameters():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_digests(model: nn.Module, context: DistributedContext) -> list[str]:
    """Every rank's :func:`weights_digest`, in rank order.

    Raises:
        RuntimeError: when the ranks' weights differ (data-parallel training went out of step).
    """
    digest = weights_digest(model)
    if not context.distributed:
        return [digest]
    digests: list[Any] = [None] * context.world_size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
    return [str(d) for d in digests]


def shutdown(context: DistributedContext, completed: bool = True) -> None:
    """Leave the process group (a no-op for a single process).

    After a completed run every rank waits at a barrier first, so a fast rank does not close
    its connections while a slower one still sends or receives the last collective; after a
    failure (``completed=False``) it leaves at once, as the other ranks may never get there.
    Destroying the group joins gloo's threads (see
    :func:`_import_collectives_before_the_group_exists` for why they can be joined).
    """
    if context.distributed and dist.is_initialized():
        if completed:
            dist.barrier()
        dist.destroy_process_group()
