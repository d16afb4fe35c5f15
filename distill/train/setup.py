"""Builders for a run: data (faces, split, teacher templates), student, loaders, optimiser."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from distill.data.dataset import MaskedFaceDataset
from distill.data.dedup import exclude_near_duplicates
from distill.data.faces import FaceSet, prepare_faces
from distill.data.sampler import EpochSampler
from distill.data.splits import Split, holdout_split, labelled_split, lfw_fold_split
from distill.losses import DistillLoss
from distill.registry import create_model
from distill.teachers import create_teacher, teacher_templates
from distill.train.config import TrainConfig
from distill.train.distributed import DistInfo, barrier
from edge.errors import ConfigError
from edge.paths import cache_dir, data_file

log = logging.getLogger(__name__)

UTKFACE = "train/utkface-s19000.tgz"
LFW = "lfw/lfw-a-gray.tgz"
LFW_PAIRS = "lfw/pairs.txt"
KD_TERMS = ("kd_mse", "kd_cosine")


@dataclass(frozen=True, eq=False)
class RunData:
    """Everything the training loop reads: crops, the split, the teacher's templates."""

    faces: FaceSet
    split: Split
    templates: np.ndarray  # float32 (N, 2, D), memory-mapped
    teacher: dict  # name, sha256, dim
    summary: dict  # counts for the run's report


def prepare_data(cfg: TrainConfig, info: DistInfo, progress: bool = True) -> RunData:
    """Prepare (rank 0, once; cached) or open (other ranks) the run's data and templates."""
    if info.is_main:
        data = _prepare(cfg, info, progress)
    barrier(info)
    if not info.is_main:
        data = _prepare(cfg, info, False)
    return data


def _prepare(cfg: TrainConfig, info: DistInfo, progress: bool) -> RunData:
    dc, cache = cfg.data, cache_dir("distill/faces")
    source = {"utkface": data_file(UTKFACE), "lfw-folds": data_file(LFW)}.get(dc.train, dc.train)
    faces = prepare_faces(source, cache, dc.limit, progress)
    tc = cfg.teacher
    teacher = create_teacher(tc.name, path=tc.path, layout=tc.layout, threads=cfg.threads,
                             device=str(info.device))
    templates = _templates(teacher, faces, cfg, progress)
    meta = {"name": teacher.name, "sha256": teacher.sha256, "dim": int(templates.shape[2])}
    summary = {"images": faces.manifest["images"], "no_face": len(faces.manifest["no_face"]),
               "faces": len(faces)}
    if dc.train == "lfw-folds":
        split = lfw_fold_split(faces, data_file(LFW_PAIRS), dc.train_folds, dc.val_fraction, cfg.seed)
        return RunData(faces, split, templates, meta, {**summary, "split": split.note})
    rows = np.arange(len(faces))
    if dc.dedup_phash_bits is not None or dc.dedup_cosine is not None:
        rows = _exclude_lfw_copies(cfg, faces, teacher, templates, info, progress, summary)
    labelled = any(t.name not in KD_TERMS for t in cfg.losses)
    split = (labelled_split(faces, rows, dc.val_fraction, cfg.seed) if labelled
             else holdout_split(rows, dc.val_fraction, cfg.seed))
    return RunData(faces, split, templates, meta, {**summary, "split": split.note})


def _exclude_lfw_copies(cfg: TrainConfig, faces: FaceSet, teacher, templates: np.ndarray,
                        info: DistInfo, progress: bool, summary: dict) -> np.ndarray:
    """Rows of ``faces`` left after dropping LFW copies (pHash, ``dedup_teacher`` cosine)."""
    dc = cfg.data
    lfw = prepare_faces(data_file(LFW), cache_dir("distill/faces"), None, progress)
    ours = theirs = None
    if dc.dedup_cosine is not None:
        judge = teacher if dc.dedup_teacher == cfg.teacher.name else create_teacher(
            dc.dedup_teacher, threads=cfg.threads, device=str(info.device))
        ours = templates if judge is teacher else _templates(judge, faces, cfg, progress)
        ours, theirs = ours[:, 0], _templates(judge, lfw, cfg, progress)[:, 0]
    exclusion = exclude_near_duplicates(faces, lfw, dc.dedup_phash_bits, ours, theirs, dc.dedup_cosine)
    summary.update(lfw_copies_dropped=exclusion.counts, dedup_phash_bits=dc.dedup_phash_bits,
                   dedup_cosine=dc.dedup_cosine, dedup_teacher=dc.dedup_teacher)
    return np.flatnonzero(exclusion.keep)


