"""Rounding optimisation (AdaRound) of an onnxruntime QDQ model's convolution weights.

Rounding each weight to its nearest INT8 step is optimal weight by weight, not for the
convolution's output: the errors of a channel's weights add up on every output pixel.
AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization",
ICML 2020) chooses for each weight whether to round down or up so that the convolution's
output on calibration faces stays closest to the FP32 model's. Here, on the ONNX graphs:

1. the QDQ graph's quantized convolutions are visited level by level (as in
   ``quantize.bias_correction``); for each level the QDQ graph, with every earlier level
   already re-rounded, gives each convolution's *quantized* input, and the FP32 graph its
   FP32 output, so a convolution also learns to undo the error of the layers before it;
2. each convolution gets a soft rounding variable per weight (the rectified sigmoid of the
   paper, started at the weight's fractional part) trained with Adam to minimise the squared
   error of its output (after the ReLU that follows it in the ReLU-only PReLU split), plus a
   regulariser that pushes every variable to 0 or 1 as its temperature falls;
3. the hard choice is written back as the INT8 weights; scales, zero points and the
   weights' 7-bit range are unchanged, so the fused kernels and the file size are too.

Measured on the real student's PReLU split (3 layers float, 128 faces, then bias correction;
mean / 1st-percentile cosine to FP32 on 448 faces not used by either step): bias correction
alone 0.99608 / 0.99153; with AdaRound (AIMET's loss, 8 faces x full maps, lr 0.01, 200
steps) 0.99623 / 0.99202; this module's defaults (relative loss, 16 x 16 windows, lr 0.1,
300 steps) 0.99579 / 0.99164; lr 0.01 0.99607 / 0.99204. 7-bit per-channel weights alone
(FP32 activations) already reach 0.99899, activations alone 0.99643: the activations are
where onnxruntime INT8 loses, so this study was not wired into the exporter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (from the paper)


@dataclass(frozen=True)
class RoundingConfig:
    """How hard each convolution's rounding is optimised.

    Attributes:
        steps: Adam steps per convolution.
        batch: faces per step (drawn at random from the faces given).
        crop: output window per step, in pixels (a random one per step).
        lr: Adam learning rate of the rounding variables.
        reg: weight of the regulariser that drives each variable to 0 or 1.
        warmup: fraction of steps with the regulariser off (pure reconstruction first).
        beta: the regulariser's temperature, annealed from the first value to the second.
        seed: for the batches.
    """

    steps: int = 300
    batch: int = 16
    crop: int = 16
    lr: float = 0.1
    reg: float = 0.03
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    seed: int = 0


def round_weights(qdq: Path, fp32: Path, faces: np.ndarray, dst: Path, input_name: str = "input",
                  config: RoundingConfig = RoundingConfig(), progress: bool = False) -> Path:
    """Write ``qdq`` with every quantized convolution's INT8 weights re-rounded to ``dst``.

    Args:
        qdq: the QDQ model from ``onnxruntime.quantization.quantize_static``.
        fp32: the FP32 graph it was quantized from (same node names).
        faces: float32 NCHW calibration tensor (a subset of the calibration faces).
    """
    import onnx

    from quantize.graph_runs import conv_levels, float_targets, run_tensors

    model, reference = onnx.load(str(qdq)), onnx.load(str(fp32))
    convs = _QuantizedConvs(model, reference)
    targets = float_targets(model, reference)
    todo = [c for c in model.graph.node if c.name in convs.names and c.output[0] in targets]
    levels = conv_levels(model, todo)
    changed = total = 0
    for level in _progress(levels, progress):
        inputs = run_tensors(model, [c.input[0] for c in level], faces, input_name)
        outputs = run_tensors(reference, [targets[c.output[0]].name for c in level], faces, input_name)
        for conv in level:
            target = targets[conv.output[0]]
            new, old = convs.optimise(conv, inputs[conv.input[0]], outputs[target.name],
                                      target.relu, config)
            changed, total = changed + int((new != old).sum()), total + new.size
    onnx.save(model, str(dst))
    log.info("rounding optimisation: %d convolutions in %d levels, %d faces, %.1f%% of %d weights "
             "rounded the other way", len(todo), len(levels), len(faces),
             100 * changed / max(total, 1), total)
    return Path(dst)


class _QuantizedConvs:
    """The quantized convolutions of a QDQ model with their FP32 weights, editable in place."""

    def __init__(self, model, reference) -> None:
        from onnx import numpy_helper

        self.model = model
        producer = {o: n for n in model.graph.node for o in n.output}
        self.inits = {i.name: i for i in model.graph.initializer}
        float_inits = {i.name: numpy_helper.to_array(i) for i in reference.graph.initializer}
        float_convs = {n.name: n for n in reference.graph.node if n.op_type == "Conv"}
        self.weights: dict[str, tuple] = {}
        for node in model.graph.node:
            dq = producer.get(node.input[1]) if node.op_type == "Conv" else None
            twin = float_convs.get(node.name)
            if dq is None or dq.op_type != "DequantizeLinear" or twin is None:
                continue
            bias = float_inits[twin.input[2]] if len(twin.input) > 2 and twin.input[2] else None
            self.weights[node.name] = (dq, float_inits[twin.input[1]], bias)

    @property
    def names(self) -> set[str]:
        return set(self.weights)

    def _array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def optimise(self, conv, x: np.ndarray, y: np.ndarray, relu: bool,
                 config: RoundingConfig) -> tuple[np.ndarray, np.ndarray]:
        """Re-round ``conv``'s INT8 weights for input ``x`` (quantized) and FP32 output ``y``;
        returns (new, old) INT8 weights."""
        from onnx import numpy_helper

        dq, weight, bias = self.weights[conv.name]
        old, scale = self._array(dq.input[0]), self._array(dq.input[1])
        limit = int(np.abs(old).max())  # 7-bit weights: -64..64 (the quantizer's range)
        new = _adaround(weight, scale, bias, _conv_attrs(conv), x, y, relu, -limit, limit, config)
        self.inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new.astype(old.dtype), dq.input[0]))
        return new, old


def _conv_attrs(conv) -> dict:
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    return {"stride": tuple(attrs.get("strides", (1, 1))), "group": int(attrs.get("group", 1)),
            "dilation": tuple(attrs.get("dilations", (1, 1))), "pads": tuple(attrs.get("pads", (0,) * 4))}


def _adaround(weight, scale, bias, attrs, x, y, relu, qmin, qmax, config) -> np.ndarray:
    """The INT8 weights (float array of integers) AdaRound picks for one convolution."""
    import torch
    import torch.nn.functional as F

    w = torch.from_numpy(weight).float()
    s = torch.from_numpy(scale).float().view(-1, *([1] * (w.dim() - 1)))
    b = None if bias is None else torch.from_numpy(bias).float()
    floor = torch.floor(w / s)
    rest = (w / s - floor).clamp(0.01, 0.99)  # the paper's start: h(V) = fractional part
    v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
    top, left, bottom, right = attrs["pads"]
    xs = F.pad(torch.from_numpy(x), (left, right, top, bottom))
    ys = torch.from_numpy(y).clamp_min(0) if relu else torch.from_numpy(y)
    energy = ys.pow(2).mean().clamp_min(1e-12)
    window = _Window(w.shape[-2:], attrs, ys.shape[-2:], config.crop)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam([v], lr=config.lr)
    warm = int(config.warmup * config.steps)

    def soft() -> torch.Tensor:
        return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

    for step in range(config.steps):
        pick = torch.randint(0, len(xs), (min(config.batch, len(xs)),), generator=generator)
        inputs, target = window.sample(xs, ys, pick, generator)
        q = s * torch.clamp(floor + soft(), qmin, qmax)
        out = F.conv2d(inputs, q, b, attrs["stride"], 0, attrs["dilation"], attrs["group"])
        if relu:
            out = out.clamp_min(0)
        # relative error: one regulariser weight fits layers whose outputs differ in scale
        loss = (out - target).pow(2).mean() / energy
        if step >= warm:
            beta = _anneal(config.beta, (step - warm) / max(config.steps - warm, 1))
            loss = loss + config.reg * (1 - (2 * soft() - 1).abs().pow(beta)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return torch.clamp(floor + (soft() >= 0.5).float(), qmin, qmax).numpy()


class _Window:
    """Random output windows of at most ``crop`` x ``crop`` pixels and the padded input patch
    that computes them exactly: each step costs a window, not the whole feature map."""

    def __init__(self, kernel, attrs: dict, out_size, crop: int) -> None:
        self.stride, self.out_size = attrs["stride"], tuple(out_size)
        self.span = tuple(d * (k - 1) + 1 for d, k in zip(attrs["dilation"], kernel))
        self.size = tuple(min(crop, n) for n in self.out_size)

    def sample(self, inputs, target, pick, generator):
        """(input patch, target window) of the faces ``pick``, at a random corner."""
        import torch

        corner = [int(torch.randint(0, n - c + 1, (1,), generator=generator))
                  for n, c in zip(self.out_size, self.size)]
        rows, cols = (slice(o * s, (o + c - 1) * s + k) for o, c, s, k
                      in zip(corner, self.size, self.stride, self.span))
        (oy, ox), (cy, cx) = corner, self.size
        return inputs[..., rows, cols][pick], target[..., oy:oy + cy, ox:ox + cx][pick]


def _anneal(beta: tuple[float, float], progress: float) -> float:
    start, end = beta
    return end + 0.5 * (start - end) * (1 + np.cos(progress * np.pi))


def _progress(levels: list, show: bool):
    if not show:
        return levels
    from tqdm import tqdm

    return tqdm(levels, desc="rounding", unit="level", leave=False)
