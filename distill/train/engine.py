"""One epoch of training, validation, and masked-LFW evaluation (torchvision reference shape)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.data.dataset import to_tensor
from distill.losses import DistillLoss
from distill.train.distributed import DistInfo, mean_across

log = logging.getLogger(__name__)


class DistillObjective(nn.Module):
    """Student and loss terms in one module, so DDP synchronises the margin heads' weights too.

    The student stays a pure model; this wrapper only exists for training.
    """

    def __init__(self, student: nn.Module, criterion: DistillLoss) -> None:
        super().__init__()
        self.student = student
        self.criterion = criterion

    def forward(self, images: torch.Tensor, targets: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict, torch.Tensor]:
        emb = self.student(images).float()
        total, parts = self.criterion(emb, targets, labels)
        return total, parts, emb


@dataclass
class StepContext:
    """What every step needs besides the model: device, precision, logging."""

    info: DistInfo
    amp: bool
    channels_last: bool
    scaler: torch.amp.GradScaler
    log_every: int
    log_row: Callable[[dict], None]
    progress: bool = True
    accumulate: int = 1
    after_step: Callable[[int], None] | None = None  # called with the global step after each


def _batch_to_device(batch: dict, templates: np.ndarray, ctx: StepContext,
                     with_labels: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    device = ctx.info.device
    images = batch["image"].to(device, non_blocking=True)
    if ctx.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    rows, flips = batch["row"].numpy(), batch["flip"].numpy()
    targets = torch.from_numpy(np.asarray(templates[rows, flips], np.float32)).to(device)
    labels = batch["label"].to(device) if with_labels else None
    return images, targets, labels


def train_one_epoch(objective: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    loader: Any, templates: np.ndarray, epoch: int, step: int,
                    ctx: StepContext) -> tuple[dict[str, float], int]:
    """Train for one pass over ``loader``.

    Returns:
        ``(metrics averaged over the epoch and the ranks, global step after the epoch)``.
    """
    from tqdm import tqdm

    objective.train()
    inner = objective.module if hasattr(objective, "module") else objective
    with_labels = inner.criterion.needs_labels
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not (ctx.info.is_main and ctx.progress),
               unit="batch", dynamic_ncols=True, leave=False)
    for batch in bar:
        images, targets, labels = _batch_to_device(batch, templates, ctx, with_labels)
        optimizer.zero_grad(set_to_none=True)
        values = _accumulate(objective, images, targets, labels, ctx)
        ctx.scaler.step(optimizer)
        ctx.scaler.update()
        scheduler.step()
        step += 1
        if ctx.after_step is not None:
            ctx.after_step(step)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value * len(images)
        seen += len(images)
        if step % ctx.log_every == 0 and ctx.info.is_main:
            bar.set_postfix(loss=f"{values['loss']:.4f}", cos=f"{values['cos']:.3f}")
            ctx.log_row({"kind": "step", "epoch": epoch, "step": step,
                         "lr": optimizer.param_groups[0]["lr"], **values})
    elapsed = time.perf_counter() - start
    metrics = {k: v / max(seen, 1) for k, v in sums.items()}
    metrics = mean_across(metrics, ctx.info)
    metrics["images_per_s"] = seen * ctx.info.world_size / max(elapsed, 1e-9)
    metrics["time_s"] = elapsed
    return metrics, step


def _accumulate(objective: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                labels: torch.Tensor | None, ctx: StepContext) -> dict[str, float]:
    """Forward/backward ``ctx.accumulate`` micro-batches, gradients averaged; returns the
    batch's metrics.

    Micro-batch ``j`` takes rows ``j, j + k, j + 2k, ...``: the split DDP's samplers make
    across ranks, so one process with ``accumulate: 2`` takes the steps two ranks take
    (BatchNorm statistics included, which are per micro-batch as they are per rank).
    """
    k = ctx.accumulate
    totals: dict[str, float] = {}
    for j in range(k):
        rows = slice(j, None, k)
        sync = j == k - 1 or not hasattr(objective, "no_sync")
        with (contextlib.nullcontext() if sync else objective.no_sync()):
            with torch.autocast(ctx.info.device.type, dtype=torch.float16, enabled=ctx.amp):
                loss, parts, emb = objective(images[rows], targets[rows],
                                             None if labels is None else labels[rows])
            ctx.scaler.scale(loss / k).backward()
        values = {"loss": loss.item(), **{n: v.item() for n, v in parts.items()},
                  "cos": F.cosine_similarity(emb.detach(), targets[rows], dim=1).mean().item()}
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value / k
    return totals


@torch.no_grad()
def validate(objective: nn.Module, loader: Any, templates: np.ndarray,
             ctx: StepContext) -> dict[str, float]:
    """Loss and student-teacher cosine on the held-out rows (masked and unmasked separately).

    Runs on rank 0 alone (no collectives): the validation set is small."""
    objective.eval()
    inner = objective.module if hasattr(objective, "module") else objective
    sums = {"loss": 0.0, "cos": 0.0, "cos_masked": 0.0, "cos_unmasked": 0.0}
    counts = {"all": 0, "masked": 0, "unmasked": 0}
    for batch in loader:
        images, targets, labels = _batch_to_device(batch, templates, ctx, inner.criterion.needs_labels)
        with torch.autocast(ctx.info.device.type, dtype=torch.float16, enabled=ctx.amp):
            loss, _, emb = inner(images, targets, labels)
        cos = F.cosine_similarity(emb, targets, dim=1).cpu()
        masked = batch["masked"].bool()
        sums["loss"] += loss.item() * len(images)
        sums["cos"] += cos.sum().item()
        sums["cos_masked"] += cos[masked].sum().item()
        sums["cos_unmasked"] += cos[~masked].sum().item()
        counts["all"] += len(images)
        counts["masked"] += int(masked.sum())
        counts["unmasked"] += int((~masked).sum())
    out = {"val_loss": sums["loss"] / max(counts["all"], 1), "val_cos": sums["cos"] / max(counts["all"], 1)}
    if counts["masked"]:
        out["val_cos_masked"] = sums["cos_masked"] / counts["masked"]
    if counts["unmasked"]:
        out["val_cos_unmasked"] = sums["cos_unmasked"] / counts["unmasked"]
    return out


def student_embedder(student: nn.Module, device: torch.device, batch_size: int = 128,
                     channels_last: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """An ``embed_fn`` for ``benchmarks.evaluate``: uint8 BGR crops -> L2-normalised (N, D)."""
    def embed(crops: np.ndarray) -> np.ndarray:
        student.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = to_tensor(np.asarray(crops[start:start + batch_size])).to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                rows.append(F.normalize(student(x).float(), dim=1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)

    return embed


def evaluate(student: nn.Module, pack: Any, device: torch.device, sets: tuple[str, ...],
             quick: bool, batch_size: int = 128, channels_last: bool = False) -> dict[str, Any]:
    """Masked-LFW 10-fold accuracy of the student (``benchmarks.evaluate.evaluate_embedder``).

    Imported here, lazily: distill works without the benchmarks package at import time.
    """
    from benchmarks.evaluate import evaluate_embedder

    start = time.perf_counter()
    embed = student_embedder(student, device, batch_size, channels_last)
    result = evaluate_embedder(embed, pack, sets=tuple(sets), quick=quick)
    log.info("evaluation (%s) took %.0f s", "quick" if quick else "full", time.perf_counter() - start)
    return result


def held_out_pack(pack: Any, train_folds: tuple[int, ...]) -> Any:
    """The pack restricted to the pairs (and their images) of the LFW folds not trained on.

    For identity-labelled runs on ``lfw-folds``: folds are renumbered 0..k-1 (so the quick mode,
    folds 0-1, still has pairs) and impostors are drawn only among the held-out images.
    """
    keep = ~np.isin(pack.fold, [f - 1 for f in train_folds])
    images = np.unique(np.concatenate([pack.idx_a[keep], pack.idx_b[keep]]))
    remap = np.full(len(pack.keys), -1, np.int64)
    remap[images] = np.arange(len(images))
    folds = np.unique(pack.fold[keep], return_inverse=True)[1]
    return dataclasses.replace(
        pack, key=f"{pack.key}-heldout-{''.join(map(str, train_folds))}",
        keys=[pack.keys[i] for i in images], unmasked=np.asarray(pack.unmasked[images]),
        masked=np.asarray(pack.masked[images]), idx_a=remap[pack.idx_a[keep]],
        idx_b=remap[pack.idx_b[keep]], is_same=pack.is_same[keep], fold=folds, ids=pack.ids[images])
