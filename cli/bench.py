"""`main.py bench`: latency of carded models per runtime x threads x batch, the door pipeline,
gallery search cost, and a Markdown + PNG report (optionally merged with other devices' files).

Wire it into main.py with ``register(app)``, like ``cli.verify``. Heavy imports stay inside
the command body.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import typer

from cli.common import fail

log = logging.getLogger(__name__)

# The peers every report compares against; students are added by name or file path.
DEFAULT_MODELS = "sface,sface-fp32,sface-openvino,mobilefacenet-tflite,mobilefacenet-openvino"


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the top-level app."""
    app.command("bench")(bench)


def _split(value: str, option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"{option} needs at least one comma-separated value")
    return items


def _ints(value: str, option: str) -> list[int]:
    try:
        numbers = [int(v) for v in _split(value, option)]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, got {value!r}") from None
    if min(numbers) < 1:
        raise typer.BadParameter(f"{option} values must be >= 1, got {value!r}")
    return numbers


def bench(
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="Comma-separated zoo names or carded files."),
    runtimes: str = typer.Option(None, "--runtimes",
                                 help="Comma-separated runtimes; each model runs on those that read its "
                                      "format (default: the model's own runtime)."),
    threads: str = typer.Option("1,2", "--threads", help="Comma-separated thread counts."),
    batch: str = typer.Option("1", "--batch", help="Comma-separated batch sizes."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Warm-up calls per measurement."),
    iters: int = typer.Option(50, "--iters", min=1, help="Minimum timed calls per measurement."),
    min_seconds: float = typer.Option(2.0, "--min-seconds", min=0, help="Minimum timed seconds."),
    pipeline: bool = typer.Option(False, "--pipeline", help="Also bench the door pipeline and gallery search."),
    pipeline_models: str = typer.Option("sface,mobilefacenet-tflite", "--pipeline-models"),
    people: int = typer.Option(60, "--people", min=2, help="LFW people in the door clip (2 frames each)."),
    door: int = typer.Option(0, "--door", min=0,
                             help="Also soak the door station (access run loop) for this many frames, "
                                  "e.g. 10000: decisions/s and memory over the run."),
    door_models: str = typer.Option("mobilefacenet-tflite", "--door-models",
                                    help="Comma-separated models for --door."),
    gallery_max: int = typer.Option(1_000_000, "--gallery-max", min=100, help="Largest gallery size."),
    out: Path = typer.Option(None, "--out", help="Run folder (default runs/bench/<time>)."),
    device: str = typer.Option(None, "--device", help="Device key in merged reports (default: CPU model)."),
    merge: list[Path] = typer.Option([], "--merge", exists=True, dir_okay=False,
                                     help="Other results.json files (other devices) to merge into the report."),
    report_only: bool = typer.Option(False, "--report-only", help="Measure nothing; report the --merge files."),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate",
                                 help="One fresh process per measurement (clean RSS and load time)."),
    rounds: int = typer.Option(1, "--rounds", min=1,
                               help="Measure every model this many times, in alternating order, and "
                                    "report the median round (3 on a shared machine whose load drifts)."),
) -> None:
    """Measure latency and write results.json, latency.md and latency.png to the run folder."""
    from tqdm import tqdm

    from benchmarks.latency.report import write_report
    from benchmarks.latency.results import RunResults, merge as merge_runs

    out = out or Path("runs/bench") / datetime.now().strftime("%Y%m%d-%H%M%S")
    others = [RunResults.load(p) for p in merge]
    if report_only and not others:
        raise typer.BadParameter("--report-only needs at least one --merge file")
    failures: list[str] = []
    runs = list(others)
    if not report_only:
        options = {"models": _split(models, "--models"), "runtimes": runtimes and _split(runtimes, "--runtimes"),
                   "threads": _ints(threads, "--threads"), "batch": _ints(batch, "--batch"),
                   "warmup": warmup, "iters": iters, "min_seconds": min_seconds, "rounds": rounds}
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**options, "pipeline": pipeline, "door": door,
                                                     "isolate": isolate}, indent=1))
        run = _measure(options, device, isolate, failures, tqdm)
        if pipeline:
            _measure_pipeline(run, out, _split(pipeline_models, "--pipeline-models"), options["threads"],
                              people, gallery_max, tqdm)
        if door:
            _measure_door(run, out, _split(door_models, "--door-models"), options["threads"], people,
                          door)
        typer.echo(f"results: {run.save(out / 'results.json')}")
        runs.insert(0, run)
    md, png = write_report(merge_runs(runs), out)
    typer.echo(md.read_text())
    typer.echo(f"report: {md}" + (f", plot: {png}" if png else ""))
    if failures:
        fail("some measurements failed (the others are in the report):\n  " + "\n  ".join(failures))