def _templates(teacher, faces: FaceSet, cfg: TrainConfig, progress: bool) -> np.ndarray:
    return teacher_templates(teacher, faces.crops, faces.key, cache_dir("distill/templates"),
                             cfg.teacher.batch_size, progress)


def embedding_size(cfg: TrainConfig, teacher_dim: int) -> int:
    """The student's embedding size: ``student.embedding_size``, else the teacher's.

    Raises:
        ConfigError: it differs from the teacher's while a KD term is used.
    """
    size = cfg.student.embedding_size or teacher_dim
    uses_kd = any(t.name in KD_TERMS for t in cfg.losses)
    if uses_kd and size != teacher_dim:
        raise ConfigError(f"student.embedding_size {size} != the teacher's {teacher_dim}: template "
                          "KD compares the two; leave student.embedding_size unset (null)")
    return size


def build_student(cfg: TrainConfig, teacher_dim: int) -> torch.nn.Module:
    """The registered student, built with ``embedding_size(cfg, teacher_dim)``."""
    return create_model(cfg.student.name, embedding_size=embedding_size(cfg, teacher_dim))


def build_criterion(cfg: TrainConfig, embedding_size: int, num_classes: int) -> DistillLoss:
    """The weighted loss terms of ``cfg.losses``."""
    return DistillLoss([(t.name, t.weight, dict(t.params)) for t in cfg.losses],
                       embedding_size, num_classes)


def _single_threaded_opencv() -> None:
    """Stop OpenCV's thread pool in this process before DataLoader workers are forked.

    The workers' mask warps are tiny, and threads there would only fight the training step.
    It must happen here, in the parent: a forked child inherits the pool's locks and condition
    variables but none of its threads, and stopping the pool in the child waits forever on
    them. That hung every first run on a fresh machine (face alignment had started the pool)
    at epoch 0; runs on cached faces never started it, and passed.
    """
    import cv2

    cv2.setNumThreads(1)


def build_loaders(cfg: TrainConfig, data: RunData, info: DistInfo):
    """Train loader (sharded by DistributedSampler, also alone, so the sample order is the same
    for any world size), validation loader (rank 0), and the train sampler/dataset."""
    if cfg.batch_size % (info.world_size * cfg.accumulate):
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the number of "
                          f"processes x accumulate ({info.world_size} x {cfg.accumulate})")
    split, aug = data.split, cfg.data.augment
    train_set = MaskedFaceDataset(data.faces, split.train, aug, cfg.seed, split.train_labels)
    # Validation draws fixed masks (epoch 0 of another seed) so epochs compare like with like.
    val_set = MaskedFaceDataset(data.faces, split.val, aug, cfg.seed + 1, split.val_labels)
    per_rank = cfg.batch_size // info.world_size
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {len(train_set)} training faces")
    if cfg.data.samples_per_epoch is None:
        sampler = DistributedSampler(train_set, info.world_size, info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    else:
        sampler = EpochSampler(len(train_set), cfg.data.samples_per_epoch, cfg.seed, info.rank,
                               info.world_size)
    if cfg.workers:
        _single_threaded_opencv()
    common = {"num_workers": cfg.workers,
              "pin_memory": info.device.type == "cuda", "persistent_workers": False}
    train = DataLoader(train_set, per_rank, sampler=sampler, drop_last=True,
                       generator=torch.Generator().manual_seed(cfg.seed), **common)
    val = DataLoader(val_set, per_rank, shuffle=False, **common) if len(val_set) else None
    return train, val, sampler, train_set


def build_optimizer(cfg: TrainConfig, module: torch.nn.Module, steps_per_epoch: int):
    """Optimiser (no weight decay on norms, biases and PReLU slopes) and a per-step schedule."""
    oc = cfg.optim
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
    plain = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": oc.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    if oc.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=oc.lr, momentum=oc.momentum, nesterov=oc.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(groups, lr=oc.lr)
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(oc.warmup_epochs * steps_per_epoch)
    milestones = [e * steps_per_epoch for e in oc.step_epochs]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if oc.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if oc.schedule == "step":
            return oc.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
