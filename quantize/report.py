"""Retention report: what INT8 keeps of FP32, per runtime, on masked LFW.

For every carded model file in an export folder: masked-LFW accuracy (U-U, U-M, M-M, 10-fold)
and TAR at FAR 1e-3 through ``benchmarks.evaluate``, the cosine to the PyTorch FP32 model
(from the card's parity block), file size, and batch-1 latency at 1 and 2 threads (each
runtime's FP32 and INT8 files timed interleaved, ``quantize.latency``). FP32 and INT8 sit side by
side per runtime, with retention = INT8 accuracy / FP32 accuracy of the same runtime. Writes
``retention.md``, ``retention.png`` and ``retention.json`` into the folder.

The retention gate: the kit's promise is INT8 losing at most ``RETENTION_GATE`` (0.1 point) of
its runtime's FP32 accuracy on every set. The parity gate alone does not ensure it: an
onnxruntime INT8 at mean cosine 0.9954 passed parity and lost 0.6 point U-M (see
``quantize/reports/maskinv_mobilefacenet_tflite``). Each INT8 row gets a verdict (accuracy
kept, and faster than FP32 at 1 and 2 threads); an INT8 model that loses more than the gate
makes the command fail (``RetentionError``), after the report is written.

    python -m quantize.report RUN/export [--checkpoint RUN/last.pt] [--quick] [--threads 1]
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

log = logging.getLogger(__name__)
SETS = ("U-U", "U-M", "M-M")
RETENTION_GATE = 0.001  # most accuracy (fraction) an INT8 model may lose against its FP32, per set


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
                 threads=(1, 2), checkpoint: Path | None = None) -> list[dict]:
    """One row per model (plus the PyTorch checkpoint when given)."""
    from benchmarks.evaluate import evaluate_embedder
    from edge.runtimes import load_model
    from quantize.latency import measure_interleaved

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
            timed = measure_interleaved(paths, count, runs, face=face)
            for row in rows:
                if row["path"] in timed:
                    row[f"latency_{count}t_ms"] = round(timed[row["path"]]["median_ms"], 3)
    _retention(rows)
    _paired(rows, pack)
    _verdicts(rows)
    return rows


def render(rows: list[dict], pack_name: str, quick: bool, plot: str | None) -> str:
    """The Markdown table (FP32 and INT8 side by side per runtime)."""
    lines = [f"# INT8 retention on {pack_name}{' (quick: folds 1-2)' if quick else ''}", "",
             "Accuracy: LFW 10-fold protocol; TAR at FAR 1e-3 against all cross-identity pairs; "
             "retention = INT8 / FP32 accuracy of the same runtime; cosine: to PyTorch FP32 on "
             "held-back calibration faces; latency: batch 1 median, interleaved.", "",
             "| runtime | model | " + " | ".join(f"{s} acc" for s in SETS) + " | U-M TAR@1e-3 | "
             "U-M retention | cos to FP32 | MB | 1T ms | 2T ms |",
             "|---|---|" + "---|" * (len(SETS) + 6)]
    for r in rows:
        accs = " | ".join(_pct(r.get(f"{s}_acc")) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {accs} | {_pct(r.get('U-M_tar'))} | "
                     f"{_pct(r.get('U-M_retention'))} | {_num(r['cosine'], 5)} | {_num(r['mb'], 2)} | "
                     f"{_num(r.get('latency_1t_ms'), 2)} | {_num(r.get('latency_2t_ms'), 2)} |")
    lines += _paired_table(rows) + _noise_table(rows) + _verdict_lines(rows)
    if plot:
        lines += ["", f"![retention]({plot})"]
    return "\n".join(lines) + "\n"


def _paired_table(rows: list[dict]) -> list[str]:
    paired = [r for r in rows if r.get("paired")]
    if not paired:
        return []
    lines = ["", "INT8 against FP32 of the same runtime, pair by pair (`benchmarks.paired`): accuracy "
             "difference in points with its 95% interval, pairs lost / gained (decided right by "
             "FP32 only / by INT8 only), McNemar's exact p. A 0.1-point change is 6 of 6,000 pairs.",
             "", "| runtime | model | " + " | ".join(f"{s} diff [95% CI]" for s in SETS)
             + " | " + " | ".join(f"{s} lost/gained, p" for s in SETS) + " |",
             "|---|---|" + "---|" * (2 * len(SETS))]
    for r in paired:
        p = r["paired"]
        diffs = " | ".join(_diff(p.get(s)) for s in SETS)
        flips = " | ".join(_flips(p.get(s)) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {diffs} | {flips} |")
    return lines


def _noise_table(rows: list[dict]) -> list[str]:
    from benchmarks.noise_floor import DRAWS

    floored = [r for r in rows if r.get("noise_floor")]
    if not floored:
        return []
    lines = ["", "What noise of each INT8 model's own size costs (`benchmarks.noise_floor`: its error "
             f"vectors given to other faces, {DRAWS} draws): measured difference against the noise "
             "floor's mean +- sd, in points. **beyond** marks a loss more than 2 sd below it: "
             "INT8 losing more than its noise explains.", "",
             "| runtime | model | " + " | ".join(f"{s} measured / noise" for s in SETS) + " |",
             "|---|---|" + "---|" * len(SETS)]
    for r in floored:
        cells = " | ".join(_floor(r["paired"].get(s), r["noise_floor"].get(s)) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {cells} |")
    return lines


def _floor(p: dict | None, f: dict | None) -> str:
    if not p or not f:
        return "-"
    mark = " **beyond**" if f["beyond"] else ""
    return f"{100 * p['difference']:+.2f} / {100 * f['mean']:+.2f} +- {100 * f['sd']:.2f}{mark}"


def _diff(p: dict | None) -> str:
    if not p:
        return "-"
    low, high = p["ci95"]
    return f"{100 * p['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _flips(p: dict | None) -> str:
    return "-" if not p else f"{p['reference_only']}/{p['candidate_only']}, {p['p_value']:.2f}"


def _verdict_lines(rows: list[dict]) -> list[str]:
    judged = [r for r in rows if "verdict" in r]
    if not judged:
        return []
    lines = ["", f"Verdict (the kit's promise: INT8 faster than FP32 and within "
                 f"{100 * RETENTION_GATE:.1f} point of its accuracy on every set):", ""]
    for r in judged:
        v = r["verdict"]
        kept = "kept" if v["accuracy_kept"] else f"**LOST** (worst: {v['worst_set']} {100 * v['worst_diff']:+.2f})"
        fast = {True: "faster", False: "**not faster**", None: "not timed"}[v["faster"]]
        lines.append(f"- {r['runtime']} {r['tag']}: accuracy {kept}{_noise_note(r)}; {fast} than FP32 "
                     "at 1 and 2 threads")
    return lines


def _noise_note(row: dict) -> str:
    """For a lost set: is the loss what noise of the model's size costs, or more?"""
    floor = (row.get("noise_floor") or {}).get(row["verdict"]["worst_set"])
    if row["verdict"]["accuracy_kept"] or not floor:
        return ""
    where = "beyond" if floor["beyond"] else "within"
    return (f", {where} what noise of its size costs ({100 * floor['mean']:+.2f} +- "
            f"{100 * floor['sd']:.2f})")


