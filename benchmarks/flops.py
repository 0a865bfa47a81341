"""Floating-point operations of a U-Net, counted from its ONNX graph (Conv and ConvTranspose).

A multiply-add counts as 2 FLOPs. Activations, pooling, concatenation and bias
additions are left out: they are a fraction of a percent of a U-Net's work and
are memory-bound, so counting them would only inflate the achieved TFLOP/s.

onnx is imported by the calls (unet-bench runs without it, uncounted: the runtime does not install it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

COUNTED_OPS = ("Conv", "ConvTranspose")


def _static_shape(proto: onnx.ModelProto, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    import onnx
    from onnx import shape_inference

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ValueError(f"expected a graph with one input, found {len(graph_inputs)}")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(f"the graph input has rank {len(dims)}, got a shape of rank {len(input_shape)}: {input_shape}")
    for dim, size in zip(dims, input_shape):
        dim.ClearField("dim_param")
        dim.dim_value = int(size)
    # Clear the dynamic output dims so inference fills in the concrete ones.
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.ClearField("dim_param")
            dim.ClearField("dim_value")
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model, strict_mode=True)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _group(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "group":
            return int(attribute.i)
    return 1


def conv_flops(model: onnx.ModelProto | str | Path, input_shape: tuple[int, ...]) -> int:
    """FLOPs of every Conv and ConvTranspose for one run on an input of ``input_shape``.

    Args:
        model: the ONNX model or its file.
        input_shape: the concrete N x C x H x W input (dynamic dims are fixed to it).

    Returns:
        2 x multiply-adds of all convolutions, for the whole batch.

    Raises:
        ValueError: when the graph has not one input, or a convolution's shape cannot be inferred.

    Example:
        >>> conv_flops("unet.onnx", (1, 3, 256, 256))  # doctest: +SKIP
        13421772800
    """
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    inferred = _static_shape(proto, input_shape)
    shapes = _shapes(inferred)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        try:
            x_shape, w_shape, y_shape = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        except KeyError as exc:
            raise ValueError(f"cannot infer the shapes of {node.op_type} node {node.name!r} (missing {exc})") from None
        kernel = math.prod(w_shape[2:])
        if node.op_type == "Conv":
            # Each output element: (C_in / group) x kernel multiply-adds.
            total += 2 * math.prod(y_shape) * w_shape[1] * kernel
        else:
            # Each input element scatters into (C_out / group) x kernel outputs; weight is C_in x C_out/g x k.
            total += 2 * math.prod(x_shape) * w_shape[1] * kernel
    return total


def flops_per_image(model: onnx.ModelProto | str | Path, channels: int, height: int, width: int) -> int:
    """Convolution FLOPs for one ``channels`` x ``height`` x ``width`` network input.

    Example:
        >>> flops_per_image("unet.onnx", 3, 192, 256)  # doctest: +SKIP
    """
    return conv_flops(model, (1, channels, height, width))
