"""`main.py models`: list the known models, show a card, prepare a model file."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Known models and their cards.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """List zoo models with format, precision, embedding size and calibrated FARs."""
    from edge.card import ModelCard, card_path
    from edge.paths import cache_dir
    from edge.zoo import SHIPPED, ZOO, resolve_model

    typer.echo(f"{'name':26} {'format':9} {'precision':9} {'dim':>4}  status / thresholds")
    ready = {name: resolve_model(name) for name in SHIPPED}
    ready |= {name: cache_dir("models") / name / entry.file for name, entry in ZOO.items()}
    for name, prepared in ready.items():
        if card_path(prepared).is_file():
            card = ModelCard.load(card_path(prepared))
            fars = ", ".join(f"FAR {t.far:g}: {t.cosine:.3f}" for t in card.thresholds) or "uncalibrated"
            typer.echo(f"{name:26} {card.format:9} {card.precision:9} {card.embedding_size:>4}  {fars}")
        else:
            entry = ZOO[name]
            typer.echo(f"{name:26} {entry.format:9} {'-':9} {'-':>4}  not prepared "
                       f"(from {entry.source}; `models prepare {name}`)")


@app.command("prepare")
def prepare(names: list[str] = typer.Argument(..., help="Zoo names, e.g. sface.")) -> None:
    """Make carded model files from the data root (done once; later runs reuse them)."""
    from edge.zoo import resolve_model

    for name in names:
        typer.echo(f"{name}: {resolve_model(name)}")


@app.command("show")
def show(model: str = typer.Argument(..., help="Zoo name or model file.")) -> None:
    """Print a model's card as JSON."""
    from edge.card import ModelCard, card_path
    from edge.zoo import resolve_model

    card = ModelCard.load(card_path(resolve_model(model)))
    typer.echo(json.dumps(card.to_dict(), indent=2))
