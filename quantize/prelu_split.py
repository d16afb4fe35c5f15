"""PReLU split: an exact PReLU-free twin of ``mobilefacenet_tf`` for integer runtimes (a study).

onnxruntime and LiteRT quantize a convolution's output *before* its PReLU, and the slope (up to
9.4 in the real student) multiplies that quantization noise on the negative side. The twin
moves every slope into weights instead, using ``PReLU_a(z) = relu(z) - a * relu(-z)``:

* the convolution ``z = conv(x)`` becomes two, ``P = relu(conv(x))`` and ``N = relu(-conv(x))``;
* the next convolution ``y = conv2(PReLU_a(z))`` (linear in its input) becomes
  ``conv2(P) + conv2'(N)`` with ``conv2'``'s weights scaled by ``-a`` per input channel; when
  ``y`` itself feeds a PReLU, ``-y`` is formed the same way with negated weights.

Every quantized tensor is then a ReLU output or a sum of convolutions, every activation fuses,
and the FP32 function is unchanged (max abs difference 3e-5 on embeddings of size ~40). The
price is MACs: the convolutions around each PReLU run twice (depthwise ones four times).

Measured on the real student (``python -m quantize.prelu_split RUN/best.pt``, onnxruntime QDQ
u8s8, 1 thread, 2026-11-24): FP32 twin 12.8 ms, INT8 twin 10.0 ms, against 14.5 ms for the
PReLU FP32 model (onnxruntime runs PReLU unfused); INT8 cosine to FP32 0.9935 / min 0.985 on
128 calibration faces, 0.9922 / 0.980 on 288: better than PTQ of the PReLU graph (0.951) but
short of the gate (mean 0.995). Summing the two halves inside one grouped convolution
(2 inputs per group) reached 0.9953 / 0.9874 but took 66 ms: onnxruntime has no fast kernel
for such groups. QAT of the twin (the ``--method qat`` route, 2,046 UTKFace faces, 300 steps)
ended at 0.9886 / 0.974, below its PTQ. Not wired into ``main.py quantize``.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import ConfigError


def _parts(block: nn.Sequential) -> tuple[bool, nn.Conv2d, torch.Tensor | None]:
    """(has a TF-'SAME' pad, the conv, its PReLU slopes or None) of a ``TFConv``."""
    pad = isinstance(block[0], nn.ZeroPad2d)
    conv = block[1] if pad else block[0]
    slope = block[-1].weight.detach().clone() if type(block[-1]) is nn.PReLU else None
    return pad, conv, slope


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, pad: bool) -> nn.Module:
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, groups=conv.groups, bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), new) if pad else new


def _scaled_input(conv: nn.Conv2d, slope: torch.Tensor) -> torch.Tensor:
    """``conv``'s weights for the N input: ``-slope`` per input channel."""
    view = (1, -1, 1, 1) if conv.groups == 1 else (-1, 1, 1, 1)  # depthwise: in == out channel
    return -slope.view(view) * conv.weight.detach()


class SplitSign(nn.Module):
    """``x -> (relu(conv x), relu(-conv x))``: a conv followed by PReLU, slopes left to the consumer."""

    def __init__(self, block: nn.Sequential) -> None:
        super().__init__()
        pad, conv, _ = _parts(block)
        w, b = conv.weight.detach(), conv.bias.detach()
        self.pos, self.neg = _conv_like(conv, w, b, pad), _conv_like(conv, -w, -b, pad)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(self.pos(x)), F.relu(self.neg(x))


class PairConv(nn.Module):
    """``(P, N)`` of a PReLU with slopes ``slope_in`` -> the block's conv of PReLU(z); when the
    block ends in a PReLU itself, returns its own ``(P, N)`` pair instead."""

    def __init__(self, block: nn.Sequential, slope_in: torch.Tensor) -> None:
        super().__init__()
        pad, conv, slope_out = _parts(block)
        w, b, wn = conv.weight.detach(), conv.bias.detach(), _scaled_input(conv, slope_in)
        self.pp, self.pn = _conv_like(conv, w, b, pad), _conv_like(conv, wn, None, pad)
        self.split = slope_out is not None
        if self.split:
            self.np, self.nn = _conv_like(conv, -w, -b, pad), _conv_like(conv, -wn, None, pad)

    def forward(self, pair):
        p, n = pair
        y = self.pp(p) + self.pn(n)
        return (F.relu(y), F.relu(self.np(p) + self.nn(n))) if self.split else y


