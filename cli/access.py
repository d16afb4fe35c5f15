"""`main.py access`: enroll people, manage the gallery, run the door."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.options import MODEL, RUNTIME, THREADS, Runtime

app = typer.Typer(help="Door access control: enroll, list, remove, rename, run.", no_args_is_help=True)
GALLERY = typer.Option(Path("gallery.db"), "--gallery", "-g", help="SQLite gallery file.")
KEY = typer.Option(None, "--key-file", "-k",
                   help="Key file (created 0600 if missing); default $MASKEDGE_GALLERY_KEY.")
FAR = typer.Option(1e-3, "--far", help="Target false-accept rate (one the card is calibrated at).")


def _open(gallery: Path, key_file: Path | None, model: str, runtime, threads, create: bool):
    from edge.access import Gallery, load_key
    from edge.runtimes import load_model
    from edge.zoo import resolve_model

    net = load_model(resolve_model(model), runtime=runtime.value if runtime else None, threads=threads)
    key = load_key(key_file, create=create)
    if gallery.exists():
        return Gallery.open(gallery, net.card, key), net
    if not create:
        from edge.access import GalleryError

        raise GalleryError(f"gallery {gallery} does not exist: enroll someone first")
    return Gallery.create(gallery, net.card, key), net


@app.command("enroll")
def enroll(
    photos: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Photos of the person."),
    name: str = typer.Option(..., "--name", "-n", help="Person's name."),
    masked: int = typer.Option(2, "--masked", min=0, help="Synthetic masked templates per photo."),
    gallery: Path = GALLERY, key_file: Path = KEY, model: str = MODEL,
    runtime: Runtime = RUNTIME, threads: int = THREADS,
) -> None:
    """Add a person's templates (incremental; existing people are kept)."""
    import numpy as np

    from edge.access.enroll import enrollment_templates
    from edge.detect import create_detector
    from edge.image import read_image

    store, net = _open(gallery, key_file, model, runtime, threads, create=True)
    detector = create_detector("yunet")
    with store:
        rows, kinds = [], []
        for i, photo in enumerate(photos):
            emb, kind = enrollment_templates(read_image(photo), net, detector, masked, seed=i, name=str(photo))
            rows.append(emb)
            kinds += kind
        person = store.enroll(name, np.concatenate(rows), kinds)
    typer.echo(f"enrolled {person.name}: {len(kinds)} template(s) ({', '.join(sorted(set(kinds)))})")


@app.command("list")
def list_people(gallery: Path = GALLERY, key_file: Path = KEY, model: str = MODEL) -> None:
    """List enrolled people and their templates."""
    store, _ = _open(gallery, key_file, model, None, None, create=False)
    with store:
        for person in store.people():
            typer.echo(f"{person.name:30} {person.templates:3d} templates  updated {person.updated}")


@app.command("remove")
def remove(name: str, gallery: Path = GALLERY, key_file: Path = KEY, model: str = MODEL) -> None:
    """Remove a person and all their templates."""
    store, _ = _open(gallery, key_file, model, None, None, create=False)
    with store:
        typer.echo(f"removed {name} ({store.remove(name)} templates)")


@app.command("rename")
def rename(old: str, new: str, gallery: Path = GALLERY, key_file: Path = KEY, model: str = MODEL) -> None:
    """Rename a person."""
    store, _ = _open(gallery, key_file, model, None, None, create=False)
    with store:
        typer.echo(f"renamed {old} -> {store.rename(old, new).name}")


@app.command("run")
def run(
    source: str = typer.Option(..., "--source", "-s", help="Camera index, video file, stream URL or folder."),
    far: float = FAR,
    margin: float = typer.Option(0.05, "--margin", help="Best person must beat the runner-up by this."),
    audit: Path = typer.Option(Path("audit.jsonl"), "--audit", help="Append-only JSON-lines audit log."),
    output_video: Path = typer.Option(None, "--output-video", help="Annotated video (.mp4/.avi)."),
    max_frames: int = typer.Option(None, "--max-frames", min=1),
    detect_size: str = typer.Option("320x256", "--detect-size",
                                    help="Detector canvas WxH, multiples of 32: 320x256 suits a door "
                                         "camera (faces >= 40 px); 640x640 finds faces down to ~10 px."),
    gallery: Path = GALLERY, key_file: Path = KEY, model: str = MODEL,
    runtime: Runtime = RUNTIME, threads: int = THREADS,
) -> None:
    """Judge every face of every frame; one audit line per decision."""
    from edge.access import AuditLog, Decider, Station, open_source
    from edge.detect import create_detector

    store, net = _open(gallery, key_file, model, runtime, threads, create=False)
    with store:
        detector = create_detector("yunet", input_size=_size(detect_size))
        station = Station(store, net, detector, Decider(net.card, far=far, margin=margin),
                          audit=AuditLog(audit))
        summary = station.run(open_source(source), output_video=output_video, max_frames=max_frames)
    typer.echo(f"{summary.frames} frames, {summary.faces} faces, {summary.admitted} admitted, "
               f"{summary.skipped_faces} skipped by the quality gate; median "
               f"{summary.latency_percentile(50) or 0:.1f} ms/frame; audit: {audit}")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--detect-size takes WIDTHxHEIGHT, e.g. 320x256; got {text!r}") from None
    return width, height
