"""MaskEdge on-device runtime: numpy + OpenCV + one inference runtime, never torch."""

from edge.errors import MaskEdgeError

__all__ = ["MaskEdgeError"]
__version__ = "0.1.0"
