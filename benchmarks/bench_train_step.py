"""How long one Adam training step of the U-Net takes in FP32 and in mixed precision, interleaved.

On a CPU the mixed-precision step is ``unet-train --amp``'s: bfloat16 autocast with channels_last
(only where the CPU runs bfloat16 natively); on CUDA it is float16 autocast. Both variants train
the same network on the same batch, alternating trial by trial so that load on a shared machine
falls on both alike. Writes ``benchmarks/results/train_step_<host>.json`` and ``.md``.

Example:
    python -m unetrt.benchmarks.bench_train_step --base 16 --batch 8 --shape 256x192 --threads 2
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unetrt.benchmarks import results_dir
from unetrt.cli import parse_size, run_cli
from unetrt.paths import write_whole

from .stats import describe_cpu, machine_description, summarize

RESULTS = results_dir()


def bench(base: int, batch: int, shape: tuple[int, int], classes: int, steps: int, trials: int, warmup: int,
          threads: int | None) -> dict[str, Any]:
    """Time training steps of a batch-normalised ReLU U-Net in FP32 and with ``--amp``.

    Args:
        base: channels of the first level.
        batch: samples per step.
        shape: (width, height) of the samples.
        classes: output classes.
        steps: timed steps per trial.
        trials: trials per variant, interleaved.
        warmup: untimed steps per variant before the first trial.
        threads: torch CPU threads (None: torch's default).

    Returns:
        A JSON-ready dictionary: machine, settings and per-variant step statistics (ms).

    Raises:
        ValueError: on a setting out of range, or when this machine has no mixed-precision mode to compare with.
    """
    counts = {"--base": base, "--batch": batch, "--classes": classes, "--steps": steps, "--trials": trials,
              "--threads": 1 if threads is None else threads}
    wrong = [f"{flag} {value}" for flag, value in counts.items() if value < 1] + (
        [f"--warmup {warmup}"] if warmup < 0 else [])
    if wrong:
        # Else a batch of 0 timed nothing and reported its figures, and a base or class count of 0 was torch's
        # traceback.
        raise ValueError(f"{', '.join(wrong)}: --base, --batch, --classes, --steps, --trials and --threads must be at "
                         "least 1, --warmup at least 0")
    import torch

    from unetrt.export.model import UNet
    from unetrt.export.train import amp_dtype_for

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = amp_dtype_for(device, "auto")
    if amp_dtype is None:
        raise ValueError("this CPU has no native bfloat16 (AVX-512 BF16 or AMX) and no CUDA device: "
                         "there is no mixed-precision step to compare FP32 with")
    width, height = shape
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    targets = torch.randint(0, classes, (batch, height, width), generator=generator).to(device)
    variants: dict[str, Any] = {}
    for name, dtype in (("fp32", None), (str(amp_dtype).removeprefix("torch."), amp_dtype)):
        torch.manual_seed(0)
        model = UNet(in_channels=3, num_classes=classes, base=base, activation="relu", batch_norm=True).to(device)
        inputs = images
        if dtype is not None:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            inputs = images.contiguous(memory_format=torch.channels_last)
        variants[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3), dtype, inputs)

    def step(name: str) -> float:
        model, optimizer, dtype, inputs = variants[name]
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    for name in variants:
        for _ in range(warmup):
            step(name)
    runs: dict[str, list[list[float]]] = {name: [] for name in variants}
    for _ in range(trials):
        for name in variants:
            runs[name].append([step(name) for _ in range(steps)])
    stats = {name: summarize(times).to_dict() for name, times in runs.items()}
    names = list(variants)
    return {
        "benchmark": "U-Net training step (forward, cross-entropy, backward, Adam)",
        "machine": machine_description(),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": {"base": base, "batch": batch, "shape": f"{width}x{height}", "classes": classes,
                     "steps": steps, "trials": trials, "warmup": warmup},
        "ms_per_step": stats,
        "speedup": stats[names[0]]["median"] / stats[names[1]]["median"],
    }


def write_results(data: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the JSON and a short Markdown table next to it."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train_step_{socket.gethostname()}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_whole(json_path, json.dumps(data, indent=2))
    machine, settings = data["machine"], data["settings"]
    lines = [
        f"# U-Net training step, base {settings['base']}, batch {settings['batch']} at {settings['shape']}",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores, {data['threads']} threads, "
        f"load average {machine['load_average']}; torch {data['torch']} on {data['device']}. "
        f"{settings['trials']} interleaved trials of {settings['steps']} steps after {settings['warmup']} warm-up.",
        "",
        "| variant | median ms | p90 ms | min ms | spread of trial medians |",
        "|---|---|---|---|---|",
    ]
    for name, stats in data["ms_per_step"].items():
        lines.append(f"| {name} | {stats['median']:.0f} | {stats['p90']:.0f} | {stats['min']:.0f} | "
                     f"{stats['spread_pct']:.0f}% |")
    lines += ["", f"Mixed precision is **{data['speedup']:.2f}x** faster than FP32."]
    write_whole(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=16, help="channels of the first level (default: 16)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step (default: 8)")
    parser.add_argument("--shape", type=parse_size, default=(256, 192), metavar="WxH",
                        help="sample size (default: 256x192)")
    parser.add_argument("--classes", type=int, default=11, help="output classes (default: 11)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trial (default: 5)")
    parser.add_argument("--trials", type=int, default=3, help="interleaved trials per variant (default: 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)

    def work() -> None:
        data = bench(args.base, args.batch, args.shape, args.classes, args.steps, args.trials, args.warmup,
                     args.threads)
        for path in write_results(data, args.out):
            print(path)
        print(f"fp32 {data['ms_per_step']['fp32']['median']:.0f} ms, mixed precision "
              f"{list(data['ms_per_step'].values())[1]['median']:.0f} ms per step: {data['speedup']:.2f}x")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
