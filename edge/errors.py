"""The kit's error hierarchy.

Every error a user can cause (a bad file, a missing data set, an unknown option) is a
``MaskEdgeError``. Its message says what is wrong *and* how to fix it; ``main.py`` turns it
into one line on stderr and exit code 2. Programming errors stay ordinary exceptions.
"""


class MaskEdgeError(Exception):
    """Base class: a problem the user can fix. The message names the fix."""


class DataRootError(MaskEdgeError):
    """The data root (``MASKEDGE_DATA_ROOT`` / ``--data-root``) is unset or lacks a file."""


class ModelFileError(MaskEdgeError):
    """A model file is missing, truncated, of an unknown format or fails its checksum."""


class ModelCardError(MaskEdgeError):
    """A model card is missing, malformed or of an unsupported schema version."""


class ImageError(MaskEdgeError):
    """An image cannot be read: missing, empty, corrupt or not an image."""


class NoFaceError(MaskEdgeError):
    """An image was read but no face was found in it."""


class RuntimeUnavailableError(MaskEdgeError):
    """The runtime a model needs (onnxruntime, OpenVINO, LiteRT) is not installed."""


class DatasetError(MaskEdgeError):
    """A data set or pairs list is missing or malformed."""


class ConfigError(MaskEdgeError):
    """A configuration value is invalid; the message lists the valid values."""
