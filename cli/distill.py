"""`main.py distill`: template-level distillation of a teacher into a student (torch inside)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class Device(str, Enum):
    """Where the student trains."""

    cpu = "cpu"
    cuda = "cuda"


def register(app: typer.Typer) -> None:
    """Add the distill command to the top-level app."""
    app.command("distill")(distill)


def distill(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="YAML config, e.g. distill/configs/sface_to_mobilefacenet.yaml."),
    teacher: str = typer.Option(None, "--teacher", help="Override teacher.name (e.g. sface)."),
    student: str = typer.Option(None, "--student", help="Override student.name (e.g. mobilefacenet)."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Override epochs."),
    device: Device = typer.Option(None, "--device", help="Override device."),
    resume: Path = typer.Option(None, "--resume", exists=True, dir_okay=False,
                                help="Continue from RUN/last.pt (exactly, as if never stopped)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default from the config)."),
    overrides: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set data.limit=500."),
    prepare_only: bool = typer.Option(False, "--prepare-only",
                                      help="Only prepare the faces and cache the teacher templates."),
) -> None:
    """Distil the teacher into the student: masked student embeddings pulled to the teacher's
    templates of the same faces unmasked (MaskInv), plus optional margin heads."""
    from distill.train.config import load_config
    from distill.train.main import main

    values = {"teacher.name": teacher, "student.name": student, "epochs": epochs,
              "device": device.value if device else None, "out": str(out) if out else None}
    values = {k: v for k, v in values.items() if v is not None}
    values.update(parse_overrides(overrides))
    cfg = load_config(config, values)
    folder = main(cfg, resume=str(resume) if resume else None, prepare_only=prepare_only)
    typer.echo(f"run folder: {folder}")


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (values parsed as YAML).

    Raises:
        typer.BadParameter: an item without ``=``.
    """
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed
