"""The distillation run's configuration: frozen dataclasses, read from YAML, CLI overrides.

Every value is checked in ``__post_init__``; a bad one raises ``ConfigError`` naming the key
and the valid values, and an unknown key (a typo) is an error listing the known keys, never a
silently ignored extra. ``save_config`` writes the resolved configuration into the run folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.data.dataset import AugmentConfig
from distill.data.phash import DEFAULT_THRESHOLD
from edge.errors import ConfigError

DEVICES = ("cpu", "cuda")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
INIT_FORMS = ("random", "teacher-distilled", "checkpoint:<path>")
BUILTIN_SETS = ("utkface", "lfw-folds")
EVAL_SETS = ("U-U", "U-M", "M-M")


def _one_of(key: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: {value!r} is not valid; choose one of {', '.join(map(str, valid))}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class TeacherConfig:
    """Frozen teacher: a ``distill.teachers.TEACHERS`` name, weights for PyTorch teachers."""

    name: str = "sface"
    path: str | None = None
    layout: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        from distill.teachers import list_teachers

        _one_of("teacher.name", self.name, tuple(list_teachers()))
        _positive("teacher.batch_size", self.batch_size)


@dataclass(frozen=True)
class StudentConfig:
    """Student: a registered model; ``embedding_size`` None means the teacher's.

    ``prelu_fade_steps``: steps over which a ReLU student's ``FadingPReLU`` slopes fade from
    the PReLU checkpoint it starts from to zero (0: ReLU from the first step). Checkpoints
    hold the ReLU model (no fade), so an epoch that ends mid-fade is never ``best.pt``; a
    resumed run recomputes the fade from its step.
    """

    name: str = "mobilefacenet"
    embedding_size: int | None = None
    prelu_fade_steps: int = 0

    def __post_init__(self) -> None:
        from distill.registry import list_models

        _one_of("student.name", self.name, tuple(list_models()))
        if self.embedding_size is not None:
            _positive("student.embedding_size", self.embedding_size)
        if not isinstance(self.prelu_fade_steps, int) or self.prelu_fade_steps < 0:
            raise ConfigError(f"student.prelu_fade_steps must be an integer >= 0, "
                              f"got {self.prelu_fade_steps!r}")


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        train: ``utkface`` (the data root's UTKFace-s19000 minus LFW near-duplicates),
            ``lfw-folds`` (identity-labelled LFW, ``train_folds``), or a folder / tgz.
        limit: use only the first N images (tests, quick runs).
        samples_per_epoch: faces per epoch (None: all); shorter epochs checkpoint, validate and
            evaluate more often, and successive epochs walk through all faces.
        val_fraction: share held out for validation (picks ``best.pt``; LFW is never used to).
        train_folds: LFW folds (1..10) that train when ``train`` is ``lfw-folds``.
        dedup_phash_bits: pHash Hamming distance (of 64 bits) at or below which a training
            face counts as a copy of an LFW face and is dropped (None: no check).
        dedup_cosine: ``dedup_teacher`` cosine at or above which a training face counts as a
            copy (or, lower, another photo) of an LFW face and is dropped (None: no check).
        dedup_teacher: the teacher whose templates that check compares. Fixed, not the run's
            teacher: a cosine threshold means something else for every model (0.5 drops 1,002
            faces with SFace, 13,376 of 18,992 with MobileFaceNet.tflite).
        augment: see ``distill.data.dataset.AugmentConfig``.
    """

    train: str = "utkface"
    limit: int | None = None
    samples_per_epoch: int | None = None
    val_fraction: float = 0.02
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5)
    dedup_phash_bits: int | None = DEFAULT_THRESHOLD
    dedup_cosine: float | None = 0.5
    dedup_teacher: str = "sface-openvino"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.train not in BUILTIN_SETS and not Path(self.train).expanduser().exists():
            raise ConfigError(f"data.train: {self.train!r} is neither one of "
                              f"{', '.join(BUILTIN_SETS)} nor an existing folder / tgz")
        for key in ("limit", "samples_per_epoch"):
            if getattr(self, key) is not None:
                _positive(f"data.{key}", getattr(self, key))
        if not 0.0 <= self.val_fraction <= 0.5:
            raise ConfigError(f"data.val_fraction must be in [0, 0.5], got {self.val_fraction}")
        if not self.train_folds or any(f not in range(1, 11) for f in self.train_folds):
            raise ConfigError(f"data.train_folds must be folds 1..10, got {list(self.train_folds)}")
        if self.dedup_phash_bits is not None and not 0 <= self.dedup_phash_bits <= 64:
            raise ConfigError(f"data.dedup_phash_bits must be in 0..64 or null, got {self.dedup_phash_bits}")
        from distill.teachers import list_teachers

        _one_of("data.dedup_teacher", self.dedup_teacher, tuple(list_teachers()))
        if self.dedup_cosine is not None and not -1.0 <= self.dedup_cosine <= 1.0:
            raise ConfigError(f"data.dedup_cosine must be in [-1, 1] or null, got {self.dedup_cosine}")


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss term (``distill.losses.LOSSES``) and its parameters."""

    name: str
    weight: float = 1.0
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from distill.losses import LOSSES, loss_params

        _one_of("losses[].name", self.name, tuple(LOSSES.names()))
        _positive(f"losses[{self.name}].weight", self.weight, allow_zero=True)
        unknown = sorted(set(self.params) - set(loss_params(self.name)))
        if unknown:
            raise ConfigError(f"losses[{self.name}].params: unknown {unknown}; valid: "
                              f"{', '.join(loss_params(self.name)) or '(none)'}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (stepped every iteration, warm-up included)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _one_of("optim.name", self.name, OPTIMIZERS)
        _one_of("optim.schedule", self.schedule, SCHEDULES)
        _positive("optim.lr", self.lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim.warmup_epochs", self.warmup_epochs, allow_zero=True)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class EvalConfig:
    """Masked-LFW evaluation (``benchmarks.packs`` / ``benchmarks.evaluate``).

    Attributes:
        pack: pack name for ``load_pack`` (None: no evaluation).
        sets: which comparisons to score.
        initial: evaluate the initial weights too, before training (the curve's epoch 0).
        each_epoch: evaluate after every epoch (a full evaluation of best.pt ends every run).
        quick_each_epoch: the quick mode (folds 1-2, no all-vs-all impostors) after an epoch.
        batch_size: crops per student forward.
    """

    pack: str | None = "lfw-masked"
    sets: tuple[str, ...] = EVAL_SETS
    initial: bool = False
    each_epoch: bool = True
    quick_each_epoch: bool = True
    batch_size: int = 128

    def __post_init__(self) -> None:
        for name in self.sets:
            _one_of("eval.sets[]", name, EVAL_SETS)
        _positive("eval.batch_size", self.batch_size)


@dataclass(frozen=True)
class TrainConfig:
    """A whole distillation run (see ``distill/configs/sface_to_mobilefacenet.yaml``).

    ``batch_size`` is the global batch of one optimiser step; each of the ``world_size``
    processes gets ``batch_size / world_size`` and forwards it in ``accumulate`` micro-batches.
    ``licence`` is what the trained weights may be used for (the strictest of the training
    data's, the teacher's and the initialisation's licences): written into every checkpoint,
    and from there into the card of every model exported from it.
    """

    name: str = "distill"
    licence: str = "unknown"
    seed: int = 0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    init: str = "random"
    init_epochs: int = 1
    epochs: int = 1
    batch_size: int = 64
    accumulate: int = 1
    device: str = "cpu"
    threads: int = 2
    workers: int = 1
    amp: bool = True
    channels_last: bool = True
    sync_bn: bool = False
    out: str = "runs/distill/distill"
    log_every: int = 20
    data: DataConfig = field(default_factory=DataConfig)
    losses: tuple[LossTerm, ...] = (LossTerm("kd_mse"),)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _one_of("device", self.device, DEVICES)
        if self.sync_bn and self.device != "cuda":
            raise ConfigError("sync_bn needs device cuda (torch's SyncBatchNorm is GPU-only); "
                              "set sync_bn: false on cpu")
        if self.init not in ("random", "teacher-distilled") and not self.init.startswith("checkpoint:"):
            raise ConfigError(f"init: {self.init!r} is not valid; choose one of {', '.join(INIT_FORMS)}")
        if self.init.startswith("checkpoint:") and not Path(self.init_checkpoint or "").is_file():
            raise ConfigError(f"init: checkpoint {self.init_checkpoint!r} not found")
        for key in ("epochs", "batch_size", "accumulate", "threads", "log_every"):
            _positive(key, getattr(self, key))
        _positive("init_epochs", self.init_epochs)
        _positive("workers", self.workers, allow_zero=True)
        if not self.losses:
            raise ConfigError("losses is empty: give at least one term, e.g. {name: kd_mse}")
        if not self.licence.strip():
            raise ConfigError("licence is empty: name the licence the weights carry, or leave "
                              "it out ('unknown')")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ConfigError(f"name {self.name!r}: use letters, digits, '_', '-', '.' only")

    @property
    def init_checkpoint(self) -> str | None:
        """The path of ``init: checkpoint:<path>``, else None."""
        return self.init.split(":", 1)[1] if self.init.startswith("checkpoint:") else None


def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into dataclass fields."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys: {', '.join(names)}")
    values = {}
    for key, value in raw.items():
        kind = hints[key]
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(kind):
            value = _build(kind, value, sub)
        elif key == "losses":
            value = tuple(_build(LossTerm, v, f"{sub}[{i}]") for i, v in enumerate(value or ()))
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:  # a required field left out, e.g. a loss without a name
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Return ``raw`` with dotted-key overrides applied (``{"data.augment.mask_prob": 0.5}``)."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy of plain data
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
        node[leaf] = value
    return raw


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (``safe_load``), apply overrides, validate.

    Raises:
        ConfigError: unreadable YAML, unknown keys or invalid values.
    """
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    return _build(TrainConfig, apply_overrides(raw, overrides or {}), "")


def config_dict(cfg: TrainConfig) -> dict:
    """The configuration as plain YAML-safe data (tuples as lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def config_from_dict(raw: dict) -> TrainConfig:
    """Inverse of ``config_dict`` (a checkpoint's stored configuration)."""
    return _build(TrainConfig, raw, "")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False), encoding="utf-8")
