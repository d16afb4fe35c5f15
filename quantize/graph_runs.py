"""Running an ONNX graph for its intermediate tensors, and matching a QDQ graph's tensors to the
FP32 graph's: what bias correction (and any other per-layer correction) needs."""

from __future__ import annotations

import numpy as np

BATCH = 32


def float_targets(model, reference) -> dict[str, str]:
    """QDQ conv output -> the FP32 tensor holding the same values before any activation.

    The quantizer renames tensors around the Q/DQ pairs it inserts: a ReLU folded into its
    convolution's output quantization leaves the convolution's output named after the ReLU's
    (so that name leads back through the ReLU), and a graph output keeps its name on the
    final DequantizeLinear (so the convolution's output leads forward to it).
    """
    producer = {o: n for n in reference.graph.node for o in n.output}
    targets = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        name = _float_name(model, node.output[0], producer)
        source = producer.get(name)
        if source is None:
            continue
        if source.op_type == "Relu" and producer.get(source.input[0], source).op_type == "Conv":
            targets[node.output[0]] = source.input[0]
        elif source.op_type == "Conv":
            targets[node.output[0]] = name
    return targets


def _float_name(model, tensor: str, float_producer: dict) -> str:
    if tensor in float_producer:
        return tensor
    consumers = [n for n in model.graph.node if tensor in n.input]
    if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear":
        quantized = consumers[0].output[0]
        after = [n for n in model.graph.node if quantized in n.input]
        if len(after) == 1 and after[0].op_type == "DequantizeLinear":
            return after[0].output[0]
    return tensor


def conv_levels(model, convs: list) -> list[list]:
    """``convs`` grouped by how many convolutions lie upstream of them (graph order kept): the
    convolutions of a level depend on none of the level (the halves of a PReLU split go together)."""
    depth: dict[str, int] = {}
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        level = max((depth.get(i, 0) for i in node.input if i), default=0)
        level += node.op_type == "Conv"
        for out in node.output:
            depth[out] = level
    grouped: dict[int, list] = {}
    for conv in convs:
        grouped.setdefault(depth[conv.output[0]], []).append(conv)
    return [grouped[k] for k in sorted(grouped)]


def run_batches(model, tensors: list[str], faces: np.ndarray, input_name: str):
    """Yield, batch by batch of ``faces``, the values of ``tensors`` (the graph run unoptimised:
    quantize -> dequantize -> float op, which computes what the fused kernels do up to rounding)."""
    import onnx
    import onnxruntime as ort

    extended = _pruned(model, tensors)
    for name in tensors:
        extended.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(extended.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    for start in range(0, len(faces), BATCH):
        yield dict(zip(tensors, session.run(tensors, {input_name: faces[start:start + BATCH]})))


def _pruned(model, tensors: list[str]):
    """A copy of ``model`` with only the nodes ``tensors`` depend on, and no outputs yet: a
    level early in the graph then costs a fraction of a whole run."""
    import onnx

    needed, kept = set(tensors), []
    for node in reversed(model.graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    del pruned.graph.node[:], pruned.graph.output[:]
    pruned.graph.node.extend(reversed(kept))
    used = {name for node in kept for name in node.input}
    initializers = [i for i in pruned.graph.initializer if i.name in used]
    del pruned.graph.initializer[:]
    pruned.graph.initializer.extend(initializers)
    return pruned


def run_tensors(model, tensors: list[str], faces: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (distinct names) for all ``faces``, stacked."""
    names = list(dict.fromkeys(tensors))
    parts: dict[str, list] = {name: [] for name in names}
    for values in run_batches(model, names, faces, input_name):
        for name in names:
            parts[name].append(values[name])
    return {name: np.concatenate(parts[name]) for name in names}
