"""Which rows of a prepared face set train, which validate, and their identity labels."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from distill.data.faces import FaceSet
from distill.data.sources import lfw_person_folds
from edge.errors import ConfigError, DatasetError

FOLDS = tuple(range(1, 11))


@dataclass(frozen=True)
class Split:
    """Row indices (into a FaceSet) and optional labels for training and validation.

    Attributes:
        train, val: int64 row indices.
        train_labels, val_labels: int64 identity labels aligned with the rows, or None.
        num_classes: number of training identities (0 when unlabelled).
        note: how the split was made, for the run's report.
    """

    train: np.ndarray
    val: np.ndarray
    train_labels: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    num_classes: int = 0
    note: str = ""


def holdout_split(rows: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Shuffle ``rows`` with ``seed`` and hold out ``val_fraction`` of them (unlabelled data).

    Raises:
        ConfigError: ``val_fraction`` outside [0, 0.5].
    """
    if not 0.0 <= val_fraction <= 0.5:
        raise ConfigError(f"data.val_fraction must be in [0, 0.5], got {val_fraction}")
    rows = np.asarray(rows, np.int64)
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val = int(round(len(rows) * val_fraction))
    val, train = np.sort(rows[order[:n_val]]), np.sort(rows[order[n_val:]])
    return Split(train, val, note=f"{len(train)} train / {len(val)} validation rows "
                                  f"(random {val_fraction:.0%} held out, seed {seed})")


def lfw_fold_split(faces: FaceSet, pairs_path: str | os.PathLike, train_folds: tuple[int, ...],
                   val_fraction: float, seed: int) -> Split:
    """Identity-labelled split of LFW by View 2 folds (identity-disjoint).

    Every image of a person whose fold is in ``train_folds`` trains (labels 0..C-1, people in
    sorted order), with ``val_fraction`` of those images held out for validation; people of the
    other folds, and people in no pair, are left out, so pairs of the other folds stay unseen.

    Raises:
        ConfigError: a fold outside 1..10, or no fold at all.
        DatasetError: the face set is not in LFW layout, or no image falls in the folds.
    """
    bad = [f for f in train_folds if f not in FOLDS]
    if not train_folds or bad:
        raise ConfigError(f"data.train_folds must be a non-empty subset of 1..10, got {list(train_folds)}")
    folds = lfw_person_folds(pairs_path)
    names = faces.identities()
    people = sorted({n for n in names if folds.get(n) in train_folds})
    if not people:
        raise DatasetError(f"no image of {faces.folder} belongs to LFW folds {list(train_folds)}")
    label_of = {name: i for i, name in enumerate(people)}
    rows = np.array([i for i, n in enumerate(names) if n in label_of], np.int64)
    labels = np.array([label_of[names[i]] for i in rows], np.int64)
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val = int(round(len(rows) * val_fraction))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return Split(rows[train_idx], rows[val_idx], labels[train_idx], labels[val_idx],
                 num_classes=len(people),
                 note=f"LFW folds {list(train_folds)}: {len(people)} people, "
                      f"{len(train_idx)} train / {len(val_idx)} validation images")


def labelled_split(faces: FaceSet, rows: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Identity labels from an LFW-layout folder (one folder per person) for margin heads.

    Raises:
        DatasetError: an image is not inside a person's folder.
    """
    names = faces.identities()
    people = sorted({names[i] for i in rows})
    label_of = {name: i for i, name in enumerate(people)}
    plain = holdout_split(rows, val_fraction, seed)
    return Split(plain.train, plain.val,
                 np.array([label_of[names[i]] for i in plain.train], np.int64),
                 np.array([label_of[names[i]] for i in plain.val], np.int64),
                 num_classes=len(people), note=f"{plain.note}, {len(people)} identities")
