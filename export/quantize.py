"""INT8 post-training quantization: a calibrated QDQ ONNX model beside the FP32 one, with an accuracy gate.

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``)
writes explicit QuantizeLinear/DequantizeLinear pairs (QDQ) with per-output-channel
symmetric INT8 weights, in one of two layouts of the activations (``target``):

* 'cpu' (default): uint8 activations with a zero point, the layout OpenVINO and
  ONNX Runtime's VNNI kernels run best and most accurately (measured on camvid:
  OpenVINO with symmetric int8 activations agreed with FP32 on 89% of pixels,
  with uint8 on 99%), and weights in 7 bits (``reduce_range``). A CPU without
  VNNI (AVX2 or AVX-512 alone) multiplies uint8 by int8 with ``vpmaddubsw``,
  which adds two products into int16 and saturates (255 * 127 * 2 > 32767);
  ONNX Runtime's quantization guide prescribes reduce-range weights "for the
  U8S8 format on AVX2 and AVX512 (non-VNNI) machines to mitigate saturation".
  Measured: the camvid INT8 file with 8-bit weights scored 54.36 report mean
  IoU on OpenVINO on a Zen 3 EPYC (AVX2) against 62.35 on ONNX Runtime and
  63.08 on CPUs with VNNI: one file with 7-bit weights serves every x86 CPU;
* 'tensorrt': int8 activations with zero points of 0, the only layout TensorRT's
  explicit quantization accepts (``unet-build --int8``).

Memory: ONNX Runtime's histogram calibrators ('percentile', 'entropy') hold every
activation of every calibration frame at once, about 300 MB per 512x512 frame of
the base-16 U-Net; 'minmax' keeps each tensor's minimum and maximum per frame. About
2 million network pixels (32 frames of 256x192, 8 of 512x512) calibrate well.

The logit head stays FP32 in both, so the logits are not rounded to 256 levels.
(NVIDIA ModelOpt's ONNX PTQ places QDQ for TensorRT alone and does not install on
this project's machines; ONNX Runtime's tools come with the runtime dependency.)

Calibration frames go through the runtime's own preprocessing: a ``Segmenter``
on the FP32 model segments each frame and its backend records the network batch,
so calibration sees exactly what inference sees (working-size resize, colour
order, normalisation, mirror padding). The INT8 model is then scored against the
FP32 model on labelled frames with ``unet-eval``'s :func:`unetrt.evaluate.evaluate`.

Example:
    >>> batches = calibration_batches("camvid.onnx", calibration_frames("camvid/train", 32))  # doctest: +SKIP
    >>> quantize_onnx("camvid.onnx", "camvid.int8.onnx", batches, "percentile")  # doctest: +SKIP
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from unetrt.backends import Backend
from unetrt.backends.onnxruntime import prints_captured
from unetrt.datasets import list_images, read_image
from unetrt.evaluate import evaluate
from unetrt.model_file import (
    INPUT_NAME,
    SEVEN_BIT_WEIGHTS,
    int8_weights_saturate_here,
    read_model_file,
    write_onnx_description,
)
from unetrt.segmenter import Segmenter

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "tensorrt")
DEFAULT_METHOD = "percentile"
# An INT8 model may lose at most this much against FP32: 1 point of mean IoU (multi-class), or
# 0.005 of the ISBI challenge pixel error (binary models).
MAX_MEAN_IOU_LOSS = 0.01
MAX_PIXEL_ERROR_GAIN = 0.005


def int8_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``.

    Example:
        >>> int8_path("out/camvid.onnx").name
        'camvid.int8.onnx'
    """
    path = Path(onnx_path)
    return path.with_name(f"{path.stem}.int8.onnx")


