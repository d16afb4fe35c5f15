"""Model definitions; importing this package registers every builder in ``MODELS``."""

from distill.models import iresnet, mobilefacenet, mobilefacenet_tf, senet_ffr  # noqa: F401  (registration)
