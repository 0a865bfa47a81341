"""bench_train_step: the settings reach the steps, the speed-up is FP32 over mixed precision, both files written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from unetrt.benchmarks import bench_train_step  # noqa: E402
from unetrt.export.train import amp_dtype_for  # noqa: E402


@pytest.fixture()
def restore_torch_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_a_short_run_honours_its_settings_and_writes_both_files(tmp_path: Path, restore_torch_threads: int,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    if amp_dtype_for(torch.device("cpu"), "auto") is None and not torch.cuda.is_available():
        pytest.skip("no native bfloat16 on this CPU and no CUDA device: nothing to compare FP32 with")
    # One thread more than the process has, so a run that leaves torch's threads alone shows.
    threads = restore_torch_threads + 1
    assert bench_train_step.main(["--base", "4", "--batch", "2", "--shape", "32x16", "--classes", "2", "--steps", "3",
                                  "--trials", "2", "--warmup", "0", "--threads", str(threads),
                                  "--out", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("train_step_*.json")
    data = json.loads(json_path.read_text())
    assert data["threads"] == threads
    assert data["settings"]["shape"] == "32x16"
    fp32, mixed = data["ms_per_step"].values()
    # 2 trials of 3 steps each.
    assert fp32["iterations"] == mixed["iterations"] == 6
    # 'x faster than FP32': FP32's median over the mixed-precision one.
    assert data["speedup"] == pytest.approx(fp32["median"] / mixed["median"])
    report = json_path.with_suffix(".md").read_text()
    assert f"**{data['speedup']:.2f}x** faster" in report


@pytest.mark.parametrize(("argv", "named"), [
    # A batch of 0 timed empty steps and wrote their figures with exit code 0.
    (["--batch", "0"], "--batch 0"),
    # torch's tracebacks.
    (["--base", "0"], "--base 0"),
    (["--classes", "0"], "--classes 0"),
    # summarize's message, which named unet-bench's --iterations and --duration.
    (["--steps", "0"], "--steps 0"),
    (["--trials", "0"], "--trials 0"),
    (["--threads", "0"], "--threads 0"),
    (["--warmup", "-1"], "--warmup -1"),
])
def test_a_setting_out_of_range_is_one_line_before_any_step(argv: list[str], named: str, tmp_path: Path,
                                                            restore_torch_threads: int,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_train_step.main(["--base", "4", "--batch", "1", "--shape", "32x16", "--steps", "1", "--trials", "1",
                                  *argv, "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}: --base, --batch") and err.count("\n") == 1
    assert not (tmp_path / "results").exists()
