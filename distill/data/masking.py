"""A mask-template library pre-scaled for 112x112 crops, so rendering stays cheap per sample.

``edge.masks`` shrinks a template (600-1000 pixels wide) to about twice its on-screen size on
every call before warping it; for a 112x112 crop that resize is half the rendering time. Here
each template is shrunk once, to what the renderer would shrink it to on a crop, and written
with its rescaled anchors to a cached folder that ``edge.masks.MaskLibrary`` reads like any
template folder. Pixels come out the same up to the interpolation of one resize.
"""

from __future__ import annotations

import configparser
import functools
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from edge.align import template as crop_template
from edge.masks import MaskLibrary, MaskRenderer, mask_targets
from edge.paths import cache_dir

log = logging.getLogger(__name__)

SCREEN_FACTOR = 2.0  # templates kept at twice their on-crop size, like edge.masks' own resize
VERSION = 1


def _span(six: np.ndarray) -> float:
    """Width a-c plus height b-e of six anchor points (edge.masks' measure of size)."""
    return float(np.hypot(*(six[2] - six[0])) + np.hypot(*(six[4] - six[1])))


def scaled_library_folder(size: int = 112, source: MaskLibrary | None = None) -> Path:
    """Write (once) the pre-scaled template folder for ``size`` crops and return it.

    Args:
        size: crop side the masks will be drawn on.
        source: the library to scale; default the data root's MaskTheFace templates.
    """
    source = source if source is not None else MaskLibrary()
    folder = cache_dir(f"distill/masks-{size}-v{VERSION}")
    if (folder / "masks.cfg").is_file():
        return folder
    screen = _span(mask_targets(crop_template((size, size))))
    cfg = configparser.ConfigParser(interpolation=None)
    for name in source.names:
        tpl = source.template(name)
        factor = min(1.0, SCREEN_FACTOR * screen / max(_span(tpl.anchors), 1e-6))
        width = max(2, round(tpl.image.shape[1] * factor))
        height = max(2, round(tpl.image.shape[0] * factor))
        small = cv2.resize(tpl.image, (width, height), interpolation=cv2.INTER_AREA)
        scale = np.array([width / tpl.image.shape[1], height / tpl.image.shape[0]], np.float32)
        anchors = (tpl.anchors + 0.5) * scale - 0.5  # pixel centres scale, not corners
        # Unique temporary names, then atomic renames: DDP ranks may build this folder at once.
        png = folder / f"{name}.{os.getpid()}.tmp.png"
        cv2.imwrite(str(png), small)
        png.replace(folder / f"{name}.png")
        cfg[name] = {"template": f"{name}.png", "tint": "yes" if tpl.tint else "no",
                     **{f"mask_{c}": f"{x:.3f}, {y:.3f}" for c, (x, y) in zip("abcdef", anchors)}}
    tmp = folder / f"masks.cfg.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        cfg.write(fh)
    tmp.replace(folder / "masks.cfg")
    log.info("wrote %d mask templates scaled for %dx%d crops to %s", len(source), size, size, folder)
    return folder


@functools.lru_cache(maxsize=4)
def crop_renderer(size: int = 112) -> MaskRenderer:
    """A renderer over the pre-scaled templates (built once per process)."""
    return MaskRenderer(MaskLibrary(scaled_library_folder(size)))
