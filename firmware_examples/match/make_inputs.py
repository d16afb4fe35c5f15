"""Python twin of match.c: write its gallery and probes with the kit's real model.

    python firmware_examples/match/make_inputs.py OUT_DIR [--model sface]

Enrolls the demo's people (each from one photo, plus synthetic-masked templates), embeds
probe photos, and writes gallery.bin, probes.bin and threshold.txt (the card's cosine at FAR
1e-3 and the default margin) in the layout match.c reads.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np

from edge.access.enroll import enrollment_templates
from edge.detect import create_detector
from edge.face import detect_and_align
from edge.image import read_image
from edge.runtimes import load_model
from edge.zoo import resolve_model

ASSETS = Path(__file__).resolve().parents[2] / "edge" / "assets" / "demo_faces"
PEOPLE = ("obama_1.jpg", "biden_1.jpg")
PROBES = ("obama_2.jpg", "obama_3.jpg")
MARGIN = 0.05


def write(out: Path, model: str = "sface", far: float = 1e-3) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Write the inputs; returns (templates, person index per template, probes)."""
    net, detector = load_model(resolve_model(model)), create_detector("yunet")
    rows, owners = [], []
    for index, photo in enumerate(PEOPLE):
        emb, _ = enrollment_templates(read_image(ASSETS / photo), net, detector, masked=2, name=photo)
        rows.append(emb)
        owners += [index] * len(emb)
    templates = np.concatenate(rows).astype("<f4")
    probes = np.stack([net.embed(detect_and_align(ASSETS / p, detector)[0][1][None])[0]
                       for p in PROBES]).astype("<f4")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gallery.bin", "wb") as f:
        f.write(struct.pack("<ii", *templates.shape))
        f.write(np.asarray(owners, "<i4").tobytes())
        f.write(templates.tobytes())
    with open(out / "probes.bin", "wb") as f:
        f.write(struct.pack("<ii", *probes.shape))
        f.write(probes.tobytes())
    (out / "threshold.txt").write_text(f"{net.card.threshold_at(far).cosine} {MARGIN}\n")
    return templates, owners, probes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="sface")
    write(parser.parse_args().out, parser.parse_args().model)
