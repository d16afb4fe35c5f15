"""Result files -> one Markdown report with tables and a small PNG, one section per device.

Tables: model latency (model, format, precision, runtime, threads, batch, median, p90, p99,
throughput, size, load, peak RSS, MACs, x of floor; with ``--rounds``, the median round and the
range of the rounds' medians), the door pipeline (frames/s and
per-stage medians) and gallery search cost. The plot shows median latency per
model/runtime/precision with one bar per thread count, one panel per device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from benchmarks.latency.pipeline import STAGES
from benchmarks.latency.results import RunResults

log = logging.getLogger(__name__)

MODEL_COLUMNS = ("model", "format", "precision", "runtime", "threads", "batch", "median ms", "p90 ms",
                 "p99 ms", "img/s", "size MB", "load ms", "peak RSS MB", "GMACs", "x of floor", "CPU/wall")


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def model_rows(run: RunResults) -> list[list[str]]:
    """One table row per model record, sorted by model, runtime, threads, batch."""
    rows = []
    order = sorted(run.models, key=lambda r: (r["model"]["name"], r["runtime"]["name"], r["threads"], r["batch"]))
    for rec in order:
        s, m, floor = rec["stats"], rec["model"], rec.get("floor")
        rows.append([
            m["name"], m["format"], m["precision"], rec["runtime"]["name"], rec["threads"], rec["batch"],
            _fmt(s["median_ms"]), _fmt(s["p90_ms"]), _fmt(s["p99_ms"]), _fmt(s["throughput"], 1),
            _fmt(m["size_bytes"] / 2**20, 1), _fmt(rec["load_ms"], 0), _fmt(rec["peak_rss_mb"], 0),
            _fmt(m["macs"] / 1e9 if m.get("macs") else None, 3),
            _fmt(floor["x_of_floor"], 1) if floor else "-", _fmt(rec.get("cpu_per_wall")),
        ] + ([_round_range(rec)] if _has_rounds(run) else []))
    return rows


def _has_rounds(run: RunResults) -> bool:
    """Whether any model was measured in more than one round (``main.py bench --rounds``)."""
    return any(rec.get("rounds", {}).get("count", 1) > 1 for rec in run.models)


def _round_range(rec: dict[str, Any]) -> str:
    medians = rec.get("rounds", {}).get("median_ms", [])
    return "-" if len(medians) < 2 else f"{len(medians)}: {min(medians):.2f}-{max(medians):.2f}"


def pipeline_rows(run: RunResults) -> list[list[str]]:
    """One row per pipeline record: frames/s, per-stage medians, identification hits."""
    rows = []
    for rec in sorted(run.pipeline, key=lambda r: (r["model"], r["runtime"], r["threads"])):
        stages = [_fmt(rec["stages"][s]["median_ms"]) for s in STAGES]
        rows.append([rec["model"], rec["runtime"], rec["threads"], _fmt(rec["fps"], 1), *stages,
                     _fmt(rec["total"]["median_ms"]), _fmt(rec["total"]["p90_ms"]),
                     f"{rec['top1_correct']}/{rec['video']['frames']}"])
    return rows


def gallery_rows(run: RunResults) -> list[list[str]]:
    """One row per gallery size and thread count."""
    return [[f"{rec['size']:,}", rec["dim"], _fmt(rec["memory_mb"], 1), rec["threads"],
             _fmt(rec["stats"]["median_ms"], 3), _fmt(rec["stats"]["p90_ms"], 3)]
            for rec in sorted(run.gallery, key=lambda r: (r["threads"], r["size"]))]


def door_rows(run: RunResults) -> list[list[str]]:
    """One row per door-station soak: decisions/s, latency, memory over the run."""
    rows = []
    for rec in sorted(run.door, key=lambda r: (r["model"], r["runtime"], r["threads"])):
        mem = rec["memory"]
        flat = {True: "flat", False: "GROWS", None: "-"}[mem["flat"]]
        rows.append([rec["model"], rec["precision"], rec["runtime"], rec["threads"], f"{rec['frames']:,}",
                     _fmt(rec["decisions_per_s"], 1), _fmt(rec["latency"]["median_ms"]),
                     _fmt(rec["latency"]["p99_ms"]), f"{rec['correct']}/{rec['decisions']}",
                     f"{_fmt(mem['start_mb'], 0)} -> {_fmt(mem['end_mb'], 0)}",
                     f"{_fmt(mem['slope_mb_per_1k_frames'], 3)} ({flat})"])
    return rows


def system_lines(run: RunResults) -> list[str]:
    """A short description of the machine and software versions."""
    info = run.system or {}
    cpu = info.get("cpu", {})
    flags = ", ".join(k for k, v in cpu.get("flags", {}).items() if v) or "unknown"
    packages = ", ".join(f"{k} {v}" for k, v in sorted(info.get("packages", {}).items()))
    lines = [f"- CPU: {cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores; flags: {flags}",
             f"- OS: {info.get('os', '?')}, Python {info.get('python', '?')}; {packages}"]
    if run.calibration:
        cal = "; ".join(f"{t} thread(s): FP32 {v['fp32']:.1f}, INT8 {v['int8']:.1f}"
                        for t, v in sorted(run.calibration.items(), key=lambda kv: int(kv[0])))
        lines.append(f"- GEMM calibration (onnxruntime MatMul / MatMulInteger, GMAC/s): {cal}")
    loads = [r["loadavg"][0] for r in run.models if r.get("loadavg")]
    if loads:
        lines.append(f"- 1-min load average during the model benches: {min(loads):.1f}..{max(loads):.1f}")
    return lines


def render_markdown(runs: dict[str, RunResults], plot: str | None = None, title: str = "Latency") -> str:
    """The whole report as Markdown; ``plot`` is a relative PNG path to embed."""
    out = [f"# {title}", "",
           "Median / p90 / p99 of sorted per-call samples (type-7 percentiles); img/s = batch / median. "
           "x of floor = median / (MACs x batch / calibrated GEMM throughput at the same threads; "
           "INT8 models against the INT8 GEMM, weight-only int8bq against FP32). CPU/wall = process CPU "
           "time / wall time of the timed loop: ~1 per busy thread; well below the thread count means "
           "the threads were not running (other load on the machine). rounds (``--rounds``): each model "
           "measured that many times in alternating order; its row is the round with the median "
           "latency, the last column the range of the rounds' medians.", ""]
    if plot:
        out += [f"![latency]({plot})", ""]
    for device, run in runs.items():
        out += [f"## {device}", "", *system_lines(run), ""]
        if run.models:
            columns = MODEL_COLUMNS + (("rounds: min-max ms",) if _has_rounds(run) else ())
            out += ["### Embedding models", "", *_table(columns, model_rows(run)), ""]
        if run.pipeline:
            header = ("model", "runtime", "threads", "frames/s", *(f"{s} ms" for s in STAGES),
                      "total median ms", "total p90 ms", "top-1 correct")
            out += ["### Door pipeline (decode -> detect -> align -> embed -> match)", "",
                    *_table(header, pipeline_rows(run)), ""]
        if run.gallery:
            out += ["### Gallery search (1 probe vs N float32 templates, top-1/top-2)", "",
                    *_table(("templates", "dim", "memory MB", "threads", "median ms", "p90 ms"),
                            gallery_rows(run)), ""]
        if run.door:
            header = ("model", "precision", "runtime", "threads", "frames", "decisions/s", "median ms",
                      "p99 ms", "right person", "RSS MiB", "MiB per 1k frames")
            out += ["### Door station soak (access run loop: decode, detect, quality, align, embed, "
                    "decide, audit)", "", *_table(header, door_rows(run)), ""]
    return "\n".join(out)


def plot_latency(runs: dict[str, RunResults], path: Path) -> Path | None:
    """Bar chart of median latency by model/runtime/precision x threads; None if no records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = [(d, r) for d, r in runs.items() if r.models]
    if not devices:
        return None
    fig, axes = plt.subplots(len(devices), 1, figsize=(7, 0.6 + 2.6 * len(devices)), squeeze=False)
    for ax, (device, run) in zip(axes[:, 0], devices):
        _panel(ax, run, device)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_door_memory(runs: dict[str, RunResults], path: Path) -> Path | None:
    """Resident memory against frame number for every door soak; None if there is none."""
    series = [(device, rec) for device, run in runs.items() for rec in run.door
              if any(m is not None for _, m in rec["memory"]["samples"])]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    for device, rec in series:
        x, y = zip(*[(f, m) for f, m in rec["memory"]["samples"] if m is not None])
        ax.plot(x, y, marker=".", label=f"{rec['model']} / {rec['runtime']} / {rec['threads']}t ({device})")
    ax.set_xlabel("frame")
    ax.set_ylabel("resident memory, MiB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def _panel(ax, run: RunResults, device: str) -> None:
    records = [r for r in run.models if r["batch"] == min(x["batch"] for x in run.models)]
    labels = sorted({_label(r) for r in records})
    threads = sorted({r["threads"] for r in records})
    height = 0.8 / len(threads)
    for i, count in enumerate(threads):
        values = {_label(r): r["stats"]["median_ms"] for r in records if r["threads"] == count}
        ys = [j + i * height for j in range(len(labels))]
        ax.barh(ys, [values.get(label, 0) for label in labels], height, label=f"{count} thread(s)")
    ax.set_yticks([j + height * (len(threads) - 1) / 2 for j in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"median ms, batch {records[0]['batch']}")
    ax.set_title(device, fontsize=9)
    ax.legend(fontsize=7)


def _label(rec: dict[str, Any]) -> str:
    return f"{rec['model']['name']} / {rec['runtime']['name']} / {rec['model']['precision']}"


def write_report(runs: dict[str, RunResults], folder: Path, name: str = "latency") -> tuple[Path, Path | None]:
    """Write ``<name>.md`` and ``<name>.png`` into ``folder``; return both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = plot_latency(runs, folder / f"{name}.png")
    memory = plot_door_memory(runs, folder / f"{name}_door_memory.png")
    text = render_markdown(runs, png.name if png else None)
    if memory:
        text += f"\n![door station memory]({memory.name})\n"
    md = folder / f"{name}.md"
    md.write_text(text + "\n")
    log.info("report written to %s", md)
    return md, png
