"""Retention report: what INT8 keeps of FP32, per runtime, on masked LFW.

For every carded model file in an export folder: masked-LFW accuracy (U-U, U-M, M-M, 10-fold)
and TAR at FAR 1e-3 through ``benchmarks.evaluate``, the cosine to the PyTorch FP32 model
(from the card's parity block), file size, and batch-1 latency at 1 and 2 threads (each
runtime's FP32 and INT8 files timed interleaved, ``quantize.latency``). FP32 and INT8 sit side by
side per runtime, with retention = INT8 accuracy / FP32 accuracy of the same runtime, and
per runtime the file to ship: the fastest that keeps accuracy on this machine. Writes
``retention.md``, ``retention.png`` and ``retention.json`` into the folder.

The retention gate (``quantize.retention``): the kit's promise is INT8 losing at most 0.1 point of
its runtime's FP32 accuracy on every set. The parity gate alone does not ensure it: an
onnxruntime INT8 at mean cosine 0.9954 passed parity and lost 0.6 point U-M (see
``quantize/reports/maskinv_mobilefacenet_tflite``). Each INT8 row gets a verdict (accuracy
kept, and faster than FP32 at 1 and 2 threads); an INT8 model that loses more than the gate
makes the command fail (``RetentionError``), after the report is written.

    python -m quantize.report RUN/export [--checkpoint RUN/last.pt] [--quick] [--threads 1]
    python -m quantize.report RUN/export --rerender   # from retention.json, no evaluation
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from edge.card import CARD_SUFFIX, ModelCard
from edge.errors import ConfigError
from quantize.exporter import artifact_size
from quantize.report_render import plot_rows, render
from quantize.retention import SETS, add_paired, add_retention, add_verdicts, retention_failures

log = logging.getLogger(__name__)


def collect(folder: Path) -> list[tuple[Path, ModelCard]]:
    """The carded model files in ``folder`` (a file without a card failed its gate: skipped).

    Raises:
        ConfigError: no carded model in the folder.
    """
    found = []
    for card_file in sorted(Path(folder).glob(f"*{CARD_SUFFIX}")):
        model = card_file.with_name(card_file.name.removesuffix(CARD_SUFFIX))
        if model.is_file():
            found.append((model, ModelCard.load(card_file)))
    if not found:
        raise ConfigError(f"no carded model files in {folder}: run `main.py export` or "
                          "`main.py quantize` first and pass their --out folder")
    return found


def evaluate_all(models: list[tuple[Path, ModelCard]], pack, quick: bool, runs: int,
                 threads=(1, 2), checkpoint: Path | None = None, rounds: int = 3) -> list[dict]:
    """One row per model (plus the PyTorch checkpoint when given); each format's files timed
    interleaved, ``rounds`` times over (the median over the rounds is reported)."""
    from benchmarks.evaluate import evaluate_embedder
    from edge.runtimes import load_model

    face = np.asarray(pack.unmasked[0])
    rows = []
    if checkpoint is not None:
        from quantize.student import load_student

        student = load_student(checkpoint)
        rows.append(_row("pytorch", "fp32", student.name + " (PyTorch)", checkpoint,
                         evaluate_embedder(student.embed, pack, quick=quick, progress=False), None))
    for path, card in models:
        net = load_model(path)
        results = evaluate_embedder(net.embed, pack, quick=quick, cache=card.sha256, progress=False,
                                    keep_embeddings=not quick)
        cosine = card.accuracy.get("parity_vs_pytorch_fp32", {}).get("mean")
        rows.append(_row(card.format, _tag(card), card.name, path, results, cosine))
    for fmt in dict.fromkeys(card.format for _, card in models):
        paths = [path for path, card in models if card.format == fmt]
        for count in threads:
            _time(rows, paths, count, runs, rounds, face)
    add_retention(rows)
    add_paired(rows, pack)
    add_verdicts(rows)
    return rows


def _time(rows: list[dict], paths: list[Path], threads: int, runs: int, rounds: int, face) -> None:
    """Latency of ``paths`` at ``threads``: the median over ``rounds`` interleaved timings.

    Why rounds: one timing of a few seconds catches whatever the shared machine's load does
    then; in one report run onnxruntime FP32 at 2 threads timed 10.85 ms, against 7.83-8.53 in
    three timings in a fresh process minutes later.
    """
    from quantize.latency import measure_interleaved

    medians: dict[str, list[float]] = {}
    for _ in range(rounds):
        for path, timed in measure_interleaved(paths, threads, runs, face=face).items():
            medians.setdefault(path, []).append(round(timed["median_ms"], 3))
    for row in rows:
        if row["path"] in medians:
            row[f"latency_{threads}t_ms"] = float(np.median(medians[row["path"]]))
            row[f"latency_{threads}t_rounds_ms"] = medians[row["path"]]


def retention_report(folder: Path, checkpoint: Path | None = None, quick: bool = False,
                     runs: int = 100, rounds: int = 3) -> tuple[Path, Path | None]:
    """Evaluate every carded model in ``folder``, write the report there, then hold every INT8
    model to the retention gate.

    Raises:
        ConfigError: no carded model. DataRootError/DatasetError: no masked-LFW pack data.
        RetentionError: an INT8 model lost more than ``RETENTION_GATE`` (the report is written).
    """
    from benchmarks.packs import load_pack

    folder = Path(folder)
    pack = load_pack()
    rows = evaluate_all(collect(folder), pack, quick, runs, checkpoint=checkpoint, rounds=rounds)
    for row in rows:
        row["pack"], row["quick"] = f"{pack.name} (pack {pack.key})", quick
    return _write(folder, rows)


def rerender(folder: Path) -> tuple[Path, Path | None]:
    """Write ``retention.md`` / ``.png`` again from ``retention.json`` (verdicts recomputed), with
    no evaluation: a report made by an older kit gets the current verdicts and layout.

    Raises:
        ConfigError: no ``retention.json`` in ``folder``.
        RetentionError: as ``retention_report``.
    """
    source = Path(folder) / "retention.json"
    if not source.is_file():
        raise ConfigError(f"no retention.json in {folder}: run `python -m quantize.report {folder}` first")
    rows = json.loads(source.read_text())
    for row in rows:
        row.pop("verdict", None)
    add_verdicts(rows)
    return _write(Path(folder), rows)


def _write(folder: Path, rows: list[dict]) -> tuple[Path, Path | None]:
    png = plot_rows(rows, folder / "retention.png")
    markdown = folder / "retention.md"
    markdown.write_text(render(rows, rows[0].get("pack", "an unnamed pack"), rows[0].get("quick", False),
                               png and png.name))
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (folder / "retention.json").write_text(json.dumps(public, indent=1))
    failures = retention_failures(rows)
    if failures:
        from quantize.errors import RetentionError

        raise RetentionError(f"{len(failures)} INT8 model(s) failed the retention gate (report: "
                             f"{markdown}):\n" + "\n".join(failures) + "\nFix: keep more layers "
                             "in float (--keep-float), another format, or QAT; a device should not "
                             "load these models", report=markdown)
    return markdown, png


def _row(runtime: str, tag: str, name: str, path: Path, results: dict, cosine) -> dict:
    row = {"runtime": runtime, "tag": tag, "name": name, "path": str(path), "cosine": cosine,
           "mb": round(artifact_size(Path(path)) / 1e6, 3)}
    for s in SETS:
        if s in results:
            row[f"{s}_acc"] = results[s]["accuracy"]
            row[f"{s}_tar"] = results[s].get("tar_at_far", {}).get("0.001", {}).get("tar")
    row["_scores"] = {s: results[s]["_curves"]["scores"] for s in SETS
                      if "_curves" in results.get(s, {})}  # per pair, for add_paired; not saved
    row["_embeddings"] = results.get("_embeddings")  # for the noise floor; not saved
    return row


def _tag(card: ModelCard) -> str:
    # File names end in .<tag><suffix>: fp32, int8-ptq, int8-qat.
    return Path(card.file).stem.rsplit(".", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description="INT8 retention report of an export folder")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="folds 1-2 only, no all-vs-all")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per model per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings per thread count")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (PyTorch row)")
    parser.add_argument("--rerender", action="store_true",
                        help="no evaluation: write the Markdown and plot again from retention.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from quantize.errors import RetentionError

    try:
        if args.rerender:
            markdown, _ = rerender(args.folder)
        else:
            markdown, _ = retention_report(args.folder, args.checkpoint, args.quick, args.runs,
                                            args.rounds)
    except RetentionError as err:
        print(err.report.read_text())
        print(f"error: {err}")
        return 1
    print(markdown.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

