"""Mask templates: RGBA pictures of masks plus six anchor points each, read from ``masks.cfg``.

The format is MaskTheFace's (``masks/masks.cfg`` there), so its 21 templates load unchanged and a
user adds a style with one PNG and one cfg section, no code::

    [bandana]            ; a "_left" / "_right" suffix marks a turned-face view
    template: templates/bandana.png
    mask_a: 21, 97       ; upper corner on the image-left cheek, at the nose-bridge line
    mask_b: 307, 22      ; top centre, on the nose bridge
    mask_c: 600, 99      ; upper corner on the image-right cheek
    mask_d: 25, 322      ; lower corner, image-left jaw
    mask_e: 295, 470     ; chin
    mask_f: 600, 323     ; lower corner, image-right jaw
    tint: yes            ; optional: may the renderer recolour it (default: surgical*/cloth)

Anchors are template pixels and may lie outside the picture (MaskTheFace's turned views do that).
"""

from __future__ import annotations

import configparser
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.errors import MaskEdgeError
from edge.paths import data_root

logger = logging.getLogger(__name__)

ANCHOR_KEYS = ("mask_a", "mask_b", "mask_c", "mask_d", "mask_e", "mask_f")
VIEWS = ("front", "left", "right")
CFG_NAME = "masks.cfg"
DEFAULT_SUBDIR = "masks/masktheface"
# MaskTheFace's cfg lists these picture-less pseudo styles (its "empty" and "inpaint" modes);
# an empty section with one of these names is skipped, any other empty section is an error.
PSEUDO_STYLES = frozenset({"empty", "inpaint"})
# Styles whose fabric may be recoloured when the cfg says nothing: MaskTheFace tints the same ones.
TINTABLE_PREFIXES = ("surgical", "cloth")
_OPTIONAL_KEYS = ("tint",)
_BOOL = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


class MaskTemplateError(MaskEdgeError):
    """A mask template folder, cfg section or template picture is invalid."""


@dataclass(frozen=True, eq=False)
class MaskTemplate:
    """One template: an RGBA picture and the six anchors that pin it to a face.

    Attributes:
        name: cfg section name, e.g. ``surgical_blue_left``.
        style: name without the view suffix, e.g. ``surgical_blue``.
        view: ``front``, ``left`` (face turned toward image-left) or ``right``.
        image: (H, W, 4) uint8 BGRA picture.
        anchors: (6, 2) float32 points a..f in template pixels.
        tint: whether the renderer may recolour the fabric.
        path: the PNG file.
    """

    name: str
    style: str
    view: str
    image: np.ndarray = field(repr=False)
    anchors: np.ndarray = field(repr=False)
    tint: bool
    path: Path

    def mirrored(self) -> "MaskTemplate":
        """Return this template flipped left-right, anchors relabelled (a<->c, d<->f).

        Used to derive a missing ``left`` view from a ``right`` one and vice versa.
        """
        width = self.image.shape[1]
        flipped = self.anchors.copy()
        flipped[:, 0] = (width - 1) - flipped[:, 0]
        # After a flip the image-left corner is the old image-right one.
        flipped = flipped[[2, 1, 0, 5, 4, 3]]
        view = {"left": "right", "right": "left"}.get(self.view, self.view)
        return MaskTemplate(
            name=f"{self.name}(mirrored)", style=self.style, view=view,
            image=np.ascontiguousarray(self.image[:, ::-1]), anchors=flipped,
            tint=self.tint, path=self.path,
        )


def split_view(name: str) -> tuple[str, str]:
    """Split a template name into (style, view) from its ``_left`` / ``_right`` suffix.

    Args:
        name: cfg section name.

    Returns:
        ``(style, view)``; a name without a suffix is the ``front`` view.
    """
    for view in ("left", "right"):
        suffix = f"_{view}"
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], view
    return name, "front"


def _parse_point(text: str, where: str) -> np.ndarray:
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError(text)
        point = np.array([float(parts[0]), float(parts[1])], dtype=np.float32)
    except ValueError:
        raise MaskTemplateError(f"{where}: expected 'x, y' in template pixels, got {text!r}") from None
    if not np.all(np.isfinite(point)):
        raise MaskTemplateError(f"{where}: anchor {text!r} is not a finite number pair")
    return point


def _resolve_png(folder: Path, rel: str) -> list[Path]:
    """Candidate files for a cfg ``template:`` value, most specific first.

    MaskTheFace writes paths relative to its repository root (``masks/templates/x.png``) while the
    cfg lives in ``masks/``; so besides ``folder/rel`` we try ``rel`` with that leading ``masks/``
    removed, which is the same file in an unrenamed MaskTheFace checkout.
    """
    path = Path(rel).expanduser()
    if path.is_absolute():
        return [path]
    candidates = [folder / path]
    if path.parts and path.parts[0] == "masks" and len(path.parts) > 1:
        candidates.append(folder.joinpath(*path.parts[1:]))
    return candidates


