"""The hardware floor: how fast a model *could* run if every MAC ran at peak GEMM speed.

``count_macs`` counts multiply-accumulates per image from the graph itself:

- ONNX: Conv / ConvInteger / QLinearConv, Gemm, MatMul / MatMulInteger / QLinearMatMul,
  with shapes from ``onnx.shape_inference`` after fixing the batch to 1.
- OpenVINO IR: Convolution, GroupConvolution, MatMul on the model reshaped to batch 1.
- TFLite: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL, from the interpreter's op
  list and tensor shapes, divided by the graph's (possibly fixed) batch.

Element-wise ops (PReLU, Add, BN) are ignored: they are memory-bound and small in MACs.

``calibrate`` measures this machine's throughput on one GEMM micro-graph per precision
(onnxruntime MatMul for FP32, MatMulInteger u8 x s8 for INT8), built with ``onnx.helper``,
at a given thread count. ``floor_ms = MACs * batch / throughput`` and a result's
``x_of_floor = median / floor_ms``: 1.0 would be a perfect GEMM-bound implementation.
Weight-only quantized models (``int8bq``) compute in FP32, so they are held to the FP32 floor.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelFileError, RuntimeUnavailableError
from edge.telemetry import import_openvino

log = logging.getLogger(__name__)

# card precision -> which calibration throughput bounds it
PRECISION_KIND = {"fp32": "fp32", "fp16": "fp32", "int8bq": "fp32", "int8": "int8", "mixed": "int8"}
GEMM_SIZE = (256, 1024, 1024)  # M, K, N: large enough to reach peak, small enough for L2 tiling


# ---- MAC counting ---------------------------------------------------------------------------
def count_macs(path: Path) -> int:
    """MACs per image of the model file ``path`` (.onnx, .xml or .tflite).

    Raises:
        ModelFileError: unknown suffix or unreadable file.
        RuntimeUnavailableError: the package needed to read the format is missing.
    """
    path = Path(path)
    counters = {".onnx": _onnx_macs, ".xml": _openvino_macs, ".tflite": _tflite_macs}
    suffix = path.suffix.lower()
    if suffix not in counters:
        raise ModelFileError(f"cannot count MACs of {path}: supported suffixes {', '.join(counters)}")
    return counters[suffix](path)


def _onnx_macs(path: Path) -> int:
    try:
        import onnx
    except ImportError:
        raise RuntimeUnavailableError("counting ONNX MACs needs onnx: pip install onnx") from None
    model = onnx.load(str(path))
    inits = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in inits and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_value = 1  # count per image
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {init.name: list(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return int(sum(_onnx_node_macs(node, shapes) for node in inferred.graph.node))


def _onnx_node_macs(node, shapes: dict[str, list]) -> int:
    weight_input = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
    a_b_inputs = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
    out = shapes.get(node.output[0])
    if node.op_type in weight_input:
        weight = shapes.get(node.input[weight_input[node.op_type]])
        if not _known(out) or not _known(weight):
            raise ModelFileError(f"cannot infer shapes of {node.op_type} {node.name!r} to count MACs")
        return math.prod(out) * math.prod(weight[1:])  # weight (Co, Ci/group, kh, kw)
    if node.op_type in a_b_inputs:
        a = shapes.get(node.input[a_b_inputs[node.op_type][0]])
        if not _known(out) or not _known(a):
            raise ModelFileError(f"cannot infer shapes of {node.op_type} {node.name!r} to count MACs")
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        k = a[0] if (node.op_type == "Gemm" and trans_a) else a[-1]
        return math.prod(out) * k
    return 0


def _known(shape: list | None) -> bool:
    return shape is not None and len(shape) > 0 and all(isinstance(d, int) and d > 0 for d in shape)


def _openvino_macs(path: Path) -> int:
    ov = import_openvino("counting OpenVINO MACs")
    model = ov.Core().read_model(str(path))
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_static and shape[0].is_dynamic:
        shape[0] = 1
        model.reshape({model.inputs[0].any_name: shape})
    batch = model.inputs[0].get_partial_shape()[0].get_length()
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = list(op.get_output_partial_shape(0).to_shape())
        if kind == "MatMul":
            a = list(op.get_input_partial_shape(0).to_shape())
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            total += math.prod(out) * k
        else:  # weights (Co, Ci, kh, kw) or (G, Co/G, Ci/G, kh, kw)
            weight = list(op.get_input_partial_shape(1).to_shape())
            per_out = weight[1:] if kind == "Convolution" else weight[2:]
            total += math.prod(out) * math.prod(per_out)
    return total // batch


def _tflite_macs(path: Path) -> int:
    from edge.runtimes.tflite import interpreter_class

    interpreter = interpreter_class()(model_path=str(path))
    tensors = {t["index"]: [int(d) for d in t["shape"]] for t in interpreter.get_tensor_details()}
    batch = int(interpreter.get_input_details()[0]["shape"][0]) or 1
    total = 0
    # _get_ops_details is the interpreter's only op listing (used by the LiteRT analyzer too).
    for op in interpreter._get_ops_details():
        name, inputs = op["op_name"], [int(i) for i in op["inputs"]]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            continue
        out = tensors[int(op["outputs"][0])]
        weight = tensors[inputs[1]]
        if name == "CONV_2D":  # weight (Co, kh, kw, Ci)
            total += math.prod(out) * math.prod(weight[1:])
        elif name == "DEPTHWISE_CONV_2D":  # weight (1, kh, kw, C * multiplier)
            total += math.prod(out) * weight[1] * weight[2]
        elif name == "FULLY_CONNECTED":  # weight (units, K)
            total += math.prod(out) * weight[-1]
        else:
            total += math.prod(out) * tensors[inputs[0]][-1]
    return int(total // batch)


def model_macs(path: Path) -> tuple[int | None, str]:
    """``count_macs`` for a result record: (MACs or None, where the number came from).

    A format this machine cannot read gives (None, reason) and a warning, so a bench of a
    model still runs and its report shows "-" for the floor, with the reason in the JSON.
    """
    try:
        return count_macs(path), f"counted from {Path(path).suffix} graph"
    except (ModelFileError, RuntimeUnavailableError) as err:
        log.warning("no MAC count for %s: %s", path, err)
        return None, f"not counted: {err}"


# ---- throughput calibration ---------------------------------------------------------------
def _gemm_model(kind: str):
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SIZE
    rng = np.random.default_rng(0)
    if kind == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        inits = [weight]
    else:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
        zero_a = numpy_helper.from_array(np.array(128, np.uint8), "a_zero")
        zero_b = numpy_helper.from_array(np.array(0, np.int8), "b_zero")
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        inits = [weight, zero_a, zero_b]
    graph = helper.make_graph(
        [node], f"gemm_{kind}", [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure_gemm(kind: str, threads: int, seconds: float = 0.5) -> float:
    """Peak GMAC/s of onnxruntime on one GEMM micro-graph (``"fp32"`` or ``"int8"``).

    Returns the best of the timed runs (a floor is a best case, not a typical one).

    Raises:
        RuntimeUnavailableError: onnx or onnxruntime is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailableError("calibration needs onnxruntime and onnx: pip install both") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(_gemm_model(kind).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    m, k, n = GEMM_SIZE
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((m, k)).astype(np.float32) if kind == "fp32"
         else rng.integers(0, 256, (m, k), dtype=np.uint8))
    for _ in range(3):
        session.run(None, {"A": a})
    best, deadline = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        session.run(None, {"A": a})
        best = min(best, time.perf_counter() - t0)
    return m * k * n / best / 1e9


