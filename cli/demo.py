"""`main.py demo`: the whole door flow on real faces, offline, from a fresh install.

Enroll one person from one photo (plus synthetic-masked templates), then judge a new photo
of them, a masked photo of them, and a person who is not enrolled, with and without a mask.
Faces are public-domain photos shipped with the kit; the model comes from the install.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from cli.options import RUNTIME, THREADS, Runtime

ASSETS = Path(__file__).resolve().parents[1] / "edge" / "assets" / "demo_faces"
ENROLL = ("Barack Obama", "obama_1.jpg")
# (photo, draw a mask on it, who should be admitted)
PROBES = (
    ("obama_2.jpg", False, "Barack Obama"),
    ("obama_3.jpg", True, "Barack Obama"),
    ("biden_1.jpg", False, None),
    ("biden_1.jpg", True, None),
)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def default_demo_model() -> str:
    """The kit's own INT8 student (OpenVINO); SFace (onnxruntime, always installed) on an
    install without OpenVINO, e.g. the bare device set."""
    import importlib.util

    return "maskedge-student" if importlib.util.find_spec("openvino") else "sface"


def demo(
    model: str = typer.Option(None, "--model", "-m",
                              help="Zoo name or model file (default: the kit's INT8 student, "
                                   "maskedge-student; sface without OpenVINO)."),
    runtime: Runtime = RUNTIME, threads: int = THREADS,
    far: float = typer.Option(1e-3, "--far", help="Target false-accept rate."),
    out: Path = typer.Option(None, "--out", "-o", help="Keep gallery, audit log and annotated photos here."),
) -> None:
    """Door demo: enroll, admit, admit with a mask, reject a stranger (offline)."""
    import cv2
    import numpy as np

    from edge.access import AuditLog, Decider, Gallery, Station, annotate, load_key
    from edge.access.enroll import enrollment_templates, largest_face, mask_function
    from edge.detect import create_detector
    from edge.image import read_image
    from edge.runtimes import load_model
    from edge.zoo import resolve_model

    work = out or Path(tempfile.mkdtemp(prefix="maskedge-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    net = load_model(resolve_model(model or default_demo_model()), runtime=runtime.value if runtime else None, threads=threads)
    detector, render = create_detector("yunet"), mask_function()
    typer.echo(f"model {net.card.name} ({net.card.precision}, {type(net).name}), detector YuNet, "
               f"target FAR {far:g}; files in {work}")
    gallery = Gallery.create(work / "gallery.db", net.card, load_key(work / "gallery.key"))
    name, photo = ENROLL
    emb, kinds = enrollment_templates(read_image(ASSETS / photo), net, detector, masked=2, name=photo,
                                      mask_fn=render)
    gallery.enroll(name, emb, kinds)
    typer.echo(f"enrolled {name} from {photo}: {', '.join(kinds)}")
    station = Station(gallery, net, detector, Decider(net.card, far=far), audit=AuditLog(work / "audit.jsonl"))
    expected = 0
    for i, (photo, masked, want) in enumerate(PROBES):
        image = read_image(ASSETS / photo)
        if masked:
            face = largest_face(image, detector, photo)
            image = render(image, face.landmarks, np.random.default_rng(i))[0]
        result = station.process(image, i, photo + (" +mask" if masked else ""))
        decision = result.faces[0].decision
        ok = decision.person == want
        expected += ok
        cv2.imwrite(str(work / f"probe_{i}.jpg"), annotate(image, result))
        who = decision.person or f"unknown ({decision.reason})"
        typer.echo(f"{photo:12} {'masked  ' if masked else 'unmasked'} -> {who:32} score "
                   f"{decision.score:.3f} / threshold {decision.threshold:.3f}  "
                   f"{result.latency_ms:.0f} ms  {'as expected' if ok else 'UNEXPECTED'}")
    gallery.close()
    typer.echo(f"{expected}/{len(PROBES)} decisions as expected; audit log {work / 'audit.jsonl'}")
    if expected != len(PROBES):
        raise typer.Exit(1)
