"""Model files with their weights stored as float16 and computed in float32: half the bytes, the same graph.

For a wide network within the project's 10 MB per file. The weights are rounded to float16 once (11 significant
bits); every later file (ONNX FP32, FP16 and INT8, the checkpoint) is made from those rounded weights, so they
agree with one another exactly as the float32 files of a narrower network do. The compact ONNX graph is exported
with its batch norms apart (``export_onnx(..., fold_batch_norm=False)``): folded ones would be new products that
float16 rounds a second time.

* :func:`compact_checkpoint`: a checkpoint's floating-point tensors as float16; ``load_state_dict`` copies them
  into the float32 parameters, so :func:`unetrt.export.checkpoint.load_model` and ``unet-train --init`` read it
  as before.
* :func:`compact_onnx`: an FP32 ONNX graph whose float32 weights become float16 initializers, each read through a
  ``Cast`` to float32 (ONNX Runtime, OpenVINO and TensorRT fold the casts when they load the graph). The
  ``unetrt.weight_storage`` prop tells :mod:`unetrt.model_file` that the graph is still FP32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from unetrt.model_file import WEIGHT_STORAGE_KEY, file_precision

from .checkpoint import load_model, save_checkpoint

# Initializers smaller than this stay float32 (scalars and shape constants are not worth a Cast node).
MIN_ELEMENTS = 16


def compact_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Write a checkpoint's weights and description alone, floating-point weights stored as float16.

    Args:
        source: a checkpoint written by :func:`unetrt.export.checkpoint.save_checkpoint` (training state, if any,
            is dropped).
        destination: the compact checkpoint to write.

    Returns:
        ``destination``.

    Raises:
        FileNotFoundError, ValueError: as :func:`unetrt.export.checkpoint.load_model`.

    Example:
        >>> compact_checkpoint("runs/camvid_wide/best.pt", "checkpoints/camvid_wide/best.pt")  # doctest: +SKIP
    """
    model, info = load_model(source)
    # Module.half() casts the floating-point parameters and buffers; the batch-norm counters stay integers.
    save_checkpoint(destination, model.half(), info, weights_stored_as="float16")
    return Path(destination)


def compact_onnx(source: str | Path, destination: str | Path) -> Path:
    """Store an FP32 ONNX graph's float32 weights as float16, each cast back to float32 where it is read.

    The float16 values are the float32 weights rounded to nearest; a graph whose weights are already float16
    values (exported from a :func:`compact_checkpoint` with ``fold_batch_norm=False``) computes exactly what it
    computed before.

    Args:
        source: an FP32 ONNX model written by ``unet-export`` (not FP16 or INT8: those are small already).
        destination: the file to write (may be ``source``).

    Returns:
        ``destination``.

    Raises:
        ValueError: when ``source`` is not an FP32 graph.

    Example:
        >>> compact_onnx("camvid.onnx", "camvid.onnx")  # doctest: +SKIP
    """
    precision = file_precision(source)
    if precision != "fp32":
        raise ValueError(f"compact_onnx stores the weights of an FP32 graph; {str(source)!r} is {precision}")
    model = onnx.load(str(source))
    graph = model.graph
    casts, initializers = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or int(np.prod(tensor.dims)) < MIN_ELEMENTS:
            initializers.append(tensor)
            continue
        stored = f"{tensor.name}.float16"
        initializers.append(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), stored))
        # The Cast's output keeps the weight's name, so every node reading it is unchanged.
        casts.append(helper.make_node("Cast", [stored], [tensor.name], to=TensorProto.FLOAT, name=f"{stored}.cast"))
    nodes = list(graph.node)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])
    kept = [prop for prop in model.metadata_props if prop.key != WEIGHT_STORAGE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = WEIGHT_STORAGE_KEY, "float16"
    onnx.checker.check_model(model)
    destination = Path(destination)
    tmp = destination.with_suffix(destination.suffix + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(destination)
    return destination
