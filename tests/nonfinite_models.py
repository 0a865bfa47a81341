"""Networks whose scores are NaN or infinite for real, per pixel, and frames that make them so (the tests of
unetrt.NonFiniteScoresError: tests/engine/test_frame_path_nonfinite.py and the commands' tests).

The networks are elementwise: Log of a negative input (NaN), Exp of a large one (+inf, an FP16 overflow's first
symptom) and its negation (-inf). The tiny description normalises a uint8 value v to (v / 255 - 0.5) / 0.25, so GOOD
(150) is finite for all three at FP32 (GOOD_FP16 at FP16 too) and the BAD value of each kind is not, in the channels
where it is put: one channel for NaN and +inf (either wins the argmax), all three for -inf (which counts only where
it wins). A frame's expected count of non-finite pixels is the number of pixels holding a BAD value.
write_fp16_overflow_onnx makes a network finite at FP32 that overflows FP16 between its layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import tiny_info

GOOD = 150
# Finite at FP16 too: GOOD's Exp(100 x) (about 2e15) overflows an FP16 engine, this one's (x = -0.12: 8e-6) does not.
GOOD_FP16 = 120
BAD = {"nan": 0, "+inf": 255, "-inf": 255}
KINDS = list(BAD)


def write_nonfinite_onnx(path: Path, kind: str, classes: int = 3) -> Path:
    """A described ONNX network, elementwise per pixel, whose scores are `kind` where a channel holds BAD[kind]:
    Log(x) ('nan'), Exp(100 x) ('+inf') or -Exp(100 x) ('-inf'); one class (a binary model) takes the mean of the
    three channels, which keeps a NaN or infinity. 'finite' is the same network with the image as its scores,
    finite for every frame (a sibling file that runs where the others do not)."""
    import onnx
    from onnx import TensorProto, helper

    from unetrt.model_file import write_onnx_description

    if kind == "finite":
        nodes = [helper.make_node("Identity", ["image"], ["scores"])]
    elif kind == "nan":
        nodes = [helper.make_node("Log", ["image"], ["scores"])]
    else:
        nodes = [helper.make_node("Constant", [], ["hundred"],
                                  value=helper.make_tensor("hundred_value", TensorProto.FLOAT, [], [100.0])),
                 helper.make_node("Mul", ["image", "hundred"], ["scaled"]),
                  helper.make_node("Exp", ["scaled"], ["scores" if kind == "+inf" else "grown"])]
        if kind == "-inf":
            nodes.append(helper.make_node("Neg", ["grown"], ["scores"]))
    if classes == 1:
        nodes.append(helper.make_node("ReduceMean", ["scores"], ["logits"], axes=[1], keepdims=1))
    else:
        nodes.append(helper.make_node("Identity", ["scores"], ["logits"]))
    graph = helper.make_graph(nodes, "nonfinite",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_onnx_description(model, tiny_info(num_classes=classes))
    onnx.save(model, str(path))
    return path


# Each of two layers scales by this: a normalised value past 65504 / 200 ** 2 = 1.64 (uint8 above 232) overflows FP16
# after the second. Under 10000, so an FP16 conversion (TensorRT 11's FP16, unetrt.export.fp16) keeps the weights.
OVERFLOW_STEP = 200.0


def write_fp16_overflow_onnx(path: Path, classes: int = 3) -> Path:
    """A described ONNX network, per pixel, finite at FP32 everywhere and past FP16's 65504 only in the middle: two
    1x1 convolutions scale each channel by OVERFLOW_STEP each, a third (the head) scales it back, so its scores are
    the normalised input. An FP16 engine stores the second convolution's output as half: +inf where a channel holds
    BAD['+inf'] (255: 80000), while GOOD (150: about 14100) stays finite. Convolutions, which TensorRT does not fuse
    into one kernel, so the overflow is TensorRT's as much as the fake's."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from unetrt.model_file import write_onnx_description

    step = np.eye(3, dtype=np.float32)[:, :, None, None] * np.float32(OVERFLOW_STEP)
    back = np.eye(classes, 3, dtype=np.float32)[:, :, None, None] / np.float32(OVERFLOW_STEP ** 2)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "step"], ["once"], name="/up1/Conv"),
         helper.make_node("Conv", ["once", "step"], ["twice"], name="/up2/Conv"),
         helper.make_node("Conv", ["twice", "back"], ["logits"], name="/head/Conv")],
        "fp16_overflow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes, "h", "w"])],
        [numpy_helper.from_array(step, "step"), numpy_helper.from_array(back, "back")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_onnx_description(model, tiny_info(num_classes=classes))
    onnx.save(model, str(path))
    return path


def frame_with_bad_pixels(kind: str, shape: tuple[int, int], seed: int, share: float = 0.02,
                          good: int = GOOD) -> tuple[np.ndarray, int]:
    """A uint8 BGR frame of ``good`` (GOOD_FP16 for an FP16 engine) with BAD[kind] in some pixels (in one channel,
    all three for '-inf'), and how many pixels those are."""
    rng = np.random.default_rng(seed)
    frame = np.full((*shape, 3), good, np.uint8)
    bad = rng.random(shape) < share
    bad[rng.integers(shape[0]), rng.integers(shape[1])] = True
    ys, xs = np.nonzero(bad)
    if kind == "-inf":
        frame[ys, xs] = BAD[kind]
    else:
        frame[ys, xs, rng.integers(0, 3, shape)[ys, xs]] = BAD[kind]
    return frame, int(bad.sum())
