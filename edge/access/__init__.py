"""On-device access control: an encrypted gallery, decisions at a chosen FAR, an audit log
and the door loop. Torch-free, like all of ``edge/``.

Typical use::

    key = load_key("gallery.key")
    gallery = Gallery.open("gallery.db", model.card, key)
    station = Station(gallery, model, create_detector("yunet"), Decider(model.card, far=1e-3),
                      audit=AuditLog("audit.jsonl"))
    station.run(open_source(0))
"""

from edge.access.audit import AuditContext, AuditLog
from edge.access.crypto import KEY_ENV, load_key
from edge.access.decide import Decider, Decision, person_scores, threshold_for
from edge.access.errors import GalleryError, GalleryKeyError, GalleryModelError, SourceError
from edge.access.gallery import Gallery, Person
from edge.access.quality import QualityConfig, QualityReport, estimate_pose, sharpness
from edge.access.sources import CaptureSource, FolderSource, Frame, FrameSource, open_source
from edge.access.station import DOOR_DETECT_SIZE, FaceResult, FrameResult, RunSummary, Station, annotate
from edge.access.store import TemplateSet

__all__ = [
    "DOOR_DETECT_SIZE", "KEY_ENV", "AuditContext", "AuditLog", "CaptureSource", "Decider", "Decision", "FaceResult",
    "FolderSource", "Frame", "FrameResult", "FrameSource", "Gallery", "GalleryError",
    "GalleryKeyError", "GalleryModelError", "Person", "QualityConfig", "QualityReport",
    "RunSummary", "SourceError", "Station", "TemplateSet", "annotate", "estimate_pose",
    "load_key", "open_source", "person_scores", "sharpness", "threshold_for",
]
