"""A distillation run: prepare data and teacher templates, initialise the student, train,
validate, evaluate on masked LFW, checkpoint; resumable. Works alone or under torchrun.

Run folder::

    config.yaml     the resolved configuration
    metrics.jsonl   one row per logged step and per epoch
    last.pt         after every epoch; best.pt: lowest validation loss (never LFW)
    final.json      full masked-LFW evaluation of best.pt
    loss.png, accuracy.png
    init/           phase A (unmasked template KD) when ``init: teacher-distilled``
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from distill.models.layers import set_prelu_fade
from distill.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from distill.train.config import TrainConfig, config_dict, save_config
from distill.train.distributed import DistInfo, barrier, cleanup, init_distributed
from distill.train.engine import (DistillObjective, StepContext, evaluate, held_out_pack,
                                  train_one_epoch, validate)
from distill.train.plots import read_metrics, write_plots
from distill.train.setup import (RunData, build_criterion, build_loaders, build_optimizer,
                                 build_student, embedding_size, prepare_data)
from edge.errors import ConfigError

log = logging.getLogger(__name__)
# Changing any of these between a checkpoint and its resumption would not continue the same run.
RESUME_KEYS = ("seed", "teacher", "student", "data", "losses", "batch_size", "accumulate", "optim",
               "epochs")


def main(cfg: TrainConfig, resume: str | None = None, prepare_only: bool = False,
         progress: bool = True) -> Path:
    """Run (or resume) the distillation ``cfg`` describes; returns the run folder.

    Args:
        cfg: the validated configuration.
        resume: a ``last.pt`` to continue from (exactly: same weights as never stopping).
        prepare_only: stop after preparing the faces and the teacher templates.
        progress: tqdm bars on rank 0.

    Raises:
        ConfigError, DatasetError, ModelFileError: bad settings, data or checkpoints.
    """
    info = init_distributed(cfg.device)
    try:
        torch.set_num_threads(cfg.threads)
        out = Path(cfg.out)
        data = prepare_data(cfg, info, progress)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "data.json").write_text(json.dumps({**data.summary, "teacher": data.teacher}, indent=1))
        if prepare_only:
            return out
        init_state = _initial_weights(cfg, data, info, progress)
        run_phase(cfg, data, info, init_state, resume, progress)
        return out
    finally:
        cleanup(info)


def phase_a_config(cfg: TrainConfig) -> TrainConfig:
    """Phase A of ``init: teacher-distilled``: plain template KD on unmasked faces, from random
    weights, for ``init_epochs``; evaluated once, fully, at its end (not after every epoch)."""
    augment = dataclasses.replace(cfg.data.augment, mask_prob=0.0)
    return dataclasses.replace(cfg, name=f"{cfg.name}-init", init="random", epochs=cfg.init_epochs,
                               out=str(Path(cfg.out) / "init"),
                               data=dataclasses.replace(cfg.data, augment=augment),
                               eval=dataclasses.replace(cfg.eval, each_epoch=False))


def _initial_weights(cfg: TrainConfig, data: RunData, info: DistInfo,
                     progress: bool) -> dict[str, torch.Tensor] | None:
    if cfg.init == "random":
        return None
    if cfg.init_checkpoint is not None:
        return load_checkpoint(cfg.init_checkpoint)["model"]
    phase_a = phase_a_config(cfg)
    last = Path(phase_a.out) / "last.pt"
    # Phase A resumes by itself: its folder is part of this run.
    done = last.is_file() and load_checkpoint(last)["epoch"] + 1 >= phase_a.epochs
    if not done:
        log.info("phase A: unmasked template KD for %d epoch(s) into %s", phase_a.epochs, phase_a.out)
        run_phase(phase_a, data, info, None, str(last) if last.is_file() else None, progress)
    barrier(info)
    return load_checkpoint(Path(phase_a.out) / "best.pt")["model"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build(cfg: TrainConfig, data: RunData, info: DistInfo,
           init_state: dict | None) -> tuple[DistillObjective, torch.nn.Module]:
    _seed_everything(cfg.seed)
    student = build_student(cfg, data.teacher["dim"])
    if init_state is not None:
        student.load_state_dict(init_state)
    size = embedding_size(cfg, data.teacher["dim"])  # not every model has .embedding_size
    criterion = build_criterion(cfg, size, data.split.num_classes)
    if criterion.needs_labels and data.split.train_labels is None:
        raise ConfigError("a margin head needs identity labels: set data.train to lfw-folds or "
                          "an LFW-layout folder")
    objective = DistillObjective(student, criterion).to(info.device)
    if cfg.channels_last and info.device.type == "cuda":
        objective = objective.to(memory_format=torch.channels_last)
    wrapped: torch.nn.Module = objective
    if info.distributed:
        if cfg.sync_bn:
            wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        ids = [info.local_rank] if info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=ids)
    return objective, wrapped


def _restore(path: str, cfg: TrainConfig, objective: DistillObjective, optimizer: Any,
             scheduler: Any, scaler: Any) -> dict:
    state = load_checkpoint(path)
    saved, now = state["config"], config_dict(cfg)
    changed = [k for k in RESUME_KEYS if saved.get(k) != now.get(k)]
    if changed:
        raise ConfigError(f"cannot resume {path}: {', '.join(changed)} differ from the checkpoint's "
                          "configuration; resume with the run's config.yaml")
    objective.student.load_state_dict(state["model"])
    objective.criterion.load_state_dict(state["criterion"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state


def run_phase(cfg: TrainConfig, data: RunData, info: DistInfo, init_state: dict | None,
              resume: str | None, progress: bool = True) -> None:
    """Train ``cfg.epochs`` epochs into ``cfg.out`` (resuming from ``resume``), then evaluate."""
    out = Path(cfg.out)
    objective, wrapped = _build(cfg, data, info, init_state)
    train_loader, val_loader, sampler, train_set = build_loaders(cfg, data, info)
    optimizer, scheduler = build_optimizer(cfg, objective, len(train_loader))
    amp = cfg.amp and info.device.type == "cuda"
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp)
    start, step, best = 0, 0, math.inf
    if resume:
        state = _restore(resume, cfg, objective, optimizer, scheduler, scaler)
        start, step, best = state["epoch"] + 1, state["step"], state["best_val"]
        log.info("resumed %s at epoch %d (step %d)", resume, start, step)
    metrics = MetricsLog(out / "metrics.jsonl", info.is_main, keep_until_step=step)
    if info.is_main:
        save_config(cfg, out / "config.yaml")
    fade = _prelu_fader(cfg, objective.student, len(train_loader))
    fade(step)  # a resumed run continues the fade where it stopped
    ctx = StepContext(info, amp, cfg.channels_last and info.device.type == "cuda", scaler,
                      cfg.log_every, metrics.append, progress, cfg.accumulate, fade)
    run = _Run(cfg, data, objective, optimizer, scheduler, scaler, val_loader, ctx, metrics,
               _open_pack(cfg) if info.is_main else None)
    if start == 0 and run.pack is not None and cfg.eval.initial:
        _evaluate_initial(run)
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        train, step = train_one_epoch(wrapped, optimizer, scheduler, train_loader, data.templates,
                                      epoch, step, ctx)
        if info.is_main:
            best = _end_epoch(run, epoch, step, best, train)
        barrier(info)
    if info.is_main and run.pack is not None:
        _final_evaluation(cfg, objective, data, info, run.pack)


def _prelu_fader(cfg: TrainConfig, student: torch.nn.Module, steps_per_epoch: int):
    """``fade(step)``: the ``FadingPReLU`` slopes' weight after ``step`` optimiser steps, linear
    from 1 to 0 over ``student.prelu_fade_steps`` (a no-op for students without them)."""
    total = cfg.student.prelu_fade_steps
    if total == 0:
        return lambda step: None  # FadingPReLU defaults to fade 0: ReLU
    if total > steps_per_epoch * cfg.epochs:
        raise ConfigError(f"student.prelu_fade_steps {total} is longer than the run "
                          f"({cfg.epochs} epochs x {steps_per_epoch} steps)")
    if set_prelu_fade(student, 1.0) == 0:
        raise ConfigError(f"student.prelu_fade_steps is set but {cfg.student.name} has no fading "
                          f"PReLU; use a *_relu student such as mobilefacenet_tf_relu")
    return lambda step: set_prelu_fade(student, 1.0 - step / total)


@dataclasses.dataclass
class _Run:
    """What the end-of-epoch work needs (rank 0)."""

    cfg: TrainConfig
    data: RunData
    objective: DistillObjective
    optimizer: Any
    scheduler: Any
    scaler: Any
    val_loader: Any
    ctx: StepContext
    metrics: MetricsLog
    pack: Any


def _end_epoch(run: _Run, epoch: int, step: int, best: float, train: dict) -> float:
    """Validate, evaluate (quick), checkpoint and plot after an epoch (rank 0); returns the
    best validation loss so far."""
    cfg, objective, optimizer, ctx = run.cfg, run.objective, run.optimizer, run.ctx
    val = (validate(objective, run.val_loader, run.data.templates, ctx) if run.val_loader
           else {"val_loss": train["loss"]})
    row = {"kind": "epoch", "epoch": epoch, "step": step, **{f"train_{k}": v for k, v in train.items()},
           **val, "lr": optimizer.param_groups[0]["lr"]}
    if run.pack is not None and cfg.eval.each_epoch:
        result = evaluate(objective.student, run.pack, ctx.info.device, cfg.eval.sets,
                          cfg.eval.quick_each_epoch, cfg.eval.batch_size, ctx.channels_last)
        row["eval"] = {k: v["accuracy"] for k, v in result.items() if k in cfg.eval.sets}
    # Mid-fade, the trained model has PReLU slopes that the saved (ReLU) model lacks: never best.
    fading = step < cfg.student.prelu_fade_steps
    is_best = val["val_loss"] < best and not fading
    best = best if fading else min(best, val["val_loss"])
    state = {"model": objective.student.state_dict(), "criterion": objective.criterion.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "scaler": run.scaler.state_dict(), "epoch": epoch, "step": step, "best_val": best,
             "config": config_dict(cfg), "rng": rng_state(), "teacher": run.data.teacher,
             "licence": cfg.licence,
             "student": {"name": cfg.student.name,
                         "embedding_size": embedding_size(cfg, run.data.teacher["dim"]),
                         "input": {"color": "rgb", "mean": 127.5, "std": 127.5, "size": [112, 112]}}}
    out = Path(cfg.out)
    save_checkpoint(state, out / "last.pt")
    if is_best:
        save_checkpoint(state, out / "best.pt")
    run.metrics.append({**row, "best": is_best})
    write_plots(run.metrics.rows(), out)
    log.info("epoch %d: loss %.4f val %.4f cos %.3f %.1f img/s %s", epoch, train["loss"],
             val["val_loss"], val.get("val_cos", float("nan")), train["images_per_s"], row.get("eval", ""))
    return best


def _evaluate_initial(run: _Run) -> None:
    """The initialisation's accuracy (same mode as the per-epoch evaluations), as epoch -1."""
    cfg = run.cfg
    result = evaluate(run.objective.student, run.pack, run.ctx.info.device, cfg.eval.sets,
                      cfg.eval.quick_each_epoch, cfg.eval.batch_size, run.ctx.channels_last)
    run.metrics.append({"kind": "initial", "epoch": -1, "step": 0,
                        "eval": {k: v["accuracy"] for k, v in result.items() if k in cfg.eval.sets}})


