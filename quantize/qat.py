"""Quantization-aware training with torchao PT2E, distilled from the FP32 student, on CPU.

Route (``shared/TOOLCHAIN.md``):

1. ``torch.export`` of the student with a dynamic batch (PT2E QAT needs one);
2. ``prepare_qat_pt2e`` with the XNNPACK quantizer (symmetric INT8, per-channel weights):
   the quantizer litert-torch can lower, and whose QDQ ONNX OpenVINO and onnxruntime run;
   where a PReLU feeds only ``--keep-float`` depthwise convs, the conv before it has no output
   quantizer, as in the onnxruntime export (``quantize.ort_float_prelu``), so the loss trained
   is the deployed model's (not when the model also goes to LiteRT, full-integer);
3. one pass over the faces to set the INT8 ranges (PTQ-style), then ``steps`` of knowledge
   distillation: the fake-quantized student learns to reproduce the FP32
   student's L2-normalised embeddings (loss ``1 - cos``) on the calibration split's faces
   (or ``faces`` UTKFace faces, the students' training set), unmasked and masked, randomly
   mirrored;
4. schedule: BatchNorm statistics freeze at ``freeze_bn_step`` (BN then uses its running
   statistics, as it will once folded), observers freeze at ``freeze_observer_step`` (scales
   stop moving, weights adapt to them); ``freeze_bn_step=0`` folds BN into the convolutions
   before export, which is the same maths as frozen BN and skips PT2E's conv-bn rewrites
   (about a minute of pattern matching at convert time on 2 cores);
5. ``convert_pt2e(fold_quantize=False)``: a graph of quantize/dequantize ops that the dynamo
   ONNX exporter and litert-torch both read (``quantize.exporters``).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edge.errors import ConfigError
from quantize.calibration import CalibrationSet
from quantize.errors import CalibrationError
from quantize.student import Student, fold_batchnorm

log = logging.getLogger(__name__)
WEIGHT_QMAX = 63
LOG_EVERY = 25


@dataclass(frozen=True)
class QATConfig:
    """QAT settings (steps and schedule in optimiser steps).

    Attributes:
        steps: optimiser steps.
        batch_size: faces per step.
        lr: Adam learning rate (cosine-decayed to zero).
        freeze_bn_step: step at which BN statistics freeze (0: folded from the start; None:
            half-way).
        freeze_observer_step: step at which activation/weight ranges freeze (None: at 3/4).
        faces: 0 trains on the calibration split's faces; N > 0 on N UTKFace faces instead
            (the parity-check faces left out), which QAT cannot memorise in a few hundred steps.
        seed: batch sampling and mirroring.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    freeze_bn_step: int | None = 0
    freeze_observer_step: int | None = None
    faces: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"QAT steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.faces < 0:
            raise ConfigError(f"QAT faces must be >= 0 (0: the calibration split), got {self.faces}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"QAT lr must be in (0, 1), got {self.lr}")
        for name in ("freeze_bn_step", "freeze_observer_step"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= self.steps:
                raise ConfigError(f"{name} must be in 0..steps ({self.steps}) or None, got {value}")

    @property
    def bn_step(self) -> int:
        return self.steps // 2 if self.freeze_bn_step is None else self.freeze_bn_step

    @property
    def observer_step(self) -> int:
        return self.steps * 3 // 4 if self.freeze_observer_step is None else self.freeze_observer_step


@dataclass
class QATResult:
    """The converted QAT model (PT2E graph with q/dq ops) and its training log."""

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        head = np.mean(self.losses[:10]) if self.losses else float("nan")
        tail = np.mean(self.losses[-10:]) if self.losses else float("nan")
        return (f"QAT {len(self.losses)} steps in {self.seconds:.0f} s: distillation loss "
                f"(1 - cos to FP32) {head:.4f} -> {tail:.4f}")


def run_qat(student: Student, calibration: CalibrationSet, config: QATConfig = QATConfig(),
            keep_float: tuple[str, ...] = (), progress: bool = False,
            float_prelu_inputs: bool = True) -> QATResult:
    """Fine-tune a fake-quantized copy of ``student`` against it and convert it (see module doc).

    ``float_prelu_inputs``: no output quantizer on a conv whose PReLU feeds only ``keep_float``
    depthwise convs (``quantize.formats.Format.qat_float_prelu_inputs``: not when the model
    goes to LiteRT).

    Raises:
        CalibrationError: fewer faces than one batch.
        ConfigError: a ``keep_float`` name is not a module of the student.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    faces, targets = _training_set(student, calibration, config, progress)
    start = time.perf_counter()
    prepared = _prepare(student, config, keep_float, faces[:2], float_prelu_inputs)
    # INT8 ranges start from the calibration faces, whatever QAT then trains on.
    calibration_faces = student.to_tensor(np.concatenate(calibration.training_pairs()))
    _calibrate_observers(prepared, calibration_faces, config.batch_size)
    losses = _train(prepared, faces, targets, config, progress)
    prepared.eval()
    converted = allow_exported_model_train_eval(convert_pt2e(prepared, fold_quantize=False))
    converted.eval()
    result = QATResult(converted, losses, time.perf_counter() - start)
    log.info("%s", result.summary())
    return result


def _training_set(student: Student, calibration: CalibrationSet, config: QATConfig,
                  progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from quantize.calibration import load_training_faces

    batch = config.batch_size
    if config.faces:
        unmasked, masked = load_training_faces(calibration, config.faces, progress=progress)
    else:
        unmasked, masked = calibration.training_pairs()
    faces = np.concatenate([unmasked, masked])
    if len(faces) < batch:
        raise CalibrationError(f"QAT needs at least one batch of faces ({batch}); the calibration "
                               f"split has {len(faces)}: raise --calib")
    faces = np.concatenate([faces, faces[:, :, ::-1]])  # mirrored copies
    # The FP32 student's embeddings are the targets; computed once (it never changes).
    return student.to_tensor(faces), torch.from_numpy(student.embed(faces))


def _prepare(student: Student, config: QATConfig, keep_float: tuple[str, ...], example: torch.Tensor,
             float_prelu_inputs: bool):
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from quantize.pt2e import xnnpack_quantizer

    model = fold_batchnorm(student.model) if config.bn_step == 0 else copy.deepcopy(student.model)
    names = dict(model.named_modules())
    unknown = [n for n in keep_float if n not in names]
    if unknown:
        raise ConfigError(f"--keep-float {unknown} are not modules of {student.arch}; e.g. "
                          f"{', '.join(n for n, m in names.items() if isinstance(m, nn.Conv2d))}")
    # 7-bit weights (+-63): x86 CPUs without VNNI saturate u8 x s8 products in int16 when
    # weights use the full 8 bits (the ONNX export's reduce_range, NNCF's overflow fix).
    # float_prelu_inputs: QAT trains the function the onnxruntime export runs where a PReLU
    # feeds float depthwise convs (no rounding before that PReLU, quantize.ort_float_prelu).
    quantizer = xnnpack_quantizer(keep_float, is_qat=True, weight_qmax=WEIGHT_QMAX,
                                  float_prelu_inputs=float_prelu_inputs)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(model.train(), (example,), dynamic_shapes=({0: batch},)).module()
    return allow_exported_model_train_eval(prepare_qat_pt2e(graph, quantizer))


@torch.no_grad()
def _calibrate_observers(prepared, faces: torch.Tensor, batch: int) -> None:
    # One pass over the faces before any weight moves: INT8 ranges start from the data (as in
    # PTQ) instead of from the first training batch, so training starts near PTQ's accuracy.
    prepared.eval()
    for start in range(0, len(faces), batch):
        prepared(faces[start:start + batch])


def _train(prepared, faces: torch.Tensor, targets: torch.Tensor, config: QATConfig,
           progress: bool) -> list[float]:
    from torchao.quantization.pt2e import disable_observer
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    losses = []
    for step in tqdm(range(config.steps), desc="QAT", unit="step", disable=not progress):
        if step == config.observer_step:
            prepared.apply(disable_observer)
            log.info("QAT step %d: observers frozen", step)
        # Before the BN freeze, train mode (batch statistics); after it, eval mode keeps
        # BN on its running statistics while fake quantization and gradients carry on.
        prepared.train(step < config.bn_step)
        rows = torch.randint(0, len(faces), (config.batch_size,), generator=generator)
        out = nn.functional.normalize(prepared(faces[rows]), dim=1)
        loss = (1 - (out * targets[rows]).sum(dim=1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == config.steps:
            # A log line as well as the bar: QAT runs for minutes, often with output to a file.
            log.info("QAT step %d/%d: loss %.4f (mean of the last %d)", step + 1, config.steps,
                     np.mean(losses[-LOG_EVERY:]), min(LOG_EVERY, len(losses)))
    return losses
