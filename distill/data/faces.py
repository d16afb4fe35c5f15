"""Prepared face sets: every image detected (YuNet), aligned to 112x112 and cached once.

A face set lives in one cache folder::

    crops.npy       uint8 (N, 112, 112, 3) BGR aligned crops (memory-mapped when read)
    landmarks.npy   float32 (N, 5, 2) the detector's five points in crop pixels
    phash.npy       uint64 (N,) perceptual hashes of the crops (distill.data.phash)
    manifest.json   keys, the images without a face, the settings, a content key

``crops.npy`` may hold zero rows past N (allocated before detection knew how many faces it
would find); ``FaceSet.load`` cuts them off.

The folder's name holds the source's fingerprint and the settings, so a changed source or
setting prepares a new set instead of silently reusing an old one. Files are written under
temporary names and renamed when complete: an interrupted preparation leaves nothing reusable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.data.phash import phash
from distill.data.sources import ImageSet, identity_of
from edge.errors import DatasetError

log = logging.getLogger(__name__)

CROP = 112
DETECT_CANVAS = (256, 256)  # UTKFace chips are 200x200, LFW 250x250: never scaled up or down
VERSION = 1


@dataclass(frozen=True, eq=False)
class FaceSet:
    """A prepared, aligned face set (see the module docstring).

    Attributes:
        folder: the cache folder.
        crops: uint8 (N, 112, 112, 3) memory-mapped crops.
        landmarks: float32 (N, 5, 2) crop-space landmarks.
        hashes: uint64 (N,) pHashes.
        keys: image keys, row order.
        key: content key (source fingerprint + settings), for dependent caches.
        manifest: the manifest dict.
    """

    folder: Path
    crops: np.ndarray
    landmarks: np.ndarray
    hashes: np.ndarray
    keys: list[str]
    key: str
    manifest: dict

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FaceSet:
        """Open a prepared set (crops memory-mapped, read-only).

        Raises:
            DatasetError: the folder is not a complete prepared set.
        """
        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise DatasetError(f"{folder} is not a prepared face set (no manifest.json): run "
                               "`main.py distill --prepare-only` or prepare_faces()")
        manifest = json.loads(manifest_path.read_text())
        count = len(manifest["keys"])
        return cls(folder=folder, crops=np.load(folder / "crops.npy", mmap_mode="r")[:count],
                   landmarks=np.load(folder / "landmarks.npy"), hashes=np.load(folder / "phash.npy"),
                   keys=list(manifest["keys"]), key=manifest["key"], manifest=manifest)

    def identities(self) -> list[str]:
        """Identity of each row (LFW layout: the parent folder)."""
        return [identity_of(k) for k in self.keys]


def prepare_faces(images: str | os.PathLike, cache: str | os.PathLike,
                  limit: int | None = None, progress: bool = True) -> FaceSet:
    """Detect, align, hash and cache an image set (or reuse the cached result).

    Images where YuNet finds no face are dropped (listed in the manifest); of several faces
    the largest is kept.

    Args:
        images: a folder or tar/tgz of photos (LFW layout or flat).
        cache: parent folder of prepared sets (e.g. ``edge.paths.cache_dir("distill/faces")``).
        limit: keep only the first ``limit`` images in storage order (tests, quick runs).
        progress: show tqdm bars.

    Returns:
        The prepared set.

    Raises:
        DatasetError: the image set is missing, or no face was found in any image.
    """
    source = ImageSet(images)
    settings = {"version": VERSION, "crop": CROP, "canvas": list(DETECT_CANVAS), "limit": limit}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    fingerprint = source.fingerprint()
    folder = Path(cache) / f"{source.path.name.split('.')[0]}-{fingerprint}-{tag}"
    if (folder / "manifest.json").is_file():
        return FaceSet.load(folder)
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    keys, dropped = _detect_all(source, work, limit, progress)
    if not keys:
        shutil.rmtree(work)
        raise DatasetError(f"no face found in any image of {source.path}")
    crops = np.load(work / "crops.npy", mmap_mode="r")[: len(keys)]
    np.save(work / "phash.npy", phash_rows(crops, progress))
    manifest = {"source": str(source.path), "fingerprint": fingerprint, **settings,
                "images": len(keys) + len(dropped), "faces": len(keys), "no_face": dropped,
                "keys": keys, "key": folder.name}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    os.replace(work, folder)
    log.info("prepared %s: %d images, %d without a face dropped, %d faces in %s",
             source.path.name, manifest["images"], len(dropped), len(keys), folder)
    return FaceSet.load(folder)


def _detect_all(source: ImageSet, work: Path, limit: int | None,
                progress: bool) -> tuple[list[str], list[str]]:
    """Detect and align every image into ``work/crops.npy`` and ``work/landmarks.npy``.

    ``crops.npy`` is allocated for every image; rows past the number of faces found stay zero
    and are cut off when the set is loaded (no 700 MB copy to shrink it)."""
    from tqdm import tqdm

    from edge.align import align, alignment_matrix, transform_points
    from edge.detect import create_detector
    from edge.image import read_image

    total = source.count() if limit is None else min(limit, source.count())
    crops = np.lib.format.open_memmap(work / "crops.npy", "w+", np.uint8, (total, CROP, CROP, 3))
    marks = np.zeros((total, 5, 2), np.float32)
    detector = create_detector("yunet", input_size=DETECT_CANVAS, order="size")
    keys, dropped = [], []
    bar = tqdm(total=total, desc=f"detect+align {source.path.name}", disable=not progress,
               unit="img", dynamic_ncols=True)
    for key, data in source:
        if len(keys) + len(dropped) >= total:
            break
        bar.update(1)
        image = read_image(data)
        faces = detector.detect(image)
        if not faces:
            dropped.append(key)
            continue
        points = faces[0].landmarks
        crops[len(keys)] = align(image, points, (CROP, CROP))
        marks[len(keys)] = transform_points(alignment_matrix(points, (CROP, CROP)), points)
        keys.append(key)
    bar.close()
    crops.flush()
    np.save(work / "landmarks.npy", marks[: len(keys)])
    return keys, dropped


def phash_rows(crops: np.ndarray, progress: bool = True, chunk: int = 512) -> np.ndarray:
    """pHash every row of a (possibly memory-mapped) crop array, chunk by chunk."""
    from tqdm import tqdm

    out = np.empty(len(crops), np.uint64)
    for start in tqdm(range(0, len(crops), chunk), desc="phash", disable=not progress, unit="chunk"):
        out[start:start + chunk] = phash(np.asarray(crops[start:start + chunk]))
    return out
