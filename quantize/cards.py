"""Model cards for exported students: input convention, provenance, checksum, FAR thresholds.

Thresholds are calibrated on the calibration split with the exported model itself (its INT8
scores, not the FP32 model's): for each target FAR the strictest threshold over the U-U, U-M
and M-M impostor sets (every cross-identity pair), as ``benchmarks.calibrate`` does on the
evaluation pack. The evaluation pack is never used here, so the thresholds stay honest.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from edge import metrics
from edge.card import ModelCard, Threshold, companion_hashes, sha256_file
from quantize.calibration import CalibrationSet
from quantize.context import ExportContext
from quantize.formats import Format

FARS = (1e-2, 1e-3, 1e-4)
TOOLS = {"onnx": ("torch", "onnx", "onnxruntime"), "openvino": ("torch", "openvino", "nncf"),
         "tflite": ("torch", "torchao", "litert-torch", "ai-edge-litert")}


def build_card(ctx: ExportContext, fmt: Format, tag: str, path: Path, seconds: float,
               route: str) -> ModelCard:
    """The card for a freshly exported file (no thresholds yet; ``with_thresholds`` adds them)."""
    student = ctx.student
    spec = dataclasses.replace(student.input, layout=fmt.layout, batch=fmt.batch)
    provenance = {
        "source": f"{student.arch} student {student.name}",
        "checkpoint": str(student.checkpoint) if student.checkpoint else "(in memory)",
        "checkpoint_sha256": student.checkpoint_sha256 or "",
        "export": f"{tag} via quantize.exporters.{fmt.name}: {route}",
        "calibration": f"{ctx.calibration.name} (key {ctx.calibration.key})",
        "tools": _versions(TOOLS[fmt.name]),
        "export_seconds": f"{seconds:.1f}",
    }
    if ctx.keep_float and tag != "fp32":
        provenance["keep_float"] = ",".join(ctx.keep_float)
    return ModelCard(
        name=f"{student.name}-{fmt.name}-{tag}", architecture=f"{student.arch}, {student.embedding_size}-d",
        file=path.name, sha256=sha256_file(path), companions=companion_hashes(path), format=fmt.name,
        precision="int8" if tag.startswith("int8") else "fp32",
        embedding_size=student.embedding_size, input=spec, provenance=provenance,
        licence=student.licence)


def calibrate_thresholds(embed: Callable[[np.ndarray], np.ndarray], calib: CalibrationSet,
                         fars=FARS) -> tuple[Threshold, ...]:
    """Thresholds at each FAR from the calibration split's impostor scores, embedded by ``embed``.

    Per FAR the strictest of U-U, U-M and M-M; ``tar`` is measured on the split's same-person
    pairs of *different* photos (None when the source has no identities).
    """
    emb = {"U": _embed_all(embed, calib.unmasked), "M": _embed_all(embed, calib.masked)}
    best: dict[float, tuple[float, float | None, str]] = {}
    for name in ("U-U", "U-M", "M-M"):
        a, b = emb[name[0]], emb[name[2]]
        same_set = name[0] == name[2]
        impostor = (metrics.impostor_scores_all_vs_all(a, calib.ids) if same_set
                    else metrics.impostor_scores_all_vs_all(a, calib.ids, b, calib.ids))
        genuine = _genuine(a, b, calib.ids, same_set)
        if genuine.size:
            points = {f: (p.threshold, p.tar) for f, p in metrics.tar_at_far(genuine, impostor, fars).items()}
        else:
            points = {f: (metrics.threshold_at_far(impostor, f), None) for f in fars}
        for far, (threshold, tar) in points.items():
            if far not in best or threshold > best[far][0]:
                best[far] = (threshold, tar, name)
    data = (f"{calib.name}; strictest of U-U/U-M/M-M all-vs-all impostors "
            f"({_impostor_count(calib.ids):,} per set)")
    return tuple(Threshold(far=f, cosine=round(min(t, 1.0), 6), data=f"{data}, {name} decides",
                           tar=None if tar is None else round(tar, 6))
                 for f, (t, tar, name) in sorted(best.items(), reverse=True))


def with_thresholds(card: ModelCard, thresholds: tuple[Threshold, ...], accuracy: dict) -> ModelCard:
    """A copy of ``card`` with calibrated thresholds and an accuracy block."""
    return dataclasses.replace(card, thresholds=thresholds, accuracy={**card.accuracy, **accuracy})


def _embed_all(embed, faces: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([embed(faces[i:i + batch]) for i in range(0, len(faces), batch)])


def _genuine(a: np.ndarray, b: np.ndarray, ids: np.ndarray, same_set: bool) -> np.ndarray:
    same = ids[:, None] == ids[None, :]
    np.fill_diagonal(same, False)  # the same photo (masked or not) is no genuine pair
    if same_set:
        same = np.triu(same)
    i, j = np.nonzero(same)
    return np.sum(a[i] * b[j], axis=1)


def _impostor_count(ids: np.ndarray) -> int:
    _, counts = np.unique(ids, return_counts=True)
    return int((len(ids) ** 2 - np.sum(counts ** 2)) // 2)


def _versions(packages: tuple[str, ...]) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found + [f"python {platform.python_version()}"])
