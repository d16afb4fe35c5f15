"""Per-layer INT8 sensitivity: quantize one convolution at a time, see what it costs.

When an INT8 export fails the parity gate, the question is which layers to keep in higher
precision. This answers it independently of the runtime: in PyTorch, with BatchNorm folded
into the convolutions (as every exporter does), each convolution in turn gets INT8 weights
(symmetric, per output channel) and an INT8 input (asymmetric per-tensor, range from the
calibration split), everything else staying FP32; the cosine of the resulting embeddings to
the FP32 ones on the held-back faces measures that layer's damage alone. The layers with the
lowest cosine are the ones to pass to ``--keep-float``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from quantize.calibration import CalibrationSet
from quantize.student import Student, fold_batchnorm

MAX_FACES = 64  # check faces used (each layer costs one forward pass over them)


@dataclass(frozen=True)
class LayerSensitivity:
    """Cosine to FP32 with only ``layer`` in INT8 (mean and min over the check faces)."""

    layer: str
    kind: str
    mean: float
    min: float


@torch.no_grad()
def layer_sensitivity(student: Student, calibration: CalibrationSet) -> list[LayerSensitivity]:
    """One row per convolution, most damaging first."""
    model = fold_batchnorm(student.model)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    ranges = _input_ranges(model, convs, student.to_tensor(calibration.calibration_faces()))
    faces = calibration.check_faces()
    faces = faces[np.linspace(0, len(faces) - 1, min(len(faces), MAX_FACES)).astype(int)]
    x = student.to_tensor(faces)
    reference = nn.functional.normalize(model(x), dim=1)
    rows = []
    for name, conv in convs.items():
        weight = conv.weight.data.clone()
        conv.weight.data = _fake_quant_weight(weight)
        low, high = ranges[name]
        handle = conv.register_forward_pre_hook(lambda _m, args, lo=low, hi=high: (_fake_quant_act(args[0], lo, hi),))
        cos = (nn.functional.normalize(model(x), dim=1) * reference).sum(1)
        handle.remove()
        conv.weight.data = weight
        kind = "depthwise" if conv.groups > 1 and conv.groups == conv.in_channels else f"{conv.kernel_size[0]}x{conv.kernel_size[1]}"
        rows.append(LayerSensitivity(name, kind, float(cos.mean()), float(cos.min())))
    return sorted(rows, key=lambda r: r.mean)


def render_sensitivity(rows: list[LayerSensitivity], model_name: str, top: int = 10) -> str:
    """Markdown table of the ``top`` most sensitive layers."""
    lines = [f"Per-layer INT8 sensitivity of {model_name} (only that conv in INT8; cosine to FP32):",
             "", "| layer | kind | mean cos | min cos |", "|---|---|---|---|"]
    lines += [f"| {r.layer} | {r.kind} | {r.mean:.5f} | {r.min:.5f} |" for r in rows[:top]]
    return "\n".join(lines) + "\n"


def _input_ranges(model: nn.Module, convs: dict[str, nn.Conv2d], x: torch.Tensor) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name):
        def hook(_module, args):
            low, high = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
        return hook

    handles = [conv.register_forward_pre_hook(observe(name)) for name, conv in convs.items()]
    for start in range(0, len(x), 64):
        model(x[start:start + 64])
    for handle in handles:
        handle.remove()
    return ranges


def _fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127.0
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


def _fake_quant_act(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    low, high = min(low, 0.0), max(high, 0.0)  # zero must be exactly representable
    scale = max(high - low, 1e-12) / 255.0
    zero = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
