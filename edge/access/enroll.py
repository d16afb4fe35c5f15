"""Enrollment: one photo becomes several templates, unmasked plus synthetic-masked.

A person enrolled from an unmasked photo is later seen at the door with a mask; adding
templates of the same face with rendered masks lets the max-over-templates rule compare a
masked probe with a masked template. Real MaskTheFace templates are used when the data
root has them; otherwise the built-in procedural mask (logged), so enrollment also works on
a device that only has the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from edge.align import align, alignment_matrix, transform_points
from edge.detect import FaceDetector
from edge.errors import DataRootError, NoFaceError
from edge.runtimes import Runtime

log = logging.getLogger(__name__)
MaskFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, str]]


def mask_function() -> MaskFn:
    """A renderer ``(crop, landmarks, rng) -> (masked crop, kind)``: templates, else procedural."""
    from edge.masks import MaskRenderer

    try:
        renderer = MaskRenderer()
    except DataRootError:
        from edge.masks.procedural import COLOURS, draw_mask

        log.info("no mask templates under a data root: enrolling with the built-in procedural mask")

        def procedural(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator):
            index = int(rng.integers(len(COLOURS)))
            return draw_mask(crop, points, COLOURS[index])[0], f"masked:procedural-{index}"

        return procedural

    def render(crop: np.ndarray, points: np.ndarray, rng: np.random.Generator):
        masked, info = renderer.render(crop, points, rng)
        return masked, f"masked:{info.template}"

    return render


def largest_face(image: np.ndarray, detector: FaceDetector, name: str):
    """The largest face of a photo; NoFaceError naming the photo when there is none."""
    faces = detector.detect(image)
    if not faces:
        raise NoFaceError(f"no face found in {name}: enroll with a clear, frontal photo")
    return max(faces, key=lambda f: f.area)


def enrollment_templates(image: np.ndarray, model: Runtime, detector: FaceDetector,
                         masked: int = 2, seed: int = 0, name: str = "photo",
                         mask_fn: MaskFn | None = None) -> tuple[np.ndarray, list[str]]:
    """Embeddings and kinds for one enrollment photo: the face, plus ``masked`` masked versions.

    Raises:
        NoFaceError: no face in the photo.
    """
    face = largest_face(image, detector, name)
    size = tuple(model.card.input.size)
    crop = align(image, face.landmarks, size)
    crops, kinds = [crop], ["photo"]
    if masked:
        points = transform_points(alignment_matrix(face.landmarks, size), face.landmarks)
        render = mask_fn or mask_function()
        rng = np.random.default_rng(seed)
        for _ in range(masked):
            masked_crop, kind = render(crop, points, rng)
            crops.append(masked_crop)
            kinds.append(kind)
    return model.embed(np.stack(crops)), kinds