def _read_rgba(name: str, png: Path) -> np.ndarray:
    image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MaskTemplateError(f"[{name}] {png} is not a readable image: re-export it as RGBA PNG")
    if image.ndim != 3 or image.shape[2] != 4:
        raise MaskTemplateError(
            f"[{name}] {png} has no alpha channel (shape {image.shape}): the renderer needs the "
            "transparent background; re-export the picture as an RGBA PNG"
        )
    if image.dtype != np.uint8:
        # 16-bit PNGs are legal; scale them so every template has the same range.
        image = (image.astype(np.float32) / np.iinfo(image.dtype).max * 255.0 + 0.5).astype(np.uint8)
    if not np.any(image[..., 3] > 127):
        raise MaskTemplateError(f"[{name}] {png} is fully transparent: the alpha channel is empty")
    return image


def _check_anchors(name: str, anchors: np.ndarray) -> None:
    # The quad a, c, f, d must enclose an area or no homography can map it onto a face.
    quad = anchors[[0, 2, 5, 3]]
    d1, d2 = quad[2] - quad[0], quad[3] - quad[1]
    area = 0.5 * abs(float(d1[0] * d2[1] - d1[1] * d2[0]))
    if area < 1.0:
        raise MaskTemplateError(
            f"[{name}] anchors a, c, f, d enclose no area: a/c are the upper corners, d/f the "
            "lower ones; check their coordinates"
        )


def parse_section(name: str, section: configparser.SectionProxy, folder: Path) -> MaskTemplate:
    """Build one validated template from a cfg section.

    Args:
        name: the section name.
        section: its keys.
        folder: the folder holding the cfg (relative template paths start here).

    Returns:
        The loaded template.

    Raises:
        MaskTemplateError: a key is missing or unknown, an anchor is malformed, the PNG is missing,
            unreadable or lacks alpha.
    """
    where = f"[{name}] in {folder / CFG_NAME}"
    unknown = sorted(set(section) - set(ANCHOR_KEYS) - {"template"} - set(_OPTIONAL_KEYS))
    if unknown:
        raise MaskTemplateError(
            f"{where}: unknown key(s) {unknown}; valid keys are template, "
            f"{', '.join(ANCHOR_KEYS)}, {', '.join(_OPTIONAL_KEYS)}"
        )
    if "template" not in section:
        raise MaskTemplateError(f"{where}: no 'template:' key; add 'template: templates/{name}.png'")
    missing = [key for key in ANCHOR_KEYS if key not in section]
    if missing:
        raise MaskTemplateError(
            f"{where}: missing anchor(s) {', '.join(missing)}; add lines like 'mask_a: x, y' "
            "(template pixels: a/c upper corners at the nose-bridge line, b top centre, "
            "d/f lower corners, e chin)"
        )
    anchors = np.stack([_parse_point(section[key], f"{where} {key}") for key in ANCHOR_KEYS])
    _check_anchors(name, anchors)
    candidates = _resolve_png(folder, section["template"])
    png = next((c for c in candidates if c.is_file()), None)
    if png is None:
        tried = ", ".join(str(c) for c in candidates)
        raise MaskTemplateError(
            f"{where}: template picture not found (tried {tried}); put the RGBA PNG there or fix "
            "the 'template:' path (relative to the folder holding masks.cfg)"
        )
    style, view = split_view(name)
    tint_text = section.get("tint")
    if tint_text is None:
        tint = style.startswith(TINTABLE_PREFIXES)
    elif tint_text.strip().lower() in _BOOL:
        tint = _BOOL[tint_text.strip().lower()]
    else:
        raise MaskTemplateError(f"{where}: tint must be yes or no, got {tint_text!r}")
    return MaskTemplate(name=name, style=style, view=view, image=_read_rgba(name, png),
                        anchors=anchors, tint=tint, path=png)


