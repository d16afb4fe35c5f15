"""The parity gate: an exported model must embed real faces like the PyTorch FP32 model.

The exported file runs through ``edge.runtimes.load_model`` with its card, exactly as on the
device; the reference is the student in PyTorch fed by its own (torch) pre-processing. A card
with the wrong colour order or normalisation therefore fails here, as would a converter bug.

Gates (cosine between the two L2-normalised embeddings of each face):
FP32 exports: every face >= 0.9999. INT8 exports: mean >= 0.995 and every face >= 0.98.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from quantize.student import Student


@dataclass(frozen=True)
class ParityGate:
    """Minimum cosine to the FP32 model: per face (``min``) and on average (``mean``)."""

    min: float
    mean: float | None = None


GATES = {"fp32": ParityGate(min=0.9999), "int8": ParityGate(min=0.98, mean=0.995)}


@dataclass(frozen=True)
class ParityResult:
    """Cosine statistics of one export against the FP32 model on the check faces."""

    precision: str
    n: int
    mean: float
    min: float
    p01: float
    gate: ParityGate

    @property
    def passed(self) -> bool:
        ok_min = self.min >= self.gate.min
        return ok_min and (self.gate.mean is None or self.mean >= self.gate.mean)

    def summary(self) -> str:
        """One line: the figures and the gate they were held to."""
        gate = f"min >= {self.gate.min}" + (f", mean >= {self.gate.mean}" if self.gate.mean else "")
        verdict = "passed" if self.passed else "FAILED"
        return (f"cosine to PyTorch FP32 on {self.n} real faces: mean {self.mean:.5f}, "
                f"min {self.min:.5f}, 1st percentile {self.p01:.5f} ({self.precision} gate {gate}: {verdict})")

    def to_dict(self) -> dict:
        return {"n_faces": self.n, "mean": round(self.mean, 6), "min": round(self.min, 6),
                "p01": round(self.p01, 6), "gate": asdict(self.gate), "passed": self.passed}


def compare(reference: np.ndarray, candidate: np.ndarray, precision: str,
            gate: ParityGate | None = None) -> ParityResult:
    """Row-wise cosine between two embedding matrices, judged by ``gate`` (default: the
    ``precision``'s gate in ``GATES``)."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-10)
    b = candidate / np.maximum(np.linalg.norm(candidate, axis=1, keepdims=True), 1e-10)
    cos = np.sum(a * b, axis=1).astype(np.float64)
    return ParityResult(precision, int(cos.size), float(cos.mean()), float(cos.min()),
                        float(np.percentile(cos, 1)), gate or GATES[precision])


def check_parity(path: Path, student: Student, faces: np.ndarray, precision: str,
                 card: ModelCard | None = None, runtime: str | None = None,
                 gate: ParityGate | None = None) -> ParityResult:
    """Embed ``faces`` with the exported file (through edge) and with the student; compare.

    Args:
        path: the exported model file.
        student: the PyTorch FP32 reference.
        faces: aligned uint8 BGR crops (N, 112, 112, 3).
        precision: ``fp32`` or ``int8`` (picks the gate).
        card: the card to run the file with (default: the one beside it).
        runtime: an ``edge.runtimes`` backend (default: from the suffix).
        gate: the gate to hold it to (default: ``GATES[precision]``).

    Returns:
        The result; ``result.passed`` says whether the gate holds.
    """
    from edge.runtimes import load_model

    net = load_model(path, runtime=runtime, card=card)
    return compare(student.embed(faces), net.embed(faces), precision, gate)