def _open_pack(cfg: TrainConfig):
    """The evaluation pack; for ``lfw-folds`` runs only the folds not trained on."""
    if cfg.eval.pack is None:
        return None
    from benchmarks.packs import load_pack

    pack = load_pack(cfg.eval.pack)
    return held_out_pack(pack, cfg.data.train_folds) if cfg.data.train == "lfw-folds" else pack


def _final_evaluation(cfg: TrainConfig, objective: DistillObjective, data: RunData,
                      info: DistInfo, pack) -> None:
    """Full masked-LFW evaluation of ``best.pt`` into ``final.json``."""
    best = Path(cfg.out) / "best.pt"
    objective.student.load_state_dict(load_checkpoint(best)["model"])
    result = evaluate(objective.student, pack, info.device, cfg.eval.sets, False, cfg.eval.batch_size)
    clean = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
             for k, v in result.items()}
    report = {"checkpoint": str(best), "epoch": load_checkpoint(best)["epoch"],
              "teacher": data.teacher, "data": data.summary, "evaluation": clean}
    (Path(cfg.out) / "final.json").write_text(json.dumps(report, indent=1))
    log.info("final (best.pt): %s", {k: v["accuracy"] for k, v in clean.items() if k in cfg.eval.sets})


class MetricsLog:
    """Append-only metrics.jsonl on rank 0; on resume, rows logged after the checkpoint's
    step (an interrupted epoch) are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, active: bool, keep_until_step: int) -> None:
        self.path, self.active = path, active
        if active:
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= keep_until_step] if keep_until_step else []
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append(self, row: dict) -> None:
        if self.active:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        return read_metrics(self.path)