def read_folder(folder: str | os.PathLike) -> list[MaskTemplate]:
    """Read every template section of ``folder/masks.cfg``.

    Args:
        folder: a folder holding ``masks.cfg`` and the PNGs it names.

    Returns:
        The templates in cfg order.

    Raises:
        MaskTemplateError: the folder or cfg is missing or malformed, or any section is invalid
            (all problems are listed in one message).
    """
    folder = Path(folder).expanduser()
    cfg_path = folder / CFG_NAME
    if not cfg_path.is_file():
        raise MaskTemplateError(
            f"no {CFG_NAME} in {folder}: a mask folder holds masks.cfg plus the PNGs it names"
        )
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    try:
        parser.read(cfg_path, encoding="utf-8")
    except configparser.Error as exc:
        raise MaskTemplateError(f"{cfg_path} is malformed: {exc}") from None
    templates, problems = [], []
    for name in parser.sections():
        section = parser[name]
        if not section and split_view(name)[0] in PSEUDO_STYLES:
            logger.debug("skipping MaskTheFace pseudo style [%s] (no picture)", name)
            continue
        try:
            templates.append(parse_section(name, section, folder))
        except MaskTemplateError as exc:
            problems.append(str(exc))
    if problems:
        raise MaskTemplateError(f"{len(problems)} bad template(s) in {cfg_path}:\n" + "\n".join(problems))
    if not templates:
        raise MaskTemplateError(f"{cfg_path} defines no templates: add a [name] section per PNG")
    logger.debug("read %d mask templates from %s", len(templates), folder)
    return templates


def default_folder() -> Path:
    """Return ``<data root>/masks/masktheface``.

    Raises:
        DataRootError: the data root is not set.
    """
    return data_root() / DEFAULT_SUBDIR


class MaskLibrary:
    """All usable templates, grouped by style and view.

    Args:
        folder: the main template folder; default ``<data root>/masks/masktheface``.
        extra_folders: user folders (each with its own ``masks.cfg``) merged in after it.

    Raises:
        MaskTemplateError: a folder or template is invalid, or two folders define the same name.
        DataRootError: ``folder`` is omitted and no data root is set.
    """

    def __init__(self, folder: str | os.PathLike | None = None,
                 extra_folders: tuple[str | os.PathLike, ...] | list = ()) -> None:
        folders = [Path(folder) if folder is not None else default_folder()]
        folders += [Path(f) for f in extra_folders]
        self._templates: dict[str, MaskTemplate] = {}
        for path in folders:
            for template in read_folder(path):
                if template.name in self._templates:
                    first = self._templates[template.name].path.parent
                    raise MaskTemplateError(
                        f"template [{template.name}] is defined in {first} and again in {path}: "
                        "rename the section in your folder (names must be unique)"
                    )
                self._templates[template.name] = template
        self._styles: dict[str, dict[str, MaskTemplate]] = {}
        for template in self._templates.values():
            self._styles.setdefault(template.style, {})[template.view] = template
        self.folders = tuple(folders)

    def __len__(self) -> int:
        return len(self._templates)

    def __contains__(self, name: str) -> bool:
        return name in self._templates

    @property
    def names(self) -> list[str]:
        """Sorted template names."""
        return sorted(self._templates)

    @property
    def styles(self) -> list[str]:
        """Sorted style names (template names without the view suffix)."""
        return sorted(self._styles)

    def views(self, style: str) -> list[str]:
        """Views the folders provide for ``style`` (front / left / right, in that order)."""
        return [v for v in VIEWS if v in self._group(style)]

    def template(self, name: str) -> MaskTemplate:
        """Return the template called ``name``.

        Raises:
            MaskTemplateError: no such template; the message lists the known names.
        """
        if name not in self._templates:
            raise MaskTemplateError(f"unknown mask template {name!r}; known: {', '.join(self.names)}")
        return self._templates[name]

    def get(self, style: str, view: str) -> MaskTemplate:
        """Return the template for ``style`` seen from ``view``.

        A missing side view is derived by mirroring the other side; a style with no side view at
        all uses its front view. The returned template's ``view`` and ``name`` say what was used.

        Args:
            style: a style name from :attr:`styles`.
            view: ``front``, ``left`` or ``right``.

        Returns:
            The template to render.

        Raises:
            MaskTemplateError: unknown style or view.
        """
        if view not in VIEWS:
            raise MaskTemplateError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
        group = self._group(style)
        if view in group:
            return group[view]
        other = {"left": "right", "right": "left"}.get(view)
        if other in group:
            logger.debug("style %s has no %s view: mirroring its %s view", style, view, other)
            return group[other].mirrored()
        if "front" in group:
            logger.debug("style %s has no %s view: using its front view", style, view)
            return group["front"]
        # Only one side exists and a front view was asked for: the side view is the closest.
        return next(iter(group.values()))

    def _group(self, style: str) -> dict[str, MaskTemplate]:
        if style not in self._styles:
            raise MaskTemplateError(f"unknown mask style {style!r}; known: {', '.join(self.styles)}")
        return self._styles[style]
