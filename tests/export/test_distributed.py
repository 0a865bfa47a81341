"""Data-parallel training with torchrun: two CPU processes, gloo on loopback, identical weights at the end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_train import TINY, make_isbi  # noqa: E402  (pytest puts this folder on sys.path)

from unetrt.export.distributed import DistributedContext, init_distributed, pick_device, weights_digest  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_single_process_context_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext(0, 1, 0, torch.device("cpu"))
    assert context.is_main and not context.distributed


def test_weights_digest_sees_one_changed_bit() -> None:
    model = torch.nn.Linear(2, 2)
    before = weights_digest(model)
    with torch.no_grad():
        model.weight[0, 0] = torch.nextafter(model.weight[0, 0], torch.tensor(10.0))
    assert weights_digest(model) != before


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    data = make_isbi(tmp_path / "isbi", slices=10)
    out = tmp_path / "run"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "unetrt.export.train", "--dataset", "isbi", "--data", str(data), "--val-slices", "8-9",
               "--out", str(out), *TINY, "--batch-norm", "--epochs", "2", "--loss", "weighted-ce",
               "--augment", "hflip,elastic", "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["epochs_run"] == 2


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_two_ranks_without_batch_norm_train_as_one_process_of_the_whole_batch(tmp_path: Path) -> None:
    # docs/training.md: --batch-size is per process, and without batch norm 2 processes of 2 samples take the steps
    # one process of 4 takes (DDP averages equal shares' gradients). Four training slices, no augmentation, no
    # dropout: each epoch is one step on all four, whichever rank holds which.
    from test_train import _isbi_args

    from unetrt.export.checkpoint import load_checkpoint
    from unetrt.export.train import main

    data = make_isbi(tmp_path / "isbi")
    common = ("--no-batch-norm", "--augment", "none", "--amp", "off", "--epochs", "2", "--loss", "weighted-ce")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "unetrt.export.train",
               *_isbi_args(data, tmp_path / "two", *common), "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(_isbi_args(data, tmp_path / "one", *common, "--batch-size", "4", "--device", "cpu")) == 0
    one, two = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("one", "two"))
    for key, value in one.items():
        # the all-reduce sums in another order: equal up to float32 rounding
        torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from Linux's /proc")
def test_shutdown_joins_gloo_threads_before_the_process_exits(tmp_path: Path) -> None:
    # Threads of a process group that outlives shutdown() are still running while the interpreter exits; when
    # the other rank closes its sockets then, the process aborts ("terminate called without an active
    # exception"). This checks the cause deterministically instead of waiting for the rare abort.
    worker = Path(__file__).with_name("gloo_shutdown_worker.py")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(worker), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        threads = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert not [name for name in threads if "gloo" in name], f"rank {rank} threads after shutdown: {threads}"


def test_only_the_first_rank_of_all_is_main() -> None:
    # Rank 2 of 4 is the first process on its node (local rank 0) but must not write the checkpoints too.
    assert not DistributedContext(2, 4, 0, torch.device("cpu")).is_main


def test_torchrun_environment_joins_a_gloo_group_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    backends: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: backends.append(backend))
    assert init_distributed("cpu") == DistributedContext(2, 4, 0, torch.device("cpu"))
    assert backends == ["gloo"]


def test_an_unknown_device_name_is_refused() -> None:
    with pytest.raises(ValueError, match="got 'gpu'"):
        pick_device("gpu")