def _plan(options: dict, failures: list[str]) -> list:
    """BenchConfigs for models x compatible runtimes x threads x batch."""
    from benchmarks.latency.harness import BenchConfig
    from edge.runtimes import backend_class, runtime_for_suffix
    from edge.zoo import resolve_model

    configs = []
    for model in options["models"]:
        path = resolve_model(model)
        wanted = options["runtimes"] or [runtime_for_suffix(path)]
        usable = [r for r in wanted if path.suffix.lower() in backend_class(r).suffixes]
        if not usable:
            failures.append(f"{model}: no runtime among {wanted} reads {path.suffix} files")
        for runtime in usable:
            for count in options["threads"]:
                for size in options["batch"]:
                    configs.append(BenchConfig(model, runtime, count, size, options["warmup"],
                                               options["iters"], options["min_seconds"]))
    return configs


def _measure(options: dict, device: str | None, isolate: bool, failures: list[str], tqdm):
    from benchmarks.latency.floor import attach_floor, calibrate, model_macs
    from benchmarks.latency.results import RunResults, combine_rounds
    from benchmarks.latency.system import device_label, system_info
    from edge.zoo import resolve_model

    system = system_info()
    configs = _plan(options, failures)
    typer.echo(f"calibrating GEMM throughput on {options['threads']} thread(s)...")
    run = RunResults(device=device or device_label(system), system=system,
                     calibration=calibrate(options["threads"]))
    macs = {}
    for config, records in _rounds(configs, options["rounds"], isolate, failures, tqdm):
        record = combine_rounds(records)
        if config.model not in macs:
            macs[config.model] = model_macs(resolve_model(config.model))
        record["model"]["macs"], record["model"]["macs_source"] = macs[config.model]
        attach_floor(record, run.calibration)
        run.models.append(record)
    return run


def _rounds(configs: list, rounds: int, isolate: bool, failures: list[str], tqdm) -> list[tuple]:
    """(config, its records) for every config that measured in every round; the order flips
    each round, so a slow spell lands on different models in different rounds."""
    from benchmarks.latency.harness import bench_model, run_isolated
    from edge.errors import MaskEdgeError

    records: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
    failed: set[int] = set()
    with tqdm(total=len(configs) * rounds, desc="models", unit="bench") as bar:
        for r in range(rounds):
            order = range(len(configs)) if r % 2 == 0 else reversed(range(len(configs)))
            for i in order:
                bar.update()
                if i in failed:
                    continue
                try:
                    records[i].append(run_isolated(configs[i]) if isolate else bench_model(configs[i]))
                except MaskEdgeError as err:
                    log.error("%s", err)
                    failures.append(f"{configs[i].model} / {configs[i].runtime}: {err}")
                    failed.add(i)
    return [(configs[i], records[i]) for i in range(len(configs)) if i not in failed]


def _measure_pipeline(run, out: Path, models: list[str], threads: list[int], people: int,
                      gallery_max: int, tqdm) -> None:
    from benchmarks.latency.pipeline import GALLERY_SIZES, bench_gallery, bench_pipeline
    from benchmarks.latency.video import make_door_clip

    clip = make_door_clip(out / "door.avi", people=people)
    jobs = [(m, t) for m in models for t in threads]
    for model, count in tqdm(jobs, desc="pipeline", unit="run"):
        run.pipeline.append(bench_pipeline(clip, model, threads=count))
    sizes = tuple(s for s in GALLERY_SIZES if s <= gallery_max)
    for count in tqdm(threads, desc="gallery", unit="threads"):
        run.gallery.extend(bench_gallery(sizes, threads=count))


def _measure_door(run, out: Path, models: list[str], threads: list[int], people: int, frames: int) -> None:
    from benchmarks.latency.door import bench_door
    from benchmarks.latency.video import make_door_clip

    clip = make_door_clip(out / "door.avi", people=people)
    for model in models:
        for count in threads:
            typer.echo(f"door station: {model}, {count} thread(s), {frames:,} frames")
            run.door.append(bench_door(clip, model, threads=count, frames=frames))
