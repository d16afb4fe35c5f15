"""Turn face embeddings into access decisions: who it is, or why nobody is admitted.

Scores: cosine similarity against every template, aggregated per person by the maximum
(a person enrolled with a plain photo and a masked rendering matches on whichever fits).

Threshold: the user picks a false-accept rate, never a raw cosine; the threshold is the
one the model card was calibrated at for exactly that FAR (no nearest-neighbour fallback,
which would silently change the security level). The card's FAR is per comparison: with
P people enrolled, a stranger is compared with P people, so the chance that a stranger
is admitted as *someone* approaches P x FAR. Pick the FAR with the gallery size in mind.

Margin rule: a face that passes the threshold is still refused when the runner-up person
scores within ``margin`` of the best one (reason ``ambiguous``, no person): when two
enrolled people look alike to the model, guessing would admit under the wrong name, and
the audit log should show the doubt. ``margin=0`` turns the rule off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.access.quality import QualityReport
from edge.access.store import TemplateSet
from edge.card import ModelCard, Threshold
from edge.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_FAR = 1e-3
DEFAULT_MARGIN = 0.05
# Decision reasons, as written to the audit log.
MATCH = "match"
BELOW_THRESHOLD = "below_threshold"
AMBIGUOUS = "ambiguous"
EMPTY_GALLERY = "empty_gallery"


@dataclass(frozen=True)
class Decision:
    """The outcome for one face.

    Attributes:
        person: the admitted person's name, or ``None`` (unknown, ambiguous or skipped).
        score: best per-person cosine score (``None`` when the face was skipped).
        threshold: the cosine threshold used.
        far: the target false-accept rate the threshold was calibrated at.
        margin: best minus runner-up person score (``None`` with fewer than two people).
        reason: ``match``, ``below_threshold``, ``ambiguous``, ``empty_gallery`` or
            ``quality:<check>`` (see ``edge.access.quality``).
        candidate: the best-scoring person even when not admitted (for the audit trail).
        detail: a human-readable explanation of ``reason``.
    """

    person: str | None
    score: float | None
    threshold: float
    far: float
    margin: float | None
    reason: str
    candidate: str | None = None
    detail: str = ""

    @property
    def admitted(self) -> bool:
        """True when the door should open for this face."""
        return self.person is not None


def threshold_for(card: ModelCard, far: float) -> Threshold:
    """The card's threshold calibrated at exactly ``far``.

    Raises:
        ConfigError: ``far`` is not in (0, 1), or the card has no threshold at that FAR
            (the message lists the FARs it has).
    """
    if not isinstance(far, (int, float)) or not 0 < far < 1:
        raise ConfigError(f"target FAR must be a number in (0, 1), e.g. 1e-3; got {far!r}")
    return card.threshold_at(far)


def person_scores(embeddings: np.ndarray, templates: TemplateSet) -> np.ndarray:
    """Cosine score of each face against each person: max over the person's templates.

    Args:
        embeddings: (F, D) L2-normalised face embeddings.
        templates: the gallery's ``TemplateSet``.

    Returns:
        float32 (F, P), columns in ``templates.names`` order.
    """
    embeddings = np.asarray(embeddings, np.float32).reshape(-1, templates.matrix.shape[1])
    if len(templates) == 0:
        return np.zeros((len(embeddings), 0), np.float32)
    scores = embeddings @ templates.matrix.T
    return np.maximum.reduceat(scores, templates.starts, axis=1)


class Decider:
    """Decide who each face is, at a target FAR from the model card.

    Args:
        card: the model card (with calibrated thresholds) of the gallery's model.
        far: target false-accept rate per comparison (default 1e-3).
        margin: minimum lead of the best person over the runner-up (0 disables).

    Raises:
        ConfigError: no threshold at ``far`` or a negative margin.
        ModelCardError: the card has no calibrated thresholds.
    """

    def __init__(self, card: ModelCard, far: float = DEFAULT_FAR,
                 margin: float = DEFAULT_MARGIN) -> None:
        if not isinstance(margin, (int, float)) or not 0 <= margin < 2:
            raise ConfigError(f"margin must be a cosine difference in [0, 2), got {margin!r}")
        calibrated = threshold_for(card, far)
        self.far = calibrated.far
        self.threshold = calibrated.cosine
        self.margin = float(margin)
        log.debug("decider: FAR %g -> cosine %.4f (%s), margin %.3f", self.far, self.threshold,
                  calibrated.data, self.margin)

    def decide(self, embeddings: np.ndarray, templates: TemplateSet) -> list[Decision]:
        """One decision per face embedding.

        Args:
            embeddings: (F, D) L2-normalised embeddings of the faces in one frame.
            templates: the gallery's current ``TemplateSet``.

        Returns:
            F decisions, in the order of ``embeddings``.
        """
        scores = person_scores(embeddings, templates)
        return [self._decide_one(row, templates.names) for row in scores]

    def skipped(self, report: QualityReport) -> Decision:
        """The decision for a face the quality gate rejected."""
        return Decision(None, None, self.threshold, self.far, None, report.reason,
                        detail=report.detail)

    def _decide_one(self, row: np.ndarray, names: tuple[str, ...]) -> Decision:
        if len(names) == 0:
            return Decision(None, None, self.threshold, self.far, None, EMPTY_GALLERY,
                            detail="nobody is enrolled")
        top = np.argsort(-row, kind="stable")[:2]
        best = float(row[top[0]])
        lead = float(best - row[top[1]]) if len(top) > 1 else None
        common = dict(score=best, threshold=self.threshold, far=self.far, margin=lead,
                      candidate=names[top[0]])
        if best < self.threshold:
            return Decision(None, reason=BELOW_THRESHOLD, **common,
                            detail=f"best score {best:.3f} < threshold {self.threshold:.3f}")
        if lead is not None and lead < self.margin:
            return Decision(None, reason=AMBIGUOUS, **common,
                            detail=f"{names[top[0]]} leads {names[top[1]]} by {lead:.3f} "
                                   f"< margin {self.margin:.3f}")
        return Decision(names[top[0]], reason=MATCH, **common,
                        detail=f"score {best:.3f} >= threshold {self.threshold:.3f}")
