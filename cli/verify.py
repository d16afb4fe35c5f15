"""`main.py verify` and `main.py embed`: the device-side commands on photos."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.options import FAR, MODEL, RUNTIME, THREADS, Runtime


def register(app: typer.Typer) -> None:
    """Add the photo commands to the top-level app."""
    app.command("verify")(verify)
    app.command("embed")(embed)


def _open(model: str, runtime: Runtime | None, threads: int | None):
    from edge.detect import create_detector
    from edge.runtimes import load_model
    from edge.zoo import resolve_model

    net = load_model(resolve_model(model), runtime=runtime.value if runtime else None, threads=threads)
    return net, create_detector("yunet")


def verify(
    photo_a: Path = typer.Argument(..., help="First photo."),
    photo_b: Path = typer.Argument(..., help="Second photo."),
    model: str = MODEL,
    runtime: Runtime = RUNTIME,
    threads: int = THREADS,
    far: float = FAR,
) -> None:
    """Are the largest faces in two photos the same person? Prints score, decision, timings."""
    from edge.verify import Verifier

    net, detector = _open(model, runtime, threads)
    result = Verifier(net, detector, far=far).verify(photo_a, photo_b)
    typer.echo(f"model       {net.card.name} ({net.card.precision}, {type(net).__name__})")
    typer.echo(f"faces       {photo_a.name}: {result.faces[0]}   {photo_b.name}: {result.faces[1]}")
    typer.echo(f"similarity  {result.score:.4f}")
    typer.echo(f"threshold   {result.threshold:.4f} (FAR {result.far:g})")
    typer.echo(f"decision    {'SAME person' if result.same else 'DIFFERENT people'}")
    stages = "  ".join(f"{k} {v:.1f}" for k, v in result.timings.ms.items())
    typer.echo(f"time (ms)   {stages}  total {result.timings.total():.1f}")


def embed(
    photos: list[Path] = typer.Argument(..., help="Photos to embed (largest face of each)."),
    out: Path = typer.Option(Path("embeddings.npy"), "--out", "-o", help="Output .npy (N, D)."),
    model: str = MODEL,
    runtime: Runtime = RUNTIME,
    threads: int = THREADS,
) -> None:
    """Write the L2-normalised embedding of the largest face of each photo to a .npy file."""
    import numpy as np

    from edge.verify import Timings, embed_largest_face

    net, detector = _open(model, runtime, threads)
    timings = Timings()
    rows = [embed_largest_face(p, net, detector, timings)[0] for p in photos]
    np.save(out, np.stack(rows))
    typer.echo(f"wrote {len(rows)} x {net.card.embedding_size} embeddings to {out} "
               f"({timings.total() / len(rows):.1f} ms per photo)")