def plot_rows(rows: list[dict], path: Path) -> Path | None:
    """Left: what INT8 changes, per set, pair by pair (difference and 95% interval, with the
    retention gate's line); without paired rows, the accuracies. Right: 1-thread latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib missing: retention plot skipped (pip install matplotlib)")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9, 1.5 * len(rows)), 4.5))
    paired = [r for r in rows if r.get("paired")]
    if paired:
        _plot_differences(left, paired)
    else:
        _plot_accuracies(left, rows)
    labels = [f"{r['runtime']}\n{r['tag']}" for r in rows]
    right.bar(np.arange(len(rows)), [r.get("latency_1t_ms") or 0 for r in rows],
              color=["tab:gray" if r["tag"] == "fp32" else "tab:blue" for r in rows])
    right.set_xticks(np.arange(len(rows)), labels, fontsize=7)
    right.set_ylabel("batch-1 latency, 1 thread (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_differences(axis, paired: list[dict]) -> None:
    width = 0.8 / len(SETS)
    for k, name in enumerate(SETS):
        found = [r["paired"].get(name) for r in paired]
        x = np.arange(len(paired)) + (k - 1) * width
        diff = np.array([100 * p["difference"] if p else np.nan for p in found])
        low = np.array([100 * (p["difference"] - p["ci95"][0]) if p else 0 for p in found])
        high = np.array([100 * (p["ci95"][1] - p["difference"]) if p else 0 for p in found])
        axis.errorbar(x, diff, yerr=[low, high], fmt="o", capsize=3, label=name)
        floors = [(r.get("noise_floor") or {}).get(name) for r in paired]
        if any(floors):
            mean = np.array([100 * f["mean"] if f else np.nan for f in floors])
            sd = np.array([100 * f["sd"] if f else 0 for f in floors])
            axis.errorbar(x + width / 3, mean, yerr=sd, fmt="x", color="tab:gray", capsize=2,
                          label="noise of its size (mean +- sd)" if k == 0 else None)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.axhline(-100 * RETENTION_GATE, color="tab:red", linestyle="--", linewidth=1,
                 label=f"-{100 * RETENTION_GATE:.1f} point (gate)")
    axis.set_xticks(np.arange(len(paired)), [f"{r['runtime']}\n{r['tag']}" for r in paired], fontsize=7)
    axis.set_ylabel("INT8 - FP32 accuracy (points, 95% CI)")
    axis.legend(fontsize=7)


def _plot_accuracies(axis, rows: list[dict]) -> None:
    width = 0.8 / len(SETS)
    for k, name in enumerate(SETS):
        values = [100 * (r.get(f"{name}_acc") or 0) for r in rows]
        axis.bar(np.arange(len(rows)) + k * width, values, width, label=name)
    axis.set_xticks(np.arange(len(rows)) + width, [f"{r['runtime']}\n{r['tag']}" for r in rows], fontsize=7)
    axis.set_ylabel("10-fold accuracy (%)")
    axis.set_ylim(50, 100)
    axis.legend()


def retention_report(folder: Path, checkpoint: Path | None = None, quick: bool = False,
                     runs: int = 100) -> tuple[Path, Path | None]:
    """Evaluate every carded model in ``folder``, write the report there, then hold every INT8
    model to the retention gate.

    Raises:
        ConfigError: no carded model. DataRootError/DatasetError: no masked-LFW pack data.
        RetentionError: an INT8 model lost more than ``RETENTION_GATE`` (the report is written).
    """
    from benchmarks.packs import load_pack

    folder = Path(folder)
    pack = load_pack()
    rows = evaluate_all(collect(folder), pack, quick, runs, checkpoint=checkpoint)
    png = plot_rows(rows, folder / "retention.png")
    markdown = folder / "retention.md"
    markdown.write_text(render(rows, f"{pack.name} (pack {pack.key})", quick, png and png.name))
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
                      if "_curves" in results.get(s, {})}  # per pair, for _paired; not saved
    row["_embeddings"] = results.get("_embeddings")  # for the noise floor; not saved
    return row


def _paired(rows: list[dict], pack) -> None:
    """Each INT8 row against its runtime's FP32 row on the same pairs, and the difference
    noise of the INT8 row's own size would make (``benchmarks.noise_floor``; full evaluation)."""
    from benchmarks.noise_floor import noise_floor
    from benchmarks.paired import compare_paired

    for row in rows:
        base = next((r for r in rows if r["runtime"] == row["runtime"] and r["tag"] == "fp32"), None)
        if base is None or row is base:
            continue
        common = set(row["_scores"]) & set(base["_scores"])
        row["paired"] = {s: compare_paired(base["_scores"][s], row["_scores"][s], pack.is_same,
                                           pack.fold).to_dict() for s in SETS if s in common}
        if base.get("_embeddings") and row.get("_embeddings") and common:
            floors = noise_floor(base["_embeddings"], row["_embeddings"], pack, tuple(sorted(common)))
            row["noise_floor"] = {s: f.to_dict() | {"beyond": f.beyond(row["paired"][s]["difference"])}
                                  for s, f in floors.items()}


def _retention(rows: list[dict]) -> None:
    for row in rows:
        base = next((r for r in rows if r["runtime"] == row["runtime"] and r["tag"] == "fp32"), None)
        for s in SETS:
            if base and row.get(f"{s}_acc") and base.get(f"{s}_acc"):
                row[f"{s}_retention"] = round(row[f"{s}_acc"] / base[f"{s}_acc"], 5)


def _verdicts(rows: list[dict]) -> None:
    """Each INT8 row: accuracy within ``RETENTION_GATE`` of FP32 on every set, and faster."""
    for row in rows:
        base = next((r for r in rows if r["runtime"] == row["runtime"] and r["tag"] == "fp32"), None)
        if base is None or row is base:
            continue
        diffs = {s: row[f"{s}_acc"] - base[f"{s}_acc"] for s in SETS
                 if row.get(f"{s}_acc") is not None and base.get(f"{s}_acc") is not None}
        if not diffs:
            continue
        worst = min(diffs, key=diffs.get)
        times = [(row.get(f"latency_{t}t_ms"), base.get(f"latency_{t}t_ms")) for t in (1, 2)]
        faster = None if any(a is None or b is None for a, b in times) else all(a < b for a, b in times)
        row["verdict"] = {"accuracy_kept": diffs[worst] >= -RETENTION_GATE - 1e-9, "worst_set": worst,
                          "worst_diff": round(diffs[worst], 5), "faster": faster}


def retention_failures(rows: list[dict]) -> list[str]:
    """One line per INT8 model that lost more than ``RETENTION_GATE`` on some set."""
    return [f"{r['name']} ({r['path']}) loses {100 * -r['verdict']['worst_diff']:.2f} point on "
            f"{r['verdict']['worst_set']} against {r['runtime']} FP32 (gate {100 * RETENTION_GATE:.1f})"
            for r in rows if "verdict" in r and not r["verdict"]["accuracy_kept"]]


def _tag(card: ModelCard) -> str:
    # File names end in .<tag><suffix>: fp32, int8-ptq, int8-qat.
    return Path(card.file).stem.rsplit(".", 1)[-1]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description="INT8 retention report of an export folder")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="folds 1-2 only, no all-vs-all")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (PyTorch row)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from quantize.errors import RetentionError

    try:
        markdown, _ = retention_report(args.folder, args.checkpoint, args.quick, args.runs)
    except RetentionError as err:
        print(err.report.read_text())
        print(f"error: {err}")
        return 1
    print(markdown.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
