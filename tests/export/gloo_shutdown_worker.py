"""One torchrun rank of the shutdown test: train a step under DDP, leave the group, report gloo threads left.

Run by tests/export/test_distributed.py as ``torchrun --nproc-per-node 2 gloo_shutdown_worker.py OUT_DIR``;
each rank writes ``OUT_DIR/rank{N}.txt`` with the names of the threads still running after
:func:`unetrt.export.distributed.shutdown` (Linux: from /proc/self/task).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from unetrt.export.distributed import gather_digests, init_distributed, shutdown, wrap_model


def thread_names() -> list[str]:
    """The kernel's names of this process's threads (gloo names its own: gloo_tcp_loop, pt_gloo_runloop)."""
    tasks = Path("/proc/self/task")
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir())


def main() -> None:
    """Train one step on two ranks, shut down, write the threads still alive."""
    context = init_distributed("cpu")
    model = wrap_model(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)), context)
    optimizer = torch.optim.Adam(model.parameters())
    loss = model(torch.randn(2, 1, 8, 8)).square().mean()
    loss.backward()
    optimizer.step()
    gather_digests(model, context)
    del model, optimizer, loss
    shutdown(context)
    Path(sys.argv[1], f"rank{os.environ['RANK']}.txt").write_text("\n".join(thread_names()) + "\n")


if __name__ == "__main__":
    main()