class SplitBlock(nn.Module):
    """An inverted residual block of the twin."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.expand = SplitSign(block.expand)
        self.depthwise = PairConv(block.depthwise, _parts(block.expand)[2])
        self.project = PairConv(block.project, _parts(block.depthwise)[2])
        self.residual = block.add is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class PReLUSplitTwin(nn.Module):
    """The PReLU-free twin of a ``MobileFaceNetTF`` (PReLU variant); same FP32 function."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if type(model.stem[-1]) is not nn.PReLU:  # FadingPReLU (the ReLU twin) is a subclass
            raise ConfigError("the PReLU split needs a mobilefacenet_tf student with PReLU "
                              f"activations; this one ends its stem in {type(model.stem[-1]).__name__}")
        self.stem = SplitSign(model.stem)
        self.dw = PairConv(model.dw, _parts(model.stem)[2])
        self.pw = PairConv(model.pw, _parts(model.dw)[2])
        self.blocks = nn.Sequential(*(SplitBlock(b) for b in model.blocks))
        self.conv_last = SplitSign(model.conv_last)
        self.gdc = PairConv(model.gdc, _parts(model.conv_last)[2])
        self.linear, self.embedding = copy.deepcopy(model.linear), copy.deepcopy(model.embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pw(self.dw(self.stem(x))))
        return self.embedding(self.linear(self.gdc(self.conv_last(x)))).flatten(1)


def study(checkpoint: str, calib_faces: int, runs: int = 60) -> dict:
    """FP32 and onnxruntime INT8 of the twin: parity to the PReLU model and 1-thread latency."""
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from quantize.calibration import load_calibration
    from quantize.exporters.onnx import quantize_onnx, torch_to_onnx
    from quantize.parity import compare
    from quantize.student import load_student

    student = load_student(checkpoint)
    calibration = load_calibration()
    check = student.to_tensor(calibration.check_faces())
    twin = PReLUSplitTwin(student.model).eval()
    with torch.no_grad():
        reference, same = student.model(check).numpy(), twin(check).numpy()
    out = Path(tempfile.mkdtemp(prefix="prelu-split-"))
    files = {"prelu fp32": torch_to_onnx(student.model, check[:2], out / "prelu.fp32.onnx"),
             "twin fp32": torch_to_onnx(twin, check[:2], out / "twin.fp32.onnx")}
    faces = student.to_tensor(calibration.calibration_faces()[:calib_faces]).numpy()
    files["twin int8"] = quantize_onnx(files["twin fp32"], out / "twin.int8.onnx", faces)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for k, p in files.items()}
    int8 = sessions["twin int8"].run(None, {sessions["twin int8"].get_inputs()[0].name: check.numpy()})[0]
    parity = compare(reference, int8, "int8")
    return {"fp32_max_abs_diff": float(np.abs(reference - same).max()),
            "int8_parity": parity.to_dict(), "calib_faces": calib_faces,
            "median_ms_1t": _interleaved(sessions, check[:1].numpy(), runs)}


def _interleaved(sessions: dict, x: np.ndarray, runs: int) -> dict[str, float]:
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(10):
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append((time.perf_counter() - start) * 1e3)
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m quantize.prelu_split RUN/best.pt [--calib-faces 128]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--calib-faces", type=int, default=128,
                        help="onnxruntime's percentile calibrator keeps every activation in "
                             "memory: 448 faces of a twin this size exhausted 24 GB")
    args = parser.parse_args(argv)
    print(study(args.checkpoint, args.calib_faces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
