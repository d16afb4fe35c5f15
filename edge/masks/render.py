"""Put a synthetic mask on a face, MaskTheFace's way, with numpy + OpenCV only.

A template's six anchors are mapped onto six target points derived from the face landmarks by a
least-squares homography; the RGBA picture is warped (premultiplied, so transparent pixels do not
leave dark fringes), recoloured, brightness-matched to the face and alpha-blended. Everything
random comes from one generator, so a seed gives identical pixels.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.errors import ConfigError, ImageError
from edge.masks import colour as col
from edge.masks.landmarks import FaceShape, choose_view, estimate_yaw, mask_targets
from edge.masks.library import VIEWS, MaskLibrary, MaskTemplate
from edge.masks.warp import warp_layer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderConfig:
    """Renderer settings.

    Attributes:
        yaw_threshold: |yaw cue| above which a side view is used (see ``choose_view``).
        tint_probability: chance that a tintable template (surgical, cloth) gets a random colour.
        reference_luma: face luma at which the mask keeps its own brightness; darker faces darken
            the mask proportionally so it does not glow on dim or grey pictures.
        gain_range: bounds of that brightness gain.
        brightness_jitter: extra random gain, uniform in ``1 +- brightness_jitter``.
        face_shape: proportions for placing the mask from five points.
        max_perspective: largest ratio of the homography's scale between two corners of the
            template's opaque box; beyond it the six points disagree with the template's own
            layout (a side view forced onto a frontal face, say) and a piecewise-affine map is
            used instead, since the homography would fold the picture through its horizon.
    """

    yaw_threshold: float = 0.12
    tint_probability: float = 0.5
    reference_luma: float = 150.0
    gain_range: tuple[float, float] = (0.35, 1.1)
    brightness_jitter: float = 0.1
    face_shape: FaceShape = field(default_factory=FaceShape)
    max_perspective: float = 2.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.tint_probability <= 1.0:
            raise ConfigError(f"tint_probability must be in [0, 1], got {self.tint_probability}")
        if self.yaw_threshold < 0:
            raise ConfigError(f"yaw_threshold must be >= 0, got {self.yaw_threshold}")
        if self.reference_luma <= 0:
            raise ConfigError(f"reference_luma must be > 0, got {self.reference_luma}")
        low, high = self.gain_range
        if not 0 < low <= high:
            raise ConfigError(f"gain_range must be (low, high) with 0 < low <= high, got {self.gain_range}")
        if not 0 <= self.brightness_jitter < 1:
            raise ConfigError(f"brightness_jitter must be in [0, 1), got {self.brightness_jitter}")
        if self.max_perspective < 1:
            raise ConfigError(f"max_perspective must be >= 1, got {self.max_perspective}")


@dataclass(frozen=True, eq=False)
class MaskInfo:
    """What :func:`render` did.

    Attributes:
        template: name of the template drawn (``...(mirrored)`` if derived by a flip).
        style: its style.
        view: the view drawn (front / left / right).
        yaw: the yaw cue from the landmarks (negative: face turned toward image-left).
        colour: BGR tint colour, or None when the template kept its own colours.
        gain: brightness gain applied to the mask.
        grayscale: whether the mask was drawn in grey because the picture is grey.
        warp: ``homography``, or ``piecewise-affine`` when the homography was too projective
            (see ``RenderConfig.max_perspective`` and ``edge.masks.warp``).
        targets: (6, 2) image points the anchors a..f were mapped to.
        alpha: (H, W) float32 mask coverage in [0, 1], same size as the image.
    """

    template: str
    style: str
    view: str
    yaw: float
    colour: tuple[int, int, int] | None
    gain: float
    grayscale: bool
    warp: str
    targets: np.ndarray = field(repr=False)
    alpha: np.ndarray = field(repr=False)

    def polygon(self, level: float = 0.5) -> np.ndarray:
        """Outline of the mask: the largest contour of ``alpha >= level``, (N, 2) int32."""
        binary = (self.alpha >= level).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return np.zeros((0, 2), np.int32)
        return max(contours, key=cv2.contourArea).reshape(-1, 2)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 numpy image, got {type(image).__name__} "
                         f"{getattr(image, 'dtype', '')}: decode it with cv2.imread first")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        raise ImageError(f"expected an (H, W) grey or (H, W, 3) BGR image, got shape {image.shape}")


def _as_rng(rng_or_seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool):
        return np.random.default_rng(int(rng_or_seed))
    raise ConfigError(f"rng_or_seed must be an int seed or a numpy Generator, got {rng_or_seed!r}")


def _span(six: np.ndarray) -> float:
    """Size of a six-point set: width a-c plus height b-e."""
    return float(np.hypot(*(six[2] - six[0])) + np.hypot(*(six[4] - six[1])))


def _scaled(template: MaskTemplate, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a large template near its on-screen size first: warping a 1000-pixel picture onto
    a 60-pixel face with bilinear sampling would alias; INTER_AREA averages properly."""
    image, anchors = template.image, template.anchors
    ratio = _span(targets) / max(_span(anchors), 1e-6)
    factor = min(1.0, 2.0 * ratio)
    if factor >= 0.75:
        return image, anchors
    size = (max(2, round(image.shape[1] * factor)), max(2, round(image.shape[0] * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    fx, fy = size[0] / image.shape[1], size[1] / image.shape[0]
    # Pixel centres, not corners, scale: (p + 0.5) * f - 0.5.
    return small, (anchors + 0.5) * np.array([fx, fy], np.float32) - 0.5


class MaskRenderer:
    """Draws masks from a :class:`MaskLibrary`.

    Args:
        library: the templates; default: the data root's MaskTheFace folder.
        config: renderer settings.
    """

    def __init__(self, library: MaskLibrary | None = None, config: RenderConfig = RenderConfig()) -> None:
        self.library = library if library is not None else MaskLibrary()
        self.config = config

    def render(self, image_bgr: np.ndarray, landmarks: np.ndarray,
               rng_or_seed: int | np.random.Generator, style: str | None = None,
               view: str | None = None) -> tuple[np.ndarray, MaskInfo]:
        """Draw one mask on one face.

        Args:
            image_bgr: (H, W, 3) BGR or (H, W) grey uint8 picture, any size (an aligned 112x112
                crop or a full photo); it is not modified.
            landmarks: the face's (5, 2) ArcFace/YuNet points, or (68, 2) dlib or (468, 2)
                MediaPipe points, in image pixels.
            rng_or_seed: an int seed or a numpy Generator (advanced in place).
            style: a style from ``library.styles``; None draws one at random.
            view: force ``front`` / ``left`` / ``right``; None picks it from the yaw.

        Returns:
            ``(masked, info)``: the picture with the mask, same shape and dtype, and a MaskInfo.

        Raises:
            ImageError: the image is not a uint8 grey or BGR array.
            LandmarkError: landmarks of an unknown shape, or not describing a face.
            MaskTemplateError: unknown style or view.
            ConfigError: ``rng_or_seed`` is neither an int nor a Generator.
        """
        _check_image(image_bgr)
        rng = _as_rng(rng_or_seed)
        yaw = estimate_yaw(landmarks)
        chosen_view = view if view is not None else choose_view(yaw, self.config.yaw_threshold)
        if chosen_view not in VIEWS:
            raise ConfigError(f"unknown view {chosen_view!r}; valid: {', '.join(VIEWS)}")
        styles = self.library.styles
        chosen_style = style if style is not None else styles[int(rng.integers(len(styles)))]
        template = self.library.get(chosen_style, chosen_view)
        targets = mask_targets(landmarks, self.config.face_shape)
        # Draw every random number up front and always in the same order, so the stream (and a
        # shared Generator) does not depend on which branches are taken below.
        wants_tint = rng.random() < self.config.tint_probability
        colour = col.random_colour(rng)
        jitter = 1.0 + rng.uniform(-1.0, 1.0) * self.config.brightness_jitter
        grey = col.is_grayscale(image_bgr)
        colour_used = colour if (template.tint and wants_tint) else None
        layer, gain, warp = self._layer(template, targets, image_bgr, colour_used, grey, jitter)
        masked, alpha = _blend(image_bgr, layer)
        info = MaskInfo(template=template.name, style=template.style, view=template.view, yaw=yaw,
                        colour=colour_used, gain=gain, grayscale=grey, warp=warp, targets=targets,
                        alpha=alpha)
        return masked, info

    def _layer(self, template: MaskTemplate, targets: np.ndarray, image: np.ndarray,
               colour: tuple[int, int, int] | None, grey: bool,
               jitter: float) -> tuple[tuple, float, str]:
        """Warp the recoloured template into the image; returns ((roi, premult, alpha), gain, warp)."""
        picture, anchors = _scaled(template, targets)
        alpha = picture[..., 3].astype(np.float32) / 255.0
        bgr = picture[..., :3].astype(np.float32)
        opaque = alpha > 0.5
        if colour is not None:
            bgr = col.tint(bgr, opaque, colour)
        if grey:
            bgr = np.repeat(col.luma(bgr)[..., None], 3, axis=2)
        face = col.region_luma(image, targets[[0, 1, 2, 5, 4, 3]])
        low, high = self.config.gain_range
        gain = float(np.clip(face / self.config.reference_luma, low, high) * jitter)
        premult = np.dstack([np.clip(bgr * gain, 0, 255) * alpha[..., None], alpha])
        roi, warped, warp = warp_layer(premult, anchors, targets, image.shape,
                                       self.config.max_perspective)
        if roi is None:
            return (None, None, None), gain, warp
        return (roi, warped[..., :3], np.clip(warped[..., 3], 0.0, 1.0)), gain, warp


def _blend(image: np.ndarray, layer: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Composite a premultiplied layer over the image; returns (masked, full-size alpha)."""
    roi, premult, alpha_roi = layer
    alpha = np.zeros(image.shape[:2], np.float32)
    masked = image.copy()
    if roi is None:
        logger.debug("the mask falls outside the image: nothing drawn")
        return masked, alpha
    x0, y0, x1, y1 = roi
    alpha[y0:y1, x0:x1] = alpha_roi
    patch = image[y0:y1, x0:x1].astype(np.float32)
    if image.ndim == 2:
        premult = premult[..., 0]
    else:
        alpha_roi = alpha_roi[..., None]
    masked[y0:y1, x0:x1] = np.clip(patch * (1.0 - alpha_roi) + premult + 0.5, 0, 255).astype(np.uint8)
    return masked, alpha


@functools.lru_cache(maxsize=1)
def default_renderer() -> MaskRenderer:
    """The renderer over the data root's templates, built once on first use."""
    return MaskRenderer()


def render(image_bgr: np.ndarray, landmarks5: np.ndarray, rng_or_seed: int | np.random.Generator,
           style: str | None = None, *, view: str | None = None,
           renderer: MaskRenderer | None = None) -> tuple[np.ndarray, MaskInfo]:
    """Draw a mask on a face with the default (or a given) renderer.

    See :meth:`MaskRenderer.render` for the arguments, return value and errors; ``landmarks5``
    may also be (68, 2) dlib or (468, 2) MediaPipe points.
    """
    return (renderer or default_renderer()).render(image_bgr, landmarks5, rng_or_seed, style, view)