def pick_evenly(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer).

    Example:
        >>> [p.name for p in pick_evenly([Path(str(i)) for i in range(10)], 3)]
        ['0', '3', '6']
    """
    if count <= 0:
        raise ValueError(f"calibration count must be positive, got {count}")
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


class _RecordingBackend:
    """A backend that remembers every batch it is given before passing it on."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.batches: list[np.ndarray] = []
        self.name, self.info, self.device = inner.name, inner.info, inner.device
        self.precision, self.path, self.threads = inner.precision, inner.path, inner.threads
        self.max_input_hw, self.max_batch = inner.max_input_hw, inner.max_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(batch, dtype=np.float32, copy=True))
        return self._inner.infer(batch)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _RecordingBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def calibration_batches(fp32_onnx: str | Path, frames: Sequence[Path]) -> list[np.ndarray]:
    """The network batches the runtime feeds the FP32 model for these frames, one 1xCxHxW array per frame.

    Raises:
        ValueError: when a frame cannot be read.

    Example:
        >>> batches = calibration_batches("camvid.onnx", pick_evenly(list_images("train"), 32))  # doctest: +SKIP
    """
    with Segmenter(fp32_onnx, backend="onnxruntime") as segmenter:
        recorder = _RecordingBackend(segmenter.backend)
        # Swapping the backend keeps every step of the Segmenter's data path in front of the recorder.
        segmenter.backend = recorder
        for path in tqdm(frames, desc="calibrating", unit="frame", disable=None):
            segmenter.segment(read_image(path, segmenter.info.in_channels))
    return [b[i : i + 1] for b in recorder.batches for i in range(b.shape[0])]


class _BatchReader:
    """ONNX Runtime's CalibrationDataReader over recorded batches."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._feeds = iter([{INPUT_NAME: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_onnx(fp32_onnx: str | Path, output: str | Path, batches: Sequence[np.ndarray],
                  method: str = DEFAULT_METHOD, target: str = "cpu") -> Path:
    """Write the calibrated QDQ INT8 model of ``fp32_onnx`` to ``output``, metadata included.

    Args:
        fp32_onnx: the FP32 model written by ``unet-export``.
        output: the .onnx file to write.
        batches: calibration network inputs (see :func:`calibration_batches`).
        method: 'minmax', 'entropy' or 'percentile' (99.999th percentile of |activation|).
        target: 'cpu' (uint8 activations) or 'tensorrt' (symmetric int8 activations); see the module docstring.

    Returns:
        The written path.

    Raises:
        ValueError: on an unknown method or target, or no calibration batch.

    Example:
        >>> quantize_onnx("camvid.onnx", "camvid.int8.onnx", batches)  # doctest: +SKIP
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    if target not in TARGETS:
        raise ValueError(f"INT8 target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not batches:
        raise ValueError("no calibration batch: give a folder with at least one frame")
    info = read_model_file(fp32_onnx).info
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="unet-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and graph clean-up first, as ONNX Runtime recommends before static quantization.
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        outputs = {value.name for value in graph.output}
        head = [node.name for node in graph.node if outputs & set(node.output)]
        symmetric = target == "tensorrt"
        # The histogram calibrations print their progress and bin counts on stdout, five lines before the
        # export's own line names the method and frames.
        with prints_captured():
            quantize_static(
                str(prepared), str(output), _BatchReader(batches),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=not symmetric,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=methods[method], nodes_to_exclude=head,
                # No CalibMaxIntermediateOutputs: ONNX Runtime's MinMaxCalibrater drops each full chunk of frames
                # without taking its ranges (microsoft/onnxruntime#18893; "No data is collected." at a multiple of
                # the chunk).
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "CalibMovingAverage": False},
            )
    proto = onnx.load(str(output))
    activations = "int8 symmetric per tensor" if symmetric else "uint8 asymmetric per tensor"
    write_onnx_description(proto, info, {"precision": "int8", "format": "QDQ", "target": target, "method": method,
                                         "frames": len(batches), "activations": activations,
                                         "weights": "int8 symmetric per channel" if symmetric else SEVEN_BIT_WEIGHTS,
                                         "fp32_nodes": head})
    onnx.save(proto, str(output))
    return output