def calibrate(threads: list[int], seconds: float = 1.0) -> dict[str, dict[str, float]]:
    """GMAC/s for each thread count: ``{"1": {"fp32": 41.2, "int8": 80.3}, ...}``."""
    table = {}
    for count in threads:
        table[str(count)] = {kind: measure_gemm(kind, count, seconds) for kind in ("fp32", "int8")}
        log.info("calibration %d thread(s): %s GMAC/s", count,
                 ", ".join(f"{k} {v:.1f}" for k, v in table[str(count)].items()))
    return table


def attach_floor(record: dict[str, Any], calibration: dict[str, dict[str, float]]) -> None:
    """Add ``record["floor"]`` (kind, GMAC/s, floor ms, x of floor) when MACs are known."""
    macs = record["model"].get("macs")
    kind = PRECISION_KIND.get(record["model"]["precision"], "fp32")
    gmacs = calibration.get(str(record["threads"]), {}).get(kind)
    if not macs or not gmacs:
        record["floor"] = None
        return
    floor_ms = macs * record["batch"] / (gmacs * 1e9) * 1e3
    record["floor"] = {"kind": kind, "gmacs_per_s": gmacs, "floor_ms": floor_ms,
                       "x_of_floor": record["stats"]["median_ms"] / floor_ms}
