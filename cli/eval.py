"""`main.py eval`: masked-LFW verification of any model, with a report folder."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.options import RUNTIME, THREADS, Runtime


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name, model file or PyTorch checkpoint."),
    pack: str = typer.Option("lfw-masked", "--pack", help="Pack name, an image folder/tgz or a .bin set."),
    pairs: Path = typer.Option(None, "--pairs", help="Pairs list for an image-folder pack."),
    runtime: Runtime = RUNTIME,
    threads: int = THREADS,
    seed: int = typer.Option(0, "--seed", help="Mask seed of the pack (a new seed builds a new pack)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default runs/eval/<model>-<time>)."),
    write_card: bool = typer.Option(False, "--write-card", help="Store calibrated thresholds in the card."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes for building a pack."),
) -> None:
    """U-U / U-M / M-M accuracy, ROC, EER and TAR@FAR; writes JSON, Markdown and plots."""
    from benchmarks.calibrate import write_thresholds
    from benchmarks.embedders import open_embedder
    from benchmarks.eval_report import table, write_run
    from benchmarks.evaluate import evaluate_embedder
    from benchmarks.packs import load_custom_pack, load_pack

    start = time.perf_counter()
    embedder = open_embedder(model, runtime.value if runtime else None, threads)
    if Path(pack).exists():
        opened = load_custom_pack(pack, str(pairs) if pairs else None, seed=seed, workers=workers)
    else:
        opened = load_pack(pack, seed=seed, workers=workers)
    t_pack = time.perf_counter()
    results = evaluate_embedder(embedder.embed, opened, cache=embedder.sha256 + embedder.runtime)
    seconds = time.perf_counter() - start
    folder = out or Path("runs") / "eval" / f"{embedder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if write_card:
        typer.echo(write_thresholds(embedder, results, opened))
    info = {"name": embedder.name, "sha256": embedder.sha256, "runtime": embedder.runtime}
    report = write_run(folder, results, opened, info, seconds)
    typer.echo(table(results))
    typer.echo(f"model+pack {t_pack - start:.0f} s, embed {results['timing_s']['embed']} s, protocol {results['timing_s']['protocol']} s, "
               f"total {seconds:.0f} s")
    typer.echo(f"report: {report}")
