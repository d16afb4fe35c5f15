"""Synthetic face masks (MaskTheFace templates), torch-free, shared by training and evaluation.

Typical use::

    from edge.masks import render
    masked, info = render(image_bgr, landmarks5, seed)   # info.template, info.alpha, ...

Templates come from ``<data root>/masks/masktheface``; add your own with
``MaskRenderer(MaskLibrary(extra_folders=[my_folder]))`` (a folder with a masks.cfg and PNGs).
"""

from edge.masks.landmarks import (FaceShape, LandmarkError, choose_view, estimate_yaw,
                                  five_points, mask_targets, targets_from_dlib68,
                                  targets_from_five, targets_from_mesh468)
from edge.masks.library import MaskLibrary, MaskTemplate, MaskTemplateError
from edge.masks.render import MaskInfo, MaskRenderer, RenderConfig, default_renderer, render
from edge.masks.sheet import contact_sheet

__all__ = [
    "FaceShape", "LandmarkError", "MaskInfo", "MaskLibrary", "MaskRenderer", "MaskTemplate",
    "MaskTemplateError", "RenderConfig", "choose_view", "contact_sheet", "default_renderer",
    "estimate_yaw", "five_points", "mask_targets", "render", "targets_from_dlib68",
    "targets_from_five", "targets_from_mesh468",
]