@dataclass(frozen=True)
class AccuracyCheck:
    """FP32 and INT8 figures on the same labelled frames, and whether INT8 keeps the accuracy.

    Attributes:
        metric: 'mean_iou' (multi-class) or 'challenge_pixel_error' (binary).
        fp32: the FP32 model's figure (ONNX Runtime).
        int8: the INT8 model's figure on ``engine``.
        limit: the largest loss allowed.
        engine: the backend that ran the INT8 model.
        fp32_figures, int8_figures: everything ``unet-eval`` reports for each.
    """

    metric: str
    fp32: float
    int8: float
    limit: float
    engine: str
    fp32_figures: dict[str, Any]
    int8_figures: dict[str, Any]

    @property
    def loss(self) -> float:
        """How much worse INT8 is (positive: worse)."""
        return self.fp32 - self.int8 if self.metric == "mean_iou" else self.int8 - self.fp32

    @property
    def passed(self) -> bool:
        """INT8 is at most ``limit`` worse than FP32."""
        return self.loss <= self.limit

    def describe(self) -> str:
        """One line: both figures and the verdict."""
        if self.metric == "mean_iou":
            figures = f"mean IoU FP32 {100 * self.fp32:.2f}, INT8 on {self.engine} {100 * self.int8:.2f}"
            limit = f"{100 * self.limit:.0f} point"
        else:
            figures = f"challenge pixel error FP32 {self.fp32:.4f}, INT8 on {self.engine} {self.int8:.4f}"
            limit = f"{self.limit}"
        verdict = "within" if self.passed else "worse than FP32 by more than"
        return f"{figures} ({verdict} {limit})"


def check_accuracy(fp32_onnx: str | Path, int8_onnx: str | Path, images: str | Path, labels: str | Path,
                   stems: Sequence[str] | None = None) -> list[AccuracyCheck]:
    """Score the FP32 model on ONNX Runtime and the INT8 model on every installed CPU engine (ONNX Runtime,
    OpenVINO) over labelled frames; OpenVINO only where it runs the file (not a file of 8-bit weights, TensorRT's
    layout, on a CPU without VNNI, whose INT8 products it saturates: it refuses to run that file there).

    Returns:
        One check per engine that ran the INT8 model.

    Raises:
        FileNotFoundError, ValueError: from :func:`unetrt.evaluate.evaluate` (missing folders, mismatched files).

    Example:
        >>> checks = check_accuracy("camvid.onnx", "camvid.int8.onnx", "val", "valannot")  # doctest: +SKIP
    """
    from unetrt.backends.openvino import openvino_available

    with Segmenter(fp32_onnx, backend="onnxruntime") as segmenter:
        reference = evaluate(segmenter, images, labels, stems)
    binary = "challenge_pixel_error" in reference
    metric = "challenge_pixel_error" if binary else "mean_iou"
    limit = MAX_PIXEL_ERROR_GAIN if binary else MAX_MEAN_IOU_LOSS
    checks = []
    engines = ["onnxruntime"]
    if openvino_available() and not int8_weights_saturate_here(read_model_file(int8_onnx)):
        engines.append("openvino")
    for engine in engines:
        with warnings.catch_warnings():
            # ONNX Runtime runs a file of 8-bit weights (TensorRT's layout) unfused on a CPU without VNNI, warning
            # of FP32's speed and naming the CPU export: nothing to the user of a check that scores the file's own
            # answers, asked for another target.
            warnings.filterwarnings("ignore", f"{re.escape(Path(int8_onnx).name)} has 8-bit INT8 weights",
                                    RuntimeWarning)
            with Segmenter(int8_onnx, backend=engine) as segmenter:
                figures = evaluate(segmenter, images, labels, stems)
        checks.append(AccuracyCheck(metric, float(reference[metric]), float(figures[metric]), limit, engine,
                                    reference, figures))
    return checks


def calibration_frames(folder: str | Path, count: int, stems: Sequence[str] | None = None) -> list[Path]:
    """``count`` image files spread evenly over a folder (sorted by name, so over its sequences).

    Args:
        folder: the image folder.
        count: how many frames.
        stems: take them only among these file stems (e.g. the training slices, to keep held-out ones unseen).

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it holds no image, a stem is missing, or count is not positive.

    Example:
        >>> calibration_frames("isbi2012-em/images", 8, [f"{i:02d}" for i in range(20)])  # doctest: +SKIP
    """
    images = list_images(folder)
    if stems is not None:
        wanted = set(stems)
        missing = wanted - {image.stem for image in images}
        if missing:
            raise ValueError(f"calibration stems not in {str(folder)!r}: {', '.join(sorted(missing))}")
        images = [image for image in images if image.stem in wanted]
    return pick_evenly(images, count)
