"""Perceptual hash (DCT pHash) of aligned face crops, for dropping test-set near-duplicates.

The classic pHash (Zauner 2010; the ``imagehash`` package): grey image -> 32x32 (area
average) -> 2-D DCT -> the 8x8 lowest frequencies -> one bit each, set where the coefficient
exceeds their median. Two pictures of the same image (re-encoded, re-scaled, recoloured) land
a few bits apart; unrelated photos land about 32 apart. Aligned faces are not unrelated
photos, though: see ``DEFAULT_THRESHOLD``.

Faces are hashed *after* alignment, over the central part of the 112x112 crop: two copies of
one photo cropped differently (UTKFace's 200x200 chips vs LFW's 250x250 frames) then show the
same pixels, and black fill where a crop reaches past its photo's border does not count.
"""

from __future__ import annotations

import cv2
import numpy as np

HASH_SIZE = 8  # 8x8 frequencies -> 64 bits, one uint64 per image
DCT_SIZE = 32
# The face proper inside an ArcFace 112x112 crop (eyes at y~52, mouth at y~92): rows 24..104,
# columns 16..96. Borders, where alignment fills with black, stay out of the hash.
CENTRE = (slice(24, 104), slice(16, 96))
# Largest Hamming distance (of 64 bits) still called a copy. Aligned faces share most of their
# low frequencies, so unrelated faces come close: of 18,992 UTKFace crops, the nearest of the
# 13,233 LFW crops is <= 4 bits away for 17, <= 6 for 275, <= 8 for 2,173 (all checked by eye
# at 4: different people). 2 bits only flags pixel-level copies; re-aligned copies of the same
# photo need the teacher-cosine check in distill.data.dedup.
DEFAULT_THRESHOLD = 2


def phash(crops: np.ndarray) -> np.ndarray:
    """Return the 64-bit pHash of each aligned crop.

    Args:
        crops: uint8 (N, 112, 112, 3) BGR or (N, 112, 112) grey aligned faces (one crop
            without the batch axis is accepted too).

    Returns:
        uint64 (N,) hashes.
    """
    crops = np.asarray(crops)
    if crops.ndim == 2 or (crops.ndim == 3 and crops.shape[-1] == 3):
        crops = crops[None]
    out = np.empty(len(crops), np.uint64)
    weights = 1 << np.arange(HASH_SIZE * HASH_SIZE, dtype=np.uint64)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        small = cv2.resize(grey[CENTRE], (DCT_SIZE, DCT_SIZE), interpolation=cv2.INTER_AREA)
        low = cv2.dct(small.astype(np.float32))[:HASH_SIZE, :HASH_SIZE].ravel()
        bits = (low > np.median(low)).astype(np.uint64)
        out[i] = np.sum(bits * weights, dtype=np.uint64)
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances between two hash arrays: uint8 (len(a), len(b))."""
    a = np.asarray(a, np.uint64)[:, None]
    b = np.asarray(b, np.uint64)[None, :]
    return np.bitwise_count(a ^ b).astype(np.uint8)


def nearest(query: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the closest reference hash.

    Args:
        query: uint64 (N,) hashes.
        reference: uint64 (M,) hashes, M >= 1.
        chunk: query rows per block (bounds memory at chunk x M bytes).

    Returns:
        ``(distance, index)``: uint8 (N,) smallest Hamming distance and int64 (N,) its
        reference index.
    """
    query = np.asarray(query, np.uint64)
    reference = np.asarray(reference, np.uint64)
    if len(reference) == 0:
        raise ValueError("nearest() needs at least one reference hash")
    dist = np.empty(len(query), np.uint8)
    index = np.empty(len(query), np.int64)
    for start in range(0, len(query), chunk):
        block = hamming(query[start:start + chunk], reference)
        index[start:start + chunk] = block.argmin(axis=1)
        dist[start:start + chunk] = block.min(axis=1)
    return dist, index
