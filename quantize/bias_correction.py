"""Bias correction of an onnxruntime QDQ model: every convolution's mean output put back where
the FP32 model has it.

INT8 rounding does not only add noise, it shifts each output channel's mean a little (weights
round asymmetrically, clipped activations lose their tails), and the shifts add up layer after
layer. For face embeddings a systematic shift matters more than noise: NNCF's full bias
correction moved the OpenVINO INT8 of the real student from -0.28 to +0.18 point U-M on masked
LFW while its mean cosine to FP32 moved by 0.0004. onnxruntime's quantizer has no such step;
this module is it, on the ONNX graphs:

1. the FP32 graph runs on calibration faces and records every convolution's per-channel mean
   output *before* its activation;
2. the QDQ graph's convolutions are visited level by level (a level holds the convolutions
   that depend on no other convolution of the level: the halves of a PReLU split go together),
   each level's mean outputs are measured with every earlier level already corrected, and the
   difference is added to the biases (as int32 in ``bias_scale = input_scale * weight_scale``
   units for quantized convolutions, in float for ``--keep-float`` ones; a convolution without
   a bias gets one).

Measurements run the QDQ graph unfused (quantize -> dequantize -> float op), which computes
what the fused integer kernels compute up to rounding (held-back mean cosine 0.99605 unfused,
0.99608 fused), and only as far as each level (``quantize.graph_runs``). Real student, onnxruntime INT8 of the
PReLU split with three layers float: masked-LFW U-M -0.62 -> -0.18 point against FP32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def correct_biases(qdq: Path, fp32: Path, faces: np.ndarray, dst: Path, input_name: str = "input",
                   progress: bool = False) -> Path:
    """Write ``qdq`` with bias-corrected convolutions to ``dst``.

    Args:
        qdq: the QDQ model from ``onnxruntime.quantization.quantize_static``.
        fp32: the FP32 graph it was quantized from (same tensor names).
        faces: float32 NCHW calibration tensor (the faces the ranges came from, or a subset).
        input_name: the graphs' input.
    """
    import onnx

    from quantize.graph_runs import conv_levels, float_targets

    model, reference = onnx.load(str(qdq)), onnx.load(str(fp32))
    graph = _Graph(model)
    targets = float_targets(model, reference)
    float_means = _channel_means(reference, list(targets.values()), faces, input_name)
    levels = conv_levels(model, [n for n in model.graph.node if n.output[0] in targets])
    for conv in (c for level in levels for c in level):
        graph.ensure_bias(conv)
    for level in _progress(levels, progress):
        measured = _channel_means(model, [c.output[0] for c in level], faces, input_name)
        for conv in level:
            graph.shift_bias(conv, float_means[targets[conv.output[0]]] - measured[conv.output[0]])
    onnx.save(model, str(dst))
    log.info("bias correction: %d convolutions in %d levels, on %d faces", sum(map(len, levels)),
             len(levels), len(faces))
    return Path(dst)


def _channel_means(model, tensors: list[str], faces: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    """Per-channel mean of each NCHW ``tensors`` over ``faces``."""
    from quantize.graph_runs import run_batches

    sums, counts = {name: 0.0 for name in tensors}, {name: 0 for name in tensors}
    for values in run_batches(model, tensors, faces, input_name):
        for name, value in values.items():
            sums[name] = sums[name] + value.sum(axis=(0, 2, 3), dtype=np.float64)
            counts[name] += value.shape[0] * value.shape[2] * value.shape[3]
    return {name: (sums[name] / counts[name]).astype(np.float32) for name in tensors}


class _Graph:
    """Edits the biases of a QDQ model in place."""

    def __init__(self, model) -> None:
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.inits = {i.name: i for i in model.graph.initializer}

    def _array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def _set(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        self.inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def _dequantized(self, tensor: str):
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def ensure_bias(self, conv) -> None:
        """Give ``conv`` a zero bias if it has none (int32 through a DequantizeLinear when its
        input and weights are quantized, so the fused kernel still takes it)."""
        if len(conv.input) > 2 and conv.input[2]:
            return
        import onnx
        from onnx import numpy_helper

        x_dq, w_dq = self._dequantized(conv.input[0]), self._dequantized(conv.input[1])
        weight = self._array(w_dq.input[0] if w_dq else conv.input[1])
        channels, name = weight.shape[0], conv.output[0] + "_bias"
        if x_dq is None or w_dq is None:
            self._add_init(numpy_helper.from_array(np.zeros(channels, np.float32), name))
        else:
            scale = (self._array(x_dq.input[1]) * self._array(w_dq.input[1])).astype(np.float32)
            parts = {name + "_quantized": np.zeros(channels, np.int32),
                     name + "_quantized_scale": np.broadcast_to(scale, (channels,)).copy(),
                     name + "_quantized_zero_point": np.zeros(channels, np.int32)}
            for key, value in parts.items():
                self._add_init(numpy_helper.from_array(value, key))
            node = onnx.helper.make_node("DequantizeLinear", list(parts), [name], axis=0,
                                         name=name + "_DequantizeLinear")
            nodes = self.model.graph.node
            nodes.insert(list(nodes).index(conv), node)
            self.producer[name] = node
        if len(conv.input) == 2:
            conv.input.append(name)
        else:
            conv.input[2] = name

    def _add_init(self, tensor) -> None:
        self.model.graph.initializer.append(tensor)
        self.inits[tensor.name] = self.model.graph.initializer[-1]

    def shift_bias(self, conv, delta: np.ndarray) -> None:
        """Add ``delta`` (float, per output channel) to ``conv``'s bias."""
        dq = self._dequantized(conv.input[2])
        if dq is None:
            bias = self._array(conv.input[2])
            self._set(conv.input[2], (bias + delta).astype(bias.dtype))
            return
        bias, scale = self._array(dq.input[0]), self._array(dq.input[1])
        limit = np.iinfo(np.int32)
        shifted = np.clip(bias.astype(np.int64) + np.round(delta / scale), limit.min, limit.max)
        self._set(dq.input[0], shifted.astype(bias.dtype))


def _progress(levels: list, show: bool):
    if not show:
        return levels
    from tqdm import tqdm

    return tqdm(levels, desc="bias correction", unit="level", leave=False)
