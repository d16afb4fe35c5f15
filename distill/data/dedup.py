"""Keep LFW a clean test set: drop training faces that are copies of LFW faces.

Two checks, both against every LFW face:

1. pHash (``distill.data.phash``) of the aligned crops, Hamming distance <= ``phash_bits``:
   catches pixel-level copies (the same crop re-encoded, recoloured, rescaled).
2. Teacher templates, cosine >= ``cosine``: catches the same photo framed and aligned
   differently (UTKFace's 200x200 chips against LFW's 250x250 frames), where re-detection moves
   the landmarks by a few pixels; and, at lower thresholds, other photos of LFW's people.

Why two: measured on these sets (distill/reports/sface_to_mobilefacenet/README.md),
re-aligned copies of LFW photos land 2-34 pHash bits from their originals (median 12) while
unrelated aligned faces come as close as 4 bits, so no pHash threshold separates them. SFace's
cosine does: re-aligned copies >= 0.86 for 95 % of them, other photos of the same person
0.52-0.86 (5th-99th percentile), while the closest of 13,233 LFW faces to a UTKFace stranger
is mostly 0.3-0.45. UTKFace holds LFW people (Tom Hanks, Jackie Chan, Hillary Clinton, ...
found at 0.59-0.88), so the run drops everything at >= 0.5 (1,002 of 18,992 faces).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from distill.data.faces import FaceSet
from distill.data.phash import nearest
from edge.errors import ConfigError


@dataclass(frozen=True)
class Exclusion:
    """Rows of a face set kept after dropping copies of reference faces.

    Attributes:
        keep: bool (N,) rows kept.
        duplicates: one dict per dropped row: its key, the reference key, why, the distance.
        counts: how many rows each check dropped (a row both flag counts for pHash).
    """

    keep: np.ndarray
    duplicates: list[dict]
    counts: dict[str, int]


def max_cosine(query: np.ndarray, reference: np.ndarray,
               chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each L2-normalised query row, the largest cosine to a reference row and its index."""
    best = np.empty(len(query), np.float32)
    index = np.empty(len(query), np.int64)
    ref = np.ascontiguousarray(reference, np.float32)
    for start in range(0, len(query), chunk):
        sims = np.asarray(query[start:start + chunk], np.float32) @ ref.T
        index[start:start + chunk] = sims.argmax(axis=1)
        best[start:start + chunk] = sims.max(axis=1)
    return best, index


def exclude_near_duplicates(faces: FaceSet, reference: FaceSet, phash_bits: int | None,
                            templates: np.ndarray | None = None,
                            reference_templates: np.ndarray | None = None,
                            cosine: float | None = None) -> Exclusion:
    """Drop faces that copy a reference face (see the module docstring).

    Args:
        faces: the training set.
        reference: the set to keep clean (LFW).
        phash_bits: pHash Hamming distance (of 64) at or below which a face is a copy (None: off).
        templates, reference_templates: teacher templates ``(N, D)`` of both sets (unflipped).
        cosine: teacher cosine at or above which a face is a copy (None: off).

    Returns:
        The exclusion; also written to ``faces.folder/exclude-<reference>-<settings>.json``.

    Raises:
        ConfigError: a threshold out of range, or ``cosine`` without templates.
    """
    keep = np.ones(len(faces), bool)
    duplicates: list[dict] = []
    counts = {"phash": 0, "teacher_cosine": 0}
    record: dict = {"reference": reference.key, "faces": len(faces), "phash_bits": phash_bits,
                    "cosine": cosine}
    if phash_bits is not None:
        if not 0 <= phash_bits <= 64:
            raise ConfigError(f"pHash threshold must be in 0..64 bits, got {phash_bits}")
        dist, index = nearest(faces.hashes, reference.hashes)
        record["phash_nearest_histogram"] = np.bincount(dist, minlength=65).tolist()
        _flag(keep, duplicates, counts, "phash", dist <= phash_bits, dist, index, faces, reference)
    if cosine is not None:
        if templates is None or reference_templates is None or not -1.0 <= cosine <= 1.0:
            raise ConfigError(f"the teacher-cosine check needs both sets' templates and a cosine "
                              f"in [-1, 1], got {cosine}")
        best, index = max_cosine(templates, reference_templates)
        record["cosine_nearest_histogram"] = np.histogram(best, bins=20, range=(0.0, 1.0))[0].tolist()
        _flag(keep, duplicates, counts, "teacher_cosine", best >= cosine, best, index, faces, reference)
    record.update(dropped=int((~keep).sum()), counts=counts, duplicates=duplicates)
    target = faces.folder / f"exclude-{reference.key}-p{phash_bits}-c{cosine}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target)
    return Exclusion(keep, duplicates, counts)


def _flag(keep, duplicates, counts, why, hit, distance, index, faces, reference) -> None:
    new = hit & keep
    counts[why] = int(new.sum())
    for i in np.flatnonzero(new):
        duplicates.append({"key": faces.keys[i], "reference": reference.keys[index[i]],
                           "check": why, "value": round(float(distance[i]), 4)})
    keep &= ~hit
